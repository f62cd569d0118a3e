//! The upgrade-walk simulator: the decision code driven on a simulated clock and cluster.
//!
//! A cluster of `nodes` nodes round-robin over `uds` upgrade domains (one fault domain per
//! UD) holds `partitions` partitions of `replicas` replicas, placed by
//! [`placement::place_partition`]. A walk takes each UD down in turn for `upgrade_s`. A
//! rebuild copies `partition_bytes` at `rebuild_bytes_per_s`; each node builds one replica
//! at a time (queued builds wait). Two policies:
//!
//! - [`Policy::Careful`] (weft's walk, the default): the live manager's own state machine,
//!   [`walk::next`], decides every step; the simulator only carries each out on its clock.
//!   Before a UD goes down, a stand-in is built outside it for each of its replicas
//!   ([`walk::plan_ud`]) and its primaries move out; the UD goes down only when every
//!   build is done. What happens when it is
//!   back follows the log mode, as in the live walk: durable, its replicas catch up and
//!   the stand-ins are removed (the placement is as before); volatile (`durable: false`,
//!   weft's default), its nodes come back empty, so its replicas are removed and the
//!   stand-ins keep their places, and the next UD is planned from that placement. With 4
//!   replicas over 5 UDs every stand-in lands in the UD its partition lacked, so the
//!   spread stays whole; with 5 over 5 stand-ins double up, and once the last UD walked
//!   comes back empty every partition has two replicas in one UD (`doubled_partitions`).
//!   When `plan_ud` finds no room for a stand-in (or a partition would fall below a
//!   quorum), the walk stops there, as the live walk waits for room: `refused_at` names
//!   that UD and `blocked_stand_ins` counts what did not fit. So a careful walk never loses
//!   quorum; it is refused instead.
//! - [`Policy::Classic`] (the reference case's platform, as its account describes it): the
//!   UD goes down at once and the walk moves on to the next UD as soon as this one is back,
//!   without waiting for builds. A replica down longer than `restart_wait_s` is replaced
//!   by a build placed by the same placement code (with as many replicas as UDs it doubles
//!   up in a UD still to be walked, whose walk later takes both down and the move cascades).
//!   With a durable log, a replaced replica that comes back is a standby: it holds memory until
//!   `standby_keep_s` passes and is not part of the partition's quorum, but when another
//!   replica of its partition goes down it is brought back (caught up, no copy) instead of
//!   a new build. With a volatile log (weft's default) a walked node comes back empty:
//!   its replaced replicas are gone and the others are replaced at once. A build whose
//!   target node goes down is lost and placed again.
//!
//! Reported: `peak_replicas_per_node` (the most replicas, counting builds and standbys, on
//! any up node at any moment), `baseline_replicas_per_node` (the most before the walk),
//! their ratio, `moves` (replica builds started), `quorum_loss_events` (times a partition
//! fell below a write quorum of live, caught-up replicas), `quorum_at_risk_events` (times
//! one fell to exactly a quorum: one more failure stops its writes) and `walk_s`.
//! The same placement and walk code the live manager runs decides every move; only the
//! clock and the copying are simulated.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::model::{Capacity, Load, Node, NodeId, NodeStatus};
use crate::placement::{self, count_replica, place_partition, uncount_replica};
use crate::repair::quorum;
use crate::walk::{self, Phase, Placed, ReplicaAt, Reported, StandIn, Walk, WalkPartition, WalkStep, WalkView};

/// How the walk treats the replicas of the UD it takes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Build stand-ins first, wait for them, then take the UD down (weft).
    Careful,
    /// Take the UD down, replace replicas after a timeout, never wait (the reference case).
    Classic,
}

