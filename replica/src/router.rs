//! The raft transport's in-memory twin: a [`Router`] that carries every raft message between
//! [`Host`]s in one process by calling the target replica's openraft handle directly, and
//! applies [`Filter`]s to each message on the way there and to each answer on the way back:
//! drop, delay (and so reorder), duplicate, or partition, as TiKV's `transport_simulate`
//! does for its raftstore tests.
//!
//! A host uses it when its [`crate::TransportConfig::router`] holds a [`Seat`] (the host's
//! address on the router); the gRPC transport is the default and nothing in production
//! builds a router. The host checks an in-memory message exactly as the gRPC service does:
//! it is refused unless the partition is hosted under exactly the addressed replica id.
//! A snapshot is encoded to the Avro stream and decoded again, as it would be on the wire,
//! so the codec runs too.
//!
//! What a filter sees is a [`Message`]: sender and receiver addresses, the partition, and
//! the [`Kind`] (a request, or the answer to one). Answers are filtered separately from
//! requests, so a test can let a request apply and lose its answer, the case that makes a
//! write's outcome unknown. A dropped message fails the call as openraft sees an
//! unreachable peer; a partitioned one likewise.
//!
//! Randomness (which messages a rate drops, how long a delay is) comes from
//! `weft_security::rng`, so a seeded test replays.
//!
//! Depends on the host (to find the target replica), the snapshot codec and openraft's
//! network traits; the gRPC transport does not depend on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkFactory};
use parking_lot::Mutex;
use weft_proto::v1 as pb;
use weft_store::Limits;

use crate::host::{Host, Replica};
use crate::snapshot;
use crate::state_machine::Image;
use crate::types::{PartitionId, ReplicaId, TypeConfig, Vote};

/// openraft's unreachable-peer error for this crate's groups.
type Gone = Unreachable<TypeConfig>;

/// What a raft message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Entries or a heartbeat.
    Append,
    /// A vote request (pre-vote included).
    Vote,
    /// A whole snapshot.
    Snapshot,
    /// A leader asking the target to take over.
    TransferLeader,
    /// A node's liveness ping to a peer node (carrying quiesce requests).
    Ping,
    /// The answer to a request of this kind.
    Answer(AnswerTo),
}

/// The request an answer answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnswerTo {
    /// An append.
    Append,
    /// A vote.
    Vote,
    /// A snapshot.
    Snapshot,
    /// A leader transfer.
    TransferLeader,
    /// A ping.
    Ping,
}

/// One message on its way: `from` and `to` are node addresses (an answer goes from the
/// request's target back to its sender).
#[derive(Clone, Debug)]
pub struct Message {
    /// Sender's address.
    pub from: String,
    /// Receiver's address.
    pub to: String,
    /// The group.
    pub partition: PartitionId,
    /// What it is.
    pub kind: Kind,
}

/// What happens to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered at once.
    Deliver,
    /// Lost: the call fails as if the peer were unreachable.
    Drop,
    /// Delivered after this long (messages delayed by different amounts overtake each
    /// other: this is how a test reorders).
    Delay(Duration),
    /// Delivered twice (the copy a moment later; its answer is discarded).
    Duplicate,
}

/// Decides a message's fate. Filters compose: any `Drop` drops, delays add up, any
/// `Duplicate` duplicates.
pub trait Filter: Send + Sync + fmt::Debug {
    /// The verdict on `m`.
    fn verdict(&self, m: &Message) -> Verdict;
}

/// Cuts every message between nodes on different sides; nodes named in no side talk to
/// everyone.
#[derive(Debug, Clone)]
pub struct Partition {
    sides: Vec<BTreeSet<String>>,
}

impl Partition {
    /// Sides of node addresses.
    pub fn new(sides: impl IntoIterator<Item = impl IntoIterator<Item = String>>) -> Self {
        Partition { sides: sides.into_iter().map(|s| s.into_iter().collect()).collect() }
    }

    /// `addr` alone on one side, everyone else on the other.
    pub fn isolate(addr: impl Into<String>) -> Self {
        Partition { sides: vec![BTreeSet::from([addr.into()])] }
    }

