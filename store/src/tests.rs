//! Property tests of the whole engine against a simple model: a `BTreeMap` of records,
//! sorted by hand for indexes. Structural invariants (AVL balance, heap order, position
//! map, hash index, byte accounting) are checked after every operation.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use proptest::prelude::*;

use crate::{
    Condition, IndexDef, Limits, LoadRecord, Op, Page, Query, Record, Scalar, Scan, Store, StoreError, StoreSnapshot,
};

#[derive(Clone, Debug, PartialEq)]
struct M {
    value: Vec<u8>,
    attrs: BTreeMap<String, Scalar>,
    version: u64,
}

type Model = BTreeMap<Vec<u8>, M>;

const T: &str = "t";
const INDEXES: [(&str, &str, bool); 4] =
    [("by_a", "a", true), ("heap_a", "a", false), ("by_s", "s", true), ("heap_s", "s", false)];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(0u8..3, 1..4),
        // Long shared prefixes exercise the full-key comparison behind the cached prefix.
        proptest::collection::vec(0u8..2, 1..4).prop_map(|s| [b"prefix__".as_slice(), &s].concat()),
    ]
}

fn attrs() -> impl Strategy<Value = Vec<(String, Scalar)>> {
    let a = prop_oneof![
        3 => (0i64..4).prop_map(Scalar::I64),
        1 => (0i64..2).prop_map(|v| Scalar::F64(v as f64)),
    ];
    let s = "(same_pre|other)[ab]{0,2}".prop_map(|s| Scalar::String(s.into()));
    (proptest::option::of(a), proptest::option::of(s)).prop_map(|(a, s)| {
        let mut v = Vec::new();
        if let Some(a) = a {
            v.push(("a".to_string(), a));
        }
        if let Some(s) = s {
            v.push(("s".to_string(), s));
        }
        v
    })
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        4 => Just(Condition::None),
        1 => Just(Condition::Exists),
        1 => Just(Condition::Absent),
        1 => (1u64..20).prop_map(Condition::Version),
    ]
}

fn write_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (key(), proptest::collection::vec(any::<u8>(), 0..6), attrs(), condition()).prop_map(
            |(key, value, attrs, condition)| Op::Put { table: T.into(), key, value, attrs, condition }
        ),
        1 => (key(), condition()).prop_map(|(key, condition)| Op::Delete { table: T.into(), key, condition }),
    ]
}

#[derive(Clone, Debug)]
enum Action {
    Batch(Vec<Op>),
    PopMax(usize),
    Snapshot,
    CreateIndexes,
    DropIndex(usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => proptest::collection::vec(write_op(), 1..4).prop_map(Action::Batch),
        1 => (0usize..4).prop_map(Action::PopMax),
        1 => Just(Action::Snapshot),
        1 => Just(Action::CreateIndexes),
        1 => (0usize..4).prop_map(Action::DropIndex),
    ]
}

/// Applies a batch to the model with the engine's semantics; `Err` if a condition fails.
fn model_apply(model: &mut Model, ops: &[Op], version: u64) -> Result<(), usize> {
    for (i, op) in ops.iter().enumerate() {
        let cur = model.get(op.key()).map(|m| m.version);
        let ok = match op.condition() {
            Condition::None => true,
            Condition::Exists => cur.is_some(),
            Condition::Absent => cur.is_none(),
            Condition::Version(v) => cur == Some(*v),
        };
        if !ok {
            return Err(i);
        }
    }
    for op in ops {
        match op {
            Op::Put { key, value, attrs, .. } => {
                let attrs = attrs.iter().cloned().collect();
                model.insert(key.clone(), M { value: value.clone(), attrs, version });
            }
            Op::Delete { key, .. } => {
                model.remove(key);
            }
        }
    }
    Ok(())
}

fn as_model(r: &Record) -> M {
    M {
        value: r.value().to_vec(),
        attrs: r.attrs().iter().map(|a| (a.name().to_string(), a.value().clone())).collect(),
        version: r.version(),
    }
}

/// Model records holding `attr`, ascending by `(attr, key)`.
fn model_index(model: &Model, attr: &str) -> Vec<(Scalar, Vec<u8>)> {
    let mut v: Vec<(Scalar, Vec<u8>)> =
        model.iter().filter_map(|(k, m)| m.attrs.get(attr).map(|s| (s.clone(), k.clone()))).collect();
    v.sort();
    v
}

fn keys(records: &[Arc<Record>]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.key().to_vec()).collect()
}

