//! The `Cluster` gRPC service every node serves: the manager's node answers, any other
//! node forwards to it (at most two hops: node, seed, manager).

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use weft_proto::v1 as pb;
use weft_proto::v1::cluster_client::ClusterClient;
use weft_security::AuthChannel;

use super::Manager;

/// Metadata key counting how often a call was forwarded.
const HOPS: &str = "weft-hops";
/// Time one forwarded operator command may take (a drain waits for its moves).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Time one forwarded heartbeat or map read may take before the next address is tried:
/// a paused or cut-off seed must not hold heartbeats back past the down grace, or every
/// node behind it would be declared down.
pub(super) const QUICK_FORWARD_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `msg` through `f` to the first of `addrs` that answers; a node that is not the
/// manager and cannot forward further answers `UNAVAILABLE` and the next is tried.
pub(super) async fn forward<M, T, F, Fut>(
    mgr: &Manager,
    addrs: Vec<String>,
    msg: M,
    timeout: Duration,
    f: F,
) -> Result<Response<T>, Status>
where
    M: Clone,
    F: Fn(ClusterClient<AuthChannel>, Request<M>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    forward_hops(mgr, addrs, msg, 1, timeout, f).await
}

async fn forward_hops<M, T, F, Fut>(
    mgr: &Manager,
    mut addrs: Vec<String>,
    msg: M,
    hops: u32,
    timeout: Duration,
    f: F,
) -> Result<Response<T>, Status>
where
    M: Clone,
    F: Fn(ClusterClient<AuthChannel>, Request<M>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let via = mgr.forward_via.lock().clone();
    if let Some(i) = via.and_then(|v| addrs.iter().position(|a| *a == v)) {
        addrs[..=i].rotate_right(1);
    }
    let mut last = Status::unavailable("no cluster manager is known yet (are the seeds up?)");
    for addr in addrs {
        let client = match mgr.cluster(&addr) {
            Ok(c) => c,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let mut req = Request::new(msg.clone());
        req.metadata_mut().insert(HOPS, MetadataValue::from(hops));
        match tokio::time::timeout(timeout, f(client, req)).await {
            Ok(Ok(r)) => {
                *mgr.forward_via.lock() = Some(addr);
                return Ok(r);
            }
            Ok(Err(s)) if matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled) => last = s,
            Ok(Err(s)) => return Err(s),
            Err(_) => last = Status::deadline_exceeded(format!("{addr} did not answer in {timeout:?}")),
        }
    }
    Err(last)
}

/// The `Cluster` service. The gate has checked the caller's role for each method; this
/// service checks what only the request says: the service an operator command is about,
/// and that a heartbeat comes from the node it describes. A node forwarding a call has
/// checked its caller already (nodes may do anything).
pub struct ClusterService {
    mgr: Arc<Manager>,
    access: Arc<crate::authz::AccessView>,
}

impl ClusterService {
    /// The service over this node's manager role.
    pub fn new(mgr: Arc<Manager>, access: Arc<crate::authz::AccessView>) -> Self {
        ClusterService { mgr, access }
    }

    /// The map as `weft ctl` reads it (without users), asked of the manager as this node:
    /// for the node's own pages (`crate::explorer`).
    pub async fn map_for_viewing(&self) -> Result<pb::GetMapResponse, Status> {
        use pb::cluster_server::Cluster;
        let mut req = Request::new(pb::GetMapRequest::default());
        req.extensions_mut().insert(weft_security::Principal::Node(self.mgr.id));
        let r = self.get_map(req).await?.into_inner();
        Ok(super::users::without_users(r))
    }

    /// `Ok` when the caller is an operator of `service` (or cluster-wide).
    fn operator_of<T>(&self, req: &Request<T>, service: &str) -> Result<(), Status> {
        crate::authz::principal(req)?.require(weft_security::Right::Operate, Some(service))
    }

    /// `Ok` when the caller is an operator of `partition`'s service (or cluster-wide).
    fn operator_of_partition<T>(&self, req: &Request<T>, partition: u64) -> Result<(), Status> {
        let principal = crate::authz::principal(req)?;
        match self.access.service_of(partition) {
            Some(service) => principal.require(weft_security::Right::Operate, Some(&service)),
            None => principal.require(weft_security::Right::Operate, None),
        }
    }

    /// `None`: answer here. `Some((addrs, hops))`: forward there.
    fn route<T>(&self, req: &Request<T>) -> Result<Option<(Vec<String>, u32)>, Status> {
        if self.mgr.leading().is_some() {
            return Ok(None);
        }
        let hops: u32 = req.metadata().get(HOPS).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let addrs = self.mgr.manager_addrs();
        if hops >= 2 || addrs.is_empty() {
            return Err(Status::unavailable(format!("node {} is not the cluster manager", self.mgr.id)));
        }
        Ok(Some((addrs, hops + 1)))
    }
}