    fn side(&self, addr: &str) -> Option<usize> {
        self.sides.iter().position(|s| s.contains(addr))
    }
}

impl Filter for Partition {
    fn verdict(&self, m: &Message) -> Verdict {
        if self.side(&m.from) != self.side(&m.to) { Verdict::Drop } else { Verdict::Deliver }
    }
}

/// Drops each message matching `kinds` (all kinds when empty) with probability `rate`.
#[derive(Debug, Clone)]
pub struct DropRate {
    /// Probability in [0, 1].
    pub rate: f64,
    /// The kinds it applies to; empty means every kind.
    pub kinds: BTreeSet<Kind>,
}

impl Filter for DropRate {
    fn verdict(&self, m: &Message) -> Verdict {
        if applies(&self.kinds, m) && chance(self.rate) { Verdict::Drop } else { Verdict::Deliver }
    }
}

/// Duplicates each message matching `kinds` (all kinds when empty) with probability `rate`.
#[derive(Debug, Clone)]
pub struct DuplicateRate {
    /// Probability in [0, 1].
    pub rate: f64,
    /// The kinds it applies to; empty means every kind.
    pub kinds: BTreeSet<Kind>,
}

impl Filter for DuplicateRate {
    fn verdict(&self, m: &Message) -> Verdict {
        if applies(&self.kinds, m) && chance(self.rate) { Verdict::Duplicate } else { Verdict::Deliver }
    }
}

/// Delays every message by a uniformly random time up to `max`: concurrent messages
/// arrive out of the order they were sent in.
#[derive(Debug, Clone)]
pub struct RandomDelay {
    /// The longest delay.
    pub max: Duration,
}

impl Filter for RandomDelay {
    fn verdict(&self, _m: &Message) -> Verdict {
        let micros = self.max.as_micros().min(u64::MAX as u128) as u64;
        if micros == 0 {
            return Verdict::Deliver;
        }
        Verdict::Delay(Duration::from_micros(weft_security::rng::random_u64() % (micros + 1)))
    }
}

fn applies(kinds: &BTreeSet<Kind>, m: &Message) -> bool {
    kinds.is_empty() || kinds.contains(&m.kind)
}

/// True with probability `p`.
fn chance(p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    // 53 random bits as a fraction in [0, 1).
    let x = (weft_security::rng::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    x < p
}

#[derive(Default)]
struct Inner {
    hosts: Mutex<BTreeMap<String, Weak<Host>>>,
    filters: Mutex<Vec<Arc<dyn Filter>>>,
    /// Messages delivered and dropped, for tests that check a filter did something.
    counts: Mutex<Counts>,
}

/// How many messages the router delivered, dropped and duplicated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Delivered (duplicates counted once more each).
    pub delivered: u64,
    /// Dropped by a filter or for want of a receiver.
    pub dropped: u64,
    /// Copies made by a filter.
    pub duplicated: u64,
}

/// Hosts in one process and the filters between them. Cloning shares the router.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Inner>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self.inner.hosts.lock().keys().cloned().collect();
        f.debug_struct("Router").field("hosts", &hosts).field("filters", &self.inner.filters.lock().len()).finish()
    }
}

/// A host's place on a router: the router and the address the host is known by.
#[derive(Clone, Debug)]
pub struct Seat {
    router: Router,
    addr: String,
}

impl Router {
    /// A router with no hosts and no filters.
    pub fn new() -> Self {
        Router::default()
    }

    /// The seat for a host known as `addr`; give it to the host's
    /// [`crate::TransportConfig::router`], then [`Router::attach`] the host.
    pub fn seat(&self, addr: impl Into<String>) -> Seat {
        Seat { router: self.clone(), addr: addr.into() }
    }

    /// Messages to `addr` go to `host` from now on (the router holds it weakly: a dropped
    /// host is unreachable). Attaching another host at the same address replaces it, as a
    /// restarted node does.
    pub fn attach(&self, addr: impl Into<String>, host: &Arc<Host>) {
        self.inner.hosts.lock().insert(addr.into(), Arc::downgrade(host));
    }

