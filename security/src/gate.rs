//! The gate every gRPC request passes before any service sees it: a tower layer that
//! authenticates the caller, checks the method's [`Access`], bounds the caller's requests in
//! flight and the request's time, and hands the services a [`Principal`] (a request
//! extension) to check finer rights against (which service a partition belongs to).
//!
//! Every refusal is `UNAUTHENTICATED` (no or unknown identity), `PERMISSION_DENIED` (known,
//! without the right) or `RESOURCE_EXHAUSTED` (over a limit), names what was missing and
//! never a secret, is counted ([`Refusals`]) and logged (within a [`LogBudget`], so a flood
//! cannot fill the disk).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tonic::Status;
use tonic::body::Body;

use crate::access::{self, Access, Principal, Users, Via};
use crate::identity::Identity;
use crate::log_budget::LogBudget;
use crate::server::{ConnInfo, InFlight, Peer};

/// Limits the gate enforces.
#[derive(Clone, Debug)]
pub struct GateLimits {
    /// Requests one client (user, or remote address under `--insecure`) may have in flight
    /// on this node at once. Nodes are not limited.
    pub client_in_flight_max: usize,
    /// The longest a unary request may take (a caller's shorter `grpc-timeout` wins).
    /// Streams ([`access::is_stream`]) have none; their messages are bounded instead.
    pub request_deadline: Duration,
}

impl Default for GateLimits {
    fn default() -> Self {
        GateLimits { client_in_flight_max: 10_000, request_deadline: Duration::from_secs(120) }
    }
}

/// Clients (users, or addresses under `--insecure`) past which idle entries of the
/// per-client in-flight counts are forgotten.
const CLIENTS_TRACKED_MAX: usize = 4096;

/// Refused requests, by kind.
#[derive(Debug, Default)]
pub struct Refusals {
    /// No identity, or one this cluster does not know.
    pub unauthenticated: AtomicU64,
    /// A known identity without the right.
    pub permission_denied: AtomicU64,
    /// Over a limit (connections, requests in flight).
    pub resource_exhausted: AtomicU64,
    /// Past their deadline.
    pub deadline_exceeded: AtomicU64,
}

/// The gate's state, shared by every connection.
pub struct Gate {
    secure: bool,
    users: RwLock<Option<Arc<Users>>>,
    limits: GateLimits,
    /// Refusals so far.
    pub refusals: Refusals,
    in_flight: Mutex<BTreeMap<String, Arc<AtomicUsize>>>,
    log: LogBudget,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("secure", &self.secure).field("limits", &self.limits).finish()
    }
}

impl Gate {
    /// A gate; `secure: false` is `--insecure` (everything is let through, limits apply).
    pub fn new(secure: bool, limits: GateLimits) -> Arc<Gate> {
        Arc::new(Gate {
            secure,
            users: RwLock::new(None),
            limits,
            refusals: Refusals::default(),
            in_flight: Mutex::default(),
            log: LogBudget::default(),
        })
    }

    /// Whether callers must authenticate.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The users to check callers against from now on (a fresh cluster map's).
    pub fn set_users(&self, users: Users) {
        *self.users.write() = Some(Arc::new(users));
    }

    /// The users last set, if any.
    pub fn users(&self) -> Option<Arc<Users>> {
        self.users.read().clone()
    }

    /// The layer that puts this gate in front of a server's services.
    pub fn layer(self: &Arc<Self>) -> GateLayer {
        GateLayer(self.clone())
    }

