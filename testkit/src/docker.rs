//! The containers of `deploy/compose.yaml` as the nodes of a fault run (`deploy/chaos.sh`):
//! faults land on real hosts and real networks, not on processes and calls inside a node.
//!
//! - `kill` and restart: `docker kill` (SIGKILL), then `docker start`;
//! - `pause`: `docker pause` (the cgroup freezer), then `docker unpause`;
//! - link cuts: packet filters in each container's own network namespace, entered from
//!   this host with `nsenter` (`iptables` drops the peers' addresses both ways, in a chain
//!   of its own, `WEFT_CHAOS`, flushed to heal). The host's clients come in through the
//!   published ports from the bridge's gateway, which is never dropped, so a cut-off
//!   primary that kept answering would show up as a stale read;
//! - latency and loss: `tc qdisc ... netem` on the container's interface, where the kernel
//!   has the netem scheduler ([`Containers::netem_available`] says);
//! - replacing a container (a rolling upgrade): `docker stop` (SIGTERM: the node hands
//!   its primaries off), then `docker-compose up --force-recreate` of that one service,
//!   a new container on the same volume.
//!
//! Container `weftN` is node N. Addresses are read from Docker at each cut: a container
//! started again may have a new one, as its peers find through DNS.
//!
//! Never depends on how the nodes inside are started; only on the compose file's names.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::local::cluster_err;

/// The chain holding a container's link cuts.
const CHAIN: &str = "WEFT_CHAOS";

/// A compose cluster's node containers.
#[derive(Clone, Debug)]
pub struct Containers {
    /// `deploy/compose.yaml`.
    compose_file: PathBuf,
    /// Node ids, 1-based: container `weft<id>`.
    count: usize,
}

/// Runs `program args` to its end; its stdout, or why it failed.
fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| cluster_err(format!("{program}: {e} (is it installed?)")))?;
    if !out.status.success() {
        return Err(cluster_err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// [`run`] off the async runtime's threads (docker answers in tens of milliseconds, a stop
/// in seconds).
async fn run_async(program: &'static str, args: Vec<String>) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &args)
    })
    .await
    .map_err(cluster_err)?
}

