//! Benchmarks that need a running cluster: `weft bench replication`, `failover` and
//! `rebuild`. They start real `weft node` processes (this same binary, see
//! [`crate::local`]) on loopback, open a partition through the node-admin service, and
//! drive it with the Rust client from this process.
//!
//! They live in the `weft` crate rather than `weft-benches` because they need the client
//! and node, and `weft` already depends on `weft-benches` (no cycles).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use weft_proto::v1 as pb;

use crate::Error;
use crate::local::{LocalNode, Security, cluster_err, open_partition, primary};
use weft_client::client::{Client, ClientError, ReadMode};

fn start(id: u64, extra: &[&str], security: &Security) -> Result<LocalNode, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Start { id, reason: e.to_string() })?;
    LocalNode::start_secured(&exe, id, "127.0.0.1:0", extra, security)
}

pub(crate) const P: u64 = 1;

/// Log mode of a benchmark cluster (and of the walked nodes in `weft sim upgrade --log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Memory-only logs.
    Volatile,
    /// Write-ahead logs and checkpoints in a temporary directory per node.
    Durable,
}

impl Mode {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Volatile => "volatile",
            Mode::Durable => "durable",
        }
    }
}

/// A benchmark cluster: its nodes, a client, and (durable mode) the data directories,
/// deleted on drop.
pub(crate) struct Cluster {
    pub(crate) procs: Vec<LocalNode>,
    pub(crate) client: Client,
    pub(crate) _data: Option<tempfile::TempDir>,
    pub(crate) _security: Security,
}

/// Starts `n` nodes (TLS unless `tls` is false) and one partition replicated on all of
/// them; waits for a primary. The client acts as the harness (node 0): standalone nodes
/// have no map, so no users.
pub(crate) async fn cluster(n: u64, mode: Mode, tls: bool) -> Result<Cluster, Error> {
    let security = Security::new(tls)?;
    let data = match mode {
        Mode::Volatile => None,
        Mode::Durable => Some(tempfile::tempdir().map_err(cluster_err)?),
    };
    let mut procs = Vec::new();
    for id in 1..=n {
        let procs_dir = data.as_ref().map(|d| d.path().join(format!("node-{id}")));
        let dir = procs_dir.as_ref().and_then(|d| d.to_str());
        let extra: Vec<&str> = match dir {
            Some(d) => vec!["--durable", "--data-dir", d],
            None => Vec::new(),
        };
        procs.push(start(id, &extra, &security)?);
    }
    open_partition(&procs.iter().collect::<Vec<_>>(), P, 100).await?;
    let client = Client::new(procs.iter().map(|p| p.addr.clone()).collect(), security.harness_config()?);
    // The first write waits (with the client's retries) for an elected primary.
    client.create_table(P, "bench").await.map_err(cluster_err)?;
    Ok(Cluster { procs, client, _data: data, _security: security })
}

/// The value at quantile `q` of ascending `sorted` (0 when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `weft bench replication` results for one mode; with both modes, the durable run
/// nests under `durable`.
#[derive(Debug, Serialize)]
pub struct ReplicationReport {
    /// Log mode.
    pub mode: &'static str,
    /// Whether the nodes and the client spoke TLS.
    pub tls: bool,
    /// Replicas in the partition.
    pub replicas: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Acknowledged writes.
    pub writes: u64,
    /// Acknowledged writes per second.
    pub writes_per_s: f64,
    /// Median write latency.
    pub p50_ms: f64,
    /// 99th percentile write latency.
    pub p99_ms: f64,
    /// The same run in durable mode, when both were asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<Box<ReplicationReport>>,
}

/// Runs `clients` concurrent writers of 100-byte values against a `replicas`-way partition.
pub async fn replication(
    replicas: u64,
    clients: usize,
    seconds: f64,
    mode: Mode,
    tls: bool,
) -> Result<ReplicationReport, Error> {
    let Cluster { procs: _procs, client, _data, _security } = cluster(replicas, mode, tls).await?;
    let value = vec![7u8; 100];
    // Warm up the connections and the primary cache.
    client.put(P, "bench", b"warmup", &value).await.map_err(cluster_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, stop, value) = (client.clone(), stop.clone(), value.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{c:04}-{i:011}");
                    let t = Instant::now();
                    client.put(P, "bench", key.as_bytes(), &value).await.map_err(cluster_err)?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    i += 1;
                }
                Ok::<_, Error>(lat)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(cluster_err)??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(ReplicationReport {
        mode: mode.name(),
        tls,
        replicas,
        clients,
        seconds: elapsed,
        writes: lat.len() as u64,
        writes_per_s: lat.len() as f64 / elapsed,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        durable: None,
    })
}

