//! weft's wire API, package `weft.v1`: the client `Store` service, the internal
//! `Raft` service between nodes and the `NodeAdmin` service. The `.proto` files
//! under `proto/` are the source of truth; code is generated at build time by
//! protox and tonic-prost-build, so no system `protoc` is needed.

#![allow(missing_docs, clippy::all, clippy::unwrap_used)]

/// Generated messages and services of package `weft.v1`.
pub mod v1 {
    tonic::include_proto!("weft.v1");
}
