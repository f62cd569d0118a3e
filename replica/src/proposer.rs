//! Batches a primary's concurrent client writes into raft entries.
//!
//! Every write goes through one queue per replica, of at most [`QUEUE_MAX`] writes. A
//! proposer task takes whatever is queued (up to [`MAX_COMMANDS`] commands or
//! [`MAX_BYTES`] bytes) as one entry, with at most [`MAX_IN_FLIGHT`] entries being
//! committed at a time: while those commit, new writes queue up and go out together in
//! the next entry. Under light load an entry holds
//! one command and waits for nothing; under heavy load the per-entry costs (log append,
//! fsync in durable mode, replication message, apply) are shared by many writes. Each
//! command keeps its own session and result; all of an entry's commands apply at its log
//! index, under one state-machine lock. Since a record's version is that index, commands
//! writing the same key go in separate entries (see `Touched`).

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};
use weft_proto::v1 as pb;

use crate::state_machine::Raft;
use crate::types::{Commands, TypeConfig};

/// Most commands in one entry.
pub const MAX_COMMANDS: usize = 256;
/// Most encoded command bytes in one entry (a larger single command goes alone).
pub const MAX_BYTES: usize = 1 << 20;
/// Entries being committed at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Writes waiting for the proposer at most. Past it [`Proposer::propose`] waits for room:
/// back-pressure on the session stream or unary call that brought the write, and through
/// HTTP/2 flow control on the client. Sixteen entries' worth of commands: far more than
/// ever wait while entries commit at the rate the log takes them.
pub const QUEUE_MAX: usize = 16 * MAX_COMMANDS;

/// What a proposal can fail with: openraft's answer to the entry that carried it.
pub type ProposeError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

type Reply = oneshot::Sender<Result<pb::CommandResult, ProposeError>>;

/// A queued write, boxed: a tokio channel allocates a block of 32 slots when it is made,
/// and a command with its reply inline made that block about 4 KiB in every replica, idle
/// or not (issue 20).
type Queued = Box<(pb::Command, Reply)>;

/// The write queue of one replica.
#[derive(Clone, Debug)]
pub struct Proposer {
    tx: mpsc::Sender<Queued>,
    in_flight: InFlight,
}

/// How many of a proposer's entries are being committed right now: while any is, the
/// leader is about to send more append or commit messages to its followers (the read gate
/// lets a quorum's answers to those confirm its reads instead of a heartbeat round).
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Whether an entry is being committed.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }

    /// How many entries are being committed.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Counts one entry in flight until dropped.
struct Flying(InFlight);

impl Flying {
    fn start(f: &InFlight) -> Self {
        f.0.fetch_add(1, Ordering::AcqRel);
        Flying(f.clone())
    }
}

impl Drop for Flying {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Proposer {
    /// Starts the proposer task of `raft`; it ends when every handle is dropped.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let in_flight = InFlight::default();
        tokio::spawn(run(raft, rx, in_flight.clone()));
        Proposer { tx, in_flight }
    }

    /// The count of entries this proposer has in flight.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
    }

    /// Replicates `cmd` (batched with whatever else is queued); answers with its result.
    pub async fn propose(&self, cmd: pb::Command) -> Result<pb::CommandResult, ProposeError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.tx.send(Box::new((cmd, reply))).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Queued>, in_flight: InFlight) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A command that could not join the last entry starts the next one.
    let mut held: Option<(pb::Command, Reply)> = None;
    loop {
        let first = match held.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => *c,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = first.0.encoded_len();
        let mut touched = Touched::default();
        touched.add(&first.0);
        let (mut cmds, mut replies) = (vec![first.0], vec![first.1]);
        while cmds.len() < MAX_COMMANDS && bytes < MAX_BYTES {
            let Ok(queued) = rx.try_recv() else { break };
            let (cmd, reply) = *queued;
            if !touched.add(&cmd) {
                held = Some((cmd, reply));
                break;
            }
            bytes += cmd.encoded_len();
            cmds.push(cmd);
            replies.push(reply);
        }
        let raft = raft.clone();
        let flying = Flying::start(&in_flight);
        // One raft round: the entry's commands, their sessions and sequence numbers on
        // the "write applied" lines of every replica.
        let span = tracing::debug_span!("raft_write", commands = cmds.len(), bytes);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let outcome = raft.client_write(Commands(cmds)).await;
                drop(flying);
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
            },
            span,
        ));
    }
}

