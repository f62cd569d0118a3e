//! `examples/registry.rs`, a service embedding `weft::Node`, run as three processes: they
//! form a cluster, serve check-ins over HTTP from any process, and when one process is
//! killed the other two go on serving with every acknowledged check-in readable.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_testkit::local::Security;

/// The example's binary, which `cargo test` builds beside the test binaries.
fn example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("this test's path");
    let target = exe.parent().and_then(|deps| deps.parent()).expect("the target directory");
    let bin = target.join("examples").join("registry");
    assert!(bin.exists(), "{} is missing: `cargo test` builds it (or `cargo build --example registry`)", bin.display());
    bin
}

/// A process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.0 request (the server closes when done): the status code and body.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("{method} {path} HTTP/1.0\r\nHost: registry\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_registry_processes_serve_and_lose_nothing_when_one_is_killed() {
    let Security::Tls(pki) = common::security() else { unreachable!("the shared security is TLS") };
    let grpc = common::free_addrs(3);
    let web = common::free_addrs(3);
    let seeds = grpc.join(",");
    let mut procs: Vec<Option<Process>> = (1..=3u64)
        .map(|id| {
            let i = id as usize - 1;
            let certs = pki.node_dir(id).expect("node certificates");
            let child = Command::new(example())
                .args(["--id", &id.to_string(), "--listen", &grpc[i], "--http", &web[i], "--seeds", &seeds])
                .arg("--certs-dir")
                .arg(certs)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("start the example");
            Some(Process(child))
        })
        .collect();
    for addr in &web {
        wait_for(Duration::from_secs(90), &format!("registry at {addr} ready"), || async {
            http(addr, "GET", "/ready", "").await.filter(|(c, _)| *c == 200)
        })
        .await;
    }

    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..60 {
        let (device, status) = (format!("d{i}"), format!("online-{i}"));
        let (code, body) = http(&web[i % 3], "PUT", &format!("/devices/{device}"), &status).await.expect("an answer");
        assert_eq!(code, 200, "{body}");
        acked.insert(device, status);
    }
    // Every process reads every device, its own primaries in process.
    for addr in &web {
        for (device, status) in &acked {
            let (code, body) = http(addr, "GET", &format!("/devices/{device}"), "").await.expect("an answer");
            assert_eq!(code, 200, "{body}");
            assert!(body.contains(&format!("\"status\":\"{status}\"")), "{addr} {device}: {body}");
        }
    }
    let (code, roles) = http(&web[0], "GET", "/roles", "").await.expect("an answer");
    assert_eq!(code, 200);
    assert!(roles.contains("\"partition\""), "{roles}");

    // Kill the second process outright; the other two keep serving, losing nothing.
    procs[1].take();
    for i in 60..100 {
        let (device, status) = (format!("d{i}"), format!("after-{i}"));
        let addr = &web[if i % 2 == 0 { 0 } else { 2 }];
        let (code, body) = http(addr, "PUT", &format!("/devices/{device}"), &status).await.expect("an answer");
        assert_eq!(code, 200, "check-in after the kill: {body}");
        acked.insert(device, status);
    }
    for addr in [&web[0], &web[2]] {
        for (device, status) in &acked {
            let (code, body) = http(addr, "GET", &format!("/devices/{device}"), "").await.expect("an answer");
            assert_eq!(code, 200, "{addr} {device} after the kill: {body}");
            assert!(body.contains(&format!("\"status\":\"{status}\"")), "{addr} {device}: {body}");
        }
    }
    drop(procs);
}
