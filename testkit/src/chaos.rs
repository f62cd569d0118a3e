//! `weft chaos`: real `weft node` processes, concurrent clients and injected faults, with
//! the clients' history checked for linearizability at the end.
//!
//! The run starts `nodes` nodes (one UD and FD each, the first three seeds) and a service
//! of `partitions` x `replicas`. `clients` tasks, each with its own session, run reads
//! (50%), writes (30%) and compare-and-sets (20%) on `keys` keys; every write carries a
//! value id unique to the run. A compare-and-set expects the value its client last saw
//! and is sent as a put conditioned on that record's version (or on absence): values are
//! unique per write, so "version is v's" and "value is v" are the same condition.
//!
//! Meanwhile a seeded schedule injects one fault at a time, 1 to 3 s apart:
//! - `kill`: SIGKILL a random node, restart it 0.5 to 2 s later;
//! - `kill_primary`: the same for the node holding a random partition's primary;
//! - `pause`: SIGSTOP a node for 1 to 2.5 s (the election timeout is 0.3 s), then SIGCONT;
//! - `move_primary`: the cluster manager hands a partition's primary to another replica;
//! - `move_secondary`: the cluster manager moves a secondary to another node (a new
//!   replica built by snapshot while the clients write, then the old one removed);
//! - `drain`: a node drained until it holds no replica, then activated again;
//! - `cluster_restart` (durable mode, once, mid-run): every node SIGKILLed and restarted;
//! - `upgrade_walk` (durable mode, once, three quarters in): `weft ctl upgrade --apply`,
//!   every node restarted in place one upgrade domain at a time, waited for to the end.
//!   A durable run does both of these even when earlier faults leave no time for them
//!   before `--seconds` is up (the run then ends after them), and asks for the walk again
//!   while the manager refuses it (a node still down after the restart);
//! - `partition_one`, `partition_halves`, `partition_ring`: for 2 to 4 s, one node cut off
//!   from the others; the nodes split in two (the larger half keeps a quorum); or a ring
//!   in which each node reaches only its two neighbours. Links are cut inside each node's
//!   transport (`weft.testing.v1.Faults`, served because the nodes start with
//!   `--fault-injection`), both directions; clients still reach every node,
//!   so a cut-off primary that kept answering would show up as a stale read.
//!
//! With [`ChaosConfig::compose`] the nodes are a compose cluster's containers instead
//! (`deploy/chaos.sh`, [`crate::docker`]), and the same schedule lands on real hosts:
//! `kill` is `docker kill` and `docker start`, `pause` is `docker pause`, the partitions cut
//! links with iptables inside each container's network namespace (the host's clients still
//! reach every node), `netem` (drawn only where the kernel has it) adds 20 to 150 ms of
//! delay and 1 to 9% loss to one node for 2 to 5 s, and `upgrade_walk` replaces every
//! container in turn (stopped gracefully, a new one started on its volume), waiting for
//! the cluster to be whole after each.
//!
//! After each fault heals, the schedule waits until the cluster manager reports every
//! partition whole again (all replicas up, one primary, no move in flight): in volatile
//! mode a restarted node comes back empty and its replicas are rebuilt, and a second loss
//! before that would lose data by design. Whole includes the cluster map's own group:
//! every seed hosts a map replica that is a voter, so in volatile mode a seed restarted
//! empty has had its map replica rebuilt (`manager::map_group`) before the next fault.
//!
//! At the end the nodes are all running, one more linearizable read of every key joins
//! the history, and [`crate::linearize::check`] decides. `lost_acked_writes` counts
//! acknowledged writes that the final value proves overwritten by nothing: writes invoked
//! after the final value's writer had returned (or, if the key ended absent, any).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use weft_proto::v1 as pb;

use crate::Error;
use crate::docker::Containers;
use crate::linearize::{self, Anomaly, Op, OpKind, Outcome};
use crate::local::{LocalNode, Pki, Security, channel, cluster_err, free_addrs, start_managed, status_at};
use weft_client::client::{ClientConfig, ClientError};
use weft_client::routing::ServiceClient;
use weft_node::{MAP_PARTITION, view};
use weft_security::AuthChannel;

pub(crate) const SERVICE: &str = "chaos";
pub(crate) const TABLE: &str = "default";
/// The many-partition service most of whose groups are quiesced at any moment: one
/// sparse client touches one of its keys at a time, with pauses, so each of its
/// operations wakes a group that had been idle, and the faults land on quiesced groups.
pub(crate) const IDLE_SERVICE: &str = "chaos-idle";
/// Key ids from here on are the idle service's (the checker's keys are plain numbers).
pub(crate) const IDLE_KEYS_FROM: u64 = 1 << 32;
/// The sparse client's pause between operations, at least and at most: with one key per
/// idle partition, a key waits far longer than the 3 s after which an idle group quiesces.
const SPARSE_PAUSE_MS: (u64, u64) = (200, 2_000);

