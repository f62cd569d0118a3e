//! Typed tables over the engine: a [`Table`] names a table of a [`Store`] and gives its
//! records Rust types, a key type `K` (see [`Key`]) and a value type `V` kept as JSON
//! (`serde_json`), with the attributes that secondary indexes see taken from each value
//! by a function of yours.
//!
//! A typed table holds no data: the store does. Reads decode, writes encode, and a write
//! can join an atomic batch ([`Table::put_op`], [`Table::delete_op`] with
//! [`Store::apply`]). Everything else the engine offers (snapshots, conditions, paging
//! tokens) works on typed tables' records as on any.
//!
//! Keys keep their order: a [`Key`]'s bytes sort as the key does (`u64` and `i64` big
//! endian, the sign flipped for `i64`; strings and bytes as they are), so a scan walks a
//! typed table in key order.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use weft::store::{IndexDef, Scalar, Store};
//! use weft::typed::Table;
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Job {
//!     kind: String,
//!     priority: i64,
//! }
//!
//! let jobs: Table<u64, Job> =
//!     Table::new("jobs").with_attrs(|j: &Job| vec![("priority".into(), Scalar::I64(j.priority))]);
//! let mut store = Store::default();
//! jobs.create(&mut store)?;
//! store.create_index("jobs", IndexDef::max_heap("by_priority", "priority"))?;
//!
//! jobs.put(&mut store, &1, &Job { kind: "email".into(), priority: 3 })?;
//! jobs.put(&mut store, &2, &Job { kind: "report".into(), priority: 9 })?;
//! assert_eq!(jobs.get(&store, &1)?.map(|j| j.priority), Some(3));
//!
//! // The most urgent job first, taken off the queue.
//! let (id, job) = jobs.pop_max(&mut store, "by_priority")?.expect("two jobs are queued");
//! assert_eq!((id, job.kind.as_str()), (2, "report"));
//! assert_eq!(jobs.all(&store)?.len(), 1);
//! # Ok::<(), weft::typed::TypedError>(())
//! ```
//!
//! Depends on the engine and serde only: no replication, no network.

use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_store::{Op, Record, Scalar, Scan, Store, StoreError, Token};

/// What a typed table's call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TypedError {
    /// The engine refused (no such table or index, a limit, a failed condition).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value could not be encoded or decoded as JSON.
    #[error("value of table {table}: {source}")]
    Value {
        /// The table.
        table: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A stored key is not of the table's key type (it was written by something else).
    #[error("key of table {table} is not a {expected}: {key:02x?}")]
    Key {
        /// The table.
        table: String,
        /// The key type.
        expected: &'static str,
        /// The key's bytes.
        key: Vec<u8>,
    },
}

/// A key type: its bytes sort as its values do.
pub trait Key: Sized {
    /// The key's bytes.
    fn to_bytes(&self) -> Vec<u8>;
    /// The key from its bytes; `None` if they are not one.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
    /// The type's name, for errors.
    const NAME: &'static str;
}

impl Key for String {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
    const NAME: &'static str = "UTF-8 string";
}

impl Key for Vec<u8> {
    fn to_bytes(&self) -> Vec<u8> {
        self.clone()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
    const NAME: &'static str = "byte string";
}

impl Key for u64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
    const NAME: &'static str = "u64 (8 bytes, big endian)";
}

impl Key for i64 {
    fn to_bytes(&self) -> Vec<u8> {
        // The sign bit flipped: negative keys sort before positive ones.
        ((*self as u64) ^ (1 << 63)).to_be_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some((u64::from_be_bytes(bytes.try_into().ok()?) ^ (1 << 63)) as i64)
    }
    const NAME: &'static str = "i64 (8 bytes, big endian, sign flipped)";
}

/// One page of a typed scan and the token to continue with.
pub type TypedPage<K, V> = (Vec<(K, V)>, Option<Token>);

/// The attributes a value gives its record (what secondary indexes see).
type Attrs<V> = Arc<dyn Fn(&V) -> Vec<(String, Scalar)> + Send + Sync>;

/// A table of a [`Store`] with typed keys and values (see the module docs).
pub struct Table<K, V> {
    name: String,
    attrs: Option<Attrs<V>>,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Table { name: self.name.clone(), attrs: self.attrs.clone(), types: PhantomData }
    }
}

