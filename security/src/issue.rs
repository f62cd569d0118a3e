//! Making certificates: a cluster CA, node certificates and client certificates (rcgen,
//! ECDSA P-256 keys, which every TLS stack verifies, unlike Ed25519).
//!
//! Every certificate is backdated an hour so that clocks a little apart still accept it,
//! gets a random serial, and names its holder as [`crate::identity`] describes.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::Error;
use crate::files::{self, CA_CERT, CA_KEY, NODE_CERT, NODE_KEY};
use crate::identity::{CertInfo, NODE_URI_PREFIX, check_user_name};

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// Valid from.
    pub not_before: OffsetDateTime,
    /// Valid until.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago for `days` days.
    pub fn days(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - time::Duration::hours(1), not_after: now + time::Duration::days(i64::from(days)) }
    }
}

/// Default lifetimes, as CockroachDB's: the CA ten years, nodes and clients five.
pub const CA_DAYS: u32 = 3650;
/// A node or client certificate's default lifetime.
pub const LEAF_DAYS: u32 = 1825;

/// A PEM certificate and its PEM (PKCS#8) key.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// A CA able to sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), to hand to whoever must trust it.
    pub cert_pem: String,
}

fn serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

fn rc(e: rcgen::Error) -> Error {
    Error::Issue(e.to_string())
}

impl Ca {
    /// A new self-signed CA.
    pub fn create(validity: Validity) -> Result<(Ca, String), Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "weft cluster CA");
        p.distinguished_name.push(DnType::OrganizationName, "weft");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        p.not_before = validity.not_before;
        p.not_after = validity.not_after;
        p.serial_number = Some(serial());
        let key = KeyPair::generate().map_err(rc)?;
        let cert = p.self_signed(&key).map_err(rc)?;
        let key_pem = key.serialize_pem();
        Ok((Ca { issuer: Issuer::new(p, key), cert_pem: cert.pem() }, key_pem))
    }

    /// The CA whose certificate is the first in `cert_pem` and whose key is `key_pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(rc)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(rc)?;
        Ok(Ca { issuer, cert_pem: cert_pem.to_string() })
    }

    /// Loads `dir/ca.crt` and the key at `ca_key` (default `dir/ca.key`).
    pub fn load(dir: &Path, ca_key: Option<&Path>) -> Result<Ca, Error> {
        let key_path = ca_key.map_or_else(|| dir.join(CA_KEY), Path::to_path_buf);
        let cert = String::from_utf8_lossy(&files::read(&dir.join(CA_CERT))?).into_owned();
        let key = String::from_utf8_lossy(&files::read(&key_path)?).into_owned();
        Ca::from_pem(&cert, &key)
    }

    fn leaf(&self, mut p: CertificateParams, validity: Validity) -> Result<Issued, Error> {
        p.not_before = validity.not_before;
        p.not_after = validity.not_after;
        p.serial_number = Some(serial());
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate().map_err(rc)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(rc)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Node `id`'s certificate, serving on `hosts` (DNS names or IP addresses).
    pub fn node(&self, id: u64, hosts: &[String], validity: Validity) -> Result<Issued, Error> {
        if id == 0 {
            // Id 0 is no node's: it is the tooling identity local harnesses use
            // ([`Ca::harness`]); an operator never makes one by hand.
            return Err(Error::Issue("node ids start at 1".into()));
        }
        self.node_cert(id, hosts, validity)
    }

    /// The identity local test and benchmark harnesses act as: a node certificate with id
    /// 0, which no node of a cluster has (a heartbeat from it is refused), giving the
    /// `node` role for opening replicas and reading their status directly.
    pub fn harness(&self, validity: Validity) -> Result<Issued, Error> {
        self.node_cert(0, &[], validity)
    }

    fn node_cert(&self, id: u64, hosts: &[String], validity: Validity) -> Result<Issued, Error> {
        let mut p = CertificateParams::new(hosts.to_vec()).map_err(rc)?;
        let uri = format!("{NODE_URI_PREFIX}{id}");
        p.subject_alt_names.push(SanType::URI(uri.as_str().try_into().map_err(rc)?));
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "node");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(p, validity)
    }

    /// User `name`'s client certificate.
    pub fn client(&self, name: &str, validity: Validity) -> Result<Issued, Error> {
        check_user_name(name)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(p, validity)
    }
}

/// `weft cert create-ca`: writes `dir/ca.crt` and the key to `ca_key` (default
/// `dir/ca.key`). Returns the paths written.
pub fn create_ca(dir: &Path, ca_key: Option<&Path>, days: u32, overwrite: bool) -> Result<Vec<PathBuf>, Error> {
    files::ensure_dir(dir)?;
    let key_path = ca_key.map_or_else(|| dir.join(CA_KEY), Path::to_path_buf);
    let cert_path = dir.join(CA_CERT);
    files::check_absent(&cert_path, overwrite)?;
    files::check_absent(&key_path, overwrite)?;
    let (ca, key_pem) = Ca::create(Validity::days(days))?;
    if let Some(parent) = key_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        files::ensure_dir(parent)?;
    }
    files::write_key(&key_path, &key_pem)?;
    files::write_cert(&cert_path, &ca.cert_pem)?;
    Ok(vec![cert_path, key_path])
}

