//! `weft playground`: a local cluster on loopback, ready to use.
//!
//! Starts N `weft node` processes (node i serves on `base-port + i - 1`, in UD `ud<k>` and
//! FD `fd<i>` with k = (i - 1) mod U + 1; the first three are seeds), waits until every node
//! has registered with the cluster manager, creates the demo service and waits until each of
//! its partitions has a primary, then prints how to use it and runs until Ctrl-C.
//! Node i serves Prometheus metrics on `base-port + 10 + i - 1`.
//!
//! Secure by default: it makes the cluster's CA, one certificate directory per node and
//! `root`'s client certificate in `DATA_DIR/certs` (a temporary directory without
//! `--data-dir`), reusing a CA already there, and prints the `export WEFT_CERTS_DIR=...`
//! line that points `weft kv`, `weft ctl` and `weft bench` at them. `--insecure` starts
//! plaintext nodes that let anyone do anything.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use std::sync::Arc;

use weft_testkit::local::{self, Security};

#[derive(Args)]
pub struct PlaygroundArgs {
    /// Node processes.
    #[arg(long, default_value_t = 5)]
    nodes: u64,
    /// Upgrade domains (nodes are spread over them round-robin).
    #[arg(long, default_value_t = 5)]
    uds: u64,
    /// Node i serves gRPC on base-port + i - 1.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Data directory (one subdirectory per node); with --durable, a temporary one if absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Durable log mode on every node.
    #[arg(long)]
    durable: bool,
    /// Seconds a silent node may go before its replicas are replaced.
    #[arg(long, default_value_t = 10.0)]
    down_grace: f64,
    /// No TLS and no authentication: anyone who reaches a port may do anything.
    #[arg(long)]
    insecure: bool,
    /// The demo service's name.
    #[arg(long, default_value = "demo")]
    service: String,
    /// The demo service's partitions.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Replicas per partition.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    replicas: u32,
}

pub async fn run(a: PlaygroundArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes > 10 || a.uds == 0 || u64::from(a.base_port) + 20 > 65_536 {
        bail!("--nodes must be 1 to 10 (metrics use base-port + 10 + i - 1), --uds positive, ports below 65536");
    }
    if u64::from(a.replicas) > a.nodes {
        bail!(
            "--replicas {}: a partition's replicas sit on distinct nodes, and --nodes is {}; raise --nodes or lower --replicas",
            a.replicas,
            a.nodes
        );
    }
    let exe = std::env::current_exe().context("finding the weft binary")?;
    let temp = tempfile::tempdir().context("temporary data directory")?;
    let data_dir = match (&a.data_dir, a.durable) {
        (Some(d), _) => Some(d.clone()),
        (None, true) => Some(temp.path().to_path_buf()),
        (None, false) => None,
    };
    let security = if a.insecure {
        Security::Insecure
    } else {
        let dir = data_dir.as_deref().unwrap_or(temp.path()).join("certs");
        Security::Tls(Arc::new(local::Pki::open_or_create(&dir)?))
    };
    let addrs: Vec<String> = (1..=a.nodes).map(|i| format!("127.0.0.1:{}", u64::from(a.base_port) + i - 1)).collect();
    let seeds = addrs[..addrs.len().min(3)].join(",");
    let grace = a.down_grace.to_string();
    let extra = |i: u64| {
        let metrics = format!("127.0.0.1:{}", u64::from(a.base_port) + 10 + i - 1);
        ["--down-grace", &grace, "--metrics", &metrics].map(String::from).to_vec()
    };
    let nodes = local::start_managed(&exe, &addrs, a.uds as usize, data_dir.as_deref(), a.durable, &security, extra)?;
    for n in &nodes {
        eprintln!("node {} up on {} (ud{}, fd{})", n.id, n.addr, (n.id - 1) % a.uds + 1, n.id);
    }
    let endpoint = addrs[0].clone();
    let within = Duration::from_secs(60);
    let config = security.root_config()?;
    local::ready_service(&config, &addrs, nodes.len(), &a.service, a.partitions, a.replicas, within).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "weft playground: {} nodes in {} upgrade domains, seeds {seeds}", a.nodes, a.uds.min(a.nodes))?;
    writeln!(out, "service {:?}: {} partitions x {} replicas, ready", a.service, a.partitions, a.replicas)?;
    writeln!(out, "endpoint {endpoint} (every node answers every command)")?;
    match &security {
        Security::Tls(pki) => {
            let dir = pki.dir().display();
            writeln!(
                out,
                "metrics  https://127.0.0.1:{}/metrics (node 1; node i on +i-1)",
                u64::from(a.base_port) + 10
            )?;
            writeln!(out, "security TLS everywhere; the CA, root's client certificate and each node's are in {dir}")?;
            writeln!(out)?;
            writeln!(out, "in another shell, first:")?;
            writeln!(out, "  export WEFT_CERTS_DIR={dir}")?;
        }
        Security::Insecure => {
            writeln!(
                out,
                "metrics  http://127.0.0.1:{}/metrics (node 1; node i on +i-1)",
                u64::from(a.base_port) + 10
            )?;
            writeln!(
                out,
                "security NONE (--insecure): no TLS, no authentication; anyone who reaches a port may do anything"
            )?;
        }
    }
    writeln!(out)?;
    writeln!(out, "try:")?;
    writeln!(out, "  weft kv put --service {} hello world", a.service)?;
    writeln!(out, "  weft kv get --service {} hello", a.service)?;
    writeln!(out, "  weft ctl partitions --service {}", a.service)?;
    writeln!(out, "  weft ctl nodes")?;
    writeln!(out, "  kill -9 <a node's pid> and watch `weft ctl partitions` replace its replicas")?;
    writeln!(out)?;
    writeln!(out, "Ctrl-C stops every node.")?;
    out.flush()?;
    drop(out);
    // Ctrl-C reaches the nodes too (same process group); a SIGTERM to the playground
    // alone must not orphan them, so both end here and the nodes are killed on drop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    drop(nodes);
    Ok(())
}