/// The simulated cluster and walk.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes.
    pub nodes: u64,
    /// Upgrade domains.
    pub uds: u64,
    /// Replicas per partition.
    pub replicas: usize,
    /// Partitions.
    pub partitions: u64,
    /// Policy.
    pub policy: Policy,
    /// Bytes of one replica.
    pub partition_bytes: u64,
    /// Rebuild speed of one build.
    pub rebuild_bytes_per_s: f64,
    /// Time a UD's nodes are down for their upgrade.
    pub upgrade_s: f64,
    /// Classic: how long a replica may be down before it is replaced.
    pub restart_wait_s: f64,
    /// Classic: how long a replaced replica that came back is kept as a standby.
    pub standby_keep_s: f64,
    /// Whether a restarted node keeps its replicas (durable log) or comes back empty
    /// (volatile: the in-memory replicas are gone and must be replaced).
    pub durable: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 100,
            uds: 5,
            replicas: 4,
            partitions: 1000,
            policy: Policy::Careful,
            partition_bytes: 4 << 30,
            rebuild_bytes_per_s: 40e6,
            upgrade_s: 300.0,
            restart_wait_s: 60.0,
            standby_keep_s: 3600.0,
            durable: false,
        }
    }
}

/// What the walk did.
#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    /// Most replicas on one up node at any moment of the walk.
    pub peak_replicas_per_node: u32,
    /// Most replicas on one node before the walk.
    pub baseline_replicas_per_node: u32,
    /// Peak over baseline.
    pub peak_density_ratio: f64,
    /// Replica builds started.
    pub moves: u64,
    /// Primary moves (careful: before each UD goes down).
    pub primary_moves: u64,
    /// Times a partition fell below a write quorum of live replicas.
    pub quorum_loss_events: u64,
    /// Times a partition fell to exactly a write quorum.
    pub quorum_at_risk_events: u64,
    /// Simulated seconds from the first UD down to the end of the last build.
    pub walk_s: f64,
    /// Partitions left with two or more replicas in one UD at the end of the walk: the
    /// next walk (or the loss of that UD) takes several of their replicas at once.
    pub doubled_partitions: u64,
    /// Careful: the UD the walk stopped at because its stand-ins had no room (the live
    /// walk waits there until an operator adds room); `None` when the walk finished.
    pub refused_at: Option<String>,
    /// Careful: stand-ins (and partitions short of a quorum) that found no room at
    /// `refused_at`.
    pub blocked_stand_ins: u64,
}

/// Nodes round-robin over `uds` UDs (FD = UD) and partitions placed one by one, each
/// partition's primary its replica `id % replicas`, loads counted.
pub fn initial_cluster(
    nodes: u64,
    uds: u64,
    replicas: usize,
    partitions: u64,
    bytes: impl Fn(u64) -> u64,
) -> Result<(Vec<Node>, Vec<Placed>), placement::PlacementError> {
    let mut ns: Vec<Node> = (0..nodes)
        .map(|i| Node {
            id: i + 1,
            ud: format!("ud{}", i % uds.max(1)),
            fd: format!("ud{}", i % uds.max(1)),
            status: NodeStatus::Up,
            capacity: Capacity { replicas: u32::MAX, memory_bytes: u64::MAX },
            load: Load::default(),
        })
        .collect();
    let mut ps = Vec::new();
    for id in 0..partitions {
        let placed = place_partition(&ns, replicas, bytes(id))?;
        for r in &placed {
            count_replica(&mut ns, *r, bytes(id));
        }
        let primary = placed[id as usize % placed.len()];
        if let Some(n) = ns.iter_mut().find(|n| n.id == primary) {
            n.load.primaries += 1;
        }
        ps.push(Placed { id, replicas: placed, primary, bytes: bytes(id), requests_per_s: 0.0 });
    }
    Ok((ns, ps))
}

