//! The write-ahead log files of a durable replica: framing, segments, recovery.
//!
//! A log directory holds segment files named `{seq:020}.wal`, written in sequence order.
//! Each record is framed as length (u32 LE), CRC32C over the length bytes and the payload
//! (u32 LE), then the payload; an empty payload is never valid, so a zero-filled tail
//! is not mistaken for records. Writes are buffered and reach the disk on [`Wal::sync`]
//! (one `fdatasync` for everything appended since: the caller's group commit). A segment
//! is synced before the next one is started, so only the last segment can end torn.
//!
//! The active segment is zero-filled ahead of its last record, [`ZERO_AHEAD`] at a time
//! (as etcd preallocates its WAL files): most syncs then overwrite blocks the file already
//! has, and `fdatasync` writes the data alone, with no block allocation or file size to
//! persist. A sealed segment is cut back to its last record before the next one starts;
//! the last segment's zero tail is where the next record goes.
//!
//! Recovery reads every segment in order. In the last segment, a bad record with no valid
//! record anywhere after it is a torn tail: the file is cut at the last valid record and
//! the cut is reported. Any other bad record (in an earlier segment, or followed by valid
//! records) is corruption in the middle and a [`WalError::Corrupt`], never a silent skip.
//!
//! Every file call goes through [`Disk`], so the same code runs on the real file system
//! and on [`crate::disk::FaultyDisk`], whose crashes drop unsynced writes.
//!
//! The WAL knows nothing of raft: the caller tells it which log index (if any) each record
//! carries, which is what [`Wal::remove_through`] uses to delete whole segments that a
//! checkpoint has made unnecessary.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, DiskFile};

/// Largest payload a record may carry; a longer length field is corruption.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

const HEADER: usize = 8;

/// How far past its last record the active segment is zero-filled at a time.
pub const ZERO_AHEAD: u64 = 1 << 20;

/// Why a WAL could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O call failed.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A bad record that is not a torn tail.
    #[error("{path}: corrupt record at byte {offset} ({reason}); it is not a torn tail, so recovery stops here")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_path_buf(), source }
}

/// What recovery found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Valid records read.
    pub records: u64,
    /// Bytes cut from a torn tail of the last segment.
    pub torn_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    max_index: Option<u64>,
}

/// An open WAL: sealed segments plus the active one being appended to.
#[derive(Debug)]
pub struct Wal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    sealed: Vec<Segment>,
    active: Segment,
    file: Box<dyn DiskFile>,
    written: u64,
    /// The active segment's length: zeros from `written` on.
    zeroed_to: u64,
    buf: Vec<u8>,
    segment_bytes: u64,
}

/// Frames `payload` onto `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload of the record at `pos` and where the next one starts, or why there is no
/// valid record there.
fn record_at(data: &[u8], pos: usize) -> Result<(&[u8], usize), &'static str> {
    let rest = &data[pos..];
    if rest.len() < HEADER {
        return Err("short header");
    }
    let len_bytes: [u8; 4] = [rest[0], rest[1], rest[2], rest[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 {
        return Err("empty record");
    }
    if len > MAX_RECORD_BYTES {
        return Err("length field too large");
    }
    if rest.len() - HEADER < len {
        return Err("record runs past the end of the file");
    }
    let stored = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let payload = &rest[HEADER..HEADER + len];
    if crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) != stored {
        return Err("CRC mismatch");
    }
    Ok((payload, pos + HEADER + len))
}

/// The payload of a file holding exactly one framed record (see [`write_framed`]).
pub fn read_framed(data: &[u8]) -> Result<&[u8], &'static str> {
    match record_at(data, 0)? {
        (payload, end) if end == data.len() => Ok(payload),
        _ => Err("bytes after the record"),
    }
}

