//! The async runtime every raft group runs on: openraft's tokio runtime, with the
//! randomness (election timeouts, the tick's first wait) drawn from
//! [`weft_security::rng`], which a simulation seeds. On a real node nothing seeds it and
//! each draw comes from the operating system's generator, as with openraft's own runtime.
//!
//! Everything but `thread_rng` and the channels is the tokio runtime's, delegated. The
//! channels are tokio's too, carrying each message boxed ([`BoxedMpsc`]): a tokio channel
//! allocates its first block of 32 slots when it is made, and openraft's messages are
//! large, so the few channels every group opens held about 25 KiB per group whether or not
//! anything was ever sent (measured with heaptrack at 400 idle groups on a node, issue 20).
//! A boxed slot is one pointer; the box costs an allocation per message, which only busy
//! groups pay.

use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::{Mpsc, MpscReceiver, MpscSender, MpscWeakSender, SendError, TryRecvError};
use openraft::{AsyncRuntime, OptionalSend};
use openraft_rt_tokio::TokioRuntime;
use rand_openraft::SeedableRng;
use rand_openraft::rngs::SmallRng;

/// openraft's tokio runtime with seedable randomness (module docs).
#[derive(Debug)]
pub struct WeftRuntime(TokioRuntime);

impl AsyncRuntime for WeftRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SmallRng::seed_from_u64(weft_security::rng::random_u64())
    }

    type Mpsc = BoxedMpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        WeftRuntime(TokioRuntime::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }
}

/// Bounded tokio channels whose messages travel boxed (module docs).
#[derive(Debug)]
pub struct BoxedMpsc;

/// The sending half of a [`BoxedMpsc`] channel.
pub struct BoxedSender<T>(tokio::sync::mpsc::Sender<Box<T>>);

/// The receiving half of a [`BoxedMpsc`] channel.
pub struct BoxedReceiver<T>(tokio::sync::mpsc::Receiver<Box<T>>);

/// A sender that does not keep a [`BoxedMpsc`] channel open.
pub struct BoxedWeakSender<T>(tokio::sync::mpsc::WeakSender<Box<T>>);

impl<T> Clone for BoxedSender<T> {
    fn clone(&self) -> Self {
        BoxedSender(self.0.clone())
    }
}

impl<T> Clone for BoxedWeakSender<T> {
    fn clone(&self) -> Self {
        BoxedWeakSender(self.0.clone())
    }
}

impl Mpsc for BoxedMpsc {
    type Sender<T: OptionalSend> = BoxedSender<T>;
    type Receiver<T: OptionalSend> = BoxedReceiver<T>;
    type WeakSender<T: OptionalSend> = BoxedWeakSender<T>;

    fn channel<T: OptionalSend>(buffer: usize) -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer);
        (BoxedSender(tx), BoxedReceiver(rx))
    }
}

impl<T: OptionalSend> MpscSender<BoxedMpsc, T> for BoxedSender<T> {
    fn send(&self, msg: T) -> impl Future<Output = Result<(), SendError<T>>> + OptionalSend {
        let sent = self.0.send(Box::new(msg));
        async move { sent.await.map_err(|e| SendError(*e.0)) }
    }

    fn downgrade(&self) -> BoxedWeakSender<T> {
        BoxedWeakSender(self.0.downgrade())
    }
}

impl<T: OptionalSend> MpscReceiver<T> for BoxedReceiver<T> {
    fn recv(&mut self) -> impl Future<Output = Option<T>> + OptionalSend {
        let received = self.0.recv();
        async move { received.await.map(|b| *b) }
    }

    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map(|b| *b).map_err(|e| match e {
            tokio::sync::mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            tokio::sync::mpsc::error::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }
}

impl<T: OptionalSend> MpscWeakSender<BoxedMpsc, T> for BoxedWeakSender<T> {
    fn upgrade(&self) -> Option<BoxedSender<T>> {
        self.0.upgrade().map(BoxedSender)
    }
}
