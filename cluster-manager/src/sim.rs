//! The upgrade-walk simulator: the decision code driven on a simulated clock and cluster.
//!
//! A cluster of `nodes` nodes round-robin over `uds` upgrade domains (one fault domain per
//! UD) holds `partitions` partitions of `replicas` replicas, placed by
//! [`placement::place_partition`]. A walk takes each UD down in turn for `upgrade_s`. A
//! rebuild copies `partition_bytes` at `rebuild_bytes_per_s`; each node runs
//! `builds_per_node` builds at a time (one by default; queued builds wait). Two policies:
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
//! - [`Policy::Classic`] (the platform the reference case ran on, Service Fabric as of
//!   2016): five rules read from its sources, each switchable ([`ClassicRules`]; the model
//!   and its citations are in `classic.rs` and `docs/cluster.md`). In short: the UD goes
//!   down at once; volatile replicas are replaced at once, persisted ones after
//!   `restart_wait_s`; replacements double up in a UD still to be walked when every other
//!   UD holds one; when the UD is back, each replaced replica is placed back on its
//!   original node and the temporary dropped, and layouts that break "maximum difference"
//!   are moved; the next UD goes down without waiting for volatile builds; dropped
//!   replicas keep their records for `dropped_keep_s`.
//!
//! Reported: `peak_replicas_per_node` (the most replicas, counting builds and standbys, on
//! any up node at any moment), `baseline_replicas_per_node` (the most before the walk),
//! their ratio, replica records (peak over baseline: what the reference's chart counted),
//! `moves` (replica builds started) and the bytes they copied, partition-minutes below a
//! quorum, `quorum_loss_events` (times a partition
//! fell below a write quorum of live, caught-up replicas), `quorum_at_risk_events` (times
//! one fell to exactly a quorum: one more failure stops its writes) and `walk_s`.
//! The same placement and walk code the live manager runs decides every move; only the
//! clock and the copying are simulated.

mod classic;

use std::collections::BTreeMap;

pub use classic::ClassicRules;

use crate::model::{Capacity, Load, Node, NodeId, NodeStatus};
use crate::placement::{self, count_replica, place_partition, uncount_replica};
use crate::reconcile;
use crate::repair::quorum;
use crate::walk::{self, Phase, Placed, ReplicaAt, Reported, StandIn, Walk, WalkPartition, WalkStep, WalkView};

/// How the walk treats the replicas of the UD it takes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Build stand-ins first, wait for them, then take the UD down (weft).
    Careful,
    /// The reference case's platform, rule by rule ([`ClassicRules`], `classic.rs`).
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
    /// Builds a node runs at once, each at `rebuild_bytes_per_s` (1 by default: the model's
    /// assumption, not a measured limit of weft or of the reference, whose number is not
    /// known).
    pub builds_per_node: u32,
    /// Time a UD's nodes are down for their upgrade.
    pub upgrade_s: f64,
    /// Classic: how long a replica may be down before it is replaced.
    pub restart_wait_s: f64,
    /// Classic: how long a replaced replica that came back is kept as a standby.
    pub standby_keep_s: f64,
    /// Whether a restarted node keeps its replicas (durable log) or comes back empty
    /// (volatile: the in-memory replicas are gone and must be replaced).
    pub durable: bool,
    /// Classic: which of the reference platform's rules apply.
    pub classic: ClassicRules,
    /// Classic: how long a dropped replica's record is kept (rule 5; the failover manager
    /// kept them for days).
    pub dropped_keep_s: f64,
    /// Careful: replica moves (builds and removals) under way at once, cluster-wide; 0 for
    /// no cap. The live manager's [`reconcile::MOVES_AT_ONCE`] by default.
    pub moves_at_once: usize,
    /// Careful: how long one walk step takes beyond its copying and restarts: the live
    /// manager takes a step a round ([`reconcile::ROUND_EVERY`], the default), and a
    /// removal (a move with nothing to copy) takes a round.
    pub round_s: f64,
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
            builds_per_node: 1,
            upgrade_s: 300.0,
            restart_wait_s: 60.0,
            standby_keep_s: 3600.0,
            durable: false,
            classic: ClassicRules::default(),
            dropped_keep_s: 3.0 * 86_400.0,
            moves_at_once: reconcile::MOVES_AT_ONCE,
            round_s: reconcile::ROUND_EVERY.as_secs_f64(),
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
    /// Replica records of the service before the walk (partitions x replicas).
    pub replica_records_baseline: u64,
    /// Most replica records at any moment: live, in build, down, and (classic, rule 5)
    /// dropped but kept. The careful walk keeps no record of a removed replica.
    pub replica_records_peak: u64,
    /// Peak over baseline.
    pub replica_records_peak_ratio: f64,
    /// Replica builds started.
    pub moves: u64,
    /// Careful: replicas removed after a UD came back (stand-ins whose original caught up,
    /// or originals a volatile restart lost).
    pub removals: u64,
    /// Bytes the builds copied: finished ones whole, abandoned ones as far as they got (a
    /// replica that catches up in place copies none).
    pub bytes_copied: u64,
    /// Primary moves (careful: before each UD goes down).
    pub primary_moves: u64,
    /// Times a partition fell below a write quorum of live replicas.
    pub quorum_loss_events: u64,
    /// Minutes partitions spent below a write quorum, summed over partitions.
    pub quorum_loss_partition_minutes: f64,
    /// Times a partition fell to exactly a write quorum.
    pub quorum_at_risk_events: u64,
    /// Simulated seconds from the first UD down to the end of the last build.
    pub walk_s: f64,
    /// Partitions with fewer live replicas than their count once everything settled
    /// (a model that loses replicas for good shows here).
    pub partitions_short_at_end: u64,
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

