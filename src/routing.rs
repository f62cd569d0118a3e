//! Service-level access: `service + key -> partition -> primary`.
//!
//! A [`ServiceClient`] fetches the cluster map from any node it knows (every node forwards
//! `GetMap` to the cluster manager), finds the partition whose hash range holds the key
//! ([`weft_cluster_manager::keyspace`]) and sends the call through one [`Client`] that knows
//! every node in the map, so primaries are found and followed as usual. The map is cached
//! with its version; a read that no replica answered refreshes it and retries once (the
//! partition may have moved). Writes are never retried here: a write's error does not
//! prove it did not apply, and `Client` already retried it under its session number.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tonic::Status;
use weft_cluster_manager::keyspace;
use weft_proto::v1 as pb;
use weft_proto::v1::cluster_client::ClusterClient;

use crate::client::{Client, ClientConfig, ClientError, ReadMode};

/// Records per page when a scan walks a partition.
const SCAN_PAGE: u32 = 1000;

/// What a service-level call can fail with, beyond the partition client's errors.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// No endpoint answered with a map.
    #[error("no node answered with the cluster map: {0}")]
    NoMap(String),
    /// The map has no such service.
    #[error("no service {0:?} (weft ctl services lists them)")]
    NoService(String),
    /// The partition call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

struct Cached {
    map: pb::GetMapResponse,
    client: Client,
}

/// A client addressing services by name and keys, routed by the cluster map.
pub struct ServiceClient {
    endpoints: Vec<String>,
    config: ClientConfig,
    cached: Mutex<Option<Arc<Cached>>>,
}

impl ServiceClient {
    /// A client that starts from `endpoints` (any nodes of the cluster).
    pub fn new(endpoints: Vec<String>, config: ClientConfig) -> Self {
        ServiceClient { endpoints, config, cached: Mutex::new(None) }
    }

