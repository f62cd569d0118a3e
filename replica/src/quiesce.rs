//! Quiescence: an idle group stops ticking, and liveness kept per node pair stands in for
//! its heartbeats.
//!
//! openraft ticks every group 50 times a second (a fifth of the heartbeat interval) and
//! its primary sends a heartbeat to every follower ten times a second, whether or not
//! anything happens. A node hosting thousands of idle replicas spent its CPU on nothing
//! else. Here, as in TiKV's hibernating regions and CockroachDB's quiesced ranges:
//!
//! - **Liveness per node pair.** Every node pings every peer node it shares a group with
//!   ([`PING_EVERY`]); one ping per pair, however many groups they share. A peer with no
//!   answered ping for [`DEAD_AFTER`] is down; a new incarnation in its answers means it
//!   restarted. A node whose own loop stalled (a saturated machine) counts no peer down
//!   until they have had a whole window after the stall to answer, as Cassandra's failure
//!   detector ignores its own pauses: the answers it could not take in are not the peers'.
//! - **Quiesce in two phases.** A primary whose group has been idle for
//!   [`crate::RaftSettings::quiesce_after`] (no request served, no entry appended; every
//!   entry committed and applied; every voter matched up to its last log id; membership
//!   committed, no learner; every follower's node alive) asks its followers (Raft.Ping),
//!   to quiesce with its vote and last log id, in messages of their own beside the pings
//!   (a liveness ping stays small and fast however many groups go idle at once, as they do
//!   after a large service is created). A follower agrees only if it holds exactly
//!   that vote and last log id, all applied; it stops its tick (no election timer). Once
//!   every follower agreed, the primary stops its own tick (no heartbeats). A lost answer
//!   only keeps the group awake.
//! - **Wake.** A primary wakes before a write, a linearizable read, a membership change or
//!   a leader transfer ([`Quiet::wake`]): its tick restarts and a read-index round renews
//!   its lease (openraft refuses writes from a primary whose lease expired). A replica
//!   wakes when it handles any message of its group ([`Quiet::heard`]); a follower woken
//!   that way holds off elections for one election timeout, so a woken follower never
//!   deposes the primary that woke it before that primary's heartbeats arrive. When a peer
//!   comes up or restarts, the primaries here with a voter on it wake, so a restarted
//!   follower hears from them before its election timer runs out.
//! - **Failover.** When a peer goes down (or restarts), each group here whose primary was
//!   on it elects without waiting for a heartbeat timeout: its live voters are ranked by
//!   a hash of (partition, replica id), the first campaigns at once and the k-th is held off
//!   for k election timeouts, so they do not split the vote.
//!
//! Safety does not depend on any of this: quiescence only stops timers. A quiesced primary
//! has no lease, and weft serves no lease reads: every linearizable read is a read-index
//! round, which a quiesced primary runs as any other (a deposed one fails it). Detection
//! wrong in either direction costs an election or a delay, never a write or a stale read.
//!
//! Owns the per-replica quiet state and the node's liveness table and loop. Depends on the
//! host (the replicas), the transport and the router (to send pings); nothing depends on
//! it but the host and the receiving side.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::raft::ReadPolicy;
use parking_lot::Mutex;
use tokio::time::Instant;
use weft_proto::v1 as pb;

use crate::host::{Host, Replica};
use crate::state_machine::Raft;
use crate::types::{LogId, PartitionId, ReplicaId, Vote};
use crate::wire;

