//! `Store.Watch`: a partition's committed changes, streamed from one replica's history
//! (`weft_replica::changes`) to one watcher.
//!
//! Each watch is one task that copies whole entries from the replica's history into a
//! bounded queue ([`QUEUE`] messages of at most about [`CHANGES_PER_MESSAGE`] changes), so
//! a watcher costs a node that much memory at most, whatever it does. A watcher that reads
//! more slowly than the partition commits blocks its task; the history moves on without
//! it, and when the task next looks, the versions it still had to deliver are gone: the
//! stream ends with `OUT_OF_RANGE`/`COMPACTED`, as the issue asks of a slow watcher (cut
//! off with a clear error, never allowed to grow a node's memory).
//!
//! Any replica serves a watch, from what it has applied: applied means committed, so a
//! watcher never sees a change that is later rolled back. The first message carries no
//! change and says where the stream starts (`through` = the first version - 1). While
//! nothing that matches its filter commits, a watcher still hears `through` move about
//! once a second, so that a resume after a long quiet spell does not ask for versions
//! dropped meanwhile.
//!
//! Depends on the replica host and the status conventions; never on the cluster manager.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;
use weft_proto::v1 as pb;
use weft_replica::changes::{Applied, Change, Compacted, key_of};
use weft_replica::{Host, Replica};

/// How long the message that ends a watch waits for room in its queue.
const END_WAIT: Duration = Duration::from_secs(30);

/// Messages queued for one watcher.
const QUEUE: usize = 8;

/// Changes in one message (whole entries: one larger entry is sent whole).
const CHANGES_PER_MESSAGE: usize = 512;

/// How long a watch that has caught up lets changes gather before it looks again: a busy
/// partition applies thousands of entries a second, and a hundred watchers each waking
/// for every one of them took the state machine's lock from its writer often enough to
/// halve the write rate (`weft bench watch`). Adds at most this to the delivery lag.
const GATHER: Duration = Duration::from_millis(5);

/// A watch gathers only while one look finds less than this fraction of the history.
const GATHER_UNLESS_FRACTION: usize = 8;

/// How often a watcher hears `through` move while nothing matching commits, and how often
/// an idle watch looks whether its replica still serves and its watcher still listens.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The answer stream of a watch.
pub(crate) type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// What a watcher asked to see.
struct Filter {
    table: String,
    prefix: Vec<u8>,
}

impl Filter {
    fn passes(&self, c: &Change) -> bool {
        if self.table.is_empty() && self.prefix.is_empty() {
            return true;
        }
        (self.table.is_empty() || c.table == self.table) && key_of(c).is_none_or(|k| k.starts_with(&self.prefix))
    }
}

