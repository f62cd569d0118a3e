//! The replicated state machine: applies committed entries to a `weft-store` engine,
//! answers every command with a [`pb::CommandResult`] carrying its log index as version,
//! and provides snapshots.
//!
//! Snapshot data is an [`Image`]: on the sending side an O(1) engine snapshot taken under
//! the apply lock, which the transport encodes as an Avro stream while writes go on; on
//! the receiving side an engine already built from that stream, which installing swaps in.
//! Building a snapshot therefore costs O(tables + sessions), never O(records), and the
//! snapshot policy can be frequent enough to keep logs short.
//!
//! A durable replica's state machine also writes every snapshot it builds or installs as
//! a [`Checkpoint`](crate::checkpoint) before openraft may purge the log behind it, and
//! starts from the newest checkpoint on open; openraft then reapplies the log after it.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use weft_proto::v1 as pb;
use weft_store::{Limits, Store, StoreSnapshot};

use crate::changes::{Change, History};
use crate::checkpoint::{CheckpointError, Checkpoints, Loaded};
use crate::command::{error_to_pb, index_from_pb, op_from_pb, record_to_pb, wire_error_to_pb};
use crate::disk::Disk;
use crate::sessions::{Seen, Sessions};
use crate::snapshot::Progress;
use crate::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// The applied state of one replica.
#[derive(Debug)]
pub struct State {
    /// The engine.
    pub store: Store,
    /// The last applied log id.
    pub last_applied: Option<LogId>,
    /// The last applied membership.
    pub membership: StoredMembership,
    /// Client sessions.
    pub sessions: Sessions,
    /// Recent committed changes, for watchers.
    pub changes: History,
}

/// A raft group handle: openraft over this state machine.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// A snapshot's data.
#[derive(Debug)]
pub enum Image {
    /// A frozen view of the engine, to be encoded and sent.
    Frozen {
        /// The engine snapshot.
        store: StoreSnapshot,
        /// Sessions at the same point.
        sessions: Sessions,
    },
    /// An engine built from a received stream, to be installed.
    Built {
        /// The engine.
        store: Box<Store>,
        /// Sessions from the stream.
        sessions: Sessions,
    },
}

#[derive(Debug)]
struct Shared {
    state: RwLock<State>,
    current: Mutex<Option<(SnapshotMeta, StoreSnapshot, Sessions)>>,
    progress: Arc<Progress>,
    checkpoints: Option<Checkpoints>,
    /// Woken after every applied batch of entries: watchers wait on it.
    applied: tokio::sync::Notify,
    /// The partition it belongs to, for its log lines ([`StateMachine::of_partition`]).
    partition: std::sync::atomic::AtomicU64,
}

