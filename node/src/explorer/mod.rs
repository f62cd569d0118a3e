//! The cluster explorer: a read-only web page on every node's metrics port, as Service
//! Fabric Explorer and CockroachDB's console are.
//!
//! `GET /` (or `/explorer`) is the page, with its script and style at `/explorer.js` and
//! `/explorer.css`: static, embedded in the binary, no external script, font or image, so it
//! works offline; served to anyone, since it holds no data. Its data comes from
//! `GET /api/cluster`, guarded as `/metrics` is (a client certificate of this cluster, or a
//! user's bearer token, which the page takes from the address's fragment,
//! `#token=...`, never sent to the server in the URL, or from a form), and which the page asks
//! for every two seconds: nodes by UD and FD with state, replicas, primaries, memory and
//! load; services and partitions with each replica's node and role; replicas being built
//! with their progress; the upgrade walk in flight; alarms.
//!
//! The data is the map exactly as `weft ctl` reads it ([`crate::view`]), asked of the
//! cluster manager through this node as `GetMap` is: what the page shows and what
//! `weft ctl --json` prints agree. Never depends on the metrics port's HTTP plumbing.

use serde::Serialize;
use weft_proto::v1 as pb;

use crate::manager::ClusterService;
use crate::view;

/// The page.
pub const PAGE: &str = include_str!("page.html");
/// Its script.
pub const SCRIPT: &str = include_str!("explorer.js");
/// Its style.
pub const STYLE: &str = include_str!("explorer.css");

/// One service.
#[derive(Serialize)]
struct ServiceRow {
    name: String,
    partitions: u32,
    replicas: u32,
}

/// What `/api/cluster` answers.
#[derive(Serialize)]
pub struct ClusterDoc {
    serving_node: u64,
    manager_node: u64,
    map_version: u64,
    alarms: Vec<String>,
    nodes: Vec<view::NodeView>,
    services: Vec<ServiceRow>,
    partitions: Vec<view::PartitionView>,
    rebuilds: Vec<view::RebuildView>,
    upgrade: Option<view::UpgradeView>,
}

/// The cluster as node `serving_node` reads it now.
pub async fn cluster(svc: &ClusterService, serving_node: u64) -> Result<ClusterDoc, tonic::Status> {
    let m: pb::GetMapResponse = svc.map_for_viewing().await?;
    let mut services: Vec<ServiceRow> = m
        .map
        .iter()
        .flat_map(|x| x.services.values())
        .map(|s| ServiceRow { name: s.name.clone(), partitions: s.partitions, replicas: s.replicas })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ClusterDoc {
        serving_node,
        manager_node: m.manager_node,
        map_version: m.version,
        alarms: m.alarms.clone(),
        nodes: view::nodes(&m),
        services,
        partitions: view::partitions(&m, None),
        rebuilds: view::rebuilds(&m),
        upgrade: view::upgrade(&m),
    })
}
