//! Batches a primary's concurrent client writes into raft entries.
//!
//! Every write goes through one queue per replica. A proposer task takes whatever is
//! queued (up to [`MAX_COMMANDS`] commands or [`MAX_BYTES`] bytes) as one entry, with at
//! most [`MAX_IN_FLIGHT`] entries being committed at a time: while those commit, new
//! writes queue up and go out together in the next entry. Under light load an entry holds
//! one command and waits for nothing; under heavy load the per-entry costs (log append,
//! fsync in durable mode, replication message, apply) are shared by many writes. Each
//! command keeps its own session and result; all of an entry's commands apply at its log
//! index, under one state-machine lock.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};
use weft_proto::v1 as pb;

use crate::types::{Commands, Raft, TypeConfig};

/// Most commands in one entry.
pub const MAX_COMMANDS: usize = 256;
/// Most encoded command bytes in one entry (a larger single command goes alone).
pub const MAX_BYTES: usize = 1 << 20;
/// Entries being committed at once.
pub const MAX_IN_FLIGHT: usize = 4;

/// What a proposal can fail with: openraft's answer to the entry that carried it.
pub type ProposeError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

type Reply = oneshot::Sender<Result<pb::CommandResult, ProposeError>>;

/// The write queue of one replica.
#[derive(Clone, Debug)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<(pb::Command, Reply)>,
}

impl Proposer {
    /// Starts the proposer task of `raft`; it ends when every handle is dropped.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Replicates `cmd` (batched with whatever else is queued); answers with its result.
    pub async fn propose(&self, cmd: pb::Command) -> Result<pb::CommandResult, ProposeError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.tx.send((cmd, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<(pb::Command, Reply)>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = first.0.encoded_len();
        let (mut cmds, mut replies) = (vec![first.0], vec![first.1]);
        while cmds.len() < MAX_COMMANDS && bytes < MAX_BYTES {
            let Ok((cmd, reply)) = rx.try_recv() else { break };
            bytes += cmd.encoded_len();
            cmds.push(cmd);
            replies.push(reply);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let outcome = raft.client_write(Commands(cmds)).await;
            drop(slot);
            match outcome {
                Ok(resp) => {
                    for (reply, result) in replies.into_iter().zip(resp.data) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