/// Runs the walk on the cluster `cfg` describes ([`initial_cluster`]).
pub fn run(cfg: &SimConfig) -> Result<SimReport, placement::PlacementError> {
    let (nodes, parts) = initial_cluster(cfg.nodes, cfg.uds, cfg.replicas, cfg.partitions, |_| cfg.partition_bytes)?;
    Ok(run_from(cfg, nodes, parts, None))
}

/// The cluster map's group, where a live cluster has one: the node of its primary (the
/// manager) and its members' nodes in the order the live handoff looks through them (by
/// replica id). The walk moves the manager off a UD last, to the first member outside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapGroup {
    /// The manager's node.
    pub primary: NodeId,
    /// Members' nodes, by replica id.
    pub members: Vec<NodeId>,
}

/// Runs the walk on a given cluster: `nodes` with their loads and `parts` with their
/// replicas, primaries and sizes (a live cluster's, as `weft sim validate` reads it);
/// `cfg`'s cluster shape (`nodes`, `uds`, `partitions`, `partition_bytes`) is not used
/// but for the classic policy's build time, which is per `partition_bytes`. UDs are
/// walked in name order, as the live walk does. With `manager`, the careful walk hands
/// the manager off as the live one does (its primary counts in its node's load, as the
/// live view counts it).
pub fn run_from(cfg: &SimConfig, nodes: Vec<Node>, parts: Vec<Placed>, manager: Option<MapGroup>) -> SimReport {
    let baseline = nodes.iter().map(|n| n.load.replicas).max().unwrap_or(0);
    let records: u64 = parts.iter().map(|p| p.replicas.len() as u64).sum();
    let mut uds: Vec<String> = nodes.iter().map(|n| n.ud.clone()).collect();
    uds.sort();
    uds.dedup();
    let build_s = cfg.partition_bytes as f64 / cfg.rebuild_bytes_per_s.max(1.0);
    let mut report = match cfg.policy {
        Policy::Careful => careful(nodes, parts, manager, &uds, cfg),
        Policy::Classic => classic::Classic::new(nodes, parts, &uds, cfg, build_s).run(),
    };
    report.replica_records_baseline = records;
    report.replica_records_peak = report.replica_records_peak.max(report.replica_records_baseline);
    report.replica_records_peak_ratio =
        report.replica_records_peak as f64 / report.replica_records_baseline.max(1) as f64;
    report.baseline_replicas_per_node = baseline;
    report.peak_replicas_per_node = report.peak_replicas_per_node.max(baseline);
    report.peak_density_ratio = f64::from(report.peak_replicas_per_node) / f64::from(baseline.max(1));
    report
}

