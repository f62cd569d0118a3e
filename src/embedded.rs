//! [`Node`]: a weft node inside a service's own process, as Service Fabric's Reliable
//! Collections live inside the service that uses them.
//!
//! [`Node::builder`] takes what `weft node` takes (id, listen address, seeds, upgrade and
//! fault domain, data directory, durable logs, certificates; [`NodeBuilder::configure`]
//! for the rest) and [`NodeBuilder::start`] binds, joins the cluster and hosts replicas
//! exactly as the `weft node` process does: `weft node` is this, started from its flags.
//! The running [`Node`] gives the service:
//!
//! - [`Node::client`]: the routed client for any service, acting as this node;
//! - [`Node::partitions`]: the partitions hosted here, each with its service and role;
//! - [`Node::get`]: a read of a key that a local primary serves in process, with no
//!   network hop and the same read-index round a linearizable gRPC read makes (another
//!   node's primary is read through the client);
//! - [`Node::watch`]: a service's committed changes as a stream (`Store.Watch`);
//! - [`Node::roles`]: events as local replicas become or stop being primary (Reliable
//!   Services' `OnChangeRole`), to start and stop primary-only work. Roles are looked at
//!   every 100 ms: a primary lost and regained within one look is not reported, and the
//!   first subscriber hears the primaries of that moment as events;
//! - [`Node::stop`]: a graceful stop. It waits (up to [`NodeBuilder::stop_wait`]) until
//!   stopping loses no partition its quorum (every partition hosted here with more than
//!   one voter keeps a majority of them on other nodes that answer this node's liveness
//!   pings), hands each local primary to another voter that is up and waits until it
//!   leads, then stops serving. Nothing coordinates two nodes stopped at the same moment
//!   (each sees the other up for about a second): stop nodes one at a time. The cluster manager then treats the node as it treats any node
//!   gone quiet: it is marked down after its grace period and its replicas are replaced
//!   unless it comes back first.
//!
//! Depends on the node server (`weft-node`), the replica host for the in-process parts and
//! the client; the CLI depends on it, never the other way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, oneshot, watch};
use weft_client::routing::ServiceClient;
use weft_client::{ClientConfig, ClientError};
use weft_node::NodeConfig;
use weft_proto::v1 as pb;
use weft_replica::Host;
use weft_security::ClientSecurity;

/// How often the role watcher looks at the hosted replicas' roles.
const ROLE_POLL: Duration = Duration::from_millis(100);

/// Role events a slow subscriber may fall behind by before it hears it lagged.
const ROLE_EVENTS: usize = 1024;

/// How long a graceful stop waits for each primary hand-off.
const HAND_OFF_WAIT: Duration = Duration::from_secs(2);

/// Why an embedded node did not start, read or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node's certificates could not be loaded.
    #[error("loading node {id}'s certificates from {dir}: {reason}")]
    Certificates {
        /// The node id.
        id: u64,
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// Neither certificates nor `insecure` were given.
    #[error(
        "no certificates: give certs_dir (ca.crt, node.crt, node.key; `weft cert create-node` makes them) or insecure()"
    )]
    NoCertificates,
    /// Binding or serving failed.
    #[error(transparent)]
    Node(#[from] weft_node::Error),
    /// A call through the client failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A local read failed in the engine (no such table...).
    #[error("{0}")]
    Engine(#[from] weft_store::StoreError),
    /// Stopping now would leave these partitions without a quorum of voters up (the
    /// other replicas' nodes are down); the node still runs.
    #[error("stopping would lose the quorum of partitions {partitions:?}; the node keeps running")]
    WouldLoseQuorum {
        /// The partitions.
        partitions: Vec<u64>,
    },
    /// The node stopped serving on its own (a replica's raft group failed).
    #[error("the node stopped serving: {0}")]
    Stopped(String),
}

/// A replica's role, as [`Node::partitions`] and [`Node::roles`] give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It serves writes and linearizable reads.
    Primary,
    /// It follows a primary (a voter or a learner being built).
    Secondary,
}

/// A replica hosted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosted {
    /// Its partition.
    pub partition: u64,
    /// The service that partition belongs to, by the client's map (`None` for the
    /// cluster map's own partition, or a partition the map does not name yet).
    pub service: Option<String>,
    /// Its replica id.
    pub replica: u64,
    /// Its role now.
    pub role: Role,
}

/// A local replica became, or stopped being, primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleChange {
    /// Its partition.
    pub partition: u64,
    /// Its replica id.
    pub replica: u64,
    /// Its role from now on (`Secondary` too when the replica closed or moved away).
    pub role: Role,
}

