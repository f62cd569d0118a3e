//! Who may call what: roles, grants, users, and the table of what each gRPC method needs.
//!
//! Roles nest: `reader` (get, scan, query, top-k, watch, and the read-only cluster views),
//! `writer` (plus every write), `operator` (plus every `weft ctl` command). A grant gives a
//! role on one service, or on every service and the cluster itself when it names none.
//! Cluster-wide commands (drains, rebalancing, upgrade walks, users and grants) need a
//! cluster-wide `operator`; commands about one service (create or delete it, move one of its
//! partitions, back it up) need `operator` on that service or cluster-wide.
//!
//! Any known user (a certificate or token of this cluster, whatever its grants) may ask the
//! standard gRPC health protocol and server reflection: health checkers and `grpcurl`
//! need no role, and what they learn (serving or not, the API's schema) is public.
//!
//! Nodes hold the internal `node` role, which only a node certificate gives: it may call
//! everything, and it alone may call the internal services (`Raft`, `NodeAdmin`, the
//! heartbeat). A node that forwards a client's call has checked the client first.
//!
//! Users live in the replicated cluster map; each node keeps the latest [`Users`] it has
//! read and checks every request against it, so a grant or revoke takes effect on every
//! node within one map refresh (under a second), with no restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::Status;

use crate::Error;

/// A role, in increasing power; each includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads.
    Reader,
    /// Reads and writes.
    Writer,
    /// Reads, writes and operator commands.
    Operator,
}

impl Role {
    /// Its name as the CLI and the map spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Operator => "operator",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Result<Role, Error> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "operator" => Ok(Role::Operator),
            "node" => Err(Error::Role("the node role is given only by a node certificate, never granted".into())),
            other => Err(Error::Role(format!("no role {other:?}: reader, writer or operator"))),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a request does, as far as rights go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// Read data or the cluster's read-only views.
    Read,
    /// Change data.
    Write,
    /// Operator commands.
    Operate,
}

impl Right {
    /// The least role that has this right.
    pub fn role(self) -> Role {
        match self {
            Right::Read => Role::Reader,
            Right::Write => Role::Writer,
            Right::Operate => Role::Operator,
        }
    }
}

/// One role, on one service or (`service: None`) on all of them and the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// The service it is limited to.
    pub service: Option<String>,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.service {
            None => write!(f, "{}", self.role),
            Some(s) => write!(f, "{} on {s}", self.role),
        }
    }
}

/// A user of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The name its certificate's common name carries.
    pub name: String,
    /// SHA-256 of its bearer token, if it has one (the token itself is never stored).
    pub token_sha256: Option<[u8; 32]>,
    /// Its grants.
    pub grants: Vec<Grant>,
}

impl User {
    /// Whether one of its grants gives `right` on `service` (`None`: cluster-wide).
    pub fn allows(&self, right: Right, service: Option<&str>) -> bool {
        self.grants.iter().any(|g| {
            g.role >= right.role()
                && match (&g.service, service) {
                    (None, _) => true,
                    (Some(gs), Some(s)) => gs == s,
                    (Some(_), None) => false,
                }
        })
    }

    /// Whether one of its grants gives `right` on some service.
    pub fn allows_somewhere(&self, right: Right) -> bool {
        self.grants.iter().any(|g| g.role >= right.role())
    }
}

/// The SHA-256 of a bearer token, as the map keeps it.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh bearer token: 32 random bytes, hex, prefixed so that it is recognisable in a
/// secret scanner.
pub fn new_token() -> String {
    let b: [u8; 32] = rand::random();
    let mut s = String::from("weft_");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Every user of the cluster, by name and by token digest.
#[derive(Debug, Default)]
pub struct Users {
    by_name: BTreeMap<String, Arc<User>>,
    by_token: BTreeMap<[u8; 32], Arc<User>>,
}

impl Users {
    /// From the cluster map's list.
    pub fn new(users: impl IntoIterator<Item = User>) -> Users {
        let mut u = Users::default();
        for user in users {
            let user = Arc::new(user);
            if let Some(t) = user.token_sha256 {
                u.by_token.insert(t, user.clone());
            }
            u.by_name.insert(user.name.clone(), user);
        }
        u
    }

    /// The user named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// The user whose token this is.
    pub fn by_token(&self, token: &str) -> Option<&Arc<User>> {
        self.by_token.get(&token_digest(token))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// How a user proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Its client certificate.
    Certificate,
    /// Its bearer token.
    Token,
}

/// Who made a request, once authenticated (a request extension the services read).
#[derive(Clone, Debug)]
pub enum Principal {
    /// `--insecure`: nobody is known, everybody may do anything.
    Insecure,
    /// A node of the cluster.
    Node(u64),
    /// A user, as the users were when it was authenticated.
    User(Arc<User>, Via),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Insecure => write!(f, "an unauthenticated caller (--insecure)"),
            Principal::Node(id) => write!(f, "node {id}"),
            Principal::User(u, _) => write!(f, "user {}", u.name),
        }
    }
}

