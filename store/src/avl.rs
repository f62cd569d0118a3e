//! A persistent AVL tree of `Arc` nodes: the primary tree and every ordered index.
//!
//! Owns balancing, seek-based iteration and O(n) bulk build; knows nothing of records.
//! Items are ordered by a caller-supplied *direction* closure, `dir(item)`, which returns
//! how the probe compares to `item` (`Less`: the probe sorts before `item`). The tree never
//! compares two items itself except in [`Tree::check_invariants`].
//!
//! Mutation goes through [`Arc::make_mut`]: a node nobody else holds is changed in place,
//! a node shared with a snapshot is copied first, so a write after a snapshot copies only
//! the O(log n) nodes on its path ("path copying"). A snapshot is [`Tree::clone`]: one
//! reference-count increment, O(1).
//!
//! Each node stores the heights of both its subtrees (`lh`, `rh`), so rebalancing after an
//! insert reads only nodes on the path: recomputing a height never touches a cold sibling.
//!
//! Invariants (checked by [`Tree::check_invariants`] after every mutation in debug builds
//! of the property tests): in-order sequence strictly increasing; every node's `lh`/`rh`
//! equal its subtrees' real heights; `|lh - rh| <= 1`; `len` equals the node count.

use std::cmp::Ordering;
use std::sync::Arc;

type Link<T> = Option<Arc<Node<T>>>;

#[derive(Clone, Debug)]
struct Node<T> {
    item: T,
    left: Link<T>,
    right: Link<T>,
    lh: u8,
    rh: u8,
}

impl<T> Node<T> {
    fn leaf(item: T) -> Self {
        Node { item, left: None, right: None, lh: 0, rh: 0 }
    }

    fn height(&self) -> u8 {
        1 + self.lh.max(self.rh)
    }

    fn unbalanced(&self) -> bool {
        self.lh.abs_diff(self.rh) > 1
    }
}

/// Bytes one tree node holds on the heap (its `Arc` allocation): what memory accounting
/// charges per item.
pub(crate) const fn node_bytes<T>() -> usize {
    // ArcInner = strong + weak counters + the node.
    2 * std::mem::size_of::<usize>() + std::mem::size_of::<Node<T>>()
}

/// The persistent AVL tree. Cloning it is an O(1) consistent snapshot.
#[derive(Clone, Debug)]
pub(crate) struct Tree<T> {
    root: Link<T>,
    len: usize,
}

impl<T> Default for Tree<T> {
    fn default() -> Self {
        Tree { root: None, len: 0 }
    }
}

/// Where a seek starts, relative to a probe described by a direction closure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seek {
    /// From the first (or, reversed, the last) item.
    Edge,
    /// From the first item `>=` the probe (reversed: the last item `<=` it).
    Inclusive,
    /// From the first item `>` the probe (reversed: the last item `<` it).
    Exclusive,
}

