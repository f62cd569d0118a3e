//! The replicas one node process hosts: at most one replica per partition, each its own
//! openraft group over the shared transport.
//!
//! A durable replica keeps its WAL and checkpoints in `<data dir>/replicas/p<partition>-r<replica>/`.
//! On start the node reopens every replica found there under the same id: it has its
//! state, so it is the same incarnation (a volatile replica never comes back; it is
//! rebuilt under a new id). Closing a durable replica deletes its directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use parking_lot::RwLock;
use tokio::time::Instant;
use tonic::Status;
use weft_proto::v1 as pb;
use weft_store::{Limits, Store};

use crate::error::Error;
use crate::log_store::{LogStore, SEGMENT_BYTES};
use crate::state_machine::Raft;
use crate::state_machine::{Image, StateMachine};
use crate::transport::{GroupNetworkFactory, Peers, TransportConfig};
use crate::types::{PartitionId, ReplicaId};

/// Raft timing and log settings for every group on the node.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout lower bound; the upper is twice it.
    pub election_timeout: Duration,
    /// Log entries since the last snapshot that trigger a new one (cheap: O(1) engine snapshot).
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for slow followers.
    pub keep_behind_snapshot: u64,
    /// Most entries in one append message.
    pub max_payload_entries: u64,
    /// How long a group must be idle before its primary asks it to quiesce (`None`:
    /// groups never quiesce). See `crate::quiesce`.
    pub quiesce_after: Option<Duration>,
    /// Bytes of recent committed changes each replica keeps for watchers (see
    /// `crate::changes`): how far behind a watcher may resume.
    pub watch_history_bytes: usize,
    /// Groups whose store holds one small record rewritten whole on every change (the
    /// cluster map): each entry of their log is a full copy of it. They snapshot every
    /// [`SINGLE_RECORD_SNAPSHOT_EVERY`] entries, keep [`SINGLE_RECORD_KEEP_BEHIND`] behind a
    /// snapshot, and keep no history of changes beyond the newest (the Store API never
    /// reaches them, so nothing watches them). With the node-wide log and history bounds,
    /// a seed held up to 20,000 entries and 32 MiB of history, each a copy of a map that
    /// grows with the cluster: about 35 KB per partition of a 2,500-partition service, on
    /// every seed (`weft bench density`'s `rss_grown_bytes_by_node`). For these groups the
    /// two constants replace `snapshot_every` and `keep_behind_snapshot` (`--snapshot-every`
    /// and `--keep-behind-snapshot` do not reach them).
    pub single_record_partitions: BTreeSet<PartitionId>,
}

/// Log entries between snapshots of a [`RaftSettings::single_record_partitions`] group:
/// its snapshot is the one record (an O(1) engine snapshot to take, small to send).
pub const SINGLE_RECORD_SNAPSHOT_EVERY: u64 = 64;
/// Log entries a [`RaftSettings::single_record_partitions`] group keeps behind its snapshot
/// (a follower further behind receives the snapshot, as small as an entry).
pub const SINGLE_RECORD_KEEP_BEHIND: u64 = 16;

/// How far (in log entries) behind the leader a learner may be when a blocking
/// add-learner returns (the map group's rebuild and `weft bench rebuild` use one).
/// openraft's default, 5,000, let a learner that had received nothing pass while the log
/// was short. Replica moves do not rely on it: the manager waits on applied indexes.
pub const LEARNER_LAG_ENTRIES_MAX: u64 = 64;

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(400),
            snapshot_every: 20_000,
            keep_behind_snapshot: 5_000,
            max_payload_entries: 256,
            quiesce_after: Some(Duration::from_secs(3)),
            watch_history_bytes: crate::state_machine::HISTORY_BYTES_DEFAULT,
            single_record_partitions: BTreeSet::new(),
        }
    }
}

impl RaftSettings {
    /// The raft configuration of a [`RaftSettings::single_record_partitions`] group.
    fn single_record_config(&self) -> Result<Config, Error> {
        RaftSettings {
            snapshot_every: SINGLE_RECORD_SNAPSHOT_EVERY,
            keep_behind_snapshot: SINGLE_RECORD_KEEP_BEHIND,
            ..self.clone()
        }
        .config()
    }

