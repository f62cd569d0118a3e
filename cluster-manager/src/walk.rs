//! One step of an upgrade-domain walk: what must happen before a UD may go down.
//!
//! The safety rule (DESIGN.md): while a UD is down for a planned upgrade, every partition
//! keeps its full replica count up, so its tolerance to unplanned failures is unchanged.
//! So before UD `u` goes down:
//! - every partition whose primary is in `u` moves its primary to a replica outside `u`
//!   (the one whose node leads the fewest partitions);
//! - every replica in `u` is rebuilt on a node outside `u` chosen by
//!   [`placement`](crate::placement) (which prefers a UD holding none of the partition's
//!   replicas; with as many replicas as UDs there is none, and the build doubles up in a
//!   UD still to be walked);
//! - the walk waits for those builds; the extras are removed once `u` is back and caught
//!   up (the driver's part).
//!
//! [`plan_ud`] computes that step and the replica density it leaves on the live nodes.
//! It is pure: the dry run prints it, the driver executes it, the simulator replays it.
//!
//! [`next`] is the whole walk as a state machine over [`Walk`] (what the cluster map
//! records) and a [`WalkView`] (what the manager sees now): it says the one [`WalkStep`] to
//! take. The live manager carries each step out over the network (`weft-node`'s
//! `manager::upgrade`) and [`crate::sim`] carries it out on a simulated clock; neither
//! decides anything of its own. A UD goes through three phases:
//! 1. [`Phase::Prepare`]: wait for moves in flight; plan the stand-ins ([`plan_ud`]) and
//!    record them as builds; wait until they are built; move every primary off the UD
//!    (to the replica outside it whose node leads the fewest partitions), the manager's
//!    own last.
//! 2. [`Phase::Restart`]: record each UD node's incarnation and ask them to restart; wait
//!    until every one is back (up, with a new incarnation).
//! 3. [`Phase::Recover`]: a stand-in whose original is back and caught up (within
//!    [`CAUGHT_UP_LAG`] entries of its partition's most advanced replica) is removed; an
//!    original its node came back without (a volatile log) is removed and the stand-in
//!    keeps its place. When none is left, the next UD.

use std::collections::BTreeMap;

use crate::model::{Node, NodeId, NodeStatus};
use crate::placement::{self, PlacementError};
use crate::repair::PartitionId;

/// A partition with its primary, for walk planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    /// Id.
    pub id: PartitionId,
    /// Nodes hosting its replicas.
    pub replicas: Vec<NodeId>,
    /// The node hosting its primary (one of `replicas`).
    pub primary: NodeId,
    /// Engine bytes of one replica.
    pub bytes: u64,
    /// Requests per second its primary serves (they follow the primary when it moves).
    pub requests_per_s: f64,
}

/// A temporary replica built before a UD goes down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    /// Partition.
    pub partition: PartitionId,
    /// The node in the walked UD whose replica it stands in for.
    pub stands_in_for: NodeId,
    /// Where it is built.
    pub to: NodeId,
    /// Bytes to copy.
    pub bytes: u64,
}

/// Everything that must happen before one UD goes down.
#[derive(Clone, Debug, PartialEq)]
pub struct UdPlan {
    /// The UD.
    pub ud: String,
    /// Primary moves: partition, from, to.
    pub primary_moves: Vec<(PartitionId, NodeId, NodeId)>,
    /// Temporary replicas to build.
    pub builds: Vec<Build>,
    /// Replicas that cannot be stood in for (no room outside the UD): taking the UD down
    /// would drop these partitions below their full count.
    pub blocked: Vec<(PartitionId, NodeId, PlacementError)>,
    /// Partitions that would have fewer live replicas than a write quorum with the UD down
    /// and the builds done (for instance, too many of their replicas in this UD).
    pub quorum_at_risk: Vec<PartitionId>,
    /// Most replicas on one live node with the UD down and the builds done.
    pub peak_replicas_per_node: u32,
}

