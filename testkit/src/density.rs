//! `weft bench density`: what idle partitions cost a node. Starts `nodes` managed `weft
//! node` processes (this binary, TLS, each node in a UD and FD of its own), a one-partition
//! service `hot` that carries the write load, and measures, in one run:
//!
//! - the write throughput of `hot` (64 clients, 100-byte values, overwriting 64,000 keys
//!   written once before anything is timed) before the idle service exists;
//! - `create_s`: from asking for a service of `partitions` partitions x 4 replicas to every
//!   partition having a primary in the map;
//! - `quiesce_s`: from then until 95% of the idle service's replicas are quiesced (groups quiesce
//!   a few seconds after their last request);
//! - idle CPU: the node processes' user + system time (`/proc/<pid>/stat`) over a window,
//!   starting once the groups have quiesced, in which no client sends anything, as percent of one core per node, then per 1,000
//!   replicas per node (the whole node's time, fixed costs included, so the figure is
//!   conservative; the same window before the service exists is reported beside it);
//! - memory: the growth of the node processes' resident set (`VmRSS`) from before the
//!   service to after, divided by the replicas it added;
//! - the throughput of `hot` again with the idle partitions beside it, then once more after
//!   the idle service is deleted, and the ratio: the median of the eight runs with it over
//!   the median of the eight without it, four before it existed and four after it was
//!   deleted (each stretch after one run that warms up and is not counted, every counted run
//!   reported). Runs without the service on both sides of those with it cancel a drift of
//!   the shared machine's speed over the minutes between them;
//! - `quiesced_failover_ms`: the idle service is created again and, once its groups have
//!   quiesced, a non-seed node is killed; for each partition of the idle service whose
//!   primary it hosted (up to 16), the time from the kill until a write to that partition is
//!   acknowledged; the median. (The name is the CLI contract's: groups are idle here,
//!   whether or not they quiesce.)
//!
//! Depends on the client and the local process harness; the node crate only through the
//! binary it starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_client::client::{Client, ClientConfig};
use weft_client::routing::{ServiceClient, ready_service};
use weft_proto::v1 as pb;
use weft_proto::v1::cluster_client::ClusterClient;

use crate::Error;
use crate::cluster_bench::percentile;
use crate::local::{self, LocalNode, Security, cluster_err};

/// The service that carries the write load.
const HOT: &str = "hot";

/// Writers of the load on `hot`.
const WRITERS: usize = 64;

/// Keys each writer cycles through. Both throughput runs overwrite the same keys, written
/// once before anything is timed, so the second run does not meet a store (and a log) the
/// first one grew: with fresh keys each run, the run beside the idle service wrote into a
/// store several times larger and read slower for that alone.
const KEYS_PER_WRITER: u64 = 1_000;
/// The service of many idle partitions.
const IDLE: &str = "idle";
/// Seeds of a cluster `local::start_managed` starts: nodes 1 to 3, which host the map's
/// group (a kill there would time the manager's failover too).
const SEEDS: u64 = 3;
/// Replicas of every partition.
const REPLICAS: u32 = 4;
/// The idle window starts once this fraction of the idle service's replicas is quiesced
/// (all of them: with 5% of 2,500 groups still awake, each heartbeating until it quiesces,
/// a 20 s window measured the creation's tail as much as the idle groups; the first 5 s
/// after creation cost four times the steady state)...
const SETTLED_FRACTION: f64 = 1.0;
/// ...or after this long.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);
/// Partitions whose failover is timed, at most.
const FAILOVERS_MAX: usize = 16;
/// How long an idle partition may take to accept a write after its primary's node dies
/// before the run fails.
const FAILOVER_WITHIN: Duration = Duration::from_secs(60);

/// What `weft bench density` measures.
#[derive(Clone, Debug)]
pub struct DensityConfig {
    /// Node processes.
    pub nodes: usize,
    /// Partitions of the idle service (4 replicas each).
    pub partitions: u32,
    /// Length of each idle CPU window.
    pub idle_window: Duration,
    /// Length of each throughput run.
    pub load_window: Duration,
    /// How long the service's creation may take before the benchmark gives up.
    pub create_within: Duration,
}