    fn config(&self) -> Result<Config, Error> {
        let min = self.election_timeout.as_millis() as u64;
        Config {
            cluster_name: "weft".into(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: min,
            election_timeout_max: min * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            max_payload_entries: self.max_payload_entries,
            replication_lag_threshold: LEARNER_LAG_ENTRIES_MAX,
            enable_pre_vote: Some(true),
            // A restarted primary must win an election (and commit a new term's blank entry)
            // before it serves anything. openraft's default lets it resume its old term at
            // once, with the committed index it last persisted; that index is written behind
            // the acknowledgements (`save_committed` is a hint, not synced before replying)
            // and the state machine is memory only, so a resumed primary answered
            // linearizable reads from a state that lacked writes acknowledged before a
            // whole-cluster kill (`tests/durable.rs`, and `tests/simulation.rs`'s
            // whole-cluster power cuts; openraft documents the hazard).
            enable_leader_restore: Some(false),
            install_snapshot_timeout: 10_000,
            // openraft keeps six ring buffers of this many entries per group to time each
            // log entry's stages, allocated whether or not anyone reads them; weft reads
            // none, and a node hosts thousands of groups.
            log_stage_capacity: Some(1),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Raft(e.to_string()))
    }
}

/// One hosted replica. Its parts are the crate's own: from outside, a client's writes go
/// through [`Replica::write`], its reads through [`Replica::read`], what it reports
/// through [`Replica::status`], and what only an operator or the cluster manager does
/// (membership, leader transfer) through [`Replica::raft`].
#[derive(Debug)]
pub struct Replica {
    pub(crate) partition: PartitionId,
    pub(crate) id: ReplicaId,
    pub(crate) raft: Raft,
    /// Its raft metrics, subscribed once: `Raft::metrics` hands out a new subscription
    /// each call (two atomic updates on a line the raft core writes), and the node reads
    /// every replica's metrics several times a second.
    pub(crate) metrics: Metrics,
    pub(crate) sm: StateMachine,
    pub(crate) mode: pb::LogMode,
    /// Its write queue: client writes batched into entries.
    pub(crate) proposer: crate::proposer::Proposer,
    /// Its linearizable reads, batched into read-index rounds.
    pub(crate) reads: crate::read_gate::ReadGate,
    /// Client requests (reads and writes) served since it opened: the load report's
    /// request rate is this counter's change between heartbeats.
    pub(crate) requests: std::sync::atomic::AtomicU64,
    /// Whether its timers are stopped because its group is idle.
    pub(crate) quiet: crate::quiesce::Quiet,
    /// What its raft core reports beyond `metrics` (committed and purged indexes, times
    /// it became primary) and its read-index rounds.
    pub(crate) figures: Arc<crate::stats::RaftFigures>,
    /// Its last status and the membership it was built from: an idle replica's status is
    /// asked for twice a second and does not change, so it is built again only when its
    /// membership or a figure in it changed.
    status: parking_lot::Mutex<Option<CachedStatus>>,
}

/// A replica's subscription to its raft metrics.
pub(crate) struct Metrics(
    openraft::type_config::alias::WatchReceiverOf<
        crate::types::TypeConfig,
        openraft::RaftMetrics<crate::types::TypeConfig>,
    >,
);

impl Metrics {
    /// The latest metrics, read in place (a read lock on them while held).
    pub(crate) fn borrow_watched(
        &self,
    ) -> impl std::ops::Deref<Target = openraft::RaftMetrics<crate::types::TypeConfig>> + '_ {
        self.0.borrow_watched()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A replica's last status, with what it was built from that the status does not show.
#[derive(Debug)]
struct CachedStatus {
    /// The log id of the membership it names.
    membership: Option<crate::types::LogId>,
    /// Whether that membership makes the replica a voter.
    voter: bool,
    /// The status without its membership: compared with cheaply.
    bare: pb::ReplicaStatus,
    status: Arc<pb::ReplicaStatus>,
    /// The quiet spell it was built in, if any, and how many times it was handed out
    /// again in that spell without reading the metrics.
    spell: Option<u64>,
    reused: u32,
}

/// How many times in a row a quiesced replica's status is handed out again without a
/// look at its metrics (which, at thousands of replicas, was most of what reporting them
/// cost); then it is built again all the same, a guard against any change the quiet
/// spell does not cover. Each partition adds its own share of [`STATUS_REUSE_SPREAD`], so
/// replicas that quiesced together are not all built again on the same report.
const STATUS_REUSE_MAX: u32 = 16;
/// See [`STATUS_REUSE_MAX`].
const STATUS_REUSE_SPREAD: u64 = 16;

fn role(state: ServerState, is_voter: bool) -> pb::Role {
    match state {
        ServerState::Leader => pb::Role::Primary,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Follower if is_voter => pb::Role::Secondary,
        ServerState::Learner | ServerState::Follower => pb::Role::Learner,
        _ => pb::Role::Unknown,
    }
}

impl Replica {
    /// Why its raft group stopped for good, if it did: a storage error (its log or vote
    /// could not be written or synced) or a panic. Such a replica serves nothing and cannot
    /// recover in this process: after a failed sync the file's cached pages cannot be
    /// trusted, so the only way back is a restart that recovers from what the disk holds.
    /// A replica closed normally is not failed.
    pub fn failed(&self) -> Option<String> {
        match &self.metrics.borrow_watched().running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    /// Its partition.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Its id (this incarnation's).
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Volatile or durable.
    pub fn mode(&self) -> pb::LogMode {
        self.mode
    }

    /// The raft group handle, for what is not a client's read or write: membership
    /// changes, leader transfer, its metrics.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The raft group handle for a change only a primary makes (a membership change, a
    /// leader transfer, a write or read-index round of the node's own): a quiesced primary
    /// wakes first, as for a client's request. Counts one request.
    pub async fn awake(&self) -> &Raft {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.quiet.wake(&self.raft).await;
        &self.raft
    }

    /// What its raft core reports beyond [`Replica::status`]: committed and purged
    /// indexes, the times it became primary, its read-index rounds.
    pub fn figures(&self) -> &crate::stats::RaftFigures {
        &self.figures
    }

    /// Log entries of its writes being committed now (at most a few: writes are batched).
    pub fn proposals_in_flight(&self) -> usize {
        self.proposer.in_flight().count()
    }

    /// Whether its group is quiesced here (its tick stopped).
    pub fn is_quiesced(&self) -> bool {
        self.quiet.is_quiesced()
    }

    /// Replicates one client command through this replica, batched with whatever else is
    /// queued (openraft refuses it unless this replica is the primary); answers with the
    /// state machine's result. Counts one request.
    pub async fn write(&self, cmd: pb::Command) -> Result<pb::CommandResult, crate::proposer::ProposeError> {
        // Counted before the quiet state is looked at: a quiesce racing with this write
        // either sees the count move or is seen by the wake (`crate::quiesce`).
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.quiet.wake(&self.raft).await;
        self.proposer.propose(cmd).await
    }

    /// Runs `f` on the applied state, after a read-index round when `linearizable` (the
    /// primary confirms itself with a quorum and waits until it has applied its commit
    /// index). Answers with `f`'s result and the index applied, or `None` when the replica
    /// has applied nothing yet (it is being built: its empty state says nothing of the
    /// partition's). Counts one request.
    pub async fn read<T>(
        &self,
        linearizable: bool,
        f: impl FnOnce(&crate::state_machine::State) -> T,
    ) -> Result<Option<(T, u64)>, crate::read_gate::ReadError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if linearizable {
            self.quiet.wake(&self.raft).await;
            self.reads.ensure().await?;
        }
        Ok(self.sm.read(|st| st.last_applied.map(|l| (f(st), l.index))))
    }