/// Serves a call on the manager or forwards it.
macro_rules! routed {
    ($self:ident, $req:ident, $method:ident, $local:expr) => {
        routed!($self, $req, $method, $local, FORWARD_TIMEOUT)
    };
    ($self:ident, $req:ident, $method:ident, $local:expr, $timeout:expr) => {{
        match $self.route(&$req)? {
            None => {
                let msg = $req.into_inner();
                $local(msg).await.map(Response::new)
            }
            Some((addrs, hops)) => {
                forward_hops(&$self.mgr, addrs, $req.into_inner(), hops, $timeout, |mut c, r| async move {
                    c.$method(r).await
                })
                .await
            }
        }
    }};
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        // A node speaks only for itself; a relayed heartbeat (a second hop: its sender set
        // one hop, the node relaying it two) was checked where it first arrived.
        let hops: u32 = req.metadata().get(HOPS).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let forwarded = hops >= 2;
        if let weft_security::Principal::Node(caller) = crate::authz::principal(&req)?
            && !forwarded
        {
            let named = req.get_ref().node.as_ref().map_or(0, |n| n.id);
            if named != caller {
                return Err(Status::permission_denied(format!(
                    "a heartbeat for node {named} from node {caller}'s certificate: a node heartbeats only for itself"
                )));
            }
        }
        routed!(self, req, heartbeat, |m| self.mgr.on_heartbeat(m), QUICK_FORWARD_TIMEOUT)
    }

    async fn identify(&self, _req: Request<pb::IdentifyRequest>) -> Result<Response<pb::IdentifyResponse>, Status> {
        Ok(Response::new(pb::IdentifyResponse {
            node: self.mgr.id,
            hosts_map: self.mgr.host.get(super::MAP_PARTITION).is_some(),
        }))
    }

    async fn get_map(&self, req: Request<pb::GetMapRequest>) -> Result<Response<pb::GetMapResponse>, Status> {
        let node = crate::authz::principal(&req)?.is_node();
        let r = routed!(self, req, get_map, |_m| self.mgr.get_map(), QUICK_FORWARD_TIMEOUT)?;
        Ok(if node { r } else { r.map(super::users::without_users) })
    }

    async fn create_service(
        &self,
        req: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::CtlResponse>, Status> {
        self.operator_of(&req, req.get_ref().name.trim())?;
        routed!(self, req, create_service, |m| self.mgr.create_service(m))
    }

    async fn delete_service(
        &self,
        req: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::CtlResponse>, Status> {
        self.operator_of(&req, &req.get_ref().name)?;
        routed!(self, req, delete_service, |m| self.mgr.delete_service(m))
    }

    async fn drain(&self, req: Request<pb::NodeRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        routed!(self, req, drain, |m: pb::NodeRequest| self.mgr.set_drained(m.node, true, m.force))
    }

    async fn activate(&self, req: Request<pb::NodeRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        routed!(self, req, activate, |m: pb::NodeRequest| self.mgr.set_drained(m.node, false, m.force))
    }

    async fn remove_node(&self, req: Request<pb::NodeRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        routed!(self, req, remove_node, |m: pb::NodeRequest| self.mgr.remove_node(m.node))
    }

    async fn move_primary(&self, req: Request<pb::MovePrimaryRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        self.operator_of_partition(&req, req.get_ref().partition)?;
        routed!(self, req, move_primary, |m| self.mgr.move_primary(m))
    }

    async fn move_secondary(
        &self,
        req: Request<pb::MoveSecondaryRequest>,
    ) -> Result<Response<pb::CtlResponse>, Status> {
        self.operator_of_partition(&req, req.get_ref().partition)?;
        routed!(self, req, move_secondary, |m| self.mgr.move_secondary(m))
    }

    async fn rebalance(&self, req: Request<pb::RebalanceRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        routed!(self, req, rebalance, |m| self.mgr.rebalance(m))
    }

    async fn upgrade(&self, req: Request<pb::UpgradeRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        routed!(self, req, upgrade, |m| self.mgr.upgrade(m))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        routed!(self, req, list_users, |_m| self.mgr.list_users(), QUICK_FORWARD_TIMEOUT)
    }

    async fn add_user(&self, req: Request<pb::AddUserRequest>) -> Result<Response<pb::AddUserResponse>, Status> {
        routed!(self, req, add_user, |m| self.mgr.add_user(m))
    }

    async fn remove_user(&self, req: Request<pb::RemoveUserRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        routed!(self, req, remove_user, |m| self.mgr.remove_user(m))
    }

    async fn grant(&self, req: Request<pb::GrantRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        routed!(self, req, grant, |m| self.mgr.grant(m, true))
    }

    async fn revoke(&self, req: Request<pb::GrantRequest>) -> Result<Response<pb::CtlResponse>, Status> {
        routed!(self, req, revoke, |m| self.mgr.grant(m, false))
    }

    async fn schedule_backup(
        &self,
        req: Request<pb::ScheduleBackupRequest>,
    ) -> Result<Response<pb::CtlResponse>, Status> {
        // A cluster-wide operator's only (the gate checks): the manager's node writes to,
        // and deletes from, the location a schedule names.
        routed!(self, req, schedule_backup, |m| self.mgr.schedule_backup(m))
    }

    async fn reset_partition(
        &self,
        req: Request<pb::ResetPartitionRequest>,
    ) -> Result<Response<pb::CtlResponse>, Status> {
        self.operator_of_partition(&req, req.get_ref().partition)?;
        routed!(self, req, reset_partition, |m: pb::ResetPartitionRequest| self
            .mgr
            .reset_partition(m.partition, m.restoring))
    }
}
