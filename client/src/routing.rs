//! Service-level access: `service + key -> partition -> primary`.
//!
//! A [`ServiceClient`] fetches the cluster map from any node it knows (every node forwards
//! `GetMap` to the cluster manager), finds the partition whose hash range holds the key
//! ([`weft_cluster_manager::keyspace`]) and sends the call through one [`Client`] that knows
//! every node in the map, so primaries are found and followed as usual. The map is cached
//! with its version; a read that no replica answered refreshes it and retries once (the
//! partition may have moved). Writes are retried here only when nothing can have applied:
//! a write's error does not otherwise prove that, and `Client` already retried it under
//! its session number.
//!
//! A stale map is detected by its effect, as TiKV's clients detect a stale region cache:
//! every node the client asks answers that it hosts no replica of the partition
//! ([`ClientError::NotHosted`]: the service was deleted and made again, or all of the
//! partition's replicas moved). Nothing was proposed, so the call, read or write, goes
//! again on a refreshed map until the deadline; a refreshed map with the same version is
//! asked again after a short pause.
//!
//! A service just created is not served until the manager has created every partition
//! (opened its replicas and made table `default`): until the map says so, calls wait on
//! refreshed maps, as a stale map does, instead of reaching a group that has no table yet.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;
use tonic::Code;
use weft_cluster_manager::keyspace;
use weft_proto::v1 as pb;
use weft_proto::v1::cluster_client::ClusterClient;
use weft_security::Channels;

use crate::client::{Client, ClientConfig, ClientError, ReadMode, delete_op, put_op};
use crate::watch::{WatchOptions, WatchStream};

/// Pause before asking again when a refreshed map is still the stale one.
const STALE_MAP_RETRY: Duration = Duration::from_millis(100);

/// Records per page when a scan walks a partition.
const SCAN_PAGE: u32 = 1000;

