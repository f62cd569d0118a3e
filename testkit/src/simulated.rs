//! `weft chaos --simulated`: the chaos workload and its history check, on weft nodes
//! running in this process over turmoil's simulated network and clock, under one seed.
//!
//! Each node is a real `weft_node::Node` (its gRPC services, replicas, openraft groups and
//! cluster manager) started inside a turmoil host; it listens and dials through
//! [`TurmoilNet`], weft's network seam (`weft_security::net`), in plaintext. The clients
//! are `weft_client` service clients on a turmoil client host; they run the same
//! operations as `weft chaos` ([`crate::chaos`]: reads, writes and compare-and-sets with
//! run-unique values) and record the history on the simulated clock.
//!
//! The driver steps the simulation and injects one fault at a time, chosen by the seed:
//! a node crashed and restarted (volatile: it comes back empty and its replicas are
//! rebuilt), a node cut off from the others, the nodes split in two, or one link held
//! then released. Each fault lasts 1 to 3 simulated seconds; the next starts 2 to 4 s after
//! the last healed. After `seconds` of load the clients stop, every link is repaired, the
//! cluster is given time to settle, and a final linearizable read of every key joins the
//! history, which [`crate::linearize::check`] decides.
//!
//! The history's hash (`history_hash`: xxh3 over every operation's client, key, kind,
//! outcome and simulated call and return times) names the run: the same seed gives the
//! same hash. Nothing is read from the real clock; randomness inside the nodes (openraft's
//! election timeouts, client and node ids) comes from the seed ([`weft_security::rng`]);
//! snapshot streams are encoded and decoded on the simulated task, not a thread pool.
//!
//! One simulation per process: a replay is a fresh process (the `replay` command). tokio's
//! task ids come from one process-wide counter, and a crashed host's tasks are dropped in
//! an order those ids decide (the runtime's task list is sharded by id), so any other
//! tokio runtime busy in the same process, or an earlier simulation, can change what a
//! crash-restart does. Seeds are swept one process each (`tests/simulation.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use weft_client::client::ClientConfig;
use weft_client::routing::ServiceClient;
use weft_proto::v1 as pb;
use weft_replica::disk::{Call, FaultyDisk};
use weft_security::ClientSecurity;
use weft_security::net::{Acceptor, BoxStream, Network, SharedNetwork};

use crate::Error;
use crate::chaos::{self, Recorder, SERVICE, TABLE};
use crate::linearize::{Anomaly, Op, OpKind, Outcome};

/// The port every simulated node listens on.
const PORT: u16 = 7000;

/// What a simulated run does.
#[derive(Clone, Debug)]
pub struct SimulatedConfig {
    /// The seed: of the network, the fault schedule, the clients and the nodes' randomness.
    pub seed: u64,
    /// Simulated seconds of load and faults.
    pub seconds: f64,
    /// Nodes (the first three are seeds).
    pub nodes: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients share.
    pub keys: u64,
    /// Partitions of the service.
    pub partitions: u32,
    /// Partitions of the idle service (`chaos`'s `IDLE_SERVICE`; 0: none), touched by one
    /// sparse client, so faults land on quiesced groups.
    pub idle_partitions: u32,
    /// Replicas per partition.
    pub replicas: u32,
    /// Durable replicas: each node writes its logs and checkpoints to an in-memory
    /// `FaultyDisk` of its own, and a crash is a power cut (the disk keeps only what was
    /// synced, the last write possibly torn); the node restarts from what is left.
    pub durable: bool,
    /// The kinds of fault to draw from (empty: every kind the mode allows).
    pub faults: Vec<FaultKind>,
}

/// A kind of fault the simulated schedule injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// One node crashed and restarted (durable: a power cut of that node).
    CrashRestart,
    /// One node cut off from every other.
    PartitionOne,
    /// The nodes split in two halves.
    PartitionHalves,
    /// Messages from one node to another held, then released.
    HoldLink,
    /// Every node's power cut at once, the nodes back one by one (durable only).
    PowerCutAll,
    /// One node's disk refusing syncs or full, until the node dies of it (durable only).
    DiskFails,
    /// An upgrade walk through every UD, once, three quarters into the load (durable only:
    /// the cluster map must be durable); never drawn at random.
    UpgradeWalk,
}