/// `weft bench density` results (field names are the CLI contract's).
#[derive(Debug, Serialize)]
pub struct DensityReport {
    /// Node processes.
    pub nodes: usize,
    /// Partitions of the idle service.
    pub partitions: u32,
    /// Replicas per node the idle service added (partitions x 4 / nodes).
    pub replicas_per_node: f64,
    /// Seconds from asking for the idle service to every partition having a primary.
    pub create_s: f64,
    /// Idle CPU per node, percent of one core, before the idle service existed.
    pub baseline_idle_cpu_pct_per_node: f64,
    /// Idle CPU per node, percent of one core, with the idle service.
    pub idle_cpu_pct_per_node: f64,
    /// `idle_cpu_pct_per_node` per 1,000 replicas per node.
    pub idle_cpu_pct_per_1000_replicas: f64,
    /// Resident memory per node before the idle service existed.
    pub baseline_rss_bytes_per_node: f64,
    /// Growth of the nodes' resident memory per replica the idle service added.
    pub rss_bytes_per_replica: f64,
    /// Growth of each node's resident memory (node 1 first): the seeds (1 to 3) also hold
    /// the cluster map's group and the manager's state, which grow with the partitions.
    pub rss_grown_bytes_by_node: Vec<f64>,
    /// Seconds from every partition having a primary to 95% of the idle service's
    /// replicas quiesced (the idle window starts then; at most 60).
    pub quiesce_s: f64,
    /// Percent of the idle service's replicas quiesced at the end of the idle window.
    pub quiesced_pct: f64,
    /// Raft append streams open on the nodes at the end of the idle window (a group holds
    /// one per follower, quiesced or not).
    pub append_streams_idle: u64,
    /// Of the replicas whose failover is timed, those quiesced when their node was killed.
    pub failover_quiesced: usize,
    /// Median time from killing a node to the first acknowledged write of each idle
    /// partition whose primary it hosted.
    pub quiesced_failover_ms: f64,
    /// Partitions whose failover was timed.
    pub failovers_timed: usize,
    /// Writes per second of `hot` without the idle service (median of [`LOAD_RUNS`] runs,
    /// half before it existed, half after it was deleted).
    pub writes_per_s_without: f64,
    /// The median of the runs before the idle service existed...
    pub writes_per_s_without_before: f64,
    /// ...and of those after it was deleted (apart, they show the machine's drift).
    pub writes_per_s_without_after: f64,
    /// Writes per second of `hot` with the idle service beside it (median of
    /// [`LOAD_RUNS`] runs).
    pub writes_per_s_with: f64,
    /// Every run without the idle service, in the order run (before it, then after it).
    pub writes_per_s_runs_without: Vec<f64>,
    /// Every run with it.
    pub writes_per_s_runs_with: Vec<f64>,
    /// `writes_per_s_with / writes_per_s_without`.
    pub throughput_ratio: f64,
}

/// The (node, partition) of every quiesced replica, as each node lists its replicas, and
/// the raft append streams open on the nodes.
async fn quiesced(nodes: &[LocalNode]) -> Result<(std::collections::BTreeSet<(u64, u64)>, u64), Error> {
    let (mut out, mut streams) = (std::collections::BTreeSet::new(), 0);
    for n in nodes {
        let list = n.admin().await?.list(pb::ListReplicasRequest {}).await.map_err(cluster_err)?;
        let list = list.into_inner();
        streams += list.append_streams;
        out.extend(list.replicas.iter().filter(|r| r.quiesced).map(|r| (n.id, r.partition)));
    }
    Ok((out, streams))
}

/// The (node, partition) of every replica the nodes list.
async fn hosted(nodes: &[LocalNode]) -> Result<std::collections::BTreeSet<(u64, u64)>, Error> {
    let mut out = std::collections::BTreeSet::new();
    for n in nodes {
        let list = n.admin().await?.list(pb::ListReplicasRequest {}).await.map_err(cluster_err)?;
        out.extend(list.into_inner().replicas.iter().map(|r| (n.id, r.partition)));
    }
    Ok(out)
}

