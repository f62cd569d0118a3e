//! TLS credentials read from a certificate directory, and reloaded from it without a restart.
//!
//! A node's credentials are `ca.crt`, `node.crt` and `node.key`: one rustls server config
//! (its certificate; client certificates optional but verified against the CA when
//! presented, since clients may authenticate by token instead) and one client config (its
//! certificate, for calls to its peers). A client's are `ca.crt` and, unless it uses a token,
//! `client.USER.crt` and `.key`.
//!
//! Reloading (`Credentials::reload`, run by [`watch`] when a file changes and on SIGHUP):
//! the new files are read and checked whole (certificate and key match, the certificate
//! chains to the new CA and is within its validity, a node's id is unchanged) before they
//! replace the old; on any failure the old credentials stay in use and the reason is
//! logged once per change of the files. Connections already open keep the keys they
//! agreed; every new handshake, served or made, uses the newest credentials. That is how
//! etcd, TiKV and CockroachDB rotate certificates under load.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::Error;
use crate::files::{self, CA_CERT, NODE_CERT, NODE_KEY};
use crate::identity::{self, Identity};

/// The one crypto provider weft uses (ring: it builds with nothing but the Rust toolchain).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Every certificate in a PEM file.
pub fn certs_from_pem(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::Pem(path.to_path_buf(), "no certificate in it".into()));
    }
    Ok(certs)
}

/// Whose credentials these are.
#[derive(Clone, Debug)]
pub enum Holder {
    /// A node: `node.crt`/`node.key`; `id` is checked against the certificate when given.
    Node {
        /// The id the certificate must name.
        id: Option<u64>,
    },
    /// A client: `client.USER.crt`/`.key` when `user` is given; only `ca.crt` otherwise
    /// (a client authenticating by token, or one that only needs to verify the nodes).
    Client {
        /// The user whose certificate to present.
        user: Option<String>,
    },
}

/// One consistent set of TLS configurations.
pub struct Loaded {
    /// For the gRPC listener (ALPN `h2`); nodes only.
    pub server: Option<Arc<ServerConfig>>,
    /// For the HTTP listener (ALPN `h2` and `http/1.1`); nodes only.
    pub http: Option<Arc<ServerConfig>>,
    /// For outgoing connections (ALPN `h2`).
    pub client: Arc<ClientConfig>,
    /// Who the certificate names (none for a client without a certificate).
    pub identity: Option<Identity>,
    /// When the holder's certificate expires (the CA's when there is none), Unix seconds.
    pub not_after_unix: i64,
    /// When the first CA certificate expires, Unix seconds.
    pub ca_not_after_unix: i64,
    /// The holder's certificate serial number (hex), empty when there is none.
    pub serial: String,
}

type Stamp = Vec<Option<SystemTime>>;

/// Credentials from a directory, replaced whole on a successful reload.
pub struct Credentials {
    dir: PathBuf,
    holder: Holder,
    current: RwLock<Arc<Loaded>>,
    /// Modification times of the files as last loaded, and as last refused.
    stamps: Mutex<(Stamp, Option<Stamp>)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("dir", &self.dir).field("holder", &self.holder).finish()
    }
}

impl Credentials {
    /// Loads the credentials of `holder` from `dir`.
    pub fn load(dir: &Path, holder: Holder) -> Result<Arc<Credentials>, Error> {
        let stamp = stamps(dir, &holder);
        let loaded = read(dir, &holder)?;
        Ok(Arc::new(Credentials {
            dir: dir.to_path_buf(),
            holder,
            current: RwLock::new(Arc::new(loaded)),
            stamps: Mutex::new((stamp, None)),
        }))
    }

    /// The credentials in use now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().clone()
    }

    /// The directory they come from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the files again and, if they are valid, uses them from now on. `Ok(false)`: the
    /// files are unchanged since the last load (unless `force`). On error the old
    /// credentials stay.
    pub fn reload(&self, force: bool) -> Result<bool, Error> {
        let stamp = stamps(&self.dir, &self.holder);
        if !force && self.stamps.lock().0 == stamp {
            return Ok(false);
        }
        let result = read(&self.dir, &self.holder).and_then(|new| {
            let old = self.current();
            if old.identity.is_some() && new.identity != old.identity {
                return Err(Error::Reload(format!(
                    "the new certificate names {}, the old one {}",
                    new.identity.as_ref().map_or_else(|| "no one".into(), |i| i.to_string()),
                    old.identity.as_ref().map_or_else(|| "no one".into(), |i| i.to_string()),
                )));
            }
            Ok(new)
        });
        match result {
            Ok(new) => {
                tracing::info!(
                    dir = %self.dir.display(),
                    serial = %new.serial,
                    expires_unix = new.not_after_unix,
                    "certificates reloaded"
                );
                *self.current.write() = Arc::new(new);
                *self.stamps.lock() = (stamp, None);
                Ok(true)
            }
            Err(e) => {
                let mut s = self.stamps.lock();
                if s.1.as_ref() != Some(&stamp) {
                    tracing::error!(dir = %self.dir.display(), error = %e, "new certificates refused; the old ones stay in use");
                    s.1 = Some(stamp);
                }
                Err(e)
            }
        }
    }
}