/// How often a node pings each peer node.
pub const PING_EVERY: Duration = Duration::from_millis(100);
/// A peer with no answered ping for this long is down, so one slow answer on a loaded
/// machine does not move the primaries of every group led there.
pub const DEAD_AFTER: Duration = Duration::from_millis(600);
/// How long one liveness ping may take (one at a time per peer): a slow answer still
/// counts if it lands inside the window.
const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// Most quiesce requests in one message to a peer.
const QUIESCE_BATCH_MAX: usize = 512;
/// How long a message of quiesce requests may take. They travel apart from the liveness
/// pings: checking hundreds of followers is real work on a busy node, and a slow answer
/// must neither count the peer down nor be thrown away after its followers quiesced.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(2);
/// A liveness loop round this much later than [`PING_EVERY`] means this node itself
/// stalled (a saturated machine): answers it could not take in meanwhile do not count
/// its peers down until they have had another [`DEAD_AFTER`] to answer.
const LOCAL_PAUSE: Duration = Duration::from_millis(200);
/// How often (in pings) the loop looks for idle groups to quiesce.
const SCAN_EVERY: u32 = 5;
/// How often (in pings) the loop reads every hosted group's membership for the peer nodes
/// to ping, unless the hosted groups changed meanwhile: at thousands of groups that read
/// cost more than the pings. A peer named by a membership that changed in between is
/// pinged as soon as it pings this node (it does, sharing a group): see [`INBOUND_KEEP`].
const PEERS_EVERY: u32 = 50;
/// A peer that pinged this node within this long is pinged back, whether or not the last
/// read of the memberships named it; so a follower here that quiesced at the request of a
/// primary on a node the loop had not read yet still has that node watched, and elects
/// when it goes down.
const INBOUND_KEEP: Duration = Duration::from_secs(5);
/// A quiesce request not agreed by every follower within this long is dropped (the group
/// stays awake and is asked again once idle).
const PROPOSAL_TTL: Duration = Duration::from_secs(3);

const AWAKE: u8 = 0;
const QUIESCED: u8 = 1;
/// A primary is renewing its lease after waking.
const WAKING: u8 = 2;

/// One replica's quiet state: whether its tick (election timer, heartbeats) is stopped.
#[derive(Debug)]
pub(crate) struct Quiet {
    state: AtomicU8,
    /// Held while the state changes together with the tick switch, so that a wake and a
    /// quiesce racing cannot leave a replica marked awake with its tick stopped. Holds the
    /// vote and last log id the replica quiesced with.
    change: Mutex<Option<(Vote, Option<LogId>)>>,
    /// How long a follower woken by a message holds off elections.
    elect_hold: Duration,
    /// Bumped by every election hold and release: a hold's timer lifts it only if no
    /// later hold or release came since.
    holds: Arc<std::sync::atomic::AtomicU64>,
    /// Counts the quiet spells: bumped each time the replica quiesces.
    spells: std::sync::atomic::AtomicU64,
}

impl Quiet {
    pub(crate) fn new(elect_hold: Duration) -> Self {
        Quiet {
            state: AtomicU8::new(AWAKE),
            change: Mutex::new(None),
            elect_hold,
            holds: Arc::default(),
            spells: Default::default(),
        }
    }

    /// Whether the replica's timers are stopped.
    pub(crate) fn is_quiesced(&self) -> bool {
        self.state.load(Ordering::SeqCst) == QUIESCED
    }

    /// The quiet spell the replica is in, if it is quiesced. Within one spell its raft
    /// state does not move: anything that would (entries, a snapshot, a vote, a heartbeat
    /// that changes its vote or log, a write or read-index round on a primary) wakes it
    /// first, and a later quiesce starts another spell.
    pub(crate) fn spell(&self) -> Option<u64> {
        let spell = self.spells.load(Ordering::SeqCst);
        (self.state.load(Ordering::SeqCst) == QUIESCED && self.spells.load(Ordering::SeqCst) == spell).then_some(spell)
    }

    /// Stops the replica's tick, if it is awake, noting that it holds `at` (its vote and
    /// last log id); true if it is quiesced now.
    fn quiesce(&self, raft: &Raft, at: (Vote, Option<LogId>)) -> bool {
        let mut g = self.change.lock();
        match self.state.load(Ordering::SeqCst) {
            AWAKE => {
                *g = Some(at);
                self.spells.fetch_add(1, Ordering::SeqCst);
                self.state.store(QUIESCED, Ordering::SeqCst);
                raft.runtime_config().tick(false);
                true
            }
            s => s == QUIESCED,
        }
    }

    /// Restarts the tick of a quiesced replica (no lease renewal, no election hold).
    fn wake_now(&self, raft: &Raft) {
        let _g = self.change.lock();
        if self.state.load(Ordering::SeqCst) == QUIESCED {
            self.state.store(AWAKE, Ordering::SeqCst);
            raft.runtime_config().tick(true);
        }
    }