impl Containers {
    /// The `count` node containers of the compose file at `compose_file` (already up).
    pub fn new(compose_file: &Path, count: usize) -> Self {
        Containers { compose_file: compose_file.to_path_buf(), count }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn name(i: usize) -> String {
        format!("weft{}", i + 1)
    }

    /// SIGKILLs node `i` (0-based).
    pub async fn kill(&self, i: usize) -> Result<(), Error> {
        run_async("docker", vec!["kill".into(), "--signal=KILL".into(), Self::name(i)]).await.map(drop)
    }

    /// Starts node `i`'s container again (its volume and name kept).
    pub async fn start(&self, i: usize) -> Result<(), Error> {
        run_async("docker", vec!["start".into(), Self::name(i)]).await.map(drop)
    }

    /// Freezes node `i`'s processes.
    pub async fn pause(&self, i: usize) -> Result<(), Error> {
        run_async("docker", vec!["pause".into(), Self::name(i)]).await.map(drop)
    }

    /// Thaws node `i`'s processes.
    pub async fn resume(&self, i: usize) -> Result<(), Error> {
        run_async("docker", vec!["unpause".into(), Self::name(i)]).await.map(drop)
    }

    /// Stops node `i` gracefully (SIGTERM, up to `grace_s` seconds), then replaces its
    /// container with a new one from the compose file, on the same volume.
    pub async fn replace(&self, i: usize, grace_s: u32) -> Result<(), Error> {
        run_async("docker", vec!["stop".into(), format!("--time={grace_s}"), Self::name(i)]).await?;
        let file = self.compose_file.display().to_string();
        let args = ["-f", &file, "up", "-d", "--no-deps", "--force-recreate", &Self::name(i)];
        run_async("docker-compose", args.iter().map(|s| s.to_string()).collect()).await.map(drop)
    }

    /// Node `i`'s main process id on this host (`None`: not running).
    fn pid(i: usize) -> Option<String> {
        let pid = run("docker", &["inspect", "--format={{.State.Pid}}", &Self::name(i)]).ok()?;
        (!pid.is_empty() && pid != "0").then_some(pid)
    }

    /// Node `i`'s address on the compose network (`None`: not running).
    pub fn ip(i: usize) -> Option<String> {
        let format = "--format={{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";
        let ips = run("docker", &["inspect", format, &Self::name(i)]).ok()?;
        ips.split_whitespace().next().map(str::to_string)
    }

    /// Runs `program args` inside node `i`'s network namespace.
    fn in_netns(pid: &str, program: &str, args: &[&str]) -> Result<String, Error> {
        let mut all = vec!["--target", pid, "--net", "--", program];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// Makes node `i` drop every packet to or from the peers `reach` says it cannot reach
    /// (node indexes); `reach = |_, _| true` heals. Nodes not running are skipped (a node
    /// started again comes up in a new namespace, with no cut).
    pub async fn cut(&self, reach: impl Fn(usize, usize) -> bool) -> Result<(), Error> {
        let plan: Vec<Vec<usize>> =
            (0..self.count).map(|i| (0..self.count).filter(|&j| j != i && !reach(i, j)).collect()).collect();
        let count = self.count;
        tokio::task::spawn_blocking(move || {
            let ips: Vec<Option<String>> = (0..count).map(Self::ip).collect();
            for (i, drop_from) in plan.iter().enumerate() {
                let Some(pid) = Self::pid(i) else { continue };
                Self::ensure_chain(&pid)?;
                Self::in_netns(&pid, "iptables", &["-w", "-F", CHAIN])?;
                for ip in drop_from.iter().filter_map(|&j| ips[j].as_deref()) {
                    Self::in_netns(&pid, "iptables", &["-w", "-A", CHAIN, "-s", ip, "-j", "DROP"])?;
                    Self::in_netns(&pid, "iptables", &["-w", "-A", CHAIN, "-d", ip, "-j", "DROP"])?;
                }
            }
            Ok(())
        })
        .await
        .map_err(cluster_err)?
    }

    /// The chain, and the jumps to it from INPUT and OUTPUT, in the namespace of `pid`.
    fn ensure_chain(pid: &str) -> Result<(), Error> {
        if Self::in_netns(pid, "iptables", &["-w", "-n", "-L", CHAIN]).is_err() {
            Self::in_netns(pid, "iptables", &["-w", "-N", CHAIN])?;
        }
        for hook in ["INPUT", "OUTPUT"] {
            if Self::in_netns(pid, "iptables", &["-w", "-C", hook, "-j", CHAIN]).is_err() {
                Self::in_netns(pid, "iptables", &["-w", "-I", hook, "-j", CHAIN])?;
            }
        }
        Ok(())
    }

    /// Adds `delay_ms` (with `jitter_ms`) and `loss_pct` to every packet node `i` sends;
    /// `None` removes it.
    pub async fn netem(&self, i: usize, shape: Option<(u32, u32, u32)>) -> Result<(), Error> {
        tokio::task::spawn_blocking(move || {
            let Some(pid) = Self::pid(i) else { return Ok(()) };
            match shape {
                Some((delay, jitter, loss)) => {
                    let (d, j, l) = (format!("{delay}ms"), format!("{jitter}ms"), format!("{loss}%"));
                    let args = ["qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &d, &j, "loss", &l];
                    Self::in_netns(&pid, "tc", &args).map(drop)
                }
                // Already gone (the container was started again) is healed too.
                None => {
                    let _ = Self::in_netns(&pid, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
                    Ok(())
                }
            }
        })
        .await
        .map_err(cluster_err)?
    }

    /// Whether latency and loss can be injected here (the kernel has netem and this
    /// process may change a container's queueing): tried on node 1 and taken back.
    pub async fn netem_available(&self) -> bool {
        let ok = self.netem(0, Some((1, 0, 0))).await.is_ok();
        if ok {
            let _ = self.netem(0, None).await;
        }
        ok
    }

    /// Whether links can be cut here (`nsenter` and `iptables` work on node 1's
    /// namespace).
    pub async fn cuts_available(&self) -> Result<(), Error> {
        let pid = tokio::task::spawn_blocking(|| Self::pid(0)).await.map_err(cluster_err)?;
        let pid = pid.ok_or_else(|| cluster_err("node 1's container is not running"))?;
        tokio::task::spawn_blocking(move || Self::ensure_chain(&pid)).await.map_err(cluster_err)?
    }
}