/// Reloads every credential set when its files change (checked every `every`, the first
/// time `every` from now) and at once on SIGHUP, for as long as the process runs.
pub fn watch(all: Vec<Arc<Credentials>>, every: Duration) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: certificates reload only when their files change");
                None
            }
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
            };
            if forced {
                tracing::info!("SIGHUP: reloading certificates");
            }
            for c in &all {
                // Errors are logged by `reload`, once per change of the files.
                let _ = c.reload(forced);
            }
        }
    });
}

/// The certificate and key files `holder` presents. A node's are `node.crt`/`node.key`;
/// where those are absent, a directory shared by several nodes (a Kubernetes Secret
/// mounted in every pod of a StatefulSet) may hold `node-N.crt`/`node-N.key` for each.
fn holder_files(dir: &Path, holder: &Holder) -> Option<(String, String)> {
    match holder {
        Holder::Node { id: Some(id) }
            if !dir.join(NODE_CERT).exists() && dir.join(format!("node-{id}.crt")).exists() =>
        {
            Some((format!("node-{id}.crt"), format!("node-{id}.key")))
        }
        Holder::Node { .. } => Some((NODE_CERT.into(), NODE_KEY.into())),
        Holder::Client { user: Some(u) } => Some((files::client_cert(u), files::client_key(u))),
        Holder::Client { user: None } => None,
    }
}

fn stamps(dir: &Path, holder: &Holder) -> Stamp {
    let mut names = vec![CA_CERT.to_string()];
    if let Some((c, k)) = holder_files(dir, holder) {
        names.extend([c, k]);
    }
    names.iter().map(|n| std::fs::metadata(dir.join(n)).and_then(|m| m.modified()).ok()).collect()
}