/// Replaces `path` atomically and durably with one framed record holding `payload`:
/// written to a temporary file, synced, renamed over `path`, directory synced.
pub fn write_framed(disk: &dyn Disk, path: &Path, payload: &[u8]) -> Result<(), WalError> {
    let mut data = Vec::with_capacity(payload.len() + HEADER);
    frame(payload, &mut data);
    let tmp = path.with_extension("tmp");
    let mut f = disk.create(&tmp, false).map_err(io_err(&tmp))?;
    f.write_at(&data, 0).and_then(|()| f.sync_all()).map_err(io_err(&tmp))?;
    disk.rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(disk, path.parent().unwrap_or(Path::new(".")))
}

/// Whether any valid record starts after `pos`.
fn valid_record_after(data: &[u8], pos: usize) -> bool {
    (pos + 1..data.len().saturating_sub(HEADER - 1)).any(|p| record_at(data, p).is_ok())
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

pub(crate) fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<(), WalError> {
    disk.sync_dir(dir).map_err(io_err(dir))
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, handing every valid record's payload to `visit`
    /// in order. `visit` returns the log index the record carries, or an error if the
    /// payload cannot be understood (which is corruption: its CRC was good).
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        segment_bytes: u64,
        mut visit: impl FnMut(&[u8]) -> Result<Option<u64>, String>,
    ) -> Result<(Wal, Recovery), WalError> {
        disk.create_dir(dir).map_err(io_err(dir))?;
        let mut seqs = Vec::new();
        for name in disk.list(dir).map_err(io_err(dir))? {
            let Some(stem) = name.strip_suffix(".wal") else { continue };
            if let Ok(seq) = stem.parse::<u64>() {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segments = Vec::with_capacity(seqs.len());
        let mut last_len = 0u64;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, seq);
            let data = disk.read(&path).map_err(io_err(&path))?;
            let last = i + 1 == seqs.len();
            let mut max_index = None;
            let mut pos = 0;
            while pos < data.len() {
                match record_at(&data, pos) {
                    Ok((payload, next)) => {
                        let index = visit(payload).map_err(|reason| WalError::Corrupt {
                            path: path.clone(),
                            offset: pos as u64,
                            reason: format!("undecodable payload: {reason}"),
                        })?;
                        max_index = max_index.max(index);
                        recovery.records += 1;
                        pos = next;
                    }
                    // The zero-filled space ahead of the last record: not a torn tail.
                    Err(_) if last && data[pos..].iter().all(|b| *b == 0) => break,
                    Err(reason) if !last || valid_record_after(&data, pos) => {
                        return Err(WalError::Corrupt { path, offset: pos as u64, reason: reason.into() });
                    }
                    Err(reason) => {
                        tracing::warn!(path = %path.display(), offset = pos, reason, "cutting a torn WAL tail");
                        let mut f = disk.open(&path).map_err(io_err(&path))?;
                        f.set_len(pos as u64).and_then(|()| f.sync_all()).map_err(io_err(&path))?;
                        recovery.torn_bytes = (data.len() - pos) as u64;
                        break;
                    }
                }
            }
            last_len = pos as u64;
            segments.push(Segment { seq, path, max_index });
        }
        let active = match segments.pop() {
            Some(s) => s,
            None => {
                let path = segment_path(dir, 1);
                disk.create(&path, false).map_err(io_err(&path))?;
                sync_dir(&*disk, dir)?;
                last_len = 0;
                Segment { seq: 1, path, max_index: None }
            }
        };
        let file = disk.open(&active.path).map_err(io_err(&active.path))?;
        let zeroed_to = file.size().map_err(io_err(&active.path))?.max(last_len);
        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            sealed: segments,
            active,
            file,
            written: last_len,
            zeroed_to,
            buf: Vec::new(),
            segment_bytes: segment_bytes.max(HEADER as u64 + 1),
        };
        Ok((wal, recovery))
    }

    /// Buffers one record carrying log index `index` (if any). Starts a new segment first
    /// when the active one is full.
    pub fn append(&mut self, payload: &[u8], index: Option<u64>) -> Result<(), WalError> {
        if self.written + self.buf.len() as u64 >= self.segment_bytes {
            self.roll()?;
        }
        frame(payload, &mut self.buf);
        self.active.max_index = self.active.max_index.max(index);
        Ok(())
    }

    /// Writes everything buffered and makes it durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        let path = &self.active.path;
        if !self.buf.is_empty() {
            let end = self.written + self.buf.len() as u64;
            self.file.write_at(&self.buf, self.written).map_err(io_err(path))?;
            if end > self.zeroed_to {
                // Past the zeroed space: zero-fill further ahead (up to the segment's size,
                // where the segment rolls), so the next syncs overwrite blocks that exist.
                let to = (end + ZERO_AHEAD).min(self.segment_bytes.max(end));
                if to > end {
                    self.file.write_at(&vec![0u8; (to - end) as usize], end).map_err(io_err(path))?;
                }
                self.zeroed_to = to;
            }
            self.written = end;
            self.buf.clear();
        }
        self.file.sync_data().map_err(io_err(path))
    }

    fn roll(&mut self) -> Result<(), WalError> {
        self.sync()?;
        // A sealed segment ends at its last record (recovery reads anything after it in a
        // sealed segment as corruption), so its zero tail goes before the next one starts.
        if self.zeroed_to > self.written {
            let path = &self.active.path;
            self.file.set_len(self.written).and_then(|()| self.file.sync_all()).map_err(io_err(path))?;
        }
        let seq = self.active.seq + 1;
        let path = segment_path(&self.dir, seq);
        let file = self.disk.create(&path, true).map_err(io_err(&path))?;
        sync_dir(&*self.disk, &self.dir)?;
        let old = std::mem::replace(&mut self.active, Segment { seq, path, max_index: None });
        self.sealed.push(old);
        self.file = file;
        self.written = 0;
        self.zeroed_to = 0;
        Ok(())
    }

    /// Deletes the leading sealed segments whose entries all lie at or below `index`.
    /// Returns how many were deleted. The active segment is never deleted.
    pub fn remove_through(&mut self, index: u64) -> Result<usize, WalError> {
        let n = self.sealed.iter().take_while(|s| s.max_index.is_none_or(|m| m <= index)).count();
        for s in self.sealed.drain(..n) {
            self.disk.remove(&s.path).map_err(io_err(&s.path))?;
        }
        if n > 0 {
            sync_dir(&*self.disk, &self.dir)?;
        }
        Ok(n)
    }

    /// Number of segment files, the active one included.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.sealed.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};

    use proptest::prelude::*;

    use super::*;

    fn read_all(dir: &Path, seg: u64) -> Result<(Vec<Vec<u8>>, Recovery, Wal), WalError> {
        let mut got = Vec::new();
        let (wal, rec) = Wal::open(crate::disk::os(), dir, seg, |p| {
            got.push(p.to_vec());
            Ok(None)
        })?;
        Ok((got, rec, wal))
    }

    fn write(dir: &Path, seg: u64, records: &[Vec<u8>]) -> usize {
        let (mut wal, _) = Wal::open(crate::disk::os(), dir, seg, |_| Ok(None)).unwrap();
        for r in records {
            wal.append(r, None).unwrap();
        }
        wal.sync().unwrap();
        wal.segments()
    }

    /// Bytes the framed records take (the file may be longer: its zero-filled tail).
    fn data_len(records: &[Vec<u8>]) -> usize {
        records.iter().map(|r| HEADER + r.len()).sum()
    }

    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 1..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever is written and synced is read back, in order, across segments.
        #[test]
        fn round_trip(records in payloads(), seg in 64u64..2048) {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), seg, &records);
            let (got, rec, _) = read_all(dir.path(), seg).unwrap();
            prop_assert_eq!(rec.torn_bytes, 0);
            prop_assert_eq!(got, records);
        }

        /// Power cuts over several lives of a WAL on the faulty disk, some with the process
        /// killed mid-write: every record whose sync returned is read back after the cut;
        /// what was not synced is lost from some record on, never reordered or half kept;
        /// and the WAL always opens (a torn tail is cut, never called corruption).
        #[test]
        fn a_power_cut_loses_only_what_was_not_synced(
            seed in any::<u64>(),
            seg in 64u64..1024,
            lives in proptest::collection::vec((payloads(), 1usize..8, proptest::option::of(0u64..120)), 1..5),
        ) {
            use crate::disk::FaultyDisk;
            let disk = FaultyDisk::new(seed);
            let dir = Path::new("/wal");
            // What the last life wrote, in order, and how much of it a sync confirmed.
            let mut written: Vec<Vec<u8>> = Vec::new();
            let mut acked = 0;
            for (records, sync_every, die_after) in lives {
                let mut got = Vec::new();
                let opened = Wal::open(std::sync::Arc::new(disk.clone()), dir, seg, |p| {
                    got.push(p.to_vec());
                    Ok(None)
                });
                let (mut wal, _) = opened.map_err(|e| TestCaseError::fail(format!("open after a cut: {e}")))?;
                prop_assert!(got.len() >= acked, "lost synced records: {} of {acked} back", got.len());
                prop_assert!(got.len() <= written.len() && got[..] == written[..got.len()], "not a prefix of what was written");
                written = got;
                acked = written.len();
                if let Some(n) = die_after {
                    disk.die_after(n);
                }
                for (i, r) in records.iter().enumerate() {
                    if wal.append(r, None).is_err() {
                        break;
                    }
                    written.push(r.clone());
                    if (i + 1) % sync_every == 0 || i + 1 == records.len() {
                        match wal.sync() {
                            Ok(()) => acked = written.len(),
                            Err(_) => break,
                        }
                    }
                }
                drop(wal);
                disk.crash();
            }
        }

        /// A tail cut anywhere (a torn write) loses only the records it cut into; the WAL
        /// then takes new records after the last whole one.
        #[test]
        fn torn_tail_is_cut(records in payloads(), cut in any::<prop::sample::Index>()) {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), 1 << 30, &records);
            let path = segment_path(dir.path(), 1);
            let keep = cut.index(data_len(&records)) as u64;
            OpenOptions::new().write(true).open(&path).unwrap().set_len(keep).unwrap();
            let (got, rec, mut wal) = read_all(dir.path(), 1 << 30).unwrap();
            let mut end = 0u64;
            let whole = records.iter().take_while(|r| { end += (HEADER + r.len()) as u64; end <= keep }).count();
            prop_assert_eq!(&got[..], &records[..whole]);
            prop_assert_eq!(rec.torn_bytes + (got.iter().map(|r| r.len() + HEADER).sum::<usize>() as u64), keep);
            wal.append(b"after", None).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (again, rec, _) = read_all(dir.path(), 1 << 30).unwrap();
            prop_assert_eq!(rec.torn_bytes, 0);
            prop_assert_eq!(again.last().map(|v| v.as_slice()), Some(&b"after"[..]));
            prop_assert_eq!(again.len(), whole + 1);
        }

        /// Garbage appended after the last record (a write that never finished) is cut.
        #[test]
        fn garbage_tail_is_cut(records in payloads(), junk in proptest::collection::vec(any::<u8>(), 1..64)) {
            use std::os::unix::fs::FileExt;
            prop_assume!(junk.iter().any(|b| *b != 0));
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), 1 << 30, &records);
            let path = segment_path(dir.path(), 1);
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&junk, data_len(&records) as u64).unwrap();
            let file_len = f.metadata().unwrap().len();
            drop(f);
            let (got, rec, _) = read_all(dir.path(), 1 << 30).unwrap();
            prop_assert_eq!(got, records.clone());
            // Everything from the junk on is cut: the junk and the zeros after it.
            prop_assert_eq!(rec.torn_bytes, file_len - data_len(&records) as u64);
            prop_assert!(rec.torn_bytes >= junk.len() as u64);
            prop_assert_eq!(fs::metadata(&path).unwrap().len(), data_len(&records) as u64);
        }

        /// A flipped byte inside a record that has whole records after it is an error,
        /// never a silent skip.
        #[test]
        fn corruption_in_the_middle_is_an_error(records in payloads(), which in any::<prop::sample::Index>(), bit in 0u8..8) {
            prop_assume!(records.len() >= 2);
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), 1 << 30, &records);
            let path = segment_path(dir.path(), 1);
            let mut data = fs::read(&path).unwrap();
            // Any byte of any record but the last.
            let last_len = HEADER + records.last().unwrap().len();
            let at = which.index(data_len(&records) - last_len);
            data[at] ^= 1 << bit;
            fs::write(&path, &data).unwrap();
            let err = read_all(dir.path(), 1 << 30).err();
            prop_assert!(matches!(err, Some(WalError::Corrupt { .. })), "{err:?}");
        }
    }

    /// The active segment is zero-filled ahead of its records; sealed segments end at
    /// their last record; reopening reads every record, cuts nothing, and appends after
    /// the last one, over the zeros.
    #[test]
    fn zero_filled_space_is_written_over_and_sealed_segments_end_at_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let first: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i + 1; 100]).collect();
        let seg = 4096;
        write(dir.path(), seg, &first);
        let mut files: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(files.len() > 2, "{files:?}");
        let (last, sealed) = files.split_last().unwrap();
        let mut in_sealed = 0;
        for f in sealed {
            let len = fs::metadata(f).unwrap().len() as usize;
            assert_eq!(len % (HEADER + 100), 0, "{f:?} ends at a record boundary");
            in_sealed += len / (HEADER + 100);
        }
        let active_records = (first.len() - in_sealed) * (HEADER + 100);
        let active_len = fs::metadata(last).unwrap().len() as usize;
        assert!(active_len > active_records, "zero-filled ahead: {active_len} vs {active_records}");
        assert!(fs::read(last).unwrap()[active_records..].iter().all(|b| *b == 0));
        let (got, rec, mut wal) = read_all(dir.path(), seg).unwrap();
        assert_eq!((got, rec.torn_bytes), (first.clone(), 0));
        wal.append(b"after", None).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (again, rec, _) = read_all(dir.path(), seg).unwrap();
        assert_eq!(rec.torn_bytes, 0);
        assert_eq!(again.len(), first.len() + 1);
        assert_eq!(again.last().map(|v| v.as_slice()), Some(&b"after"[..]));
    }

    #[test]
    fn corruption_in_a_sealed_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 50]).collect();
        assert!(write(dir.path(), 200, &records) > 2);
        // Tear the end of the first segment: not the last one, so not a torn tail.
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        let err = read_all(dir.path(), 200).unwrap_err();
        assert!(err.to_string().contains("00000000000000000001.wal"), "{err}");
    }

    #[test]
    fn remove_through_deletes_only_covered_sealed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(crate::disk::os(), dir.path(), 100, |_| Ok(None)).unwrap();
        for i in 1..=30u64 {
            wal.append(&[7u8; 40], Some(i)).unwrap();
        }
        wal.sync().unwrap();
        let before = wal.segments();
        assert!(before > 3);
        // A segment takes records until it holds 100 bytes or more: 3 of 48 bytes each, so
        // the segments hold 1-3, 4-6, ... and the active one 28-30.
        assert_eq!(before, 10);
        assert_eq!(wal.remove_through(7).unwrap(), 2);
        assert_eq!(wal.segments(), before - 2);
        assert_eq!(wal.remove_through(1_000).unwrap(), before - 3);
        assert_eq!(wal.segments(), 1);
        drop(wal);
        let mut indexes = Vec::new();
        let (_, rec) = Wal::open(crate::disk::os(), dir.path(), 100, |p| {
            indexes.push(p.len());
            Ok(None)
        })
        .unwrap();
        assert_eq!(rec.records as usize, indexes.len());
        assert_eq!(rec.records, 3);
    }

    #[test]
    fn undecodable_payload_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1 << 20, &[b"ok".to_vec(), b"bad".to_vec()]);
        let err =
            Wal::open(
                crate::disk::os(),
                dir.path(),
                1 << 20,
                |p| if p == b"bad" { Err("nope".into()) } else { Ok(None) },
            )
            .unwrap_err();
        assert!(matches!(err, WalError::Corrupt { offset: 10, .. }), "{err}");
    }
}
