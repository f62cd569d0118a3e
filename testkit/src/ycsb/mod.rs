//! `weft bench kv`: the YCSB core workloads A–F, driven by one load generator against any
//! [`Target`] (a weft service, or etcd with the `etcd` feature), so both are measured alike.
//!
//! The workloads follow YCSB's `core` definitions:
//!
//! | workload | mix | keys |
//! |---|---|---|
//! | A | 50% read, 50% update | `--distribution` |
//! | B | 95% read, 5% update | `--distribution` |
//! | C | 100% read | `--distribution` |
//! | D | 95% read, 5% insert | latest (the newest records are the hottest) |
//! | E | 95% scan (1–100 records), 5% insert | `--distribution` |
//! | F | 50% read, 50% read-modify-write | `--distribution` |
//!
//! Keys are `user` + the record number hashed (YCSB's hashed insert order), so a scan
//! starting at a key sees records from all over the insert order. Zipfian picks use
//! YCSB's constant 0.99, scrambled by the same hash so the hot records are not neighbours.
//! Records are loaded once per target (not timed) and the workloads then run in the
//! order given, on the same data, as YCSB runs them. Reads are linearizable on both
//! targets (weft's read index; etcd's default, non-serializable range). A run stops at
//! `operations` or `seconds`, whichever comes first; latencies are per operation type,
//! read-modify-write timed from its read to its write's acknowledgement.

pub mod clusters;
pub mod target;
#[cfg(feature = "etcd")]
pub mod versus;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution as _, Zipf};
use serde::Serialize;

use crate::Error;
use crate::cluster_bench::percentile;

pub use target::Target;

/// YCSB's zipfian constant.
const ZIPF_THETA: f64 = 0.99;
/// Longest scan in workload E (YCSB's `maxscanlength`); lengths are uniform from 1.
pub const MAX_SCAN: usize = 100;

/// One of YCSB's core workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub enum Workload {
    /// Update heavy: 50% read, 50% update.
    A,
    /// Read mostly: 95% read, 5% update.
    B,
    /// Read only.
    C,
    /// Read latest: 95% read, 5% insert, the newest records hottest.
    D,
    /// Short ranges: 95% scan, 5% insert.
    E,
    /// Read-modify-write: 50% read, 50% read-modify-write.
    F,
}

impl Workload {
    /// Every core workload, in YCSB's order.
    pub const ALL: [Workload; 6] = [Workload::A, Workload::B, Workload::C, Workload::D, Workload::E, Workload::F];

    /// The workload's letter.
    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "A",
            Workload::B => "B",
            Workload::C => "C",
            Workload::D => "D",
            Workload::E => "E",
            Workload::F => "F",
        }
    }

    /// Per mille of each operation kind, in [`OpKind`] order; the entries sum to 1000.
    fn mix(self) -> [u32; 5] {
        match self {
            Workload::A => [500, 500, 0, 0, 0],
            Workload::B => [950, 50, 0, 0, 0],
            Workload::C => [1000, 0, 0, 0, 0],
            Workload::D => [950, 0, 50, 0, 0],
            Workload::E => [0, 0, 50, 950, 0],
            Workload::F => [500, 0, 0, 0, 500],
        }
    }

    /// The operation kind for a uniform draw `r` in `0..1000`.
    pub fn pick(self, r: u32) -> OpKind {
        let mut acc = 0;
        for (kind, share) in OpKind::ALL.into_iter().zip(self.mix()) {
            acc += share;
            if r < acc {
                return kind;
            }
        }
        OpKind::Read
    }
}

/// An operation the workloads issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// Read one record.
    Read,
    /// Overwrite one existing record.
    Update,
    /// Write a new record.
    Insert,
    /// Read up to [`MAX_SCAN`] records in key order from a key.
    Scan,
    /// Read one record, then write it back changed.
    ReadModifyWrite,
}

impl OpKind {
    const ALL: [OpKind; 5] = [OpKind::Read, OpKind::Update, OpKind::Insert, OpKind::Scan, OpKind::ReadModifyWrite];

    fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "read_modify_write",
        }
    }
}

/// How request keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    /// YCSB's scrambled zipfian (constant 0.99).
    Zipfian,
    /// Every record alike.
    Uniform,
}

