//! What a node's replicas count for its metrics.
//!
//! - [`RaftFigures`], per replica: what its raft core reports on every loop turn that
//!   [`openraft::RaftMetrics`] does not give cheaply (committed and purged indexes), the
//!   times it became its group's primary, and its read-index rounds. Plain atomics, read by
//!   the node when it is scraped; a quiesced group's core does not run, so it costs nothing.
//! - [`SnapshotStats`], per host: snapshots sent and installed (bytes, outcomes, durations,
//!   in progress), as Prometheus collectors the node registers.
//!
//! Owns no exposition and never depends on the node: the node decides the series' names
//! beyond these and serves them.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use openraft::metrics::MetricsRecorder;
use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts};

/// openraft's code for the leader state in [`MetricsRecorder::set_server_state`].
const LEADER: u8 = 3;

/// One replica's raft figures, as its core reports them.
#[derive(Debug, Default)]
pub struct RaftFigures {
    committed: AtomicU64,
    purged: AtomicU64,
    state: AtomicU8,
    became_primary: AtomicU64,
    /// Read-index rounds run for this replica's linearizable reads.
    pub(crate) read_rounds: AtomicU64,
}

impl RaftFigures {
    /// The last committed log index the core reported.
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// The last purged log index (entries at or below it are gone from the log).
    pub fn purged_index(&self) -> u64 {
        self.purged.load(Ordering::Relaxed)
    }

    /// How many times this replica became its group's primary since it opened.
    pub fn became_primary(&self) -> u64 {
        self.became_primary.load(Ordering::Relaxed)
    }

    /// Read-index rounds run for linearizable reads since it opened.
    pub fn read_rounds(&self) -> u64 {
        self.read_rounds.load(Ordering::Relaxed)
    }
}

impl MetricsRecorder for RaftFigures {
    fn record_apply_batch(&self, _: u64) {}
    fn record_append_batch(&self, _: u64) {}
    fn record_write_batch(&self, _: u64) {}
    fn set_current_term(&self, _: u64) {}
    fn set_last_log_index(&self, _: u64) {}
    fn set_committed_index(&self, index: u64) {
        self.committed.store(index, Ordering::Relaxed);
    }
    fn set_applied_index(&self, _: u64) {}
    fn set_snapshot_index(&self, _: u64) {}
    fn set_purged_index(&self, index: u64) {
        self.purged.store(index, Ordering::Relaxed);
    }
    fn set_server_state(&self, state: u8) {
        // Called on every turn of the core's loop: count the turns that change it to leader.
        if self.state.swap(state, Ordering::Relaxed) != LEADER && state == LEADER {
            self.became_primary.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn increment_vote(&self) {}
    fn increment_heartbeat(&self) {}
    fn increment_append(&self) {}
}

/// Snapshot durations' buckets, in seconds: 10 ms to 10 minutes.
const SNAPSHOT_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Snapshots one node sent and installed.
#[derive(Clone, Debug)]
pub struct SnapshotStats {
    sent_bytes: IntCounter,
    sent: IntCounterVec,
    send_seconds: Histogram,
    received_bytes: IntCounter,
    installs: IntCounterVec,
    install_seconds: Histogram,
    in_progress: IntGaugeVec,
}

impl Default for SnapshotStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Which way a snapshot goes, for [`SnapshotStats`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Direction {
    Send,
    Receive,
}

impl SnapshotStats {
    fn new() -> Self {
        // The options are constants: their names and labels are valid, so these cannot fail.
        #[allow(clippy::unwrap_used)]
        let s = SnapshotStats {
            sent_bytes: IntCounter::new("weft_snapshot_sent_bytes_total", "Snapshot bytes sent to other replicas.")
                .unwrap(),
            sent: IntCounterVec::new(
                Opts::new("weft_snapshots_sent_total", "Snapshots sent to other replicas, by outcome (ok, failed)."),
                &["outcome"],
            )
            .unwrap(),
            send_seconds: Histogram::with_opts(
                HistogramOpts::new("weft_snapshot_send_duration_seconds", "Time to send a snapshot, sent or not.")
                    .buckets(SNAPSHOT_BUCKETS.to_vec()),
            )
            .unwrap(),
            received_bytes: IntCounter::new(
                "weft_snapshot_received_bytes_total",
                "Snapshot bytes received from primaries (a replica being rebuilt).",
            )
            .unwrap(),
            installs: IntCounterVec::new(
                Opts::new("weft_snapshot_installs_total", "Snapshots received and installed, by outcome (ok, failed)."),
                &["outcome"],
            )
            .unwrap(),
            install_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "weft_snapshot_install_duration_seconds",
                    "Time from a snapshot's first chunk to its install, installed or not.",
                )
                .buckets(SNAPSHOT_BUCKETS.to_vec()),
            )
            .unwrap(),
            in_progress: IntGaugeVec::new(
                Opts::new("weft_snapshots_in_progress", "Snapshots being sent or received now, by direction."),
                &["direction"],
            )
            .unwrap(),
        };
        // Both directions and outcomes exist from the start, at zero.
        for d in ["send", "receive"] {
            s.in_progress.with_label_values(&[d]);
        }
        for o in ["ok", "failed"] {
            s.sent.with_label_values(&[o]);
            s.installs.with_label_values(&[o]);
        }
        s
    }

    /// The collectors, for the node's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.sent_bytes.clone()),
            Box::new(self.sent.clone()),
            Box::new(self.send_seconds.clone()),
            Box::new(self.received_bytes.clone()),
            Box::new(self.installs.clone()),
            Box::new(self.install_seconds.clone()),
            Box::new(self.in_progress.clone()),
        ]
    }

    /// Bytes of a snapshot sent.
    pub(crate) fn sent_bytes(&self, n: usize) {
        self.sent_bytes.inc_by(n as u64);
    }

    /// Bytes of a snapshot received.
    pub(crate) fn received_bytes(&self, n: u64) {
        self.received_bytes.inc_by(n);
    }

    /// A snapshot starts going `direction`: counted as failed unless [`Transfer::ok`] is
    /// called before the guard drops.
    pub(crate) fn start(&self, direction: Direction) -> Transfer {
        let label = match direction {
            Direction::Send => "send",
            Direction::Receive => "receive",
        };
        self.in_progress.with_label_values(&[label]).inc();
        Transfer { stats: self.clone(), direction, started: Instant::now(), ok: false }
    }
}

