//! Backups end to end, over real node processes and a real S3-compatible server (moto,
//! from PyPI through `tests/py/setup.sh`): scheduled full and incremental backups under
//! load, every node destroyed and the service restored on a new cluster; backups that go
//! on while the manager's node and a primary's node are killed; a partition that lost
//! every replica restored in place; and every kind of damage refused with its reason.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ctl_json, free_addrs, python, wait_for, wait_up, weft, weft_env};
use serde_json::Value;
use weft::routing::ServiceClient;
use weft_testkit::local::{LocalNode, Security};

const GRACE: &str = "2";
const BUCKET: &str = "weft";

/// A moto S3 server on a free port, with bucket [`BUCKET`]; killed when dropped.
struct S3 {
    child: Child,
    endpoint: String,
}

impl S3 {
    fn start() -> S3 {
        let python = python();
        let server = Path::new(&python).with_file_name("moto_server");
        let addr = free_addrs(1).remove(0);
        let (host, port) = addr.split_once(':').expect("host:port");
        let child = Command::new(server)
            .args(["-H", host, "-p", port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://{addr}");
        let s3 = S3 { child, endpoint };
        let script = format!(
            "import boto3,time\nfor i in range(100):\n  try:\n    boto3.client('s3',endpoint_url='{}',aws_access_key_id='test',aws_secret_access_key='test',region_name='us-east-1').create_bucket(Bucket='{BUCKET}'); break\n  except Exception as e:\n    time.sleep(0.2)\nelse:\n  raise SystemExit('moto did not start')",
            s3.endpoint
        );
        let out = Command::new(&python).args(["-c", &script]).output().expect("run python");
        assert!(out.status.success(), "creating the bucket failed: {}", String::from_utf8_lossy(&out.stderr));
        s3
    }

    /// The `AWS_*` variables that reach it.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A five-node cluster (three seeds), each node in its own UD and FD, with `env`.
fn start_cluster(env: &[(&str, &str)], durable: Option<&Path>) -> (Vec<LocalNode>, Vec<String>) {
    let addrs = free_addrs(5);
    let seeds = addrs[..3].join(",");
    let security = Security::shared().expect("certificates");
    let nodes = (1..=5u64)
        .map(|i| {
            let (ud, fd) = (format!("ud{i}"), format!("fd{i}"));
            let dir = durable.map(|d| d.join(format!("n{i}")).to_string_lossy().into_owned());
            let mut extra =
                vec!["--ud", &ud, "--fd", &fd, "--seeds", &seeds, "--down-grace", GRACE, "--balance-every", "0"];
            if let Some(dir) = &dir {
                extra.extend(["--durable", "--data-dir", dir]);
            }
            let exe = Path::new(env!("CARGO_BIN_EXE_weft"));
            LocalNode::start_with_env(exe, i, &addrs[i as usize - 1], &extra, &security, env).expect("start node")
        })
        .collect();
    (nodes, addrs)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `weft ctl --json ARGS` with `env`, parsed.
fn ctl_env(ep: &str, env: &[(&str, &str)], args: &[&str]) -> Value {
    let mut all = vec!["ctl", "--endpoint", ep, "--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = weft_env(&all, env);
    assert!(ok, "weft {all:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("weft {all:?} printed no JSON ({e}): {out}"))
}

/// The complete backups `url` holds of `service`, oldest first.
fn complete(ep: &str, env: &[(&str, &str)], url: &str, service: &str) -> Vec<Value> {
    let v = ctl_env(ep, env, &["backups", "--service", service, "--from", url]);
    v["backups"].as_array().cloned().unwrap_or_default().into_iter().filter(|b| b["state"] == "complete").collect()
}

/// What a writer did: each acknowledged key with when its acknowledgement came (ms since
/// 1970), and how many keys it tried (w0 up to this, exclusive).
type Written = (Vec<(String, u64)>, u64);

/// Writes `w<n>` = `v<n>` with n rising, one at a time, until stopped.
fn writer(endpoints: &[String], service: &'static str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Written> {
    let c = ServiceClient::new(endpoints.to_vec(), common::root());
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("w{n:08}");
            if c.put(service, "default", key.as_bytes(), format!("v{n}").as_bytes()).await.is_ok() {
                acked.push((key, now_ms()));
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (acked, n)
    })
}

/// Every record of `service`, as key -> value.
async fn contents(ep: &str, service: &str) -> BTreeMap<String, String> {
    let c = ServiceClient::new(vec![ep.to_string()], common::root());
    let recs = c.scan(service, "default", 1_000_000).await.expect("scan");
    recs.into_iter()
        .map(|r| (String::from_utf8_lossy(&r.key).into_owned(), String::from_utf8_lossy(&r.value).into_owned()))
        .collect()
}

/// Under load with a 1-minute schedule: a full backup at once, an incremental one a minute
/// later; then every node is destroyed, a new cluster restores the service from S3, and
/// every write acknowledged before the last backup started is there with its value, and
/// nothing that was never written.
async fn destroy_and_restore(durable: bool) {
    let s3 = S3::start();
    let env = s3.env();
    let env = pairs(&env);
    let data = tempfile::tempdir().expect("temp dir");
    let (mut nodes, addrs) = start_cluster(&env, durable.then_some(data.path()));
    let ep = addrs[0].clone();
    wait_up(&ep, 5).await;
    ctl_json(&ep, &["create-service", "s", "--partitions", "4"]);
    let url = format!("s3://{BUCKET}/backups");
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(&addrs, "s", stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctl_json(&ep, &["backup", "schedule", "s", "--every", "1m", "--to", &url, "--keep", "10"]);
    let two = wait_for(Duration::from_secs(150), "a full and an incremental scheduled backup", || async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let all = complete(&ep, &env, &url, "s");
        (all.len() >= 2).then_some(all)
    })
    .await;
    // Writes acknowledged after the last backup: the schedule's promise ends at it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, tried) = load.await.expect("writer");
    assert_eq!(two[0]["kind"], "full", "{two:?}");
    assert_eq!(two[1]["kind"], "changes", "the second is incremental: {two:?}");
    let gap = two[1]["created_unix_ms"].as_u64().unwrap_or(0) - two[0]["created_unix_ms"].as_u64().unwrap_or(0);
    assert!((55_000..=75_000).contains(&gap), "a minute apart: {gap} ms");
    let full_bytes = two[0]["bytes"].as_u64().unwrap_or(0);
    let incr_bytes = two[1]["bytes"].as_u64().unwrap_or(0);
    let listed = ctl_env(&ep, &env, &["backups", "--service", "s"]);
    assert_eq!(listed["schedule"]["last_error"], "", "{listed}");
    assert!(listed["schedule"]["runs"].as_u64() >= Some(2), "{listed}");
    let last = &two[1];
    let last_started = last["created_unix_ms"].as_u64().expect("created");

    // Destroy every node (and, durable, its disk), then a new cluster.
    for n in &mut nodes {
        n.kill();
    }
    drop(nodes);
    drop(data);
    let data = tempfile::tempdir().expect("temp dir");
    let (nodes, addrs) = start_cluster(&env, durable.then_some(data.path()));
    let ep = addrs[1].clone();
    wait_up(&ep, 5).await;
    let r = ctl_env(&ep, &env, &["restore", "--from", &format!("{url}/s"), "--service", "s"]);
    assert_eq!(r["backup"], last["id"], "the newest backup: {r}");
    let got = contents(&ep, "s").await;
    let mut must = 0;
    for (key, at) in &acked {
        if *at < last_started {
            must += 1;
            let n: u64 = key[1..].parse().expect("key number");
            assert_eq!(
                got.get(key).map(String::as_str),
                Some(format!("v{n}").as_str()),
                "acknowledged before the backup"
            );
        }
    }
    for (k, v) in &got {
        let n: u64 = k[1..].parse().expect("key number");
        assert_eq!(*v, format!("v{n}"), "{k}");
        // A write whose acknowledgement was lost may be there; one never sent cannot be.
        assert!(n < tried, "{k} was never written ({tried} tried)");
    }
    assert!(must > 100, "the load wrote before the backup: {must}");
    // The incremental one holds the changes after the full one, partition by partition.
    for (f, c) in two[0]["manifest"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(two[1]["manifest"]["partitions"].as_array().into_iter().flatten())
    {
        assert_eq!(c["kind"], "changes", "{c}");
        assert_eq!(c["after"], f["through"], "chained: {c} after {f}");
        assert_eq!(c["previous"], two[0]["id"], "{c}");
    }
    eprintln!(
        "restored {} records; {} acknowledged before the last backup, {} after; full {full_bytes} B, incremental {incr_bytes} B",
        got.len(),
        must,
        acked.len() - must
    );
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volatile_cluster_destroyed_is_restored_from_its_scheduled_backups() {
    destroy_and_restore(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_cluster_destroyed_is_restored_from_its_scheduled_backups() {
    destroy_and_restore(true).await;
}

/// The node `kill` names in `ep`'s view: the manager's, or the primary of a partition.
fn manager_node(ep: &str) -> u64 {
    ctl_json(ep, &["status"])["manager_node"].as_u64().expect("manager node")
}

/// Waits for a complete backup of `service` that started after `after_ms`.
async fn backup_after(ep: &str, env: &[(&str, &str)], url: &str, service: &str, after_ms: u64, what: &str) -> Value {
    wait_for(Duration::from_secs(60), what, || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (ok, out, _) =
            weft_env(&["ctl", "--endpoint", ep, "--json", "backups", "--service", service, "--from", url], env);
        let v: Value = if ok { serde_json::from_str(&out).ok()? } else { return None };
        v["backups"]
            .as_array()?
            .iter()
            .find(|b| b["state"] == "complete" && b["created_unix_ms"].as_u64() > Some(after_ms))
            .cloned()
    })
    .await
}

/// Scheduled backups go on while the manager's node is killed and then while a
/// partition's primary's node is; the backups taken across both restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_keep_running_while_the_manager_and_a_primary_are_killed() {
    let s3 = S3::start();
    let env = s3.env();
    let env = pairs(&env);
    let (mut nodes, addrs) = start_cluster(&env, None);
    let ep = addrs[3].clone();
    wait_up(&ep, 5).await;
    ctl_json(&ep, &["create-service", "s", "--partitions", "2"]);
    let url = format!("s3://{BUCKET}/k");
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(&addrs, "s", stop.clone());
    ctl_json(&ep, &["backup", "schedule", "s", "--every", "3s", "--to", &url, "--keep", "3"]);
    backup_after(&ep, &env, &url, "s", 0, "a first backup").await;

    let manager = manager_node(&ep);
    let killed_at = now_ms();
    nodes[manager as usize - 1].kill();
    let after_manager = backup_after(&ep, &env, &url, "s", killed_at + 1_000, "a backup by the next manager").await;
    let next = manager_node(&ep);
    assert_ne!(next, manager, "another node manages");
    nodes[manager as usize - 1].restart().expect("restart");
    wait_up(&ep, 5).await;
    // Its replicas were lost with it (volatile): rebuilt before the next node dies, or a
    // partition would be left without a quorum.
    wait_for(Duration::from_secs(60), "every partition whole again", || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ps = ctl_json(&ep, &["partitions", "--service", "s"]);
        ps.as_array()?
            .iter()
            .all(|p| {
                let rs = p["replicas"].as_array().cloned().unwrap_or_default();
                p["moving"].is_null()
                    && rs.len() == 4
                    && rs.iter().all(|r| r["role"] == "primary" || r["role"] == "secondary")
            })
            .then_some(())
    })
    .await;

    // A partition's primary, on node 4: not a seed (a seed restarted a moment ago may not
    // have its map replica back, and the map group must keep a quorum).
    let victim = 4u64;
    let parts = ctl_json(&ep, &["partitions", "--service", "s"]);
    let p = parts
        .as_array()
        .and_then(|a| {
            a.iter().find(|p| p["replicas"].as_array().is_some_and(|rs| rs.iter().any(|r| r["node"] == victim)))
        })
        .cloned()
        .expect("a partition with a replica on node 4");
    let id = p["id"].as_u64().expect("id").to_string();
    let on_victim = |v: &Value| {
        v.as_array().and_then(|a| a.iter().find(|q| q["id"] == p["id"])).is_some_and(|q| {
            q["replicas"].as_array().is_some_and(|rs| rs.iter().any(|r| r["node"] == victim && r["role"] == "primary"))
        })
    };
    if !on_victim(&parts) {
        ctl_json(&ep, &["move-primary", &id, "--to", &victim.to_string()]);
    }
    wait_for(Duration::from_secs(20), "the primary on node 4", || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        on_victim(&ctl_json(&ep, &["partitions", "--service", "s"])).then_some(())
    })
    .await;
    let killed_at = now_ms();
    nodes[victim as usize - 1].kill();
    // Asked through a node that lives.
    let ep = addrs[4].clone();
    let after_primary =
        backup_after(&ep, &env, &url, "s", killed_at + 1_000, "a backup with a primary's node dead").await;
    stop.store(true, Ordering::Relaxed);
    let (acked, _) = load.await.expect("writer");
    let listed = ctl_env(&ep, &env, &["backups", "--service", "s"]);
    assert!(listed["schedule"]["runs"].as_u64() >= Some(3), "{listed}");
    eprintln!("backups {} and {} taken across the kills", after_manager["id"], after_primary["id"]);

    // What they hold restores: everything acknowledged before the last one started. The
    // new service is placed once the dead node is marked down (a replica placed on it
    // would never open).
    wait_up(&ep, 4).await;
    let started = after_primary["created_unix_ms"].as_u64().expect("created");
    let r = ctl_env(&ep, &env, &["restore", "--from", &format!("{url}/s"), "--service", "copy"]);
    assert_eq!(r["backup"], after_primary["id"], "{r}");
    let got = contents(&ep, "copy").await;
    for (key, at) in acked.iter().filter(|(_, at)| *at < started) {
        assert!(got.contains_key(key), "{key} acknowledged at {at} before the backup at {started}");
    }
}

/// Damage of every kind is refused with a message naming it, and leaves nothing serving;
/// `--at` picks the newest backup at or before a time; a partition that lost every
/// replica is restored in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_are_refused_and_a_lost_partition_is_restored_in_place() {
    let (mut nodes, addrs) = start_cluster(&[], None);
    let ep = addrs[0].clone();
    wait_up(&ep, 5).await;
    ctl_json(&ep, &["create-service", "one", "--partitions", "1", "--replicas", "1"]);
    let c = ServiceClient::new(vec![ep.clone()], common::root());
    for i in 0..200 {
        c.put("one", "default", format!("a{i}").as_bytes(), b"1").await.expect("put");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let url = dir.path().to_str().expect("utf-8").to_string();
    let full = ctl_json(&ep, &["backup", "one", "--to", &url]);
    let t_full = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..100 {
        c.put("one", "default", format!("b{i}").as_bytes(), b"2").await.expect("put");
    }
    c.delete("one", "default", b"a0").await.expect("delete");
    let incr = ctl_json(&ep, &["backup", "one", "--to", &url]);
    assert_eq!(incr["manifest"]["kind"], "changes", "{incr}");
    let (full_id, incr_id) =
        (full["manifest"]["id"].as_str().expect("id"), incr["manifest"]["id"].as_str().expect("id"));

    // --at: the full one alone.
    let at = ctl_json(&ep, &["restore", "--from", &url, "--service", "at", "--at", &t_full.to_string()]);
    assert_eq!(at["backup"], full_id, "{at}");
    assert_eq!(at["records"], 200, "{at}");
    let latest = ctl_json(&ep, &["restore", "--from", &url, "--service", "latest"]);
    assert_eq!(latest["backup"], incr_id, "{latest}");
    assert_eq!(latest["records"], 299, "200 + 100 - the deleted one: {latest}");
    // Installed, not written again: every replica holds the state at the chain's last log
    // index (the first opened from it, the others got it from the first as a raft
    // snapshot), each record keeps the version it was written at, and the next write
    // versions above them all.
    let through = incr["manifest"]["partitions"][0]["through"].as_u64().expect("through");
    let restored = ctl_json(&ep, &["partitions", "--service", "latest"]);
    let p = restored.as_array().and_then(|a| a.first()).cloned().expect("a partition");
    let pid = p["id"].as_u64().expect("id");
    let placed: Vec<u64> =
        p["replicas"].as_array().expect("replicas").iter().filter_map(|r| r["node"].as_u64()).collect();
    assert_eq!(placed.len(), 4, "{p}");
    for node in placed {
        let n = &nodes[node as usize - 1];
        wait_for(Duration::from_secs(30), "every replica holds the restored state", || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let s = n.status(pid).await?;
            (s.records == 299 && s.snapshots_installed >= 1 && s.applied_index >= through).then_some(())
        })
        .await;
    }
    c.refresh_map().await.expect("the map naming the restored service");
    let mut highest = 0;
    for key in [b"a1".as_slice(), b"a199", b"b0", b"b99"] {
        let was = c.get("one", "default", key).await.expect("get").expect("in one");
        let now = c.get("latest", "default", key).await.expect("get").expect("restored");
        assert_eq!((now.version, &now.value), (was.version, &was.value), "{key:?} as it was written");
        highest = highest.max(was.version);
    }
    let next = c.put("latest", "default", b"after", b"x").await.expect("a write after the restore");
    assert!(next > highest.max(through), "the next write versions {next}, above {highest} and {through}");

    // Damage: each is refused with its reason, and no service is left behind.
    let svc_dir = dir.path().join("one");
    let restore = |name: &str| weft(&["ctl", "--endpoint", &ep, "restore", "--from", &url, "--service", name]);
    let refused = |name: &str, want: &str| {
        let (ok, _, err) = restore(name);
        assert!(!ok && err.contains(want), "{name}: wanted {want:?} in: {err}");
        let services = ctl_json(&ep, &["services"]).to_string();
        assert!(!services.contains(&format!("\"{name}\"")), "{name} left behind: {services}");
    };
    let changes = svc_dir.join(incr_id).join("part-0.changes");
    let original = std::fs::read(&changes).expect("read");
    // A bad checksum.
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    std::fs::write(&changes, &flipped).expect("write");
    refused("bad-crc", "CRC32C");
    // A truncated file.
    std::fs::write(&changes, &original[..original.len() - 3]).expect("write");
    refused("truncated", "truncated");
    std::fs::write(&changes, &original).expect("write");
    // A missing increment: the full backup the changes build on is gone.
    let full_manifest = svc_dir.join(full_id).join("manifest.json");
    let kept = std::fs::read(&full_manifest).expect("read");
    std::fs::remove_file(&full_manifest).expect("remove");
    refused("missing", "missing or incomplete");
    std::fs::write(&full_manifest, &kept).expect("write");
    // A wrong service: a backup of another service filed under this one.
    let text = String::from_utf8(kept.clone()).expect("utf-8").replace("\"service\": \"one\"", "\"service\": \"two\"");
    std::fs::write(&full_manifest, text).expect("write");
    refused("wrong", "service two");
    std::fs::write(&full_manifest, &kept).expect("write");
    let ok = ctl_json(&ep, &["restore", "--from", &url, "--service", "whole-again"]);
    assert_eq!(ok["records"], 299, "undamaged, it restores: {ok}");

    // A partition whose only replica is lost (its node restarts empty) is restored in
    // place; a partition that still has its replica is not reset.
    let parts = ctl_json(&ep, &["partitions", "--service", "one"]);
    let p0 = parts.as_array().and_then(|a| a.iter().find(|p| p["index"] == 0)).cloned().expect("partition 0");
    let node = p0["replicas"][0]["node"].as_u64().expect("node");
    let (ok, _, err) = weft(&["ctl", "--endpoint", &ep, "restore", "--from", &url, "--partition", "0"]);
    assert!(!ok && err.contains("still has replicas"), "a live partition is not reset: {err}");
    let before = contents(&ep, "one").await;
    let started = Instant::now();
    nodes[node as usize - 1].restart().expect("restart");
    let ep2 = addrs[(node as usize) % 5].clone();
    wait_for(Duration::from_secs(30), "partition 0 lost", || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = ctl_json(&ep2, &["status"]).to_string();
        s.contains("QUORUM LOST").then_some(())
    })
    .await;
    let r = ctl_json(&ep2, &["restore", "--from", &url, "--partition", "0"]);
    assert_eq!(r["partitions"], 1, "{r}");
    let after = contents(&ep2, "one").await;
    assert_eq!(after, before, "partition 0 is back as its last backup left it ({:?})", started.elapsed());
}