    /// The committed changes this replica applied at versions `from` and above (whole
    /// entries, about `changes_max` changes at most), with the index applied so far and
    /// its history's generation; or the oldest version it still keeps. See
    /// `crate::changes`.
    pub fn changes_since(
        &self,
        from: u64,
        changes_max: usize,
    ) -> Result<(Vec<Arc<crate::changes::Applied>>, u64, u64), crate::changes::Compacted> {
        self.sm.read(|st| {
            let entries = st.changes.since(from, changes_max)?;
            Ok((entries, st.last_applied.map_or(0, |l| l.index), st.changes.generation()))
        })
    }

    /// About how many bytes of changes this replica keeps for watchers.
    pub fn changes_kept_bytes(&self) -> usize {
        self.sm.read(|st| st.changes.bytes_max())
    }

    /// Resolves after this replica applies its next entries: create it before looking at
    /// [`Replica::changes_since`], await it after, and nothing slips between.
    pub fn applied(&self) -> tokio::sync::futures::Notified<'_> {
        self.sm.applied()
    }

    /// How many voters its membership has, and how many of them sit at addresses `pred`
    /// accepts.
    pub fn voter_addrs(&self, pred: impl Fn(&str) -> bool) -> (usize, usize) {
        self.sm.read(|st| {
            let m = st.membership.membership();
            let voters: Vec<_> = m.voter_ids().collect();
            let matching = voters.iter().filter(|v| m.get_node(v).is_some_and(|n| pred(&n.addr))).count();
            (voters.len(), matching)
        })
    }

    /// Whether this replica is its group's primary now (it may learn otherwise at its next
    /// round: a read or write through it still checks).
    pub fn is_primary(&self) -> bool {
        self.metrics.borrow_watched().state == ServerState::Leader
    }