/// The service a key id belongs to.
pub(crate) fn service_of(key: u64) -> &'static str {
    if key >= IDLE_KEYS_FROM { IDLE_SERVICE } else { SERVICE }
}

/// Which keys a client works on, and whether it pauses between operations.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    /// Key ids (see [`service_of`]).
    pub(crate) keys: std::ops::Range<u64>,
    /// Sparse: a random pause in [`SPARSE_PAUSE_MS`] before each operation.
    pub(crate) sparse: bool,
}

impl Workload {
    /// The shared service's `keys` keys, back to back.
    pub(crate) fn dense(keys: u64) -> Self {
        Workload { keys: 0..keys, sparse: false }
    }

    /// One key per idle partition, with pauses.
    pub(crate) fn idle(partitions: u32) -> Self {
        Workload { keys: IDLE_KEYS_FROM..IDLE_KEYS_FROM + u64::from(partitions), sparse: true }
    }
}

/// What a chaos run does.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Seconds of load and faults.
    pub seconds: f64,
    /// Node processes.
    pub nodes: u64,
    /// Seed of the fault schedule and the clients' choices.
    pub seed: u64,
    /// Durable log mode (else volatile).
    pub durable: bool,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients share.
    pub keys: u64,
    /// Partitions of the service.
    pub partitions: u32,
    /// Replicas per partition.
    pub replicas: u32,
    /// TLS between the nodes and for the clients (as `root`); false starts `--insecure`
    /// nodes.
    pub tls: bool,
    /// Partitions of the idle service ([`IDLE_SERVICE`]; 0: none), touched by one sparse
    /// client.
    pub idle_partitions: u32,
    /// Run against a compose cluster's containers instead of starting node processes.
    pub compose: Option<ComposeTarget>,
}

/// A compose cluster already up (`deploy/up.sh`), whose containers the faults work on
/// ([`crate::docker`]). Its nodes' durability is the compose file's; `nodes` must match.
#[derive(Clone, Debug)]
pub struct ComposeTarget {
    /// `deploy/compose.yaml`.
    pub compose_file: PathBuf,
    /// The certificates `deploy/up.sh` made: the CA (with its key, for the harness's own
    /// certificate) and root's client certificate.
    pub certs_dir: PathBuf,
    /// The nodes' published gRPC ports, node 1 first.
    pub endpoints: Vec<String>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            seconds: 60.0,
            nodes: 5,
            seed: 1,
            durable: true,
            clients: 8,
            keys: 16,
            partitions: 4,
            replicas: 4,
            tls: true,
            idle_partitions: 16,
            compose: None,
        }
    }
}

/// What a run saw and the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    /// `durable` or `volatile`.
    pub mode: &'static str,
    /// The seed.
    pub seed: u64,
    /// Operations invoked (final reads included).
    pub ops: u64,
    /// Of them, operations on the idle service's keys: each woke a group that had
    /// most likely quiesced.
    pub idle_ops: u64,
    /// Operations with a definite answer.
    pub ok: u64,
    /// Operations that definitely did not happen (a read that got no answer, a refusal).
    pub failed: u64,
    /// Writes and compare-and-sets whose outcome is unknown.
    pub indeterminate: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Every fault: kind, target, when it started and when the cluster was whole again
    /// (nanoseconds on the history's clock), to read an anomaly's window against.
    pub timeline: Vec<FaultEvent>,
    /// The checker's verdict.
    pub linearizable: bool,
    /// Acknowledged writes the final state proves lost.
    pub lost_acked_writes: u64,
    /// Keys the checker could neither prove nor refute within its budget.
    pub undecided_keys: Vec<u64>,
    /// On failure: the smallest window of history that shows the anomaly.
    pub anomaly: Option<Anomaly>,
}

/// One injected fault.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    /// Its kind.
    pub kind: String,
    /// The node or partition it hit (0: the whole cluster).
    pub target: u64,
    /// When it started.
    pub start_ns: u64,
    /// When the cluster was whole again.
    pub whole_ns: u64,
}

/// The nodes the faults work on.
enum Fleet {
    /// `weft node` processes started by the run.
    Local(Vec<LocalNode>),
    /// A compose cluster's containers.
    Docker(Containers),
}

struct Cluster {
    fleet: Fleet,
    endpoints: Vec<String>,
    seeds: usize,
    /// How the clients and the schedule call the nodes: as `root`, an operator.
    root: ClientConfig,
    /// The certificates (a run's own are removed after the nodes are killed, when the
    /// cluster drops).
    security: Security,
    /// Latency and loss can be injected (containers on a kernel with netem).
    netem: bool,
}

