//! The snapshot codec: a partition's engine snapshot and sessions as an Avro object
//! container stream (schema: `replica/schema/snapshot.avsc`, written once in the stream
//! header), and back.
//!
//! The stream is a table header followed by that table's records in key order, for each
//! table; then the client sessions; then an `End` item with the counts. Encoding walks an
//! O(1) engine snapshot, so writes go on meanwhile; it writes to any [`Write`], which the
//! transport turns into bounded gRPC chunks. Decoding reads any [`std::io::Read`] and bulk-builds
//! each table in O(n) as soon as its records are complete, so the receiver holds at most
//! one table's decoded records beside the engine it is building, and never the encoded
//! stream. A stream whose schema differs, that is cut short, or whose counts disagree is
//! rejected; nothing is installed from it.
//!
//! The Avro layer is `serde_avro_fast`: items are serialized from serde types that borrow
//! from the engine snapshot and deserialized straight into owned serde types, with no
//! intermediate `Value` tree on either side (apache-avro's `Value` decoding, which
//! allocated every field name, was the long pole of a replica rebuild). The container
//! format, the schema and so the bytes on the wire and on disk are standard Avro.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use prost::Message;
use serde_avro_fast::Schema;
use serde_avro_fast::object_container_file_encoding::{Reader, Writer, WriterBuilder};
use serde_avro_fast::ser::SerializerConfig;
use weft_proto::v1 as pb;
use weft_store::{IndexDef, IndexKind, Limits, LoadRecord, Scalar, Store, StoreError, StoreSnapshot, TableLoader};

use crate::error::Error;
use crate::sessions::{ClientSession, Sessions};

/// Snapshot transfer progress, observable while a stream is received.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the current or last snapshot stream received.
    pub bytes: AtomicU64,
    /// Records of it decoded.
    pub records: AtomicU64,
    /// Snapshots installed since the replica opened.
    pub installed: AtomicU64,
}

/// The snapshot stream's Avro schema text.
pub const SCHEMA_TEXT: &str = include_str!("../schema/snapshot.avsc");

#[allow(clippy::expect_used)]
static SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| SCHEMA_TEXT.parse().expect("the checked-in snapshot schema parses (tested)"));

/// Uncompressed bytes per Avro container block (each block decodes independently).
const BLOCK_BYTES: u32 = 64 * 1024;

fn avro(e: impl std::fmt::Display) -> Error {
    Error::SnapshotAvro(e.to_string())
}

fn malformed(what: impl Into<String>) -> Error {
    Error::SnapshotMalformed(what.into())
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

/// The stream's items as serde types borrowing from the engine snapshot, written by the
/// schema-aware serializer straight into the container block (it checks each field against
/// the schema as it writes). A union's branch is chosen by the variant's name: a record's
/// name, or the primitive type's (`Boolean`, `Long`, ...).
mod ser {
    use serde::{Serialize, Serializer};

    /// Avro `bytes` from a borrowed slice.
    pub struct Bytes<'a>(pub &'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    #[derive(Serialize)]
    pub struct Item<'a> {
        pub kind: Kind<'a>,
    }

    #[derive(Serialize)]
    pub enum Kind<'a> {
        Table(Table<'a>),
        Rec(Rec<'a>),
        Session(Session<'a>),
        End(End),
    }

    #[derive(Serialize)]
    pub struct Table<'a> {
        pub name: &'a str,
        pub indexes: Vec<Index<'a>>,
    }

    #[derive(Serialize)]
    pub struct Index<'a> {
        pub name: &'a str,
        pub attr: &'a str,
        pub kind: IndexKind,
    }

    #[derive(Serialize)]
    pub enum IndexKind {
        #[serde(rename = "ORDERED")]
        Ordered,
        #[serde(rename = "MAX_HEAP")]
        MaxHeap,
    }

    #[derive(Serialize)]
    pub struct Rec<'a> {
        pub key: Bytes<'a>,
        pub value: Bytes<'a>,
        pub version: i64,
        pub attrs: Vec<Attr<'a>>,
    }

    #[derive(Serialize)]
    pub struct Attr<'a> {
        pub name: &'a str,
        pub value: Scalar<'a>,
    }

    #[derive(Serialize)]
    pub enum Scalar<'a> {
        Boolean(bool),
        Long(i64),
        Double(f64),
        String(&'a str),
        Bytes(Bytes<'a>),
    }

    #[derive(Serialize)]
    pub struct Session<'a> {
        pub client: i64,
        pub last_index: i64,
        pub acked_below: i64,
        pub results: Vec<SessionResult<'a>>,
    }

    #[derive(Serialize)]
    pub struct SessionResult<'a> {
        pub seq: i64,
        pub result: Bytes<'a>,
    }

    #[derive(Serialize)]
    pub struct End {
        pub tables: i64,
        pub records: i64,
        pub sessions: i64,
    }
}