/// Waits until every replica of the idle service is quiesced (or [`SETTLE_WITHIN`] passed):
/// idle groups quiesce a few seconds after their last request. Answers the map's
/// partitions, the idle service's, and the seconds it waited.
async fn settle(
    root: &ClientConfig,
    addrs: &[String],
    nodes: &[LocalNode],
    idle_replicas: f64,
) -> Result<(BTreeMap<u64, pb::PartitionInfo>, std::collections::BTreeSet<u64>, f64), Error> {
    let settling = Instant::now();
    let map = ServiceClient::fetch_map(root, addrs, Duration::from_secs(10)).await.map_err(cluster_err)?;
    let parts: BTreeMap<u64, pb::PartitionInfo> =
        map.map.as_ref().map(|m| m.partitions.clone().into_iter().collect()).unwrap_or_default();
    let idle_parts: std::collections::BTreeSet<u64> =
        parts.values().filter(|p| p.service == IDLE).map(|p| p.id).collect();
    loop {
        let (quiet, _) = quiesced(nodes).await?;
        let idle_quiet = quiet.iter().filter(|(_, p)| idle_parts.contains(p)).count();
        if idle_quiet as f64 >= SETTLED_FRACTION * idle_replicas || settling.elapsed() > SETTLE_WITHIN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((parts, idle_parts, settling.elapsed().as_secs_f64()))
}

/// CPU time and resident memory of one process, from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User and system CPU seconds.
    pub cpu_s: f64,
    /// Resident memory.
    pub rss_bytes: f64,
}

/// The [`Usage`] of process `pid` now.
pub fn usage(pid: u32) -> Result<Usage, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(cluster_err)?;
    // Fields after the command name (which may hold spaces, inside parentheses): state is
    // the first, utime the 12th, stime the 13th (fields 14 and 15 of proc(5)).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| cluster_err("malformed /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, Error> {
        fields.get(i).and_then(|f| f.parse::<u64>().ok()).map(|t| t as f64).ok_or_else(|| cluster_err("no CPU times"))
    };
    let cpu_s = (ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_S;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(cluster_err)?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| cluster_err("no VmRSS"))?;
    Ok(Usage { cpu_s, rss_bytes: (rss_kib * 1024) as f64 })
}

/// The unit of `/proc`'s CPU times: `USER_HZ`, part of Linux's ABI and 100 on every
/// architecture weft builds for (what `sysconf(_SC_CLK_TCK)` answers).
const CLOCK_TICKS_PER_S: f64 = 100.0;

fn usages(nodes: &[LocalNode]) -> Result<Vec<Usage>, Error> {
    nodes.iter().map(|n| usage(n.pid().ok_or_else(|| cluster_err(format!("node {} is down", n.id)))?)).collect()
}

/// Mean CPU per node over `window`, percent of one core, and mean resident memory at its
/// end.
async fn idle_window(nodes: &[LocalNode], window: Duration) -> Result<(f64, f64), Error> {
    let before = usages(nodes)?;
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let after = usages(nodes)?;
    let elapsed = start.elapsed().as_secs_f64();
    let n = nodes.len() as f64;
    let cpu: f64 = before.iter().zip(&after).map(|(b, a)| (a.cpu_s - b.cpu_s) / elapsed * 100.0).sum::<f64>() / n;
    let rss = after.iter().map(|u| u.rss_bytes).sum::<f64>() / n;
    Ok((cpu, rss))
}

/// Counted throughput runs with the idle service beside `hot`, and without it: half before
/// the service exists, half after it is deleted. Each side's median is reported, so runs that
/// the shared machine slowed do not decide the ratio. Sixteen 10 s runs in a row with one
/// idle partition (nothing else changing) ranged from 22,380 to 28,609 writes/s, and
/// medians of three on each side gave ratios from 0.90 to 1.05: that spread, not the idle
/// groups, decided most earlier figures. With seven runs all before and seven all after,
/// one run's sides were 28,888 and 25,044 writes/s (0.867) while the three others were
/// 0.93 to 1.02: minutes apart, the machine's speed drifts, and splitting the side without
/// the service around the side with it cancels that. Every run is reported.
const LOAD_RUNS: usize = 8;

