//! weft: a partitioned, replicated, in-memory stateful store.
//!
//! - [`node`], [`manager`], [`authz`], [`status`], [`metrics`]: the node (the `weft-node`
//!   crate, re-exported): the server of every gRPC service on one port, and the live
//!   cluster manager.
//! - [`chaos`]: `weft chaos`, fault injection against real nodes with a history check.
//! - [`linearize`]: the linearizability checker for register histories (`weft chaos`).
//! - [`local`]: local `weft node` processes for benchmarks and end-to-end tests.
//! - [`client`] and [`routing`]: the Rust client (the `weft-client` crate, re-exported):
//!   finds a partition's primary, caches it, follows not-primary answers with their leader
//!   hint, retries with backoff under a deadline, and gives every write a session sequence
//!   number so a retry never applies twice; routes keys to partitions by the cluster map.
//! - [`ycsb`]: `weft bench kv`, the YCSB workloads against weft or etcd.
//! - The engine is re-exported as [`store`] for services that embed it directly.

pub mod backup;
pub mod chaos;
pub mod cluster_bench;
pub mod linearize;
pub mod local;
pub mod ycsb;

pub use weft_client::{Client, ClientError, ReadMode, client, routing};
pub use weft_node::{SESSION_IN_FLIGHT_MAX, authz, manager, metrics, node, status};
pub use weft_proto::v1 as proto;
pub use weft_store as store;
