//! `weft bench kv`: YCSB workloads A–F against a weft service, an etcd cluster, or both
//! side by side (see `weft_testkit::ycsb`). Without `--endpoints` it starts local clusters itself.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use weft::routing::ServiceClient;
use weft_testkit::ycsb::{self, KeyDistribution, KvConfig, KvReport, Target, Workload};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    /// A weft service.
    Weft,
    /// An etcd cluster (built with `--features etcd`).
    Etcd,
    /// Local weft and etcd clusters side by side, with ratios (built with `--features etcd`).
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogMode {
    /// Memory-only logs (etcd: no fsync).
    Volatile,
    /// Logs on disk with fsync.
    Durable,
    /// Volatile, then durable.
    Both,
}

#[derive(Args)]
pub struct KvBenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = TargetArg::Weft)]
    target: TargetArg,
    /// Endpoints of a running cluster (weft: HOST:PORT; etcd: http://HOST:PORT), comma
    /// separated; without them, local clusters are started (not with --target both).
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Log mode of local clusters.
    #[arg(long, value_enum, default_value_t = LogMode::Volatile)]
    mode: LogMode,
    /// Members of each local cluster (weft: nodes; etcd: members).
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// Partitions of the weft service (created if missing; 4 replicas each). One, like
    /// etcd's single raft group: on a machine with fewer cores than nodes, more partitions
    /// spread the load over more processes without adding cores.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// The weft service.
    #[arg(long, default_value = "ycsb")]
    service: String,
    /// The etcd binary for local etcd clusters.
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    /// Workloads to run, in order (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "a,b,c,f,d,e")]
    workloads: Vec<Workload>,
    /// Records loaded before the workloads (not timed).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Most operations per workload.
    #[arg(long, default_value_t = 10_000_000)]
    operations: u64,
    /// Most seconds per workload.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Request key distribution (workload D always uses `latest`).
    #[arg(long, value_enum, default_value_t = KeyDistribution::Zipfian)]
    distribution: KeyDistribution,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// With --target both: draw the comparison as an SVG chart into this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
    /// Local weft clusters run `--insecure` (plaintext, no authentication), to measure what
    /// TLS costs; with --target both, etcd runs without TLS too.
    #[arg(long)]
    insecure: bool,
    /// Credentials for --endpoints (a running secure cluster).
    #[command(flatten)]
    creds: crate::creds::ClientArgs,
}

pub(crate) const NO_ETCD: &str =
    "this weft was built without etcd support: benches/vs-etcd.sh builds it with --features etcd";

pub async fn run(a: KvBenchArgs) -> anyhow::Result<()> {
    if a.records == 0 || a.operations == 0 || a.clients == 0 || a.value_size == 0 || a.members == 0 {
        bail!("--records, --operations, --clients, --value-size and --members must be positive");
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0) || a.workloads.is_empty() {
        bail!("--seconds must be positive and --workloads name at least one workload");
    }
    if a.svg.is_some() && a.target != TargetArg::Both {
        bail!("--svg draws the weft/etcd comparison: use it with --target both");
    }
    let cfg = KvConfig {
        records: a.records,
        operations: a.operations,
        seconds: a.seconds,
        distribution: a.distribution,
        value_size: a.value_size,
        clients: a.clients,
        seed: a.seed,
    };
    let modes: &[bool] = match a.mode {
        LogMode::Volatile => &[false],
        LogMode::Durable => &[true],
        LogMode::Both => &[false, true],
    };
    if a.target != TargetArg::Weft && !cfg!(feature = "etcd") {
        bail!(NO_ETCD);
    }
    if a.target == TargetArg::Both {
        return versus(&a, cfg, modes).await;
    }
    let mut runs = Vec::new();
    if a.endpoints.is_empty() {
        for &durable in modes {
            runs.push(local(&a, &cfg, durable).await?);
        }
    } else {
        let (target, name) = remote(&a).await?;
        runs.push(ycsb::run(&target, name, &cfg, &a.workloads).await?);
    }
    print_runs(&runs, a.json)
}

