//! Linearizability checking of register histories, one key at a time.
//!
//! A history is what concurrent clients saw: each operation's invocation and completion
//! times (from one monotonic clock) and its outcome. Operations on different keys commute,
//! so each key is checked alone (linearizability is compositional), which keeps tens of
//! thousands of operations cheap as long as each key's share is a few thousand.
//!
//! The search is Wing and Gong's, with Lowe's memoization, as Porcupine does it: walk the
//! time-ordered list of call and return events; at a call, try to linearize that operation
//! now (the register model accepts its outcome in the current state) unless the same set
//! of linearized operations has already been tried in the same state; at a return whose
//! operation is not linearized yet, backtrack. The history is linearizable when every
//! operation has been placed.
//!
//! An operation whose outcome is unknown (a write that timed out) never returns: its
//! return is after everything, so it may take effect at any point after its call, or at
//! the very end, which is the same as never. Unknown reads change nothing and are dropped.
//! An unknown write is dropped as well when no read or compare-and-set could have seen it:
//! its value is never read nor expected, and no compare-and-set whose outcome depends on
//! the state starts after it (placing it at the end is then always possible); this keeps
//! the search from branching on writes nobody observed.
//!
//! Values are `u64` ids, unique per write; `None` is the absent key (the initial state).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// What an operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Read the key.
    Read,
    /// Write this value.
    Write(u64),
    /// Write `new` if the key holds `expect` (`None`: if it is absent).
    Cas {
        /// The value the key must hold.
        expect: Option<u64>,
        /// The value written if it does.
        new: u64,
    },
}

/// What the client saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A read returned this value.
    Read(Option<u64>),
    /// A write was acknowledged.
    Written,
    /// A compare-and-set answered: applied (`true`) or condition failed (`false`).
    Cas(bool),
    /// No answer: the operation may or may not have taken effect.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Op {
    /// The client that ran it (clients run one operation at a time).
    pub client: u64,
    /// The key.
    pub key: u64,
    /// What it asked.
    pub kind: OpKind,
    /// Invocation time, nanoseconds on the history's clock.
    pub call_ns: u64,
    /// Completion time; meaningless when the outcome is unknown.
    pub return_ns: u64,
    /// What it saw.
    pub outcome: Outcome,
}

impl Op {
    fn ret(&self) -> u64 {
        if self.outcome == Outcome::Unknown { u64::MAX } else { self.return_ns }
    }
}

/// The register model: the state after `op` from `state`, or `None` if its outcome is
/// impossible there.
fn step(state: Option<u64>, op: &Op) -> Option<Option<u64>> {
    match (op.kind, op.outcome) {
        (OpKind::Read, Outcome::Read(v)) => (v == state).then_some(state),
        (OpKind::Read, _) => Some(state),
        (OpKind::Write(v), _) => Some(Some(v)),
        (OpKind::Cas { expect, new }, Outcome::Cas(true)) => (state == expect).then_some(Some(new)),
        (OpKind::Cas { expect, .. }, Outcome::Cas(false)) => (state != expect).then_some(state),
        (OpKind::Cas { expect, new }, _) => Some(if state == expect { Some(new) } else { state }),
    }
}

/// Why a key's history is not linearizable: the longest linearizable prefix found ends
/// in `state`, and `blocked` completed before it could be placed after that prefix;
/// `window` holds, in call order, every operation from the earliest write of `state` or of
/// the value `blocked` read or expected, up to `blocked`'s return (at most 64, the
/// latest kept).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// The key.
    pub key: u64,
    /// Operations placed in the longest linearizable prefix.
    pub linearized: usize,
    /// The register's value after that prefix.
    pub state: Option<u64>,
    /// The operation that could not be placed.
    pub blocked: Op,
    /// Operations concurrent with `blocked` (itself included) and the writes it involves.
    pub window: Vec<Op>,
}

/// The verdict on one history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Keys checked.
    pub keys: usize,
    /// Operations the search placed (dropped unknown operations excluded).
    pub checked: usize,
    /// Unknown operations dropped as unobservable.
    pub dropped: usize,
    /// Keys whose search ran out of budget (neither proven nor refuted).
    pub undecided: Vec<u64>,
    /// The first anomaly, if any key is not linearizable.
    pub anomaly: Option<Anomaly>,
}

