//! The cluster manager as it runs inside every node.
//!
//! - Every node heartbeats to the manager (through any seed) with its identity, capacity,
//!   incarnation and the status of every replica it hosts: that report is also the load
//!   report (replica and primary counts, memory).
//! - The first seed in `--seeds` bootstraps the cluster-map group on all seeds once every
//!   seed answers and none hosts the map yet (so a restarted seed never starts a second map).
//! - Whichever node hosts the map's primary is the manager: it keeps the heartbeat times and
//!   reports as soft state (a new manager gives every node a fresh grace period), marks
//!   silent nodes down, creates partitions, replaces lost replicas, moves replicas off
//!   draining nodes, balances, and runs operator commands (`reconcile`, `commands`).
//! - The map group lives on the seeds; a seed that restarted empty gets a new map replica
//!   (`map_group`).
//! - Upgrade walks take one upgrade domain down at a time without losing quorum
//!   (`upgrade`); users and grants live in the map (`users`).
//! - Every node serves the `Cluster` gRPC service and forwards to the manager (`service`).
//!
//! Decisions are pure functions in `weft-cluster-manager` (`reconcile`, `moves`, `walk`,
//! `placement`, `repair`, `balance`), unit-tested without a network; this module observes
//! and carries them out.
//!
//! Known gap, stated rather than hidden: a seed that never comes back leaves the map group
//! one replica short until the seed list is changed on every node (no command does that).

mod backups;
pub mod clock;
mod commands;
mod gauges;
pub mod map;
mod map_group;
mod reconcile;
mod service;
mod upgrade;
mod users;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use parking_lot::Mutex;
use tonic::Status;
use weft_proto::v1 as pb;
use weft_proto::v1::cluster_client::ClusterClient;
use weft_proto::v1::node_admin_client::NodeAdminClient;
use weft_replica::{Host, Replica};
use weft_security::AuthChannel;

pub use map::MAP_PARTITION;
pub use reconcile::DEFAULT_TABLE;
pub use service::ClusterService;

/// How this node takes part in the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Seed addresses (`HOST:PORT`); the node is a seed when its own address is listed.
    pub seeds: Vec<String>,
    /// Upgrade domain.
    pub ud: String,
    /// Fault domain.
    pub fd: String,
    /// Most replicas this node takes.
    pub capacity_replicas: u32,
    /// Most engine memory this node's replicas may hold.
    pub capacity_memory_bytes: u64,
    /// A node silent this long is marked down and its replicas replaced.
    pub down_grace: Duration,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Replicas per partition when a service does not say.
    pub default_replicas: u32,
    /// How often the manager balances on its own (and whether: `None` never).
    pub balance_every: Option<Duration>,
    /// Balance when the most-loaded up node holds more than this many times the replicas
    /// of the least-loaded one.
    pub balance_threshold: f64,
    /// A move whose new replica makes no progress this long is abandoned (`reconcile`).
    pub move_stall: Duration,
    /// The node runs `--insecure` (reported in its heartbeats, shown by `weft ctl status`).
    pub insecure: bool,
    /// The address peers and clients dial, when it is not the bound one (`--advertise`):
    /// a host name in containers, where the node listens on `0.0.0.0`. Names are resolved
    /// at each connection, so a peer whose address changes is found again.
    pub advertise: Option<String>,
    /// The address clients outside the nodes' network dial (`--advertise-client`: a
    /// published port), carried in the map as `NodeInfo.client_addr`.
    pub advertise_client: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            ud: "ud0".into(),
            fd: "fd0".into(),
            capacity_replicas: 1_000,
            capacity_memory_bytes: 64 << 30,
            down_grace: Duration::from_secs(10),
            heartbeat: Duration::from_millis(500),
            default_replicas: 4,
            balance_every: Some(Duration::from_secs(60)),
            balance_threshold: 1.5,
            move_stall: Duration::from_secs(120),
            insecure: false,
            advertise: None,
            advertise_client: None,
        }
    }
}

/// What the manager last heard from one node.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    /// The reporting process's incarnation.
    incarnation: u64,
    /// Its replicas by partition, as of report `seq`.
    replicas: BTreeMap<u64, Arc<pb::ReplicaStatus>>,
    /// The report this is (a delta applies only over exactly this one).
    seq: u64,
}

