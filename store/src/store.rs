//! The store: a partition's tables, its version, its limits, and the write path.
//!
//! Every write is validated whole (tables, sizes, names, conditions) before the first
//! record changes; after validation, applying cannot fail, so a batch applies all or
//! nothing. Versions strictly increase: [`Store::apply`] takes the next one,
//! [`Store::apply_at`] takes the caller's (the replica passes the raft log index).
//!
//! Table and index definitions are not versioned writes; the replication layer orders
//! them in its log like any other command.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::batch::{Condition, Op, WriteResult};
use crate::error::{Result, StoreError};
use crate::index::IndexDef;
use crate::limits::{Limits, check, check_name};
use crate::record::Record;
use crate::scalar::Scalar;
use crate::table::{KeyItem, Page, Query, Scan, Table, TableSnapshot, page_takes_more};

/// A record to bulk-load, as a snapshot or backup stream delivers it.
#[derive(Clone, Debug)]
pub struct LoadRecord {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Attributes.
    pub attrs: Vec<(String, Scalar)>,
    /// The version it was written at.
    pub version: u64,
}

/// An in-memory store of tables: one partition's state.
#[derive(Debug)]
pub struct Store {
    /// Boxed: a map node holds room for eleven entries, and a `Table` inline made even a
    /// store of one table about 2 KiB (thousands of idle partitions per node; issue 20).
    tables: BTreeMap<String, Box<Table>>,
    version: u64,
    limits: Limits,
    hasher: foldhash::fast::RandomState,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(Limits::default())
    }
}

/// A consistent view of every table at one version, unchanged by later writes.
/// Taking one costs O(number of tables and indexes), independent of the record count.
#[derive(Clone, Debug)]
pub struct StoreSnapshot {
    version: u64,
    tables: Vec<TableSnapshot>,
}

impl StoreSnapshot {
    /// The version of the last write the snapshot includes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Tables, by name.
    pub fn tables(&self) -> &[TableSnapshot] {
        &self.tables
    }

    /// One table.
    pub fn table(&self, name: &str) -> Option<&TableSnapshot> {
        self.tables.iter().find(|t| t.name() == name)
    }
}

impl Store {
    /// An empty store with these limits.
    pub fn new(limits: Limits) -> Self {
        Store { tables: BTreeMap::new(), version: 0, limits, hasher: foldhash::fast::RandomState::default() }
    }

    /// The version of the last applied write (0 before any).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Creates an empty table.
    pub fn create_table(&mut self, name: &str) -> Result<()> {
        check_name("table name", name, &self.limits)?;
        if self.tables.contains_key(name) {
            return Err(StoreError::TableExists(name.into()));
        }
        self.tables.insert(name.into(), Box::new(Table::new(name, self.hasher.clone())));
        Ok(())
    }

    /// Drops a table and its records.
    pub fn drop_table(&mut self, name: &str) -> Result<()> {
        self.tables.remove(name).map(drop).ok_or_else(|| StoreError::TableNotFound(name.into()))
    }

    /// Declares a secondary index and builds it over the table's existing records.
    pub fn create_index(&mut self, table: &str, def: IndexDef) -> Result<()> {
        check_name("index name", &def.name, &self.limits)?;
        check_name("attribute name", &def.attr, &self.limits)?;
        let max = self.limits.indexes_per_table_max;
        let t = self.table_mut(table)?;
        check("indexes on the table", t.index_count() + 1, max)?;
        t.create_index(def)
    }

    /// Drops a secondary index.
    pub fn drop_index(&mut self, table: &str, index: &str) -> Result<()> {
        self.table_mut(table)?.drop_index(index)
    }

    /// Table names, sorted.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// A live table, for reads.
    pub fn table(&self, name: &str) -> Result<&Table> {
        self.tables.get(name).map(|t| &**t).ok_or_else(|| StoreError::TableNotFound(name.into()))
    }

    fn table_mut(&mut self, name: &str) -> Result<&mut Table> {
        self.tables.get_mut(name).map(|t| &mut **t).ok_or_else(|| StoreError::TableNotFound(name.into()))
    }