/// One snapshot on its way: in progress until dropped, then counted by outcome and timed.
#[derive(Debug)]
pub(crate) struct Transfer {
    stats: SnapshotStats,
    direction: Direction,
    started: Instant,
    ok: bool,
}

impl Transfer {
    /// It went through.
    pub(crate) fn ok(mut self) {
        self.ok = true;
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        let outcome = if self.ok { "ok" } else { "failed" };
        let seconds = self.started.elapsed().as_secs_f64();
        let s = &self.stats;
        match self.direction {
            Direction::Send => {
                s.in_progress.with_label_values(&["send"]).dec();
                s.sent.with_label_values(&[outcome]).inc();
                s.send_seconds.observe(seconds);
            }
            Direction::Receive => {
                s.in_progress.with_label_values(&["receive"]).dec();
                s.installs.with_label_values(&[outcome]).inc();
                s.install_seconds.observe(seconds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn becoming_primary_counts_transitions_not_turns() {
        let f = RaftFigures::default();
        for s in [1, 1, 2, LEADER, LEADER, LEADER, 1, 2, LEADER, 4] {
            f.set_server_state(s);
        }
        assert_eq!(f.became_primary(), 2);
    }

    #[test]
    fn a_transfer_is_failed_unless_it_says_ok() {
        let s = SnapshotStats::default();
        s.start(Direction::Receive).ok();
        drop(s.start(Direction::Receive));
        drop(s.start(Direction::Send));
        assert_eq!(s.installs.with_label_values(&["ok"]).get(), 1);
        assert_eq!(s.installs.with_label_values(&["failed"]).get(), 1);
        assert_eq!(s.sent.with_label_values(&["failed"]).get(), 1);
        assert_eq!(s.in_progress.with_label_values(&["receive"]).get(), 0);
        assert_eq!(s.install_seconds.get_sample_count(), 2);
    }
}