impl Principal {
    /// Whether it holds `right` on `service` (`None`: cluster-wide).
    pub fn allows(&self, right: Right, service: Option<&str>) -> bool {
        match self {
            Principal::Insecure | Principal::Node(_) => true,
            Principal::User(u, _) => u.allows(right, service),
        }
    }

    /// `Ok` when it holds `right` on `service`, else `PERMISSION_DENIED` naming the right.
    pub fn require(&self, right: Right, service: Option<&str>) -> Result<(), Status> {
        if self.allows(right, service) {
            return Ok(());
        }
        Err(Status::permission_denied(match service {
            Some(s) => format!("{self} lacks the {} role on service {s} (or cluster-wide)", right.role()),
            None => format!("{self} lacks the cluster-wide {} role", right.role()),
        }))
    }

    /// Whether it is a node (or anything goes).
    pub fn is_node(&self) -> bool {
        matches!(self, Principal::Insecure | Principal::Node(_))
    }

    /// The name write sessions are bound to: two callers with different names never share
    /// a session, whatever client id they send. Empty under `--insecure`.
    pub fn session_owner(&self) -> String {
        match self {
            Principal::Insecure => String::new(),
            Principal::Node(id) => format!("node:{id}"),
            Principal::User(u, _) => format!("user:{}", u.name),
        }
    }
}

/// What calling a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A node certificate.
    Node,
    /// Any known user (the read-only cluster views clients route by).
    Known,
    /// The right cluster-wide.
    Cluster(Right),
    /// The right on some service; the service itself checks which (a request names a
    /// partition or a service, which only the handler decodes).
    Service(Right),
}

/// The gRPC package of weft's API.
const PACKAGE: &str = "/weft.v1.";
/// The gRPC package of fault injection (served only by a node started with
/// `--fault-injection`).
const TESTING: &str = "/weft.testing.v1.";

/// What calling `path` (`/weft.v1.Store/Put`) needs. Anything not listed needs a node:
/// a method added later is closed to clients until it is listed here.
pub fn access(path: &str) -> Access {
    if matches!(
        path,
        "/grpc.health.v1.Health/Check"
            | "/grpc.health.v1.Health/Watch"
            | "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            | "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    ) {
        return Access::Known;
    }
    if let Some(rest) = path.strip_prefix(TESTING) {
        return match rest.split_once('/') {
            Some(("Faults", _)) => Access::Cluster(Right::Operate),
            _ => Access::Node,
        };
    }
    let Some(rest) = path.strip_prefix(PACKAGE) else { return Access::Node };
    let (service, method) = rest.split_once('/').unwrap_or((rest, ""));
    match (service, method) {
        ("Store", "Get" | "Scan" | "Query" | "TopK" | "Session" | "Watch") => Access::Service(Right::Read),
        ("Store", "Put" | "Delete" | "Batch" | "Write") => Access::Service(Right::Write),
        ("Store", "Backup" | "StageRestore") => Access::Service(Right::Operate),
        ("Cluster", "GetMap") => Access::Known,
        ("Cluster", "CreateService" | "DeleteService" | "MovePrimary" | "MoveSecondary" | "ResetPartition") => {
            Access::Service(Right::Operate)
        }
        (
            "Cluster",
            "Drain" | "Activate" | "RemoveNode" | "Rebalance" | "Upgrade" | "ListUsers" | "AddUser" | "RemoveUser"
            | "Grant" | "Revoke" | "ScheduleBackup",
        ) => Access::Cluster(Right::Operate),
        _ => Access::Node,
    }
}

