#!/usr/bin/env bash
# build-image.sh [--bin PATH] [--tag NAME]: builds the container image weft:dev here, with
# nothing pulled. The image is FROM scratch with a root filesystem this script assembles:
# the weft binary, the dynamic loader and the few glibc libraries it links (read off
# `ldd`), CA roots for object storage, /etc/passwd with user weft (uid 10001) and /data
# owned by it. Without --bin it builds `cargo build --release` first.
#
# With a registry, the multi-stage Dockerfile at the repository's root does the same from
# the sources (`docker build -t weft:dev .`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin=""
tag="weft:dev"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        *) echo "build-image.sh: unknown argument $1 (--bin PATH, --tag NAME)" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --locked --bin weft >&2)
    bin="$root/target/release/weft"
fi
[ -x "$bin" ] || { echo "build-image.sh: $bin is not an executable" >&2; exit 1; }
command -v docker >/dev/null || { echo "build-image.sh: docker is not installed" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
fs="$ctx/rootfs"
mkdir -p "$fs/usr/local/bin" "$fs/etc/ssl/certs" "$fs/tmp" "$fs/certs" "$ctx/owned/data"
chmod 1777 "$fs/tmp"
cp "$bin" "$fs/usr/local/bin/weft"
# The loader and every library the binary links, at the paths it names them by.
ldd "$bin" | awk '/=> \// {print $3} /^\t\// {print $1}' | while read -r lib; do
    mkdir -p "$fs$(dirname "$lib")"
    cp -L "$lib" "$fs$lib"
done
# Name resolution from /etc/hosts, then DNS (Docker and Kubernetes write both files).
printf 'hosts: files dns\n' > "$fs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/sbin/nologin\nweft:x:10001:10001:weft:/data:/sbin/nologin\n' > "$fs/etc/passwd"
printf 'root:x:0:\nweft:x:10001:\n' > "$fs/etc/group"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$fs/etc/ssl/certs/"
fi
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
# COPY copies a directory's contents: /data itself comes from owned/, so it is weft's.
COPY --chown=10001:10001 owned/ /
USER 10001:10001
EXPOSE 7000 9100
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/weft"]
CMD ["--help"]
DOCKERFILE
docker build -q -t "$tag" "$ctx" >"$ctx/build.log" 2>&1 || { cat "$ctx/build.log" >&2; exit 1; }
echo "built $tag from $bin" >&2
docker run --rm "$tag" version
