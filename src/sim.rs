//! `weft sim`: the cluster manager's decision code driven without a network.

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::print_report;

#[derive(Subcommand)]
pub(crate) enum Sim {
    /// One full upgrade-domain walk on a simulated cluster and clock.
    Upgrade(SimUpgradeArgs),
    /// The comparison the project stands on: R = 5 and R = 4 over 5 UDs, the reference
    /// platform's rules (`classic`) and weft's walk (`careful`), at the reference's rebuild
    /// speed and weft's, volatile replicas (as the reference's were).
    Compare(SimCompareArgs),
}

#[derive(Args)]
pub(crate) struct SimCompareArgs {
    /// Nodes.
    #[arg(long, default_value_t = 100)]
    nodes: u64,
    /// Upgrade domains.
    #[arg(long, default_value_t = 5)]
    uds: u64,
    /// Partitions.
    #[arg(long, default_value_t = 1000)]
    partitions: u64,
    /// MiB of one replica (the reference's 4 GB).
    #[arg(long, default_value_t = 4096)]
    partition_mib: u64,
    /// weft's rebuild speed, MB/s (`weft bench rebuild`'s median in the README).
    #[arg(long, default_value_t = 151.0)]
    weft_rebuild_mbps: f64,
    /// Builds a node runs at once, each at the row's speed (how many the reference ran is
    /// not known; the model's default is one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    builds_per_node: u32,
    /// Seconds a UD's nodes are down for their upgrade.
    #[arg(long, default_value_t = 300.0)]
    upgrade_s: f64,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
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
    /// platform's rules: see `weft sim compare` and docs/cluster.md).
    #[arg(long, value_enum, default_value_t = PolicyArg::Careful)]
    policy: PolicyArg,
    /// MiB of one replica.
    #[arg(long, default_value_t = 4096)]
    partition_mib: u64,
    /// Rebuild speed of one build, MB/s.
    #[arg(long, default_value_t = 40.0)]
    rebuild_mbps: f64,
    /// Builds a node runs at once, each at --rebuild-mbps.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    builds_per_node: u32,
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
    /// Classic: turn one of the reference platform's rules off (repeatable).
    #[arg(long, value_enum)]
    without: Vec<RuleArg>,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

/// The classic policy's rules (`weft_cluster_manager::sim::ClassicRules`).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RuleArg {
    /// 1: volatile replicas are replaced at once (persisted ones after --restart-wait-s).
    VolatileReplacedAtOnce,
    /// 2: no two UDs differ by more than one replica of a partition.
    MaxDifference,
    /// 3: replicas go back to their original nodes after each UD.
    RestoreAfterUpgrade,
    /// 4: the next UD goes down while volatile replicas are still being built.
    NextUdDuringVolatileBuilds,
    /// 5: dropped replicas keep their records.
    KeepDroppedRecords,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum PolicyArg {
    Careful,
    Classic,
}

pub(crate) fn run(s: Sim) -> anyhow::Result<()> {
    match s {
        Sim::Upgrade(a) => upgrade(a),
        Sim::Compare(a) => compare(a),
    }
}

fn compare(a: SimCompareArgs) -> anyhow::Result<()> {
    use weft_cluster_manager::sim::{ClassicRules, REFERENCE_REBUILD_BYTES_PER_S, SimConfig, compare};
    if a.nodes == 0 || a.uds == 0 || a.partitions == 0 || a.partition_mib == 0 {
        anyhow::bail!("--nodes, --uds, --partitions and --partition-mib must be positive");
    }
    if !(a.weft_rebuild_mbps.is_finite() && a.weft_rebuild_mbps > 0.0 && a.upgrade_s.is_finite() && a.upgrade_s >= 0.0)
    {
        anyhow::bail!("--weft-rebuild-mbps must be positive and --upgrade-s non-negative");
    }
    let base = SimConfig {
        nodes: a.nodes,
        uds: a.uds,
        partitions: a.partitions,
        partition_bytes: a.partition_mib << 20,
        upgrade_s: a.upgrade_s,
        durable: false,
        builds_per_node: a.builds_per_node,
        ..SimConfig::default()
    };
    let started = std::time::Instant::now();
    let rows = compare(&base, &[REFERENCE_REBUILD_BYTES_PER_S, a.weft_rebuild_mbps * 1e6])
        .context("placing the simulated cluster")?;
    let wall_ms = started.elapsed().as_millis() as u64;
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    let json_rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let r = &row.report;
            serde_json::json!({
                "policy": format!("{:?}", row.policy).to_lowercase(),
                "replicas": row.replicas,
                "uds": row.uds,
                "rebuild_mb_per_s": round(row.rebuild_bytes_per_s / 1e6, 1),
                "replica_records_peak_ratio": round(r.replica_records_peak_ratio, 3),
                "replica_records_peak": r.replica_records_peak,
                "replica_records_baseline": r.replica_records_baseline,
                "replicas_per_node_peak_ratio": round(r.peak_density_ratio, 3),
                "replicas_per_node_peak": r.peak_replicas_per_node,
                "replicas_per_node_baseline": r.baseline_replicas_per_node,
                "builds": r.moves,
                "bytes_copied": r.bytes_copied,
                "quorum_loss_events": r.quorum_loss_events,
                "quorum_loss_partition_minutes": round(r.quorum_loss_partition_minutes, 0),
                "doubled_partitions": r.doubled_partitions,
                "partitions_short_at_end": r.partitions_short_at_end,
                "walk_s": r.walk_s.round(),
                "refused_at": r.refused_at,
            })
        })
        .collect();
    let rules = ClassicRules::default();
    let report = serde_json::json!({
        "nodes": a.nodes,
        "partitions": a.partitions,
        "partition_mib": a.partition_mib,
        "upgrade_s": a.upgrade_s,
        "builds_per_node": a.builds_per_node,
        "log": "volatile",
        "classic_rules": {
            "volatile_replaced_at_once": rules.volatile_replaced_at_once,
            "max_difference": rules.max_difference,
            "restore_after_upgrade": rules.restore_after_upgrade,
            "next_ud_during_volatile_builds": rules.next_ud_during_volatile_builds,
            "keep_dropped_records": rules.keep_dropped_records,
        },
        "rows": json_rows,
        "sim_wall_ms": wall_ms,
    });
    if a.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "weft sim compare: {} nodes, {} partitions of {} MiB, {} UDs, {} s per UD upgrade, {} build(s) per node at \
         once, volatile replicas ({} ms)",
        a.nodes, a.partitions, a.partition_mib, a.uds, a.upgrade_s, a.builds_per_node, wall_ms
    );
    println!(
        "{:<8} {:>2} {:>8} {:>14} {:>14} {:>7} {:>9} {:>11} {:>12} {:>8} {:>8}",
        "policy",
        "R",
        "MB/s",
        "records peak",
        "per node peak",
        "builds",
        "TB copied",
        "quorum lost",
        "part-minutes",
        "doubled",
        "walk s"
    );
    for row in &rows {
        let r = &row.report;
        println!(
            "{:<8} {:>2} {:>8.1} {:>14} {:>14} {:>7} {:>9.1} {:>11} {:>12.0} {:>8} {:>8.0}",
            format!("{:?}", row.policy).to_lowercase(),
            row.replicas,
            row.rebuild_bytes_per_s / 1e6,
            format!("{:.2}x", r.replica_records_peak_ratio),
            format!("{:.2}x", r.peak_density_ratio),
            r.moves,
            r.bytes_copied as f64 / 1e12,
            r.quorum_loss_events,
            r.quorum_loss_partition_minutes,
            r.doubled_partitions,
            r.walk_s,
        );
    }
    Ok(())
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
        builds_per_node: a.builds_per_node,
        upgrade_s: a.upgrade_s,
        restart_wait_s: a.restart_wait_s,
        standby_keep_s: a.standby_keep_s,
        durable: a.log == weft_testkit::cluster_bench::Mode::Durable,
        classic: weft_cluster_manager::sim::ClassicRules {
            volatile_replaced_at_once: !a.without.contains(&RuleArg::VolatileReplacedAtOnce),
            max_difference: !a.without.contains(&RuleArg::MaxDifference),
            restore_after_upgrade: !a.without.contains(&RuleArg::RestoreAfterUpgrade),
            next_ud_during_volatile_builds: !a.without.contains(&RuleArg::NextUdDuringVolatileBuilds),
            keep_dropped_records: !a.without.contains(&RuleArg::KeepDroppedRecords),
        },
        ..SimConfig::default()
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
        "replica_records_peak": r.replica_records_peak,
        "replica_records_baseline": r.replica_records_baseline,
        "replica_records_peak_ratio": (r.replica_records_peak_ratio * 1000.0).round() / 1000.0,
        "moves": r.moves,
        "bytes_copied": r.bytes_copied,
        "quorum_loss_partition_minutes": r.quorum_loss_partition_minutes.round(),
        "primary_moves": r.primary_moves,
        "quorum_loss_events": r.quorum_loss_events,
        "quorum_at_risk_events": r.quorum_at_risk_events,
        "walk_s": r.walk_s.round(),
        "doubled_partitions": r.doubled_partitions,
        "partitions_short_at_end": r.partitions_short_at_end,
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
