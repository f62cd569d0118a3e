//! `weft::Node` embedded in this test's process: three nodes started from the builder
//! (TLS, real sockets) form a cluster; each lists the partitions it hosts with their
//! roles, reads a local primary in process, hears role changes, and stops gracefully: its
//! primaries move to other nodes without a write failing, and a stop that would leave a
//! partition without a quorum is refused while the node keeps serving.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::wait_for;
use weft::embedded::{Role, RoleChange};
use weft_testkit::local::Security;

const SERVICE: &str = "e";

async fn start(id: u64, addrs: &[String]) -> weft::Node {
    let Security::Tls(pki) = common::security() else { unreachable!("the shared security is TLS") };
    weft::Node::builder(id, addrs[id as usize - 1].parse().expect("an address"))
        .seeds(addrs.iter().cloned())
        .ud(format!("ud{id}"))
        .fd(format!("fd{id}"))
        .certs_dir(pki.node_dir(id).expect("node certificates"))
        .stop_wait(Duration::from_secs(3))
        .configure(|c| c.cluster.down_grace = Duration::from_secs(60))
        .start()
        .await
        .expect("node started")
}

/// The primaries of `SERVICE`'s partitions, by partition, as the nodes report them.
async fn primaries(nodes: &[&weft::Node]) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for n in nodes {
        for h in n.partitions().await.unwrap_or_default() {
            if h.service.as_deref() == Some(SERVICE) && h.role == Role::Primary {
                out.insert(h.partition, n.id());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_serves_reads_in_process_hears_roles_and_stops_gracefully() {
    let addrs = common::free_addrs(3);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, &addrs).await);
    }
    let mut roles: Vec<_> = nodes.iter().map(|n| n.roles()).collect();
    weft::routing::ready_service(&common::root(), &addrs, 3, SERVICE, 2, 3, Duration::from_secs(60))
        .await
        .expect("service ready");

    // Each partition has one primary, on some node, and every node hosts every partition.
    let all: Vec<&weft::Node> = nodes.iter().collect();
    let first = wait_for(Duration::from_secs(10), "both partitions' primaries", || async {
        let p = primaries(&all).await;
        (p.len() == 2).then_some(p)
    })
    .await;
    for n in &nodes {
        let hosted: BTreeSet<u64> = n
            .partitions()
            .await
            .expect("partitions")
            .iter()
            .filter(|h| h.service.as_deref() == Some(SERVICE))
            .map(|h| h.partition)
            .collect();
        assert_eq!(hosted, first.keys().copied().collect(), "node {} hosts both partitions", n.id());
    }
    // Each node hears its own primaries become primary (roles are looked at every 100 ms).
    for (i, rx) in roles.iter_mut().enumerate() {
        let id = i as u64 + 1;
        let mine: BTreeSet<u64> = first.iter().filter(|(_, n)| **n == id).map(|(p, _)| *p).collect();
        let mut heard = BTreeSet::new();
        while !mine.is_subset(&heard) {
            let event = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            let Ok(Ok(RoleChange { partition, role, .. })) = event else {
                panic!("node {id} heard {heard:?} become primary; it leads {mine:?}");
            };
            if role == Role::Primary {
                heard.insert(partition);
            } else {
                heard.remove(&partition);
            }
        }
    }

    // Writes through one node's client, reads through every node (a local primary in
    // process, the others through the client): the same answers.
    for i in 0..40 {
        nodes[0]
            .client()
            .put(SERVICE, "default", format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .await
            .expect("put");
    }
    for n in &nodes {
        for i in 0..40 {
            let r = n.get(SERVICE, "default", format!("k{i}").as_bytes()).await.expect("get").expect("found");
            assert_eq!(r.value.as_ref(), format!("v{i}").as_bytes());
        }
        assert!(n.get(SERVICE, "default", b"missing").await.expect("get").is_none());
    }

    // Stop a node that leads a partition: its primaries are handed off (another node hears
    // it became primary), and writes go on through the others.
    let (&led, &leader) = first.iter().next().expect("a partition");
    let leaving = nodes.remove(nodes.iter().position(|n| n.id() == leader).expect("the leader"));
    // Writes go on through the stop, each acknowledged.
    let others: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let writing = writing.clone();
        async move {
            let client = weft::routing::ServiceClient::new(others, common::root());
            let mut n = 0u32;
            while writing.load(Ordering::SeqCst) {
                client
                    .put(SERVICE, "default", format!("during{n}").as_bytes(), b"x")
                    .await
                    .expect("a write during the stop");
                n += 1;
            }
            n
        }
    });
    leaving.stop().await.expect("a graceful stop");
    let heir = wait_for(Duration::from_secs(5), "another node to take the primary", || async {
        primaries(&nodes.iter().collect::<Vec<_>>()).await.get(&led).copied()
    })
    .await;
    assert_ne!(heir, leader);
    writing.store(false, Ordering::SeqCst);
    let written = writer.await.expect("the writer");
    assert!(written > 0, "writes were acknowledged while the node stopped");
    for i in 40..60 {
        nodes[0]
            .client()
            .put(SERVICE, "default", format!("k{i}").as_bytes(), b"after")
            .await
            .expect("put after the stop");
    }

    // With one of three nodes gone, stopping a second would leave every partition one
    // voter of three: refused, and the node still serves.
    let gone = leaving.addr().to_string();
    wait_for(Duration::from_secs(5), "the others to count the stopped node down", || {
        let down = nodes.iter().all(|n| n.peer_up(&gone) == Some(false));
        async move { down.then_some(()) }
    })
    .await;
    let refused = match nodes[0].stop().await {
        Err(weft::NodeError::WouldLoseQuorum { partitions }) => partitions,
        other => panic!("stopping a second node of three must be refused: {other:?}"),
    };
    assert!(!refused.is_empty());
    let r = nodes[0].get(SERVICE, "default", b"k41").await.expect("still serving").expect("found");
    assert_eq!(r.value.as_ref(), b"after");
    drop(leaving);
}