/// The load generator's settings.
#[derive(Clone, Debug, Serialize)]
pub struct KvConfig {
    /// Records loaded before the workloads run.
    pub records: u64,
    /// Most operations per workload.
    pub operations: u64,
    /// Most seconds per workload.
    pub seconds: f64,
    /// Key distribution of workloads other than D.
    pub distribution: KeyDistribution,
    /// Bytes per value.
    pub value_size: usize,
    /// Concurrent clients (tasks, each with one request in flight).
    pub clients: usize,
    /// Seed of the key and operation choices.
    pub seed: u64,
}

/// The record number's key.
pub fn key(n: u64) -> Vec<u8> {
    format!("user{:020}", xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes())).into_bytes()
}

/// Record numbers: picks one by the workload's distribution among the records inserted so
/// far (`0..count`).
pub struct KeyChooser {
    distribution: KeyDistribution,
    latest: bool,
    zipf: Option<(u64, Zipf<f64>)>,
}

impl KeyChooser {
    /// A chooser for `workload` (D always uses the latest distribution).
    pub fn new(workload: Workload, distribution: KeyDistribution) -> Self {
        KeyChooser { distribution, latest: workload == Workload::D, zipf: None }
    }

    /// One zipfian rank in `0..count`, 0 the most popular.
    fn rank(&mut self, rng: &mut SmallRng, count: u64) -> u64 {
        let stale = self.zipf.as_ref().is_none_or(|(n, _)| *n != count);
        if stale {
            // `Zipf::new` fails only for n < 1 or a negative exponent; count >= 1 here.
            self.zipf = Zipf::new(count as f64, ZIPF_THETA).ok().map(|z| (count, z));
        }
        match &self.zipf {
            Some((_, z)) => (z.sample(rng) as u64).clamp(1, count) - 1,
            None => 0,
        }
    }

    /// A record number in `0..count` (`count` at least 1).
    pub fn next(&mut self, rng: &mut SmallRng, count: u64) -> u64 {
        let count = count.max(1);
        if self.latest {
            return count - 1 - self.rank(rng, count);
        }
        match self.distribution {
            KeyDistribution::Uniform => rng.random_range(0..count),
            KeyDistribution::Zipfian => xxhash_rust::xxh3::xxh3_64(&self.rank(rng, count).to_le_bytes()) % count,
        }
    }
}

/// Latency and count of one operation type in one workload.
#[derive(Clone, Debug, Serialize)]
pub struct OpStats {
    /// Completed operations.
    pub count: u64,
    /// Failed operations (not in the latencies).
    pub errors: u64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
}

/// One workload's results against one target.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    /// The workload's letter.
    pub workload: &'static str,
    /// Completed operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Reads of a record that was not there (an insert still in flight); counted in `ops`.
    pub not_found: u64,
    /// Records returned by scans, in all.
    pub scanned: u64,
    /// Seconds from the first operation to the last answer.
    pub seconds: f64,
    /// Completed operations per second.
    pub ops_per_s: f64,
    /// 99th percentile over every operation.
    pub p99_ms: f64,
    /// Per operation type.
    pub per_op: BTreeMap<&'static str, OpStats>,
}

/// `weft bench kv` against one target.
#[derive(Clone, Debug, Serialize)]
pub struct KvReport {
    /// What was measured (`weft`, `etcd`, with its mode).
    pub target: String,
    /// The load generator's settings.
    pub config: KvConfig,
    /// Seconds the load took (not part of any figure).
    pub load_s: f64,
    /// One entry per workload, in the order run.
    pub workloads: Vec<WorkloadReport>,
}

/// A `value_size`-byte value, different per record and write.
fn value(size: usize, n: u64, stamp: u64) -> Vec<u8> {
    let mut v = format!("{n}:{stamp}:").into_bytes();
    v.resize(size, b'x');
    v
}

