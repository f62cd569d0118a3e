//! `weft bench`: the engine, replication, rebuild, failover, density and YCSB benchmarks, each
//! printing one JSON object with `--json`. The drivers are `weft-benches` (engine) and
//! `weft_testkit` (clusters); `bench_kv` is the YCSB command.

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::chaos::ModeArg;
use crate::{bench_kv, init_tracing, print_report, runtime};
use weft_testkit::watch_bench;

#[derive(Subcommand)]
pub(crate) enum Bench {
    /// The in-memory engine against std's BTreeMap, on the same records in the same run.
    Engine(EngineArgs),
    /// Write throughput and latency of one partition replicated on local node processes.
    Replication(ReplicationArgs),
    /// Write unavailability when the primary's process is killed under load.
    Failover(FailoverArgs),
    /// Time to build a new replica of an M MiB partition from a snapshot over loopback gRPC.
    Rebuild(RebuildArgs),
    /// YCSB workloads A-F against weft, etcd, or both side by side.
    Kv(Box<bench_kv::KvBenchArgs>),
    /// What idle partitions cost: creation time, idle CPU and memory per replica, failover
    /// of idle groups, and write throughput beside them.
    Density(DensityArgs),
    /// Change feeds: `replication`'s write load with 0, 1 and 100 watchers of the
    /// partition; throughput ratios and the delivery lag to a watcher.
    Watch(WatchArgs),
    /// A key read from a service embedding `weft::Node`: in process from the local
    /// primary, against the same read through gRPC, side by side.
    LocalRead(crate::bench_local::LocalReadArgs),
    /// Full and incremental backup and restore throughput for a partition of --mib MiB,
    /// and the write throughput the service keeps while full backups run.
    Backup(crate::bench_backup::BackupBenchArgs),
}

#[derive(Args)]
pub(crate) struct WatchArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of each run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Watcher counts, one run each, on the same cluster (the first is the baseline of
    /// the ratios).
    #[arg(long, value_delimiter = ',', default_value = "0,1,100")]
    watchers: Vec<usize>,
    /// Each watcher watches one writer's keys (a prefix) instead of the whole partition.
    #[arg(long)]
    prefixed: bool,
    /// Nodes (and etcd members) without TLS.
    #[arg(long)]
    insecure: bool,
    /// The store: weft, etcd (built with `--features etcd`), or both side by side.
    #[arg(long, value_enum, default_value_t = WatchTarget::Weft)]
    target: WatchTarget,
    /// The etcd binary for `--target etcd|both`.
    #[arg(long, default_value = "etcd")]
    etcd_bin: std::path::PathBuf,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

/// The store `weft bench watch` loads.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WatchTarget {
    /// Local weft nodes.
    Weft,
    /// A local etcd cluster of as many members.
    Etcd,
    /// Both, one after the other, with each store's ratios side by side.
    Both,
}

/// Both stores' reports, and per watcher count each store's write rate as a fraction of
/// its own rate in the first run, side by side.
fn watch_versus(reports: &[watch_bench::WatchReport]) -> serde_json::Value {
    let kept: Vec<serde_json::Value> = reports
        .first()
        .map(|r| r.runs.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let mut row = serde_json::json!({ "watchers": run.watchers });
            for r in reports {
                if let Some(x) = r.runs.get(i) {
                    row[r.store] = serde_json::json!((x.ratio * 1000.0).round() / 1000.0);
                }
            }
            row
        })
        .collect();
    serde_json::json!({ "kept": kept, "reports": reports })
}

