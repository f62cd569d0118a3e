//! The cluster map's own replica group survives its seeds losing their replicas.
//!
//! Volatile seeds come back empty from a restart. Before the manager rebuilt lost map
//! replicas (`src/manager/map_group.rs`), the second such restart cost the map its
//! quorum: no operator command, no repair, no routing for new clients. Here every seed is
//! SIGKILLed and restarted in turn, each only after the last one's map replica was
//! rebuilt, so at the end no original map replica is left, and the cluster must still
//! take commands and route writes.

mod common;

use std::time::Duration;

use common::{free_addrs, wait_for, weft};
use weft::node::MAP_PARTITION;
use weft_testkit::local::{LocalNode, ready_service, start_managed};

/// The voters of the map group as this status's replica knows them, once the group is
/// out of any joint configuration.
fn voters(s: &weft::proto::ReplicaStatus) -> Option<Vec<u64>> {
    let m = s.membership.as_ref()?;
    (m.configs.len() == 1).then(|| m.configs[0].ids.clone())
}

/// The map replica `node` hosts, once it is a voter and has applied entries.
async fn map_voter(node: &LocalNode) -> Option<u64> {
    let s = node.status(MAP_PARTITION).await?;
    (voters(&s)?.contains(&s.replica) && s.applied_index > 0).then_some(s.replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_restarted_empty_in_turn_and_the_map_lives_on() {
    let addrs = free_addrs(4);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let extra = |_| ["--down-grace", "2", "--balance-every", "0"].map(String::from).to_vec();
    let mut nodes = start_managed(exe, &addrs, 4, None, false, &common::security(), extra).expect("start the cluster");
    ready_service(&common::root(), &addrs, 4, "t", 1, 3, Duration::from_secs(60)).await.expect("service t ready");
    let ep = addrs[3].as_str();

    for seed in 0..3 {
        let old = map_voter(&nodes[seed]).await.expect("the seed hosts a map voter");
        nodes[seed].restart().expect("restart the seed");
        let fresh = wait_for(Duration::from_secs(60), "the seed's map replica rebuilt", || async {
            map_voter(&nodes[seed]).await
        })
        .await;
        assert_ne!(fresh, old, "a lost replica's id is never reused");
        // The group lists the new id in place of the lost one, and nothing else.
        let other = nodes[(seed + 1) % 3].status(MAP_PARTITION).await.expect("another seed's map replica");
        let voters = voters(&other).expect("another seed's view of the map group");
        assert_eq!(voters.len(), 3, "three map voters: {voters:?}");
        assert!(voters.contains(&fresh) && !voters.contains(&old), "{old} replaced by {fresh}: {voters:?}");
    }

    // No original map replica is left; the map still takes commands and routes writes (to
    // a service made now: service t's replicas went with the restarts too, and whether
    // repair kept up with them is the operator story's test, not this one's).
    let (ok, _, err) = weft(&["ctl", "--endpoint", ep, "create-service", "u", "--partitions", "1", "--replicas", "3"]);
    assert!(ok, "create-service after every seed restarted: {err}");
    let put = || weft(&["kv", "--endpoint", ep, "put", "--service", "u", "after", "2"]).0.then_some(());
    wait_for(Duration::from_secs(60), "a write after every seed restarted", || async { put() }).await;
    let (ok, out, err) = weft(&["kv", "--endpoint", ep, "get", "--service", "u", "after"]);
    assert!(ok && out.trim() == "2", "read back: {out} {err}");
}