    /// The replica received (`news`: entries, a snapshot, a vote or a leader transfer, and
    /// then before handling it) or handled (a heartbeat or pre-vote) a message of its
    /// group. A quiesced replica wakes on news, or when the message changed its vote or
    /// log; it then holds off elections for one election timeout (the sender is awake; if
    /// it is the primary, its heartbeats follow). A heartbeat that changes nothing (one
    /// in flight while the group quiesced, or a primary's read-index round) leaves it
    /// quiesced.
    pub(crate) fn heard(&self, raft: &Raft, news: bool) {
        if self.state.load(Ordering::SeqCst) != QUIESCED {
            return;
        }
        {
            let g = self.change.lock();
            if self.state.load(Ordering::SeqCst) != QUIESCED {
                return;
            }
            if !news {
                let m = raft.metrics().borrow_watched().clone();
                let now = (m.vote, m.last_applied);
                if g.as_ref().is_some_and(|at| *at == now && m.last_log_index == now.1.as_ref().map(|l| l.index)) {
                    return;
                }
            }
            self.state.store(AWAKE, Ordering::SeqCst);
            raft.runtime_config().elect(false);
            raft.runtime_config().tick(true);
        }
        self.hold_elections(raft, self.elect_hold);
    }

    /// Before a primary's write, linearizable read, membership change or leader transfer:
    /// a quiesced primary restarts its tick and renews its lease with a read-index round
    /// (concurrent callers each run one; only the first request after a quiet spell pays
    /// it). A quiesced replica that is not primary stays quiesced: the request fails as
    /// it would anyway (forward to the leader), and waking it would start an election.
    pub(crate) async fn wake(&self, raft: &Raft) {
        if self.state.load(Ordering::SeqCst) == AWAKE {
            return;
        }
        if raft.metrics().borrow_watched().state != ServerState::Leader {
            return;
        }
        {
            let _g = self.change.lock();
            if self.state.load(Ordering::SeqCst) == AWAKE {
                return;
            }
            self.state.store(WAKING, Ordering::SeqCst);
            raft.runtime_config().tick(true);
        }
        // Awake once the round is over, or the caller gave up on it (a guard, so that a
        // cancelled request cannot leave the replica waking for good).
        struct Woken<'a>(&'a Quiet);
        impl Drop for Woken<'_> {
            fn drop(&mut self) {
                let _g = self.0.change.lock();
                if self.0.state.load(Ordering::SeqCst) == WAKING {
                    self.0.state.store(AWAKE, Ordering::SeqCst);
                }
            }
        }
        let _woken = Woken(self);
        // A deposed primary fails the round; the request then fails as it would have.
        let _ = raft.ensure_linearizable(ReadPolicy::ReadIndex).await;
    }
}

impl Quiet {
    /// Elections stay off for `hold`, then on again, unless another hold or a release
    /// came meanwhile (the latest one decides).
    pub(crate) fn hold_elections(&self, raft: &Raft, hold: Duration) {
        let generation = self.holds.fetch_add(1, Ordering::SeqCst) + 1;
        raft.runtime_config().elect(false);
        let (raft, holds) = (raft.clone(), self.holds.clone());
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            if holds.load(Ordering::SeqCst) == generation {
                raft.runtime_config().elect(true);
            }
        });
    }

    /// Elections on at once, whatever hold is pending.
    fn release_elections(&self, raft: &Raft) {
        self.holds.fetch_add(1, Ordering::SeqCst);
        raft.runtime_config().elect(true);
    }
}

/// What the node knows of one peer node.
#[derive(Debug, Default)]
struct PeerState {
    /// When a ping to it was last answered.
    last_ok: Option<Instant>,
    /// Its incarnation, from its last answer.
    incarnation: Option<u64>,
    /// Whether it counts as up (it was answered within [`DEAD_AFTER`]).
    up: bool,
    /// A liveness ping to it is on its way.
    in_flight: bool,
    /// A message of quiesce requests to it is on its way.
    quiesce_in_flight: bool,
    /// It answered with a new incarnation since the loop last looked.
    restarted: bool,
    /// When it last pinged this node.
    pinged_us: Option<Instant>,
}

