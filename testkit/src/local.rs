//! Local `weft node` processes on loopback: how benchmarks and end-to-end tests start
//! nodes, open a partition on them and find its primary.
//!
//! A node is started with `--listen 127.0.0.1:0` and its bound address is read from the
//! one line it prints; it is SIGKILLed on [`LocalNode::kill`] and on drop. Nodes run with
//! a 50 ms heartbeat and a 300 ms election timeout; their log filter comes from
//! `WEFT_NODE_LOG` (default `error`). `WEFT_NODE_WRAPPER`, when set, names a program
//! that starts each node in its place, given the node's executable and arguments (a heap
//! or CPU profiler's launcher, say); it must leave the node's stdout to the node.
//!
//! Nodes are secure as a real cluster's are ([`Security::Tls`]): a [`Pki`] makes the
//! cluster's CA, a certificate directory per node, and the client certificates. The
//! harness itself acts as node 0 (a node certificate no cluster node has) when it opens
//! replicas or reads their status through the node-admin service, which only nodes may
//! call; clients of a managed cluster act as `root`, the operator every new cluster has.
//! Processes in one test binary share one [`Pki`] ([`Security::shared`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use weft_proto::v1 as pb;
use weft_proto::v1::node_admin_client::NodeAdminClient;
use weft_security::credentials::{Credentials, Holder};
use weft_security::files::{self, CA_CERT, CA_KEY, NODE_CERT, NODE_KEY};
use weft_security::issue::{self, Ca, Validity};
use weft_security::{AuthChannel, ClientSecurity};

use weft_client::client::ClientConfig;

use crate::Error;

/// Raft heartbeat of every node the harness starts, in either world.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
/// Raft election timeout of every node the harness starts, in either world.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(300);

/// Any failure while driving the cluster, as a [`Error::Cluster`].
pub fn cluster_err(e: impl std::fmt::Display) -> Error {
    Error::Cluster(e.to_string())
}

/// A local cluster's certificates, in one directory laid out as `weft cert` lays it out:
/// `ca.crt`, `ca.key`, `client.NAME.crt`/`.key`, and `node-N/` (`ca.crt`, `node.crt`,
/// `node.key`) for each node, `harness/` for the harness's own node-0 certificate.
pub struct Pki {
    dir: PathBuf,
    ca: Ca,
    harness: OnceLock<Arc<Credentials>>,
    /// Held while certificate files are made, so that threads starting nodes at once make
    /// each file once.
    making: parking_lot::Mutex<()>,
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

impl Pki {
    /// A new CA and `root`'s client certificate in `dir` (created if missing).
    pub fn create(dir: &Path) -> Result<Pki, Error> {
        Self::create_in(dir, None)
    }

    /// The CA already in `dir` (`ca.crt` and `ca.key`, as [`Pki::create`] left them), or a
    /// new one.
    pub fn open_or_create(dir: &Path) -> Result<Pki, Error> {
        if !(dir.join(CA_CERT).exists() && dir.join(CA_KEY).exists()) {
            return Self::create(dir);
        }
        let ca = Ca::load(dir, None).map_err(cluster_err)?;
        let pki = Pki { dir: dir.to_path_buf(), ca, harness: OnceLock::new(), making: Default::default(), _temp: None };
        pki.client_files(weft_security::identity::DEFAULT_USER)?;
        Ok(pki)
    }

    /// [`Pki::create`] in a temporary directory, removed with the `Pki`.
    pub fn temporary() -> Result<Pki, Error> {
        let t = tempfile::tempdir().map_err(cluster_err)?;
        let dir = t.path().to_path_buf();
        Self::create_in(&dir, Some(t))
    }