/// Plans taking `ud` down. `nodes` carry their current load (replica and primary counts).
pub fn plan_ud(nodes: &[Node], partitions: &[Placed], ud: &str) -> UdPlan {
    let in_ud = |id: NodeId| nodes.iter().any(|n| n.id == id && n.ud == ud);
    // Nodes of the walked UD take nothing new.
    let mut view: Vec<Node> = placement::closed_to_new(nodes, |n| n.ud == ud);
    let mut plan = UdPlan {
        ud: ud.to_string(),
        primary_moves: Vec::new(),
        builds: Vec::new(),
        blocked: Vec::new(),
        quorum_at_risk: Vec::new(),
        peak_replicas_per_node: 0,
    };
    let mut primaries: BTreeMap<NodeId, u32> = nodes.iter().map(|n| (n.id, n.load.primaries)).collect();
    for p in partitions {
        let leaving: Vec<NodeId> = p.replicas.iter().copied().filter(|id| in_ud(*id)).collect();
        if leaving.is_empty() {
            continue;
        }
        if in_ud(p.primary)
            && let Some(to) =
                p.replicas.iter().copied().filter(|id| !in_ud(*id)).min_by_key(|id| (primaries.get(id).copied(), *id))
        {
            let from = primaries.entry(p.primary).or_default();
            *from = from.saturating_sub(1);
            *primaries.entry(to).or_default() += 1;
            plan.primary_moves.push((p.id, p.primary, to));
        }
        let mut hosting = p.replicas.clone();
        let mut built = 0;
        for from in leaving.iter().copied() {
            match placement::choose(&view, &hosting, p.bytes) {
                Ok(to) => {
                    placement::count_replica(&mut view, to, p.bytes);
                    hosting.push(to);
                    built += 1;
                    plan.builds.push(Build { partition: p.id, stands_in_for: from, to, bytes: p.bytes });
                }
                Err(e) => plan.blocked.push((p.id, from, e)),
            }
        }
        let live = p.replicas.len() - leaving.len() + built;
        if live < crate::repair::quorum(p.replicas.len()) {
            plan.quorum_at_risk.push(p.id);
        }
    }
    plan.peak_replicas_per_node =
        view.iter().filter(|n| n.ud != ud && n.status != NodeStatus::Down).map(|n| n.load.replicas).max().unwrap_or(0);
    plan
}

/// A replica where the map places it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReplicaAt {
    /// Node.
    pub node: NodeId,
    /// Replica id.
    pub replica: u64,
}

/// Where a walk is within its current UD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Stand-ins being built, primaries leaving the UD.
    Prepare,
    /// The UD's nodes restarting.
    Restart,
    /// The UD's replicas catching up, stand-ins leaving.
    Recover,
}

/// A replica built outside the walked UD for one of the UD's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandIn {
    /// Partition.
    pub partition: PartitionId,
    /// The replica in the walked UD.
    pub original: ReplicaAt,
    /// The replica standing in for it.
    pub stand_in: ReplicaAt,
}

/// An upgrade walk as the cluster map records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    /// UDs in walk order.
    pub uds: Vec<String>,
    /// The UD being walked (an index into `uds`; `uds.len()` when all are done).
    pub index: usize,
    /// Its phase.
    pub phase: Phase,
    /// Whether this UD's stand-ins have been planned.
    pub planned: bool,
    /// This UD's stand-ins not yet resolved.
    pub stand_ins: Vec<StandIn>,
    /// Restart: each UD node's incarnation before it was asked to restart.
    pub incarnations: BTreeMap<NodeId, u64>,
}

/// One partition as the walk sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct WalkPartition {
    /// Id.
    pub id: PartitionId,
    /// Its replicas as the map lists them.
    pub replicas: Vec<ReplicaAt>,
    /// The node whose replica reports itself primary, if any does.
    pub primary: Option<NodeId>,
    /// A move of it is in flight (or it is not created yet).
    pub moving: bool,
    /// Engine bytes of one replica.
    pub bytes: u64,
    /// Requests per second its primary serves.
    pub requests_per_s: f64,
}

/// A replica as its node last reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reported {
    /// Partition.
    pub partition: PartitionId,
    /// Replica id.
    pub replica: u64,
    /// Its applied log index.
    pub applied_index: u64,
}

/// What the manager sees when it decides a walk's next step.
#[derive(Clone, Debug, Default)]
pub struct WalkView {
    /// Every node with its load (down ones included).
    pub nodes: Vec<Node>,
    /// Each node's current incarnation (a restart changes it).
    pub incarnations: BTreeMap<NodeId, u64>,
    /// Every partition.
    pub partitions: Vec<WalkPartition>,
    /// Each node that has reported since this manager took office, with what it hosts.
    pub reports: BTreeMap<NodeId, Vec<Reported>>,
    /// The node the manager runs on (`None` in the simulator, which has no manager node).
    pub manager: Option<NodeId>,
}

