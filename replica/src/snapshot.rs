//! The snapshot codec: a partition's engine snapshot and sessions as an Avro object
//! container stream (schema: `replica/schema/snapshot.avsc`, written once in the stream
//! header), and back.
//!
//! The stream is a table header followed by that table's records in key order, for each
//! table; then the client sessions; then an `End` item with the counts. Encoding walks an
//! O(1) engine snapshot, so writes go on meanwhile; it writes to any [`Write`], which the
//! transport turns into bounded gRPC chunks. Decoding reads any [`Read`] and bulk-builds
//! each table in O(n) as soon as its records are complete, so the receiver holds at most
//! one table's decoded records beside the engine it is building, and never the encoded
//! stream. A stream whose schema differs, that is cut short, or whose counts disagree is
//! rejected; nothing is installed from it.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use apache_avro::types::Value;
use apache_avro::{Reader, Schema, Writer};
use prost::Message;
use weft_proto::v1 as pb;
use weft_store::{IndexDef, IndexKind, Limits, LoadRecord, Scalar, Store, StoreError, StoreSnapshot};

use crate::sessions::{ClientSession, Sessions};
use crate::state_machine::Progress;

/// The snapshot stream's Avro schema text.
pub const SCHEMA_TEXT: &str = include_str!("../schema/snapshot.avsc");

#[allow(clippy::expect_used)]
static SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(SCHEMA_TEXT).expect("the checked-in snapshot schema parses (tested)"));

/// Why a snapshot stream could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The Avro layer failed: bad header, bad block, truncated data, or a write error.
    #[error("snapshot avro stream: {0}")]
    Avro(String),
    /// The stream decoded but does not describe a valid snapshot.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// Writing the stream failed (the receiver went away).
    #[error("snapshot stream: {0}")]
    Io(#[from] std::io::Error),
    /// The engine refused the data (limits, ordering).
    #[error("snapshot rejected by the engine: {0}")]
    Store(#[from] StoreError),
}

fn avro(e: apache_avro::Error) -> SnapshotError {
    SnapshotError::Avro(e.to_string())
}

fn malformed(what: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed(what.into())
}

/// Counts of what a stream carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tables.
    pub tables: u64,
    /// Records.
    pub records: u64,
    /// Client sessions.
    pub sessions: u64,
}

fn item(branch: u32, fields: Vec<(&str, Value)>) -> Value {
    let inner = Value::Record(fields.into_iter().map(|(n, v)| (n.to_string(), v)).collect());
    Value::Record(vec![("kind".to_string(), Value::Union(branch, Box::new(inner)))])
}

fn scalar_value(s: &Scalar) -> Value {
    match s {
        Scalar::Bool(b) => Value::Union(0, Box::new(Value::Boolean(*b))),
        Scalar::I64(i) => Value::Union(1, Box::new(Value::Long(*i))),
        Scalar::F64(f) => Value::Union(2, Box::new(Value::Double(*f))),
        Scalar::String(s) => Value::Union(3, Box::new(Value::String(s.to_string()))),
        Scalar::Bytes(b) => Value::Union(4, Box::new(Value::Bytes(b.to_vec()))),
    }
}

fn as_i64(v: u64) -> Value {
    Value::Long(v as i64)
}

