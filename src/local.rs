//! Local `weft node` processes on loopback: how benchmarks and end-to-end tests start
//! nodes, open a partition on them and find its primary.
//!
//! A node is started with `--listen 127.0.0.1:0` and its bound address is read from the
//! one line it prints; it is SIGKILLed on [`LocalNode::kill`] and on drop. Nodes run with
//! a 50 ms heartbeat and a 300 ms election timeout; their log filter comes from
//! `WEFT_NODE_LOG` (default `error`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use weft_proto::v1 as pb;
use weft_proto::v1::node_admin_client::NodeAdminClient;

/// Why a local cluster could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A node process could not be started or did not report its address.
    #[error("starting node {id}: {reason}")]
    Start {
        /// Node id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// The cluster did not form or a call failed.
    #[error("{0}")]
    Cluster(String),
}

/// Any failure while driving the cluster, as a [`LocalError::Cluster`].
pub fn cluster_err(e: impl std::fmt::Display) -> LocalError {
    LocalError::Cluster(e.to_string())
}

/// One node process.
pub struct LocalNode {
    /// Node id.
    pub id: u64,
    /// The address it serves on.
    pub addr: String,
    child: Option<Child>,
    exe: PathBuf,
    extra: Vec<String>,
}

impl LocalNode {
    /// Starts `exe node` (the `weft` binary) with `extra` flags and waits for its address.
    pub fn start(exe: &Path, id: u64, extra: &[&str]) -> Result<LocalNode, LocalError> {
        Self::start_at(exe, id, "127.0.0.1:0", extra)
    }

