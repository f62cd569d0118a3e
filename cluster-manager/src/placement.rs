//! Where a new replica of a partition goes.
//!
//! Rules, in order:
//! 1. Hard: the node is up (not draining or down), does not already host a replica of the
//!    partition, and stays within its replica and memory capacity.
//! 2. Spread: the fewest replicas of the partition already in the node's upgrade domain,
//!    then the fewest in its fault domain. So replicas land in distinct UDs whenever enough
//!    UDs have room, and in distinct FDs wherever that does not cost a UD. UD comes first
//!    because weft's upgrade walks take a whole UD down on purpose, every time; a fault
//!    domain failing is rarer. (Service Fabric treats both as constraints; with one UD per
//!    FD, as in the playground, the two orders agree.)
//! 3. Evenness: the lowest utilization after placement (the larger of the replica-count
//!    and memory fractions of capacity), then fewer primaries, then less request load.
//! 4. Determinism: the lowest node id.

use std::cmp::Ordering;

use crate::model::{Node, NodeId, NodeStatus};

/// Why no node could be chosen: the one error this crate returns (its other decisions
/// cannot fail; they answer with steps and alarms). New variants may be added: match
/// with a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// Every node was ruled out by a hard rule; the counts say why.
    #[error(
        "no node can take a replica of {bytes} bytes: of {nodes} nodes known, {down} down, {draining} draining, \
         {hosting} already hosting the partition, {full} without room"
    )]
    NoCandidate {
        /// Replica size asked for.
        bytes: u64,
        /// Nodes known.
        nodes: usize,
        /// Nodes down.
        down: usize,
        /// Nodes draining.
        draining: usize,
        /// Nodes already hosting a replica of the partition.
        hosting: usize,
        /// Nodes at capacity.
        full: usize,
    },
}

/// How good a candidate is; lower is better (compared field by field).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rank {
    /// Replicas of the partition already in the candidate's upgrade domain.
    pub ud_shared: usize,
    /// Replicas of the partition already in its fault domain.
    pub fd_shared: usize,
    /// Utilization after placement.
    pub utilization: f64,
    /// Primaries it hosts.
    pub primaries: u32,
    /// Its request load.
    pub requests_per_s: f64,
    /// Its id.
    pub id: NodeId,
}

impl Rank {
    fn cmp(&self, other: &Rank) -> Ordering {
        (self.ud_shared, self.fd_shared)
            .cmp(&(other.ud_shared, other.fd_shared))
            .then(self.utilization.total_cmp(&other.utilization))
            .then(self.primaries.cmp(&other.primaries))
            .then(self.requests_per_s.total_cmp(&other.requests_per_s))
            .then(self.id.cmp(&other.id))
    }
}

/// The rank of `node` for a new replica of `bytes` of a partition hosted on `hosting`, or
/// `None` when a hard rule rules it out.
pub fn rank(nodes: &[Node], hosting: &[NodeId], node: &Node, bytes: u64) -> Option<Rank> {
    if node.status != NodeStatus::Up || hosting.contains(&node.id) || !node.fits(bytes) {
        return None;
    }
    let holders = || nodes.iter().filter(|n| hosting.contains(&n.id));
    Some(Rank {
        ud_shared: holders().filter(|n| n.ud == node.ud).count(),
        fd_shared: holders().filter(|n| n.fd == node.fd).count(),
        utilization: node.utilization_after(bytes),
        primaries: node.load.primaries,
        requests_per_s: node.load.requests_per_s,
        id: node.id,
    })
}

/// The node for one new replica of `bytes` of a partition whose replicas are on `hosting`.
pub fn choose(nodes: &[Node], hosting: &[NodeId], bytes: u64) -> Result<NodeId, PlacementError> {
    nodes
        .iter()
        .filter_map(|n| rank(nodes, hosting, n, bytes))
        .min_by(Rank::cmp)
        .map(|r| r.id)
        .ok_or_else(|| no_candidate(nodes, hosting, bytes))
}

