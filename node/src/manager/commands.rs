//! Operator commands, run on the manager's node: services, drains, primary and secondary
//! moves. Each validates against the map and the placement rules and refuses with the
//! reason (unless forced) before it changes anything.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use weft_cluster_manager::model::NodeStatus;
use weft_cluster_manager::{balance, keyspace, placement};
use weft_proto::v1 as pb;

use super::{Manager, clock, map};

/// Longest service name.
const NAME_MAX: usize = 64;
/// Most partitions in one service.
const PARTITIONS_MAX: u32 = 4096;
/// Most replicas of one partition.
const REPLICAS_MAX: u32 = 9;
/// How long a new service waits for the nodes its placement needs (a fresh cluster answers
/// before all its nodes have registered).
const NODES_WAIT: Duration = Duration::from_secs(10);

pub(super) fn lines(v: Vec<String>, map_version: u64) -> pb::CtlResponse {
    pb::CtlResponse { lines: v, map_version, ..Default::default() }
}

impl Manager {
    /// Waits until at least `replicas` nodes are up with room for a replica, as a fresh
    /// cluster's nodes are still registering when it first answers, for at most until
    /// [`NODES_WAIT`] after this node became the manager (by then every node that is
    /// running has registered); returns the reports to place by. Past that, says how many
    /// nodes there are and how many the placement needs.
    async fn nodes_for(&self, replicas: usize) -> Result<Vec<(u64, Arc<pb::ReplicaStatus>)>, Status> {
        let deadline = self.soft.lock().since.unwrap_or_else(clock::now) + NODES_WAIT;
        loop {
            let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
            let (m, _) = map::read(&leader, &self.decoded)
                .await?
                .ok_or_else(|| Status::unavailable("the cluster map is not written yet"))?;
            let reported = self.reported();
            let nodes = map::model(&m, &reported);
            let usable = nodes.iter().filter(|n| n.status == NodeStatus::Up && n.fits(0)).count();
            if usable >= replicas {
                return Ok(reported);
            }
            if clock::now() >= deadline {
                let up = nodes.iter().filter(|n| n.status == NodeStatus::Up).count();
                return Err(Status::failed_precondition(format!(
                    "{replicas} replicas need {replicas} nodes up with room; the cluster has {usable} \
                     ({} registered, {up} up): start more nodes, activate drained ones, or ask for fewer --replicas",
                    nodes.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The map with the reports and alarms behind it.
    pub(super) async fn get_map(&self) -> Result<pb::GetMapResponse, Status> {
        let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
        let (map, version) = map::read(&leader, &self.decoded)
            .await?
            .ok_or_else(|| Status::unavailable("the cluster map is not written yet"))?;
        let reported = self.reported();
        let primaries = super::reconcile::primaries(reported.iter().map(|(node, s)| (*node, &**s)));
        let (reported_by, reported) = reported.into_iter().map(|(by, s)| (by, Arc::unwrap_or_clone(s))).unzip();
        Ok(pb::GetMapResponse {
            map: Some(Arc::unwrap_or_clone(map)),
            version,
            manager_node: self.id,
            reported,
            reported_by,
            alarms: self.alarms(),
            primaries,
        })
    }

    pub(super) async fn create_service(
        self: &Arc<Self>,
        req: pb::CreateServiceRequest,
    ) -> Result<pb::CtlResponse, Status> {
        let name = req.name.trim().to_string();
        if name.is_empty()
            || name.len() > NAME_MAX
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Status::invalid_argument(format!(
                "service name {name:?}: 1 to {NAME_MAX} characters of letters, digits, '-', '_' or '.'"
            )));
        }
        if req.partitions == 0 || req.partitions > PARTITIONS_MAX {
            return Err(Status::invalid_argument(format!("--partitions must be 1 to {PARTITIONS_MAX}")));
        }
        let replicas = if req.replicas == 0 { self.cfg.default_replicas } else { req.replicas };
        if replicas > REPLICAS_MAX {
            return Err(Status::invalid_argument(format!("--replicas must be 1 to {REPLICAS_MAX}")));
        }
        let reported = self.nodes_for(replicas as usize).await?;
        let (out, version) = self
            .update(|m| {
                if m.services.contains_key(&name) {
                    return Err(Status::already_exists(format!("service {name} exists")));
                }
                let mut nodes = map::model(m, &reported);
                let mut out = vec![format!("service {name}: {} partitions x {replicas} replicas", req.partitions)];
                let mut ids = Vec::new();
                for index in 0..req.partitions {
                    let placed = placement::place_partition(&nodes, replicas as usize, 0).map_err(|e| {
                        Status::failed_precondition(format!("cannot place partition {index} of {name}: {e}"))
                    })?;
                    for n in &placed {
                        placement::count_replica(&mut nodes, *n, 0);
                    }
                    let id = m.next_partition;
                    m.next_partition += 1;
                    let first = m.next_replica;
                    m.next_replica += placed.len() as u64;
                    let (low, high) = keyspace::range(index, req.partitions);
                    m.partitions.insert(
                        id,
                        pb::PartitionInfo {
                            id,
                            service: name.clone(),
                            index,
                            low,
                            high,
                            replicas: placed
                                .iter()
                                .zip(first..)
                                .map(|(node, replica)| pb::ReplicaPlacement { node: *node, replica })
                                .collect(),
                            created: false,
                            pending: None,
                            incarnation: 0,
                            restoring: req.restoring,
                        },
                    );
                    out.push(format!("  partition {id} ({name}/{index}) on nodes {placed:?}"));
                    ids.push(id);
                }
                m.services.insert(
                    name.clone(),
                    pb::ServiceInfo { name: name.clone(), partitions: req.partitions, replicas, partition_ids: ids },
                );
                Ok(out)
            })
            .await?;
        tracing::info!(service = %name, partitions = req.partitions, replicas, "service created");
        Ok(lines(out, version))
    }

    pub(super) async fn delete_service(&self, req: pb::DeleteServiceRequest) -> Result<pb::CtlResponse, Status> {
        let (n, version) = self
            .update(|m| {
                let s = m
                    .services
                    .remove(&req.name)
                    .ok_or_else(|| Status::not_found(format!("no service {}", req.name)))?;
                for id in &s.partition_ids {
                    m.partitions.remove(id);
                }
                Ok(s.partition_ids.len())
            })
            .await?;
        tracing::info!(service = %req.name, "service deleted");
        Ok(lines(vec![format!("service {} deleted; its {n} partitions' replicas are being closed", req.name)], version))
    }

    pub(super) async fn set_drained(&self, node: u64, drained: bool, force: bool) -> Result<pb::CtlResponse, Status> {
        let (was, version) = self
            .update(|m| {
                let widest = m.services.values().map(|s| s.replicas).max().unwrap_or(0) as usize;
                let takers = m
                    .nodes
                    .values()
                    .filter(|n| n.id != node && n.state == pb::NodeState::Up as i32 && !n.drained)
                    .count();
                if drained && takers < widest && !force {
                    return Err(Status::failed_precondition(format!(
                        "draining node {node} leaves {takers} nodes to hold services of {widest} replicas: its replicas \
                         could not all move; --force to drain anyway"
                    )));
                }
                let n = m.nodes.get_mut(&node).ok_or_else(|| Status::not_found(format!("no node {node}")))?;
                let was = n.drained;
                n.drained = drained;
                if n.state != pb::NodeState::Down as i32 {
                    n.state = if drained { pb::NodeState::Draining } else { pb::NodeState::Up } as i32;
                }
                Ok(was)
            })
            .await?;
        let line = match (was, drained) {
            (false, true) => format!("node {node} is draining: its replicas move to other nodes, it takes no new ones"),
            (true, true) => format!("node {node} was already draining"),
            (true, false) => format!("node {node} is active again: it takes new replicas"),
            (false, false) => format!("node {node} was already active"),
        };
        tracing::info!(node, drained, "operator set node drain");
        Ok(lines(vec![line], version))
    }

    /// Forgets a node that is gone for good: it leaves the map, and with it `ctl status`,
    /// placement and the upgrade walk. Refused while any partition still has (or is
    /// moving) a replica on it, while it is a seed (every node names the seeds), while it
    /// still heartbeats, and during an upgrade walk. A removed node that comes back
    /// registers again as a new, empty node.
    pub(super) async fn remove_node(&self, node: u64) -> Result<pb::CtlResponse, Status> {
        let seeds = self.cfg.seeds.clone();
        let (addr, version) = self
            .update(|m| {
                let n = m.nodes.get(&node).ok_or_else(|| Status::not_found(format!("no node {node}")))?;
                let mut needed: Vec<String> = m
                    .partitions
                    .values()
                    .filter_map(|p| {
                        let on = p.replicas.iter().find(|r| r.node == node).map(|r| r.replica).or_else(|| {
                            let mv = p.pending.as_ref()?;
                            [mv.to, mv.replaces].into_iter().flatten().find(|r| r.node == node).map(|r| r.replica)
                        })?;
                        Some(format!("replica {on} of partition {} ({})", p.id, p.service))
                    })
                    .collect();
                if !needed.is_empty() {
                    let more = needed.len().saturating_sub(3);
                    needed.truncate(3);
                    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                    return Err(Status::failed_precondition(format!(
                        "node {node} still hosts {}{more}: the cluster needs them; drain the node, or wait until \
                         its replicas are replaced (a down node's are, after the grace period)",
                        needed.join(", ")
                    )));
                }
                if seeds.contains(&n.addr) {
                    return Err(Status::failed_precondition(format!(
                        "node {node} ({}) is a seed: every node names it in --seeds; replace the seed list first",
                        n.addr
                    )));
                }
                if n.state != pb::NodeState::Down as i32 {
                    return Err(Status::failed_precondition(format!(
                        "node {node} is not down: it still heartbeats and would register again; stop it first"
                    )));
                }
                if m.upgrade.is_some() {
                    return Err(Status::failed_precondition(
                        "an upgrade walk is under way: remove nodes when it has finished or been aborted",
                    ));
                }
                let addr = n.addr.clone();
                m.nodes.remove(&node);
                Ok(addr)
            })
            .await?;
        self.soft.lock().seen.remove(&node);
        tracing::info!(node, %addr, "operator removed a node from the cluster map");
        Ok(lines(vec![format!("node {node} ({addr}) removed from the cluster map")], version))
    }

    fn partition(m: &pb::ClusterMap, id: u64) -> Result<&pb::PartitionInfo, Status> {
        let p = m.partitions.get(&id).ok_or_else(|| Status::not_found(format!("no partition {id}")))?;
        if !p.created || p.pending.is_some() {
            return Err(Status::failed_precondition(format!(
                "partition {id} is busy (being created or moving a replica); try again when it settles"
            )));
        }
        Ok(p)
    }

    pub(super) async fn move_primary(&self, req: pb::MovePrimaryRequest) -> Result<pb::CtlResponse, Status> {
        let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
        let (m, version) = map::read(&leader, &self.decoded)
            .await?
            .ok_or_else(|| Status::unavailable("the cluster map is not written yet"))?;
        let p = Self::partition(&m, req.partition)?;
        let from = self.primary_node(p.id);
        let reported = self.reported();
        let nodes = map::model(&m, &reported);
        let primaries = |id: u64| nodes.iter().find(|n| n.id == id).map_or(u32::MAX, |n| n.load.primaries);
        let up = |id: u64| m.nodes.get(&id).is_some_and(|n| n.state == pb::NodeState::Up as i32);
        let target = if req.to_node == 0 {
            p.replicas
                .iter()
                .filter(|r| Some(r.node) != from && up(r.node))
                .min_by_key(|r| (primaries(r.node), r.node))
                .ok_or_else(|| Status::failed_precondition(format!("partition {} has no up secondary", p.id)))?
        } else {
            p.replicas.iter().find(|r| r.node == req.to_node).ok_or_else(|| {
                Status::failed_precondition(format!("node {} hosts no replica of partition {}", req.to_node, p.id))
            })?
        };
        if Some(target.node) == from {
            return Ok(lines(
                vec![format!("partition {}: node {} is already its primary", p.id, target.node)],
                version,
            ));
        }
        if !up(target.node) && !req.force {
            return Err(Status::failed_precondition(format!(
                "node {} is not up (down or draining); --force to move the primary there anyway",
                target.node
            )));
        }
        self.transfer_primary(&m, p, target.replica).await?;
        // Confirm from the new primary itself.
        let addr = Self::addr_of(&m, target.node)?;
        let deadline = clock::now() + Duration::from_secs(10);
        loop {
            let status = self.admin(&addr)?.status(pb::ReplicaStatusRequest { partition: p.id }).await;
            if status.is_ok_and(|s| s.get_ref().role == pb::Role::Primary as i32) {
                break;
            }
            if clock::now() > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "partition {}: node {} did not become primary within 10 s",
                    p.id, target.node
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let from = from.map_or("unknown".to_string(), |n| format!("node {n}"));
        tracing::info!(partition = p.id, to = target.node, "operator moved a primary");
        Ok(lines(vec![format!("partition {}: primary moved from {from} to node {}", p.id, target.node)], version))
    }

    pub(super) async fn move_secondary(
        self: &Arc<Self>,
        req: pb::MoveSecondaryRequest,
    ) -> Result<pb::CtlResponse, Status> {
        let reported = self.reported();
        let primary = self.primary_node(req.partition);
        let ((to, replica), version) = self
            .update(|m| {
                let p = Self::partition(m, req.partition)?;
                if !p.replicas.iter().any(|r| r.node == req.from_node) {
                    return Err(Status::failed_precondition(format!(
                        "node {} hosts no replica of partition {}",
                        req.from_node, p.id
                    )));
                }
                if primary == Some(req.from_node) && !req.force {
                    return Err(Status::failed_precondition(format!(
                        "node {} hosts partition {}'s primary; move-primary first, or --force",
                        req.from_node, p.id
                    )));
                }
                let nodes = map::model(m, &reported);
                let hosting: Vec<u64> = p.replicas.iter().map(|r| r.node).collect();
                let bytes = map::partition_bytes(&reported).get(&p.id).copied().unwrap_or(0);
                let best = placement::choose(&nodes, &hosting, bytes);
                let to = if req.to_node == 0 {
                    best.map_err(|e| Status::failed_precondition(format!("no node can take the replica: {e}")))?
                } else {
                    let node = nodes
                        .iter()
                        .find(|n| n.id == req.to_node)
                        .ok_or_else(|| Status::not_found(format!("no node {}", req.to_node)))?;
                    let rank = placement::rank(&nodes, &hosting, node, bytes).ok_or_else(|| {
                        Status::failed_precondition(format!(
                            "node {} cannot take it: it is not up, already hosts partition {}, or is full",
                            req.to_node, p.id
                        ))
                    })?;
                    let best_ud = best
                        .ok()
                        .and_then(|b| nodes.iter().find(|n| n.id == b))
                        .and_then(|b| placement::rank(&nodes, &hosting, b, bytes))
                        .map_or(usize::MAX, |r| r.ud_shared);
                    if rank.ud_shared > best_ud && !req.force {
                        return Err(Status::failed_precondition(format!(
                            "node {} shares an upgrade domain with another replica of partition {} while a node \
                             in a free domain exists; --force to move there anyway",
                            req.to_node, p.id
                        )));
                    }
                    req.to_node
                };
                let replica = m.next_replica;
                m.next_replica += 1;
                let p = m.partitions.get_mut(&req.partition).ok_or_else(|| Status::not_found("partition vanished"))?;
                p.pending = Some(pb::PendingMove {
                    to: Some(pb::ReplicaPlacement { node: to, replica }),
                    replaces: p.replicas.iter().find(|r| r.node == req.from_node).cloned(),
                    reason: format!("operator: move from node {}", req.from_node),
                    opened: false,
                });
                Ok((to, replica))
            })
            .await?;
        self.spawn_op(req.partition);
        Ok(lines(
            vec![format!(
                "partition {}: building replica {replica} on node {to} to replace the one on node {}",
                req.partition, req.from_node
            )],
            version,
        ))
    }

    /// Plans (and unless `dry_run`, starts) the moves that even out replica counts and memory.
    pub(super) async fn rebalance(self: &Arc<Self>, req: pb::RebalanceRequest) -> Result<pb::CtlResponse, Status> {
        let threshold = if req.threshold > 0.0 { req.threshold } else { self.cfg.balance_threshold };
        if !threshold.is_finite() || threshold < 1.0 {
            return Err(Status::invalid_argument("--threshold must be at least 1"));
        }
        let max_moves = if req.max_moves == 0 { 16 } else { req.max_moves as usize };
        let reported = self.reported();
        let ((out, plan, planned, transfers), version) = self
            .update(|m| {
                let nodes = map::model(m, &reported);
                let placed = self.placed(m, &reported);
                let before = balance::imbalance(&nodes);
                let mut moves = balance::plan(&nodes, &placed, threshold, max_moves);
                let mut seen = std::collections::BTreeSet::new();
                moves.retain(|mv| seen.insert(mv.partition));
                let mut after = nodes.clone();
                for mv in &moves {
                    mv.apply(&mut after);
                }
                let mut out = vec![format!(
                    "imbalance {before:.2} (most over least replicas, or engine memory once a node holds over \
                     64 MiB, per up node; threshold {threshold:.2})"
                )];
                if moves.is_empty() {
                    out.push("nothing to move".into());
                }
                for mv in &moves {
                    out.push(format!(
                        "  partition {}: node {} -> node {} ({} bytes to copy)",
                        mv.partition, mv.from, mv.to, mv.bytes
                    ));
                }
                if !moves.is_empty() {
                    out.push(format!("predicted imbalance after: {:.2}", balance::imbalance(&after)));
                }
                // Primaries even out by leader transfers among partitions not moving.
                let steady: Vec<_> =
                    placed.iter().filter(|p| !moves.iter().any(|mv| mv.partition == p.id)).cloned().collect();
                let transfers = balance::plan_primaries(&nodes, &steady, threshold, max_moves);
                let load_ratio = balance::primary_load_ratio(&nodes, &steady);
                if load_ratio > 1.0 {
                    out.push(format!(
                        "primary request load: busiest over least busy node {:.2} (counts once a node's \
                         primaries serve over {} requests/s)",
                        load_ratio,
                        balance::REQUEST_FLOOR
                    ));
                }
                for t in &transfers {
                    out.push(format!("  partition {}: primary node {} -> node {}", t.partition, t.from, t.to));
                }
                let plan = pb::RebalancePlan {
                    imbalance_before: before,
                    imbalance_after: balance::imbalance(&after),
                    threshold,
                    moves: moves
                        .iter()
                        .map(|mv| pb::PlannedMove {
                            partition: mv.partition,
                            from: mv.from,
                            to: mv.to,
                            bytes: mv.bytes,
                        })
                        .collect(),
                    primary_load_ratio: if load_ratio > 1.0 { load_ratio } else { 0.0 },
                    transfers: transfers
                        .iter()
                        .map(|t| pb::PlannedTransfer { partition: t.partition, from: t.from, to: t.to })
                        .collect(),
                    started: !req.dry_run,
                };
                if req.dry_run {
                    return Ok((out, plan, Vec::new(), Vec::new()));
                }
                for mv in &moves {
                    let replica = m.next_replica;
                    m.next_replica += 1;
                    if let Some(p) = m.partitions.get_mut(&mv.partition) {
                        p.pending = Some(pb::PendingMove {
                            to: Some(pb::ReplicaPlacement { node: mv.to, replica }),
                            replaces: p.replicas.iter().find(|r| r.node == mv.from).cloned(),
                            reason: format!("rebalance: from node {}", mv.from),
                            opened: false,
                        });
                    }
                }
                Ok((out, plan, moves.iter().map(|mv| mv.partition).collect(), transfers))
            })
            .await?;
        if !planned.is_empty() || !transfers.is_empty() {
            tracing::info!(moves = planned.len(), primary_moves = transfers.len(), "rebalancing");
        }
        // Leader transfers need no map change: the next heartbeats report the new primaries.
        let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
        let (m, _) = map::read(&leader, &self.decoded)
            .await?
            .ok_or_else(|| Status::unavailable("the cluster map is not written yet"))?;
        for t in &transfers {
            let (Some(p), Some(to)) = (
                m.partitions.get(&t.partition),
                m.partitions.get(&t.partition).and_then(|p| p.replicas.iter().find(|r| r.node == t.to)),
            ) else {
                continue;
            };
            if let Err(e) = self.transfer_primary(&m, p, to.replica).await {
                tracing::warn!(partition = p.id, error = %e.message(), "primary move for balance failed");
            }
        }
        Ok(pb::CtlResponse { rebalance: Some(plan), ..lines(out, version) })
    }
}
