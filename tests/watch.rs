//! Change feeds (`Store.Watch`, `weft kv watch`) against real `weft node` processes: a
//! watcher sees every acknowledged write exactly once, in commit order per partition,
//! across the kill of a primary's node and a reconnect of its own; a watcher that reads too
//! slowly is cut off with `COMPACTED` while the node goes on serving.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{LocalNode, wait_for};
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::Code;
use weft::ClientError;
use weft::proto as pb;
use weft::routing::ServiceClient;
use weft::watch::WatchOptions;
use weft_proto::detail;

const SERVICE: &str = "w";

/// What one watcher has received: per partition, the changes in arrival order and the last
/// `through`.
#[derive(Default)]
struct Seen {
    changes: BTreeMap<u64, Vec<pb::Change>>,
    through: BTreeMap<u64, u64>,
    /// The replica that last served each partition's stream.
    serving: BTreeMap<u64, u64>,
}

/// Reads `stream` into `seen` until it ends or fails (returned).
fn collect(
    mut stream: weft::watch::WatchStream,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<Option<ClientError>> {
    tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            match m {
                Ok(m) => {
                    let mut s = seen.lock();
                    let last = s.through.insert(m.partition, m.through);
                    s.serving.insert(m.partition, m.replica);
                    assert!(last.is_none_or(|t| m.through >= t), "through went back: {last:?} -> {}", m.through);
                    if let Some(first) = m.changes.first() {
                        assert!(last.is_none_or(|t| first.version > t), "a change at or before the last through");
                    }
                    s.changes.entry(m.partition).or_default().extend(m.changes);
                }
                Err(e) => return Some(e),
            }
        }
        None
    })
}

/// The puts a watcher saw, checked: versions never go back within a partition, and no key
/// is seen twice (every key is written once). Returns key -> (partition, version).
fn puts(seen: &Seen) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for (p, changes) in &seen.changes {
        let mut last = 0;
        for c in changes {
            assert!(c.version >= last, "partition {p}: version {} after {last}", c.version);
            last = c.version;
            if let Some(pb::change::Kind::Put(r)) = &c.kind {
                assert_eq!(r.version, c.version);
                let key = String::from_utf8_lossy(&r.key).into_owned();
                assert!(out.insert(key.clone(), (*p, c.version)).is_none(), "{key} delivered twice");
            }
        }
    }
    out
}

/// A managed cluster of `n` nodes started with `flags`, and `SERVICE` made with
/// `(partitions, replicas)`; a client acting as root.
async fn cluster(
    n: usize,
    (partitions, replicas): (u32, u32),
    flags: &[&str],
) -> (Vec<String>, Vec<LocalNode>, ServiceClient) {
    let addrs = common::free_addrs(n);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let nodes = weft_testkit::local::start_managed(exe, &addrs, n, None, false, &common::security(), |_| flags.clone())
        .expect("start the cluster");
    weft::routing::ready_service(&common::root(), &addrs, n, SERVICE, partitions, replicas, Duration::from_secs(60))
        .await
        .expect("service ready");
    let client = ServiceClient::new(addrs.clone(), common::root());
    (addrs, nodes, client)
}

