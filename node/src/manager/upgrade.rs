//! The upgrade-domain walk on the live cluster (`weft ctl upgrade`): the executor of
//! [`walk::next`].
//!
//! The walk lives in the map (`ClusterMap.upgrade`), so a new manager resumes it. Every
//! tick the manager builds a [`WalkView`] from the map and the nodes' reports, asks
//! [`walk::next`] for the one step to take (the phases and their rules are documented
//! there, and `weft sim` runs the same function), and carries it out: records stand-ins
//! and removals as pending moves, asks primaries and the manager role off the UD, asks the
//! UD's nodes to restart (each re-executes its binary, so a binary replaced on disk is the
//! upgrade), and records the phase.
//!
//! Pause stops the walk between steps; resume continues it; abort forgets it (stand-ins
//! already built stay as extra replicas until an operator moves them). A walk is refused
//! while a node is down, a move is in flight, a UD's plan is blocked or puts a quorum at
//! risk, or the cluster map's own replicas are volatile (a restarted volatile seed would
//! lose its map replica, and re-replicating the map group is not built).

use std::sync::Arc;

use tonic::Status;
use weft_cluster_manager::walk::{
    self, Phase, Placed, ReplicaAt, Reported, StandIn, Walk, WalkPartition, WalkStep, WalkView,
};
use weft_proto::v1 as pb;

use super::{MAP_PARTITION, Manager, clock, map};