    /// Starts `exe node` listening on `listen` with `extra` flags and waits for its address.
    pub fn start_at(exe: &Path, id: u64, listen: &str, extra: &[&str]) -> Result<LocalNode, LocalError> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr) = Self::spawn(exe, id, listen, &extra)?;
        Ok(LocalNode { id, addr, child: Some(child), exe: exe.to_path_buf(), extra })
    }

    /// Kills the process if it runs and starts it again on the same address with the same
    /// flags (so a durable node finds its data directory again).
    pub fn restart(&mut self) -> Result<(), LocalError> {
        self.kill();
        let (child, addr) = Self::spawn(&self.exe, self.id, &self.addr, &self.extra)?;
        debug_assert_eq!(addr, self.addr);
        self.child = Some(child);
        Ok(())
    }

    fn spawn(exe: &Path, id: u64, listen: &str, extra: &[String]) -> Result<(Child, String), LocalError> {
        let fail = |reason: String| LocalError::Start { id, reason };
        let mut child = Command::new(exe)
            .args(["node", "--id", &id.to_string(), "--listen", listen])
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300"])
            .args(extra)
            .env("WEFT_LOG", std::env::var("WEFT_NODE_LOG").unwrap_or_else(|_| "error".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        let stdout = child.stdout.take().ok_or_else(|| fail("no stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(|e| fail(e.to_string()))?;
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| {
                fail(if line.is_empty() {
                    "it exited before listening (its error is above)".into()
                } else {
                    format!("unexpected first line {line:?}")
                })
            })?
            .to_string();
        Ok((child, addr))
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, silent, until [`LocalNode::resume`].
    pub fn pause(&self) -> Result<(), LocalError> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// SIGCONT after [`LocalNode::pause`].
    pub fn resume(&self) -> Result<(), LocalError> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<(), LocalError> {
        let child =
            self.child.as_ref().ok_or_else(|| LocalError::Cluster(format!("node {} is not running", self.id)))?;
        let pid = i32::try_from(child.id()).map_err(cluster_err)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(cluster_err)
    }

    /// Whether it has not been killed.
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// A node-admin client.
    pub async fn admin(&self) -> Result<NodeAdminClient<Channel>, LocalError> {
        NodeAdminClient::connect(format!("http://{}", self.addr)).await.map_err(cluster_err)
    }

    /// The status of its replica of `partition`, if it answers.
    pub async fn status(&self, partition: u64) -> Option<pb::ReplicaStatus> {
        let mut a = self.admin().await.ok()?;
        a.status(pb::ReplicaStatusRequest { partition }).await.ok().map(|r| r.into_inner())
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` loopback addresses with ports free right now, for nodes that must know each
/// other's addresses before they start (seeds). Another process could take one before
/// the node binds it; the node then fails to start with a clear error.
pub fn free_addrs(n: usize) -> Result<Vec<String>, LocalError> {
    let listeners = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>();
    let listeners = listeners.map_err(cluster_err)?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.to_string()).map_err(cluster_err)).collect()
}

/// A single-config membership: replica id to node address.
pub fn membership(members: &[(u64, &str)]) -> pb::Membership {
    pb::Membership {
        configs: vec![pb::ReplicaSet { ids: members.iter().map(|(id, _)| *id).collect() }],
        nodes: members.iter().map(|(id, a)| (*id, a.to_string())).collect(),
    }
}

/// Opens `partition` on every node (replica id = `base` + node id), initialized by the
/// first node with all of them as voters.
pub async fn open_partition(nodes: &[&LocalNode], partition: u64, base: u64) -> Result<(), LocalError> {
    let members: Vec<(u64, &str)> = nodes.iter().map(|n| (base + n.id, n.addr.as_str())).collect();
    for (i, n) in nodes.iter().enumerate() {
        let initial = (i == 0).then(|| membership(&members));
        n.admin()
            .await?
            .open_replica(pb::OpenReplicaRequest { partition, replica: base + n.id, mode: 0, initial })
            .await
            .map_err(cluster_err)?;
    }
    Ok(())
}

/// Waits (polling every 20 ms, up to `timeout`) until a live node reports itself primary of
/// `partition`; returns that replica's id. When more than one does (a deposed primary that
/// has not heard of the new term yet), the one with the highest term wins.
pub async fn primary(nodes: &[&LocalNode], partition: u64, timeout: Duration) -> Result<u64, LocalError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut best: Option<(u64, u64)> = None;
        for n in nodes.iter().filter(|n| n.alive()) {
            if let Some(s) = n.status(partition).await
                && s.role == pb::Role::Primary as i32
                && best.is_none_or(|(term, _)| s.term > term)
            {
                best = Some((s.term, s.replica));
            }
        }
        if let Some((_, replica)) = best {
            return Ok(replica);
        }
        if Instant::now() >= deadline {
            return Err(LocalError::Cluster(format!("partition {partition} has no primary after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a managed cluster: node i (from 1) listens on `addrs[i - 1]` in UD `ud<i>` and
/// FD `fd<i>`, the first three are the seeds; with `data` node i keeps its files in
/// `data/node-<i>`, durable logs if `durable`. `extra(i)` gives node i's further flags.
pub fn start_managed(
    exe: &Path,
    addrs: &[String],
    uds: usize,
    data: Option<&Path>,
    durable: bool,
    extra: impl Fn(u64) -> Vec<String>,
) -> Result<Vec<LocalNode>, LocalError> {
    let seeds = addrs[..addrs.len().min(3)].join(",");
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let (ud, fd) = (format!("ud{}", i % uds.max(1) + 1), format!("fd{id}"));
        let mut flags: Vec<String> = ["--ud", &ud, "--fd", &fd, "--seeds", &seeds].map(String::from).to_vec();
        if let Some(d) = data {
            flags.extend(["--data-dir".into(), d.join(format!("node-{id}")).display().to_string()]);
        }
        if durable {
            flags.push("--durable".into());
        }
        flags.extend(extra(id));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        nodes.push(LocalNode::start_at(exe, id, addr, &flags)?);
    }
    Ok(nodes)
}

/// Waits until `nodes` nodes are up in the cluster map, creates `service` (unless it
/// exists) and waits until each of its partitions has a primary; `within` bounds each wait.
pub async fn ready_service(
    endpoints: &[String],
    nodes: usize,
    service: &str,
    partitions: u32,
    replicas: u32,
    within: Duration,
) -> Result<(), LocalError> {
    use crate::manager::view;
    use crate::routing::ServiceClient;
    let fetch = || async { ServiceClient::fetch_map(endpoints, Duration::from_secs(2)).await.ok() };
    let deadline = Instant::now() + within;
    let map = loop {
        if let Some(m) = fetch().await
            && view::nodes(&m).iter().filter(|n| n.state == "up").count() == nodes
        {
            break m;
        }
        if Instant::now() > deadline {
            return Err(cluster_err(format!(
                "the nodes did not all register with the cluster manager within {within:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !map.map.as_ref().is_some_and(|m| m.services.contains_key(service)) {
        let endpoint = endpoints.first().ok_or_else(|| cluster_err("no endpoints"))?;
        let mut c =
            pb::cluster_client::ClusterClient::connect(format!("http://{endpoint}")).await.map_err(cluster_err)?;
        let req = pb::CreateServiceRequest { name: service.into(), partitions, replicas };
        c.create_service(req).await.map_err(|s| cluster_err(format!("creating {service}: {}", s.message())))?;
    }
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = fetch().await {
            let parts = view::partitions(&m, Some(service));
            if !parts.is_empty() && parts.iter().all(|p| p.created && p.replicas.iter().any(|r| r.role == "primary")) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(cluster_err(format!("the {service} partitions did not all elect a primary within {within:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