impl Verdict {
    /// Linearizable: every key proven, none refuted.
    pub fn linearizable(&self) -> bool {
        self.anomaly.is_none() && self.undecided.is_empty()
    }
}

/// Most operations an anomaly's window shows.
const WINDOW_MAX: usize = 64;

/// Search steps allowed per key before it is reported undecided.
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// Checks a whole history, key by key.
pub fn check(history: &[Op], budget_per_key: u64) -> Verdict {
    let mut by_key: HashMap<u64, Vec<Op>> = HashMap::new();
    for op in history {
        by_key.entry(op.key).or_default().push(*op);
    }
    let mut keys: Vec<u64> = by_key.keys().copied().collect();
    keys.sort_unstable();
    let mut v = Verdict { keys: keys.len(), checked: 0, dropped: 0, undecided: Vec::new(), anomaly: None };
    for key in keys {
        let ops = observable(&by_key[&key]);
        v.dropped += by_key[&key].len() - ops.len();
        v.checked += ops.len();
        match check_key(key, &ops, budget_per_key) {
            KeyResult::Linearizable => {}
            KeyResult::Undecided => v.undecided.push(key),
            KeyResult::Anomaly(a) => {
                if v.anomaly.is_none() {
                    v.anomaly = Some(*a);
                }
            }
        }
    }
    v
}

/// The operations of one key that can matter (module docs).
fn observable(ops: &[Op]) -> Vec<Op> {
    let seen: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match (o.kind, o.outcome) {
            (OpKind::Read, Outcome::Read(v)) => v,
            (OpKind::Cas { expect, .. }, _) => expect,
            _ => None,
        })
        .collect();
    let state_readers: Vec<u64> = ops
        .iter()
        .filter(|o| matches!((o.kind, o.outcome), (OpKind::Cas { .. }, Outcome::Cas(false) | Outcome::Unknown)))
        .map(|o| o.call_ns)
        .collect();
    ops.iter()
        .filter(|o| match (o.kind, o.outcome) {
            (OpKind::Read, Outcome::Unknown) => false,
            (OpKind::Write(v), Outcome::Unknown) => seen.contains(&v) || state_readers.iter().any(|&c| c >= o.call_ns),
            _ => true,
        })
        .copied()
        .collect()
}

enum KeyResult {
    Linearizable,
    Undecided,
    Anomaly(Box<Anomaly>),
}

/// A set of operation indexes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The event list: calls and returns in time order (calls first on equal times, so
/// touching operations count as concurrent), doubly linked so operations can be lifted
/// out and put back.
struct Events {
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call, its return's index.
    ret_of: Vec<usize>,
    prev: Vec<usize>,
    next: Vec<usize>,
}

/// Index of the list's head sentinel; `next[HEAD]` is the first event, `END` the end.
const HEAD: usize = 0;
const END: usize = usize::MAX;

impl Events {
    fn new(ops: &[Op]) -> Self {
        let mut ev: Vec<(u64, bool, usize)> =
            ops.iter().enumerate().flat_map(|(i, o)| [(o.call_ns, true, i), (o.ret(), false, i)]).collect();
        // Calls sort before returns at equal times.
        ev.sort_by_key(|&(t, call, i)| (t, !call, i));
        let n = ev.len() + 1;
        let mut e = Events {
            op: vec![usize::MAX; n],
            is_call: vec![false; n],
            ret_of: vec![END; n],
            prev: vec![END; n],
            next: vec![END; n],
        };
        let mut call_at = vec![0; ops.len()];
        for (k, &(_, call, i)) in ev.iter().enumerate() {
            let at = k + 1;
            e.op[at] = i;
            e.is_call[at] = call;
            if call {
                call_at[i] = at;
            } else {
                e.ret_of[call_at[i]] = at;
            }
            e.prev[at] = at - 1;
            e.next[at - 1] = at;
        }
        e
    }

    fn unlink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = n;
        if n != END {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = at;
        if n != END {
            self.prev[n] = at;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret_of[call]);
    }

