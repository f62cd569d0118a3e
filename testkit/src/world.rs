//! One cluster test, two worlds: [`Cluster`] is what a cluster test needs from a running
//! cluster, and each world provides it.
//!
//! - [`InProcess`]: `weft_node::Node`s inside the test's process, each on its own thread
//!   and tokio runtime, on real loopback sockets with the same TLS certificates as the
//!   processes (the fast tier: no binary, no process start).
//! - [`Processes`]: `weft node` processes started from the binary ([`crate::local`]): the
//!   end-to-end tier.
//!
//! A test is written once as a function generic over [`Cluster`] and run in both
//! (`tests/worlds.rs`, `tests/replication.rs`). Both worlds start the same cluster: `n`
//! nodes, node i in UD `ud<i>` and FD `fd<i>`, the first three the seeds, raft at a 50 ms
//! heartbeat and a 300 ms election timeout, a 2 s down grace, fault injection on (links
//! are cut through the same `weft.testing.v1.Faults` service in both worlds), clients
//! acting as `root`. Or, with [`Options::standalone`], `n` nodes without seeds or a
//! cluster manager, whose replicas the harness opens ([`open_partition`]) and whose
//! clients call as the harness: the replication layer on its own.
//!
//! A crash is abrupt in both: a process gets SIGKILL; an in-process node's runtime stops
//! polling it and drops every task (its replicas' memory with them), without a graceful
//! step. A restart starts the node again on the same address, empty (volatile replicas),
//! with a new incarnation. What the in-process world cannot show is what only a process
//! boundary shows (argument parsing, signals, the binary's exit paths, and what a process
//! kill leaves on disk: an in-process crash cannot stop a durable log's writer thread
//! mid-write, so durable crash tests stay process-only, beside the simulated tier's power
//! cuts); the end-to-end tier keeps those.
//!
//! Depends on the node and client crates as any embedding would; nothing depends on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use weft_client::client::ClientConfig;
use weft_proto::v1 as pb;
use weft_proto::v1::node_admin_client::NodeAdminClient;
use weft_security::credentials::{Credentials, Holder};
use weft_security::{AuthChannel, ClientSecurity};

use crate::Error;
use crate::local::{self, LocalNode, Security, cluster_err};

pub use crate::local::{ELECTION_TIMEOUT, HEARTBEAT};
/// How long the manager waits before it replaces the replicas of a node it cannot reach.
pub const DOWN_GRACE: Duration = Duration::from_secs(2);

/// The cluster a test asks for, the same in both worlds.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes (the first three are seeds).
    pub nodes: usize,
    /// How long a move's new replica may make no progress before the manager gives the
    /// move up (`None`: the node's default; `weft node --move-stall-s`).
    pub move_stall: Option<Duration>,
    /// Standalone nodes: no seeds, no map, no cluster manager; the harness opens replicas
    /// through the node-admin service ([`open_partition`]) and clients call as the
    /// harness (node 0), as on `weft node` without `--seeds`.
    pub standalone: bool,
    /// Snapshot policy: a snapshot every so many log entries, keeping so many behind it
    /// (`None`: the node's default; `--snapshot-every`, `--keep-behind-snapshot`).
    pub snapshots: Option<(u64, u64)>,
}

impl Options {
    /// `nodes` managed nodes, everything else as a node starts by default.
    pub fn nodes(nodes: usize) -> Options {
        Options { nodes, move_stall: None, standalone: false, snapshots: None }
    }

    /// `nodes` standalone nodes (see [`Options::standalone`]).
    pub fn standalone(nodes: usize) -> Options {
        Options { standalone: true, ..Options::nodes(nodes) }
    }

    /// Moves given up after `stall` without progress.
    pub fn move_stall(self, stall: Duration) -> Options {
        Options { move_stall: Some(stall), ..self }
    }

    /// A snapshot every `every` log entries, `keep_behind` entries kept behind it.
    pub fn snapshots(self, every: u64, keep_behind: u64) -> Options {
        Options { snapshots: Some((every, keep_behind)), ..self }
    }
}