fn no_candidate(nodes: &[Node], hosting: &[NodeId], bytes: u64) -> PlacementError {
    let count = |f: &dyn Fn(&Node) -> bool| nodes.iter().filter(|n| f(n)).count();
    PlacementError::NoCandidate {
        bytes,
        nodes: nodes.len(),
        down: count(&|n| n.status == NodeStatus::Down),
        draining: count(&|n| n.status == NodeStatus::Draining),
        hosting: count(&|n| n.status == NodeStatus::Up && hosting.contains(&n.id)),
        full: count(&|n| n.status == NodeStatus::Up && !hosting.contains(&n.id) && !n.fits(bytes)),
    }
}

/// `nodes` with the up ones that `closed` picks marked draining, so no choice made on the
/// result puts anything new there (the UD about to be walked, a partition's standby
/// nodes, nodes where a move of it stalled).
pub fn closed_to_new(nodes: &[Node], closed: impl Fn(&Node) -> bool) -> Vec<Node> {
    nodes
        .iter()
        .cloned()
        .map(|mut n| {
            if n.status == NodeStatus::Up && closed(&n) {
                n.status = NodeStatus::Draining;
            }
            n
        })
        .collect()
}

/// Takes one replica of `bytes` off node `id`'s counts in `nodes` (it moved or was lost).
pub fn uncount_replica(nodes: &mut [Node], id: NodeId, bytes: u64) {
    if let Some(n) = nodes.iter_mut().find(|n| n.id == id) {
        n.load.replicas = n.load.replicas.saturating_sub(1);
        n.load.memory_bytes = n.load.memory_bytes.saturating_sub(bytes);
    }
}

/// Counts a new replica of `bytes` on node `id` in `nodes`, so later choices see it.
pub fn count_replica(nodes: &mut [Node], id: NodeId, bytes: u64) {
    if let Some(n) = nodes.iter_mut().find(|n| n.id == id) {
        n.load.replicas += 1;
        n.load.memory_bytes = n.load.memory_bytes.saturating_add(bytes);
    }
}

