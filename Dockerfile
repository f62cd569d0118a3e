# The weft image from the sources, for machines with a registry to pull the build image
# from: `docker build -t weft:dev .`. (Where nothing can be pulled, deploy/build-image.sh
# assembles the same image from a binary built on the host.)
#
# The runtime stage is distroless's glibc base: the binary links only glibc (TLS is
# rustls with ring, the allocator mimalloc, both compiled in), and it runs as a non-root
# user with /data as its volume.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin weft && mkdir /empty-data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/weft /usr/local/bin/weft
COPY --from=build --chown=65532:65532 /empty-data /data
USER 65532:65532
VOLUME ["/data"]
EXPOSE 7000 9100
ENTRYPOINT ["/usr/local/bin/weft"]
CMD ["--help"]