    /// Puts back what `lift(call)` took out (in reverse order, so the links line up).
    fn unlift(&mut self, call: usize) {
        self.relink(self.ret_of[call]);
        self.relink(call);
    }
}

fn check_key(key: u64, ops: &[Op], budget: u64) -> KeyResult {
    let mut ev = Events::new(ops);
    let mut linearized = Bits::new(ops.len());
    let mut cache: HashSet<(Bits, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state: Option<u64> = None;
    let mut deepest: Option<(usize, Option<u64>, usize)> = None;
    let mut steps = 0u64;
    let mut at = ev.next[HEAD];
    while ev.next[HEAD] != END {
        steps += 1;
        if steps > budget {
            return KeyResult::Undecided;
        }
        if at == END {
            // Unreachable for a well-formed list (a return always follows its call); treat
            // as a dead end.
            return KeyResult::Undecided;
        }
        let i = ev.op[at];
        if ev.is_call[at] {
            if let Some(next_state) = step(state, &ops[i]) {
                let mut next = linearized.clone();
                next.set(i);
                if cache.insert((next.clone(), next_state)) {
                    stack.push((at, state));
                    state = next_state;
                    linearized = next;
                    ev.lift(at);
                    at = ev.next[HEAD];
                    continue;
                }
            }
            at = ev.next[at];
        } else {
            if deepest.is_none_or(|(d, _, _)| stack.len() > d) {
                deepest = Some((stack.len(), state, i));
            }
            let Some((call, before)) = stack.pop() else {
                let (linearized, state, blocked) = deepest.unwrap_or((0, None, i));
                return KeyResult::Anomaly(Box::new(anomaly(key, ops, linearized, state, blocked)));
            };
            state = before;
            linearized.clear(ev.op[call]);
            ev.unlift(call);
            at = ev.next[call];
        }
    }
    KeyResult::Linearizable
}

fn anomaly(key: u64, ops: &[Op], linearized: usize, state: Option<u64>, blocked: usize) -> Anomaly {
    let b = ops[blocked];
    // The value the blocked operation relied on (read or expected) and the state it met.
    let relied = match (b.kind, b.outcome) {
        (OpKind::Read, Outcome::Read(v)) => v,
        (OpKind::Cas { expect, .. }, _) => expect,
        _ => None,
    };
    let wrote = |o: &Op, v: Option<u64>| match o.kind {
        OpKind::Write(w) | OpKind::Cas { new: w, .. } => v == Some(w) && o.outcome != Outcome::Cas(false),
        OpKind::Read => false,
    };
    // Everything on the key from the earliest of those writes to the blocked operation's
    // return: the writes and whatever ordered them.
    let from = ops
        .iter()
        .filter(|o| wrote(o, relied) || wrote(o, state))
        .map(|o| o.call_ns)
        .chain([b.call_ns])
        .min()
        .unwrap_or(b.call_ns);
    let mut window: Vec<Op> = ops.iter().filter(|o| o.call_ns <= b.ret() && o.ret() >= from).copied().collect();
    window.sort_by_key(|o| (o.call_ns, o.client));
    // Keep a window a person can read: the operations nearest the blocked one.
    if window.len() > WINDOW_MAX {
        window.drain(..window.len() - WINDOW_MAX);
    }
    Anomaly { key, linearized, state, blocked: b, window }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(client: u64, kind: OpKind, call_ns: u64, return_ns: u64, outcome: Outcome) -> Op {
        Op { client, key: 1, kind, call_ns, return_ns, outcome }
    }
    fn w(c: u64, v: u64, t0: u64, t1: u64) -> Op {
        op(c, OpKind::Write(v), t0, t1, Outcome::Written)
    }
    fn r(c: u64, v: Option<u64>, t0: u64, t1: u64) -> Op {
        op(c, OpKind::Read, t0, t1, Outcome::Read(v))
    }
    fn cas(c: u64, expect: Option<u64>, new: u64, t0: u64, t1: u64, ok: bool) -> Op {
        op(c, OpKind::Cas { expect, new }, t0, t1, Outcome::Cas(ok))
    }
    fn lin(h: &[Op]) -> bool {
        let v = check(h, DEFAULT_BUDGET);
        assert!(v.undecided.is_empty(), "budget ran out");
        v.linearizable()
    }

    #[test]
    fn sequential_reads_see_the_last_write() {
        assert!(lin(&[w(1, 5, 0, 1), r(2, Some(5), 2, 3), w(1, 6, 4, 5), r(2, Some(6), 6, 7)]));
        assert!(!lin(&[w(1, 5, 0, 1), w(1, 6, 2, 3), r(2, Some(5), 4, 5)]), "stale read");
        assert!(!lin(&[r(2, Some(5), 0, 1), w(1, 5, 2, 3)]), "read from the future");
        assert!(lin(&[r(2, None, 0, 1)]), "initially absent");
        assert!(!lin(&[w(1, 5, 0, 1), r(2, None, 2, 3)]), "acknowledged write lost");
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Read overlaps the write: old or new value.
        assert!(lin(&[w(1, 5, 0, 10), r(2, None, 2, 3)]));
        assert!(lin(&[w(1, 5, 0, 10), r(2, Some(5), 2, 3)]));
        // Once a read saw the new value, a later read must too.
        assert!(!lin(&[w(1, 5, 0, 10), r(2, Some(5), 2, 3), r(3, None, 4, 5)]));
        // Two overlapping writes, reads after both agree on one winner.
        assert!(lin(&[w(1, 5, 0, 10), w(2, 6, 1, 9), r(3, Some(5), 11, 12), r(3, Some(5), 13, 14)]));
        assert!(!lin(&[w(1, 5, 0, 10), w(2, 6, 1, 9), r(3, Some(5), 11, 12), r(3, Some(6), 13, 14)]));
    }

    #[test]
    fn compare_and_set() {
        assert!(lin(&[w(1, 5, 0, 1), cas(2, Some(5), 7, 2, 3, true), r(1, Some(7), 4, 5)]));
        assert!(!lin(&[w(1, 5, 0, 1), cas(2, Some(4), 7, 2, 3, true)]), "applied on the wrong value");
        assert!(!lin(&[w(1, 5, 0, 1), cas(2, Some(5), 7, 2, 3, false)]), "refused on the right value");
        assert!(lin(&[cas(2, None, 7, 0, 1, true), r(1, Some(7), 2, 3)]), "create if absent");
        // Two racing CASes from the same value: at most one wins.
        assert!(lin(&[w(1, 5, 0, 1), cas(2, Some(5), 7, 2, 9, true), cas(3, Some(5), 8, 3, 8, false)]));
        assert!(!lin(&[w(1, 5, 0, 1), cas(2, Some(5), 7, 2, 9, true), cas(3, Some(5), 8, 3, 8, true)]));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        let lost = op(1, OpKind::Write(5), 0, 0, Outcome::Unknown);
        assert!(lin(&[lost, r(2, None, 10, 11)]), "never applied");
        assert!(lin(&[lost, r(2, Some(5), 10, 11)]), "applied late");
        assert!(lin(&[lost, r(2, None, 10, 11), r(2, Some(5), 12, 13)]), "applied between the reads");
        assert!(!lin(&[lost, r(2, Some(5), 10, 11), r(2, None, 12, 13)]), "applied, then undone");
        // An unknown write nobody saw is dropped; one that a failed CAS may depend on is not.
        assert_eq!(check(&[lost, r(2, None, 10, 11)], DEFAULT_BUDGET).dropped, 1);
        let h = [w(1, 4, 0, 1), op(1, OpKind::Write(5), 2, 0, Outcome::Unknown), cas(2, Some(4), 6, 10, 11, false)];
        assert_eq!(check(&h, DEFAULT_BUDGET).dropped, 0);
        assert!(lin(&h), "the unknown write explains the refused CAS");
        let h = [w(1, 4, 0, 1), cas(2, Some(4), 6, 10, 11, false)];
        assert!(!lin(&h), "nothing explains the refused CAS");
    }

    #[test]
    fn an_anomaly_names_the_operation_and_its_window() {
        let h = [w(1, 5, 0, 1), w(1, 6, 2, 3), r(2, Some(5), 4, 5), r(3, Some(6), 4, 6)];
        let v = check(&h, DEFAULT_BUDGET);
        let a = v.anomaly.expect("stale read found");
        assert_eq!(a.blocked, h[2]);
        assert_eq!(a.state, Some(6));
        assert!(a.window.contains(&h[2]) && a.window.contains(&h[3]));
        assert!(a.window.contains(&h[0]) && a.window.contains(&h[1]), "the writes of 5 and 6 explain it");
        let h = [w(1, 4, 0, 1), w(1, 5, 2, 3), w(1, 6, 4, 5), r(2, Some(5), 6, 7)];
        let a = check(&h, DEFAULT_BUDGET).anomaly.expect("stale read found");
        assert!(!a.window.contains(&h[0]), "an earlier write nothing involves stays out");
        assert!(a.window.contains(&h[1]) && a.window.contains(&h[2]));
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut h = vec![w(1, 5, 0, 1), r(2, Some(5), 2, 3)];
        h.push(Op { key: 2, ..r(2, None, 4, 5) });
        assert!(lin(&h));
        h.push(Op { key: 2, ..r(2, Some(5), 6, 7) });
        let v = check(&h, DEFAULT_BUDGET);
        assert_eq!(v.anomaly.map(|a| a.key), Some(2));
    }

    /// A history produced by a real register: operation k takes effect at time 100 k,
    /// its call up to 49 before that and its return up to 49 after, so intervals overlap
    /// freely while the true order stays known. Entries are (kind, call lead, return lag,
    /// answer lost).
    fn simulated(seed_ops: &[(u8, u8, u8, bool)]) -> Vec<Op> {
        let mut state: Option<u64> = None;
        let mut out = Vec::new();
        for (k, &(kind, lead, lag, lost)) in seed_ops.iter().enumerate() {
            let at = 100 * (k as u64 + 1);
            let value = k as u64 + 1;
            let (kind, outcome) = match kind % 3 {
                0 => (OpKind::Read, Outcome::Read(state)),
                1 => {
                    state = Some(value);
                    (OpKind::Write(value), Outcome::Written)
                }
                _ => {
                    let expect = if lead % 2 == 0 { state } else { Some(value + 1_000_000) };
                    let ok = state == expect;
                    if ok {
                        state = Some(value);
                    }
                    (OpKind::Cas { expect, new: value }, Outcome::Cas(ok))
                }
            };
            let outcome = if lost && kind != OpKind::Read { Outcome::Unknown } else { outcome };
            let (call_ns, return_ns) = (at - u64::from(lead % 50), at + u64::from(lag % 50));
            out.push(Op { client: k as u64 % 8, key: 1, kind, call_ns, return_ns, outcome });
        }
        out
    }

    proptest! {
        #[test]
        fn real_register_histories_are_linearizable(ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), proptest::bool::weighted(0.1)), 1..300)) {
            let h = simulated(&ops);
            let v = check(&h, DEFAULT_BUDGET);
            prop_assert!(v.linearizable(), "{:?}", v.anomaly);
        }

        #[test]
        fn a_read_of_a_never_written_value_is_caught(ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), Just(false)), 1..200), pick in any::<usize>()) {
            let mut h = simulated(&ops);
            let reads: Vec<usize> = (0..h.len()).filter(|&i| h[i].kind == OpKind::Read).collect();
            prop_assume!(!reads.is_empty());
            let i = reads[pick % reads.len()];
            h[i].outcome = Outcome::Read(Some(u64::MAX));
            prop_assert!(check(&h, DEFAULT_BUDGET).anomaly.is_some());
        }
    }

    #[test]
    fn thousands_of_concurrent_operations_check_quickly() {
        // Not a timing assertion: the search must finish within its step budget, which
        // `undecided` would report.
        let ops: Vec<(u8, u8, u8, bool)> =
            (0..6000u32).map(|i| ((i % 7) as u8, (i * 7 % 97) as u8, (i * 13 % 89) as u8, i % 97 == 0)).collect();
        let v = check(&simulated(&ops), DEFAULT_BUDGET);
        assert!(v.linearizable(), "{:?} undecided {:?}", v.anomaly, v.undecided);
        assert_eq!(v.checked + v.dropped, 6000);
    }
}
