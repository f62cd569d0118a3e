//! The node's end of the `Store.Session` RPC: calls multiplexed on one stream.
//!
//! A unary gRPC call costs an HTTP/2 stream: request headers, data, response headers, data
//! and trailers, each encoded, framed and written on its own. With many calls in flight to
//! one node (the benchmark's 64 clients, a service's request handlers) that per-call work
//! is most of what a node and its clients spend. `Session` carries `Get` and `Write` calls
//! as messages of one long-lived stream instead, as TiKV's `BatchCommands` does: the client
//! (`weft_client`'s session) sends every call queued since its last send in one message,
//! and the node answers the calls as they finish, every answer ready at once in one
//! message (`weft_proto::session` holds the framing both ends share). Each call means
//! exactly what its unary RPC means, and a failed call comes back as the status its unary
//! RPC would have returned (metadata and details included).
//!
//! Bounded: at most [`IN_FLIGHT_MAX`] calls and [`Budget::bytes_max`] answer bytes of one
//! stream are held at once; past either the node reads no further calls.

use std::sync::Arc;

use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Status;
use weft_proto::session::{status_to_pb, take_ready};
use weft_proto::v1 as pb;

/// Calls of one session a node holds at once, being answered or answered and not yet
/// handed to the transport. Past it the node reads no further calls, so a client that
/// stops reading its answers is held back by HTTP/2 flow control instead of filling the
/// node's memory; a client that reads goes on as before.
pub const IN_FLIGHT_MAX: usize = 1024;

/// How much answer memory one session stream may hold: calls being answered, and answers
/// not yet handed to the transport. A call reserves its estimate before it runs (a get the
/// largest record the limits allow, a write a little), and its answer's real size once it
/// is known; past `bytes_max` the node reads no further calls, so a client that stops
/// reading is held back by HTTP/2 flow control whatever its answers weigh.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Answer bytes held at most.
    pub(crate) bytes_max: usize,
    /// What a get reserves until its answer is known.
    pub(crate) get_estimate: usize,
    /// What a write reserves until its answer is known.
    pub(crate) write_estimate: usize,
    /// The longest one call may take, as a unary call's deadline (its answer is then
    /// `DEADLINE_EXCEEDED`: a write's outcome unknown).
    pub(crate) call_deadline: std::time::Duration,
}

/// A call's places in the bounds: one of [`IN_FLIGHT_MAX`], and its bytes.
type Held = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// `n` bytes of `bytes`, capped at its size so one huge answer cannot wait forever.
async fn reserve(bytes: &Arc<Semaphore>, n: usize, max: usize) -> Option<OwnedSemaphorePermit> {
    let n = u32::try_from(n.min(max)).unwrap_or(u32::MAX);
    bytes.clone().acquire_many_owned(n).await.ok()
}

/// The node's end: answers every call read from `inbound` with `answer`, each in its own
/// task, and returns the stream of answer messages (every answer ready at once in one).
/// The stream ends once the client has closed its side and every call is answered.
pub(crate) fn serve<F, Fut>(
    mut inbound: tonic::Streaming<pb::SessionCalls>,
    budget: Budget,
    answer: F,
) -> impl futures::Stream<Item = Result<pb::SessionAnswers, Status>> + Send + 'static
where
    F: Fn(pb::session_call::Call) -> Fut + Send + 'static,
    Fut: Future<Output = pb::session_answer::Answer> + Send + 'static,
{
    // Each answer travels with its call's permits, given back once the answer is taken
    // into a message for the transport.
    let (tx, rx) = mpsc::unbounded_channel::<(pb::SessionAnswer, Held)>();
    let room = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let max = budget.bytes_max.clamp(1, u32::MAX as usize);
    let bytes = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(calls)) => {
                    for c in calls.calls {
                        let id = c.id;
                        let Ok(permit) = room.clone().acquire_owned().await else { return };
                        let estimate = match &c.call {
                            Some(pb::session_call::Call::Get(_)) => budget.get_estimate,
                            _ => budget.write_estimate,
                        };
                        let Some(reserved) = reserve(&bytes, estimate, max).await else { return };
                        // The client may be gone; its answers go nowhere.
                        let Some(call) = c.call else {
                            let refused = status_to_pb(&Status::invalid_argument("session call without a call"));
                            let answer = Some(pb::session_answer::Answer::Error(refused));
                            let _ = tx.send((pb::SessionAnswer { id, answer }, (permit, reserved)));
                            continue;
                        };
                        let (a, tx, bytes) = (answer(call), tx.clone(), bytes.clone());
                        let deadline = budget.call_deadline;
                        // The call's span (its id in the session); a write's own span inside
                        // adds its partition, session and sequence number.
                        let span = tracing::debug_span!("session_call", call = id);
                        tokio::spawn(tracing::Instrument::instrument(
                            async move {
                                let a = tokio::time::timeout(deadline, a).await.unwrap_or_else(|_| {
                                    let late = Status::deadline_exceeded(format!(
                                        "the call took longer than its {deadline:?} deadline"
                                    ));
                                    pb::session_answer::Answer::Error(status_to_pb(&late))
                                });
                                let answer = pb::SessionAnswer { id, answer: Some(a) };
                                let (mut reserved, size) = (reserved, answer.encoded_len().min(max));
                                let held = reserved.num_permits();
                                if size < held {
                                    drop(reserved.split(held - size));
                                } else if size > held {
                                    let Some(more) = reserve(&bytes, size - held, max).await else { return };
                                    reserved.merge(more);
                                }
                                let _ = tx.send((answer, (permit, reserved)));
                            },
                            span,
                        ));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "session stream from a client broke");
                    break;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let answers =
            take_ready(first, || rx.try_recv().ok(), |(a, _)| a.encoded_len()).into_iter().map(|(a, _)| a).collect();
        Some((Ok(pb::SessionAnswers { answers }), rx))
    })
}
