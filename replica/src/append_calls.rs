//! One pipelined append stream, as openraft sees it, carried by successive gRPC calls.
//!
//! openraft keeps a replication stream open for as long as its leader leads (it waits on the
//! stream for the next entries), so a quiesced group would hold one HTTP/2 stream per
//! follower forever: both ends' codec buffers, the target's per-stream task and the
//! HTTP/2 stream state, about a third of an idle replica's memory at thousands of groups
//! per node (issue 20). Here a call is closed once every message sent on it is answered
//! and nothing more came for [`IDLE_CLOSE`], and the next message opens a new one. The
//! target treats each call as it treats any stream: every message carries its own
//! `prev_log_id`, so nothing depends on which call carried it.
//!
//! What the caller sees is unchanged: the answers in the order the messages were sent, and
//! the end of the stream when the input ends (after the answers to what was sent), when a
//! call fails (its error, then the end) or when the target ends a call this side did not
//! close (the end, as for any stream broken early). Only a call this side closed while
//! nothing was outstanding is replaced silently.
//!
//! Depends on tonic's `Status` and tokio only: messages and answers are opaque here, and
//! opening a call is the caller's function.

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

/// How long a call with nothing outstanding stays open before it is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(2);

/// Messages queued for a call's request body before the sender waits (back-pressure from
/// HTTP/2 flow control reaches openraft's stream through it).
const CALL_QUEUE: usize = 16;

/// The answers of one call.
pub type Answers<A> = BoxStream<'static, Result<A, Status>>;

/// An open call: where its messages go and where its answers come from.
pub struct Call<M, A> {
    sender: mpsc::Sender<M>,
    answers: Answers<A>,
}

impl<M, A> Call<M, A> {
    /// A call's two halves: a queue the request body is read from, and the answers.
    pub fn new(sender: mpsc::Sender<M>, answers: Answers<A>) -> Self {
        Call { sender, answers }
    }
}

/// A request body's queue: the receiving half is the body of the call to open.
pub fn queue<M>() -> (mpsc::Sender<M>, mpsc::Receiver<M>) {
    mpsc::channel(CALL_QUEUE)
}

struct Open<M, A> {
    /// `None` once the input ended: the request side is closed and the answers drain.
    sender: Option<mpsc::Sender<M>>,
    answers: Answers<A>,
    unanswered: usize,
    /// Since when nothing has been outstanding on this call.
    quiet_since: Instant,
}

struct Calls<M, A, S, O> {
    /// `None` once it ended.
    input: Option<S>,
    open: O,
    idle: Duration,
    call: Option<Open<M, A>>,
    /// Taken from the input, not yet queued on a call.
    pending: Option<M>,
    done: bool,
}

/// The answers to `input`'s messages, sent over `first` and then over calls `open` starts
/// when one is needed (given the receiving half of a [`queue`]); a call is closed after
/// `idle` with nothing outstanding.
pub fn carry<M, A, S, O, F>(
    input: S,
    first: Call<M, A>,
    open: O,
    idle: Duration,
) -> impl Stream<Item = Result<A, Status>>
where
    M: Send + 'static,
    A: Send + 'static,
    S: Stream<Item = M> + Unpin + Send,
    O: FnMut(mpsc::Receiver<M>) -> F + Send,
    F: Future<Output = Result<Answers<A>, Status>> + Send,
{
    let call = Open { sender: Some(first.sender), answers: first.answers, unanswered: 0, quiet_since: Instant::now() };
    let state = Calls { input: Some(input), open, idle, call: Some(call), pending: None, done: false };
    futures::stream::unfold(state, step)
}

