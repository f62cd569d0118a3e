//! Test clusters shared by the decision modules' tests.

use crate::model::{Capacity, Load, Node, NodeStatus};
use crate::placement::{count_replica, place_partition};
use crate::walk::Placed;

/// `nodes` nodes round-robin over `uds` UDs (FD = UD), then `partitions` partitions of
/// `replicas` placed one by one by the placement code, partition `id` holding `bytes(id)`;
/// the primary of partition `id` is its replica `id % replicas`. Node loads (replicas,
/// memory, primaries) are counted.
pub fn cluster(
    nodes: u64,
    uds: u64,
    replicas: usize,
    partitions: u64,
    bytes: impl Fn(u64) -> u64,
) -> (Vec<Node>, Vec<Placed>) {
    let mut ns: Vec<Node> = (0..nodes)
        .map(|i| Node {
            id: i + 1,
            ud: format!("ud{}", i % uds),
            fd: format!("ud{}", i % uds),
            status: NodeStatus::Up,
            capacity: Capacity { replicas: 10_000, memory_bytes: u64::MAX },
            load: Load::default(),
        })
        .collect();
    let mut ps = Vec::new();
    for id in 0..partitions {
        let placed = place_partition(&ns, replicas, bytes(id)).expect("placement");
        for r in &placed {
            count_replica(&mut ns, *r, bytes(id));
        }
        let primary = placed[id as usize % placed.len()];
        ns.iter_mut().find(|n| n.id == primary).expect("node").load.primaries += 1;
        ps.push(Placed { id, replicas: placed, primary, bytes: bytes(id) });
    }
    (ns, ps)
}
