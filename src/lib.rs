//! weft: a partitioned, replicated, in-memory stateful store.
//!
//! - [`Node`] ([`embedded`]): a node inside a service's own process: started from a
//!   builder with `weft node`'s options, it gives the routed client, the partitions hosted
//!   here with their roles, in-process reads of local primaries, role-change events and a
//!   graceful stop. `weft node` is this, started from its flags.
//! - [`node`]: the node server (the `weft-node` crate, re-exported): every gRPC service
//!   on one port, and the live cluster manager.
//! - [`client`] and [`routing`]: the Rust client (the `weft-client` crate, re-exported):
//!   finds a partition's primary, caches it, follows not-primary answers with their leader
//!   hint, retries with backoff under a deadline, and gives every write a session sequence
//!   number so a retry never applies twice; routes keys to partitions by the cluster map.
//! - [`watch`]: a partition's or a service's committed changes as a stream that resumes
//!   across primary changes and node restarts (`Store.Watch`, `weft kv watch`).
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
pub mod embedded;
pub mod typed;

pub use embedded::{Node, NodeBuilder, NodeError};

pub use weft_client::{Client, ClientError, ReadMode, client, routing, watch};
pub use weft_node as node;
pub use weft_proto::v1 as proto;
pub use weft_store as store;
pub use weft_store::Store;