/// `runs` runs of `window` each, in the order run, after one that warms up and is not
/// counted. Logs each run's node CPU and how many replicas were quiesced after it.
async fn load_runs(
    client: &Arc<ServiceClient>,
    nodes: &[LocalNode],
    window: Duration,
    runs: usize,
    side: &'static str,
) -> Result<Vec<f64>, Error> {
    // One run first, not counted: after a minute without writes (the creation and the idle
    // windows), the first runs beside the idle service were 10% slower than the last ones
    // (24,476 and 23,985 writes/s rising to 27,571), while the side without it, which
    // follows the fill, was steady from its first run. Every stretch warms up the same way.
    let warm = throughput(client, window).await?;
    tracing::info!(side, writes_per_s = warm.round(), "load run (warm-up, not counted)");
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let before = usages(nodes)?;
        let me = usage(std::process::id())?;
        let t = Instant::now();
        let w = throughput(client, window).await?;
        let secs = t.elapsed().as_secs_f64();
        let after = usages(nodes)?;
        let me_after = usage(std::process::id())?;
        let cpu: Vec<f64> =
            before.iter().zip(&after).map(|(b, a)| ((a.cpu_s - b.cpu_s) / secs * 100.0).round()).collect();
        let (quiet, _) = quiesced(nodes).await?;
        let bench_cpu_pct = ((me_after.cpu_s - me.cpu_s) / secs * 100.0).round();
        tracing::info!(side, writes_per_s = w.round(), cpu_pct_by_node = ?cpu, bench_cpu_pct, quiesced = quiet.len(), "load run");
        out.push(w.round());
    }
    Ok(out)
}

/// The median of `runs`.
fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

async fn throughput(client: &Arc<ServiceClient>, window: Duration) -> Result<f64, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|c| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    client.put(HOT, "default", &hot_key(c, n), &[7u8; 100]).await.map_err(cluster_err)?;
                    n += 1;
                }
                Ok::<_, Error>(n)
            })
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for t in tasks {
        writes += t.await.map_err(cluster_err)??;
    }
    Ok(writes as f64 / start.elapsed().as_secs_f64())
}

/// The `n`th key writer `c` writes (it cycles through [`KEYS_PER_WRITER`]).
fn hot_key(c: usize, n: u64) -> Vec<u8> {
    format!("hot-{c:02}-{:06}", n % KEYS_PER_WRITER).into_bytes()
}

/// Writes every key the throughput runs write, once.
async fn fill(client: &Arc<ServiceClient>) -> Result<(), Error> {
    let tasks: Vec<_> = (0..WRITERS)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                for n in 0..KEYS_PER_WRITER {
                    client.put(HOT, "default", &hot_key(c, n), &[7u8; 100]).await.map_err(cluster_err)?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(cluster_err)??;
    }
    Ok(())
}