impl<K, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).field("attrs", &self.attrs.is_some()).finish()
    }
}

impl<K: Key, V: Serialize + DeserializeOwned> Table<K, V> {
    /// The table named `name` (it is made with [`Table::create`]).
    pub fn new(name: impl Into<String>) -> Self {
        Table { name: name.into(), attrs: None, types: PhantomData }
    }

    /// Gives each record the attributes `attrs` takes from its value.
    pub fn with_attrs(mut self, attrs: impl Fn(&V) -> Vec<(String, Scalar)> + Send + Sync + 'static) -> Self {
        self.attrs = Some(Arc::new(attrs));
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the table in `store`.
    pub fn create(&self, store: &mut Store) -> Result<(), TypedError> {
        Ok(store.create_table(&self.name)?)
    }

    /// Inserts or replaces `key`'s value at the store's next version, which it returns.
    pub fn put(&self, store: &mut Store, key: &K, value: &V) -> Result<u64, TypedError> {
        store.apply(&[self.put_op(key, value)?])?;
        Ok(store.version())
    }

    /// Deletes `key`; whether it was there.
    pub fn delete(&self, store: &mut Store, key: &K) -> Result<bool, TypedError> {
        let there = store.get(&self.name, &key.to_bytes())?.is_some();
        store.apply(&[self.delete_op(key)])?;
        Ok(there)
    }

    /// The put of `key` and `value` as an operation, for an atomic batch ([`Store::apply`]);
    /// add a condition with [`Op::with_condition`].
    pub fn put_op(&self, key: &K, value: &V) -> Result<Op, TypedError> {
        let bytes = serde_json::to_vec(value).map_err(|source| self.value_error(source))?;
        let mut op = Op::put(self.name.clone(), key.to_bytes(), bytes);
        if let (Some(attrs), Op::Put { attrs: slot, .. }) = (&self.attrs, &mut op) {
            *slot = attrs(value);
        }
        Ok(op)
    }

    /// The delete of `key` as an operation, for an atomic batch.
    pub fn delete_op(&self, key: &K) -> Op {
        Op::delete(self.name.clone(), key.to_bytes())
    }

    /// `key`'s value, if there is one.
    pub fn get(&self, store: &Store, key: &K) -> Result<Option<V>, TypedError> {
        store.get(&self.name, &key.to_bytes())?.map(|r| self.value_of(r)).transpose()
    }

    /// One page of the records whose keys lie in `range`, in key order (descending with
    /// `reverse`), at most `limit`, from where `token` (the previous page's) stopped; the
    /// token to continue with, if more may follow.
    pub fn scan(
        &self,
        store: &Store,
        range: impl RangeBounds<K>,
        reverse: bool,
        limit: usize,
        token: Option<Token>,
    ) -> Result<TypedPage<K, V>, TypedError> {
        let bound = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.to_bytes()),
            Bound::Excluded(k) => Bound::Excluded(k.to_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let req = Scan { start: bound(range.start_bound()), end: bound(range.end_bound()), reverse, limit, token };
        let page = store.scan(&self.name, &req)?;
        Ok((self.decode_all(&page.records)?, page.next))
    }

    /// Every record, in key order (all pages of [`Table::scan`]).
    pub fn all(&self, store: &Store) -> Result<Vec<(K, V)>, TypedError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self.scan(store, .., false, 1_000, token)?;
            out.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// The `k` records greatest by the max-heap index `index`, greatest first.
    pub fn top_k(&self, store: &Store, index: &str, k: usize) -> Result<Vec<(K, V)>, TypedError> {
        self.decode_all(&store.top_k(&self.name, index, k)?)
    }

    /// Removes and returns the record greatest by the max-heap index `index`.
    pub fn pop_max(&self, store: &mut Store, index: &str) -> Result<Option<(K, V)>, TypedError> {
        store.pop_max(&self.name, index)?.map(|r| self.decode(&r)).transpose()
    }

    /// A record of this table as its key and value.
    pub fn decode(&self, record: &Record) -> Result<(K, V), TypedError> {
        let key = K::from_bytes(record.key()).ok_or_else(|| TypedError::Key {
            table: self.name.clone(),
            expected: K::NAME,
            key: record.key().to_vec(),
        })?;
        Ok((key, self.value_of(record)?))
    }

    fn decode_all(&self, records: &[Arc<Record>]) -> Result<Vec<(K, V)>, TypedError> {
        records.iter().map(|r| self.decode(r)).collect()
    }

    fn value_of(&self, record: &Record) -> Result<V, TypedError> {
        serde_json::from_slice(record.value()).map_err(|source| self.value_error(source))
    }

    fn value_error(&self, source: serde_json::Error) -> TypedError {
        TypedError::Value { table: self.name.clone(), source }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;
    use weft_store::{Condition, IndexDef};

    use super::*;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Device {
        owner: String,
        last_seen: i64,
    }

    fn devices() -> Table<String, Device> {
        Table::new("devices").with_attrs(|d: &Device| vec![("last_seen".into(), Scalar::I64(d.last_seen))])
    }

    proptest! {
        #[test]
        fn i64_keys_sort_as_numbers(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
            prop_assert_eq!(i64::from_bytes(&a.to_bytes()), Some(a));
        }

        #[test]
        fn u64_keys_sort_as_numbers(a: u64, b: u64) {
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
            prop_assert_eq!(u64::from_bytes(&a.to_bytes()), Some(a));
        }

        /// A typed table behaves as a sorted map of its keys.
        #[test]
        fn matches_a_btreemap(ops in proptest::collection::vec((any::<i16>(), proptest::option::of(any::<i32>())), 0..60)) {
            let t: Table<i64, i32> = Table::new("t");
            let mut store = Store::default();
            t.create(&mut store).unwrap();
            let mut model = std::collections::BTreeMap::new();
            for (k, v) in ops {
                let k = i64::from(k);
                match v {
                    Some(v) => {
                        t.put(&mut store, &k, &v).unwrap();
                        model.insert(k, v);
                    }
                    None => prop_assert_eq!(t.delete(&mut store, &k).unwrap(), model.remove(&k).is_some()),
                }
            }
            prop_assert_eq!(t.all(&store).unwrap(), model.clone().into_iter().collect::<Vec<_>>());
            let (neg, _) = t.scan(&store, ..0, true, 1_000, None).unwrap();
            prop_assert_eq!(neg, model.range(..0).rev().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn attributes_feed_indexes_and_batches_are_atomic() {
        let t = devices();
        let mut store = Store::default();
        t.create(&mut store).unwrap();
        store.create_index("devices", IndexDef::max_heap("recent", "last_seen")).unwrap();
        for (name, seen) in [("a", 5), ("b", 9), ("c", 1)] {
            t.put(&mut store, &name.to_string(), &Device { owner: "o".into(), last_seen: seen }).unwrap();
        }
        let top: Vec<String> = t.top_k(&store, "recent", 2).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(top, ["b", "a"]);

        // The second op's condition fails: neither applies.
        let put = t.put_op(&"d".to_string(), &Device { owner: "o".into(), last_seen: 50 }).unwrap();
        let refused = t.delete_op(&"zz".to_string()).with_condition(Condition::Exists);
        assert!(store.apply(&[put, refused]).is_err());
        assert_eq!(t.get(&store, &"d".to_string()).unwrap(), None);
    }

    #[test]
    fn a_record_of_another_type_is_a_clear_error() {
        let mut store = Store::default();
        store.create_table("mixed").unwrap();
        store.put("mixed", b"k", b"not json", &[]).unwrap();
        let t: Table<String, Device> = Table::new("mixed");
        let err = t.get(&store, &"k".to_string()).unwrap_err();
        assert!(matches!(err, TypedError::Value { .. }), "{err}");
        let ids: Table<u64, Device> = Table::new("mixed");
        let err = ids.all(&store).unwrap_err();
        assert!(err.to_string().contains("is not a u64"), "{err}");
    }
}
