//! Cluster tests written once against `weft_testkit::world::Cluster` and run in two worlds:
//! `weft_node::Node`s inside this process (`in_process`, the fast tier) and `weft node`
//! processes (`processes`, the end-to-end tier). Both worlds start the nodes a test asks
//! for, each in a UD and FD of its own, with TLS, crash nodes abruptly and cut links
//! through the `Faults` service.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weft::client::ClientConfig;
use weft::proto as pb;
use weft::proto::cluster_client::ClusterClient;
use weft::proto::node_admin_client::NodeAdminClient;
use weft::routing::{ServiceClient, ready_service};
use weft_security::AuthChannel;
use weft_testkit::local::Security;
use weft_testkit::world::{self, Cluster};

const SERVICE: &str = "worlds";
const TABLE: &str = "default";

two_worlds!(
    a_crashed_primary_loses_no_acknowledged_write: Options::nodes(5),
    a_cut_off_primary_is_replaced_and_the_cluster_heals: Options::nodes(5),
    replicas_are_spread_over_nodes_and_domains: Options::nodes(5),
    a_late_report_missing_live_replicas_gets_nothing_replaced: Options::nodes(5),
    a_move_whose_new_replica_makes_no_progress_is_abandoned: Options::nodes(6).move_stall(Duration::from_secs(2)),
    a_move_to_a_node_that_stopped_answering_is_given_up: Options::nodes(6).move_stall(Duration::from_secs(2)),
    a_drain_whose_move_stalled_tries_another_node: Options::nodes(7).move_stall(Duration::from_secs(2)),
);

/// Creates the service once every node is up and waits until every partition has a
/// primary.
async fn service(c: &impl Cluster, partitions: u32, replicas: u32) -> (ClientConfig, ServiceClient) {
    service_on(c, c.ids().len(), partitions, replicas).await
}