/// What [`Node::builder`] starts.
pub struct NodeBuilder {
    config: NodeConfig,
    certs_dir: Option<PathBuf>,
    insecure: bool,
    stop_wait: Duration,
}

impl NodeBuilder {
    /// Seed nodes (the cluster manager's), `host:port` each.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.config.cluster.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Upgrade domain.
    pub fn ud(mut self, ud: impl Into<String>) -> Self {
        self.config.cluster.ud = ud.into();
        self
    }

    /// Fault domain.
    pub fn fd(mut self, fd: impl Into<String>) -> Self {
        self.config.cluster.fd = fd.into();
        self
    }

    /// Directory for durable logs and checkpoints.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.storage.data_dir = Some(dir.into());
        self
    }

    /// Durable logs (write-ahead log and checkpoints under the data directory).
    pub fn durable(mut self, durable: bool) -> Self {
        self.config.storage.durable_by_default = durable;
        self
    }

    /// The node's certificates: a directory with `ca.crt`, `node.crt` and `node.key`.
    pub fn certs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.certs_dir = Some(dir.into());
        self
    }

    /// No TLS and no authentication: anyone who reaches the port may do anything.
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// The address peers and clients dial, when it is not the one listened on: a host
    /// name, where the node listens on `0.0.0.0` (containers). Seeds name nodes by it.
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.config.cluster.advertise = Some(addr.into());
        self
    }

    /// The address clients outside the nodes' network dial (a published port); see
    /// `NodeInfo.client_addr` in docs/api.md.
    pub fn advertise_client(mut self, addr: impl Into<String>) -> Self {
        self.config.cluster.advertise_client = Some(addr.into());
        self
    }

    /// Where to serve Prometheus metrics.
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.config.metrics = Some(addr);
        self
    }

    /// How long [`Node::stop`] waits for stopping to become safe (default 30 s).
    pub fn stop_wait(mut self, wait: Duration) -> Self {
        self.stop_wait = wait;
        self
    }

    /// Any other setting `weft node` has (raft timings, limits, capacity, connection
    /// limits, restart hook).
    pub fn configure(mut self, f: impl FnOnce(&mut NodeConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Binds, joins the cluster and serves until [`Node::stop`].
    pub async fn start(self) -> Result<Node, NodeError> {
        let mut config = self.config;
        let id = config.id;
        if config.security.tls.is_none() && !self.insecure {
            let dir = self.certs_dir.ok_or(NodeError::NoCertificates)?;
            let creds = weft_security::Credentials::load(&dir, weft_security::Holder::Node { id: Some(id) })
                .map_err(|e| NodeError::Certificates { id, dir: dir.clone(), reason: e.to_string() })?;
            config.security.tls = Some(creds);
        }
        let security = match &config.security.tls {
            Some(creds) => ClientSecurity::tls(creds.clone()),
            None => ClientSecurity::insecure(),
        };
        let server = weft_node::Node::bind(config).await?;
        let addr = server.local_addr();
        let advertised = server.advertised().to_string();
        let host = server.host().clone();
        let health = server.health().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ended_tx, ended) = watch::channel(None);
        tokio::spawn(async move {
            let r = server.serve(async {
                let _ = stopped.await;
            });
            let _ = ended_tx.send(Some(r.await.map_err(|e| e.to_string())));
        });
        let client_config = ClientConfig::secured(security);
        let client = ServiceClient::new(vec![advertised.clone()], client_config.clone());
        tracing::info!(id, %addr, %advertised, "node started");
        Ok(Node {
            id,
            addr,
            advertised,
            host,
            client,
            client_config,
            stop: Mutex::new(Some(stop)),
            ended,
            roles: OnceLock::new(),
            stop_wait: self.stop_wait,
            health,
        })
    }
}

/// How the server ended, once it has: `Err` with why it stopped on its own.
type Ended = watch::Receiver<Option<Result<(), String>>>;

/// A running node inside this process; see the module docs. Dropping it stops it
/// abruptly (no hand-off): stop it with [`Node::stop`].
pub struct Node {
    id: u64,
    addr: SocketAddr,
    /// The address peers and clients dial (see [`NodeBuilder::advertise`]).
    advertised: String,
    host: Arc<Host>,
    client: ServiceClient,
    client_config: ClientConfig,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    ended: Ended,
    roles: OnceLock<broadcast::Sender<RoleChange>>,
    stop_wait: Duration,
    health: Arc<weft_node::Health>,
}

