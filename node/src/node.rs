//! The node host: one process, one port, every replica it hosts.
//!
//! Serves three gRPC services: `Store` (client reads and writes, addressed by partition),
//! `Raft` (the internal transport, see `replica/src/transport.rs`) and `NodeAdmin` (open
//! and close replicas, membership changes, status). A write or linearizable read that
//! reaches a replica that is not the primary is answered `UNAVAILABLE` with the primary's
//! address and replica id in the status details ([`crate::status`]), so clients can
//! follow it. Stale reads are served by any replica from its applied state and
//! flagged `stale` in the response.
//!
//! Linearizable reads use openraft's read index: the primary confirms its leadership by a
//! quorum's acknowledgement of a message it sent after the read arrived, then waits until
//! it has applied up to its commit index. Concurrent reads share rounds, and while writes
//! are in flight the writes' own replication messages serve as that message, so a round
//! costs no heartbeat (`replica/src/read_gate.rs`). Lease reads would save the round trip
//! but trust bounded clock drift; weft does not assume it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;

use openraft::async_runtime::watch::WatchReceiver;
use tonic::{Request, Response, Status};
use weft_proto::v1 as pb;
use weft_replica::RaftService;
use weft_replica::TransportConfig;
use weft_replica::{Host, RaftSettings, Replica, Storage};
use weft_replica::{record_to_pb, scalar_from_pb};

use weft_security::credentials::Credentials;
use weft_security::gate::GateLimits;
use weft_security::server::{ConnStats, Listener, ServerLimits};
use weft_security::{ClientSecurity, Principal, Right};
use weft_store::{Limits, Query, Scan, Token};

use crate::authz::{self, AccessView};
use crate::status;

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node id (stable across restarts; replica ids are per incarnation).
    pub id: u64,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Raft timings and log policy for every hosted group.
    pub raft: RaftSettings,
    /// Transport settings.
    pub transport: TransportConfig,
    /// Engine limits.
    pub limits: Limits,
    /// Data directory and default log mode.
    pub storage: Storage,
    /// Seeds, domains, capacity and timings for the cluster manager.
    pub cluster: crate::manager::ClusterConfig,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// TLS, limits on connections and requests, fault injection.
    pub security: NodeSecurity,
    /// The network to listen and dial over; `None` is real TCP. A simulated network
    /// (`weft chaos --simulated`) carries plaintext only, so it needs `security.tls: None`.
    pub network: Option<weft_security::net::SharedNetwork>,
    /// How the node restarts itself when an upgrade walk asks (`NodeAdmin.Restart`);
    /// `None`: it refuses, and a walk cannot restart it.
    pub restart: Option<RestartHook>,
}

/// How a node restarts itself when an upgrade walk asks it to: the `weft` binary
/// re-executes itself (so a binary replaced on disk is the upgrade); a simulation
/// restarts the node's host; a service embedding a node restarts as it restarts anything.
/// Called once the answer to the request has left; it is not expected to return.
#[derive(Clone)]
pub struct RestartHook(Arc<dyn Fn() + Send + Sync>);

impl RestartHook {
    /// A hook that runs `restart`.
    pub fn new(restart: impl Fn() + Send + Sync + 'static) -> Self {
        RestartHook(Arc::new(restart))
    }
}

impl std::fmt::Debug for RestartHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestartHook")
    }
}

/// How a node is secured.
#[derive(Clone, Debug, Default)]
pub struct NodeSecurity {
    /// The node's credentials (`ca.crt`, `node.crt`, `node.key`); `None` is `--insecure`:
    /// no TLS, no authentication, every caller may do anything.
    pub tls: Option<Arc<Credentials>>,
    /// Limits on connections (handshakes, client connections, idleness).
    pub connections: ServerLimits,
    /// Limits on requests (in flight per client, deadline).
    pub requests: GateLimits,
    /// Serve fault injection (`weft.testing.v1.Faults`: cutting links, for `weft chaos` and tests)
    /// to operators.
    pub fault_injection: bool,
}

