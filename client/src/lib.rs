//! weft's Rust client.
//!
//! - [`client`]: [`Client`] talks to partitions by id: finds each partition's primary,
//!   caches it, follows not-primary answers by their `weft.v1.ErrorDetail`, retries with
//!   backoff under a deadline, and gives every write a session sequence number so a retry
//!   never applies twice. Gets and writes travel on one session stream per node.
//! - [`routing`]: [`routing::ServiceClient`] talks to services by key: it hashes the key
//!   to its partition by the cluster map and calls through a [`Client`].
//! - `session`: the client's end of `Store.Session`.
//! - [`watch`]: the client's end of `Store.Watch`: a partition's (or, through
//!   [`routing::ServiceClient::watch`], a service's) committed changes, resumed across
//!   breaks.
//!
//! It depends on the wire types (`weft-proto`), the calling side of TLS
//! (`weft-security`) and the key-space function, and never on the node, the replica or
//! the live cluster manager. `docs/api.md` is the contract it implements.

pub mod client;
pub mod routing;
mod session;
pub mod watch;

pub use client::{Client, ClientConfig, ClientError, ReadMode, WriteTicket};
pub use watch::{WatchOptions, WatchStream};
