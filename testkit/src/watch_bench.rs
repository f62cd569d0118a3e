//! `weft bench watch`: what change feeds cost the writers. `weft bench replication`'s
//! write load (writers putting 100-byte values into one 4-way partition) runs once per
//! watcher count on one cluster; every watcher is its own stream and sees every write (or,
//! with `prefixed`, one writer's keys).
//!
//! With the `etcd` feature the same load and the same watchers run against a local etcd
//! cluster of as many members, for the comparison that means something on one machine:
//! how much of its write rate each store keeps with N watchers.
//!
//! Each run also reports the CPU time the store's processes, and this process (the writers
//! and the watchers' clients), spend per acknowledged write. When the store and its
//! watchers share a machine's cores, whatever a watcher costs is taken from the writers;
//! these figures say where it goes.
//!
//! Depends on the local cluster harnesses (weft's and etcd's); never on the node's code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use serde::Serialize;
use weft_client::client::Client;
use weft_proto::v1 as pb;

use crate::Error;
use crate::cluster_bench::{Cluster, Mode, P, cluster, percentile};
use crate::local::cluster_err;

/// Replicas of the partition (weft) or members of the cluster (etcd).
const REPLICAS: usize = 4;

/// Which store `weft bench watch` loads.
#[derive(Clone, Debug)]
pub enum Store {
    /// Local `weft node` processes (this binary).
    Weft,
    /// Local etcd members started from this binary path, without fsync as weft's volatile
    /// logs are.
    #[cfg(feature = "etcd")]
    Etcd(std::path::PathBuf),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The store.
    pub store: Store,
    /// Watcher counts, one run each, on one cluster; the first is the ratios' baseline.
    pub watchers: Vec<usize>,
    /// Concurrent writers.
    pub clients: usize,
    /// Seconds of each run.
    pub seconds: f64,
    /// TLS with client certificates between everyone.
    pub tls: bool,
    /// Watcher `i` watches writer `i % clients`'s keys only.
    pub prefixed: bool,
}

/// One load run: the write load with `watchers` watchers.
#[derive(Debug, Serialize)]
pub struct WatchRun {
    /// Watchers during the run.
    pub watchers: usize,
    /// Acknowledged writes per second.
    pub writes_per_s: f64,
    /// Writes per second relative to the first run.
    pub ratio: f64,
    /// Changes the first watcher received (with `prefixed`, its writer's only).
    pub delivered: u64,
    /// Median time from a write's acknowledgement to the first watcher receiving it
    /// (0 when the watcher had it first), milliseconds.
    pub lag_p50_ms: f64,
    /// 99th percentile of that lag.
    pub lag_p99_ms: f64,
    /// CPU time (user + system) of the store's processes per acknowledged write,
    /// microseconds: what the watchers cost the store itself.
    pub store_cpu_us_per_write: f64,
    /// CPU time of this process (the writers and the watchers' clients) per acknowledged
    /// write, microseconds.
    pub client_cpu_us_per_write: f64,
}

/// Results for one store.
#[derive(Debug, Serialize)]
pub struct WatchReport {
    /// `weft` or `etcd`.
    pub store: &'static str,
    /// Whether everyone spoke TLS.
    pub tls: bool,
    /// Replicas of the partition (etcd: members).
    pub replicas: usize,
    /// Concurrent writers.
    pub clients: usize,
    /// Seconds of each run.
    pub seconds: f64,
    /// Whether each watcher watched one writer's keys only.
    pub prefixed: bool,
    /// The runs, in the order given.
    pub runs: Vec<WatchRun>,
}

