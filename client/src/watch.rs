//! The client's end of `Store.Watch`: a partition's committed changes as a stream that
//! survives primary changes, node restarts and broken connections.
//!
//! A watch asks any replica of the partition (each keeps the same recent history; each
//! watch starts at a node picked at random, so watchers spread over the replicas) and
//! remembers the `through` of every message it receives. When the stream breaks (the
//! node stopped, the replica closed, the connection failed) it opens another, on the next
//! replica that answers, from `through + 1`: a node never splits one version's changes
//! between messages, so every change arrives exactly once and in commit order. The first
//! message of every stream says where it starts, so a watch from "now" (`from == 0`)
//! resumes from the same point even if it broke before anything committed.
//!
//! It gives up only on what retrying cannot mend: the versions it needs are no longer kept
//! ([`ClientError::Compacted`]: read afresh and watch again), a refusal (no right to read
//! the service), or a bad request. While no node answers it keeps trying, with backoff,
//! for as long as the stream is held; dropping the stream ends the watch.
//!
//! Depends on [`Client`] for its endpoints, channels and retries; never on the node.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Code, Status};
use weft_proto::detail;
use weft_proto::v1::{self as pb, ErrorReason};

use crate::client::{Client, ClientError};

/// Messages a watch holds for its reader before it stops reading from the node.
const QUEUE: usize = 16;

/// How many endpoints in a row may answer `COMPACTED` to a watch being opened before it
/// gives up (each the next endpoint after the last).
const COMPACTED_TRIES: u32 = 8;

/// Longest pause between attempts to reopen a broken watch.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Only this table's changes; empty for every table.
    pub table: String,
    /// Only keys starting with these bytes; empty for every key.
    pub prefix: Vec<u8>,
    /// The first version to deliver; 0: what commits once the watch is in place (the
    /// stream's first message, which carries no change, says from which version: writes
    /// made before it arrives may or may not be included).
    pub from: u64,
    /// Per partition, the first version to deliver instead of `from` (a watcher resuming
    /// a whole service gives each partition's last `through + 1`).
    pub resume: BTreeMap<u64, u64>,
}

/// A watch's messages: each one partition's changes in commit order, with how far it has
/// delivered (`through`).
pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, ClientError>> + Send>>;

impl Client {
    /// The committed changes of `partition` from `options` on; see the module docs.
    pub fn watch(&self, partition: u64, options: &WatchOptions) -> WatchStream {
        let from = options.resume.get(&partition).copied().unwrap_or(options.from);
        let req = pb::WatchRequest {
            partition,
            from_version: from,
            table: options.table.clone(),
            prefix: options.prefix.clone().into(),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                end = follow(&client, req, &tx) => if let Some(e) = end {
                    let _ = tx.send(Err(e)).await;
                },
                _ = tx.closed() => {}
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Streams `req`'s partition into `tx`, reopening on breaks, until the reader leaves
/// (`None`) or the watch cannot go on (the error to end it with).
async fn follow(
    client: &Client,
    mut req: pb::WatchRequest,
    tx: &mpsc::Sender<Result<pb::WatchResponse, ClientError>>,
) -> Option<ClientError> {
    let partition = req.partition;
    let mut backoff = Duration::from_millis(20);
    // Each watch starts at a node of its own, so that many watchers spread over the
    // partition's replicas instead of all asking the same one.
    let mut start = weft_security::rng::random_u64() as usize;
    // Replicas that answered, when the stream opened, that they no longer keep the
    // versions asked for: one rebuilt from a snapshot may lack what the others hold.
    let mut compacted_at_open = 0;
    loop {
        let open = {
            let req = req.clone();
            client.call_from(partition, false, false, start, move |mut c| {
                let req = req.clone();
                async move { Ok(c.unary.watch(req).await?.into_inner()) }
            })
        };
        let mut stream = match open.await {
            Ok(s) => s,
            Err(ClientError::Rpc(s))
                if detail::reason_of(&s) == ErrorReason::Compacted && compacted_at_open < COMPACTED_TRIES =>
            {
                compacted_at_open += 1;
                start = start.wrapping_add(1);
                continue;
            }
            Err(ClientError::Rpc(s)) => return Some(ended(partition, s)),
            Err(e @ ClientError::NoEndpoints) => return Some(e),
            Err(e) => {
                tracing::debug!(partition, error = %e, "no replica answered a watch; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    backoff = Duration::from_millis(20);
                    compacted_at_open = 0;
                    // From here on a resume asks for what comes after this message.
                    req.from_version = m.through + 1;
                    tx.send(Ok(m)).await.ok()?;
                }
                Ok(None) => break,
                Err(s) if resumable(&s) => {
                    tracing::debug!(partition, from = req.from_version, error = %s.message(), "watch broke; resuming");
                    break;
                }
                Err(s) => return Some(ended(partition, s)),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Whether another replica, or the same one later, may carry the watch on.
fn resumable(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Internal)
        || (s.code() == Code::NotFound && detail::reason_of(s) == ErrorReason::NotHosted)
}

/// The error a watch ends with for a status that retrying cannot mend.
fn ended(partition: u64, s: Status) -> ClientError {
    match detail::of(&s) {
        Some(d) if d.reason() == ErrorReason::Compacted => {
            ClientError::Compacted { partition, oldest: d.oldest_version, message: s.message().to_string() }
        }
        _ => ClientError::Rpc(s),
    }
}
