//! Keeps the cluster map's own replica group ([`MAP_PARTITION`], on the seeds) at full
//! strength when a seed loses its replica.
//!
//! A volatile seed that restarts comes back empty: its map replica's id is still a voter,
//! but nothing answers for it. Left alone, a second such restart loses the map's quorum
//! and with it every operator command and every repair. So on each manager tick, for the
//! first voter whose seed is up, has reported since it started and does not host a map
//! replica (its own "not hosted" answer, not a guess from silence), the manager builds a
//! replacement on that same seed under a fresh replica id (from the map's `next_replica`,
//! so a lost replica's id is never reused: openraft's rule against a forgotten vote), adds
//! it as a learner, waits until it has caught up, and swaps it for the lost id in one
//! membership change. The map group stays on the seeds, where every node looks for it.
//!
//! One replacement at a time, and none while the group's membership is in a joint
//! configuration. A durable seed reopens its replica from disk before it serves, so it is
//! never taken for lost. A seed down for good is not replaced elsewhere: the seed list is
//! configuration, and moving the map off it is an operator's decision.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::async_runtime::watch::WatchReceiver;
use tonic::{Code, Status};
use weft_proto::v1 as pb;
use weft_replica::Replica;

use super::reconcile::step;
use super::{MAP_PARTITION, Manager};

/// How long a new map replica may take to catch up (the map is one small record); the
/// next tick removes the learner and tries again with another fresh id.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

impl Manager {
    /// Replaces at most one lost map replica; `Ok(true)` when it changed the group.
    pub(super) async fn heal_map_group(&self, leader: &Replica, m: &pb::ClusterMap) -> Result<bool, Status> {
        let metrics = leader.raft().metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership().clone();
        if membership.get_joint_config().len() != 1 {
            return Ok(false);
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let refused = |e: String| Status::unavailable(format!("cluster-map group change: {e}"));
        // A learner is left only by an attempt that did not finish (its seed went away
        // again, or the manager changed): remove it before trying anew.
        let stale: BTreeSet<u64> = membership.learner_ids().collect();
        if !stale.is_empty() {
            tracing::info!(?stale, "removing cluster-map learners an unfinished rebuild left");
            let remove = ChangeMembers::RemoveNodes(stale);
            leader.awake().await.change_membership(remove, false).await.map_err(|e| refused(e.to_string()))?;
            return Ok(true);
        }
        for &lost in voters.iter().filter(|v| **v != leader.id()) {
            let Some(addr) = membership.get_node(&lost).map(|n| n.addr.clone()) else { continue };
            let Some(node) = m.nodes.values().find(|n| n.addr == addr && n.state == pb::NodeState::Up as i32) else {
                continue;
            };
            // A report from this incarnation that lists no map replica.
            let reports_none = self.soft.lock().seen.get(&node.id).is_some_and(|s| {
                s.incarnation == node.incarnation && !s.replicas.values().any(|r| r.partition == MAP_PARTITION)
            });
            if !reports_none {
                continue;
            }
            let asked = step(self.admin(&addr)?.status(pb::ReplicaStatusRequest { partition: MAP_PARTITION })).await;
            match asked {
                Err(s) if s.code() == Code::NotFound => {}
                _ => continue,
            }
            let (fresh, _) = self
                .update(|m| {
                    let id = m.next_replica;
                    m.next_replica += 1;
                    Ok(id)
                })
                .await?;
            tracing::warn!(node = node.id, lost, fresh, "a seed lost its cluster-map replica; rebuilding it there");
            let open = pb::OpenReplicaRequest {
                partition: MAP_PARTITION,
                replica: fresh,
                mode: 0,
                initial: None,
                staged: false,
            };
            step(self.admin(&addr)?.open_replica(open)).await?;
            let learner = leader.awake().await.add_learner(fresh, weft_replica::node_of(&addr), true);
            tokio::time::timeout(CATCH_UP_TIMEOUT, learner)
                .await
                .map_err(|_| refused(format!("replica {fresh} did not catch up within {CATCH_UP_TIMEOUT:?}")))?
                .map_err(|e| refused(e.to_string()))?;
            let next: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != lost).chain([fresh]).collect();
            leader.awake().await.change_membership(next, false).await.map_err(|e| refused(e.to_string()))?;
            tracing::info!(node = node.id, lost, fresh, "cluster-map replica rebuilt");
            return Ok(true);
        }
        Ok(false)
    }
}