impl FaultKind {
    /// Every kind, in the order of their names.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::CrashRestart,
        FaultKind::PartitionOne,
        FaultKind::PartitionHalves,
        FaultKind::HoldLink,
        FaultKind::PowerCutAll,
        FaultKind::DiskFails,
        FaultKind::UpgradeWalk,
    ];

    /// Its name, as in the report's `faults` and in `--faults`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::CrashRestart => "crash_restart",
            FaultKind::PartitionOne => "partition_one",
            FaultKind::PartitionHalves => "partition_halves",
            FaultKind::HoldLink => "hold_link",
            FaultKind::PowerCutAll => "power_cut_all",
            FaultKind::DiskFails => "disk_fails",
            FaultKind::UpgradeWalk => "upgrade_walk",
        }
    }

    /// Whether only durable nodes can meet it (a volatile cluster cannot survive a power
    /// cut of every node; a volatile node has no disk).
    pub fn durable_only(self) -> bool {
        matches!(self, FaultKind::PowerCutAll | FaultKind::DiskFails | FaultKind::UpgradeWalk)
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("no fault kind {s:?}; the kinds are {}", names.join(", "))
        })
    }
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        SimulatedConfig {
            seed: 1,
            seconds: 20.0,
            nodes: 5,
            clients: 4,
            keys: 8,
            partitions: 2,
            idle_partitions: 8,
            replicas: 3,
            durable: false,
            faults: Vec::new(),
        }
    }
}

/// What a simulated run saw, and the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct SimulatedReport {
    /// Always `simulated`.
    pub mode: &'static str,
    /// Whether the replicas were durable (on simulated disks that lose unsynced writes in
    /// a crash) or volatile.
    pub durable: bool,
    /// The seed.
    pub seed: u64,
    /// xxh3 of the history, hex: the same seed gives the same hash.
    pub history_hash: String,
    /// Operations invoked (final reads included).
    pub ops: u64,
    /// Of them, operations on the idle service's keys: each woke a group that had
    /// most likely quiesced.
    pub idle_ops: u64,
    /// Operations with a definite answer.
    pub ok: u64,
    /// Reads that got no answer.
    pub failed: u64,
    /// Writes and compare-and-sets whose outcome is unknown.
    pub indeterminate: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Times a node stopped itself because a replica failed (its disk refused the log).
    pub node_exits: u64,
    /// Nodes restarted because the upgrade walk asked them to.
    pub walk_restarts: u64,
    /// The checker's verdict.
    pub linearizable: bool,
    /// Acknowledged writes the final state proves lost.
    pub lost_acked_writes: u64,
    /// Keys the checker could neither prove nor refute within its budget.
    pub undecided_keys: Vec<u64>,
    /// On failure: the smallest window of history that shows the anomaly.
    pub anomaly: Option<Anomaly>,
    /// Simulated seconds the whole run took.
    pub simulated_s: f64,
    /// The command that replays this run.
    pub replay: String,
}

/// weft's network seam over turmoil: listening on the host's port, dialing by host
/// address. The listener reports the host's own address (turmoil binds the unspecified
/// one), so the node advertises an address its peers can dial.
#[derive(Debug)]
pub struct TurmoilNet {
    /// The host this network object belongs to (its node's name), `None` for clients.
    pub host: Option<String>,
}

struct TurmoilAcceptor {
    listener: turmoil::net::TcpListener,
    addr: SocketAddr,
}

impl Acceptor for TurmoilAcceptor {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn accept(&mut self) -> BoxFuture<'_, std::io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (s, remote) = self.listener.accept().await?;
            Ok((Box::new(s) as BoxStream, remote))
        })
    }
}