impl Cluster {
    fn start(exe: &Path, cfg: &ChaosConfig, data: Option<&Path>) -> Result<Cluster, Error> {
        let addrs = free_addrs(cfg.nodes as usize)?;
        let seeds = addrs.len().min(3);
        let security = Security::new(cfg.tls)?;
        // Links are cut through the `Faults` service, which only this flag serves.
        let extra = |_| vec!["--down-grace".into(), "2".into(), "--fault-injection".into()];
        let nodes = start_managed(exe, &addrs, addrs.len(), data, data.is_some(), &security, extra)?;
        let root = ClientConfig { security: security.root()?, ..client_config() };
        Ok(Cluster { fleet: Fleet::Local(nodes), endpoints: addrs, seeds, root, security, netem: false })
    }

    /// The compose cluster `target` names, already up.
    async fn attach(cfg: &ChaosConfig, target: &ComposeTarget) -> Result<Cluster, Error> {
        if target.endpoints.len() as u64 != cfg.nodes {
            return Err(Error::Config("--nodes must match the compose cluster's node count"));
        }
        let security = Security::Tls(Arc::new(Pki::open_or_create(&target.certs_dir)?));
        let root = ClientConfig { security: security.root()?, ..client_config() };
        let containers = Containers::new(&target.compose_file, target.endpoints.len());
        containers.cuts_available().await?;
        let netem = containers.netem_available().await;
        if !netem {
            tracing::warn!("latency and loss are not injected: tc netem does not work here");
        }
        let seeds = target.endpoints.len().min(3);
        Ok(Cluster {
            fleet: Fleet::Docker(containers),
            endpoints: target.endpoints.clone(),
            seeds,
            root,
            security,
            netem,
        })
    }

    fn len(&self) -> usize {
        match &self.fleet {
            Fleet::Local(n) => n.len(),
            Fleet::Docker(c) => c.len(),
        }
    }

    /// SIGKILLs node `i` (0-based).
    async fn kill(&mut self, i: usize) -> Result<(), Error> {
        match &mut self.fleet {
            Fleet::Local(n) => {
                n[i].kill();
                Ok(())
            }
            Fleet::Docker(c) => c.kill(i).await,
        }
    }

    /// Starts node `i` again after [`Cluster::kill`], on its data.
    async fn restart(&mut self, i: usize) -> Result<(), Error> {
        match &mut self.fleet {
            Fleet::Local(n) => n[i].restart(),
            Fleet::Docker(c) => c.start(i).await,
        }
    }

    async fn pause(&self, i: usize) -> Result<(), Error> {
        match &self.fleet {
            Fleet::Local(n) => n[i].pause(),
            Fleet::Docker(c) => c.pause(i).await,
        }
    }

    async fn resume(&self, i: usize) -> Result<(), Error> {
        match &self.fleet {
            Fleet::Local(n) => n[i].resume(),
            Fleet::Docker(c) => c.resume(i).await,
        }
    }

    /// Waits until every node is up in the map and every partition of the service is
    /// whole: its replicas all primary or secondary, exactly one primary, no move in flight.
    async fn wait_whole(&self, replicas: usize, within: Duration) -> Result<(), Error> {
        self.wait_whole_but(replicas, within, None).await
    }

