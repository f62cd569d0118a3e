//! `weft ctl status | nodes | services | partitions`: the cluster map as tables (or JSON).

use std::io::Write;

use weft::node::view;
use weft::proto as pb;

use super::{Ctx, print_json};

pub(super) async fn status(cx: &Ctx) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let m = cx.map().await?;
    let nodes = view::nodes(&m);
    let parts = view::partitions(&m, None);
    let count = |s: &str| nodes.iter().filter(|n| n.state == s).count();
    let leaderless = parts.iter().filter(|p| !p.replicas.iter().any(|r| r.role == "primary")).count();
    let moving = parts.iter().filter(|p| p.moving.is_some()).count();
    let services = m.map.as_ref().map_or(0, |x| x.services.len());
    let mut insecure: Vec<u64> = m
        .map
        .iter()
        .flat_map(|x| x.nodes.values())
        .filter(|n| n.insecure && n.state != pb::NodeState::Down as i32)
        .map(|n| n.id)
        .collect();
    insecure.sort_unstable();
    if cx.json {
        return print_json(&serde_json::json!({
            "manager_node": m.manager_node,
            "map_version": m.version,
            "insecure_nodes": insecure,
            "nodes": { "up": count("up"), "draining": count("draining"), "down": count("down") },
            "services": services,
            "partitions": parts.len(),
            "partitions_without_primary": leaderless,
            "moves_in_flight": moving,
            "alarms": m.alarms,
        }));
    }
    writeln!(out, "cluster manager   node {} (map version {})", m.manager_node, m.version)?;
    writeln!(out, "nodes             {} up, {} draining, {} down", count("up"), count("draining"), count("down"))?;
    writeln!(out, "services          {services}")?;
    writeln!(out, "partitions        {} ({leaderless} without a primary, {moving} moving a replica)", parts.len())?;
    if insecure.is_empty() {
        writeln!(out, "security          TLS and authentication on every node")?;
    } else {
        writeln!(
            out,
            "security          INSECURE: nodes {insecure:?} run --insecure (no TLS, no authentication: \
             anyone who reaches them may read, write and reconfigure the cluster)"
        )?;
    }
    if m.alarms.is_empty() {
        writeln!(out, "alarms            none")?;
    }
    for alarm in &m.alarms {
        writeln!(out, "ALARM             {alarm}")?;
    }
    Ok(())
}

pub(super) async fn nodes(cx: &Ctx) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let nodes = view::nodes(&cx.map().await?);
    if cx.json {
        return print_json(&nodes);
    }
    writeln!(
        out,
        "{:>4}  {:<21} {:<8} {:<8} {:<9} {:>8} {:>9} {:>12} {:>9}  MAP",
        "ID", "ADDRESS", "UD", "FD", "STATE", "REPLICAS", "PRIMARIES", "MEMORY", "REQ/S"
    )?;
    for n in nodes {
        let map_role = if n.map_role.is_empty() { "-" } else { &n.map_role };
        writeln!(
            out,
            "{:>4}  {:<21} {:<8} {:<8} {:<9} {:>8} {:>9} {:>12} {:>9.1}  {map_role}",
            n.id, n.addr, n.ud, n.fd, n.state, n.replicas, n.primaries, n.memory_bytes, n.requests_per_s
        )?;
    }
    writeln!(
        out,
        "(REPLICAS counts services' replicas; PRIMARIES and MEMORY include the cluster map's, whose role is MAP)"
    )?;
    Ok(())
}

pub(super) async fn services(cx: &Ctx) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let m = cx.map().await?;
    let mut services: Vec<_> = m.map.map(|x| x.services.into_values().collect()).unwrap_or_default();
    services.sort_by(|a: &pb::ServiceInfo, b| a.name.cmp(&b.name));
    if cx.json {
        let v: Vec<_> = services
            .iter()
            .map(|s| serde_json::json!({ "name": s.name, "partitions": s.partitions, "replicas": s.replicas, "partition_ids": s.partition_ids }))
            .collect();
        return print_json(&v);
    }
    writeln!(out, "{:<24} {:>10} {:>8}", "SERVICE", "PARTITIONS", "REPLICAS")?;
    for s in services {
        writeln!(out, "{:<24} {:>10} {:>8}", s.name, s.partitions, s.replicas)?;
    }
    Ok(())
}

pub(super) async fn partitions(cx: &Ctx, service: Option<String>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let m = cx.map().await?;
    if let Some(s) = &service {
        anyhow::ensure!(m.map.as_ref().is_some_and(|c| c.services.contains_key(s)), "no service {s}");
    }
    let parts = view::partitions(&m, service.as_deref());
    if cx.json {
        return print_json(&parts);
    }
    writeln!(out, "{:>5}  {:<16} {:<37}  REPLICAS (node/ud/fd role)", "ID", "SERVICE", "HASH RANGE")?;
    for p in parts {
        let replicas: Vec<String> =
            p.replicas.iter().map(|r| format!("{}/{}/{} {}", r.node, r.ud, r.fd, r.role)).collect();
        let range = format!("{:016x}..={:016x}", p.low, p.high);
        let note = p.moving.map(|m| format!("  [moving: {m}]")).unwrap_or_default();
        let name = format!("{}/{}", p.service, p.index);
        writeln!(out, "{:>5}  {:<16} {range:<37}  {}{note}", p.id, name, replicas.join(", "))?;
    }
    Ok(())
}
