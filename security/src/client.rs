//! The calling side: channels to nodes over TLS with the newest credentials, one per node
//! address ([`Channels`]), and the bearer token a client without a certificate presents.
//!
//! A secure channel is a tonic `Channel` over a custom connector that opens TCP, sets
//! `TCP_NODELAY` and runs the TLS handshake with whatever client configuration the
//! [`Credentials`] hold at that moment, so a rotated certificate is used from the next
//! connection on. The URI stays `http://`: the connector has already made the stream
//! secure, and tonic speaks HTTP/2 over it. The node's certificate is checked against the
//! cluster CA and the address dialled (an IP address or a DNS name).

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::credentials::Credentials;
use crate::net::{BoxStream, SharedNetwork};

/// How a client reaches nodes.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    /// TLS credentials; `None` connects in plaintext (to `--insecure` nodes).
    pub tls: Option<Arc<Credentials>>,
    /// A bearer token to present (with TLS, for a client without a certificate).
    pub token: Option<Arc<str>>,
    /// The network to dial over; `None` is real TCP ([`crate::net`]).
    pub network: Option<SharedNetwork>,
}

impl ClientSecurity {
    /// Plaintext, no identity: what `--insecure` nodes expect.
    pub fn insecure() -> Self {
        ClientSecurity::default()
    }

    /// TLS with `creds`.
    pub fn tls(creds: Arc<Credentials>) -> Self {
        ClientSecurity { tls: Some(creds), token: None, network: None }
    }

    /// The same, dialing over `network` instead of TCP.
    pub fn over(mut self, network: Option<SharedNetwork>) -> Self {
        self.network = network;
        self
    }

    /// The same, presenting `token` on every call.
    pub fn with_token(mut self, token: impl Into<Arc<str>>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A lazily connecting channel to `endpoint` (an `http://host:port` endpoint whose other
    /// settings the caller chose), secured as configured.
    pub fn connect_lazy(&self, endpoint: Endpoint, connect_timeout: Duration) -> Channel {
        let endpoint = endpoint.connect_timeout(connect_timeout);
        match (&self.tls, &self.network) {
            (None, None) => endpoint.connect_lazy(),
            (Some(creds), None) => endpoint.connect_with_connector_lazy(TlsConnector { creds: creds.clone() }),
            // A simulated network carries plaintext only (`crate::net`).
            (_, Some(network)) => endpoint.connect_with_connector_lazy(NetConnector { network: network.clone() }),
        }
    }

    /// The interceptor adding this client's token (if any) to every call.
    pub fn interceptor(&self) -> Auth {
        Auth { token: self.token.as_ref().and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok()) }
    }

    /// `channel` with this client's token on every call.
    pub fn wrap(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self.interceptor())
    }
}

/// A channel whose calls carry the client's token: what every weft client talks through.
pub type AuthChannel = InterceptedService<Channel, Auth>;

/// HTTP/2 stream flow-control window of every channel: large enough that a 1 MiB value or
/// a snapshot chunk does not wait on window updates.
pub const STREAM_WINDOW_BYTES: u32 = 4 << 20;
/// HTTP/2 connection flow-control window of every channel.
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// Cancelled calls (a raft heartbeat or a ping past its timeout) a channel remembers, and
/// for how long: a frame the server had already sent for a remembered one is dropped
/// quietly. h2 remembers 50 for a second; a node with thousands of groups cancels more
/// than that on a busy machine, and each frame for a forgotten one is a protocol error.
const RESET_STREAMS_REMEMBERED: usize = 16_384;
const RESET_STREAMS_FOR: Duration = Duration::from_secs(10);

/// One lazily connected channel per node address, shared by every caller: a node's
/// channels to its peers, a client's to the nodes. Every channel has `TCP_NODELAY`, the
/// windows above and HTTP/2 keep-alive pings every 5 s (a dead peer is noticed within
/// 10 s), and is secured as the [`ClientSecurity`] says.
#[derive(Clone, Debug)]
pub struct Channels {
    inner: Arc<ChannelsInner>,
}

#[derive(Debug)]
struct ChannelsInner {
    channels: parking_lot::Mutex<std::collections::BTreeMap<String, AuthChannel>>,
    security: ClientSecurity,
    connect_timeout: Duration,
}

impl Channels {
    /// No channels yet; each connects on first use, within `connect_timeout`.
    pub fn new(security: ClientSecurity, connect_timeout: Duration) -> Self {
        let inner = ChannelsInner { channels: Default::default(), security, connect_timeout };
        Channels { inner: Arc::new(inner) }
    }

    /// How these channels are secured.
    pub fn security(&self) -> &ClientSecurity {
        &self.inner.security
    }

    /// The shared channel to `addr` (`host:port`). The URI stays `http://`: the connector
    /// makes the stream secure.
    pub fn channel(&self, addr: &str) -> Result<AuthChannel, tonic::Status> {
        let mut channels = self.inner.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| tonic::Status::invalid_argument(format!("node address {addr:?}: {e}")))?
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .http2_max_concurrent_reset_streams(RESET_STREAMS_REMEMBERED)
            .http2_reset_stream_duration(RESET_STREAMS_FOR)
            // h2 closes a connection (GOAWAY) after 1,024 such errors over its whole life:
            // on a long-lived channel to a server this process chose and authenticated,
            // that limit closed every group's stream at once under load, and the groups
            // then lost their quorum together. The server side has no such limit either.
            .http2_max_local_error_reset_streams(None);
        let security = &self.inner.security;
        let channel = security.wrap(security.connect_lazy(endpoint, self.inner.connect_timeout));
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Adds `authorization: Bearer TOKEN` to every call when a token is configured.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    token: Option<AsciiMetadataValue>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// Dials over a [`crate::net::Network`] (plaintext).
#[derive(Clone, Debug)]
pub struct NetConnector {
    network: SharedNetwork,
}

impl tower::Service<Uri> for NetConnector {
    type Response = TokioIo<BoxStream>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let network = self.network.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| io::Error::other(format!("{uri}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(80);
            Ok(TokioIo::new(network.dial(host, port).await?))
        })
    }
}

/// Opens TCP and runs the TLS handshake with the credentials' current client configuration.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    creds: Arc<Credentials>,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.creds.current().client.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| io::Error::other(format!("{uri}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