    /// Point read on the live view: O(1) through the hash index.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<&Arc<Record>>> {
        Ok(self.table(table)?.get(key))
    }

    /// One page of a key-range scan.
    pub fn scan(&self, table: &str, req: &Scan) -> Result<Page> {
        self.table(table)?.scan(req, self.limits.page_records_max, self.limits.page_bytes_max)
    }

    /// One page of an ordered-index query.
    pub fn query(&self, table: &str, req: &Query) -> Result<Page> {
        self.table(table)?.query(req, self.limits.page_records_max, self.limits.page_bytes_max)
    }

    /// The `k` greatest records of an index, greatest first. It has no token to continue
    /// with, so an answer larger than a scan page may be (`page_bytes_max`, passed by at
    /// most its last record) is refused with [`StoreError::LimitExceeded`]: ask for fewer.
    pub fn top_k(&self, table: &str, index: &str, k: usize) -> Result<Vec<Arc<Record>>> {
        check("top-k count", k, self.limits.page_records_max)?;
        let top = self.table(table)?.top_k(index, k)?;
        let sizes = top.iter().map(|r| r.heap_bytes());
        let (total, last) = sizes.fold((0, 0), |(total, _), b| (total + b, b));
        let limit = self.limits.page_bytes_max;
        // Running totals only grow: a page that would take the last record takes them all.
        if !page_takes_more(top.len().saturating_sub(1), total - last, limit) {
            return Err(StoreError::LimitExceeded { what: "top-k answer bytes", actual: total, limit });
        }
        Ok(top)
    }

    /// Number of records in a table.
    pub fn count(&self, table: &str) -> Result<usize> {
        Ok(self.table(table)?.len())
    }

    /// Bytes held by all tables.
    pub fn memory_bytes(&self) -> usize {
        self.tables.values().map(|t| t.memory_bytes()).sum()
    }

    /// An O(#tables + #indexes) consistent snapshot of every table.
    pub fn snapshot(&self) -> StoreSnapshot {
        StoreSnapshot { version: self.version, tables: self.tables.values().map(|t| t.snapshot()).collect() }
    }

    /// One unconditional put at the next version: the common case without building a batch.
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8], attrs: &[(&str, Scalar)]) -> Result<u64> {
        self.check_record(key, value.len(), attrs.iter().map(|(n, v)| (*n, v)))?;
        let version = self.version + 1;
        let hash = self.hash(key);
        let t = self.table_mut(table)?;
        let attrs = t.names_mut().attrs(attrs.iter().map(|(n, v)| (*n, v)));
        t.put(Record::new(hash, version, key, value, attrs));
        self.version = version;
        Ok(version)
    }

    /// Applies a batch atomically at the next version.
    pub fn apply(&mut self, ops: &[Op]) -> Result<WriteResult> {
        self.apply_at(ops, self.version + 1)
    }

    /// Applies a batch atomically at `version`, which must not be below the current
    /// version. Equal is allowed: the replica applies several commands of one raft entry
    /// at that entry's log index.
    pub fn apply_at(&mut self, ops: &[Op], version: u64) -> Result<WriteResult> {
        if version < self.version {
            return Err(StoreError::VersionNotIncreasing { given: version, current: self.version });
        }
        let previous = self.validate(ops)?;
        for op in ops {
            let hash = self.hash(op.key());
            let Ok(t) = self.table_mut(op.table()) else {
                continue;
            };
            match op {
                Op::Put { key, value, attrs, .. } => {
                    let attrs = t.names_mut().attrs(attrs.iter().map(|(n, v)| (n.as_str(), v)));
                    t.put(Record::new(hash, version, key, value, attrs));
                }
                Op::Delete { key, .. } => {
                    t.delete(key, hash);
                }
            }
        }
        self.version = version;
        Ok(WriteResult { version, previous })
    }

    /// Removes and returns the greatest record of an index (a priority-queue dequeue), at
    /// the next version.
    pub fn pop_max(&mut self, table: &str, index: &str) -> Result<Option<Arc<Record>>> {
        self.pop_max_at(table, index, self.version + 1)
    }

    /// [`Store::pop_max`] at `version`, which must not be below the current version (the
    /// replica passes the raft log index). The version advances only when a record is removed.
    pub fn pop_max_at(&mut self, table: &str, index: &str, version: u64) -> Result<Option<Arc<Record>>> {
        if version < self.version {
            return Err(StoreError::VersionNotIncreasing { given: version, current: self.version });
        }
        let Some(top) = self.table(table)?.peek_max(index)? else {
            return Ok(None);
        };
        let hash = self.hash(top.key());
        self.table_mut(table)?.delete(top.key(), hash);
        self.version = version;
        Ok(Some(top))
    }

    /// Creates table `name` from records in strictly increasing key order, with these
    /// indexes: O(n) for the table itself. The table must not exist. Used to install
    /// replica snapshots and restore backups; versions come from the records, and the
    /// store's version becomes at least the greatest of them.
    pub fn load_table(&mut self, name: &str, defs: &[IndexDef], records: Vec<LoadRecord>) -> Result<()> {
        let mut loader = self.table_loader(name, defs)?;
        loader.reserve(records.len());
        for r in records {
            loader.push(&r)?;
        }
        self.finish_table(loader)
    }

    /// Starts loading table `name` (see [`Store::load_table`]) from records that arrive a
    /// few at a time: [`TableLoader::push`] builds each record as it comes (so the caller
    /// need not hold them all, and may decode the next while this one is built on another
    /// thread), and [`Store::finish_table`] builds the table and its indexes.
    pub fn table_loader(&self, name: &str, defs: &[IndexDef]) -> Result<TableLoader> {
        check_name("table name", name, &self.limits)?;
        if self.tables.contains_key(name) {
            return Err(StoreError::TableExists(name.into()));
        }
        for d in defs {
            check_name("index name", &d.name, &self.limits)?;
            check_name("attribute name", &d.attr, &self.limits)?;
        }
        Ok(TableLoader {
            table: Table::new(name, self.hasher.clone()),
            items: Vec::new(),
            defs: defs.to_vec(),
            limits: self.limits.clone(),
            max_version: 0,
        })
    }

    /// Installs the table a [`TableLoader`] collected. The name must still be free.
    pub fn finish_table(&mut self, loader: TableLoader) -> Result<()> {
        let TableLoader { table, items, defs, max_version, .. } = loader;
        if self.tables.contains_key(table.name()) {
            return Err(StoreError::TableExists(table.name().into()));
        }
        let table = table.finish_sorted(items, &defs)?;
        self.tables.insert(table.name().into(), Box::new(table));
        self.version = self.version.max(max_version);
        Ok(())
    }

    /// Checks one record against the limits.
    fn check_record<'a>(
        &self,
        key: &[u8],
        value_len: usize,
        attrs: impl ExactSizeIterator<Item = (&'a str, &'a Scalar)>,
    ) -> Result<()> {
        check_record(&self.limits, key, value_len, attrs)
    }

    /// Validates a whole batch against limits and the current state; returns each
    /// operation's previous version.
    fn validate(&self, ops: &[Op]) -> Result<Vec<Option<u64>>> {
        self.limits.check_ops(ops)?;
        let mut previous = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let t = self.table(op.table())?;
            let current = t.get(op.key()).map(|r| r.version());
            let (ok, expected) = match op.condition() {
                Condition::None => (true, String::new()),
                Condition::Exists => (current.is_some(), "the key to exist".into()),
                Condition::Absent => (current.is_none(), "the key to be absent".into()),
                Condition::Version(v) => (current == Some(*v), format!("version {v}")),
            };
            if !ok {
                return Err(StoreError::ConditionFailed {
                    op: i,
                    table: op.table().into(),
                    expected,
                    found: match current {
                        Some(v) => format!("version {v}"),
                        None => "no record".into(),
                    },
                });
            }
            previous.push(current);
        }
        Ok(previous)
    }
}

