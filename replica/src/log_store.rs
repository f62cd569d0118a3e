//! The raft log store, in both modes.
//!
//! Entries, vote and committed id live in memory behind one short-lived `parking_lot`
//! lock; nothing awaits while holding it. That is all a **volatile** log has: a process
//! that restarts comes back with nothing, so its replica must rejoin under a fresh
//! replica id and be rebuilt from the primary (see [`crate::types`]).
//!
//! A **durable** log also writes every change to a [`Wal`] through one writer thread per
//! replica (in a seeded simulation, one task of the simulation instead). The thread takes everything queued, writes it, calls `fdatasync` once and only
//! then fires the flush callbacks of the appends in that batch (group commit), so an entry
//! is acknowledged to the leader only once it is on disk. Truncations, purges and the
//! committed id are records in the same file, ordered with the appends. The vote is a
//! separate small file replaced atomically, also written by the writer thread, and
//! `save_vote` returns only once it is durable. Opening a durable log replays the WAL
//! into memory; segments a checkpoint covers are deleted after a purge.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use parking_lot::Mutex;
use prost::Message;
use weft_proto::v1 as pb;
use weft_proto::v1::wal_record::Kind;

use crate::disk::Disk;
use crate::types::{Entry, LogId, TypeConfig, Vote};
use crate::wal::{self, Recovery, Wal, WalError};
use crate::wire;

/// WAL segment size of durable logs.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Most queued operations one group commit takes.
const MAX_GROUP: usize = 4096;
/// Most operations (records, flush callbacks, vote saves) queued for the WAL writer; past
/// it, the raft core's storage calls wait (back-pressure onto openraft, then proposers).
pub const WAL_QUEUE_MAX: usize = 8192;
const VOTE_FILE: &str = "vote";

#[derive(Debug, Default)]
struct Inner {
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
    committed: Option<LogId>,
    vote: Option<Vote>,
}

impl Inner {
    fn insert(&mut self, e: Entry) {
        let _ = self.log.split_off(&e.log_id.index);
        self.log.insert(e.log_id.index, e);
    }

    fn truncate_after(&mut self, last: Option<LogId>) {
        let _ = self.log.split_off(&last.map_or(0, |l| l.index + 1));
    }

    fn purge(&mut self, id: LogId) {
        self.log = self.log.split_off(&(id.index + 1));
        self.last_purged = Some(id);
    }

    /// Replays one WAL record; returns the log index it carries.
    fn replay(&mut self, payload: &[u8]) -> Result<Option<u64>, String> {
        let rec = pb::WalRecord::decode(payload).map_err(|e| e.to_string())?;
        match rec.kind.ok_or("record without a kind")? {
            Kind::Entry(e) => {
                let e = wire::entry_from_pb(e).map_err(|e| e.0)?;
                let index = e.log_id.index;
                self.insert(e);
                Ok(Some(index))
            }
            Kind::Truncate(t) => {
                self.truncate_after(wire::opt_log_id_from_pb(t.after).map_err(|e| e.0)?);
                Ok(None)
            }
            Kind::Purged(id) => {
                let id = wire::opt_log_id_from_pb(Some(id)).map_err(|e| e.0)?.ok_or("purge without a log id")?;
                self.purge(id);
                Ok(None)
            }
            Kind::Committed(c) => {
                self.committed = wire::opt_log_id_from_pb(c.id).map_err(|e| e.0)?;
                Ok(None)
            }
        }
    }

    /// The log after replay must run without holes from just after the last purge.
    fn check(&self) -> Result<(), String> {
        let mut expect = self.last_purged.map(|p| p.index + 1);
        for &i in self.log.keys() {
            if expect.is_some_and(|x| x != i) {
                return Err(format!("the log has a hole: entry {i} where {} was expected", expect.unwrap_or(0)));
            }
            expect = Some(i + 1);
        }
        Ok(())
    }
}

enum WalOp {
    Record { payload: Vec<u8>, index: Option<u64> },
    Flushed(IOFlushed<TypeConfig>),
    RemoveThrough(u64),
    Vote { payload: Vec<u8>, done: tokio::sync::oneshot::Sender<Result<(), String>> },
}