impl<T: Clone> Tree<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The item equal to the probe.
    pub(crate) fn get(&self, dir: impl Fn(&T) -> Ordering) -> Option<&T> {
        let mut cur = self.root.as_deref();
        while let Some(node) = cur {
            match dir(&node.item) {
                Ordering::Equal => return Some(&node.item),
                Ordering::Less => cur = node.left.as_deref(),
                Ordering::Greater => cur = node.right.as_deref(),
            }
        }
        None
    }

    /// Inserts `item` where `dir` places it; an equal item is replaced and returned.
    pub(crate) fn insert(&mut self, item: T, dir: impl Fn(&T) -> Ordering) -> Option<T> {
        let (old, _) = insert_at(&mut self.root, item, &dir);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes and returns the item equal to the probe.
    pub(crate) fn remove(&mut self, dir: impl Fn(&T) -> Ordering) -> Option<T> {
        let (old, _) = remove_at(&mut self.root, &dir);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Builds a balanced tree from `items`, which must already be in strictly increasing
    /// order (the caller checks). O(n); nodes are allocated in order, so scans of a freshly
    /// built tree walk memory almost sequentially.
    pub(crate) fn from_sorted(items: Vec<T>) -> Self {
        let len = items.len();
        let mut it = items.into_iter();
        let (root, _) = build(len, &mut it);
        Tree { root, len }
    }

    /// Iterates from a seek position; `dir` describes the probe (ignored for [`Seek::Edge`]).
    pub(crate) fn iter_from(&self, seek: Seek, reverse: bool, dir: impl Fn(&T) -> Ordering) -> Iter<'_, T> {
        let mut iter = Iter { stack: Vec::with_capacity(48), reverse };
        let mut cur = self.root.as_deref();
        while let Some(node) = cur {
            let take = match seek {
                Seek::Edge => true,
                // Forward: keep nodes at or after the probe; reversed: at or before it.
                Seek::Inclusive => {
                    let ord = dir(&node.item);
                    if reverse { ord != Ordering::Less } else { ord != Ordering::Greater }
                }
                Seek::Exclusive => {
                    let ord = dir(&node.item);
                    if reverse { ord == Ordering::Greater } else { ord == Ordering::Less }
                }
            };
            match (take, reverse) {
                (true, false) => {
                    iter.stack.push(node);
                    cur = node.left.as_deref();
                }
                (true, true) => {
                    iter.stack.push(node);
                    cur = node.right.as_deref();
                }
                (false, false) => cur = node.right.as_deref(),
                (false, true) => cur = node.left.as_deref(),
            }
        }
        iter
    }

    /// A read-only walk down the path to a probe, one level per [`PathWalk::step`].
    pub(crate) fn walk(&self) -> PathWalk<'_, T> {
        PathWalk { node: self.root.as_deref() }
    }

    /// All items in order.
    pub(crate) fn iter(&self) -> Iter<'_, T> {
        self.iter_from(Seek::Edge, false, |_| Ordering::Equal)
    }

    /// Panics unless every invariant in the module docs holds; `cmp` orders two items.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self, cmp: impl Fn(&T, &T) -> Ordering) {
        fn walk<T>(link: &Link<T>, cmp: &impl Fn(&T, &T) -> Ordering, count: &mut usize) -> u8 {
            let Some(node) = link else { return 0 };
            *count += 1;
            let lh = walk(&node.left, cmp, count);
            let rh = walk(&node.right, cmp, count);
            assert_eq!(node.lh, lh, "stored left height is stale");
            assert_eq!(node.rh, rh, "stored right height is stale");
            assert!(!node.unbalanced(), "AVL balance violated: {lh} vs {rh}");
            if let Some(l) = &node.left {
                assert_eq!(cmp(max_item(l), &node.item), Ordering::Less, "left subtree out of order");
            }
            if let Some(r) = &node.right {
                assert_eq!(cmp(min_item(r), &node.item), Ordering::Greater, "right subtree out of order");
            }
            node.height()
        }
        fn min_item<T>(mut n: &Node<T>) -> &T {
            while let Some(l) = n.left.as_deref() {
                n = l;
            }
            &n.item
        }
        fn max_item<T>(mut n: &Node<T>) -> &T {
            while let Some(r) = n.right.as_deref() {
                n = r;
            }
            &n.item
        }
        let mut count = 0;
        walk(&self.root, &cmp, &mut count);
        assert_eq!(count, self.len, "len disagrees with node count");
    }

    /// Height of the tree (0 when empty).
    #[cfg(test)]
    pub(crate) fn height(&self) -> u8 {
        self.root.as_ref().map_or(0, |n| n.height())
    }
}

/// A read-only descent toward a probe. Stepping several walks in turn pulls several trees'
/// paths into cache side by side, their misses overlapping, before the writes descend them
/// with `make_mut`, whose locked compare-exchange would otherwise meet each miss alone.
pub(crate) struct PathWalk<'a, T> {
    node: Option<&'a Node<T>>,
}

impl<T> PathWalk<'_, T> {
    /// Moves one level down; false once the walk has ended.
    pub(crate) fn step(&mut self, dir: &impl Fn(&T) -> Ordering) -> bool {
        let Some(n) = self.node else { return false };
        self.node = match dir(&n.item) {
            Ordering::Equal => None,
            Ordering::Less => n.left.as_deref(),
            Ordering::Greater => n.right.as_deref(),
        };
        true
    }
}

/// In-order iterator over a tree (forward or reversed), holding the path as a stack.
pub(crate) struct Iter<'a, T> {
    stack: Vec<&'a Node<T>>,
    reverse: bool,
}

/// A copy walks on from the same place (prefetching passes run copies ahead).
impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter { stack: self.stack.clone(), reverse: self.reverse }
    }
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        let node = self.stack.pop()?;
        let mut cur = if self.reverse { node.left.as_deref() } else { node.right.as_deref() };
        while let Some(n) = cur {
            self.stack.push(n);
            cur = if self.reverse { n.right.as_deref() } else { n.left.as_deref() };
        }
        Some(&node.item)
    }
}

/// Returns the replaced item (if the probe was present) and the new subtree height.
fn insert_at<T: Clone>(link: &mut Link<T>, item: T, dir: &impl Fn(&T) -> Ordering) -> (Option<T>, u8) {
    let Some(arc) = link else {
        *link = Some(Arc::new(Node::leaf(item)));
        return (None, 1);
    };
    let node = Arc::make_mut(arc);
    match dir(&node.item) {
        Ordering::Equal => {
            let old = std::mem::replace(&mut node.item, item);
            return (Some(old), node.height());
        }
        Ordering::Less => {
            let (old, h) = insert_at(&mut node.left, item, dir);
            node.lh = h;
            if old.is_some() {
                return (old, node.height());
            }
        }
        Ordering::Greater => {
            let (old, h) = insert_at(&mut node.right, item, dir);
            node.rh = h;
            if old.is_some() {
                return (old, node.height());
            }
        }
    }
    if !node.unbalanced() {
        return (None, node.height());
    }
    (None, rebalance(link))
}