/// What the commands of one entry write. Every record written by an entry gets the
/// entry's log index as its version, so two commands writing the same key must not
/// share an entry: the second write would carry the version the first one's client was
/// told, and a put conditioned on that version would wrongly succeed (found by
/// `weft chaos`: a compare-and-set applied over a newer value).
///
/// Keys and tables are kept as hashes, so the write path copies no key here; a hash
/// collision only closes an entry early, which is always safe.
#[derive(Default)]
struct Touched {
    hasher: std::hash::RandomState,
    keys: BTreeSet<u64>,
    tables: BTreeSet<u64>,
    /// Tables some command writes as a whole (pop-max picks its key when applied; schema
    /// changes).
    whole: BTreeSet<u64>,
}

impl Touched {
    /// Adds `cmd` if it writes nothing already written; false (and nothing added) if it
    /// conflicts.
    fn add(&mut self, cmd: &pb::Command) -> bool {
        use pb::command::Kind;
        let whole_table = match &cmd.kind {
            Some(Kind::Batch(_)) | None => None,
            Some(Kind::CreateTable(c)) => Some(&c.table),
            Some(Kind::DropTable(c)) => Some(&c.table),
            Some(Kind::CreateIndex(c)) => Some(&c.table),
            Some(Kind::DropIndex(c)) => Some(&c.table),
            Some(Kind::PopMax(c)) => Some(&c.table),
        };
        if let Some(t) = whole_table {
            let t = self.hasher.hash_one(t.as_str());
            if !self.tables.insert(t) {
                return false;
            }
            self.whole.insert(t);
            return true;
        }
        let Some(Kind::Batch(b)) = &cmd.kind else { return true };
        let keys: Vec<(u64, u64)> = b
            .ops
            .iter()
            .filter_map(|op| match &op.kind {
                Some(pb::op::Kind::Put(p)) => Some((p.table.as_str(), p.key.as_ref())),
                Some(pb::op::Kind::Delete(d)) => Some((d.table.as_str(), d.key.as_ref())),
                None => None,
            })
            .map(|(t, k): (&str, &[u8])| (self.hasher.hash_one(t), self.hasher.hash_one((t, k))))
            .collect();
        if keys.iter().any(|(t, k)| self.whole.contains(t) || self.keys.contains(k)) {
            return false;
        }
        for (t, k) in keys {
            self.tables.insert(t);
            self.keys.insert(k);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(table: &str, key: &[u8]) -> pb::Op {
        let put = pb::Put { table: table.into(), key: key.to_vec().into(), ..Default::default() };
        pb::Op { kind: Some(pb::op::Kind::Put(put)) }
    }

    fn batch(ops: Vec<pb::Op>) -> pb::Command {
        pb::Command { session: None, kind: Some(pb::command::Kind::Batch(pb::Batch { ops })) }
    }

    #[test]
    fn writes_of_one_key_never_share_an_entry() {
        let mut t = Touched::default();
        assert!(t.add(&batch(vec![put("t", b"a"), put("t", b"b")])));
        assert!(t.add(&batch(vec![put("t", b"c")])), "another key joins");
        assert!(t.add(&batch(vec![put("u", b"a")])), "the same key in another table joins");
        assert!(!t.add(&batch(vec![put("t", b"d"), put("t", b"b")])), "a key already written conflicts");
        assert!(t.add(&batch(vec![put("t", b"d")])), "a refused command added nothing");
    }

    #[test]
    fn whole_table_commands_go_apart_from_that_table_s_writes() {
        let pop = |table: &str| pb::Command {
            session: None,
            kind: Some(pb::command::Kind::PopMax(pb::PopMax { table: table.into(), ..Default::default() })),
        };
        let mut t = Touched::default();
        assert!(t.add(&batch(vec![put("t", b"a")])));
        assert!(!t.add(&pop("t")), "pop-max may take the key just written");
        assert!(t.add(&pop("u")));
        assert!(!t.add(&pop("u")), "two pops of one table");
        assert!(!t.add(&batch(vec![put("u", b"x")])));
    }
}
