//! What operators see: the map joined with the nodes' reports, as `weft ctl` prints it
//! (tables) and serializes it (`--json`).

use serde::Serialize;
use weft_proto::v1 as pb;

/// One node.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// Id.
    pub id: u64,
    /// gRPC address.
    pub addr: String,
    /// Upgrade domain.
    pub ud: String,
    /// Fault domain.
    pub fd: String,
    /// `up`, `draining` or `down`.
    pub state: String,
    /// Replicas the map places on it, builds in flight included.
    pub replicas: usize,
    /// Primaries it reports, the cluster map's included (none when it is down).
    pub primaries: usize,
    /// The role of its replica of the cluster map (`primary`: it is the cluster manager),
    /// empty when it hosts none.
    pub map_role: String,
    /// Engine bytes of its replicas, as reported.
    pub memory_bytes: u64,
    /// Client requests per second over its replicas, as reported.
    pub requests_per_s: f64,
}

/// One replica of a partition.
#[derive(Debug, Serialize)]
pub struct ReplicaView {
    /// Node id.
    pub node: u64,
    /// Replica id.
    pub replica: u64,
    /// The node's upgrade domain.
    pub ud: String,
    /// The node's fault domain.
    pub fd: String,
    /// `primary`, `secondary`, `learner`, `candidate`, `down` or `unknown` (not reported).
    pub role: String,
    /// From the replica's last report (absent when it has not reported): its raft term,
    /// the replica it follows (none when it knows no primary), its last log index, its
    /// applied index and its voters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftView>,
}

/// A replica's raft state as it last reported it.
#[derive(Debug, Serialize)]
pub struct RaftView {
    /// Term.
    pub term: u64,
    /// The primary it knows of.
    pub leader: Option<u64>,
    /// Last log index.
    pub last_log_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Voter ids of each configuration (two during a joint change).
    pub voters: Vec<Vec<u64>>,
}

/// One partition.
#[derive(Debug, Serialize)]
pub struct PartitionView {
    /// Id.
    pub id: u64,
    /// Service.
    pub service: String,
    /// Index within the service.
    pub index: u32,
    /// Inclusive hash range, low end.
    pub low: u64,
    /// Inclusive hash range, high end.
    pub high: u64,
    /// Voters, then a replica being built (role `learner`).
    pub replicas: Vec<ReplicaView>,
    /// Why a replica is being built, while one is.
    pub moving: Option<String>,
    /// Every replica opened and the group initialized.
    pub created: bool,
}

fn state_name(s: i32) -> &'static str {
    match pb::NodeState::try_from(s) {
        Ok(pb::NodeState::Up) => "up",
        Ok(pb::NodeState::Draining) => "draining",
        Ok(pb::NodeState::Down) => "down",
        _ => "unknown",
    }
}

fn role_name(r: i32) -> &'static str {
    match pb::Role::try_from(r) {
        Ok(pb::Role::Primary) => "primary",
        Ok(pb::Role::Secondary) => "secondary",
        Ok(pb::Role::Learner) => "learner",
        Ok(pb::Role::Candidate) => "candidate",
        _ => "unknown",
    }
}

fn reports(m: &pb::GetMapResponse) -> impl Iterator<Item = (u64, &pb::ReplicaStatus)> {
    m.reported_by.iter().copied().zip(m.reported.iter())
}

/// The reports as the manager's `map` functions take them (reporting node, status).
fn shared_reports(m: &pb::GetMapResponse) -> Vec<(u64, std::sync::Arc<pb::ReplicaStatus>)> {
    reports(m).map(|(by, s)| (by, std::sync::Arc::new(s.clone()))).collect()
}