fn scalar_ser(s: &Scalar) -> ser::Scalar<'_> {
    match s {
        Scalar::Bool(b) => ser::Scalar::Boolean(*b),
        Scalar::I64(i) => ser::Scalar::Long(*i),
        Scalar::F64(f) => ser::Scalar::Double(*f),
        Scalar::String(s) => ser::Scalar::String(s),
        Scalar::Bytes(b) => ser::Scalar::Bytes(ser::Bytes(b)),
    }
}

fn append<W: Write>(w: &mut Writer<'_, '_, W>, kind: ser::Kind<'_>) -> Result<(), Error> {
    w.serialize(ser::Item { kind }).map_err(avro)
}

/// Encodes a snapshot into `out` as one Avro object container stream.
pub fn encode<W: Write>(store: &StoreSnapshot, sessions: &Sessions, out: W) -> Result<Counts, Error> {
    let mut config = SerializerConfig::new(&SCHEMA);
    let mut w = WriterBuilder::new(&mut config).approx_block_size(BLOCK_BYTES).build(out).map_err(avro)?;
    let mut counts = Counts::default();
    for table in store.tables() {
        let indexes = table
            .index_defs()
            .map(|d| ser::Index {
                name: &d.name,
                attr: &d.attr,
                kind: match d.kind {
                    IndexKind::Ordered => ser::IndexKind::Ordered,
                    IndexKind::MaxHeap => ser::IndexKind::MaxHeap,
                },
            })
            .collect();
        append(&mut w, ser::Kind::Table(ser::Table { name: table.name(), indexes }))?;
        counts.tables += 1;
        for r in table.records_ahead() {
            let attrs = r.attrs().iter().map(|a| ser::Attr { name: a.name(), value: scalar_ser(a.value()) }).collect();
            let rec =
                ser::Rec { key: ser::Bytes(r.key()), value: ser::Bytes(r.value()), version: r.version() as i64, attrs };
            append(&mut w, ser::Kind::Rec(rec))?;
            counts.records += 1;
        }
    }
    for (client, s) in sessions.iter() {
        let encoded: Vec<(u64, Vec<u8>)> = s.results.iter().map(|(seq, r)| (*seq, r.encode_to_vec())).collect();
        let results =
            encoded.iter().map(|(seq, r)| ser::SessionResult { seq: *seq as i64, result: ser::Bytes(r) }).collect();
        let session = ser::Session {
            client: *client as i64,
            last_index: s.last_index as i64,
            acked_below: s.acked_below as i64,
            results,
        };
        append(&mut w, ser::Kind::Session(session))?;
        counts.sessions += 1;
    }
    let end =
        ser::End { tables: counts.tables as i64, records: counts.records as i64, sessions: counts.sessions as i64 };
    append(&mut w, ser::Kind::End(end))?;
    let mut out = w.into_inner().map_err(avro)?;
    out.flush()?;
    Ok(counts)
}

/// The stream's items as owned serde types, deserialized straight from the container
/// blocks. The deserializer names a union's branch by the record's full name (or the
/// primitive type's), so the variants carry those names.
mod de {
    use serde::Deserialize;
    use serde::de::{Deserializer, Visitor};