/// Returns the removed item and the new subtree height.
fn remove_at<T: Clone>(link: &mut Link<T>, dir: &impl Fn(&T) -> Ordering) -> (Option<T>, u8) {
    let Some(arc) = link else { return (None, 0) };
    let node = Arc::make_mut(arc);
    let removed = match dir(&node.item) {
        Ordering::Less => {
            let (old, h) = remove_at(&mut node.left, dir);
            if old.is_none() {
                return (None, node.height());
            }
            node.lh = h;
            old
        }
        Ordering::Greater => {
            let (old, h) = remove_at(&mut node.right, dir);
            if old.is_none() {
                return (None, node.height());
            }
            node.rh = h;
            old
        }
        Ordering::Equal => match (node.left.is_some(), node.right.is_some()) {
            (true, true) => {
                let (successor, h) = remove_min(&mut node.right);
                node.rh = h;
                successor.map(|s| std::mem::replace(&mut node.item, s))
            }
            (false, _) => {
                let child = node.right.take();
                let h = node.rh;
                return (take_item(link.take(), child, link), h);
            }
            (true, false) => {
                let child = node.left.take();
                let h = node.lh;
                return (take_item(link.take(), child, link), h);
            }
        },
    };
    let node_unbalanced = link.as_deref().is_some_and(Node::unbalanced);
    let h = if node_unbalanced { rebalance(link) } else { link.as_deref().map_or(0, Node::height) };
    (removed, h)
}

/// Replaces a removed node by its only child and hands back the node's item.
fn take_item<T: Clone>(node: Link<T>, child: Link<T>, link: &mut Link<T>) -> Option<T> {
    *link = child;
    node.map(|arc| Arc::unwrap_or_clone(arc).item)
}

/// Removes the smallest item of a non-empty subtree; returns it and the new height.
fn remove_min<T: Clone>(link: &mut Link<T>) -> (Option<T>, u8) {
    let Some(arc) = link else { return (None, 0) };
    let node = Arc::make_mut(arc);
    if node.left.is_none() {
        let child = node.right.take();
        let h = node.rh;
        return (take_item(link.take(), child, link), h);
    }
    let (min, h) = remove_min(&mut node.left);
    node.lh = h;
    let unbalanced = node.unbalanced();
    let h = if unbalanced { rebalance(link) } else { node.height() };
    (min, h)
}

/// Restores balance at `link` (whose children are balanced and differ in height by 2);
/// returns the subtree's new height.
fn rebalance<T: Clone>(link: &mut Link<T>) -> u8 {
    let Some(arc) = link else { return 0 };
    let node = Arc::make_mut(arc);
    if node.lh > node.rh {
        // Left-right case: turn it into left-left first.
        if let Some(l) = node.left.as_deref()
            && l.rh > l.lh
        {
            node.lh = rotate_left(&mut node.left);
        }
        rotate_right(link)
    } else {
        if let Some(r) = node.right.as_deref()
            && r.lh > r.rh
        {
            node.rh = rotate_right(&mut node.right);
        }
        rotate_left(link)
    }
}

/// `x(y(a, b), c)` becomes `y(a, x(b, c))`; returns the new height.
fn rotate_right<T: Clone>(link: &mut Link<T>) -> u8 {
    let Some(mut x_arc) = link.take() else {
        return 0;
    };
    let x = Arc::make_mut(&mut x_arc);
    let Some(mut y_arc) = x.left.take() else {
        *link = Some(x_arc);
        return link.as_deref().map_or(0, Node::height);
    };
    let y = Arc::make_mut(&mut y_arc);
    x.left = y.right.take();
    x.lh = y.rh;
    y.rh = x.height();
    y.right = Some(x_arc);
    let h = y.height();
    *link = Some(y_arc);
    h
}

/// `x(a, y(b, c))` becomes `y(x(a, b), c)`; returns the new height.
fn rotate_left<T: Clone>(link: &mut Link<T>) -> u8 {
    let Some(mut x_arc) = link.take() else {
        return 0;
    };
    let x = Arc::make_mut(&mut x_arc);
    let Some(mut y_arc) = x.right.take() else {
        *link = Some(x_arc);
        return link.as_deref().map_or(0, Node::height);
    };
    let y = Arc::make_mut(&mut y_arc);
    x.right = y.left.take();
    x.rh = y.lh;
    y.lh = x.height();
    y.left = Some(x_arc);
    let h = y.height();
    *link = Some(y_arc);
    h
}