impl Node {
    /// A node with id `id` (1 to 1048575, stable across restarts) listening on `listen`
    /// (port 0 picks one: see [`Node::addr`]); every other setting as `weft node`'s
    /// defaults.
    pub fn builder(id: u64, listen: SocketAddr) -> NodeBuilder {
        NodeBuilder {
            config: NodeConfig {
                id,
                listen,
                raft: Default::default(),
                transport: Default::default(),
                limits: Default::default(),
                storage: Default::default(),
                cluster: Default::default(),
                metrics: None,
                security: Default::default(),
                network: None,
                restart: None,
            },
            certs_dir: None,
            insecure: false,
            stop_wait: Duration::from_secs(30),
        }
    }

    /// A builder over a whole node configuration (its TLS credentials, if any, already
    /// loaded; none means insecure).
    pub fn from_config(config: NodeConfig) -> NodeBuilder {
        let insecure = config.security.tls.is_none();
        NodeBuilder { config, certs_dir: None, insecure, stop_wait: Duration::from_secs(30) }
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address peers and clients dial ([`NodeBuilder::advertise`], else [`Node::addr`]).
    pub fn advertised(&self) -> &str {
        &self.advertised
    }

    /// The routed client, acting as this node (which may call anything).
    pub fn client(&self) -> &ServiceClient {
        &self.client
    }

    /// The settings of that client (this node's identity), for other clients.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config.clone()
    }

    /// Whether the node at `addr` answers this node's liveness pings (`None`: not
    /// watched, as no partition hosted here has a replica there). Known within about a
    /// second, long before the cluster manager marks a node down.
    pub fn peer_up(&self, addr: &str) -> Option<bool> {
        self.host.peer_up(addr)
    }

    /// The partitions hosted here with their roles, in partition order.
    pub async fn partitions(&self) -> Result<Vec<Hosted>, NodeError> {
        let map = self.client.map().await?;
        let service_of = |p: u64| map.map.as_ref().and_then(|m| m.partitions.get(&p)).map(|p| p.service.clone());
        Ok(self
            .host
            .list()
            .iter()
            .map(|r| Hosted {
                partition: r.partition(),
                service: service_of(r.partition()),
                replica: r.id(),
                role: if r.is_primary() { Role::Primary } else { Role::Secondary },
            })
            .collect())
    }

    /// Reads `key` of `service`'s `table`, linearizably: in process when this node hosts
    /// the key's partition's primary (a read-index round, as a gRPC read makes, without
    /// the network hop), through the client otherwise.
    pub async fn get(&self, service: &str, table: &str, key: &[u8]) -> Result<Option<pb::Record>, NodeError> {
        let partition = self.client.partition_of(service, key).await?;
        if let Some(r) = self.host.get(partition).filter(|r| r.is_primary()) {
            let read = r.read(true, |st| st.store.get(table, key).map(|r| r.map(weft_replica::record_to_pb))).await;
            if let Ok(Some((record, _))) = read {
                return Ok(record?);
            }
            // Not (or no longer) the primary, or no quorum: the client finds the one.
        }
        Ok(self.client.get(service, table, key).await?)
    }

    /// The committed changes of `service` from `options` on, resumed across primary
    /// changes and restarts (see [`weft_client::watch`]).
    pub async fn watch(
        &self,
        service: &str,
        options: &weft_client::WatchOptions,
    ) -> Result<weft_client::WatchStream, NodeError> {
        Ok(self.client.watch(service, options).await?)
    }

    /// Events for local replicas becoming or stopping being primary, from now on (the
    /// current primaries are in [`Node::partitions`]). A subscriber more than 1,024
    /// events behind hears `Lagged` and should look at [`Node::partitions`] again.
    pub fn roles(&self) -> broadcast::Receiver<RoleChange> {
        self.roles
            .get_or_init(|| {
                let (tx, _) = broadcast::channel(ROLE_EVENTS);
                tokio::spawn(watch_roles(Arc::downgrade(&self.host), tx.clone()));
                tx
            })
            .subscribe()
    }

