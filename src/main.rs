//! The `weft` binary: node host, operator CLI and benchmarks (see DESIGN.md's CLI contract).
//! Errors surface here as `anyhow` with a one-line message and a non-zero exit.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

mod bench_kv;
mod cert;
mod creds;
mod ctl;
mod kv;
mod playground;

/// mimalloc for the whole process: size classes without per-block headers keep each
/// 64-byte tree node on one cache line and cut allocation cost (TiKV makes the same
/// choice with jemalloc). Benchmarks' baselines run under the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "weft", version, about = "A partitioned, replicated, in-memory stateful store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A local cluster on loopback: 5 nodes in 5 upgrade domains and a demo service.
    Playground(playground::PlaygroundArgs),
    /// Operator commands: status, nodes, services, partitions, moves, drains.
    Ctl(ctl::CtlArgs),
    /// Put, get, delete and scan a service's records.
    Kv(kv::KvArgs),
    /// Simulators that drive the cluster manager's decision code without a network.
    #[command(subcommand)]
    Sim(Sim),
    /// Run a node: hosts replicas and serves the Store, Raft and NodeAdmin gRPC services.
    Node(NodeArgs),
    /// Benchmarks; each prints one JSON object with --json.
    #[command(subcommand)]
    Bench(Bench),
    /// Faults against real nodes under concurrent clients, then a linearizability check;
    /// exits non-zero unless the history is linearizable and no acknowledged write is lost.
    Chaos(ChaosArgs),
    /// Certificates: a cluster CA, node and client certificates, and what a directory holds.
    #[command(subcommand)]
    Cert(cert::Cert),
}

#[derive(Args)]
struct ChaosArgs {
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Node processes.
    #[arg(long, default_value_t = 5)]
    nodes: u64,
    /// Seed of the fault schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Log mode of every node (`both`: a durable run, then a volatile one); durable when
    /// not given, except with `--simulated`: volatile unless `--mode durable` (nodes on
    /// simulated disks that lose unsynced writes in a crash).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Keys the clients share.
    #[arg(long, default_value_t = 16)]
    keys: u64,
    /// Print one JSON object (an array with --mode both) and nothing else on stdout.
    #[arg(long)]
    json: bool,
    /// Write every operation of the history (JSON lines) to this file, for a closer look
    /// at an anomaly than its window gives.
    #[arg(long)]
    history: Option<std::path::PathBuf>,
    /// Run the nodes `--insecure` (by default they run with TLS, the clients as `root`).
    #[arg(long)]
    insecure: bool,
    /// Run the nodes in this process on a simulated network and clock (turmoil), under
    /// `--seed`: the same seed replays the same history (`history_hash`). Volatile nodes,
    /// plaintext; `--seconds` are simulated seconds.
    #[arg(long)]
    simulated: bool,
}

