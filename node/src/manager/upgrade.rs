//! The upgrade-domain walk on the live cluster (`weft ctl upgrade`).
//!
//! The walk lives in the map (`ClusterMap.upgrade`), so a new manager resumes it. For each
//! UD in order (sorted by name):
//! 1. **Prepare**: [`walk::plan_ud`] picks a stand-in node outside the UD for every replica
//!    in it; each is built as an extra voter (a pending move without a replaced replica).
//!    Primaries move off the UD, and so does the manager itself. The walk goes on only when
//!    every stand-in has caught up and no primary is left in the UD.
//! 2. **Restart**: every node of the UD is asked to restart (it re-executes its binary, so
//!    a binary replaced on disk is the upgrade); the walk waits until each heartbeats with a
//!    new incarnation.
//! 3. **Recover**: once a UD replica reports itself caught up again (durable nodes recover
//!    from disk), its stand-in is removed; a replica the restart lost (volatile) is removed
//!    instead and the stand-in keeps its place. Then the next UD.
//!
//! Every partition thus keeps its full replica count up while a UD is down. Pause stops
//! the walk between steps; resume continues it; abort forgets it (stand-ins already built
//! stay as extra replicas until an operator moves them). A walk is refused while a node is
//! down, a move is in flight, a UD's plan is blocked or puts a quorum at risk, or the
//! cluster map's own replicas are volatile (a restarted volatile seed would lose its map
//! replica, and re-replicating the map group is not built).

use std::sync::Arc;

use tonic::Status;
use weft_cluster_manager::walk::{self, Placed};
use weft_proto::v1 as pb;

use super::{MAP_PARTITION, Manager, map};

/// A replica is caught up when it has applied to within this many entries of the
/// partition's most advanced replica.
const CAUGHT_UP_LAG: u64 = 64;

fn phase_name(p: i32) -> &'static str {
    match pb::UpgradePhase::try_from(p) {
        Ok(pb::UpgradePhase::Prepare) => "prepare (primaries off, stand-ins built)",
        Ok(pb::UpgradePhase::Restart) => "restart (nodes coming back)",
        Ok(pb::UpgradePhase::Recover) => "recover (replicas catching up, stand-ins removed)",
        _ => "unknown",
    }
}

impl Manager {
    /// Settled partitions as the walk and balance code see them.
    pub(super) fn placed(&self, m: &pb::ClusterMap, reported: &[(u64, pb::ReplicaStatus)]) -> Vec<Placed> {
        m.partitions
            .values()
            .filter(|p| p.created && p.pending.is_none() && !p.replicas.is_empty())
            .map(|p| {
                let replicas: Vec<u64> = p.replicas.iter().map(|r| r.node).collect();
                Placed {
                    id: p.id,
                    primary: self.primary_node(p.id).unwrap_or(replicas[0]),
                    replicas,
                    bytes: map::partition_bytes(p.id, reported),
                    requests_per_s: reported
                        .iter()
                        .filter(|(_, s)| s.partition == p.id && s.role == pb::Role::Primary as i32)
                        .map(|(_, s)| s.requests_per_s)
                        .sum(),
                }
            })
            .collect()
    }

    fn uds(m: &pb::ClusterMap) -> Vec<String> {
        let mut uds: Vec<String> = m.nodes.values().map(|n| n.ud.clone()).collect();
        uds.sort();
        uds.dedup();
        uds
    }

    fn describe(u: &pb::UpgradeState) -> String {
        let Some(ud) = u.uds.get(u.index as usize) else {
            return format!("upgrade walk: all {} UDs walked, finishing", u.uds.len());
        };
        format!(
            "upgrade walk: UD {ud} ({} of {}), phase {}{}{}",
            u.index + 1,
            u.uds.len(),
            phase_name(u.phase),
            if u.paused { ", PAUSED" } else { "" },
            if u.waiting.is_empty() { String::new() } else { format!("; waiting for {}", u.waiting) }
        )
    }

