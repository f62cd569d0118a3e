//! One table: its records in the primary tree and the hash index, and its secondary indexes.
//!
//! A table has two parts. [`TableData`] is what a snapshot holds: the primary AVL tree
//! and the ordered indexes' trees, all persistent, so cloning it is O(number of indexes).
//! The live [`Table`] adds what only the live view needs: the hash index for O(1) point
//! reads, the max-heap indexes (not persistent) and memory accounting.
//!
//! Writes come through [`Table::put`] and [`Table::delete`] after the store has validated
//! the whole batch; once called they cannot fail, which is what makes batches atomic.

use std::cmp::Ordering;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::avl::{Seek, Tree, node_bytes};
use crate::error::{Result, StoreError};
use crate::heap::MaxHeap;
use crate::index::{IndexDef, IndexItem, IndexKind, KeyBound, Ranked, cmp_items, cmp_value, collect_items, probe};
use crate::prefetch;
use crate::record::{Names, Record};
use crate::scalar::{Scalar, byte_prefix};
use crate::token::{self, Token, encode_scalar, fingerprint};

/// An item of the primary tree: the record and its key's first eight bytes, so that most
/// comparisons on the way down never leave the node.
#[derive(Clone, Debug)]
pub(crate) struct KeyItem {
    prefix: u64,
    rec: Arc<Record>,
}

impl KeyItem {
    fn new(rec: Arc<Record>) -> Self {
        KeyItem { prefix: byte_prefix(rec.key()), rec }
    }
}

fn key_dir(key: &[u8]) -> impl Fn(&KeyItem) -> Ordering + '_ {
    let prefix = byte_prefix(key);
    move |item| prefix.cmp(&item.prefix).then_with(|| key.cmp(item.rec.key()))
}

/// A key-range scan. Bounds are on keys; `reverse` walks from the end bound down.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Lower key bound.
    pub start: Bound<Vec<u8>>,
    /// Upper key bound.
    pub end: Bound<Vec<u8>>,
    /// Descending key order.
    pub reverse: bool,
    /// Most records in one page.
    pub limit: usize,
    /// Where the previous page stopped.
    pub token: Option<Token>,
}

impl Scan {
    /// Every record, ascending, in pages of `limit`.
    pub fn all(limit: usize) -> Self {
        Scan { start: Bound::Unbounded, end: Bound::Unbounded, reverse: false, limit, token: None }
    }
}

/// A query through an ordered index: records whose attribute lies within the bounds,
/// in attribute order (ties by key); `reverse` gives descending order.
#[derive(Clone, Debug)]
pub struct Query {
    /// The ordered index to use.
    pub index: String,
    /// Lower attribute bound.
    pub start: Bound<Scalar>,
    /// Upper attribute bound.
    pub end: Bound<Scalar>,
    /// Descending order.
    pub reverse: bool,
    /// Most records in one page.
    pub limit: usize,
    /// Where the previous page stopped.
    pub token: Option<Token>,
}

impl Query {
    /// Every indexed record in attribute order, in pages of `limit`.
    pub fn all(index: impl Into<String>, limit: usize) -> Self {
        Query {
            index: index.into(),
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            reverse: false,
            limit,
            token: None,
        }
    }

    /// Records whose attribute equals `value`.
    pub fn eq(index: impl Into<String>, value: Scalar, limit: usize) -> Self {
        Query {
            index: index.into(),
            start: Bound::Included(value.clone()),
            end: Bound::Included(value),
            reverse: false,
            limit,
            token: None,
        }
    }
}

/// One page of results; `next` is present when more records may follow.
#[derive(Clone, Debug)]
pub struct Page {
    /// The records, in the requested order.
    pub records: Vec<Arc<Record>>,
    /// Pass back in the request for the next page.
    pub next: Option<Token>,
}

#[derive(Clone, Debug)]
enum IndexBody {
    Ordered(Tree<IndexItem>),
    /// The heap itself lives in [`Table::heaps`]; snapshots keep only the definition.
    MaxHeap,
}

#[derive(Clone, Debug)]
struct Index {
    def: IndexDef,
    attr: Arc<str>,
    body: IndexBody,
}