    /// Runs `f` on the applied state as it is now, counting no request: the node's own
    /// reads (the cluster map record, the membership).
    pub fn state<T>(&self, f: impl FnOnce(&crate::state_machine::State) -> T) -> T {
        self.sm.read(f)
    }

    /// What this replica reports of itself: its role, term, leader, indexes, membership,
    /// size, log mode, snapshot progress and request count (`requests_per_s` is the
    /// heartbeat's to fill). Shared: the same status while nothing in it changed, so a
    /// caller can tell an unchanged replica by pointer.
    pub fn status(&self) -> Arc<pb::ReplicaStatus> {
        let r = self;
        let spell = r.quiet.spell();
        let requests = r.requests.load(Ordering::Relaxed);
        if let Some(spell) = spell {
            let mut cache = r.status.lock();
            if let Some(c) = cache.as_mut()
                && c.spell == Some(spell)
                && c.reused < STATUS_REUSE_MAX + (r.partition % STATUS_REUSE_SPREAD) as u32
                && c.status.requests == requests
            {
                c.reused += 1;
                return c.status.clone();
            }
        }
        // Read in place: every node reports every replica twice a second.
        let m = r.metrics.borrow_watched();
        let (state, term, leader, last_log, applied) =
            (m.state, m.current_term, m.current_leader, m.last_log_index, m.last_applied);
        let membership_id = *m.membership_config.log_id();
        let p = r.sm.progress();
        let mut next = pb::ReplicaStatus {
            partition: r.partition,
            replica: r.id,
            term,
            leader: leader.unwrap_or(0),
            has_leader: leader.is_some(),
            last_log_index: last_log.unwrap_or(0),
            applied_index: applied.map_or(0, |l| l.index),
            mode: r.mode as i32,
            snapshot_bytes: p.bytes.load(Ordering::Relaxed),
            snapshot_records: p.records.load(Ordering::Relaxed),
            snapshots_installed: p.installed.load(Ordering::Relaxed),
            requests,
            requests_per_s: 0.0,
            quiesced: spell.is_some(),
            ..Default::default()
        };
        let mut cache = r.status.lock();
        let last = cache.as_ref().filter(|c| c.membership == membership_id);
        // A membership not seen before is read now, while the metrics are borrowed.
        let (voter, fresh_membership) = match last {
            Some(c) => (c.voter, None),
            None => {
                let membership = m.membership_config.membership();
                (membership.voter_ids().any(|v| v == r.id), Some(crate::wire::membership_to_pb(membership)))
            }
        };
        drop(m);
        next.role = role(state, voter) as i32;
        // Size and record count change only when an entry or a snapshot is applied.
        match last.filter(|c| c.bare.applied_index == next.applied_index) {
            Some(c) => (next.memory_bytes, next.records) = (c.bare.memory_bytes, c.bare.records),
            None => {
                let (memory, records) = r.sm.read(|st| {
                    let records = st.store.table_names().filter_map(|t| st.store.count(t).ok()).sum::<usize>();
                    (st.store.memory_bytes(), records)
                });
                (next.memory_bytes, next.records) = (memory as u64, records as u64);
            }
        }
        let unchanged = last.is_some_and(|c| c.bare == next);
        let kept = match (unchanged, &fresh_membership) {
            (false, None) => last.and_then(|c| c.status.membership.clone()),
            _ => None,
        };
        if unchanged && let Some(c) = cache.as_mut() {
            (c.spell, c.reused) = (spell, 0);
            return c.status.clone();
        }
        let bare = next.clone();
        next.membership = fresh_membership.or(kept);
        let next = Arc::new(next);
        *cache = Some(CachedStatus { membership: membership_id, voter, bare, status: next.clone(), spell, reused: 0 });
        next
    }
}

/// Where and how a node keeps durable replicas.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    /// The node's data directory; durable replicas need one.
    pub data_dir: Option<PathBuf>,
    /// Whether replicas opened with the node-default mode are durable.
    pub durable_by_default: bool,
    /// Partitions opened durable, when asked for the node-default mode, whenever there is
    /// a data directory, whatever `durable_by_default` says: the node names the cluster
    /// map's group here, so a node that keeps its data in memory but has a data directory
    /// keeps the map across a restart (an upgrade walk restarts every seed).
    pub durable_with_data_dir: BTreeSet<PartitionId>,
    /// The disk durable replicas' logs and checkpoints are written through (`None`: the
    /// real file system; tests pass a [`crate::disk::FaultyDisk`]).
    pub disk: Option<Arc<dyn crate::disk::Disk>>,
}