async fn primary_node(endpoints: &[String], partition: u64) -> Option<u64> {
    let m = ServiceClient::fetch_map(&common::root(), endpoints, Duration::from_secs(5)).await.ok()?;
    m.primaries.get(&partition).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_acknowledged_write_once_in_order_across_a_primary_kill_and_a_reconnect() {
    // No repair while the test runs: the watch must resume on the replicas that are left.
    let (addrs, mut nodes, client) = cluster(4, (2, 3), &["--down-grace", "120"]).await;
    let config = common::root();
    let from_start = WatchOptions { from: 1, ..Default::default() };

    // Watcher A reads throughout; watcher B stops halfway and resumes from its throughs.
    let seen_a = Arc::new(Mutex::new(Seen::default()));
    let a = collect(client.watch(SERVICE, &from_start).await.expect("watch A"), seen_a.clone());
    let seen_b = Arc::new(Mutex::new(Seen::default()));
    let b = collect(client.watch(SERVICE, &from_start).await.expect("watch B"), seen_b.clone());

    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut maybe: BTreeSet<String> = BTreeSet::new();
    let write = async |i: u32, acked: &mut BTreeMap<String, u64>, maybe: &mut BTreeSet<String>| {
        let key = format!("k{i:04}");
        match client.put(SERVICE, "default", key.as_bytes(), format!("v{i}").as_bytes()).await {
            Ok(v) => {
                acked.insert(key, v);
            }
            Err(ClientError::Indeterminate { .. } | ClientError::Unavailable { .. }) => {
                maybe.insert(key);
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    };
    for i in 0..150 {
        write(i, &mut acked, &mut maybe).await;
    }

    // B goes away; what it had is kept, and it comes back later from its throughs.
    b.abort();
    let _ = b.await;
    let resume: BTreeMap<u64, u64> = seen_b.lock().through.iter().map(|(p, t)| (*p, t + 1)).collect();
    assert_eq!(resume.len(), 2, "B heard from both partitions: {resume:?}");

    // Kill the node of a partition's primary, and write on. A partition whose primary also
    // serves watcher A is picked when there is one, so that A's stream breaks too.
    let map = ServiceClient::fetch_map(&config, &addrs, Duration::from_secs(5)).await.expect("map");
    let m = map.map.as_ref().expect("map");
    let node_of =
        |p: u64, replica: u64| m.partitions[&p].replicas.iter().find(|r| r.replica == replica).map(|r| r.node);
    let parts = m.services[SERVICE].partition_ids.clone();
    let serving_a = seen_a.lock().serving.clone();
    let mut victims = Vec::new();
    for p in &parts {
        let primary = primary_node(&addrs, *p).await.expect("a primary");
        let breaks_a = serving_a.get(p).and_then(|r| node_of(*p, *r)) == Some(primary);
        victims.push((!breaks_a, primary));
    }
    victims.sort();
    let victim = victims[0].1;
    nodes[victim as usize - 1].kill();
    for i in 150..300 {
        write(i, &mut acked, &mut maybe).await;
    }
    let b = collect(
        client.watch(SERVICE, &WatchOptions { resume, ..Default::default() }).await.expect("watch B again"),
        seen_b.clone(),
    );

    // Both watchers end up with every acknowledged write, at its acknowledged version.
    for (name, seen) in [("A", &seen_a), ("B", &seen_b)] {
        let got = wait_for(Duration::from_secs(30), &format!("watcher {name} to see every acknowledged write"), || {
            let got = puts(&seen.lock());
            let all = acked.keys().all(|k| got.contains_key(k));
            async move { all.then_some(got) }
        })
        .await;
        for (key, version) in &acked {
            assert_eq!(got[key].1, *version, "watcher {name}: {key} at the version its write was acknowledged at");
        }
        for key in got.keys() {
            assert!(acked.contains_key(key) || maybe.contains(key), "watcher {name}: {key} was never written");
        }
    }
    assert!(acked.len() >= 290, "most writes acknowledged: {} (maybe: {})", acked.len(), maybe.len());
    assert!(!a.is_finished(), "watcher A still follows the service");
    a.abort();
    b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_reading_too_slowly_is_cut_off_and_old_versions_are_refused() {
    let (addrs, _nodes, client) = cluster(1, (1, 1), &["--watch-history-kib", "1024"]).await;
    let config = common::root();
    let partition = ServiceClient::fetch_map(&config, &addrs, Duration::from_secs(5))
        .await
        .expect("map")
        .map
        .expect("map")
        .services[SERVICE]
        .partition_ids[0];
    let channel = weft_testkit::local::channel(&common::security().root().expect("root"), &addrs[0]).expect("channel");
    let mut store = pb::store_client::StoreClient::new(channel);
    let watch = |from_version| pb::WatchRequest { partition, from_version, ..Default::default() };

    // A watcher that never reads while far more than the history, the queue and the
    // transport's windows hold is written.
    let mut slow = store.watch(watch(1)).await.expect("a watch").into_inner();
    let value = vec![b'x'; 100_000];
    for i in 0..250 {
        client.put(SERVICE, "default", format!("big{i}").as_bytes(), &value).await.expect("put");
    }
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(30), slow.message()).await.expect("the watch ends") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the slow watch ended without an error"),
            Err(s) => break s,
        }
    };
    let d = detail::of(&end).expect("a detail");
    assert_eq!((end.code(), d.reason()), (Code::OutOfRange, pb::ErrorReason::Compacted), "{end:?}");
    assert!(end.message().contains("too slowly"), "{end:?}");
    assert!(d.oldest_version > 1, "the history moved on: {d:?}");

    // Asking for a version no longer kept is refused at once, naming the oldest kept; from
    // there, the watch works.
    let s = store.watch(watch(2)).await.expect_err("version 2 is gone");
    let d = detail::of(&s).expect("a detail");
    assert_eq!((s.code(), d.reason()), (Code::OutOfRange, pb::ErrorReason::Compacted), "{s:?}");
    let mut ok = store.watch(watch(d.oldest_version)).await.expect("from the oldest kept").into_inner();
    let first = ok.message().await.expect("a message").expect("the start");
    assert_eq!((first.through, first.changes.len()), (d.oldest_version - 1, 0), "the stream says where it starts");
    let next = ok.message().await.expect("a message").expect("changes");
    assert_eq!(next.changes.first().map(|c| c.version), Some(d.oldest_version));

    // The node still serves, and the client's watch says the same as a clear error.
    let v = client.put(SERVICE, "default", b"after", b"1").await.expect("still serving");
    assert!(v > d.oldest_version);
    let mut w = client.watch(SERVICE, &WatchOptions { from: 2, ..Default::default() }).await.expect("a watch");
    match w.next().await {
        Some(Err(ClientError::Compacted { partition: p, oldest, .. })) => {
            assert_eq!(p, partition);
            assert!(oldest > 2);
        }
        other => panic!("expected a compacted error, got {other:?}"),
    }
}
