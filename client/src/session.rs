//! The client's end of the `Store.Session` RPC: many gets and writes to one node on one
//! stream (the node's end is `weft::session`; `weft_proto::session` holds the framing both
//! share).
//!
//! A [`Mux`] owns one stream per node: it sends every call queued since its last send in
//! one message and routes each answer to its caller. Each call means exactly what its unary
//! RPC means; a failed call comes back as the status its unary RPC would have returned
//! (metadata and details included), so the client's retry logic is the same for both.
//!
//! A call whose stream breaks before its answer comes back fails with `Cancelled`: no
//! answer, which the client treats like a timed-out unary call (a write is retried under
//! its session seq, so it still applies at most once).

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};
use weft_proto::session::{status_from_pb, take_ready};
use weft_proto::v1 as pb;
use weft_proto::v1::store_client::StoreClient;
use weft_security::AuthChannel;

/// Waiting entries above which those whose caller has given up are dropped.
const PRUNE_ABOVE: usize = 4096;

/// Calls queued for one node's stream and not yet taken into a message. Past it a caller
/// waits for room: the stream's own flow control (the node reads no more calls while it
/// holds its in-flight maximum) reaches the callers instead of a queue that grows.
pub const QUEUED_CALLS_MAX: usize = 4096;

type Reply = oneshot::Sender<Result<pb::session_answer::Answer, Status>>;

/// The client's end for one node: a handle to the task that owns the stream. Cheap to
/// clone; the task ends (and [`Mux::is_closed`] turns true) when the stream breaks.
#[derive(Clone)]
pub(crate) struct Mux {
    tx: mpsc::Sender<(pb::session_call::Call, Reply)>,
}

impl Mux {
    /// Opens a session on `store`'s channel (lazily: the stream starts with the first call).
    pub(crate) fn open(store: StoreClient<AuthChannel>) -> Mux {
        let (tx, rx) = mpsc::channel(QUEUED_CALLS_MAX);
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
        self.tx.send((call, reply)).await.map_err(|_| ended())?;
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
    rx: &mut mpsc::Receiver<(pb::session_call::Call, Reply)>,
    next_id: &mut u64,
    waiting: &mut BTreeMap<u64, Reply>,
) -> pb::SessionCalls {
    let taken = take_ready(first, || rx.try_recv().ok(), |(call, _)| call.encoded_len());
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
async fn drive(mut store: StoreClient<AuthChannel>, mut rx: mpsc::Receiver<(pb::session_call::Call, Reply)>) {
    let mut waiting: BTreeMap<u64, Reply> = BTreeMap::new();
    let mut next_id = 0u64;
    let Some(first) = rx.recv().await else { return };
    let (out, out_rx) = mpsc::channel::<pb::SessionCalls>(64);
    // Queued before the call: the stream opens with it, and the answer headers it waits
    // for come back as soon as the node has accepted the stream.
    if out.send(batch(first, &mut rx, &mut next_id, &mut waiting)).await.is_err() {
        return;
    }
    let fail_all = |waiting: &mut BTreeMap<u64, Reply>, s: &Status| {
        for (_, r) in std::mem::take(waiting) {
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
