//! The backup format, as `docs/backup-format.md` spells it byte by byte.
//!
//! Under a location, each backup of service `S` is a directory `S/<id>/`:
//! - `part-<index>.avro`: a partition's full snapshot, the Avro object container stream
//!   replicas are built from (`replica/schema/snapshot.avsc`);
//! - `part-<index>.changes`: a partition's committed changes after the previous backup (a
//!   changes file, below);
//! - `manifest.json`, written last: the backup is complete once it exists. It names every
//!   file with its bytes and CRC32C, each partition's log indexes, and the backup each
//!   changes file builds on.
//!
//! A changes file is the 8 bytes `weftchg1`, then length-delimited protobuf messages
//! (`weft.v1.BackupChangesPart`, each a varint length and the message): one header (the
//! partition and the log indexes it covers), blocks of changes in commit order, and the
//! schema (tables and their indexes) at its last index, which ends the file.
//!
//! Owns no I/O: [`crate::take`] and [`crate::restore`] move the bytes.

use prost::Message;
use serde::{Deserialize, Serialize};
use weft_proto::v1 as pb;

use crate::BackupError;

/// The manifest's name in a backup's directory.
pub const MANIFEST: &str = "manifest.json";

/// The format this code writes (and the only one it reads).
pub const FORMAT: u32 = 1;

/// The first bytes of a changes file.
pub const CHANGES_MAGIC: &[u8; 8] = b"weftchg1";

/// Changes per block of a changes file.
pub const CHANGES_PER_BLOCK: usize = 1024;

/// What a partition's file holds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The whole partition (a snapshot).
    Full,
    /// The changes after the previous backup.
    Changes,
}

/// One partition's file in a backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionEntry {
    /// Index of the partition within its service.
    pub index: u32,
    /// The partition's id in the cluster it was taken from.
    pub partition: u64,
    /// The partition's incarnation (raised when it is reset): changes chain only onto a
    /// backup of the same incarnation, whose log they continue.
    #[serde(default)]
    pub incarnation: u64,
    /// Inclusive hash range, low end.
    pub low: u64,
    /// Inclusive hash range, high end.
    pub high: u64,
    /// Full or changes.
    pub kind: Kind,
    /// Changes: the log index the previous link holds everything up to (0 for a full one).
    pub after: u64,
    /// The log index this file holds everything up to.
    pub through: u64,
    /// Changes: the id of the backup (same service, same location) holding the link this
    /// one builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// File name in the backup's directory.
    pub file: String,
    /// Bytes of the file.
    pub bytes: u64,
    /// CRC32C (Castagnoli) of the file.
    pub crc32c: u32,
}

/// A backup's description, `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The backup's id: its directory's name.
    pub id: String,
    /// The service backed up.
    pub service: String,
    /// The cluster's id (the map's `cluster_id`).
    pub cluster_id: String,
    /// When the backup started, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// When it was complete.
    pub finished_unix_ms: u64,
    /// The cluster map version it was routed by.
    pub map_version: u64,
    /// Full when every partition's file is full.
    pub kind: Kind,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionEntry>,
}

impl Manifest {
    /// Bytes over all files.
    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }

    /// The manifest in `text`, checked for the format and the entries' shape.
    pub fn parse(text: &[u8], name: &str) -> Result<Manifest, BackupError> {
        let m: Manifest =
            serde_json::from_slice(text).map_err(|e| BackupError::Corrupt(format!("{name}: not a manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(BackupError::Corrupt(format!("{name}: format {} (this weft reads {FORMAT})", m.format)));
        }
        for (i, p) in m.partitions.iter().enumerate() {
            if p.index as usize != i {
                return Err(BackupError::Corrupt(format!("{name}: entry {i} is partition {}", p.index)));
            }
            if p.kind == Kind::Changes && p.previous.is_none() {
                return Err(BackupError::Corrupt(format!("{name}: partition {i}'s changes name no previous backup")));
            }
        }
        Ok(m)
    }

    /// The backups this one needs to be restored: its own id and, for each partition's
    /// changes, the previous links' ids (as named, not yet checked).
    pub fn directly_needs(&self) -> impl Iterator<Item = &str> {
        self.partitions.iter().filter_map(|p| p.previous.as_deref())
    }
}

/// The directory of backup `id` of `service`.
pub fn dir(service: &str, id: &str) -> String {
    format!("{service}/{id}")
}

/// A new backup id: the start time in milliseconds (15 digits, so names sort by time) and
/// a random suffix.
pub fn new_id(created_unix_ms: u64) -> String {
    format!("{created_unix_ms:015}-{:04x}", rand::random::<u16>())
}

/// The start time a backup id names, if `id` is one (15 digits, `-`, 4 hex digits).
pub fn id_time(id: &str) -> Option<u64> {
    let (time, suffix) = id.split_once('-')?;
    let digits = |s: &str, n: usize, hex: bool| {
        s.len() == n && s.chars().all(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() })
    };
    (digits(time, 15, false) && digits(suffix, 4, true)).then(|| time.parse().ok()).flatten()
}

