//! Scheduled backups, run by whichever node is the cluster manager, and the reset that
//! lets a backup be restored into a partition that lost every replica.
//!
//! A schedule lives in the map (`ClusterMap.backups`, one per service), so it outlives any
//! manager: each pass of the manager's round ([`Manager::start_due_backups`]) starts the
//! runs that are due, on whichever node leads the map group. A run is due `every` after the last one started (or at once if none
//! did). The manager first records the start in the map, then takes the backup through
//! `weft_backup::take` (each partition's primary streams its snapshot or its changes
//! since the previous backup straight into the location), applies the schedule's
//! retention, and records how it ended. A manager that dies mid-run leaves an incomplete
//! backup (no manifest) that listings show as such and retention deletes later; the next
//! manager's run is due `every` after that start, so at most one period is lost.
//!
//! Decision: the manager's node does the copying (as the client of the primaries), so the
//! location's credentials (`AWS_*`, `AZURE_*`, `GOOGLE_*`) must be in every seed node's
//! environment, and a local directory must be the same directory on all of them (a shared
//! mount) for the backups to stay in one place across manager changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use weft_client::client::{Client, ClientConfig};
use weft_proto::v1 as pb;

use super::{Manager, map};

/// The least time a run is given before it is abandoned (see `run_backup`).
const RUN_MIN: Duration = Duration::from_secs(600);

/// How long a run of `s` may take: twice its period, and [`RUN_MIN`] at least. Retention
/// deletes an incomplete backup only once it is older than this.
fn run_limit(s: &pb::BackupSchedule) -> Duration {
    Duration::from_millis(s.every_ms.saturating_mul(2)).max(RUN_MIN)
}

/// The shortest period a schedule may have.
const EVERY_MIN_MS: u64 = 1_000;