    /// Messages to `addr` find no one.
    pub fn detach(&self, addr: &str) {
        self.inner.hosts.lock().remove(addr);
    }

    /// Adds a filter.
    pub fn add_filter(&self, f: impl Filter + 'static) {
        self.inner.filters.lock().push(Arc::new(f));
    }

    /// Removes every filter: every link heals.
    pub fn clear_filters(&self) {
        self.inner.filters.lock().clear();
    }

    /// What the router has done so far.
    pub fn counts(&self) -> Counts {
        *self.inner.counts.lock()
    }

    /// The combined verdict of every filter: any drop drops, delays add up, any duplicate
    /// duplicates.
    fn judge(&self, m: &Message) -> (bool, Duration, bool) {
        let filters = self.inner.filters.lock().clone();
        let (mut dropped, mut delay, mut dup) = (false, Duration::ZERO, false);
        for f in &filters {
            match f.verdict(m) {
                Verdict::Deliver => {}
                Verdict::Drop => dropped = true,
                Verdict::Delay(d) => delay += d,
                Verdict::Duplicate => dup = true,
            }
        }
        (dropped, delay, dup)
    }

    /// Waits out `m`'s delay; `Err` when it is dropped, `Ok(duplicate)` otherwise.
    async fn pass(&self, m: &Message) -> Result<bool, Gone> {
        let (dropped, delay, dup) = self.judge(m);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut c = self.inner.counts.lock();
        if dropped {
            c.dropped += 1;
            return Err(unreachable(format!("{:?} from {} to {} dropped by a filter", m.kind, m.from, m.to)));
        }
        c.delivered += 1;
        if dup {
            c.duplicated += 1;
            c.delivered += 1;
        }
        Ok(dup)
    }

    /// The replica `target` on the host at `addr`, as the host would accept a message for it.
    /// With the host's engine limits (a snapshot is built under them).
    fn replica(&self, addr: &str, target: pb::Target) -> Result<(Arc<Replica>, Limits), Gone> {
        let host = self.inner.hosts.lock().get(addr).and_then(Weak::upgrade);
        let host = host.ok_or_else(|| unreachable(format!("no node at {addr}")))?;
        let replica = host.target(Some(target)).map_err(|s| unreachable(s.message().to_string()))?;
        Ok((replica, host.limits().clone()))
    }
}

fn unreachable(why: String) -> Gone {
    Unreachable::new(&std::io::Error::other(why))
}

impl Seat {
    /// A liveness ping from this seat's host to the host at `to`, through the filters
    /// both ways (its partition is 0: it belongs to no group).
    pub(crate) async fn ping(&self, to: &str, req: pb::PingRequest) -> Result<pb::PingResponse, Gone> {
        let message = |from: &str, to: &str, kind| Message { from: from.into(), to: to.into(), partition: 0, kind };
        self.router.pass(&message(&self.addr, to, Kind::Ping)).await?;
        let host = self.router.inner.hosts.lock().get(to).and_then(Weak::upgrade);
        let host = host.ok_or_else(|| unreachable(format!("no node at {to}")))?;
        let answer = host.ping(req);
        self.router.pass(&message(to, &self.addr, Kind::Answer(AnswerTo::Ping))).await?;
        Ok(answer)
    }

    /// openraft's network factory for `partition`'s group on this seat's host.
    pub(crate) fn factory(&self, partition: PartitionId) -> RouterFactory {
        RouterFactory { seat: self.clone(), partition }
    }
}

/// openraft's network factory for one group on one host, over the router.
#[derive(Clone, Debug)]
pub(crate) struct RouterFactory {
    seat: Seat,
    partition: PartitionId,
}

impl RaftNetworkFactory<TypeConfig> for RouterFactory {
    type Network = RouterLink;

    async fn new_client(&mut self, target: ReplicaId, node: &BasicNode) -> RouterLink {
        RouterLink {
            seat: self.seat.clone(),
            to: node.addr.clone(),
            target: pb::Target { partition: self.partition, replica: target },
        }
    }
}

/// The in-memory network to one target replica of one group.
#[derive(Debug)]
pub(crate) struct RouterLink {
    seat: Seat,
    to: String,
    target: pb::Target,
}

