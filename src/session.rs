//! Calls multiplexed on one stream: the `Store.Session` RPC, both ends.
//!
//! A unary gRPC call costs an HTTP/2 stream: request headers, data, response headers, data
//! and trailers, each encoded, framed and written on its own. With many calls in flight to
//! one node (the benchmark's 64 clients, a service's request handlers) that per-call work
//! is most of what a node and its clients spend. `Session` carries `Get` and `Write` calls
//! as messages of one long-lived stream instead, as TiKV's `BatchCommands` does: a
//! [`Mux`] on the client sends every call queued since its last send in one message, and
//! the node answers the calls as they finish, every answer ready at once in one message.
//! Each call means exactly what its unary RPC means, and a failed call comes back as the
//! status its unary RPC would have returned (metadata and details included), so the client's retry
//! logic is the same for both.
//!
//! A call whose stream breaks before its answer comes back fails with `Cancelled`: no
//! answer, which the client treats like a timed-out unary call (a write is retried under
//! its session seq, so it still applies at most once).

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::{Code, Status};
use weft_proto::v1 as pb;
use weft_proto::v1::store_client::StoreClient;
use weft_security::AuthChannel;

/// Most calls (or answers) put in one message.
const MAX_PER_MESSAGE: usize = 256;

/// Encoded bytes past which no further call (or answer) joins a message: large values
/// travel in messages of their own, far below the transport's message limit.
const BYTES_PER_MESSAGE: usize = 4 << 20;

/// Waiting entries above which those whose caller has given up are dropped.
const PRUNE_ABOVE: usize = 4096;

/// Calls of one session a node holds at once, being answered or answered and not yet
/// handed to the transport. Past it the node reads no further calls, so a client that
/// stops reading its answers is held back by HTTP/2 flow control instead of filling the
/// node's memory; a client that reads goes on as before.
pub const IN_FLIGHT_MAX: usize = 1024;

/// A failed call's status as the session carries it.
pub(crate) fn status_to_pb(s: &Status) -> pb::CallStatus {
    let metadata = s
        .metadata()
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.to_string(), v.to_str().ok()?.to_string())),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    pb::CallStatus {
        code: s.code() as i32,
        message: s.message().to_string(),
        metadata,
        details: s.details().to_vec().into(),
    }
}

/// The status a session answer carries, as its unary RPC would have returned it.
pub(crate) fn status_from_pb(c: pb::CallStatus) -> Status {
    let mut s = Status::with_details(Code::from_i32(c.code), c.message, c.details);
    for (k, v) in c.metadata {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()),
            tonic::metadata::AsciiMetadataValue::try_from(v.as_str()),
        ) {
            s.metadata_mut().insert(k, v);
        }
    }
    s
}

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
                        tokio::spawn(async move {
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
                        });
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
        let answers = take_ready(first, &mut rx, |(a, _)| a.encoded_len()).into_iter().map(|(a, _)| a).collect();
        Some((Ok(pb::SessionAnswers { answers }), rx))
    })
}

/// `first` and whatever else is queued now, up to one message's worth: [`MAX_PER_MESSAGE`]
/// items, or until `encoded` sums past [`BYTES_PER_MESSAGE`] (`first` always goes).
fn take_ready<T>(first: T, rx: &mut mpsc::UnboundedReceiver<T>, encoded: impl Fn(&T) -> usize) -> Vec<T> {
    let mut bytes = encoded(&first);
    let mut taken = vec![first];
    while taken.len() < MAX_PER_MESSAGE && bytes < BYTES_PER_MESSAGE {
        let Ok(next) = rx.try_recv() else { break };
        bytes += encoded(&next);
        taken.push(next);
    }
    taken
}

type Reply = oneshot::Sender<Result<pb::session_answer::Answer, Status>>;

/// The client's end for one node: a handle to the task that owns the stream. Cheap to
/// clone; the task ends (and [`Mux::is_closed`] turns true) when the stream breaks.
#[derive(Clone)]
pub(crate) struct Mux {
    tx: mpsc::UnboundedSender<(pb::session_call::Call, Reply)>,
}

impl Mux {
    /// Opens a session on `store`'s channel (lazily: the stream starts with the first call).
    pub(crate) fn open(store: StoreClient<AuthChannel>) -> Mux {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(store, rx));
        Mux { tx }
    }

    /// Whether the session is over (its stream broke); open a new one.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// One call; its answer, or the status its unary RPC would have failed with.
    pub(crate) async fn call(&self, call: pb::session_call::Call) -> Result<pb::session_answer::Answer, Status> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((call, reply)).map_err(|_| ended())?;
        match answer.await {
            Ok(Ok(pb::session_answer::Answer::Error(e))) => Err(status_from_pb(e)),
            Ok(r) => r,
            Err(_) => Err(ended()),
        }
    }

    /// A `Get` call.
    pub(crate) async fn get(&self, req: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        match self.call(pb::session_call::Call::Get(req)).await? {
            pb::session_answer::Answer::Get(r) => Ok(r),
            _ => Err(Status::internal("session answered a get with another kind of answer")),
        }
    }

    /// A `Write` call.
    pub(crate) async fn write(&self, req: pb::WriteRequest) -> Result<pb::WriteResponse, Status> {
        match self.call(pb::session_call::Call::Write(req)).await? {
            pb::session_answer::Answer::Write(r) => Ok(r),
            _ => Err(Status::internal("session answered a write with another kind of answer")),
        }
    }
}

