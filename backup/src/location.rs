//! Where backups live: a URL turned into an object store and a prefix inside it.
//!
//! - A plain path or `file:///path`: a local directory (made, owner-only, if missing).
//! - `s3://bucket/prefix` (also `s3a://`): S3 or any S3-compatible server. Credentials,
//!   region and endpoint come from the usual `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT` and
//!   `AWS_ALLOW_HTTP` for a server of your own), read by `object_store`'s builder.
//! - `az://container/prefix` (also `azure://`, `abfs://`, `abfss://`): Azure Blob, from
//!   the `AZURE_*` variables.
//! - `gs://bucket/prefix`: Google Cloud Storage, from the `GOOGLE_*` variables.
//!
//! Owns no format: [`crate::format`] says what the objects are; this module only names,
//! writes, reads, lists and deletes them. Never depends on the cluster.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::BackupError;

/// Bytes of one part of a multipart upload (S3 asks at least 5 MiB of every part but the
/// last).
const PART_BYTES: usize = 8 << 20;

/// Parts uploaded at once by one writer.
const PARTS_IN_FLIGHT: usize = 4;

/// An object store and the prefix backups go under in it.
#[derive(Clone, Debug)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

/// The object store's error, with what was being done.
pub(crate) fn store_err(what: impl std::fmt::Display) -> impl FnOnce(object_store::Error) -> BackupError {
    move |e| BackupError::Store(format!("{what}: {e}"))
}

/// Installs ring as the process's rustls provider once (the cloud stores' HTTPS client
/// has none of its own); a provider installed already is kept.
fn tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ =
            rustls::crypto::CryptoProvider::install_default(weft_security::credentials::provider().as_ref().clone());
    });
}

impl Location {
    /// The location `url` names (see the module's doc).
    pub fn parse(url: &str) -> Result<Location, BackupError> {
        let bad = |why: &str| BackupError::Refused(format!("backup location {url:?}: {why}"));
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("file".to_string(), url),
        };
        if scheme == "file" {
            if rest.is_empty() {
                return Err(bad("no directory"));
            }
            let dir = std::path::PathBuf::from(rest);
            weft_security::files::private_dir(&dir)
                .map_err(|e| BackupError::Store(format!("{}: {e}", dir.display())))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(store_err(format!("{}", dir.display())))?;
            return Ok(Location { store: Arc::new(fs), prefix: Path::default(), url: url.to_string() });
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket or container"));
        }
        let root = format!("{scheme}://{bucket}");
        tls_provider();
        let store: Arc<dyn ObjectStore> = match scheme.as_str() {
            "s3" | "s3a" => {
                Arc::new(object_store::aws::AmazonS3Builder::from_env().with_url(root).build().map_err(store_err(url))?)
            }
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(root)
                    .build()
                    .map_err(store_err(url))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(root)
                    .build()
                    .map_err(store_err(url))?,
            ),
            other => return Err(bad(&format!("unknown scheme {other:?} (file, s3, az, gs)"))),
        };
        let prefix = Path::parse(prefix.trim_matches('/')).map_err(|e| bad(&e.to_string()))?;
        Ok(Location { store, prefix, url: url.to_string() })
    }

    /// The URL it was made from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The full path of `rel` (a `/`-separated name under the prefix).
    pub(crate) fn path(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// The name of `path` under the prefix.
    fn rel(&self, path: &Path) -> Option<String> {
        let parts: Vec<String> = path.prefix_match(&self.prefix)?.map(|p| p.as_ref().to_string()).collect();
        Some(parts.join("/"))
    }

    /// Writes a small object whole.
    pub async fn put(&self, rel: &str, data: Vec<u8>) -> Result<(), BackupError> {
        let path = self.path(rel);
        self.store.put(&path, PutPayload::from(data)).await.map_err(store_err(&path))?;
        Ok(())
    }

    /// Starts writing a large object in parts, uploaded as they fill.
    pub async fn writer(&self, rel: &str) -> Result<Writer, BackupError> {
        let path = self.path(rel);
        let upload = self.store.put_multipart(&path).await.map_err(store_err(&path))?;
        Ok(Writer { inner: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)), path })
    }

    /// Reads a whole object.
    pub async fn get(&self, rel: &str) -> Result<Bytes, BackupError> {
        let path = self.path(rel);
        let got = self.store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => BackupError::Missing(format!("{}/{rel}", self.url)),
            e => BackupError::Store(format!("{path}: {e}")),
        })?;
        got.bytes().await.map_err(store_err(&path))
    }

    /// Every object under `rel` (recursively), as names under the prefix with their sizes.
    pub async fn list(&self, rel: &str) -> Result<Vec<(String, u64)>, BackupError> {
        let path = self.path(rel);
        let under = if rel.is_empty() && self.prefix.as_ref().is_empty() { None } else { Some(&path) };
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(under).try_collect().await.map_err(store_err(format!("listing {}", self.url)))?;
        Ok(metas.into_iter().filter_map(|m| Some((self.rel(&m.location)?, m.size))).collect())
    }

    /// Deletes an object (one already gone is not an error).
    pub async fn delete(&self, rel: &str) -> Result<(), BackupError> {
        let path = self.path(rel);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(BackupError::Store(format!("deleting {path}: {e}"))),
        }
    }
}

/// A large object being written: parts go up as they fill, a few at once; nothing is
/// visible under its name until [`Writer::finish`] (an abandoned writer is aborted).
pub struct Writer {
    inner: Option<WriteMultipart>,
    path: Path,
}

impl Writer {
    /// Appends `data`, waiting while too many parts are in flight.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BackupError> {
        let Some(w) = self.inner.as_mut() else { return Err(BackupError::Store(format!("{}: closed", self.path))) };
        w.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(store_err(&self.path))?;
        w.write(data);
        Ok(())
    }

    /// Uploads what is left and makes the object visible.
    pub async fn finish(mut self) -> Result<(), BackupError> {
        let Some(w) = self.inner.take() else { return Ok(()) };
        w.finish().await.map_err(store_err(&self.path))?;
        Ok(())
    }

    /// Gives the object up.
    pub async fn abort(mut self) {
        if let Some(w) = self.inner.take() {
            let _ = w.abort().await;
        }
    }
}
