//! Local clusters for `weft bench kv` when no endpoint is given: `weft node` processes,
//! or (with the `etcd` feature) `etcd` members, on loopback with the same member count.
//!
//! etcd without fsync: the flag `--unsafe-no-fsync` is used when the binary has it (etcd
//! 3.5, and late 3.4 builds); Debian's 3.4.23 lacks it, and then the members keep their
//! data on tmpfs (`/dev/shm`), where fsync returns at once: the same effect, named in the
//! report's `etcd_fsync`.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::{KvConfig, KvReport, Target, Workload};
use crate::Error;
use crate::local::{LocalNode, Security, cluster_err, free_addrs, ready_service, start_managed};
use weft_client::client::ClientConfig;

/// Replicas per weft partition in a local cluster (fewer when there are fewer nodes).
const REPLICAS: u32 = 4;

/// A local weft cluster; its nodes stop when it is dropped.
pub struct WeftCluster {
    _nodes: Vec<LocalNode>,
    /// Every node's address.
    pub endpoints: Vec<String>,
    /// How a client reaches it (as `root`, over TLS unless the cluster is `--insecure`).
    pub config: ClientConfig,
    _security: Security,
    _data: Option<TempDir>,
}

/// Starts `members` managed nodes (durable logs under a temporary directory if `durable`,
/// TLS unless `tls` is false) and a `service` of `partitions` partitions whose primaries
/// are all elected.
pub async fn start_weft(
    exe: &Path,
    members: usize,
    durable: bool,
    tls: bool,
    service: &str,
    partitions: u32,
) -> Result<WeftCluster, Error> {
    let addrs = free_addrs(members)?;
    let data = if durable { Some(tempfile::tempdir().map_err(cluster_err)?) } else { None };
    let security = Security::new(tls)?;
    let dir = data.as_ref().map(|d| d.path());
    let nodes = start_managed(exe, &addrs, members, dir, durable, &security, |_| Vec::new())?;
    let replicas = REPLICAS.min(members as u32);
    let config = security.root_config()?;
    ready_service(&config, &addrs, members, service, partitions, replicas, Duration::from_secs(60)).await?;
    Ok(WeftCluster { _nodes: nodes, endpoints: addrs, config, _security: security, _data: data })
}

/// Loads and runs `workloads` on a local weft cluster started for them (see [`start_weft`]).
#[allow(clippy::too_many_arguments)]
pub async fn run_weft(
    exe: &Path,
    members: usize,
    durable: bool,
    tls: bool,
    service: &str,
    partitions: u32,
    cfg: &KvConfig,
    workloads: &[Workload],
) -> Result<KvReport, Error> {
    let cluster = start_weft(exe, members, durable, tls, service, partitions).await?;
    let mode = if durable { "durable" } else { "volatile" };
    let security = if tls { "TLS" } else { "plaintext" };
    let name = format!("weft ({members} nodes, {mode}, {security}, {partitions} partitions)");
    let target = Target::weft(cluster.endpoints.clone(), service, cluster.config.clone());
    super::run(&target, name, cfg, workloads).await
}

#[cfg(feature = "etcd")]
pub use etcd::{EtcdCluster, run_etcd, start_etcd};

#[cfg(feature = "etcd")]
mod etcd {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use tempfile::TempDir;
    use weft_security::issue::{self, Validity};

    use crate::Error;
    use crate::local::{Pki, cluster_err, free_addrs};
    use crate::ycsb::{KvConfig, KvReport, Target, Workload};

    /// Loads and runs `workloads` on a local etcd cluster started for them (TLS between
    /// members and for the client when `tls`, as weft runs); returns the report and how
    /// fsync was set.
    pub async fn run_etcd(
        bin: &Path,
        members: usize,
        fsync: bool,
        tls: bool,
        cfg: &KvConfig,
        workloads: &[Workload],
    ) -> Result<(KvReport, String), Error> {
        let cluster = start_etcd(bin, members, fsync, tls).await?;
        let target = Target::etcd(&cluster.endpoints, cluster.tls_options()).await?;
        let security = if tls { "TLS" } else { "plaintext" };
        let name = format!("etcd ({members} members, fsync {}, {security})", cluster.fsync);
        Ok((crate::ycsb::run(&target, name, cfg, workloads).await?, cluster.fsync.clone()))
    }

    /// A local etcd cluster; its members are killed when it is dropped.
    pub struct EtcdCluster {
        children: Vec<Child>,
        /// Every member's client URL.
        pub endpoints: Vec<String>,
        /// How fsync was handled: `on`, or how it was turned off.
        pub fsync: String,
        /// The CA, client certificate and key (PEM) a client presents, when TLS is on.
        tls: Option<(String, String, String)>,
        _data: TempDir,
    }

    impl EtcdCluster {
        /// How an etcd client reaches the members.
        pub fn tls_options(&self) -> Option<etcd_client::TlsOptions> {
            self.tls.as_ref().map(|(ca, cert, key)| {
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(ca))
                    .identity(etcd_client::Identity::from_pem(cert, key))
            })
        }