/// The manager's soft state: rebuilt from heartbeats whenever a node becomes manager.
#[derive(Debug, Default)]
struct Soft {
    /// The map-group term this state belongs to.
    term: u64,
    /// When this node became manager in `term`.
    since: Option<Instant>,
    seen: BTreeMap<u64, Seen>,
    /// When each partition's placement last changed (a report older than that may not
    /// list a replica just opened).
    changed: BTreeMap<u64, Instant>,
    /// Alarms already logged, so each is logged once when it starts.
    alarms: BTreeSet<String>,
    /// When the manager last balanced on its own.
    balanced: Option<Instant>,
    /// Where moves stalled lately, avoided by the next moves of the same partition.
    stalls: weft_cluster_manager::reconcile::Stalls,
    /// Per partition with a move under way, its target's last progress and when it was
    /// first seen (`moves::MoveClock`): kept across the rounds that retry a failed
    /// step, so a target that never answers is given up like one that answers and stalls.
    move_clocks: BTreeMap<u64, weft_cluster_manager::moves::MoveClock>,
}

/// Heartbeat reports: full, or only what changed since the last one the manager holds.
///
/// An idle node's replicas rarely change: sending every status every beat cost the nodes
/// and (decoding 10,000 of them twice a second) the manager more than all the idle groups
/// together. A delta names the report it builds on; a manager holding another one (it just
/// took over, or an answer was lost) ignores it and asks for a full report, and a full
/// report goes every [`FULL_REPORT_EVERY`] beats whatever happens. A manager of an older
/// version answers `held_seq` 0 and so only ever gets full reports.
#[derive(Default)]
struct Reports {
    seq: u64,
    /// The report the manager said it holds, and the statuses it held.
    held: Option<(u64, BTreeMap<u64, Arc<pb::ReplicaStatus>>)>,
    /// Beats since the last full report.
    since_full: u32,
}

/// Beats between full reports (10 s at the default 500 ms beat).
const FULL_REPORT_EVERY: u32 = 20;

impl Reports {
    /// The next report of `replicas`, its number, and the statuses it stands for.
    fn next(
        &mut self,
        node: pb::NodeInfo,
        replicas: Vec<Arc<pb::ReplicaStatus>>,
    ) -> (pb::HeartbeatRequest, u64, BTreeMap<u64, Arc<pb::ReplicaStatus>>) {
        self.seq += 1;
        let now: BTreeMap<u64, Arc<pb::ReplicaStatus>> = replicas.into_iter().map(|r| (r.partition, r)).collect();
        // A replica that did not change hands back the very status it reported last.
        let changed = |s: &Arc<pb::ReplicaStatus>, held: &BTreeMap<u64, Arc<pb::ReplicaStatus>>| {
            held.get(&s.partition).is_none_or(|h| !Arc::ptr_eq(h, s) && h != s)
        };
        let req = match &self.held {
            Some((base, held)) if self.since_full < FULL_REPORT_EVERY => {
                self.since_full += 1;
                pb::HeartbeatRequest {
                    node: Some(node),
                    replicas: now.values().filter(|s| changed(s, held)).map(|s| (**s).clone()).collect(),
                    seq: self.seq,
                    delta: true,
                    base: *base,
                    gone: held.keys().filter(|p| !now.contains_key(p)).copied().collect(),
                }
            }
            _ => {
                self.since_full = 0;
                pb::HeartbeatRequest {
                    node: Some(node),
                    replicas: now.values().map(|s| (**s).clone()).collect(),
                    seq: self.seq,
                    ..Default::default()
                }
            }
        };
        (req, self.seq, now)
    }

    /// The manager answered report `seq` (never 0), saying it holds report `held_seq`.
    fn answered(&mut self, seq: u64, held_seq: u64, statuses: BTreeMap<u64, Arc<pb::ReplicaStatus>>) {
        self.held = (held_seq == seq).then_some((seq, statuses));
    }
}

/// Each replica's request rate between two heartbeats, from its request counter.
#[derive(Default)]
struct RequestRates {
    /// Each replica's counter and when it was read, and the call that last saw it.
    last: BTreeMap<(u64, u64), (u64, Instant, u64)>,
    calls: u64,
}

impl RequestRates {
    /// Sets `requests_per_s` on each status from the counter's change since the last
    /// call (0 for a replica seen for the first time); forgets replicas no longer listed.
    /// A status whose rate stays 0 is left shared.
    fn fill(&mut self, replicas: &mut [Arc<pb::ReplicaStatus>], now: Instant) {
        // Updated in place: a map rebuilt every beat allocated thousands of entries.
        self.calls += 1;
        let call = self.calls;
        for r in replicas.iter_mut() {
            let key = (r.partition, r.replica);
            let entry = self.last.entry(key).or_insert((r.requests, now, call));
            if entry.2 != call {
                let secs = now.duration_since(entry.1).as_secs_f64();
                let rate = if secs > 0.0 { r.requests.saturating_sub(entry.0) as f64 / secs } else { r.requests_per_s };
                if rate != r.requests_per_s {
                    Arc::make_mut(r).requests_per_s = rate;
                }
                *entry = (r.requests, now, call);
            }
        }
        self.last.retain(|_, e| e.2 == call);
    }
}

