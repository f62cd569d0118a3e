//! Prometheus text exposition on `--metrics HOST:PORT` (`GET /metrics`), and the node's
//! `/readyz` and `/livez` (answered to anyone: see [`crate::health`]).
//!
//! Per replica: role, term, last log and applied indexes, engine memory and records,
//! snapshot bytes received. Per node: replicas and primaries hosted. On the cluster
//! manager's node: standing alarms, and quorum-lost alarms on their own so an alert rule
//! can fire on `weft_cluster_quorum_lost > 0`. Request rates and latencies are not
//! exported yet.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use weft_proto::v1 as pb;
use weft_replica::Host;
use weft_security::Identity;
use weft_security::credentials::Credentials;
use weft_security::gate::Gate;
use weft_security::server::{ConnState, ConnStats, Listener, Peer, ServerLimits};

use crate::manager::Manager;

/// What the metrics port reads, and how it is secured.
#[derive(Clone)]
pub struct Ctx {
    /// The node's replicas.
    pub host: Arc<Host>,
    /// The node's cluster-manager role.
    pub manager: Arc<Manager>,
    /// The gRPC port's gate: its refusals, and the users a scraper's certificate must name.
    pub gate: Arc<Gate>,
    /// The gRPC port's connections.
    pub conns: Arc<ConnStats>,
    /// The node's credentials (the HTTP port serves TLS with the same certificate); `None`
    /// is `--insecure`.
    pub tls: Option<Arc<Credentials>>,
    /// Whether the node is ready (`/readyz`).
    pub health: Arc<crate::health::Health>,
}

/// Serves `/metrics` on `listener` for as long as the process runs: over TLS with the node's
/// certificate unless `--insecure`. A scraper presents a client certificate of this cluster
/// (a node's, or a user's that the cluster knows) or a user's bearer token; anyone else gets
/// `401 Unauthorized` and nothing else.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Ctx, limits: ServerLimits) {
    let stats = Arc::new(ConnStats::default());
    let mut incoming = weft_security::server::incoming(listener, ctx.tls.clone(), Listener::Http, limits, stats);
    while let Some(conn) = futures::StreamExt::next(&mut incoming).await {
        let Ok(conn) = conn else { continue };
        let (peer, state) = (conn.info().peer.clone(), conn.info().state.clone());
        let app = Router::new()
            .route("/metrics", get(render))
            .route("/readyz", get(readyz))
            .route("/livez", get(livez))
            .fallback(not_here)
            .with_state((ctx.clone(), peer, state));
        tokio::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(hyper_util::rt::TokioIo::new(conn), svc).await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

/// Binds the metrics listener (so a taken port fails the node's start, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// `200 ok` when the node is ready, else `503` and why not; to anyone (see
/// [`crate::health`]).
async fn readyz(State((ctx, _, _)): State<(Ctx, Peer, Arc<ConnState>)>) -> (axum::http::StatusCode, String) {
    match ctx.health.ready() {
        Ok(()) => (axum::http::StatusCode::OK, "ok\n".into()),
        Err(why) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// `200 ok` while the process serves; to anyone.
async fn livez() -> &'static str {
    "ok\n"
}

/// Any other request. A gRPC call (a client pointed at this port instead of the node's
/// gRPC port) gets a gRPC answer saying so, rather than an HTTP 404 its library would
/// report as a protocol mapping; anything else gets a 404 naming what this port serves.
async fn not_here(headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse;
    let grpc =
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let status = (tonic::Code::Unimplemented as i32).to_string();
        let message = "this is a weft node's metrics port (HTTP: /metrics, /readyz, /livez), not its gRPC port";
        return (
            [(CONTENT_TYPE.as_str(), "application/grpc"), ("grpc-status", status.as_str()), ("grpc-message", message)],
            (),
        )
            .into_response();
    }
    (axum::http::StatusCode::NOT_FOUND, "not found: this port serves /metrics, /readyz and /livez\n").into_response()
}

/// Whether this connection's peer (and the request's token) may read the metrics.
fn allowed(ctx: &Ctx, peer: &Peer, headers: &axum::http::HeaderMap) -> Result<(), &'static str> {
    let known = |name: &str| ctx.gate.users().is_some_and(|u| u.by_name(name).is_some());
    let token = || {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| ctx.gate.users().is_some_and(|u| u.by_token(t.trim()).is_some()))
    };
    match peer {
        Peer::Insecure | Peer::Tls(Some(Identity::Node(_))) => Ok(()),
        Peer::Tls(Some(Identity::User(name))) if known(name) => Ok(()),
        Peer::Tls(Some(Identity::User(_))) => Err("this certificate's user is not a user of this cluster\n"),
        Peer::Tls(None) if token() => Ok(()),
        Peer::Tls(None) => Err("present a client certificate of this cluster, or a user's bearer token\n"),
        Peer::Plaintext => Err("this port serves only TLS (https): use the cluster's CA and a client certificate\n"),
    }
}

