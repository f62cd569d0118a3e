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

use crate::index::{IndexItem, Ranked, cmp_items, collect_items};
use crate::prefetch;
use crate::record::Record;

#[derive(Clone, Debug)]
pub(crate) struct MaxHeap {
    attr: Arc<str>,
    entries: Vec<Entry>,
    positions: HashTable<u32>,
}

/// A heap slot: the index item and its record's key hash, kept here so that moving an
/// entry updates its position without touching the record.
#[derive(Clone, Debug)]
struct Entry {
    item: IndexItem,
    hash: u64,
}

/// A position value no slot has: marks an entry whose own position is being rewritten.
const PARKED: u32 = u32::MAX;

impl MaxHeap {
    /// Builds the heap over `records` (those without the attribute are skipped) in O(n).
    pub(crate) fn build<'a>(attr: Arc<str>, records: impl Iterator<Item = &'a Arc<Record>> + Clone) -> Self {
        let mut entries = collect_items(&attr, records, |item, hash| Entry { item, hash });
        entries.shrink_to_fit();
        let mut heap = MaxHeap { attr, entries, positions: HashTable::new() };
        for i in (0..heap.entries.len() / 2).rev() {
            let mut i = i;
            loop {
                heap.prefetch_grandchildren(i);
                let Some(c) = heap.larger_child(i) else { break };
                heap.entries.swap(i, c);
                i = c;
            }
        }
        let entries = &heap.entries;
        let mut positions = HashTable::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            positions.insert_unique(e.hash, i as u32, |&p| entries[p as usize].hash);
        }
        heap.positions = positions;
        heap
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds the record if it has the attribute.
    pub(crate) fn insert(&mut self, rec: &Arc<Record>) {
        let Some(item) = IndexItem::new(&self.attr, rec) else { return };
        self.entries.push(Entry { item, hash: rec.hash() });
        let at = self.sift_up(self.entries.len() - 1);
        let entries = &self.entries;
        self.positions.insert_unique(rec.hash(), at as u32, |&p| entries[p as usize].hash);
    }

    fn find(&self, rec: &Record) -> Option<usize> {
        let key = rec.key();
        self.positions.find(rec.hash(), |&p| self.entries[p as usize].item.rec.key() == key).map(|&p| p as usize)
    }

    /// Removes the entry of the record with this key, if any.
    pub(crate) fn remove(&mut self, old: &Record) {
        let Some(p) = self.find(old) else { return };
        if let Ok(slot) = self.positions.find_entry(old.hash(), |&q| q as usize == p) {
            slot.remove();
        }
        let last = self.entries.len() - 1;
        self.entries.swap_remove(p);
        if p < last {
            // The former last entry now sits at `p`; its position still says `last`, a
            // value no other entry has, so it can be found after sifting.
            let moved = self.entries[p].hash;
            let at = self.restore(p);
            self.set_position(moved, last as u32, at);
        }
    }

    /// Replaces `old` by `new` (same key): in place when the attribute is unchanged.
    pub(crate) fn replace(&mut self, old: &Record, new: &Arc<Record>) {
        let (Some(p), Some(item)) = (self.find(old), IndexItem::new(&self.attr, new)) else {
            self.remove(old);
            self.insert(new);
            return;
        };
        let same = cmp_items(&self.attr, &self.entries[p].item, &item) == Ordering::Equal;
        self.entries[p].item = item;
        if !same {
            let hash = self.entries[p].hash;
            self.set_position(hash, p as u32, PARKED as usize);
            let at = self.restore(p);
            self.set_position(hash, PARKED, at);
        }
    }
    pub(crate) fn peek(&self) -> Option<&Arc<Record>> {
        self.entries.first().map(|e| &e.item.rec)
    }

    /// The `k` greatest records, greatest first, without changing the heap.
    pub(crate) fn top_k(&self, k: usize) -> Vec<Arc<Record>> {
        let mut out = Vec::with_capacity(k.min(self.entries.len()));
        let mut frontier = BinaryHeap::with_capacity(2 * k + 1);
        if let Some(item) = self.entries.first().map(|e| &e.item) {
            frontier.push(Ranked { attr: &self.attr, item, payload: 0usize });
        }
        while out.len() < k {
            let Some(c) = frontier.pop() else { break };
            out.push(c.item.rec.clone());
            for child in [2 * c.payload + 1, 2 * c.payload + 2] {
                if let Some(item) = self.entries.get(child).map(|e| &e.item) {
                    frontier.push(Ranked { attr: &self.attr, item, payload: child });
                }
            }
        }
        out
    }

    /// Bytes held: the entry vector's capacity and the position table.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.positions.allocation_size()
    }

    fn greater(&self, a: usize, b: usize) -> bool {
        cmp_items(&self.attr, &self.entries[a].item, &self.entries[b].item) == Ordering::Greater
    }

    /// Points the position entry of the record with `hash` that holds `from` at `to`.
    fn set_position(&mut self, hash: u64, from: u32, to: usize) {
        if let Some(p) = self.positions.find_mut(hash, |&p| p == from) {
            *p = to as u32;
        }
    }

    /// Moves the entry at `i` up or down to its place; returns where it ends. Every entry
    /// it passes moves one level and has its position updated once; the moving entry's own
    /// position is the caller's to update (it is absent, parked or uniquely stale).
    fn restore(&mut self, i: usize) -> usize {
        let up = self.sift_up(i);
        if up != i { up } else { self.sift_down(i) }
    }

    fn sift_up(&mut self, mut i: usize) -> usize {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.greater(i, parent) {
                break;
            }
            self.entries.swap(i, parent);
            self.set_position(self.entries[i].hash, parent as u32, i);
            i = parent;
        }
        i
    }

    fn sift_down(&mut self, mut i: usize) -> usize {
        loop {
            self.prefetch_grandchildren(i);
            let Some(c) = self.larger_child(i) else { break };
            self.entries.swap(i, c);
            self.set_position(self.entries[i].hash, c as u32, i);
            i = c;
        }
        i
    }

    /// Starts loading the lines of `i`'s grandchildren, one of whose pairs the step after
    /// next compares: below the levels that stay in cache, each sift step is otherwise a
    /// dependent miss.
    fn prefetch_grandchildren(&self, i: usize) {
        let first = 4 * i + 3;
        if first < self.entries.len() {
            prefetch::span(self.entries.as_ptr().wrapping_add(first), 4 * size_of::<Entry>());
        }
    }

    /// The child of `i` that should replace it, if one orders above it. The choice
    /// between the two children is arithmetic, not a branch: on random data it would be
    /// mispredicted half the time, and heapify makes it once per level.
    fn larger_child(&self, i: usize) -> Option<usize> {
        let l = 2 * i + 1;
        if l >= self.entries.len() {
            return None;
        }
        let c = if l + 1 < self.entries.len() { l + usize::from(self.greater(l + 1, l)) } else { l };
        self.greater(c, i).then_some(c)
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        for i in 1..self.entries.len() {
            assert!(!self.greater(i, (i - 1) / 2), "heap order violated at slot {i}");
        }
        assert_eq!(self.positions.len(), self.entries.len(), "one position per entry");
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(e.hash, e.item.rec.hash(), "stored hash is stale");
            let found = self.positions.find(e.hash, |&p| p as usize == i);
            assert!(found.is_some(), "slot {i} has no position entry");
        }
    }
}
