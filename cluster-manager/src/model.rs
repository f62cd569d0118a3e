//! What the decision code knows of a node: identity, domains, capacity, current load.

/// A node id (as given to `weft node --id`).
pub type NodeId = u64;

/// Whether a node may receive replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Serving and accepting new replicas.
    Up,
    /// Serving, but being emptied by an operator: takes no new replicas.
    Draining,
    /// Silent past the grace period.
    Down,
}

/// Limits a node must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Most replicas it may host.
    pub replicas: u32,
    /// Most engine memory its replicas may hold.
    pub memory_bytes: u64,
}

/// A node's current load, from its reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// Replicas hosted.
    pub replicas: u32,
    /// Of those, primaries.
    pub primaries: u32,
    /// Engine memory of its replicas.
    pub memory_bytes: u64,
    /// Requests per second over its replicas.
    pub requests_per_s: f64,
}

/// One node as the decision code sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Id.
    pub id: NodeId,
    /// Upgrade domain: nodes upgraded (taken down) together.
    pub ud: String,
    /// Fault domain: nodes that may fail together (rack, power, host).
    pub fd: String,
    /// Up, draining or down.
    pub status: NodeStatus,
    /// Limits.
    pub capacity: Capacity,
    /// Current load.
    pub load: Load,
}

impl Node {
    /// Fraction of its replica and memory capacity a node would use with one more replica
    /// of `bytes`: the larger of the two, so the scarcer resource decides.
    pub fn utilization_after(&self, bytes: u64) -> f64 {
        let replicas = f64::from(self.load.replicas + 1) / f64::from(self.capacity.replicas.max(1));
        let memory = (self.load.memory_bytes.saturating_add(bytes)) as f64 / self.capacity.memory_bytes.max(1) as f64;
        replicas.max(memory)
    }

    /// Whether one more replica of `bytes` fits within capacity.
    pub fn fits(&self, bytes: u64) -> bool {
        self.load.replicas < self.capacity.replicas
            && self.load.memory_bytes.saturating_add(bytes) <= self.capacity.memory_bytes
    }
}
