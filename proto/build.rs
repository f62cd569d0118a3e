//! Compiles `proto/weft/v1/*.proto` (the API) and `proto/weft/testing/v1/*.proto` (fault
//! injection, for tests only) with protox (pure Rust): no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "weft/v1/data.proto",
        "weft/v1/store.proto",
        "weft/v1/raft.proto",
        "weft/v1/admin.proto",
        "weft/v1/cluster.proto",
        "weft/testing/v1/faults.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    // The descriptors themselves, for gRPC server reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("weft_descriptors.bin"), prost::Message::encode_to_vec(&fds))?;
    // Map fields are BTreeMaps: whoever iterates one (the cluster manager walks the map's
    // nodes and partitions) sees the same order in every process and every run, which a
    // simulation replaying a seed needs.
    tonic_prost_build::configure().bytes(".weft.v1").btree_map(".weft.v1").compile_fds(fds)?;
    Ok(())
}