/// Runs the benchmark on node processes started from the binary at `exe`.
pub async fn density(exe: &Path, config: &DensityConfig) -> Result<DensityReport, Error> {
    if config.nodes < REPLICAS as usize + 1 {
        return Err(cluster_err(format!("a density run needs at least {} nodes", REPLICAS + 1)));
    }
    let security = Security::new(true)?;
    let addrs = local::free_addrs(config.nodes)?;
    // Room for the idle service's share, twice over (a failover's repair lands on the
    // survivors), and the rest: the node default (1,000) is below 2,500 partitions' share.
    let room = (u64::from(config.partitions) * u64::from(REPLICAS)).div_ceil(config.nodes as u64) * 2 + 100;
    // The node's own raft timing (100 ms heartbeats, 400 ms election timeout), not the
    // harness's quick test timing: the figures are what a deployed node costs.
    let capacity = move |_| {
        ["--capacity-replicas", &room.to_string(), "--heartbeat-ms", "100", "--election-timeout-ms", "400"]
            .map(String::from)
            .to_vec()
    };
    let mut nodes = local::start_managed(exe, &addrs, config.nodes, None, false, &security, capacity)?;
    let root: ClientConfig = security.root_config()?;
    let ready = |service: &'static str, partitions: u32, within: Duration| {
        let (root, addrs) = (root.clone(), addrs.clone());
        async move {
            ready_service(&root, &addrs, config.nodes, service, partitions, REPLICAS, within).await.map_err(cluster_err)
        }
    };
    ready(HOT, 1, Duration::from_secs(60)).await?;
    let hot = Arc::new(ServiceClient::new(addrs.clone(), root.clone()));
    // Connections and the map cached before anything is timed.
    hot.put(HOT, "default", b"warmup", b"v").await.map_err(cluster_err)?;
    fill(&hot).await?;

    let without_before = load_runs(&hot, &nodes, config.load_window, LOAD_RUNS / 2, "without, before").await?;
    // After the load, not before: what the load's buffers held is given back during the
    // window, and a baseline taken at the load's end counted it against the idle service.
    let (baseline_cpu, baseline_rss) = idle_window(&nodes, config.idle_window).await?;
    let rss_before = usages(&nodes)?;

    let asked = Instant::now();
    ready(IDLE, config.partitions, config.create_within).await?;
    let create_s = asked.elapsed().as_secs_f64();
    tracing::info!(create_s, partitions = config.partitions, "idle service created");
    let idle_replicas = f64::from(config.partitions) * f64::from(REPLICAS);
    let (_, idle_parts, quiesce_s) = settle(&root, &addrs, &nodes, idle_replicas).await?;
    let (idle_cpu, _) = idle_window(&nodes, config.idle_window).await?;
    let rss_after = usages(&nodes)?;
    let (quiet, append_streams_idle) = quiesced(&nodes).await?;
    let idle_quiet = quiet.iter().filter(|(_, p)| idle_parts.contains(p)).count();
    let quiesced_pct = 100.0 * idle_quiet as f64 / idle_replicas.max(1.0);
    let replicas = idle_replicas;
    let grown_by_node: Vec<f64> = rss_before.iter().zip(&rss_after).map(|(b, a)| a.rss_bytes - b.rss_bytes).collect();
    let grown: f64 = grown_by_node.iter().sum();
    let replicas_per_node = replicas / config.nodes as f64;
    let runs_with = load_runs(&hot, &nodes, config.load_window, LOAD_RUNS, "with").await?;

    // The idle service goes, every node closes its replicas, and `hot` runs again.
    let mut cluster = ClusterClient::new(local::channel(&security.root()?, &addrs[0])?);
    cluster.delete_service(pb::DeleteServiceRequest { name: IDLE.into() }).await.map_err(cluster_err)?;
    let deleting = Instant::now();
    while hosted(&nodes).await?.iter().any(|(_, p)| idle_parts.contains(p)) {
        if deleting.elapsed() > config.create_within {
            return Err(cluster_err(format!(
                "the idle service's replicas were not all closed within {:?}",
                config.create_within
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::info!(secs = deleting.elapsed().as_secs_f64(), "idle service deleted, its replicas closed");
    let without_after = load_runs(&hot, &nodes, config.load_window, LOAD_RUNS / 2, "without, after").await?;
    let runs_without: Vec<f64> = without_before.iter().chain(&without_after).copied().collect();
    let (writes_per_s_without, writes_per_s_with) = (median(&runs_without), median(&runs_with));

    // Failover of idle groups: the service again, quiesced, and the non-seed node that
    // leads the most of its partitions killed.
    ready(IDLE, config.partitions, config.create_within).await?;
    let (parts, _, _) = settle(&root, &addrs, &nodes, idle_replicas).await?;
    let map = ServiceClient::fetch_map(&root, &addrs, Duration::from_secs(10)).await.map_err(cluster_err)?;
    let mut led: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for p in parts.values().filter(|p| p.service == IDLE) {
        if let Some(node) = map.primaries.get(&p.id)
            && *node > SEEDS
        {
            led.entry(*node).or_default().push(p.id);
        }
    }
    // A key of each partition's own slice of the hash space (a node refuses any other).
    let key_of = |pid: u64| -> Option<Vec<u8>> {
        let p = parts.get(&pid)?;
        (0u64..1_000_000)
            .map(|i| format!("failover-{i}").into_bytes())
            .find(|k| (p.low..=p.high).contains(&weft_cluster_manager::keyspace::hash(k)))
    };
    let (victim, victims) = led
        .into_iter()
        .max_by_key(|(_, ps)| ps.len())
        .ok_or_else(|| cluster_err("no idle partition is led by a non-seed node"))?;
    let survivors: Vec<String> = nodes.iter().filter(|n| n.id != victim).map(|n| n.addr.clone()).collect();
    let client = Client::new(survivors, ClientConfig { deadline: Duration::from_millis(500), ..root.clone() });
    let timed: Vec<(u64, Vec<u8>)> =
        victims.into_iter().take(FAILOVERS_MAX).filter_map(|pid| Some((pid, key_of(pid)?))).collect();
    let (quiet_now, _) = quiesced(&nodes).await?;
    let failover_quiesced = timed.iter().filter(|(pid, _)| quiet_now.contains(&(victim, *pid))).count();
    let node = nodes.iter_mut().find(|n| n.id == victim).ok_or_else(|| cluster_err("the victim node"))?;
    let killed = Instant::now();
    node.kill();
    let writers: Vec<_> = timed
        .iter()
        .map(|(pid, key)| {
            let (client, pid, key) = (client.clone(), *pid, key.clone());
            tokio::spawn(async move {
                loop {
                    match client.put(pid, "default", &key, b"v").await {
                        Ok(_) => return Ok(killed.elapsed().as_secs_f64() * 1e3),
                        Err(e) if killed.elapsed() > FAILOVER_WITHIN => {
                            return Err(cluster_err(format!(
                                "partition {pid} acknowledged no write within {FAILOVER_WITHIN:?} of node {victim}'s \
                                 kill: {e}"
                            )));
                        }
                        Err(e) => tracing::debug!(pid, error = %e, "no write yet"),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let mut failovers = Vec::new();
    for w in writers {
        failovers.push(w.await.map_err(cluster_err)??);
    }
    failovers.sort_by(f64::total_cmp);

    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    Ok(DensityReport {
        nodes: config.nodes,
        partitions: config.partitions,
        replicas_per_node: round(replicas_per_node, 1),
        create_s: round(create_s, 2),
        baseline_idle_cpu_pct_per_node: round(baseline_cpu, 2),
        idle_cpu_pct_per_node: round(idle_cpu, 2),
        idle_cpu_pct_per_1000_replicas: round(idle_cpu / (replicas_per_node / 1000.0), 2),
        baseline_rss_bytes_per_node: baseline_rss.round(),
        rss_bytes_per_replica: (grown / replicas).round(),
        rss_grown_bytes_by_node: grown_by_node.iter().map(|g| g.round()).collect(),
        quiesce_s: round(quiesce_s, 1),
        quiesced_pct: round(quiesced_pct, 1),
        append_streams_idle,
        failover_quiesced,
        quiesced_failover_ms: round(percentile(&failovers, 0.5), 1),
        failovers_timed: failovers.len(),
        writes_per_s_without: round(writes_per_s_without, 0),
        writes_per_s_without_before: round(median(&without_before), 0),
        writes_per_s_without_after: round(median(&without_after), 0),
        writes_per_s_with: round(writes_per_s_with, 0),
        writes_per_s_runs_without: runs_without,
        writes_per_s_runs_with: runs_with,
        throughput_ratio: round(writes_per_s_with / writes_per_s_without.max(1e-9), 3),
    })
}