/// A primary's request to quiesce its group, waiting for its followers to agree.
#[derive(Debug)]
struct Proposal {
    leader: Arc<Replica>,
    vote: Vote,
    last: Option<LogId>,
    /// The primary's request count when the group was found idle.
    requests: u64,
    /// Follower replica ids by node address.
    followers: BTreeMap<String, Vec<ReplicaId>>,
    /// The addresses whose followers have not agreed yet.
    waiting: BTreeSet<String>,
    at: Instant,
}

/// An idle spell being timed: the group's last log index and request count, and since when
/// neither changed.
#[derive(Debug, Clone, Copy)]
struct Idle {
    last_log: Option<u64>,
    requests: u64,
    since: Instant,
}

/// The node's liveness table and quiesce bookkeeping.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// This process's incarnation.
    incarnation: u64,
    peers: Mutex<BTreeMap<String, PeerState>>,
    proposals: Mutex<BTreeMap<PartitionId, Proposal>>,
}

impl Liveness {
    pub(crate) fn new() -> Self {
        Liveness { incarnation: weft_security::rng::random_u64(), peers: Mutex::default(), proposals: Mutex::default() }
    }

    /// Whether the peer at `addr` counts as up.
    fn is_up(&self, addr: &str) -> bool {
        self.peers.lock().get(addr).is_some_and(|p| p.up)
    }

    /// Whether the peer at `addr` counts as up, if the loop watches it.
    pub(crate) fn peer_up(&self, addr: &str) -> Option<bool> {
        self.peers.lock().get(addr).map(|p| p.up)
    }

    /// A peer's ping: notes the peer as heard and quiesces the followers it asks to.
    pub(crate) fn answer(&self, host: &Host, req: pb::PingRequest) -> pb::PingResponse {
        if !req.from.is_empty() {
            self.answered(&req.from, req.incarnation);
            if let Some(p) = self.peers.lock().get_mut(&req.from) {
                p.pinged_us = Some(Instant::now());
            }
        }
        let quiesced = req.quiesce.into_iter().filter_map(|q| follower_quiesce(host, q)).collect();
        pb::PingResponse { incarnation: self.incarnation, quiesced }
    }

    /// `addr` was heard from, as incarnation `incarnation`.
    fn answered(&self, addr: &str, incarnation: u64) {
        let mut peers = self.peers.lock();
        let p = peers.entry(addr.to_string()).or_default();
        p.last_ok = Some(Instant::now());
        if p.incarnation.is_some_and(|i| i != incarnation) {
            p.restarted = true;
        }
        p.incarnation = Some(incarnation);
    }
}

/// A follower's side of a quiesce request: the target's id if it quiesced.
fn follower_quiesce(host: &Host, q: pb::QuiesceRequest) -> Option<pb::Target> {
    let target = q.target?;
    let r = host.target(Some(target)).ok()?;
    let vote = wire::vote_from_pb(q.vote).ok()?;
    let last = wire::opt_log_id_from_pb(q.last_log_id).ok()?;
    let agrees = {
        let m = r.metrics.borrow_watched();
        m.running_state.is_ok()
            && m.state == ServerState::Follower
            && vote.is_committed()
            && m.vote == vote
            && m.last_applied == last
            && m.last_log_index == last.as_ref().map(|l| l.index)
    };
    (agrees && r.quiet.quiesce(&r.raft, (vote, last))).then_some(target)
}

/// Runs the node's liveness loop until the host is dropped.
pub(crate) fn start(host: &Arc<Host>, own_addr: Option<String>) {
    let weak = Arc::downgrade(host);
    tokio::spawn(run(weak, own_addr));
}

