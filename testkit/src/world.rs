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
//! (`tests/worlds.rs`). Both worlds start the same cluster: `n` nodes, node i in UD
//! `ud<i>` and FD `fd<i>`, the first three the seeds, raft at a 50 ms heartbeat and a
//! 300 ms election timeout, a 2 s down grace, fault injection on (links are cut through
//! the same `weft.testing.v1.Faults` service in both worlds), clients acting as `root`.
//!
//! A crash is abrupt in both: a process gets SIGKILL; an in-process node's runtime stops
//! polling it and drops every task (its replicas' memory with them), without a graceful
//! step. A restart starts the node again on the same address, empty (volatile replicas),
//! with a new incarnation. What the in-process world cannot show is what only a process
//! boundary shows (argument parsing, signals, the binary's exit paths); the end-to-end
//! tier keeps those.
//!
//! Depends on the node and client crates as any embedding would; nothing depends on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use weft_client::client::ClientConfig;
use weft_security::credentials::{Credentials, Holder};

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
}

impl Options {
    /// `nodes` nodes, everything else as a node starts by default.
    pub fn nodes(nodes: usize) -> Options {
        Options { nodes, move_stall: None }
    }

    /// Moves given up after `stall` without progress.
    pub fn move_stall(self, stall: Duration) -> Options {
        Options { move_stall: Some(stall), ..self }
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
    /// Stops node `id` abruptly; its in-memory state is gone.
    fn crash(&mut self, id: u64);
    /// Starts node `id` again on its address (after a crash, or kills it first).
    fn restart(&mut self, id: u64) -> Result<(), Error>;

    /// Client settings as `root`.
    fn client_config(&self) -> Result<ClientConfig, Error> {
        self.security().root_config()
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
    local::cut_links(&cluster.security().root()?, at, addrs).await
}

/// `weft node` processes on loopback: the end-to-end world.
pub struct Processes {
    nodes: Vec<LocalNode>,
    security: Security,
}

impl Processes {
    /// Starts the nodes `options` asks for from the `weft` binary at `exe`.
    pub fn start(exe: &std::path::Path, options: &Options) -> Result<Processes, Error> {
        let n = options.nodes;
        let addrs = local::free_addrs(n)?;
        let security = Security::shared()?;
        let extra = |_| {
            let mut flags =
                vec!["--down-grace".into(), DOWN_GRACE.as_secs_f64().to_string(), "--fault-injection".into()];
            if let Some(stall) = options.move_stall {
                flags.extend(["--move-stall-s".into(), stall.as_secs_f64().to_string()]);
            }
            flags
        };
        let nodes = local::start_managed(exe, &addrs, n, None, false, &security, extra)?;
        Ok(Processes { nodes, security })
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
}

impl InProcess {
    /// Starts the nodes `options` asks for, each on its own thread and runtime.
    pub fn start(options: &Options) -> Result<InProcess, Error> {
        let addrs = local::free_addrs(options.nodes)?;
        let security = Security::shared()?;
        let Security::Tls(pki) = &security else {
            return Err(cluster_err("the shared security is TLS"));
        };
        let seeds: Vec<String> = addrs.iter().take(3).cloned().collect();
        let mut nodes = BTreeMap::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let listen: SocketAddr = addr.parse().map_err(cluster_err)?;
            let creds = Credentials::load(&pki.node_dir(id)?, Holder::Node { id: Some(id) }).map_err(cluster_err)?;
            let mut config = node_config(id, listen, seeds.clone(), creds);
            if let Some(stall) = options.move_stall {
                config.cluster.move_stall = stall;
            }
            nodes.insert(id, Resident { config, addr: addr.clone(), running: None });
        }
        let mut cluster = InProcess { nodes, security };
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
/// runtime is then shut down, dropping every task the node spawned.
fn run(config: weft_node::NodeConfig) -> Result<Running, Error> {
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
        Ok(Ok(_)) => Ok(Running { stop, thread }),
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
    fn crash(&mut self, id: u64) {
        if let Some(running) = self.nodes.get_mut(&id).and_then(|n| n.running.take()) {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }
    fn restart(&mut self, id: u64) -> Result<(), Error> {
        self.crash(id);
        let node = self.nodes.get_mut(&id).ok_or_else(|| cluster_err(format!("no node {id}")))?;
        node.running = Some(run(node.config.clone())?);
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
