//! The change feed of one replica: the committed changes it applied, kept for a while so
//! that a watcher can read them in commit order and resume after a break.
//!
//! Every replica keeps its own history (all of them apply every committed entry), so a
//! watch is served by whichever replica it reaches and survives a primary change: the new
//! primary, or any follower, holds the same versions. The history is bounded in bytes
//! ([`History::new`]); the oldest entries go first, and a watch asking for versions older
//! than what is left is told so ([`Compacted`]) with the oldest version still kept, as
//! etcd answers a compacted revision. A replica built from a snapshot keeps changes from
//! the snapshot's version on only.
//!
//! Owns no lock and no task: the state machine holds it under its state lock and records
//! each applied entry's changes, already in their wire form (`weft.v1.Change`), so that a
//! hundred watchers of a busy partition share one conversion; the node's watch streams
//! copy entries out.
//! The history of a replica never written to allocates nothing; one that was written keeps
//! its last changes up to the bound (per replica: nothing bounds a node's total yet).

use std::collections::VecDeque;
use std::sync::Arc;

use weft_proto::v1 as pb;

/// One committed change, in the form a watcher receives it: built once when the entry
/// applies, its keys and values sharing the log entry's buffers, and cloned (reference
/// counts) for each watcher.
pub type Change = pb::Change;

/// The changes an applied batch made (`ops` as proposed, all applied), at `version`.
pub(crate) fn of_ops<'a>(
    version: u64,
    ops: impl IntoIterator<Item = &'a pb::Op> + 'a,
) -> impl Iterator<Item = Change> + 'a {
    ops.into_iter().filter_map(move |op| {
        use pb::change::Kind;
        let (table, kind) = match op.kind.as_ref()? {
            pb::op::Kind::Put(p) => (
                p.table.clone(),
                Kind::Put(pb::Record { key: p.key.clone(), value: p.value.clone(), attrs: p.attrs.clone(), version }),
            ),
            pb::op::Kind::Delete(d) => (d.table.clone(), Kind::Delete(d.key.clone())),
        };
        Some(Change { version, table, kind: Some(kind) })
    })
}

/// A change to a whole table (`created` or dropped) at `version`.
pub(crate) fn of_table(version: u64, table: &str, created: bool) -> Change {
    use pb::change::Kind;
    let kind = if created { Kind::TableCreated(true) } else { Kind::TableDropped(true) };
    Change { version, table: table.to_string(), kind: Some(kind) }
}

/// The key a change is about, for a record change.
pub fn key_of(c: &Change) -> Option<&[u8]> {
    match c.kind.as_ref()? {
        pb::change::Kind::Put(r) => Some(&r.key),
        pb::change::Kind::Delete(k) => Some(k),
        _ => None,
    }
}

/// Roughly the bytes a change holds (what the history's bound counts).
fn bytes_of(c: &Change) -> usize {
    let attrs = |a: &[pb::Attr]| {
        a.iter()
            .map(|a| {
                a.name.len()
                    + 32
                    + match a.value.as_ref().and_then(|v| v.kind.as_ref()) {
                        Some(pb::scalar::Kind::Str(s)) => s.len(),
                        Some(pb::scalar::Kind::Bytes(b)) => b.len(),
                        _ => 0,
                    }
            })
            .sum::<usize>()
    };
    96 + c.table.len()
        + match c.kind.as_ref() {
            Some(pb::change::Kind::Put(r)) => r.key.len() + r.value.len() + attrs(&r.attrs),
            Some(pb::change::Kind::Delete(k)) => k.len(),
            _ => 0,
        }
}

/// The changes of one applied log entry: every change at one version.
#[derive(Debug, PartialEq)]
pub struct Applied {
    /// The entry's log index.
    pub version: u64,
    /// Its changes, in the order they applied.
    pub changes: Vec<Change>,
    /// Roughly the bytes they hold.
    pub bytes: usize,
}

/// A watch asked for versions this replica no longer keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("changes before version {oldest} are no longer kept")]
pub struct Compacted {
    /// The oldest version whose changes are all still kept.
    pub oldest: u64,
    /// The history's generation (see [`History::generation`]).
    pub generation: u64,
}

/// A replica's recent changes, oldest first, bounded in bytes.
#[derive(Debug)]
pub struct History {
    entries: VecDeque<(Arc<Applied>, usize)>,
    /// Every change of a version above this is kept (the version of the last entry
    /// dropped, or the state the history started from).
    floor: u64,
    bytes: usize,
    bytes_max: usize,
    /// How many times it started again from a snapshot.
    generation: u64,
}

impl History {
    /// An empty history of a replica whose state is at `version`, holding at most about
    /// `bytes_max` bytes of changes (always at least the newest entry).
    pub fn new(version: u64, bytes_max: usize) -> Self {
        History { entries: VecDeque::new(), floor: version, bytes: 0, bytes_max, generation: 0 }
    }

    /// Records an entry's changes; drops the oldest entries past the bound.
    pub fn record(&mut self, version: u64, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let bytes = changes.iter().map(bytes_of).sum::<usize>();
        self.entries.push_back((Arc::new(Applied { version, changes, bytes }), bytes));
        self.bytes += bytes;
        while self.bytes > self.bytes_max && self.entries.len() > 1 {
            if let Some((gone, b)) = self.entries.pop_front() {
                self.bytes -= b;
                self.floor = gone.version;
            }
        }
    }