/// The file name of a partition's entry.
pub fn file_name(index: u32, kind: Kind) -> String {
    match kind {
        Kind::Full => format!("part-{index}.avro"),
        Kind::Changes => format!("part-{index}.changes"),
    }
}

/// Encodes a changes file: the header, the changes in blocks, the schema.
pub fn encode_changes(header: pb::BackupChangesHeader, changes: &[pb::Change], schema: pb::BackupSchema) -> Vec<u8> {
    let mut out = CHANGES_MAGIC.to_vec();
    let mut put = |part: pb::backup_changes_part::Part| {
        let msg = pb::BackupChangesPart { part: Some(part) };
        // Writing to a Vec cannot run out of room.
        let _ = msg.encode_length_delimited(&mut out);
    };
    put(pb::backup_changes_part::Part::Header(header));
    for block in changes.chunks(CHANGES_PER_BLOCK) {
        put(pb::backup_changes_part::Part::Block(pb::BackupChangesBlock { changes: block.to_vec() }));
    }
    put(pb::backup_changes_part::Part::Schema(schema));
    out
}

/// A decoded changes file.
#[derive(Debug, Default)]
pub struct Changes {
    /// Its header.
    pub header: pb::BackupChangesHeader,
    /// Its changes, in commit order.
    pub changes: Vec<pb::Change>,
    /// The schema at `header.through`.
    pub schema: pb::BackupSchema,
}

/// Decodes a changes file, refusing anything but a header, blocks and a schema last.
pub fn decode_changes(mut data: &[u8], name: &str) -> Result<Changes, BackupError> {
    let bad = |why: String| BackupError::Corrupt(format!("{name}: {why}"));
    if data.len() < CHANGES_MAGIC.len() || &data[..CHANGES_MAGIC.len()] != CHANGES_MAGIC {
        return Err(bad("not a changes file (its first bytes are not weftchg1)".into()));
    }
    data = &data[CHANGES_MAGIC.len()..];
    let mut out = Changes::default();
    let (mut header, mut schema) = (false, false);
    while !data.is_empty() {
        if schema {
            return Err(bad("bytes after the schema".into()));
        }
        let part = pb::BackupChangesPart::decode_length_delimited(&mut data)
            .map_err(|e| bad(format!("a part does not decode (truncated?): {e}")))?;
        match part.part {
            Some(pb::backup_changes_part::Part::Header(h)) if !header => {
                if h.format != FORMAT {
                    return Err(bad(format!("format {} (this weft reads {FORMAT})", h.format)));
                }
                out.header = h;
                header = true;
            }
            Some(pb::backup_changes_part::Part::Block(b)) if header => out.changes.extend(b.changes),
            Some(pb::backup_changes_part::Part::Schema(s)) if header => {
                out.schema = s;
                schema = true;
            }
            _ => return Err(bad("parts out of order".into())),
        }
    }
    if !schema {
        return Err(bad("it ends before its schema (truncated)".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let header = pb::BackupChangesHeader { format: FORMAT, partition: 7, after: 10, through: 20 };
        let changes: Vec<pb::Change> = (0..3000u64)
            .map(|i| pb::Change {
                version: 11 + i % 9,
                table: "t".into(),
                kind: Some(pb::change::Kind::Delete(i.to_be_bytes().to_vec().into())),
            })
            .collect();
        let schema = pb::BackupSchema { tables: vec![pb::BackupTable { name: "t".into(), indexes: vec![] }] };
        encode_changes(header, &changes, schema)
    }

    #[test]
    fn a_changes_file_round_trips() {
        let c = decode_changes(&sample(), "f").expect("decodes");
        assert_eq!((c.header.partition, c.header.after, c.header.through), (7, 10, 20));
        assert_eq!(c.changes.len(), 3000);
        assert_eq!(c.schema.tables[0].name, "t");
    }

    #[test]
    fn a_truncated_or_foreign_changes_file_is_refused_with_its_reason() {
        let data = sample();
        for cut in [3, 9, data.len() / 2, data.len() - 1] {
            let e = decode_changes(&data[..cut], "f").expect_err("truncated");
            let text = e.to_string();
            assert!(text.contains("truncated") || text.contains("not a changes file"), "{cut}: {text}");
        }
        let mut extra = data.clone();
        extra.extend_from_slice(&data[8..]);
        assert!(decode_changes(&extra, "f").is_err(), "bytes after the schema");
    }

    #[test]
    fn ids_sort_by_time_and_name_it() {
        let (a, b) = (new_id(999), new_id(1_000_000_000_000));
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 20);
        assert_eq!(id_time(&a), Some(999));
        assert_eq!(id_time("notes"), None);
        assert_eq!(id_time("000000000000999-zzzz"), None);
    }
}
