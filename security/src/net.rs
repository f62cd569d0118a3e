//! The network seam: how a node listens and how nodes and clients dial, so the same
//! servers and channels run over real TCP (the default) or a simulated network.
//!
//! [`Network`] is the whole seam: `bind` gives an [`Acceptor`], `dial` a [`BoxStream`] to
//! `host:port`. Real TCP is the default everywhere and is not routed through this trait
//! (its listener keeps its TLS detection and `TCP_NODELAY`; see [`crate::server`]); a
//! simulated network (`weft-testkit`'s turmoil network for `weft chaos --simulated`)
//! implements it. A simulated network carries plaintext only: TLS over it is refused when
//! the node starts, not silently skipped.

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream a connection runs over.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// A bound listener.
pub trait Acceptor: Send + 'static {
    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The next connection and its peer's address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;
}

/// A network nodes and clients reach each other over.
pub trait Network: Send + Sync + Debug + 'static {
    /// Listens on `addr`.
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Acceptor>>>;
    /// Connects to `host:port`.
    fn dial(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<BoxStream>>;
}

/// A shared [`Network`].
pub type SharedNetwork = Arc<dyn Network>;