/// Loads `records` records with `clients` concurrent writers.
pub async fn load(target: &Target, cfg: &KvConfig) -> Result<f64, Error> {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..cfg.clients.max(1))
        .map(|_| {
            let (target, next, records, size) = (target.clone(), next.clone(), cfg.records, cfg.value_size);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= records {
                        return Ok::<(), Error>(());
                    }
                    target
                        .write(&key(n), &value(size, n, 0))
                        .await
                        .map_err(|source| Error::Load { n, source: Box::new(source) })?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| Error::Task(e.to_string()))??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// What one client task measured.
#[derive(Default)]
struct Tally {
    latencies: BTreeMap<OpKind, Vec<f64>>,
    errors: BTreeMap<OpKind, u64>,
    not_found: u64,
    scanned: u64,
    last_error: Option<String>,
}

/// Shared by a workload's client tasks.
struct Shared {
    /// Operations started.
    started: AtomicU64,
    /// Next record number to insert.
    next_insert: AtomicU64,
    /// Records known to exist: `0..acked` (inserts acknowledged, give or take ones still in
    /// flight below the highest).
    acked: AtomicU64,
}

/// Runs `workload` against `target`, whose first `inserted` records exist; returns the
/// report and the new record count.
pub async fn run_workload(
    target: &Target,
    cfg: &KvConfig,
    workload: Workload,
    inserted: u64,
) -> Result<(WorkloadReport, u64), Error> {
    let shared = Arc::new(Shared {
        started: AtomicU64::new(0),
        next_insert: AtomicU64::new(inserted),
        acked: AtomicU64::new(inserted),
    });
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..cfg.clients.max(1))
        .map(|c| {
            let (target, shared, cfg) = (target.clone(), shared.clone(), cfg.clone());
            let seed = cfg.seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ workload as u64;
            tokio::spawn(async move { client(&target, &cfg, workload, &shared, deadline, seed).await })
        })
        .collect();
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.map_err(|e| Error::Task(e.to_string()))?);
    }
    let seconds = start.elapsed().as_secs_f64();
    let report = summarize(workload, seconds, tallies)?;
    // Every number handed out counts, acknowledged or not: a failed insert's key reads as
    // not found, never as a collision with the next workload's inserts.
    Ok((report, shared.next_insert.load(Ordering::Relaxed)))
}