/// [`service`], once `up` nodes are up (a drained node is not).
async fn service_on(c: &impl Cluster, up: usize, partitions: u32, replicas: u32) -> (ClientConfig, ServiceClient) {
    let config = c.client_config().expect("client config");
    let eps = c.endpoints();
    ready_service(&config, &eps, up, SERVICE, partitions, replicas, Duration::from_secs(60))
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

/// A root client of the cluster API at `addr`.
fn cluster_api(c: &impl Cluster, addr: &str) -> ClusterClient<AuthChannel> {
    let root = c.security().root().expect("root's credentials");
    ClusterClient::new(weft_testkit::local::channel(&root, addr).expect("a channel"))
}

/// The members (voters and learners) of `partition`'s group as node `id`'s replica sees
/// them; `None` when the node hosts no replica of it (or does not answer).
async fn members(c: &impl Cluster, id: u64, partition: u64) -> Option<BTreeSet<u64>> {
    // Node administration answers nodes only: the harness speaks as node 0.
    let channel = c.security().channel(&c.addr(id).ok()?).ok()?;
    let st = NodeAdminClient::new(channel).status(pb::ReplicaStatusRequest { partition }).await.ok()?.into_inner();
    Some(st.membership.map(|m| m.nodes.into_keys().collect()).unwrap_or_default())
}

/// Node ids hosting `partition`'s replicas, and its replica ids, as the map places them.
fn placed(m: &pb::GetMapResponse, partition: u64) -> (BTreeSet<u64>, Vec<u64>) {
    let replicas = m.map.as_ref().and_then(|m| m.partitions.get(&partition)).map(|p| p.replicas.clone());
    let replicas = replicas.unwrap_or_default();
    (replicas.iter().map(|r| r.node).collect(), replicas.iter().map(|r| r.replica).collect())
}

/// The first partition of the service.
fn first_partition(m: &pb::GetMapResponse) -> u64 {
    *m.map.as_ref().and_then(|m| m.services.get(SERVICE)).and_then(|s| s.partition_ids.first()).expect("a partition")
}

/// A node that reports late, without the replicas it hosts (its reports were delayed
/// behind newer ones), gets none of them replaced: the manager replaces a replica only
/// when the node's own reports, in order, stop naming it. The late reports are the
/// node's own, sent with its certificate (a node may report only for itself).
async fn a_late_report_missing_live_replicas_gets_nothing_replaced(c: &mut impl Cluster) {
    let (config, _) = service(c, 4, 4).await;
    let before = wait_healthy(c, &config, 4, "after creation", |_| true).await;
    let victim = 5u64;
    let map_of = |m: &pb::GetMapResponse| m.map.clone().expect("a map");
    assert!(
        map_of(&before).partitions.values().any(|p| p.replicas.iter().any(|r| r.node == victim)),
        "{}: node {victim} hosts a replica",
        c.world()
    );
    let info = map_of(&before).nodes.get(&victim).cloned().expect("node 5 in the map");
    let Security::Tls(pki) = c.security() else { panic!("both worlds run TLS") };
    let creds = weft_security::Credentials::load(
        &pki.node_dir(victim).expect("node certificates"),
        weft_security::Holder::Node { id: Some(victim) },
    )
    .expect("node 5's certificate");
    let as_victim = weft_security::ClientSecurity::tls(creds);
    let mut seeds: Vec<ClusterClient<AuthChannel>> = c.endpoints()[..3]
        .iter()
        .map(|a| ClusterClient::new(weft_testkit::local::channel(&as_victim, a).expect("a channel")))
        .collect();
    let mut sent = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for s in seeds.iter_mut() {
            let late = pb::HeartbeatRequest { node: Some(info.clone()), ..Default::default() };
            sent += u32::from(s.heartbeat(late).await.is_ok());
        }
        let m = map(c, &config).await;
        for p in map_of(&m).partitions.values() {
            let pending = p.pending.as_ref().and_then(|mv| mv.replaces.as_ref());
            assert!(
                pending.is_none_or(|r| r.node != victim),
                "{}: a live replica on node {victim} is being replaced: {:?}",
                c.world(),
                p.pending
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent > 10, "{}: the manager took the late reports ({sent})", c.world());
    let after = wait_healthy(c, &config, 4, "still placed", |_| true).await;
    let ids = |m: &pb::GetMapResponse| {
        map_of(m)
            .partitions
            .iter()
            .map(|(id, p)| (*id, p.replicas.iter().map(|r| r.replica).collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(ids(&after), ids(&before), "{}: no replica was replaced", c.world());
    assert_eq!(map_of(&after).nodes.get(&victim).map(|n| n.state), Some(pb::NodeState::Up as i32));
}

/// Asks for partition `partition`'s replica on node `from` to move to node `to`, and
/// checks that the move is given up well inside the ten-minute catch-up limit: the map
/// settles with no move pending and the partition on its replicas `before`.
async fn move_is_abandoned(
    c: &impl Cluster,
    config: &ClientConfig,
    partition: u64,
    from: u64,
    to: u64,
    before: &[u64],
) {
    let req = pb::MoveSecondaryRequest { partition, from_node: from, to_node: to, force: false };
    cluster_api(c, &c.endpoints()[3]).move_secondary(req).await.expect("move-secondary accepted");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_pending = false;
    loop {
        let m = map(c, config).await;
        let pending = m.map.as_ref().and_then(|m| m.partitions.get(&partition)).is_some_and(|p| p.pending.is_some());
        seen_pending |= pending;
        if seen_pending && !pending && healthy(&m, before.len()) {
            assert_eq!(placed(&m, partition).1, before, "{}: the partition kept its replicas", c.world());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the move to node {to} was not given up within 60 s: {:?}",
            c.world(),
            m.map
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node ids a move may pick: not hosting `partition`, not the manager's.
fn spares(c: &impl Cluster, m: &pb::GetMapResponse, partition: u64) -> Vec<u64> {
    let (hosting, _) = placed(m, partition);
    c.ids().into_iter().filter(|n| !hosting.contains(n) && *n != m.manager_node).collect()
}

/// A secondary of `partition` off the manager's node.
fn a_secondary(m: &pb::GetMapResponse, partition: u64) -> u64 {
    let primary = m.primaries.get(&partition).copied();
    let (hosting, _) = placed(m, partition);
    hosting
        .into_iter()
        .find(|n| Some(*n) != primary && *n != m.manager_node)
        .expect("a secondary off the manager's node")
}

/// A move's new replica that its node serves but the partition's primary cannot reach (a
/// one-way network fault) makes no progress. After the move stall the manager gives the
/// move up: the learner leaves the group, its replica is closed, and the partition keeps
/// its replicas. (Before, the move waited ten minutes for the learner, then again, forever.)
async fn a_move_whose_new_replica_makes_no_progress_is_abandoned(c: &mut impl Cluster) {
    let (config, _) = service(c, 1, 4).await;
    let m = wait_healthy(c, &config, 4, "after creation", |_| true).await;
    let pid = first_partition(&m);
    let manager = m.manager_node;
    // The primary must be off the manager's node, so that cutting the primary's links
    // leaves the manager's own calls to the target alone.
    let m = if m.primaries.get(&pid) == Some(&manager) {
        let to = a_secondary(&m, pid);
        let req = pb::MovePrimaryRequest { partition: pid, to_node: to, force: false };
        cluster_api(c, &c.endpoints()[3]).move_primary(req).await.expect("move-primary");
        wait_healthy(c, &config, 4, "the primary off the manager's node", |m| m.primaries.get(&pid) != Some(&manager))
            .await
    } else {
        m
    };
    let (hosting, before) = placed(&m, pid);
    let spare = spares(c, &m, pid)[0];
    let from = a_secondary(&m, pid);
    // Every node but the manager's loses its links to the spare: whichever replica leads
    // cannot send it anything, while the manager still opens it and asks how it is doing.
    let spare_addr = c.addr(spare).expect("spare's address");
    for id in c.ids().into_iter().filter(|id| *id != manager) {
        world::cut_links(c, &c.addr(id).expect("address"), vec![spare_addr.clone()]).await.expect("cutting links");
    }
    move_is_abandoned(c, &config, pid, from, spare, &before).await;
    // The learner left the group and its replica was closed.
    let voters: BTreeSet<u64> = before.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut settled = members(c, spare, pid).await.is_none();
        for id in &hosting {
            settled &= members(c, *id, pid).await.as_ref() == Some(&voters);
        }
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "{}: the learner still in the group or on its node", c.world());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A move whose target's node stopped answering is given up after the move stall like
/// one whose target answers and stalls: every round's failed step counts as no progress.
/// (It used to be retried every 0.3 s for as long as the node stayed away.)
async fn a_move_to_a_node_that_stopped_answering_is_given_up(c: &mut impl Cluster) {
    let (config, _) = service(c, 1, 4).await;
    let m = wait_healthy(c, &config, 4, "after creation", |_| true).await;
    let pid = first_partition(&m);
    let (_, before) = placed(&m, pid);
    // Not the node the test talks to (the fourth).
    let talk = c.ids()[3];
    let spare = spares(c, &m, pid).into_iter().find(|n| *n != talk).expect("a spare node");
    let from = a_secondary(&m, pid);
    c.crash(spare);
    move_is_abandoned(c, &config, pid, from, spare, &before).await;
}

/// After a move stalls on a node, the next plan for that partition goes around the node:
/// a drain whose first target the primary cannot reach tries the other free node next,
/// rather than the same one again.
async fn a_drain_whose_move_stalled_tries_another_node(c: &mut impl Cluster) {
    let config = c.client_config().expect("client config");
    let mut api = cluster_api(c, &c.endpoints()[3]);
    // The manager's node takes nothing, so the two free nodes are the only targets.
    let manager = wait_for_manager(c, &config).await;
    api.drain(pb::NodeRequest { node: manager, force: true }).await.expect("drain the manager's node");
    service_on(c, c.ids().len() - 1, 1, 4).await;
    let m = wait_healthy(c, &config, 4, "placed off the manager's node", |m| {
        m.map.as_ref().is_some_and(|map| map.partitions.values().all(|p| p.replicas.iter().all(|r| r.node != manager)))
    })
    .await;
    let pid = first_partition(&m);
    let free = spares(c, &m, pid);
    assert_eq!(free.len(), 2, "{}: {:?}", c.world(), m.map);
    let free_addrs: Vec<String> = free.iter().map(|f| c.addr(*f).expect("address")).collect();
    for id in c.ids().into_iter().filter(|id| *id != manager) {
        world::cut_links(c, &c.addr(id).expect("address"), free_addrs.clone()).await.expect("cutting links");
    }
    let from = a_secondary(&m, pid);
    api.drain(pb::NodeRequest { node: from, force: false }).await.expect("drain");
    let mut targets = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(30);
    while targets.len() < 2 && Instant::now() < until {
        let m = map(c, &config).await;
        if let Some(to) =
            m.map.as_ref().and_then(|m| m.partitions.get(&pid)).and_then(|p| p.pending.as_ref()).and_then(|mv| mv.to)
        {
            targets.insert(to.node);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        targets,
        free.into_iter().collect(),
        "{}: the drain tried both free nodes, one after the other",
        c.world()
    );
}

/// The node the cluster manager runs on, once the map has one.
async fn wait_for_manager(c: &impl Cluster, config: &ClientConfig) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = map(c, config).await;
        let up =
            m.map.as_ref().map_or(0, |map| map.nodes.values().filter(|n| n.state == pb::NodeState::Up as i32).count());
        if m.manager_node != 0 && up == c.ids().len() {
            return m.manager_node;
        }
        assert!(Instant::now() < deadline, "{}: no manager with every node up within 60 s", c.world());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