    /// Avro `bytes` into an owned buffer (serde would otherwise ask for a sequence).
    pub struct Buf(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("avro bytes")
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    #[derive(Deserialize)]
    pub struct Item {
        pub kind: Kind,
    }

    #[derive(Deserialize)]
    pub enum Kind {
        #[serde(rename = "weft.v1.snapshot.Table")]
        Table(Table),
        #[serde(rename = "weft.v1.snapshot.Rec")]
        Rec(Rec),
        #[serde(rename = "weft.v1.snapshot.Session")]
        Session(Session),
        #[serde(rename = "weft.v1.snapshot.End")]
        End(End),
    }

    #[derive(Deserialize)]
    pub struct Table {
        pub name: String,
        pub indexes: Vec<Index>,
    }

    #[derive(Deserialize)]
    pub struct Index {
        pub name: String,
        pub attr: String,
        pub kind: IndexKind,
    }

    #[derive(Deserialize)]
    pub enum IndexKind {
        #[serde(rename = "ORDERED")]
        Ordered,
        #[serde(rename = "MAX_HEAP")]
        MaxHeap,
    }

    #[derive(Deserialize)]
    pub struct Rec {
        pub key: Buf,
        pub value: Buf,
        pub version: i64,
        pub attrs: Vec<Attr>,
    }

    #[derive(Deserialize)]
    pub struct Attr {
        pub name: String,
        pub value: Scalar,
    }

    #[derive(Deserialize)]
    pub enum Scalar {
        Boolean(bool),
        Long(i64),
        Double(f64),
        String(String),
        Bytes(Buf),
    }

    #[derive(Deserialize)]
    pub struct Session {
        pub client: i64,
        pub last_index: i64,
        pub acked_below: i64,
        pub results: Vec<SessionResult>,
    }

    #[derive(Deserialize)]
    pub struct SessionResult {
        pub seq: i64,
        pub result: Buf,
    }

    #[derive(Deserialize)]
    pub struct End {
        pub tables: i64,
        pub records: i64,
        pub sessions: i64,
    }
}

fn scalar_from(v: de::Scalar) -> Scalar {
    match v {
        de::Scalar::Boolean(b) => Scalar::Bool(b),
        de::Scalar::Long(i) => Scalar::I64(i),
        de::Scalar::Double(f) => Scalar::F64(f),
        de::Scalar::String(s) => Scalar::String(s.into()),
        de::Scalar::Bytes(b) => Scalar::Bytes(b.0.into()),
    }
}

/// Records per batch handed from the decoding thread to the building one.
const BUILD_BATCH: usize = 1024;

/// Batches queued between the two threads.
const BUILD_BATCHES_IN_FLIGHT: usize = 8;

/// What the decoding thread hands the building thread, in stream order.
enum ToBuilder {
    /// A table starts (the previous one, if any, is complete).
    Table(String, Vec<IndexDef>),
    /// The next records of the current table, in key order.
    Records(Vec<LoadRecord>),
}

/// The building thread: owns the new engine and builds each table's records as they come.
fn build(limits: Limits, rx: std::sync::mpsc::Receiver<ToBuilder>) -> Result<Store, Error> {
    let mut store = Store::new(limits);
    let mut current: Option<TableLoader> = None;
    for msg in rx {
        match msg {
            ToBuilder::Table(name, defs) => {
                if let Some(done) = current.take() {
                    store.finish_table(done)?;
                }
                current = Some(store.table_loader(&name, &defs)?);
            }
            ToBuilder::Records(records) => {
                let loader = current.as_mut().ok_or_else(|| malformed("a record before any table"))?;
                for r in &records {
                    loader.push(r)?;
                }
            }
        }
    }
    if let Some(done) = current.take() {
        store.finish_table(done)?;
    }
    Ok(store)
}

/// Decodes one snapshot stream into a new engine (with `limits`) and sessions, counting
/// progress as it goes. Fails, building nothing usable, on any defect.
///
/// Two threads share the work: this one decodes Avro items (container blocks decode
/// independently of what is done with them) and a scoped builder thread turns records
/// into engine records and tables, so decoding the next block overlaps building the last.
/// Between them sit at most `BUILD_BATCHES_IN_FLIGHT` batches of records, never a whole
/// table of decoded records.
pub fn decode<R: BufRead>(input: R, limits: Limits, progress: &Progress) -> Result<(Store, Sessions), Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel(BUILD_BATCHES_IN_FLIGHT);
    // No single field of a valid stream is longer than a batch may be: a corrupt length
    // is an error, not an allocation.
    let field_bytes_max = limits.batch_bytes_max.max(limits.value_bytes_max);
    std::thread::scope(|scope| {
        let builder = std::thread::Builder::new()
            .name("snapshot-build".into())
            .spawn_scoped(scope, move || build(limits, rx))
            .map_err(Error::SnapshotIo)?;
        let read = read_items(input, field_bytes_max, tx, progress);
        let built = builder.join().map_err(|_| malformed("the snapshot builder thread panicked"))?;
        // A builder that stopped (limits, key order) closed the channel under the reader:
        // its error is the cause.
        let store = built?;
        Ok((store, read?))
    })
}