/// Why the node could not start. New variants may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or serving failed.
    #[error("node transport")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server")]
    Server(#[from] tonic::transport::Error),
    /// Replica host setup failed.
    #[error(transparent)]
    Replica(#[from] weft_replica::Error),
    /// TLS was asked for over a simulated network, which carries plaintext only.
    #[error("a simulated network carries plaintext only: start the node without TLS")]
    TlsOverSimulatedNetwork,
    /// The API's descriptors could not be served for reflection (a build defect).
    #[error("server reflection: {0}")]
    Reflection(String),
    /// The metrics registry refused a series (a build defect: two with one name).
    #[error("metrics registry: {0}")]
    Metrics(String),
    /// A replica's raft group stopped on a fatal error (its log could not be written or
    /// synced): the node stops serving, so that a restart recovers it from its disk or,
    /// if the disk stays broken, the cluster replaces its replicas.
    #[error("stopping: replica of partition {partition} failed: {reason}")]
    ReplicaFailed {
        /// The failed replica's partition.
        partition: u64,
        /// What stopped its raft group.
        reason: String,
    },
}

/// How often a serving node looks for a replica whose raft group failed (a look at every
/// hosted replica: at thousands of replicas, not a thing to do five times a second).
const FAILED_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The first hosted replica whose raft group has failed, as soon as one has.
async fn first_failed(host: &Host) -> Error {
    let mut tick = tokio::time::interval(FAILED_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some((partition, reason)) = host.list().iter().find_map(|r| r.failed().map(|e| (r.partition(), e))) {
            return Error::ReplicaFailed { partition, reason };
        }
    }
}

/// Where a node accepts connections.
enum Listening {
    Tcp(tokio::net::TcpListener),
    Net(Box<dyn weft_security::net::Acceptor>),
}

/// A bound node, ready to serve.
pub struct Node {
    host: Arc<Host>,
    manager: Arc<crate::manager::Manager>,
    access: Arc<AccessView>,
    security: NodeSecurity,
    conns: Arc<ConnStats>,
    listener: Listening,
    metrics: Option<tokio::net::TcpListener>,
    addr: SocketAddr,
    /// The address peers and clients dial (`ClusterConfig::advertise`, else `addr`).
    advertised: String,
    restart: Option<RestartHook>,
    health: Arc<crate::health::Health>,
}

impl Node {
    /// Binds the listening socket.
    pub async fn bind(config: NodeConfig) -> Result<Self, Error> {
        let security = config.security.clone();
        if config.network.is_some() && security.tls.is_some() {
            return Err(Error::TlsOverSimulatedNetwork);
        }
        let mut transport = config.transport.clone();
        transport.security = match &security.tls {
            Some(creds) => ClientSecurity::tls(creds.clone()),
            None => ClientSecurity::insecure(),
        }
        .over(config.network.clone());
        // The map is one record rewritten whole: its group keeps a short log and no history.
        let mut raft = config.raft.clone();
        raft.single_record_partitions.insert(crate::MAP_PARTITION);
        let mut storage = config.storage.clone();
        storage.durable_with_data_dir.insert(crate::MAP_PARTITION);
        let host = Host::new(&raft, transport, config.limits.clone(), storage)?;
        let recovered = host.recover().await?;
        if !recovered.is_empty() {
            tracing::info!(?recovered, "durable replicas reopened from disk");
        }
        let (listener, addr) = match &config.network {
            None => {
                let l = tokio::net::TcpListener::bind(config.listen).await?;
                let addr = l.local_addr()?;
                (Listening::Tcp(l), addr)
            }
            Some(net) => {
                let l = net.bind(config.listen).await?;
                let addr = l.local_addr()?;
                (Listening::Net(l), addr)
            }
        };
        let gate = weft_security::gate::Gate::new(security.tls.is_some(), security.requests.clone());
        let access = AccessView::new(gate, config.cluster.seeds.is_empty());
        let mut cluster = config.cluster;
        cluster.insecure = security.tls.is_none();
        let advertised = cluster.advertise.clone().unwrap_or_else(|| addr.to_string());
        let manager =
            crate::manager::Manager::new(host.clone(), config.id, advertised.clone(), cluster, access.clone());
        let metrics = match config.metrics {
            Some(a) => Some(crate::metrics::bind(a).await?),
            None => None,
        };
        let restart = config.restart;
        let health = crate::health::Health::new(host.clone(), manager.clone());
        Ok(Node {
            host,
            manager,
            access,
            security,
            conns: Arc::default(),
            listener,
            metrics,
            addr,
            advertised,
            restart,
            health,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address peers and clients dial: `--advertise`, else the bound address. Seeds
    /// name nodes by it, and replicas' raft memberships hold it.
    pub fn advertised(&self) -> &str {
        &self.advertised
    }

    /// The replicas this node hosts (a service embedding the node reads its local
    /// primaries through them, in process).
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Whether the node is ready (see [`crate::Health`]); a process embedding the node
    /// marks it stopping before it hands its primaries off.
    pub fn health(&self) -> &Arc<crate::health::Health> {
        &self.health
    }

    /// The gate in front of this node's services (its refusal counts, its users).
    pub fn gate(&self) -> &Arc<weft_security::gate::Gate> {
        &self.access.gate
    }

    /// Serves until `shutdown` completes, or until a hosted replica fails
    /// ([`Error::ReplicaFailed`]): a node whose disk refuses its log stops (fail-stop, as
    /// etcd, TiKV and CockroachDB do on a failed write or sync) rather than keep a replica
    /// that counts as live and serves nothing.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let max = self.host.peers().config().max_message_bytes;
        let store = pb::store_server::StoreServer::new(StoreService {
            host: self.host.clone(),
            access: self.access.clone(),
            session_bytes: session_budget(self.host.limits(), self.security.requests.request_deadline),
            node: self.manager.node_id(),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let admin = pb::node_admin_server::NodeAdminServer::new(AdminService {
            host: self.host.clone(),
            incarnation: self.manager.incarnation(),
            restart: self.restart.clone(),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let raft = RaftService::new(self.host.clone()).into_server();
        self.host.start_liveness(Some(self.advertised.clone()));
        let cluster = pb::cluster_server::ClusterServer::new(crate::manager::ClusterService::new(
            self.manager.clone(),
            self.access.clone(),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let faults = self.security.fault_injection.then(|| {
            tracing::warn!("fault injection is on (--fault-injection): operators may cut this node's links");
            weft_proto::testing::v1::faults_server::FaultsServer::new(FaultsService { host: self.host.clone() })
        });
        let tls = self.security.tls.clone();
        if let Some(creds) = &tls {
            weft_security::credentials::watch(vec![creds.clone()], CERT_CHECK_EVERY);
        }
        self.manager.start();
        let (reporter, health) = tonic_health::server::health_reporter();
        crate::health::set_all(&reporter, tonic_health::ServingStatus::NotServing).await;
        let reporting = tokio::spawn(self.health.clone().report(reporter));
        let reflection = reflection()?;
        let telemetry = crate::telemetry::Telemetry::new(
            self.manager.node_id(),
            crate::telemetry::Sources {
                host: self.host.clone(),
                manager: self.manager.clone(),
                gate: self.access.gate.clone(),
                conns: self.conns.clone(),
                tls: tls.clone(),
                health: self.health.clone(),
            },
        )
        .map_err(|e| Error::Metrics(e.to_string()))?;
        let mut metrics = None;
        if let Some(l) = self.metrics {
            let ctx = crate::metrics::Ctx {
                gate: self.access.gate.clone(),
                tls: tls.clone(),
                health: self.health.clone(),
                telemetry: telemetry.clone(),
                cluster: Arc::new(crate::manager::ClusterService::new(self.manager.clone(), self.access.clone())),
                node: self.manager.node_id(),
            };
            let limits = self.security.connections.clone();
            metrics = Some(tokio::spawn(async move {
                crate::metrics::serve(l, ctx, limits).await;
            }));
        }
        let limits = self.security.connections.clone();
        let incoming = match self.listener {
            Listening::Tcp(l) => weft_security::server::incoming(l, tls, Listener::Grpc, limits, self.conns.clone()),
            Listening::Net(a) => weft_security::server::incoming_net(a, limits, self.conns.clone()),
        };
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(weft_security::client::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(weft_security::client::CONNECTION_WINDOW_BYTES)
            .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
            .http2_max_pending_accept_reset_streams(Some(RESET_STREAMS_PENDING_MAX))
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            // Outermost first: every request is counted, the gate's refusals too.
            .layer(telemetry.requests().layer())
            .layer(self.access.gate.layer())
            .add_service(store)
            .add_service(admin)
            .add_service(raft)
            .add_service(cluster)
            .add_service(health)
            .add_service(reflection.0)
            .add_service(reflection.1)
            .add_optional_service(faults);
        let host = self.host.clone();
        // Stopping lets calls in flight finish, but not forever: streams (raft appends
        // from peers, sessions, watches) never end on their own.
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let node_health = self.health.clone();
        let signal = async move {
            shutdown.await;
            node_health.stopping().await;
            let _ = stopping.send(());
        };
        let drained = async move {
            if stopped.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(DRAIN_MAX).await;
        };
        let served = tokio::select! {
            served = server.serve_with_incoming_shutdown(incoming, signal) => served.map_err(Error::from),
            () = drained => Ok(()),
            failed = first_failed(&host) => {
                tracing::error!(error = %failed, "a replica failed; the node stops serving");
                Err(failed)
            }
        };
        // Nothing of the node goes on in a process that embeds it: its loops, its metrics
        // server and its raft groups stop with it.
        self.manager.stop();
        reporting.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        host.shutdown().await;
        served
    }
}

/// gRPC server reflection, v1 and v1alpha (grpcurl asks for v1, older tools for
/// v1alpha): every message of weft's API, and the client-facing services listed (the
/// internal `Raft` and `NodeAdmin` answer only nodes, and fault injection is for tests).
#[allow(clippy::type_complexity)]
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    Error,
> {
    let builder = || {
        let b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        crate::health::SERVICES.iter().fold(b, |b, s| b.with_service_name(*s))
    };
    let v1 = builder()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .map_err(|e| Error::Reflection(e.to_string()))?;
    let v1alpha = builder()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .map_err(|e| Error::Reflection(e.to_string()))?;
    Ok((v1, v1alpha))
}

/// How long a stopping node waits for calls in flight to finish. After it, `serve` returns
/// whatever is still open: tonic runs each connection in a task of its own, so a stream
/// whose peer keeps it open may linger until the peer lets go, but the node's replicas
/// are shut down (and open no more) either way.
const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// How often certificate files are checked for changes (SIGHUP reloads at once).
const CERT_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// HTTP/2 streams (calls) one connection may have open at once. Every raft group's traffic
/// between two nodes shares one connection (a replication stream per group and follower,
/// heartbeats, snapshots), so this is far above what a client needs: a client's requests
/// are bounded by the gate's per-client limit (`--client-in-flight-max`) first.
const STREAMS_PER_CONNECTION_MAX: u32 = 16_384;

/// Streams a peer may open and reset before this node accepts them, at once, before the
/// connection is closed (h2's defence against rapid resets; its default is 20). Between
/// two nodes hosting thousands of groups, an overloaded moment cancels more calls than
/// that (vote rounds timing out), and closing the connection fails every group's stream
/// on it at once: measured with `weft bench density --partitions 2500`, the closures fed
/// elections that caused more. Still bounded: a client's streams pass the gate first.
const RESET_STREAMS_PENDING_MAX: usize = 4_096;

/// Answer bytes one session stream may hold at once (see [`crate::session::Budget`]).
const SESSION_ANSWER_BYTES_MAX: usize = 64 << 20;

/// Most bytes of one changes file a restore may send (`Store.StageRestore`): far above
/// the change history (32 MiB by default) a changes file is cut from, a bound against a
/// sender's nonsense rather than a tuning knob.
const RESTORED_CHANGES_MAX: u64 = 1 << 30;

/// The session byte budget: the largest get answer the limits allow is what a get reserves
/// until its answer is known.
fn session_budget(limits: &Limits, call_deadline: std::time::Duration) -> crate::session::Budget {
    let record = limits.key_bytes_max
        + limits.value_bytes_max
        + limits.attrs_per_record_max * (limits.name_bytes_max + limits.attr_value_bytes_max + 16)
        + 256;
    crate::session::Budget {
        bytes_max: SESSION_ANSWER_BYTES_MAX,
        get_estimate: record,
        write_estimate: 1024,
        call_deadline,
    }
}

fn replica_of(host: &Host, partition: u64) -> Result<Arc<Replica>, Status> {
    host.get(partition).ok_or_else(|| status::not_hosted(partition))
}

/// The client Store service. Every call is checked against the caller's rights on the
/// partition's service ([`AccessView::check`]); writes are checked against the engine's
/// limits, the partition's hash range and for NaN attributes before they are proposed, so
/// a refused write never reaches a log.
#[derive(Clone)]
struct StoreService {
    host: Arc<Host>,
    access: Arc<AccessView>,
    session_bytes: crate::session::Budget,
    /// This node's id (a restored state is staged only on the node the map names).
    node: u64,
}

/// Why a write is refused before it is proposed, as the state machine would refuse it: a
/// command result with an error (nothing applied, retrying will not help).
fn refused(code: pb::ErrorCode, message: String) -> pb::WriteResponse {
    let error = pb::CommandError { code: code as i32, message };
    pb::WriteResponse {
        result: Some(pb::CommandResult { version: 0, outcome: Some(pb::command_result::Outcome::Error(error)) }),
    }
}

/// The checks a write must pass before it is proposed: the limits (as applying checks them),
/// no NaN attribute (an index could not order it), every key in the partition's range.
fn admissible(cmd: &pb::Command, limits: &Limits, range: authz::Range) -> Result<(), pb::WriteResponse> {
    let Some(pb::command::Kind::Batch(batch)) = &cmd.kind else { return Ok(()) };
    let mut ops = Vec::with_capacity(batch.ops.len());
    for op in &batch.ops {
        let condition = match &op.kind {
            Some(pb::op::Kind::Put(p)) => p.condition.as_ref(),
            Some(pb::op::Kind::Delete(d)) => d.condition.as_ref(),
            None => None,
        };
        if let Some(pb::Condition {
            kind: Some(pb::condition::Kind::Exists(false) | pb::condition::Kind::Absent(false)),
        }) = condition
        {
            return Err(refused(
                pb::ErrorCode::Invalid,
                "a condition `exists: false` or `absent: false` says nothing: send `absent: true`, `exists: true`, \
                 or no condition"
                    .into(),
            ));
        }
        match weft_replica::op_from_pb(op.clone()) {
            Ok(op) => ops.push(op),
            Err(e) => return Err(refused(pb::ErrorCode::Invalid, e.to_string())),
        }
    }
    if let Err(e) = limits.check_ops(&ops) {
        return Err(refused(pb::ErrorCode::Limit, e.to_string()));
    }
    for op in &ops {
        if let weft_store::Op::Put { attrs, .. } = op
            && let Some((name, _)) = attrs.iter().find(|(_, v)| matches!(v, weft_store::Scalar::F64(f) if f.is_nan()))
        {
            return Err(refused(
                pb::ErrorCode::Invalid,
                format!("attribute {name:?} is NaN: an index cannot order it (send a number or leave it out)"),
            ));
        }
        if let Some((low, high)) = range {
            let h = weft_cluster_manager::keyspace::hash(op.key());
            if h < low || h > high {
                return Err(refused(
                    pb::ErrorCode::Invalid,
                    format!(
                        "key {:?} hashes to {h:#018x}, outside this partition's range {low:#018x}..={high:#018x}: \
                         route it by the cluster map",
                        String::from_utf8_lossy(op.key())
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl StoreService {
    /// Replicates one command through the partition's primary; answers with its result.
    async fn propose(
        &self,
        principal: &Principal,
        partition: u64,
        session: Option<pb::Session>,
        mut cmd: pb::Command,
    ) -> Result<pb::WriteResponse, Status> {
        let range = self.access.check(principal, partition, Right::Write)?;
        if let Err(refusal) = admissible(&cmd, self.host.limits(), range) {
            return Ok(refusal);
        }
        if cmd.session.is_some() {
            return Err(Status::invalid_argument(
                "Command.session is the node's to set: send the session in WriteRequest.session",
            ));
        }
        let replica = replica_of(&self.host, partition)?;
        cmd.session = session;
        if let Some(s) = cmd.session.as_mut() {
            s.client_id = authz::session_id(principal, s.client_id);
        }
        // The write's span: its partition, session and sequence number, which every
        // replica's "write applied" line repeats (`weft_replica`'s state machine).
        let (session, seq) = cmd.session.as_ref().map_or((0, 0), |s| (s.client_id, s.seq));
        let span = tracing::debug_span!("write", partition, session, seq);
        let result = tracing::Instrument::instrument(replica.write(cmd), span.clone())
            .await
            .map_err(|e| status::write_error(partition, e))?;
        span.in_scope(|| tracing::debug!(version = result.version, "write answered"));
        Ok(pb::WriteResponse { result: Some(result) })
    }

    /// Waits until this replica may answer a read of the given mode, then runs `read` on
    /// its applied state; returns the answer with what the response says about it.
    async fn read<T>(
        &self,
        principal: &Principal,
        right: Right,
        header: Option<pb::ReadHeader>,
        read: impl FnOnce(&weft_store::Store) -> weft_store::Result<T>,
    ) -> Result<(T, Option<pb::ReadInfo>), Status> {
        let header = header.ok_or_else(|| Status::invalid_argument("read without a header"))?;
        self.access.check(principal, header.partition, right)?;
        let mode = pb::ReadMode::try_from(header.mode)
            .map_err(|_| Status::invalid_argument(format!("unknown read mode {}", header.mode)))?;
        let replica = replica_of(&self.host, header.partition)?;
        let stale = mode == pb::ReadMode::Stale;
        let span = tracing::debug_span!("read", partition = header.partition, stale);
        let (answer, applied) = tracing::Instrument::instrument(replica.read(!stale, |st| read(&st.store)), span)
            .await
            .map_err(|e| status::read_index_error(header.partition, e))?
            .ok_or_else(|| status::not_ready(header.partition, replica.id()))?;
        Ok((answer.map_err(status::engine)?, Some(pb::ReadInfo { stale, replica: replica.id(), applied })))
    }

    async fn get_as(&self, principal: &Principal, req: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        let (record, info) = self
            .read(principal, Right::Read, req.header, |s| Ok(s.get(&req.table, &req.key)?.map(record_to_pb)))
            .await?;
        Ok(pb::GetResponse { info, record })
    }

    async fn write_as(&self, principal: &Principal, req: pb::WriteRequest) -> Result<pb::WriteResponse, Status> {
        let cmd = req.command.ok_or_else(|| Status::invalid_argument("write request without a command"))?;
        self.propose(principal, req.partition, req.session, cmd).await
    }
}

/// A command applying `ops` as one atomic batch.
fn batch_command(ops: Vec<pb::Op>) -> pb::Command {
    pb::Command { session: None, kind: Some(pb::command::Kind::Batch(pb::Batch { ops })) }
}

fn page_response(page: weft_store::Page, info: Option<pb::ReadInfo>) -> pb::ScanResponse {
    pb::ScanResponse {
        info,
        records: page.records.iter().map(record_to_pb).collect(),
        token: page.next.map(|t| t.as_bytes().to_vec().into()).unwrap_or_default(),
    }
}

fn key_bound(b: Option<pb::KeyBound>) -> Bound<Vec<u8>> {
    match b {
        None => Bound::Unbounded,
        Some(b) if b.inclusive => Bound::Included(b.key.to_vec()),
        Some(b) => Bound::Excluded(b.key.to_vec()),
    }
}

fn value_bound(b: Option<pb::ValueBound>) -> Result<Bound<weft_store::Scalar>, Status> {
    Ok(match b {
        None => Bound::Unbounded,
        Some(b) => {
            let v = scalar_from_pb(b.value)?;
            if matches!(v, weft_store::Scalar::F64(f) if f.is_nan()) {
                return Err(Status::invalid_argument("a query bound is NaN: no value compares with it"));
            }
            if b.inclusive { Bound::Included(v) } else { Bound::Excluded(v) }
        }
    })
}

fn token(t: &[u8]) -> Option<Token> {
    (!t.is_empty()).then(|| Token::from_bytes(t))
}

/// The answer stream of a session (see [`crate::session`]).
type SessionStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SessionAnswers, Status>> + Send>>;

impl StoreService {
    /// One session call, answered as its unary RPC would answer it for the stream's caller,
    /// with the caller's rights as they are now (not as they were when the stream opened).
    async fn session_call(self, principal: Principal, call: pb::session_call::Call) -> pb::session_answer::Answer {
        let principal = match self.access.gate.current(&principal) {
            Ok(p) => p,
            Err(s) => return pb::session_answer::Answer::Error(weft_proto::session::status_to_pb(&s)),
        };
        let answer = match call {
            pb::session_call::Call::Get(r) => self.get_as(&principal, r).await.map(pb::session_answer::Answer::Get),
            pb::session_call::Call::Write(r) => {
                self.write_as(&principal, r).await.map(pb::session_answer::Answer::Write)
            }
        };
        answer.unwrap_or_else(|s| pb::session_answer::Answer::Error(weft_proto::session::status_to_pb(&s)))
    }
}

/// Receives the changes files a restore sends after a partition's full state
/// (`Store.StageRestore`) and applies each to `chain` as it arrives, oldest first, until
/// the sender closes the stream; the chain must then reach `want`, the index its first
/// chunk named. Answers the chain, the files and their bytes. On a refusal the state,
/// which may be large, is dropped on a blocking thread, not the runtime's.
async fn receive_changes(
    partition: u64,
    mut chain: weft_backup::chain::Chain,
    stream: &mut tonic::Streaming<pb::SnapshotChunk>,
    want: u64,
) -> Result<(weft_backup::chain::Chain, u64, u64), Status> {
    let (mut files, mut bytes) = (0u64, 0u64);
    let refused = loop {
        let next = match weft_replica::next_bytes(stream, RESTORED_CHANGES_MAX).await {
            Ok(next) => next,
            Err(s) => break s,
        };
        let Some((meta, data)) = next else {
            if chain.through() == want {
                return Ok((chain, files, bytes));
            }
            break Status::data_loss(format!(
                "the restored chain ended at log index {}, short of the {want} its first chunk names",
                chain.through()
            ));
        };
        files += 1;
        bytes += data.len() as u64;
        let through = meta.and_then(|m| m.last_log_id).map_or(0, |l| l.index);
        if through > want {
            break Status::data_loss(format!(
                "changes file {files} reaches log index {through}, past the {want} the chain's first chunk names"
            ));
        }
        let name = format!("partition {partition}'s changes file {files}");
        let (back, applied) = tokio::task::spawn_blocking(move || {
            let applied = chain.apply(&data, &name, through);
            (chain, applied)
        })
        .await
        .map_err(|e| Status::internal(format!("applying restored changes: {e}")))?;
        chain = back;
        if let Err(e) = applied {
            break Status::data_loss(e.to_string());
        }
    };
    tokio::task::spawn_blocking(move || drop(chain));
    Err(refused)
}

/// An incremental backup's changes file: what `replica` applied after `since` up to
/// `through` (the index `snapshot` holds), and the schema at `through`; `OUT_OF_RANGE`
/// when its change history no longer reaches back to `since`.
fn backup_changes(
    replica: &weft_replica::Replica,
    partition: u64,
    since: u64,
    through: u64,
    snapshot: &weft_store::StoreSnapshot,
) -> Result<Vec<u8>, Status> {
    if since > through {
        return Err(Status::out_of_range(format!(
            "partition {partition} has applied up to {through}, before the backup's {since}: another partition's backup"
        )));
    }
    let mut changes = Vec::new();
    let mut from = since + 1;
    let mut generation = None;
    'read: while from <= through {
        let (entries, _, gen_now) =
            replica.changes_since(from, 4096).map_err(|c| crate::watch::compacted(partition, c, false))?;
        if *generation.get_or_insert(gen_now) != gen_now {
            return Err(Status::out_of_range(format!(
                "partition {partition}'s replica was rebuilt while its changes were read; take a full backup"
            )));
        }
        if entries.is_empty() {
            break;
        }
        for e in entries {
            if e.version > through {
                break 'read;
            }
            changes.extend(e.changes.iter().cloned());
            from = e.version + 1;
        }
    }
    let schema = pb::BackupSchema {
        tables: snapshot
            .tables()
            .iter()
            .map(|t| pb::BackupTable {
                name: t.name().to_string(),
                indexes: t.index_defs().map(weft_replica::index_to_pb).collect(),
            })
            .collect(),
    };
    let header = pb::BackupChangesHeader { format: weft_backup::format::FORMAT, partition, after: since, through };
    Ok(weft_backup::format::encode_changes(header, &changes, schema))
}

/// The chunk stream a backup answers with.
type BackupStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::store_server::Store for StoreService {
    type BackupStream = BackupStream;
    type SessionStream = SessionStream;
    type WatchStream = crate::watch::WatchStream;

    /// Served by this node's replica of the partition, whatever its role (`crate::watch`).
    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let principal = authz::principal(&req)?;
        let req = req.into_inner();
        self.access.check(&principal, req.partition, Right::Read)?;
        let replica = replica_of(&self.host, req.partition)?;
        Ok(Response::new(crate::watch::start(self.host.clone(), replica, req)?))
    }

    async fn session(
        &self,
        req: Request<tonic::Streaming<pb::SessionCalls>>,
    ) -> Result<Response<SessionStream>, Status> {
        let principal = authz::principal(&req)?;
        let svc = self.clone();
        let answers = crate::session::serve(req.into_inner(), self.session_bytes, move |call| {
            svc.clone().session_call(principal.clone(), call)
        });
        Ok(Response::new(Box::pin(answers)))
    }

    /// Decodes the restored state of a partition being restored, applies the changes files
    /// sent after it ([`weft_backup::chain`]), and keeps it for the replica the map says
    /// opens from it ([`Host::stage`]); the cluster manager then opens that replica from it
    /// (store.proto's `StageRestore`).
    async fn stage_restore(
        &self,
        req: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::StageRestoreResponse>, Status> {
        let principal = authz::principal(&req)?;
        let mut stream = req.into_inner();
        let first = weft_replica::first_chunk(&mut stream).await?;
        let pb::Target { partition, replica } =
            first.target.ok_or_else(|| Status::invalid_argument("a restored state names its replica (target)"))?;
        self.access.check(&principal, partition, Right::Operate)?;
        match self.access.restoring(partition) {
            Some((node, r)) if node == self.node && r == replica => {}
            Some((node, r)) => {
                return Err(Status::failed_precondition(format!(
                    "partition {partition} opens from its restored state as replica {r} on node {node}, not replica \
                     {replica} on node {}",
                    self.node
                )));
            }
            None => {
                return Err(Status::unavailable(format!(
                    "this node's cluster map does not show partition {partition} waiting for a restore; try again"
                )));
            }
        }
        if self.host.get(partition).is_some() {
            return Err(Status::failed_precondition(format!(
                "partition {partition} already has a replica open on node {}: its group has started",
                self.node
            )));
        }
        let index = first.meta.as_ref().and_then(|m| m.last_log_id.as_ref()).map_or(0, |l| l.index);
        let want = if first.chain_through == 0 { index } else { first.chain_through };
        if index.max(want) > weft_replica::INDEX_MAX || want < index {
            return Err(Status::invalid_argument(format!(
                "log indexes {index} (the full state) and {want} (the chain): above {} or out of order, refused as \
                 nonsense",
                weft_replica::INDEX_MAX
            )));
        }
        // States of restores the map no longer waits for (failed, or reset again) go.
        let node = self.node;
        let dropped = self.host.drop_staged(|p, r| self.access.restoring(p) == Some((node, r)));
        if dropped > 0 {
            tracing::info!(dropped, "dropped restored states no partition waits for");
        }
        let progress = Arc::new(weft_replica::snapshot::Progress::default());
        let limits = self.host.limits().clone();
        let started = std::time::Instant::now();
        let (store, _, bytes, received_s) =
            weft_replica::decode_stream(first, &mut stream, limits, progress.clone(), |_| {}).await?;
        let chain = weft_backup::chain::Chain::new(store, index);
        let (chain, files, changes_bytes) = receive_changes(partition, chain, &mut stream, want).await?;
        let (store, index) = tokio::task::spawn_blocking(move || chain.finish())
            .await
            .map_err(|e| Status::internal(format!("applying restored changes: {e}")))?
            .map_err(|e| Status::data_loss(e.to_string()))?;
        if index > weft_replica::INDEX_MAX {
            tokio::task::spawn_blocking(move || drop(store));
            return Err(Status::invalid_argument(format!(
                "the restored state holds a record at version {index}: above {}, refused as nonsense",
                weft_replica::INDEX_MAX
            )));
        }
        let bytes = bytes + changes_bytes;
        let tables: Vec<String> = store.table_names().map(String::from).collect();
        let records = tables.iter().map(|t| store.count(t).unwrap_or(0) as u64).sum();
        let index = self.host.stage(partition, replica, index, store);
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(partition, replica, bytes, records, files, index, received_s, secs, "restored state received");
        Ok(Response::new(pb::StageRestoreResponse { bytes, records, index, tables }))
    }

    /// The primary, after a read-index round (so it holds everything acknowledged), takes
    /// an O(1) engine snapshot and streams it as a snapshot transfer would, without client
    /// sessions: they mean nothing to a restored service. With `since`, it streams the
    /// changes it applied after that index up to the same point instead (an incremental
    /// backup, `weft_backup::format`), or answers `OUT_OF_RANGE` when it no longer keeps
    /// them all. The first chunk's meta names the index either holds everything up to.
    async fn backup(&self, req: Request<pb::BackupRequest>) -> Result<Response<BackupStream>, Status> {
        let principal = authz::principal(&req)?;
        let pb::BackupRequest { partition, since } = req.into_inner();
        let header = Some(pb::ReadHeader { partition, mode: pb::ReadMode::Linearizable as i32 });
        let (snapshot, info) = self.read(&principal, Right::Operate, header, |s| Ok(s.snapshot())).await?;
        let through = info.map_or(0, |i| i.applied);
        let chunk_bytes = self.host.peers().config().snapshot_chunk_bytes;
        let first = pb::SnapshotChunk {
            meta: Some(pb::SnapshotMeta {
                last_log_id: Some(pb::LogId { leader_id: None, index: through }),
                ..Default::default()
            }),
            ..Default::default()
        };
        if since > 0 {
            let replica = replica_of(&self.host, partition)?;
            // Copying and encoding up to the history's 32 MiB: off the runtime's threads.
            let data =
                tokio::task::spawn_blocking(move || backup_changes(&replica, partition, since, through, &snapshot))
                    .await
                    .map_err(|e| Status::internal(format!("backup encoder failed: {e}")))??;
            tracing::info!(partition, since, through, bytes = data.len(), "incremental backup streamed");
            let rx = weft_replica::stream_bytes(first, &data, chunk_bytes);
            let stream = futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
            return Ok(Response::new(Box::pin(stream)));
        }
        let (rx, encoder) = weft_replica::stream_snapshot(first, snapshot, Default::default(), chunk_bytes);
        // A failed encoder ends the stream without its last chunk, which the reader rejects.
        tokio::spawn(async move {
            match encoder.await {
                Ok(Ok(counts)) => tracing::info!(partition, ?counts, "backup streamed"),
                Ok(Err(e)) => tracing::warn!(partition, error = %e, "backup stream stopped"),
                Err(e) => tracing::warn!(partition, error = %e, "backup encoder failed"),
            }
        });
        let stream = futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let principal = authz::principal(&req)?;
        Ok(Response::new(self.get_as(&principal, req.into_inner()).await?))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = authz::principal(&req)?;
        let req = req.into_inner();
        let put = req.put.ok_or_else(|| Status::invalid_argument("put request without a put"))?;
        let cmd = batch_command(vec![pb::Op { kind: Some(pb::op::Kind::Put(put)) }]);
        Ok(Response::new(self.propose(&principal, req.partition, req.session, cmd).await?))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = authz::principal(&req)?;
        let req = req.into_inner();
        let del = req.delete.ok_or_else(|| Status::invalid_argument("delete request without a delete"))?;
        let cmd = batch_command(vec![pb::Op { kind: Some(pb::op::Kind::Delete(del)) }]);
        Ok(Response::new(self.propose(&principal, req.partition, req.session, cmd).await?))
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = authz::principal(&req)?;
        let req = req.into_inner();
        Ok(Response::new(self.propose(&principal, req.partition, req.session, batch_command(req.ops)).await?))
    }

    async fn write(&self, req: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = authz::principal(&req)?;
        Ok(Response::new(self.write_as(&principal, req.into_inner()).await?))
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let principal = authz::principal(&req)?;
        let req = req.into_inner();
        let scan = Scan {
            start: key_bound(req.start),
            end: key_bound(req.end),
            reverse: req.reverse,
            limit: req.limit as usize,
            token: token(&req.token),
        };
        let (page, info) = self.read(&principal, Right::Read, req.header, |s| s.scan(&req.table, &scan)).await?;
        Ok(Response::new(page_response(page, info)))
    }

    async fn query(&self, req: Request<pb::QueryRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let principal = authz::principal(&req)?;
        let req = req.into_inner();
        let query = Query {
            index: req.index,
            start: value_bound(req.lower)?,
            end: value_bound(req.upper)?,
            reverse: req.descending,
            limit: req.limit as usize,
            token: token(&req.token),
        };
        let (page, info) = self.read(&principal, Right::Read, req.header, |s| s.query(&req.table, &query)).await?;
        Ok(Response::new(page_response(page, info)))
    }

    async fn top_k(&self, req: Request<pb::TopKRequest>) -> Result<Response<pb::TopKResponse>, Status> {
        let principal = authz::principal(&req)?;
        let req = req.into_inner();
        let (top, info) =
            self.read(&principal, Right::Read, req.header, |s| s.top_k(&req.table, &req.index, req.k as usize)).await?;
        Ok(Response::new(pb::TopKResponse { info, records: top.iter().map(record_to_pb).collect() }))
    }
}

/// Fault injection (`--fault-injection` only; the gate lets only operators call it).
struct FaultsService {
    host: Arc<Host>,
}

#[tonic::async_trait]
impl weft_proto::testing::v1::faults_server::Faults for FaultsService {
    async fn cut_links(
        &self,
        req: Request<weft_proto::testing::v1::CutLinksRequest>,
    ) -> Result<Response<weft_proto::testing::v1::CutLinksResponse>, Status> {
        let addrs = req.into_inner().addrs;
        tracing::warn!(?addrs, "fault injection: links cut (an empty list restores them)");
        self.host.peers().cut_links(addrs);
        Ok(Response::new(weft_proto::testing::v1::CutLinksResponse {}))
    }
}

/// The node-admin service.
struct AdminService {
    host: Arc<Host>,
    incarnation: u64,
    restart: Option<RestartHook>,
}

#[tonic::async_trait]
impl pb::node_admin_server::NodeAdmin for AdminService {
    async fn open_replica(
        &self,
        req: Request<pb::OpenReplicaRequest>,
    ) -> Result<Response<pb::OpenReplicaResponse>, Status> {
        let req = req.into_inner();
        let mode = pb::LogMode::try_from(req.mode).map_err(|_| Status::invalid_argument("unknown log mode"))?;
        let initial = match req.initial {
            None => None,
            Some(m) => {
                let m = weft_replica::membership_from_pb(m)?;
                let voters: BTreeMap<_, _> = m.nodes().map(|(id, n)| (*id, n.clone())).collect();
                Some(voters)
            }
        };
        // Its own task: a caller that gives up (a timeout) does not cut an open in half, which
        // for a replica opening from a restored state would drop that state unused.
        let host = self.host.clone();
        tokio::spawn(async move { host.open(req.partition, req.replica, mode, initial, req.staged).await })
            .await
            .map_err(|e| Status::internal(format!("opening the replica: {e}")))??;
        Ok(Response::new(pb::OpenReplicaResponse {}))
    }

    async fn close_replica(
        &self,
        req: Request<pb::CloseReplicaRequest>,
    ) -> Result<Response<pb::CloseReplicaResponse>, Status> {
        let req = req.into_inner();
        if req.replica != 0 {
            match self.host.get(req.partition) {
                Some(r) if r.id() != req.replica => {
                    return Err(Status::not_found(format!(
                        "partition {} is hosted here as replica {}, not {}",
                        req.partition,
                        r.id(),
                        req.replica
                    )));
                }
                _ => {}
            }
        }
        self.host.close(req.partition, !req.partition_gone).await?;
        Ok(Response::new(pb::CloseReplicaResponse {}))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = req.into_inner();
        let r = replica_of(&self.host, req.partition)?;
        let resp = r
            .awake()
            .await
            .add_learner(req.replica, weft_replica::node_of(&req.addr), req.blocking)
            .await
            .map_err(|e| status::write_error(req.partition, e))?;
        Ok(Response::new(pb::MembershipResponse { log_id: Some(weft_replica::log_id_to_pb(&resp.log_id)) }))
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = req.into_inner();
        let r = replica_of(&self.host, req.partition)?;
        let voters: std::collections::BTreeSet<u64> = req.voters.into_iter().collect();
        // Without `retain`, the group keeps exactly `voters`: learners that are neither
        // current nor new voters (a move's target given a fresh id after its node restarted,
        // or one a move abandoned) leave too, or the primary would replicate to them forever.
        // Current voters are left to openraft, which drops them once the joint change ends.
        let leftovers: std::collections::BTreeSet<u64> = if req.retain {
            Default::default()
        } else {
            let m = r.raft().metrics().borrow_watched().clone();
            let members = m.membership_config.membership();
            let now: std::collections::BTreeSet<u64> = members.voter_ids().collect();
            members.nodes().map(|(id, _)| *id).filter(|id| !voters.contains(id) && !now.contains(id)).collect()
        };
        let change = if leftovers.is_empty() {
            openraft::ChangeMembers::ReplaceAllVoters(voters)
        } else {
            tracing::info!(partition = req.partition, learners = ?leftovers, "leftover learners leave the group");
            openraft::ChangeMembers::Batch(vec![
                openraft::ChangeMembers::ReplaceAllVoters(voters),
                openraft::ChangeMembers::RemoveNodes(leftovers),
            ])
        };
        let resp = r
            .awake()
            .await
            .change_membership(change, req.retain)
            .await
            .map_err(|e| status::write_error(req.partition, e))?;
        Ok(Response::new(pb::MembershipResponse { log_id: Some(weft_replica::log_id_to_pb(&resp.log_id)) }))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderToRequest>,
    ) -> Result<Response<pb::TransferLeaderToResponse>, Status> {
        let req = req.into_inner();
        let r = replica_of(&self.host, req.partition)?;
        // A transfer to the primary itself would stall it: openraft marks the group as
        // transferring (no heartbeats, no writes) and sends the order to every voter but
        // itself, so nobody campaigns until an election timeout elects whoever fires
        // first. A manager retrying a move off a UD against half-second-old reports asked
        // exactly that of the primary its first transfer made, and the walk's primary ended
        // up elsewhere. Already the target: done. Not the primary: refused, so the caller
        // tries the next replica.
        if !r.is_primary() {
            return Err(Status::unavailable(format!(
                "replica {} of partition {} is not its primary; a leader transfer goes to the primary",
                r.id(),
                req.partition
            )));
        }
        if req.to == r.id() {
            return Ok(Response::new(pb::TransferLeaderToResponse {}));
        }
        r.awake().await.trigger().transfer_leader(req.to).await.map_err(|e| {
            Status::unavailable(format!("leader transfer of partition {} to replica {}: {e}", req.partition, req.to))
        })?;
        Ok(Response::new(pb::TransferLeaderToResponse {}))
    }

    async fn status(&self, req: Request<pb::ReplicaStatusRequest>) -> Result<Response<pb::ReplicaStatus>, Status> {
        let r = replica_of(&self.host, req.into_inner().partition)?;
        Ok(Response::new(Arc::unwrap_or_clone(r.status())))
    }

    async fn restart(&self, _req: Request<pb::RestartRequest>) -> Result<Response<pb::RestartResponse>, Status> {
        let Some(hook) = self.restart.clone() else {
            return Err(Status::failed_precondition(
                "this node cannot restart itself (it was started without a restart hook): restart its process",
            ));
        };
        tracing::warn!("restart requested");
        tokio::spawn(async move {
            // Let the answer leave first.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            (hook.0)();
        });
        Ok(Response::new(pb::RestartResponse { incarnation: self.incarnation }))
    }

    async fn list(&self, _req: Request<pb::ListReplicasRequest>) -> Result<Response<pb::ListReplicasResponse>, Status> {
        Ok(Response::new(pb::ListReplicasResponse {
            replicas: self.host.list().iter().map(|r| Arc::unwrap_or_clone(r.status())).collect(),
            append_streams: self.host.append_streams(),
        }))
    }
}