/// Encodes a snapshot into `out` as one Avro object container stream.
pub fn encode<W: Write>(store: &StoreSnapshot, sessions: &Sessions, out: W) -> Result<Counts, SnapshotError> {
    let mut w = Writer::new(&SCHEMA, out);
    let mut counts = Counts::default();
    for table in store.tables() {
        let indexes = table
            .index_defs()
            .map(|d| {
                let kind = match d.kind {
                    IndexKind::Ordered => Value::Enum(0, "ORDERED".into()),
                    IndexKind::MaxHeap => Value::Enum(1, "MAX_HEAP".into()),
                };
                Value::Record(vec![
                    ("name".into(), Value::String(d.name.clone())),
                    ("attr".into(), Value::String(d.attr.clone())),
                    ("kind".into(), kind),
                ])
            })
            .collect();
        w.append(item(0, vec![("name", Value::String(table.name().into())), ("indexes", Value::Array(indexes))]))
            .map_err(avro)?;
        counts.tables += 1;
        for r in table.records() {
            let attrs = r
                .attrs()
                .iter()
                .map(|a| {
                    Value::Record(vec![
                        ("name".into(), Value::String(a.name().into())),
                        ("value".into(), scalar_value(a.value())),
                    ])
                })
                .collect();
            w.append(item(
                1,
                vec![
                    ("key", Value::Bytes(r.key().to_vec())),
                    ("value", Value::Bytes(r.value().to_vec())),
                    ("version", as_i64(r.version())),
                    ("attrs", Value::Array(attrs)),
                ],
            ))
            .map_err(avro)?;
            counts.records += 1;
        }
    }
    for (client, s) in sessions.iter() {
        let results = s
            .results
            .iter()
            .map(|(seq, r)| {
                Value::Record(vec![("seq".into(), as_i64(*seq)), ("result".into(), Value::Bytes(r.encode_to_vec()))])
            })
            .collect();
        w.append(item(
            2,
            vec![
                ("client", as_i64(*client)),
                ("last_index", as_i64(s.last_index)),
                ("acked_below", as_i64(s.acked_below)),
                ("results", Value::Array(results)),
            ],
        ))
        .map_err(avro)?;
        counts.sessions += 1;
    }
    w.append(item(
        3,
        vec![
            ("tables", as_i64(counts.tables)),
            ("records", as_i64(counts.records)),
            ("sessions", as_i64(counts.sessions)),
        ],
    ))
    .map_err(avro)?;
    w.flush().map_err(avro)?;
    w.into_inner().map_err(avro)?;
    Ok(counts)
}

struct Fields(Vec<(String, Value)>);

impl Fields {
    fn take(&mut self, i: usize, name: &str) -> Result<Value, SnapshotError> {
        match self.0.get_mut(i) {
            Some((n, v)) if n == name => Ok(std::mem::replace(v, Value::Null)),
            _ => Err(malformed(format!("field {name} missing"))),
        }
    }
    fn long(&mut self, i: usize, name: &str) -> Result<u64, SnapshotError> {
        match self.take(i, name)? {
            Value::Long(v) => Ok(v as u64),
            _ => Err(malformed(format!("field {name} is not a long"))),
        }
    }
    fn string(&mut self, i: usize, name: &str) -> Result<String, SnapshotError> {
        match self.take(i, name)? {
            Value::String(v) => Ok(v),
            _ => Err(malformed(format!("field {name} is not a string"))),
        }
    }
    fn bytes(&mut self, i: usize, name: &str) -> Result<Vec<u8>, SnapshotError> {
        match self.take(i, name)? {
            Value::Bytes(v) => Ok(v),
            _ => Err(malformed(format!("field {name} is not bytes"))),
        }
    }
    fn array(&mut self, i: usize, name: &str) -> Result<Vec<Value>, SnapshotError> {
        match self.take(i, name)? {
            Value::Array(v) => Ok(v),
            _ => Err(malformed(format!("field {name} is not an array"))),
        }
    }
}

fn record(v: Value, what: &str) -> Result<Fields, SnapshotError> {
    match v {
        Value::Record(f) => Ok(Fields(f)),
        _ => Err(malformed(format!("{what} is not a record"))),
    }
}

fn scalar_from(v: Value) -> Result<Scalar, SnapshotError> {
    let Value::Union(_, v) = v else { return Err(malformed("attribute value is not a union")) };
    Ok(match *v {
        Value::Boolean(b) => Scalar::Bool(b),
        Value::Long(i) => Scalar::I64(i),
        Value::Double(f) => Scalar::F64(f),
        Value::String(s) => Scalar::String(s.into()),
        Value::Bytes(b) => Scalar::Bytes(b.into()),
        _ => return Err(malformed("attribute value of an unknown type")),
    })
}

struct Pending {
    name: String,
    defs: Vec<IndexDef>,
    records: Vec<LoadRecord>,
}

fn finish(store: &mut Store, pending: Option<Pending>) -> Result<(), SnapshotError> {
    if let Some(p) = pending {
        store.load_table(&p.name, &p.defs, p.records)?;
    }
    Ok(())
}