    pub(super) async fn upgrade(self: &Arc<Self>, req: pb::UpgradeRequest) -> Result<pb::CtlResponse, Status> {
        let action = pb::UpgradeAction::try_from(req.action).map_err(|_| Status::invalid_argument("unknown action"))?;
        let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
        let (m, version) =
            map::read(&leader).await?.ok_or_else(|| Status::unavailable("the cluster map is not written yet"))?;
        let reported = self.reported();
        match action {
            pb::UpgradeAction::Status => {
                let line = m.upgrade.as_ref().map_or("no upgrade walk in flight".to_string(), Self::describe);
                Ok(pb::CtlResponse { lines: vec![line], map_version: version })
            }
            pb::UpgradeAction::DryRun | pb::UpgradeAction::Apply => {
                if let Some(u) = &m.upgrade {
                    return Err(Status::failed_precondition(format!(
                        "{}; use --pause, --resume or --abort",
                        Self::describe(u)
                    )));
                }
                let nodes = map::model(&m, &reported);
                let placed = self.placed(&m, &reported);
                let baseline = nodes.iter().map(|n| n.load.replicas).max().unwrap_or(0);
                let mut lines = vec![format!("baseline: at most {baseline} replicas per node")];
                let mut refusals = Vec::new();
                for ud in Self::uds(&m) {
                    let plan = walk::plan_ud(&nodes, &placed, &ud);
                    lines.push(format!(
                        "UD {ud}: {} primary moves, {} stand-ins to build, {} blocked, {} partitions with quorum at risk, \
                         peak {} replicas per live node ({:.2}x)",
                        plan.primary_moves.len(),
                        plan.builds.len(),
                        plan.blocked.len(),
                        plan.quorum_at_risk.len(),
                        plan.peak_replicas_per_node,
                        f64::from(plan.peak_replicas_per_node) / f64::from(baseline.max(1)),
                    ));
                    for b in &plan.builds {
                        lines.push(format!(
                            "  partition {}: stand-in on node {} for node {} ({} bytes)",
                            b.partition, b.to, b.stands_in_for, b.bytes
                        ));
                    }
                    for (p, from, e) in &plan.blocked {
                        refusals.push(format!("UD {ud}: partition {p} on node {from}: {e}"));
                    }
                    for p in &plan.quorum_at_risk {
                        refusals.push(format!("UD {ud}: partition {p} would lose its write quorum"));
                    }
                }
                if action == pb::UpgradeAction::DryRun {
                    lines.extend(refusals.iter().map(|r| format!("would refuse: {r}")));
                    return Ok(pb::CtlResponse { lines, map_version: version });
                }
                if let Some(n) = m.nodes.values().find(|n| n.state == pb::NodeState::Down as i32) {
                    refusals.push(format!("node {} is down; a walk needs every node up", n.id));
                }
                if m.partitions.values().any(|p| !p.created || p.pending.is_some()) {
                    refusals.push("a replica move is in flight; wait for it (weft ctl partitions)".into());
                }
                if reported.iter().any(|(_, s)| s.partition == MAP_PARTITION && s.mode != pb::LogMode::Durable as i32) {
                    refusals.push(
                        "the cluster map's replicas are volatile: a restarted seed would lose its map replica \
                         (run the seeds with --durable)"
                            .into(),
                    );
                }
                if !refusals.is_empty() {
                    return Err(Status::failed_precondition(format!("upgrade refused: {}", refusals.join("; "))));
                }
                let uds = Self::uds(&m);
                let (_, version) = self
                    .update(|m| {
                        if m.upgrade.is_some() {
                            return Err(Status::failed_precondition("an upgrade walk started meanwhile"));
                        }
                        m.upgrade = Some(pb::UpgradeState {
                            uds: uds.clone(),
                            phase: pb::UpgradePhase::Prepare as i32,
                            ..Default::default()
                        });
                        Ok(())
                    })
                    .await?;
                tracing::info!(uds = ?uds, "upgrade walk started");
                lines.push(format!("upgrade walk started over {} UDs", uds.len()));
                Ok(pb::CtlResponse { lines, map_version: version })
            }
            pb::UpgradeAction::Pause | pb::UpgradeAction::Resume => {
                let paused = action == pb::UpgradeAction::Pause;
                let (line, version) = self
                    .update(|m| {
                        let u = m
                            .upgrade
                            .as_mut()
                            .ok_or_else(|| Status::failed_precondition("no upgrade walk in flight"))?;
                        u.paused = paused;
                        Ok(Self::describe(u))
                    })
                    .await?;
                tracing::info!(paused, "upgrade walk paused or resumed");
                Ok(pb::CtlResponse { lines: vec![line], map_version: version })
            }
            pb::UpgradeAction::Abort => {
                let (n, version) = self
                    .update(|m| {
                        let u =
                            m.upgrade.take().ok_or_else(|| Status::failed_precondition("no upgrade walk in flight"))?;
                        Ok(u.stand_ins.len())
                    })
                    .await?;
                tracing::warn!(stand_ins = n, "upgrade walk aborted");
                Ok(pb::CtlResponse {
                    lines: vec![format!("upgrade walk aborted; {n} stand-in replicas stay as extra replicas")],
                    map_version: version,
                })
            }
        }
    }