/// How long `moves` take, in order, each `(node, seconds)`: one starts as soon as fewer
/// than `at_once` run cluster-wide (0: no cap) and fewer than `per_node` on its node, and
/// a waiting move may start ahead of one its node holds back, as the live manager starts
/// any pending move that fits. Returns the time the last one ends.
fn makespan(moves: &[(NodeId, f64)], per_node: u32, at_once: usize) -> f64 {
    let (per_node, at_once) = (per_node.max(1) as usize, if at_once == 0 { usize::MAX } else { at_once });
    let mut waiting: Vec<(NodeId, f64)> = moves.to_vec();
    let mut running: Vec<(f64, NodeId)> = Vec::new();
    let (mut now, mut end) = (0.0f64, 0.0f64);
    while !waiting.is_empty() || !running.is_empty() {
        let mut i = 0;
        while i < waiting.len() && running.len() < at_once {
            let (node, secs) = waiting[i];
            if running.iter().filter(|(_, n)| *n == node).count() < per_node {
                running.push((now + secs, node));
                end = end.max(now + secs);
                waiting.remove(i);
            } else {
                i += 1;
            }
        }
        // Time goes to the next end; everything ending then frees its place.
        let Some(next) = running.iter().map(|(t, _)| *t).min_by(f64::total_cmp) else { break };
        now = next;
        running.retain(|(t, _)| *t > now);
    }
    end
}

/// The reference's rebuild speed: 4 GB in 20 minutes, 3.4 MB/s as its account rounds it.
pub const REFERENCE_REBUILD_BYTES_PER_S: f64 = 3.4e6;

/// One row of [`compare`]: a walk under one policy, replica count and rebuild speed.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareRow {
    /// The policy.
    pub policy: Policy,
    /// Replicas per partition.
    pub replicas: usize,
    /// Upgrade domains.
    pub uds: u64,
    /// Rebuild speed of one build.
    pub rebuild_bytes_per_s: f64,
    /// What the walk did.
    pub report: SimReport,
}

/// The comparison the project stands on: R = 5 and R = 4 over `base.uds` UDs, under
/// [`Policy::Classic`] and [`Policy::Careful`], at each of `rebuild_rates`, everything else
/// as in `base` (which should be volatile: the reference's partitions were in memory).
pub fn compare(base: &SimConfig, rebuild_rates: &[f64]) -> Result<Vec<CompareRow>, placement::PlacementError> {
    let mut rows = Vec::new();
    for &rate in rebuild_rates {
        for replicas in [5, 4] {
            for policy in [Policy::Classic, Policy::Careful] {
                let cfg = SimConfig { replicas, policy, rebuild_bytes_per_s: rate, ..base.clone() };
                rows.push(CompareRow { policy, replicas, uds: cfg.uds, rebuild_bytes_per_s: rate, report: run(&cfg)? });
            }
        }
    }
    Ok(rows)
}

fn empty_report() -> SimReport {
    SimReport {
        peak_replicas_per_node: 0,
        baseline_replicas_per_node: 0,
        peak_density_ratio: 1.0,
        replica_records_baseline: 0,
        replica_records_peak: 0,
        replica_records_peak_ratio: 1.0,
        moves: 0,
        removals: 0,
        bytes_copied: 0,
        quorum_loss_partition_minutes: 0.0,
        primary_moves: 0,
        quorum_loss_events: 0,
        quorum_at_risk_events: 0,
        walk_s: 0.0,
        doubled_partitions: 0,
        partitions_short_at_end: 0,
        refused_at: None,
        blocked_stand_ins: 0,
    }
}