/// The persistent part of a table: what a snapshot holds. Cloning is O(#indexes).
#[derive(Clone, Debug)]
pub struct TableData {
    name: Arc<str>,
    primary: Tree<KeyItem>,
    indexes: Vec<Index>,
}

/// A consistent, immutable view of one table, unchanged by later writes.
pub type TableSnapshot = TableData;

impl TableData {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.primary.len()
    }

    /// Whether the table has no records.
    pub fn is_empty(&self) -> bool {
        self.primary.len() == 0
    }

    /// The table's secondary index definitions.
    pub fn index_defs(&self) -> impl Iterator<Item = &IndexDef> {
        self.indexes.iter().map(|i| &i.def)
    }

    /// Point read through the primary tree: O(log n).
    pub fn get(&self, key: &[u8]) -> Option<&Arc<Record>> {
        self.primary.get(key_dir(key)).map(|i| &i.rec)
    }

    /// Every record in key order.
    pub fn records(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.primary.iter().map(|i| &i.rec)
    }

    /// Every record in key order, for a pass that does real work per record (snapshot
    /// encoding copies each key and value out). Such a pass is bound by cache misses on
    /// records scattered over the heap, so copies of the tree iterator run ahead of the
    /// caller: each record's `Arc` is loaded 16 places ahead and its key and value 8 places
    /// ahead ([`prefetch::ahead`]). A pass that does little per record (a full scan that
    /// only counts) is faster with [`Table::records`]: the copies walk the tree too.
    pub fn records_ahead(&self) -> impl Iterator<Item = &Arc<Record>> {
        const RECORD_AHEAD: usize = 16;
        const DATA_AHEAD: usize = 8;
        let data = |r: &Arc<Record>| prefetch::span(r.key().as_ptr(), r.key().len() + r.value().len());
        prefetch::ahead(self.primary.iter().map(|i| &i.rec), RECORD_AHEAD, prefetch::arc, DATA_AHEAD, data)
    }

    fn index(&self, name: &str) -> Result<&Index> {
        self.indexes
            .iter()
            .find(|i| i.def.name == name)
            .ok_or_else(|| StoreError::IndexNotFound { table: self.name.to_string(), index: name.to_string() })
    }

    /// One page of a key-range scan: at most `req.limit` records, fewer once they pass
    /// `bytes_max` (see [`take_page`]).
    pub fn scan(&self, req: &Scan, page_max: usize, bytes_max: usize) -> Result<Page> {
        check_limit(req.limit, page_max)?;
        let fp = {
            let mut buf = b"scan".to_vec();
            buf.extend_from_slice(self.name.as_bytes());
            for b in [&req.start, &req.end] {
                encode_key_bound(b, &mut buf);
            }
            buf.push(u8::from(req.reverse));
            fingerprint(&buf)
        };
        let resume = req.token.as_ref().map(|t| token::decode(t, fp)).transpose()?;
        let (from, to) = if req.reverse { (&req.end, &req.start) } else { (&req.start, &req.end) };
        let iter = match (&resume, from) {
            (Some(pos), _) => self.primary.iter_from(Seek::Exclusive, req.reverse, key_dir(&pos.key)),
            (None, Bound::Included(k)) => self.primary.iter_from(Seek::Inclusive, req.reverse, key_dir(k)),
            (None, Bound::Excluded(k)) => self.primary.iter_from(Seek::Exclusive, req.reverse, key_dir(k)),
            (None, Bound::Unbounded) => self.primary.iter_from(Seek::Edge, req.reverse, |_| Ordering::Equal),
        };
        // Within the far bound: `cmp` is key vs bound, which must not pass it.
        let within = |key: &[u8]| match to {
            Bound::Unbounded => true,
            Bound::Included(b) => key.cmp(b.as_slice()) != if req.reverse { Ordering::Less } else { Ordering::Greater },
            Bound::Excluded(b) => key.cmp(b.as_slice()) == if req.reverse { Ordering::Greater } else { Ordering::Less },
        };
        let mut iter = iter.map(|i| &i.rec).take_while(|r| within(r.key()));
        let (records, full) = take_page(&mut iter, req.limit, bytes_max);
        let next = match (full, records.last()) {
            (true, Some(last)) if iter.next().is_some() => Some(token::encode(fp, last.key(), None)),
            _ => None,
        };
        Ok(Page { records, next })
    }

    /// One page of an ordered-index query, bounded as [`TableData::scan`] is.
    pub fn query(&self, req: &Query, page_max: usize, bytes_max: usize) -> Result<Page> {
        check_limit(req.limit, page_max)?;
        let index = self.index(&req.index)?;
        let IndexBody::Ordered(tree) = &index.body else {
            return Err(StoreError::WrongIndexKind {
                index: req.index.clone(),
                actual: index.def.kind.as_str(),
                needed: IndexKind::Ordered.as_str(),
            });
        };
        let attr: &str = &index.attr;
        let fp = {
            let mut buf = b"query".to_vec();
            buf.extend_from_slice(self.name.as_bytes());
            buf.push(0);
            buf.extend_from_slice(req.index.as_bytes());
            for b in [&req.start, &req.end] {
                match b {
                    Bound::Unbounded => buf.push(0),
                    Bound::Included(v) => {
                        buf.push(1);
                        encode_scalar(v, &mut buf);
                    }
                    Bound::Excluded(v) => {
                        buf.push(2);
                        encode_scalar(v, &mut buf);
                    }
                }
            }
            buf.push(u8::from(req.reverse));
            fingerprint(&buf)
        };
        let resume = req.token.as_ref().map(|t| token::decode(t, fp)).transpose()?;
        let rev = req.reverse;
        let (from, to) = if rev { (&req.end, &req.start) } else { (&req.start, &req.end) };
        let iter = match (&resume, from) {
            (Some(pos), _) => {
                let value = pos.value.as_ref().ok_or(StoreError::InvalidToken("query token without a value"))?;
                tree.iter_from(Seek::Exclusive, rev, probe(attr, value, KeyBound::Key(&pos.key)))
            }
            (None, Bound::Unbounded) => tree.iter_from(Seek::Edge, rev, |_| Ordering::Equal),
            // Forward from `>= v` starts before every key of v; from `> v` after every key.
            // Reversed, the same probes mirror.
            (None, Bound::Included(v)) => {
                let kb = if rev { KeyBound::Max } else { KeyBound::Min };
                tree.iter_from(Seek::Inclusive, rev, probe(attr, v, kb))
            }
            (None, Bound::Excluded(v)) => {
                let kb = if rev { KeyBound::Min } else { KeyBound::Max };
                tree.iter_from(Seek::Inclusive, rev, probe(attr, v, kb))
            }
        };
        let past = if rev { Ordering::Less } else { Ordering::Greater };
        let within = |item: &IndexItem| match to {
            Bound::Unbounded => true,
            Bound::Included(b) => cmp_value(attr, b, b.sort_key(), item).reverse() != past,
            Bound::Excluded(b) => {
                let ord = cmp_value(attr, b, b.sort_key(), item).reverse();
                ord != past && ord != Ordering::Equal
            }
        };
        let mut iter = iter.take_while(|i| within(i));
        let (records, full) = take_page(&mut iter.by_ref().map(|i| &i.rec), req.limit, bytes_max);
        let next = match (full, records.last()) {
            (true, Some(last)) if iter.next().is_some() => Some(token::encode(fp, last.key(), last.attr(attr))),
            _ => None,
        };
        Ok(Page { records, next })
    }

    /// The `k` records with the greatest attribute value (ties: greatest key), greatest
    /// first. An ordered index answers in O(log n + k); a max-heap index, which a snapshot
    /// does not hold, by one pass over the records keeping the best k: O(n log k).
    pub fn top_k(&self, index: &str, k: usize) -> Result<Vec<Arc<Record>>> {
        let index = self.index(index)?;
        match &index.body {
            IndexBody::Ordered(tree) => {
                Ok(tree.iter_from(Seek::Edge, true, |_| Ordering::Equal).take(k).map(|i| i.rec.clone()).collect())
            }
            IndexBody::MaxHeap => Ok(select_top_k(&index.attr, self.records(), k)),
        }
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.primary.check_invariants(|a, b| a.rec.key().cmp(b.rec.key()));
        for index in &self.indexes {
            if let IndexBody::Ordered(t) = &index.body {
                t.check_invariants(|a, b| cmp_items(&index.attr, a, b));
            }
        }
    }
}