#[derive(Args)]
pub(crate) struct DensityArgs {
    /// Node processes (at least 5).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Partitions of the idle service, 4 replicas each.
    #[arg(long, default_value_t = 2500)]
    partitions: u32,
    /// Seconds of each idle CPU window.
    #[arg(long, default_value_t = 30.0)]
    idle_seconds: f64,
    /// Seconds of each throughput run (three before the idle service exists, three beside it; the medians are compared).
    #[arg(long, default_value_t = 10.0)]
    load_seconds: f64,
    /// Seconds the idle service's creation may take before the run gives up.
    #[arg(long, default_value_t = 600.0)]
    create_within_s: f64,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct RebuildArgs {
    /// Partition size in MiB of records (100-byte values).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
    /// Nodes without TLS.
    #[arg(long)]
    insecure: bool,
}

/// Whether a benchmark's nodes speak TLS.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SecurityArg {
    /// TLS between nodes and to the client (the default, as nodes run).
    Tls,
    /// `--insecure` nodes, plaintext.
    Insecure,
    /// Plaintext, then TLS, side by side: both reports and TLS's throughput ratio.
    Both,
}

#[derive(Args)]
pub(crate) struct ReplicationArgs {
    /// Replicas (one node process each).
    #[arg(long, default_value_t = 4)]
    replicas: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Log mode: `both` runs volatile, then durable, and nests the durable figures.
    #[arg(long, value_enum, default_value_t = ModeArg::Both)]
    mode: ModeArg,
    /// TLS or plaintext; `both` measures the two side by side.
    #[arg(long, value_enum, default_value_t = SecurityArg::Tls)]
    security: SecurityArg,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct FailoverArgs {
    /// Trials (each on a fresh 4-node cluster).
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
    /// Nodes without TLS.
    #[arg(long)]
    insecure: bool,
}

#[derive(Args)]
pub(crate) struct EngineArgs {
    /// Records per table.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Full repetitions; every figure is the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed for the generated records.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Engine(a) => engine(a),
        Bench::Kv(a) => {
            init_tracing();
            runtime()?.block_on(bench_kv::run(*a))
        }
        Bench::Backup(a) => {
            init_tracing();
            runtime()?.block_on(crate::bench_backup::run(a))
        }
        Bench::Replication(a) => {
            if a.replicas == 0 || a.clients == 0 || a.seconds.is_nan() || a.seconds <= 0.0 {
                anyhow::bail!("--replicas, --clients and --seconds must be positive");
            }
            use weft_testkit::cluster_bench::{Mode, replication};
            let rt = runtime()?;
            let one = |tls: bool| {
                rt.block_on(async {
                    let run = |mode| replication(a.replicas, a.clients, a.seconds, mode, tls);
                    Ok::<_, weft_testkit::Error>(match a.mode {
                        ModeArg::Volatile => run(Mode::Volatile).await?,
                        ModeArg::Durable => run(Mode::Durable).await?,
                        ModeArg::Both => {
                            let mut r = run(Mode::Volatile).await?;
                            r.durable = Some(Box::new(run(Mode::Durable).await?));
                            r
                        }
                    })
                })
            };
            match a.security {
                SecurityArg::Tls => print_report(&one(true)?, a.json, "weft bench replication"),
                SecurityArg::Insecure => print_report(&one(false)?, a.json, "weft bench replication"),
                SecurityArg::Both => {
                    let (plain, tls) = (one(false)?, one(true)?);
                    let ratio = |t: &weft_testkit::cluster_bench::ReplicationReport,
                                 p: &weft_testkit::cluster_bench::ReplicationReport| {
                        (t.writes_per_s / p.writes_per_s.max(1e-9) * 1000.0).round() / 1000.0
                    };
                    let mut ratios = serde_json::json!({ plain.mode: ratio(&tls, &plain) });
                    if let (Some(t), Some(p)) = (&tls.durable, &plain.durable) {
                        ratios[p.mode] = ratio(t, p).into();
                    }
                    let report = serde_json::json!({
                        "insecure": plain,
                        "tls": tls,
                        "tls_over_insecure_writes_per_s": ratios,
                    });
                    print_report(&report, a.json, "weft bench replication (insecure, then TLS)")
                }
            }
        }
        Bench::Rebuild(a) => {
            if a.mib == 0 {
                anyhow::bail!("--mib must be positive");
            }
            let bar = match a.json {
                true => crate::progress::Progress::new("rebuild", "records", 0, true),
                false => crate::progress::Progress::bar_only("rebuild", "records", 0),
            };
            let on = |done: u64, total: u64| {
                bar.set_total(total);
                bar.set(done, "");
            };
            let report = runtime()?.block_on(weft_testkit::cluster_bench::rebuild(a.mib, !a.insecure, &on))?;
            bar.finish("");
            print_report(&report, a.json, "weft bench rebuild")
        }
        Bench::Density(a) => {
            let positive = |s: f64| s.is_finite() && s > 0.0;
            if a.partitions == 0 || ![a.idle_seconds, a.load_seconds, a.create_within_s].into_iter().all(positive) {
                anyhow::bail!("--partitions, --idle-seconds, --load-seconds and --create-within-s must be positive");
            }
            init_tracing();
            let config = weft_testkit::density::DensityConfig {
                nodes: a.nodes,
                partitions: a.partitions,
                idle_window: std::time::Duration::from_secs_f64(a.idle_seconds),
                load_window: std::time::Duration::from_secs_f64(a.load_seconds),
                create_within: std::time::Duration::from_secs_f64(a.create_within_s),
            };
            let exe = std::env::current_exe().context("finding this binary")?;
            let report = runtime()?.block_on(weft_testkit::density::density(&exe, &config))?;
            print_report(&report, a.json, "weft bench density")
        }
        Bench::Watch(a) => {
            if a.clients == 0 || !(a.seconds.is_finite() && a.seconds > 0.0) || a.watchers.is_empty() {
                anyhow::bail!("--clients and --seconds must be positive, --watchers not empty");
            }
            if a.target != WatchTarget::Weft && !cfg!(feature = "etcd") {
                anyhow::bail!(bench_kv::NO_ETCD);
            }
            let config = |store| weft_testkit::watch_bench::WatchConfig {
                store,
                watchers: a.watchers.clone(),
                clients: a.clients,
                seconds: a.seconds,
                tls: !a.insecure,
                prefixed: a.prefixed,
            };
            let mut reports = Vec::new();
            let rt = runtime()?;
            if a.target != WatchTarget::Etcd {
                reports.push(rt.block_on(weft_testkit::watch_bench::watch(&config(watch_bench::Store::Weft)))?);
            }
            #[cfg(feature = "etcd")]
            if a.target != WatchTarget::Weft {
                let store = watch_bench::Store::Etcd(a.etcd_bin.clone());
                reports.push(rt.block_on(weft_testkit::watch_bench::watch(&config(store)))?);
            }
            match reports.as_slice() {
                [one] => print_report(one, a.json, "weft bench watch"),
                _ => print_report(&watch_versus(&reports), a.json, "weft bench watch (weft and etcd)"),
            }
        }
        Bench::LocalRead(a) => runtime()?.block_on(crate::bench_local::run(a)),
        Bench::Failover(a) => {
            if a.trials == 0 {
                anyhow::bail!("--trials must be positive");
            }
            let report = runtime()?.block_on(weft_testkit::cluster_bench::failover(a.trials, !a.insecure))?;
            print_report(&report, a.json, "weft bench failover")
        }
    }
}

fn engine(a: EngineArgs) -> anyhow::Result<()> {
    let cfg = weft_benches::engine::EngineConfig { records: a.records, runs: a.runs, seed: a.seed };
    let report = weft_benches::engine::run(&cfg).context("engine benchmark")?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let value = serde_json::to_value(&report)?;
    println!("weft bench engine: {} records, median of {} runs", report.records, report.runs);
    if let Some(obj) = value.as_object() {
        for (k, v) in obj.iter().filter(|(k, _)| !matches!(k.as_str(), "targets" | "records" | "runs")) {
            match v.as_f64() {
                Some(f) => println!("  {k:<28} {f:>12.3}"),
                None => println!("  {k:<28} {v:>12}"),
            }
        }
    }
    println!("targets (the engine's, at 1,000,000 records):");
    for t in &report.targets {
        let mark = if t.met { "ok  " } else { "MISS" };
        println!("  {mark} {:<44} {:>10.3} (limit {:.3})", t.what, t.value, t.limit);
    }
    Ok(())
}
