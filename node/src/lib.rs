//! weft's node: what one `weft node` process runs.
//!
//! The crate's surface is what the root re-exports: [`Node`] with its [`NodeConfig`],
//! [`Error`] and [`Health`], the manager's [`ClusterConfig`], the map's constants and [`view`] (the
//! cluster map as tables, which `weft ctl` and the harness print). Every module is private.
//!
//! - `node`: the server: one port serving the client `Store`, the internal `Raft` and
//!   `NodeAdmin`, the cluster manager's `Cluster` (and fault injection when asked), for every
//!   replica the node hosts.
//! - `manager`: the cluster manager's part on every node: heartbeats, the replicated
//!   cluster map on the seeds, placement, repair, drains, upgrade walks and operator
//!   commands, deciding with `weft-cluster-manager` and carrying its steps out.
//! - `authz`: per-service rights from the cluster map's users and grants.
//! - `status`: the statuses the node answers with, each failure's code and
//!   `weft.v1.ErrorDetail` (not the primary, not hosted, outcome unknown...).
//! - `health`: whether the node is ready, for the gRPC health protocol and `/readyz`.
//! - `telemetry`: the node's Prometheus registry: requests, replicas, snapshots, the
//!   node, and the cluster manager's figures.
//! - `explorer`: the cluster explorer, a read-only web page on the metrics port.
//! - `metrics`: the metrics port (`--metrics`): `/metrics`, `/readyz` and `/livez`.
//! - `session`: the server end of `Store.Session`.
//! - `watch`: the server end of `Store.Watch`, a partition's committed changes.
//!
//! It calls other nodes through `weft-client` (the manager creating a service's default
//! table) and `weft-replica` (raft groups, their transport), and never depends on the CLI
//! or the test harness.

mod authz;
mod explorer;
mod health;
mod manager;
mod metrics;
mod node;
mod session;
mod status;
mod telemetry;
mod watch;

pub use health::Health;
pub use manager::map::FIRST_REPLICA_ID;
pub use manager::{ClusterConfig, DEFAULT_TABLE, MAP_PARTITION, view};
pub use node::{Error, Node, NodeConfig, NodeSecurity, RestartHook};
pub use session::IN_FLIGHT_MAX as SESSION_IN_FLIGHT_MAX;
