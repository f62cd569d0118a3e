//! The listening side: accepted TCP connections, their TLS handshakes, and the limits that
//! keep one caller from holding a node's connections or memory.
//!
//! [`incoming`] accepts connections on its own task and hands each to the server once it is
//! ready: in secure mode after a TLS handshake (run on a task of its own, under
//! [`ServerLimits::handshake_timeout`], at most [`ServerLimits::handshakes_max`] at once, so
//! a slow or silent peer delays nobody); in `--insecure` mode at once. A connection to a
//! secure node whose first byte is not a TLS record is served anyway, in plaintext, only so
//! that every request on it can be refused with a clear `UNAUTHENTICATED` ("this node
//! requires TLS") instead of a broken connection.
//!
//! Each connection carries a [`ConnInfo`] (who is on the other end, if anyone) that tonic
//! puts into every request's extensions, and a [`ConnState`] counting its requests in
//! flight. A connection with none in flight for [`ServerLimits::idle_timeout`] is closed;
//! a request in flight, however slow, is bounded by its own deadline instead (the layer's).
//! Client connections past [`ServerLimits::client_connections_max`] are served only to refuse
//! their requests with `RESOURCE_EXHAUSTED` and closed once idle a moment; twice that many
//! are closed at once. Node connections (a verified node certificate) are never counted:
//! a flood of clients cannot cut a node off from its peers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, Sleep};

use crate::credentials::{Credentials, Loaded};
use crate::identity::{self, Identity};
use crate::net::{Acceptor, BoxStream};

/// Limits on connections.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Time a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once; connections past it are closed on arrival.
    pub handshakes_max: usize,
    /// Client connections held at once (node connections are not counted).
    pub client_connections_max: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            handshake_timeout: Duration::from_secs(10),
            handshakes_max: 256,
            client_connections_max: 4096,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// How long a connection refused for the connection limit stays open once idle: long
/// enough for its requests to get their `RESOURCE_EXHAUSTED`.
const REFUSED_IDLE: Duration = Duration::from_secs(1);

/// How long a plaintext connection to a secure node stays open once idle.
const PLAINTEXT_IDLE: Duration = Duration::from_secs(2);

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The node runs `--insecure`: nobody is authenticated and everybody may do anything.
    Insecure,
    /// A secure node reached without TLS: every request is refused.
    Plaintext,
    /// TLS; the identity its verified client certificate gives, if it presented one (a
    /// client without one must present a token).
    Tls(Option<Identity>),
}

/// Connection counts and refusals, for metrics (and the budget their log lines share).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Log lines about refused connections.
    pub log: crate::log_budget::LogBudget,
    /// Client connections open now.
    pub client_connections: AtomicUsize,
    /// Node connections open now.
    pub node_connections: AtomicUsize,
    /// TLS handshakes that failed (bad or foreign certificate, timeout, garbage).
    pub handshakes_failed: AtomicU64,
    /// Connections closed on arrival: too many handshakes in progress or far too many
    /// client connections.
    pub connections_dropped: AtomicU64,
    /// Connections served only to refuse their requests (over the client connection limit).
    pub connections_over_limit: AtomicU64,
    /// Plaintext connections to this secure node.
    pub plaintext_connections: AtomicU64,
    /// Connections closed for idleness.
    pub idle_closed: AtomicU64,
}

/// What the layer and the services know of a request's connection (a request extension).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Who it is.
    pub peer: Peer,
    /// Its requests in flight and idleness.
    pub state: Arc<ConnState>,
}

/// A connection's requests in flight, and since when it has had none.
#[derive(Debug)]
pub struct ConnState {
    in_flight: AtomicUsize,
    /// Milliseconds since `base` when the last request ended.
    idle_since_ms: AtomicU64,
    base: Instant,
    /// Served only to refuse (over the client connection limit).
    pub over_limit: bool,
}

impl ConnState {
    fn new(over_limit: bool) -> Self {
        ConnState { in_flight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0), base: Instant::now(), over_limit }
    }

    /// A request started; it ends when the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// How long the connection has had no request in flight (zero while one is).
    fn idle_for(&self, now: Instant) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since = self.base + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        now.saturating_duration_since(since)
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.base.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A connection over a [`crate::net::Network`] (plaintext).
    Net(BoxStream),
}

/// Decrements its count when the connection closes.
struct Counted(Arc<ConnStats>, bool);