/// The cluster-manager role of one node.
pub struct Manager {
    host: Arc<Host>,
    id: u64,
    addr: String,
    cfg: ClusterConfig,
    incarnation: u64,
    soft: Mutex<Soft>,
    /// Partitions with an operation (create, move) being driven.
    ops: Mutex<BTreeSet<u64>>,
    /// The address a forwarded call last reached the manager through; tried first next
    /// time, so a paused or unreachable seed early in the list is not waited on again.
    forward_via: Mutex<Option<String>>,
    /// Who may do what on this node, refreshed from the map (`heartbeat_loop`).
    access: Arc<crate::authz::AccessView>,
    /// The map last decoded from the local map replica.
    decoded: map::Decoded,
    /// Its loops, stopped with the node ([`Manager::stop`]).
    loops: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The cluster manager has answered a heartbeat of this node's, and the node has read
    /// the map since (see [`Manager::reached`]).
    reached: std::sync::atomic::AtomicBool,
    /// Replica moves this node finished as the cluster manager.
    moves_done: std::sync::atomic::AtomicU64,
    /// Services whose scheduled backup this node is running (`backups`).
    backups_running: Arc<Mutex<BTreeSet<String>>>,
}

impl Manager {
    /// The manager role of node `id` serving on `addr`.
    pub fn new(
        host: Arc<Host>,
        id: u64,
        addr: String,
        cfg: ClusterConfig,
        access: Arc<crate::authz::AccessView>,
    ) -> Arc<Self> {
        Arc::new(Manager {
            host,
            id,
            addr,
            cfg,
            incarnation: weft_security::rng::random_u64(),
            soft: Mutex::default(),
            ops: Mutex::default(),
            forward_via: Mutex::default(),
            access,
            decoded: map::Decoded::default(),
            loops: Mutex::default(),
            reached: Default::default(),
            moves_done: Default::default(),
            backups_running: Arc::default(),
        })
    }

    /// Stops its loops (the node stops serving; a process embedding it goes on).
    pub fn stop(&self) {
        for l in self.loops.lock().drain(..) {
            l.abort();
        }
    }

    /// Starts the heartbeat, bootstrap and reconcile loops; a node without seeds runs
    /// standalone (replicas opened through the node-admin service only) and starts none.
    pub fn start(self: &Arc<Self>) {
        if self.cfg.seeds.is_empty() {
            return;
        }
        let mut loops = self.loops.lock();
        let me = self.clone();
        loops.push(tokio::spawn(async move { me.heartbeat_loop().await }).abort_handle());
        if self.cfg.seeds.first() == Some(&self.addr) {
            let me = self.clone();
            loops.push(tokio::spawn(async move { me.bootstrap_loop().await }).abort_handle());
        }
        let me = self.clone();
        loops.push(tokio::spawn(async move { me.reconcile_loop().await }).abort_handle());
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.id
    }

    /// `Ok` once this node has reached the cluster: the manager answered one of its
    /// heartbeats and the node has read the map (always, for a standalone node); else why
    /// not. Stays `Ok` after that (`crate::health` says why).
    pub(crate) fn reached(&self) -> Result<(), String> {
        if self.cfg.seeds.is_empty() || self.reached.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        Err("this node has not reached the cluster manager and read the cluster map yet".into())
    }

