//! Backups of a service and restores from them (`weft ctl backup|backups|restore`).
//!
//! A backup asks each partition's primary for a consistent snapshot (after a read-index
//! round, so it holds every write acknowledged before the backup started) and writes the
//! stream as it arrives to one file per partition, `part-<index>.avro`: the same Avro
//! object container stream replicas are built from (schema `replica/schema/snapshot.avsc`),
//! checked chunk by chunk (CRC32C) and as a whole. `manifest.json` names the service, when,
//! and each file's partition index, hash range, bytes and CRC32C. The partitions are
//! snapshotted one after another, so a backup is consistent per partition, not across them
//! (as with any per-shard backup of a sharded store).
//!
//! A restore makes a new service with the backup's partition count, so the hash ranges
//! are the same and every key lands where it was. It then writes each file's tables,
//! indexes and records through the normal replicated write path, in batches. Records get
//! new versions; the backup's versions are not kept. A restore refuses a service name
//! that exists, a file whose CRC32C or length disagrees with the manifest, and a map whose
//! ranges differ from the manifest's.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use weft_proto::v1 as pb;
use weft_replica::ChunkCheck;

use crate::client::{Client, ClientConfig, ClientError};
use crate::node::view;
use crate::routing::ServiceClient;

/// The manifest's file name inside a backup directory.
pub const MANIFEST: &str = "manifest.json";

/// Records per batch when a restore writes a partition.
const RESTORE_BATCH: usize = 500;

/// What can go wrong backing up or restoring: the one error of the `weft` library crate.
/// New variants may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing backup files.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A call failed, the cluster map could not be read, or it has no such service.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A snapshot stream or file failed its checks.
    #[error("{0}")]
    Corrupt(String),
    /// The request cannot be done as asked.
    #[error("{0}")]
    Refused(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_path_buf(), source }
}

/// One partition's file in a backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionFile {
    /// Index of the partition within its service.
    pub index: u32,
    /// Inclusive hash range, low end.
    pub low: u64,
    /// Inclusive hash range, high end.
    pub high: u64,
    /// File name in the backup directory.
    pub file: String,
    /// Bytes of the file.
    pub bytes: u64,
    /// CRC32C of the file.
    pub crc32c: u32,
}

/// A backup's description, `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The service backed up.
    pub service: String,
    /// When the backup started, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The cluster map version it was routed by.
    pub map_version: u64,
    /// One file per partition, in partition order.
    pub partitions: Vec<PartitionFile>,
}

impl Manifest {
    /// Bytes over all files.
    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }
}

/// How far a backup or restore is: partitions done of the total, and bytes (backup) or
/// records (restore) so far. Called after each partition.
pub type OnProgress<'a> = &'a (dyn Fn(usize, usize, u64) + Sync);

/// Backs up `service` into a new directory under `dir`, named after the service and the
/// time; returns that directory and its manifest.
pub async fn backup(
    config: &ClientConfig,
    endpoints: &[String],
    service: &str,
    dir: &Path,
    progress: OnProgress<'_>,
) -> Result<(PathBuf, Manifest), BackupError> {
    let created_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let map = ServiceClient::fetch_map(config, endpoints, config.deadline).await?;
    let parts = view::partitions(&map, Some(service));
    if parts.is_empty() {
        return Err(ClientError::NoService(service.into()).into());
    }
    let out = dir.join(format!("{service}-{created_unix_ms}"));
    weft_security::files::private_dir(&out).map_err(io_err(&out))?;
    let nodes: Vec<String> = map.map.iter().flat_map(|m| m.nodes.values().map(|n| n.addr.clone())).collect();
    let client = Client::new(nodes, config.clone());
    let mut files = Vec::with_capacity(parts.len());
    for p in &parts {
        let file = format!("part-{}.avro", p.index);
        let path = out.join(&file);
        let mut f = weft_security::files::private_file(&path).map_err(io_err(&path))?;
        let mut stream = client.backup(p.id).await?;
        let mut check = ChunkCheck::default();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| BackupError::Corrupt(format!("partition {} backup stream: {}", p.index, s.message())))?
        {
            let last = check.check(&chunk).map_err(|e| BackupError::Corrupt(format!("partition {}: {e}", p.index)))?;
            f.write_all(&chunk.data).map_err(io_err(&path))?;
            if last {
                break;
            }
        }
        if !check.is_done() {
            return Err(BackupError::Corrupt(format!("partition {}: the stream ended before its last chunk", p.index)));
        }
        f.sync_all().map_err(io_err(&path))?;
        files.push(PartitionFile {
            index: p.index,
            low: p.low,
            high: p.high,
            file,
            bytes: check.bytes(),
            crc32c: check.crc32c(),
        });
        progress(files.len(), parts.len(), files.iter().map(|f| f.bytes).sum());
    }
    let manifest = Manifest { service: service.into(), created_unix_ms, map_version: map.version, partitions: files };
    let path = out.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| BackupError::Corrupt(e.to_string()))?;
    std::io::Write::write_all(&mut weft_security::files::private_file(&path).map_err(io_err(&path))?, text.as_bytes())
        .map_err(io_err(&path))?;
    Ok((out, manifest))
}

