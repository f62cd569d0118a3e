//! Secondary index definitions and the items ordered indexes keep.
//!
//! An ordered index is a [`Tree`](crate::avl::Tree) of [`IndexItem`]s ordered by
//! `(attribute value, key)`; a record without the attribute is not in it. Each item caches
//! the value's [`SortKey`], so most comparisons never dereference the record.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::sync::Arc;

use crate::prefetch;
use crate::record::{Attr, Record};
use crate::scalar::{Scalar, SortKey};

/// The kinds of secondary index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// AVL tree over `(attribute, key)`: equality, range, order-by both ways, paging.
    Ordered,
    /// Indexed binary max-heap: top-k, peek and pop the maximum, O(n) build.
    MaxHeap,
}

impl IndexKind {
    /// The kind's name as users spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Ordered => "ordered",
            IndexKind::MaxHeap => "max_heap",
        }
    }
}

/// A secondary index over one attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexDef {
    /// The index's name, unique in its table.
    pub name: String,
    /// The attribute it indexes.
    pub attr: String,
    /// Its kind.
    pub kind: IndexKind,
}

impl IndexDef {
    /// An ordered index.
    pub fn ordered(name: impl Into<String>, attr: impl Into<String>) -> Self {
        IndexDef { name: name.into(), attr: attr.into(), kind: IndexKind::Ordered }
    }

    /// A max-heap index.
    pub fn max_heap(name: impl Into<String>, attr: impl Into<String>) -> Self {
        IndexDef { name: name.into(), attr: attr.into(), kind: IndexKind::MaxHeap }
    }
}

/// One entry of a secondary index: the record and its attribute's cached sort key.
#[derive(Clone, Debug)]
pub(crate) struct IndexItem {
    pub(crate) sort: SortKey,
    pub(crate) rec: Arc<Record>,
}

impl IndexItem {
    pub(crate) fn new(attr: &str, rec: &Arc<Record>) -> Option<Self> {
        rec.attr(attr).map(|v| IndexItem { sort: v.sort_key(), rec: rec.clone() })
    }
}

/// Builds `make(item, key hash)` for every record holding `attr`, in input order.
///
/// A million records scattered over the heap are a million cache misses for the record
/// and as many for its attribute list, one depending on the other. Software prefetches
/// run a pipeline over the input instead: the record `RECORD_AHEAD` places ahead, its
/// attributes `ATTRS_AHEAD` places ahead (by then its record has arrived), the output
/// slot `OUT_AHEAD` places ahead (the `Arc` clone's locked increment waits for pending
/// stores, so they must not miss). The misses overlap; the loop then runs at memory
/// throughput rather than latency.
pub(crate) fn collect_items<'a, T>(
    attr: &str,
    records: impl Iterator<Item = &'a Arc<Record>> + Clone,
    make: impl Fn(IndexItem, u64) -> T,
) -> Vec<T> {
    const RECORD_AHEAD: usize = 16;
    const ATTRS_AHEAD: usize = 8;
    const OUT_AHEAD: usize = 8;
    let mut out: Vec<T> = Vec::with_capacity(records.size_hint().0);
    let attrs = |n: &Arc<Record>| prefetch::span(n.attrs().as_ptr(), size_of::<Attr>());
    for r in prefetch::ahead(records, RECORD_AHEAD, prefetch::arc, ATTRS_AHEAD, attrs) {
        prefetch::write(out.as_ptr().wrapping_add(out.len() + OUT_AHEAD));
        if let Some(v) = r.attr(attr) {
            out.push(make(IndexItem { sort: v.sort_key(), rec: Arc::clone(r) }, r.hash()));
        }
    }
    out
}

/// How a probe's key compares with keys under the same attribute value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyBound<'a> {
    /// Before every key.
    Min,
    /// After every key.
    Max,
    /// This key.
    Key(&'a [u8]),
}

/// Orders `value` against the attribute value of `item` (`value` on the left).
pub(crate) fn cmp_value(attr: &str, value: &Scalar, sort: SortKey, item: &IndexItem) -> Ordering {
    match sort.cmp(&item.sort) {
        Ordering::Equal if sort.needs_full_compare() => match item.rec.attr(attr) {
            Some(v) => value.cmp(v),
            None => Ordering::Equal,
        },
        ord => ord,
    }
}

/// The direction closure for a probe `(value, key)` in an ordered index over `attr`.
pub(crate) fn probe<'a>(attr: &'a str, value: &'a Scalar, key: KeyBound<'a>) -> impl Fn(&IndexItem) -> Ordering + 'a {
    let sort = value.sort_key();
    move |item| {
        cmp_value(attr, value, sort, item).then_with(|| match key {
            KeyBound::Min => Ordering::Less,
            KeyBound::Max => Ordering::Greater,
            KeyBound::Key(k) => k.cmp(item.rec.key()),
        })
    }
}

/// An index item (owned or borrowed) with a payload, ordered by `(value, key)`, for
/// `std::collections::BinaryHeap` (wrap in `Reverse` for a min-heap).
pub(crate) struct Ranked<'a, I, P> {
    pub(crate) attr: &'a str,
    pub(crate) item: I,
    pub(crate) payload: P,
}

impl<I: Borrow<IndexItem>, P> PartialEq for Ranked<'_, I, P> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl<I: Borrow<IndexItem>, P> Eq for Ranked<'_, I, P> {}

impl<I: Borrow<IndexItem>, P> PartialOrd for Ranked<'_, I, P> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl<I: Borrow<IndexItem>, P> Ord for Ranked<'_, I, P> {
    fn cmp(&self, o: &Self) -> Ordering {
        cmp_items(self.attr, self.item.borrow(), o.item.borrow())
    }
}

/// Orders two items of an index over `attr`.
pub(crate) fn cmp_items(attr: &str, a: &IndexItem, b: &IndexItem) -> Ordering {
    match a.sort.cmp(&b.sort) {
        Ordering::Equal if a.sort.needs_full_compare() => a.rec.attr(attr).cmp(&b.rec.attr(attr)),
        ord => ord,
    }
    .then_with(|| a.rec.key().cmp(b.rec.key()))
}