/// Up to `limit` records from `iter`, fewer once their bytes reach `bytes_max` (the first
/// always goes, so a page is at most one record over). Returns them and whether the page
/// stopped full, before `iter` ran out: only then may more follow.
fn take_page<'a>(
    iter: &mut impl Iterator<Item = &'a Arc<Record>>,
    limit: usize,
    bytes_max: usize,
) -> (Vec<Arc<Record>>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    while out.len() < limit && page_takes_more(out.len(), bytes, bytes_max) {
        let Some(r) = iter.next() else { return (out, false) };
        bytes += r.heap_bytes();
        out.push(r.clone());
    }
    (out, true)
}

/// Whether a page that holds `taken` records of `bytes` bytes takes another under the
/// byte bound: the first record always, the next ones while the page is under it.
pub(crate) fn page_takes_more(taken: usize, bytes: usize, bytes_max: usize) -> bool {
    taken == 0 || bytes < bytes_max
}

fn check_limit(limit: usize, page_max: usize) -> Result<()> {
    if limit == 0 {
        return Err(StoreError::Invalid { what: "page limit", reason: "must be at least 1".into() });
    }
    crate::limits::check("page limit", limit, page_max)
}

fn encode_key_bound(b: &Bound<Vec<u8>>, buf: &mut Vec<u8>) {
    match b {
        Bound::Unbounded => buf.push(0),
        Bound::Included(k) | Bound::Excluded(k) => {
            buf.push(if matches!(b, Bound::Included(_)) { 1 } else { 2 });
            buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
            buf.extend_from_slice(k);
        }
    }
}