/// Reads a backup directory's manifest.
pub fn read_manifest(backup: &Path) -> Result<Manifest, BackupError> {
    let path = backup.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| BackupError::Corrupt(format!("{}: {e}", path.display())))
}

/// The backups under `dir` (directories holding a manifest), oldest first.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, Manifest)>, BackupError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.join(MANIFEST).is_file() {
            let m = read_manifest(&path)?;
            out.push((path, m));
        }
    }
    out.sort_by_key(|(p, m)| (m.created_unix_ms, p.clone()));
    Ok(out)
}

/// Length and CRC32C of a file, read in bounded pieces.
fn file_crc(path: &Path) -> Result<(u64, u32), BackupError> {
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut bytes, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok((bytes, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        bytes += n as u64;
    }
}

/// What a restore wrote.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// The new service.
    pub service: String,
    /// Partitions written.
    pub partitions: u32,
    /// Tables made (over all partitions).
    pub tables: u64,
    /// Records written.
    pub records: u64,
}

/// Restores the backup in directory `backup` into a new service `service` with `replicas`
/// replicas per partition (0: the default).
pub async fn restore(
    config: &ClientConfig,
    endpoints: &[String],
    backup: &Path,
    service: &str,
    replicas: u32,
    progress: OnProgress<'_>,
) -> Result<Restored, BackupError> {
    let manifest = read_manifest(backup)?;
    // Every file is checked before anything is made.
    for p in &manifest.partitions {
        let path = backup.join(&p.file);
        let (bytes, crc) = file_crc(&path)?;
        if bytes != p.bytes || crc != p.crc32c {
            return Err(BackupError::Corrupt(format!(
                "{}: {bytes} bytes with CRC32C {crc:#x}, the manifest says {} bytes with {:#x}",
                path.display(),
                p.bytes,
                p.crc32c
            )));
        }
    }
    let map = ServiceClient::fetch_map(config, endpoints, config.deadline).await?;
    if map.map.as_ref().is_some_and(|m| m.services.contains_key(service)) {
        return Err(BackupError::Refused(format!("service {service} exists: restore into a new name")));
    }
    let up = view::nodes(&map).iter().filter(|n| n.state == "up").count();
    let count =
        u32::try_from(manifest.partitions.len()).map_err(|_| BackupError::Refused("too many partitions".into()))?;
    weft_client::routing::ready_service(config, endpoints, up, service, count, replicas, Duration::from_secs(60))
        .await
        .map_err(|e| BackupError::Refused(e.to_string()))?;
    let map = ServiceClient::fetch_map(config, endpoints, config.deadline).await?;
    let parts = view::partitions(&map, Some(service));
    let nodes: Vec<String> = map.map.iter().flat_map(|m| m.nodes.values().map(|n| n.addr.clone())).collect();
    let client = Client::new(nodes, config.clone());
    let mut done = Restored { service: service.into(), partitions: 0, tables: 0, records: 0 };
    for p in &manifest.partitions {
        let target =
            parts.iter().find(|t| t.index == p.index && t.low == p.low && t.high == p.high).ok_or_else(|| {
                BackupError::Refused(format!("the new service has no partition {} with the same range", p.index))
            })?;
        let path = backup.join(&p.file);
        let file = fs::File::open(&path).map_err(io_err(&path))?;
        let decoding = weft_replica::snapshot::Progress::default();
        let (store, _) = weft_replica::snapshot::decode(std::io::BufReader::new(file), Default::default(), &decoding)
            .map_err(|e| BackupError::Corrupt(format!("{}: {e}", path.display())))?;
        let snap = store.snapshot();
        for table in snap.tables() {
            // A new service starts with its default table, empty: that one is reused.
            match client.create_table(target.id, table.name()).await {
                Ok(_) | Err(ClientError::Refused { code: pb::ErrorCode::TableExists, .. }) => {}
                Err(e) => return Err(e.into()),
            }
            for def in table.index_defs() {
                let kind = match def.kind {
                    weft_store::IndexKind::Ordered => pb::IndexKind::Ordered,
                    weft_store::IndexKind::MaxHeap => pb::IndexKind::MaxHeap,
                };
                let index = pb::IndexDef { name: def.name.clone(), attr: def.attr.clone(), kind: kind as i32 };
                client.create_index(target.id, table.name(), index).await?;
            }
            done.tables += 1;
            let mut batch = Vec::with_capacity(RESTORE_BATCH);
            for r in table.records() {
                let attrs = r
                    .attrs()
                    .iter()
                    .map(|a| pb::Attr { name: a.name().into(), value: Some(weft_replica::scalar_to_pb(a.value())) })
                    .collect();
                let put = pb::Put {
                    table: table.name().into(),
                    key: r.key().to_vec().into(),
                    value: r.value().to_vec().into(),
                    attrs,
                    condition: None,
                };
                batch.push(pb::Op { kind: Some(pb::op::Kind::Put(put)) });
                if batch.len() == RESTORE_BATCH {
                    client.batch(target.id, std::mem::take(&mut batch)).await?;
                }
                done.records += 1;
            }
            if !batch.is_empty() {
                client.batch(target.id, batch).await?;
            }
        }
        done.partitions += 1;
        progress(done.partitions as usize, manifest.partitions.len(), done.records);
    }
    Ok(done)
}
