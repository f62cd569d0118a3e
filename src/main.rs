//! The `weft` binary: node host, operator CLI and benchmarks (see DESIGN.md's CLI contract).
//! Errors surface here as `anyhow` with a one-line message and a non-zero exit.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

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
    /// Benchmarks; each prints one JSON object with --json.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// The in-memory engine against std's BTreeMap, on the same records in the same run.
    Engine(EngineArgs),
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
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(Bench::Engine(a)) => bench_engine(a),
    }
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
    println!("targets (issue 2, at 1,000,000 records):");
    for t in &report.targets {
        let mark = if t.met { "ok  " } else { "MISS" };
        println!("  {mark} {:<44} {:>10.3} (limit {:.3})", t.what, t.value, t.limit);
    }
    Ok(())
}