/// The state machine handle: cheap to clone, shared by openraft and the read path.
#[derive(Clone, Debug)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    /// An empty state machine whose engine enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with(Store::new(limits), None, None)
    }

    /// Names its partition in what it logs: each write it applies is a debug line with its
    /// partition, log index, session and sequence number, on every replica, so one write
    /// can be followed from the node that took it to every node that applied it.
    pub fn of_partition(self, partition: u64) -> Self {
        self.shared.partition.store(partition, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Keeps about `bytes` of recent changes for watchers (default
    /// [`HISTORY_BYTES_DEFAULT`]).
    pub fn keep_changes(self, bytes: usize) -> Self {
        {
            let mut st = self.shared.state.write();
            let from = st.last_applied.map_or(0, |l| l.index);
            st.changes = History::new(from, bytes);
        }
        self
    }

    /// Resolves after the next batch of entries applies (create it, then look at the
    /// state, then await it, so no batch slips between).
    pub fn applied(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.applied.notified()
    }

    /// A durable state machine over the checkpoints in `dir`: it starts from the newest
    /// one and writes one for every snapshot.
    pub fn open_durable(limits: Limits, disk: Arc<dyn Disk>, dir: &Path) -> Result<Self, CheckpointError> {
        let (checkpoints, loaded) = Checkpoints::open(disk, dir, limits.clone())?;
        Ok(match loaded {
            None => Self::with(Store::new(limits), None, Some(checkpoints)),
            Some(Loaded { meta, store, sessions }) => {
                let sm = Self::with(store, Some((meta.clone(), sessions.clone())), Some(checkpoints));
                let frozen = sm.shared.state.read().store.snapshot();
                *sm.shared.current.lock() = Some((meta, frozen, sessions));
                sm
            }
        })
    }

    fn with(store: Store, from: Option<(SnapshotMeta, Sessions)>, checkpoints: Option<Checkpoints>) -> Self {
        let (last_applied, membership, sessions) = match from {
            Some((meta, sessions)) => (meta.last_log_id, meta.last_membership, sessions),
            None => (None, StoredMembership::default(), Sessions::default()),
        };
        let from = last_applied.map_or(0, |l| l.index);
        let state =
            State { store, last_applied, membership, sessions, changes: History::new(from, HISTORY_BYTES_DEFAULT) };
        StateMachine {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                current: Mutex::new(None),
                progress: Arc::default(),
                checkpoints,
                applied: tokio::sync::Notify::new(),
                partition: Default::default(),
            }),
        }
    }

    /// Whether snapshots are written to disk.
    pub fn is_durable(&self) -> bool {
        self.shared.checkpoints.is_some()
    }

    /// Writes a checkpoint if this state machine is durable (on a blocking thread; inline in
    /// a seeded simulation).
    async fn checkpoint(&self, meta: &SnapshotMeta, store: &StoreSnapshot, sessions: &Sessions) -> io::Result<()> {
        if self.shared.checkpoints.is_none() {
            return Ok(());
        }
        if weft_security::rng::seeded() {
            // A seeded simulation runs nothing off its own schedule (and its disk is in
            // memory): written inline.
            return match &self.shared.checkpoints {
                Some(c) => c.save(meta, store, sessions).map_err(io::Error::other),
                None => Ok(()),
            };
        }
        let shared = self.shared.clone();
        let (meta, store, sessions) = (meta.clone(), store.clone(), sessions.clone());
        tokio::task::spawn_blocking(move || match &shared.checkpoints {
            Some(c) => c.save(&meta, &store, &sessions),
            None => Ok(()),
        })
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)
    }

    /// Runs `f` on the applied state under the read lock. Keep `f` short; never await in it.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.shared.state.read())
    }

    /// Snapshot transfer progress.
    pub fn progress(&self) -> &Progress {
        &self.shared.progress
    }

    /// Snapshot transfer progress, as a handle a decoder thread can own.
    pub fn progress_handle(&self) -> Arc<Progress> {
        self.shared.progress.clone()
    }

    fn take_snapshot(&self) -> (SnapshotMeta, StoreSnapshot, Sessions) {
        let st = self.shared.state.read();
        let meta = SnapshotMeta { last_log_id: st.last_applied, last_membership: st.membership.clone() };
        (meta, st.store.snapshot(), st.sessions.clone())
    }
}

/// Bytes of recent changes a replica keeps for watchers unless told otherwise.
pub const HISTORY_BYTES_DEFAULT: usize = 32 << 20;

