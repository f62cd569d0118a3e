//! The `weft` binary: node host, operator CLI and benchmarks (see DESIGN.md's CLI contract).
//! Errors surface here as `anyhow` with a one-line message and a non-zero exit.
//!
//! One module per command family: `node` (`weft node`), `playground`, `ctl`, `kv`,
//! `cert`, `chaos`, `sim`, `bench` (with `bench_kv`); `creds` finds a client's
//! credentials for the commands that call a cluster. This file parses the command line
//! and dispatches.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod bench;
mod bench_backup;
mod bench_kv;
mod bench_local;
mod cert;
mod chaos;
mod creds;
mod ctl;
mod health;
mod kv;
mod node;
mod playground;
mod progress;
mod sim;

/// mimalloc for the whole process: size classes without per-block headers keep each
/// 64-byte tree node on one cache line and cut allocation cost (TiKV makes the same
/// choice with jemalloc). Benchmarks' baselines run under the same allocator.
/// (`--features system-alloc` builds with the system allocator, for heap profilers.)
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "weft", version, about = "A partitioned, replicated, in-memory stateful store")]
struct Cli {
    /// Log lines (on stderr) as text, or as one JSON object each for a log collector. The
    /// level and targets come from WEFT_LOG, else RUST_LOG (EnvFilter syntax, e.g.
    /// `info,weft_replica=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WEFT_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields and the spans around it.
    Json,
}

/// The format `init_tracing` uses, set once from the command line.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

#[derive(Subcommand)]
enum Command {
    /// A local cluster on loopback: 5 nodes in 5 upgrade domains and a demo service.
    Playground(playground::PlaygroundArgs),
    /// Operator commands: status, nodes, services, partitions, replica moves, drains, upgrades, users.
    Ctl(ctl::CtlArgs),
    /// Put, get, delete and scan a service's records.
    Kv(kv::KvArgs),
    /// Simulators that drive the cluster manager's decision code without a network.
    #[command(subcommand)]
    Sim(sim::Sim),
    /// Run a node: hosts replicas and serves the Store, Raft and NodeAdmin gRPC services.
    /// A flag given twice takes its last value (a harness's defaults, then the caller's).
    #[command(args_override_self = true)]
    Node(node::NodeArgs),
    /// Benchmarks; each prints one JSON object with --json.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Faults against real nodes under concurrent clients, then a linearizability check;
    /// exits non-zero unless the history is linearizable and no acknowledged write is lost.
    Chaos(chaos::ChaosArgs),
    /// Certificates: a cluster CA, node and client certificates, and what a directory holds.
    #[command(subcommand)]
    Cert(cert::Cert),
    /// Asks a node the gRPC health question (a container's health check); exits 0 only
    /// when it answers SERVING.
    Health(health::HealthArgs),
    /// Prints this binary's version.
    Version,
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
    let _ = LOG_FORMAT.set(cli.log_format);
    match cli.command {
        Command::Node(a) => node::run(a),
        Command::Playground(a) => {
            init_tracing();
            runtime()?.block_on(playground::run(a))
        }
        Command::Ctl(a) => runtime()?.block_on(ctl::run(a)),
        Command::Health(a) => {
            if runtime()?.block_on(health::run(a))? {
                Ok(())
            } else {
                anyhow::bail!("not serving")
            }
        }
        Command::Version => {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "weft {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Kv(a) => runtime()?.block_on(kv::run(a)),
        Command::Sim(s) => sim::run(s),
        Command::Cert(c) => cert::run(c),
        Command::Chaos(a) => {
            init_tracing();
            chaos::run(a)
        }
        Command::Bench(b) => bench::run(b),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,weft=info,weft_replica=info,openraft::core::heartbeat=error")
        });
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text) {
        LogFormat::Text => fmt.try_init(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(true).try_init(),
    };
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
