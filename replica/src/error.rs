//! [`Error`]: the one error this crate returns to its callers: opening, recovering and
//! closing replicas, and encoding or decoding snapshot streams. Errors of the layers
//! underneath (the WAL, checkpoints, wire conversions) stay inside the crate: the host
//! folds them into [`Error::Storage`], the transport into gRPC statuses.
//!
//! Depends on the engine's error and the crate's id types only.

use tonic::Status;
use weft_store::StoreError;

use crate::types::{PartitionId, ReplicaId};

/// What went wrong in a replica or a snapshot stream. New variants may be added: match
/// with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The partition already has a replica here, with another id.
    #[error("partition {partition} already has replica {existing} on this node")]
    AlreadyOpen {
        /// Partition.
        partition: PartitionId,
        /// The replica hosted.
        existing: ReplicaId,
    },
    /// No replica of the partition here.
    #[error("partition {0} has no replica on this node")]
    NotOpen(PartitionId),
    /// A durable replica was asked of a node without a data directory.
    #[error("durable log mode needs the node to run with --data-dir")]
    NoDataDir,
    /// A replica was to open from a staged state ([`crate::Host::stage`]) that is not here.
    #[error("partition {partition} replica {replica}: no restored state is staged for it on this node")]
    NotStaged {
        /// Partition.
        partition: PartitionId,
        /// Replica.
        replica: ReplicaId,
    },
    /// The node is stopping: it opens no replica.
    #[error("this node is stopping")]
    Stopping,
    /// A durable replica's files could not be opened or recovered.
    #[error("partition {partition} replica {replica}: {reason}")]
    Storage {
        /// Partition.
        partition: PartitionId,
        /// Replica.
        replica: ReplicaId,
        /// What went wrong (file and cause).
        reason: String,
    },
    /// openraft refused.
    #[error("raft: {0}")]
    Raft(String),
    /// A snapshot stream's Avro layer failed: bad header, bad block, truncated data, or a
    /// write error.
    #[error("snapshot avro stream: {0}")]
    SnapshotAvro(String),
    /// A snapshot stream decoded but does not describe a valid snapshot.
    #[error("malformed snapshot: {0}")]
    SnapshotMalformed(String),
    /// Reading or writing a snapshot stream failed (the other end went away).
    #[error("snapshot stream: {0}")]
    SnapshotIo(#[from] std::io::Error),
    /// The engine refused a snapshot's data (limits, ordering).
    #[error("snapshot rejected by the engine: {0}")]
    SnapshotRejected(#[from] StoreError),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::AlreadyOpen { .. } => Status::already_exists(e.to_string()),
            Error::NotOpen(_) => Status::not_found(e.to_string()),
            Error::NoDataDir | Error::NotStaged { .. } => Status::failed_precondition(e.to_string()),
            Error::Stopping => Status::unavailable(e.to_string()),
            Error::Storage { .. } => Status::data_loss(e.to_string()),
            Error::SnapshotMalformed(_) | Error::SnapshotAvro(_) | Error::SnapshotRejected(_) => {
                Status::invalid_argument(e.to_string())
            }
            Error::Raft(_) | Error::SnapshotIo(_) => Status::internal(e.to_string()),
        }
    }
}
