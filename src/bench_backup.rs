//! `weft bench backup`: what backups cost and how fast they go, on a five-node cluster of
//! local node processes (TLS) with one partition of `--mib` MiB, backed up into a local
//! directory (the object store's file backend):
//!
//! - full backup MB/s (median of 3), the bytes of the backup over the wall time;
//! - incremental backup MB/s and size after `--changed-mib` of updates (median of 3);
//! - restore MB/s into a new service: the restored state's bytes (the snapshot stream the
//!   client sends, built from the newest backup's chain: the full file and the increments
//!   after it) over the wall time until the partition's primary answered a linearizable
//!   read, so a quorum holds it; and, measured in the same run, how many times faster that
//!   is than loading the same data through the write path (`load_s` / `restore_s`), and
//!   the CPU seconds the five node processes spent on each (`restore_node_cpu_s`,
//!   `load_node_cpu_s`): they share this machine's cores, where a real cluster gives each
//!   node its own, so the work is the figure that carries over;
//! - the write throughput 16 writers keep while full backups run back to back at a
//!   schedule's pace (`--rate-mb`, 20 by default), against the same writers with no
//!   backup, in alternating windows (median ratio of 3 pairs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use weft::backup::{self as b, Location};
use weft::client::Client;
use weft::proto as pb;
use weft_testkit::local::{Security, free_addrs, ready_service, start_managed};

#[derive(Args)]
pub(crate) struct BackupBenchArgs {
    /// MiB of records in the partition (1 KiB values).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// MiB of records updated before each incremental backup (under the 32 MiB of changes
    /// a primary keeps).
    #[arg(long, default_value_t = 16)]
    changed_mib: u64,
    /// The pace of the full backups run during the write-throughput windows, MB/s (what a
    /// schedule uses by default; 0: unlimited).
    #[arg(long, default_value_t = 20)]
    rate_mb: u64,
    /// Seconds of each write-throughput window.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Print one JSON object and nothing else on stdout.
    #[arg(long)]
    json: bool,
}

/// What `weft bench backup` prints.
#[derive(Debug, Serialize)]
struct Report {
    records: u64,
    load_s: f64,
    load_node_cpu_s: f64,
    full_bytes: u64,
    full_s: f64,
    full_mb_per_s: f64,
    incremental_bytes: u64,
    incremental_s: f64,
    incremental_mb_per_s: f64,
    restore_bytes: u64,
    restore_s: f64,
    restore_mb_per_s: f64,
    restore_speedup_over_load: f64,
    restore_node_cpu_s: f64,
    backup_rate_mb_per_s_during_writes: u64,
    writes_per_s_without_backup: f64,
    writes_per_s_during_backup: f64,
    write_ratio_during_backup: f64,
}

const VALUE: usize = 1024;
const SERVICE: &str = "bench";

fn key(i: u64) -> Vec<u8> {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes().iter().chain(&i.to_be_bytes()).copied().collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Writes records `from..to` (tag `tag` in their values) in pipelined 1 MiB batches.
async fn load(client: &Client, partition: u64, from: u64, to: u64, tag: u8) -> anyhow::Result<()> {
    use futures::StreamExt;
    let batches = (from..to).step_by(1000).map(|start| {
        (start..(start + 1000).min(to))
            .map(|i| {
                let put = pb::Put {
                    table: "default".into(),
                    key: key(i).into(),
                    value: vec![tag; VALUE].into(),
                    ..Default::default()
                };
                pb::Op { kind: Some(pb::op::Kind::Put(put)) }
            })
            .collect::<Vec<_>>()
    });
    let mut writes = futures::stream::iter(batches).map(|ops| client.batch(partition, ops)).buffer_unordered(4);
    while let Some(w) = writes.next().await {
        w?;
    }
    Ok(())
}

/// Acknowledged 100-byte writes per second by 16 writers over `seconds`.
async fn write_rate(client: &Client, partition: u64, seconds: f64, round: u64) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..16u64)
        .map(|c| {
            let (client, stop, done) = (client.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("w{round}-{c:02}-{i:010}");
                    client.put(partition, "default", k.as_bytes(), &[1u8; 100]).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<_, weft::ClientError>(())
            })
        })
        .collect();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(rate)
}

