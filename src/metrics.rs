//! Prometheus text exposition on `--metrics HOST:PORT` (`GET /metrics`).
//!
//! Per replica: role, term, last log and applied indexes, engine memory and records,
//! snapshot bytes received. Per node: replicas and primaries hosted. On the cluster
//! manager's node: standing alarms, and quorum-lost alarms on their own so an alert rule
//! can fire on `weft_cluster_quorum_lost > 0`. Request rates and latencies are not
//! exported yet.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use weft_proto::v1 as pb;
use weft_replica::host::Host;

use crate::manager::Manager;

#[derive(Clone)]
struct Ctx {
    host: Arc<Host>,
    manager: Arc<Manager>,
}

/// Serves `/metrics` on `listener` for as long as the process runs.
pub async fn serve(listener: tokio::net::TcpListener, host: Arc<Host>, manager: Arc<Manager>) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(render)).with_state(Ctx { host, manager });
    axum::serve(listener, app).await
}

/// Binds the metrics listener (so a taken port fails the node's start, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn render(State(ctx): State<Ctx>) -> String {
    text(&ctx.host, &ctx.manager)
}

/// The exposition text.
pub fn text(host: &Host, manager: &Manager) -> String {
    let statuses: Vec<pb::ReplicaStatus> = host.list().iter().map(|r| crate::node::status_of(r)).collect();
    let mut out = String::new();
    let mut metric = |kind: &str, name: &str, help: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let node = manager.node_id();
    let per = |f: fn(&pb::ReplicaStatus) -> f64| {
        let v: Vec<(String, f64)> = statuses
            .iter()
            .map(|s| (format!("{{node=\"{node}\",partition=\"{}\",replica=\"{}\"}}", s.partition, s.replica), f(s)))
            .collect();
        v.into_iter()
    };
    let primaries = statuses.iter().filter(|s| s.role == pb::Role::Primary as i32).count();
    metric(
        "gauge",
        "weft_node_replicas",
        "Replicas this node hosts.",
        &mut [(format!("{{node=\"{node}\"}}"), statuses.len() as f64)].into_iter(),
    );
    metric(
        "gauge",
        "weft_node_primaries",
        "Primaries this node hosts.",
        &mut [(format!("{{node=\"{node}\"}}"), primaries as f64)].into_iter(),
    );
    metric(
        "gauge",
        "weft_replica_is_primary",
        "1 when the replica is its partition's primary.",
        &mut per(|s| f64::from(u8::from(s.role == pb::Role::Primary as i32))),
    );
    metric("gauge", "weft_replica_term", "Raft term.", &mut per(|s| s.term as f64));
    metric("gauge", "weft_replica_last_log_index", "Last log index.", &mut per(|s| s.last_log_index as f64));
    metric("gauge", "weft_replica_applied_index", "Last applied log index.", &mut per(|s| s.applied_index as f64));
    metric("gauge", "weft_replica_memory_bytes", "Engine memory of the replica.", &mut per(|s| s.memory_bytes as f64));
    metric("gauge", "weft_replica_records", "Records in the replica.", &mut per(|s| s.records as f64));
    metric(
        "gauge",
        "weft_replica_snapshot_bytes",
        "Snapshot bytes received in the current or last install.",
        &mut per(|s| s.snapshot_bytes as f64),
    );
    metric(
        "counter",
        "weft_replica_requests_total",
        "Client requests (reads and writes) the replica has served since it opened.",
        &mut per(|s| s.requests as f64),
    );
    if let Some(alarms) = manager.manager_alarms() {
        let quorum = alarms.iter().filter(|a| a.starts_with("QUORUM LOST")).count();
        metric(
            "gauge",
            "weft_cluster_alarms",
            "Standing cluster alarms (on the manager's node).",
            &mut [(String::new(), alarms.len() as f64)].into_iter(),
        );
        metric(
            "gauge",
            "weft_cluster_quorum_lost",
            "Partitions that lost their write quorum.",
            &mut [(String::new(), quorum as f64)].into_iter(),
        );
    }
    out
}