/// The best `k` records by `(attr, key)`, greatest first, in one pass.
fn select_top_k<'a>(attr: &str, records: impl Iterator<Item = &'a Arc<Record>>, k: usize) -> Vec<Arc<Record>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    if k == 0 {
        return Vec::new();
    }
    let mut best = BinaryHeap::with_capacity(k + 1);
    for item in records.filter_map(|r| IndexItem::new(attr, r)) {
        best.push(Reverse(Ranked { attr, item, payload: () }));
        if best.len() > k {
            best.pop();
        }
    }
    best.into_sorted_vec().into_iter().map(|Reverse(r)| r.item.rec).collect()
}

/// A live table.
#[derive(Debug)]
pub struct Table {
    data: TableData,
    hash: HashTable<Arc<Record>>,
    /// Parallel to `data.indexes`: the heap of each max-heap index.
    heaps: Vec<Option<MaxHeap>>,
    names: Names,
    /// Sum of [`Record::heap_bytes`] over live records.
    record_bytes: usize,
    /// The owning store's key hasher (records carry hashes made by it).
    hasher: foldhash::fast::RandomState,
}

impl std::ops::Deref for Table {
    type Target = TableData;

    fn deref(&self) -> &TableData {
        &self.data
    }
}

impl Table {
    pub(crate) fn new(name: &str, hasher: foldhash::fast::RandomState) -> Self {
        Table {
            data: TableData { name: Arc::from(name), primary: Tree::default(), indexes: Vec::new() },
            hash: HashTable::new(),
            heaps: Vec::new(),
            names: Names::default(),
            record_bytes: 0,
            hasher,
        }
    }

    /// Adds the next record of a table being built in strictly increasing key order (see
    /// [`crate::TableLoader`]): checks the order against the last one and indexes it by
    /// hash while the record is fresh in cache; `items` collects the primary tree's items.
    pub(crate) fn push_sorted(&mut self, items: &mut Vec<KeyItem>, rec: Arc<Record>) -> Result<()> {
        if let Some(last) = items.last()
            && last.rec.key() >= rec.key()
        {
            return Err(StoreError::UnsortedInput(items.len()));
        }
        self.record_bytes += rec.heap_bytes();
        self.hash.insert_unique(rec.hash(), rec.clone(), |r| r.hash());
        items.push(KeyItem::new(rec));
        Ok(())
    }

