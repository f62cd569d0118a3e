//! weft: a partitioned, replicated, in-memory stateful store.
//!
//! - [`node`]: the node (the `weft-node` crate, re-exported): the server of every gRPC
//!   service on one port, and the live cluster manager.
//! - [`client`] and [`routing`]: the Rust client (the `weft-client` crate, re-exported):
//!   finds a partition's primary, caches it, follows not-primary answers with their leader
//!   hint, retries with backoff under a deadline, and gives every write a session sequence
//!   number so a retry never applies twice; routes keys to partitions by the cluster map.
//! - [`backup`]: `weft ctl backup | backups | restore`, through the client.
//! - The engine is re-exported as [`store`] (and its [`Store`] here) for services that
//!   embed it directly, without replication; [`typed`] gives its tables Rust key and value
//!   types (serde), with the attributes secondary indexes see taken from each value.
//!   `examples/engine.rs` runs it alone (`cargo run --example engine`).
//!
//! The harness (local node processes, `weft chaos` and its checker, the cluster
//! benchmarks, YCSB) is the `weft-testkit` crate; the binary's commands use it, this
//! library does not.

pub mod backup;
pub mod typed;

pub use weft_client::{Client, ClientError, ReadMode, client, routing};
pub use weft_node as node;
pub use weft_proto::v1 as proto;
pub use weft_store as store;
pub use weft_store::Store;