async fn run(weak: Weak<Host>, own_addr: Option<String>) {
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle: BTreeMap<PartitionId, Idle> = BTreeMap::new();
    let mut round: u32 = 0;
    // The hosted replicas, looked up again every scan, and the peer nodes their
    // memberships name, read again when the hosted replicas changed or every PEERS_EVERY.
    let mut replicas: Vec<Arc<Replica>> = Vec::new();
    let mut peers: BTreeSet<String> = BTreeSet::new();
    let mut peers_due = true;
    // Until when this node's own stall keeps its peers from being counted down.
    let (mut last_round, mut grace_until) = (Instant::now(), Instant::now());
    loop {
        tick.tick().await;
        let Some(host) = weak.upgrade() else { return };
        if host.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(last_round) > PING_EVERY + LOCAL_PAUSE {
            tracing::debug!(late_ms = now.duration_since(last_round).as_millis() as u64, "liveness loop stalled");
            grace_until = now + DEAD_AFTER;
        }
        last_round = now;
        round = round.wrapping_add(1);
        let rescan = round % SCAN_EVERY == 1;
        if rescan {
            let listed = host.list();
            peers_due |=
                listed.len() != replicas.len() || listed.iter().zip(&replicas).any(|(a, b)| !Arc::ptr_eq(a, b));
            replicas = listed;
        }
        peers_due |= round % PEERS_EVERY == 1;
        // This node's address: from the loop's argument, or as the groups name it.
        let own = own_addr.clone().or_else(|| replicas.iter().find_map(|r| addr_of(r, r.id)));
        let Some(own) = own else { continue };
        if peers_due {
            peers = peer_addrs(&replicas, &own);
            peers_due = false;
        }
        if rescan && let Some(after) = host.quiesce_after() {
            scan(&host, &replicas, &own, after, &mut idle);
        }
        conclude(&host);
        let inbound = transitions(&host, &replicas, &peers, grace_until);
        for addr in peers.iter().chain(&inbound) {
            send_ping(&host, &own, addr.clone(), Message::Liveness);
            send_ping(&host, &own, addr.clone(), Message::Quiesce);
        }
    }
}

/// Node address of replica `id` as `r`'s membership names it.
fn addr_of(r: &Replica, id: ReplicaId) -> Option<String> {
    let m = r.metrics.borrow_watched();
    m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
}

/// Every node address named in a hosted group's membership, but this node's.
fn peer_addrs(replicas: &[Arc<Replica>], own: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in replicas {
        // Read in place: a clone of every membership each scan cost more than the pings.
        let m = r.metrics.borrow_watched();
        for (_, n) in m.membership_config.membership().nodes() {
            if n.addr != own && !out.contains(&n.addr) {
                out.insert(n.addr.clone());
            }
        }
    }
    out
}

/// What one message to a peer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    /// Nothing but the ping: small, answered at once, one at a time per peer.
    Liveness,
    /// The quiesce requests waiting on the peer's followers (at most
    /// [`QUIESCE_BATCH_MAX`]); its answer counts as a ping's too.
    Quiesce,
}

/// Sends `what` to `addr` unless a message of that kind to it is still on its way;
/// records the answer.
fn send_ping(host: &Arc<Host>, own: &str, addr: String, what: Message) {
    let live = &host.liveness;
    {
        let mut peers = live.peers.lock();
        let p = peers.entry(addr.clone()).or_default();
        let busy = match what {
            Message::Liveness => &mut p.in_flight,
            Message::Quiesce => &mut p.quiesce_in_flight,
        };
        if *busy {
            return;
        }
        *busy = true;
    }
    let quiesce: Vec<pb::QuiesceRequest> = match what {
        Message::Liveness => Vec::new(),
        Message::Quiesce => live
            .proposals
            .lock()
            .values()
            .filter(|p| p.waiting.contains(&addr))
            .flat_map(|p| {
                let partition = p.leader.partition;
                p.followers.get(&addr).into_iter().flatten().map(move |&replica| pb::QuiesceRequest {
                    target: Some(pb::Target { partition, replica }),
                    vote: Some(wire::vote_to_pb(&p.vote)),
                    last_log_id: wire::opt_log_id_to_pb(p.last.as_ref()),
                })
            })
            .take(QUIESCE_BATCH_MAX)
            .collect(),
    };
    let done = move |live: &Liveness, addr: &str| {
        if let Some(p) = live.peers.lock().get_mut(addr) {
            match what {
                Message::Liveness => p.in_flight = false,
                Message::Quiesce => p.quiesce_in_flight = false,
            }
        }
    };
    if what == Message::Quiesce && quiesce.is_empty() {
        done(live, &addr);
        return;
    }
    let req = pb::PingRequest { from: own.to_string(), incarnation: live.incarnation, quiesce };
    let timeout = match what {
        Message::Liveness => PING_TIMEOUT,
        Message::Quiesce => QUIESCE_TIMEOUT,
    };
    let weak = Arc::downgrade(host);
    let peers = host.peers().clone();
    tokio::spawn(async move {
        let answer = match &peers.config().router {
            Some(seat) => seat.ping(&addr, req).await.ok(),
            None => tokio::time::timeout(timeout, peers.ping(&addr, req)).await.ok().and_then(Result::ok),
        };
        let Some(host) = weak.upgrade() else { return };
        let live = &host.liveness;
        if let Some(a) = &answer {
            live.answered(&addr, a.incarnation);
            if !a.quiesced.is_empty() {
                let agreed: BTreeSet<(PartitionId, ReplicaId)> =
                    a.quiesced.iter().map(|t| (t.partition, t.replica)).collect();
                for (partition, p) in live.proposals.lock().iter_mut() {
                    if p.followers
                        .get(&addr)
                        .is_some_and(|ids| ids.iter().all(|id| agreed.contains(&(*partition, *id))))
                    {
                        p.waiting.remove(&addr);
                    }
                }
            }
        }
        done(live, &addr);
    });
}

