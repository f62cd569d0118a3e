//! The certificate directory's layout (CockroachDB's) and how its files are written.
//!
//! ```text
//! DIR/ca.crt                  the cluster CA (PEM; several certificates while a CA rotates)
//! DIR/ca.key                  the CA's key (only where certificates are made; keep it elsewhere
//!                             in production: `weft cert --ca-key PATH`)
//! DIR/node.crt, node.key      a node's certificate (server and client) and key
//! DIR/client.NAME.crt, .key   user NAME's client certificate and key
//! ```
//!
//! Keys are written with mode 0600 and directories created 0700; every file is written to a
//! temporary name and renamed into place, so a node that reloads its files never reads one
//! half written. The same private modes serve a node's data files ([`private_dir`],
//! [`private_file`]): its logs and checkpoints hold every value its clients wrote.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// The CA certificate (or bundle).
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";
/// A node's certificate.
pub const NODE_CERT: &str = "node.crt";
/// A node's private key.
pub const NODE_KEY: &str = "node.key";

/// User `name`'s client certificate file name.
pub fn client_cert(name: &str) -> String {
    format!("client.{name}.crt")
}

/// User `name`'s client key file name.
pub fn client_key(name: &str) -> String {
    format!("client.{name}.key")
}

/// Mode of a private directory: its owner's alone.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of a private file.
pub const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` and any missing parents, each 0700. Keys, and a node's logs and
/// checkpoints (every value its clients wrote), live in such directories.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(dir)
}

/// Creates (or truncates) `path` for writing, 0600 whatever the umask says.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(PRIVATE_FILE).open(path)
}

/// Creates `path` for writing, 0600; fails if it exists.
pub fn private_new_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE).open(path)
}

/// Creates `dir` (and its parents) with mode 0700 if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<(), Error> {
    private_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` with `mode`, atomically (temporary file, then rename).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = tmp_name(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))
}

/// Writes a private key (mode 0600).
pub fn write_key(path: &Path, pem: &str) -> Result<(), Error> {
    write(path, pem.as_bytes(), 0o600)
}

/// Writes a certificate (mode 0644: certificates are public).
pub fn write_cert(path: &Path, pem: &str) -> Result<(), Error> {
    write(path, pem.as_bytes(), 0o644)
}

/// Refuses to overwrite `path` unless `overwrite`.
pub fn check_absent(path: &Path, overwrite: bool) -> Result<(), Error> {
    if !overwrite && path.exists() {
        return Err(Error::Exists(path.to_path_buf()));
    }
    Ok(())
}

/// Reads a file whole.
pub fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// A temporary name beside `path`, unique to this process and call (two threads writing
/// the same file never share one).
fn tmp_name(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}.{n}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_files_are_their_owners_alone() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        private_dir(&dir).unwrap();
        for d in [t.path().join("a"), dir.clone()] {
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, PRIVATE_DIR);
        }
        private_file(&dir.join("x")).unwrap();
        private_new_file(&dir.join("y")).unwrap();
        assert!(private_new_file(&dir.join("y")).is_err());
        for f in ["x", "y"] {
            assert_eq!(std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777, PRIVATE_FILE);
        }
    }

    #[test]
    fn keys_are_private_and_directories_closed() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        ensure_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        write_key(&dir.join("k"), "secret").unwrap();
        assert_eq!(std::fs::metadata(dir.join("k")).unwrap().permissions().mode() & 0o777, 0o600);
        write_cert(&dir.join("c"), "public").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "public");
        assert!(matches!(check_absent(&dir.join("c"), false), Err(Error::Exists(_))));
        check_absent(&dir.join("c"), true).unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "no temporary file is left behind: {left:?}");
    }
}
