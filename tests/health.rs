//! The standard endpoints, on real `weft node` processes with real certificates: the gRPC
//! health protocol, server reflection (read by Python's `grpcio-reflection`, a client that
//! shares no code with weft and has no `.proto` file), and `/readyz` and `/livez` on the
//! metrics port.

mod common;

use std::time::Duration;

use common::{free_addrs, https_get, python, wait_for};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use weft::routing::ServiceClient;
use weft_security::{ClientSecurity, Credentials, Holder};
use weft_testkit::local::{LocalNode, channel, ready_service};

const EXE: &str = env!("CARGO_BIN_EXE_weft");

async fn check(
    c: &mut HealthClient<weft_security::AuthChannel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let r: HealthCheckResponse = c.check(HealthCheckRequest { service: service.into() }).await?.into_inner();
    Ok(r.status())
}

/// A node whose seeds do not answer is live and says it is not ready, on both its ports,
/// and why; nothing of that needs a certificate on the metrics port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_has_not_reached_its_cluster_is_live_but_not_ready() {
    let [metrics, nowhere]: [String; 2] = free_addrs(2).try_into().expect("two addresses");
    let node = common::start(1, &["--seeds", &nowhere, "--metrics", &metrics]);
    let anyone = ClientSecurity::insecure();
    let live = https_get(&metrics, "/livez", &anyone).await;
    assert!(live.starts_with("HTTP/1.0 200") && live.ends_with("ok\n"), "{live}");
    let ready = https_get(&metrics, "/readyz", &anyone).await;
    assert!(ready.starts_with("HTTP/1.0 503") && ready.contains("not reached the cluster manager"), "{ready}");
    let mut health = HealthClient::new(common::channel(&node.addr));
    assert_eq!(check(&mut health, "").await.expect("check"), ServingStatus::NotServing);
    assert_eq!(check(&mut health, "weft.v1.Store").await.expect("check"), ServingStatus::NotServing);
    // A gRPC client pointed at the metrics port is told which port it reached.
    let asked = std::time::Instant::now();
    let (ok, _, err) = common::weft(&["ctl", "--endpoint", &metrics, "status"]);
    assert!(!ok && err.contains("metrics port") && err.contains("not its gRPC port"), "{err}");
    assert!(asked.elapsed() < Duration::from_secs(3), "said at once, not retried: {:?}", asked.elapsed());
    let other = https_get(&metrics, "/nothing", &anyone).await;
    assert!(
        other.starts_with("HTTP/1.0 404") && other.contains("/metrics, /readyz, /livez and the cluster explorer"),
        "{other}"
    );
}

/// A cluster's node says SERVING once it has reached the map, to any known caller and
/// to nobody else; a health watcher hears NOT_SERVING when the node is told to stop,
/// before it goes. A Python client that has only reflection lists weft's client-facing
/// services and writes and reads a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_standard_clients() {
    let addrs = free_addrs(3);
    let metrics = free_addrs(1).remove(0);
    let seeds = addrs.join(",");
    let mut nodes: Vec<LocalNode> = (1..=3u64)
        .map(|i| {
            let (ud, fd) = (format!("ud{i}"), format!("fd{i}"));
            let mut flags = vec!["--ud", &ud, "--fd", &fd, "--seeds", &seeds];
            if i == 1 {
                flags.extend(["--metrics", metrics.as_str()]);
            }
            LocalNode::start_at(std::path::Path::new(EXE), i, &addrs[i as usize - 1], &flags).expect("start node")
        })
        .collect();
    ready_service(&common::root(), &addrs, 3, "s", 1, 3, Duration::from_secs(60)).await.expect("service s ready");

    // /readyz: ok once the node has reached the map, to a caller with no certificate.
    let anyone = ClientSecurity::insecure();
    wait_for(Duration::from_secs(20), "node 1 ready", || async {
        https_get(&metrics, "/readyz", &anyone).await.starts_with("HTTP/1.0 200").then_some(())
    })
    .await;

    // The health protocol, as root: the node and its client-facing services.
    let root = common::root().security;
    let mut health = HealthClient::new(channel(&root, &addrs[0]).expect("channel"));
    assert_eq!(check(&mut health, "").await.expect("check"), ServingStatus::Serving);
    assert_eq!(check(&mut health, "weft.v1.Store").await.expect("check"), ServingStatus::Serving);
    assert_eq!(check(&mut health, "weft.v1.Cluster").await.expect("check"), ServingStatus::Serving);
    let unknown = check(&mut health, "weft.v1.Raft").await.expect_err("internal services are not reported");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    // TLS without a certificate or token: refused, as every other call is.
    let anon = ClientSecurity::tls(Credentials::load(&common::certs_dir(), Holder::Client { user: None }).unwrap());
    let mut refused = HealthClient::new(channel(&anon, &addrs[0]).expect("channel"));
    let s = check(&mut refused, "").await.expect_err("no identity, no answer");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // Reflection, from Python: the services, then a write and a read built from nothing
    // but the descriptors it returned.
    let client = ServiceClient::new(addrs.clone(), common::root());
    let partition = client.partition_of("s", b"py-key").await.expect("partition of the key");
    let python = python();
    let dir = common::certs_dir();
    let mut args: Vec<String> = vec![
        std::env::current_dir().unwrap().join("tests/py/reflect.py").display().to_string(),
        dir.join("ca.crt").display().to_string(),
        dir.join("client.root.crt").display().to_string(),
        dir.join("client.root.key").display().to_string(),
        partition.to_string(),
        "py-key".into(),
        "from python".into(),
    ];
    args.extend(addrs.iter().cloned());
    let out = std::process::Command::new(&python).args(&args).output().expect("run reflect.py");
    assert!(out.status.success(), "reflect.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("reflect.py's JSON");
    let services: Vec<&str> = r["services"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
    for s in ["weft.v1.Store", "weft.v1.Cluster", "grpc.health.v1.Health"] {
        assert!(services.contains(&s), "reflection lists {s}: {services:?}");
    }
    assert!(
        !services.iter().any(|s| s.contains("Raft") || s.contains("NodeAdmin") || s.contains("Faults")),
        "{services:?}"
    );
    let store_methods = r["methods"]["weft.v1.Store"].to_string();
    for m in ["Get", "Put", "Watch", "Session"] {
        assert!(store_methods.contains(&format!("\"{m}\"")), "{store_methods}");
    }
    assert_eq!(r["health"]["status"], "SERVING", "{r}");
    assert_eq!(r["store_health"]["status"], "SERVING", "{r}");
    assert!(r["put"].is_object(), "the write was acknowledged: {r}");
    let value = r["get"]["record"]["value"].as_str().expect("the record read back");
    assert_eq!(value, "ZnJvbSBweXRob24=", "base64 of 'from python': {r}");
    for refusal in r["refusals"].as_array().unwrap() {
        let not_primary =
            refusal["code"] == "UNAVAILABLE" && refusal["details"].to_string().contains("not the primary");
        assert!(not_primary, "only 'not the primary' refusals: {r}");
    }
    let read = client.get("s", "default", b"py-key").await.expect("read back in Rust");
    assert_eq!(read.map(|r| r.value.to_vec()), Some(b"from python".to_vec()));

    // A health watcher on node 3 hears NOT_SERVING when the node is told to stop.
    let mut watcher = HealthClient::new(channel(&root, &addrs[2]).expect("channel"));
    let mut stream = watcher.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    let first = stream.message().await.expect("first status").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);
    let pid = nodes[2].pid().expect("node 3 runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("a status within 10 s");
    let next = next.expect("the stream carries the status before it ends").expect("a status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    nodes[2].kill();
}
