//! The metrics port, `--metrics HOST:PORT`: `GET /metrics` (what [`crate::telemetry`]
//! gathers, as Prometheus text) and `/api/cluster` (the cluster explorer's data, see
//! [`crate::explorer`]) to the cluster's nodes and users; the explorer's page (`/`), and
//! `/readyz` and `/livez` to anyone (see [`crate::health`]).

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use weft_security::Identity;
use weft_security::credentials::Credentials;
use weft_security::gate::Gate;
use weft_security::server::{ConnState, ConnStats, Listener, Peer, ServerLimits};

/// What the metrics port reads, and how it is secured.
#[derive(Clone)]
pub struct Ctx {
    /// The gRPC port's gate: its refusals, and the users a scraper's certificate must name.
    pub gate: Arc<Gate>,
    /// The node's credentials (the HTTP port serves TLS with the same certificate); `None`
    /// is `--insecure`.
    pub tls: Option<Arc<Credentials>>,
    /// Whether the node is ready (`/readyz`).
    pub health: Arc<crate::health::Health>,
    /// The node's metrics.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The cluster service, for the explorer's data (the map as `GetMap` reads it).
    pub cluster: Arc<crate::manager::ClusterService>,
    /// This node's id.
    pub node: u64,
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
            .route("/", get(page))
            .route("/explorer", get(page))
            .route("/explorer.js", get(script))
            .route("/explorer.css", get(style))
            .route("/api/cluster", get(api_cluster))
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
    (
        axum::http::StatusCode::NOT_FOUND,
        "not found: this port serves /metrics, /readyz, /livez and the cluster explorer (/)\n",
    )
        .into_response()
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

type Answer = (axum::http::StatusCode, [(axum::http::HeaderName, &'static str); 4], String);

/// A static answer with the headers the explorer's parts share: nothing from elsewhere
/// (no external script, style, font or frame), never framed, never sniffed.
fn explorer_answer(content_type: &'static str, body: &str) -> Answer {
    use axum::http::header;
    (
        axum::http::StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
}

/// The explorer's page: to anyone over TLS (it holds no data; its data is guarded).
async fn page(
    State((_, peer, _)): State<(Ctx, Peer, Arc<ConnState>)>,
) -> Result<Answer, (axum::http::StatusCode, &'static str)> {
    plain_refused(&peer)?;
    Ok(explorer_answer("text/html; charset=utf-8", crate::explorer::PAGE))
}

async fn script(
    State((_, peer, _)): State<(Ctx, Peer, Arc<ConnState>)>,
) -> Result<Answer, (axum::http::StatusCode, &'static str)> {
    plain_refused(&peer)?;
    Ok(explorer_answer("text/javascript; charset=utf-8", crate::explorer::SCRIPT))
}

async fn style(
    State((_, peer, _)): State<(Ctx, Peer, Arc<ConnState>)>,
) -> Result<Answer, (axum::http::StatusCode, &'static str)> {
    plain_refused(&peer)?;
    Ok(explorer_answer("text/css; charset=utf-8", crate::explorer::STYLE))
}

/// A plaintext request to a TLS port is told to use https.
fn plain_refused(peer: &Peer) -> Result<(), (axum::http::StatusCode, &'static str)> {
    match peer {
        Peer::Plaintext => Err((
            axum::http::StatusCode::UNAUTHORIZED,
            "this port serves only TLS (https): use the cluster's CA and a client certificate\n",
        )),
        _ => Ok(()),
    }
}

/// The explorer's data, guarded as `/metrics` is.
async fn api_cluster(
    State((ctx, peer, state)): State<(Ctx, Peer, Arc<ConnState>)>,
    headers: axum::http::HeaderMap,
) -> Result<Answer, (axum::http::StatusCode, String)> {
    let _in_flight = state.begin();
    if let Err(why) = allowed(&ctx, &peer, &headers) {
        ctx.gate.refusals.unauthenticated.fetch_add(1, Ordering::Relaxed);
        return Err((axum::http::StatusCode::UNAUTHORIZED, why.to_string()));
    }
    let doc = crate::explorer::cluster(&ctx.cluster, ctx.node)
        .await
        .map_err(|s| (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", s.message())))?;
    let body = serde_json::to_string(&doc)
        .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the cluster: {e}\n")))?;
    Ok(explorer_answer("application/json", &body))
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
    Ok(ctx.telemetry.render())
}