    /// Finishes a table built by [`Table::push_sorted`]: O(n) for the primary tree, O(n)
    /// per max-heap index, O(n log n) per ordered index (a sort).
    pub(crate) fn finish_sorted(mut self, items: Vec<KeyItem>, defs: &[IndexDef]) -> Result<Self> {
        self.data.primary = Tree::from_sorted(items);
        for def in defs {
            self.create_index(def.clone())?;
        }
        Ok(self)
    }

    /// `key`'s hash under the owning store's hasher.
    pub(crate) fn hash_key(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Room for `n` more records in the hash index.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.hash.reserve(n, |r| r.hash());
    }

    /// The table's interned attribute names, for building records.
    pub(crate) fn names_mut(&mut self) -> &mut Names {
        &mut self.names
    }

    /// Point read through the hash index: O(1). (A snapshot's `get` walks the tree.)
    pub fn get(&self, key: &[u8]) -> Option<&Arc<Record>> {
        self.hash.find(self.hasher.hash_one(key), |r| r.key() == key)
    }

    /// An O(#indexes) snapshot of this table.
    pub fn snapshot(&self) -> TableSnapshot {
        self.data.clone()
    }

    /// The greatest record of a max-heap index, or of an ordered index.
    pub fn peek_max(&self, index: &str) -> Result<Option<Arc<Record>>> {
        let pos = self.index_pos(index)?;
        match &self.heaps[pos] {
            Some(h) => Ok(h.peek().cloned()),
            None => Ok(self.data.top_k(index, 1)?.pop()),
        }
    }

    /// Top-k through the live view (the heap itself for max-heap indexes).
    pub fn top_k(&self, index: &str, k: usize) -> Result<Vec<Arc<Record>>> {
        let pos = self.index_pos(index)?;
        match &self.heaps[pos] {
            Some(h) => Ok(h.top_k(k)),
            None => self.data.top_k(index, k),
        }
    }

    /// Bytes this table holds: records, tree nodes, hash index, heaps and names.
    pub fn memory_bytes(&self) -> usize {
        let trees: usize = self
            .data
            .indexes
            .iter()
            .map(|i| match &i.body {
                IndexBody::Ordered(t) => t.len() * node_bytes::<IndexItem>(),
                IndexBody::MaxHeap => 0,
            })
            .sum();
        let heaps: usize = self.heaps.iter().flatten().map(MaxHeap::heap_bytes).sum();
        self.record_bytes
            + self.data.primary.len() * node_bytes::<KeyItem>()
            + trees
            + heaps
            + self.hash.allocation_size()
            + self.names.heap_bytes()
            + self.data.indexes.capacity() * std::mem::size_of::<Index>()
            + self.heaps.capacity() * std::mem::size_of::<Option<MaxHeap>>()
    }

    fn index_pos(&self, name: &str) -> Result<usize> {
        self.data
            .indexes
            .iter()
            .position(|i| i.def.name == name)
            .ok_or_else(|| StoreError::IndexNotFound { table: self.data.name.to_string(), index: name.to_string() })
    }

    pub(crate) fn index_count(&self) -> usize {
        self.data.indexes.len()
    }

    /// Declares an index and builds it over the existing records.
    pub(crate) fn create_index(&mut self, def: IndexDef) -> Result<()> {
        if self.data.indexes.iter().any(|i| i.def.name == def.name) {
            return Err(StoreError::IndexExists { table: self.data.name.to_string(), index: def.name });
        }
        let attr = self.names.intern(&def.attr);
        let (body, heap) = match def.kind {
            IndexKind::Ordered => {
                let mut items = collect_items(&attr, self.hash.iter(), |item, _| item);
                items.sort_unstable_by(|a, b| cmp_items(&attr, a, b));
                (IndexBody::Ordered(Tree::from_sorted(items)), None)
            }
            IndexKind::MaxHeap => (IndexBody::MaxHeap, Some(MaxHeap::build(attr.clone(), self.hash.iter()))),
        };
        self.data.indexes.push(Index { def, attr, body });
        self.heaps.push(heap);
        Ok(())
    }

    pub(crate) fn drop_index(&mut self, name: &str) -> Result<()> {
        let pos = self.index_pos(name)?;
        self.data.indexes.remove(pos);
        self.heaps.remove(pos);
        Ok(())
    }