    fn create_in(dir: &Path, temp: Option<tempfile::TempDir>) -> Result<Pki, Error> {
        files::ensure_dir(dir).map_err(cluster_err)?;
        let (ca, key) = Ca::create(Validity::days(issue::CA_DAYS)).map_err(cluster_err)?;
        files::write_key(&dir.join(CA_KEY), &key).map_err(cluster_err)?;
        files::write_cert(&dir.join(CA_CERT), &ca.cert_pem).map_err(cluster_err)?;
        let pki = Pki { dir: dir.to_path_buf(), ca, harness: OnceLock::new(), making: Default::default(), _temp: temp };
        pki.client_files(weft_security::identity::DEFAULT_USER)?;
        Ok(pki)
    }

    /// The directory (what `WEFT_CERTS_DIR` names for clients).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Node `id`'s certificate directory, made if missing (loopback names only).
    pub fn node_dir(&self, id: u64) -> Result<PathBuf, Error> {
        let dir = self.dir.join(format!("node-{id}"));
        let _making = self.making.lock();
        if !dir.join(NODE_CERT).exists() {
            let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
            let issued = self.ca.node(id, &hosts, Validity::days(issue::LEAF_DAYS)).map_err(cluster_err)?;
            files::ensure_dir(&dir).map_err(cluster_err)?;
            files::write_cert(&dir.join(CA_CERT), &self.ca.cert_pem).map_err(cluster_err)?;
            issue::write_pair(&dir, NODE_CERT, NODE_KEY, &issued, true).map_err(cluster_err)?;
        }
        Ok(dir)
    }

    /// Writes `client.USER.crt`/`.key` unless they exist.
    pub fn client_files(&self, user: &str) -> Result<(), Error> {
        let _making = self.making.lock();
        if !self.dir.join(files::client_cert(user)).exists() {
            let issued = self.ca.client(user, Validity::days(issue::LEAF_DAYS)).map_err(cluster_err)?;
            issue::write_pair(&self.dir, &files::client_cert(user), &files::client_key(user), &issued, true)
                .map_err(cluster_err)?;
        }
        Ok(())
    }

    /// TLS as user `user` (its certificate made if missing).
    pub fn user(&self, user: &str) -> Result<ClientSecurity, Error> {
        self.client_files(user)?;
        let creds = Credentials::load(&self.dir, Holder::Client { user: Some(user.into()) }).map_err(cluster_err)?;
        Ok(ClientSecurity::tls(creds))
    }

    /// TLS as the harness (node 0).
    pub fn harness(&self) -> Result<ClientSecurity, Error> {
        let _making = self.making.lock();
        if let Some(c) = self.harness.get() {
            return Ok(ClientSecurity::tls(c.clone()));
        }
        let dir = self.dir.join("harness");
        let issued = self.ca.harness(Validity::days(issue::LEAF_DAYS)).map_err(cluster_err)?;
        files::ensure_dir(&dir).map_err(cluster_err)?;
        files::write_cert(&dir.join(CA_CERT), &self.ca.cert_pem).map_err(cluster_err)?;
        issue::write_pair(&dir, NODE_CERT, NODE_KEY, &issued, true).map_err(cluster_err)?;
        let creds = Credentials::load(&dir, Holder::Node { id: Some(0) }).map_err(cluster_err)?;
        Ok(ClientSecurity::tls(self.harness.get_or_init(|| creds).clone()))
    }
}

/// How a local cluster is secured.
#[derive(Clone, Debug)]
pub enum Security {
    /// TLS with these certificates.
    Tls(Arc<Pki>),
    /// `--insecure` nodes, plaintext clients.
    Insecure,
}

impl Security {
    /// TLS with one [`Pki`] shared by everything this process starts without saying
    /// otherwise (made on first use in a temporary directory, kept for the process).
    pub fn shared() -> Result<Security, Error> {
        static SHARED: OnceLock<Arc<Pki>> = OnceLock::new();
        if let Some(p) = SHARED.get() {
            return Ok(Security::Tls(p.clone()));
        }
        let pki = Arc::new(Pki::temporary()?);
        Ok(Security::Tls(SHARED.get_or_init(|| pki).clone()))
    }