    /// [`Cluster::wait_whole`], with `draining` allowed to be draining and required to
    /// hold no replica.
    async fn wait_whole_but(&self, replicas: usize, within: Duration, draining: Option<u64>) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no map yet");
        loop {
            if let Ok(m) = ServiceClient::fetch_map(&self.root, &self.endpoints, Duration::from_secs(2)).await {
                let nodes = view::nodes(&m);
                let parts = view::partitions(&m, Some(SERVICE));
                let down: Vec<u64> = nodes
                    .iter()
                    .filter(|n| if Some(n.id) == draining { n.replicas > 0 } else { n.state != "up" })
                    .map(|n| n.id)
                    .collect();
                let broken: Vec<u64> = parts
                    .iter()
                    .filter(|p| {
                        !p.created
                            || p.moving.is_some()
                            || p.replicas.len() != replicas
                            || p.replicas.iter().filter(|r| r.role == "primary").count() != 1
                            || p.replicas.iter().any(|r| r.role != "primary" && r.role != "secondary")
                    })
                    .map(|p| p.id)
                    .collect();
                let map_group = self.map_group_whole().await;
                if nodes.len() == self.len()
                    && down.is_empty()
                    && !parts.is_empty()
                    && broken.is_empty()
                    && map_group.is_ok()
                {
                    return Ok(());
                }
                // The broken partitions as the map shows them (each replica's raft view
                // included): what a stuck run leaves for its reader.
                let shown: Vec<&view::PartitionView> = parts.iter().filter(|p| broken.contains(&p.id)).collect();
                let shown = serde_json::to_string(&shown).unwrap_or_default();
                let map_group = map_group.err().unwrap_or_default();
                last = format!("nodes not up: {down:?}; partitions not whole: {broken:?} {shown} {map_group}");
            }
            if Instant::now() > deadline {
                return Err(Error::Stuck(format!("the cluster was not whole within {within:?}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether every seed hosts a voter of the cluster map's group, the group has one
    /// voter per seed and is in no joint configuration; else what is missing.
    async fn map_group_whole(&self) -> Result<(), String> {
        for (i, addr) in self.endpoints[..self.seeds].iter().enumerate() {
            let seed = i + 1;
            let s = status_at(&self.security, addr, MAP_PARTITION)
                .await
                .ok_or(format!("seed {seed} hosts no map replica"))?;
            let configs = s.membership.map(|m| m.configs).unwrap_or_default();
            let whole = configs.len() == 1 && configs[0].ids.len() == self.seeds && configs[0].ids.contains(&s.replica);
            if !whole {
                return Err(format!("seed {seed}'s map replica {} sees voters {configs:?}", s.replica));
            }
        }
        Ok(())
    }

    /// Waits until the cluster map has no upgrade walk in flight.
    async fn wait_walk(&self, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(m) = ServiceClient::fetch_map(&self.root, &self.endpoints, Duration::from_secs(2)).await
                && m.map.as_ref().is_some_and(|m| m.upgrade.is_none())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Stuck(format!("the upgrade walk did not finish within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One partition, picked by `pick`, with its primary's node and a secondary's node.
    async fn partition(&self, pick: usize) -> Option<(u64, u64, u64)> {
        let m = ServiceClient::fetch_map(&self.root, &self.endpoints, Duration::from_secs(2)).await.ok()?;
        let parts = view::partitions(&m, Some(SERVICE));
        let p = parts.get(pick % parts.len().max(1))?;
        let primary = p.replicas.iter().find(|r| r.role == "primary")?.node;
        let secondaries: Vec<u64> = p.replicas.iter().filter(|r| r.role == "secondary").map(|r| r.node).collect();
        let secondary = *secondaries.get(pick % secondaries.len().max(1))?;
        Some((p.id, primary, secondary))
    }

    /// Cuts the links between nodes that `reach` says cannot talk (indexes into the node
    /// list, both directions decided by the caller); `reach = |_, _| true` heals.
    async fn cut(&self, reach: impl Fn(usize, usize) -> bool) -> Result<(), Error> {
        match &self.fleet {
            Fleet::Local(nodes) => {
                for (i, node) in nodes.iter().enumerate() {
                    let addrs: Vec<String> = (0..nodes.len())
                        .filter(|&j| j != i && !reach(i, j))
                        .map(|j| self.endpoints[j].clone())
                        .collect();
                    crate::local::cut_links(&self.root.security, &node.addr, addrs).await?;
                }
                Ok(())
            }
            Fleet::Docker(c) => c.cut(reach).await,
        }
    }

    /// Sends one operator command through node `via`; false if it was refused or failed.
    async fn ctl<F, Fut>(&self, via: usize, f: F) -> bool
    where
        F: FnOnce(pb::cluster_client::ClusterClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::CtlResponse>, tonic::Status>>,
    {
        let endpoint = &self.endpoints[via % self.endpoints.len()];
        let call = async {
            let c = pb::cluster_client::ClusterClient::new(channel(&self.root.security, endpoint).ok()?);
            f(c).await.ok()
        };
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Some(_)) => true,
            _ => {
                tracing::info!("operator command refused or failed; the schedule moves on");
                false
            }
        }
    }
}

/// Shared by the clients: the history, the run's clock (the runtime's: simulated time
/// under `--simulated`), and value ids.
pub(crate) struct Recorder {
    /// Set by the first reading, on the reader's runtime (a simulated host's clock).
    start: std::sync::OnceLock<tokio::time::Instant>,
    pub(crate) history: Mutex<Vec<Op>>,
    pub(crate) next_value: AtomicU64,
    pub(crate) stop: AtomicBool,
    /// The service is up and the clients are starting (`--simulated`'s driver says).
    pub(crate) ready: AtomicBool,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            start: std::sync::OnceLock::new(),
            history: Mutex::new(Vec::new()),
            next_value: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.start.get_or_init(tokio::time::Instant::now).elapsed().as_nanos() as u64
    }
}

pub(crate) fn key_bytes(k: u64) -> Vec<u8> {
    format!("chaos-{k:04}").into_bytes()
}

pub(crate) fn value_of(rec: &pb::Record) -> Option<u64> {
    rec.value.as_ref().try_into().ok().map(u64::from_be_bytes)
}

pub(crate) fn client_config() -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    }
}

/// One client: its own session, one operation at a time on `work`'s keys, until told to
/// stop.
pub(crate) async fn client(
    id: u64,
    endpoints: Vec<String>,
    config: ClientConfig,
    work: Workload,
    seed: u64,
    rec: Arc<Recorder>,
) {
    let svc = ServiceClient::new(endpoints, config);
    let mut rng = StdRng::seed_from_u64(seed ^ (id.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    // What this client last saw of each key: the value and its record's version.
    let mut seen: HashMap<u64, Option<(u64, u64)>> = HashMap::new();
    while !rec.stop.load(Ordering::Relaxed) {
        if work.sparse {
            let ms = rng.random_range(SPARSE_PAUSE_MS.0..=SPARSE_PAUSE_MS.1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if rec.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let key = rng.random_range(work.keys.clone());
        let kb = key_bytes(key);
        let service = service_of(key);
        let roll = rng.random_range(0..10);
        let call_ns = rec.now();
        let (kind, outcome) = if roll < 5 {
            match svc.get(service, TABLE, &kb).await {
                Ok(r) => {
                    let v = r.as_ref().and_then(|r| value_of(r).map(|v| (v, r.version)));
                    seen.insert(key, v);
                    (OpKind::Read, Outcome::Read(v.map(|(v, _)| v)))
                }
                Err(_) => (OpKind::Read, Outcome::Unknown),
            }
        } else {
            let new = rec.next_value.fetch_add(1, Ordering::Relaxed);
            let cas = roll >= 8;
            let last = seen.get(&key).copied().flatten();
            let (kind, condition) = if cas {
                let condition = match last {
                    Some((_, version)) => pb::condition::Kind::Version(version),
                    None => pb::condition::Kind::Absent(true),
                };
                (OpKind::Cas { expect: last.map(|(v, _)| v), new }, Some(pb::Condition { kind: Some(condition) }))
            } else {
                (OpKind::Write(new), None)
            };
            let outcome = match svc.put_if(service, TABLE, &kb, &new.to_be_bytes(), condition).await {
                Ok(version) => {
                    seen.insert(key, Some((new, version)));
                    if cas { Outcome::Cas(true) } else { Outcome::Written }
                }
                Err(ClientError::Refused { code, .. }) if cas && code == pb::ErrorCode::ConditionFailed => {
                    Outcome::Cas(false)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "write outcome unknown");
                    Outcome::Unknown
                }
            };
            (kind, outcome)
        };
        let return_ns = rec.now();
        rec.history.lock().push(Op { client: id, key, kind, call_ns, return_ns, outcome });
    }
}

/// Runs the faults until `until`, one at a time; returns them in order.
async fn faults(
    cluster: &mut Cluster,
    cfg: &ChaosConfig,
    until: Instant,
    rng: &mut StdRng,
    rec: &Recorder,
) -> Result<Vec<FaultEvent>, Error> {
    let mut events = Vec::new();
    let mut restarted_all = !cfg.durable;
    let mut walked = !cfg.durable;
    let half = Instant::now() + (until - Instant::now()) / 2;
    let three_quarters = Instant::now() + (until - Instant::now()) * 3 / 4;
    let n = cluster.len();
    let docker = matches!(cluster.fleet, Fleet::Docker(_));
    // The whole-cluster restart and the walk happen in every durable run, past `until`
    // if the faults before them took the time, within a bound.
    let overtime = until + Duration::from_secs(180);
    while Instant::now() < until || !restarted_all || !walked {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
        if Instant::now() >= until && restarted_all && walked {
            break;
        }
        if Instant::now() >= overtime {
            return Err(Error::Stuck(
                "the durable schedule's whole-cluster restart or upgrade walk could not run in 180 s past its end"
                    .into(),
            ));
        }
        let start_ns = rec.now();
        let mut target = 0;
        let kind = if !restarted_all && Instant::now() >= half {
            restarted_all = true;
            "cluster_restart"
        } else if !walked && Instant::now() >= three_quarters {
            "upgrade_walk"
        } else {
            // Containers add latency and loss (draw 10) where the kernel allows it.
            match rng.random_range(0..if cluster.netem { 11 } else { 10 }) {
                10 => "netem",
                0 | 1 => "kill",
                2 => "kill_primary",
                3 => "move_primary",
                4 => "move_secondary",
                5 => "drain",
                6 => "partition_one",
                7 => "partition_halves",
                8 => "partition_ring",
                _ => "pause",
            }
        };
        match kind {
            "kill" | "kill_primary" => {
                let mut victim = rng.random_range(0..n);
                if kind == "kill_primary"
                    && let Some((_, node, _)) = cluster.partition(rng.random_range(0..64)).await
                    && (1..=n as u64).contains(&node)
                {
                    victim = (node - 1) as usize;
                }
                tracing::info!(node = victim + 1, kind, "fault");
                target = victim as u64 + 1;
                cluster.kill(victim).await?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
                cluster.restart(victim).await?;
            }
            "pause" => {
                let victim = rng.random_range(0..n);
                tracing::info!(node = victim + 1, "fault: pause");
                target = victim as u64 + 1;
                cluster.pause(victim).await?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2500))).await;
                cluster.resume(victim).await?;
            }
            "netem" => {
                let victim = rng.random_range(0..n);
                let shape = (rng.random_range(20..150), rng.random_range(0..50), rng.random_range(1..10));
                tracing::info!(node = victim + 1, ?shape, "fault: latency and loss");
                target = victim as u64 + 1;
                if let Fleet::Docker(c) = &cluster.fleet {
                    c.netem(victim, Some(shape)).await?;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(2000..5000))).await;
                    c.netem(victim, None).await?;
                }
            }
            "move_primary" | "move_secondary" => {
                let Some((partition, _, from)) = cluster.partition(rng.random_range(0..64)).await else { continue };
                tracing::info!(partition, kind, "fault");
                target = partition;
                let via = rng.random_range(0..n);
                let done = if kind == "move_primary" {
                    let req = pb::MovePrimaryRequest { partition, to_node: 0, force: false };
                    cluster.ctl(via, |mut c| async move { c.move_primary(req).await }).await
                } else {
                    let req = pb::MoveSecondaryRequest { partition, from_node: from, to_node: 0, force: false };
                    cluster.ctl(via, |mut c| async move { c.move_secondary(req).await }).await
                };
                if !done {
                    continue;
                }
            }
            "partition_one" | "partition_halves" | "partition_ring" => {
                let pick = rng.random_range(0..n);
                tracing::info!(kind, node = pick + 1, "fault");
                target = pick as u64 + 1;
                // One node alone; the first ceil(n/2) nodes from `pick` against the rest;
                // or a ring where each node reaches only its two neighbours (a majority
                // around each node, but no node reaches a majority directly).
                let side = |i: usize| (i + n - pick) % n < n.div_ceil(2);
                match kind {
                    "partition_one" => cluster.cut(|i, j| i != pick && j != pick).await?,
                    "partition_halves" => cluster.cut(|i, j| side(i) == side(j)).await?,
                    _ => cluster.cut(|i, j| (i + 1) % n == j || (j + 1) % n == i).await?,
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(2000..4000))).await;
                cluster.cut(|_, _| true).await?;
            }
            "upgrade_walk" if docker => {
                // What a rolling update does: each node's container, UD by UD, stopped
                // gracefully and replaced by a new one on the same volume; the next only
                // once the cluster is whole again.
                tracing::info!("fault: rolling replacement of every container");
                walked = true;
                for i in 0..n {
                    if let Fleet::Docker(c) = &cluster.fleet {
                        c.replace(i, 45).await?;
                    }
                    cluster.wait_whole(cfg.replicas as usize, Duration::from_secs(120)).await?;
                }
            }
            "upgrade_walk" => {
                tracing::info!("fault: upgrade walk");
                let req = pb::UpgradeRequest { action: pb::UpgradeAction::Apply as i32 };
                if !cluster.ctl(rng.random_range(0..n), |mut c| async move { c.upgrade(req).await }).await {
                    continue;
                }
                walked = true;
                cluster.wait_walk(Duration::from_secs(180)).await?;
            }
            "drain" => {
                let node = rng.random_range(1..=n as u64);
                tracing::info!(node, "fault: drain");
                target = node;
                let req = pb::NodeRequest { node, force: false };
                if !cluster.ctl(rng.random_range(0..n), |mut c| async move { c.drain(req).await }).await {
                    continue;
                }
                cluster.wait_whole_but(cfg.replicas as usize, Duration::from_secs(60), Some(node)).await?;
                let req = pb::NodeRequest { node, force: false };
                let mut activated = false;
                for _ in 0..10 {
                    activated = cluster.ctl(rng.random_range(0..n), |mut c| async move { c.activate(req).await }).await;
                    if activated {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if !activated {
                    return Err(Error::Stuck(format!("node {node} could not be activated after its drain")));
                }
            }
            _ => {
                tracing::info!("fault: whole-cluster restart");
                for i in 0..n {
                    cluster.kill(i).await?;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1000))).await;
                for i in 0..n {
                    cluster.restart(i).await?;
                }
            }
        }
        cluster.wait_whole(cfg.replicas as usize, Duration::from_secs(60)).await?;
        events.push(FaultEvent { kind: kind.to_string(), target, start_ns, whole_ns: rec.now() });
    }
    Ok(events)
}

/// Runs one chaos schedule against fresh nodes of the `weft` binary at `exe`; returns
/// the report and the whole history.
pub async fn run(exe: &Path, cfg: &ChaosConfig) -> Result<(ChaosReport, Vec<Op>), Error> {
    check_shape(cfg.nodes, cfg.replicas, cfg.keys, cfg.clients, cfg.partitions).map_err(Error::Config)?;
    let temp = tempfile::tempdir().map_err(cluster_err)?;
    let data: Option<PathBuf> = cfg.durable.then(|| temp.path().to_path_buf());
    let mut cluster = match &cfg.compose {
        None => Cluster::start(exe, cfg, data.as_deref())?,
        Some(target) => Cluster::attach(cfg, target).await?,
    };
    let endpoints = cluster.endpoints.clone();
    // Every node registered, then the service, then every partition whole.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = ServiceClient::fetch_map(&cluster.root, &endpoints, Duration::from_secs(5)).await?;
        if view::nodes(&m).iter().filter(|n| n.state == "up").count() as u64 == cfg.nodes {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Stuck("the nodes did not all register within 60 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut c = pb::cluster_client::ClusterClient::new(channel(&cluster.root.security, &endpoints[0])?);
    let req = pb::CreateServiceRequest {
        name: SERVICE.into(),
        partitions: cfg.partitions,
        replicas: cfg.replicas,
        restoring: false,
    };
    c.create_service(req).await.map_err(|s| cluster_err(s.message()))?;
    cluster.wait_whole(cfg.replicas as usize, Duration::from_secs(60)).await?;
    if cfg.idle_partitions > 0 {
        let req = pb::CreateServiceRequest {
            name: IDLE_SERVICE.into(),
            partitions: cfg.idle_partitions,
            replicas: cfg.replicas,
            restoring: false,
        };
        c.create_service(req).await.map_err(|s| cluster_err(s.message()))?;
        let (n, p, r) = (cfg.nodes as usize, cfg.idle_partitions, cfg.replicas);
        weft_client::routing::ready_service(&cluster.root, &endpoints, n, IDLE_SERVICE, p, r, Duration::from_secs(60))
            .await
            .map_err(cluster_err)?;
    }

    let rec = Arc::new(Recorder::new());
    let tasks: Vec<_> = workloads(cfg.clients, cfg.keys, cfg.idle_partitions)
        .into_iter()
        .map(|(id, work)| {
            tokio::spawn(client(id, endpoints.clone(), cluster.root.clone(), work, cfg.seed, rec.clone()))
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let until = Instant::now() + Duration::from_secs_f64(cfg.seconds);
    let timeline = faults(&mut cluster, cfg, until, &mut rng, &rec).await;
    rec.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let timeline = timeline?;
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    for e in &timeline {
        *faults.entry(e.kind.clone()).or_default() += 1;
    }
    cluster.wait_whole(cfg.replicas as usize, Duration::from_secs(60)).await?;

    // One final linearizable read of every key, after everything else.
    let reader =
        ServiceClient::new(endpoints, ClientConfig { deadline: Duration::from_secs(20), ..cluster.root.clone() });
    let mut history = std::mem::take(&mut *rec.history.lock());
    history.extend(read_every_key(&reader, &keys_of(cfg.keys, cfg.idle_partitions), &rec).await?);
    drop(cluster);

    let t = Tally::of(&history);
    let report = ChaosReport {
        mode: if cfg.durable { "durable" } else { "volatile" },
        seed: cfg.seed,
        ops: history.len() as u64,
        idle_ops: t.idle_ops,
        ok: t.ok,
        failed: t.failed,
        indeterminate: t.indeterminate,
        faults,
        timeline,
        linearizable: t.verdict.linearizable(),
        lost_acked_writes: t.lost_acked_writes,
        undecided_keys: t.verdict.undecided,
        anomaly: t.verdict.anomaly,
    };
    Ok((report, history))
}

/// The client id of the final reads, after every other operation.
pub(crate) const FINAL_READER: u64 = u64::MAX;

/// The clients of a run: `clients` on the shared service's `keys` keys, and one sparse
/// client on the idle service's when it has partitions; by client id.
pub(crate) fn workloads(clients: usize, keys: u64, idle_partitions: u32) -> Vec<(u64, Workload)> {
    let mut out: Vec<(u64, Workload)> = (0..clients as u64).map(|id| (id, Workload::dense(keys))).collect();
    if idle_partitions > 0 {
        out.push((clients as u64, Workload::idle(idle_partitions)));
    }
    out
}

/// Every key id of a run: the shared service's, then the idle service's.
pub(crate) fn keys_of(keys: u64, idle_partitions: u32) -> Vec<u64> {
    let mut all: Vec<u64> = (0..keys).collect();
    all.extend(Workload::idle(idle_partitions).keys);
    all
}

/// One linearizable read of every key, as operations of [`FINAL_READER`].
pub(crate) async fn read_every_key(
    reader: &ServiceClient,
    keys: &[u64],
    rec: &Recorder,
) -> Result<Vec<Op>, ClientError> {
    let mut ops = Vec::with_capacity(keys.len());
    for &key in keys {
        let call_ns = rec.now();
        let value = reader.get(service_of(key), TABLE, &key_bytes(key)).await?.as_ref().and_then(value_of);
        let outcome = Outcome::Read(value);
        ops.push(Op { client: FINAL_READER, key, kind: OpKind::Read, call_ns, return_ns: rec.now(), outcome });
    }
    Ok(ops)
}

/// What a finished history adds up to: the checker's verdict, the counts a report
/// shows, and the acknowledged writes the final reads prove lost.
pub(crate) struct Tally {
    pub(crate) verdict: linearize::Verdict,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) indeterminate: u64,
    pub(crate) lost_acked_writes: u64,
    /// Keys the final reads answered.
    pub(crate) final_keys: u64,
    /// Operations on the idle service's keys (the final reads included).
    pub(crate) idle_ops: u64,
}

impl Tally {
    pub(crate) fn of(history: &[Op]) -> Tally {
        let finals: HashMap<u64, Option<u64>> = history
            .iter()
            .filter(|o| o.client == FINAL_READER)
            .filter_map(|o| match o.outcome {
                Outcome::Read(v) => Some((o.key, v)),
                _ => None,
            })
            .collect();
        let unknown = |read: bool| {
            history.iter().filter(|o| o.outcome == Outcome::Unknown && (o.kind == OpKind::Read) == read).count() as u64
        };
        let (indeterminate, failed) = (unknown(false), unknown(true));
        Tally {
            verdict: linearize::check(history, linearize::DEFAULT_BUDGET),
            ok: history.len() as u64 - indeterminate - failed,
            failed,
            indeterminate,
            lost_acked_writes: lost_acked_writes(history, &finals),
            final_keys: finals.len() as u64,
            idle_ops: history.iter().filter(|o| o.key >= IDLE_KEYS_FROM).count() as u64,
        }
    }
}

/// Why a run of this shape cannot be carried out, if it cannot (shared with
/// `--simulated`).
pub(crate) fn check_shape(
    nodes: u64,
    replicas: u32,
    keys: u64,
    clients: usize,
    partitions: u32,
) -> Result<(), &'static str> {
    if !(3..=9).contains(&nodes) {
        return Err("--nodes must be 3 to 9");
    }
    if replicas as u64 > nodes || replicas < 3 {
        return Err("--replicas must be 3 to --nodes (a fault takes one replica away)");
    }
    if keys == 0 || clients == 0 || partitions == 0 {
        return Err("--keys, --clients and --partitions must be positive");
    }
    Ok(())
}

/// Acknowledged writes the final values prove lost (module docs).
fn lost_acked_writes(history: &[Op], finals: &HashMap<u64, Option<u64>>) -> u64 {
    let written = |o: &Op| match (o.kind, o.outcome) {
        (OpKind::Write(v), _) => Some(v),
        (OpKind::Cas { new, .. }, Outcome::Cas(true) | Outcome::Unknown) => Some(new),
        _ => None,
    };
    let acked = |o: &Op| matches!(o.outcome, Outcome::Written | Outcome::Cas(true));
    let mut lost = 0;
    for (key, last) in finals {
        let writer_returned = match last {
            None => Some(0),
            Some(v) => history
                .iter()
                .find(|o| o.key == *key && written(o) == Some(*v))
                .map(|o| if o.outcome == Outcome::Unknown { u64::MAX } else { o.return_ns }),
        };
        // A final value nobody wrote is the checker's to report; count nothing here.
        let Some(after) = writer_returned else { continue };
        let later = |o: &&Op| o.key == *key && acked(o) && (last.is_none() || o.call_ns > after);
        lost += history.iter().filter(later).count() as u64;
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: u64, kind: OpKind, call_ns: u64, return_ns: u64, outcome: Outcome) -> Op {
        Op { client: 0, key, kind, call_ns, return_ns, outcome }
    }

    #[test]
    fn lost_writes_are_those_the_final_value_proves_overwritten_by_nothing() {
        let h = vec![
            op(1, OpKind::Write(1), 0, 10, Outcome::Written),
            op(1, OpKind::Write(2), 20, 30, Outcome::Written),
            op(2, OpKind::Write(3), 0, 10, Outcome::Written),
            op(3, OpKind::Write(4), 0, 10, Outcome::Unknown),
        ];
        let finals = HashMap::from([(1, Some(2)), (2, Some(3)), (3, None)]);
        assert_eq!(lost_acked_writes(&h, &finals), 0);
        // Key 1 ends on the older write although the newer one started after it returned.
        let finals = HashMap::from([(1, Some(1)), (2, Some(3)), (3, None)]);
        assert_eq!(lost_acked_writes(&h, &finals), 1);
        // Key 2 ends absent although a write was acknowledged.
        let finals = HashMap::from([(1, Some(2)), (2, None), (3, None)]);
        assert_eq!(lost_acked_writes(&h, &finals), 1);
    }
}