/// The raft log of one replica. Clones share the same log (and WAL writer).
#[derive(Clone, Debug, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    wal: Option<tokio::sync::mpsc::Sender<WalOp>>,
}

impl Debug for WalOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WalOp")
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> WalError {
    WalError::Corrupt { path: path.to_path_buf(), offset: 0, reason: reason.into() }
}

impl LogStore {
    /// An empty volatile log.
    pub fn volatile() -> Self {
        Self::default()
    }

    /// Opens the durable log in `dir` (created if missing), replaying its WAL, and starts
    /// its writer thread.
    pub fn open_durable(disk: Arc<dyn Disk>, dir: &Path, segment_bytes: u64) -> Result<(Self, Recovery), WalError> {
        let mut inner = Inner::default();
        let (wal, recovery) = Wal::open(disk.clone(), dir, segment_bytes, |p| inner.replay(p))?;
        inner.check().map_err(|reason| corrupt(dir, reason))?;
        let vote_path = dir.join(VOTE_FILE);
        match disk.read(&vote_path) {
            Ok(data) => {
                let payload = wal::read_framed(&data).map_err(|r| corrupt(&vote_path, r))?;
                let vote = pb::Vote::decode(payload).map_err(|e| corrupt(&vote_path, e.to_string()))?;
                inner.vote = Some(wire::vote_from_pb(Some(vote)).map_err(|e| corrupt(&vote_path, e.0))?);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(WalError::Io { path: vote_path, source }),
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(WAL_QUEUE_MAX);
        let mut writer = Writer { wal, disk, vote_path, failed: None };
        if weft_security::rng::seeded() {
            // A seeded simulation schedules everything itself: the writer is one of its
            // tasks (its disk is in memory), and a crashed host's writer goes with it.
            // Its disk says how long a sync takes on the simulation's clock; waiting for it
            // before the group commit lets more join the group, as a real sync does.
            tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    let sync_time = writer.disk.sync_time();
                    if !sync_time.is_zero() {
                        tokio::time::sleep(sync_time).await;
                    }
                    writer.commit(first, &mut rx);
                }
            });
        } else {
            std::thread::Builder::new()
                .name("weft-wal".into())
                .spawn(move || {
                    while let Some(first) = rx.blocking_recv() {
                        writer.commit(first, &mut rx);
                    }
                })
                .map_err(|source| WalError::Io { path: dir.to_path_buf(), source })?;
        }
        tracing::info!(
            dir = %dir.display(),
            records = recovery.records,
            torn_bytes = recovery.torn_bytes,
            "durable log recovered"
        );
        Ok((LogStore { inner: Arc::new(Mutex::new(inner)), wal: Some(tx) }, recovery))
    }

    async fn send(&self, op: WalOp) -> Result<(), io::Error> {
        match &self.wal {
            None => Ok(()),
            Some(tx) => tx.send(op).await.map_err(|_| io::Error::other("the WAL writer has stopped")),
        }
    }

    async fn record(&self, kind: Kind, index: Option<u64>) -> Result<(), io::Error> {
        if self.wal.is_none() {
            return Ok(());
        }
        let payload = pb::WalRecord { kind: Some(kind) }.encode_to_vec();
        self.send(WalOp::Record { payload, index }).await
    }
}

/// The writer of a durable log (its own thread, or a task in a seeded simulation): group
/// commits until every sender is gone. After an I/O error it fails every later operation
/// (openraft then stops the group).
struct Writer {
    wal: Wal,
    disk: Arc<dyn Disk>,
    vote_path: PathBuf,
    failed: Option<String>,
}