/// Runs the walk.
pub fn run(cfg: &SimConfig) -> Result<SimReport, placement::PlacementError> {
    let (nodes, parts) = initial_cluster(cfg.nodes, cfg.uds, cfg.replicas, cfg.partitions, |_| cfg.partition_bytes)?;
    let baseline = nodes.iter().map(|n| n.load.replicas).max().unwrap_or(0);
    let mut uds: Vec<String> = nodes.iter().map(|n| n.ud.clone()).collect();
    uds.sort();
    uds.dedup();
    let build_s = cfg.partition_bytes as f64 / cfg.rebuild_bytes_per_s.max(1.0);
    let mut report = match cfg.policy {
        Policy::Careful => careful(nodes, parts, &uds, cfg, build_s),
        Policy::Classic => Classic::new(nodes, parts, cfg, build_s).run(&uds),
    };
    report.baseline_replicas_per_node = baseline;
    report.peak_replicas_per_node = report.peak_replicas_per_node.max(baseline);
    report.peak_density_ratio = f64::from(report.peak_replicas_per_node) / f64::from(baseline.max(1));
    Ok(report)
}

fn empty_report() -> SimReport {
    SimReport {
        peak_replicas_per_node: 0,
        baseline_replicas_per_node: 0,
        peak_density_ratio: 1.0,
        moves: 0,
        primary_moves: 0,
        quorum_loss_events: 0,
        quorum_at_risk_events: 0,
        walk_s: 0.0,
        doubled_partitions: 0,
        refused_at: None,
        blocked_stand_ins: 0,
    }
}

/// The careful walk: [`walk::next`] decides every step, exactly as it does for the live
/// manager; this executes each step at once on the simulated cluster and clock (a build
/// takes `build_s` per build queued on its node, a restart `upgrade_s`).
fn careful(nodes: Vec<Node>, parts: Vec<Placed>, uds: &[String], cfg: &SimConfig, build_s: f64) -> SimReport {
    let mut sim = Careful::new(nodes, parts);
    let mut r = empty_report();
    let q = quorum(cfg.replicas);
    let mut w = Walk {
        uds: uds.to_vec(),
        index: 0,
        phase: Phase::Prepare,
        planned: false,
        stand_ins: Vec::new(),
        incarnations: BTreeMap::new(),
    };
    loop {
        let ud = w.uds.get(w.index).cloned().unwrap_or_default();
        match walk::next(&w, &sim.view()) {
            WalkStep::Finish => break,
            WalkStep::Blocked(plan) => {
                // The live walk waits here for room: the walk is refused.
                r.refused_at = Some(ud);
                r.blocked_stand_ins = (plan.blocked.len() + plan.quorum_at_risk.len()) as u64;
                break;
            }
            WalkStep::Wait(why) => {
                // Every step completes at once here, so a wait means the walk cannot go on.
                r.refused_at = Some(format!("{ud}: {why}"));
                break;
            }
            WalkStep::HandOffManager => unreachable_in_sim(&mut r, &ud),
            WalkStep::BuildStandIns(plan) => {
                // Each node builds one replica at a time: the step lasts as long as the busiest.
                let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
                for b in &plan.builds {
                    *per_node.entry(b.to).or_default() += 1;
                }
                r.walk_s += f64::from(per_node.values().copied().max().unwrap_or(0)) * build_s;
                r.moves += plan.builds.len() as u64;
                r.peak_replicas_per_node = r.peak_replicas_per_node.max(plan.peak_replicas_per_node);
                w.stand_ins = plan.builds.iter().filter_map(|b| sim.build(b)).collect();
                w.planned = true;
            }
            WalkStep::MovePrimaries(moves) => {
                r.primary_moves += moves.len() as u64;
                for (pid, _, to) in moves {
                    sim.set_primary(pid, Some(to.node));
                }
            }
            WalkStep::Restart(incarnations) => {
                r.quorum_at_risk_events += sim
                    .parts
                    .iter()
                    .filter(|p| p.replicas.iter().filter(|x| !sim.in_ud(x.node, &ud)).count() == q)
                    .count() as u64;
                r.walk_s += cfg.upgrade_s;
                sim.restart(&ud, cfg.durable);
                w.incarnations = incarnations;
                w.phase = Phase::Restart;
            }
            WalkStep::Recovered => w.phase = Phase::Recover,
            WalkStep::Remove(removals) => {
                for x in &removals {
                    sim.remove(x.partition, x.replica);
                }
                w.stand_ins.retain(|s| !removals.iter().any(|x| x.partition == s.partition));
            }
            WalkStep::NextUd => {
                w.index += 1;
                w.phase = Phase::Prepare;
                w.planned = false;
                w.stand_ins.clear();
                w.incarnations.clear();
            }
        }
    }
    r.doubled_partitions =
        sim.parts.iter().filter(|p| doubled(&sim.nodes, p.replicas.iter().map(|x| x.node))).count() as u64;
    r
}