/// Every node, by id, with the load the manager's decisions see ([`super::map::model`]).
pub fn nodes(m: &pb::GetMapResponse) -> Vec<NodeView> {
    let Some(map) = &m.map else { return Vec::new() };
    let reported = shared_reports(m);
    let mut v: Vec<NodeView> = super::map::model(map, &reported)
        .into_iter()
        .filter_map(|n| {
            let info = map.nodes.get(&n.id)?;
            // A down node's last reports say what it led before it went silent, not now.
            let down = info.state == pb::NodeState::Down as i32;
            Some(NodeView {
                id: n.id,
                addr: info.addr.clone(),
                ud: n.ud,
                fd: n.fd,
                state: state_name(info.state).into(),
                replicas: n.load.replicas as usize,
                primaries: if down { 0 } else { n.load.primaries as usize },
                map_role: reported
                    .iter()
                    .find(|(by, s)| *by == n.id && s.partition == super::map::MAP_PARTITION)
                    .map(|(_, s)| role_name(s.role).to_string())
                    .unwrap_or_default(),
                memory_bytes: n.load.memory_bytes,
                requests_per_s: n.load.requests_per_s,
            })
        })
        .collect();
    v.sort_by_key(|n| n.id);
    v
}

/// Every partition (of `service` when given), by id.
pub fn partitions(m: &pb::GetMapResponse, service: Option<&str>) -> Vec<PartitionView> {
    let Some(map) = &m.map else { return Vec::new() };
    let replica = |p: &pb::PartitionInfo, r: &pb::ReplicaPlacement, building: bool| {
        let node = map.nodes.get(&r.node);
        let reported = reports(m).find(|(by, s)| *by == r.node && s.partition == p.id && s.replica == r.replica);
        let role = match (node, reported) {
            (Some(n), _) if n.state == pb::NodeState::Down as i32 => "down",
            (_, Some((_, s))) => role_name(s.role),
            _ if building => "learner",
            _ => "unknown",
        };
        ReplicaView {
            node: r.node,
            replica: r.replica,
            ud: node.map(|n| n.ud.clone()).unwrap_or_default(),
            fd: node.map(|n| n.fd.clone()).unwrap_or_default(),
            role: role.into(),
            raft: reported.map(|(_, s)| RaftView {
                term: s.term,
                leader: s.has_leader.then_some(s.leader),
                last_log_index: s.last_log_index,
                applied_index: s.applied_index,
                voters: s
                    .membership
                    .as_ref()
                    .map(|m| m.configs.iter().map(|c| c.ids.clone()).collect())
                    .unwrap_or_default(),
            }),
        }
    };
    let mut v: Vec<PartitionView> = map
        .partitions
        .values()
        .filter(|p| service.is_none_or(|s| p.service == s))
        .map(|p| {
            let building = p.pending.as_ref().and_then(|mv| mv.to.as_ref());
            PartitionView {
                id: p.id,
                service: p.service.clone(),
                index: p.index,
                low: p.low,
                high: p.high,
                replicas: p
                    .replicas
                    .iter()
                    .map(|r| replica(p, r, false))
                    .chain(building.map(|r| replica(p, r, true)))
                    .collect(),
                moving: p.pending.as_ref().map(|mv| mv.reason.clone()),
                created: p.created,
            }
        })
        .collect::<Vec<_>>();
    v.sort_by_key(|p| p.id);
    v
}

/// The upgrade walk in flight.
#[derive(Debug, Serialize)]
pub struct UpgradeView {
    /// The UDs in walk order.
    pub uds: Vec<String>,
    /// UDs walked already (the one being walked is `uds[walked]`).
    pub walked: usize,
    /// What the walk does in the current UD.
    pub phase: String,
    /// Paused by an operator.
    pub paused: bool,
    /// What it waits for, if anything.
    pub waiting: String,
    /// Partitions with a stand-in replica outside the walked UD.
    pub stand_ins: usize,
}