/// Decodes one snapshot stream into a new engine (with `limits`) and sessions, counting
/// progress as it goes. Fails, building nothing usable, on any defect.
pub fn decode<R: Read>(input: R, limits: Limits, progress: &Progress) -> Result<(Store, Sessions), SnapshotError> {
    // apache-avro 0.21 panics (an `unwrap` in schema name parsing) on some corrupt
    // headers instead of returning an error; a peer's bytes must never take the thread
    // down, so that panic becomes an ordinary decoding error here.
    let reader = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Reader::new(input)))
        .map_err(|_| malformed("the stream header does not parse (corrupt schema)"))?
        .map_err(avro)?;
    if reader.writer_schema().canonical_form() != SCHEMA.canonical_form() {
        return Err(malformed("the stream's schema is not weft's snapshot schema"));
    }
    let mut store = Store::new(limits);
    let mut sessions = Sessions::default();
    let mut counts = Counts::default();
    let mut pending: Option<Pending> = None;
    let mut end = None;
    for v in reader {
        let v = v.map_err(avro)?;
        if end.is_some() {
            return Err(malformed("items after the end marker"));
        }
        let mut outer = record(v, "item")?;
        let Value::Union(branch, inner) = outer.take(0, "kind")? else {
            return Err(malformed("item kind is not a union"));
        };
        let mut f = record(*inner, "item body")?;
        match branch {
            0 => {
                finish(&mut store, pending.take())?;
                let name = f.string(0, "name")?;
                let mut defs = Vec::new();
                for d in f.array(1, "indexes")? {
                    let mut d = record(d, "index")?;
                    let (n, a) = (d.string(0, "name")?, d.string(1, "attr")?);
                    defs.push(match d.take(2, "kind")? {
                        Value::Enum(0, _) => IndexDef::ordered(n, a),
                        Value::Enum(1, _) => IndexDef::max_heap(n, a),
                        _ => return Err(malformed("unknown index kind")),
                    });
                }
                pending = Some(Pending { name, defs, records: Vec::new() });
                counts.tables += 1;
            }
            1 => {
                let p = pending.as_mut().ok_or_else(|| malformed("a record before any table"))?;
                let attrs = f
                    .array(3, "attrs")?
                    .into_iter()
                    .map(|a| {
                        let mut a = record(a, "attr")?;
                        Ok((a.string(0, "name")?, scalar_from(a.take(1, "value")?)?))
                    })
                    .collect::<Result<_, SnapshotError>>()?;
                p.records.push(LoadRecord {
                    key: f.bytes(0, "key")?,
                    value: f.bytes(1, "value")?,
                    version: f.long(2, "version")?,
                    attrs,
                });
                counts.records += 1;
                if counts.records.is_multiple_of(4096) {
                    progress.records.store(counts.records, Ordering::Relaxed);
                }
            }
            2 => {
                finish(&mut store, pending.take())?;
                let client = f.long(0, "client")?;
                let last_index = f.long(1, "last_index")?;
                let acked_below = f.long(2, "acked_below")?;
                let mut s = ClientSession { last_index, acked_below, results: Default::default() };
                for r in f.array(3, "results")? {
                    let mut r = record(r, "session result")?;
                    let seq = r.long(0, "seq")?;
                    let result = pb::CommandResult::decode(r.bytes(1, "result")?.as_slice())
                        .map_err(|e| malformed(format!("session result: {e}")))?;
                    s.results.push_back((seq, Arc::new(result)));
                }
                sessions.insert(client, s);
                counts.sessions += 1;
            }
            3 => {
                finish(&mut store, pending.take())?;
                end = Some(Counts {
                    tables: f.long(0, "tables")?,
                    records: f.long(1, "records")?,
                    sessions: f.long(2, "sessions")?,
                });
            }
            other => return Err(malformed(format!("unknown item kind {other}"))),
        }
    }
    progress.records.store(counts.records, Ordering::Relaxed);
    match end {
        None => Err(malformed("the stream ended without its end marker (truncated)")),
        Some(e) if e != counts => Err(malformed(format!("end marker says {e:?}, stream carried {counts:?}"))),
        Some(_) => Ok((store, sessions)),
    }
}

