//! The upgrade-domain walk on five real durable `weft node` processes: `weft ctl upgrade
//! --apply` restarts every node, one UD at a time, while a client writes continuously;
//! no write fails after its retries and every acknowledged write is there afterwards.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{LocalNode, free_addrs, wait_for, weft};
use parking_lot::Mutex;
use serde_json::Value;
use weft::client::ClientConfig;
use weft::routing::ServiceClient;

fn incarnations(m: &weft::proto::GetMapResponse) -> BTreeMap<u64, u64> {
    m.map.as_ref().map(|m| m.nodes.values().map(|n| (n.id, n.incarnation)).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_walk_restarts_every_node_while_writes_continue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addrs = free_addrs(5);
    let seeds = addrs[..3].join(",");
    let _nodes: Vec<LocalNode> = (1..=5u64)
        .map(|i| {
            let (ud, fd) = (format!("ud{i}"), format!("fd{i}"));
            let data = dir.path().join(format!("node-{i}")).display().to_string();
            let extra =
                ["--ud", &ud, "--fd", &fd, "--seeds", &seeds, "--durable", "--data-dir", &data, "--balance-every", "0"];
            LocalNode::start_at(std::path::Path::new(env!("CARGO_BIN_EXE_weft")), i, &addrs[i as usize - 1], &extra)
                .expect("start node")
        })
        .collect();
    let ep = addrs[0].clone();
    wait_for(Duration::from_secs(30), "5 nodes up", || async {
        let m =
            ServiceClient::fetch_map(&common::root(), std::slice::from_ref(&ep), Duration::from_secs(1)).await.ok()?;
        (weft::node::view::nodes(&m).iter().filter(|n| n.state == "up").count() == 5).then_some(())
    })
    .await;
    let (ok, _, err) = weft(&["ctl", "--endpoint", &ep, "create-service", "u", "--partitions", "4"]);
    assert!(ok, "{err}");
    wait_for(Duration::from_secs(30), "partitions with primaries", || async {
        let m =
            ServiceClient::fetch_map(&common::root(), std::slice::from_ref(&ep), Duration::from_secs(1)).await.ok()?;
        let ps = weft::node::view::partitions(&m, Some("u"));
        (ps.len() == 4 && ps.iter().all(|p| p.created && p.replicas.iter().any(|r| r.role == "primary"))).then_some(())
    })
    .await;
    let before =
        incarnations(&ServiceClient::fetch_map(&common::root(), &addrs, Duration::from_secs(5)).await.expect("map"));

    // The dry run prints every UD's plan and changes nothing.
    let (ok, out, err) = weft(&["ctl", "--endpoint", &ep, "--json", "upgrade", "--dry-run"]);
    assert!(ok, "{err}");
    let plan: Value = serde_json::from_str(&out).expect("json");
    for ud in 1..=5 {
        assert!(plan["lines"].to_string().contains(&format!("UD ud{ud}:")), "{plan}");
    }
    // ... and as fields: one entry per UD in walk order, each stand-in with its nodes.
    let uds: Vec<&str> = plan["uds"].as_array().expect("uds").iter().filter_map(|u| u["ud"].as_str()).collect();
    assert_eq!(uds, ["ud1", "ud2", "ud3", "ud4", "ud5"], "{plan}");
    assert_eq!(plan["started"], false, "{plan}");
    assert!(plan["refusals"].as_array().is_some_and(|r| r.is_empty()), "{plan}");
    for u in plan["uds"].as_array().expect("uds") {
        assert!(u["peak_ratio"].as_f64().is_some_and(|r| r >= 1.0), "{u}");
        for b in u["stand_ins"].as_array().expect("stand-ins") {
            assert!(b["to"] != b["stands_in_for"] && b["partition"].as_u64().is_some(), "{b}");
        }
    }

    // A client writes without pause through the whole walk.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acked, failures, addrs) = (stop.clone(), acked.clone(), failures.clone(), addrs.clone());
        tokio::spawn(async move {
            let config = ClientConfig { deadline: Duration::from_secs(20), ..common::root() };
            let c = ServiceClient::new(addrs, config);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w-{i}");
                match c.put("u", "default", key.as_bytes(), key.as_bytes()).await {
                    Ok(_) => acked.lock().push(key),
                    Err(e) => failures.lock().push(format!("{key}: {e}")),
                }
                i += 1;
            }
        })
    };
    wait_for(Duration::from_secs(10), "the writer's first acknowledged write", || async {
        (!acked.lock().is_empty()).then_some(())
    })
    .await;
    let walk = tokio::task::spawn_blocking({
        let ep = ep.clone();
        move || weft(&["ctl", "--endpoint", &ep, "upgrade", "--apply"])
    });
    let (ok, out, err) =
        tokio::time::timeout(Duration::from_secs(180), walk).await.expect("walk in time").expect("join");
    assert!(ok && out.contains("upgrade walk complete"), "upgrade --apply: {out}\n{err}");
    // Progress names each UD in turn, never a step past the last.
    for ud in 1..=5 {
        assert!(out.contains(&format!("UD ud{ud} ({ud} of 5)")), "no progress line for ud{ud}: {out}");
    }
    assert!(!out.contains("(6 of 5)"), "{out}");
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let failures = failures.lock().clone();
    assert!(failures.is_empty(), "writes failed during the walk: {failures:?}");
    let acked = acked.lock().clone();
    assert!(acked.len() > 50, "the writer kept writing: {} writes", acked.len());

    // Every node restarted; every partition is back to 4 replicas in 4 UDs.
    let m = ServiceClient::fetch_map(&common::root(), &addrs, Duration::from_secs(5)).await.expect("map");
    let after = incarnations(&m);
    for (id, inc) in &before {
        assert_ne!(after.get(id), Some(inc), "node {id} was not restarted");
    }
    for p in weft::node::view::partitions(&m, Some("u")) {
        let uds: BTreeSet<&str> = p.replicas.iter().map(|r| r.ud.as_str()).collect();
        assert!(p.replicas.len() == 4 && uds.len() == 4 && p.moving.is_none(), "{p:?}");
    }
    let reader = ServiceClient::new(addrs.clone(), common::root());
    for k in &acked {
        let got = reader.get("u", "default", k.as_bytes()).await.expect("read");
        assert_eq!(got.map(|r| r.value.to_vec()), Some(k.as_bytes().to_vec()), "acknowledged {k} lost");
    }
}