/// Every replica on this node.
#[derive(Debug)]
pub struct Host {
    replicas: RwLock<BTreeMap<PartitionId, Arc<Replica>>>,
    peers: Peers,
    config: Arc<Config>,
    /// The groups of [`RaftSettings::single_record_partitions`] and their configuration.
    single_record: (BTreeSet<PartitionId>, Arc<Config>),
    limits: Limits,
    storage: Storage,
    /// How long a group must be idle before it quiesces.
    quiesce_after: Option<Duration>,
    /// Bytes of changes each replica keeps for watchers.
    watch_history_bytes: usize,
    /// Liveness of peer nodes and the quiesce requests under way.
    pub(crate) liveness: crate::quiesce::Liveness,
    /// Raft append streams from peers open here now.
    pub(crate) append_streams: Arc<std::sync::atomic::AtomicU64>,
    /// Set by [`Host::shutdown`]: the liveness loop ends.
    pub(crate) stopped: std::sync::atomic::AtomicBool,
    /// Restored states waiting for their replica to open ([`Host::stage`]).
    staged: parking_lot::Mutex<BTreeMap<(PartitionId, ReplicaId), Staged>>,
}

/// A restored state kept for a replica that has not opened yet.
#[derive(Debug)]
struct Staged {
    /// The log index the group starts at.
    index: u64,
    store: Store,
    at: Instant,
}

/// How long a staged state waits for its replica to open before a later staging drops it
/// (a restore that failed part way leaves it behind).
const STAGED_KEEP: Duration = Duration::from_secs(30 * 60);

impl Host {
    /// A host with no replicas.
    pub fn new(
        settings: &RaftSettings,
        transport: TransportConfig,
        limits: Limits,
        storage: Storage,
    ) -> Result<Arc<Self>, Error> {
        if storage.durable_by_default && storage.data_dir.is_none() {
            return Err(Error::NoDataDir);
        }
        Ok(Arc::new(Host {
            replicas: RwLock::default(),
            peers: Peers::new(transport),
            config: Arc::new(settings.config()?),
            single_record: (settings.single_record_partitions.clone(), Arc::new(settings.single_record_config()?)),
            limits,
            storage,
            quiesce_after: settings.quiesce_after,
            watch_history_bytes: settings.watch_history_bytes,
            liveness: crate::quiesce::Liveness::new(),
            staged: parking_lot::Mutex::default(),
            append_streams: Arc::default(),
            stopped: Default::default(),
        }))
    }

    /// Starts the node's liveness loop (pings to every peer node, quiescence of idle
    /// groups, failover of groups led from a node that went down); it ends when the host
    /// is dropped. `own_addr`: this node's address as memberships name it (`None`: taken
    /// from the hosted groups). Without it, groups never quiesce.
    pub fn start_liveness(self: &Arc<Self>, own_addr: Option<String>) {
        crate::quiesce::start(self, own_addr);
    }

    /// Raft append streams from peer nodes open here now: one per group led elsewhere
    /// with a replica here, while its primary replicates to it.
    pub fn append_streams(&self) -> u64 {
        self.append_streams.load(Ordering::Relaxed)
    }

    /// How long a group must be idle before it quiesces (`None`: never).
    pub(crate) fn quiesce_after(&self) -> Option<Duration> {
        self.quiesce_after
    }

    /// A peer's ping: notes the peer as alive and quiesces the followers it asks to.
    pub fn ping(&self, req: pb::PingRequest) -> pb::PingResponse {
        self.liveness.answer(self, req)
    }

    fn replicas_dir(&self) -> Option<PathBuf> {
        self.storage.data_dir.as_ref().map(|d| d.join("replicas"))
    }

    fn replica_dir(&self, partition: PartitionId, id: ReplicaId) -> Result<PathBuf, Error> {
        Ok(self.replicas_dir().ok_or(Error::NoDataDir)?.join(format!("p{partition}-r{id}")))
    }

    /// Reopens every durable replica in the data directory; returns (partition, replica)
    /// of each. Two directories for one partition is an error naming both.
    pub async fn recover(&self) -> Result<Vec<(PartitionId, ReplicaId)>, Error> {
        let Some(root) = self.replicas_dir() else { return Ok(Vec::new()) };
        let io =
            |e: std::io::Error| Error::Storage { partition: 0, replica: 0, reason: format!("{}: {e}", root.display()) };
        let mut found: BTreeMap<PartitionId, ReplicaId> = BTreeMap::new();
        let names = match self.disk().list(&root) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        for name in names {
            let Some((p, r)) = parse_replica_dir(&name) else {
                tracing::warn!(name = ?name, "ignoring an unexpected entry in the replicas directory");
                continue;
            };
            if let Some(other) = found.insert(p, r) {
                return Err(Error::Storage {
                    partition: p,
                    replica: r,
                    reason: format!(
                        "{} also holds replica {other} of this partition; remove the stale one",
                        root.display()
                    ),
                });
            }
        }
        // A recovered replica holds off elections until its peers have heard this node is
        // back (`crate::quiesce`): the primaries of quiesced groups then wake and reach it.
        // Its groups' quiesced voters have no lease to refuse it with, so an election it
        // started first would take the primary of a healthy group for nothing.
        let hold = crate::quiesce::DEAD_AFTER + Duration::from_millis(2 * self.config.election_timeout_max);
        for (&p, &r) in &found {
            let replica = self.open(p, r, pb::LogMode::Durable, None, false).await?;
            replica.quiet.hold_elections(&replica.raft, hold);
        }
        Ok(found.into_iter().collect())
    }

