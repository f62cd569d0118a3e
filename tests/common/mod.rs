//! Test-side wrappers over `weft_testkit::local` (real `weft node` processes on loopback) that
//! panic with a clear message instead of returning errors.
//!
//! Every node a test starts runs with TLS, its certificates made by one CA shared by the
//! test binary ([`weft_testkit::local::Security::shared`]); clients act as `root` ([`root`]) on a
//! managed cluster, as the harness's node-0 identity ([`harness`]) on standalone nodes, and
//! `weft` CLI runs ([`weft`]) find `root`'s certificate through `WEFT_CERTS_DIR`.

#![allow(dead_code, unused_macros)]

use std::path::Path;
use std::time::{Duration, Instant};

use weft::client::ClientConfig;
use weft_security::AuthChannel;
#[allow(unused_imports)]
pub use weft_testkit::local::{LocalNode, Security, membership};

/// The CA and certificates every node of this test binary runs with.
pub fn security() -> Security {
    Security::shared().expect("the shared test CA")
}

/// The shared CA's directory: `ca.crt`, `client.root.crt`, ... (what `WEFT_CERTS_DIR` names).
pub fn certs_dir() -> std::path::PathBuf {
    match security() {
        Security::Tls(pki) => pki.dir().to_path_buf(),
        Security::Insecure => unreachable!("the shared security is TLS"),
    }
}

/// Client settings acting as `root`, for managed clusters.
pub fn root() -> ClientConfig {
    security().root_config().expect("root's client certificate")
}

/// Client settings acting as the harness (node 0), for standalone nodes.
pub fn harness() -> ClientConfig {
    security().harness_config().expect("the harness certificate")
}

/// A channel to `addr` as the harness (node 0).
pub fn channel(addr: &str) -> AuthChannel {
    security().channel(addr).expect("a channel")
}

