//! weft's harness: what drives real `weft node` processes for the end-to-end tests, the
//! fault runs and the cluster benchmarks.
//!
//! - [`local`]: local `weft node` processes on loopback, with a CA and certificates made
//!   for them.
//! - [`chaos`]: `weft chaos`, faults against real nodes with a history check.
//! - [`linearize`]: the linearizability checker for register histories.
//! - [`simulated`]: `weft chaos --simulated`, the chaos workload on in-process nodes over
//!   turmoil's simulated network and clock, replayable from a seed.
//! - [`cluster_bench`]: `weft bench replication | failover | rebuild`.
//! - [`world`]: one cluster test, two worlds: the [`world::Cluster`] trait, in-process
//!   nodes and node processes.
//! - [`ycsb`]: `weft bench kv`, the YCSB workloads against weft or etcd.
//!
//! It talks to nodes through `weft-client` like any client, and reads the cluster map
//! through the node's views of it; nothing in the node or the client depends on it.

pub mod chaos;
pub mod cluster_bench;
pub mod density;
pub mod docker;
mod error;
pub mod linearize;
pub mod local;
pub mod sim_validate;
pub mod simulated;
pub mod watch_bench;
pub mod world;
pub mod ycsb;

pub use error::Error;