fn ended() -> Status {
    Status::cancelled("the session stream ended before the answer came")
}

/// A broken stream's status for the calls it leaves unanswered: no answer (`Cancelled`),
/// whatever code the transport gave, unless the node refused the stream itself for who
/// the caller is (no identity, no right, over its limits): each call would have been
/// refused the same way, and asking again will not change that.
fn broke(s: &Status) -> Status {
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted => s.clone(),
        _ => Status::cancelled(format!("the session stream broke before the answer came: {}", s.message())),
    }
}

/// `first` and every call queued now (up to a message's worth) as one message, each call
/// numbered and its reply entered in `waiting`.
fn batch(
    first: (pb::session_call::Call, Reply),
    rx: &mut mpsc::UnboundedReceiver<(pb::session_call::Call, Reply)>,
    next_id: &mut u64,
    waiting: &mut HashMap<u64, Reply>,
) -> pb::SessionCalls {
    let taken = take_ready(first, rx, |(call, _)| call.encoded_len());
    let calls = taken
        .into_iter()
        .map(|(call, reply)| {
            *next_id += 1;
            waiting.insert(*next_id, reply);
            pb::SessionCall { id: *next_id, call: Some(call) }
        })
        .collect();
    if waiting.len() > PRUNE_ABOVE {
        waiting.retain(|_, r| !r.is_closed());
    }
    pb::SessionCalls { calls }
}

/// Owns one session stream: sends queued calls, routes answers to their callers, and on
/// a broken stream fails every call still waiting (they got no answer) and ends.
async fn drive(mut store: StoreClient<AuthChannel>, mut rx: mpsc::UnboundedReceiver<(pb::session_call::Call, Reply)>) {
    let mut waiting: HashMap<u64, Reply> = HashMap::new();
    let mut next_id = 0u64;
    let Some(first) = rx.recv().await else { return };
    let (out, out_rx) = mpsc::channel::<pb::SessionCalls>(64);
    // Queued before the call: the stream opens with it, and the answer headers it waits
    // for come back as soon as the node has accepted the stream.
    if out.send(batch(first, &mut rx, &mut next_id, &mut waiting)).await.is_err() {
        return;
    }
    let fail_all = |waiting: &mut HashMap<u64, Reply>, s: &Status| {
        for (_, r) in waiting.drain() {
            let _ = r.send(Err(s.clone()));
        }
    };
    let mut inbound = match store.session(tokio_stream::wrappers::ReceiverStream::new(out_rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            fail_all(&mut waiting, &broke(&s));
            return;
        }
    };
    loop {
        tokio::select! {
            p = rx.recv() => {
                // Every handle is gone: nobody waits for more calls; answers still owed
                // go nowhere.
                let Some(p) = p else { return };
                let calls = batch(p, &mut rx, &mut next_id, &mut waiting);
                if out.send(calls).await.is_err() {
                    fail_all(&mut waiting, &ended());
                    return;
                }
            }
            m = inbound.message() => match m {
                Ok(Some(answers)) => {
                    for a in answers.answers {
                        if let (Some(r), Some(answer)) = (waiting.remove(&a.id), a.answer) {
                            let _ = r.send(Ok(answer));
                        }
                    }
                }
                Ok(None) => {
                    fail_all(&mut waiting, &ended());
                    return;
                }
                Err(s) => {
                    fail_all(&mut waiting, &broke(&s));
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_crosses_the_session_as_its_unary_rpc_would_return_it() {
        let detail = pb::ErrorDetail {
            reason: pb::ErrorReason::NotPrimary as i32,
            leader_id: 103,
            leader_addr: "127.0.0.1:7001".into(),
        };
        let mut s = weft_proto::detail::status(Code::Unavailable, "not the primary of partition 3", detail.clone());
        s.metadata_mut().insert("x-note", "kept".parse().expect("ascii"));
        let back = status_from_pb(status_to_pb(&s));
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(back.message(), s.message());
        assert_eq!(weft_proto::detail::of(&back), Some(detail));
        assert_eq!(back.metadata().get("x-note"), s.metadata().get("x-note"));
        assert!(std::error::Error::source(&back).is_none(), "a node's own answer, not a transport failure");
        let unknown = status_from_pb(pb::CallStatus { code: 999, message: "?".into(), ..Default::default() });
        assert_eq!(unknown.code(), Code::Unknown, "an unknown code stays a failure");
    }
}
