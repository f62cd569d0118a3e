//! `weft ctl drain | handoff | activate | remove-node | upgrade`: nodes joining and leaving
//! service, primaries handed off before a stop, and the upgrade-domain walk.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use weft::proto as pb;

use super::{Ctx, grpc, print_json, say, until_moves_settle, view};

pub(super) async fn drain(cx: &Ctx, node: u64, force: bool, wait: bool) -> anyhow::Result<()> {
    let req = pb::NodeRequest { node, force };
    let resp = cx.cluster()?.drain(req).await.map_err(grpc)?.into_inner();
    if !wait {
        return say(resp, cx.json);
    }
    if !cx.json {
        say(resp.clone(), false)?;
    }
    // Replicas moved off the node out of those it held when the drain began.
    let progress = crate::progress::Progress::new(format!("draining node {node}"), "replicas moved", 0, cx.json);
    let first = std::cell::Cell::new(None::<usize>);
    let ((), secs) = until_moves_settle(cx, |ps| {
        let left = ps.iter().filter(|p| p.replicas.iter().any(|r| r.node == node)).count();
        let total = first.get().unwrap_or(left);
        first.set(Some(total));
        progress.set_total(total as u64);
        progress.set(total.saturating_sub(left) as u64, &format!("{left} replicas left on node {node}"));
        (left == 0 && ps.iter().all(|p| p.moving.is_none())).then_some(())
    })
    .await?;
    if cx.json {
        return print_json(&serde_json::json!({
            "lines": resp.lines, "map_version": resp.map_version, "node": node, "drained": true, "seconds": secs,
        }));
    }
    progress.finish(&format!("node {node} drained in {secs:.1} s"));
    Ok(())
}

pub(super) async fn handoff(cx: &Ctx, node: u64, wait_s: f64) -> anyhow::Result<()> {
    if !(wait_s.is_finite() && wait_s > 0.0) {
        bail!("--wait-s must be a positive number of seconds");
    }
    let deadline = Instant::now() + Duration::from_secs_f64(wait_s);
    // When each partition was last asked: the manager moves its primary and the map shows
    // it within a round; one still led here 3 s later (refused, or led again after an
    // election) is asked again.
    let mut asked: std::collections::BTreeMap<u64, Instant> = Default::default();
    loop {
        let m = cx.map().await?;
        let led: Vec<u64> = view::partitions(&m, None)
            .iter()
            .filter(|p| p.replicas.iter().any(|r| r.node == node && r.role == "primary"))
            .map(|p| p.id)
            .collect();
        if led.is_empty() {
            if cx.json {
                return print_json(
                    &serde_json::json!({ "node": node, "handed_off": asked.len(), "primaries_left": 0 }),
                );
            }
            writeln!(std::io::stdout(), "node {node} holds no primary ({} handed off)", asked.len())?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("node {node} still leads partitions {led:?} after {wait_s} s");
        }
        for p in &led {
            if asked.get(p).is_some_and(|at| at.elapsed() < Duration::from_secs(3)) {
                continue;
            }
            asked.insert(*p, Instant::now());
            let req = pb::MovePrimaryRequest { partition: *p, to_node: 0, force: false };
            if let Err(s) = cx.cluster()?.move_primary(req).await {
                tracing::info!(partition = p, error = %s.message(), "hand-off refused for now; asked again");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub(super) async fn activate(cx: &Ctx, node: u64) -> anyhow::Result<()> {
    let req = pb::NodeRequest { node, force: false };
    say(cx.cluster()?.activate(req).await.map_err(grpc)?.into_inner(), cx.json)
}

pub(super) async fn remove(cx: &Ctx, node: u64) -> anyhow::Result<()> {
    let req = pb::NodeRequest { node, force: false };
    say(cx.cluster()?.remove_node(req).await.map_err(grpc)?.into_inner(), cx.json)
}

pub(super) async fn upgrade(
    cx: &Ctx,
    apply: bool,
    pause: bool,
    resume: bool,
    abort: bool,
    status: bool,
    no_wait: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let action = if apply {
        pb::UpgradeAction::Apply
    } else if pause {
        pb::UpgradeAction::Pause
    } else if resume {
        pb::UpgradeAction::Resume
    } else if abort {
        pb::UpgradeAction::Abort
    } else if status {
        pb::UpgradeAction::Status
    } else {
        pb::UpgradeAction::DryRun
    };
    let req = pb::UpgradeRequest { action: action as i32 };
    let resp = cx.cluster()?.upgrade(req).await.map_err(grpc)?.into_inner();
    if !apply || no_wait || cx.json {
        return say(resp, cx.json);
    }
    for l in &resp.lines {
        writeln!(out, "{l}")?;
    }
    drop(out);
    let started = Instant::now();
    let uds = resp.upgrade_plan.as_ref().map_or(0, |p| p.uds.len() as u64);
    let progress = crate::progress::Progress::new("upgrade walk", "UDs walked", uds, false);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = pb::UpgradeRequest { action: pb::UpgradeAction::Status as i32 };
        // The node answering may itself be restarting: ask again.
        let Ok(mut c) = cx.cluster() else { continue };
        let Ok(r) = c.upgrade(status).await else { continue };
        let r = r.into_inner();
        let Some(walk) = r.upgrade_walk else {
            progress.finish(&format!("upgrade walk complete in {:.1} s", started.elapsed().as_secs_f64()));
            return Ok(());
        };
        progress.set(u64::from(walk.walked), &r.lines.join("; "));
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("the walk has not finished after an hour; `weft ctl upgrade --status` shows where it stands");
        }
    }
}