async fn step<M, A, S, O, F>(mut st: Calls<M, A, S, O>) -> Option<(Result<A, Status>, Calls<M, A, S, O>)>
where
    S: Stream<Item = M> + Unpin,
    O: FnMut(mpsc::Receiver<M>) -> F,
    F: Future<Output = Result<Answers<A>, Status>>,
{
    loop {
        if st.done {
            return None;
        }
        let outstanding = st.call.as_ref().map_or(0, |c| c.unanswered);
        if st.input.is_none() && st.pending.is_none() && outstanding == 0 {
            return None;
        }
        if st.call.is_none()
            && let Some(m) = st.pending.take()
        {
            let (sender, body) = queue();
            // The queue is new and empty: the first message always fits.
            if sender.try_send(m).is_err() {
                st.done = true;
                return Some((Err(Status::internal("append call queue refused its first message")), st));
            }
            // Boxed: inline, opening a call (a whole tonic call's future) would size this
            // stream's state for it for as long as the stream lives.
            match Box::pin((st.open)(body)).await {
                Ok(answers) => {
                    st.call = Some(Open { sender: Some(sender), answers, unanswered: 1, quiet_since: Instant::now() });
                }
                Err(status) => {
                    st.done = true;
                    return Some((Err(status), st));
                }
            }
            continue;
        }
        let Some(call) = st.call.as_mut() else {
            // No call, nothing pending: wait for the input.
            match st.input.as_mut() {
                Some(input) => match input.next().await {
                    Some(m) => st.pending = Some(m),
                    None => st.input = None,
                },
                None => return None,
            }
            continue;
        };
        let closable = call.unanswered == 0 && st.pending.is_none() && call.sender.is_some();
        let idle_at = call.quiet_since + st.idle;
        let sender = call.sender.clone();
        let input_open = st.pending.is_none() && st.input.is_some();
        tokio::select! {
            biased;
            answer = call.answers.next() => match answer {
                Some(Ok(a)) if call.unanswered > 0 => {
                    call.unanswered -= 1;
                    if call.unanswered == 0 {
                        call.quiet_since = Instant::now();
                    }
                    return Some((Ok(a), st));
                }
                Some(Ok(_)) => {
                    st.done = true;
                    return Some((Err(Status::internal("an append call answered a message it was not sent")), st));
                }
                Some(Err(status)) => {
                    st.done = true;
                    return Some((Err(status), st));
                }
                // The target ended a call this side did not close, or one closed after the
                // input ended: the stream ends (anything unanswered is sent again by the
                // leader, as after any broken stream).
                None => return None,
            },
            permit = reserve(sender.as_ref()), if st.pending.is_some() => match (permit, st.pending.take()) {
                (Some(permit), Some(m)) => {
                    permit.send(m);
                    call.unanswered += 1;
                }
                // The call's body was dropped: the call is over; its answers say how.
                (_, m) => {
                    st.pending = m;
                    call.sender = None;
                }
            },
            m = next_of(st.input.as_mut()), if input_open => match m {
                Some(m) => st.pending = Some(m),
                None => {
                    st.input = None;
                    // Closing the request side lets the target finish and end its answers.
                    call.sender = None;
                    if call.unanswered == 0 {
                        return None;
                    }
                }
            },
            () = tokio::time::sleep_until(idle_at), if closable => {
                tracing::trace!("append call idle; closing it");
                st.call = None;
            },
        }
    }
}

/// Room for one message on a call's queue; `None` when the call's body is gone.
async fn reserve<M>(sender: Option<&mpsc::Sender<M>>) -> Option<mpsc::Permit<'_, M>> {
    sender?.reserve().await.ok()
}

