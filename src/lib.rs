//! weft: a partitioned, replicated, in-memory stateful store.
//!
//! - [`node`]: the node host: one process serving the client `Store`, internal `Raft` and
//!   `NodeAdmin` gRPC services on one port for every replica it hosts.
//! - [`manager`]: the cluster manager's part on every node: heartbeats, the replicated
//!   cluster map on the seeds, placement, repair, drains and operator commands.
//! - [`metrics`]: Prometheus text on `--metrics`.
//! - [`status`]: the statuses a node answers with, each failure's code and
//!   `weft.v1.ErrorDetail` (not the primary, not hosted, outcome unknown...).
//! - [`chaos`]: `weft chaos`, fault injection against real nodes with a history check.
//! - [`linearize`]: the linearizability checker for register histories (`weft chaos`).
//! - [`local`]: local `weft node` processes for benchmarks and end-to-end tests.
//! - [`client`] and [`routing`]: the Rust client (the `weft-client` crate, re-exported):
//!   finds a partition's primary, caches it, follows not-primary answers with their leader
//!   hint, retries with backoff under a deadline, and gives every write a session sequence
//!   number so a retry never applies twice; routes keys to partitions by the cluster map.
//! - [`ycsb`]: `weft bench kv`, the YCSB workloads against weft or etcd.
//! - The engine is re-exported as [`store`] for services that embed it directly.

pub mod authz;
pub mod backup;
pub mod chaos;
pub mod cluster_bench;
pub mod linearize;
pub mod local;
pub mod manager;
pub mod metrics;
pub mod node;
mod session;
pub mod status;
pub mod ycsb;

pub use session::IN_FLIGHT_MAX as SESSION_IN_FLIGHT_MAX;
pub use weft_client::{Client, ClientError, ReadMode, client, routing};
pub use weft_proto::v1 as proto;
pub use weft_store as store;
