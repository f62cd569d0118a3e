//! What this node knows of who may do what: the users and grants of the cluster map, which
//! it hands to its gate ([`weft_security::gate`]), and which service each partition
//! belongs to, with its hash range, for the checks only a service can make (a request names
//! a partition; rights are per service).
//!
//! The view is refreshed whenever a heartbeat answer carries a newer map version (every
//! node heartbeats twice a second), so a grant, revoke or removed user takes effect on
//! every node within a second. A node without seeds (standalone: replicas opened by hand,
//! as tests and benchmarks do) has no map: only node certificates are accepted there.
//!
//! Never depends on the manager's decisions: it only reads maps it is given.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use tonic::{Request, Status};
use weft_proto::v1 as pb;
use weft_security::access::{Grant, Role, User, Users};
use weft_security::gate::Gate;
use weft_security::{Principal, Right};

use weft_cluster_manager::keyspace::MAP_PARTITION;

/// One partition as the map describes it.
#[derive(Clone, Debug)]
struct Part {
    service: String,
    low: u64,
    high: u64,
    /// A partition waiting for its restored state: the (node, replica) that opens from it.
    restoring: Option<(u64, u64)>,
}

/// The node's access view.
pub struct AccessView {
    /// The gate in front of this node's services.
    pub gate: Arc<Gate>,
    parts: RwLock<Arc<BTreeMap<u64, Part>>>,
    version: AtomicU64,
    standalone: bool,
}

/// The hash range a write's keys must fall in, when the map names the partition.
pub type Range = Option<(u64, u64)>;

impl AccessView {
    /// A view in front of `gate`; a standalone node (no seeds, no map) knows no users.
    pub fn new(gate: Arc<Gate>, standalone: bool) -> Arc<AccessView> {
        if standalone {
            gate.set_users(Users::default());
        }
        Arc::new(AccessView { gate, parts: RwLock::default(), version: AtomicU64::new(0), standalone })
    }

    /// The map version last applied (0: none yet).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Takes in a map read at `version`.
    pub fn apply(&self, map: &pb::ClusterMap, version: u64) {
        self.gate.set_users(users(map));
        let parts = map
            .partitions
            .values()
            .map(|p| {
                let restoring = p.replicas.first().filter(|_| p.restoring && !p.created).map(|r| (r.node, r.replica));
                (p.id, Part { service: p.service.clone(), low: p.low, high: p.high, restoring })
            })
            .collect();
        *self.parts.write() = Arc::new(parts);
        self.version.store(version, Ordering::Release);
    }

    /// Whether `principal` may exercise `right` on `partition` here; answers the range the
    /// partition's keys hash into when the map names it. The cluster map's own partition is
    /// never reachable through the client API, whoever asks.
    pub fn check(&self, principal: &Principal, partition: u64, right: Right) -> Result<Range, Status> {
        if partition == MAP_PARTITION {
            return Err(Status::permission_denied(format!(
                "partition {MAP_PARTITION} holds the cluster map: the Store API never reaches it"
            )));
        }
        let part = self.parts.read().get(&partition).cloned();
        match part {
            Some(p) => {
                principal.require(right, Some(&p.service))?;
                Ok(Some((p.low, p.high)))
            }
            None if self.standalone || principal.is_node() => {
                principal.require(right, None)?;
                Ok(None)
            }
            None if principal.allows(right, None) => Ok(None),
            None => Err(Status::unavailable(format!(
                "this node's cluster map does not name partition {partition} yet; try again"
            ))),
        }
    }

    /// The (node, replica) that opens from the restored state of `partition`, while the map
    /// shows it waiting for one (`PartitionInfo.restoring`).
    pub fn restoring(&self, partition: u64) -> Option<(u64, u64)> {
        self.parts.read().get(&partition).and_then(|p| p.restoring)
    }

    /// The service a partition belongs to, if the map names it.
    pub fn service_of(&self, partition: u64) -> Option<String> {
        self.parts.read().get(&partition).map(|p| p.service.clone())
    }
}

/// The users of a map, as the gate checks them. Grants naming an unknown role are left out
/// (the map is written only by `weft ctl`, which checks roles).
pub fn users(map: &pb::ClusterMap) -> Users {
    Users::new(map.users.values().map(|u| {
        User {
            name: u.name.clone(),
            token_sha256: <[u8; 32]>::try_from(u.token_sha256.as_ref()).ok(),
            grants: u
                .grants
                .iter()
                .filter_map(|g| {
                    Some(Grant {
                        role: Role::parse(&g.role).ok()?,
                        service: (!g.service.is_empty()).then(|| g.service.clone()),
                    })
                })
                .collect(),
        }
    }))
}

/// Who made `req` (the gate put it there). A request that reached a service without
/// passing the gate is a bug, refused rather than trusted.
pub fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::internal("request without an authenticated caller"))
}

/// The client id a write session is kept under: the caller's own id, mixed with its
/// identity, so that no caller can reach another's session (and, say, expire its writes
/// by sending a huge `acked_below` under its id). Unchanged under `--insecure`.
pub fn session_id(principal: &Principal, client_id: u64) -> u64 {
    let owner = principal.session_owner();
    if owner.is_empty() {
        return client_id;
    }
    let mut bytes = owner.into_bytes();
    bytes.extend_from_slice(&client_id.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use weft_security::access::Via;

    use super::*;

    fn map() -> pb::ClusterMap {
        let mut m = pb::ClusterMap::default();
        m.partitions
            .insert(3, pb::PartitionInfo { id: 3, service: "demo".into(), low: 0, high: 99, ..Default::default() });
        m.users.insert(
            "w".into(),
            pb::UserInfo {
                name: "w".into(),
                token_sha256: Default::default(),
                grants: vec![pb::UserGrant { role: "writer".into(), service: "demo".into() }],
            },
        );
        m
    }

    #[test]
    fn rights_are_checked_per_service_and_the_map_partition_is_closed() {
        let view = AccessView::new(Gate::new(true, Default::default()), false);
        view.apply(&map(), 7);
        assert_eq!(view.version(), 7);
        let users = view.gate.users().unwrap();
        let w = Principal::User(users.by_name("w").unwrap().clone(), Via::Certificate);
        assert_eq!(view.check(&w, 3, Right::Write).unwrap(), Some((0, 99)));
        assert_eq!(view.check(&w, 3, Right::Operate).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(view.check(&w, 4, Right::Read).unwrap_err().code(), tonic::Code::Unavailable, "not in the map yet");
        for p in [Principal::Node(1), Principal::Insecure, w] {
            assert_eq!(view.check(&p, MAP_PARTITION, Right::Read).unwrap_err().code(), tonic::Code::PermissionDenied);
        }
        assert_eq!(view.check(&Principal::Node(1), 4, Right::Write).unwrap(), None);
    }

    #[test]
    fn sessions_of_different_callers_never_meet() {
        let user = |name: &str| User { name: name.into(), token_sha256: None, grants: vec![] };
        let alice = Principal::User(Arc::new(user("alice")), Via::Certificate);
        let bob = Principal::User(Arc::new(user("bob")), Via::Certificate);
        assert_ne!(session_id(&alice, 42), session_id(&bob, 42));
        assert_eq!(session_id(&alice, 42), session_id(&alice, 42));
        assert_eq!(session_id(&Principal::Insecure, 42), 42);
    }
}