/// Nodes for all `replicas` of a new partition of `bytes`, chosen one at a time, each
/// choice counting the load of the ones before it. Either all are placed or none.
pub fn place_partition(nodes: &[Node], replicas: usize, bytes: u64) -> Result<Vec<NodeId>, PlacementError> {
    let mut nodes = nodes.to_vec();
    let mut chosen = Vec::with_capacity(replicas);
    for _ in 0..replicas {
        let id = choose(&nodes, &chosen, bytes)?;
        count_replica(&mut nodes, id, bytes);
        chosen.push(id);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{Capacity, Load};

    fn node(id: NodeId, ud: &str, fd: &str, replicas: u32) -> Node {
        Node {
            id,
            ud: ud.into(),
            fd: fd.into(),
            status: NodeStatus::Up,
            capacity: Capacity { replicas: 100, memory_bytes: 1 << 40 },
            load: Load { replicas, ..Load::default() },
        }
    }

    #[test]
    fn four_replicas_over_five_domains_spread_and_prefer_the_emptiest() {
        let nodes: Vec<Node> = (1..=5).map(|i| node(i, &format!("ud{i}"), &format!("fd{i}"), 10)).collect();
        let mut nodes = nodes;
        nodes[2].load.replicas = 50;
        let placed = place_partition(&nodes, 4, 1 << 20).unwrap();
        assert_eq!(placed, vec![1, 2, 4, 5], "the busiest node (3) is left out");
    }

    #[test]
    fn a_replacement_avoids_the_domains_of_the_survivors() {
        // Two nodes per UD; the partition has replicas in ud1 and ud2; ud3 is the only
        // domain without one, even though its nodes are busier.
        let nodes = vec![
            node(1, "ud1", "fd1", 1),
            node(2, "ud1", "fd1", 1),
            node(3, "ud2", "fd2", 1),
            node(4, "ud2", "fd2", 1),
            node(5, "ud3", "fd3", 40),
            node(6, "ud3", "fd3", 30),
        ];
        assert_eq!(choose(&nodes, &[1, 3], 0), Ok(6));
    }

    #[test]
    fn hard_rules_are_reported_when_nothing_fits() {
        let mut nodes = vec![node(1, "a", "a", 0), node(2, "b", "b", 0), node(3, "c", "c", 0), node(4, "d", "d", 0)];
        nodes[0].status = NodeStatus::Down;
        nodes[1].status = NodeStatus::Draining;
        nodes[3].capacity.replicas = 0;
        let err = choose(&nodes, &[3], 0).unwrap_err();
        assert_eq!(err, PlacementError::NoCandidate { bytes: 0, nodes: 4, down: 1, draining: 1, hosting: 1, full: 1 });
        assert!(
            err.to_string()
                .contains("of 4 nodes known, 1 down, 1 draining, 1 already hosting the partition, 1 without room")
        );
    }

    fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::vec((0u8..5, 0u8..5, 0u8..8, 0u32..8, 0u32..6, 0u64..1000, 0u64..1000, 0u32..3), 1..14)
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (ud, fd, status, cap, replicas, mem_cap, mem, primaries))| Node {
                        id: i as NodeId + 1,
                        ud: format!("ud{ud}"),
                        fd: format!("fd{fd}"),
                        status: match status {
                            0 => NodeStatus::Down,
                            1 => NodeStatus::Draining,
                            _ => NodeStatus::Up,
                        },
                        capacity: Capacity { replicas: cap, memory_bytes: mem_cap },
                        load: Load { replicas, primaries, memory_bytes: mem, requests_per_s: 0.0 },
                    })
                    .collect()
            })
    }

    fn eligible(nodes: &[Node], bytes: u64) -> Vec<&Node> {
        nodes.iter().filter(|n| n.status == NodeStatus::Up && n.fits(bytes)).collect()
    }

    proptest! {
        /// Every placed replica obeys the hard rules, and placement fails only when fewer
        /// eligible nodes exist than replicas asked for.
        #[test]
        fn hard_rules_hold(nodes in arb_nodes(), replicas in 1usize..6, bytes in 0u64..200) {
            let ok = eligible(&nodes, bytes);
            match place_partition(&nodes, replicas, bytes) {
                Ok(placed) => {
                    prop_assert_eq!(placed.len(), replicas);
                    prop_assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), replicas, "one replica per node");
                    for id in &placed {
                        prop_assert!(ok.iter().any(|n| n.id == *id), "node {} is not eligible", id);
                    }
                }
                Err(_) => prop_assert!(ok.len() < replicas),
            }
        }

        /// With enough upgrade domains that have room, replicas land in distinct ones; and
        /// when a node's FD is its UD (the playground's layout) in distinct FDs too.
        #[test]
        fn domains_are_distinct_when_enough_exist(mut nodes in arb_nodes(), replicas in 1usize..6, same_fd in any::<bool>()) {
            if same_fd {
                for n in &mut nodes {
                    n.fd = n.ud.clone();
                }
            }
            let uds: BTreeSet<&str> = eligible(&nodes, 0).iter().map(|n| n.ud.as_str()).collect();
            prop_assume!(uds.len() >= replicas);
            let placed = place_partition(&nodes, replicas, 0).unwrap();
            let of = |id: &NodeId| nodes.iter().find(|n| n.id == *id).unwrap();
            let placed_uds: BTreeSet<&str> = placed.iter().map(|id| of(id).ud.as_str()).collect();
            prop_assert_eq!(placed_uds.len(), replicas);
            if same_fd {
                let placed_fds: BTreeSet<&str> = placed.iter().map(|id| of(id).fd.as_str()).collect();
                prop_assert_eq!(placed_fds.len(), replicas);
            }
        }

        /// The chosen node is the best-ranked eligible node, checked against a plain sort.
        #[test]
        fn choice_is_the_minimum_rank(nodes in arb_nodes(), hosting_mask in any::<u16>(), bytes in 0u64..200) {
            let hosting: Vec<NodeId> = nodes.iter().filter(|n| hosting_mask & (1 << (n.id % 16)) != 0).map(|n| n.id).collect();
            let mut ranked: Vec<Rank> = nodes.iter().filter_map(|n| rank(&nodes, &hosting, n, bytes)).collect();
            ranked.sort_by(Rank::cmp);
            match choose(&nodes, &hosting, bytes) {
                Ok(id) => {
                    let best = ranked[0];
                    prop_assert_eq!(id, best.id);
                    // Nothing eligible spreads better.
                    for r in &ranked {
                        prop_assert!((r.ud_shared, r.fd_shared) >= (best.ud_shared, best.fd_shared));
                    }
                }
                Err(_) => prop_assert!(ranked.is_empty()),
            }
        }
    }
}