/// Reads every item of the stream, handing tables and records to the builder; returns the
/// sessions once the end marker's counts have been checked.
fn read_items<R: BufRead>(
    input: R,
    field_bytes_max: usize,
    tx: std::sync::mpsc::SyncSender<ToBuilder>,
    progress: &Progress,
) -> Result<Sessions, Error> {
    let send = |msg: ToBuilder| tx.send(msg).map_err(|_| malformed("the snapshot builder stopped"));
    let flush = |batch: &mut Vec<LoadRecord>| {
        if batch.is_empty() {
            return Ok(());
        }
        send(ToBuilder::Records(std::mem::replace(batch, Vec::with_capacity(BUILD_BATCH))))
    };
    let mut input = serde_avro_fast::de::read::ReaderRead::new(input);
    input.max_alloc_size = field_bytes_max;
    // A peer's bytes must never take the thread down: should the header parser panic on
    // some corrupt schema text, that becomes an ordinary decoding error here.
    let mut reader = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Reader::new(input)))
        .map_err(|_| malformed("the stream header does not parse (corrupt schema)"))?
        .map_err(avro)?;
    // The fingerprint is of the schema's parsing canonical form.
    if reader.schema().rabin_fingerprint() != SCHEMA.rabin_fingerprint() {
        return Err(malformed("the stream's schema is not weft's snapshot schema"));
    }
    let mut sessions = Sessions::default();
    let mut counts = Counts::default();
    let mut batch: Vec<LoadRecord> = Vec::with_capacity(BUILD_BATCH);
    let mut in_table = false;
    let mut end = None;
    // The reader reports an I/O error once and then pretends the stream ended; the end
    // marker's absence catches that as a truncation.
    while let Some(item) = reader.deserialize_next::<de::Item>().map_err(avro)? {
        if end.is_some() {
            return Err(malformed("items after the end marker"));
        }
        match item.kind {
            de::Kind::Table(t) => {
                flush(&mut batch)?;
                let defs = t
                    .indexes
                    .into_iter()
                    .map(|d| match d.kind {
                        de::IndexKind::Ordered => IndexDef::ordered(d.name, d.attr),
                        de::IndexKind::MaxHeap => IndexDef::max_heap(d.name, d.attr),
                    })
                    .collect();
                send(ToBuilder::Table(t.name, defs))?;
                in_table = true;
                counts.tables += 1;
            }
            de::Kind::Rec(r) => {
                if !in_table {
                    return Err(malformed("a record before any table"));
                }
                let attrs = r.attrs.into_iter().map(|a| (a.name, scalar_from(a.value))).collect();
                batch.push(LoadRecord { key: r.key.0, value: r.value.0, version: r.version as u64, attrs });
                if batch.len() == BUILD_BATCH {
                    flush(&mut batch)?;
                }
                counts.records += 1;
                if counts.records.is_multiple_of(4096) {
                    progress.records.store(counts.records, Ordering::Relaxed);
                }
            }
            de::Kind::Session(s) => {
                flush(&mut batch)?;
                in_table = false;
                let mut session = ClientSession {
                    last_index: s.last_index as u64,
                    acked_below: s.acked_below as u64,
                    results: Default::default(),
                };
                for r in s.results {
                    let result = pb::CommandResult::decode(r.result.0.as_slice())
                        .map_err(|e| malformed(format!("session result: {e}")))?;
                    session.results.push_back((r.seq as u64, Arc::new(result)));
                }
                sessions.insert(s.client as u64, session);
                counts.sessions += 1;
            }
            de::Kind::End(e) => {
                flush(&mut batch)?;
                in_table = false;
                end = Some(Counts { tables: e.tables as u64, records: e.records as u64, sessions: e.sessions as u64 });
            }
        }
    }
    flush(&mut batch)?;
    progress.records.store(counts.records, Ordering::Relaxed);
    match end {
        None => Err(malformed("the stream ended without its end marker (truncated)")),
        Some(e) if e != counts => Err(malformed(format!("end marker says {e:?}, stream carried {counts:?}"))),
        Some(_) => Ok(sessions),
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
                .with_attr("s", Scalar::String("x".into()))
                .with_attr("b", Scalar::Bool(n % 2 == 0))
                .with_attr("f", Scalar::F64(*n as f64 / 3.0))
                .with_attr("y", Scalar::Bytes(v.clone().into()));
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
        let other: Schema = r#"{"type":"record","name":"X","fields":[{"name":"a","type":"long"}]}"#.parse().unwrap();
        #[derive(serde::Serialize)]
        struct X {
            a: i64,
        }
        let mut config = SerializerConfig::new(&other);
        let mut w = WriterBuilder::new(&mut config).build(Vec::new()).unwrap();
        w.serialize(X { a: 1 }).unwrap();
        let bytes = w.into_inner().unwrap();
        let err = decode(bytes.as_slice(), Limits::default(), &Progress::default()).unwrap_err();
        assert!(err.to_string().contains("schema"), "{err}");
    }

    #[test]
    fn the_same_schema_written_differently_is_accepted() {
        // The check compares parsing canonical forms: docs and whitespace do not matter.
        let plain: Schema = SCHEMA_TEXT.replace("\"doc\"", "\"x-doc\"").parse().unwrap();
        assert_eq!(plain.rabin_fingerprint(), SCHEMA.rabin_fingerprint());
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
