//! `weft node`: one node process, from its flags to a running `weft::Node` (the same
//! node a service embeds), stopped gracefully on Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Args;

use crate::{init_tracing, runtime};

#[derive(Args)]
pub(crate) struct NodeArgs {
    /// Node id, 1 to 1048575: a seed's id is also its cluster-map replica's id, and the
    /// ids above are the ones the map gives replicas.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..weft::node::FIRST_REPLICA_ID), required_unless_present = "id_from_hostname")]
    id: Option<u64>,
    /// Take the id from the host name's trailing ordinal plus one (`weft-0` is node 1), as a
    /// Kubernetes StatefulSet names its pods.
    #[arg(long, conflicts_with = "id")]
    id_from_hostname: bool,
    /// Address to serve gRPC on (port 0 picks a free port; the bound address is printed).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The address peers and clients dial, when it is not --listen's: a host name where
    /// the node listens on 0.0.0.0 (containers, Kubernetes). Resolved at each connection;
    /// --seeds name seed nodes by it.
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    advertise: Option<String>,
    /// The address clients outside the nodes' network dial, e.g. a port a container
    /// publishes on its host; clients that reach the cluster through one use them all.
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    advertise_client: Option<String>,
    /// Upgrade domain [default: WEFT_UD, else ud0]. In Kubernetes WEFT_UD comes from the
    /// pod's zone label; set but empty (the label missing) it is ud0.
    #[arg(long, value_parser = domain_name)]
    ud: Option<String>,
    /// Fault domain [default: WEFT_FD, else fd0]. In Kubernetes WEFT_FD is the machine the
    /// pod runs on; set but empty it is fd0.
    #[arg(long, value_parser = domain_name)]
    fd: Option<String>,
    /// Seed nodes (cluster manager), comma-separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<String>,
    /// Directory for durable logs and checkpoints.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Durable log mode (write-ahead log and checkpoints under --data-dir); WEFT_DURABLE
    /// (true or false) sets it from the environment, as a container's compose file does.
    #[arg(long, env = "WEFT_DURABLE")]
    durable: bool,
    /// Address for Prometheus metrics.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Seconds a silent node may go before the cluster manager marks it down and replaces
    /// its replicas.
    #[arg(long, default_value_t = 10.0)]
    down_grace: f64,
    /// Seconds between the cluster manager's own balancing rounds (0: only on command).
    #[arg(long, default_value_t = 60.0)]
    balance_every: f64,
    /// Seconds a move's new replica may make no progress (log, applied index, snapshot
    /// bytes) before the cluster manager abandons the move and plans again.
    #[arg(long, default_value_t = 120.0)]
    move_stall_s: f64,
    /// Most replicas this node takes.
    #[arg(long, default_value_t = 1000)]
    capacity_replicas: u32,
    /// Most engine memory (MiB) this node's replicas may hold.
    #[arg(long, default_value_t = 65536)]
    capacity_memory_mib: u64,
    /// Raft heartbeat interval, milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Raft election timeout lower bound, milliseconds (upper: twice it).
    #[arg(long, default_value_t = 400)]
    election_timeout_ms: u64,
    /// Log entries between snapshots.
    #[arg(long, default_value_t = 20_000)]
    snapshot_every: u64,
    /// Log entries kept behind a snapshot for slow followers.
    #[arg(long, default_value_t = 5_000)]
    keep_behind_snapshot: u64,
    /// KiB of recent committed changes each replica keeps for watchers (`weft kv watch`):
    /// how far behind a watcher may resume or fall before it is told the versions it
    /// needs are gone.
    #[arg(long, default_value_t = 32768, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    watch_history_kib: u64,
    /// Directory with ca.crt, node.crt and node.key (weft cert create-node makes them);
    /// WEFT_CERTS_DIR when not given (and not --insecure).
    #[arg(long)]
    certs_dir: Option<std::path::PathBuf>,
    /// Run without TLS or authentication: anyone who reaches a port may do anything.
    #[arg(long)]
    insecure: bool,
    /// Serve fault injection (`weft.testing.v1.Faults`: operators may cut this node's
    /// links): for `weft chaos` and tests, never for production.
    #[arg(long)]
    fault_injection: bool,
    /// Client connections held at once (past it, new ones are refused); node connections
    /// are not counted.
    #[arg(long, default_value_t = 4096)]
    max_client_connections: usize,
    /// Seconds a connection may go with no request in flight before it is closed.
    #[arg(long, default_value_t = 300.0)]
    idle_timeout_s: f64,
    /// Seconds a TLS handshake may take.
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout_s: f64,
    /// Requests one client may have in flight on this node at once.
    #[arg(long, default_value_t = 10_000)]
    client_in_flight_max: usize,
    /// Seconds a unary request may take (a client's shorter deadline wins).
    #[arg(long, default_value_t = 120.0)]
    request_deadline_s: f64,
    /// On Ctrl-C or SIGTERM: seconds to wait until stopping loses no partition its quorum (its other
    /// voters' nodes up); then the node hands its primaries off and stops. If stopping is
    /// still unsafe then, it says which partitions hold it up, keeps serving and tries
    /// again (stopping once it is safe); a second signal stops it at once.
    #[arg(long, default_value_t = 30.0)]
    stop_wait_s: f64,
}