/// `weft bench failover` results.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// Trials run.
    pub trials: usize,
    /// Per trial, the longest gap between successful writes around the kill.
    pub unavailable_ms: Vec<f64>,
    /// Median of those gaps.
    pub median_unavailable_ms: f64,
    /// Largest of those gaps.
    pub max_unavailable_ms: f64,
    /// Acknowledged writes missing afterwards (must be 0).
    pub acked_writes_lost: u64,
}

/// Kills the primary's process under a steady write load, `trials` times, each on a fresh
/// 4-node cluster; measures the longest write gap and checks every acknowledged write.
pub async fn failover(trials: usize, tls: bool) -> Result<FailoverReport, Error> {
    let mut gaps = Vec::new();
    let mut lost = 0u64;
    for _ in 0..trials {
        let Cluster { mut procs, client, _data, _security } = cluster(4, Mode::Volatile, tls).await?;
        let acked: Arc<Mutex<BTreeMap<Vec<u8>, Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{w}-{i:09}").into_bytes();
                        match client.put(P, "bench", &key, b"v").await {
                            Ok(_) => {
                                acked.lock().insert(key, Instant::now());
                            }
                            Err(ClientError::Indeterminate { .. } | ClientError::Unavailable { .. }) => {}
                            Err(e) => return Err(cluster_err(e)),
                        }
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let leader = primary(&procs.iter().collect::<Vec<_>>(), P, Duration::from_secs(10)).await?;
        let killed_at = Instant::now();
        if let Some(p) = procs.iter_mut().find(|p| 100 + p.id == leader) {
            p.kill();
        }
        tokio::time::sleep(Duration::from_millis(4000)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.map_err(cluster_err)??;
        }
        let acked = std::mem::take(&mut *acked.lock());
        // Longest gap between consecutive acknowledgements that spans the kill.
        let mut times: Vec<Instant> = acked.values().copied().collect();
        times.sort();
        let before = times.iter().rev().find(|t| **t <= killed_at).copied().unwrap_or(killed_at);
        let after = times.iter().find(|t| **t > killed_at).copied();
        let gap = after.map_or(f64::INFINITY, |a| a.duration_since(before).as_secs_f64() * 1e3);
        gaps.push(gap);
        for key in acked.keys() {
            match client.get(P, "bench", key, ReadMode::Linearizable).await {
                Ok(Some(_)) => {}
                Ok(None) => lost += 1,
                Err(e) => return Err(cluster_err(e)),
            }
        }
    }
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(FailoverReport {
        trials,
        median_unavailable_ms: percentile(&sorted, 0.5),
        max_unavailable_ms: sorted.last().copied().unwrap_or(0.0),
        unavailable_ms: gaps,
        acked_writes_lost: lost,
    })
}

/// `weft bench rebuild` results.
#[derive(Debug, Serialize)]
pub struct RebuildReport {
    /// Bytes of the snapshot stream the new replica received.
    pub bytes: u64,
    /// Records in the partition.
    pub records: u64,
    /// From add-learner to caught up.
    pub rebuild_s: f64,
    /// `bytes` / `rebuild_s`, in MB/s (10^6 bytes).
    pub rebuild_mb_per_s: f64,
    /// Decoding the same kind of snapshot stream in this process (the ceiling), MB/s.
    pub avro_decode_mb_per_s: f64,
    /// Encoding it in this process from an engine snapshot, MB/s (the sender's share).
    pub avro_encode_mb_per_s: f64,
    /// `rebuild_mb_per_s` / `avro_decode_mb_per_s`.
    pub fraction_of_decode: f64,
}

const REBUILD_BATCH: usize = 1000;

fn rebuild_record(i: u64) -> (Vec<u8>, Vec<u8>) {
    // 16-byte keys spread over the key space, 100-byte values.
    let key = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes().iter().chain(&i.to_be_bytes()).copied().collect();
    (key, vec![(i % 251) as u8; 100])
}