        /// The members' process ids.
        pub fn pids(&self) -> Vec<u32> {
            self.children.iter().map(Child::id).collect()
        }
    }

    impl Drop for EtcdCluster {
        fn drop(&mut self) {
            for c in &mut self.children {
                // Already gone is fine: all that matters is that it is not left running.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn has_flag(bin: &Path, flag: &str) -> bool {
        Command::new(bin).arg("--help").output().is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains(flag) || String::from_utf8_lossy(&o.stderr).contains(flag)
        })
    }

    /// Starts `members` etcd members from `bin` (with `tls`: client and peer TLS, client
    /// certificates required on both, certificates made by a CA of weft's) and waits until
    /// the cluster takes a write.
    pub async fn start_etcd(bin: &Path, members: usize, fsync: bool, tls: bool) -> Result<EtcdCluster, Error> {
        let no_fsync_flag = !fsync && has_flag(bin, "--unsafe-no-fsync");
        let on_tmpfs = !fsync && !no_fsync_flag;
        let data = if on_tmpfs { tempfile::tempdir_in("/dev/shm") } else { tempfile::tempdir() };
        let data = data.map_err(|e| cluster_err(format!("etcd data directory: {e}")))?;
        let fsync_note = match (fsync, no_fsync_flag) {
            (true, _) => "on".to_string(),
            (false, true) => "off: --unsafe-no-fsync".to_string(),
            (false, false) => "off: data on tmpfs (this etcd has no --unsafe-no-fsync)".to_string(),
        };
        let scheme = if tls { "https" } else { "http" };
        let pki = if tls { Some(Pki::create(&data.path().join("certs"))?) } else { None };
        let addrs = free_addrs(2 * members)?;
        let (client, peer) = addrs.split_at(members);
        let initial: Vec<String> = peer.iter().enumerate().map(|(i, p)| format!("e{}={scheme}://{p}", i + 1)).collect();
        let initial = initial.join(",");
        let mut children = Vec::new();
        for i in 0..members {
            let dir: PathBuf = data.path().join(format!("e{}", i + 1));
            let log = std::fs::File::create(data.path().join(format!("e{}.log", i + 1))).map_err(cluster_err)?;
            let mut cmd = Command::new(bin);
            cmd.args(["--name", &format!("e{}", i + 1)])
                .arg("--data-dir")
                .arg(&dir)
                .args(["--listen-client-urls", &format!("{scheme}://{}", client[i])])
                .args(["--advertise-client-urls", &format!("{scheme}://{}", client[i])])
                .args(["--listen-peer-urls", &format!("{scheme}://{}", peer[i])])
                .args(["--initial-advertise-peer-urls", &format!("{scheme}://{}", peer[i])])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "weft-bench-kv", "--logger", "zap", "--log-level", "error"]);
            if no_fsync_flag {
                cmd.arg("--unsafe-no-fsync");
            }
            if let Some(pki) = &pki {
                // A node certificate of weft's CA: server and client use, 127.0.0.1 named.
                let certs = data.path().join(format!("e{}-certs", i + 1));
                let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
                let issued = pki.ca().node(100 + i as u64, &hosts, Validity::days(1)).map_err(cluster_err)?;
                issue::write_pair(&certs, "member.crt", "member.key", &issued, true).map_err(cluster_err)?;
                let (cert, key, ca) = (certs.join("member.crt"), certs.join("member.key"), pki.dir().join("ca.crt"));
                for (flag, path) in [
                    ("--cert-file", &cert),
                    ("--key-file", &key),
                    ("--trusted-ca-file", &ca),
                    ("--peer-cert-file", &cert),
                    ("--peer-key-file", &key),
                    ("--peer-trusted-ca-file", &ca),
                ] {
                    cmd.arg(flag).arg(path);
                }
                cmd.args(["--client-cert-auth", "--peer-client-cert-auth"]);
            }
            let err = log.try_clone().map_err(cluster_err)?;
            let child = cmd.stdin(Stdio::null()).stdout(log).stderr(err).spawn().map_err(|e| {
                cluster_err(format!("starting {}: {e} (benches/vs-etcd.sh installs etcd)", bin.display()))
            })?;
            children.push(child);
        }
        let endpoints: Vec<String> = client.iter().map(|c| format!("{scheme}://{c}")).collect();
        let tls = match &pki {
            None => None,
            Some(p) => {
                let read = |name: &str| std::fs::read_to_string(p.dir().join(name)).map_err(cluster_err);
                Some((read("ca.crt")?, read("client.root.crt")?, read("client.root.key")?))
            }
        };
        let cluster = EtcdCluster { children, endpoints, fsync: fsync_note, tls, _data: data };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = async {
                let options = cluster.tls_options().map(|t| etcd_client::ConnectOptions::new().with_tls(t));
                let c = etcd_client::Client::connect(&cluster.endpoints, options).await?;
                c.kv_client().put("weft-bench-ready", "1", None).await
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(_)) => return Ok(cluster),
                _ if Instant::now() > deadline => {
                    return Err(cluster_err(format!(
                        "etcd did not take a write within 30 s (logs in {})",
                        cluster._data.path().display()
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}
