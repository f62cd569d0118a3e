//! `weft bench engine`: the engine workload the engine was specified against, with `BTreeMap` baselines measured
//! in the same run on the same records.
//!
//! Records: 16-byte random keys, 100-byte random values, two random i64 attributes (`a`
//! and `b`). Each figure is the median over `runs` full repetitions; sub-millisecond
//! figures (first page, page 100, top-k, snapshot) are the median of many timed calls
//! within each run. Memory growth (`rss_bytes_per_record`) is read in the first run only,
//! before anything else allocates, so freed memory from earlier steps cannot hide it.
//! Every scan reads the first byte of each key and value, on both sides, so neither side
//! skips the memory a real scan touches.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use weft_store::{IndexDef, LoadRecord, Query, Scalar, Store, StoreError};

/// How to run the engine benchmark.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Records per table.
    pub records: usize,
    /// Full repetitions; each figure is the median.
    pub runs: usize,
    /// Seed for keys, values and attributes.
    pub seed: u64,
}

/// The figures `weft bench engine --json` prints (milliseconds unless named otherwise).
#[derive(Clone, Debug, Default, Serialize)]
pub struct EngineReport {
    pub records: usize,
    pub runs: usize,
    pub insert_ms: f64,
    pub insert_indexed_ms: f64,
    pub get_ms: f64,
    pub scan_ms: f64,
    pub baseline_btreemap_insert_ms: f64,
    pub baseline_btreemap_get_ms: f64,
    pub baseline_btreemap_scan_ms: f64,
    pub heap_index_build_ms: f64,
    pub order_by_first_page_ms: f64,
    pub order_by_page_100_ms: f64,
    pub order_by_full_ms: f64,
    pub top_k_100_ms: f64,
    pub snapshot_ms: f64,
    pub bulk_build_ms: f64,
    pub bytes_per_record: f64,
    pub rss_bytes_per_record: Option<f64>,
    /// Each of the engine's targets and whether this run met it.
    pub targets: Vec<Target>,
}

/// One acceptance target and its outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub value: f64,
    pub limit: f64,
    pub met: bool,
}

