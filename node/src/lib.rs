//! weft's node: what one `weft node` process runs.
//!
//! - [`node`]: the server: one port serving the client `Store`, the internal `Raft` and
//!   `NodeAdmin`, the cluster manager's `Cluster` (and `Faults` when asked), for every
//!   replica the node hosts.
//! - [`manager`]: the cluster manager's part on every node: heartbeats, the replicated
//!   cluster map on the seeds, placement, repair, drains, upgrade walks and operator
//!   commands, deciding with `weft-cluster-manager` and carrying its steps out.
//! - [`authz`]: per-service rights from the cluster map's users and grants.
//! - [`status`]: the statuses the node answers with, each failure's code and
//!   `weft.v1.ErrorDetail` (not the primary, not hosted, outcome unknown...).
//! - [`metrics`]: Prometheus text on `--metrics`.
//! - `session`: the server end of `Store.Session`.
//!
//! It calls other nodes through `weft-client` (the manager creating a service's default
//! table) and `weft-replica` (raft groups, their transport), and never depends on the CLI
//! or the test harness.

pub mod authz;
pub mod manager;
pub mod metrics;
pub mod node;
mod session;
pub mod status;

pub use session::IN_FLIGHT_MAX as SESSION_IN_FLIGHT_MAX;