    /// The disk durable replicas are written through.
    fn disk(&self) -> Arc<dyn crate::disk::Disk> {
        self.storage.disk.clone().unwrap_or_else(crate::disk::os)
    }

    /// The shared peer channels.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The engine limits every replica enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Keeps `store` for replica `id` of `partition` until it opens from it ([`Host::open`]
    /// with `staged`), its group then starting at log index `index` (or the store's own
    /// version, if higher: the group's next write must version above every record). Drops
    /// what was staged more than [`STAGED_KEEP`] ago. Answers the index.
    pub fn stage(&self, partition: PartitionId, id: ReplicaId, index: u64, store: Store) -> u64 {
        let index = index.max(store.version());
        let now = Instant::now();
        let mut staged = self.staged.lock();
        staged.retain(|_, s| now.duration_since(s.at) < STAGED_KEEP);
        // One state per partition: a restore staged again (a new replica after a reset)
        // replaces what an earlier one left.
        staged.retain(|(p, _), _| *p != partition);
        staged.insert((partition, id), Staged { index, store, at: now });
        tracing::info!(partition, replica = id, index, "restored state staged");
        index
    }

    /// Drops the staged states `keep` says no (their partition is no longer waiting for
    /// one, as the map says); answers how many went.
    pub fn drop_staged(&self, keep: impl Fn(PartitionId, ReplicaId) -> bool) -> usize {
        let mut staged = self.staged.lock();
        let before = staged.len();
        staged.retain(|(p, r), _| keep(*p, *r));
        before - staged.len()
    }