/// Waits until `nodes` nodes are up in the cluster map, creates `service` (unless it
/// exists) and waits until each of its partitions is created and the map names its
/// primary; `within` bounds each wait.
pub async fn ready_service(
    config: &ClientConfig,
    endpoints: &[String],
    nodes: usize,
    service: &str,
    partitions: u32,
    replicas: u32,
    within: Duration,
) -> Result<(), ClientError> {
    let fetch = || async { ServiceClient::fetch_map(config, endpoints, Duration::from_secs(2)).await.ok() };
    let up = |m: &pb::GetMapResponse| {
        m.map.as_ref().map_or(0, |m| m.nodes.values().filter(|n| n.state == pb::NodeState::Up as i32).count())
    };
    let deadline = Instant::now() + within;
    let map = loop {
        if let Some(m) = fetch().await
            && up(&m) == nodes
        {
            break m;
        }
        if Instant::now() > deadline {
            return Err(ClientError::Cluster(format!(
                "the nodes did not all register with the cluster manager within {within:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !map.map.as_ref().is_some_and(|m| m.services.contains_key(service)) {
        let endpoint = endpoints.first().ok_or_else(|| ClientError::NoMap("no endpoints".into()))?;
        let channels = Channels::new(config.security.clone(), Duration::from_secs(2));
        let channel = channels.channel(endpoint).map_err(|s| ClientError::Cluster(s.message().to_string()))?;
        let req = pb::CreateServiceRequest { name: service.into(), partitions, replicas, restoring: false };
        ClusterClient::new(channel)
            .create_service(req)
            .await
            .map_err(|s| ClientError::Cluster(format!("creating {service}: {}", s.message())))?;
    }
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = fetch().await
            && let Some(map) = &m.map
        {
            let mut parts = map.partitions.values().filter(|p| p.service == service).peekable();
            if parts.peek().is_some() && parts.all(|p| p.created && m.primaries.contains_key(&p.id)) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(ClientError::Cluster(format!(
                "the {service} partitions did not all elect a primary within {within:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether this client is outside the nodes' network: it reached the cluster through an
/// address the map gives as some node's `client_addr` (a port published by a container),
/// not as its `addr`. Such a client dials every node by its `client_addr` (those without
/// one by `addr`), as Kafka's clients pick the listener they bootstrapped through.
fn outside(map: &pb::GetMapResponse, endpoints: &[String]) -> bool {
    let nodes = || map.map.iter().flat_map(|m| m.nodes.values());
    nodes().any(|n| !n.client_addr.is_empty() && endpoints.contains(&n.client_addr))
        && !nodes().any(|n| endpoints.contains(&n.addr))
}

/// The address a client that reached the cluster through `endpoints` dials node `node` by
/// (its `client_addr` from outside the nodes' network, its `addr` from inside).
pub fn node_addr(map: &pb::GetMapResponse, endpoints: &[String], node: u64) -> Option<String> {
    let n = map.map.as_ref()?.nodes.get(&node)?;
    Some(dial_addr(n, outside(map, endpoints)))
}

/// The address a client dials node `n` by (see [`outside`]).
fn dial_addr(n: &pb::NodeInfo, outside: bool) -> String {
    if outside && !n.client_addr.is_empty() { n.client_addr.clone() } else { n.addr.clone() }
}

/// A client addressing services by name and keys, routed by the cluster map.
pub struct ServiceClient {
    endpoints: Vec<String>,
    config: ClientConfig,
    /// One partition client for the client's life (one session), its endpoints replaced
    /// by each refreshed map's nodes.
    client: Client,
    cached: Mutex<Option<Arc<pb::GetMapResponse>>>,
}

impl ServiceClient {
    /// A client that starts from `endpoints` (any nodes of the cluster).
    pub fn new(endpoints: Vec<String>, config: ClientConfig) -> Self {
        let client = Client::new(endpoints.clone(), config.clone());
        ServiceClient { endpoints, config, client, cached: Mutex::new(None) }
    }

    /// The current map, fetched from the first endpoint that answers; rounds over the
    /// endpoints are retried with backoff for up to `within` (a node restarting or a
    /// manager being elected answers `UNAVAILABLE` for a moment). A refusal (no right, no
    /// identity) is answered at once: asking again will not change it.
    pub async fn fetch_map(
        config: &ClientConfig,
        endpoints: &[String],
        within: Duration,
    ) -> Result<pb::GetMapResponse, ClientError> {
        let channels = Channels::new(config.security.clone(), Duration::from_secs(2));
        Self::fetch_map_with(&channels, endpoints, within).await
    }

    async fn fetch_map_with(
        channels: &Channels,
        endpoints: &[String],
        within: Duration,
    ) -> Result<pb::GetMapResponse, ClientError> {
        let deadline = Instant::now() + within;
        let mut backoff = Duration::from_millis(20);
        loop {
            let mut last = String::from("no endpoints");
            // A TLS handshake refused for a certificate (this client's CA does not vouch for
            // the node's, or the node refused this client's), or an endpoint that does not
            // serve the map at all, will not go better on a retry.
            let mut refused = false;
            for e in endpoints {
                let answer = async {
                    let mut c = ClusterClient::new(channels.channel(e)?);
                    c.get_map(pb::GetMapRequest {}).await.map(|r| r.into_inner())
                };
                match tokio::time::timeout(Duration::from_secs(5), answer).await {
                    Ok(Ok(m)) => return Ok(m),
                    Ok(Err(s)) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {
                        return Err(ClientError::Rpc(s));
                    }
                    Ok(Err(s)) => {
                        last = format!("{e}: {}", crate::client::status_text(&s));
                        refused |= last.contains("peer certificate") || last.contains("alert");
                        // Not a weft node's gRPC port (its metrics port, another server):
                        // it will not start serving the map on a retry.
                        refused |= s.code() == Code::Unimplemented;
                    }
                    Err(_) => last = format!("{e}: no answer in 5 s"),
                }
            }
            if refused || Instant::now() + backoff > deadline {
                return Err(ClientError::NoMap(last));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    async fn state(&self, refresh: bool) -> Result<Arc<pb::GetMapResponse>, ClientError> {
        if !refresh && let Some(c) = self.cached.lock().clone() {
            return Ok(c);
        }
        let mut endpoints = self.endpoints.clone();
        if let Some(c) = self.cached.lock().clone() {
            let outside = outside(&c, &self.endpoints);
            endpoints.extend(c.map.iter().flat_map(|m| m.nodes.values().map(|n| dial_addr(n, outside))));
        }
        let map = Self::fetch_map_with(self.client.channels(), &endpoints, self.config.deadline).await?;
        let outside = outside(&map, &self.endpoints);
        // Nodes the map calls down are left out: a stale-map answer needs every node the
        // client asks to say it hosts no replica or not to answer (`ClientError::NotHosted`).
        let all = || map.map.iter().flat_map(|m| m.nodes.values());
        let mut nodes: Vec<String> =
            all().filter(|n| n.state != pb::NodeState::Down as i32).map(|n| dial_addr(n, outside)).collect();
        if nodes.is_empty() {
            nodes = all().map(|n| dial_addr(n, outside)).collect();
        }
        self.client.set_endpoints(nodes);
        self.client.set_aliases(if outside {
            all().filter(|n| !n.client_addr.is_empty()).map(|n| (n.addr.clone(), n.client_addr.clone())).collect()
        } else {
            Default::default()
        });
        let cached = Arc::new(map);
        *self.cached.lock() = Some(cached.clone());
        Ok(cached)
    }

    /// The partitions of `service`, in hash order, once every one of them is created.
    fn partitions(map: &pb::GetMapResponse, service: &str) -> Result<Vec<pb::PartitionInfo>, ClientError> {
        let m = map.map.as_ref().ok_or_else(|| ClientError::NoMap("empty answer".into()))?;
        let s = m.services.get(service).ok_or_else(|| ClientError::NoService(service.into()))?;
        let parts: Vec<pb::PartitionInfo> =
            s.partition_ids.iter().filter_map(|id| m.partitions.get(id).cloned()).collect();
        if let Some(p) = parts.iter().find(|p| !p.created) {
            return Err(ClientError::NotReady { service: service.into(), partition: p.id });
        }
        Ok(parts)
    }

    /// Runs `f` on the partition holding `key`, refreshing the map once if that could help.
    async fn on_key<T, F, Fut>(&self, service: &str, key: &[u8], f: F) -> Result<T, ClientError>
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let h = keyspace::hash(key);
        let f = &f;
        self.on_map(|st| async move {
            let parts = Self::partitions(&st, service)?;
            let p = parts
                .iter()
                .find(|p| p.low <= h && h <= p.high)
                .ok_or_else(|| ClientError::NoMap(format!("service {service} has no partition for hash {h:#x}")))?;
            f(p.id).await
        })
        .await
    }

    /// Runs `f` on the cached map, and again on a refreshed one when that could help: once
    /// when no replica answered a read, and until the deadline when the map is stale.
    async fn on_map<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(Arc<pb::GetMapResponse>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = Instant::now() + self.config.deadline;
        let mut refreshed = false;
        let mut stale_version = None;
        loop {
            let st = self.state(stale_version.is_some() || refreshed).await?;
            if stale_version.is_some_and(|v| v == st.version) {
                // The manager has not published the change yet: give it a moment.
                tokio::time::sleep(STALE_MAP_RETRY).await;
            }
            match f(st.clone()).await {
                // No replica answered a read, or no attempt of a write got past "not the
                // primary": once more on a fresh map (a write under its same ticket).
                Err(e @ ClientError::Unavailable { .. }) if !refreshed => {
                    tracing::debug!(error = %e, "refreshing the cluster map and retrying");
                    refreshed = true;
                }
                // The map is stale, or the service is still being created: reads go again
                // on a fresh one, and so do writes, under the ticket they were given, so
                // none applies twice.
                Err(e @ (ClientError::NotHosted { .. } | ClientError::NotReady { .. }))
                    if Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, version = st.version, "stale cluster map; refreshing");
                    stale_version = Some(st.version);
                }
                r => return r,
            }
        }
    }

    /// Puts one record into `service`; returns its version.
    pub async fn put(&self, service: &str, table: &str, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
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
    ) -> Result<u64, ClientError> {
        let (ticket, op) = (self.client.ticket(), put_op(table, key, value, condition));
        let (ticket, op) = (&ticket, &op);
        self.on_key(service, key, |p| async move { ticket.batch(p, vec![op.clone()]).await }).await
    }

    /// Reads one record (linearizable).
    pub async fn get(&self, service: &str, table: &str, key: &[u8]) -> Result<Option<pb::Record>, ClientError> {
        let c = &self.client;
        self.on_key(service, key, |p| async move { c.get(p, table, key, ReadMode::Linearizable).await }).await
    }

    /// Deletes one record; returns the batch version.
    pub async fn delete(&self, service: &str, table: &str, key: &[u8]) -> Result<u64, ClientError> {
        let (ticket, op) = (self.client.ticket(), delete_op(table, key));
        let (ticket, op) = (&ticket, &op);
        self.on_key(service, key, |p| async move { ticket.batch(p, vec![op.clone()]).await }).await
    }

    /// The partition of `service` whose hash range holds `key`, by the cached map
    /// (refreshed when stale or while the service is being created).
    pub async fn partition_of(&self, service: &str, key: &[u8]) -> Result<u64, ClientError> {
        self.on_key(service, key, |p| async move { Ok(p) }).await
    }

    /// The cluster map as this client last fetched it (fetched now if it has none).
    pub async fn map(&self) -> Result<Arc<pb::GetMapResponse>, ClientError> {
        self.state(false).await
    }

    /// The cluster map fetched now.
    pub async fn refresh_map(&self) -> Result<Arc<pb::GetMapResponse>, ClientError> {
        self.state(true).await
    }

    /// The committed changes of every partition of `service` (once all are created),
    /// merged as they arrive: each message is one partition's, in that partition's commit
    /// order (see [`crate::watch`]). The partitions are those of the map when it starts.
    pub async fn watch(&self, service: &str, options: &WatchOptions) -> Result<WatchStream, ClientError> {
        let parts = self.on_map(|st| async move { Self::partitions(&st, service) }).await?;
        let streams = parts.iter().map(|p| self.client.watch(p.id, options));
        Ok(Box::pin(futures::stream::select_all(streams)))
    }

    /// Up to `limit` records of `table` over every partition of `service`, in key order.
    pub async fn scan(&self, service: &str, table: &str, limit: usize) -> Result<Vec<pb::Record>, ClientError> {
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
    ) -> Result<Vec<pb::Record>, ClientError> {
        // A stale map sends the whole scan again on a fresh one (reads only).
        self.on_map(|st| async move { self.scan_on(&st, service, table, from, limit).await }).await
    }

    /// [`ServiceClient::scan_from`] over the partitions of one map.
    async fn scan_on(
        &self,
        st: &pb::GetMapResponse,
        service: &str,
        table: &str,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<pb::Record>, ClientError> {
        let page = u32::try_from(limit).unwrap_or(u32::MAX).clamp(1, SCAN_PAGE);
        let walks = Self::partitions(st, service)?.into_iter().map(|p| {
            let client = self.client.clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map_with(created: [bool; 2]) -> pb::GetMapResponse {
        let partitions = created
            .iter()
            .enumerate()
            .map(|(i, &created)| {
                let id = i as u64 + 1;
                (id, pb::PartitionInfo { id, service: "s".into(), index: i as u32, created, ..Default::default() })
            })
            .collect();
        let service = pb::ServiceInfo { name: "s".into(), partitions: 2, replicas: 4, partition_ids: vec![1, 2] };
        let map = pb::ClusterMap { services: [("s".into(), service)].into(), partitions, ..Default::default() };
        pb::GetMapResponse { map: Some(map), ..Default::default() }
    }

    #[test]
    fn a_service_is_routed_to_only_once_every_partition_is_created() {
        let ids = |m| ServiceClient::partitions(&m, "s").map(|ps| ps.iter().map(|p| p.id).collect::<Vec<_>>());
        assert!(matches!(ids(map_with([true, false])), Err(ClientError::NotReady { partition: 2, .. })));
        assert!(matches!(ids(map_with([true, true])), Ok(v) if v == [1, 2]));
        assert!(matches!(ServiceClient::partitions(&map_with([true, true]), "x"), Err(ClientError::NoService(_))));
    }
}