/// A running cluster, whichever world it runs in.
pub trait Cluster {
    /// `in-process` or `processes`, for messages.
    fn world(&self) -> &'static str;
    /// Node ids, in order.
    fn ids(&self) -> Vec<u64>;
    /// Every node's address (up or not), in id order.
    fn endpoints(&self) -> Vec<String>;
    /// How the cluster is secured (certificates for clients and the harness).
    fn security(&self) -> &Security;
    /// Whether its nodes are standalone ([`Options::standalone`]).
    fn standalone(&self) -> bool;
    /// Whether node `id` runs (it was not crashed, or was restarted since).
    fn up(&self, id: u64) -> bool;
    /// Stops node `id` abruptly; its in-memory state is gone.
    fn crash(&mut self, id: u64);
    /// Starts node `id` again on its address (after a crash, or kills it first).
    fn restart(&mut self, id: u64) -> Result<(), Error>;

    /// How a client calls the cluster: as `root` on a managed cluster, as the harness
    /// (node 0) on standalone nodes, which know no users.
    fn caller(&self) -> Result<ClientSecurity, Error> {
        if self.standalone() { self.security().harness() } else { self.security().root() }
    }
    /// Client settings as [`Cluster::caller`].
    fn client_config(&self) -> Result<ClientConfig, Error> {
        Ok(ClientConfig::secured(self.caller()?))
    }

    /// Node `id`'s address.
    fn addr(&self, id: u64) -> Result<String, Error> {
        let at = self.ids().iter().position(|i| *i == id).ok_or_else(|| cluster_err(format!("no node {id}")))?;
        Ok(self.endpoints()[at].clone())
    }
}

/// Cuts node `id`'s links to every other node, both ways, through fault injection
/// (the nodes' clients still reach every node).
pub async fn isolate(cluster: &impl Cluster, id: u64) -> Result<(), Error> {
    let own = cluster.addr(id)?;
    let others: Vec<String> = cluster.endpoints().into_iter().filter(|a| *a != own).collect();
    cut_links(cluster, &own, others.clone()).await?;
    for other in &others {
        cut_links(cluster, other, vec![own.clone()]).await?;
    }
    Ok(())
}

/// Restores every node's links.
pub async fn heal(cluster: &impl Cluster) -> Result<(), Error> {
    for addr in cluster.endpoints() {
        cut_links(cluster, &addr, Vec::new()).await?;
    }
    Ok(())
}

/// Cuts node `at`'s links to the node addresses `addrs` (an empty list restores them).
pub async fn cut_links(cluster: &impl Cluster, at: &str, addrs: Vec<String>) -> Result<(), Error> {
    local::cut_links(&cluster.caller()?, at, addrs).await
}

/// A node-admin client for node `id`, as the harness (node 0).
pub fn admin(cluster: &impl Cluster, id: u64) -> Result<NodeAdminClient<AuthChannel>, Error> {
    Ok(NodeAdminClient::new(cluster.security().channel(&cluster.addr(id)?)?))
}

/// The status of node `id`'s replica of `partition`, if it answers.
pub async fn status(cluster: &impl Cluster, id: u64, partition: u64) -> Option<pb::ReplicaStatus> {
    local::status_at(cluster.security(), &cluster.addr(id).ok()?, partition).await
}

/// Opens `partition` on the nodes `ids` (replica id = `base` + node id), initialized by the
/// first with all of them as voters (standalone nodes: [`Options::standalone`]).
pub async fn open_partition(cluster: &impl Cluster, ids: &[u64], partition: u64, base: u64) -> Result<(), Error> {
    let addrs = ids.iter().map(|id| cluster.addr(*id)).collect::<Result<Vec<_>, _>>()?;
    let nodes: Vec<(u64, &str)> = ids.iter().copied().zip(addrs.iter().map(String::as_str)).collect();
    local::open_partition_on(cluster.security(), &nodes, partition, base).await
}

