//! Test clusters shared by the decision modules' tests.

use crate::model::Node;
use crate::walk::Placed;

/// `nodes` nodes round-robin over `uds` UDs (FD = UD), then `partitions` partitions of
/// `replicas` placed one by one by the placement code (see [`crate::sim::initial_cluster`]),
/// with capacity for 10,000 replicas per node.
pub fn cluster(
    nodes: u64,
    uds: u64,
    replicas: usize,
    partitions: u64,
    bytes: impl Fn(u64) -> u64,
) -> (Vec<Node>, Vec<Placed>) {
    let (mut ns, ps) = crate::sim::initial_cluster(nodes, uds, replicas, partitions, bytes).expect("placement");
    for n in ns.iter_mut() {
        n.capacity.replicas = 10_000;
    }
    (ns, ps)
}