/// Runs `config` on a fresh local cluster of its store.
///
/// Each run overwrites the same keys (1,000 per writer); its keys carry the run's number,
/// so that the first watcher can time the delivery of each key's first write against its
/// acknowledgement.
pub async fn watch(config: &WatchConfig) -> Result<WatchReport, Error> {
    match &config.store {
        Store::Weft => {
            let Cluster { procs, client, _data, _security } =
                cluster(REPLICAS as u64, Mode::Volatile, config.tls).await?;
            let pids = procs.iter().filter_map(|p| p.pid()).collect::<Vec<_>>();
            client.put(P, "bench", b"warmup", b"").await.map_err(cluster_err)?;
            let runs = runs(&Feed::Weft(client), &pids, config).await?;
            Ok(report("weft", config, runs))
        }
        #[cfg(feature = "etcd")]
        Store::Etcd(bin) => {
            let etcd = crate::ycsb::clusters::start_etcd(bin, REPLICAS, false, config.tls).await?;
            let options = etcd.tls_options().map(|t| etcd_client::ConnectOptions::new().with_tls(t));
            let client = etcd_client::Client::connect(&etcd.endpoints, options).await?;
            let runs = runs(&Feed::Etcd(Box::new(client)), &etcd.pids(), config).await?;
            Ok(report("etcd", config, runs))
        }
    }
}

fn report(store: &'static str, config: &WatchConfig, runs: Vec<WatchRun>) -> WatchReport {
    WatchReport {
        store,
        tls: config.tls,
        replicas: REPLICAS,
        clients: config.clients,
        seconds: config.seconds,
        prefixed: config.prefixed,
        runs,
    }
}

/// A store's writes and change feed, as the bench uses them.
#[derive(Clone)]
enum Feed {
    /// Table `bench` of partition [`P`].
    Weft(Client),
    /// The whole key space.
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::Client>),
}

/// One message of a watch.
enum Delivery {
    Weft(pb::WatchResponse),
    #[cfg(feature = "etcd")]
    Etcd(etcd_client::WatchResponse),
}

impl Delivery {
    /// Changes the message carries.
    fn changes(&self) -> usize {
        match self {
            Delivery::Weft(m) => m.changes.len(),
            #[cfg(feature = "etcd")]
            Delivery::Etcd(m) => m.events().len(),
        }
    }

    /// Calls `f` with the key of each put the message carries.
    fn each_put(&self, mut f: impl FnMut(&[u8])) {
        match self {
            Delivery::Weft(m) => {
                for c in &m.changes {
                    if let Some(pb::change::Kind::Put(r)) = &c.kind {
                        f(&r.key);
                    }
                }
            }
            #[cfg(feature = "etcd")]
            Delivery::Etcd(m) => {
                for e in m.events() {
                    if let (etcd_client::EventType::Put, Some(kv)) = (e.event_type(), e.kv()) {
                        f(kv.key());
                    }
                }
            }
        }
    }
}

impl Feed {
    /// Writes one key; returns once a quorum has it.
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        match self {
            Feed::Weft(client) => client.put(P, "bench", key, value).await.map(drop).map_err(cluster_err),
            #[cfg(feature = "etcd")]
            Feed::Etcd(client) => Ok(client.kv_client().put(key, value, None).await.map(drop)?),
        }
    }

    /// Opens a watch of the keys starting with `prefix` (all keys when empty); returns once
    /// the store says it is in place.
    async fn watch(&self, prefix: Vec<u8>) -> Result<BoxStream<'static, Result<Delivery, Error>>, Error> {
        match self {
            Feed::Weft(client) => {
                let mut s = client.watch(P, &weft_client::WatchOptions { prefix, ..Default::default() });
                // The first message says where the stream starts.
                s.next().await.ok_or_else(|| cluster_err("a watch ended before it started"))?.map_err(cluster_err)?;
                Ok(s.map(|m| m.map(Delivery::Weft).map_err(cluster_err)).boxed())
            }
            #[cfg(feature = "etcd")]
            Feed::Etcd(client) => {
                let options = etcd_client::WatchOptions::new();
                let options = if prefix.is_empty() { options.with_all_keys() } else { options.with_prefix() };
                let mut s = client.watch_client().watch(prefix, Some(options)).await?;
                // The first message says the watch is created.
                s.message().await?.ok_or_else(|| cluster_err("a watch ended before it started"))?;
                Ok(s.map(|m| m.map(Delivery::Etcd).map_err(Error::from)).boxed())
            }
        }
    }
}