impl WalkView {
    /// The settled partitions (nothing moving, some replica) as [`plan_ud`] takes them.
    pub fn placed(&self) -> Vec<Placed> {
        self.partitions
            .iter()
            .filter(|p| !p.moving && !p.replicas.is_empty())
            .map(|p| {
                let replicas: Vec<NodeId> = p.replicas.iter().map(|r| r.node).collect();
                Placed {
                    id: p.id,
                    primary: p.primary.unwrap_or(replicas[0]),
                    replicas,
                    bytes: p.bytes,
                    requests_per_s: p.requests_per_s,
                }
            })
            .collect()
    }

    fn ud_of(&self, node: NodeId) -> Option<&str> {
        self.nodes.iter().find(|n| n.id == node).map(|n| n.ud.as_str())
    }
}

/// Which replica of a stand-in pair leaves once a UD is back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    /// Partition.
    pub partition: PartitionId,
    /// The replica that leaves.
    pub replica: ReplicaAt,
    /// The original was lost in the restart (its stand-in stays); otherwise the original
    /// caught up and the stand-in leaves.
    pub original_lost: bool,
}

/// A replica is caught up when it has applied to within this many entries of the
/// partition's most advanced replica.
pub const CAUGHT_UP_LAG: u64 = 64;

/// The one thing a walk does next.
#[derive(Clone, Debug, PartialEq)]
pub enum WalkStep {
    /// Every UD is walked: the walk is over.
    Finish,
    /// Nothing to do until the cluster changes; the text says what the walk waits for.
    Wait(String),
    /// The UD's stand-ins cannot all be placed (or a partition would lose its quorum):
    /// the walk waits for room.
    Blocked(UdPlan),
    /// Record `plan`'s builds as stand-ins (each a move that adds a replica).
    BuildStandIns(UdPlan),
    /// Hand each primary in the UD to the replica named (partition, from node, to); the
    /// walk waits for them to leave.
    MovePrimaries(Vec<(PartitionId, NodeId, ReplicaAt)>),
    /// The manager's own node is in the UD: hand the manager role to a node outside it.
    HandOffManager,
    /// Record these UD nodes' incarnations, enter [`Phase::Restart`], ask them to restart.
    Restart(BTreeMap<NodeId, u64>),
    /// Every UD node is back: enter [`Phase::Recover`].
    Recovered,
    /// Remove these replicas (each a move that removes one) and forget their stand-ins.
    Remove(Vec<Removal>),
    /// Every stand-in of the UD is resolved: on to the next UD.
    NextUd,
}

