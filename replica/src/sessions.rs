//! Client sessions: exactly-once application of retried writes.
//!
//! Every write carries `(client_id, seq, acked_below)`: the client has its answers for every
//! seq below `acked_below` (as in Kafka's idempotent producer and the Raft thesis' client
//! sessions). The state machine remembers each client's results from `acked_below` up, so
//! a retry of any write still in flight is answered with its first result and not applied
//! again, however many writes one client has in flight. A write below `acked_below` can
//! only be a stale duplicate, and is refused as expired rather than risk applying twice.
//! As a bound on a misbehaving client, at most [`RESULTS_PER_CLIENT`] results are kept; a
//! write older than those is also refused. Client 0 means "no session".
//!
//! Sessions are replicated state: they are decided by applying the log, carried in
//! snapshots, and evicted deterministically (least recently written first, by log index)
//! once more than [`CLIENTS_MAX`] clients are remembered, so every replica answers a retry
//! the same way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use weft_proto::v1 as pb;

/// Most results remembered per client.
pub const RESULTS_PER_CLIENT: usize = 4096;
/// Clients remembered before the least recently written are evicted.
pub const CLIENTS_MAX: usize = 50_000;

/// One client's remembered results, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSession {
    /// Log index of the client's last write.
    pub last_index: u64,
    /// The greatest `acked_below` the client has sent.
    pub acked_below: u64,
    /// `(seq, result)`, increasing seq.
    pub results: VecDeque<(u64, Arc<pb::CommandResult>)>,
}

/// What the sessions say about an incoming write.
#[derive(Debug)]
pub enum Seen {
    /// Not seen: apply it.
    New,
    /// Already applied: answer with this.
    Duplicate(Arc<pb::CommandResult>),
    /// Older than the remembered window: refuse.
    Expired,
}

/// Every client's session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sessions {
    clients: BTreeMap<u64, ClientSession>,
}

impl Sessions {
    /// Checks a write's session before applying it.
    pub fn check(&self, s: &pb::Session) -> Seen {
        if s.client_id == 0 {
            return Seen::New;
        }
        let Some(c) = self.clients.get(&s.client_id) else {
            return Seen::New;
        };
        if let Ok(i) = c.results.binary_search_by_key(&s.seq, |(seq, _)| *seq) {
            return Seen::Duplicate(c.results[i].1.clone());
        }
        if s.seq < c.acked_below {
            return Seen::Expired;
        }
        match c.results.front() {
            Some((oldest, _)) if c.results.len() == RESULTS_PER_CLIENT && s.seq < *oldest => Seen::Expired,
            _ => Seen::New,
        }
    }

    /// Remembers a write's result.
    pub fn record(&mut self, s: &pb::Session, index: u64, result: Arc<pb::CommandResult>) {
        if s.client_id == 0 {
            return;
        }
        let c = self.clients.entry(s.client_id).or_default();
        c.last_index = index;
        c.acked_below = c.acked_below.max(s.acked_below);
        let at = c.results.partition_point(|(seq, _)| *seq < s.seq);
        c.results.insert(at, (s.seq, result));
        while c.results.front().is_some_and(|(seq, _)| *seq < c.acked_below) || c.results.len() > RESULTS_PER_CLIENT {
            c.results.pop_front();
        }
        if self.clients.len() > CLIENTS_MAX {
            self.evict();
        }
    }

    /// Drops the least recently written half of the clients (ties by client id).
    fn evict(&mut self) {
        let mut by_age: Vec<(u64, u64)> = self.clients.iter().map(|(id, c)| (c.last_index, *id)).collect();
        by_age.sort_unstable();
        for (_, id) in by_age.iter().take(self.clients.len() / 2) {
            self.clients.remove(id);
        }
    }

    /// Every client session, for snapshots.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &ClientSession)> {
        self.clients.iter()
    }

    /// Restores one client's session from a snapshot.
    pub fn insert(&mut self, client: u64, session: ClientSession) {
        self.clients.insert(client, session);
    }

    /// Number of clients remembered.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(v: u64) -> Arc<pb::CommandResult> {
        Arc::new(pb::CommandResult { version: v, outcome: None })
    }

    #[test]
    fn retry_answers_first_result_and_old_retry_expires() {
        let mut s = Sessions::default();
        let sess = |seq| pb::Session { client_id: 7, seq, acked_below: 0 };
        assert!(matches!(s.check(&sess(1)), Seen::New));
        s.record(&sess(1), 10, res(10));
        match s.check(&sess(1)) {
            Seen::Duplicate(r) => assert_eq!(r.version, 10),
            other => panic!("expected duplicate, got {other:?}"),
        }
        for seq in 2..=(RESULTS_PER_CLIENT as u64 + 1) {
            s.record(&sess(seq), 10 + seq, res(10 + seq));
        }
        assert!(matches!(s.check(&sess(1)), Seen::Expired));
        assert!(matches!(s.check(&sess(2)), Seen::Duplicate(_)));
        assert!(matches!(s.check(&sess(RESULTS_PER_CLIENT as u64 + 100)), Seen::New));
        // No session: never deduplicated.
        s.record(&pb::Session { client_id: 0, seq: 1, acked_below: 0 }, 99, res(99));
        assert!(matches!(s.check(&pb::Session { client_id: 0, seq: 1, acked_below: 0 }), Seen::New));
    }

    #[test]
    fn many_writes_in_flight_out_of_order_are_each_deduplicated() {
        let mut s = Sessions::default();
        // 4,000 writes in flight at once, applied in reverse order: none expires.
        for seq in (6_001..=10_000u64).rev() {
            let sess = pb::Session { client_id: 3, seq, acked_below: 6_001 };
            assert!(matches!(s.check(&sess), Seen::New), "seq {seq}");
            s.record(&sess, 20_000 - seq, res(seq));
        }
        // The client then acknowledges everything below 9,990: those are forgotten and a
        // stale duplicate of one is refused; the rest still deduplicate.
        s.record(&pb::Session { client_id: 3, seq: 10_001, acked_below: 9_990 }, 30_000, res(1));
        assert!(matches!(s.check(&pb::Session { client_id: 3, seq: 6_005, acked_below: 9_990 }), Seen::Expired));
        match s.check(&pb::Session { client_id: 3, seq: 9_995, acked_below: 9_990 }) {
            Seen::Duplicate(r) => assert_eq!(r.version, 9_995),
            other => panic!("expected duplicate, got {other:?}"),
        }
    }

    #[test]
    fn eviction_keeps_most_recent_clients() {
        let mut s = Sessions::default();
        for c in 1..=(CLIENTS_MAX as u64 + 1) {
            s.record(&pb::Session { client_id: c, seq: 1, acked_below: 0 }, c, res(c));
        }
        assert!(s.len() <= CLIENTS_MAX);
        let last = CLIENTS_MAX as u64 + 1;
        assert!(matches!(s.check(&pb::Session { client_id: last, seq: 1, acked_below: 0 }), Seen::Duplicate(_)));
        assert!(matches!(s.check(&pb::Session { client_id: 1, seq: 1, acked_below: 0 }), Seen::New));
    }
}