    /// The current map, fetched from the first endpoint that answers; rounds over the
    /// endpoints are retried with backoff for up to `within` (a node restarting or a
    /// manager being elected answers `UNAVAILABLE` for a moment).
    pub async fn fetch_map(endpoints: &[String], within: Duration) -> Result<pb::GetMapResponse, RoutingError> {
        let deadline = Instant::now() + within;
        let mut backoff = Duration::from_millis(20);
        loop {
            let mut last = String::from("no endpoints");
            for e in endpoints {
                let answer = async {
                    let mut c = ClusterClient::connect(format!("http://{e}"))
                        .await
                        .map_err(|_| Status::unavailable("cannot connect (is a weft node running there?)"))?;
                    c.get_map(pb::GetMapRequest {}).await.map(|r| r.into_inner())
                };
                match tokio::time::timeout(Duration::from_secs(5), answer).await {
                    Ok(Ok(m)) => return Ok(m),
                    Ok(Err(s)) => last = format!("{e}: {}", s.message()),
                    Err(_) => last = format!("{e}: no answer in 5 s"),
                }
            }
            if Instant::now() + backoff > deadline {
                return Err(RoutingError::NoMap(last));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    async fn state(&self, refresh: bool) -> Result<Arc<Cached>, RoutingError> {
        if !refresh && let Some(c) = self.cached.lock().clone() {
            return Ok(c);
        }
        let mut endpoints = self.endpoints.clone();
        if let Some(c) = self.cached.lock().clone() {
            endpoints.extend(c.map.map.iter().flat_map(|m| m.nodes.values().map(|n| n.addr.clone())));
        }
        let map = Self::fetch_map(&endpoints, self.config.deadline).await?;
        let nodes: Vec<String> = map.map.iter().flat_map(|m| m.nodes.values().map(|n| n.addr.clone())).collect();
        let cached = Arc::new(Cached { map, client: Client::new(nodes, self.config.clone()) });
        *self.cached.lock() = Some(cached.clone());
        Ok(cached)
    }

    /// The partitions of `service`, in hash order.
    fn partitions(map: &pb::GetMapResponse, service: &str) -> Result<Vec<pb::PartitionInfo>, RoutingError> {
        let m = map.map.as_ref().ok_or_else(|| RoutingError::NoMap("empty answer".into()))?;
        let s = m.services.get(service).ok_or_else(|| RoutingError::NoService(service.into()))?;
        Ok(s.partition_ids.iter().filter_map(|id| m.partitions.get(id).cloned()).collect())
    }

    /// Runs `f` on the partition holding `key`, refreshing the map once if that could help.
    async fn on_key<T, F, Fut>(&self, service: &str, key: &[u8], f: F) -> Result<T, RoutingError>
    where
        F: Fn(Client, u64) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let h = keyspace::hash(key);
        let mut refresh = false;
        loop {
            let st = self.state(refresh).await?;
            let parts = Self::partitions(&st.map, service)?;
            let p = parts
                .iter()
                .find(|p| p.low <= h && h <= p.high)
                .ok_or_else(|| RoutingError::NoMap(format!("service {service} has no partition for hash {h:#x}")))?;
            match f(st.client.clone(), p.id).await {
                // Only reads answer `Unavailable`; a write's error never proves it did not
                // apply, and a retry here would carry a new session sequence number.
                Err(e @ ClientError::Unavailable { .. }) if !refresh => {
                    tracing::debug!(error = %e, "refreshing the cluster map and retrying");
                    refresh = true;
                }
                r => return Ok(r?),
            }
        }
    }

    /// Puts one record into `service`; returns its version.
    pub async fn put(&self, service: &str, table: &str, key: &[u8], value: &[u8]) -> Result<u64, RoutingError> {
        self.put_if(service, table, key, value, None).await
    }

    /// Puts one record into `service` if `condition` holds; returns its version.
    pub async fn put_if(
        &self,
        service: &str,
        table: &str,
        key: &[u8],
        value: &[u8],
        condition: Option<pb::Condition>,
    ) -> Result<u64, RoutingError> {
        self.on_key(service, key, |c, p| async move { c.put_if(p, table, key, value, condition).await }).await
    }

    /// Reads one record (linearizable).
    pub async fn get(&self, service: &str, table: &str, key: &[u8]) -> Result<Option<pb::Record>, RoutingError> {
        self.on_key(service, key, |c, p| async move { c.get(p, table, key, ReadMode::Linearizable).await }).await
    }

    /// Deletes one record; returns the batch version.
    pub async fn delete(&self, service: &str, table: &str, key: &[u8]) -> Result<u64, RoutingError> {
        self.on_key(service, key, |c, p| async move { c.delete(p, table, key).await }).await
    }

    /// Up to `limit` records of `table` over every partition of `service`, in key order.
    pub async fn scan(&self, service: &str, table: &str, limit: usize) -> Result<Vec<pb::Record>, RoutingError> {
        self.scan_from(service, table, &[], limit).await
    }

    /// Up to `limit` records of `table` with keys from `from` (inclusive) on, in key order.
    /// Keys are hash-partitioned, so every partition is asked at once for its first `limit`
    /// such records and the answers are merged (linearizable per partition, not as a whole).
    pub async fn scan_from(
        &self,
        service: &str,
        table: &str,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<pb::Record>, RoutingError> {
        let st = self.state(false).await?;
        let page = u32::try_from(limit).unwrap_or(u32::MAX).clamp(1, SCAN_PAGE);
        let walks = Self::partitions(&st.map, service)?.into_iter().map(|p| {
            let client = st.client.clone();
            async move {
                let (mut out, mut token) = (Vec::new(), Vec::new());
                loop {
                    let (records, next) = client.scan(p.id, table, from, page, token, ReadMode::Linearizable).await?;
                    out.extend(records);
                    if next.is_empty() || out.len() >= limit {
                        return Ok::<_, ClientError>(out);
                    }
                    token = next;
                }
            }
        });
        let mut out: Vec<pb::Record> = Vec::new();
        for part in futures::future::join_all(walks).await {
            out.extend(part?);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.truncate(limit);
        Ok(out)
    }
}