    fn refuse(&self, status: Status, path: &str, remote: Option<std::net::SocketAddr>) -> Status {
        let counter = match status.code() {
            tonic::Code::Unauthenticated => &self.refusals.unauthenticated,
            tonic::Code::PermissionDenied => &self.refusals.permission_denied,
            tonic::Code::ResourceExhausted => &self.refusals.resource_exhausted,
            tonic::Code::DeadlineExceeded => &self.refusals.deadline_exceeded,
            _ => return status,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.log.allow() {
            tracing::warn!(?remote, method = path, code = ?status.code(), reason = status.message(), "request refused");
        }
        status
    }

    /// Who the caller is, or why it is refused.
    fn authenticate(&self, info: &ConnInfo, headers: &http::HeaderMap) -> Result<Principal, Status> {
        if info.state.over_limit {
            return Err(Status::resource_exhausted(
                "this node holds its maximum of client connections; try again later or another node",
            ));
        }
        let users = || {
            self.users().ok_or_else(|| {
                Status::unavailable("this node has not read the cluster's users yet (is the cluster manager up?)")
            })
        };
        match &info.peer {
            Peer::Insecure => Ok(Principal::Insecure),
            Peer::Plaintext => Err(Status::unauthenticated(
                "this node accepts only TLS connections: connect with the cluster's CA and a client \
                 certificate or token (weft --certs-dir DIR, or WEFT_CERTS_DIR)",
            )),
            Peer::Tls(Some(Identity::Node(id))) => Ok(Principal::Node(*id)),
            Peer::Tls(Some(Identity::User(name))) => match users()?.by_name(name) {
                Some(u) => Ok(Principal::User(u.clone(), Via::Certificate)),
                None => Err(Status::unauthenticated(format!(
                    "user {name} is not a user of this cluster (weft ctl user add {name})"
                ))),
            },
            Peer::Tls(None) => {
                let token = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        Status::unauthenticated(
                            "no client certificate and no bearer token: present client.USER.crt or a token",
                        )
                    })?;
                match users()?.by_token(token.trim()) {
                    Some(u) => Ok(Principal::User(u.clone(), Via::Token)),
                    None => Err(Status::unauthenticated("the bearer token is not one this cluster knows")),
                }
            }
        }
    }

    /// `principal` as the users are now: a stream authenticated a while ago (a session)
    /// asks before each of its calls, so a grant, revoke or removal reaches it too. A user
    /// who authenticated by token is refused once that token is replaced.
    pub fn current(&self, principal: &Principal) -> Result<Principal, Status> {
        let Principal::User(then, via) = principal else { return Ok(principal.clone()) };
        let users =
            self.users().ok_or_else(|| Status::unavailable("this node has not read the cluster's users yet"))?;
        match users.by_name(&then.name) {
            None => Err(Status::unauthenticated(format!("user {} is not a user of this cluster any more", then.name))),
            Some(now) if *via == Via::Token && now.token_sha256 != then.token_sha256 => {
                Err(Status::unauthenticated(format!("user {}'s token was replaced", then.name)))
            }
            Some(now) => Ok(Principal::User(now.clone(), *via)),
        }
    }

    /// Admits a request to `path`: its principal and the guards that hold its place in
    /// the limits until its response ends.
    fn admit(&self, path: &str, info: Option<&ConnInfo>, headers: &http::HeaderMap) -> Result<Admitted, Status> {
        let Some(info) = info else {
            // Every connection comes through `server::incoming`; one that did not is a bug,
            // and is refused rather than trusted.
            return Err(Status::internal("request without connection info"));
        };
        let principal = self.authenticate(info, headers)?;
        let ok = match (access::access(path), &principal) {
            (_, Principal::Insecure | Principal::Node(_)) => true,
            (Access::Node, Principal::User(..)) => false,
            (Access::Known, Principal::User(..)) => true,
            (Access::Cluster(r), Principal::User(u, _)) => u.allows(r, None),
            (Access::Service(r), Principal::User(u, _)) => u.allows_somewhere(r),
        };
        if !ok {
            let why = match access::access(path) {
                Access::Node => format!("{path} is internal to the cluster's nodes: {principal} may not call it"),
                Access::Cluster(r) => format!("{principal} lacks the cluster-wide {} role for {path}", r.role()),
                Access::Service(r) => format!("{principal} lacks the {} role for {path}", r.role()),
                Access::Known => String::new(),
            };
            return Err(Status::permission_denied(why));
        }
        let client = match &principal {
            Principal::Node(_) => None,
            Principal::User(u, _) => Some(format!("user:{}", u.name)),
            Principal::Insecure => Some(info.remote.map(|a| a.ip().to_string()).unwrap_or_default()),
        };
        let counted = match client {
            None => None,
            Some(key) => {
                let counter = {
                    let mut clients = self.in_flight.lock();
                    // One entry per user (or address under --insecure): forget the idle ones
                    // before the map could grow without bound.
                    if clients.len() >= CLIENTS_TRACKED_MAX {
                        clients.retain(|_, c| Arc::strong_count(c) > 1);
                    }
                    clients.entry(key).or_default().clone()
                };
                if counter.fetch_add(1, Ordering::AcqRel) >= self.limits.client_in_flight_max {
                    counter.fetch_sub(1, Ordering::AcqRel);
                    return Err(Status::resource_exhausted(format!(
                        "{principal} has {} requests in flight on this node, its maximum",
                        self.limits.client_in_flight_max
                    )));
                }
                Some(ClientInFlight(counter))
            }
        };
        let deadline = (!access::is_stream(path)).then(|| {
            grpc_timeout(headers).map_or(self.limits.request_deadline, |t| t.min(self.limits.request_deadline))
        });
        Ok(Admitted { principal, deadline, guards: Guards { _conn: info.state.begin(), _client: counted } })
    }
}

struct Admitted {
    principal: Principal,
    deadline: Option<Duration>,
    guards: Guards,
}

struct ClientInFlight(Arc<AtomicUsize>);

impl Drop for ClientInFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request holds until its response body ends.
struct Guards {
    _conn: InFlight,
    _client: Option<ClientInFlight>,
}

/// A `grpc-timeout` header's duration (`<digits><H|M|S|m|u|n>`), if well formed.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The tower layer.
#[derive(Clone)]
pub struct GateLayer(Arc<Gate>);

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService { gate: self.0.clone(), inner }
    }
}

/// The gate in front of one service stack.
#[derive(Clone)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for GateService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let info = req.extensions().get::<ConnInfo>().cloned();
        let gate = self.gate.clone();
        let admitted = gate.admit(&path, info.as_ref(), req.headers());
        let remote = info.and_then(|i| i.remote);
        let Admitted { principal, deadline, guards } = match admitted {
            Ok(a) => a,
            Err(s) => {
                let s = gate.refuse(s, &path, remote);
                return Box::pin(async move { Ok(s.into_http()) });
            }
        };
        req.extensions_mut().insert(principal);
        // The standard tower dance: the clone that was driven ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let call = inner.call(req);
            let res = match deadline {
                None => call.await?,
                Some(d) => match tokio::time::timeout(d, call).await {
                    Ok(r) => r?,
                    Err(_) => {
                        let s = Status::deadline_exceeded(format!("the request took longer than its {d:?} deadline"));
                        return Ok(gate.refuse(s, &path, remote).into_http());
                    }
                },
            };
            Ok(res.map(|b| Body::new(Guarded { inner: b, _guards: guards })))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's place in the limits until it ends.
    struct Guarded {
        #[pin]
        inner: Body,
        _guards: Guards,
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_says() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("3S"), Some(Duration::from_secs(3)));
        assert_eq!(h("250m"), Some(Duration::from_millis(250)));
        assert_eq!(h("2M"), Some(Duration::from_secs(120)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("5x"), None);
        assert_eq!(h("S"), None);
        assert_eq!(h("1234567890S"), None, "at most 8 digits");
    }
}