/// Applies one command at log index `index`; what it changed goes to `changes`.
fn apply_command(st: &mut State, index: u64, cmd: &pb::Command, changes: &mut Vec<Change>) -> pb::CommandResult {
    let session = cmd.session.unwrap_or_default();
    match st.sessions.check(&session) {
        Seen::Duplicate(r) => return (*r).clone(),
        Seen::Expired => {
            return pb::CommandResult {
                version: index,
                outcome: Some(pb::command_result::Outcome::Error(pb::CommandError {
                    code: pb::ErrorCode::SessionExpired as i32,
                    message: format!(
                        "session {} seq {} is older than the remembered window; the write may or may not have applied",
                        session.client_id, session.seq
                    ),
                })),
            };
        }
        Seen::New => {}
    }
    use pb::command::Kind;
    use pb::command_result::Outcome;
    let store = &mut st.store;
    let outcome = match &cmd.kind {
        Some(Kind::Batch(b)) => match b.ops.iter().cloned().map(op_from_pb).collect::<Result<Vec<_>, _>>() {
            Ok(ops) => match store.apply_at(&ops, index) {
                Ok(_) => {
                    changes.extend(crate::changes::of_ops(index, &b.ops));
                    None
                }
                Err(e) => Some(Outcome::Error(error_to_pb(&e))),
            },
            Err(e) => Some(Outcome::Error(wire_error_to_pb(&e))),
        },
        Some(Kind::CreateTable(t)) => match store.create_table(&t.table) {
            Ok(()) => {
                changes.push(crate::changes::of_table(index, &t.table, true));
                None
            }
            Err(e) => Some(Outcome::Error(error_to_pb(&e))),
        },
        Some(Kind::DropTable(t)) => match store.drop_table(&t.table) {
            Ok(()) => {
                changes.push(crate::changes::of_table(index, &t.table, false));
                None
            }
            Err(e) => Some(Outcome::Error(error_to_pb(&e))),
        },
        Some(Kind::CreateIndex(c)) => match index_from_pb(c.index.clone()) {
            Ok(def) => store.create_index(&c.table, def).err().map(|e| Outcome::Error(error_to_pb(&e))),
            Err(e) => Some(Outcome::Error(wire_error_to_pb(&e))),
        },
        Some(Kind::DropIndex(d)) => store.drop_index(&d.table, &d.index).err().map(|e| Outcome::Error(error_to_pb(&e))),
        Some(Kind::PopMax(p)) => match store.pop_max_at(&p.table, &p.index, index) {
            Ok(r) => r.map(|r| {
                changes.push(pb::Change {
                    version: index,
                    table: p.table.clone(),
                    kind: Some(pb::change::Kind::Delete(r.key().to_vec().into())),
                });
                Outcome::Popped(record_to_pb(&r))
            }),
            Err(e) => Some(Outcome::Error(error_to_pb(&e))),
        },
        None => Some(Outcome::Error(pb::CommandError {
            code: pb::ErrorCode::Invalid as i32,
            message: "command has no kind".into(),
        })),
    };
    let result = pb::CommandResult { version: index, outcome };
    st.sessions.record(&session, index, Arc::new(result.clone()));
    result
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Image;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.shared.state.read();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            // The whole entry applies under one write lock: readers never see part of it.
            let result = {
                let mut st = self.shared.state.write();
                st.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(cmds) => {
                        let mut changes = Vec::new();
                        let results = cmds
                            .0
                            .iter()
                            .map(|c| {
                                let r = apply_command(&mut st, entry.log_id.index, c, &mut changes);
                                if let Some(s) = &c.session {
                                    tracing::debug!(
                                        partition = self.shared.partition.load(std::sync::atomic::Ordering::Relaxed),
                                        index = entry.log_id.index,
                                        session = s.client_id,
                                        seq = s.seq,
                                        "write applied"
                                    );
                                }
                                r
                            })
                            .collect();
                        st.changes.record(entry.log_id.index, changes);
                        results
                    }
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Vec::new()
                    }
                }
            };
            if let Some(r) = responder {
                r.send(result);
            }
        }
        self.shared.applied.notify_waiters();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Image) -> Result<(), io::Error> {
        let (store, sessions) = match snapshot {
            Image::Built { store, sessions } => (*store, sessions),
            Image::Frozen { store, sessions } => {
                let limits = self.shared.state.read().store.limits().clone();
                (crate::snapshot::thaw(&store, limits).map_err(io::Error::other)?, sessions)
            }
        };
        let frozen = store.snapshot();
        {
            let mut st = self.shared.state.write();
            st.store = store;
            st.sessions = sessions.clone();
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            st.changes.reset(meta.last_log_id.map_or(0, |l| l.index));
        }
        self.shared.applied.notify_waiters();
        // Durable before returning: openraft purges the log behind the snapshot next.
        self.checkpoint(meta, &frozen, &sessions).await?;
        *self.shared.current.lock() = Some((meta.clone(), frozen, sessions));
        self.shared.progress.installed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::type_config::alias::SnapshotOf<TypeConfig, Image>>, io::Error> {
        Ok(self.shared.current.lock().as_ref().map(|(meta, store, sessions)| openraft::Snapshot {
            meta: meta.clone(),
            snapshot: Image::Frozen { store: store.clone(), sessions: sessions.clone() },
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Image;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::type_config::alias::SnapshotOf<TypeConfig, Image>, io::Error> {
        let (meta, store, sessions) = self.take_snapshot();
        self.checkpoint(&meta, &store, &sessions).await?;
        *self.shared.current.lock() = Some((meta.clone(), store.clone(), sessions.clone()));
        Ok(openraft::Snapshot { meta, snapshot: Image::Frozen { store, sessions } })
    }
}