fn tls(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

fn read(dir: &Path, holder: &Holder) -> Result<Loaded, Error> {
    let ca_path = dir.join(CA_CERT);
    let cas = certs_from_pem(&files::read(&ca_path)?, &ca_path)?;
    let mut roots = RootCertStore::empty();
    for c in &cas {
        roots.add(c.clone()).map_err(|e| Error::Pem(ca_path.clone(), e.to_string()))?;
    }
    let roots = Arc::new(roots);
    let ca_not_after_unix = identity::info(&cas[0])?.not_after_unix;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(tls)?;
    let client_builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_root_certificates(roots.clone());
    let Some((cert_name, key_name)) = holder_files(dir, holder) else {
        let mut client = client_builder.with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        return Ok(Loaded {
            server: None,
            http: None,
            client: Arc::new(client),
            identity: None,
            not_after_unix: ca_not_after_unix,
            ca_not_after_unix,
            serial: String::new(),
        });
    };
    let (cert_path, key_path) = (dir.join(&cert_name), dir.join(&key_name));
    let chain = certs_from_pem(&files::read(&cert_path)?, &cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(&files::read(&key_path)?)
        .map_err(|e| Error::Pem(key_path.clone(), e.to_string()))?;
    // The certificate must chain to this CA and be valid now: checked as a peer would.
    verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()).map_err(|e| {
        Error::Tls(format!("{} does not verify against {}: {e}", cert_path.display(), ca_path.display()))
    })?;
    let leaf = identity::info(&chain[0])?;
    let who = identity::of_leaf(&chain[0])?;
    match (holder, &who) {
        (Holder::Node { id: Some(want) }, Identity::Node(got)) if want != got => {
            return Err(Error::Tls(format!("{} names node {got}, but this is node {want}", cert_path.display())));
        }
        (Holder::Node { .. }, Identity::Node(_)) => {}
        (Holder::Node { .. }, other) => {
            return Err(Error::Tls(format!("{} is not a node certificate: it names {other}", cert_path.display())));
        }
        (Holder::Client { user: Some(u) }, Identity::User(name)) if u != name => {
            return Err(Error::Tls(format!("{} names user {name}, not {u}", cert_path.display())));
        }
        (Holder::Client { .. }, _) => {}
    }
    let mut client = client_builder.with_client_auth_cert(chain.clone(), key.clone_key()).map_err(tls)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    let (server, http) = if matches!(holder, Holder::Node { .. }) {
        let server_config = |alpn: Vec<Vec<u8>>| -> Result<Arc<ServerConfig>, Error> {
            let mut s = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(tls)?
                .with_client_cert_verifier(verifier.clone())
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(tls)?;
            s.alpn_protocols = alpn;
            Ok(Arc::new(s))
        };
        (Some(server_config(vec![b"h2".to_vec()])?), Some(server_config(vec![b"h2".to_vec(), b"http/1.1".to_vec()])?))
    } else {
        (None, None)
    };
    Ok(Loaded {
        server,
        http,
        client: Arc::new(client),
        identity: Some(who),
        not_after_unix: leaf.not_after_unix,
        ca_not_after_unix,
        serial: leaf.serial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{self, Ca, Validity};

    fn node_dir(ca: &Ca, dir: &Path, id: u64) {
        std::fs::create_dir_all(dir).unwrap();
        files::write_cert(&dir.join(CA_CERT), &ca.cert_pem).unwrap();
        let n = ca.node(id, &["127.0.0.1".into()], Validity::days(1)).unwrap();
        issue::write_pair(dir, NODE_CERT, NODE_KEY, &n, true).unwrap();
    }

    /// A directory shared by several nodes (one Secret in every pod) holds node-N.crt/.key
    /// for each: every node presents its own, and a node with no file of its own is told
    /// so.
    #[test]
    fn a_shared_directory_gives_each_node_its_own_certificate() {
        let t = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::create(Validity::days(1)).unwrap();
        files::write_cert(&t.path().join(CA_CERT), &ca.cert_pem).unwrap();
        for id in [1, 2] {
            let n = ca.node(id, &["127.0.0.1".into()], Validity::days(1)).unwrap();
            issue::write_pair(t.path(), &format!("node-{id}.crt"), &format!("node-{id}.key"), &n, true).unwrap();
        }
        for id in [1, 2] {
            let c = Credentials::load(t.path(), Holder::Node { id: Some(id) }).unwrap();
            assert_eq!(c.current().identity, Some(crate::identity::Identity::Node(id)), "node {id}");
        }
        assert!(Credentials::load(t.path(), Holder::Node { id: Some(3) }).is_err());
    }

    /// SIGHUP reloads at once, whatever the file poll's period: with the poll an hour
    /// away, only the signal can bring the new certificate in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sighup_reloads_the_certificates_at_once() {
        use tokio::signal::unix::{SignalKind, signal};
        // A listener of the test's own first: from here on SIGHUP is handled, and never
        // ends the test process, whenever the watcher's own listener is in place.
        let _own = signal(SignalKind::hangup()).unwrap();
        let t = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::create(Validity::days(1)).unwrap();
        node_dir(&ca, t.path(), 1);
        let c = Credentials::load(t.path(), Holder::Node { id: Some(1) }).unwrap();
        let first = c.current().serial.clone();
        watch(vec![c.clone()], Duration::from_secs(3600));
        node_dir(&ca, t.path(), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while c.current().serial == first {
            assert!(std::time::Instant::now() < deadline, "SIGHUP did not reload the certificates");
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn a_node_loads_its_own_certificate_only() {
        let t = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::create(Validity::days(1)).unwrap();
        node_dir(&ca, t.path(), 4);
        let c = Credentials::load(t.path(), Holder::Node { id: Some(4) }).unwrap();
        assert_eq!(c.current().identity, Some(Identity::Node(4)));
        assert!(c.current().server.is_some());
        let e = Credentials::load(t.path(), Holder::Node { id: Some(5) }).unwrap_err();
        assert!(e.to_string().contains("names node 4, but this is node 5"), "{e}");
    }

    #[test]
    fn a_reload_keeps_the_old_credentials_when_the_new_files_are_bad() {
        let t = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::create(Validity::days(1)).unwrap();
        node_dir(&ca, t.path(), 1);
        let c = Credentials::load(t.path(), Holder::Node { id: Some(1) }).unwrap();
        let first = c.current().serial.clone();
        assert!(!c.reload(false).unwrap(), "nothing changed");

        // A certificate from another CA: refused, the old one stays.
        let (other, _) = Ca::create(Validity::days(1)).unwrap();
        let foreign = other.node(1, &["127.0.0.1".into()], Validity::days(1)).unwrap();
        issue::write_pair(t.path(), NODE_CERT, NODE_KEY, &foreign, true).unwrap();
        let e = c.reload(false).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        assert_eq!(c.current().serial, first);

        // Garbage in the key: refused.
        files::write_key(&t.path().join(NODE_KEY), "not a key").unwrap();
        assert!(c.reload(false).is_err());
        assert_eq!(c.current().serial, first);

        // An expired certificate: refused.
        let now = time::OffsetDateTime::now_utc();
        let old = Validity { not_before: now - time::Duration::days(3), not_after: now - time::Duration::days(1) };
        let expired = ca.node(1, &["127.0.0.1".into()], old).unwrap();
        issue::write_pair(t.path(), NODE_CERT, NODE_KEY, &expired, true).unwrap();
        let e = c.reload(false).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("expired"), "{e}");

        // A good new certificate for the same node: taken.
        node_dir(&ca, t.path(), 1);
        assert!(c.reload(false).unwrap());
        assert_ne!(c.current().serial, first);

        // One for another node: refused.
        node_dir(&ca, t.path(), 2);
        let e = c.reload(false).unwrap_err();
        assert!(e.to_string().contains("names node 2"), "{e}");
    }
}
