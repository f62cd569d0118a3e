//! Batches a primary's concurrent linearizable reads into shared read-index rounds.
//!
//! Every linearizable read of a replica waits at its gate. A gate task takes every read
//! queued so far and runs one read-index round for all of them: the round starts after each
//! of those reads arrived, so it confirms leadership with a quorum acknowledgement of a
//! message sent after their arrival and waits until the state machine has applied the
//! commit index of that moment, which covers every write acknowledged before them. Reads
//! that arrive while a round runs wait for the next one (etcd's read loop and TiKV's
//! read-index batching make the same argument). Under load one round serves many reads;
//! alone, a read waits for exactly one round.
//!
//! Which message a quorum acknowledges does not matter to that argument, only when it was
//! sent (openraft's clock progress: `max_quorum_ack_age` zero). While the primary's
//! proposer has entries in flight, the leader is about to send appends and commit updates
//! to its followers anyway, so the round asks for no heartbeat of its own and lets the
//! followers' answers to those confirm it ([`PIGGYBACK_WAIT`] at most; then it sends the
//! heartbeat after all). With no writes in flight it sends a heartbeat at once, as
//! `ReadPolicy::ReadIndex` does. Measured on YCSB A (durable, 4 nodes, 2 cores): the
//! heartbeat rounds had cost more CPU than the writes' own replication. No lease and no
//! clock bound are assumed either way.

use std::sync::Arc;
use std::time::Duration;

use openraft::LinearizerOption;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use tokio::sync::{mpsc, oneshot};

use crate::proposer::InFlight;
use crate::state_machine::Raft;
use crate::stats::RaftFigures;
use crate::types::TypeConfig;

/// How long a round that waits for the writes' replication messages may wait before it
/// sends a heartbeat of its own: a few replication round trips under load. It only runs
/// out when the last entries in flight committed just before the round began.
pub const PIGGYBACK_WAIT: Duration = Duration::from_millis(10);

/// What a read can fail with: openraft's answer to the round that carried it.
pub type ReadError = RaftError<TypeConfig, LinearizableReadError<TypeConfig>>;

type Reply = oneshot::Sender<Result<(), ReadError>>;

/// Reads waiting at the gate at most. Past it [`ReadGate::ensure`] waits for room:
/// back-pressure on the call that brought the read. One round serves every read queued
/// when it starts, so the queue drains a round at a time.
pub const QUEUE_MAX: usize = 4096;

/// The linearizable-read gate of one replica.
#[derive(Clone, Debug)]
pub struct ReadGate {
    tx: mpsc::Sender<Reply>,
}

impl ReadGate {
    /// Starts the gate task of `raft`, whose proposer has `writes` in flight; it ends when
    /// every handle is dropped.
    pub fn start(raft: Raft, writes: InFlight, figures: Arc<RaftFigures>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(raft, rx, writes, figures));
        ReadGate { tx }
    }

    /// Returns once a read that arrived now may be served from this replica's applied
    /// state (leadership confirmed by a quorum, commit index applied).
    pub async fn ensure(&self) -> Result<(), ReadError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.tx.send(reply).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Reply>, writes: InFlight, figures: Arc<RaftFigures>) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        figures.read_rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let piggyback = writes.any();
        let span = tracing::debug_span!("read_index_round", reads = waiting.len(), piggyback);
        if piggyback {
            // Sends nothing of its own: the next batch need not wait for this one.
            let raft = raft.clone();
            tokio::spawn(tracing::Instrument::instrument(
                async move { answer(waiting, round(&raft, true).await) },
                span,
            ));
        } else {
            // Boxed: inline, the round's future would make this task's own about 3 KiB in
            // every replica, most of which never serve a read (issue 20).
            answer(waiting, tracing::Instrument::instrument(Box::pin(round(&raft, false)), span).await);
        }
    }
}

fn answer(waiting: Vec<Reply>, round: Result<(), ReadError>) {
    for reply in waiting {
        // The reader may have given up (its call was cancelled); nothing to tell it.
        let _ = reply.send(round.clone());
    }
}

/// One read-index round; `piggyback`: let the quorum's answers to the writes' replication
/// messages confirm it, falling back to a heartbeat round after [`PIGGYBACK_WAIT`].
async fn round(raft: &Raft, piggyback: bool) -> Result<(), ReadError> {
    if piggyback {
        let quiet = LinearizerOption::new(Some(Duration::ZERO), false).with_wait_timeout(PIGGYBACK_WAIT);
        match raft.ensure_linearizable(quiet).await {
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                tracing::trace!("no replication answer confirmed the read round in time; sending a heartbeat");
            }
            other => return other.map(|_| ()),
        }
    }
    raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map(|_| ())
}