async fn next_of<S: Stream + Unpin>(input: Option<&mut S>) -> Option<S::Item> {
    match input {
        Some(input) => input.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A target that answers every message with its double, in order, until its body ends.
    fn doubling(body: mpsc::Receiver<u64>) -> Answers<u64> {
        tokio_stream::wrappers::ReceiverStream::new(body).map(|m| Ok(m * 2)).boxed()
    }

    fn opener(
        opens: Arc<AtomicUsize>,
    ) -> impl FnMut(mpsc::Receiver<u64>) -> futures::future::Ready<Result<Answers<u64>, Status>> {
        move |body| {
            opens.fetch_add(1, Ordering::SeqCst);
            futures::future::ready(Ok(doubling(body)))
        }
    }

    fn first() -> Call<u64, u64> {
        let (sender, body) = queue();
        Call::new(sender, doubling(body))
    }

    #[tokio::test(start_paused = true)]
    async fn answers_in_order_across_an_idle_close() {
        let (tx, rx) = mpsc::channel::<u64>(4);
        let opens = Arc::new(AtomicUsize::new(0));
        let answers =
            carry(tokio_stream::wrappers::ReceiverStream::new(rx), first(), opener(opens.clone()), IDLE_CLOSE);
        let mut answers = std::pin::pin!(answers);
        for m in 1..=3 {
            tx.send(m).await.unwrap();
        }
        for m in 1..=3 {
            assert_eq!(answers.next().await.unwrap().unwrap(), m * 2);
        }
        assert_eq!(opens.load(Ordering::SeqCst), 0, "the first call carries the first messages");
        // Quiet past the idle bound: the call closes; the next message opens another.
        let next = tokio::spawn(async move {
            tokio::time::sleep(IDLE_CLOSE * 3).await;
            tx.send(10).await.unwrap();
            tx.send(11).await.unwrap();
            tx
        });
        assert_eq!(answers.next().await.unwrap().unwrap(), 20);
        assert_eq!(answers.next().await.unwrap().unwrap(), 22);
        assert_eq!(opens.load(Ordering::SeqCst), 1, "one new call after the idle close");
        drop(next.await.unwrap());
        assert!(answers.next().await.is_none(), "the input's end ends the answers");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_call_is_not_closed() {
        let (tx, rx) = mpsc::channel::<u64>(4);
        let opens = Arc::new(AtomicUsize::new(0));
        let answers =
            carry(tokio_stream::wrappers::ReceiverStream::new(rx), first(), opener(opens.clone()), IDLE_CLOSE);
        let mut answers = std::pin::pin!(answers);
        for m in 0..10u64 {
            tokio::time::sleep(IDLE_CLOSE / 2).await;
            tx.send(m).await.unwrap();
            assert_eq!(answers.next().await.unwrap().unwrap(), m * 2);
        }
        assert_eq!(opens.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_input_end_waits_for_outstanding_answers() {
        // A target that answers only once its body has ended.
        let (sender, body) = queue::<u64>();
        let late: Answers<u64> = futures::stream::once(async move {
            let all: Vec<u64> = tokio_stream::wrappers::ReceiverStream::new(body).collect().await;
            futures::stream::iter(all.into_iter().map(Ok))
        })
        .flatten()
        .boxed();
        let input = futures::stream::iter([7u64, 8]);
        let answers = carry(input, Call::new(sender, late), opener(Arc::default()), IDLE_CLOSE);
        let got: Vec<u64> = answers.map(|a| a.unwrap()).collect().await;
        assert_eq!(got, vec![7, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_the_target_ends_ends_the_stream() {
        let (sender, _body) = queue::<u64>();
        let ended: Answers<u64> = futures::stream::empty().boxed();
        let (tx, rx) = mpsc::channel::<u64>(4);
        tx.send(1).await.unwrap();
        let answers = carry(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            Call::new(sender, ended),
            opener(Arc::default()),
            IDLE_CLOSE,
        );
        let got: Vec<_> = answers.collect().await;
        assert!(got.is_empty(), "no answer invented: {got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_reopen_is_the_streams_error_and_end() {
        let (tx, rx) = mpsc::channel::<u64>(4);
        let refuse =
            |_body: mpsc::Receiver<u64>| futures::future::ready(Err::<Answers<u64>, _>(Status::unavailable("gone")));
        let answers = carry(tokio_stream::wrappers::ReceiverStream::new(rx), first(), refuse, IDLE_CLOSE);
        let mut answers = std::pin::pin!(answers);
        tx.send(1).await.unwrap();
        assert_eq!(answers.next().await.unwrap().unwrap(), 2);
        let later = tokio::spawn(async move {
            tokio::time::sleep(IDLE_CLOSE * 2).await;
            tx.send(2).await.unwrap();
            tx
        });
        let err = answers.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(answers.next().await.is_none());
        drop(later.await.unwrap());
    }
}