fn check_store(store: &Store, model: &Model, live: &[bool; 4]) -> Result<(), TestCaseError> {
    let t = store.table(T).map_err(|e| TestCaseError::fail(e.to_string()))?;
    t.check_all_invariants();
    let got: Model = t.records().map(|r| (r.key().to_vec(), as_model(r))).collect();
    prop_assert_eq!(&got, model);
    // The prefetching pass yields exactly the plain one, in the same order.
    let plain: Vec<Vec<u8>> = t.records().map(|r| r.key().to_vec()).collect();
    let ahead: Vec<Vec<u8>> = t.records_ahead().map(|r| r.key().to_vec()).collect();
    prop_assert_eq!(ahead, plain);
    for (k, m) in model {
        let r = store.get(T, k).ok().flatten().map(|r| as_model(r));
        prop_assert_eq!(r.as_ref(), Some(m));
    }
    prop_assert!(store.get(T, b"\xff-missing").ok().flatten().is_none());
    for (i, (name, attr, ordered)) in INDEXES.iter().enumerate() {
        if !live[i] {
            continue;
        }
        let want = model_index(model, attr);
        if !*ordered {
            prop_assert_eq!(t.heap_len(name), Some(want.len()));
        }
        let top: Vec<Vec<u8>> = want.iter().rev().take(3).map(|(_, k)| k.clone()).collect();
        prop_assert_eq!(keys(&store.top_k(T, name, 3).map_err(|e| TestCaseError::fail(e.to_string()))?), top);
    }
    Ok(())
}

fn new_store() -> Store {
    new_store_paged(Limits::default().page_bytes_max)
}

/// A store whose pages end once their records pass `page_bytes` bytes.
fn new_store_paged(page_bytes: usize) -> Store {
    let mut s = Store::new(Limits { page_bytes_max: page_bytes, ..Limits::default() });
    s.create_table(T).ok();
    s
}

/// A page holds at most `limit` records and goes past the store's byte bound by its last
/// record at most.
fn check_page(store: &Store, page: &Page, limit: usize) {
    let bytes: Vec<usize> = page.records.iter().map(|r| r.heap_bytes()).collect();
    let before_last: usize = bytes.iter().rev().skip(1).sum();
    assert!(page.records.len() <= limit, "{} records in a page of {limit}", page.records.len());
    assert!(
        bytes.len() <= 1 || before_last < store.limits().page_bytes_max,
        "a page of {bytes:?} bytes under a bound of {}",
        store.limits().page_bytes_max
    );
}

fn create_indexes(store: &mut Store, live: &mut [bool; 4]) {
    for (i, (name, attr, ordered)) in INDEXES.iter().enumerate() {
        if !live[i] {
            let def = if *ordered { IndexDef::ordered(*name, *attr) } else { IndexDef::max_heap(*name, *attr) };
            assert_eq!(store.create_index(T, def), Ok(()));
            live[i] = true;
        }
    }
}

/// Reads every page of a scan.
fn scan_all(store: &Store, mut req: Scan) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    loop {
        let page = store.scan(T, &req)?;
        check_page(store, &page, req.limit);
        out.extend(keys(&page.records));
        match page.next {
            Some(t) => req.token = Some(t),
            None => return Ok(out),
        }
    }
}

fn query_all(store: &Store, mut req: Query) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    loop {
        let page = store.query(T, &req)?;
        check_page(store, &page, req.limit);
        out.extend(keys(&page.records));
        match page.next {
            Some(t) => req.token = Some(t),
            None => return Ok(out),
        }
    }
}

fn bound<T: Clone>(b: &Bound<T>) -> Bound<T> {
    b.clone()
}

fn in_bounds<T: Ord>(v: &T, lo: &Bound<T>, hi: &Bound<T>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(b) => v >= b,
        Bound::Excluded(b) => v > b,
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(b) => v <= b,
        Bound::Excluded(b) => v < b,
    };
    above && below
}

fn key_bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![Just(Bound::Unbounded), key().prop_map(Bound::Included), key().prop_map(Bound::Excluded),]
}

