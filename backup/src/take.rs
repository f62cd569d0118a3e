//! Taking a backup of a service: each partition's primary streams either its snapshot
//! (full) or its committed changes since the previous backup (incremental), straight into
//! the location; the manifest goes last.
//!
//! A partition's file is incremental when the location's newest complete backup of the
//! service was taken from the same cluster and the same partition (id and range), fewer
//! than `full_every` incremental backups have followed its last full one, and the primary
//! still keeps every change since (`Store.Backup` with `since`; it answers
//! `OUT_OF_RANGE` otherwise, and the partition gets a full file instead). Each partition
//! decides alone: one busy partition going full does not make the others copy everything.
//!
//! The snapshot is the engine's O(1) one, taken after a read-index round and encoded on a
//! blocking thread, so writes never pause; partitions are taken one after another, so a
//! backup is consistent per partition, not across them.

use std::time::{SystemTime, UNIX_EPOCH};

use weft_client::client::{Client, ClientError};
use weft_proto::v1 as pb;
use weft_replica::ChunkCheck;

use crate::format::{self, Kind, Manifest, PartitionEntry};
use crate::location::Location;
use crate::{BackupError, OnProgress, catalog};

/// Incremental backups between two full ones, unless told otherwise.
pub const FULL_EVERY_DEFAULT: u32 = 11;

/// A scheduled backup's pace unless its schedule says otherwise, bytes per second: a
/// full backup of a 1 GiB partition takes about 54 s, and the primary's encoder (which
/// works only as fast as the backup reads) leaves the writes most of a core.
pub const RATE_DEFAULT: u64 = 20_000_000;

/// How a backup is taken.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Take a full backup once this many incremental ones followed the last full one (0:
    /// every backup is full).
    pub full_every: u32,
    /// Read each partition's stream no faster than this many bytes per second (0: as fast
    /// as it comes). The primary encodes only a few chunks ahead of the reader, so this
    /// also bounds the CPU a backup takes from the writes.
    pub rate_bytes_per_s: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { full_every: FULL_EVERY_DEFAULT, rate_bytes_per_s: 0 }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One partition of the service, as the map places it.
fn partitions(map: &pb::ClusterMap, service: &str) -> Result<Vec<pb::PartitionInfo>, BackupError> {
    let s = map.services.get(service).ok_or_else(|| ClientError::NoService(service.into()))?;
    let mut parts: Vec<pb::PartitionInfo> =
        s.partition_ids.iter().filter_map(|id| map.partitions.get(id).cloned()).collect();
    parts.sort_by_key(|p| p.index);
    if parts.len() != s.partition_ids.len() {
        return Err(BackupError::Refused(format!("service {service}'s partitions are not all in the map")));
    }
    Ok(parts)
}

/// Backs `service` up into `loc`, routed by `map` (at `map_version`) through `client`
/// (whose endpoints reach the map's nodes). Returns the manifest written.
pub async fn take(
    client: &Client,
    map: &pb::ClusterMap,
    map_version: u64,
    service: &str,
    loc: &Location,
    opts: Options,
    progress: OnProgress<'_>,
) -> Result<Manifest, BackupError> {
    let created_unix_ms = now_ms();
    let parts = partitions(map, service)?;
    let previous = catalog::newest_complete(loc, service).await?;
    let chain = previous.as_ref().map_or(0, |(_, n)| *n);
    let base = previous
        .map(|(m, _)| m)
        .filter(|m| !map.cluster_id.is_empty() && m.cluster_id == map.cluster_id && m.partitions.len() == parts.len());
    let go_full = base.is_none() || chain >= opts.full_every;
    let id = format::new_id(created_unix_ms);
    let dir = format::dir(service, &id);
    let mut entries = Vec::with_capacity(parts.len());
    for p in &parts {
        let link = base
            .as_ref()
            .and_then(|m| m.partitions.get(p.index as usize))
            .filter(|e| !go_full && e.partition == p.id && e.low == p.low && e.high == p.high && e.through > 0);
        let entry = match link {
            Some(prev) => {
                let since = prev.through;
                match partition(client, loc, &dir, p, Some(since), opts.rate_bytes_per_s).await {
                    Err(BackupError::Client(ClientError::Rpc(s))) if s.code() == tonic::Code::OutOfRange => {
                        tracing::info!(service, partition = p.id, since, "changes no longer kept: a full file");
                        partition(client, loc, &dir, p, None, opts.rate_bytes_per_s).await?
                    }
                    Err(e) => return Err(e),
                    Ok(mut e) => {
                        e.after = since;
                        e.previous = base.as_ref().map(|m| m.id.clone());
                        e
                    }
                }
            }
            None => partition(client, loc, &dir, p, None, opts.rate_bytes_per_s).await?,
        };
        entries.push(entry);
        progress(entries.len(), parts.len(), entries.iter().map(|e| e.bytes).sum());
    }
    let kind = if entries.iter().all(|e| e.kind == Kind::Full) { Kind::Full } else { Kind::Changes };
    let manifest = Manifest {
        format: format::FORMAT,
        id,
        service: service.into(),
        cluster_id: map.cluster_id.clone(),
        created_unix_ms,
        finished_unix_ms: now_ms(),
        map_version,
        kind,
        partitions: entries,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Corrupt(e.to_string()))?;
    loc.put(&format!("{dir}/{}", format::MANIFEST), text).await?;
    tracing::info!(service, id = %manifest.id, kind = ?manifest.kind, bytes = manifest.bytes(), "backup taken");
    Ok(manifest)
}