pub(crate) async fn run(a: BackupBenchArgs) -> anyhow::Result<()> {
    let say = |s: String| {
        if !a.json {
            eprintln!("{s}");
        }
    };
    let exe = std::env::current_exe()?;
    let security = Security::new(true)?;
    let addrs = free_addrs(5)?;
    let nodes = start_managed(&exe, &addrs, 5, None, false, &security, |_| Vec::new())?;
    // CPU seconds the node processes spent so far (all on this machine's cores).
    let node_cpu_s = || -> anyhow::Result<f64> {
        let mut total = 0.0;
        for n in &nodes {
            let pid = n.pid().ok_or_else(|| anyhow::anyhow!("node {} is down", n.id))?;
            total += weft_testkit::density::usage(pid)?.cpu_s;
        }
        Ok(total)
    };
    let config = security.root_config()?;
    ready_service(&config, &addrs, 5, SERVICE, 1, 4, Duration::from_secs(60)).await?;
    let map = weft::routing::ServiceClient::fetch_map(&config, &addrs, Duration::from_secs(5)).await?;
    let partition = map
        .map
        .as_ref()
        .and_then(|m| m.services.get(SERVICE))
        .and_then(|s| s.partition_ids.first().copied())
        .ok_or_else(|| anyhow::anyhow!("no partition"))?;
    let client = Client::new(addrs.clone(), config.clone());
    let records = (a.mib << 20) / VALUE as u64;
    let (t, cpu) = (Instant::now(), node_cpu_s()?);
    load(&client, partition, 0, records, 0).await?;
    let load_s = t.elapsed().as_secs_f64();
    let load_node_cpu_s = node_cpu_s()? - cpu;
    say(format!("loaded {records} records ({} MiB) in {load_s:.1} s", a.mib));

    let dir = tempfile::tempdir()?;
    let loc = Location::parse(dir.path().to_str().ok_or_else(|| anyhow::anyhow!("temp path"))?)?;
    let quiet = |_: usize, _: usize, _: u64| {};
    let (mut full, mut full_bytes) = (Vec::new(), 0);
    for _ in 0..3 {
        let t = Instant::now();
        let opts = b::Options { full_every: 0, rate_bytes_per_s: 0 };
        let m = b::take::take_via(&config, &addrs, SERVICE, &loc, opts, &quiet).await?;
        let s = t.elapsed().as_secs_f64();
        full_bytes = m.bytes();
        say(format!("full backup: {} bytes in {s:.2} s", m.bytes()));
        full.push(s);
    }
    let full_s = median(full);
    let changed = ((a.changed_mib << 20) / VALUE as u64).min(records);
    let (mut incr, mut incr_bytes) = (Vec::new(), Vec::new());
    for round in 0..3u8 {
        let from = u64::from(round) * changed % records.max(1);
        load(&client, partition, from, (from + changed).min(records), round + 1).await?;
        let t = Instant::now();
        let m = b::take::take_via(&config, &addrs, SERVICE, &loc, b::Options::default(), &quiet).await?;
        let s = t.elapsed().as_secs_f64();
        if m.kind != b::Kind::Changes {
            anyhow::bail!("the backup after {changed} updates was full, not incremental");
        }
        say(format!("incremental backup: {} bytes in {s:.2} s", m.bytes()));
        incr.push(s);
        incr_bytes.push(m.bytes() as f64);
    }
    let incremental_s = median(incr);
    let incremental_bytes = median(incr_bytes) as u64;

    let chosen = b::restore::choose(loc.url(), None).await?;
    let (t, cpu) = (Instant::now(), node_cpu_s()?);
    let target = b::Target::NewService { name: "restored".into(), replicas: 4 };
    let r = b::restore::restore(&config, &addrs, &chosen, &target, &|_| {}).await?;
    let restore_s = t.elapsed().as_secs_f64();
    let restore_node_cpu_s = node_cpu_s()? - cpu;
    say(format!("restore: {} records, {} bytes in {restore_s:.1} s", r.records, r.bytes));
    // The restored service is not needed any more: its memory would skew what follows.
    weft_testkit::local::channel(&config.security, &addrs[0])
        .map(weft::proto::cluster_client::ClusterClient::new)?
        .delete_service(pb::DeleteServiceRequest { name: "restored".into() })
        .await?;

    let (mut without, mut during, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3u64 {
        let w0 = write_rate(&client, partition, a.seconds, round * 2).await?;
        let rate = a.rate_mb.saturating_mul(1_000_000);
        let taken = Arc::new(AtomicU64::new(0));
        let backups = {
            let (config, addrs, loc, taken) = (config.clone(), addrs.clone(), loc.clone(), taken.clone());
            tokio::spawn(async move {
                let opts = b::Options { full_every: 0, rate_bytes_per_s: rate };
                // Runs until aborted, or until a backup fails.
                while b::take::take_via(&config, &addrs, SERVICE, &loc, opts, &|_, _, _| {}).await.is_ok() {
                    taken.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let w1 = write_rate(&client, partition, a.seconds, round * 2 + 1).await?;
        // The backup under way is given up (at this pace it would run on for a minute).
        if backups.is_finished() {
            anyhow::bail!("a full backup failed while the writes ran");
        }
        backups.abort();
        let n = taken.load(Ordering::Relaxed);
        say(format!("writes/s: {w0:.0} without a backup, {w1:.0} during a full backup ({n} finished)"));
        without.push(w0);
        during.push(w1);
        ratios.push(w1 / w0.max(1e-9));
    }
    let mb = |bytes: u64, s: f64| (bytes as f64 / 1e6 / s * 10.0).round() / 10.0;
    let report = Report {
        records,
        load_s,
        load_node_cpu_s: (load_node_cpu_s * 10.0).round() / 10.0,
        full_bytes,
        full_s,
        full_mb_per_s: mb(full_bytes, full_s),
        incremental_bytes,
        incremental_s,
        incremental_mb_per_s: mb(incremental_bytes, incremental_s),
        restore_bytes: r.bytes,
        restore_s,
        restore_mb_per_s: mb(r.bytes, restore_s),
        restore_speedup_over_load: (load_s / restore_s.max(1e-9) * 100.0).round() / 100.0,
        restore_node_cpu_s: (restore_node_cpu_s * 10.0).round() / 10.0,
        backup_rate_mb_per_s_during_writes: a.rate_mb,
        writes_per_s_without_backup: median(without).round(),
        writes_per_s_during_backup: median(during).round(),
        write_ratio_during_backup: (median(ratios) * 1000.0).round() / 1000.0,
    };
    crate::print_report(&report, a.json, "weft bench backup")
}
