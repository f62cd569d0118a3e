//! Batches a primary's concurrent linearizable reads into shared read-index rounds.
//!
//! Every linearizable read of a replica waits at its gate. A gate task takes every read
//! queued so far and runs one `ensure_linearizable(ReadIndex)` for all of them: the round
//! starts after each of those reads arrived, so it confirms leadership with a quorum
//! acknowledgement newer than their arrival and waits until the state machine has applied
//! the commit index of that moment, which covers every write acknowledged before them.
//! Reads that arrive while a round runs wait for the next one (etcd's read loop and TiKV's
//! read-index batching make the same argument). Under load one round serves many reads;
//! alone, a read waits for exactly one round, as before.

use openraft::error::{LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use tokio::sync::{mpsc, oneshot};

use crate::types::{Raft, TypeConfig};

/// What a read can fail with: openraft's answer to the round that carried it.
pub type ReadError = RaftError<TypeConfig, LinearizableReadError<TypeConfig>>;

type Reply = oneshot::Sender<Result<(), ReadError>>;

/// The linearizable-read gate of one replica.
#[derive(Clone, Debug)]
pub struct ReadGate {
    tx: mpsc::UnboundedSender<Reply>,
}

impl ReadGate {
    /// Starts the gate task of `raft`; it ends when every handle is dropped.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        ReadGate { tx }
    }

    /// Returns once a read that arrived now may be served from this replica's applied
    /// state (leadership confirmed by a quorum, commit index applied).
    pub async fn ensure(&self) -> Result<(), ReadError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.tx.send(reply).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Reply>) {
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        waiting.push(first);
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let round = raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map(|_| ());
        for reply in waiting.drain(..) {
            // The reader may have given up (its call was cancelled); nothing to tell it.
            let _ = reply.send(round.clone());
        }
    }
}