    /// Walks the paths `rec` will take in the primary tree and every ordered index in
    /// lockstep with plain loads, so their cache misses overlap (see [`PathWalk`]).
    fn warm_paths(&self, rec: &Record) {
        let key = rec.key();
        let by_key = key_dir(key);
        let mut primary = self.data.primary.walk();
        let mut walks: Vec<_> = self
            .data
            .indexes
            .iter()
            .filter_map(|i| match &i.body {
                IndexBody::Ordered(t) => rec.attr(&i.attr).map(|v| (t.walk(), probe(&i.attr, v, KeyBound::Key(key)))),
                IndexBody::MaxHeap => None,
            })
            .collect();
        if walks.is_empty() {
            // One chain alone has nothing to overlap with.
            return;
        }
        loop {
            let mut busy = primary.step(&by_key);
            for (walk, dir) in &mut walks {
                busy |= walk.step(dir);
            }
            if !busy {
                break;
            }
        }
    }

    /// Inserts or replaces a record (already validated). Returns the replaced record.
    pub(crate) fn put(&mut self, rec: Record) -> Option<Arc<Record>> {
        self.warm_paths(&rec);
        let rec = Arc::new(rec);
        self.record_bytes += rec.heap_bytes();
        let key = rec.key();
        let old = match self.hash.entry(rec.hash(), |r| r.key() == key, |r| r.hash()) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => Some(std::mem::replace(slot.get_mut(), rec.clone())),
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(rec.clone());
                None
            }
        };
        self.data.primary.insert(KeyItem::new(rec.clone()), key_dir(rec.key()));
        for (index, heap) in self.data.indexes.iter_mut().zip(self.heaps.iter_mut()) {
            match (&mut index.body, heap) {
                (IndexBody::Ordered(tree), _) => {
                    let attr: &str = &index.attr;
                    let new_value = rec.attr(attr);
                    // Same (value, key): the insert below replaces the item in place.
                    if let Some(old) = &old
                        && let Some(v) = old.attr(attr)
                        && new_value != Some(v)
                    {
                        tree.remove(probe(attr, v, KeyBound::Key(key)));
                    }
                    if let Some(v) = new_value {
                        let item = IndexItem { sort: v.sort_key(), rec: rec.clone() };
                        tree.insert(item, probe(attr, v, KeyBound::Key(key)));
                    }
                }
                (IndexBody::MaxHeap, Some(heap)) => match &old {
                    Some(old) => heap.replace(old, &rec),
                    None => heap.insert(&rec),
                },
                (IndexBody::MaxHeap, None) => {}
            }
        }
        if let Some(old) = &old {
            self.record_bytes -= old.heap_bytes();
        }
        old
    }

    /// Deletes a record by key. Returns it.
    pub(crate) fn delete(&mut self, key: &[u8], hash: u64) -> Option<Arc<Record>> {
        let old = match self.hash.find_entry(hash, |r| r.key() == key) {
            Ok(slot) => slot.remove().0,
            Err(_) => return None,
        };
        self.data.primary.remove(key_dir(key));
        for (index, heap) in self.data.indexes.iter_mut().zip(self.heaps.iter_mut()) {
            match (&mut index.body, heap) {
                (IndexBody::Ordered(tree), _) => {
                    if let Some(v) = old.attr(&index.attr) {
                        tree.remove(probe(&index.attr, v, KeyBound::Key(key)));
                    }
                }
                (IndexBody::MaxHeap, Some(heap)) => heap.remove(&old),
                (IndexBody::MaxHeap, None) => {}
            }
        }
        self.record_bytes -= old.heap_bytes();
        Some(old)
    }

    #[cfg(test)]
    pub(crate) fn check_all_invariants(&self) {
        self.data.check_invariants();
        assert_eq!(self.hash.len(), self.data.primary.len(), "hash index and tree disagree");
        for h in self.heaps.iter().flatten() {
            h.check_invariants();
        }
        let sum: usize = self.data.records().map(|r| r.heap_bytes()).sum();
        assert_eq!(sum, self.record_bytes, "record byte accounting drifted");
    }

    #[cfg(test)]
    pub(crate) fn heap_len(&self, index: &str) -> Option<usize> {
        let pos = self.index_pos(index).ok()?;
        self.heaps[pos].as_ref().map(MaxHeap::len)
    }
}
