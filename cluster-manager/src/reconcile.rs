//! The manager's round: which nodes are down, which replicas are lost, which moves to
//! plan. Pure: the live manager (`weft-node`'s `manager::reconcile`) gathers what it saw
//! (the map, the nodes' last heartbeats, the clock) and carries the answers out.
//!
//! - [`silent`]: nodes silent past the grace period, counted from the later of their last
//!   heartbeat and the moment this manager took office (a new manager gives every node a
//!   fresh grace period).
//! - [`suspects`]: replicas that an up node's report no longer lists. Only a report made
//!   after the partition's last placement change counts (one made before may miss a
//!   replica a move has just opened), and even then the node is asked before anything is
//!   replaced: a report is a hint, not proof.
//! - [`plan_moves`]: replacements for lost replicas ([`repair::plan`]), then moves off
//!   draining nodes, within a budget of operations, steering clear of nodes where a move
//!   of the same partition recently stalled ([`Stalls`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::model::{Node, NodeId, NodeStatus};
use crate::placement;
use crate::repair::{self, Action, PartitionId};
use crate::walk::ReplicaAt;

/// How often the live manager takes a round: liveness, operations, repairs, one step of an
/// upgrade walk (`weft sim` charges each walk step one round).
pub const ROUND_EVERY: Duration = Duration::from_millis(300);

/// Replica moves (builds, removals, repairs) the live manager drives at once, cluster-wide
/// (`weft sim` schedules a walk's builds and removals under the same cap).
pub const MOVES_AT_ONCE: usize = 4;

/// What a node last told the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    /// When its last heartbeat arrived.
    pub at: Instant,
    /// The replicas it hosted then (partition, replica id): a set, since every replica of
    /// every partition is looked up in it each pass.
    pub hosted: BTreeSet<(PartitionId, u64)>,
}

/// Of `nodes` (id, marked down already), those silent past `grace` at `now`: their last
/// heartbeat, or `since` (when this manager took office) if later or if none, is older.
pub fn silent(
    nodes: impl IntoIterator<Item = (NodeId, bool)>,
    heard: &BTreeMap<NodeId, Heard>,
    since: Instant,
    now: Instant,
    grace: Duration,
) -> Vec<NodeId> {
    nodes
        .into_iter()
        .filter(|(_, down)| !down)
        .filter(|(id, _)| {
            let last = heard.get(id).map_or(since, |h| h.at.max(since));
            now.saturating_duration_since(last) > grace
        })
        .map(|(id, _)| id)
        .collect()
}

/// The nodes of `replicas` whose report, made after `settled` (the moment reports are
/// sure to reflect the partition's last placement change), does not list their replica.
/// `None`: nothing has settled yet (a manager that just took office), so nobody.
pub fn suspects(
    partition: PartitionId,
    replicas: &[ReplicaAt],
    heard: &BTreeMap<NodeId, Heard>,
    settled: Option<Instant>,
) -> Vec<NodeId> {
    let Some(settled) = settled else { return Vec::new() };
    replicas
        .iter()
        .filter(|r| heard.get(&r.node).is_some_and(|h| h.at > settled && !h.hosted.contains(&(partition, r.replica))))
        .map(|r| r.node)
        .collect()
}

/// Where moves stalled lately, per partition: the next moves of that partition avoid
/// those nodes (a node the primary cannot reach would stall the next move the same way).
#[derive(Clone, Debug, Default)]
pub struct Stalls {
    by_partition: BTreeMap<PartitionId, Vec<(NodeId, Instant)>>,
}

impl Stalls {
    /// A move of `partition` to `node` stalled at `at`.
    pub fn record(&mut self, partition: PartitionId, node: NodeId, at: Instant) {
        self.by_partition.entry(partition).or_default().push((node, at));
    }

    /// Forgets stalls older than `keep` at `now`; returns the nodes to avoid per partition.
    pub fn avoid(&mut self, now: Instant, keep: Duration) -> BTreeMap<PartitionId, Vec<NodeId>> {
        self.by_partition.retain(|_, v| {
            v.retain(|(_, at)| now.saturating_duration_since(*at) < keep);
            !v.is_empty()
        });
        self.by_partition.iter().map(|(p, v)| (*p, v.iter().map(|(n, _)| *n).collect())).collect()
    }
}

