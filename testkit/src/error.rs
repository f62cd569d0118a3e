//! [`Error`]: the one error the harness returns, whichever part failed: starting nodes,
//! talking to the cluster, a chaos or simulated run, a benchmark, the YCSB driver.
//!
//! Depends on the client's error (and etcd's, with the `etcd` feature) only.

use weft_client::ClientError;

/// What went wrong in the harness. New variants may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node process (or in-process node) did not start.
    #[error("starting node {id}: {reason}")]
    Start {
        /// Node id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// The cluster did not do what the harness asked, or refused it.
    #[error("{0}")]
    Cluster(String),
    /// A client call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The run was configured in a way it cannot run.
    #[error("bad configuration: {0}")]
    Config(&'static str),
    /// The cluster did not get back to a state the run waits for in time.
    #[error("{0}")]
    Stuck(String),
    /// A simulated run failed (a host's error, or the simulation's own).
    #[error("simulation seed {seed}: {reason}")]
    Sim {
        /// The seed.
        seed: u64,
        /// What failed.
        reason: String,
    },
    /// A YCSB load could not write a record.
    #[error("loading record {n}: {source}")]
    Load {
        /// The record's number.
        n: u64,
        /// The write's error.
        #[source]
        source: Box<Error>,
    },
    /// A YCSB workload failed too often to be measured.
    #[error("workload {workload}: {errors} of {attempts} operations failed; last: {last}")]
    Failing {
        /// The workload.
        workload: &'static str,
        /// Operations that failed.
        errors: u64,
        /// Operations tried.
        attempts: u64,
        /// The last failure.
        last: String,
    },
    /// A client task ended abnormally (panicked or was cancelled).
    #[error("a client task ended abnormally: {0}")]
    Task(String),
    /// The comparison chart could not be drawn.
    #[error("drawing the chart: {0}")]
    Chart(String),
    /// etcd, the comparison peer, failed.
    #[cfg(feature = "etcd")]
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}