impl Network for TurmoilNet {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, std::io::Result<Box<dyn Acceptor>>> {
        let host = self.host.clone();
        Box::pin(async move {
            let listener =
                turmoil::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port()))
                    .await?;
            let ip = match &host {
                Some(h) => turmoil::lookup(h.as_str()),
                None => addr.ip(),
            };
            Ok(Box::new(TurmoilAcceptor { listener, addr: SocketAddr::new(ip, addr.port()) }) as Box<dyn Acceptor>)
        })
    }

    fn dial(&self, host: String, port: u16) -> BoxFuture<'static, std::io::Result<BoxStream>> {
        Box::pin(async move {
            let s = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

fn name(i: u64) -> String {
    format!("n{i}")
}

/// One node's software: a weft node on the simulated network, serving until crashed; with
/// a disk, its replicas are durable on it and a restart recovers them from it.
///
/// A node that stops itself (a replica failed: its disk refused the log) records that it
/// exited; the schedule then crashes its host, so that nothing of the process runs on, as
/// nothing runs on in a process that exited. A node an upgrade walk asks to restart
/// records that too; the schedule restarts its host (its disk keeps everything: a
/// process restart is no power cut).
async fn node(i: u64, seeds: Vec<String>, disk: Option<Arc<FaultyDisk>>, control: Arc<Control>) -> turmoil::Result {
    let storage = match disk {
        Some(disk) => weft_replica::Storage {
            data_dir: Some(std::path::PathBuf::from(format!("/{}", name(i)))),
            durable_by_default: true,
            disk: Some(disk as Arc<dyn weft_replica::disk::Disk>),
            ..Default::default()
        },
        None => Default::default(),
    };
    let network: SharedNetwork = Arc::new(TurmoilNet { host: Some(name(i)) });
    let config = weft_node::NodeConfig {
        id: i,
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT),
        raft: Default::default(),
        transport: Default::default(),
        limits: Default::default(),
        storage,
        cluster: weft_node::ClusterConfig {
            seeds,
            ud: format!("ud{i}"),
            fd: format!("fd{i}"),
            down_grace: Duration::from_secs(2),
            balance_every: None,
            ..Default::default()
        },
        metrics: None,
        security: Default::default(),
        network: Some(network),
        restart: Some({
            let control = control.clone();
            weft_node::RestartHook::new(move || control.restarts.lock().push(name(i)))
        }),
    };
    let node = weft_node::Node::bind(config).await?;
    match node.serve(std::future::pending()).await {
        Err(e @ weft_node::Error::ReplicaFailed { .. }) => {
            tracing::warn!(node = i, error = %e, "the node exited");
            control.exited.lock().push(name(i));
            Ok(())
        }
        served => Ok(served?),
    }
}

/// What the nodes and the driver ask of the schedule, which alone can crash and restart
/// hosts.
#[derive(Default)]
struct Control {
    /// Nodes that exited by themselves since the schedule last looked.
    exited: parking_lot::Mutex<Vec<String>>,
    /// Nodes an upgrade walk asked to restart since the schedule last looked.
    restarts: parking_lot::Mutex<Vec<String>>,
    /// The upgrade walk, as far as it got.
    walk: parking_lot::Mutex<WalkState>,
}

/// Where the schedule's upgrade walk is.
#[derive(Clone, Debug, Default, PartialEq)]
enum WalkState {
    /// Not asked for yet.
    #[default]
    Waiting,
    /// The schedule asked the driver to start it.
    Asked,
    /// The walk ran to its end.
    Done,
    /// It could not start, or did not end in time: a liveness failure.
    Failed(String),
}

/// How long the walk may be refused before the run fails (a walk is refused while a node
/// is down or a move is in flight, which must pass).
const WALK_START_WITHIN: Duration = Duration::from_secs(60);
/// How long a walk of every UD may take before the run fails.
const WALK_WITHIN: Duration = Duration::from_secs(300);

/// The driver's part of the upgrade walk: once the schedule asks, `weft ctl upgrade
/// --apply` (retried while refused), then the map watched until the walk has ended.
async fn walk_when_asked(endpoints: Vec<String>, config: ClientConfig, control: Arc<Control>) {
    while *control.walk.lock() != WalkState::Asked {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = |i: usize| {
        let (addr, security) = (endpoints[i % endpoints.len()].clone(), config.security.clone());
        async move {
            let mut c = pb::cluster_client::ClusterClient::new(crate::local::channel(&security, &addr)?);
            let req = pb::UpgradeRequest { action: pb::UpgradeAction::Apply as i32 };
            let answer = c.upgrade(req).await.map_err(|s| crate::local::cluster_err(s.message()))?;
            Ok::<u64, Error>(answer.into_inner().map_version)
        }
    };
    let start = tokio::time::Instant::now();
    let mut i = 0;
    let started_at = loop {
        match tokio::time::timeout(Duration::from_secs(5), call(i)).await {
            Ok(Ok(version)) => break version,
            Ok(Err(e)) if start.elapsed() >= WALK_START_WITHIN => {
                *control.walk.lock() =
                    WalkState::Failed(format!("the upgrade walk was refused for {WALK_START_WITHIN:?}: {e}"));
                return;
            }
            outcome => {
                tracing::info!(?outcome, "the upgrade walk did not start; again");
                i += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let start = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A node may answer with a map older than the walk: only a later one that has no
        // walk says it ended.
        let map = ServiceClient::fetch_map(&config, &endpoints, Duration::from_secs(5)).await;
        if let Ok(m) = map
            && m.version > started_at
            && m.map.as_ref().is_some_and(|m| m.upgrade.is_none())
        {
            *control.walk.lock() = WalkState::Done;
            return;
        }
        if start.elapsed() >= WALK_WITHIN {
            *control.walk.lock() = WalkState::Failed(format!("the upgrade walk did not end within {WALK_WITHIN:?}"));
            return;
        }
    }
}

fn client_config(network: &SharedNetwork) -> ClientConfig {
    ClientConfig { security: ClientSecurity::insecure().over(Some(network.clone())), ..chaos::client_config() }
}

/// The test driver's software: waits for the cluster, creates the service, runs the
/// clients until told to stop, then reads every key.
async fn driver(
    cfg: SimulatedConfig,
    endpoints: Vec<String>,
    rec: Arc<Recorder>,
    control: Arc<Control>,
) -> turmoil::Result {
    let network: SharedNetwork = Arc::new(TurmoilNet { host: None });
    let config = client_config(&network);
    if cfg.durable {
        tokio::spawn(walk_when_asked(endpoints.clone(), config.clone(), control));
    }
    // The map first, then the services; each retried until the cluster answers (a
    // service that already exists is refused: created by an earlier try).
    let services = [(SERVICE, cfg.partitions), (chaos::IDLE_SERVICE, cfg.idle_partitions)];
    for (name, partitions) in services.into_iter().filter(|(_, p)| *p > 0) {
        loop {
            let created = async {
                let mut c =
                    pb::cluster_client::ClusterClient::new(crate::local::channel(&config.security, &endpoints[0])?);
                let req = pb::CreateServiceRequest {
                    name: name.into(),
                    partitions,
                    replicas: cfg.replicas,
                    restoring: false,
                };
                match c.create_service(req).await {
                    Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
                    other => other.map(|_| ()),
                }?;
                Ok::<(), Box<dyn std::error::Error>>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), created).await {
                Ok(Ok(())) => break,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    // Every partition writable before the clock of the history starts to matter.
    let svc = ServiceClient::new(endpoints.clone(), config.clone());
    let keys = chaos::keys_of(cfg.keys, cfg.idle_partitions);
    for &key in &keys {
        while svc.get(chaos::service_of(key), TABLE, &chaos::key_bytes(key)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    rec.now();
    rec.ready.store(true, Ordering::Relaxed);
    let tasks: Vec<_> = chaos::workloads(cfg.clients, cfg.keys, cfg.idle_partitions)
        .into_iter()
        .map(|(id, work)| {
            tokio::spawn(chaos::client(id, endpoints.clone(), config.clone(), work, cfg.seed, rec.clone()))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    // The driver repairs every link and stops faulting before it sets `stop`; give the
    // cluster time to rebuild what the last fault took, then read every key.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reader = ServiceClient::new(endpoints, ClientConfig { deadline: Duration::from_secs(30), ..config });
    let finals = chaos::read_every_key(&reader, &keys, &rec).await?;
    rec.history.lock().extend(finals);
    Ok(())
}

/// A fault in force, and what heals it.
/// The range of simulated time a durable node's group-commit sync takes.
const SYNC_TIME_MIN: Duration = Duration::from_micros(500);
const SYNC_TIME_MAX: Duration = Duration::from_millis(4);
/// After a whole-cluster power cut, the longest gap between two nodes coming back.
const RESTART_GAP_MAX_MS: u64 = 400;

enum Fault {
    Crashed(String),
    /// Every node at once (durable runs only): a power cut of the whole cluster. The
    /// nodes come back one by one, in a seeded order and at the times listed, as an
    /// operator or a supervisor brings real machines back.
    AllCrashed(Vec<(Duration, String)>),
    /// One node's disk failing (durable runs only): its syncs fail, or it is full (writes,
    /// creations and length changes fail), until the node dies of it at the fault's end
    /// (a power cut that also clears the disk's fault); it is restarted later.
    DiskFailing(String),
    /// The upgrade walk, until the driver says it ended.
    Walking,
    Cut(Vec<String>, Vec<String>),
    Held(String, String),
}

/// Runs one simulated chaos schedule; returns the report and the whole history.
pub fn run(cfg: &SimulatedConfig) -> Result<(SimulatedReport, Vec<Op>), Error> {
    chaos::check_shape(cfg.nodes, cfg.replicas, cfg.keys, cfg.clients, cfg.partitions).map_err(Error::Config)?;
    if cfg.faults.iter().any(|k| k.durable_only()) && !cfg.durable {
        return Err(Error::Config("power_cut_all, disk_fails and upgrade_walk need durable nodes: add --mode durable"));
    }
    // Every host runs on this thread: one seeded sequence serves them all, in the
    // simulation's own order.
    weft_security::rng::seed_thread(cfg.seed);
    let result = simulate(cfg);
    weft_security::rng::unseed_thread();
    result
}

fn simulate(cfg: &SimulatedConfig) -> Result<(SimulatedReport, Vec<Op>), Error> {
    let failed = |reason: String| Error::Sim { seed: cfg.seed, reason };
    let mut sim = turmoil::Builder::new()
        .rng_seed(cfg.seed)
        .simulation_duration(Duration::from_secs_f64(cfg.seconds + 600.0))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(5))
        .tcp_capacity(1 << 16)
        .build();
    let names: Vec<String> = (1..=cfg.nodes).map(name).collect();
    let seeds: Vec<String> = names.iter().take(3).map(|n| format!("{}:{PORT}", sim.lookup(n.as_str()))).collect();
    let endpoints: Vec<String> = names.iter().map(|n| format!("{}:{PORT}", sim.lookup(n.as_str()))).collect();
    // Each node's disk outlives its crashes: created here, handed to every start.
    let disks: BTreeMap<String, Arc<FaultyDisk>> = if cfg.durable {
        (1..=cfg.nodes)
            .map(|i| {
                let disk = FaultyDisk::new(cfg.seed.rotate_left(8) ^ i);
                // A sync takes time, as on a real disk: records queued behind it (the
                // committed ids among them) are lost if the power goes meanwhile.
                disk.set_sync_time(SYNC_TIME_MIN, SYNC_TIME_MAX);
                (name(i), Arc::new(disk))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    let control = Arc::new(Control::default());
    for i in 1..=cfg.nodes {
        let seeds = seeds.clone();
        let disk = disks.get(&name(i)).cloned();
        let control = control.clone();
        sim.host(name(i).as_str(), move || node(i, seeds.clone(), disk.clone(), control.clone()));
    }
    let rec = Arc::new(Recorder::new());
    sim.client("driver", driver(cfg.clone(), endpoints, rec.clone(), control.clone()));
    // A durable run walks an upgrade through every UD once, three quarters into the load
    // (as `weft chaos` does); the other faults wait while it walks.
    let walks = cfg.durable && (cfg.faults.is_empty() || cfg.faults.contains(&FaultKind::UpgradeWalk));
    let drawn: Vec<FaultKind> = cfg.faults.iter().copied().filter(|k| *k != FaultKind::UpgradeWalk).collect();
    let draws = cfg.faults.is_empty() || !drawn.is_empty();

    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xfa17);
    // Disk faults draw from their own sequence, so adding them left the schedule of every
    // other fault as it was.
    let mut disk_rng = StdRng::seed_from_u64(cfg.seed ^ 0xd15c);
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut node_exits = 0;
    let mut walk_restarts = 0;
    let mut active: Option<(Fault, Duration)> = None;
    let mut next_fault: Option<Duration> = None;
    let mut load_started: Option<Duration> = None;
    let load = Duration::from_secs_f64(cfg.seconds);
    loop {
        let finished = sim.step().map_err(|e| failed(e.to_string()))?;
        if finished {
            break;
        }
        let now = sim.elapsed();
        for n in std::mem::take(&mut *control.exited.lock()) {
            sim.crash(n.as_str());
            node_exits += 1;
        }
        for n in std::mem::take(&mut *control.restarts.lock()) {
            sim.bounce(n.as_str());
            walk_restarts += 1;
        }
        if load_started.is_none() && rec.ready.load(Ordering::Relaxed) {
            load_started = Some(now);
            next_fault = Some(now + Duration::from_millis(rng.random_range(1000..3000)));
        }
        let Some(started) = load_started else { continue };
        if let Some((Fault::Walking, _)) = &active {
            let state = control.walk.lock().clone();
            match state {
                WalkState::Done => {
                    active = None;
                    next_fault = Some(now + Duration::from_millis(rng.random_range(2000..4000)));
                }
                WalkState::Failed(reason) => return Err(failed(reason)),
                WalkState::Waiting | WalkState::Asked => continue,
            }
        }
        if walks && active.is_none() && *control.walk.lock() == WalkState::Waiting && now >= started + load * 3 / 4 {
            *control.walk.lock() = WalkState::Asked;
            *faults.entry(FaultKind::UpgradeWalk.name().to_string()).or_default() += 1;
            active = Some((Fault::Walking, Duration::MAX));
            continue;
        }
        if let Some((Fault::AllCrashed(restarts), until)) = &mut active
            && now >= *until
        {
            // Bring back those whose time has come; the fault lasts until the last is up.
            while restarts.first().is_some_and(|(at, _)| now >= *at) {
                let (_, n) = restarts.remove(0);
                sim.bounce(n.as_str());
            }
            if !restarts.is_empty() {
                continue;
            }
        }
        if let Some((Fault::DiskFailing(n), until)) = &active
            && now >= *until
        {
            let n = n.clone();
            sim.crash(n.as_str());
            if let Some(disk) = disks.get(&n) {
                disk.crash();
            }
            let back = now + Duration::from_millis(disk_rng.random_range(500..2000));
            active = Some((Fault::Crashed(n), back));
            continue;
        }
        if let Some((fault, until)) = &active
            && now >= *until
        {
            match fault {
                Fault::Crashed(n) => sim.bounce(n.as_str()),
                Fault::AllCrashed(_) | Fault::DiskFailing(_) | Fault::Walking => {}
                Fault::Cut(a, b) => {
                    for x in a {
                        for y in b {
                            sim.repair(x.as_str(), y.as_str());
                        }
                    }
                }
                Fault::Held(a, b) => sim.release(a.as_str(), b.as_str()),
            }
            active = None;
            next_fault = Some(now + Duration::from_millis(rng.random_range(2000..4000)));
        }
        if now >= started + load {
            // The load ends with no fault in force and the walk (if any) walked.
            let walked = !walks || *control.walk.lock() == WalkState::Done;
            if !rec.stop.load(Ordering::Relaxed) && active.is_none() && walked {
                rec.stop.store(true, Ordering::Relaxed);
            }
            continue;
        }
        if draws && active.is_none() && next_fault.is_some_and(|t| now >= t) {
            let until = now + Duration::from_millis(rng.random_range(1000..3000));
            let pick = rng.random_range(0..names.len());
            // Unless the kinds are chosen, a durable run adds power cuts of the whole
            // cluster to the four kinds a volatile run draws from (the volatile draws are as
            // they always were), and half its crash-restarts become failing disks (drawn from
            // their own sequence, so the rest of the schedule stayed as it was).
            let kind = if cfg.faults.is_empty() {
                let kinds = if cfg.durable { 5 } else { 4 };
                match rng.random_range(0..kinds) {
                    0 if cfg.durable && disk_rng.random_bool(0.5) => FaultKind::DiskFails,
                    0 => FaultKind::CrashRestart,
                    1 => FaultKind::PartitionOne,
                    2 => FaultKind::PartitionHalves,
                    3 => FaultKind::HoldLink,
                    _ => FaultKind::PowerCutAll,
                }
            } else {
                drawn[rng.random_range(0..drawn.len())]
            };
            let fault = match kind {
                FaultKind::PowerCutAll => {
                    for n in &names {
                        sim.crash(n.as_str());
                        if let Some(disk) = disks.get(n) {
                            disk.crash();
                        }
                    }
                    let mut order = names.clone();
                    order.shuffle(&mut rng);
                    let mut at = until;
                    let restarts = order
                        .into_iter()
                        .map(|n| {
                            let restart = (at, n);
                            at += Duration::from_millis(rng.random_range(0..RESTART_GAP_MAX_MS));
                            restart
                        })
                        .collect();
                    Fault::AllCrashed(restarts)
                }
                FaultKind::DiskFails => {
                    // Syncs refused, or a full disk (writes, creations and length changes).
                    let calls: &[Call] = if disk_rng.random_bool(0.5) {
                        &[Call::Sync]
                    } else {
                        &[Call::Write, Call::Create, Call::SetLen]
                    };
                    if let Some(disk) = disks.get(&names[pick]) {
                        for call in calls {
                            disk.fail(*call, true);
                        }
                    }
                    Fault::DiskFailing(names[pick].clone())
                }
                FaultKind::CrashRestart => {
                    sim.crash(names[pick].as_str());
                    // Durable: the crash is a power cut, and the disk loses what was not synced.
                    if let Some(disk) = disks.get(&names[pick]) {
                        disk.crash();
                    }
                    Fault::Crashed(names[pick].clone())
                }
                FaultKind::PartitionOne => {
                    let others: Vec<String> = names.iter().filter(|n| **n != names[pick]).cloned().collect();
                    for o in &others {
                        sim.partition(names[pick].as_str(), o.as_str());
                    }
                    Fault::Cut(vec![names[pick].clone()], others)
                }
                FaultKind::PartitionHalves => {
                    let n = names.len();
                    let side = |i: usize| (i + n - pick) % n < n.div_ceil(2);
                    let a: Vec<String> = (0..n).filter(|i| side(*i)).map(|i| names[i].clone()).collect();
                    let b: Vec<String> = (0..n).filter(|i| !side(*i)).map(|i| names[i].clone()).collect();
                    for x in &a {
                        for y in &b {
                            sim.partition(x.as_str(), y.as_str());
                        }
                    }
                    Fault::Cut(a, b)
                }
                FaultKind::UpgradeWalk => unreachable!("the walk is never drawn"),
                FaultKind::HoldLink => {
                    let other = names[(pick + 1 + rng.random_range(0..names.len() - 1)) % names.len()].clone();
                    sim.hold(names[pick].as_str(), other.as_str());
                    Fault::Held(names[pick].clone(), other)
                }
            };
            let kind = kind.name();
            *faults.entry(kind.to_string()).or_default() += 1;
            active = Some((fault, until));
        }
    }
    let history = std::mem::take(&mut *rec.history.lock());
    let t = chaos::Tally::of(&history);
    let report = SimulatedReport {
        mode: "simulated",
        durable: cfg.durable,
        seed: cfg.seed,
        history_hash: format!("{:016x}", history_hash(&history)),
        ops: history.len() as u64,
        idle_ops: t.idle_ops,
        ok: t.ok,
        failed: t.failed,
        indeterminate: t.indeterminate,
        faults,
        node_exits,
        walk_restarts,
        linearizable: t.verdict.linearizable()
            && t.final_keys == chaos::keys_of(cfg.keys, cfg.idle_partitions).len() as u64,
        lost_acked_writes: t.lost_acked_writes,
        undecided_keys: t.verdict.undecided,
        anomaly: t.verdict.anomaly,
        simulated_s: sim.elapsed().as_secs_f64(),
        replay: format!(
            "weft chaos --simulated --seed {} --seconds {} --nodes {} --clients {} --keys {} --idle-partitions {}{}{}",
            cfg.seed,
            cfg.seconds,
            cfg.nodes,
            cfg.clients,
            cfg.keys,
            cfg.idle_partitions,
            if cfg.durable { " --mode durable" } else { "" },
            if cfg.faults.is_empty() {
                String::new()
            } else {
                format!(" --faults {}", cfg.faults.iter().map(|k| k.name()).collect::<Vec<_>>().join(","))
            }
        ),
    };
    Ok((report, history))
}

/// xxh3 over every operation, in the order recorded.
pub fn history_hash(history: &[Op]) -> u64 {
    let mut bytes = Vec::with_capacity(history.len() * 64);
    for o in history {
        let (kind, a, b) = match o.kind {
            OpKind::Read => (0u8, 0, 0),
            OpKind::Write(v) => (1, v, 0),
            OpKind::Cas { expect, new } => (2, expect.map_or(u64::MAX, |e| e), new),
        };
        let (outcome, c) = match o.outcome {
            Outcome::Read(v) => (0u8, v.map_or(u64::MAX, |v| v)),
            Outcome::Written => (1, 0),
            Outcome::Cas(ok) => (2, u64::from(ok)),
            Outcome::Unknown => (3, 0),
        };
        for x in [o.client, o.key, a, b, c, o.call_ns, o.return_ns] {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        bytes.extend_from_slice(&[kind, outcome]);
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