/// `HOST:PORT`, a host being a name or an address (`[v6]:port` for IPv6).
fn host_port(s: &str) -> Result<String, String> {
    let (host, port) = s.rsplit_once(':').ok_or("HOST:PORT")?;
    port.parse::<u16>().ok().filter(|p| *p != 0).ok_or("the port must be 1 to 65535")?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err("HOST:PORT, the host a name or an address".into());
    }
    Ok(s.to_string())
}

/// An upgrade or fault domain's name: placement compares them, so it must say something.
fn domain_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("1 to 64 characters, no spaces".into());
    }
    Ok(s.to_string())
}

/// A domain: the flag, else the environment variable `var` unless empty (a Kubernetes
/// label the machine lacks, as a single-zone cluster's), else `default`.
fn domain(flag: Option<String>, var: &str, default: &str) -> anyhow::Result<String> {
    match flag {
        Some(d) => Ok(d),
        None => match std::env::var(var) {
            Ok(v) if !v.is_empty() => domain_name(&v).map_err(|e| anyhow::anyhow!("{var}={v:?}: {e}")),
            _ => Ok(default.to_string()),
        },
    }
}

/// This host's name: HOSTNAME (Docker and Kubernetes set it), else /etc/hostname.
pub(crate) fn hostname() -> String {
    let name = std::env::var("HOSTNAME").ok().or_else(|| std::fs::read_to_string("/etc/hostname").ok());
    name.unwrap_or_default().trim().to_string()
}

/// The node id a StatefulSet pod's host name gives: its trailing ordinal plus one.
pub(crate) fn id_from_hostname(hostname: &str) -> anyhow::Result<u64> {
    let ordinal = hostname.rsplit_once('-').map(|(_, n)| n).unwrap_or_default();
    let id = ordinal.parse::<u64>().ok().and_then(|n| n.checked_add(1)).filter(|id| *id < weft::node::FIRST_REPLICA_ID);
    id.with_context(|| format!("--id-from-hostname: host name {hostname:?} does not end in -ORDINAL"))
}