/// The walk's next step. Pure: the same `walk` and `view` give the same step.
pub fn next(walk: &Walk, view: &WalkView) -> WalkStep {
    let Some(ud) = walk.uds.get(walk.index) else { return WalkStep::Finish };
    let in_ud = |node: NodeId| view.ud_of(node) == Some(ud.as_str());
    match walk.phase {
        Phase::Prepare if !walk.planned => {
            if view.partitions.iter().any(|p| p.moving) {
                return WalkStep::Wait("moves in flight to finish".into());
            }
            let plan = plan_ud(&view.nodes, &view.placed(), ud);
            if !plan.blocked.is_empty() || !plan.quorum_at_risk.is_empty() {
                return WalkStep::Blocked(plan);
            }
            WalkStep::BuildStandIns(plan)
        }
        Phase::Prepare => {
            let building = walk
                .stand_ins
                .iter()
                .filter(|s| view.partitions.iter().any(|p| p.id == s.partition && p.moving))
                .count();
            if building > 0 {
                return WalkStep::Wait(format!("{} to catch up", count(building, "stand-in", "stand-ins")));
            }
            // A primary not known (a manager that just took over has no reports yet, or a
            // group is electing) may be in the UD: restarting it then would cost the group
            // an election the walk meant to spare it.
            let unknown = view
                .partitions
                .iter()
                .filter(|p| p.primary.is_none() && p.replicas.iter().any(|r| in_ud(r.node)))
                .count();
            if unknown > 0 {
                return WalkStep::Wait(format!("{} to be known", count(unknown, "primary", "primaries")));
            }
            let mut leads: BTreeMap<NodeId, u32> = view.nodes.iter().map(|n| (n.id, n.load.primaries)).collect();
            let mut moves = Vec::new();
            for p in &view.partitions {
                let Some(from) = p.primary.filter(|n| in_ud(*n)) else { continue };
                // A stand-in leaves once the UD is back: an original outside the UD first.
                let stand_in = |r: &ReplicaAt| walk.stand_ins.iter().any(|s| s.stand_in == *r);
                let to = p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !in_ud(r.node))
                    .min_by_key(|r| (stand_in(r), leads.get(&r.node).copied().unwrap_or(0), r.node));
                if let Some(to) = to {
                    *leads.entry(to.node).or_default() += 1;
                    moves.push((p.id, from, to));
                }
            }
            if !moves.is_empty() {
                return WalkStep::MovePrimaries(moves);
            }
            if view.manager.is_some_and(in_ud) {
                return WalkStep::HandOffManager;
            }
            WalkStep::Restart(
                view.nodes
                    .iter()
                    .filter(|n| n.ud == *ud)
                    .map(|n| (n.id, view.incarnations.get(&n.id).copied().unwrap_or(0)))
                    .collect(),
            )
        }
        Phase::Restart => {
            let back = |(id, before): (&NodeId, &u64)| {
                view.incarnations.get(id).is_some_and(|now| now != before)
                    && view.nodes.iter().any(|n| n.id == *id && n.status != NodeStatus::Down)
            };
            let missing = walk.incarnations.iter().filter(|x| !back(*x)).count();
            if missing > 0 {
                return WalkStep::Wait(format!("{missing} nodes to come back"));
            }
            WalkStep::Recovered
        }
        Phase::Recover => {
            let mut remaining = 0;
            let mut removals = Vec::new();
            for s in &walk.stand_ins {
                let Some(p) = view.partitions.iter().find(|p| p.id == s.partition) else { continue };
                if p.moving {
                    remaining += 1;
                    continue;
                }
                let head =
                    view.reports.values().flatten().filter(|r| r.partition == p.id).map(|r| r.applied_index).max();
                let report = view.reports.get(&s.original.node).map(|hosted| {
                    hosted.iter().find(|r| r.partition == p.id && r.replica == s.original.replica).copied()
                });
                match report {
                    Some(Some(r)) if r.applied_index + CAUGHT_UP_LAG >= head.unwrap_or(0) => {
                        removals.push(Removal { partition: p.id, replica: s.stand_in, original_lost: false })
                    }
                    Some(None) => removals.push(Removal { partition: p.id, replica: s.original, original_lost: true }),
                    _ => remaining += 1,
                }
            }
            match (removals.is_empty(), remaining) {
                (true, 0) => WalkStep::NextUd,
                (true, n) => WalkStep::Wait(format!("{n} replicas to catch up")),
                (false, _) => WalkStep::Remove(removals),
            }
        }
    }
}

