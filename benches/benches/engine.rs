//! Criterion micro-benchmarks of the engine's hot paths on a 100,000-record table:
//! `cargo bench -p weft-benches --bench engine`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use weft_store::{IndexDef, Query, Scalar, Scan, Store};

const N: usize = 100_000;
const T: &str = "t";

fn keys() -> Vec<[u8; 16]> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..N).map(|_| rng.random()).collect()
}

fn store(keys: &[[u8; 16]]) -> Store {
    let mut s = Store::default();
    let ok = s.create_table(T).is_ok()
        && s.create_index(T, IndexDef::ordered("by_a", "a")).is_ok()
        && s.create_index(T, IndexDef::max_heap("top_b", "b")).is_ok();
    assert!(ok, "setting up the benchmark table");
    let value = [7u8; 100];
    for (i, k) in keys.iter().enumerate() {
        let attrs = [("a", Scalar::I64(i as i64 % 1000)), ("b", Scalar::I64((i as i64 * 7919) % 100_003))];
        assert!(s.put(T, k, &value, &attrs).is_ok());
    }
    s
}

fn engine(c: &mut Criterion) {
    let keys = keys();
    let mut s = store(&keys);
    let mut i = 0usize;
    c.bench_function("get (hash index)", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(s.get(T, &keys[i]).ok().flatten().map(|r| r.value().len()))
        })
    });
    c.bench_function("put replace, 2 indexes", |b| {
        let value = [9u8; 100];
        b.iter(|| {
            i = (i + 7919) % N;
            let attrs = [("a", Scalar::I64(i as i64 % 997)), ("b", Scalar::I64(i as i64))];
            black_box(s.put(T, &keys[i], &value, &attrs).ok())
        })
    });
    c.bench_function("scan page of 100", |b| b.iter(|| black_box(s.scan(T, &Scan::all(100)).ok())));
    let desc = Query { reverse: true, ..Query::all("by_a", 100) };
    c.bench_function("order-by page of 100", |b| b.iter(|| black_box(s.query(T, &desc).ok())));
    c.bench_function("top-100 from max-heap", |b| b.iter(|| black_box(s.top_k(T, "top_b", 100).ok())));
    c.bench_function("snapshot", |b| b.iter(|| black_box(s.snapshot())));
    // The snapshot is O(1); the put after it copies its O(log n) path.
    c.bench_function("snapshot, then a put (path copy)", |b| {
        b.iter(|| {
            let snap = s.snapshot();
            i = (i + 7919) % N;
            black_box(s.put(T, &keys[i], b"v", &[]).ok());
            snap
        })
    });
}

criterion_group!(benches, engine);
criterion_main!(benches);