/// Why a move is planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The replica on `from` is lost (its node down, or up without it).
    Replace,
    /// `from` is draining.
    Drain,
}

impl Reason {
    /// How the map and the logs name it.
    pub fn text(&self, from: NodeId) -> String {
        match self {
            Reason::Replace => "replace a lost replica".into(),
            Reason::Drain => format!("drain node {from}"),
        }
    }
}

/// A move to record in the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Partition.
    pub partition: PartitionId,
    /// The node whose replica leaves.
    pub from: NodeId,
    /// The node the new replica goes to.
    pub to: NodeId,
    /// Why.
    pub reason: Reason,
}

/// The round's moves over `settled` partitions (created, nothing moving, not in an upgrade
/// walk): replacements first ([`repair::plan`]), then one move per partition with a
/// replica on a draining node, at most `budget` in all. A target in `avoid` for its
/// partition is swapped for the best other node. Also returns the alarms (quorum lost, no
/// room), each as the text an operator sees.
pub fn plan_moves(
    nodes: &[Node],
    settled: &[repair::Partition],
    avoid: &BTreeMap<PartitionId, Vec<NodeId>>,
    budget: usize,
) -> (Vec<Planned>, Vec<String>) {
    let mut nodes = nodes.to_vec();
    let (actions, alarms) = repair::plan(&nodes, settled);
    let mut alarms: Vec<String> = alarms.iter().map(ToString::to_string).collect();
    let mut moves: Vec<Planned> = Vec::new();
    for &Action::Replace { partition, from, to } in &actions {
        if moves.len() >= budget {
            break;
        }
        let to = match avoid.get(&partition) {
            Some(bad) if bad.contains(&to) => {
                let Some(part) = settled.iter().find(|p| p.id == partition) else { continue };
                let view = placement::closed_to_new(&nodes, |n| bad.contains(&n.id));
                match placement::choose(&view, &part.replicas, part.bytes) {
                    Ok(to) => to,
                    Err(e) => {
                        alarms.push(format!(
                            "partition {partition}: no node can take the replica lost on node {from} \
                             but nodes {bad:?}, where a move to it stalled: {e}"
                        ));
                        continue;
                    }
                }
            }
            _ => to,
        };
        moves.push(Planned { partition, from, to, reason: Reason::Replace });
    }
    for mv in &moves {
        placement::count_replica(&mut nodes, mv.to, 0);
    }
    let draining: Vec<NodeId> = nodes.iter().filter(|n| n.status == NodeStatus::Draining).map(|n| n.id).collect();
    for p in settled {
        if moves.len() >= budget {
            break;
        }
        if moves.iter().any(|m| m.partition == p.id) {
            continue;
        }
        let Some(&from) = p.replicas.iter().find(|r| draining.contains(r)) else { continue };
        let view = match avoid.get(&p.id) {
            Some(bad) => placement::closed_to_new(&nodes, |n| bad.contains(&n.id)),
            None => nodes.clone(),
        };
        match placement::choose(&view, &p.replicas, p.bytes) {
            Ok(to) => {
                placement::count_replica(&mut nodes, to, 0);
                moves.push(Planned { partition: p.id, from, to, reason: Reason::Drain });
            }
            Err(e) => alarms.push(format!("partition {}: cannot move off draining node {from}: {e}", p.id)),
        }
    }
    (moves, alarms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::cluster;

    fn settled(parts: &[crate::walk::Placed]) -> Vec<repair::Partition> {
        parts
            .iter()
            .map(|p| repair::Partition { id: p.id, replicas: p.replicas.clone(), lost: Vec::new(), bytes: 1 })
            .collect()
    }

    #[test]
    fn a_node_gets_its_grace_period_from_a_new_manager() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        let heard = BTreeMap::from([(1, Heard { at: t0, hosted: BTreeSet::new() })]);
        let nodes = [(1, false), (2, false), (3, true)];
        // Node 2 never heard from, node 3 already down: only counted from office.
        assert_eq!(silent(nodes, &heard, t0, t0 + grace, grace), Vec::<NodeId>::new());
        assert_eq!(silent(nodes, &heard, t0, t0 + grace * 2, grace), vec![1, 2]);
        // A manager that took office late gives both a fresh period.
        assert_eq!(silent(nodes, &heard, t0 + grace, t0 + grace * 2, grace), Vec::<NodeId>::new());
    }

    /// A report built before a move opened a replica, delivered late, misses a live
    /// replica: it must not count (nor any report before the manager settled).
    #[test]
    fn a_report_older_than_the_last_change_suspects_nobody() {
        let t0 = Instant::now();
        let replicas = [ReplicaAt { node: 1, replica: 11 }, ReplicaAt { node: 2, replica: 12 }];
        let late = BTreeMap::from([
            (1, Heard { at: t0, hosted: BTreeSet::new() }),
            (2, Heard { at: t0 + Duration::from_secs(2), hosted: BTreeSet::from([(7, 12)]) }),
        ]);
        assert_eq!(suspects(7, &replicas, &late, Some(t0)), Vec::<NodeId>::new(), "node 1's report predates it");
        assert_eq!(suspects(7, &replicas, &late, None), Vec::<NodeId>::new(), "nothing settled yet");
        let fresh = BTreeMap::from([(1, Heard { at: t0 + Duration::from_secs(1), hosted: BTreeSet::from([(7, 99)]) })]);
        assert_eq!(suspects(7, &replicas, &fresh, Some(t0)), vec![1], "a newer report without replica 11");
    }

    /// `weft chaos`: a drain whose move stalled on one node retried the same node; the
    /// next plan must go elsewhere, and only while the stall is recent.
    #[test]
    fn a_drain_whose_move_stalled_goes_to_another_node() {
        let (mut nodes, parts) = cluster(6, 6, 4, 1, |_| 1);
        let from = parts[0].replicas[0];
        nodes.iter_mut().find(|n| n.id == from).expect("node").status = NodeStatus::Draining;
        let settled = settled(&parts);
        let (first, alarms) = plan_moves(&nodes, &settled, &BTreeMap::new(), 4);
        assert!(alarms.is_empty(), "{alarms:?}");
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].from, first[0].reason.clone()), (from, Reason::Drain));
        let t0 = Instant::now();
        let mut stalls = Stalls::default();
        stalls.record(0, first[0].to, t0);
        let keep = Duration::from_secs(600);
        let avoid = stalls.avoid(t0 + Duration::from_secs(1), keep);
        let (second, _) = plan_moves(&nodes, &settled, &avoid, 4);
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].to, first[0].to, "the stalled target is avoided");
        assert!(!parts[0].replicas.contains(&second[0].to));
        assert!(stalls.avoid(t0 + keep, keep).is_empty(), "stalls are forgotten after the keep period");
    }

    #[test]
    fn replacements_come_first_and_the_budget_holds() {
        let (mut nodes, parts) = cluster(8, 4, 3, 6, |_| 1);
        let down = parts[0].replicas[1];
        nodes.iter_mut().find(|n| n.id == down).expect("node").status = NodeStatus::Down;
        let draining = parts[1].replicas.iter().copied().find(|n| *n != down).expect("another node");
        nodes.iter_mut().find(|n| n.id == draining).expect("node").status = NodeStatus::Draining;
        let (moves, _) = plan_moves(&nodes, &settled(&parts), &BTreeMap::new(), 1);
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].partition, moves[0].from, moves[0].reason.clone()), (0, down, Reason::Replace));
        let (all, _) = plan_moves(&nodes, &settled(&parts), &BTreeMap::new(), 100);
        assert!(all.iter().all(|m| !(m.reason == Reason::Drain && m.partition == 0 && m.from == down)));
        let unique: std::collections::BTreeSet<_> = all.iter().map(|m| m.partition).collect();
        assert_eq!(all.len(), unique.len(), "one move per partition a round: {all:?}");
    }
}