/// Times idle spells and asks idle groups led here to quiesce.
fn scan(host: &Host, replicas: &[Arc<Replica>], own: &str, after: Duration, idle: &mut BTreeMap<PartitionId, Idle>) {
    let now = Instant::now();
    let hosted: BTreeSet<PartitionId> = replicas.iter().map(|r| r.partition).collect();
    idle.retain(|p, _| hosted.contains(p));
    let mut proposals = host.liveness.proposals.lock();
    proposals.retain(|_, p| now.duration_since(p.at) < PROPOSAL_TTL && !p.leader.quiet.is_quiesced());
    for r in replicas {
        if r.quiet.state.load(Ordering::SeqCst) != AWAKE {
            continue;
        }
        let requests = r.requests.load(Ordering::SeqCst);
        let last_log = r.metrics.borrow_watched().last_log_index;
        let seen = Idle { last_log, requests, since: now };
        let spell = idle.entry(r.partition).or_insert(seen);
        if spell.last_log != seen.last_log || spell.requests != seen.requests {
            *spell = seen;
            continue;
        }
        if now.duration_since(spell.since) < after || proposals.contains_key(&r.partition) {
            continue;
        }
        if r.metrics.borrow_watched().state != ServerState::Leader {
            continue;
        }
        let m = r.metrics.borrow_watched().clone();
        if m.state != ServerState::Leader || m.running_state.is_err() {
            continue;
        }
        let Some(last) = m.last_applied else { continue };
        if m.last_log_index != Some(last.index) {
            continue;
        }
        let membership = m.membership_config.membership();
        if m.membership_config.log_id() != m.committed_membership_config.log_id()
            || membership.get_joint_config().len() != 1
            || membership.nodes().count() != membership.voter_ids().count()
        {
            continue;
        }
        let Some(replication) = &m.replication else { continue };
        let mut followers: BTreeMap<String, Vec<ReplicaId>> = BTreeMap::new();
        let mut ready = true;
        for id in membership.voter_ids().filter(|id| *id != r.id) {
            let matched = replication.get(&id).and_then(|l| l.as_ref());
            let addr = membership.get_node(&id).map(|n| n.addr.clone());
            match (matched, addr) {
                (Some(l), Some(addr)) if *l == last && addr != own && host.liveness.is_up(&addr) => {
                    followers.entry(addr).or_default().push(id);
                }
                _ => ready = false,
            }
        }
        if !ready {
            continue;
        }
        let waiting = followers.keys().cloned().collect();
        proposals.insert(
            r.partition,
            Proposal { leader: r.clone(), vote: m.vote, last: Some(last), requests, followers, waiting, at: now },
        );
    }
}

/// Quiesces the primaries whose followers all agreed.
fn conclude(host: &Host) {
    let done: Vec<Proposal> = {
        let mut proposals = host.liveness.proposals.lock();
        let ready: Vec<PartitionId> = proposals.iter().filter(|(_, p)| p.waiting.is_empty()).map(|(k, _)| *k).collect();
        ready.into_iter().filter_map(|k| proposals.remove(&k)).collect()
    };
    for p in done {
        let r = &p.leader;
        if !r.quiet.quiesce(&r.raft, (p.vote, p.last)) {
            continue;
        }
        // A request that arrived meanwhile either saw the quiesced state (and wakes the
        // primary) or is seen here: its counter went up before it looked at the state.
        let m = r.metrics.borrow_watched().clone();
        let moved = r.requests.load(Ordering::SeqCst) != p.requests
            || m.last_applied != p.last
            || m.last_log_index != p.last.as_ref().map(|l| l.index)
            || m.vote != p.vote
            || m.state != ServerState::Leader;
        if moved {
            r.quiet.wake_now(&r.raft);
        } else {
            tracing::debug!(partition = r.partition, replica = r.id, "group quiesced");
        }
    }
}