/// Starts a watch of `replica`'s partition: refuses at once a version already dropped.
pub(crate) fn start(host: Arc<Host>, replica: Arc<Replica>, req: pb::WatchRequest) -> Result<WatchStream, Status> {
    let partition = replica.partition();
    let (_, applied, generation) = replica.changes_since(u64::MAX, 0).map_err(|c| compacted(partition, c, false))?;
    let from = if req.from_version == 0 { applied + 1 } else { req.from_version };
    replica.changes_since(from, 0).map_err(|c| compacted(partition, c, false))?;
    let filter = Filter { table: req.table, prefix: req.prefix.to_vec() };
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let end = pump(&host, &replica, filter, (from, generation), &tx).await;
        // Nothing of the replica is held while the end waits for room.
        drop((host, replica));
        if let Some(end) = end {
            let _ = tokio::time::timeout(END_WAIT, tx.send(Err(end))).await;
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Delivers changes from version `next` on until the watcher leaves (`None`) or the watch
/// must end (the status to end it with).
async fn pump(
    host: &Host,
    replica: &Arc<Replica>,
    filter: Filter,
    (mut next, generation): (u64, u64),
    tx: &mpsc::Sender<Result<pb::WatchResponse, Status>>,
) -> Option<Status> {
    let partition = replica.partition();
    let kept = replica.changes_kept_bytes();
    let message = |changes, through| pb::WatchResponse { partition, changes, through, replica: replica.id() };
    let mut last_sent = tokio::time::Instant::now();
    // The watcher has been told of every matching change through this version. The
    // first message says where the stream starts, so that a watch from "now" resumes
    // from the same point whenever it breaks.
    let mut reported = next - 1;
    tx.send(Ok(message(Vec::new(), reported))).await.ok()?;
    loop {
        let applied_next = replica.applied();
        tokio::pin!(applied_next);
        applied_next.as_mut().enable();
        if !serves(host, replica) {
            return Some(closed(partition, reported + 1));
        }
        let (entries, applied) = match replica.changes_since(next, CHANGES_PER_MESSAGE) {
            Ok((entries, applied, _)) => (entries, applied),
            // The replica installed a snapshot: its history restarted, others may hold
            // what this watch needs.
            Err(c) if c.generation != generation => {
                return Some(Status::unavailable(format!(
                    "the replica of partition {partition} serving this watch was rebuilt from a snapshot: resume from \
                     version {} on another replica",
                    reported + 1
                )));
            }
            Err(c) => return Some(compacted(partition, c, true)),
        };
        let through = entries.last().map_or(applied, |e| e.version).max(next - 1);
        next = through + 1;
        let changes: Vec<pb::Change> = entries.iter().flat_map(|e| to_pb(e, &filter)).collect();
        if !changes.is_empty() || (through > reported && last_sent.elapsed() >= PROGRESS_EVERY) {
            // Waiting for room, it still looks whether its replica serves: a watcher that
            // stays connected but stops reading must not keep a closed replica alive.
            let room = loop {
                tokio::select! {
                    room = tx.reserve() => break room.ok()?,
                    () = tokio::time::sleep(PROGRESS_EVERY) => if !serves(host, replica) {
                        return Some(closed(partition, reported + 1));
                    },
                }
            };
            room.send(Ok(message(changes, through)));
            reported = through;
            last_sent = tokio::time::Instant::now();
        }
        let read: usize = entries.iter().map(|e| e.changes.len()).sum();
        let read_bytes: usize = entries.iter().map(|e| e.bytes).sum();
        if entries.is_empty() {
            tokio::select! {
                _ = &mut applied_next => {}
                _ = tokio::time::sleep(PROGRESS_EVERY) => {}
                _ = tx.closed() => return None,
            }
        } else if read < CHANGES_PER_MESSAGE && read_bytes.saturating_mul(GATHER_UNLESS_FRACTION) < kept {
            // Caught up: let a few entries gather before looking again, rather than wake
            // (and take the state's read lock) at every applied entry; not when what one
            // look finds is a large part of the history (it could be dropped meanwhile).
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                _ = tx.closed() => return None,
            }
        }
    }
}

/// Whether `replica` is still the one its host serves its partition with.
fn serves(host: &Host, replica: &Arc<Replica>) -> bool {
    host.get(replica.partition()).is_some_and(|r| Arc::ptr_eq(&r, replica))
}

/// The end of a watch whose replica closed (`UNAVAILABLE`): resume elsewhere.
fn closed(partition: u64, from: u64) -> Status {
    Status::unavailable(format!(
        "the replica of partition {partition} serving this watch closed: resume from version {from} on another replica"
    ))
}

/// One entry's changes that pass `filter` (clones that share the entry's buffers).
fn to_pb<'a>(e: &'a Applied, filter: &'a Filter) -> impl Iterator<Item = pb::Change> + 'a {
    e.changes.iter().filter(|c| filter.passes(c)).cloned()
}

/// `OUT_OF_RANGE`/`COMPACTED` with the oldest version kept.
pub(crate) fn compacted(partition: u64, c: Compacted, fell_behind: bool) -> Status {
    let message = if fell_behind {
        format!(
            "the watcher of partition {partition} read too slowly: changes it had not read yet were dropped (the oldest \
             kept is version {}); read the partition afresh and watch again",
            c.oldest
        )
    } else {
        format!(
            "partition {partition}'s changes before version {} are no longer kept here; read the partition afresh and \
             watch from the version that read reports",
            c.oldest
        )
    };
    let detail =
        pb::ErrorDetail { reason: pb::ErrorReason::Compacted as i32, oldest_version: c.oldest, ..Default::default() };
    weft_proto::detail::status(tonic::Code::OutOfRange, message, detail)
}