    /// TLS with a fresh [`Pki`] of its own, or `--insecure` nodes.
    pub fn new(tls: bool) -> Result<Security, Error> {
        Ok(if tls { Security::Tls(Arc::new(Pki::temporary()?)) } else { Security::Insecure })
    }

    /// The flags node `id` starts with.
    pub fn node_flags(&self, id: u64) -> Result<Vec<String>, Error> {
        Ok(match self {
            Security::Tls(p) => vec!["--certs-dir".into(), p.node_dir(id)?.display().to_string()],
            Security::Insecure => vec!["--insecure".into()],
        })
    }

    /// How the harness calls nodes (node 0's certificate).
    pub fn harness(&self) -> Result<ClientSecurity, Error> {
        match self {
            Security::Tls(p) => p.harness(),
            Security::Insecure => Ok(ClientSecurity::insecure()),
        }
    }

    /// How a client of a managed cluster calls it (as `root`).
    pub fn root(&self) -> Result<ClientSecurity, Error> {
        self.user(weft_security::identity::DEFAULT_USER)
    }

    /// How user `name` calls the cluster.
    pub fn user(&self, name: &str) -> Result<ClientSecurity, Error> {
        match self {
            Security::Tls(p) => p.user(name),
            Security::Insecure => Ok(ClientSecurity::insecure()),
        }
    }

    /// Client settings as `root`.
    pub fn root_config(&self) -> Result<ClientConfig, Error> {
        Ok(ClientConfig::secured(self.root()?))
    }

    /// Client settings as the harness (node 0).
    pub fn harness_config(&self) -> Result<ClientConfig, Error> {
        Ok(ClientConfig::secured(self.harness()?))
    }

    /// A lazily connecting channel to `addr` as the harness.
    pub fn channel(&self, addr: &str) -> Result<AuthChannel, Error> {
        channel(&self.harness()?, addr)
    }
}

/// A lazily connecting channel to `addr`, secured by `security`.
pub fn channel(security: &ClientSecurity, addr: &str) -> Result<AuthChannel, Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(cluster_err)?;
    Ok(security.wrap(security.connect_lazy(endpoint, Duration::from_secs(2))))
}

/// Cuts node `at`'s links to the node addresses `addrs` (an empty list restores them)
/// through fault injection (`weft.testing.v1.Faults`, served by a node started with
/// `--fault-injection` to operators).
pub async fn cut_links(security: &ClientSecurity, at: &str, addrs: Vec<String>) -> Result<(), Error> {
    let mut faults = weft_proto::testing::v1::faults_client::FaultsClient::new(channel(security, at)?);
    let cut = weft_proto::testing::v1::CutLinksRequest { addrs };
    faults.cut_links(cut).await.map_err(|s| cluster_err(s.message()))?;
    Ok(())
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
    /// Variables set in its environment (kept across restarts).
    env: Vec<(String, String)>,
    /// How the harness calls it.
    security: Security,
}

impl LocalNode {
    /// Starts `exe node` (the `weft` binary) with `extra` flags and waits for its address;
    /// secured by the shared [`Pki`] unless `extra` says `--insecure`.
    pub fn start(exe: &Path, id: u64, extra: &[&str]) -> Result<LocalNode, Error> {
        Self::start_at(exe, id, "127.0.0.1:0", extra)
    }

    /// Starts `exe node` listening on `listen` with `extra` flags and waits for its address;
    /// secured by the shared [`Pki`] unless `extra` says `--insecure`.
    pub fn start_at(exe: &Path, id: u64, listen: &str, extra: &[&str]) -> Result<LocalNode, Error> {
        let security = if extra.contains(&"--insecure") { Security::Insecure } else { Security::shared()? };
        let extra: Vec<&str> = extra.iter().copied().filter(|f| *f != "--insecure").collect();
        Self::start_secured(exe, id, listen, &extra, &security)
    }