/// A target on the cluster at `--endpoints`.
async fn remote(a: &KvBenchArgs) -> anyhow::Result<(Target, String)> {
    if a.target == TargetArg::Etcd {
        #[cfg(feature = "etcd")]
        return Ok((Target::etcd(&a.endpoints, None).await?, format!("etcd at {}", a.endpoints.join(","))));
    }
    let config = a.creds.config()?;
    let map = ServiceClient::fetch_map(&config, &a.endpoints, std::time::Duration::from_secs(10)).await?;
    if !map.map.as_ref().is_some_and(|m| m.services.contains_key(&a.service)) {
        bail!(
            "the cluster has no service {:?}: `weft ctl create-service {} --partitions 8` makes one",
            a.service,
            a.service
        );
    }
    Ok((Target::weft(a.endpoints.clone(), &a.service, config), format!("weft at {}", a.endpoints.join(","))))
}

/// One run on a local cluster started for it.
async fn local(a: &KvBenchArgs, cfg: &KvConfig, durable: bool) -> anyhow::Result<KvReport> {
    if a.target == TargetArg::Etcd {
        #[cfg(feature = "etcd")]
        return Ok(ycsb::clusters::run_etcd(&a.etcd_bin, a.members, durable, !a.insecure, cfg, &a.workloads).await?.0);
    }
    let exe = std::env::current_exe().context("finding the weft binary")?;
    let tls = !a.insecure;
    Ok(ycsb::clusters::run_weft(&exe, a.members, durable, tls, &a.service, a.partitions, cfg, &a.workloads).await?)
}

#[cfg(feature = "etcd")]
async fn versus(a: &KvBenchArgs, cfg: KvConfig, modes: &[bool]) -> anyhow::Result<()> {
    if !a.endpoints.is_empty() {
        bail!("--target both starts its own local clusters; drop --endpoints");
    }
    let vc = ycsb::versus::VersusConfig {
        exe: std::env::current_exe().context("finding the weft binary")?,
        etcd: a.etcd_bin.clone(),
        members: a.members,
        partitions: a.partitions,
        durable: modes.to_vec(),
        kv: cfg,
        workloads: a.workloads.clone(),
        tls: !a.insecure,
    };
    let report = ycsb::versus::versus(&vc).await?;
    if let Some(svg) = &a.svg {
        ycsb::versus::chart(&report, svg)?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let runs: Vec<KvReport> = report.pairings.iter().flat_map(|p| [p.etcd.clone(), p.weft.clone()]).collect();
    print_runs(&runs, false)?;
    let mut out = std::io::stdout().lock();
    for p in &report.pairings {
        let ratios: Vec<String> = p.ratios.iter().map(|(w, r)| format!("{w} {r:.2}x")).collect();
        writeln!(out, "{} weft/etcd throughput: {}", p.mode, ratios.join("  "))?;
    }
    writeln!(out, "smallest ratio {:.2}; weft p99 never higher: {}", report.min_ratio, report.p99_not_higher)?;
    Ok(())
}

#[cfg(not(feature = "etcd"))]
async fn versus(_: &KvBenchArgs, _: KvConfig, _: &[bool]) -> anyhow::Result<()> {
    bail!(NO_ETCD)
}

fn print_runs(runs: &[KvReport], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "runs": runs }))?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for r in runs {
        let c = &r.config;
        writeln!(
            out,
            "{}: {} records of {} bytes, {} clients, {:?} keys, load {:.1} s",
            r.target, c.records, c.value_size, c.clients, c.distribution, r.load_s
        )?;
        writeln!(
            out,
            "  {:<3} {:>10} {:>7}  {:<18} {:>8} {:>8} {:>8}",
            "wl", "ops/s", "errors", "op", "p50 ms", "p99 ms", "p999 ms"
        )?;
        for w in &r.workloads {
            for (i, (op, s)) in w.per_op.iter().enumerate() {
                let (name, rate, errors) = if i == 0 {
                    (w.workload, format!("{:.0}", w.ops_per_s), w.errors.to_string())
                } else {
                    ("", String::new(), String::new())
                };
                writeln!(
                    out,
                    "  {name:<3} {rate:>10} {errors:>7}  {op:<18} {:>8.2} {:>8.2} {:>8.2}",
                    s.p50_ms, s.p99_ms, s.p999_ms
                )?;
            }
        }
    }
    Ok(())
}
