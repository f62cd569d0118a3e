//! The cluster manager's figures for the metrics port: nodes by state, partitions below
//! their replica count, quorum lost, moves, balance, the upgrade walk.
//!
//! Only the node that is the cluster manager has them (its map replica is the map's
//! primary); they move with the manager on failover, so a dashboard reads them as
//! `max(...)` over every node. Read from the map as last applied here and the nodes' last
//! reports: nothing is asked of any node, and nothing waits.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use weft_cluster_manager::balance;
use weft_proto::v1 as pb;

use super::{Manager, map};

/// The cluster-wide figures, as the cluster manager sees them now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterGauges {
    /// Nodes by state: up, draining, down.
    pub nodes_up: u64,
    /// Nodes being emptied by an operator.
    pub nodes_draining: u64,
    /// Nodes silent past the down grace period.
    pub nodes_down: u64,
    /// Partitions created.
    pub partitions: u64,
    /// Partitions with fewer voters reporting in (primary or secondary) than their service
    /// asks for.
    pub under_replicated: u64,
    /// Partitions that lost their write quorum (standing alarms).
    pub quorum_lost: u64,
    /// Standing alarms of any kind.
    pub alarms: u64,
    /// Replica moves in flight (in the map, not yet finished).
    pub moves_in_flight: u64,
    /// Moves this manager finished since it became the manager.
    pub moves_done: u64,
    /// The balance measure `weft ctl rebalance` reports, and its threshold.
    pub imbalance: f64,
    /// The threshold past which a rebalance moves replicas.
    pub imbalance_threshold: f64,
    /// Whether an upgrade walk is in flight.
    pub upgrade_in_progress: bool,
    /// UDs in the walk, and how many are walked already.
    pub upgrade_domains_total: u64,
    /// UDs already walked.
    pub upgrade_domains_done: u64,
    /// Partitions whose stand-in replica outside the walked UD the walk keeps now.
    pub upgrade_partitions_waiting: u64,
}

impl Manager {
    /// The figures when this node is the cluster manager and has a map; else `None`.
    pub fn gauges(&self) -> Option<ClusterGauges> {
        let leader = self.leading()?;
        let (m, _) = map::read_applied(&leader, &self.decoded).ok().flatten()?;
        let reported = self.reported();
        let alarms = self.alarms();
        let mut g = ClusterGauges {
            partitions: m.partitions.values().filter(|p| p.created).count() as u64,
            quorum_lost: alarms.iter().filter(|a| a.starts_with("QUORUM LOST")).count() as u64,
            alarms: alarms.len() as u64,
            moves_in_flight: m.partitions.values().filter(|p| p.pending.is_some()).count() as u64,
            moves_done: self.moves_done.load(Ordering::Relaxed),
            imbalance: balance::imbalance(&map::model(&m, &reported)),
            imbalance_threshold: self.cfg.balance_threshold,
            ..ClusterGauges::default()
        };
        for n in m.nodes.values() {
            match map::status(n) {
                weft_cluster_manager::model::NodeStatus::Up => g.nodes_up += 1,
                weft_cluster_manager::model::NodeStatus::Draining => g.nodes_draining += 1,
                weft_cluster_manager::model::NodeStatus::Down => g.nodes_down += 1,
            }
        }
        g.under_replicated = under_replicated(&m, &reported);
        if let Some(u) = &m.upgrade {
            g.upgrade_in_progress = true;
            g.upgrade_domains_total = u.uds.len() as u64;
            g.upgrade_domains_done = u64::from(u.index).min(g.upgrade_domains_total);
            g.upgrade_partitions_waiting = u.stand_ins.len() as u64;
        }
        Some(g)
    }
}

/// Created partitions with fewer voters reporting in from up or draining nodes than
/// their service's replica count.
fn under_replicated(m: &pb::ClusterMap, reported: &[(u64, std::sync::Arc<pb::ReplicaStatus>)]) -> u64 {
    let live =
        |node: u64| m.nodes.get(&node).is_some_and(|n| map::status(n) != weft_cluster_manager::model::NodeStatus::Down);
    let voter = |s: &pb::ReplicaStatus| s.role == pb::Role::Primary as i32 || s.role == pb::Role::Secondary as i32;
    let mut voters: BTreeMap<u64, u32> = BTreeMap::new();
    for (node, s) in reported {
        if live(*node) && voter(s) {
            *voters.entry(s.partition).or_default() += 1;
        }
    }
    let target: BTreeMap<&str, u32> = m.services.values().map(|s| (s.name.as_str(), s.replicas)).collect();
    m.partitions
        .values()
        .filter(|p| p.created)
        .filter(|p| {
            let want = target.get(p.service.as_str()).copied().unwrap_or(p.replicas.len() as u32);
            voters.get(&p.id).copied().unwrap_or(0) < want
        })
        .count() as u64
}