/// Waits up to `timeout` until one of the running nodes among `ids` reports itself
/// primary of `partition`; returns that replica's id (the highest term's, if several do).
pub async fn primary(cluster: &impl Cluster, ids: &[u64], partition: u64, timeout: Duration) -> Result<u64, Error> {
    let addrs: Vec<String> = ids.iter().filter(|id| cluster.up(**id)).filter_map(|id| cluster.addr(*id).ok()).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    local::primary_among(cluster.security(), &addrs, partition, timeout).await
}

/// `weft node` processes on loopback: the end-to-end world.
pub struct Processes {
    nodes: Vec<LocalNode>,
    security: Security,
    standalone: bool,
}

impl Processes {
    /// Starts the nodes `options` asks for from the `weft` binary at `exe`.
    pub fn start(exe: &std::path::Path, options: &Options) -> Result<Processes, Error> {
        let n = options.nodes;
        let security = Security::shared()?;
        let mut flags: Vec<String> = vec!["--fault-injection".into()];
        if let Some((every, keep_behind)) = options.snapshots {
            flags.extend(["--snapshot-every".into(), every.to_string()]);
            flags.extend(["--keep-behind-snapshot".into(), keep_behind.to_string()]);
        }
        let nodes = if options.standalone {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            // Each binds a port of its own choosing and keeps it across restarts.
            let start = |id| LocalNode::start_secured(exe, id, "127.0.0.1:0", &flags, &security);
            (1..=n as u64).map(start).collect::<Result<Vec<_>, _>>()?
        } else {
            flags.extend(["--down-grace".into(), DOWN_GRACE.as_secs_f64().to_string()]);
            if let Some(stall) = options.move_stall {
                flags.extend(["--move-stall-s".into(), stall.as_secs_f64().to_string()]);
            }
            let addrs = local::free_addrs(n)?;
            local::start_managed(exe, &addrs, n, None, false, &security, |_| flags.clone())?
        };
        Ok(Processes { nodes, security, standalone: options.standalone })
    }

    fn node(&mut self, id: u64) -> Option<&mut LocalNode> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }
}

impl Cluster for Processes {
    fn world(&self) -> &'static str {
        "processes"
    }
    fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }
    fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }
    fn security(&self) -> &Security {
        &self.security
    }
    fn standalone(&self) -> bool {
        self.standalone
    }
    fn up(&self, id: u64) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.alive())
    }
    fn crash(&mut self, id: u64) {
        if let Some(n) = self.node(id) {
            n.kill();
        }
    }
    fn restart(&mut self, id: u64) -> Result<(), Error> {
        self.node(id).ok_or_else(|| cluster_err(format!("no node {id}")))?.restart()
    }
}

/// One in-process node: its configuration (to start it again) and, while it runs, the
/// thread that owns its runtime.
struct Resident {
    config: weft_node::NodeConfig,
    addr: String,
    running: Option<Running>,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// `weft_node::Node`s in this process: the fast world.
pub struct InProcess {
    nodes: BTreeMap<u64, Resident>,
    security: Security,
    standalone: bool,
}

impl InProcess {
    /// Starts the nodes `options` asks for, each on its own thread and runtime.
    pub fn start(options: &Options) -> Result<InProcess, Error> {
        // Standalone nodes need no one's address before they start: each binds a port of
        // its own choosing and keeps it across restarts.
        let addrs = match options.standalone {
            true => vec!["127.0.0.1:0".to_string(); options.nodes],
            false => local::free_addrs(options.nodes)?,
        };
        let security = Security::shared()?;
        let Security::Tls(pki) = &security else {
            return Err(cluster_err("the shared security is TLS"));
        };
        let seeds: Vec<String> = if options.standalone { Vec::new() } else { addrs.iter().take(3).cloned().collect() };
        let mut nodes = BTreeMap::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let listen: SocketAddr = addr.parse().map_err(cluster_err)?;
            let creds = Credentials::load(&pki.node_dir(id)?, Holder::Node { id: Some(id) }).map_err(cluster_err)?;
            let mut config = node_config(id, listen, seeds.clone(), creds);
            if let Some(stall) = options.move_stall {
                config.cluster.move_stall = stall;
            }
            if let Some((every, keep_behind)) = options.snapshots {
                config.raft.snapshot_every = every;
                config.raft.keep_behind_snapshot = keep_behind;
            }
            nodes.insert(id, Resident { config, addr: addr.clone(), running: None });
        }
        let mut cluster = InProcess { nodes, security, standalone: options.standalone };
        for id in cluster.ids() {
            cluster.restart(id)?;
        }
        Ok(cluster)
    }
}