    /// Starts `exe node` listening on `listen`, secured by `security`, with `extra` flags.
    pub fn start_secured(
        exe: &Path,
        id: u64,
        listen: &str,
        extra: &[&str],
        security: &Security,
    ) -> Result<LocalNode, Error> {
        Self::start_with_env(exe, id, listen, extra, security, &[])
    }

    /// [`LocalNode::start_secured`] with `env` set in the node's environment, now and at
    /// every restart (a backup location's credentials, say).
    pub fn start_with_env(
        exe: &Path,
        id: u64,
        listen: &str,
        extra: &[&str],
        security: &Security,
        env: &[(&str, &str)],
    ) -> Result<LocalNode, Error> {
        let mut flags = security.node_flags(id)?;
        flags.extend(extra.iter().map(|s| s.to_string()));
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, addr) = Self::spawn(exe, id, listen, &flags, &env)?;
        Ok(LocalNode {
            id,
            addr,
            child: Some(child),
            exe: exe.to_path_buf(),
            extra: flags,
            env,
            security: security.clone(),
        })
    }

    /// How it is secured.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Kills the process if it runs and starts it again on the same address with the same
    /// flags (so a durable node finds its data directory again).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        let (child, addr) = Self::spawn(&self.exe, self.id, &self.addr, &self.extra, &self.env)?;
        debug_assert_eq!(addr, self.addr);
        self.child = Some(child);
        Ok(())
    }

    fn spawn(
        exe: &Path,
        id: u64,
        listen: &str,
        extra: &[String],
        env: &[(String, String)],
    ) -> Result<(Child, String), Error> {
        let fail = |reason: String| Error::Start { id, reason };
        let mut command = match std::env::var_os("WEFT_NODE_WRAPPER") {
            Some(wrapper) => {
                let mut command = Command::new(wrapper);
                command.arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args(["node", "--id", &id.to_string(), "--listen", listen])
            .arg("--heartbeat-ms")
            .arg(HEARTBEAT.as_millis().to_string())
            .arg("--election-timeout-ms")
            .arg(ELECTION_TIMEOUT.as_millis().to_string())
            .args(extra)
            .env("WEFT_LOG", std::env::var("WEFT_NODE_LOG").unwrap_or_else(|_| "error".into()))
            // The caller's client settings are not the node's: its flags say all.
            .env_remove("WEFT_CERTS_DIR")
            .env_remove("WEFT_USER")
            .env_remove("WEFT_TOKEN")
            .envs(env.iter().map(|(k, v)| (k, v)))
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
    pub fn pause(&self) -> Result<(), Error> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// SIGCONT after [`LocalNode::pause`].
    pub fn resume(&self) -> Result<(), Error> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<(), Error> {
        let child = self.child.as_ref().ok_or_else(|| Error::Cluster(format!("node {} is not running", self.id)))?;
        let pid = i32::try_from(child.id()).map_err(cluster_err)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(cluster_err)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has not been killed.
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// A channel to it, as the harness (node 0).
    pub fn channel(&self) -> Result<AuthChannel, Error> {
        self.security.channel(&self.addr)
    }

    /// A node-admin client, as the harness (node 0).
    pub async fn admin(&self) -> Result<NodeAdminClient<AuthChannel>, Error> {
        Ok(NodeAdminClient::new(self.channel()?))
    }

    /// The status of its replica of `partition`, if it answers.
    pub async fn status(&self, partition: u64) -> Option<pb::ReplicaStatus> {
        status_at(&self.security, &self.addr, partition).await
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` loopback addresses with ports free right now, for nodes that must know each
/// other's addresses before they start (seeds).
///
/// The ports are drawn at random from below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), never from it: a port the kernel hands out
/// for `bind(0)` is also the one it hands to the next outgoing connection of any process,
/// so a node given such a port could find it taken by some other node's client socket
/// before it binds (CI saw exactly that). Below the range only another caller of this
/// function can take it, and the random draw over some 20,000 ports makes that rare;
/// the node then fails to start with a clear error. Each port is checked free by binding
/// it, and all `n` are held until the last is chosen, so they are distinct.
pub fn free_addrs(n: usize) -> Result<Vec<String>, Error> {
    use rand::Rng;
    const LOWEST: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32_768);
    let mut rng = rand::rng();
    let mut bind = || {
        // No room below the ephemeral range: what the kernel gives.
        if ephemeral_low <= LOWEST + 1_000 {
            return std::net::TcpListener::bind("127.0.0.1:0");
        }
        let mut tried = Err(std::io::Error::other("no port tried"));
        for _ in 0..200 {
            tried = std::net::TcpListener::bind(("127.0.0.1", rng.random_range(LOWEST..ephemeral_low)));
            if tried.is_ok() {
                break;
            }
        }
        tried
    };
    let held = (0..n).map(|_| bind()).collect::<Result<Vec<_>, _>>().map_err(cluster_err)?;
    held.iter().map(|l| l.local_addr().map(|a| a.to_string()).map_err(cluster_err)).collect()
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
pub async fn open_partition(nodes: &[&LocalNode], partition: u64, base: u64) -> Result<(), Error> {
    let Some(first) = nodes.first() else { return Ok(()) };
    let members: Vec<(u64, &str)> = nodes.iter().map(|n| (n.id, n.addr.as_str())).collect();
    open_partition_on(&first.security, &members, partition, base).await
}

/// Opens `partition` on the nodes `nodes` names (node id, address), replica id = `base` +
/// node id, initialized by the first with all of them as voters; calls as the harness.
pub async fn open_partition_on(
    security: &Security,
    nodes: &[(u64, &str)],
    partition: u64,
    base: u64,
) -> Result<(), Error> {
    let members: Vec<(u64, &str)> = nodes.iter().map(|(id, addr)| (base + id, *addr)).collect();
    for (i, (id, addr)) in nodes.iter().enumerate() {
        let initial = (i == 0).then(|| membership(&members));
        NodeAdminClient::new(security.channel(addr)?)
            .open_replica(pb::OpenReplicaRequest { partition, replica: base + id, mode: 0, initial, staged: false })
            .await
            .map_err(cluster_err)?;
    }
    Ok(())
}

/// Waits (polling every 20 ms, up to `timeout`) until a live node reports itself primary of
/// `partition`; returns that replica's id. When more than one does (a deposed primary that
/// has not heard of the new term yet), the one with the highest term wins.
pub async fn primary(nodes: &[&LocalNode], partition: u64, timeout: Duration) -> Result<u64, Error> {
    let Some(first) = nodes.first() else { return Err(cluster_err("no nodes to find a primary among")) };
    let alive: Vec<&str> = nodes.iter().filter(|n| n.alive()).map(|n| n.addr.as_str()).collect();
    primary_among(&first.security, &alive, partition, timeout).await
}

/// [`primary`] among the nodes at `addrs`, called as the harness.
pub async fn primary_among(
    security: &Security,
    addrs: &[&str],
    partition: u64,
    timeout: Duration,
) -> Result<u64, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut best: Option<(u64, u64)> = None;
        for addr in addrs {
            if let Some(s) = status_at(security, addr, partition).await
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
            return Err(Error::Cluster(format!("partition {partition} has no primary after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of the replica of `partition` on the node at `addr`, if it answers the
/// harness.
pub async fn status_at(security: &Security, addr: &str, partition: u64) -> Option<pb::ReplicaStatus> {
    let mut admin = NodeAdminClient::new(security.channel(addr).ok()?);
    admin.status(pb::ReplicaStatusRequest { partition }).await.ok().map(|r| r.into_inner())
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
    security: &Security,
    extra: impl Fn(u64) -> Vec<String>,
) -> Result<Vec<LocalNode>, Error> {
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
        nodes.push(LocalNode::start_secured(exe, id, addr, &flags, security)?);
    }
    Ok(nodes)
}

pub use weft_client::routing::ready_service;