/// One client: one operation in flight until the workload's budget is spent.
async fn client(
    target: &Target,
    cfg: &KvConfig,
    workload: Workload,
    shared: &Shared,
    deadline: Instant,
    seed: u64,
) -> Tally {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut keys = KeyChooser::new(workload, cfg.distribution);
    let mut tally = Tally::default();
    while shared.started.fetch_add(1, Ordering::Relaxed) < cfg.operations && Instant::now() < deadline {
        let kind = workload.pick(rng.random_range(0..1000));
        let t = Instant::now();
        let outcome = match kind {
            OpKind::Read => {
                let n = keys.next(&mut rng, shared.acked.load(Ordering::Relaxed));
                target.read(&key(n)).await.map(|found| tally.not_found += u64::from(!found))
            }
            OpKind::Update => {
                let n = keys.next(&mut rng, shared.acked.load(Ordering::Relaxed));
                target.write(&key(n), &value(cfg.value_size, n, rng.random())).await
            }
            OpKind::Insert => {
                let n = shared.next_insert.fetch_add(1, Ordering::Relaxed);
                let r = target.write(&key(n), &value(cfg.value_size, n, 0)).await;
                if r.is_ok() {
                    shared.acked.fetch_max(n + 1, Ordering::Relaxed);
                }
                r
            }
            OpKind::Scan => {
                let n = keys.next(&mut rng, shared.acked.load(Ordering::Relaxed));
                let len = rng.random_range(1..=MAX_SCAN);
                target.scan(&key(n), len).await.map(|got| tally.scanned += got as u64)
            }
            OpKind::ReadModifyWrite => {
                let n = keys.next(&mut rng, shared.acked.load(Ordering::Relaxed));
                match target.read(&key(n)).await {
                    Ok(found) => {
                        tally.not_found += u64::from(!found);
                        target.write(&key(n), &value(cfg.value_size, n, rng.random())).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(()) => tally.latencies.entry(kind).or_default().push(t.elapsed().as_secs_f64() * 1e3),
            Err(e) => {
                *tally.errors.entry(kind).or_default() += 1;
                tally.last_error = Some(e.to_string());
            }
        }
    }
    tally
}

fn summarize(workload: Workload, seconds: f64, tallies: Vec<Tally>) -> Result<WorkloadReport, Error> {
    let mut by_kind: BTreeMap<OpKind, (Vec<f64>, u64)> = BTreeMap::new();
    let (mut not_found, mut scanned, mut last) = (0, 0, None);
    for t in tallies {
        for (k, l) in t.latencies {
            by_kind.entry(k).or_default().0.extend(l);
        }
        for (k, e) in t.errors {
            by_kind.entry(k).or_default().1 += e;
        }
        not_found += t.not_found;
        scanned += t.scanned;
        last = t.last_error.or(last);
    }
    let mut all = Vec::new();
    let mut per_op = BTreeMap::new();
    let mut errors = 0;
    for (kind, (mut lat, errs)) in by_kind {
        lat.sort_by(f64::total_cmp);
        errors += errs;
        per_op.insert(
            kind.name(),
            OpStats {
                count: lat.len() as u64,
                errors: errs,
                p50_ms: percentile(&lat, 0.5),
                p99_ms: percentile(&lat, 0.99),
                p999_ms: percentile(&lat, 0.999),
            },
        );
        all.extend(lat);
    }
    all.sort_by(f64::total_cmp);
    let ops = all.len() as u64;
    if errors > ops {
        let last = last.unwrap_or_default();
        return Err(Error::Failing { workload: workload.name(), errors, attempts: errors + ops, last });
    }
    Ok(WorkloadReport {
        workload: workload.name(),
        ops,
        errors,
        not_found,
        scanned,
        seconds,
        ops_per_s: ops as f64 / seconds.max(1e-9),
        p99_ms: percentile(&all, 0.99),
        per_op,
    })
}

/// Loads the records, then runs `workloads` in order against `target`.
pub async fn run(target: &Target, name: String, cfg: &KvConfig, workloads: &[Workload]) -> Result<KvReport, Error> {
    let load_s = load(target, cfg).await?;
    tracing::info!(target = %name, load_s, records = cfg.records, "loaded");
    let mut inserted = cfg.records;
    let mut reports = Vec::new();
    for &w in workloads {
        let (report, now) = run_workload(target, cfg, w, inserted).await?;
        tracing::info!(target = %name, workload = w.name(), ops_per_s = report.ops_per_s, "workload done");
        inserted = now;
        reports.push(report);
    }
    Ok(KvReport { target: name, config: cfg.clone(), load_s, workloads: reports })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mixes_sum_to_one_thousand_per_mille() {
        for w in Workload::ALL {
            assert_eq!(w.mix().iter().sum::<u32>(), 1000, "{w:?}");
        }
    }

    #[test]
    fn picks_follow_the_mix() {
        for w in Workload::ALL {
            let mut counts = BTreeMap::new();
            for r in 0..1000 {
                *counts.entry(w.pick(r)).or_insert(0u32) += 1;
            }
            let expect: BTreeMap<OpKind, u32> =
                OpKind::ALL.into_iter().zip(w.mix()).filter(|(_, share)| *share > 0).collect();
            assert_eq!(counts, expect, "{w:?}");
        }
    }

    #[test]
    fn zipfian_is_skewed_and_uniform_is_not() {
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 10_000;
        let mut top_share = |d| {
            let mut c = KeyChooser::new(Workload::A, d);
            let mut hits = vec![0u32; n as usize];
            for _ in 0..100_000 {
                hits[c.next(&mut rng, n) as usize] += 1;
            }
            hits.sort_unstable_by(|a, b| b.cmp(a));
            hits[..100].iter().sum::<u32>() as f64 / 100_000.0
        };
        // With theta 0.99 over 10k records, the 100 hottest take about half the requests.
        let (zipf, uniform) = (top_share(KeyDistribution::Zipfian), top_share(KeyDistribution::Uniform));
        assert!(zipf > 0.4, "zipfian top-1% share {zipf}");
        assert!(uniform < 0.03, "uniform top-1% share {uniform}");
    }

    #[test]
    fn latest_prefers_the_newest_records() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut c = KeyChooser::new(Workload::D, KeyDistribution::Uniform);
        let newest = (0..10_000).filter(|_| c.next(&mut rng, 1000) >= 990).count();
        // Zipfian ranks from the newest: the 10 newest of 1000 get about H(10)/H(1000),
        // 39% of the picks (uniform picks would give them 1%).
        assert!((3400..4400).contains(&newest), "{newest} of 10000 picks among the newest 1%");
    }

    #[test]
    fn values_have_the_asked_size_and_differ() {
        assert_eq!(value(100, 12345, 99).len(), 100);
        assert_eq!(value(3, 12345, 99).len(), 3);
        assert_ne!(value(100, 1, 2), value(100, 1, 3));
    }

    proptest! {
        #[test]
        fn chosen_records_exist(count in 1u64..5000, seed: u64, zipf: bool, latest: bool) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let d = if zipf { KeyDistribution::Zipfian } else { KeyDistribution::Uniform };
            let mut c = KeyChooser::new(if latest { Workload::D } else { Workload::B }, d);
            for _ in 0..50 {
                prop_assert!(c.next(&mut rng, count) < count);
            }
        }

        #[test]
        fn keys_are_distinct(a: u64, b: u64) {
            prop_assume!(a != b);
            prop_assert_ne!(key(a), key(b));
        }
    }
}