impl Manager {
    /// Sets or (with `every_ms` 0) removes a service's schedule.
    pub(super) async fn schedule_backup(&self, req: pb::ScheduleBackupRequest) -> Result<pb::CtlResponse, Status> {
        let s = req.schedule.ok_or_else(|| Status::invalid_argument("no schedule"))?;
        if s.every_ms != 0 {
            if s.every_ms < EVERY_MIN_MS {
                return Err(Status::invalid_argument("--every must be at least 1s"));
            }
            weft_backup::Location::parse(&s.url).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let (line, version) = self
            .update(|m| {
                if s.every_ms == 0 {
                    return match m.backups.remove(&s.service) {
                        Some(_) => Ok(format!("backups of {} are no longer scheduled", s.service)),
                        None => Err(Status::not_found(format!("{} has no backup schedule", s.service))),
                    };
                }
                if !m.services.contains_key(&s.service) {
                    return Err(Status::not_found(format!("no service {}", s.service)));
                }
                let old = m.backups.get(&s.service).cloned().unwrap_or_default();
                let new = pb::BackupSchedule {
                    service: s.service.clone(),
                    url: s.url.clone(),
                    every_ms: s.every_ms,
                    keep: s.keep,
                    keep_for_ms: s.keep_for_ms,
                    full_every: s.full_every,
                    rate_bytes_per_s: s.rate_bytes_per_s,
                    // The run record stays: a changed schedule is not a new history.
                    ..old
                };
                m.backups.insert(s.service.clone(), new);
                Ok(format!(
                    "backups of {} every {} s to {} (keep {}, keep for {} s)",
                    s.service,
                    s.every_ms / 1000,
                    s.url,
                    s.keep,
                    s.keep_for_ms / 1000
                ))
            })
            .await?;
        tracing::info!(service = %s.service, url = %s.url, every_ms = s.every_ms, "backup schedule set");
        Ok(super::commands::lines(vec![line], version))
    }

    /// Starts the runs of `m`'s schedules that are due and not running here (each pass of
    /// the manager's round; runs go on beside it).
    pub(super) fn start_due_backups(self: &Arc<Self>, m: &pb::ClusterMap) {
        if m.backups.is_empty() {
            return;
        }
        let now = weft_backup::take::now_ms();
        for s in m.backups.values() {
            let due = s.last_started_unix_ms == 0 || now >= s.last_started_unix_ms.saturating_add(s.every_ms);
            if !due || !self.backups_running.lock().insert(s.service.clone()) {
                continue;
            }
            let (running, service) = (self.backups_running.clone(), s.service.clone());
            let (me, s) = (self.clone(), s.clone());
            let run = tokio::spawn(async move { me.run_backup(s).await });
            // Cleared however the run ends, a panic included.
            tokio::spawn(async move {
                let _ = run.await;
                running.lock().remove(&service);
            });
        }
    }

    /// One scheduled run: recorded as started, taken, retention applied, recorded.
    async fn run_backup(&self, s: pb::BackupSchedule) {
        let started = weft_backup::take::now_ms();
        let marked = self
            .update(|m| {
                let Some(cur) = m.backups.get_mut(&s.service) else {
                    return Err(Status::not_found("schedule removed"));
                };
                // Another manager's run started it meanwhile: not due any more.
                if cur.last_started_unix_ms != s.last_started_unix_ms {
                    return Err(Status::aborted("started elsewhere"));
                }
                cur.last_started_unix_ms = started;
                Ok(())
            })
            .await;
        if marked.is_err() {
            return;
        }
        let span = tracing::info_span!("scheduled_backup", service = %s.service);
        // A run that hangs (a stream that stalls without failing) must not stop the
        // schedule for good: it is given up after its limit. A manager that loses its role
        // gives its run up too, so that the next manager's run never overlaps it for long.
        let limit = run_limit(&s);
        let take = tracing::Instrument::instrument(self.take_backup(&s), span);
        let result = tokio::select! {
            r = tokio::time::timeout(limit, take) => {
                r.unwrap_or_else(|_| Err(format!("the run took longer than {limit:?} and was given up")))
            }
            () = self.deposed() => Err("this node stopped being the cluster manager during the run".into()),
        };
        let done = weft_backup::take::now_ms();
        match &result {
            Ok(id) => tracing::info!(service = %s.service, id, ms = done - started, "scheduled backup done"),
            Err(e) => tracing::warn!(service = %s.service, error = %e, "scheduled backup failed"),
        }
        let recorded = self
            .update(|m| {
                let Some(cur) = m.backups.get_mut(&s.service) else { return Ok(()) };
                cur.last_done_unix_ms = done;
                cur.runs += 1;
                match &result {
                    Ok(id) => {
                        cur.last_backup = id.clone();
                        cur.last_error.clear();
                    }
                    Err(e) => {
                        cur.failures += 1;
                        cur.last_error = e.clone();
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(service = %s.service, error = %e.message(), "a backup's outcome could not be recorded in the map");
        }
    }

    /// Returns once this node is no longer the cluster manager of the reign it is in now
    /// (never, while it is).
    async fn deposed(&self) {
        let term = self.soft.lock().term;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.leading().is_none() || self.soft.lock().term != term {
                return;
            }
        }
    }

    /// Takes one backup of `s.service` into `s.url` and applies retention; the backup's id.
    async fn take_backup(&self, s: &pb::BackupSchedule) -> Result<String, String> {
        let leader = self.leading().ok_or("this node stopped being the cluster manager")?;
        let (m, version) = map::read(&leader, &self.decoded)
            .await
            .map_err(|e| e.message().to_string())?
            .ok_or("the cluster map is not written yet")?;
        let loc = weft_backup::Location::parse(&s.url).map_err(|e| e.to_string())?;
        let addrs: Vec<String> = m.nodes.values().map(|n| n.addr.clone()).collect();
        let client = Client::new(addrs, ClientConfig::secured(self.host.peers().config().security.clone()));
        let full_every = if s.full_every == 0 { weft_backup::take::FULL_EVERY_DEFAULT } else { s.full_every };
        let rate = if s.rate_bytes_per_s == 0 { weft_backup::take::RATE_DEFAULT } else { s.rate_bytes_per_s };
        let opts = weft_backup::Options { full_every, rate_bytes_per_s: rate };
        let manifest = weft_backup::take::take(&client, &m, version, &s.service, &loc, opts, &|_, _, _| {})
            .await
            .map_err(|e| e.to_string())?;
        let retention = weft_backup::Retention {
            keep: s.keep,
            keep_for_ms: s.keep_for_ms,
            abandoned_after_ms: run_limit(s).as_millis() as u64,
        };
        weft_backup::catalog::apply_retention(&loc, &s.service, retention, weft_backup::take::now_ms())
            .await
            .map_err(|e| format!("backup {} taken; retention failed: {e}", manifest.id))?;
        Ok(manifest.id)
    }

    /// Gives partition `id`, which lost every replica, new and empty replicas (a new group,
    /// one incarnation up). Refused unless every node the map places a replica on is down
    /// or has reported, during this manager's reign, that it no longer hosts the partition;
    /// and refused for a while after this node became the manager, until every live node
    /// has had time to report.
    pub(super) async fn reset_partition(&self, id: u64, restoring: bool) -> Result<pb::CtlResponse, Status> {
        let (since, seen): (Option<std::time::Instant>, BTreeMap<u64, bool>) = {
            let soft = self.soft.lock();
            let seen = soft.seen.iter().map(|(node, s)| (*node, s.replicas.contains_key(&id))).collect();
            (soft.since, seen)
        };
        if since.is_none_or(|t| t.elapsed() < self.cfg.down_grace) {
            return Err(Status::unavailable(
                "the cluster manager took over moments ago and has not heard every node yet: try again in a few seconds",
            ));
        }
        let reported = self.reported();
        let (line, version) = self
            .update(|m| {
                let p = m.partitions.get(&id).ok_or_else(|| Status::not_found(format!("no partition {id}")))?;
                // A partition waiting for a restored state that never came may be reset again.
                if (!p.created && !p.restoring) || p.pending.is_some() {
                    return Err(Status::failed_precondition(format!("partition {id} is being created or moved")));
                }
                let down = |node: &u64| m.nodes.get(node).is_none_or(|n| n.state == pb::NodeState::Down as i32);
                // Live nodes hosting it, by their reports; and placed nodes not heard from.
                let hosting: Vec<u64> =
                    seen.iter().filter(|(node, hosts)| **hosts && !down(node)).map(|(node, _)| *node).collect();
                let silent: Vec<u64> =
                    p.replicas.iter().map(|r| r.node).filter(|n| !down(n) && !seen.contains_key(n)).collect();
                if !hosting.is_empty() || !silent.is_empty() {
                    return Err(Status::failed_precondition(format!(
                        "partition {id} still has replicas on nodes {hosting:?}{}: only a partition that lost every \
                         replica is reset (its data would be discarded)",
                        if silent.is_empty() {
                            String::new()
                        } else {
                            format!(" (and nodes {silent:?} have not reported)")
                        }
                    )));
                }
                let count = p.replicas.len().max(1);
                let mut nodes = map::model(m, &reported);
                let placed = weft_cluster_manager::placement::place_partition(&nodes, count, 0)
                    .map_err(|e| Status::failed_precondition(format!("cannot place partition {id}: {e}")))?;
                for n in &placed {
                    weft_cluster_manager::placement::count_replica(&mut nodes, *n, 0);
                }
                let first = m.next_replica;
                m.next_replica += placed.len() as u64;
                let p = m.partitions.get_mut(&id).ok_or_else(|| Status::not_found(format!("no partition {id}")))?;
                p.replicas = placed
                    .iter()
                    .zip(first..)
                    .map(|(node, replica)| pb::ReplicaPlacement { node: *node, replica })
                    .collect();
                p.created = false;
                p.restoring = restoring;
                p.incarnation += 1;
                Ok(match restoring {
                    false => format!("partition {id} reset: new, empty replicas on nodes {placed:?}"),
                    true => {
                        format!("partition {id} reset: new replicas on nodes {placed:?}, waiting for a restored state")
                    }
                })
            })
            .await?;
        tracing::warn!(partition = id, restoring, "partition reset by an operator: it starts empty or restored");
        Ok(super::commands::lines(vec![line], version))
    }
}