fn node_config(id: u64, listen: SocketAddr, seeds: Vec<String>, creds: Arc<Credentials>) -> weft_node::NodeConfig {
    weft_node::NodeConfig {
        id,
        listen,
        raft: weft_replica::RaftSettings {
            heartbeat: HEARTBEAT,
            election_timeout: ELECTION_TIMEOUT,
            ..Default::default()
        },
        transport: Default::default(),
        limits: Default::default(),
        storage: Default::default(),
        cluster: weft_node::ClusterConfig {
            seeds,
            ud: format!("ud{id}"),
            fd: format!("fd{id}"),
            down_grace: DOWN_GRACE,
            ..Default::default()
        },
        metrics: None,
        security: weft_node::NodeSecurity { tls: Some(creds), fault_injection: true, ..Default::default() },
        network: None,
        restart: None,
    }
}

/// How long a node may take to bind its address.
const BIND_WITHIN: Duration = Duration::from_secs(20);

/// Runs one node on a thread of its own with its own runtime, until told to stop; the
/// runtime is then shut down, dropping every task the node spawned. Returns the address
/// it bound.
fn run(config: weft_node::NodeConfig) -> Result<(Running, SocketAddr), Error> {
    let id = config.id;
    let fail = |reason: String| Error::Start { id, reason };
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("weft-node-{id}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = bound_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                // A restarted node may find its port still held for a moment by the
                // runtime that just stopped; binding is retried briefly.
                let mut tries = 0;
                let node = loop {
                    match weft_node::Node::bind(config.clone()).await {
                        Ok(node) => break node,
                        Err(e) if tries < 50 => {
                            tries += 1;
                            tracing::debug!(id, error = %e, "bind failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => {
                            let _ = bound_tx.send(Err(e.to_string()));
                            return;
                        }
                    }
                };
                let _ = bound_tx.send(Ok(node.local_addr()));
                tokio::select! {
                    served = node.serve(std::future::pending()) => {
                        if let Err(e) = served {
                            tracing::error!(id, error = %e, "in-process node stopped serving");
                        }
                    }
                    _ = stopped => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(5));
        })
        .map_err(|e| fail(e.to_string()))?;
    match bound_rx.recv_timeout(BIND_WITHIN) {
        Ok(Ok(bound)) => Ok((Running { stop, thread }, bound)),
        Ok(Err(e)) => Err(fail(e)),
        Err(e) => Err(fail(format!("did not bind within {BIND_WITHIN:?}: {e}"))),
    }
}

impl Cluster for InProcess {
    fn world(&self) -> &'static str {
        "in-process"
    }
    fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }
    fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }
    fn security(&self) -> &Security {
        &self.security
    }
    fn standalone(&self) -> bool {
        self.standalone
    }
    fn up(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.running.is_some())
    }
    fn crash(&mut self, id: u64) {
        if let Some(running) = self.nodes.get_mut(&id).and_then(|n| n.running.take()) {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }
    fn restart(&mut self, id: u64) -> Result<(), Error> {
        self.crash(id);
        let node = self.nodes.get_mut(&id).ok_or_else(|| cluster_err(format!("no node {id}")))?;
        let (running, bound) = run(node.config.clone())?;
        node.config.listen = bound;
        node.addr = bound.to_string();
        node.running = Some(running);
        Ok(())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        for id in self.ids() {
            self.crash(id);
        }
    }
}