    /// This process's incarnation (random per start).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn info(&self) -> pb::NodeInfo {
        pb::NodeInfo {
            id: self.id,
            addr: self.addr.clone(),
            ud: self.cfg.ud.clone(),
            fd: self.cfg.fd.clone(),
            capacity_replicas: self.cfg.capacity_replicas,
            capacity_memory_bytes: self.cfg.capacity_memory_bytes,
            state: pb::NodeState::Up as i32,
            incarnation: self.incarnation,
            drained: false,
            insecure: self.cfg.insecure,
            client_addr: self.cfg.advertise_client.clone().unwrap_or_default(),
        }
    }

    /// The local map replica when it is the map's primary.
    fn leading(&self) -> Option<Arc<Replica>> {
        let r = self.host.get(MAP_PARTITION)?;
        let m = r.raft().metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return None;
        }
        {
            let mut soft = self.soft.lock();
            if soft.term != m.current_term {
                // A new reign: forget the last one's soft state; every node gets a fresh
                // grace period from now.
                *soft = Soft { term: m.current_term, since: Some(clock::now()), ..Soft::default() };
                tracing::info!(term = m.current_term, "this node is now the cluster manager");
            }
        }
        Some(r)
    }

    /// Where a `Cluster` call that this node cannot serve should go: the map primary when
    /// this node hosts a map replica that knows it, else the seeds.
    fn manager_addrs(&self) -> Vec<String> {
        if let Some(r) = self.host.get(MAP_PARTITION) {
            let m = r.raft().metrics().borrow_watched().clone();
            if let Some(leader) = m.current_leader
                && let Some(n) = m.membership_config.membership().get_node(&leader)
                && n.addr != self.addr
            {
                return vec![n.addr.clone()];
            }
            return Vec::new();
        }
        self.cfg.seeds.iter().filter(|s| **s != self.addr).cloned().collect()
    }

    fn admin(&self, addr: &str) -> Result<NodeAdminClient<AuthChannel>, Status> {
        Ok(NodeAdminClient::new(self.host.peers().channel(addr)?))
    }

    fn cluster(&self, addr: &str) -> Result<ClusterClient<AuthChannel>, Status> {
        Ok(ClusterClient::new(self.host.peers().channel(addr)?))
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut rates = RequestRates::default();
        let mut reports = Reports::default();
        loop {
            tick.tick().await;
            let mut replicas: Vec<Arc<pb::ReplicaStatus>> = self.host.list().iter().map(|r| r.status()).collect();
            rates.fill(&mut replicas, clock::now());
            let (req, seq, now) = reports.next(self.info(), replicas);
            let sent = match self.leading() {
                Some(_) => self.on_heartbeat(req).await,
                None => service::forward(
                    &self,
                    self.manager_addrs(),
                    req,
                    service::QUICK_FORWARD_TIMEOUT,
                    |mut c, r| async move { c.heartbeat(r).await },
                )
                .await
                .map(tonic::Response::into_inner),
            };
            // On an error, the next delta still names the last base the manager said it
            // holds; if this report did reach it, it asks for a full one.
            if let Ok(r) = &sent {
                reports.answered(seq, r.held_seq, now);
            }
            let sent = match sent {
                Ok(r) => {
                    match self.refresh_access(r.map_version).await {
                        Err(e) => {
                            tracing::debug!(error = %e.message(), "reading the cluster map's users failed; next beat");
                        }
                        Ok(()) if self.access.version() != 0 => {
                            self.reached.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(()) => {}
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) if failing => {
                    tracing::info!("heartbeats reach the cluster manager again");
                    failing = false;
                }
                Err(e) if !failing => {
                    tracing::warn!(error = %e.message(), "heartbeat did not reach the cluster manager");
                    failing = true;
                }
                _ => {}
            }
        }
    }

    /// Reads the map again when it is newer than the one this node's access view holds (a
    /// heartbeat's answer says), so grants and revokes reach every node within a beat.
    async fn refresh_access(&self, version: u64) -> Result<(), Status> {
        if version == 0 || version == self.access.version() {
            return Ok(());
        }
        let (map, version) = match self.leading() {
            Some(leader) => {
                map::read_applied(&leader, &self.decoded)?.ok_or_else(|| Status::unavailable("no map yet"))?
            }
            None => {
                let r = service::forward(
                    self,
                    self.manager_addrs(),
                    pb::GetMapRequest {},
                    service::QUICK_FORWARD_TIMEOUT,
                    |mut c, r| async move { c.get_map(r).await },
                )
                .await?
                .into_inner();
                (Arc::new(r.map.unwrap_or_default()), r.version)
            }
        };
        self.access.apply(&map, version);
        Ok(())
    }

    /// Records a heartbeat; registers the node or updates its entry when anything about it
    /// changed (address, domains, capacity, incarnation, or it was marked down).
    async fn on_heartbeat(&self, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, Status> {
        let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
        let node = req.node.ok_or_else(|| Status::invalid_argument("heartbeat without a node"))?;
        if node.id == 0 || node.addr.is_empty() {
            return Err(Status::invalid_argument("a node needs a non-zero id and an address"));
        }
        let held_seq = {
            let mut soft = self.soft.lock();
            let held = soft.seen.get_mut(&node.id).filter(|s| s.incarnation == node.incarnation && s.seq == req.base);
            match (req.delta, held) {
                (false, _) => {
                    let replicas = req.replicas.into_iter().map(|r| (r.partition, Arc::new(r))).collect();
                    let seen = Seen { at: clock::now(), incarnation: node.incarnation, replicas, seq: req.seq };
                    soft.seen.insert(node.id, seen);
                    req.seq
                }
                (true, Some(seen)) => {
                    for p in &req.gone {
                        seen.replicas.remove(p);
                    }
                    seen.replicas.extend(req.replicas.into_iter().map(|r| (r.partition, Arc::new(r))));
                    seen.at = clock::now();
                    seen.seq = req.seq;
                    req.seq
                }
                // A delta over a report this manager does not hold (it just took over, or
                // an answer was lost): ignored whole; the node sends a full report next.
                (true, None) => 0,
            }
        };
        // Heartbeats arrive several times a second from every node: compare against the
        // applied map (no quorum round); a change goes through `update`, which reads and
        // writes under a quorum.
        let Some((current, version)) = map::read_applied(&leader, &self.decoded)? else {
            return Err(Status::unavailable("the cluster map is not written yet"));
        };
        let stale = match current.nodes.get(&node.id) {
            None => true,
            Some(n) => {
                n.addr != node.addr
                    || n.client_addr != node.client_addr
                    || n.ud != node.ud
                    || n.fd != node.fd
                    || n.capacity_replicas != node.capacity_replicas
                    || n.capacity_memory_bytes != node.capacity_memory_bytes
                    || n.incarnation != node.incarnation
                    || n.insecure != node.insecure
                    || n.state == pb::NodeState::Down as i32
            }
        };
        if !stale {
            return Ok(pb::HeartbeatResponse { map_version: version, held_seq });
        }
        let (_, version) = self
            .update(|m| {
                let drained = m.nodes.get(&node.id).is_some_and(|n| n.drained);
                let state = if drained { pb::NodeState::Draining } else { pb::NodeState::Up };
                let fresh = !m.nodes.contains_key(&node.id);
                m.nodes.insert(node.id, pb::NodeInfo { state: state as i32, drained, ..node.clone() });
                Ok(fresh)
            })
            .await
            .inspect(|(fresh, _)| {
                tracing::info!(node = node.id, addr = %node.addr, ud = %node.ud, fd = %node.fd, new = fresh, "node up");
            })?;
        Ok(pb::HeartbeatResponse { map_version: version, held_seq })
    }

    /// Reads the map, applies `edit`, writes it back conditioned on the version read;
    /// retries when another write got there first. Returns `edit`'s answer and the new
    /// version.
    async fn update<T>(
        &self,
        mut edit: impl FnMut(&mut pb::ClusterMap) -> Result<T, Status>,
    ) -> Result<(T, u64), Status> {
        for _ in 0..8 {
            let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
            let (m, version) = map::read(&leader, &self.decoded)
                .await?
                .ok_or_else(|| Status::unavailable("the cluster map is not written yet"))?;
            // A copy to edit: the decoded map stays as read, shared with other readers.
            let mut edited = (*m).clone();
            let answer = edit(&mut edited)?;
            // An edit that changed nothing is not written: a write bumps the version, and
            // every node then fetches the whole map again (with thousands of partitions, a
            // burst of megabytes on every node each time a rebalance pass found no move).
            if edited == *m {
                return Ok((answer, version));
            }
            if let Some(v) = map::write(&leader, &edited, version).await? {
                return Ok((answer, v));
            }
        }
        Err(Status::aborted("the cluster map kept changing underneath; try again"))
    }

    /// Every replica status the up nodes last reported, with the reporting node (shared:
    /// a pass at thousands of partitions copied every status before).
    fn reported(&self) -> Vec<(u64, Arc<pb::ReplicaStatus>)> {
        let soft = self.soft.lock();
        soft.seen.iter().flat_map(|(node, s)| s.replicas.values().map(move |r| (*node, r.clone()))).collect()
    }

    /// Bootstraps the map group once every seed answers and none hosts it.
    async fn bootstrap_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            tick.tick().await;
            if self.host.get(MAP_PARTITION).is_some() {
                return;
            }
            match self.try_bootstrap().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e.message(), "cluster map bootstrap waits"),
            }
        }
    }

    /// One bootstrap attempt; `Ok(true)` once the map group exists somewhere.
    async fn try_bootstrap(&self) -> Result<bool, Status> {
        let mut seeds = Vec::new();
        for addr in &self.cfg.seeds {
            let id = if *addr == self.addr {
                self.id
            } else {
                let r = self.cluster(addr)?.identify(pb::IdentifyRequest {}).await?.into_inner();
                if r.hosts_map {
                    return Ok(true);
                }
                r.node
            };
            seeds.push((id, addr.clone()));
        }
        let members = pb::Membership {
            configs: vec![pb::ReplicaSet { ids: seeds.iter().map(|(id, _)| *id).collect() }],
            nodes: seeds.iter().map(|(id, a)| (*id, a.clone())).collect(),
        };
        // Followers first, then this node initializes the group with all of them.
        for (id, addr) in seeds.iter().rev() {
            let initial = (*addr == self.addr).then(|| members.clone());
            self.admin(addr)?
                .open_replica(pb::OpenReplicaRequest {
                    partition: MAP_PARTITION,
                    replica: *id,
                    mode: 0,
                    initial,
                    staged: false,
                })
                .await?;
        }
        tracing::info!(seeds = ?seeds, "cluster map group bootstrapped");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(partition: u64, requests: u64) -> Arc<pb::ReplicaStatus> {
        Arc::new(pb::ReplicaStatus { partition, replica: partition + 100, requests, ..Default::default() })
    }

    #[test]
    fn request_rates_are_counter_changes_over_time() {
        let mut rates = RequestRates::default();
        let t0 = clock::now();
        let mut first = vec![status(1, 10), status(2, 0)];
        rates.fill(&mut first, t0);
        assert!(first.iter().all(|s| s.requests_per_s == 0.0), "no rate before a second report");
        let mut second = vec![status(1, 60), status(2, 0), status(3, 7)];
        rates.fill(&mut second, t0 + Duration::from_millis(500));
        assert_eq!(second[0].requests_per_s, 100.0);
        assert_eq!(second[1].requests_per_s, 0.0);
        assert_eq!(second[2].requests_per_s, 0.0, "a new replica starts at no rate");
        // A replica reopened under the same id with a reset counter reports no negative rate.
        let mut third = vec![status(1, 5)];
        rates.fill(&mut third, t0 + Duration::from_secs(1));
        assert_eq!(third[0].requests_per_s, 0.0);
    }

    fn parts(req: &pb::HeartbeatRequest) -> Vec<u64> {
        req.replicas.iter().map(|r| r.partition).collect()
    }

    #[test]
    fn reports_send_what_changed_over_the_report_the_manager_holds() {
        let node = pb::NodeInfo { id: 4, ..Default::default() };
        let mut reports = Reports::default();
        let (first, seq, held) = reports.next(node.clone(), vec![status(1, 0), status(2, 0), status(3, 0)]);
        assert!(!first.delta && parts(&first) == [1, 2, 3], "the first report is full: {first:?}");
        reports.answered(seq, seq, held);
        // Partition 2 served requests, 3 left, 4 arrived; 1 did not change.
        let (delta, seq2, held2) = reports.next(node.clone(), vec![status(1, 0), status(2, 9), status(4, 0)]);
        assert!(delta.delta && delta.base == seq && delta.seq == seq2 && delta.seq > seq, "{delta:?}");
        assert_eq!(parts(&delta), [2, 4], "only what changed");
        assert_eq!(delta.gone, [3]);
        // The manager does not hold that one (it just took over): the next report is full.
        reports.answered(seq2, 0, held2);
        let (full, seq3, held3) = reports.next(node.clone(), vec![status(1, 0), status(2, 9), status(4, 0)]);
        assert!(!full.delta && parts(&full) == [1, 2, 4], "{full:?}");
        reports.answered(seq3, seq3, held3);
        // An answer that never came leaves the base where the manager last said it was.
        let (lost, _, _) = reports.next(node.clone(), vec![status(1, 1), status(2, 9), status(4, 0)]);
        let (after, _, _) = reports.next(node.clone(), vec![status(1, 1), status(2, 9), status(4, 0)]);
        assert!(lost.delta && after.delta && after.base == seq3 && parts(&after) == [1], "{after:?}");
        // Nothing changing still sends a full report every FULL_REPORT_EVERY beats.
        let fulls = (0..2 * FULL_REPORT_EVERY)
            .filter(|_| {
                let (r, seq, held) = reports.next(node.clone(), vec![status(1, 1)]);
                reports.answered(seq, seq, held);
                !r.delta
            })
            .count();
        assert_eq!(fulls, 2);
    }
}