impl Drop for Counted {
    fn drop(&mut self) {
        let c = if self.1 { &self.0.node_connections } else { &self.0.client_connections };
        c.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted, ready connection.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    stats: Arc<ConnStats>,
    _counted: Counted,
}

impl Conn {
    /// Who is on the other end.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The idle timer is polled on every read so that it wakes this connection even when
        // its peer sends nothing; while requests are in flight it is only pushed forward.
        while this.idle.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let idle = this.info.state.idle_for(now);
            if idle >= this.idle_timeout {
                this.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle: closed")));
            }
            this.idle.as_mut().reset(now + (this.idle_timeout - idle));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Net(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Net(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Net(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Net(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Io::Net(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            Io::Net(s) => s.is_write_vectored(),
        }
    }
}

/// Which server configuration a listener uses.
#[derive(Clone, Copy, Debug)]
pub enum Listener {
    /// The gRPC port (ALPN `h2`).
    Grpc,
    /// The HTTP port (ALPN `h2`, `http/1.1`).
    Http,
}

impl Listener {
    fn config(self, l: &Loaded) -> Option<Arc<rustls::ServerConfig>> {
        match self {
            Listener::Grpc => l.server.clone(),
            Listener::Http => l.http.clone(),
        }
    }
}

/// Accepts connections on `listener` and yields each once ready (see the module docs).
/// `tls: None` is `--insecure`.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Credentials>>,
    kind: Listener,
    limits: ServerLimits,
    stats: Arc<ConnStats>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    let handshakes = Arc::new(Semaphore::new(limits.handshakes_max.max(1)));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Nagle would hold a stream's trailing frames for a delayed ACK (40 ms per
            // pipelined append heartbeat, so per idle linearizable read).
            let _ = tcp.set_nodelay(true);
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                stats.connections_dropped.fetch_add(1, Ordering::Relaxed);
                if stats.log.allow() {
                    tracing::warn!(%remote, "too many connections being set up; closed on arrival");
                }
                continue;
            };
            let (tx, tls, limits, stats) = (tx.clone(), tls.clone(), limits.clone(), stats.clone());
            tokio::spawn(async move {
                let conn = ready(tcp, remote, tls, kind, &limits, &stats).await;
                drop(permit);
                if let Some(conn) = conn {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Accepts connections from a simulated network's `acceptor` (plaintext, `--insecure`
/// only: see [`crate::net`]) and yields each at once, under the same connection limits.
pub fn incoming_net(
    mut acceptor: Box<dyn Acceptor>,
    limits: ServerLimits,
    stats: Arc<ConnStats>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                biased;
                () = tx.closed() => return,
                a = acceptor.accept() => a,
            };
            match accepted {
                Ok((stream, remote)) => {
                    if let Some(conn) = admit(Io::Net(stream), remote, Peer::Insecure, &limits, &stats) {
                        let _ = tx.send(Ok(conn)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

async fn ready(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<Arc<Credentials>>,
    kind: Listener,
    limits: &ServerLimits,
    stats: &Arc<ConnStats>,
) -> Option<Conn> {
    let Some(creds) = tls else {
        return admit(Io::Plain(tcp), remote, Peer::Insecure, limits, stats);
    };
    let setup = async {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a byte"));
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return Ok((Io::Plain(tcp), Peer::Plaintext));
        }
        let Some(config) = kind.config(&creds.current()) else {
            return Err(io::Error::other("these credentials have no server certificate"));
        };
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let who = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            None => None,
            // Verified by the handshake; a certificate naming nobody gets no identity.
            Some(leaf) => match identity::of_leaf(leaf) {
                Ok(i) => Some(i),
                Err(e) => return Err(io::Error::other(format!("client certificate: {e}"))),
            },
        };
        Ok((Io::Tls(Box::new(stream)), Peer::Tls(who)))
    };
    match tokio::time::timeout(limits.handshake_timeout, setup).await {
        Ok(Ok((io, peer))) => admit(io, remote, peer, limits, stats),
        Ok(Err(e)) => {
            stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            if stats.log.allow() {
                tracing::warn!(%remote, error = %e, "TLS handshake refused");
            }
            None
        }
        Err(_) => {
            stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            if stats.log.allow() {
                tracing::warn!(%remote, timeout = ?limits.handshake_timeout, "TLS handshake took too long; closed");
            }
            None
        }
    }
}

fn admit(io: Io, remote: SocketAddr, peer: Peer, limits: &ServerLimits, stats: &Arc<ConnStats>) -> Option<Conn> {
    let node = matches!(peer, Peer::Tls(Some(Identity::Node(_))));
    let mut idle_timeout = limits.idle_timeout;
    let mut over_limit = false;
    if node {
        stats.node_connections.fetch_add(1, Ordering::AcqRel);
    } else {
        let open = stats.client_connections.fetch_add(1, Ordering::AcqRel) + 1;
        if open > 2 * limits.client_connections_max {
            stats.client_connections.fetch_sub(1, Ordering::AcqRel);
            stats.connections_dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if open > limits.client_connections_max {
            over_limit = true;
            idle_timeout = REFUSED_IDLE;
            stats.connections_over_limit.fetch_add(1, Ordering::Relaxed);
            if stats.log.allow() {
                tracing::warn!(%remote, open, max = limits.client_connections_max, "client connection over the limit: its requests are refused");
            }
        }
    }
    if peer == Peer::Plaintext {
        idle_timeout = idle_timeout.min(PLAINTEXT_IDLE);
        stats.plaintext_connections.fetch_add(1, Ordering::Relaxed);
        if stats.log.allow() {
            tracing::warn!(%remote, "plaintext connection to a node that requires TLS: its requests are refused");
        }
    }
    tracing::debug!(%remote, ?peer, over_limit, open = stats.client_connections.load(Ordering::Relaxed), max = limits.client_connections_max, "connection admitted");
    let state = Arc::new(ConnState::new(over_limit));
    Some(Conn {
        io,
        info: ConnInfo { remote: Some(remote), peer, state },
        idle: Box::pin(tokio::time::sleep(idle_timeout)),
        idle_timeout,
        stats: stats.clone(),
        _counted: Counted(stats.clone(), node),
    })
}
