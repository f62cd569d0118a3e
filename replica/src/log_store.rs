//! The volatile log store: the raft log, vote and committed id in memory only.
//!
//! A process that restarts comes back with nothing, so its replica must rejoin under a
//! fresh replica id and be rebuilt from the primary (see [`crate::types`]). All state sits
//! behind one short-lived `parking_lot` lock; nothing awaits while holding it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use parking_lot::Mutex;

use crate::types::{Entry, LogId, TypeConfig, Vote};

#[derive(Debug, Default)]
struct Inner {
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
    committed: Option<LogId>,
    vote: Option<Vote>,
}

/// An in-memory raft log. Clones share the same log.
#[derive(Clone, Debug, Default)]
pub struct VolatileLog {
    inner: Arc<Mutex<Inner>>,
}

impl VolatileLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries held (after purges).
    pub fn len(&self) -> usize {
        self.inner.lock().log.len()
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RaftLogReader<TypeConfig> for VolatileLog {
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

impl RaftLogStorage<TypeConfig> for VolatileLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.inner.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id).or_else(|| inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.inner.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.inner.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        {
            let mut inner = self.inner.lock();
            for e in entries {
                inner.log.insert(e.log_id.index, e);
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let mut inner = self.inner.lock();
        let _ = inner.log.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        if inner.last_purged.as_ref().is_some_and(|p| p > &log_id) {
            return Err(io::Error::other(format!("purge to {log_id} is behind the last purge")));
        }
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        inner.last_purged = Some(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};
    use weft_store::Limits;

    use super::*;
    use crate::state_machine::StateMachine;

    struct Builder;

    impl StoreBuilder<TypeConfig, VolatileLog, StateMachine, ()> for Builder {
        async fn build(&self) -> Result<((), VolatileLog, StateMachine), StorageError<TypeConfig>> {
            Ok(((), VolatileLog::new(), StateMachine::new(Limits::default())))
        }
    }

    /// openraft's own storage contract suite, against the volatile log and our state machine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
        Suite::test_all(Builder).await?;
        Ok(())
    }
}