/// The careful walk: [`walk::next`] decides every step, exactly as it does for the live
/// manager; this executes each step on the simulated cluster and clock. Each step takes a
/// round (`round_s`); the builds and removals are moves, scheduled under `moves_at_once`
/// cluster-wide and `builds_per_node` per node ([`makespan`]), a build copying its
/// replica's bytes at `rebuild_bytes_per_s` (a rate measured as a whole move takes, so
/// that it includes the move's own steps), a removal taking a round; a restart takes
/// `upgrade_s`.
fn careful(
    nodes: Vec<Node>,
    parts: Vec<Placed>,
    manager: Option<MapGroup>,
    uds: &[String],
    cfg: &SimConfig,
) -> SimReport {
    let mut sim = Careful::new(nodes, parts);
    sim.manager = manager;
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
        let step = walk::next(&w, &sim.view());
        if !matches!(step, WalkStep::Finish | WalkStep::Blocked(_) | WalkStep::Wait(_)) {
            r.walk_s += cfg.round_s;
        }
        match step {
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
            WalkStep::HandOffManager => {
                if !sim.hand_off_manager(&ud) {
                    r.refused_at = Some(format!("{ud}: no member of the map's group outside it to take the manager"));
                    break;
                }
            }
            WalkStep::BuildStandIns(plan) => {
                // Builds in the order the live manager starts them (by partition).
                let mut builds: Vec<(u64, NodeId, f64)> = plan
                    .builds
                    .iter()
                    .map(|b| (b.partition, b.to, b.bytes as f64 / cfg.rebuild_bytes_per_s.max(1.0)))
                    .collect();
                builds.sort_by_key(|b| b.0);
                let builds: Vec<(NodeId, f64)> = builds.into_iter().map(|(_, n, s)| (n, s)).collect();
                r.walk_s += makespan(&builds, cfg.builds_per_node, cfg.moves_at_once);
                r.moves += plan.builds.len() as u64;
                r.bytes_copied += plan.builds.iter().map(|b| b.bytes).sum::<u64>();
                r.peak_replicas_per_node = r.peak_replicas_per_node.max(plan.peak_replicas_per_node);
                w.stand_ins = plan.builds.iter().filter_map(|b| sim.build(b)).collect();
                let records = sim.parts.iter().map(|p| p.replicas.len() as u64).sum::<u64>();
                r.replica_records_peak = r.replica_records_peak.max(records);
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
                r.removals += removals.len() as u64;
                let moves: Vec<(NodeId, f64)> = removals.iter().map(|x| (x.replica.node, cfg.round_s)).collect();
                r.walk_s += makespan(&moves, u32::MAX, cfg.moves_at_once);
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
    r.partitions_short_at_end = sim
        .parts
        .iter()
        .filter(|p| p.replicas.iter().filter(|x| !sim.lost.contains(&(p.id, x.replica))).count() < cfg.replicas)
        .count() as u64;
    r
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
    /// The map's group, when the cluster has one the walk must hand off.
    manager: Option<MapGroup>,
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
        Careful { nodes, parts, incarnations, lost: Vec::new(), next_replica, manager: None }
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
            manager: self.manager.as_ref().map(|m| m.primary),
        }
    }

    /// Moves the manager to the first member of its group outside `ud`, as the live walk
    /// does; false when there is none.
    fn hand_off_manager(&mut self, ud: &str) -> bool {
        let Some(m) = self.manager.as_mut() else { return false };
        let Some(to) = m.members.iter().copied().find(|n| !self.nodes.iter().any(|x| x.id == *n && x.ud == ud)) else {
            return false;
        };
        let from = std::mem::replace(&mut m.primary, to);
        for n in self.nodes.iter_mut() {
            if n.id == from {
                n.load.primaries = n.load.primaries.saturating_sub(1);
            }
            if n.id == to {
                n.load.primaries += 1;
            }
        }
        true
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
    fn moves_wait_for_a_place_cluster_wide_and_on_their_node() {
        let spread: Vec<(NodeId, f64)> = (0..8).map(|i| (i % 4 + 1, 1.0)).collect();
        assert_eq!(makespan(&spread, 1, 4), 2.0, "8 builds over 4 nodes, 4 at once");
        assert_eq!(makespan(&spread, 1, 0), 2.0, "no cap: each node's two in a row");
        assert_eq!(makespan(&spread, 2, 0), 1.0, "two at once per node: all at once");
        assert_eq!(makespan(&spread, 1, 2), 4.0, "two at once cluster-wide");
        let one_node: Vec<(NodeId, f64)> = (0..3).map(|_| (7, 1.0)).collect();
        assert_eq!(makespan(&one_node, 1, 4), 3.0, "one node builds one at a time");
        // A move held back by its node does not hold back one behind it that fits.
        assert_eq!(makespan(&[(1, 2.0), (1, 2.0), (2, 1.0)], 1, 2), 4.0);
        assert_eq!(makespan(&[], 1, 4), 0.0);
    }

    #[test]
    fn a_walk_from_a_given_cluster_is_the_walk_run_makes_of_it() {
        let c = SimConfig { durable: false, ..cfg(4, Policy::Careful) };
        let (nodes, parts) =
            initial_cluster(c.nodes, c.uds, c.replicas, c.partitions, |_| c.partition_bytes).expect("placed");
        assert_eq!(run_from(&c, nodes.clone(), parts.clone(), None), run(&c).expect("sim"));
        // The manager on node 1 (UD ud0) moves to the next member outside the UD walked.
        let group = MapGroup { primary: 1, members: vec![1, 2, 3] };
        let with = run_from(&c, nodes, parts, Some(group));
        assert_eq!((with.refused_at.as_deref(), with.moves), (None, run(&c).expect("sim").moves), "{with:?}");
        let r = run(&c).expect("sim");
        // Volatile: every walked replica's original is removed once its node is back.
        assert_eq!(r.removals, r.moves, "{r:?}");
        // The live manager's cap (4 moves at once) and a round per step: slower than
        // one build per node at once with no cap and no rounds.
        let free = run(&SimConfig { moves_at_once: 0, round_s: 0.0, ..c.clone() }).expect("sim");
        assert!(r.walk_s > free.walk_s, "{r:?} vs {free:?}");
        assert_eq!((r.moves, r.removals), (free.moves, free.removals), "timing changes no decision");
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
    fn a_volatile_classic_walk_goes_on_during_builds_and_slow_builds_cost_quorum() {
        let slow =
            SimConfig { rebuild_bytes_per_s: REFERENCE_REBUILD_BYTES_PER_S, durable: false, ..cfg(5, Policy::Classic) };
        let r = run(&slow).expect("sim");
        // Rule 4: the walk does not wait for volatile builds, so UDs go down while the
        // previous ones' replacements are still copying.
        assert!(r.quorum_loss_events > 0 && r.quorum_loss_partition_minutes > 0.0, "{r:?}");
        let no_rule_4 = SimConfig {
            classic: ClassicRules { next_ud_during_volatile_builds: false, ..ClassicRules::default() },
            ..slow.clone()
        };
        let waited = run(&no_rule_4).expect("sim");
        assert_eq!(waited.quorum_loss_events, 0, "waiting for builds keeps quorum: {waited:?}");
        assert!(waited.walk_s > r.walk_s, "and takes longer: {waited:?} vs {r:?}");
        let careful = run(&SimConfig { policy: Policy::Careful, ..slow }).expect("sim");
        assert_eq!(careful.quorum_loss_events, 0, "the careful walk keeps quorum at any speed: {careful:?}");
    }

    #[test]
    fn kept_records_of_dropped_replicas_make_the_classic_replica_count_spike() {
        let fast = SimConfig { rebuild_bytes_per_s: 1e12, durable: false, ..cfg(5, Policy::Classic) };
        let r = run(&fast).expect("sim");
        // Every walked replica leaves two dropped records (the original its node came back
        // without, and the temporary the restore replaced), each replica is walked once:
        // 5 live + 10 kept per partition, plus what max-difference moves add.
        // Builds take milliseconds; a UD goes down the moment the one before is back, while
        // that one's restores copy, so a partition doubled up in it dips below a quorum
        // for those milliseconds only.
        assert!(r.quorum_loss_partition_minutes < 0.1, "builds outrun the walk: {r:?}");
        assert!(r.replica_records_peak_ratio >= 3.0, "{r:?}");
        assert_eq!((r.doubled_partitions, r.partitions_short_at_end), (0, 0), "the layout is restored: {r:?}");
        // Rule 3 costs a second build per walked replica.
        assert!(r.moves >= 2 * 5 * 100, "{r:?}");
        let forget = ClassicRules { keep_dropped_records: false, ..ClassicRules::default() };
        let f = run(&SimConfig { classic: forget, ..fast.clone() }).expect("sim");
        assert!(f.replica_records_peak_ratio < 1.5, "without rule 5 the count barely moves: {f:?}");
        // Without restoring locations, no second build; max difference still moves the
        // doubled replicas back, one build each.
        let stay = ClassicRules { restore_after_upgrade: false, ..ClassicRules::default() };
        let s = run(&SimConfig { classic: stay, ..fast.clone() }).expect("sim");
        assert!(s.moves < r.moves, "{s:?} vs {r:?}");
        assert_eq!(s.doubled_partitions, 0, "{s:?}");
        // Without either, replacements stay doubled up.
        let neither = ClassicRules { restore_after_upgrade: false, max_difference: false, ..ClassicRules::default() };
        let n = run(&SimConfig { classic: neither, ..fast }).expect("sim");
        assert!(n.doubled_partitions > 0 && n.moves < s.moves, "{n:?} vs {s:?}");
    }

    #[test]
    fn persisted_replicas_wait_before_they_are_replaced_and_the_walk_waits_for_builds() {
        let durable = SimConfig { rebuild_bytes_per_s: 1e6, ..cfg(5, Policy::Classic) };
        // A 300 s upgrade outlasts the 60 s wait: every walked replica is replaced, then
        // catches up in place when its node is back, and its temporary is dropped.
        let r = run(&durable).expect("sim");
        assert_eq!(r.quorum_loss_events, 0, "{r:?}");
        assert_eq!(r.moves, 5 * 100, "{r:?}");
        // Rule 3: the replicas back in place, the temporaries still copying are dropped,
        // having copied a fraction of a replica each (240 s of a 4,295 s copy).
        assert!(r.bytes_copied < r.moves * durable.partition_bytes / 10, "{r:?}");
        assert_eq!((r.walk_s, r.doubled_partitions), (5.0 * durable.upgrade_s, 0), "{r:?}");
        // Without rule 3 the temporaries are kept and the walk waits for them (persisted).
        let keep = ClassicRules { restore_after_upgrade: false, ..ClassicRules::default() };
        let k = run(&SimConfig { classic: keep, ..durable.clone() }).expect("sim");
        assert!(k.walk_s > 5.0 * durable.partition_bytes as f64 / 1e6, "the walk waited for persisted builds: {k:?}");
        assert_eq!(k.quorum_loss_events, 0, "{k:?}");
        // An upgrade shorter than the wait replaces nothing.
        let quick = run(&SimConfig { upgrade_s: 30.0, ..durable.clone() }).expect("sim");
        assert_eq!((quick.moves, quick.bytes_copied), (0, 0), "{quick:?}");
        assert_eq!(quick.walk_s, 5.0 * 30.0, "{quick:?}");
        // Rule 1 off: volatile replicas wait too, so a short upgrade of a volatile walk
        // rebuilds each replica in place once its node is back (it came back empty).
        let wait_all = ClassicRules { volatile_replaced_at_once: false, ..ClassicRules::default() };
        let v = run(&SimConfig { upgrade_s: 30.0, durable: false, classic: wait_all, ..durable }).expect("sim");
        assert_eq!(v.moves, 5 * 100, "one build in place per walked replica: {v:?}");
        assert_eq!(v.doubled_partitions, 0, "{v:?}");
    }

    #[test]
    fn more_builds_at_once_shorten_the_queues_not_the_work() {
        let slow =
            SimConfig { rebuild_bytes_per_s: REFERENCE_REBUILD_BYTES_PER_S, durable: false, ..cfg(5, Policy::Classic) };
        let one = run(&slow).expect("sim");
        let eight = run(&SimConfig { builds_per_node: 8, ..slow.clone() }).expect("sim");
        assert!(eight.quorum_loss_partition_minutes < one.quorum_loss_partition_minutes, "{eight:?} vs {one:?}");
        // With no cluster-wide cap: under the live manager's 4 at once, 20 nodes never
        // have two builds each under way.
        let careful = SimConfig { policy: Policy::Careful, moves_at_once: 0, ..slow };
        let c1 = run(&careful).expect("sim");
        let c8 = run(&SimConfig { builds_per_node: 8, ..careful }).expect("sim");
        assert!(c8.walk_s < c1.walk_s, "{c8:?} vs {c1:?}");
        assert_eq!((c8.moves, c8.bytes_copied), (c1.moves, c1.bytes_copied), "the same builds");
    }

    #[test]
    fn the_comparison_has_both_policies_replica_counts_and_speeds() {
        let base = SimConfig { nodes: 20, partitions: 50, ..SimConfig::default() };
        let rows = compare(&base, &[REFERENCE_REBUILD_BYTES_PER_S, 150e6]).expect("sim");
        assert_eq!(rows.len(), 8);
        for (policy, replicas, rate) in
            [(Policy::Classic, 5, 150e6), (Policy::Careful, 4, REFERENCE_REBUILD_BYTES_PER_S)]
        {
            let row =
                rows.iter().find(|r| r.policy == policy && r.replicas == replicas && r.rebuild_bytes_per_s == rate);
            let row = row.expect("row");
            let alone = run(&SimConfig { policy, replicas, rebuild_bytes_per_s: rate, ..base.clone() }).expect("sim");
            assert_eq!(row.report, alone, "a row is the walk run alone");
        }
        let careful = rows.iter().filter(|r| r.policy == Policy::Careful);
        assert!(careful.clone().all(|r| r.report.quorum_loss_events == 0), "{rows:?}");
        assert!(rows.iter().all(|r| r.report.partitions_short_at_end == 0), "every walk ends whole: {rows:?}");
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
