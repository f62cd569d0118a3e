//! `weft chaos`: faults against real node processes (or, with `--simulated`, nodes in
//! one process on turmoil's network and clock) under concurrent clients, then the
//! linearizability check. The harness itself is `weft_testkit::chaos` and
//! `weft_testkit::simulated`; this module parses the flags and prints the report.

use anyhow::Context;
use clap::Args;

use crate::runtime;

#[derive(Args)]
pub(crate) struct ChaosArgs {
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
    /// Partitions of a second service, one key each, that a sparse client touches one at
    /// a time with pauses: most of its groups are quiesced when faults land on them, and
    /// each operation wakes one. 0: no such service. Default 16 (8 with `--simulated`).
    #[arg(long)]
    idle_partitions: Option<u32>,
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
    /// With `--simulated`: the kinds of fault to draw from, comma-separated (crash_restart,
    /// partition_one, partition_halves, hold_link, and with `--mode durable` power_cut_all,
    /// disk_fails and upgrade_walk, the last once three quarters in); every kind the mode
    /// allows when not given.
    #[arg(long, value_delimiter = ',', requires = "simulated")]
    faults: Vec<weft_testkit::simulated::FaultKind>,
    /// Work on the containers of this compose file's cluster, already up (`deploy/chaos.sh`
    /// brings it up): kills, pauses, link cuts and latency on real hosts and networks.
    /// `--mode` must say the cluster's log mode (volatile or durable).
    #[arg(long, value_name = "COMPOSE_FILE", conflicts_with = "simulated")]
    compose: Option<std::path::PathBuf>,
    /// With `--compose`: the nodes' published gRPC ports, node 1 first (default
    /// 127.0.0.1:7100 and up, one per node).
    #[arg(long, value_delimiter = ',', requires = "compose")]
    endpoints: Vec<String>,
    /// With `--compose`: the cluster's certificates (the CA with its key, root's client
    /// certificate), as `deploy/up.sh` made them. (Read only with `--compose`.)
    #[arg(long, env = "WEFT_CERTS_DIR")]
    certs_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ModeArg {
    Volatile,
    Durable,
    Both,
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
        faults: a.faults.clone(),
        idle_partitions: a
            .idle_partitions
            .unwrap_or(weft_testkit::simulated::SimulatedConfig::default().idle_partitions),
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

pub(crate) fn run(a: ChaosArgs) -> anyhow::Result<()> {
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
    let compose = match &a.compose {
        None => None,
        Some(file) => {
            if matches!(a.mode, None | Some(ModeArg::Both)) {
                anyhow::bail!("--compose needs --mode volatile or --mode durable: the cluster's own log mode");
            }
            if a.insecure {
                anyhow::bail!("--compose clusters run with TLS; --insecure does not apply");
            }
            let certs_dir = a.certs_dir.clone().context("--compose needs --certs-dir (or WEFT_CERTS_DIR)")?;
            let endpoints = if a.endpoints.is_empty() {
                (0..a.nodes).map(|i| format!("127.0.0.1:{}", 7100 + i)).collect()
            } else {
                a.endpoints.clone()
            };
            Some(weft_testkit::chaos::ComposeTarget { compose_file: file.clone(), certs_dir, endpoints })
        }
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
            idle_partitions: a.idle_partitions.unwrap_or(weft_testkit::chaos::ChaosConfig::default().idle_partitions),
            compose: compose.clone(),
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