/// Marks peers up or down and acts on each change: groups led from a peer that went down
/// or restarted elect; primaries here with a voter on a peer that came up or restarted wake.
/// Before `grace_until` (this node stalled) no peer is counted down. Returns the peers
/// that pinged this node lately and are not among `peers`, to be pinged too.
fn transitions(host: &Host, replicas: &[Arc<Replica>], peers: &BTreeSet<String>, grace_until: Instant) -> Vec<String> {
    let now = Instant::now();
    let (mut down, mut up) = (Vec::new(), Vec::new());
    let inbound = |p: &PeerState| p.pinged_us.is_some_and(|t| now.duration_since(t) < INBOUND_KEEP);
    let extra;
    {
        let mut table = host.liveness.peers.lock();
        table.retain(|addr, p| peers.contains(addr) || inbound(p) || p.in_flight || p.quiesce_in_flight);
        extra = table.iter().filter(|(a, p)| !peers.contains(*a) && inbound(p)).map(|(a, _)| a.clone()).collect();
        for (addr, p) in table.iter_mut() {
            let fresh = p.last_ok.is_some_and(|t| now.duration_since(t) < DEAD_AFTER);
            if p.up && !fresh && !p.restarted && now < grace_until {
                continue;
            }
            if p.restarted {
                p.restarted = false;
                down.push(addr.clone());
                up.push(addr.clone());
            } else if p.up && !fresh {
                down.push(addr.clone());
            } else if !p.up && fresh {
                up.push(addr.clone());
            }
            p.up = fresh;
        }
    }
    for addr in &down {
        tracing::info!(peer = %addr, "peer node down or restarted: groups it led elect");
        failover(replicas, addr);
    }
    for addr in &up {
        for r in replicas {
            let m = r.metrics.borrow_watched().clone();
            let has_voter_there = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| m.membership_config.membership().get_node(&id).is_some_and(|n| n.addr == *addr));
            if m.state == ServerState::Leader && has_voter_there && r.quiet.is_quiesced() {
                // Woken with a read-index round: it renews the lease, and its heartbeat
                // reaches the peer that came up.
                let r = r.clone();
                tokio::spawn(async move { r.quiet.wake(&r.raft).await });
            }
        }
    }
    extra
}

/// A well-mixed, fixed function of a group and a replica (splitmix64's finalizer).
fn spread(partition: PartitionId, replica: ReplicaId) -> u64 {
    let mut z = partition.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ replica;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Groups here whose primary was on `addr` elect: the first live voter in a fixed order
/// per group at once, the k-th after k election timeouts.
fn failover(replicas: &[Arc<Replica>], addr: &str) {
    for r in replicas {
        let m = r.metrics.borrow_watched().clone();
        if m.state == ServerState::Leader {
            continue;
        }
        let membership = m.membership_config.membership();
        let Some(leader) = m.current_leader else { continue };
        if membership.get_node(&leader).is_none_or(|n| n.addr != addr) {
            continue;
        }
        // Ranked by a hash of (partition, replica): the groups of a dead node spread their
        // new primaries over the survivors instead of all going to one.
        let mut live: Vec<ReplicaId> =
            membership.voter_ids().filter(|id| membership.get_node(id).is_some_and(|n| n.addr != addr)).collect();
        live.sort_by_key(|id| (spread(r.partition, *id), *id));
        let Some(rank) = live.iter().position(|id| *id == r.id) else { continue };
        let raft = &r.raft;
        {
            let _g = r.quiet.change.lock();
            r.quiet.state.store(AWAKE, Ordering::SeqCst);
            if rank == 0 {
                r.quiet.release_elections(raft);
            } else {
                r.quiet.hold_elections(raft, r.quiet.elect_hold * rank as u32);
            }
            raft.runtime_config().tick(true);
        }
    }
}
