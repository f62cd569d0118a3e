//! Engine checkpoints of a durable replica: the state machine's snapshots on disk.
//!
//! A checkpoint is two files named by the snapshot's position `n` (last log index + 1):
//! `{n:020}.avro`, the same Avro snapshot stream replicas send each other, and
//! `{n:020}.meta`, one framed record (see [`crate::wal::write_framed`]) holding the
//! snapshot metadata and the stream's length and CRC32C. The stream is written and synced
//! first, the header second, so a header always describes a complete stream; older
//! checkpoints are deleted only after a new one is durable. The newest header wins on
//! open; if it or its stream is damaged, opening fails with a clear error rather than
//! falling back to an older checkpoint that the log may no longer extend.
//!
//! The state machine writes a checkpoint whenever openraft builds a snapshot, and when it
//! installs one received from the leader, before returning: openraft purges the log
//! behind a snapshot, so the checkpoint must be on disk by then.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use weft_proto::v1 as pb;
use weft_store::{Limits, Store, StoreSnapshot};

use crate::disk::{Appender, Disk};
use crate::error::Error;
use crate::sessions::Sessions;
use crate::snapshot;
use crate::snapshot::Progress;
use crate::types::SnapshotMeta;
use crate::wal::{self, WalError, io_err};
use crate::wire;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system trouble, or a damaged header file.
    #[error(transparent)]
    File(#[from] WalError),
    /// The checkpoint does not match its header or does not decode.
    #[error("checkpoint {path}: {reason}")]
    Corrupt {
        /// The stream file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Encoding failed.
    #[error("writing a checkpoint: {0}")]
    Encode(#[from] Error),
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Loaded {
    /// Its metadata.
    pub meta: SnapshotMeta,
    /// The engine.
    pub store: Store,
    /// Sessions.
    pub sessions: Sessions,
}

/// The checkpoint directory of one replica.
#[derive(Debug)]
pub struct Checkpoints {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
}

/// Counts bytes and their CRC32C on the way through.
struct Crc<T> {
    inner: T,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn position(meta: &SnapshotMeta) -> u64 {
    meta.last_log_id.map_or(0, |l| l.index + 1)
}

impl Checkpoints {
    /// Opens (creating) `dir` and loads its newest checkpoint, if any, into an engine
    /// with `limits`.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path, limits: Limits) -> Result<(Self, Option<Loaded>), CheckpointError> {
        disk.create_dir(dir).map_err(io_err(dir))?;
        let this = Checkpoints { disk, dir: dir.to_path_buf() };
        let newest = this.positions()?.into_iter().max();
        let loaded = match newest {
            None => None,
            Some(n) => Some(this.load(n, limits)?),
        };
        Ok((this, loaded))
    }

    fn paths(&self, n: u64) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{n:020}.avro")), self.dir.join(format!("{n:020}.meta")))
    }

    /// Positions that have a header file.
    fn positions(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut v = Vec::new();
        for name in self.disk.list(&self.dir).map_err(io_err(&self.dir))? {
            if let Some(n) = name.strip_suffix(".meta").and_then(|n| n.parse().ok()) {
                v.push(n);
            }
        }
        Ok(v)
    }

    fn load(&self, n: u64, limits: Limits) -> Result<Loaded, CheckpointError> {
        let (avro, meta_path) = self.paths(n);
        let corrupt = |path: &Path, reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
        let data = self.disk.read(&meta_path).map_err(io_err(&meta_path))?;
        let header = wal::read_framed(&data).map_err(|r| corrupt(&meta_path, r.into()))?;
        let header = pb::Checkpoint::decode(header).map_err(|e| corrupt(&meta_path, e.to_string()))?;
        let meta = wire::need(header.meta, "checkpoint meta")
            .and_then(wire::snapshot_meta_from_pb)
            .map_err(|e| corrupt(&meta_path, e.0))?;
        let len = self.disk.size(&avro).map_err(io_err(&avro))?;
        if len != header.bytes {
            return Err(corrupt(&avro, format!("{len} bytes on disk, header says {}", header.bytes)));
        }
        let file = self.disk.reader(&avro).map_err(io_err(&avro))?;
        let mut input = Crc { inner: BufReader::with_capacity(1 << 20, file), crc: 0, bytes: 0 };
        // The decoder reads through its own small buffer so that every byte still passes the CRC.
        let (store, sessions) = snapshot::decode(BufReader::new(&mut input), limits, &Progress::default())
            .map_err(|e| corrupt(&avro, e.to_string()))?;
        // The decoder may stop before the end of the stream; read what is left for the CRC.
        io::copy(&mut input, &mut io::sink()).map_err(io_err(&avro))?;
        if input.crc != header.crc32c {
            return Err(corrupt(&avro, "CRC32C mismatch".into()));
        }
        tracing::info!(path = %avro.display(), bytes = len, "checkpoint loaded");
        Ok(Loaded { meta, store, sessions })
    }

    /// Writes a checkpoint of `store` and `sessions` at `meta` durably, then deletes the
    /// older ones. Blocking: O(records).
    pub fn save(&self, meta: &SnapshotMeta, store: &StoreSnapshot, sessions: &Sessions) -> Result<(), CheckpointError> {
        let n = position(meta);
        let (avro, meta_path) = self.paths(n);
        let tmp = avro.with_extension("avro.tmp");
        let file = self.disk.create(&tmp, false).map_err(io_err(&tmp))?;
        let mut out = Crc { inner: BufWriter::with_capacity(1 << 20, Appender { file, pos: 0 }), crc: 0, bytes: 0 };
        snapshot::encode(store, sessions, &mut out)?;
        let (crc, bytes) = (out.crc, out.bytes);
        let mut file =
            out.inner.into_inner().map_err(|e| WalError::Io { path: tmp.clone(), source: e.into_error() })?;
        file.file.sync_all().map_err(io_err(&tmp))?;
        self.disk.rename(&tmp, &avro).map_err(io_err(&avro))?;
        let header = pb::Checkpoint { meta: Some(wire::snapshot_meta_to_pb(meta)), bytes, crc32c: crc };
        wal::write_framed(&*self.disk, &meta_path, &header.encode_to_vec())?;
        for old in self.positions()?.into_iter().filter(|&m| m < n) {
            let (a, m) = self.paths(old);
            self.disk.remove(&m).map_err(io_err(&m))?;
            self.disk.remove(&a).map_err(io_err(&a))?;
        }
        tracing::debug!(path = %avro.display(), bytes, "checkpoint written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use weft_store::{Op, Scalar};

    use super::*;
    use crate::types::{LeaderId, LogId, StoredMembership};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId { leader_id: LeaderId { term: 3, node_id: 1 }, index }),
            last_membership: StoredMembership::default(),
        }
    }

    fn store(n: u64) -> Store {
        let mut s = Store::new(Limits::default());
        s.create_table("t").unwrap();
        for i in 0..n {
            s.apply(&[Op::put("t", format!("k{i:05}"), vec![b'v'; 20]).with_attr("a", Scalar::I64(i as i64))]).unwrap();
        }
        s
    }

    fn keys(s: &Store) -> Vec<Vec<u8>> {
        s.table("t").unwrap().records().map(|r| r.key().to_vec()).collect()
    }

    #[test]
    fn newest_checkpoint_is_loaded_and_older_ones_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (ck, none) = Checkpoints::open(crate::disk::os(), dir.path(), Limits::default()).unwrap();
        assert!(none.is_none());
        ck.save(&meta(10), &store(5).snapshot(), &Sessions::default()).unwrap();
        let big = store(300);
        ck.save(&meta(20), &big.snapshot(), &Sessions::default()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        let (_, loaded) = Checkpoints::open(crate::disk::os(), dir.path(), Limits::default()).unwrap();
        let loaded = loaded.unwrap();
        assert_eq!(loaded.meta, meta(20));
        assert_eq!(keys(&loaded.store), keys(&big));
    }

    /// A power cut at every point of writing a newer checkpoint (the process killed after
    /// each file call in turn): opening afterwards loads the older checkpoint or the newer
    /// one, whole, and never fails.
    #[test]
    fn a_power_cut_while_checkpointing_leaves_the_old_or_the_new_one() {
        use crate::disk::FaultyDisk;
        let dir = Path::new("/ck");
        let (old, new) = (store(5), store(300));
        let mut seen_new = false;
        for calls in 0.. {
            for seed in 0..4 {
                let disk = FaultyDisk::new(seed);
                let (ck, _) = Checkpoints::open(Arc::new(disk.clone()), dir, Limits::default()).unwrap();
                ck.save(&meta(10), &old.snapshot(), &Sessions::default()).unwrap();
                disk.die_after(calls);
                let finished = ck.save(&meta(20), &new.snapshot(), &Sessions::default()).is_ok();
                disk.crash();
                let (_, loaded) = Checkpoints::open(Arc::new(disk.clone()), dir, Limits::default())
                    .unwrap_or_else(|e| panic!("killed after {calls} calls (seed {seed}): {e}"));
                let loaded = loaded.expect("a checkpoint");
                if loaded.meta == meta(20) {
                    assert_eq!(keys(&loaded.store), keys(&new));
                    seen_new = true;
                } else {
                    assert_eq!(
                        (loaded.meta, keys(&loaded.store)),
                        (meta(10), keys(&old)),
                        "killed after {calls} calls"
                    );
                    assert!(!finished, "a save that returned was lost");
                }
                if finished && seed == 3 {
                    assert!(seen_new);
                    return;
                }
            }
        }
    }

    #[test]
    fn damaged_checkpoint_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let (ck, _) = Checkpoints::open(crate::disk::os(), dir.path(), Limits::default()).unwrap();
        ck.save(&meta(20), &store(100).snapshot(), &Sessions::default()).unwrap();
        let (avro, _) = ck.paths(21);
        let mut data = fs::read(&avro).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0x40;
        fs::write(&avro, &data).unwrap();
        let err = Checkpoints::open(crate::disk::os(), dir.path(), Limits::default()).unwrap_err();
        assert!(err.to_string().contains("00000000000000000021.avro"), "{err}");
        data.truncate(mid);
        fs::write(&avro, &data).unwrap();
        let err = Checkpoints::open(crate::disk::os(), dir.path(), Limits::default()).unwrap_err();
        assert!(err.to_string().contains("header says"), "{err}");
    }
}