impl Writer {
    /// One group commit: `first` and whatever else is queued (up to `MAX_GROUP`), one sync,
    /// then every waiter answered.
    fn commit(&mut self, first: WalOp, rx: &mut tokio::sync::mpsc::Receiver<WalOp>) {
        let Writer { wal, disk, vote_path, failed } = self;
        let mut waiters = Vec::new();
        let mut remove = None;
        let more = std::iter::from_fn(|| rx.try_recv().ok()).take(MAX_GROUP);
        for op in std::iter::once(first).chain(more) {
            match op {
                WalOp::Record { payload, index } => {
                    if failed.is_none()
                        && let Err(e) = wal.append(&payload, index)
                    {
                        *failed = Some(e.to_string());
                    }
                }
                WalOp::RemoveThrough(i) => remove = Some(i),
                other => waiters.push(other),
            }
        }
        // Every batch syncs, a batch of committed ids alone included, so the persisted
        // committed id stays close behind and a restart replays little. Reads do not rely
        // on it: it trails the acknowledgements by a batch anyway, which is why a restarted
        // primary must win an election before it serves (`host::RaftSettings::config`).
        if failed.is_none()
            && let Err(e) = wal.sync()
        {
            *failed = Some(e.to_string());
        }
        if let Some(e) = &failed {
            tracing::error!(error = %e, "WAL write failed; the replica stops accepting entries");
        } else if let Some(i) = remove {
            match wal.remove_through(i) {
                Ok(n) if n > 0 => tracing::debug!(segments = n, through = i, "WAL segments removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "removing WAL segments failed; they stay"),
            }
        }
        for w in waiters {
            match w {
                WalOp::Flushed(cb) => cb.io_completed(match &failed {
                    None => Ok(()),
                    Some(e) => Err(io::Error::other(e.clone())),
                }),
                WalOp::Vote { payload, done } => {
                    let r = match &failed {
                        Some(e) => Err(e.clone()),
                        None => wal::write_framed(&**disk, vote_path, &payload).map_err(|e| e.to_string()),
                    };
                    let _ = done.send(r);
                }
                WalOp::Record { .. } | WalOp::RemoveThrough(_) => {}
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.inner.lock().log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.inner.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        if self.wal.is_some() {
            let (done, rx) = tokio::sync::oneshot::channel();
            self.send(WalOp::Vote { payload: wire::vote_to_pb(vote).encode_to_vec(), done }).await?;
            rx.await.map_err(|_| io::Error::other("the WAL writer has stopped"))?.map_err(io::Error::other)?;
        }
        self.inner.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.inner.lock().committed = committed;
        self.record(Kind::Committed(pb::wal_record::Committed { id: wire::opt_log_id_to_pb(committed.as_ref()) }), None)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        if self.wal.is_none() {
            let mut inner = self.inner.lock();
            for e in entries {
                inner.insert(e);
            }
            drop(inner);
            callback.io_completed(Ok(()));
            return Ok(());
        }
        for e in entries {
            let index = e.log_id.index;
            self.record(Kind::Entry(wire::entry_to_pb(&e)), Some(index)).await?;
            self.inner.lock().insert(e);
        }
        self.send(WalOp::Flushed(callback)).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.inner.lock().truncate_after(last_log_id);
        self.record(
            Kind::Truncate(pb::wal_record::Truncate { after: wire::opt_log_id_to_pb(last_log_id.as_ref()) }),
            None,
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        {
            let mut inner = self.inner.lock();
            if inner.last_purged.as_ref().is_some_and(|p| p > &log_id) {
                return Err(io::Error::other(format!("purge to {log_id} is behind the last purge")));
            }
            inner.purge(log_id);
        }
        self.record(Kind::Purged(wire::log_id_to_pb(&log_id)), None).await?;
        self.send(WalOp::RemoveThrough(log_id.index)).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::{EntryPayload, StorageError};
    use tempfile::TempDir;
    use weft_store::Limits;

    use super::*;
    use crate::state_machine::StateMachine;
    use crate::types::LeaderId;
    use openraft::errors::ErrorSource;
    use openraft::type_config::TypeConfigExt;

    struct Volatile;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for Volatile {
        async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
            Ok(((), LogStore::volatile(), StateMachine::new(Limits::default())))
        }
    }

    struct Durable;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Durable {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let dir = TempDir::new().map_err(|e| StorageError::read(ErrorSource::from_error(&e)))?;
            let (log, _) = LogStore::open_durable(crate::disk::os(), dir.path(), 4096)
                .map_err(|e| StorageError::read(ErrorSource::from_error(&e)))?;
            Ok((dir, log, StateMachine::new(Limits::default())))
        }
    }

    /// openraft's own storage contract suite, against the volatile log and our state machine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_volatile() -> Result<(), StorageError<TypeConfig>> {
        Suite::test_all(Volatile).await?;
        Ok(())
    }

    /// The same suite against the durable log (small segments, so rolls and removals run).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_durable() -> Result<(), StorageError<TypeConfig>> {
        Suite::test_all(Durable).await?;
        Ok(())
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId { leader_id: LeaderId { term, node_id: 1 }, index }
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
    }

    async fn append(log: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = <TypeConfig as TypeConfigExt>::oneshot();
        let cb = IOFlushed::<TypeConfig>::signal(tx);
        log.append(entries, cb).await.unwrap();
        rx.await.unwrap().unwrap();
    }

    async fn state(log: &mut LogStore) -> (LogState<TypeConfig>, Option<Vote>, Option<LogId>, Vec<LogId>) {
        let entries = log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id).collect();
        (
            log.get_log_state().await.unwrap(),
            log.read_vote().await.unwrap(),
            log.read_committed().await.unwrap(),
            entries,
        )
    }

