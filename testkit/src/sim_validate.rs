//! `weft sim validate`, the real half: an upgrade walk on real `weft node` processes, with
//! what the simulator needs to predict it.
//!
//! Starts five managed nodes (this binary, TLS, one UD each, each with a data directory in
//! a temporary directory, so the cluster map's group is durable; the data replicas are
//! volatile or durable as asked), creates a service of `partitions` partitions x 4 replicas
//! and writes `mib` MiB into each, then:
//!
//! - **rebuild rate**: moves one secondary of each of up to [`RATE_MOVES`] partitions, one
//!   at a time, each timed from the request until the map shows it done; the rate is the
//!   partition's engine bytes over that time (the median of the moves). It is the rate of
//!   a move as the manager carries one out (open, copy, catch up, promote, record), not of
//!   the copy alone: at small sizes the steps around the copy are most of it;
//! - **the walk**: reads the map (placement, primaries, sizes: the simulator starts from
//!   it), asks for the walk (`Upgrade`, apply) and polls the map until it ends. The walk's
//!   own totals, which the manager keeps in the map (`ClusterMap.last_upgrade`), give its
//!   builds, primary moves, removals, restart time and walk time by the manager's clock.
//!
//! The caller (`src/sim.rs`) simulates the same cluster at that rate and compares.
//!
//! Depends on the client, the local process harness and the node crate's view of the map
//! ([`weft_node::view::walk_input`]); the node itself only through the binary it starts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_client::client::{Client, ClientConfig, put_op};
use weft_client::routing::{ServiceClient, ready_service};
use weft_cluster_manager::model::Node;
use weft_cluster_manager::walk::Placed;
use weft_proto::v1 as pb;
use weft_proto::v1::cluster_client::ClusterClient;

use crate::Error;
use crate::cluster_bench::percentile;
use crate::local::{self, Security, cluster_err};

/// The service the walk carries.
const SERVICE: &str = "walked";
/// Nodes, each its own UD.
const NODES: usize = 5;
/// Replicas of every partition.
const REPLICAS: u32 = 4;
/// Bytes of each value written.
const VALUE_BYTES: usize = 16 << 10;
/// Values per write.
const BATCH: usize = 16;
/// Moves timed for the rebuild rate, at most.
const RATE_MOVES: usize = 3;
/// How long one timed move may take.
const MOVE_WITHIN: Duration = Duration::from_secs(120);

/// What to walk.
#[derive(Clone, Debug)]
pub struct ValidateConfig {
    /// Partitions of the service (4 replicas each).
    pub partitions: u32,
    /// MiB written into each partition.
    pub mib: u64,
    /// Durable data replicas (else volatile: a restarted node comes back without them).
    pub durable: bool,
    /// How long the walk may take before the run fails.
    pub walk_within: Duration,
}

/// The real walk and the cluster it started from.
#[derive(Clone, Debug)]
pub struct RealWalk {
    /// The walk's totals as the manager recorded them.
    pub totals: pb::UpgradeTotals,
    /// Seconds from the walk's start to its end, by the manager's clock.
    pub walk_s: f64,
    /// Mean seconds a UD's restart took (asked to restart until every node was back).
    pub restart_s_per_ud: f64,
    /// The measured rebuild rate (bytes per second of one copy).
    pub rebuild_bytes_per_s: f64,
    /// Each timed move's seconds, request to done.
    pub rate_moves_s: Vec<f64>,
    /// Median engine bytes of one replica when the walk started.
    pub partition_bytes: u64,
    /// The nodes as the walk's decisions saw them when it started.
    pub nodes: Vec<Node>,
    /// The partitions likewise.
    pub parts: Vec<Placed>,
    /// The cluster map's group likewise.
    pub map_group: Option<weft_cluster_manager::sim::MapGroup>,
}