#[derive(Args)]
struct NodeArgs {
    /// Node id, 1 to 1048575: a seed's id is also its cluster-map replica's id, and the
    /// ids above are the ones the map gives replicas.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..weft::node::FIRST_REPLICA_ID))]
    id: u64,
    /// Address to serve gRPC on (port 0 picks a free port; the bound address is printed).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Upgrade domain.
    #[arg(long, default_value = "ud0", value_parser = domain_name)]
    ud: String,
    /// Fault domain.
    #[arg(long, default_value = "fd0", value_parser = domain_name)]
    fd: String,
    /// Seed nodes (cluster manager), comma-separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// Directory for durable logs and checkpoints.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Durable log mode (write-ahead log and checkpoints under --data-dir).
    #[arg(long)]
    durable: bool,
    /// Address for Prometheus metrics.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Seconds a silent node may go before the cluster manager marks it down and replaces
    /// its replicas.
    #[arg(long, default_value_t = 10.0)]
    down_grace: f64,
    /// Seconds between the cluster manager's own balancing rounds (0: only on command).
    #[arg(long, default_value_t = 60.0)]
    balance_every: f64,
    /// Seconds a move's new replica may make no progress (log, applied index, snapshot
    /// bytes) before the cluster manager abandons the move and plans again.
    #[arg(long, default_value_t = 120.0)]
    move_stall_s: f64,
    /// Most replicas this node takes.
    #[arg(long, default_value_t = 1000)]
    capacity_replicas: u32,
    /// Most engine memory (MiB) this node's replicas may hold.
    #[arg(long, default_value_t = 65536)]
    capacity_memory_mib: u64,
    /// Raft heartbeat interval, milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Raft election timeout lower bound, milliseconds (upper: twice it).
    #[arg(long, default_value_t = 400)]
    election_timeout_ms: u64,
    /// Log entries between snapshots.
    #[arg(long, default_value_t = 20_000)]
    snapshot_every: u64,
    /// Log entries kept behind a snapshot for slow followers.
    #[arg(long, default_value_t = 5_000)]
    keep_behind_snapshot: u64,
    /// Directory with ca.crt, node.crt and node.key (weft cert create-node makes them);
    /// WEFT_CERTS_DIR when not given (and not --insecure).
    #[arg(long)]
    certs_dir: Option<std::path::PathBuf>,
    /// Run without TLS or authentication: anyone who reaches a port may do anything.
    #[arg(long)]
    insecure: bool,
    /// Serve fault injection (`weft.testing.v1.Faults`: operators may cut this node's
    /// links): for `weft chaos` and tests, never for production.
    #[arg(long)]
    fault_injection: bool,
    /// Client connections held at once (past it, new ones are refused); node connections
    /// are not counted.
    #[arg(long, default_value_t = 4096)]
    max_client_connections: usize,
    /// Seconds a connection may go with no request in flight before it is closed.
    #[arg(long, default_value_t = 300.0)]
    idle_timeout_s: f64,
    /// Seconds a TLS handshake may take.
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout_s: f64,
    /// Requests one client may have in flight on this node at once.
    #[arg(long, default_value_t = 10_000)]
    client_in_flight_max: usize,
    /// Seconds a unary request may take (a client's shorter deadline wins).
    #[arg(long, default_value_t = 120.0)]
    request_deadline_s: f64,
}

#[derive(Subcommand)]
enum Sim {
    /// One full upgrade-domain walk on a simulated cluster and clock.
    Upgrade(SimUpgradeArgs),
}

