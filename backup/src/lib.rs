//! weft's backups: a service's partitions copied into object storage, in full or as the
//! changes since the previous backup, kept by a retention rule, and restored into a new
//! service or in place.
//!
//! - [`location`]: a URL (a directory, `s3://`, `az://`, `gs://`) as an object store.
//! - [`format`]: the manifest, file names and the changes file (`docs/backup-format.md`).
//! - [`take`]: backing a service up from its partitions' primaries.
//! - [`catalog`]: what a location holds, and retention.
//! - [`chain`]: a partition's changes applied to its full state (run by the node that
//!   receives a restored state).
//! - [`restore`]: choosing a backup (latest, or at a time), checking its chains, and
//!   writing it back.
//!
//! Used by `weft ctl` (one-off backups, listings, restores) and by the cluster manager
//! (scheduled backups). Depends on the client and the replica's snapshot format; never on
//! the node or the cluster manager.

pub mod catalog;
pub mod chain;
pub mod format;
pub mod location;
pub mod restore;
pub mod take;

pub use catalog::{Listed, Retention};
pub use format::{Kind, Manifest, PartitionEntry};
pub use location::Location;
pub use restore::{Restored, Target};
pub use take::Options;

use weft_client::client::ClientError;

/// What can go wrong backing up or restoring. New variants may be added: match with a
/// wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The object store failed (or a local directory could not be made).
    #[error("backup storage: {0}")]
    Store(String),
    /// A call failed, the cluster map could not be read, or it has no such service.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A backup's file or stream failed its checks (checksum, length, format, order).
    #[error("damaged backup: {0}")]
    Corrupt(String),
    /// A backup or one of the files it needs is not there.
    #[error("incomplete backup: {0}")]
    Missing(String),
    /// The request cannot be done as asked.
    #[error("{0}")]
    Refused(String),
}

/// How far a backup is: partitions done of the total, and bytes so far. Called after each
/// partition.
pub type OnProgress<'a> = &'a (dyn Fn(usize, usize, u64) + Sync);

/// How far a restore is, in the backup's bytes: called after every batch it writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreProgress {
    /// Partitions written whole.
    pub partitions_done: usize,
    /// Partitions to write.
    pub partitions: usize,
    /// Bytes of the backup's files (every link of each partition's chain) written so far:
    /// whole for a partition done, in proportion to the records written for the one under
    /// way.
    pub bytes_done: u64,
    /// Bytes of the backup's files the restore reads, every link included.
    pub bytes: u64,
}

/// Called with a restore's progress.
pub type OnRestoreProgress<'a> = &'a (dyn Fn(RestoreProgress) + Sync);

/// Parses a time for `--at`: RFC 3339 (`2026-12-04T10:00:00Z`) or milliseconds since the
/// Unix epoch.
pub fn parse_time(s: &str) -> Result<u64, BackupError> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| BackupError::Refused(format!("--at {s:?}: not RFC 3339 nor milliseconds since 1970 ({e})")))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| BackupError::Refused(format!("--at {s:?}: before 1970")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_parse_as_rfc3339_or_milliseconds() {
        assert_eq!(super::parse_time("1000").expect("ms"), 1000);
        assert_eq!(super::parse_time("1970-01-01T00:00:01.5Z").expect("rfc3339"), 1500);
        assert!(super::parse_time("yesterday").is_err());
    }
}
