//! The cluster map's storage and its translation for the decision code.
//!
//! The map is one protobuf record (`pb::ClusterMap`) under key `map` in table `cluster` of
//! the cluster-map partition ([`MAP_PARTITION`]), a weft replica group on the seed nodes.
//! Every change is a read, a pure edit and a put conditioned on the version read, so two
//! managers that briefly both think they lead (an old primary not yet deposed) can never
//! both apply an edit to the same map: the loser's put fails its condition and it re-reads.
//! The record's version (the raft log index that wrote it) is the map version clients use
//! to detect a stale cache.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::raft::ReadPolicy;
use prost::Message;
use tonic::Status;
use weft_cluster_manager::model::{Capacity, Load, Node, NodeStatus};
use weft_proto::v1 as pb;
use weft_replica::Commands;
use weft_replica::Replica;

pub use weft_cluster_manager::keyspace::MAP_PARTITION;
const MAP_TABLE: &str = "cluster";
const MAP_KEY: &[u8] = b"map";
/// Replica ids the map hands out start here; the map's own first replicas use the seed
/// node ids, which stay below it.
pub const FIRST_REPLICA_ID: u64 = 1 << 20;

/// The last map decoded, with the record it came from: the map is read several times a
/// second (every heartbeat, every reconcile pass) and changes rarely; decoding it at
/// thousands of partitions was a visible share of an idle manager's CPU. Records are
/// immutable and shared, so the same record (by pointer) is the same map.
#[derive(Debug, Default)]
pub struct Decoded(parking_lot::Mutex<Option<(Arc<weft_store::Record>, Arc<pb::ClusterMap>)>>);

/// Reads the map after confirming leadership with a quorum (read index); `None` until the
/// first manager has written it.
pub async fn read(r: &Replica, decoded: &Decoded) -> Result<Option<(Arc<pb::ClusterMap>, u64)>, Status> {
    r.awake()
        .await
        .ensure_linearizable(ReadPolicy::ReadIndex)
        .await
        .map_err(|e| Status::unavailable(format!("cluster map read: {e}")))?;
    read_applied(r, decoded)
}

/// The map as this replica has applied it, without a quorum round: for decisions a later
/// conditional write re-checks anyway (is a heartbeat's node entry out of date?).
pub fn read_applied(r: &Replica, decoded: &Decoded) -> Result<Option<(Arc<pb::ClusterMap>, u64)>, Status> {
    let rec = r.state(|st| st.store.get(MAP_TABLE, MAP_KEY).ok().flatten().cloned());
    let Some(rec) = rec else { return Ok(None) };
    let version = rec.version();
    let mut last = decoded.0.lock();
    if let Some((held, map)) = last.as_ref()
        && Arc::ptr_eq(held, &rec)
    {
        return Ok(Some((map.clone(), version)));
    }
    let map = pb::ClusterMap::decode(rec.value())
        .map_err(|e| Status::data_loss(format!("cluster map record does not decode: {e}")))?;
    let map = Arc::new(map);
    *last = Some((rec, map.clone()));
    Ok(Some((map, version)))
}

/// Writes `map` if the stored one is still at `version` (0: if there is none yet).
/// Returns the new version, or `None` when the map changed underneath.
pub async fn write(r: &Replica, map: &pb::ClusterMap, version: u64) -> Result<Option<u64>, Status> {
    let condition = pb::Condition {
        kind: Some(if version == 0 {
            pb::condition::Kind::Absent(true)
        } else {
            pb::condition::Kind::Version(version)
        }),
    };
    let put = pb::Put {
        table: MAP_TABLE.into(),
        key: MAP_KEY.to_vec().into(),
        value: map.encode_to_vec().into(),
        attrs: Vec::new(),
        condition: Some(condition),
    };
    let cmd = pb::Command {
        session: None,
        kind: Some(pb::command::Kind::Batch(pb::Batch { ops: vec![pb::Op { kind: Some(pb::op::Kind::Put(put)) }] })),
    };
    let result = propose(r, cmd).await?;
    match result.outcome {
        None | Some(pb::command_result::Outcome::Popped(_)) => Ok(Some(result.version)),
        Some(pb::command_result::Outcome::Error(e)) if e.code == pb::ErrorCode::ConditionFailed as i32 => Ok(None),
        Some(pb::command_result::Outcome::Error(e)) => {
            Err(Status::internal(format!("cluster map write refused: {}", e.message)))
        }
    }
}