    /// Stops gracefully (see the module docs). If stopping would still lose a
    /// partition's quorum after [`NodeBuilder::stop_wait`], it does not stop:
    /// [`NodeError::WouldLoseQuorum`], and the node keeps serving.
    pub async fn stop(&self) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + self.stop_wait;
        loop {
            let unsafe_now = self.unsafe_partitions();
            if unsafe_now.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::WouldLoseQuorum { partitions: unsafe_now });
            }
            tracing::info!(partitions = ?unsafe_now, "stop waits: these partitions would lose their quorum");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.stop_now().await
    }

    /// Whether the node is ready to serve (what the gRPC health protocol and `/readyz`
    /// answer): `Ok`, or why not.
    pub fn ready(&self) -> Result<(), String> {
        self.health.ready()
    }

    /// Hands the local primaries off and stops, whatever that does to quorums; returns
    /// once the server has stopped (at once if it already has).
    pub async fn stop_now(&self) -> Result<(), NodeError> {
        let stop = self.stop.lock().take();
        if let Some(stop) = stop {
            // Balancers and probes see the node not ready before its primaries move.
            self.health.stopping().await;
            let handed = self.host.hand_off_primaries(HAND_OFF_WAIT).await;
            tracing::info!(id = self.id, handed, "primaries handed off; stopping");
            let _ = stop.send(());
        }
        self.until_ended().await
    }

    /// Waits until the server has stopped; how it ended.
    async fn until_ended(&self) -> Result<(), NodeError> {
        let mut ended = self.ended.clone();
        let outcome = match ended.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            // The server task is gone without a word: it panicked.
            Err(_) => Some(Err("the node's server task ended without an answer".into())),
        };
        match outcome {
            Some(Err(e)) => Err(NodeError::Stopped(e)),
            _ => Ok(()),
        }
    }

    /// Serves until the server stops on its own (a replica failed) or `signal()`
    /// completes; then stops gracefully, retrying while stopping would lose a quorum
    /// (it keeps serving meanwhile, and says which partitions hold it up) until it is
    /// safe or `signal()` completes again, which stops it at once. `weft node` runs this
    /// with Ctrl-C.
    pub async fn run_until<F: Future<Output = ()>>(self, mut signal: impl FnMut() -> F) -> Result<(), NodeError> {
        tokio::select! {
            r = self.until_ended() => return r,
            () = signal() => {}
        }
        tracing::info!(id = self.id, "stopping gracefully");
        loop {
            let stopped = tokio::select! {
                r = self.stop() => Some(r),
                () = signal() => None,
            };
            match stopped {
                Some(Ok(())) => return Ok(()),
                Some(Err(NodeError::WouldLoseQuorum { partitions })) => tracing::warn!(
                    ?partitions,
                    "stopping now would lose these partitions' quorum: still serving (signal again to stop anyway)"
                ),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "stopping gracefully failed; stopping at once");
                    return self.stop_now().await;
                }
                None => {
                    tracing::warn!(id = self.id, "stopping at once, safe or not");
                    return self.stop_now().await;
                }
            }
        }
    }

    /// The partitions hosted here whose quorum depends on this node: with more than one
    /// voter, fewer than a majority of them would be left on other nodes that answer this
    /// node's liveness pings (which know a stopped peer within about a second; a peer not
    /// heard from yet counts as down). A single voter's partition cannot be kept by any
    /// wait, so it does not hold a stop up.
    fn unsafe_partitions(&self) -> Vec<u64> {
        let own = &self.advertised;
        self.host
            .list()
            .iter()
            .filter(|r| {
                let (voters, others_up) =
                    r.voter_addrs(|addr| addr != own.as_str() && self.host.peer_up(addr).unwrap_or(false));
                voters > 1 && others_up <= voters / 2
            })
            .map(|r| r.partition())
            .collect()
    }
}

/// Emits a [`RoleChange`] whenever a hosted replica's role differs from the last look;
/// ends when the host is gone.
async fn watch_roles(host: std::sync::Weak<Host>, tx: broadcast::Sender<RoleChange>) {
    let mut last: BTreeMap<u64, (u64, Role)> = BTreeMap::new();
    let mut tick = tokio::time::interval(ROLE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(host) = host.upgrade() else { return };
        let now: BTreeMap<u64, (u64, Role)> = host
            .list()
            .iter()
            .map(|r| (r.partition(), (r.id(), if r.is_primary() { Role::Primary } else { Role::Secondary })))
            .collect();
        drop(host);
        for (p, (replica, role)) in &now {
            let was = last.get(p).map_or(Role::Secondary, |(id, r)| if id == replica { *r } else { Role::Secondary });
            if was != *role {
                let _ = tx.send(RoleChange { partition: *p, replica: *replica, role: *role });
            }
        }
        for (p, (replica, role)) in &last {
            if *role == Role::Primary && now.get(p).is_none_or(|(id, _)| id != replica) {
                let _ = tx.send(RoleChange { partition: *p, replica: *replica, role: Role::Secondary });
            }
        }
        last = now;
    }
}