/// The walk in flight as fields (`weft ctl upgrade --json`).
pub(super) fn walk_fields(u: &pb::UpgradeState) -> pb::UpgradeWalk {
    pb::UpgradeWalk {
        uds: u.uds.clone(),
        walked: u.index.min(u.uds.len() as u32),
        phase: phase_name(u.phase).into(),
        paused: u.paused,
        waiting: u.waiting.clone(),
        stand_ins: u.stand_ins.len() as u32,
    }
}

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
    pub(super) fn placed(&self, m: &pb::ClusterMap, reported: &[(u64, Arc<pb::ReplicaStatus>)]) -> Vec<Placed> {
        self.walk_view(m, reported).placed()
    }

    /// The map and the nodes' reports as [`walk::next`] takes them.
    fn walk_view(&self, m: &pb::ClusterMap, reported: &[(u64, Arc<pb::ReplicaStatus>)]) -> WalkView {
        let at = |r: &pb::ReplicaPlacement| ReplicaAt { node: r.node, replica: r.replica };
        // Indexed once: a lookup per partition, not a scan of every report.
        let bytes = map::partition_bytes(reported);
        let primary = self.primary_nodes();
        let mut rates: std::collections::BTreeMap<u64, f64> = Default::default();
        for (_, s) in reported.iter().filter(|(_, s)| s.role == pb::Role::Primary as i32) {
            *rates.entry(s.partition).or_default() += s.requests_per_s;
        }
        let partitions = m
            .partitions
            .values()
            .map(|p| WalkPartition {
                id: p.id,
                replicas: p.replicas.iter().map(at).collect(),
                primary: primary.get(&p.id).copied(),
                moving: !p.created || p.pending.is_some(),
                bytes: bytes.get(&p.id).copied().unwrap_or(0),
                requests_per_s: rates.get(&p.id).copied().unwrap_or(0.0),
            })
            .collect();
        let reports = {
            let soft = self.soft.lock();
            soft.seen
                .iter()
                .map(|(node, seen)| {
                    let hosted = seen
                        .replicas
                        .values()
                        .map(|r| Reported {
                            partition: r.partition,
                            replica: r.replica,
                            applied_index: r.applied_index,
                        })
                        .collect();
                    (*node, hosted)
                })
                .collect()
        };
        WalkView {
            nodes: map::model(m, reported),
            incarnations: m.nodes.values().map(|n| (n.id, n.incarnation)).collect(),
            partitions,
            reports,
            manager: Some(self.id),
        }
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
        let (m, version) = map::read(&leader, &self.decoded)
            .await?
            .ok_or_else(|| Status::unavailable("the cluster map is not written yet"))?;
        let reported = self.reported();
        match action {
            pb::UpgradeAction::Status => {
                let line = m.upgrade.as_ref().map_or("no upgrade walk in flight".to_string(), Self::describe);
                Ok(pb::CtlResponse {
                    lines: vec![line],
                    map_version: version,
                    upgrade_walk: m.upgrade.as_ref().map(walk_fields),
                    ..Default::default()
                })
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
                let mut fields = pb::UpgradePlan { baseline_replicas_per_node: baseline, ..Default::default() };
                for ud in Self::uds(&m) {
                    let plan = walk::plan_ud(&nodes, &placed, &ud);
                    fields.uds.push(pb::UdPlan {
                        ud: ud.clone(),
                        primary_moves: plan.primary_moves.len() as u32,
                        builds: plan
                            .builds
                            .iter()
                            .map(|b| pb::StandInBuild {
                                partition: b.partition,
                                to: b.to,
                                stands_in_for: b.stands_in_for,
                                bytes: b.bytes,
                            })
                            .collect(),
                        blocked: plan.blocked.len() as u32,
                        quorum_at_risk: plan.quorum_at_risk.len() as u32,
                        peak_replicas_per_node: plan.peak_replicas_per_node,
                        peak_ratio: f64::from(plan.peak_replicas_per_node) / f64::from(baseline.max(1)),
                    });
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
                    fields.refusals = refusals;
                    return Ok(pb::CtlResponse {
                        lines,
                        map_version: version,
                        upgrade_plan: Some(fields),
                        ..Default::default()
                    });
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
                         (run the seeds with --durable, or with a --data-dir: the map's replicas are durable wherever \
                         there is one)"
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
                            totals: Some(pb::UpgradeTotals {
                                started_unix_ms: clock::unix_ms(),
                                uds: uds.len() as u32,
                                ..Default::default()
                            }),
                            ..Default::default()
                        });
                        Ok(())
                    })
                    .await?;
                tracing::info!(uds = ?uds, "upgrade walk started");
                lines.push(format!("upgrade walk started over {} UDs", uds.len()));
                fields.started = true;
                Ok(pb::CtlResponse { lines, map_version: version, upgrade_plan: Some(fields), ..Default::default() })
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
                        Ok((Self::describe(u), walk_fields(u)))
                    })
                    .await?;
                tracing::info!(paused, "upgrade walk paused or resumed");
                let (line, walk) = line;
                Ok(pb::CtlResponse {
                    lines: vec![line],
                    map_version: version,
                    upgrade_walk: Some(walk),
                    ..Default::default()
                })
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
                    ..Default::default()
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

    /// One step of the walk in the map: [`walk::next`] decides it, this carries it out.
    pub(super) async fn drive_upgrade(self: &Arc<Self>, m: &pb::ClusterMap) -> Result<(), Status> {
        let Some(u) = m.upgrade.clone() else { return Ok(()) };
        let state = walk_of(&u)?;
        let ud = state.uds.get(state.index).cloned().unwrap_or_default();
        let reported = self.reported();
        let step = walk::next(&state, &self.walk_view(m, &reported));
        match step {
            WalkStep::Finish => {
                self.update(|m| {
                    if let Some(mut totals) = m.upgrade.take().and_then(|u| u.totals) {
                        totals.finished_unix_ms = clock::unix_ms();
                        m.last_upgrade = Some(totals);
                    }
                    Ok(())
                })
                .await?;
                tracing::info!(totals = ?m.upgrade.as_ref().and_then(|u| u.totals.as_ref()), "upgrade walk complete");
            }
            WalkStep::Wait(why) => self.waiting(&u, why).await?,
            WalkStep::Blocked(plan) => {
                let why = format!("room for stand-ins ({} blocked)", plan.blocked.len() + plan.quorum_at_risk.len());
                self.waiting(&u, why).await?;
            }
            WalkStep::BuildStandIns(plan) => {
                let mut built = true;
                self.update(|m| {
                    // The plan came from a view of a moment ago. A move planned since (a
                    // repair) must not be overwritten: its replica may already be a voter of
                    // the group, and losing its record would leave the map and the group
                    // apart (seen in simulated chaos). Nor may a stand-in go to a node that
                    // has come to host the partition. Then nothing is recorded, and the next
                    // tick plans again from what the map says then.
                    let stale = plan.builds.iter().any(|b| {
                        m.partitions
                            .get(&b.partition)
                            .is_none_or(|p| p.pending.is_some() || p.replicas.iter().any(|r| r.node == b.to))
                    });
                    if stale {
                        built = false;
                        if let Some(x) = m.upgrade.as_mut() {
                            x.waiting = "moves in flight to finish before stand-ins are built".into();
                        }
                        return Ok(());
                    }
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
                        x.totals.get_or_insert_default().builds += stand_ins.len() as u64;
                        x.stand_ins = stand_ins;
                        x.planned = true;
                        x.waiting = "stand-ins to catch up".into();
                    }
                    Ok(())
                })
                .await?;
                if built {
                    tracing::info!(%ud, stand_ins = plan.builds.len(), "upgrade walk: building stand-ins");
                } else {
                    tracing::info!(%ud, "upgrade walk: a move is in flight where stand-ins would go; planning again");
                }
            }
            WalkStep::MovePrimaries(moves) => {
                let fresh: Vec<u64> =
                    moves.iter().map(|(pid, _, _)| *pid).filter(|pid| !u.primaries_moved.contains(pid)).collect();
                if !fresh.is_empty() {
                    let moved: Vec<(u64, u64, u64)> = moves.iter().map(|(p, f, t)| (*p, *f, t.node)).collect();
                    tracing::info!(%ud, moves = ?moved, "upgrade walk: primaries leave the UD (partition, from, to)");
                    self.update(|m| {
                        if let Some(x) = m.upgrade.as_mut() {
                            let new: Vec<u64> =
                                fresh.iter().copied().filter(|p| !x.primaries_moved.contains(p)).collect();
                            x.totals.get_or_insert_default().primary_moves += new.len() as u64;
                            x.primaries_moved.extend(new);
                        }
                        Ok(())
                    })
                    .await?;
                }
                for (pid, from, to) in &moves {
                    let Some(p) = m.partitions.get(pid) else { continue };
                    if let Err(e) = self.transfer_primary(m, p, to.replica).await {
                        tracing::debug!(partition = pid, from, error = %e.message(), "primary move off the UD");
                    }
                }
                let why = format!("{} to leave the UD", walk::count(moves.len(), "primary", "primaries"));
                self.waiting(&u, why).await?;
            }
            WalkStep::HandOffManager => {
                if let Some(r) = self.host.get(MAP_PARTITION) {
                    let members = r.state(|st| st.membership.membership().clone());
                    let to = members.nodes().find(|(_, n)| m.nodes.values().any(|x| x.addr == n.addr && x.ud != ud));
                    if let Some((id, _)) = to {
                        tracing::info!(to = id, "upgrade walk: handing the cluster manager off the UD");
                        let _ = r.awake().await.trigger().transfer_leader(*id).await;
                    }
                }
            }
            WalkStep::Restart(incarnations) => {
                self.update(|m| {
                    if let Some(x) = m.upgrade.as_mut() {
                        x.phase = pb::UpgradePhase::Restart as i32;
                        x.restart_started_unix_ms = clock::unix_ms();
                        x.incarnations = incarnations.iter().map(|(k, v)| (*k, *v)).collect();
                        x.waiting = "nodes to restart".into();
                    }
                    Ok(())
                })
                .await?;
                for n in m.nodes.values().filter(|n| incarnations.contains_key(&n.id)) {
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
            }
            WalkStep::Recovered => {
                self.update(|m| {
                    if let Some(x) = m.upgrade.as_mut() {
                        x.phase = pb::UpgradePhase::Recover as i32;
                        x.waiting = "replicas to catch up".into();
                        let took = clock::unix_ms().saturating_sub(x.restart_started_unix_ms);
                        x.totals.get_or_insert_default().restart_ms += took;
                        x.restart_started_unix_ms = 0;
                    }
                    Ok(())
                })
                .await?;
                tracing::info!(%ud, "upgrade walk: nodes back");
            }
            WalkStep::Remove(removals) => {
                self.update(|m| {
                    let mut removed = 0;
                    for x in &removals {
                        let reason = if x.original_lost {
                            "upgrade: original lost in the restart, removed"
                        } else {
                            "upgrade: original caught up, stand-in removed"
                        };
                        if let Some(p) = m.partitions.get_mut(&x.partition).filter(|p| p.pending.is_none()) {
                            p.pending = Some(pb::PendingMove {
                                to: None,
                                replaces: Some(pb::ReplicaPlacement {
                                    node: x.replica.node,
                                    replica: x.replica.replica,
                                }),
                                reason: reason.into(),
                                opened: false,
                            });
                            removed += 1;
                        }
                    }
                    if let Some(u) = m.upgrade.as_mut() {
                        u.totals.get_or_insert_default().removals += removed;
                        u.stand_ins.retain(|s| !removals.iter().any(|x| x.partition == s.partition));
                    }
                    Ok(())
                })
                .await?;
            }
            WalkStep::NextUd => {
                self.update(|m| {
                    if let Some(x) = m.upgrade.as_mut() {
                        x.index += 1;
                        x.phase = pb::UpgradePhase::Prepare as i32;
                        x.planned = false;
                        x.stand_ins.clear();
                        x.incarnations.clear();
                        x.waiting.clear();
                        x.primaries_moved.clear();
                    }
                    Ok(())
                })
                .await?;
                tracing::info!(%ud, "upgrade walk: UD done");
            }
        }
        Ok(())
    }
}

/// The walk the map records, as [`walk::next`] takes it.
fn walk_of(u: &pb::UpgradeState) -> Result<Walk, Status> {
    let phase = match pb::UpgradePhase::try_from(u.phase) {
        Ok(pb::UpgradePhase::Prepare) => Phase::Prepare,
        Ok(pb::UpgradePhase::Restart) => Phase::Restart,
        Ok(pb::UpgradePhase::Recover) => Phase::Recover,
        _ => return Err(Status::internal("upgrade walk in an unknown phase")),
    };
    let at = |r: &pb::ReplicaPlacement| ReplicaAt { node: r.node, replica: r.replica };
    Ok(Walk {
        uds: u.uds.clone(),
        index: u.index as usize,
        phase,
        planned: u.planned,
        stand_ins: u
            .stand_ins
            .iter()
            .filter_map(|s| {
                Some(StandIn {
                    partition: s.partition,
                    original: at(s.original.as_ref()?),
                    stand_in: at(s.stand_in.as_ref()?),
                })
            })
            .collect(),
        incarnations: u.incarnations.iter().map(|(k, v)| (*k, *v)).collect(),
    })
}
