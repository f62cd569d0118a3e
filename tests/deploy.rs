//! weft deployed as separate hosts (issue 24), on this machine's Docker engine: the image
//! `deploy/build-image.sh` assembles, the 5-container cluster of `deploy/compose.yaml`, and
//! the multi-host fault run `deploy/chaos.sh`, all from the `weft` binary this build made.
//!
//! One test, since the compose cluster's names and host ports are fixed: the fault run
//! (kills, pauses and link cuts on the containers, a whole-cluster kill and restart and a
//! rolling replacement of every container) must stay linearizable and lose no acknowledged
//! write; then, on the cluster it leaves, the host's `weft kv`, `weft ctl` and
//! `weft health` reach the nodes through their published ports, the image runs
//! `weft version` and `weft node --help`, a node's container hands its primaries off with
//! its own certificate (`weft ctl handoff --as-node`, Kubernetes' pre-stop hook), and a
//! node given a new address on the network is found again by name by its peers.
//!
//! Needs Docker and docker-compose, as CI's machine has; `WEFT_SKIP_DOCKER=1` skips it
//! (saying so) on a machine without them, and nothing else does.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_testkit::docker::Containers;
use weft_testkit::local::{Pki, Security, status_at};

mod common;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn certs() -> PathBuf {
    repo().join("deploy/certs")
}

/// Runs `program args`; (success, stdout, stderr).
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program.as_ref())
        .args(args)
        .env("WEFT_CERTS_DIR", certs())
        .output()
        .unwrap_or_else(|e| panic!("{:?} {args:?}: {e}", program.as_ref()));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn weft(args: &[&str]) -> (bool, String, String) {
    run(env!("CARGO_BIN_EXE_weft"), args)
}

fn docker(args: &[&str]) -> String {
    let (ok, out, err) = run("docker", args);
    assert!(ok, "docker {args:?}: {err}");
    out.trim().to_string()
}

/// Takes the compose cluster down when the test ends, passed or not.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("deploy/down.sh")).output();
    }
}