/// Errors of the engine benchmark: the one error this crate returns. New variants may be
/// added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The engine refused a request the benchmark makes.
    #[error("engine: {0}")]
    Store(#[from] StoreError),
    /// The configuration cannot run.
    #[error("bad benchmark configuration: {0}")]
    Config(&'static str),
    /// A result disagreed with the baseline (the benchmark checks what it times).
    #[error("result mismatch: {0}")]
    Mismatch(String),
}

struct Data {
    keys: Vec<[u8; 16]>,
    values: Vec<Vec<u8>>,
    a: Vec<i64>,
    b: Vec<i64>,
    get_order: Vec<usize>,
}

fn data(cfg: &EngineConfig) -> Data {
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let n = cfg.records;
    let keys: Vec<[u8; 16]> = (0..n).map(|_| rng.random()).collect();
    let values = (0..n)
        .map(|_| {
            let mut v = vec![0u8; 100];
            rng.fill(v.as_mut_slice());
            v
        })
        .collect();
    let a = (0..n).map(|_| rng.random()).collect();
    let b = (0..n).map(|_| rng.random()).collect();
    let mut get_order: Vec<usize> = (0..n).collect();
    get_order.shuffle(&mut rng);
    Data { keys, values, a, b, get_order }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// Median of one closure's single-call times, in milliseconds.
fn median_call_ms(reps: usize, mut f: impl FnMut() -> Result<(), BenchError>) -> Result<f64, BenchError> {
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(ms(s));
    }
    Ok(median(t))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Resident set size of this process, from `/proc/self/status` (Linux only).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

const PLAIN: &str = "plain";
const INDEXED: &str = "indexed";
const PAGE: usize = 100;

fn attrs(d: &Data, i: usize) -> [(&'static str, Scalar); 2] {
    [("a", Scalar::I64(d.a[i])), ("b", Scalar::I64(d.b[i]))]
}

/// One full repetition; returns its figures.
fn run_once(d: &Data, measure_rss: bool) -> Result<EngineReport, BenchError> {
    let n = d.keys.len();
    let mut r = EngineReport { records: n, ..EngineReport::default() };

    // Indexed table first, so its memory growth is measured on a fresh heap.
    let rss_before = rss_bytes();
    let mut indexed = Store::default();
    indexed.create_table(INDEXED)?;
    indexed.create_index(INDEXED, IndexDef::ordered("by_a", "a"))?;
    indexed.create_index(INDEXED, IndexDef::max_heap("top_b", "b"))?;
    let s = Instant::now();
    for i in 0..n {
        indexed.put(INDEXED, &d.keys[i], &d.values[i], &attrs(d, i))?;
    }
    r.insert_indexed_ms = ms(s);
    if measure_rss && let (Some(a), Some(b)) = (rss_before, rss_bytes()) {
        r.rss_bytes_per_record = Some(b.saturating_sub(a) as f64 / n as f64);
    }
    r.bytes_per_record = indexed.memory_bytes() as f64 / n as f64;

    // Order-by through the ordered index, descending.
    let desc = Query { reverse: true, ..Query::all("by_a", PAGE) };
    let mut max_a = d.a.clone();
    max_a.sort_unstable();
    r.order_by_first_page_ms = median_call_ms(21, || {
        let p = indexed.query(INDEXED, &desc)?;
        let top = p.records.first().and_then(|rec| rec.attr("a").cloned());
        if top != max_a.last().map(|v| Scalar::I64(*v)) {
            return Err(BenchError::Mismatch("first page does not start at the maximum".into()));
        }
        Ok(())
    })?;
    let mut q = desc.clone();
    for _ in 0..99 {
        q.token = indexed.query(INDEXED, &q)?.next;
    }
    r.order_by_page_100_ms = median_call_ms(21, || {
        let p = indexed.query(INDEXED, &q)?;
        let want = max_a.len().checked_sub(99 * PAGE + 1).map(|i| Scalar::I64(max_a[i]));
        if p.records.first().and_then(|rec| rec.attr("a").cloned()) != want {
            return Err(BenchError::Mismatch("page 100 does not start where it should".into()));
        }
        Ok(())
    })?;
    let s = Instant::now();
    let mut q = Query { limit: indexed.limits().page_records_max, ..Query::all("by_a", 1) };
    let mut seen = 0usize;
    loop {
        let p = indexed.query(INDEXED, &q)?;
        seen += p.records.len();
        black_box(&p.records);
        match p.next {
            Some(t) => q.token = Some(t),
            None => break,
        }
    }
    r.order_by_full_ms = ms(s);
    if seen != n {
        return Err(BenchError::Mismatch(format!("full order-by saw {seen} of {n}")));
    }
    let mut max_b = d.b.clone();
    max_b.sort_unstable();
    r.top_k_100_ms = median_call_ms(21, || {
        let top = indexed.top_k(INDEXED, "top_b", 100)?;
        if top.last().and_then(|rec| rec.attr("b").cloned())
            != max_b.len().checked_sub(100).map(|i| Scalar::I64(max_b[i]))
        {
            return Err(BenchError::Mismatch("top-100 disagrees with sorting".into()));
        }
        Ok(())
    })?;
    r.snapshot_ms = median_call_ms(101, || {
        black_box(indexed.snapshot());
        Ok(())
    })?;
    drop(indexed);

    // Plain table: insert, get, scan, then a max-heap index declared over it.
    let mut plain = Store::default();
    plain.create_table(PLAIN)?;
    let s = Instant::now();
    for i in 0..n {
        plain.put(PLAIN, &d.keys[i], &d.values[i], &attrs(d, i))?;
    }
    r.insert_ms = ms(s);
    let table = plain.table(PLAIN)?;
    let s = Instant::now();
    let mut sum = 0usize;
    for &i in &d.get_order {
        let key = &d.keys[i];
        if let Some(rec) = table.get(key) {
            sum += rec.value().len();
        }
    }
    r.get_ms = ms(s);
    check_sum("get", sum, n * 100)?;
    let s = Instant::now();
    let mut sum = 0usize;
    for rec in table.records() {
        sum += usize::from(rec.key()[0]) + usize::from(rec.value()[0]);
    }
    r.scan_ms = ms(s);
    let scan_sum = black_box(sum);
    let s = Instant::now();
    plain.create_index(PLAIN, IndexDef::max_heap("top_a", "a"))?;
    r.heap_index_build_ms = ms(s);

    // Bulk build from the same records, sorted.
    let mut sorted: Vec<LoadRecord> = plain
        .table(PLAIN)?
        .records()
        .map(|rec| LoadRecord {
            key: rec.key().to_vec(),
            value: rec.value().to_vec(),
            attrs: rec.attrs().iter().map(|a| (a.name().to_string(), a.value().clone())).collect(),
            version: rec.version(),
        })
        .collect();
    sorted.shrink_to_fit();
    drop(plain);
    let mut bulk = Store::default();
    let s = Instant::now();
    bulk.load_table(PLAIN, &[], sorted)?;
    r.bulk_build_ms = ms(s);
    if bulk.count(PLAIN)? != n {
        return Err(BenchError::Mismatch("bulk build lost records".into()));
    }
    drop(bulk);

    // Baseline: BTreeMap<Vec<u8>, Vec<u8>> on the same records and order.
    let s = Instant::now();
    let mut map = BTreeMap::new();
    for i in 0..n {
        map.insert(d.keys[i].to_vec(), d.values[i].clone());
    }
    r.baseline_btreemap_insert_ms = ms(s);
    let s = Instant::now();
    let mut sum = 0usize;
    for &i in &d.get_order {
        if let Some(v) = map.get(d.keys[i].as_slice()) {
            sum += v.len();
        }
    }
    r.baseline_btreemap_get_ms = ms(s);
    check_sum("baseline get", sum, n * 100)?;
    let s = Instant::now();
    let mut sum = 0usize;
    for (k, v) in map.range::<[u8], _>((Bound::Unbounded, Bound::Unbounded)) {
        sum += usize::from(k[0]) + usize::from(v[0]);
    }
    r.baseline_btreemap_scan_ms = ms(s);
    check_sum("scan", scan_sum, black_box(sum))?;
    Ok(r)
}

fn check_sum(what: &str, got: usize, want: usize) -> Result<(), BenchError> {
    if got != want {
        return Err(BenchError::Mismatch(format!("{what}: checksum {got}, expected {want}")));
    }
    Ok(())
}

/// Runs the benchmark and evaluates the targets.
pub fn run(cfg: &EngineConfig) -> Result<EngineReport, BenchError> {
    if cfg.records < 100 * PAGE {
        return Err(BenchError::Config("--records must be at least 10000 (page 100 of 100 must exist)"));
    }
    if cfg.runs == 0 {
        return Err(BenchError::Config("--runs must be at least 1"));
    }
    let d = data(cfg);
    let mut runs = Vec::with_capacity(cfg.runs);
    for i in 0..cfg.runs {
        runs.push(run_once(&d, i == 0)?);
    }
    let med = |f: fn(&EngineReport) -> f64| median(runs.iter().map(f).collect());
    let mut r = EngineReport {
        records: cfg.records,
        runs: cfg.runs,
        insert_ms: med(|r| r.insert_ms),
        insert_indexed_ms: med(|r| r.insert_indexed_ms),
        get_ms: med(|r| r.get_ms),
        scan_ms: med(|r| r.scan_ms),
        baseline_btreemap_insert_ms: med(|r| r.baseline_btreemap_insert_ms),
        baseline_btreemap_get_ms: med(|r| r.baseline_btreemap_get_ms),
        baseline_btreemap_scan_ms: med(|r| r.baseline_btreemap_scan_ms),
        heap_index_build_ms: med(|r| r.heap_index_build_ms),
        order_by_first_page_ms: med(|r| r.order_by_first_page_ms),
        order_by_page_100_ms: med(|r| r.order_by_page_100_ms),
        order_by_full_ms: med(|r| r.order_by_full_ms),
        top_k_100_ms: med(|r| r.top_k_100_ms),
        snapshot_ms: med(|r| r.snapshot_ms),
        bulk_build_ms: med(|r| r.bulk_build_ms),
        bytes_per_record: med(|r| r.bytes_per_record),
        rss_bytes_per_record: runs.first().and_then(|r| r.rss_bytes_per_record),
        targets: Vec::new(),
    };
    r.targets = targets(&r);
    Ok(r)
}

/// The engine's targets at N = 1,000,000 (evaluated at any N, for information).
fn targets(r: &EngineReport) -> Vec<Target> {
    let t = |what: &str, value: f64, limit: f64| Target { what: what.into(), value, limit, met: value <= limit };
    let bt_insert = r.baseline_btreemap_insert_ms;
    let mut v = vec![
        t("insert_ms <= 2 x btreemap insert", r.insert_ms, 2.0 * bt_insert),
        t("get_ms <= 1/3 btreemap get", r.get_ms, r.baseline_btreemap_get_ms / 3.0),
        t("scan_ms <= 4 x btreemap scan", r.scan_ms, 4.0 * r.baseline_btreemap_scan_ms),
        t("insert_indexed_ms <= 4 x btreemap insert", r.insert_indexed_ms, 4.0 * bt_insert),
        t("heap_index_build_ms <= 100", r.heap_index_build_ms, 100.0),
        t("order_by_first_page_ms <= 1", r.order_by_first_page_ms, 1.0),
        t("order_by_page_100_ms <= 1", r.order_by_page_100_ms, 1.0),
        t("top_k_100_ms <= 1", r.top_k_100_ms, 1.0),
        t("snapshot_ms <= 1", r.snapshot_ms, 1.0),
        t("order_by_full_ms <= 500", r.order_by_full_ms, 500.0),
        t("bulk_build_ms <= insert_ms / 2", r.bulk_build_ms, r.insert_ms / 2.0),
    ];
    if let Some(rss) = r.rss_bytes_per_record {
        v.push(t("rss_bytes_per_record <= 512", rss, 512.0));
    }
    v
}