fn build<T>(n: usize, it: &mut impl Iterator<Item = T>) -> (Link<T>, u8) {
    if n == 0 {
        return (None, 0);
    }
    let nl = (n - 1) / 2;
    let (left, lh) = build(nl, it);
    let Some(item) = it.next() else {
        return (left, lh);
    };
    let (right, rh) = build(n - 1 - nl, it);
    let node = Node { item, left, right, lh, rh };
    let h = node.height();
    (Some(Arc::new(node)), h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn dir(k: u32) -> impl Fn(&(u32, u32)) -> Ordering {
        move |item| k.cmp(&item.0)
    }

    fn check(t: &Tree<(u32, u32)>, model: &BTreeMap<u32, u32>) {
        t.check_invariants(|a, b| a.0.cmp(&b.0));
        let got: Vec<_> = t.iter().copied().collect();
        let want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, want);
    }

    type Snap = (Tree<(u32, u32)>, BTreeMap<u32, u32>);

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
        Snapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..200, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u32..200).prop_map(Op::Remove),
            1 => Just(Op::Snapshot),
        ]
    }

    proptest! {
        /// The tree holds the same contents, in the same order, as a BTreeMap after every
        /// operation, stays balanced, and snapshots taken along the way never change.
        #[test]
        fn matches_btreemap(ops in proptest::collection::vec(op(), 1..400)) {
            let mut t = Tree::default();
            let mut model = BTreeMap::new();
            let mut snaps: Vec<Snap> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let old = t.insert((k, v), dir(k)).map(|(_, v)| v);
                        prop_assert_eq!(old, model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        let old = t.remove(dir(k)).map(|(_, v)| v);
                        prop_assert_eq!(old, model.remove(&k));
                    }
                    Op::Snapshot => snaps.push((t.clone(), model.clone())),
                }
                check(&t, &model);
                prop_assert_eq!(t.get(dir(7)).map(|i| i.1), model.get(&7).copied());
            }
            for (snap, m) in &snaps {
                check(snap, m);
            }
        }

        /// Seeks land where BTreeMap's range would start, in both directions.
        #[test]
        fn seek_matches_btreemap_range(keys in proptest::collection::btree_set(0u32..500, 0..200),
                                        probe in 0u32..500, reverse: bool, exclusive: bool) {
            let model: BTreeMap<u32, u32> = keys.iter().map(|k| (*k, *k)).collect();
            let t = Tree::from_sorted(model.iter().map(|(k, v)| (*k, *v)).collect());
            check(&t, &model);
            let seek = if exclusive { Seek::Exclusive } else { Seek::Inclusive };
            let got: Vec<u32> = t.iter_from(seek, reverse, dir(probe)).map(|i| i.0).collect();
            let want: Vec<u32> = match (reverse, exclusive) {
                (false, false) => model.range(probe..).map(|(k, _)| *k).collect(),
                (false, true) => model.range(probe + 1..).map(|(k, _)| *k).collect(),
                (true, false) => model.range(..=probe).rev().map(|(k, _)| *k).collect(),
                (true, true) => model.range(..probe).rev().map(|(k, _)| *k).collect(),
            };
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn sequential_inserts_stay_logarithmic() {
        let mut t = Tree::default();
        for k in 0..100_000u32 {
            t.insert((k, k), dir(k));
        }
        t.check_invariants(|a, b| a.0.cmp(&b.0));
        // An AVL tree of n nodes is at most 1.44 log2(n+2) high: 24 for 100k.
        assert!(t.height() <= 24, "height {}", t.height());
        for k in (0..100_000u32).step_by(2) {
            assert!(t.remove(dir(k)).is_some());
        }
        t.check_invariants(|a, b| a.0.cmp(&b.0));
        assert_eq!(t.len(), 50_000);
    }

    #[test]
    fn writes_after_snapshot_copy_the_path_only() {
        let mut t = Tree::from_sorted((0..1000u32).map(|k| (k, k)).collect());
        let snap = t.clone();
        t.insert((5, 99), dir(5));
        // Untouched subtrees are still shared with the snapshot.
        let (Some(a), Some(b)) = (&t.root, &snap.root) else { panic!("empty") };
        assert!(!Arc::ptr_eq(a, b), "root must be copied");
        let shared = match (a.right.as_ref(), b.right.as_ref()) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        };
        assert!(shared, "the right subtree was not on the write path and must stay shared");
        assert_eq!(snap.get(dir(5)).map(|i| i.1), Some(5));
        assert_eq!(t.get(dir(5)).map(|i| i.1), Some(99));
    }
}
