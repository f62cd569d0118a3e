//! `weft sim`: the cluster manager's decision code driven without a network.

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::print_report;

#[derive(Subcommand)]
pub(crate) enum Sim {
    /// One full upgrade-domain walk on a simulated cluster and clock.
    Upgrade(SimUpgradeArgs),
}

#[derive(Args)]
pub(crate) struct SimUpgradeArgs {
    /// Nodes.
    #[arg(long, default_value_t = 100)]
    nodes: u64,
    /// Upgrade domains.
    #[arg(long, default_value_t = 5)]
    uds: u64,
    /// Replicas per partition.
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Partitions.
    #[arg(long, default_value_t = 1000)]
    partitions: u64,
    /// `careful` (weft: stand-ins built before a UD goes down) or `classic` (the reference
    /// case: replace after a timeout, never wait, keep standbys).
    #[arg(long, value_enum, default_value_t = PolicyArg::Careful)]
    policy: PolicyArg,
    /// MiB of one replica.
    #[arg(long, default_value_t = 4096)]
    partition_mib: u64,
    /// Rebuild speed of one build, MB/s.
    #[arg(long, default_value_t = 40.0)]
    rebuild_mbps: f64,
    /// Seconds a UD's nodes are down for their upgrade.
    #[arg(long, default_value_t = 300.0)]
    upgrade_s: f64,
    /// Classic: seconds a replica may be down before it is replaced.
    #[arg(long, default_value_t = 60.0)]
    restart_wait_s: f64,
    /// Classic: seconds a replaced replica that came back is kept as a standby.
    #[arg(long, default_value_t = 3600.0)]
    standby_keep_s: f64,
    /// Whether the walked nodes keep their replicas across the restart (`durable`) or come
    /// back empty (`volatile`, weft's in-memory default).
    #[arg(long, value_enum, default_value_t = weft_testkit::cluster_bench::Mode::Volatile)]
    log: weft_testkit::cluster_bench::Mode,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum PolicyArg {
    Careful,
    Classic,
}

pub(crate) fn run(s: Sim) -> anyhow::Result<()> {
    match s {
        Sim::Upgrade(a) => upgrade(a),
    }
}

fn upgrade(a: SimUpgradeArgs) -> anyhow::Result<()> {
    use weft_cluster_manager::sim::{Policy, SimConfig, run};
    if a.nodes == 0 || a.uds == 0 || a.replicas == 0 || a.partitions == 0 {
        anyhow::bail!("--nodes, --uds, --replicas and --partitions must be positive");
    }
    let times = [a.rebuild_mbps, a.upgrade_s, a.restart_wait_s, a.standby_keep_s];
    if times.iter().any(|t| !t.is_finite() || *t < 0.0) || a.rebuild_mbps <= 0.0 {
        anyhow::bail!("rates and times must be non-negative numbers (--rebuild-mbps positive)");
    }
    let policy = match a.policy {
        PolicyArg::Careful => Policy::Careful,
        PolicyArg::Classic => Policy::Classic,
    };
    let cfg = SimConfig {
        nodes: a.nodes,
        uds: a.uds,
        replicas: a.replicas,
        partitions: a.partitions,
        policy,
        partition_bytes: a.partition_mib << 20,
        rebuild_bytes_per_s: a.rebuild_mbps * 1e6,
        upgrade_s: a.upgrade_s,
        restart_wait_s: a.restart_wait_s,
        standby_keep_s: a.standby_keep_s,
        durable: a.log == weft_testkit::cluster_bench::Mode::Durable,
    };
    let started = std::time::Instant::now();
    let r = run(&cfg).context("placing the simulated cluster")?;
    let report = serde_json::json!({
        "nodes": a.nodes,
        "uds": a.uds,
        "replicas": a.replicas,
        "partitions": a.partitions,
        "policy": format!("{policy:?}").to_lowercase(),
        "peak_replicas_per_node": r.peak_replicas_per_node,
        "baseline_replicas_per_node": r.baseline_replicas_per_node,
        "peak_density_ratio": (r.peak_density_ratio * 1000.0).round() / 1000.0,
        "moves": r.moves,
        "primary_moves": r.primary_moves,
        "quorum_loss_events": r.quorum_loss_events,
        "quorum_at_risk_events": r.quorum_at_risk_events,
        "walk_s": r.walk_s.round(),
        "doubled_partitions": r.doubled_partitions,
        "refused_at": r.refused_at,
        "blocked_stand_ins": r.blocked_stand_ins,
        "log": a.log.name(),
        "sim_wall_ms": started.elapsed().as_millis() as u64,
    });
    print_report(&report, a.json, "weft sim upgrade")?;
    if let Some(ud) = r.refused_at.filter(|_| !a.json) {
        println!(
            "the walk stopped at {ud}: {} stand-ins found no room outside it (a live walk waits there for room)",
            r.blocked_stand_ins
        );
    }
    Ok(())
}