/// `weft cert create-node`: writes `dir/node.crt` and `dir/node.key`, signed by the CA in
/// `dir/ca.crt` with its key at `ca_key` (default `dir/ca.key`).
pub fn create_node(
    dir: &Path,
    ca_key: Option<&Path>,
    id: u64,
    hosts: &[String],
    days: u32,
    overwrite: bool,
) -> Result<Vec<PathBuf>, Error> {
    if hosts.is_empty() {
        return Err(Error::Issue("a node certificate needs at least one --host it serves on".into()));
    }
    let ca = Ca::load(dir, ca_key)?;
    let issued = ca.node(id, hosts, Validity::days(days))?;
    write_pair(dir, NODE_CERT, NODE_KEY, &issued, overwrite)
}

/// `weft cert create-client`: writes `dir/client.NAME.crt` and `.key`.
pub fn create_client(
    dir: &Path,
    ca_key: Option<&Path>,
    name: &str,
    days: u32,
    overwrite: bool,
) -> Result<Vec<PathBuf>, Error> {
    let ca = Ca::load(dir, ca_key)?;
    let issued = ca.client(name, Validity::days(days))?;
    write_pair(dir, &crate::files::client_cert(name), &crate::files::client_key(name), &issued, overwrite)
}

/// Writes a certificate and its key into `dir`.
pub fn write_pair(dir: &Path, cert: &str, key: &str, issued: &Issued, overwrite: bool) -> Result<Vec<PathBuf>, Error> {
    files::ensure_dir(dir)?;
    let (cert_path, key_path) = (dir.join(cert), dir.join(key));
    files::check_absent(&cert_path, overwrite)?;
    files::check_absent(&key_path, overwrite)?;
    // Key first: a reloading node that sees the new certificate finds its key already there.
    files::write_key(&key_path, &issued.key_pem)?;
    files::write_cert(&cert_path, &issued.cert_pem)?;
    Ok(vec![cert_path, key_path])
}

/// `weft cert list`: every certificate in `dir` (files ending in `.crt`), in name order,
/// each file's certificates in order.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, CertInfo)>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        for der in crate::credentials::certs_from_pem(&files::read(&p)?, &p)? {
            out.push((p.clone(), crate::identity::info(&der)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Kind, info, of_leaf};

    fn der(pem: &str) -> Vec<u8> {
        crate::credentials::certs_from_pem(pem.as_bytes(), Path::new("test")).unwrap().remove(0).to_vec()
    }

    #[test]
    fn certificates_name_their_holders() {
        let (ca, _) = Ca::create(Validity::days(1)).unwrap();
        assert_eq!(info(&der(&ca.cert_pem)).unwrap().kind, Kind::Ca);
        let node = ca.node(7, &["127.0.0.1".into(), "node7.weft".into()], Validity::days(1)).unwrap();
        let n = info(&der(&node.cert_pem)).unwrap();
        assert_eq!(n.kind, Kind::Node(7));
        assert_eq!(n.subject, "node");
        assert!(n.names.contains(&"127.0.0.1".to_string()) && n.names.contains(&"node7.weft".to_string()));
        assert_eq!(of_leaf(&der(&node.cert_pem)).unwrap(), Identity::Node(7));
        let alice = ca.client("alice", Validity::days(1)).unwrap();
        assert_eq!(of_leaf(&der(&alice.cert_pem)).unwrap(), Identity::User("alice".into()));
        assert!(ca.client("Alice", Validity::days(1)).is_err(), "user names are checked");
        assert!(ca.node(0, &[], Validity::days(1)).is_err(), "node 0 is the harness's");
        assert_eq!(of_leaf(&der(&ca.harness(Validity::days(1)).unwrap().cert_pem)).unwrap(), Identity::Node(0));
    }

    #[test]
    fn the_cli_files_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        create_ca(dir, None, 10, false).unwrap();
        assert!(create_ca(dir, None, 10, false).is_err(), "an existing CA is not overwritten");
        create_node(dir, None, 3, &["localhost".into()], 10, false).unwrap();
        create_client(dir, None, "root", 10, false).unwrap();
        let all = list(dir).unwrap();
        let kinds: Vec<String> = all.iter().map(|(_, i)| i.kind.to_string()).collect();
        assert_eq!(kinds, ["ca", "client root", "node 3"]);
        assert!(all.iter().all(|(_, i)| i.not_after_unix > i.not_before_unix));
    }
}