/// Creates the map's table and an empty map, unless a map exists.
pub async fn create(r: &Replica) -> Result<(), Status> {
    let table = pb::Command {
        session: None,
        kind: Some(pb::command::Kind::CreateTable(pb::CreateTable { table: MAP_TABLE.into() })),
    };
    let result = propose(r, table).await?;
    if let Some(pb::command_result::Outcome::Error(e)) = result.outcome
        && e.code != pb::ErrorCode::TableExists as i32
    {
        return Err(Status::internal(format!("creating the cluster map table: {}", e.message)));
    }
    let mut empty = pb::ClusterMap { next_partition: 1, next_replica: FIRST_REPLICA_ID, ..Default::default() };
    init_users(&mut empty);
    init_cluster_id(&mut empty);
    write(r, &empty, 0).await?;
    Ok(())
}

/// Makes `root` a cluster-wide operator, once: a new cluster's first user, as the
/// certificate directory's default client (`client.root.crt`). Returns whether it changed
/// the map (a map written before users existed gets `root` the first time a manager reads
/// it; `root` may later be removed like any user, and does not come back).
pub fn init_users(m: &mut pb::ClusterMap) -> bool {
    if m.users_initialized {
        return false;
    }
    let root = weft_security::identity::DEFAULT_USER.to_string();
    m.users.entry(root.clone()).or_insert_with(|| pb::UserInfo {
        name: root,
        token_sha256: Default::default(),
        grants: vec![pb::UserGrant { role: weft_security::Role::Operator.name().into(), service: String::new() }],
    });
    m.users_initialized = true;
    true
}

/// Gives the map its random cluster id, once; returns whether it changed the map (a map
/// made before ids existed gets one the first time a manager reads it).
pub fn init_cluster_id(m: &mut pb::ClusterMap) -> bool {
    if !m.cluster_id.is_empty() {
        return false;
    }
    // The operating system's randomness, never a simulation's seeded stream: the id names
    // the cluster to backups and nothing in a run depends on it, so drawing it from the
    // seed would shift every later draw of a simulated run for no behaviour of its own.
    m.cluster_id = format!("{:032x}", rand::random::<u128>());
    true
}

async fn propose(r: &Replica, cmd: pb::Command) -> Result<pb::CommandResult, Status> {
    let resp = r
        .awake()
        .await
        .client_write(Commands(vec![cmd]))
        .await
        .map_err(|e| Status::unavailable(format!("cluster map write: {e}")))?;
    resp.data.into_iter().next().ok_or_else(|| Status::internal("cluster map write: an entry without a result"))
}

/// The status the decision code uses for a map node.
pub fn status(n: &pb::NodeInfo) -> NodeStatus {
    match pb::NodeState::try_from(n.state) {
        Ok(pb::NodeState::Up) if !n.drained => NodeStatus::Up,
        Ok(pb::NodeState::Up | pb::NodeState::Draining) => NodeStatus::Draining,
        _ => NodeStatus::Down,
    }
}

/// The map's nodes as the decision code sees them. Replica counts come from the map
/// itself (placements and builds in flight), so a choice made a moment ago is counted
/// before any node reports it; primaries, memory and request rates come from the nodes'
/// reports.
pub fn model(map: &pb::ClusterMap, reported: &[(u64, Arc<pb::ReplicaStatus>)]) -> Vec<Node> {
    map.nodes
        .values()
        .map(|n| {
            let mut load = Load::default();
            for p in map.partitions.values() {
                let pending = p.pending.as_ref().and_then(|m| m.to.as_ref());
                load.replicas += p.replicas.iter().chain(pending).filter(|r| r.node == n.id).count() as u32;
            }
            for (_, s) in reported.iter().filter(|(node, _)| *node == n.id) {
                load.memory_bytes += s.memory_bytes;
                load.primaries += u32::from(s.role == pb::Role::Primary as i32);
                load.requests_per_s += s.requests_per_s;
            }
            Node {
                id: n.id,
                ud: n.ud.clone(),
                fd: n.fd.clone(),
                status: status(n),
                capacity: Capacity { replicas: n.capacity_replicas, memory_bytes: n.capacity_memory_bytes },
                load,
            }
        })
        .collect()
}

/// Engine bytes of one replica of each reported partition, from its largest report (one
/// pass over the reports: a loop over partitions looks each up, it never scans them all).
pub fn partition_bytes(reported: &[(u64, Arc<pb::ReplicaStatus>)]) -> BTreeMap<u64, u64> {
    let mut out: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, s) in reported {
        let b = out.entry(s.partition).or_default();
        *b = (*b).max(s.memory_bytes);
    }
    out
}