/// The upgrade walk in flight, if any.
pub fn upgrade(m: &pb::GetMapResponse) -> Option<UpgradeView> {
    let u = super::upgrade::walk_fields(m.map.as_ref()?.upgrade.as_ref()?);
    Some(UpgradeView {
        uds: u.uds,
        walked: u.walked as usize,
        phase: u.phase,
        paused: u.paused,
        waiting: u.waiting,
        stand_ins: u.stand_ins as usize,
    })
}

/// A replica being built: a move's target catching up.
#[derive(Debug, Serialize)]
pub struct RebuildView {
    /// Partition.
    pub partition: u64,
    /// Its service.
    pub service: String,
    /// The node building it.
    pub node: u64,
    /// Why (the move's reason).
    pub reason: String,
    /// Snapshot bytes and records it received so far, from its last report.
    pub snapshot_bytes: u64,
    /// Snapshot records it decoded so far.
    pub snapshot_records: u64,
    /// Its applied index, and its partition primary's last log index (caught up when
    /// equal), from the last reports.
    pub applied_index: u64,
    /// The primary's last log index.
    pub primary_last_log_index: u64,
}

/// Every replica being built now.
pub fn rebuilds(m: &pb::GetMapResponse) -> Vec<RebuildView> {
    let Some(map) = &m.map else { return Vec::new() };
    let status = |node: u64, partition: u64| reports(m).find(|(by, s)| *by == node && s.partition == partition);
    map.partitions
        .values()
        .filter_map(|p| {
            let mv = p.pending.as_ref()?;
            let to = mv.to.as_ref()?;
            let own = status(to.node, p.id).map(|(_, s)| s);
            let primary = m.primaries.get(&p.id).and_then(|n| status(*n, p.id)).map(|(_, s)| s);
            Some(RebuildView {
                partition: p.id,
                service: p.service.clone(),
                node: to.node,
                reason: mv.reason.clone(),
                snapshot_bytes: own.map_or(0, |s| s.snapshot_bytes),
                snapshot_records: own.map_or(0, |s| s.snapshot_records),
                applied_index: own.map_or(0, |s| s.applied_index),
                primary_last_log_index: primary.map_or(0, |s| s.last_log_index),
            })
        })
        .collect()
}

/// The cluster as the upgrade walk's decision code sees it, from a `GetMap` answer: the
/// nodes with their loads ([`super::map::model`], as the live manager builds them) and each
/// settled partition with a known primary, its replicas' nodes and engine bytes. `weft sim
/// validate` gives it to the simulator, so the simulated walk starts where the real one did.
pub fn walk_input(
    m: &pb::GetMapResponse,
) -> (Vec<weft_cluster_manager::model::Node>, Vec<weft_cluster_manager::walk::Placed>) {
    let Some(map) = &m.map else { return Default::default() };
    let reported = shared_reports(m);
    let bytes = super::map::partition_bytes(&reported);
    let parts = map
        .partitions
        .values()
        .filter(|p| p.created && p.pending.is_none())
        .filter_map(|p| {
            Some(weft_cluster_manager::walk::Placed {
                id: p.id,
                replicas: p.replicas.iter().map(|r| r.node).collect(),
                primary: *m.primaries.get(&p.id)?,
                bytes: bytes.get(&p.id).copied().unwrap_or(0),
                requests_per_s: 0.0,
            })
        })
        .collect();
    (super::map::model(map, &reported), parts)
}

/// The cluster map's group from a `GetMap` answer, as the simulator hands the manager off:
/// the manager's node and the group's members' nodes by replica id, as they reported.
pub fn map_group(m: &pb::GetMapResponse) -> Option<weft_cluster_manager::sim::MapGroup> {
    let mut members: Vec<(u64, u64)> =
        reports(m).filter(|(_, s)| s.partition == super::MAP_PARTITION).map(|(node, s)| (s.replica, node)).collect();
    members.sort_unstable();
    (m.manager_node != 0).then(|| weft_cluster_manager::sim::MapGroup {
        primary: m.manager_node,
        members: members.into_iter().map(|(_, node)| node).collect(),
    })
}