#[derive(Args)]
struct SimUpgradeArgs {
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
enum PolicyArg {
    Careful,
    Classic,
}

#[derive(Subcommand)]
enum Bench {
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
}

#[derive(Args)]
struct RebuildArgs {
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
enum SecurityArg {
    /// TLS between nodes and to the client (the default, as nodes run).
    Tls,
    /// `--insecure` nodes, plaintext.
    Insecure,
    /// Plaintext, then TLS, side by side: both reports and TLS's throughput ratio.
    Both,
}

#[derive(Args)]
struct ReplicationArgs {
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Volatile,
    Durable,
    Both,
}

#[derive(Args)]
struct FailoverArgs {
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
struct EngineArgs {
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `a: b: c`, leaving out a cause whose text the
/// line already ends with (many library errors print their source in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Node(a) => node(a),
        Command::Playground(a) => {
            init_tracing();
            runtime()?.block_on(playground::run(a))
        }
        Command::Ctl(a) => runtime()?.block_on(ctl::run(a)),
        Command::Kv(a) => runtime()?.block_on(kv::run(a)),
        Command::Sim(Sim::Upgrade(a)) => sim_upgrade(a),
        Command::Cert(c) => cert::run(c),
        Command::Chaos(a) => {
            init_tracing();
            chaos(a)
        }
        Command::Bench(Bench::Engine(a)) => bench_engine(a),
        Command::Bench(Bench::Kv(a)) => {
            init_tracing();
            runtime()?.block_on(bench_kv::run(*a))
        }
        Command::Bench(Bench::Replication(a)) => {
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
        Command::Bench(Bench::Rebuild(a)) => {
            if a.mib == 0 {
                anyhow::bail!("--mib must be positive");
            }
            let report = runtime()?.block_on(weft_testkit::cluster_bench::rebuild(a.mib, !a.insecure))?;
            print_report(&report, a.json, "weft bench rebuild")
        }
        Command::Bench(Bench::Failover(a)) => {
            if a.trials == 0 {
                anyhow::bail!("--trials must be positive");
            }
            let report = runtime()?.block_on(weft_testkit::cluster_bench::failover(a.trials, !a.insecure))?;
            print_report(&report, a.json, "weft bench failover")
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")
}

/// Writes every operation of a chaos history to `path`, one JSON object per line.
fn write_history(path: &std::path::Path, history: &[weft_testkit::linearize::Op]) -> anyhow::Result<()> {
    let mut out = String::new();
    for op in history {
        out.push_str(&serde_json::to_string(op)?);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// `weft chaos --simulated`: one seeded run in this process.
fn chaos_simulated(a: &ChaosArgs) -> anyhow::Result<()> {
    let durable = match a.mode {
        None | Some(ModeArg::Volatile) => false,
        Some(ModeArg::Durable) => true,
        Some(ModeArg::Both) => anyhow::bail!("--simulated runs one mode per seed: --mode volatile or --mode durable"),
    };
    if a.insecure {
        anyhow::bail!("--simulated nodes are always plaintext; --insecure says nothing more");
    }
    let cfg = weft_testkit::simulated::SimulatedConfig {
        seed: a.seed,
        seconds: a.seconds,
        nodes: a.nodes,
        clients: a.clients,
        keys: a.keys,
        durable,
        ..Default::default()
    };
    let (report, history) = weft_testkit::simulated::run(&cfg)?;
    if let Some(path) = &a.history {
        write_history(path, &history)?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !report.linearizable || report.lost_acked_writes > 0 {
        anyhow::bail!(
            "simulated chaos found a violation: linearizable {}, lost acknowledged writes {}; replay with: {}",
            report.linearizable,
            report.lost_acked_writes,
            report.replay
        );
    }
    Ok(())
}

fn chaos(a: ChaosArgs) -> anyhow::Result<()> {
    if !(a.seconds.is_finite() && a.seconds > 0.0) {
        anyhow::bail!("--seconds must be positive");
    }
    if a.simulated {
        return chaos_simulated(&a);
    }
    let exe = std::env::current_exe().context("finding the weft binary")?;
    let modes: &[bool] = match a.mode.unwrap_or(ModeArg::Durable) {
        ModeArg::Durable => &[true],
        ModeArg::Volatile => &[false],
        ModeArg::Both => &[true, false],
    };
    let rt = runtime()?;
    let mut reports = Vec::new();
    for &durable in modes {
        let cfg = weft_testkit::chaos::ChaosConfig {
            seconds: a.seconds,
            nodes: a.nodes,
            seed: a.seed,
            durable,
            clients: a.clients,
            keys: a.keys,
            tls: !a.insecure,
            ..weft_testkit::chaos::ChaosConfig::default()
        };
        let (report, history) = rt.block_on(weft_testkit::chaos::run(&exe, &cfg))?;
        if let Some(path) = &a.history {
            write_history(path, &history)?;
        }
        reports.push(report);
    }
    if a.json {
        let out =
            if reports.len() == 1 { serde_json::to_string(&reports[0])? } else { serde_json::to_string(&reports)? };
        println!("{out}");
    } else {
        for r in &reports {
            println!("{}", serde_json::to_string_pretty(r)?);
        }
    }
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.linearizable || r.lost_acked_writes > 0)
        .map(|r| {
            format!("{} run: linearizable {}, lost acknowledged writes {}", r.mode, r.linearizable, r.lost_acked_writes)
        })
        .collect();
    if !bad.is_empty() {
        anyhow::bail!("chaos found a violation (seed {}): {}", a.seed, bad.join("; "));
    }
    Ok(())
}

fn print_report(report: &impl serde::Serialize, json: bool, title: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!("{title}");
    if let Some(obj) = serde_json::to_value(report)?.as_object() {
        for (k, v) in obj {
            println!("  {k:<24} {v}");
        }
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,weft=info,weft_replica=info,openraft::core::heartbeat=error")
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// An upgrade or fault domain's name: placement compares them, so it must say something.
fn domain_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("1 to 64 characters, no spaces".into());
    }
    Ok(s.to_string())
}

fn node(a: NodeArgs) -> anyhow::Result<()> {
    if a.durable && a.data_dir.is_none() {
        anyhow::bail!("--durable needs --data-dir DIR (where the write-ahead logs and checkpoints go)");
    }
    if !(a.down_grace.is_finite() && a.down_grace > 0.0) {
        anyhow::bail!("--down-grace must be a positive number of seconds");
    }
    if !(a.balance_every.is_finite() && a.balance_every >= 0.0) {
        anyhow::bail!("--balance-every must be a non-negative number of seconds");
    }
    if !(a.move_stall_s.is_finite() && a.move_stall_s > 0.0) {
        anyhow::bail!("--move-stall-s must be a positive number of seconds");
    }
    let seconds = [a.idle_timeout_s, a.handshake_timeout_s, a.request_deadline_s];
    if seconds.iter().any(|s| !(s.is_finite() && *s > 0.0))
        || a.max_client_connections == 0
        || a.client_in_flight_max == 0
    {
        anyhow::bail!("the connection and request limits must be positive");
    }
    let certs_dir = a
        .certs_dir
        .clone()
        .or_else(|| (!a.insecure).then(|| std::env::var_os("WEFT_CERTS_DIR").map(std::path::PathBuf::from)).flatten());
    let tls = match (&certs_dir, a.insecure) {
        (Some(dir), false) => Some(
            weft_security::Credentials::load(dir, weft_security::Holder::Node { id: Some(a.id) })
                .with_context(|| format!("loading node {}'s certificates from {}", a.id, dir.display()))?,
        ),
        (None, true) => None,
        (None, false) => anyhow::bail!(
            "no certificates: give --certs-dir DIR (ca.crt, node.crt, node.key; `weft cert create-node` makes them) \
             or --insecure to run without TLS or authentication"
        ),
        (Some(_), true) => anyhow::bail!("--certs-dir and --insecure exclude each other"),
    };
    init_tracing();
    if tls.is_none() {
        tracing::warn!(
            "INSECURE: --insecure given: no TLS, no authentication; anyone who reaches {} may read, write and \
             reconfigure the cluster",
            a.listen
        );
    }
    let config = weft::node::NodeConfig {
        id: a.id,
        listen: a.listen,
        raft: weft_replica::RaftSettings {
            heartbeat: std::time::Duration::from_millis(a.heartbeat_ms),
            election_timeout: std::time::Duration::from_millis(a.election_timeout_ms),
            snapshot_every: a.snapshot_every,
            keep_behind_snapshot: a.keep_behind_snapshot,
            ..Default::default()
        },
        transport: Default::default(),
        limits: Default::default(),
        storage: weft_replica::Storage { data_dir: a.data_dir.clone(), durable_by_default: a.durable, disk: None },
        cluster: weft::node::ClusterConfig {
            seeds: a.seeds.clone(),
            ud: a.ud.clone(),
            fd: a.fd.clone(),
            capacity_replicas: a.capacity_replicas,
            capacity_memory_bytes: a.capacity_memory_mib << 20,
            down_grace: std::time::Duration::from_secs_f64(a.down_grace),
            balance_every: (a.balance_every > 0.0).then(|| std::time::Duration::from_secs_f64(a.balance_every)),
            move_stall: std::time::Duration::from_secs_f64(a.move_stall_s),
            ..Default::default()
        },
        metrics: a.metrics,
        security: weft::node::NodeSecurity {
            tls,
            connections: weft_security::server::ServerLimits {
                handshake_timeout: std::time::Duration::from_secs_f64(a.handshake_timeout_s),
                client_connections_max: a.max_client_connections,
                idle_timeout: std::time::Duration::from_secs_f64(a.idle_timeout_s),
                ..Default::default()
            },
            requests: weft_security::gate::GateLimits {
                client_in_flight_max: a.client_in_flight_max,
                request_deadline: std::time::Duration::from_secs_f64(a.request_deadline_s),
            },
            fault_injection: a.fault_injection,
        },
        network: None,
    };
    runtime()?.block_on(async move {
        let node = weft::node::Node::bind(config).await.with_context(|| format!("binding {}", a.listen))?;
        let addr = node.local_addr();
        // The one line scripts and tests read to learn the bound address.
        // Errors ignored: whoever started the node may have stopped reading (a node
        // restarted in place by an upgrade walk prints this again into a closed pipe).
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "weft node {} listening on {addr} (ud {}, fd {})", a.id, a.ud, a.fd);
        let _ = out.flush();
        tracing::info!(id = a.id, %addr, seeds = ?a.seeds, data_dir = ?a.data_dir, "node started");
        node.serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
        Ok(())
    })
}

fn sim_upgrade(a: SimUpgradeArgs) -> anyhow::Result<()> {
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

fn bench_engine(a: EngineArgs) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Repeats {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_printed_is_not_printed_again() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(Repeats { path: "/x/manifest.json", source: io }).context("restore");
        assert_eq!(one_line(&e), "restore: /x/manifest.json: disk on fire");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), "outer: inner");
    }
}