/// Streams one partition's file (its snapshot, or its changes after `since`) from its
/// primary into `dir`, checking every chunk.
async fn partition(
    client: &Client,
    loc: &Location,
    dir: &str,
    p: &pb::PartitionInfo,
    since: Option<u64>,
    rate_bytes_per_s: u64,
) -> Result<PartitionEntry, BackupError> {
    let started = tokio::time::Instant::now();
    let kind = if since.is_some() { Kind::Changes } else { Kind::Full };
    let file = format::file_name(p.index, kind);
    let mut stream = client.backup(p.id, since.unwrap_or(0)).await?;
    let mut out = loc.writer(&format!("{dir}/{file}")).await?;
    let mut check = ChunkCheck::default();
    let mut through = None;
    let streamed: Result<(), BackupError> = async {
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| BackupError::Corrupt(format!("partition {} backup stream: {}", p.index, s.message())))?
        {
            if through.is_none() {
                through = chunk.meta.as_ref().and_then(|m| m.last_log_id.as_ref()).map(|l| l.index);
            }
            let last = check.check(&chunk).map_err(|e| BackupError::Corrupt(format!("partition {}: {e}", p.index)))?;
            out.write(&chunk.data).await?;
            if last {
                break;
            }
            if rate_bytes_per_s > 0 {
                let due = std::time::Duration::from_secs_f64(check.bytes() as f64 / rate_bytes_per_s as f64);
                tokio::time::sleep_until(started + due).await;
            }
        }
        if !check.is_done() {
            return Err(BackupError::Corrupt(format!("partition {}: the stream ended before its last chunk", p.index)));
        }
        Ok(())
    }
    .await;
    if let Err(e) = streamed {
        out.abort().await;
        return Err(e);
    }
    out.finish().await?;
    let through = through.ok_or_else(|| {
        BackupError::Corrupt(format!("partition {}: the primary did not say which log index it backed up", p.index))
    })?;
    Ok(PartitionEntry {
        index: p.index,
        partition: p.id,
        incarnation: p.incarnation,
        low: p.low,
        high: p.high,
        kind,
        after: 0,
        through,
        previous: None,
        file,
        bytes: check.bytes(),
        crc32c: check.crc32c(),
    })
}

/// [`take`] for a client outside the cluster: the map from `endpoints`, the primaries
/// reached with `config`.
pub async fn take_via(
    config: &weft_client::client::ClientConfig,
    endpoints: &[String],
    service: &str,
    loc: &Location,
    opts: Options,
    progress: OnProgress<'_>,
) -> Result<Manifest, BackupError> {
    let got = weft_client::routing::ServiceClient::fetch_map(config, endpoints, config.deadline).await?;
    let map = got.map.ok_or_else(|| ClientError::NoMap("an empty answer".into()))?;
    let nodes: Vec<String> = map.nodes.values().map(|n| n.addr.clone()).collect();
    let client = Client::new(nodes, config.clone());
    take(&client, &map, got.version, service, loc, opts, progress).await
}