/// The simulator has no manager node, so [`walk::next`] never asks it to hand one off.
fn unreachable_in_sim(r: &mut SimReport, ud: &str) {
    r.refused_at = Some(format!("{ud}: the walk asked to move a manager the simulator does not have"));
}

/// The cluster a careful walk runs on: placements with replica ids, loads, incarnations,
/// and the replicas a volatile restart took.
struct Careful {
    nodes: Vec<Node>,
    parts: Vec<WalkPartition>,
    incarnations: BTreeMap<NodeId, u64>,
    /// Replicas whose node came back without them (partition, replica id).
    lost: Vec<(u64, u64)>,
    next_replica: u64,
}

impl Careful {
    fn new(nodes: Vec<Node>, placed: Vec<Placed>) -> Self {
        let mut next_replica = 0;
        let parts = placed
            .into_iter()
            .map(|p| WalkPartition {
                id: p.id,
                replicas: p
                    .replicas
                    .iter()
                    .map(|&node| {
                        next_replica += 1;
                        ReplicaAt { node, replica: next_replica }
                    })
                    .collect(),
                primary: Some(p.primary),
                moving: false,
                bytes: p.bytes,
                requests_per_s: p.requests_per_s,
            })
            .collect();
        let incarnations = nodes.iter().map(|n| (n.id, 1)).collect();
        Careful { nodes, parts, incarnations, lost: Vec::new(), next_replica }
    }

    fn view(&self) -> WalkView {
        let mut reports: BTreeMap<NodeId, Vec<Reported>> = self.nodes.iter().map(|n| (n.id, Vec::new())).collect();
        for p in &self.parts {
            for x in p.replicas.iter().filter(|x| !self.lost.contains(&(p.id, x.replica))) {
                reports.entry(x.node).or_default().push(Reported {
                    partition: p.id,
                    replica: x.replica,
                    applied_index: 0,
                });
            }
        }
        WalkView {
            nodes: self.nodes.clone(),
            incarnations: self.incarnations.clone(),
            partitions: self.parts.clone(),
            reports,
            manager: None,
        }
    }

    fn in_ud(&self, node: NodeId, ud: &str) -> bool {
        self.nodes.iter().any(|n| n.id == node && n.ud == ud)
    }

    /// Builds `b`'s stand-in (at once: its time is already counted).
    fn build(&mut self, b: &walk::Build) -> Option<StandIn> {
        let p = self.parts.iter_mut().find(|p| p.id == b.partition)?;
        let original = p.replicas.iter().copied().find(|x| x.node == b.stands_in_for)?;
        self.next_replica += 1;
        let stand_in = ReplicaAt { node: b.to, replica: self.next_replica };
        p.replicas.push(stand_in);
        count_replica(&mut self.nodes, b.to, b.bytes);
        Some(StandIn { partition: b.partition, original, stand_in })
    }

    fn set_primary(&mut self, partition: u64, to: Option<NodeId>) {
        let Some(p) = self.parts.iter_mut().find(|p| p.id == partition) else { return };
        let from = std::mem::replace(&mut p.primary, to);
        for n in self.nodes.iter_mut() {
            if Some(n.id) == from {
                n.load.primaries = n.load.primaries.saturating_sub(1);
            }
            if Some(n.id) == to {
                n.load.primaries += 1;
            }
        }
    }