/// Loads about `mib` MiB of records into a single-replica partition, then builds a second
/// replica from a snapshot over loopback gRPC and times it.
/// `progress(records, total)` hears how many records the new replica has decoded, every
/// 100 ms while it is built.
pub async fn rebuild(mib: u64, tls: bool, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<RebuildReport, Error> {
    let snap = ["--snapshot-every", "50", "--keep-behind-snapshot", "5"];
    let security = Security::new(tls)?;
    let (a, b) = (start(1, &snap, &security)?, start(2, &snap, &security)?);
    open_partition(&[&a], P, 100).await?;
    let client = Client::new(vec![a.addr.clone()], security.harness_config()?);
    client.create_table(P, "bench").await.map_err(cluster_err)?;
    // ~140 bytes of stream per record (16-byte key, 100-byte value, framing).
    let records = (mib << 20) / 140;
    let mut i = 0;
    while i < records {
        let ops = (i..(i + REBUILD_BATCH as u64).min(records))
            .map(|j| {
                let (key, value) = rebuild_record(j);
                let put = pb::Put { table: "bench".into(), key: key.into(), value: value.into(), ..Default::default() };
                pb::Op { kind: Some(pb::op::Kind::Put(put)) }
            })
            .collect();
        client.batch(P, ops).await.map_err(cluster_err)?;
        i += REBUILD_BATCH as u64;
    }
    b.admin()
        .await?
        .open_replica(pb::OpenReplicaRequest { partition: P, replica: 102, mode: 0, initial: None, staged: false })
        .await
        .map_err(cluster_err)?;
    let t = Instant::now();
    let mut admin = a.admin().await?;
    let adding =
        admin.add_learner(pb::AddLearnerRequest { partition: P, replica: 102, addr: b.addr.clone(), blocking: true });
    let mut watcher = b.admin().await?;
    let watching = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(st) = watcher.status(pb::ReplicaStatusRequest { partition: P }).await {
                progress(st.into_inner().snapshot_records, records);
            }
        }
    };
    tokio::select! {
        added = adding => { added.map_err(cluster_err)?; }
        () = watching => {}
    }
    // add_learner returns once the lag is under openraft's replication_lag_threshold; the
    // rebuild ends when the learner has applied everything the leader had.
    let target = a.admin().await?.status(pb::ReplicaStatusRequest { partition: P }).await.map_err(cluster_err)?;
    let target = target.into_inner().last_log_index;
    let mut learner = b.admin().await?;
    let st = loop {
        let st = learner.status(pb::ReplicaStatusRequest { partition: P }).await.map_err(cluster_err)?.into_inner();
        if st.applied_index >= target {
            break st;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(Error::Cluster(format!(
                "the new replica did not catch up within a minute to {target}: {st:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let rebuild_s = t.elapsed().as_secs_f64();
    progress(st.records, records);
    if st.snapshots_installed == 0 {
        return Err(Error::Cluster(format!("the new replica caught up from the log, not a snapshot: {st:?}")));
    }
    let bytes = st.snapshot_bytes;
    let (encode, decode) = codec_rates(st.records)?;
    let rebuild_mb_per_s = bytes as f64 / 1e6 / rebuild_s;
    Ok(RebuildReport {
        bytes,
        records: st.records,
        rebuild_s,
        rebuild_mb_per_s,
        avro_decode_mb_per_s: decode,
        avro_encode_mb_per_s: encode,
        fraction_of_decode: rebuild_mb_per_s / decode,
    })
}

/// Encodes `records` records like the rebuild's into an Avro snapshot stream in memory,
/// then decodes it; the median of 3 of each, in MB/s: (encode, decode).
fn codec_rates(records: u64) -> Result<(f64, f64), Error> {
    let mut loaded: Vec<weft_store::LoadRecord> = (0..records)
        .map(|i| {
            let (key, value) = rebuild_record(i);
            weft_store::LoadRecord { key, value, attrs: Vec::new(), version: i + 1 }
        })
        .collect();
    loaded.sort_by(|x, y| x.key.cmp(&y.key));
    let mut store = weft_store::Store::default();
    store.load_table("bench", &[], loaded).map_err(cluster_err)?;
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let mut bytes = Vec::new();
    let mut encode = Vec::new();
    for _ in 0..3 {
        bytes = Vec::with_capacity(bytes.capacity());
        let t = Instant::now();
        weft_replica::snapshot::encode(&store.snapshot(), &Default::default(), &mut bytes).map_err(cluster_err)?;
        encode.push(bytes.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    drop(store);
    let mut decode = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let progress = weft_replica::snapshot::Progress::default();
        let built =
            weft_replica::snapshot::decode(bytes.as_slice(), Default::default(), &progress).map_err(cluster_err)?;
        decode.push(bytes.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
        drop(built);
    }
    Ok((median(encode), median(decode)))
}
