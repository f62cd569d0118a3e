//! A device check-in registry: a small stateful service that embeds `weft::Node`.
//!
//! Run three of these and they form a weft cluster among themselves; each serves the same
//! HTTP API, backed by the replicated service `registry` (3 replicas per partition), and
//! keeps serving with nothing lost when one of them is killed:
//!
//! ```text
//! S=127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303
//! cargo run --example registry -- --id 1 --listen 127.0.0.1:7301 --http 127.0.0.1:8301 --seeds $S --insecure &
//! cargo run --example registry -- --id 2 --listen 127.0.0.1:7302 --http 127.0.0.1:8302 --seeds $S --insecure &
//! cargo run --example registry -- --id 3 --listen 127.0.0.1:7303 --http 127.0.0.1:8303 --seeds $S --insecure &
//! curl -X PUT --data online http://127.0.0.1:8301/devices/d1   # check in
//! curl http://127.0.0.1:8302/devices/d1                        # {"device":"d1","status":"online","version":..}
//! curl http://127.0.0.1:8303/roles                             # this process's partitions and roles
//! ```
//!
//! `GET /devices/{id}` is served in process when this process hosts the primary of the
//! device's partition (`weft::Node::get`), through the cluster otherwise; `GET /ready`
//! answers 200 once the service is created. Each process logs when one of its replicas
//! becomes or stops being primary (`weft::Node::roles`), where a real service would start
//! and stop its primary-only work. Ctrl-C stops a process gracefully (primaries handed off
//! first). Give `--certs-dir` (from `weft cert create-node`) instead of `--insecure` to run
//! with TLS between the processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;

const SERVICE: &str = "registry";
const TABLE: &str = "default";

#[derive(Parser)]
struct Args {
    /// This process's weft node id (1, 2, 3...).
    #[arg(long)]
    id: u64,
    /// Where its weft node listens (gRPC, between the processes).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Where it serves its HTTP API.
    #[arg(long)]
    http: std::net::SocketAddr,
    /// Every process's --listen address, comma-separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// The weft node's certificates (ca.crt, node.crt, node.key).
    #[arg(long)]
    certs_dir: Option<std::path::PathBuf>,
    /// No TLS between the processes.
    #[arg(long)]
    insecure: bool,
}

struct App {
    node: weft::Node,
    ready: AtomicBool,
}

type Answer = (StatusCode, [(axum::http::HeaderName, &'static str); 1], String);

fn json(status: StatusCode, v: serde_json::Value) -> Answer {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], v.to_string())
}

fn failed(e: impl std::fmt::Display) -> Answer {
    json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "error": e.to_string() }))
}

async fn check_in(State(app): State<Arc<App>>, Path(device): Path<String>, status: String) -> Answer {
    match app.node.client().put(SERVICE, TABLE, device.as_bytes(), status.as_bytes()).await {
        Ok(version) => json(StatusCode::OK, serde_json::json!({ "device": device, "version": version })),
        Err(e) => failed(e),
    }
}

async fn lookup(State(app): State<Arc<App>>, Path(device): Path<String>) -> Answer {
    match app.node.get(SERVICE, TABLE, device.as_bytes()).await {
        Ok(Some(r)) => json(
            StatusCode::OK,
            serde_json::json!({
                "device": device, "status": String::from_utf8_lossy(&r.value), "version": r.version,
            }),
        ),
        Ok(None) => json(StatusCode::NOT_FOUND, serde_json::json!({ "error": format!("no device {device}") })),
        Err(e) => failed(e),
    }
}

async fn roles(State(app): State<Arc<App>>) -> Answer {
    match app.node.partitions().await {
        Ok(hosted) => {
            let v: Vec<_> = hosted
                .iter()
                .filter(|h| h.service.as_deref() == Some(SERVICE))
                .map(|h| serde_json::json!({ "partition": h.partition, "role": format!("{:?}", h.role) }))
                .collect();
            json(StatusCode::OK, serde_json::Value::Array(v))
        }
        Err(e) => failed(e),
    }
}

async fn ready(State(app): State<Arc<App>>) -> Answer {
    if app.ready.load(Ordering::SeqCst) {
        json(StatusCode::OK, serde_json::json!({ "ready": true }))
    } else {
        json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "ready": false }))
    }
}

/// Creates the registry service once enough processes have joined (any process may: the
/// first to ask creates it; the others find it made).
async fn ensure_service(app: Arc<App>, processes: usize) {
    loop {
        let map = app.node.client().refresh_map().await;
        let exists = map.as_ref().is_ok_and(|m| m.map.as_ref().is_some_and(|m| m.services.contains_key(SERVICE)));
        if !exists {
            let endpoints = vec![app.node.addr().to_string()];
            let config = app.node.client_config();
            let made =
                weft::routing::ready_service(&config, &endpoints, processes, SERVICE, 4, 3, Duration::from_secs(10));
            if let Err(e) = made.await {
                tracing::info!(error = %e, "registry service not ready yet");
            }
        }
        // Ready once every partition is created and has a primary.
        if app.node.client().partition_of(SERVICE, b"probe").await.is_ok() {
            app.ready.store(true, Ordering::SeqCst);
            tracing::info!("registry service ready");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let mut builder = weft::Node::builder(args.id, args.listen)
        .seeds(args.seeds.clone())
        .ud(format!("ud{}", args.id))
        .fd(format!("fd{}", args.id));
    builder = match (&args.certs_dir, args.insecure) {
        (Some(dir), false) => builder.certs_dir(dir),
        (None, true) => builder.insecure(),
        _ => anyhow::bail!("give one of --certs-dir DIR or --insecure"),
    };
    let node = builder.start().await?;
    let app = Arc::new(App { node, ready: AtomicBool::new(false) });

    // Where a real service starts and stops its primary-only work.
    let mut changes = app.node.roles();
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(c) => tracing::info!(partition = c.partition, role = ?c.role, "role changed"),
                // Behind: look at the roles afresh (a real service would resync here).
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "role events missed")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    tokio::spawn(ensure_service(app.clone(), args.seeds.len()));

    let router = Router::new()
        .route("/devices/{id}", get(lookup).put(check_in))
        .route("/roles", get(roles))
        .route("/ready", get(ready))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(args.http).await?;
    println!("registry {} serving http://{} (weft node {})", args.id, listener.local_addr()?, app.node.addr());
    let http = tokio::spawn(async move { axum::serve(listener, router).await });
    tokio::signal::ctrl_c().await?;
    http.abort();
    // Gracefully while that loses no quorum; at once otherwise (a supervisor stopping
    // the process expects it to go).
    if let Err(e) = app.node.stop().await {
        tracing::warn!(error = %e, "stopping at once");
        app.node.stop_now().await?;
    }
    Ok(())
}