/// Polls `f` every 500 ms until it gives `Some`, for up to `within`.
fn wait<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_compose_cluster_survives_faults_on_its_containers_and_serves_the_host() {
    if std::env::var("WEFT_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("WEFT_SKIP_DOCKER=1: the container tests are skipped");
        return;
    }
    let (ok, _, err) = run("docker", &["info", "--format={{.ServerVersion}}"]);
    assert!(ok, "no Docker engine answers (set WEFT_SKIP_DOCKER=1 to skip on purpose): {err}");
    let _down = Down;

    // The fault run, from a fresh cluster, kept up afterwards. Seed 3's schedule draws kills,
    // a pause and link cuts before the durable run's whole-cluster restart and rolling
    // replacement.
    let chaos = repo().join("deploy/chaos.sh");
    let bin = env!("CARGO_BIN_EXE_weft");
    let args = ["--bin", bin, "--seconds", "40", "--seed", "3", "--mode", "durable", "--json", "--keep"];
    let (ok, out, err) = run(&chaos, &args);
    let tail: String = err.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(ok, "deploy/chaos.sh failed:\n{out}\n{tail}");
    let report: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("chaos.sh printed no JSON ({e}): {out}"));
    assert_eq!(report["linearizable"], true, "{report}");
    assert_eq!(report["lost_acked_writes"], 0, "{report}");
    assert!(report["ok"].as_u64().unwrap_or(0) > 1_000, "too few operations to mean anything: {report}");
    let faults = report["faults"].as_object().expect("faults");
    for kind in ["cluster_restart", "upgrade_walk"] {
        assert_eq!(faults.get(kind).and_then(|v| v.as_u64()), Some(1), "no {kind}: {report}");
    }
    let container_faults = ["kill", "kill_primary", "pause", "partition_one", "partition_halves", "partition_ring"];
    assert!(
        container_faults.iter().any(|k| faults.contains_key(*k)),
        "no kill, pause or link cut landed on a container: {report}"
    );

    // The image runs the binary's own commands.
    assert_eq!(docker(&["run", "--rm", "weft:dev", "version"]), format!("weft {}", env!("CARGO_PKG_VERSION")));
    assert!(docker(&["run", "--rm", "weft:dev", "node", "--help"]).contains("--advertise"));

    // The host reaches every node through its published port; the map names nodes by their
    // host names and domains.
    let nodes = weft(&["ctl", "--endpoint", "127.0.0.1:7100", "--json", "nodes"]);
    assert!(nodes.0, "weft ctl nodes: {}", nodes.2);
    let nodes: serde_json::Value = serde_json::from_str(&nodes.1).expect("ctl nodes --json");
    let listed: Vec<(String, String, String)> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["addr"].as_str().unwrap_or("").into(),
                n["ud"].as_str().unwrap_or("").into(),
                n["state"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    for i in 1..=5 {
        let want = (format!("weft{i}:7000"), format!("ud{i}"), "up".to_string());
        assert!(listed.contains(&want), "node {i} is not {want:?} in {listed:?}");
    }
    let (ok, _, err) = weft(&["ctl", "--endpoint", "127.0.0.1:7100", "create-service", "hosts", "--partitions", "2"]);
    assert!(ok, "create-service: {err}");
    wait(Duration::from_secs(30), "a write through node 2's published port", || {
        weft(&["kv", "--endpoint", "127.0.0.1:7101", "put", "--service", "hosts", "k", "from-the-host"]).0.then_some(())
    });
    for port in 7100..=7104 {
        let ep = format!("127.0.0.1:{port}");
        let (ok, out, err) = weft(&["kv", "--endpoint", &ep, "get", "--service", "hosts", "k"]);
        assert!(ok && out.trim() == "from-the-host", "get through {ep}: {out} {err}");
        let (ok, out, err) = weft(&["health", "--endpoint", &ep]);
        assert!(ok && out.contains("SERVING"), "health through {ep}: {out} {err}");
    }
    for i in 1..=5 {
        let name = format!("weft{i}");
        let status = wait(Duration::from_secs(30), "a healthy container", || {
            let s = docker(&["inspect", "--format={{.State.Health.Status}}", &name]);
            (s == "healthy").then_some(s)
        });
        assert_eq!(status, "healthy");
    }

    // A node's container hands its primaries off as a pre-stop hook would, presenting its
    // own node certificate (no user's is in the container).
    let (ok, out, err) = run(
        "docker",
        &[
            "exec",
            "weft2",
            "/usr/local/bin/weft",
            "ctl",
            "--endpoint=weft2:7000",
            "--certs-dir=/certs",
            "--as-node",
            "handoff",
            "2",
        ],
    );
    assert!(ok && out.contains("node 2 holds no primary"), "handoff: {out} {err}");
    let (ok, out, err) = weft(&["ctl", "--endpoint", "127.0.0.1:7100", "--json", "partitions"]);
    assert!(ok, "{err}");
    let parts: serde_json::Value = serde_json::from_str(&out).expect("partitions --json");
    let led_by_2: Vec<&serde_json::Value> = parts
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| {
            p["replicas"].as_array().is_some_and(|rs| rs.iter().any(|r| r["node"] == 2 && r["role"] == "primary"))
        })
        .collect();
    assert!(led_by_2.is_empty(), "node 2 still leads {led_by_2:?}");

    // Node 4 moves to a new address; its peers find it by name. (Its old replicas were
    // replaced while it was away: the cluster runs with a 2 s down grace.) A service of 5
    // replicas per partition then has one on node 4 in every partition, each opened there
    // by the manager and caught up by its primary on another node: both dial "weft4:7000".
    let before = Containers::ip(3).expect("node 4 runs");
    docker(&["stop", "--time=45", "weft4"]);
    docker(&["network", "disconnect", "deploy_weft", "weft4"]);
    docker(&["network", "connect", "--ip", "10.231.0.200", "deploy_weft", "weft4"]);
    docker(&["start", "weft4"]);
    let after = Containers::ip(3).expect("node 4 runs again");
    assert_ne!(before, after, "node 4 kept its address");
    assert_eq!(after, "10.231.0.200");
    wait(Duration::from_secs(60), "node 4 up again", || {
        let (ok, out, _) = weft(&["ctl", "--endpoint", "127.0.0.1:7100", "--json", "nodes"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && v.as_array()?.iter().any(|n| n["id"] == 4 && n["state"] == "up")).then_some(())
    });
    let (ok, _, err) = weft(&[
        "ctl",
        "--endpoint",
        "127.0.0.1:7100",
        "create-service",
        "moved",
        "--partitions",
        "2",
        "--replicas",
        "5",
    ]);
    assert!(ok, "create-service moved: {err}");
    for i in 0..20 {
        let (key, value) = (format!("m{i}"), format!("v{i}"));
        wait(Duration::from_secs(30), "a write to the service on every node", || {
            weft(&["kv", "--endpoint", "127.0.0.1:7100", "put", "--service", "moved", &key, &value]).0.then_some(())
        });
    }
    let map = wait(Duration::from_secs(60), "every replica of `moved` serving", || {
        let (ok, out, _) = weft(&["ctl", "--endpoint", "127.0.0.1:7100", "--json", "partitions", "--service", "moved"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let parts = v.as_array()?.clone();
        let whole = ok
            && parts.len() == 2
            && parts.iter().all(|p| {
                let replicas = p["replicas"].as_array().cloned().unwrap_or_default();
                replicas.len() == 5 && replicas.iter().all(|r| r["role"] == "primary" || r["role"] == "secondary")
            });
        whole.then_some(parts)
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let security = Security::Tls(std::sync::Arc::new(Pki::open_or_create(&certs()).expect("deploy/certs")));
    for p in &map {
        let partition = p["id"].as_u64().expect("partition id");
        let replicas = p["replicas"].as_array().expect("replicas");
        assert!(replicas.iter().any(|r| r["node"] == 4), "partition {partition} has no replica on node 4: {p}");
        let primary = replicas.iter().find(|r| r["role"] == "primary").expect("primary");
        let primary_ep = format!("127.0.0.1:{}", 7099 + primary["node"].as_u64().expect("node"));
        rt.block_on(async {
            let target = status_at(&security, &primary_ep, partition).await.expect("primary's status").last_log_index;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let applied = status_at(&security, "127.0.0.1:7103", partition).await.map_or(0, |s| s.applied_index);
                if applied >= target {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node 4's replica of partition {partition} stuck at {applied} < {target}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

/// `deploy/k8s/` holds what Kubernetes 1.35's schemas accept (strictly: no field they do
/// not know), the Secret `make-certs.sh` prints included; and every flag the pods run
/// `weft` with is one the binary has.
#[test]
fn the_kubernetes_manifests_validate_and_name_real_flags() {
    // The tests' Python environment (`tests/py/setup.sh`) holds the validator.
    let python = common::python();
    let validator = PathBuf::from(&python).with_file_name("kubernetes-validate");
    let manifests = repo().join("deploy/k8s/weft.yaml");
    let (ok, out, err) = run(&validator, &["--strict", manifests.to_str().expect("path")]);
    assert!(ok, "deploy/k8s/weft.yaml does not validate:\n{out}{err}");
    for kind in ["service/weft-peers", "service/weft", "poddisruptionbudget/weft", "statefulset/weft"] {
        assert!(
            err.contains(&format!("passed for resource {kind}"))
                || out.contains(&format!("passed for resource {kind}")),
            "{kind} not checked: {out}{err}"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let secret = Command::new(repo().join("deploy/k8s/make-certs.sh"))
        .args(["--namespace", "weft", "--out", dir.path().join("certs").to_str().expect("path")])
        .env("WEFT_BIN", env!("CARGO_BIN_EXE_weft"))
        .output()
        .expect("make-certs.sh");
    assert!(secret.status.success(), "make-certs.sh: {}", String::from_utf8_lossy(&secret.stderr));
    let secret_file = dir.path().join("secret.yaml");
    std::fs::write(&secret_file, &secret.stdout).expect("write");
    let (ok, out, err) = run(&validator, &["--strict", secret_file.to_str().expect("path")]);
    assert!(ok && (out + &err).contains("passed for resource secret/weft-certs"), "the Secret does not validate");
    // Node 3's certificate is weft-2's, valid for its peer name.
    let listed = weft(&["cert", "list", "--json", dir.path().join("certs/node-3").to_str().expect("path")]);
    assert!(listed.0 && listed.1.contains("weft-2.weft-peers.weft.svc.cluster.local"), "node 3's names: {}", listed.1);

    // The flags the StatefulSet's container and its pre-stop hook pass exist.
    let dump = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let (ok, out, err) = run(&python, &["-c", dump, manifests.to_str().expect("path")]);
    assert!(ok, "{err}");
    let docs: serde_json::Value = serde_json::from_str(&out).expect("manifests as JSON");
    let set = docs.as_array().expect("docs").iter().find(|d| d["kind"] == "StatefulSet").expect("a StatefulSet");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let flags = |argv: &serde_json::Value| -> Vec<String> {
        argv.as_array()
            .expect("argv")
            .iter()
            .filter_map(|a| a.as_str())
            .filter(|a| a.starts_with("--"))
            .map(|a| a.split('=').next().unwrap_or(a).to_string())
            .collect()
    };
    let node_help = weft(&["node", "--help"]).1;
    for f in flags(&container["args"]) {
        assert!(node_help.contains(&f), "weft node has no {f}");
    }
    let pre_stop = &container["lifecycle"]["preStop"]["exec"]["command"];
    let handoff_help = weft(&["ctl", "handoff", "--help"]).1;
    for f in flags(pre_stop) {
        assert!(handoff_help.contains(&f), "weft ctl handoff has no {f}");
    }
}