    /// Opens a replica. With `initial`, it also initializes the group with those voters
    /// (replica id to node address), empty, or, with `staged`, from the state staged for it
    /// ([`Host::stage`]): the group starts at the staged index with that state as its
    /// snapshot, which raft then sends to the other voters as it would to any follower
    /// behind its log. Opening the same (partition, replica) again is a no-op.
    pub async fn open(
        &self,
        partition: PartitionId,
        id: ReplicaId,
        mode: pb::LogMode,
        initial: Option<BTreeMap<ReplicaId, BasicNode>>,
        staged: bool,
    ) -> Result<Arc<Replica>, Error> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Error::Stopping);
        }
        let mode = match mode {
            pb::LogMode::NodeDefault if self.storage.durable_by_default => pb::LogMode::Durable,
            pb::LogMode::NodeDefault
                if self.storage.data_dir.is_some() && self.storage.durable_with_data_dir.contains(&partition) =>
            {
                pb::LogMode::Durable
            }
            pb::LogMode::NodeDefault => pb::LogMode::Volatile,
            m => m,
        };
        if let Some(r) = self.get(partition) {
            return if r.id == id { Ok(r) } else { Err(Error::AlreadyOpen { partition, existing: r.id }) };
        }
        // The staged state is taken before anything touches the disk, so a replica waiting
        // for its state leaves no directory behind (a durable node restarted then would
        // recover an empty replica with no membership), and put back if the open fails
        // before the state is installed.
        let from_staged = match (&initial, staged) {
            (Some(members), true) => {
                let s =
                    self.staged.lock().remove(&(partition, id)).ok_or(Error::NotStaged { partition, replica: id })?;
                Some((members.clone(), s))
            }
            (None, true) => {
                return Err(Error::Raft("a replica opens from a staged state only to start its group".into()));
            }
            (_, false) => None,
        };
        let put_back = |s: Staged| {
            self.staged.lock().insert((partition, id), s);
        };
        let opened = match mode {
            pb::LogMode::Durable => {
                let dir = self.replica_dir(partition, id)?;
                let storage = |reason: String| Error::Storage { partition, replica: id, reason };
                let disk = self.disk();
                LogStore::open_durable(disk.clone(), &dir.join("wal"), SEGMENT_BYTES)
                    .map_err(|e| storage(e.to_string()))
                    .and_then(|(log, _)| {
                        let sm = StateMachine::open_durable(self.limits.clone(), disk, &dir.join("checkpoints"))
                            .map_err(|e| storage(e.to_string()))?;
                        Ok((log, sm))
                    })
            }
            _ => Ok((LogStore::volatile(), StateMachine::new(self.limits.clone()))),
        };
        let (log, sm) = match opened {
            Ok(x) => x,
            Err(e) => {
                if let Some((_, s)) = from_staged {
                    put_back(s);
                }
                return Err(e);
            }
        };
        let (config, history) = match self.single_record.0.contains(&partition) {
            true => (self.single_record.1.clone(), 0),
            false => (self.config.clone(), self.watch_history_bytes),
        };
        let sm = sm.keep_changes(history).of_partition(partition);
        if let Some((members, s)) = from_staged {
            // What `initialize` would write at index 0, at the staged index instead: the
            // membership and the state, as a snapshot every voter agrees on.
            let log_id =
                crate::types::LogId { leader_id: crate::types::LeaderId { term: 0, node_id: id }, index: s.index };
            let voters: BTreeSet<ReplicaId> = members.keys().copied().collect();
            let membership = match openraft::Membership::new(vec![voters], members) {
                Ok(m) => m,
                Err(e) => {
                    put_back(s);
                    return Err(Error::Raft(e.to_string()));
                }
            };
            let meta = crate::types::SnapshotMeta {
                last_log_id: Some(log_id),
                last_membership: openraft::StoredMembership::new(Some(log_id), membership),
            };
            let image = Image::Built { store: Box::new(s.store), sessions: Default::default() };
            let mut installer = sm.clone();
            openraft::storage::RaftStateMachine::install_snapshot(&mut installer, &meta, image)
                .await
                .map_err(|e| Error::Storage { partition, replica: id, reason: e.to_string() })?;
            tracing::info!(partition, replica = id, index = s.index, "replica starts from a restored state");
        }
        let quiet = crate::quiesce::Quiet::new(Duration::from_millis(self.config.election_timeout_max));
        let raft = match &self.peers.config().router {
            Some(seat) => Raft::new(id, config, seat.factory(partition), log.clone(), sm.clone()).await,
            None => {
                let network = GroupNetworkFactory::new(self.peers.clone(), partition);
                Raft::new(id, config, network, log.clone(), sm.clone()).await
            }
        }
        .map_err(|e| Error::Raft(e.to_string()))?;
        let figures = Arc::new(crate::stats::RaftFigures::default());
        raft.set_metrics_recorder(Some(figures.clone())).await.map_err(|e| Error::Raft(e.to_string()))?;
        let proposer = crate::proposer::Proposer::start(raft.clone());
        let reads = crate::read_gate::ReadGate::start(raft.clone(), proposer.in_flight(), figures.clone());
        let requests = std::sync::atomic::AtomicU64::new(0);
        let status = parking_lot::Mutex::default();
        let metrics = Metrics(raft.metrics());
        let replica = Arc::new(Replica {
            partition,
            id,
            raft,
            metrics,
            sm,
            mode,
            proposer,
            reads,
            requests,
            quiet,
            status,
            figures,
        });
        let raced = {
            let mut map = self.replicas.write();
            match map.get(&partition) {
                Some(r) => Some(r.id),
                None => {
                    map.insert(partition, replica.clone());
                    None
                }
            }
        };
        if let Some(existing) = raced {
            let _ = replica.raft.shutdown().await;
            return Err(Error::AlreadyOpen { partition, existing });
        }
        if let Some(members) = initial.filter(|_| !staged) {
            match replica.raft.initialize(members).await {
                Ok(()) => {}
                // Already initialized (a retried open): fine.
                Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
        }
        tracing::info!(partition, replica = id, ?mode, "replica opened");
        Ok(replica)
    }

    /// Closes a partition's replica and drops its state. With `hand_off`, a primary first
    /// hands the group to another voter; without, it closes at once (the whole group is
    /// going: its partition is gone from the map).
    pub async fn close(&self, partition: PartitionId, hand_off: bool) -> Result<(), Error> {
        let r = self.replicas.write().remove(&partition).ok_or(Error::NotOpen(partition))?;
        // A primary's followers may be quiesced (no election timer): hand the group to
        // one of them first, so that it does not wait for a primary that is gone.
        let m = r.metrics.borrow_watched().clone();
        if hand_off
            && m.state == ServerState::Leader
            && let Some(to) = m.membership_config.membership().voter_ids().find(|v| *v != r.id)
        {
            r.quiet.wake(&r.raft).await;
            let handed = tokio::time::timeout(Duration::from_secs(1), r.raft.trigger().transfer_leader(to)).await;
            if !matches!(handed, Ok(Ok(()))) {
                tracing::warn!(partition, replica = r.id, to, "closing a primary: leader transfer not confirmed");
            }
        }
        r.raft.shutdown().await.map_err(|e| Error::Raft(e.to_string()))?;
        if r.mode == pb::LogMode::Durable {
            let dir = self.replica_dir(partition, r.id)?;
            let disk = self.disk();
            // Removed, and the removal made durable: a crash must not bring back a replica
            // the cluster has moved elsewhere.
            let removed = disk.remove_all(&dir).and_then(|()| match dir.parent() {
                Some(parent) => disk.sync_dir(parent),
                None => Ok(()),
            });
            removed.map_err(|e| Error::Storage {
                partition,
                replica: r.id,
                reason: format!("removing {}: {e}", dir.display()),
            })?;
        }
        tracing::info!(partition, replica = r.id, "replica closed");
        Ok(())
    }

    /// Hands each local primary to another voter of its group on a node that answers
    /// liveness pings (waking the group first: its followers may be quiesced), and waits
    /// up to `wait` for each until this replica no longer leads; returns how many moved.
    /// A node about to stop calls this so that its groups need no election.
    pub async fn hand_off_primaries(&self, wait: Duration) -> usize {
        let mut handed = 0;
        for r in self.list() {
            let to = {
                let m = r.metrics.borrow_watched();
                if m.state != ServerState::Leader {
                    continue;
                }
                let membership = m.membership_config.membership();
                let up = |v: &ReplicaId| {
                    membership.get_node(v).is_some_and(|n| self.liveness.peer_up(&n.addr).unwrap_or(false))
                };
                membership.voter_ids().find(|v| *v != r.id && up(v))
            };
            let Some(to) = to else {
                tracing::warn!(partition = r.partition, replica = r.id, "no voter up to hand the primary to");
                continue;
            };
            r.quiet.wake(&r.raft).await;
            // The trigger only queues the transfer: what counts is this replica no longer
            // leading.
            let _ = r.raft.trigger().transfer_leader(to).await;
            let moved = tokio::time::timeout(wait, async {
                while r.metrics.borrow_watched().state == ServerState::Leader {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            match moved {
                Ok(()) => handed += 1,
                Err(_) => tracing::warn!(partition = r.partition, replica = r.id, to, "primary hand-off not confirmed"),
            }
        }
        handed
    }

    /// Whether the peer node at `addr` answers this node's liveness pings (`None`: not
    /// watched, because no hosted group has a member there). Known within about a
    /// second of a peer stopping, long before the cluster manager marks it down.
    pub fn peer_up(&self, addr: &str) -> Option<bool> {
        self.liveness.peer_up(addr)
    }

    /// Stops every hosted raft group (their files stay: a durable replica reopens on the
    /// next start) and the liveness loop: the node is going away, though its process may
    /// not be.
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let replicas: Vec<Arc<Replica>> = std::mem::take(&mut *self.replicas.write()).into_values().collect();
        for r in replicas {
            if let Err(e) = r.raft.shutdown().await {
                tracing::debug!(partition = r.partition, error = %e, "raft group shutdown");
            }
        }
    }

    /// A partition's replica, if hosted here.
    pub fn get(&self, partition: PartitionId) -> Option<Arc<Replica>> {
        self.replicas.read().get(&partition).cloned()
    }

    /// The replica a raft message is addressed to: the partition must be hosted here under
    /// exactly that replica id (a message for an older incarnation is refused).
    pub fn target(&self, t: Option<pb::Target>) -> Result<Arc<Replica>, Status> {
        let t = t.ok_or_else(|| Status::invalid_argument("raft message without a target"))?;
        match self.get(t.partition) {
            Some(r) if r.id == t.replica => Ok(r),
            Some(r) => Err(Status::not_found(format!(
                "partition {} is hosted here as replica {}, not {}",
                t.partition, r.id, t.replica
            ))),
            None => Err(Status::not_found(format!("partition {} has no replica on this node", t.partition))),
        }
    }

    /// Every hosted replica, by partition.
    pub fn list(&self) -> Vec<Arc<Replica>> {
        let mut v: Vec<_> = self.replicas.read().values().cloned().collect();
        v.sort_by_key(|r| r.partition);
        v
    }
}

/// `p<partition>-r<replica>`.
fn parse_replica_dir(name: &str) -> Option<(PartitionId, ReplicaId)> {
    let (p, r) = name.strip_prefix('p')?.split_once("-r")?;
    Some((p.parse().ok()?, r.parse().ok()?))
}
