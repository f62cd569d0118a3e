//! `weft ctl create-service | delete-service | move-primary | move-secondary | rebalance`:
//! a service's partitions and where their replicas are.

use std::io::Write;

use weft::proto as pb;

use super::{Ctx, grpc, print_json, say, until_moves_settle};

pub(super) async fn create(cx: &Ctx, name: String, partitions: u32, replicas: Option<u32>) -> anyhow::Result<()> {
    // 0 on the wire asks for the cluster's default.
    let req = pb::CreateServiceRequest { name, partitions, replicas: replicas.unwrap_or(0), restoring: false };
    say(cx.cluster()?.create_service(req).await.map_err(grpc)?.into_inner(), cx.json)
}

pub(super) async fn delete(cx: &Ctx, name: String) -> anyhow::Result<()> {
    let req = pb::DeleteServiceRequest { name };
    say(cx.cluster()?.delete_service(req).await.map_err(grpc)?.into_inner(), cx.json)
}

pub(super) async fn move_primary(cx: &Ctx, partition: u64, to: Option<u64>, force: bool) -> anyhow::Result<()> {
    let req = pb::MovePrimaryRequest { partition, to_node: to.unwrap_or(0), force };
    say(cx.cluster()?.move_primary(req).await.map_err(grpc)?.into_inner(), cx.json)
}

pub(super) async fn move_secondary(
    cx: &Ctx,
    partition: u64,
    from: u64,
    to: Option<u64>,
    force: bool,
    no_wait: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let req = pb::MoveSecondaryRequest { partition, from_node: from, to_node: to.unwrap_or(0), force };
    let resp = cx.cluster()?.move_secondary(req).await.map_err(grpc)?.into_inner();
    if no_wait {
        return say(resp, cx.json);
    }
    if !cx.json {
        for l in &resp.lines {
            writeln!(out, "{l}")?;
        }
    }
    let (nodes, secs) = until_moves_settle(cx, |ps| {
        let p = ps.iter().find(|p| p.id == partition && p.moving.is_none())?;
        Some(p.replicas.iter().map(|r| r.node).collect::<Vec<u64>>())
    })
    .await?;
    if nodes.contains(&from) {
        anyhow::bail!(
            "partition {partition} still has its replica on node {from} after {secs:.1} s: the move was \
             abandoned (its new replica made no progress; the cluster manager's log says why)"
        );
    }
    if cx.json {
        return print_json(&serde_json::json!({ "partition": partition, "nodes": nodes, "seconds": secs }));
    }
    writeln!(out, "done in {secs:.1} s: partition {partition} now on nodes {nodes:?}")?;
    Ok(())
}

pub(super) async fn rebalance(
    cx: &Ctx,
    dry_run: bool,
    threshold: Option<f64>,
    max_moves: Option<u32>,
    no_wait: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let req = pb::RebalanceRequest { dry_run, threshold: threshold.unwrap_or(0.0), max_moves: max_moves.unwrap_or(0) };
    let resp = cx.cluster()?.rebalance(req).await.map_err(grpc)?.into_inner();
    if dry_run || no_wait || cx.json {
        return say(resp, cx.json);
    }
    for l in &resp.lines {
        writeln!(out, "{l}")?;
    }
    drop(out);
    // The planned moves that finished (primary transfers take no time worth showing).
    let planned: Vec<u64> = resp.rebalance.iter().flat_map(|p| p.moves.iter().map(|m| m.partition)).collect();
    let progress = crate::progress::Progress::new("rebalance", "moves done", planned.len() as u64, false);
    let ((), secs) = until_moves_settle(cx, |ps| {
        let moving: Vec<u64> = ps.iter().filter(|p| p.moving.is_some()).map(|p| p.id).collect();
        let done = planned.iter().filter(|p| !moving.contains(p)).count();
        progress.set(done as u64, &format!("{} moves in flight", moving.len()));
        moving.is_empty().then_some(())
    })
    .await?;
    progress.finish(&format!("done in {secs:.1} s"));
    Ok(())
}