    /// Sets what the walk waits for (shown by `weft ctl upgrade --status`), if it changed.
    async fn waiting(&self, u: &pb::UpgradeState, what: String) -> Result<(), Status> {
        if u.waiting == what {
            return Ok(());
        }
        self.update(|m| {
            if let Some(x) = m.upgrade.as_mut() {
                x.waiting = what.clone();
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// One step of the walk in the map.
    pub(super) async fn drive_upgrade(self: &Arc<Self>, m: &pb::ClusterMap) -> Result<(), Status> {
        let Some(u) = m.upgrade.clone() else { return Ok(()) };
        let Some(ud) = u.uds.get(u.index as usize).cloned() else {
            self.update(|m| {
                m.upgrade = None;
                Ok(())
            })
            .await?;
            tracing::info!("upgrade walk complete");
            return Ok(());
        };
        let reported = self.reported();
        let in_ud = |node: u64| m.nodes.get(&node).is_some_and(|n| n.ud == ud);
        match pb::UpgradePhase::try_from(u.phase) {
            Ok(pb::UpgradePhase::Prepare) if !u.planned => {
                if m.partitions.values().any(|p| p.pending.is_some()) {
                    return self.waiting(&u, "moves in flight to finish".into()).await;
                }
                let plan = walk::plan_ud(&map::model(m, &reported), &self.placed(m, &reported), &ud);
                if !plan.blocked.is_empty() || !plan.quorum_at_risk.is_empty() {
                    let why =
                        format!("room for stand-ins ({} blocked)", plan.blocked.len() + plan.quorum_at_risk.len());
                    return self.waiting(&u, why).await;
                }
                self.update(|m| {
                    let mut stand_ins = Vec::new();
                    for b in &plan.builds {
                        let replica = m.next_replica;
                        let Some(p) = m.partitions.get_mut(&b.partition) else { continue };
                        let Some(original) = p.replicas.iter().find(|r| r.node == b.stands_in_for).copied() else {
                            continue;
                        };
                        let stand_in = pb::ReplicaPlacement { node: b.to, replica };
                        p.pending = Some(pb::PendingMove {
                            to: Some(stand_in),
                            replaces: None,
                            reason: format!("upgrade of {ud}: stand-in for node {}", b.stands_in_for),
                            opened: false,
                        });
                        m.next_replica += 1;
                        stand_ins.push(pb::StandIn {
                            partition: b.partition,
                            original: Some(original),
                            stand_in: Some(stand_in),
                        });
                    }
                    if let Some(x) = m.upgrade.as_mut() {
                        x.stand_ins = stand_ins;
                        x.planned = true;
                        x.waiting = "stand-ins to catch up".into();
                    }
                    Ok(())
                })
                .await?;
                tracing::info!(%ud, stand_ins = plan.builds.len(), "upgrade walk: building stand-ins");
                Ok(())
            }
            Ok(pb::UpgradePhase::Prepare) => {
                let building = u
                    .stand_ins
                    .iter()
                    .filter(|s| m.partitions.get(&s.partition).is_some_and(|p| p.pending.is_some()))
                    .count();
                if building > 0 {
                    return self.waiting(&u, format!("{} to catch up", count(building, "stand-in", "stand-ins"))).await;
                }
                // Primaries off the UD, the manager last.
                let mut left = 0;
                for p in m.partitions.values() {
                    let Some(primary) = self.primary_node(p.id).filter(|n| in_ud(*n)) else { continue };
                    left += 1;
                    if let Some(to) = p.replicas.iter().find(|r| !in_ud(r.node))
                        && let Err(e) = self.transfer_primary(m, p, to.replica).await
                    {
                        tracing::debug!(partition = p.id, from = primary, error = %e.message(), "primary move off the UD");
                    }
                }
                if left > 0 {
                    return self.waiting(&u, format!("{} to leave the UD", count(left, "primary", "primaries"))).await;
                }
                if in_ud(self.id) {
                    if let Some(r) = self.host.get(MAP_PARTITION) {
                        let members = r.state(|st| st.membership.membership().clone());
                        let to =
                            members.nodes().find(|(_, n)| m.nodes.values().any(|x| x.addr == n.addr && x.ud != ud));
                        if let Some((id, _)) = to {
                            tracing::info!(to = id, "upgrade walk: handing the cluster manager off the UD");
                            let _ = r.raft().trigger().transfer_leader(*id).await;
                        }
                    }
                    return Ok(());
                }
                let incarnations: std::collections::HashMap<u64, u64> =
                    m.nodes.values().filter(|n| n.ud == ud).map(|n| (n.id, n.incarnation)).collect();
                self.update(|m| {
                    if let Some(x) = m.upgrade.as_mut() {
                        x.phase = pb::UpgradePhase::Restart as i32;
                        x.incarnations = incarnations.clone();
                        x.waiting = "nodes to restart".into();
                    }
                    Ok(())
                })
                .await?;
                for n in m.nodes.values().filter(|n| n.ud == ud) {
                    match self.admin(&n.addr) {
                        Ok(mut a) => {
                            if let Err(e) = a.restart(pb::RestartRequest {}).await {
                                tracing::warn!(node = n.id, error = %e.message(), "restart request failed");
                            }
                        }
                        Err(e) => tracing::warn!(node = n.id, error = %e.message(), "restart request failed"),
                    }
                }
                tracing::info!(%ud, "upgrade walk: nodes restarting");
                Ok(())
            }
            Ok(pb::UpgradePhase::Restart) => {
                let back = u.incarnations.iter().all(|(id, before)| {
                    m.nodes.get(id).is_some_and(|n| n.incarnation != *before && n.state != pb::NodeState::Down as i32)
                });
                if !back {
                    let missing = u
                        .incarnations
                        .iter()
                        .filter(|(id, before)| m.nodes.get(id).is_none_or(|n| n.incarnation == **before))
                        .count();
                    return self.waiting(&u, format!("{missing} nodes to come back")).await;
                }
                self.update(|m| {
                    if let Some(x) = m.upgrade.as_mut() {
                        x.phase = pb::UpgradePhase::Recover as i32;
                        x.waiting = "replicas to catch up".into();
                    }
                    Ok(())
                })
                .await?;
                tracing::info!(%ud, "upgrade walk: nodes back");
                Ok(())
            }
            Ok(pb::UpgradePhase::Recover) => {
                let mut remaining = Vec::new();
                let mut removals = Vec::new();
                for s in &u.stand_ins {
                    let (Some(original), Some(stand_in)) = (s.original, s.stand_in) else { continue };
                    let Some(p) = m.partitions.get(&s.partition) else { continue };
                    if p.pending.is_some() {
                        remaining.push(*s);
                        continue;
                    }
                    let head = reported.iter().filter(|(_, r)| r.partition == p.id).map(|(_, r)| r.applied_index).max();
                    let report = self.soft.lock().seen.get(&original.node).map(|seen| {
                        seen.replicas.iter().find(|r| r.partition == p.id && r.replica == original.replica).cloned()
                    });
                    match report {
                        // The original is back and caught up: the stand-in goes.
                        Some(Some(r)) if r.applied_index + CAUGHT_UP_LAG >= head.unwrap_or(0) => {
                            removals.push((p.id, stand_in, "upgrade: original caught up, stand-in removed"))
                        }
                        // The node is back without it (volatile): the original goes.
                        Some(None) => removals.push((p.id, original, "upgrade: original lost in the restart, removed")),
                        _ => remaining.push(*s),
                    }
                }
                if removals.is_empty() && remaining.is_empty() {
                    self.update(|m| {
                        if let Some(x) = m.upgrade.as_mut() {
                            x.index += 1;
                            x.phase = pb::UpgradePhase::Prepare as i32;
                            x.planned = false;
                            x.stand_ins.clear();
                            x.incarnations.clear();
                            x.waiting.clear();
                        }
                        Ok(())
                    })
                    .await?;
                    tracing::info!(%ud, "upgrade walk: UD done");
                    return Ok(());
                }
                if removals.is_empty() {
                    return self.waiting(&u, format!("{} replicas to catch up", remaining.len())).await;
                }
                self.update(|m| {
                    for (pid, replica, reason) in &removals {
                        if let Some(p) = m.partitions.get_mut(pid).filter(|p| p.pending.is_none()) {
                            p.pending = Some(pb::PendingMove {
                                to: None,
                                replaces: Some(*replica),
                                reason: (*reason).into(),
                                opened: false,
                            });
                        }
                    }
                    if let Some(x) = m.upgrade.as_mut() {
                        x.stand_ins.retain(|s| !removals.iter().any(|(pid, _, _)| *pid == s.partition));
                    }
                    Ok(())
                })
                .await?;
                Ok(())
            }
            _ => Err(Status::internal("upgrade walk in an unknown phase")),
        }
    }
}

/// `n` and the noun in the number it needs: "1 primary", "2 primaries".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
