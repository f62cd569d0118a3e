//! Failover decisions: which replicas to replace, and which partitions to report.
//!
//! Losing a primary is raft's business (an election); this module handles replicas whose
//! node has been down past the grace period. For each partition that still has a write
//! quorum among its live replicas, every replica on a down node gets a replacement on a
//! node [`placement`](crate::placement) chooses (its old node stays excluded), and the
//! dead replica is removed only once the replacement has caught up (the executor's part,
//! an [`Action::Replace`] names both). A partition that has lost its quorum is reported
//! as [`Alarm::QuorumLost`] and left alone: repairing it would mean discarding writes a
//! quorum acknowledged, which only an explicit operator command may do.

use crate::model::{Node, NodeId, NodeStatus};
use crate::placement::{self, PlacementError};

/// A partition id.
pub type PartitionId = u64;

/// One partition as the decision code sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// Id.
    pub id: PartitionId,
    /// Nodes hosting its replicas (voters), the primary among them.
    pub replicas: Vec<NodeId>,
    /// Of those, nodes that are up but no longer hold their replica (a volatile node
    /// restarted): dead replicas just like those on down nodes.
    pub lost: Vec<NodeId>,
    /// Engine bytes of one replica (what a rebuild copies).
    pub bytes: u64,
}

/// Something the cluster manager should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Build a replica of `partition` on `to` (learner, snapshot, promote), then remove
    /// the one on `from`.
    Replace {
        /// Partition.
        partition: PartitionId,
        /// The down node whose replica goes.
        from: NodeId,
        /// The node the new replica goes to.
        to: NodeId,
    },
}

/// Something an operator must hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alarm {
    /// Fewer live replicas than a write quorum: writes stop; nothing is repaired
    /// automatically.
    QuorumLost {
        /// Partition.
        partition: PartitionId,
        /// Live replicas.
        live: usize,
        /// Replicas a quorum needs.
        quorum: usize,
    },
    /// A replica should be replaced but no node can take it.
    NoRoom {
        /// Partition.
        partition: PartitionId,
        /// The down node.
        from: NodeId,
        /// Why placement failed.
        reason: PlacementError,
    },
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alarm::QuorumLost { partition, live, quorum } => write!(
                f,
                "QUORUM LOST: partition {partition} has {live} live replicas of the {quorum} a quorum needs; \
                 writes stop and nothing is repaired automatically"
            ),
            Alarm::NoRoom { partition, from, reason } => {
                write!(f, "partition {partition}: no node can take the replica lost on node {from}: {reason}")
            }
        }
    }
}

/// Majority of `n` voters.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// The replacements and alarms for the current map. Choices count the load of the ones
/// made before them in the same call.
pub fn plan(nodes: &[Node], partitions: &[Partition]) -> (Vec<Action>, Vec<Alarm>) {
    let mut nodes = nodes.to_vec();
    let mut actions = Vec::new();
    let mut alarms = Vec::new();
    for p in partitions {
        let down: Vec<NodeId> = p
            .replicas
            .iter()
            .copied()
            .filter(|id| {
                p.lost.contains(id) || nodes.iter().find(|n| n.id == *id).is_none_or(|n| n.status == NodeStatus::Down)
            })
            .collect();
        if down.is_empty() {
            continue;
        }
        let live = p.replicas.len() - down.len();
        if live < quorum(p.replicas.len()) {
            alarms.push(Alarm::QuorumLost { partition: p.id, live, quorum: quorum(p.replicas.len()) });
            continue;
        }
        // A lost replica's node is a candidate again: its replica is gone, so a new one
        // there does not double up (a volatile node that restarted is rebuilt in place
        // when it is the best choice).
        let mut hosting: Vec<NodeId> = p.replicas.iter().copied().filter(|id| !p.lost.contains(id)).collect();
        for from in down {
            match placement::choose(&nodes, &hosting, p.bytes) {
                Ok(to) => {
                    placement::count_replica(&mut nodes, to, p.bytes);
                    hosting.push(to);
                    actions.push(Action::Replace { partition: p.id, from, to });
                }
                Err(reason) => alarms.push(Alarm::NoRoom { partition: p.id, from, reason }),
            }
        }
    }
    (actions, alarms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Capacity, Load};

    fn nodes(n: u64) -> Vec<Node> {
        (1..=n)
            .map(|i| Node {
                id: i,
                ud: format!("ud{i}"),
                fd: format!("fd{i}"),
                status: NodeStatus::Up,
                capacity: Capacity { replicas: 100, memory_bytes: 1 << 40 },
                load: Load::default(),
            })
            .collect()
    }

    #[test]
    fn a_down_replica_is_replaced_on_a_fresh_domain() {
        let mut ns = nodes(6);
        ns[1].status = NodeStatus::Down;
        ns[4].load.replicas = 5;
        let p = Partition { id: 7, replicas: vec![1, 2, 3, 4], lost: vec![], bytes: 10 };
        let (actions, alarms) = plan(&ns, &[p]);
        assert!(alarms.is_empty(), "{alarms:?}");
        // Nodes 5 and 6 host nothing of the partition; 6 is the emptier.
        assert_eq!(actions, vec![Action::Replace { partition: 7, from: 2, to: 6 }]);
    }

    #[test]
    fn quorum_loss_is_reported_and_never_repaired() {
        let mut ns = nodes(6);
        ns[0].status = NodeStatus::Down;
        ns[1].status = NodeStatus::Down;
        let p = Partition { id: 3, replicas: vec![1, 2, 3, 4], lost: vec![], bytes: 10 };
        let (actions, alarms) = plan(&ns, &[p]);
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(alarms, vec![Alarm::QuorumLost { partition: 3, live: 2, quorum: 3 }]);
    }

    #[test]
    fn replacements_spread_over_nodes_as_they_are_chosen() {
        let mut ns = nodes(6);
        ns[0].status = NodeStatus::Down;
        let parts: Vec<Partition> =
            (0..4).map(|i| Partition { id: i, replicas: vec![1, 2, 3, 4], lost: vec![], bytes: 10 }).collect();
        let (actions, alarms) = plan(&ns, &parts);
        assert!(alarms.is_empty());
        let targets: Vec<NodeId> = actions
            .iter()
            .map(|a| match a {
                Action::Replace { to, .. } => *to,
            })
            .collect();
        assert_eq!(targets, vec![5, 6, 5, 6], "each choice counts the ones before it");
    }

    #[test]
    fn a_replica_lost_on_an_up_node_may_be_rebuilt_there() {
        let p = Partition { id: 2, replicas: vec![1, 2, 3, 4], lost: vec![3], bytes: 10 };
        let (actions, alarms) = plan(&nodes(4), std::slice::from_ref(&p));
        assert!(alarms.is_empty(), "{alarms:?}");
        assert_eq!(actions, vec![Action::Replace { partition: 2, from: 3, to: 3 }], "the only node free of it");
        let mut ns = nodes(6);
        ns[2].load.replicas = 50;
        let (actions, _) = plan(&ns, &[p]);
        assert_eq!(actions, vec![Action::Replace { partition: 2, from: 3, to: 5 }], "or the emptier node");
    }

    #[test]
    fn no_room_is_an_alarm() {
        let mut ns = nodes(4);
        ns[3].status = NodeStatus::Down;
        let p = Partition { id: 1, replicas: vec![1, 2, 3, 4], lost: vec![], bytes: 10 };
        let (actions, alarms) = plan(&ns, &[p]);
        assert!(actions.is_empty());
        assert!(matches!(alarms.as_slice(), [Alarm::NoRoom { partition: 1, from: 4, .. }]), "{alarms:?}");
    }
}
