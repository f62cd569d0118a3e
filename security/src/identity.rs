//! Who a certificate says its holder is.
//!
//! - A **node** certificate carries the URI subject alternative name `weft://node/<id>`
//!   (its common name is `node`), both the server and client extended key usages, and DNS
//!   or IP names for the hosts it serves on. Only such a certificate gives the internal
//!   `node` role, and its id is what heartbeats are checked against.
//! - A **client** certificate's common name is its user's name; it has the client extended
//!   key usage only, so it can never serve as a node's server certificate, and it carries no
//!   node URI, so it can never claim the `node` role.
//!
//! Parsing here never verifies anything: the TLS handshake has already verified the chain
//! against the cluster CA and the validity period before an identity is read.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::Error;

/// The URI prefix naming a node in its certificate.
pub const NODE_URI_PREFIX: &str = "weft://node/";

/// The user a client acts as when it names none (a new cluster grants it `operator`).
pub const DEFAULT_USER: &str = "root";

/// Who the holder of a verified certificate is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A node of the cluster, by id (the internal `node` role).
    Node(u64),
    /// A user, by name: its roles come from the cluster map.
    User(String),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Node(id) => write!(f, "node {id}"),
            Identity::User(name) => write!(f, "user {name}"),
        }
    }
}

/// What `weft cert list` shows of one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name.
    pub subject: String,
    /// `ca`, `node N` or `client` (the holder's kind).
    pub kind: Kind,
    /// DNS names, IP addresses and URIs it names.
    pub names: Vec<String>,
    /// Validity, seconds since the Unix epoch.
    pub not_before_unix: i64,
    /// Expiry, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Serial number, hex.
    pub serial: String,
}

/// A certificate's kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A certificate authority.
    Ca,
    /// A node's certificate.
    Node(u64),
    /// A user's client certificate.
    Client(String),
    /// Anything else (a server certificate made elsewhere).
    Other,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Ca => write!(f, "ca"),
            Kind::Node(id) => write!(f, "node {id}"),
            Kind::Client(u) => write!(f, "client {u}"),
            Kind::Other => write!(f, "other"),
        }
    }
}

/// A user name is 1 to 63 characters of `a-z`, `0-9`, `_`, `-` and `.`, starting with a
/// letter or digit: it is part of file names (`client.NAME.crt`) and of log lines.
pub fn check_user_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok { Ok(()) } else { Err(Error::UserName(name.to_string())) }
}

/// Reads one certificate (DER).
pub fn info(der: &[u8]) -> Result<CertInfo, Error> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| Error::Parse(e.to_string()))?;
    let subject = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("").to_string();
    let mut names = Vec::new();
    let mut node = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::URI(u) => {
                    if let Some(id) = u.strip_prefix(NODE_URI_PREFIX).and_then(|s| s.parse::<u64>().ok()) {
                        node = Some(id);
                    }
                    names.push(u.to_string());
                }
                GeneralName::IPAddress(b) => names.push(ip_text(b)),
                _ => {}
            }
        }
    }
    let kind = if cert.is_ca() {
        Kind::Ca
    } else if let Some(id) = node {
        Kind::Node(id)
    } else if check_user_name(&subject).is_ok() && client_only(&cert) {
        Kind::Client(subject.clone())
    } else {
        Kind::Other
    };
    Ok(CertInfo {
        subject,
        kind,
        names,
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
    })
}

/// The identity a verified leaf certificate gives its holder, or why it gives none.
pub fn of_leaf(der: &[u8]) -> Result<Identity, Error> {
    let i = info(der)?;
    match i.kind {
        Kind::Node(id) => Ok(Identity::Node(id)),
        Kind::Client(name) => Ok(Identity::User(name)),
        Kind::Ca => Err(Error::NoIdentity("a CA certificate".into())),
        Kind::Other => Err(Error::NoIdentity(format!(
            "common name {:?} with neither a node URI ({NODE_URI_PREFIX}N) nor a user name and client-only use",
            i.subject
        ))),
    }
}

/// Whether the certificate may authenticate a client and never a server.
fn client_only(cert: &X509Certificate<'_>) -> bool {
    match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.client_auth && !eku.value.server_auth,
        _ => false,
    }
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{b:02x?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for ok in ["root", "alice", "svc-1", "a.b_c", "0day"] {
            check_user_name(ok).unwrap();
        }
        for bad in ["", "Root", "-x", ".x", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(check_user_name(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