/// One table being loaded in key order; see [`Store::table_loader`]. It holds the records
/// built so far and can move to another thread.
#[derive(Debug)]
pub struct TableLoader {
    table: Table,
    items: Vec<KeyItem>,
    defs: Vec<IndexDef>,
    limits: Limits,
    max_version: u64,
}

impl TableLoader {
    /// Checks one record against the limits and builds it, indexing it by hash and checking
    /// that its key follows the last one while it is fresh in cache.
    pub fn push(&mut self, r: &LoadRecord) -> Result<()> {
        check_record(&self.limits, &r.key, r.value.len(), r.attrs.iter().map(|(n, v)| (n.as_str(), v)))?;
        let attrs = self.table.names_mut().attrs(r.attrs.iter().map(|(n, v)| (n.as_str(), v)));
        let hash = self.table.hash_key(&r.key);
        let rec = Arc::new(Record::new(hash, r.version, &r.key, &r.value, attrs));
        self.table.push_sorted(&mut self.items, rec)?;
        self.max_version = self.max_version.max(r.version);
        Ok(())
    }

    /// Room for `n` more records.
    pub fn reserve(&mut self, n: usize) {
        self.items.reserve_exact(n);
        self.table.reserve(n);
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none was pushed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Checks one record against `l`.
pub(crate) fn check_record<'a>(
    l: &Limits,
    key: &[u8],
    value_len: usize,
    attrs: impl ExactSizeIterator<Item = (&'a str, &'a Scalar)>,
) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::Invalid { what: "key", reason: "empty".into() });
    }
    check("key bytes", key.len(), l.key_bytes_max)?;
    check("value bytes", value_len, l.value_bytes_max)?;
    check("attributes on a record", attrs.len(), l.attrs_per_record_max)?;
    for (name, v) in attrs {
        check_name("attribute name", name, l)?;
        check("attribute value bytes", v.heap_bytes(), l.attr_value_bytes_max)?;
    }
    Ok(())
}