    /// The UD's nodes restart: new incarnations; volatile, they come back empty.
    fn restart(&mut self, ud: &str, durable: bool) {
        let walked: Vec<NodeId> = self.nodes.iter().filter(|n| n.ud == ud).map(|n| n.id).collect();
        for id in &walked {
            *self.incarnations.entry(*id).or_default() += 1;
        }
        if !durable {
            for p in &self.parts {
                self.lost.extend(p.replicas.iter().filter(|x| walked.contains(&x.node)).map(|x| (p.id, x.replica)));
            }
        }
    }

    /// Removes one replica; a primary there hands off to another replica first.
    fn remove(&mut self, partition: u64, replica: ReplicaAt) {
        let Some(p) = self.parts.iter_mut().find(|p| p.id == partition) else { return };
        p.replicas.retain(|x| *x != replica);
        let (bytes, primary, next) = (p.bytes, p.primary, p.replicas.first().map(|x| x.node));
        uncount_replica(&mut self.nodes, replica.node, bytes);
        self.lost.retain(|x| *x != (partition, replica.replica));
        if primary == Some(replica.node) {
            self.set_primary(partition, next);
        }
    }
}

/// Whether two of these replicas' nodes share a UD.
fn doubled(nodes: &[Node], replicas: impl Iterator<Item = NodeId>) -> bool {
    let mut uds: Vec<&str> =
        replicas.filter_map(|id| nodes.iter().find(|n| n.id == id).map(|n| n.ud.as_str())).collect();
    let all = uds.len();
    uds.sort_unstable();
    uds.dedup();
    uds.len() < all
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Caught up and in the configuration.
    Active,
    /// On a down node, still in the configuration.
    Down,
    /// Being built; in the configuration once done.
    Building,
    /// Replaced while down, back on an up node, outside the configuration.
    Standby,
}

#[derive(Clone, Debug)]
struct Rep {
    partition: usize,
    node: NodeId,
    state: State,
    /// Down: since when. Standby: until when.
    at: f64,
    /// Whether a replacement has been started for this (down) replica.
    replaced: bool,
    /// Builds: the generation, so a lost build's completion event is ignored.
    epoch: u64,
    alive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    UdDown(usize),
    UdUp(usize),
    Check,
    BuildDone(usize, u64),
    StandbyExpires(usize),
}

struct Classic<'a> {
    cfg: &'a SimConfig,
    build_s: f64,
    nodes: Vec<Node>,
    parts: Vec<Placed>,
    reps: Vec<Rep>,
    free_at: BTreeMap<NodeId, f64>,
    queue: BinaryHeap<Reverse<(u64, Event)>>,
    now: f64,
    epoch: u64,
    below: Vec<bool>,
    at_risk: Vec<bool>,
    report: SimReport,
}

fn ms(t: f64) -> u64 {
    (t * 1000.0).round() as u64
}