    /// A failed fsync is never reported as a flush: the append's callback gets the error,
    /// so does every later write (openraft then stops the group), even once the disk works
    /// again; after a power cut, what was flushed before the failure is all there.
    #[tokio::test]
    async fn a_failed_sync_fails_the_flush_and_every_later_write() {
        use crate::disk::{Call, FaultyDisk};
        let disk = FaultyDisk::new(7);
        let dir = Path::new("/log");
        let (mut log, _) = LogStore::open_durable(Arc::new(disk.clone()), dir, 512).unwrap();
        append(&mut log, (0..10).map(|i| blank(1, i)).collect()).await;
        disk.fail(Call::Sync, true);
        let flushed = |log: &mut LogStore, entries: Vec<Entry>| {
            let (tx, rx) = <TypeConfig as TypeConfigExt>::oneshot();
            let cb = IOFlushed::<TypeConfig>::signal(tx);
            let mut log = log.clone();
            async move {
                log.append(entries, cb).await.unwrap();
                rx.await.unwrap()
            }
        };
        assert!(flushed(&mut log, vec![blank(1, 10)]).await.is_err(), "a failed sync is not a flush");
        disk.fail(Call::Sync, false);
        assert!(flushed(&mut log, vec![blank(1, 11)]).await.is_err(), "nor is anything after it");
        assert!(log.save_vote(&Vote::new(2, 7)).await.is_err());
        drop(log);
        disk.crash();
        let (mut log, _) = LogStore::open_durable(Arc::new(disk.clone()), dir, 512).unwrap();
        let (_, _, _, entries) = state(&mut log).await;
        assert!(entries.len() >= 10 && entries[..10] == (0..10).map(|i| log_id(1, i)).collect::<Vec<_>>()[..]);
    }

    /// Everything a durable log was told survives reopening: entries, truncation, purge,
    /// vote and committed id, across several segments.
    #[tokio::test]
    async fn durable_log_reopens_as_it_was() {
        let dir = TempDir::new().unwrap();
        let before = {
            let (mut log, _) = LogStore::open_durable(crate::disk::os(), dir.path(), 512).unwrap();
            append(&mut log, (0..40).map(|i| blank(1, i)).collect()).await;
            log.truncate_after(Some(log_id(1, 29))).await.unwrap();
            append(&mut log, (30..50).map(|i| blank(2, i)).collect()).await;
            log.save_vote(&Vote::new(2, 7)).await.unwrap();
            log.save_committed(Some(log_id(2, 45))).await.unwrap();
            log.purge(log_id(1, 20)).await.unwrap();
            // A vote save is a barrier: every record before it is on disk.
            log.save_vote(&Vote::new_committed(2, 7)).await.unwrap();
            state(&mut log).await
        };
        let segments = std::fs::read_dir(dir.path()).unwrap().count();
        let (mut log, rec) = LogStore::open_durable(crate::disk::os(), dir.path(), 512).unwrap();
        assert_eq!(rec.torn_bytes, 0);
        let after = state(&mut log).await;
        assert_eq!(before, after);
        assert_eq!(after.0.last_purged_log_id, Some(log_id(1, 20)));
        assert_eq!(after.3.first(), Some(&log_id(1, 21)));
        assert_eq!(after.3.last(), Some(&log_id(2, 49)));
        assert!(segments > 3, "expected several segments, found {segments} files");
    }
}