impl RouterLink {
    fn message(&self, kind: Kind) -> Message {
        Message { from: self.seat.addr.clone(), to: self.to.clone(), partition: self.target.partition, kind }
    }

    fn answer(&self, to: AnswerTo) -> Message {
        Message {
            from: self.to.clone(),
            to: self.seat.addr.clone(),
            partition: self.target.partition,
            kind: Kind::Answer(to),
        }
    }

    /// Carries one request and its answer through the filters: `call` runs on the target
    /// replica (twice if the request is duplicated; the copy's answer is discarded).
    async fn exchange<T, F, Fut>(&self, kind: Kind, answer: AnswerTo, news: bool, call: F) -> Result<T, Gone>
    where
        T: Send + 'static,
        F: Fn(Arc<Replica>, Limits) -> Fut,
        Fut: std::future::Future<Output = Result<T, Gone>> + Send + 'static,
    {
        let router = &self.seat.router;
        let dup = router.pass(&self.message(kind)).await?;
        let (replica, limits) = router.replica(&self.to, self.target)?;
        if dup {
            let copy = call(replica.clone(), limits.clone());
            tokio::spawn(async move {
                let _ = copy.await;
            });
        }
        // As the gRPC service does: a quiesced replica wakes on its group's news.
        replica.quiet.heard(&replica.raft, news);
        let out = call(replica.clone(), limits).await;
        replica.quiet.heard(&replica.raft, news);
        let out = out?;
        router.pass(&self.answer(answer)).await?;
        Ok(out)
    }
}

fn fatal(e: impl fmt::Display) -> Gone {
    unreachable(e.to_string())
}

impl RaftNetworkV2<TypeConfig> for RouterLink {
    type SnapshotData = Image;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let news = !rpc.entries.is_empty();
        self.exchange(Kind::Append, AnswerTo::Append, news, |r, _| {
            let rpc = rpc.clone();
            async move { r.raft.append_entries(rpc).await.map_err(fatal) }
        })
        .await
        .map_err(RPCError::Unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.exchange(Kind::Vote, AnswerTo::Vote, true, |r, _| {
            let rpc = rpc.clone();
            async move { r.raft.vote(rpc).await.map_err(fatal) }
        })
        .await
        .map_err(RPCError::Unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.exchange(Kind::Vote, AnswerTo::Vote, false, |r, _| {
            let rpc = rpc.clone();
            async move { r.raft.pre_vote(rpc).await.map_err(fatal) }
        })
        .await
        .map_err(RPCError::Unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, Image>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let Image::Frozen { store, sessions } = snapshot.snapshot else {
            let e = std::io::Error::other("only a frozen engine snapshot can be sent");
            return Err(StreamingError::Network(NetworkError::new(&e)));
        };
        // Through the Avro stream, as on the wire.
        let mut avro = Vec::new();
        snapshot::encode(&store, &sessions, &mut avro).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let avro = Arc::new(avro);
        let meta = snapshot.meta;
        let install = self.exchange(Kind::Snapshot, AnswerTo::Snapshot, true, |r, limits| {
            let (avro, meta, vote) = (avro.clone(), meta.clone(), vote);
            async move {
                let (store, sessions) = snapshot::decode(avro.as_slice(), limits, r.sm.progress()).map_err(fatal)?;
                let image = Image::Built { store: Box::new(store), sessions };
                let snapshot = openraft::Snapshot { meta, snapshot: image };
                r.raft.install_full_snapshot(vote, snapshot).await.map_err(fatal)
            }
        });
        tokio::select! {
            r = install => Ok(SnapshotResponse::new(r.map_err(StreamingError::Unreachable)?.vote)),
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.exchange(Kind::TransferLeader, AnswerTo::TransferLeader, true, |r, _| {
            let req = req.clone();
            async move {
                match r.raft.handle_transfer_leader(req).await.map_err(fatal)? {
                    Ok(()) => Ok(()),
                    Err(e) => Err(fatal(e)),
                }
            }
        })
        .await
        .map_err(RPCError::Unreachable)?;
        Ok(Ok(()))
    }
}
