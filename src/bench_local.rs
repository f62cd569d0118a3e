//! `weft bench local-read`: what serving a read in process saves a service that embeds
//! `weft::Node`. Three embedded nodes in this process (TLS with a temporary CA, real
//! sockets) host a one-partition service of three replicas; on the node of its primary,
//! the same keys are read one at a time through `weft::Node::get` (in process: a
//! read-index round, then the engine) and through the node's gRPC client (the same read
//! over a loopback TLS connection to the same node), alternating rounds so that both see
//! the same machine. Reports the median per-read latency and the reads per second of each,
//! and their ratio.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

const SERVICE: &str = "local-read";

#[derive(Args)]
pub(crate) struct LocalReadArgs {
    /// Reads per round and way.
    #[arg(long, default_value_t = 2000)]
    reads: usize,
    /// Rounds (each reads in process, then through gRPC); figures are medians over them.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Way {
    /// Median over rounds of the median read latency, microseconds.
    p50_us: f64,
    /// Median over rounds of the 99th percentile, microseconds.
    p99_us: f64,
    /// Median over rounds of reads per second (one reader).
    reads_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    reads_per_round: usize,
    rounds: usize,
    in_process: Way,
    grpc: Way,
    /// In-process reads per second over gRPC reads per second.
    in_process_over_grpc: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One round's per-read latencies (µs) and reads per second.
async fn round<F, Fut>(keys: &[Vec<u8>], read: F) -> anyhow::Result<(Vec<f64>, f64)>
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let mut lat = Vec::with_capacity(keys.len());
    let start = Instant::now();
    for k in keys {
        let t = Instant::now();
        if !read(k.clone()).await? {
            anyhow::bail!("key {:?} not found", String::from_utf8_lossy(k));
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let per_s = keys.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((lat, per_s))
}

pub(crate) async fn run(a: LocalReadArgs) -> anyhow::Result<()> {
    if a.reads == 0 || a.rounds == 0 {
        anyhow::bail!("--reads and --rounds must be positive");
    }
    let pki = weft_testkit::local::Pki::temporary()?;
    let addrs = weft_testkit::local::free_addrs(3)?;
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let listen = addrs[id as usize - 1].parse().context("an address")?;
        let node = weft::Node::builder(id, listen)
            .seeds(addrs.iter().cloned())
            .ud(format!("ud{id}"))
            .fd(format!("fd{id}"))
            .certs_dir(pki.node_dir(id)?)
            .start()
            .await
            .with_context(|| format!("starting node {id}"))?;
        nodes.push(node);
    }
    let config = nodes[0].client_config();
    weft::routing::ready_service(&config, &addrs, 3, SERVICE, 1, 3, Duration::from_secs(60)).await?;
    let keys: Vec<Vec<u8>> = (0..a.reads).map(|i| format!("key-{i:06}").into_bytes()).collect();
    for k in &keys {
        nodes[0].client().put(SERVICE, "default", k, &[7u8; 100]).await?;
    }
    // The node whose replica is the primary.
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        let mut found = None;
        for n in &nodes {
            let hosted = n.partitions().await?;
            if hosted.iter().any(|h| h.service.as_deref() == Some(SERVICE) && h.role == weft::embedded::Role::Primary) {
                found = Some(n);
            }
        }
        if let Some(n) = found {
            break n;
        }
        if Instant::now() > deadline {
            anyhow::bail!("no primary for the service within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        local.push(round(&keys, |k| async move { Ok(node.get(SERVICE, "default", &k).await?.is_some()) }).await?);
        remote.push(
            round(&keys, |k| async move { Ok(node.client().get(SERVICE, "default", &k).await?.is_some()) }).await?,
        );
    }
    let way = |runs: &[(Vec<f64>, f64)]| Way {
        p50_us: median(runs.iter().map(|(l, _)| weft_testkit::cluster_bench::percentile(l, 0.5)).collect()),
        p99_us: median(runs.iter().map(|(l, _)| weft_testkit::cluster_bench::percentile(l, 0.99)).collect()),
        reads_per_s: median(runs.iter().map(|(_, r)| *r).collect()),
    };
    let (in_process, grpc) = (way(&local), way(&remote));
    let ratio = (in_process.reads_per_s / grpc.reads_per_s.max(1e-9) * 100.0).round() / 100.0;
    let report = Report { reads_per_round: a.reads, rounds: a.rounds, in_process, grpc, in_process_over_grpc: ratio };
    for n in &nodes {
        n.stop_now().await?;
    }
    crate::print_report(&report, a.json, "weft bench local-read (in process vs gRPC, same node, same keys)")
}