/// Builds a live engine from a frozen one (O(n) per table): used when a snapshot taken
/// locally must be installed locally.
pub fn thaw(snapshot: &StoreSnapshot, limits: Limits) -> Result<Store, StoreError> {
    let mut store = Store::new(limits);
    for t in snapshot.tables() {
        let defs: Vec<IndexDef> = t.index_defs().cloned().collect();
        let records = t
            .records()
            .map(|r| LoadRecord {
                key: r.key().to_vec(),
                value: r.value().to_vec(),
                attrs: r.attrs().iter().map(|a| (a.name().to_string(), a.value().clone())).collect(),
                version: r.version(),
            })
            .collect();
        store.load_table(t.name(), &defs, records)?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use weft_store::Op;

    type Row = (Vec<u8>, Vec<u8>, u64, Vec<(String, Scalar)>);

    fn contents(s: &StoreSnapshot) -> Vec<(String, Vec<IndexDef>, Vec<Row>)> {
        s.tables()
            .iter()
            .map(|t| {
                (
                    t.name().to_string(),
                    t.index_defs().cloned().collect(),
                    t.records()
                        .map(|r| {
                            (
                                r.key().to_vec(),
                                r.value().to_vec(),
                                r.version(),
                                r.attrs().iter().map(|a| (a.name().to_string(), a.value().clone())).collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    }

    fn sample(puts: &[(u8, Vec<u8>, i64)]) -> (Store, Sessions) {
        let mut store = Store::default();
        store.create_table("a").unwrap();
        store.create_table("b").unwrap();
        store.create_index("a", IndexDef::ordered("by_n", "n")).unwrap();
        store.create_index("a", IndexDef::max_heap("top", "n")).unwrap();
        for (k, v, n) in puts {
            let op = Op::put(if k % 2 == 0 { "a" } else { "b" }, vec![*k], v.clone())
                .with_attr("n", Scalar::I64(*n))
                .with_attr("s", Scalar::String("x".into()));
            store.apply(&[op]).unwrap();
        }
        let mut sessions = Sessions::default();
        let r = Arc::new(pb::CommandResult { version: 3, outcome: None });
        sessions.record(&pb::Session { client_id: 9, seq: 4, acked_below: 2 }, 3, r);
        (store, sessions)
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(puts in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40), any::<i64>()), 0..200)) {
            let (store, sessions) = sample(&puts);
            let snap = store.snapshot();
            let mut bytes = Vec::new();
            let counts = encode(&snap, &sessions, &mut bytes).unwrap();
            prop_assert_eq!(counts.tables, 2);
            let progress = Progress::default();
            let (back, back_sessions) = decode(bytes.as_slice(), Limits::default(), &progress).unwrap();
            prop_assert_eq!(contents(&back.snapshot()), contents(&snap));
            prop_assert_eq!(back_sessions, sessions);
            prop_assert_eq!(progress.records.load(Ordering::Relaxed), counts.records);
            // Indexes were rebuilt, not just declared.
            prop_assert_eq!(back.top_k("a", "top", 3).unwrap().len(), store.top_k("a", "top", 3).unwrap().len());
        }

        #[test]
        fn every_truncation_is_rejected(cut in 0usize..10_000) {
            let puts: Vec<_> = (0..100u8).map(|k| (k, vec![k; 30], k as i64)).collect();
            let (store, sessions) = sample(&puts);
            let mut bytes = Vec::new();
            encode(&store.snapshot(), &sessions, &mut bytes).unwrap();
            let cut = cut % bytes.len();
            prop_assert!(decode(&bytes[..cut], Limits::default(), &Progress::default()).is_err());
        }

        #[test]
        fn corruption_never_panics(at in 0usize..10_000, byte in any::<u8>()) {
            let puts: Vec<_> = (0..100u8).map(|k| (k, vec![k; 30], k as i64)).collect();
            let (store, sessions) = sample(&puts);
            let mut bytes = Vec::new();
            encode(&store.snapshot(), &sessions, &mut bytes).unwrap();
            let at = at % bytes.len();
            bytes[at] ^= byte | 1;
            // Either rejected or (a flip inside a value) decoded into some valid store:
            // the transport's checksums are what catch silent value corruption.
            let _ = decode(bytes.as_slice(), Limits::default(), &Progress::default());
        }
    }

    #[test]
    fn another_schema_is_rejected() {
        let other = Schema::parse_str(r#"{"type":"record","name":"X","fields":[{"name":"a","type":"long"}]}"#).unwrap();
        let mut w = Writer::new(&other, Vec::new());
        w.append(Value::Record(vec![("a".into(), Value::Long(1))])).unwrap();
        let bytes = w.into_inner().unwrap();
        let err = decode(bytes.as_slice(), Limits::default(), &Progress::default()).unwrap_err();
        assert!(err.to_string().contains("schema"), "{err}");
    }

    #[test]
    fn thaw_rebuilds_the_engine() {
        let puts: Vec<_> = (0..50u8).map(|k| (k, vec![k; 3], k as i64)).collect();
        let (store, _) = sample(&puts);
        let back = thaw(&store.snapshot(), Limits::default()).unwrap();
        assert_eq!(contents(&back.snapshot()), contents(&store.snapshot()));
        assert_eq!(back.get("a", &[4]).unwrap().map(|r| r.value().to_vec()), Some(vec![4; 3]));
    }
}