/// Runs it. `progress` is told what is happening, a line at a time.
pub async fn real_walk(
    exe: &Path,
    config: &ValidateConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RealWalk, Error> {
    let security = Security::new(true)?;
    let addrs = local::free_addrs(NODES)?;
    let data = tempfile::tempdir().map_err(cluster_err)?;
    let _nodes = local::start_managed(exe, &addrs, NODES, Some(data.path()), config.durable, &security, |_| {
        ["--balance-every", "0"].map(String::from).to_vec()
    })?;
    let root: ClientConfig = security.root_config()?;
    progress(&format!("creating {} partitions x {REPLICAS} replicas", config.partitions));
    ready_service(&root, &addrs, NODES, SERVICE, config.partitions, REPLICAS, Duration::from_secs(120))
        .await
        .map_err(cluster_err)?;
    progress(&format!("writing {} MiB into each partition", config.mib));
    load(&root, &addrs, config).await?;
    let cluster = ClusterClient::new(local::channel(&security.root()?, &addrs[0])?);

    let fetch = || ServiceClient::fetch_map(&root, &addrs, Duration::from_secs(10));
    // The sizes come from the nodes' reports: wait until they count what was written.
    let written = config.mib << 20;
    let settled = Instant::now();
    let parts = loop {
        let (_, parts) = weft_node::view::walk_input(&fetch().await.map_err(cluster_err)?);
        if parts.len() == config.partitions as usize && parts.iter().all(|p| p.bytes >= written) {
            break parts;
        }
        if settled.elapsed() > Duration::from_secs(30) {
            return Err(cluster_err(format!("the nodes did not report {} MiB in every partition", config.mib)));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut rate_moves_s = Vec::new();
    let mut rates = Vec::new();
    for p in parts.iter().take(RATE_MOVES) {
        progress(&format!("timing a move of partition {} for the rebuild rate", p.id));
        let secs = time_move(&cluster, &fetch, p).await?;
        rate_moves_s.push(secs);
        rates.push(p.bytes as f64 / secs.max(1e-3));
    }
    rates.sort_by(f64::total_cmp);
    let rebuild_bytes_per_s = percentile(&rates, 0.5);

    let before = fetch().await.map_err(cluster_err)?;
    let (nodes, parts) = weft_node::view::walk_input(&before);
    let map_group = weft_node::view::map_group(&before);
    let mut sizes: Vec<f64> = parts.iter().map(|p| p.bytes as f64).collect();
    sizes.sort_by(f64::total_cmp);
    let partition_bytes = percentile(&sizes, 0.5) as u64;
    let previous = before.map.as_ref().and_then(|m| m.last_upgrade.as_ref()).map_or(0, |t| t.started_unix_ms);
    progress("walking every UD");
    let asked = pb::UpgradeRequest { action: pb::UpgradeAction::Apply as i32 };
    cluster.clone().upgrade(asked).await.map_err(cluster_err)?;
    let start = Instant::now();
    let totals = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if start.elapsed() > config.walk_within {
            return Err(cluster_err(format!("the walk did not end within {:?}", config.walk_within)));
        }
        // Nodes restart under the walk: a read that finds none answering tries again.
        let Ok(m) = fetch().await else { continue };
        let Some(map) = m.map else { continue };
        if let Some(u) = &map.upgrade {
            let at = (u.index as usize + 1).min(u.uds.len());
            progress(&format!("UD {at} of {}: {}", u.uds.len(), u.waiting));
            continue;
        }
        match map.last_upgrade {
            Some(t) if t.started_unix_ms != previous && t.finished_unix_ms != 0 => break t,
            _ => continue,
        }
    };
    let walk_s = totals.finished_unix_ms.saturating_sub(totals.started_unix_ms) as f64 / 1e3;
    let restart_s_per_ud = totals.restart_ms as f64 / 1e3 / f64::from(totals.uds.max(1));
    Ok(RealWalk {
        totals,
        walk_s,
        restart_s_per_ud,
        rebuild_bytes_per_s,
        rate_moves_s,
        partition_bytes,
        nodes,
        parts,
        map_group,
    })
}

/// Writes `config.mib` MiB into every partition of the service, each partition by its own
/// task, keys bucketed by the partition their hash falls in.
async fn load(root: &ClientConfig, addrs: &[String], config: &ValidateConfig) -> Result<(), Error> {
    let routing = ServiceClient::new(addrs.to_vec(), root.clone());
    let per_partition = (config.mib << 20).div_ceil(VALUE_BYTES as u64) as usize;
    let mut keys: std::collections::BTreeMap<u64, Vec<Vec<u8>>> = Default::default();
    let mut i = 0u64;
    while keys.len() < config.partitions as usize || keys.values().any(|k| k.len() < per_partition) {
        let key = format!("walked-{i:09}").into_bytes();
        let p = routing.partition_of(SERVICE, &key).await.map_err(cluster_err)?;
        let bucket = keys.entry(p).or_default();
        if bucket.len() < per_partition {
            bucket.push(key);
        }
        i += 1;
    }
    let client = Arc::new(Client::new(addrs.to_vec(), root.clone()));
    let value = vec![0x5au8; VALUE_BYTES];
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|(p, keys)| {
            let (client, value) = (client.clone(), value.clone());
            tokio::spawn(async move {
                for chunk in keys.chunks(BATCH) {
                    let ops = chunk.iter().map(|k| put_op(weft_node::DEFAULT_TABLE, k, &value, None)).collect();
                    client.batch(p, ops).await.map_err(cluster_err)?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(cluster_err)??;
    }
    Ok(())
}

/// Moves one secondary of `p` (placement picks where) and returns the seconds from the
/// request until the map shows the partition without its old replica and with no move
/// pending.
async fn time_move<F, Fut>(
    cluster: &ClusterClient<weft_security::AuthChannel>,
    fetch: &F,
    p: &Placed,
) -> Result<f64, Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<pb::GetMapResponse, weft_client::client::ClientError>>,
{
    let from = *p
        .replicas
        .iter()
        .find(|n| **n != p.primary)
        .ok_or_else(|| cluster_err(format!("partition {} has no secondary", p.id)))?;
    let start = Instant::now();
    let req = pb::MoveSecondaryRequest { partition: p.id, from_node: from, to_node: 0, force: false };
    cluster.clone().move_secondary(req).await.map_err(cluster_err)?;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if start.elapsed() > MOVE_WITHIN {
            return Err(cluster_err(format!("moving a replica of partition {} took over {MOVE_WITHIN:?}", p.id)));
        }
        let Ok(m) = fetch().await else { continue };
        let done = m
            .map
            .as_ref()
            .and_then(|m| m.partitions.get(&p.id))
            .is_some_and(|x| x.pending.is_none() && !x.replicas.iter().any(|r| r.node == from));
        if done {
            return Ok(start.elapsed().as_secs_f64());
        }
    }
}