    /// Starts again from a state at `version` (a snapshot installed): nothing before it
    /// is known.
    pub fn reset(&mut self, version: u64) {
        let generation = self.generation + 1;
        *self = History::new(version, self.bytes_max);
        self.generation = generation;
    }

    /// How many times it started again from a snapshot: a watch that finds versions gone
    /// in a later generation than it started in did not fall behind; its replica's
    /// history was replaced (other replicas may still hold what it needs).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The oldest version whose changes are all kept.
    pub fn oldest(&self) -> u64 {
        self.floor + 1
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The most bytes it holds (beyond one entry larger than that).
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// The entries at versions `from` and above, in order, as many whole entries as fit
    /// in about `changes_max` changes (at least one); empty when none has applied yet.
    pub fn since(&self, from: u64, changes_max: usize) -> Result<Vec<Arc<Applied>>, Compacted> {
        if from <= self.floor {
            return Err(Compacted { oldest: self.oldest(), generation: self.generation });
        }
        let start = self.entries.partition_point(|(e, _)| e.version < from);
        let mut out = Vec::new();
        let mut n = 0;
        for (e, _) in self.entries.range(start..) {
            if !out.is_empty() && n + e.changes.len() > changes_max {
                break;
            }
            n += e.changes.len();
            out.push(e.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(key: &str, value_len: usize) -> Change {
        let record =
            pb::Record { key: key.as_bytes().to_vec().into(), value: vec![0; value_len].into(), ..Default::default() };
        Change { version: 0, table: "t".into(), kind: Some(pb::change::Kind::Put(record)) }
    }

    #[test]
    fn since_gives_whole_entries_from_a_version_and_refuses_what_was_dropped() {
        let mut h = History::new(0, 10_000);
        assert_eq!(h.since(1, 10).map(|v| v.len()), Ok(0), "nothing applied yet: nothing to give");
        h.record(3, vec![put("a", 10), put("b", 10)]);
        h.record(5, vec![put("c", 10)]);
        h.record(6, Vec::new());
        let versions = |v: Vec<Arc<Applied>>| v.iter().map(|e| e.version).collect::<Vec<_>>();
        assert_eq!(h.since(1, 10).map(versions), Ok(vec![3, 5]));
        assert_eq!(h.since(4, 10).map(versions), Ok(vec![5]));
        assert_eq!(h.since(6, 10).map(versions), Ok(vec![]));
        // At least one whole entry, even past the cap; no entry split.
        assert_eq!(h.since(1, 1).map(versions), Ok(vec![3]));
        assert_eq!(h.since(0, 10), Err(Compacted { oldest: 1, generation: 0 }));
        // Past the byte bound the oldest go, and asking for them says where the kept start.
        h.record(7, vec![put("d", 9_850)]);
        assert_eq!(h.since(1, 10), Err(Compacted { oldest: 6, generation: 0 }));
        assert_eq!(h.since(6, 10).map(versions), Ok(vec![7]));
        assert_eq!(h.oldest(), 6);
        // The newest entry stays even alone over the bound.
        h.record(9, vec![put("e", 20_000)]);
        assert_eq!(h.since(8, 10).map(versions), Ok(vec![9]));
        h.reset(100);
        assert_eq!(h.since(100, 10), Err(Compacted { oldest: 101, generation: 1 }));
        assert_eq!(h.since(101, 10).map(versions), Ok(vec![]));
    }

    proptest! {
        /// Against a model that keeps everything: what `since` gives is exactly the model's
        /// entries from that version, or a refusal naming an oldest version above it, and
        /// the bytes held stay within the bound plus one entry.
        #[test]
        fn since_matches_a_model(
            sizes in proptest::collection::vec((1u64..4, proptest::collection::vec(0usize..400, 0..4)), 1..60),
            from in 0u64..200,
            bound in 200usize..3_000,
        ) {
            let mut h = History::new(0, bound);
            let mut model: Vec<(u64, usize)> = Vec::new();
            let mut version = 0;
            let mut newest = 0;
            for (step, values) in sizes {
                version += step;
                let changes: Vec<Change> = values.iter().map(|n| put("k", *n)).collect();
                if !changes.is_empty() {
                    model.push((version, changes.len()));
                }
                if !changes.is_empty() {
                    newest = changes.iter().map(bytes_of).sum::<usize>();
                }
                h.record(version, changes);
                prop_assert!(h.bytes() <= bound.max(newest), "{} held over {}", h.bytes(), bound);
            }
            match h.since(from, usize::MAX) {
                Ok(got) => {
                    prop_assert!(from >= h.oldest());
                    let want: Vec<(u64, usize)> = model.iter().filter(|(v, _)| *v >= from).copied().collect();
                    let got: Vec<(u64, usize)> = got.iter().map(|e| (e.version, e.changes.len())).collect();
                    prop_assert_eq!(got, want);
                }
                Err(Compacted { oldest, .. }) => {
                    prop_assert!(from < oldest);
                    prop_assert_eq!(oldest, h.oldest());
                    // Everything from `oldest` on is there.
                    let kept = h.since(oldest, usize::MAX).map(|v| v.len()).unwrap_or(usize::MAX);
                    prop_assert_eq!(kept, model.iter().filter(|(v, _)| *v >= oldest).count());
                }
            }
        }
    }
}