impl<'a> Classic<'a> {
    fn new(nodes: Vec<Node>, parts: Vec<Placed>, cfg: &'a SimConfig, build_s: f64) -> Self {
        let reps = parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.replicas.iter().map(move |n| Rep {
                    partition: i,
                    node: *n,
                    state: State::Active,
                    at: 0.0,
                    replaced: false,
                    epoch: 0,
                    alive: true,
                })
            })
            .collect();
        let n = parts.len();
        Classic {
            cfg,
            build_s,
            nodes,
            parts,
            reps,
            free_at: BTreeMap::new(),
            queue: BinaryHeap::new(),
            now: 0.0,
            epoch: 0,
            below: vec![false; n],
            at_risk: vec![false; n],
            report: empty_report(),
        }
    }

    fn at(&mut self, t: f64, e: Event) {
        self.queue.push(Reverse((ms(t), e)));
    }

    fn node_up(&self, id: NodeId) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.status == NodeStatus::Up)
    }

    fn run(mut self, uds: &[String]) -> SimReport {
        self.at(0.0, Event::UdDown(0));
        while let Some(Reverse((t, e))) = self.queue.pop() {
            self.now = t as f64 / 1000.0;
            match e {
                Event::UdDown(u) => {
                    let ud = &uds[u];
                    let now = self.now;
                    for n in self.nodes.iter_mut().filter(|n| n.ud == *ud) {
                        n.status = NodeStatus::Down;
                    }
                    let down: Vec<NodeId> = self.nodes.iter().filter(|n| n.ud == *ud).map(|n| n.id).collect();
                    let mut went_down = Vec::new();
                    for (i, r) in self.reps.iter_mut().enumerate().filter(|(_, r)| r.alive && down.contains(&r.node)) {
                        match r.state {
                            State::Active => {
                                r.state = State::Down;
                                r.at = now;
                                went_down.push(i);
                            }
                            // A build on a node going down is lost; a standby there is gone.
                            State::Building | State::Standby => r.alive = false,
                            State::Down => {}
                        }
                    }
                    // A standby of the partition on an up node is brought back instead of
                    // building anew (what standbys are kept for).
                    for i in went_down {
                        let p = self.reps[i].partition;
                        let standby = (0..self.reps.len()).find(|j| {
                            let r = &self.reps[*j];
                            r.alive && r.partition == p && r.state == State::Standby && !down.contains(&r.node)
                        });
                        if let Some(j) = standby {
                            self.reps[j].state = State::Active;
                            self.reps[i].replaced = true;
                        }
                    }
                    self.at(now + self.cfg.upgrade_s, Event::UdUp(u));
                    self.at(now + self.cfg.restart_wait_s, Event::Check);
                }
                Event::UdUp(u) => {
                    let ud = &uds[u];
                    let now = self.now;
                    for n in self.nodes.iter_mut().filter(|n| n.ud == *ud) {
                        n.status = NodeStatus::Up;
                    }
                    self.report.walk_s = self.report.walk_s.max(now);
                    let up: Vec<NodeId> = self.nodes.iter().filter(|n| n.ud == *ud).map(|n| n.id).collect();
                    let keep = self.cfg.standby_keep_s;
                    let mut expiring = Vec::new();
                    for (i, r) in self.reps.iter_mut().enumerate() {
                        if r.alive && r.state == State::Down && up.contains(&r.node) {
                            if !self.cfg.durable {
                                // Volatile: the node came back empty. A replaced replica is
                                // simply gone; one not yet replaced is replaced now.
                                if r.replaced {
                                    r.alive = false;
                                } else {
                                    r.at = f64::NEG_INFINITY;
                                }
                            } else if r.replaced && keep <= 0.0 {
                                r.alive = false;
                            } else if r.replaced {
                                r.state = State::Standby;
                                r.at = now + keep;
                                expiring.push(i);
                            } else {
                                r.state = State::Active;
                            }
                        }
                    }
                    for i in expiring {
                        self.at(now + keep, Event::StandbyExpires(i));
                    }
                    if u + 1 < uds.len() {
                        self.at(now, Event::UdDown(u + 1));
                    }
                }
                Event::Check => {}
                Event::BuildDone(i, epoch) => {
                    if self.reps[i].alive && self.reps[i].epoch == epoch && self.reps[i].state == State::Building {
                        self.reps[i].state = State::Active;
                        self.report.walk_s = self.report.walk_s.max(self.now);
                    }
                }
                Event::StandbyExpires(i) => {
                    if self.reps[i].state == State::Standby {
                        self.reps[i].alive = false;
                    }
                }
            }
            self.replace();
            self.observe();
        }
        self.report.doubled_partitions = (0..self.parts.len())
            .filter(|p| {
                let members = self.reps.iter().filter(|r| r.alive && r.partition == *p && r.state != State::Standby);
                doubled(&self.nodes, members.map(|r| r.node))
            })
            .count() as u64;
        self.report
    }

    /// Replaces replicas down past the restart wait, one build per missing replica.
    fn replace(&mut self) {
        let wait = self.cfg.restart_wait_s;
        let now = self.now;
        let due: Vec<usize> = (0..self.reps.len())
            .filter(|i| {
                let r = &self.reps[*i];
                r.alive && r.state == State::Down && !r.replaced && now - r.at >= wait - 1e-9
            })
            .collect();
        for i in due {
            let pidx = self.reps[i].partition;
            // In the configuration: active, building, down-not-yet-replaced.
            let configured = self
                .reps
                .iter()
                .filter(|r| r.alive && r.partition == pidx)
                .filter(|r| {
                    matches!(r.state, State::Active | State::Building) || (r.state == State::Down && !r.replaced)
                })
                .count();
            self.reps[i].replaced = true;
            if self.node_up(self.reps[i].node) {
                // A volatile replica lost in a restart: nothing is left of it.
                self.reps[i].alive = false;
            }
            if configured > self.cfg.replicas {
                continue;
            }
            // Standbys are outside the replica set: they do not count for domain spread,
            // but their nodes cannot take a second replica of the partition.
            let of_partition = || self.reps.iter().filter(|r| r.alive && r.partition == pidx);
            let hosting: Vec<NodeId> = of_partition().filter(|r| r.state != State::Standby).map(|r| r.node).collect();
            let standby_nodes: Vec<NodeId> =
                of_partition().filter(|r| r.state == State::Standby).map(|r| r.node).collect();
            let view = placement::closed_to_new(&self.view(), |n| standby_nodes.contains(&n.id));
            let bytes = self.parts[pidx].bytes;
            let Ok(to) = placement::choose(&view, &hosting, bytes) else { continue };
            let start = self.free_at.get(&to).copied().unwrap_or(0.0).max(now);
            let done = start + self.build_s;
            self.free_at.insert(to, done);
            self.epoch += 1;
            let epoch = self.epoch;
            self.reps.push(Rep {
                partition: pidx,
                node: to,
                state: State::Building,
                at: now,
                replaced: false,
                epoch,
                alive: true,
            });
            let idx = self.reps.len() - 1;
            self.at(done, Event::BuildDone(idx, epoch));
            self.report.moves += 1;
        }
    }

    /// The nodes with their current replica counts (builds and standbys included).
    fn view(&self) -> Vec<Node> {
        let mut counts: BTreeMap<NodeId, u32> = BTreeMap::new();
        for r in self.reps.iter().filter(|r| r.alive && r.state != State::Down) {
            *counts.entry(r.node).or_default() += 1;
        }
        self.nodes
            .iter()
            .cloned()
            .map(|mut n| {
                n.load.replicas = counts.get(&n.id).copied().unwrap_or(0);
                n
            })
            .collect()
    }

    fn observe(&mut self) {
        let view = self.view();
        let peak = view.iter().filter(|n| n.status == NodeStatus::Up).map(|n| n.load.replicas).max().unwrap_or(0);
        self.report.peak_replicas_per_node = self.report.peak_replicas_per_node.max(peak);
        let q = quorum(self.cfg.replicas);
        let mut live = vec![0usize; self.parts.len()];
        for r in self.reps.iter().filter(|r| r.alive && r.state == State::Active) {
            if self.node_up(r.node) {
                live[r.partition] += 1;
            }
        }
        for (p, l) in live.into_iter().enumerate() {
            let below = l < q;
            if below && !self.below[p] {
                self.report.quorum_loss_events += 1;
            }
            self.below[p] = below;
            let risk = l == q;
            if risk && !self.at_risk[p] {
                self.report.quorum_at_risk_events += 1;
            }
            self.at_risk[p] = risk;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(replicas: usize, policy: Policy) -> SimConfig {
        SimConfig { nodes: 20, uds: 5, replicas, partitions: 100, policy, durable: true, ..SimConfig::default() }
    }

    #[test]
    fn a_volatile_walk_keeps_four_on_five_spread_and_leaves_five_on_five_doubled() {
        let four = run(&SimConfig { durable: false, ..cfg(4, Policy::Careful) }).expect("sim");
        assert_eq!((four.quorum_loss_events, four.doubled_partitions), (0, 0), "{four:?}");
        assert!(four.peak_density_ratio <= 1.5, "{four:?}");
        // Stand-ins stay: each UD's walk moves what the UD holds then, stand-ins included.
        assert!(four.moves > 4 * 100, "{four:?}");
        let five = run(&SimConfig { durable: false, ..cfg(5, Policy::Careful) }).expect("sim");
        assert_eq!(five.quorum_loss_events, 0, "careful keeps full counts: {five:?}");
        // The last UD walked comes back empty: 5 replicas in 4 UDs, every partition doubled.
        assert_eq!(five.doubled_partitions, 100, "no free UD exists, so stand-ins double up: {five:?}");
        assert!(five.moves > four.moves, "{five:?} vs {four:?}");
        let durable = run(&cfg(5, Policy::Careful)).expect("sim");
        assert_eq!(durable.doubled_partitions, 0, "durable walks put the placement back: {durable:?}");
    }

    #[test]
    fn careful_four_on_five_keeps_quorum_and_the_floor_density() {
        let r = run(&cfg(4, Policy::Careful)).expect("sim");
        assert_eq!(r.quorum_loss_events, 0);
        assert_eq!(r.quorum_at_risk_events, 0, "every partition keeps its full count up");
        // One UD of five down with full counts kept: at least 1.25x, and not much more.
        assert!(r.peak_density_ratio >= 1.2 && r.peak_density_ratio <= 1.5, "{r:?}");
        assert_eq!(r.moves, 4 * 100, "one stand-in per replica, each UD once");
    }

    #[test]
    fn classic_never_waits_for_builds_and_slow_builds_cost_quorum() {
        let fast = SimConfig { rebuild_bytes_per_s: 1e12, ..cfg(5, Policy::Classic) };
        let r = run(&fast).expect("sim");
        assert_eq!(r.walk_s, 5.0 * fast.upgrade_s, "one upgrade time per UD, nothing else: {r:?}");
        assert_eq!(r.quorum_loss_events, 0, "{r:?}");
        assert!(r.moves >= 100, "every partition had a replica replaced at least once: {r:?}");
        // Builds slower than the walk: with standbys gone (no keep), replacements are
        // still copying when the next UD goes down.
        let slow = SimConfig { rebuild_bytes_per_s: 1e6, standby_keep_s: 0.0, ..cfg(5, Policy::Classic) };
        let r = run(&slow).expect("sim");
        assert!(r.quorum_loss_events > 0, "{r:?}");
        let careful = run(&SimConfig { policy: Policy::Careful, ..slow }).expect("sim");
        assert_eq!(careful.quorum_loss_events, 0, "waiting for builds keeps quorum at any speed: {careful:?}");
    }

    #[test]
    fn a_careful_walk_without_room_for_stand_ins_is_refused_not_run() {
        // Five nodes, five UDs, five replicas: every node already hosts every partition,
        // so no stand-in fits anywhere and the live walk would wait at the first UD.
        let r = run(&SimConfig { nodes: 5, partitions: 10, durable: false, ..cfg(5, Policy::Careful) }).expect("sim");
        assert_eq!(r.refused_at.as_deref(), Some("ud0"), "{r:?}");
        assert_eq!(r.blocked_stand_ins, 10, "one stand-in per partition found no room: {r:?}");
        assert_eq!((r.moves, r.primary_moves, r.quorum_loss_events), (0, 0, 0), "nothing moved: {r:?}");
        // Ten nodes leave room: the same walk finishes.
        let r = run(&SimConfig { nodes: 10, partitions: 10, durable: false, ..cfg(5, Policy::Careful) }).expect("sim");
        assert_eq!((r.refused_at, r.blocked_stand_ins), (None, 0));
    }

    #[test]
    fn a_hundred_nodes_and_a_thousand_partitions_simulate() {
        for policy in [Policy::Careful, Policy::Classic] {
            let r = run(&SimConfig { policy, ..SimConfig::default() }).expect("sim");
            assert!(r.walk_s > 0.0 && r.baseline_replicas_per_node >= 40, "{r:?}");
        }
    }
}