pub(crate) fn run(mut a: NodeArgs) -> anyhow::Result<()> {
    let id = match a.id {
        Some(id) => id,
        None => id_from_hostname(&hostname())?,
    };
    a.id = Some(id);
    let (ud, fd) = (domain(a.ud.take(), "WEFT_UD", "ud0")?, domain(a.fd.take(), "WEFT_FD", "fd0")?);
    if a.durable && a.data_dir.is_none() {
        anyhow::bail!("--durable needs --data-dir DIR (where the write-ahead logs and checkpoints go)");
    }
    if !(a.down_grace.is_finite() && a.down_grace > 0.0) {
        anyhow::bail!("--down-grace must be a positive number of seconds");
    }
    if !(a.balance_every.is_finite() && a.balance_every >= 0.0) {
        anyhow::bail!("--balance-every must be a non-negative number of seconds");
    }
    if !(a.move_stall_s.is_finite() && a.move_stall_s > 0.0) {
        anyhow::bail!("--move-stall-s must be a positive number of seconds");
    }
    if a.listen.ip().is_unspecified() && a.advertise.is_none() && !a.seeds.is_empty() {
        anyhow::bail!(
            "--listen {} needs --advertise HOST:PORT: the address peers and clients dial (this node's host name)",
            a.listen
        );
    }
    let seconds = [a.idle_timeout_s, a.handshake_timeout_s, a.request_deadline_s, a.stop_wait_s];
    if seconds.iter().any(|s| !(s.is_finite() && *s > 0.0))
        || a.max_client_connections == 0
        || a.client_in_flight_max == 0
    {
        anyhow::bail!("the connection and request limits must be positive");
    }
    let certs_dir = a
        .certs_dir
        .clone()
        .or_else(|| (!a.insecure).then(|| std::env::var_os("WEFT_CERTS_DIR").map(std::path::PathBuf::from)).flatten());
    let tls = match (&certs_dir, a.insecure) {
        (Some(dir), false) => Some(
            weft_security::Credentials::load(dir, weft_security::Holder::Node { id: Some(id) })
                .with_context(|| format!("loading node {id}'s certificates from {}", dir.display()))?,
        ),
        (None, true) => None,
        (None, false) => anyhow::bail!(
            "no certificates: give --certs-dir DIR (ca.crt, node.crt, node.key; `weft cert create-node` makes them) \
             or --insecure to run without TLS or authentication"
        ),
        (Some(_), true) => anyhow::bail!("--certs-dir and --insecure exclude each other"),
    };
    init_tracing();
    if tls.is_none() {
        tracing::warn!(
            "INSECURE: --insecure given: no TLS, no authentication; anyone who reaches {} may read, write and \
             reconfigure the cluster",
            a.listen
        );
    }
    let config = weft::node::NodeConfig {
        id,
        listen: a.listen,
        raft: weft_replica::RaftSettings {
            heartbeat: std::time::Duration::from_millis(a.heartbeat_ms),
            election_timeout: std::time::Duration::from_millis(a.election_timeout_ms),
            snapshot_every: a.snapshot_every,
            keep_behind_snapshot: a.keep_behind_snapshot,
            watch_history_bytes: (a.watch_history_kib << 10) as usize,
            ..Default::default()
        },
        transport: Default::default(),
        limits: Default::default(),
        storage: weft_replica::Storage {
            data_dir: a.data_dir.clone(),
            durable_by_default: a.durable,
            ..Default::default()
        },
        cluster: weft::node::ClusterConfig {
            seeds: a.seeds.clone(),
            ud: ud.clone(),
            fd: fd.clone(),
            capacity_replicas: a.capacity_replicas,
            capacity_memory_bytes: a.capacity_memory_mib << 20,
            down_grace: std::time::Duration::from_secs_f64(a.down_grace),
            balance_every: (a.balance_every > 0.0).then(|| std::time::Duration::from_secs_f64(a.balance_every)),
            move_stall: std::time::Duration::from_secs_f64(a.move_stall_s),
            advertise: a.advertise.clone(),
            advertise_client: a.advertise_client.clone(),
            ..Default::default()
        },
        metrics: a.metrics,
        security: weft::node::NodeSecurity {
            tls,
            connections: weft_security::server::ServerLimits {
                handshake_timeout: std::time::Duration::from_secs_f64(a.handshake_timeout_s),
                client_connections_max: a.max_client_connections,
                idle_timeout: std::time::Duration::from_secs_f64(a.idle_timeout_s),
                ..Default::default()
            },
            requests: weft_security::gate::GateLimits {
                client_in_flight_max: a.client_in_flight_max,
                request_deadline: std::time::Duration::from_secs_f64(a.request_deadline_s),
            },
            fault_injection: a.fault_injection,
        },
        network: None,
        restart: Some(weft::node::RestartHook::new(reexecute)),
    };
    runtime()?.block_on(async move {
        let node = weft::Node::from_config(config)
            .stop_wait(std::time::Duration::from_secs_f64(a.stop_wait_s))
            .start()
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let addr = node.addr();
        // Caught from before the node says it listens: a signal right after that line
        // must find the handler in place.
        let signals = stop_signals();
        // The one line scripts and tests read to learn the bound address.
        // Errors ignored: whoever started the node may have stopped reading (a node
        // restarted in place by an upgrade walk prints this again into a closed pipe).
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "weft node {id} listening on {addr} (ud {ud}, fd {fd})");
        let _ = out.flush();
        tracing::info!(id, %addr, advertised = %node.advertised(), seeds = ?a.seeds, data_dir = ?a.data_dir, "node started");
        node.run_until(|| {
            let signals = signals.clone();
            async move { signals.notified().await }
        })
        .await
        .context("serving")?;
        Ok(())
    })
}

/// Ctrl-C (SIGINT) and SIGTERM (what `docker stop`, Kubernetes and systemd send), each
/// one a permit of the returned `Notify`: the first stops the node gracefully, a second
/// at once.
fn stop_signals() -> std::sync::Arc<tokio::sync::Notify> {
    use tokio::signal::unix::{SignalKind, signal};
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    let n = notify.clone();
    tokio::spawn(async move {
        let (mut term, mut interrupt) = match (term, interrupt) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "signals cannot be caught; the node stops only when killed");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            n.notify_one();
        }
    });
    notify
}

/// How `weft node` restarts itself when an upgrade walk asks: it re-executes its binary
/// with the same arguments, so a binary replaced on disk is the upgrade. Exits if that
/// fails (a supervisor then starts it).
fn reexecute() {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::error!(error = %e, "finding this binary to restart it failed; exiting");
            std::process::exit(1);
        }
    };
    tracing::warn!(exe = %exe.display(), "restarting: re-executing the node binary");
    let err = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).exec();
    tracing::error!(error = %err, "re-executing the node binary failed; exiting");
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::id_from_hostname;

    #[test]
    fn a_statefulset_pod_s_ordinal_gives_its_id() {
        assert_eq!(id_from_hostname("weft-0").unwrap(), 1);
        assert_eq!(id_from_hostname("my-weft-12").unwrap(), 13);
        assert!(id_from_hostname("weft").is_err());
        assert!(id_from_hostname("weft-x").is_err());
        assert!(id_from_hostname("").is_err());
    }
}