async fn render(
    State((ctx, peer, state)): State<(Ctx, Peer, Arc<ConnState>)>,
    headers: axum::http::HeaderMap,
) -> Result<String, (axum::http::StatusCode, &'static str)> {
    // A scrape is a request in flight: a scraper that keeps its connection and scrapes
    // every few seconds is not idle.
    let _in_flight = state.begin();
    if let Err(why) = allowed(&ctx, &peer, &headers) {
        ctx.gate.refusals.unauthenticated.fetch_add(1, Ordering::Relaxed);
        return Err((axum::http::StatusCode::UNAUTHORIZED, why));
    }
    Ok(text(&ctx))
}

/// The exposition text.
pub fn text(ctx: &Ctx) -> String {
    let (host, manager) = (&ctx.host, &ctx.manager);
    let statuses: Vec<std::sync::Arc<pb::ReplicaStatus>> = host.list().iter().map(|r| r.status()).collect();
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
        "weft_node_append_streams",
        "Raft append streams from peer nodes open here.",
        &mut [(format!("{{node=\"{node}\"}}"), host.append_streams() as f64)].into_iter(),
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
    let n = |v: u64| [(format!("{{node=\"{node}\"}}"), v as f64)].into_iter();
    let r = &ctx.gate.refusals;
    let refusals = [
        ("unauthenticated", r.unauthenticated.load(Ordering::Relaxed)),
        ("permission_denied", r.permission_denied.load(Ordering::Relaxed)),
        ("resource_exhausted", r.resource_exhausted.load(Ordering::Relaxed)),
        ("deadline_exceeded", r.deadline_exceeded.load(Ordering::Relaxed)),
    ];
    metric(
        "counter",
        "weft_node_refused_requests_total",
        "Requests refused before any service saw them, by gRPC code.",
        &mut refusals.iter().map(|(code, v)| (format!("{{node=\"{node}\",code=\"{code}\"}}"), *v as f64)),
    );
    let c = &ctx.conns;
    metric(
        "gauge",
        "weft_node_connections",
        "Open connections on the gRPC port, by peer kind.",
        &mut [
            ("client", c.client_connections.load(Ordering::Relaxed) as f64),
            ("node", c.node_connections.load(Ordering::Relaxed) as f64),
        ]
        .into_iter()
        .map(|(kind, v)| (format!("{{node=\"{node}\",peer=\"{kind}\"}}"), v)),
    );
    metric(
        "counter",
        "weft_node_tls_handshakes_failed_total",
        "TLS handshakes refused: no, foreign or expired certificate, timeout, garbage.",
        &mut n(c.handshakes_failed.load(Ordering::Relaxed)),
    );
    metric(
        "counter",
        "weft_node_connections_refused_total",
        "Connections closed on arrival or served only to refuse (over the connection limits, plaintext).",
        &mut n(c.connections_dropped.load(Ordering::Relaxed)
            + c.connections_over_limit.load(Ordering::Relaxed)
            + c.plaintext_connections.load(Ordering::Relaxed)),
    );
    metric(
        "counter",
        "weft_node_idle_connections_closed_total",
        "Connections closed after no request for the idle timeout.",
        &mut n(c.idle_closed.load(Ordering::Relaxed)),
    );
    if let Some(creds) = &ctx.tls {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let cur = creds.current();
        metric(
            "gauge",
            "weft_node_certificate_expiry_seconds",
            "Seconds until the node's certificate (cert=\"node\") or its CA (cert=\"ca\") expires.",
            &mut [("node", cur.not_after_unix - now), ("ca", cur.ca_not_after_unix - now)]
                .into_iter()
                .map(|(which, v)| (format!("{{node=\"{node}\",cert=\"{which}\"}}"), v as f64)),
        );
    }
    metric(
        "gauge",
        "weft_node_insecure",
        "1 when the node runs --insecure (no TLS, no authentication).",
        &mut n(u64::from(ctx.tls.is_none())),
    );
    out
}
