//! Test-side wrappers over `weft::local` (real `weft node` processes on loopback) that
//! panic with a clear message instead of returning errors.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use weft::local::{LocalNode, membership};

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
    weft::local::open_partition(nodes, partition, base).await.expect("open partition");
    primary(nodes, partition).await
}

/// Waits until one of `nodes` reports itself primary of `partition`; returns its replica id.
pub async fn primary(nodes: &[&LocalNode], partition: u64) -> u64 {
    weft::local::primary(nodes, partition, Duration::from_secs(20)).await.expect("a primary")
}

/// `n` loopback addresses with ports free right now (see `weft::local::free_addrs`).
pub fn free_addrs(n: usize) -> Vec<String> {
    weft::local::free_addrs(n).expect("free loopback ports")
}

/// Runs the `weft` binary with `args`; returns (success, stdout, stderr).
pub fn weft(args: &[&str]) -> (bool, String, String) {
    weft_with_input(args, &[])
}

/// [`weft`] with `input` on its standard input.
pub fn weft_with_input(args: &[&str], input: &[u8]) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
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