fn scalar_bound() -> impl Strategy<Value = Bound<Scalar>> {
    let v = prop_oneof![(0i64..5).prop_map(Scalar::I64), Just(Scalar::F64(0.5))];
    prop_oneof![Just(Bound::Unbounded), v.clone().prop_map(Bound::Included), v.prop_map(Bound::Excluded)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every write path agrees with the model after every operation; batches with a failing
    /// condition change nothing; snapshots never change after they are taken; indexes
    /// created late and dropped midway stay consistent.
    #[test]
    fn engine_matches_model(actions in proptest::collection::vec(action(), 1..60)) {
        let mut store = new_store();
        let mut model = Model::new();
        let mut live = [false; 4];
        let mut snaps: Vec<(StoreSnapshot, Model)> = Vec::new();
        create_indexes(&mut store, &mut live);
        for action in actions {
            match action {
                Action::Batch(ops) => {
                    let version = store.version() + 1;
                    let before = store.version();
                    let mut m2 = model.clone();
                    match (store.apply(&ops), model_apply(&mut m2, &ops, version)) {
                        (Ok(r), Ok(())) => {
                            prop_assert_eq!(r.version, version);
                            model = m2;
                        }
                        (Err(StoreError::ConditionFailed { op, .. }), Err(i)) => {
                            prop_assert_eq!(op, i);
                            prop_assert_eq!(store.version(), before);
                        }
                        (got, want) => prop_assert!(false, "engine {:?} vs model {:?}", got, want),
                    }
                }
                Action::PopMax(i) => {
                    let (name, attr, _) = INDEXES[i];
                    let popped = store.pop_max(T, name);
                    if live[i] {
                        let want = model_index(&model, attr).pop().map(|(_, k)| k);
                        let got = popped.ok().flatten().map(|r| r.key().to_vec());
                        prop_assert_eq!(&got, &want);
                        if let Some(k) = want {
                            model.remove(&k);
                        }
                    } else {
                        let is_not_found = matches!(popped, Err(StoreError::IndexNotFound { .. }));
                        prop_assert!(is_not_found);
                    }
                }
                Action::Snapshot => snaps.push((store.snapshot(), model.clone())),
                Action::CreateIndexes => create_indexes(&mut store, &mut live),
                Action::DropIndex(i) => {
                    let r = store.drop_index(T, INDEXES[i].0);
                    prop_assert_eq!(r.is_ok(), live[i]);
                    live[i] = false;
                }
            }
            check_store(&store, &model, &live)?;
        }
        for (snap, m) in &snaps {
            let t = snap.table(T).ok_or_else(|| TestCaseError::fail("table missing"))?;
            t.check_invariants();
            let got: Model = t.records().map(|r| (r.key().to_vec(), as_model(r))).collect();
            prop_assert_eq!(&got, m);
            for k in m.keys() {
                prop_assert!(t.get(k).is_some());
            }
        }
    }

    /// Paged key scans, any bounds, direction and page size, return exactly the model's range.
    #[test]
    fn scans_page_like_the_model(ops in proptest::collection::vec(write_op(), 0..80),
                                 lo in key_bound(), hi in key_bound(), reverse: bool, limit in 1usize..6,
                                 page_bytes in 1usize..600) {
        let mut store = new_store_paged(page_bytes);
        let mut model = Model::new();
        for op in &ops {
            let op = op.clone().with_condition(Condition::None);
            store.apply(std::slice::from_ref(&op)).ok();
            model_apply(&mut model, &[op], store.version()).ok();
        }
        let req = Scan { start: bound(&lo), end: bound(&hi), reverse, limit, token: None };
        let mut want: Vec<Vec<u8>> = model.keys().filter(|k| in_bounds(*k, &lo, &hi)).cloned().collect();
        if reverse {
            want.reverse();
        }
        prop_assert_eq!(scan_all(&store, req).ok(), Some(want));
    }

    /// Paged index queries return exactly the sorted model's range, both directions;
    /// top-k agrees with the sorted model for both index kinds, and is refused exactly when
    /// its answer is larger than a page may be.
    #[test]
    fn queries_page_like_the_model(ops in proptest::collection::vec(write_op(), 0..80),
                                   lo in scalar_bound(), hi in scalar_bound(), reverse: bool,
                                   limit in 1usize..6, k in 0usize..8, late: bool, page_bytes in 1usize..600) {
        let mut store = new_store_paged(page_bytes);
        let mut live = [false; 4];
        if !late {
            create_indexes(&mut store, &mut live);
        }
        let mut model = Model::new();
        for op in &ops {
            let op = op.clone().with_condition(Condition::None);
            store.apply(std::slice::from_ref(&op)).ok();
            model_apply(&mut model, &[op], store.version()).ok();
        }
        if late {
            create_indexes(&mut store, &mut live);
        }
        let req = Query { index: "by_a".into(), start: bound(&lo), end: bound(&hi), reverse, limit, token: None };
        let mut want: Vec<Vec<u8>> = model_index(&model, "a").into_iter()
            .filter(|(v, _)| in_bounds(v, &lo, &hi)).map(|(_, k)| k).collect();
        if reverse {
            want.reverse();
        }
        prop_assert_eq!(query_all(&store, req).ok(), Some(want));
        for (name, attr, _) in INDEXES {
            let want: Vec<Vec<u8>> = model_index(&model, attr).into_iter().rev().take(k).map(|(_, k)| k).collect();
            // Refused when a page would have ended before its last record.
            let bytes: Vec<usize> = want.iter().filter_map(|k| store.get(T, k).ok().flatten()).map(|r| r.heap_bytes()).collect();
            prop_assert_eq!(bytes.len(), want.len());
            let fits = bytes.iter().rev().skip(1).sum::<usize>() < page_bytes || bytes.len() <= 1;
            match store.top_k(T, name, k) {
                Ok(r) => prop_assert!(fits && keys(&r) == want, "top-k {:?}, want {:?} (fits {})", keys(&r), want, fits),
                Err(StoreError::LimitExceeded { what: "top-k answer bytes", actual, limit }) => {
                    prop_assert!(!fits, "refused although it fits: {:?} bytes, bound {}", bytes, page_bytes);
                    prop_assert_eq!((actual, limit), (bytes.iter().sum::<usize>(), page_bytes));
                }
                Err(e) => prop_assert!(false, "top-k failed: {}", e),
            }
            let snap = store.snapshot();
            let t = snap.table(T).ok_or_else(|| TestCaseError::fail("table missing"))?;
            prop_assert_eq!(t.top_k(name, k).ok().map(|r| keys(&r)), Some(want));
        }
    }

    /// A key that exists, unchanged, for the whole paging is returned exactly once and in
    /// order, whatever other keys are written or deleted between pages.
    #[test]
    fn tokens_survive_concurrent_writes(stable in proptest::collection::btree_set(0u16..300, 1..60),
                                        churn in proptest::collection::vec((300u16..600, any::<bool>()), 0..200),
                                        limit in 1usize..7, reverse: bool, by_index: bool) {
        let mut store = new_store();
        store.create_index(T, IndexDef::ordered("by_a", "a")).ok();
        let k = |n: u16| n.to_be_bytes().to_vec();
        for n in &stable {
            store.put(T, &k(*n), b"v", &[("a", Scalar::I64(i64::from(*n % 7)))]).ok();
        }
        let mut churn = churn.into_iter();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut token = None;
        loop {
            let page = if by_index {
                let req = Query { index: "by_a".into(), start: Bound::Unbounded, end: Bound::Unbounded, reverse, limit, token };
                store.query(T, &req)
            } else {
                store.scan(T, &Scan { start: Bound::Unbounded, end: Bound::Unbounded, reverse, limit, token })
            };
            let page = page.map_err(|e| TestCaseError::fail(e.to_string()))?;
            seen.extend(keys(&page.records));
            // Writes between pages, interleaved with the stable keys in both orders.
            for (n, put) in churn.by_ref().take(5) {
                if put {
                    store.put(T, &k(n), b"w", &[("a", Scalar::I64(i64::from(n % 7)))]).ok();
                } else {
                    store.apply(&[Op::delete(T, k(n))]).ok();
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let stable_keys: Vec<Vec<u8>> = stable.iter().map(|n| k(*n)).collect();
        let mut got: Vec<Vec<u8>> = seen.iter().filter(|s| stable_keys.contains(s)).cloned().collect();
        let mut want = stable_keys.clone();
        if by_index {
            want.sort_by_key(|kk| (u16::from_be_bytes([kk[0], kk[1]]) % 7, kk.clone()));
        }
        if reverse {
            want.reverse();
        }
        prop_assert_eq!(&got, &want);
        got.dedup();
        prop_assert_eq!(got.len(), stable.len());
    }

    /// Bulk load from a sorted stream builds the same table, indexes included, as puts.
    #[test]
    fn bulk_load_equals_puts(ops in proptest::collection::vec(write_op(), 0..80)) {
        let mut store = new_store();
        let mut live = [false; 4];
        create_indexes(&mut store, &mut live);
        for op in &ops {
            store.apply(std::slice::from_ref(&op.clone().with_condition(Condition::None))).ok();
        }
        let snap = store.snapshot();
        let t = snap.table(T).ok_or_else(|| TestCaseError::fail("table missing"))?;
        let records: Vec<LoadRecord> = t.records().map(|r| LoadRecord {
            key: r.key().to_vec(),
            value: r.value().to_vec(),
            attrs: r.attrs().iter().map(|a| (a.name().to_string(), a.value().clone())).collect(),
            version: r.version(),
        }).collect();
        let defs: Vec<IndexDef> = t.index_defs().cloned().collect();
        let mut copy = Store::default();
        prop_assert_eq!(copy.load_table(T, &defs, records), Ok(()));
        prop_assert!(copy.version() >= t.records().map(|r| r.version()).max().unwrap_or(0));
        let model: Model = t.records().map(|r| (r.key().to_vec(), as_model(r))).collect();
        check_store(&copy, &model, &live)?;
        for (name, _, ordered) in INDEXES {
            if ordered {
                let q = Query::all(name, 1000);
                prop_assert_eq!(query_all(&copy, q.clone()).ok(), query_all(&store, q).ok());
            }
        }
    }
}

#[test]
fn bulk_load_rejects_unsorted_input() {
    let rec = |k: &[u8]| LoadRecord { key: k.to_vec(), value: vec![], attrs: vec![], version: 1 };
    let mut s = Store::default();
    assert_eq!(s.load_table(T, &[], vec![rec(b"b"), rec(b"a")]), Err(StoreError::UnsortedInput(1)));
    assert_eq!(s.load_table(T, &[], vec![rec(b"a"), rec(b"a")]), Err(StoreError::UnsortedInput(1)));
    assert!(s.table(T).is_err(), "a failed load must leave no table behind");
}

#[test]
fn bad_requests_change_nothing() {
    let mut s = Store::default();
    s.create_table(T).ok();
    s.put(T, b"k", b"v", &[]).ok();
    let before = s.version();
    let big = vec![0u8; s.limits().key_bytes_max + 1];
    type Case = (Vec<Op>, fn(&StoreError) -> bool);
    let cases: Vec<Case> = vec![
        (vec![Op::put(T, b"x".to_vec(), b"1".to_vec()), Op::put(T, big.clone(), b"1".to_vec())], |e| {
            matches!(e, StoreError::LimitExceeded { what: "key bytes", .. })
        }),
        (vec![Op::put(T, b"x".to_vec(), b"1".to_vec()), Op::put(T, Vec::new(), b"1".to_vec())], |e| {
            matches!(e, StoreError::Invalid { what: "key", .. })
        }),
        (vec![Op::put(T, b"x".to_vec(), b"1".to_vec()), Op::put("nope", b"y".to_vec(), b"1".to_vec())], |e| {
            matches!(e, StoreError::TableNotFound(_))
        }),
        (
            vec![
                Op::put(T, b"x".to_vec(), b"1".to_vec()),
                Op::put(T, b"k".to_vec(), b"2".to_vec()).with_condition(Condition::Absent),
            ],
            |e| matches!(e, StoreError::ConditionFailed { op: 1, .. }),
        ),
        (vec![Op::put(T, b"x".to_vec(), b"1".to_vec()).with_attr("", 1i64)], |e| {
            matches!(e, StoreError::Invalid { what: "attribute name", .. })
        }),
        (vec![Op::delete(T, b"k".to_vec()).with_condition(Condition::Version(before + 5))], |e| {
            matches!(e, StoreError::ConditionFailed { op: 0, .. })
        }),
    ];
    for (ops, expect) in cases {
        match s.apply(&ops) {
            Err(e) => assert!(expect(&e), "unexpected error {e}"),
            Ok(r) => panic!("bad batch accepted: {r:?}"),
        }
        assert_eq!(s.version(), before);
        assert_eq!(s.count(T), Ok(1));
        assert!(s.get(T, b"x").ok().flatten().is_none());
    }
    let too_many = vec![Op::put(T, b"x".to_vec(), b"1".to_vec()); s.limits().batch_ops_max + 1];
    assert!(matches!(s.apply(&too_many), Err(StoreError::LimitExceeded { what: "batch operations", .. })));
    assert!(matches!(s.apply_at(&[], before - 1), Err(StoreError::VersionNotIncreasing { .. })));
    assert!(matches!(s.scan(T, &Scan::all(0)), Err(StoreError::Invalid { .. })));
    s.put(T, b"z", b"v", &[]).ok();
    let token = s.scan(T, &Scan::all(1)).ok().and_then(|p| p.next);
    assert!(token.is_some(), "two records in pages of one leave a token");
    let misuse = Scan { start: Bound::Included(b"a".to_vec()), token, ..Scan::all(1) };
    assert!(matches!(s.scan(T, &misuse), Err(StoreError::InvalidToken(_))));
    let garbage = Scan { token: Some(crate::Token::from_bytes(b"\x01garbage")), ..Scan::all(1) };
    assert!(matches!(s.scan(T, &garbage), Err(StoreError::InvalidToken(_))));
    assert_eq!(s.create_table(T), Err(StoreError::TableExists(T.into())));
    s.create_index(T, IndexDef::max_heap("h", "a")).ok();
    assert!(matches!(s.query(T, &Query::all("h", 1)), Err(StoreError::WrongIndexKind { .. })));
    assert_eq!(s.count(T), Ok(2));
}