/// The runs of `config` against `feed`, whose store runs as the processes `pids`.
async fn runs(feed: &Feed, pids: &[u32], config: &WatchConfig) -> Result<Vec<WatchRun>, Error> {
    let value = vec![7u8; 100];
    let mut runs: Vec<WatchRun> = Vec::new();
    for &n in &config.watchers {
        // Key -> when its first write was acknowledged, and when the first watcher got it.
        let acked: Arc<Mutex<BTreeMap<Vec<u8>, Instant>>> = Arc::default();
        let seen: Arc<Mutex<BTreeMap<Vec<u8>, Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let run = format!("{}", runs.len());
        let mut streams = Vec::new();
        for i in 0..n {
            let prefix = if config.prefixed { format!("{run}-{:04}-", i % config.clients) } else { String::new() };
            streams.push(feed.watch(prefix.into_bytes()).await?);
        }
        let readers: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let (seen, stop, run) = (seen.clone(), stop.clone(), run.clone());
                tokio::spawn(async move {
                    let mut delivered = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let m = match tokio::time::timeout(Duration::from_millis(200), s.next()).await {
                            Err(_) => continue,
                            Ok(Some(m)) => m?,
                            Ok(None) => return Err(cluster_err("a watch ended")),
                        };
                        delivered += m.changes() as u64;
                        if i == 0 {
                            let now = Instant::now();
                            let mut seen = seen.lock();
                            m.each_put(|key| {
                                if key.starts_with(run.as_bytes()) && !seen.contains_key(key) {
                                    seen.insert(key.to_vec(), now);
                                }
                            });
                        }
                    }
                    Ok::<_, Error>(delivered)
                })
            })
            .collect();
        let cpu_before = cpu_s(pids)?;
        let start = Instant::now();
        let writers: Vec<_> = (0..config.clients)
            .map(|c| {
                let (feed, stop, value, acked, run) =
                    (feed.clone(), stop.clone(), value.clone(), acked.clone(), run.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{run}-{c:04}-{:04}", i % 1000);
                        feed.put(key.as_bytes(), &value).await?;
                        acked.lock().entry(key.into_bytes()).or_insert_with(Instant::now);
                        i += 1;
                    }
                    Ok::<_, Error>(i)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(config.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut writes = 0;
        for w in writers {
            writes += w.await.map_err(cluster_err)??;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cpu_after = cpu_s(pids)?;
        let per_write = |before: f64, after: f64| (after - before) * 1e6 / writes.max(1) as f64;
        let mut delivered = 0;
        for (i, r) in readers.into_iter().enumerate() {
            let d = r.await.map_err(cluster_err)??;
            if i == 0 {
                delivered = d;
            }
        }
        // Each key's first write: its first acknowledgement against its first delivery.
        let (acked, seen) = (acked.lock(), seen.lock());
        let mut lag: Vec<f64> = acked
            .iter()
            .filter_map(|(k, at)| seen.get(k).map(|got| got.saturating_duration_since(*at).as_secs_f64() * 1e3))
            .collect();
        lag.sort_by(f64::total_cmp);
        let writes_per_s = writes as f64 / elapsed;
        let base = runs.first().map_or(writes_per_s, |r| r.writes_per_s);
        runs.push(WatchRun {
            watchers: n,
            writes_per_s,
            ratio: writes_per_s / base,
            delivered,
            lag_p50_ms: percentile(&lag, 0.5),
            lag_p99_ms: percentile(&lag, 0.99),
            store_cpu_us_per_write: per_write(cpu_before.0, cpu_after.0),
            client_cpu_us_per_write: per_write(cpu_before.1, cpu_after.1),
        });
    }
    Ok(runs)
}

/// CPU seconds used so far by the processes `pids` together, and by this process.
fn cpu_s(pids: &[u32]) -> Result<(f64, f64), Error> {
    let mut store = 0.0;
    for pid in pids {
        store += crate::density::usage(*pid)?.cpu_s;
    }
    Ok((store, crate::density::usage(std::process::id())?.cpu_s))
}
