//! weft's transport security: TLS on every listener and channel, who is calling, and what
//! they may do.
//!
//! - [`files`]: the certificate directory's layout (CockroachDB's: `ca.crt`,
//!   `node.crt`/`node.key`, `client.NAME.crt`/`.key`), written 0600/0700.
//! - [`issue`]: making a CA, node and client certificates (`weft cert`).
//! - [`identity`]: who a verified certificate names: node N, or user NAME.
//! - [`credentials`]: rustls configurations read from a directory and reloaded from it, on
//!   SIGHUP and when the files change, keeping the old ones when the new are invalid.
//! - [`server`]: accepting connections: TLS handshakes off the accept loop, plaintext
//!   callers kept only to be refused clearly, idle and connection limits.
//! - [`client`]: channels over TLS with the current credentials; the bearer token.
//! - [`access`]: roles, grants, users, and what each gRPC method needs.
//! - [`gate`]: the tower layer that authenticates and authorizes every request.
//!
//! It knows nothing of partitions, replicas or the cluster map: the node feeds the gate the
//! map's users and checks per-service rights itself with the [`access::Principal`] the gate
//! hands it. rustls runs on the ring provider, which builds with the Rust toolchain alone.

pub mod access;
pub mod client;
pub mod credentials;
pub mod files;
pub mod gate;
pub mod identity;
pub mod issue;
pub mod log_budget;
pub mod net;
pub mod rng;
pub mod server;

use std::path::{Path, PathBuf};

pub use access::{Principal, Right, Role};
pub use client::{AuthChannel, Channels, ClientSecurity};
pub use credentials::{Credentials, Holder};
pub use identity::Identity;

/// What went wrong with certificates or credentials: the one error this crate returns.
/// New variants may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file that would be overwritten exists.
    #[error("{} exists (pass --overwrite to replace it)", .0.display())]
    Exists(PathBuf),
    /// A PEM file holds no usable certificate or key.
    #[error("{}: {}", .0.display(), .1)]
    Pem(PathBuf, String),
    /// A certificate does not parse.
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// A certificate names no weft identity.
    #[error("certificate names no weft identity: {0}")]
    NoIdentity(String),
    /// A certificate could not be made.
    #[error("making a certificate: {0}")]
    Issue(String),
    /// The TLS configuration could not be built from the files.
    #[error("{0}")]
    Tls(String),
    /// New credentials were refused.
    #[error("{0}")]
    Reload(String),
    /// A user name is not allowed.
    #[error("user name {0:?}: 1 to 63 of a-z, 0-9, '_', '-', '.', starting with a letter or digit")]
    UserName(String),
    /// A role name is not known.
    #[error("{0}")]
    Role(String),
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}
