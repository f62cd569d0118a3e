//! The `max_heap` secondary index: an indexed binary max-heap of records by
//! `(attribute value, key)`.
//!
//! `entries` is the implicit binary heap; `positions` maps each record's key (by its
//! stored hash) to its slot in `entries`, so update and delete find their entry in O(1)
//! and restore the heap in O(log n). Building over existing records is Floyd's O(n)
//! heapify. Top-k reads the heap without changing it, expanding a frontier of candidate
//! slots: O(k log k).
//!
//! Invariants (checked by `check_invariants` in tests): every parent orders at or above
//! its children; `positions` holds exactly one slot per entry and each points at it.
//!
//! The heap lives only in the live view: it cannot be snapshotted in O(1), so snapshots
//! keep the index's definition and answer top-k by a bounded selection over the records
//! (see `TableData::top_k`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::index::{IndexItem, cmp_items};
use crate::record::Record;

#[derive(Clone, Debug)]
pub(crate) struct MaxHeap {
    attr: Arc<str>,
    entries: Vec<IndexItem>,
    positions: HashTable<u32>,
}

impl MaxHeap {
    /// Builds the heap over `records` (those without the attribute are skipped) in O(n).
    pub(crate) fn build<'a>(
        attr: Arc<str>,
        records: impl Iterator<Item = &'a Arc<Record>>,
    ) -> Self {
        let mut entries: Vec<IndexItem> =
            records.filter_map(|r| IndexItem::new(&attr, r)).collect();
        entries.shrink_to_fit();
        let mut heap = MaxHeap {
            attr,
            entries,
            positions: HashTable::new(),
        };
        for i in (0..heap.entries.len() / 2).rev() {
            heap.sift_down_unindexed(i);
        }
        heap.positions = HashTable::with_capacity(heap.entries.len());
        for (i, e) in heap.entries.iter().enumerate() {
            let entries = &heap.entries;
            heap.positions
                .insert_unique(e.rec.hash(), i as u32, |&p| entries[p as usize].rec.hash());
        }
        heap
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds the record if it has the attribute.
    pub(crate) fn insert(&mut self, rec: &Arc<Record>) {
        let Some(item) = IndexItem::new(&self.attr, rec) else {
            return;
        };
        let i = self.entries.len();
        self.entries.push(item);
        let entries = &self.entries;
        self.positions
            .insert_unique(rec.hash(), i as u32, |&p| entries[p as usize].rec.hash());
        self.sift_up(i);
    }

    /// Removes the entry of the record with this key, if any.
    pub(crate) fn remove(&mut self, old: &Record) {
        let entries = &self.entries;
        let key = old.key();
        if let Some(&p) = self
            .positions
            .find(old.hash(), |&p| entries[p as usize].rec.key() == key)
        {
            self.remove_at(p as usize);
        }
    }

    /// Replaces `old` by `new` (same key): in place when the attribute is unchanged.
    pub(crate) fn replace(&mut self, old: &Record, new: &Arc<Record>) {
        let entries = &self.entries;
        let key = old.key();
        let slot = self
            .positions
            .find(old.hash(), |&p| entries[p as usize].rec.key() == key)
            .copied();
        if let (Some(p), Some(item)) = (slot, IndexItem::new(&self.attr, new)) {
            let p = p as usize;
            if cmp_items(&self.attr, &self.entries[p], &item) == Ordering::Equal {
                self.entries[p] = item;
                return;
            }
        }
        self.remove(old);
        self.insert(new);
    }

    pub(crate) fn peek(&self) -> Option<&Arc<Record>> {
        self.entries.first().map(|e| &e.rec)
    }

    /// The `k` greatest records, greatest first, without changing the heap.
    pub(crate) fn top_k(&self, k: usize) -> Vec<Arc<Record>> {
        struct Cand<'a> {
            attr: &'a str,
            item: &'a IndexItem,
            slot: usize,
        }
        impl PartialEq for Cand<'_> {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == Ordering::Equal
            }
        }
        impl Eq for Cand<'_> {}
        impl PartialOrd for Cand<'_> {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Cand<'_> {
            fn cmp(&self, o: &Self) -> Ordering {
                cmp_items(self.attr, self.item, o.item)
            }
        }
        let mut out = Vec::with_capacity(k.min(self.entries.len()));
        let mut frontier = BinaryHeap::with_capacity(2 * k + 1);
        if let Some(item) = self.entries.first() {
            frontier.push(Cand {
                attr: &self.attr,
                item,
                slot: 0,
            });
        }
        while out.len() < k {
            let Some(c) = frontier.pop() else { break };
            out.push(c.item.rec.clone());
            for child in [2 * c.slot + 1, 2 * c.slot + 2] {
                if let Some(item) = self.entries.get(child) {
                    frontier.push(Cand {
                        attr: &self.attr,
                        item,
                        slot: child,
                    });
                }
            }
        }
        out
    }

    /// Bytes held: the entry vector's capacity and the position table.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<IndexItem>()
            + self.positions.allocation_size()
    }

    fn remove_at(&mut self, p: usize) {
        let last = self.entries.len() - 1;
        if p != last {
            self.swap(p, last);
        }
        if let Some(gone) = self.entries.pop()
            && let Ok(slot) = self
                .positions
                .find_entry(gone.rec.hash(), |&q| q as usize == last)
        {
            slot.remove();
        }
        if p < self.entries.len() {
            self.sift_down(p);
            self.sift_up(p);
        }
    }

    fn greater(&self, a: usize, b: usize) -> bool {
        cmp_items(&self.attr, &self.entries[a], &self.entries[b]) == Ordering::Greater
    }

    /// Swaps two slots and points their position entries at their new slots.
    fn swap(&mut self, i: usize, j: usize) {
        self.entries.swap(i, j);
        let hashes = [self.entries[i].rec.hash(), self.entries[j].rec.hash()];
        // The entry now at i still has position j recorded, and vice versa.
        let [a, b] = self
            .positions
            .get_disjoint_mut(hashes, |n, &p| p as usize == if n == 0 { j } else { i });
        if let Some(a) = a {
            *a = i as u32;
        }
        if let Some(b) = b {
            *b = j as u32;
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.greater(i, parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        while let Some(c) = self.larger_child(i) {
            self.swap(i, c);
            i = c;
        }
    }

    /// Sift without position bookkeeping: only while building, before positions exist.
    fn sift_down_unindexed(&mut self, mut i: usize) {
        while let Some(c) = self.larger_child(i) {
            self.entries.swap(i, c);
            i = c;
        }
    }

    /// The child of `i` that should replace it, if one orders above it.
    fn larger_child(&self, i: usize) -> Option<usize> {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut best = i;
        if l < self.entries.len() && self.greater(l, best) {
            best = l;
        }
        if r < self.entries.len() && self.greater(r, best) {
            best = r;
        }
        (best != i).then_some(best)
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        for i in 1..self.entries.len() {
            assert!(
                !self.greater(i, (i - 1) / 2),
                "heap order violated at slot {i}"
            );
        }
        assert_eq!(
            self.positions.len(),
            self.entries.len(),
            "one position per entry"
        );
        for (i, e) in self.entries.iter().enumerate() {
            let found = self.positions.find(e.rec.hash(), |&p| p as usize == i);
            assert!(found.is_some(), "slot {i} has no position entry");
        }
    }
}
