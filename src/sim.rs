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
    /// A real upgrade walk on local nodes beside the simulator's prediction of it: the
    /// same cluster (placement, primaries, sizes, the walk's measured rebuild rate and
    /// restart time), the same decision code; builds, moves and walk time compared.
    Validate(SimValidateArgs),
}

#[derive(Args)]
pub(crate) struct SimValidateArgs {
    /// Partitions of the walked service (4 replicas each, over 5 nodes in 5 UDs).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    partitions: u32,
    /// MiB written into each partition.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    mib: u64,
    /// Which log modes to walk: `volatile`, `durable`, or both (one cluster each).
    #[arg(long, value_enum, default_value_t = LogsArg::Both)]
    log: LogsArg,
    /// Seconds a walk may take before the run fails.
    #[arg(long, default_value_t = 600.0)]
    walk_within_s: f64,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogsArg {
    Volatile,
    Durable,
    Both,
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
    /// Careful: replica moves under way at once, cluster-wide (0: no cap; the live
    /// manager's cap is 4).
    #[arg(long, default_value_t = weft_cluster_manager::reconcile::MOVES_AT_ONCE)]
    moves_at_once: usize,
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
    /// Careful: replica moves under way at once, cluster-wide (0: no cap; the live
    /// manager's cap is 4).
    #[arg(long, default_value_t = weft_cluster_manager::reconcile::MOVES_AT_ONCE)]
    moves_at_once: usize,
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
        Sim::Validate(a) => validate(a),
    }
}

/// Relative difference: `simulated / real - 1` (0 when both are 0).
fn relative_error(simulated: f64, real: f64) -> f64 {
    if real > 0.0 {
        simulated / real - 1.0
    } else if simulated > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

fn validate(a: SimValidateArgs) -> anyhow::Result<()> {
    use weft_cluster_manager::sim::{SimConfig, run_from};
    if !(a.walk_within_s.is_finite() && a.walk_within_s > 0.0) {
        anyhow::bail!("--walk-within-s must be positive");
    }
    crate::init_tracing();
    let exe = std::env::current_exe().context("finding this binary")?;
    let modes: &[bool] = match a.log {
        LogsArg::Volatile => &[false],
        LogsArg::Durable => &[true],
        LogsArg::Both => &[false, true],
    };
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    let rt = crate::runtime()?;
    let mut runs = Vec::new();
    let (mut builds_equal, mut moves_equal, mut worst_error) = (true, true, 0.0f64);
    for &durable in modes {
        let log = if durable { "durable" } else { "volatile" };
        let config = weft_testkit::sim_validate::ValidateConfig {
            partitions: a.partitions,
            mib: a.mib,
            durable,
            walk_within: std::time::Duration::from_secs_f64(a.walk_within_s),
        };
        let quiet = a.json;
        let say = |line: &str| {
            if !quiet {
                eprintln!("weft sim validate ({log}): {line}");
            }
        };
        let real = rt.block_on(weft_testkit::sim_validate::real_walk(&exe, &config, &say))?;
        // The live manager has no cap per node (only its cluster-wide one, which the
        // simulator applies by default); a UD's restart takes what the real one took.
        let cfg = SimConfig {
            replicas: 4,
            partition_bytes: real.partition_bytes,
            rebuild_bytes_per_s: real.rebuild_bytes_per_s,
            builds_per_node: u32::MAX,
            upgrade_s: real.restart_s_per_ud,
            durable,
            ..SimConfig::default()
        };
        let sim = run_from(&cfg, real.nodes.clone(), real.parts.clone(), real.map_group.clone());
        let t = &real.totals;
        let builds_match = sim.moves == t.builds;
        let moves_match = sim.primary_moves == t.primary_moves && sim.removals == t.removals;
        let error = relative_error(sim.walk_s, real.walk_s);
        builds_equal &= builds_match;
        moves_equal &= moves_match;
        if error.abs() > worst_error.abs() {
            worst_error = error;
        }
        runs.push(serde_json::json!({
            "log": log,
            "partitions": real.parts.len(),
            "partition_bytes": real.partition_bytes,
            "rebuild_mb_per_s": round(real.rebuild_bytes_per_s / 1e6, 1),
            "rate_moves_s": real.rate_moves_s.iter().map(|s| round(*s, 2)).collect::<Vec<_>>(),
            "restart_s_per_ud": round(real.restart_s_per_ud, 2),
            "real": {
                "builds": t.builds,
                "primary_moves": t.primary_moves,
                "removals": t.removals,
                "walk_s": round(real.walk_s, 1),
            },
            "simulated": {
                "builds": sim.moves,
                "primary_moves": sim.primary_moves,
                "removals": sim.removals,
                "walk_s": round(sim.walk_s, 1),
                "refused_at": sim.refused_at,
                "quorum_loss_events": sim.quorum_loss_events,
            },
            "builds_equal": builds_match,
            "moves_equal": moves_match,
            "walk_time_error": round(error, 3),
        }));
    }
    let report = serde_json::json!({
        "runs": runs,
        "builds_equal": builds_equal,
        "moves_equal": moves_equal,
        "walk_time_error": round(worst_error, 3),
    });
    if a.json {
        println!("{report}");
        return Ok(());
    }
    println!("weft sim validate: {} partitions x 4 replicas of {} MiB, 5 nodes in 5 UDs", a.partitions, a.mib);
    println!(
        "{:<9} {:>9} {:>7} {:>15} {:>15} {:>15} {:>17} {:>7}",
        "log", "MB/s", "restart", "builds r/s", "primaries r/s", "removals r/s", "walk s real/sim", "error"
    );
    for r in &runs {
        let pair = |k: &str| format!("{}/{}", r["real"][k], r["simulated"][k]);
        println!(
            "{:<9} {:>9} {:>7} {:>15} {:>15} {:>15} {:>17} {:>7}",
            r["log"].as_str().unwrap_or(""),
            r["rebuild_mb_per_s"],
            r["restart_s_per_ud"],
            pair("builds"),
            pair("primary_moves"),
            pair("removals"),
            pair("walk_s"),
            format!("{:+.0}%", r["walk_time_error"].as_f64().unwrap_or(0.0) * 100.0),
        );
    }
    println!(
        "builds equal: {builds_equal}; moves equal: {moves_equal}; walk time error (worst): {:+.0}%",
        worst_error * 100.0
    );
    Ok(())
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
        moves_at_once: a.moves_at_once,
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
        "moves_at_once": a.moves_at_once,
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
         once, {} moves at once (careful; 0: no cap), volatile replicas ({} ms)",
        a.nodes, a.partitions, a.partition_mib, a.uds, a.upgrade_s, a.builds_per_node, a.moves_at_once, wall_ms
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
        moves_at_once: a.moves_at_once,
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