/// Starts this build's `weft node`.
pub fn start(id: u64, extra: &[&str]) -> LocalNode {
    LocalNode::start(Path::new(env!("CARGO_BIN_EXE_weft")), id, extra).expect("start weft node")
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a partition on `nodes` (replica id = base + node id), initialized by the first,
/// and waits for a primary. Returns the primary's replica id.
pub async fn open_partition(nodes: &[&LocalNode], partition: u64, base: u64) -> u64 {
    weft_testkit::local::open_partition(nodes, partition, base).await.expect("open partition");
    primary(nodes, partition).await
}

/// Waits until one of `nodes` reports itself primary of `partition`; returns its replica id.
pub async fn primary(nodes: &[&LocalNode], partition: u64) -> u64 {
    weft_testkit::local::primary(nodes, partition, Duration::from_secs(20)).await.expect("a primary")
}

/// `n` loopback addresses with ports free right now (see `weft_testkit::local::free_addrs`).
pub fn free_addrs(n: usize) -> Vec<String> {
    weft_testkit::local::free_addrs(n).expect("free loopback ports")
}

/// The Python environment's interpreter (`tests/py/setup.sh` makes it once).
pub fn python() -> String {
    let out = std::process::Command::new("bash").arg("tests/py/setup.sh").output().expect("run tests/py/setup.sh");
    assert!(out.status.success(), "tests/py/setup.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until `ep`'s `ctl nodes` shows `n` nodes up.
pub async fn wait_up(ep: &str, n: usize) {
    wait_for(Duration::from_secs(60), &format!("{n} nodes up"), || async {
        let (ok, out, _) = weft(&["ctl", "--endpoint", ep, "--json", "nodes"]);
        let v: serde_json::Value = if ok { serde_json::from_str(&out).ok()? } else { return None };
        (v.as_array()?.iter().filter(|n| n["state"] == "up").count() == n).then_some(())
    })
    .await;
}

/// Runs the `weft` binary with `args`; returns (success, stdout, stderr).
pub fn weft(args: &[&str]) -> (bool, String, String) {
    weft_with_input(args, &[])
}

/// `weft ctl --endpoint ENDPOINT --json ARGS...`, parsed; panics naming the command if it
/// fails or prints no JSON.
pub fn ctl_json(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["ctl", "--endpoint", endpoint, "--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = weft(&all);
    assert!(ok, "weft {all:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("weft {all:?} printed no JSON ({e}): {out}"))
}

/// [`weft`] with `input` on its standard input.
pub fn weft_with_input(args: &[&str], input: &[u8]) -> (bool, String, String) {
    run_weft(args, input, Some(&certs_dir()))
}

/// Runs the `weft` binary with no credentials in its environment (plaintext, as against
/// `--insecure` nodes).
pub fn weft_plain(args: &[&str]) -> (bool, String, String) {
    run_weft(args, &[], None)
}

/// [`weft`] with `env` set in its environment.
pub fn weft_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    run_weft_env(args, &[], Some(&certs_dir()), env)
}

fn run_weft(args: &[&str], input: &[u8], certs: Option<&std::path::Path>) -> (bool, String, String) {
    run_weft_env(args, input, certs, &[])
}

fn run_weft_env(
    args: &[&str],
    input: &[u8],
    certs: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.envs(env.iter().copied());
    match certs {
        Some(dir) => cmd.env("WEFT_CERTS_DIR", dir),
        None => cmd.env_remove("WEFT_CERTS_DIR"),
    };
    let mut child = cmd
        .args(args)
        .env_remove("WEFT_USER")
        .env_remove("WEFT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weft");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).expect("write weft's standard input");
    }
    let out = child.wait_with_output().expect("wait for weft");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A channel to `addr` holding node `id`'s own certificate, for a test that speaks as that
/// node (a report it sends late).
pub fn channel_as_node(id: u64, addr: &str) -> AuthChannel {
    let Security::Tls(pki) = security() else { unreachable!("the shared security is TLS") };
    let dir = pki.node_dir(id).expect("node certificates");
    let creds = weft_security::Credentials::load(&dir, weft_security::Holder::Node { id: Some(id) }).expect("load");
    weft_testkit::local::channel(&weft_security::ClientSecurity::tls(creds), addr).expect("a channel")
}

/// `GET path` over HTTPS (HTTP/1.0: the server closes when done) with `security`'s
/// certificate, or with none when `security` has no credentials but the shared CA is used
/// to verify the node. Returns the status line and body.
pub async fn https_get(addr: &str, path: &str, security: &weft_security::ClientSecurity) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let creds = match &security.tls {
        Some(c) => c.clone(),
        None => weft_security::Credentials::load(&certs_dir(), weft_security::Holder::Client { user: None })
            .expect("the CA"),
    };
    let mut config = (*creds.current().client).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to metrics");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.expect("TLS");
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: weft\r\n");
    if let Some(t) = &security.token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await.expect("send");
    let mut body = Vec::new();
    let _ = tls.read_to_end(&mut body).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// The fault-injection service of a node started with `--fault-injection`, as the harness.
pub fn faults(node: &LocalNode) -> weft_proto::testing::v1::faults_client::FaultsClient<AuthChannel> {
    weft_proto::testing::v1::faults_client::FaultsClient::new(channel(&node.addr))
}

/// Runs each named test function (generic over `weft_testkit::world::Cluster`) in both
/// worlds, in-process and as processes, on the cluster its options ask for.
macro_rules! two_worlds {
    ($($name:ident: $options:expr),* $(,)?) => {$(
        mod $name {
            use weft_testkit::world::{InProcess, Options, Processes};

            #[allow(unused_imports)]
            use std::time::Duration;

            fn options() -> Options {
                $options
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process() {
                let mut c = InProcess::start(&options()).expect("starting in-process nodes");
                super::$name(&mut c).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn processes() {
                let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
                let mut c = Processes::start(exe, &options()).expect("starting node processes");
                super::$name(&mut c).await;
            }
        }
    )*};
}
