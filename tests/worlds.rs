//! Cluster tests written once against `weft_testkit::world::Cluster` and run in two worlds:
//! `weft_node::Node`s inside this process (`in_process`, the fast tier) and `weft node`
//! processes (`processes`, the end-to-end tier). Both worlds start five nodes in five UDs
//! and FDs with TLS, crash nodes abruptly and cut links through the `Faults` service.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weft::client::ClientConfig;
use weft::proto as pb;
use weft::routing::{ServiceClient, ready_service};
use weft_testkit::world::{self, Cluster};

const NODES: usize = 5;
const SERVICE: &str = "worlds";
const TABLE: &str = "default";

/// Each test, in each world.
macro_rules! two_worlds {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process() {
                let mut c = weft_testkit::world::InProcess::start(super::NODES).expect("starting in-process nodes");
                super::$name(&mut c).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn processes() {
                let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
                let mut c = weft_testkit::world::Processes::start(exe, super::NODES).expect("starting node processes");
                super::$name(&mut c).await;
            }
        }
    )*};
}

two_worlds!(
    a_crashed_primary_loses_no_acknowledged_write,
    a_cut_off_primary_is_replaced_and_the_cluster_heals,
    replicas_are_spread_over_nodes_and_domains,
);

/// Creates the service and waits until every partition has a primary.
async fn service(c: &impl Cluster, partitions: u32, replicas: u32) -> (ClientConfig, ServiceClient) {
    let config = c.client_config().expect("client config");
    let eps = c.endpoints();
    ready_service(&config, &eps, NODES, SERVICE, partitions, replicas, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{}: service not ready: {e}", c.world()));
    (config.clone(), ServiceClient::new(eps, config))
}

async fn map(c: &impl Cluster, config: &ClientConfig) -> pb::GetMapResponse {
    ServiceClient::fetch_map(config, &c.endpoints(), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{}: no map: {e}", c.world()))
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Writes keys `range`, each retried until acknowledged (the same value each time, so a
/// retry of a write whose outcome was unknown changes nothing): every write in `range` must
/// be acknowledged within `within` of its first attempt.
async fn write_all(svc: &ServiceClient, range: std::ops::Range<u32>, acked: &mut BTreeSet<u32>, within: Duration) {
    for i in range {
        let start = Instant::now();
        loop {
            match svc.put(SERVICE, TABLE, &key(i), &value(i)).await {
                Ok(_) => break,
                Err(e) if start.elapsed() < within => {
                    tracing::debug!(i, error = %e, "write not acknowledged; again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("write {i} not acknowledged within {within:?}: {e}"),
            }
        }
        acked.insert(i);
    }
}

/// Every acknowledged write reads back (a linearizable read through the primary).
async fn assert_all_present(svc: &ServiceClient, acked: &BTreeSet<u32>) {
    for i in acked {
        let got = svc.get(SERVICE, TABLE, &key(*i)).await.unwrap_or_else(|e| panic!("reading key {i}: {e}"));
        assert_eq!(got.map(|r| r.value.to_vec()), Some(value(*i)), "acknowledged write {i} lost");
    }
}

/// The node hosting the primary of the service's first partition, as the map says.
fn first_primary(m: &pb::GetMapResponse) -> Option<(u64, u64)> {
    let p = *m.map.as_ref()?.services.get(SERVICE)?.partition_ids.first()?;
    Some((p, *m.primaries.get(&p)?))
}

/// Every partition of the service has `replicas` placed replicas on up nodes, no move
/// pending, each reported by its node as primary or secondary, and a primary.
fn healthy(m: &pb::GetMapResponse, replicas: usize) -> bool {
    let Some(map) = &m.map else { return false };
    let Some(svc) = map.services.get(SERVICE) else { return false };
    let reported: BTreeMap<(u64, u64), i32> = m.reported.iter().map(|s| ((s.partition, s.replica), s.role)).collect();
    let up = |n: u64| map.nodes.get(&n).is_some_and(|n| n.state == pb::NodeState::Up as i32);
    svc.partition_ids.iter().all(|p| {
        let Some(part) = map.partitions.get(p) else { return false };
        part.created
            && part.pending.is_none()
            && part.replicas.len() == replicas
            && m.primaries.contains_key(p)
            && part.replicas.iter().all(|r| {
                up(r.node)
                    && matches!(
                        reported.get(&(*p, r.replica)).copied(),
                        Some(x) if x == pb::Role::Primary as i32 || x == pb::Role::Secondary as i32
                    )
            })
    })
}

/// Waits until the map is [`healthy`] and `also` holds of it.
async fn wait_healthy(
    c: &impl Cluster,
    config: &ClientConfig,
    replicas: usize,
    what: &str,
    also: impl Fn(&pb::GetMapResponse) -> bool,
) -> pb::GetMapResponse {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let m = map(c, config).await;
        if healthy(&m, replicas) && also(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{}: {what}: not healthy within 90 s: {:?}", c.world(), m.map);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node hosting a partition's primary is crashed (its replicas' memory gone) while
/// writes go on: the others elect a primary and every write is acknowledged; the node comes
/// back empty with a new incarnation, the manager restores the replica count, and every
/// acknowledged write reads back.
async fn a_crashed_primary_loses_no_acknowledged_write(c: &mut impl Cluster) {
    let (config, svc) = service(c, 4, 3).await;
    let mut acked = BTreeSet::new();
    write_all(&svc, 0..100, &mut acked, Duration::from_secs(20)).await;
    let before = map(c, &config).await;
    let (_, victim) = first_primary(&before).expect("the first partition has a primary");
    let incarnation = |m: &pb::GetMapResponse| m.map.as_ref().and_then(|m| m.nodes.get(&victim)).map(|n| n.incarnation);
    let was = incarnation(&before);

    c.crash(victim);
    write_all(&svc, 100..200, &mut acked, Duration::from_secs(30)).await;
    c.restart(victim).expect("restart");

    // Until the restarted node's first heartbeat, the manager still holds the crashed
    // process's last report (it is within the down grace): wait for the new incarnation.
    let after =
        wait_healthy(c, &config, 3, "after the crash and restart, with a new incarnation", |m| incarnation(m) != was)
            .await;
    assert!(incarnation(&after).is_some(), "{}: the restarted node is in the map", c.world());
    write_all(&svc, 200..300, &mut acked, Duration::from_secs(20)).await;
    assert_all_present(&svc, &acked).await;
}

/// The node hosting a partition's primary is cut off from every other node (clients still
/// reach it): writes go on through a primary elected on the majority side, and once the
/// links are restored the cluster is whole again with every acknowledged write.
async fn a_cut_off_primary_is_replaced_and_the_cluster_heals(c: &mut impl Cluster) {
    let (config, svc) = service(c, 2, 3).await;
    let mut acked = BTreeSet::new();
    write_all(&svc, 0..50, &mut acked, Duration::from_secs(20)).await;
    let (partition, victim) = first_primary(&map(c, &config).await).expect("the first partition has a primary");

    world::isolate(c, victim).await.expect("cutting links");
    write_all(&svc, 50..150, &mut acked, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = map(c, &config).await;
        if m.primaries.get(&partition).is_some_and(|p| *p != victim) {
            break;
        }
        assert!(Instant::now() < deadline, "{}: partition {partition} kept its cut-off primary", c.world());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world::heal(c).await.expect("restoring links");

    wait_healthy(c, &config, 3, "after the links were restored", |_| true).await;
    write_all(&svc, 150..200, &mut acked, Duration::from_secs(20)).await;
    assert_all_present(&svc, &acked).await;
}

/// A service of 8 partitions x 4 replicas on 5 nodes (each its own UD and FD): no partition
/// has two replicas on one node or in one domain, and no node holds more than its share
/// plus one.
async fn replicas_are_spread_over_nodes_and_domains(c: &mut impl Cluster) {
    let (config, _) = service(c, 8, 4).await;
    let m = wait_healthy(c, &config, 4, "after creation", |_| true).await;
    let map = m.map.as_ref().expect("map");
    let mut per_node: BTreeMap<u64, usize> = c.ids().into_iter().map(|id| (id, 0)).collect();
    for p in &map.services[SERVICE].partition_ids {
        let replicas = &map.partitions[p].replicas;
        let nodes: BTreeSet<u64> = replicas.iter().map(|r| r.node).collect();
        let uds: BTreeSet<&str> = replicas.iter().map(|r| map.nodes[&r.node].ud.as_str()).collect();
        let fds: BTreeSet<&str> = replicas.iter().map(|r| map.nodes[&r.node].fd.as_str()).collect();
        assert_eq!((nodes.len(), uds.len(), fds.len()), (4, 4, 4), "{}: partition {p}: {replicas:?}", c.world());
        for n in nodes {
            *per_node.entry(n).or_default() += 1;
        }
    }
    // 32 replicas over 5 nodes: 6 or 7 each when spread evenly.
    let (min, max) = (per_node.values().min().copied(), per_node.values().max().copied());
    assert!(min >= Some(6) && max <= Some(7), "{}: replicas per node {per_node:?}", c.world());
}