/// Methods whose calls are long-lived streams: no overall deadline applies to them (their
/// messages have their own limits).
pub fn is_stream(path: &str) -> bool {
    matches!(
        path,
        "/weft.v1.Store/Session"
            | "/weft.v1.Store/Backup"
            | "/weft.v1.Store/StageRestore"
            | "/weft.v1.Store/Watch"
            | "/weft.v1.Raft/StreamAppend"
            | "/weft.v1.Raft/Snapshot"
            | "/grpc.health.v1.Health/Watch"
            | "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            | "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(grants: &[(Role, Option<&str>)]) -> User {
        User {
            name: "u".into(),
            token_sha256: None,
            grants: grants.iter().map(|(r, s)| Grant { role: *r, service: s.map(String::from) }).collect(),
        }
    }

    #[test]
    fn roles_nest_and_grants_scope() {
        let w = user(&[(Role::Writer, Some("demo"))]);
        assert!(w.allows(Right::Read, Some("demo")));
        assert!(w.allows(Right::Write, Some("demo")));
        assert!(!w.allows(Right::Operate, Some("demo")));
        assert!(!w.allows(Right::Read, Some("other")));
        assert!(!w.allows(Right::Read, None), "a service grant is not cluster-wide");
        assert!(w.allows_somewhere(Right::Write));
        let op = user(&[(Role::Operator, None)]);
        assert!(op.allows(Right::Write, Some("anything")) && op.allows(Right::Operate, None));
        let r = user(&[(Role::Reader, None), (Role::Operator, Some("x"))]);
        assert!(r.allows(Right::Operate, Some("x")) && !r.allows(Right::Operate, Some("y")));
        assert!(r.allows(Right::Read, Some("y")));
    }

    #[test]
    fn internal_methods_need_a_node_and_unknown_ones_too() {
        for p in [
            "/weft.v1.Raft/Vote",
            "/weft.v1.Raft/StreamAppend",
            "/weft.v1.NodeAdmin/OpenReplica",
            "/weft.v1.NodeAdmin/Status",
            "/weft.v1.Cluster/Heartbeat",
            "/weft.v1.Cluster/Identify",
            "/weft.v1.Cluster/SomethingNew",
            "/other.Service/X",
            "",
        ] {
            assert_eq!(access(p), Access::Node, "{p}");
        }
        assert_eq!(access("/weft.v1.Store/Put"), Access::Service(Right::Write));
        assert_eq!(access("/weft.v1.Store/Get"), Access::Service(Right::Read));
        assert_eq!(access("/weft.v1.Store/StageRestore"), Access::Service(Right::Operate));
        for m in [
            "Drain",
            "Activate",
            "RemoveNode",
            "Rebalance",
            "Upgrade",
            "ListUsers",
            "AddUser",
            "RemoveUser",
            "Grant",
            "Revoke",
            "ScheduleBackup",
        ] {
            assert_eq!(access(&format!("/weft.v1.Cluster/{m}")), Access::Cluster(Right::Operate), "{m}");
        }
        for m in ["CreateService", "DeleteService", "MovePrimary", "MoveSecondary", "ResetPartition"] {
            assert_eq!(access(&format!("/weft.v1.Cluster/{m}")), Access::Service(Right::Operate), "{m}");
        }
        assert_eq!(access("/weft.testing.v1.Faults/CutLinks"), Access::Cluster(Right::Operate));
        assert_eq!(access("/weft.v1.Faults/CutLinks"), Access::Node, "fault injection is not in the API package");
        assert_eq!(access("/weft.v1.Cluster/GetMap"), Access::Known);
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Known);
        assert_eq!(access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Access::Known);
        assert_eq!(access("/grpc.health.v1.Health/Other"), Access::Node, "only the protocol's methods are open");
    }

    #[test]
    fn tokens_are_found_by_digest_only() {
        let t = new_token();
        assert!(t.starts_with("weft_") && t.len() == 5 + 64);
        let users = Users::new([User { name: "svc".into(), token_sha256: Some(token_digest(&t)), grants: vec![] }]);
        assert_eq!(users.by_token(&t).map(|u| u.name.as_str()), Some("svc"));
        assert!(users.by_token("weft_00").is_none());
        assert!(Role::parse("node").is_err());
        assert_eq!(Role::parse("writer").unwrap(), Role::Writer);
    }
}
