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
}