/// `n` and the noun in the number it needs: "1 primary", "2 primaries".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::cluster;

    #[test]
    fn four_on_five_builds_into_the_free_domain_and_keeps_quorum() {
        let (nodes, parts) = cluster(10, 5, 4, 50, |_| 1);
        let plan = plan_ud(&nodes, &parts, "ud0");
        assert!(plan.blocked.is_empty() && plan.quorum_at_risk.is_empty(), "{plan:?}");
        let with_replica_in_ud0 = parts.iter().filter(|p| p.replicas.iter().any(|r| (r - 1) % 5 == 0)).count();
        assert_eq!(plan.builds.len(), with_replica_in_ud0, "one stand-in per replica in the UD");
        for b in &plan.builds {
            let p = &parts[b.partition as usize];
            let ud_of = |id: NodeId| (id - 1) % 5;
            assert_ne!(ud_of(b.to), 0, "never into the walked UD");
            assert!(p.replicas.iter().all(|r| ud_of(*r) != ud_of(b.to)), "into the UD holding none of its replicas");
        }
        for (pid, from, to) in &plan.primary_moves {
            assert_eq!((from - 1) % 5, 0);
            assert!(parts[*pid as usize].replicas.contains(to) && (to - 1) % 5 != 0);
        }
        assert_eq!(plan.primary_moves.len(), parts.iter().filter(|p| (p.primary - 1) % 5 == 0).count());
    }

    #[test]
    fn five_on_five_must_double_up_in_a_domain_still_to_walk() {
        let (nodes, parts) = cluster(10, 5, 5, 50, |_| 1);
        let plan = plan_ud(&nodes, &parts, "ud0");
        assert_eq!(plan.builds.len(), 50, "every partition has a replica in every UD");
        for b in &plan.builds {
            let p = &parts[b.partition as usize];
            let ud_of = |id: NodeId| (id - 1) % 5;
            assert!(p.replicas.iter().any(|r| ud_of(*r) == ud_of(b.to)), "no free UD exists");
        }
    }

    #[test]
    fn no_room_outside_the_domain_blocks_and_puts_quorum_at_risk() {
        let (mut nodes, parts) = cluster(4, 4, 4, 3, |_| 1);
        for n in nodes.iter_mut() {
            n.capacity.replicas = n.load.replicas;
        }
        let plan = plan_ud(&nodes, &parts, "ud0");
        assert_eq!(plan.blocked.len(), 3, "{plan:?}");
        assert!(plan.quorum_at_risk.is_empty(), "3 of 4 still up is a quorum");
        let (nodes, mut parts) = cluster(4, 2, 4, 1, |_| 1);
        parts[0].replicas = vec![1, 3, 2, 4];
        let mut full = nodes.clone();
        for n in full.iter_mut() {
            n.capacity.replicas = n.load.replicas;
        }
        let plan = plan_ud(&full, &parts, "ud0");
        assert_eq!(plan.quorum_at_risk, vec![0], "2 of 4 left is not a quorum: {plan:?}");
    }

    /// A view of `cluster(nodes, uds, replicas, partitions)` with replica ids
    /// `100 * partition + k`, every replica reported at applied index 10, the manager on
    /// `manager`.
    fn view(nodes: u64, uds: u64, replicas: usize, partitions: u64, manager: Option<NodeId>) -> WalkView {
        let (ns, parts) = cluster(nodes, uds, replicas, partitions, |_| 1);
        let mut reports: BTreeMap<NodeId, Vec<Reported>> = BTreeMap::new();
        let partitions = parts
            .iter()
            .map(|p| {
                let replicas: Vec<ReplicaAt> = p
                    .replicas
                    .iter()
                    .enumerate()
                    .map(|(k, &node)| ReplicaAt { node, replica: 100 * p.id + k as u64 })
                    .collect();
                for r in &replicas {
                    reports.entry(r.node).or_default().push(Reported {
                        partition: p.id,
                        replica: r.replica,
                        applied_index: 10,
                    });
                }
                WalkPartition {
                    id: p.id,
                    replicas,
                    primary: Some(p.primary),
                    moving: false,
                    bytes: 1,
                    requests_per_s: 0.0,
                }
            })
            .collect();
        let incarnations = ns.iter().map(|n| (n.id, 7)).collect();
        WalkView { nodes: ns, incarnations, partitions, reports, manager }
    }

    fn fresh(uds: &[&str]) -> Walk {
        Walk {
            uds: uds.iter().map(|u| u.to_string()).collect(),
            index: 0,
            phase: Phase::Prepare,
            planned: false,
            stand_ins: Vec::new(),
            incarnations: BTreeMap::new(),
        }
    }

    #[test]
    fn a_walk_waits_for_moves_in_flight_before_it_plans() {
        let mut v = view(10, 5, 4, 8, None);
        v.partitions[3].moving = true;
        let w = fresh(&["ud0", "ud1", "ud2", "ud3", "ud4"]);
        assert_eq!(next(&w, &v), WalkStep::Wait("moves in flight to finish".into()));
        v.partitions[3].moving = false;
        let WalkStep::BuildStandIns(plan) = next(&w, &v) else { panic!("expected builds") };
        assert_eq!(plan, plan_ud(&v.nodes, &v.placed(), "ud0"), "the step is plan_ud's plan");
    }

    #[test]
    fn primaries_leave_for_originals_and_the_manager_leaves_last() {
        // Five nodes, five UDs: node 1 is ud0. Partition 0 has a replica on node 1 and its
        // stand-in is built on node 5 (outside every replica's UD).
        let mut v = view(5, 5, 4, 1, Some(1));
        let p = &mut v.partitions[0];
        p.replicas = vec![
            ReplicaAt { node: 1, replica: 1 },
            ReplicaAt { node: 2, replica: 2 },
            ReplicaAt { node: 3, replica: 3 },
            ReplicaAt { node: 4, replica: 4 },
            ReplicaAt { node: 5, replica: 9 },
        ];
        p.primary = Some(1);
        let mut w = fresh(&["ud0", "ud1", "ud2", "ud3", "ud4"]);
        w.planned = true;
        let stand_in = StandIn { partition: 0, original: p.replicas[0], stand_in: p.replicas[4] };
        w.stand_ins = vec![stand_in];
        // The stand-in still building: wait.
        v.partitions[0].moving = true;
        assert_eq!(next(&w, &v), WalkStep::Wait("1 stand-in to catch up".into()));
        v.partitions[0].moving = false;
        // Node 2 leads nothing else, but node 5's replica is a stand-in: an original wins.
        for n in v.nodes.iter_mut() {
            n.load.primaries = if n.id == 2 { 3 } else { 0 };
        }
        let WalkStep::MovePrimaries(moves) = next(&w, &v) else { panic!("expected a primary move") };
        assert_eq!(moves, vec![(0, 1, ReplicaAt { node: 3, replica: 3 })], "fewest leads among originals");
        // Between reports nobody knows where it went: the walk waits rather than restart
        // a node that may lead it again.
        v.partitions[0].primary = None;
        assert_eq!(next(&w, &v), WalkStep::Wait("1 primary to be known".into()));
        // The primary left; the manager is still on node 1.
        v.partitions[0].primary = Some(3);
        assert_eq!(next(&w, &v), WalkStep::HandOffManager);
        v.manager = Some(2);
        assert_eq!(next(&w, &v), WalkStep::Restart(BTreeMap::from([(1, 7)])));
    }

    #[test]
    fn a_node_is_back_only_up_with_a_new_incarnation() {
        let mut v = view(5, 5, 4, 1, None);
        let mut w = fresh(&["ud0", "ud1"]);
        w.phase = Phase::Restart;
        w.incarnations = BTreeMap::from([(1, 7), (6, 7)]);
        // Node 6 is not even in the map any more; node 1 has not restarted.
        assert_eq!(next(&w, &v), WalkStep::Wait("2 nodes to come back".into()));
        w.incarnations = BTreeMap::from([(1, 7)]);
        v.incarnations.insert(1, 8);
        v.nodes[0].status = NodeStatus::Down;
        assert_eq!(next(&w, &v), WalkStep::Wait("1 nodes to come back".into()), "a new incarnation, still down");
        v.nodes[0].status = NodeStatus::Up;
        assert_eq!(next(&w, &v), WalkStep::Recovered);
    }

    #[test]
    fn recovery_removes_the_stand_in_or_the_lost_original() {
        let mut v = view(5, 5, 4, 3, None);
        let original = |v: &WalkView, p: usize| v.partitions[p].replicas[0];
        let mut w = fresh(&["ud0"]);
        w.phase = Phase::Recover;
        w.stand_ins = (0..3)
            .map(|p| StandIn {
                partition: p as u64,
                original: original(&v, p),
                stand_in: ReplicaAt { node: 99, replica: 900 + p as u64 },
            })
            .collect();
        // Partition 0's original is far behind; partition 1's node came back without it;
        // partition 2's original is within the lag.
        let lagging = original(&v, 0);
        let gone = original(&v, 1);
        for r in v.reports.get_mut(&lagging.node).expect("reported") {
            if r.replica == lagging.replica {
                r.applied_index = 0;
            }
        }
        for r in v.reports.values_mut() {
            for x in r.iter_mut().filter(|x| x.partition == 0 && x.replica != lagging.replica) {
                x.applied_index = CAUGHT_UP_LAG + 1;
            }
        }
        v.reports.get_mut(&gone.node).expect("reported").retain(|r| r.replica != gone.replica);
        let WalkStep::Remove(removals) = next(&w, &v) else { panic!("expected removals") };
        assert_eq!(
            removals,
            vec![
                Removal { partition: 1, replica: gone, original_lost: true },
                Removal { partition: 2, replica: w.stand_ins[2].stand_in, original_lost: false },
            ]
        );
        // Only the lagging one left: wait; once none is left, the next UD; then done.
        w.stand_ins.truncate(1);
        assert_eq!(next(&w, &v), WalkStep::Wait("1 replicas to catch up".into()));
        w.stand_ins.clear();
        assert_eq!(next(&w, &v), WalkStep::NextUd);
        w.index = 1;
        assert_eq!(next(&w, &v), WalkStep::Finish);
    }
}
