//! The wire contract (`docs/api.md`) as a client in another language meets it: raw gRPC
//! calls built from the `.proto` messages alone, against real `weft node` processes. Every
//! failure a client must act on carries its `weft.v1.ErrorDetail` in the status details
//! (unary calls and session calls alike), and the requests that used to mean something
//! other than they said are refused.

mod common;

use std::time::Duration;

use common::{LocalNode, wait_for};
use tonic::Code;
use weft::proto as pb;
use weft_proto::detail;
use weft_security::AuthChannel;

type Store = pb::store_client::StoreClient<AuthChannel>;

fn root_channel(addr: &str) -> AuthChannel {
    weft_testkit::local::channel(&common::security().root().expect("root"), addr).expect("a channel")
}

fn put(key: &[u8], value: &[u8], condition: Option<pb::condition::Kind>) -> pb::Op {
    pb::Op {
        kind: Some(pb::op::Kind::Put(pb::Put {
            table: "default".into(),
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            condition: condition.map(|kind| pb::Condition { kind: Some(kind) }),
            ..Default::default()
        })),
    }
}

fn write(partition: u64, session: Option<pb::Session>, ops: Vec<pb::Op>) -> pb::WriteRequest {
    let command = pb::Command { session: None, kind: Some(pb::command::Kind::Batch(pb::Batch { ops })) };
    pb::WriteRequest { partition, session, command: Some(command) }
}

fn refusal(r: &pb::WriteResponse) -> Option<(pb::ErrorCode, String)> {
    match r.result.as_ref()?.outcome.as_ref()? {
        pb::command_result::Outcome::Error(e) => Some((e.code(), e.message.clone())),
        _ => None,
    }
}

/// A secure 4-node cluster, one partition of 3 replicas: the map names its primary, and
/// each answer a client must tell apart carries its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_a_client_acts_on_carries_its_reason() {
    let addrs = common::free_addrs(4);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let _nodes: Vec<LocalNode> =
        weft_testkit::local::start_managed(exe, &addrs, 4, None, false, &common::security(), |_| Vec::new())
            .expect("start the cluster");
    // A service created the moment a fresh cluster first answers waits for the nodes its
    // placement needs instead of failing because they have not registered yet; one that
    // needs more nodes than there are says how many there are.
    let cluster = pb::cluster_client::ClusterClient::new(root_channel(&addrs[0]));
    wait_for(Duration::from_secs(30), "the cluster map", || {
        let mut cluster = cluster.clone();
        async move { cluster.get_map(pb::GetMapRequest {}).await.ok() }
    })
    .await;
    let create = |name: &str, replicas| {
        let mut cluster = cluster.clone();
        let req = pb::CreateServiceRequest { name: name.into(), partitions: 1, replicas, restoring: false };
        async move { cluster.create_service(req).await }
    };
    let too_big = tokio::spawn(create("big", 5));
    create("s", 3).await.expect("service s created as soon as the cluster answered");

    // The map names each partition's primary: no joining of parallel arrays. A service's
    // partitions are built after CreateService answers; one is usable (its `default` table
    // made) once the map marks it `created`, as the routed client waits for.
    let (map, partition, primary) = wait_for(Duration::from_secs(10), "the map to name the primary", || {
        let mut cluster = cluster.clone();
        async move {
            let m = cluster.get_map(pb::GetMapRequest {}).await.ok()?.into_inner();
            let p = m.map.as_ref()?.partitions.values().find(|p| p.service == "s" && p.created)?.id;
            let node = *m.primaries.get(&p)?;
            Some((m, p, node))
        }
    })
    .await;
    let map = map.map.expect("map");
    let addr_of = |node: u64| map.nodes[&node].addr.clone();
    let hosts: Vec<u64> = map.partitions[&partition].replicas.iter().map(|r| r.node).collect();
    assert!(hosts.contains(&primary), "the primary {primary} is one of {hosts:?}");
    let secondary = *hosts.iter().find(|n| **n != primary).expect("a secondary");
    let stranger = (1..=4).find(|n| !hosts.contains(n)).expect("a node without the partition");
    let on = |node: u64| Store::new(root_channel(&addr_of(node)));
    let get = |table: &str| pb::GetRequest {
        header: Some(pb::ReadHeader { partition, mode: pb::ReadMode::Linearizable as i32 }),
        table: table.into(),
        key: b"k".to_vec().into(),
    };
    let r = on(primary).get(get("default")).await;
    assert!(r.is_ok(), "GetMap.primaries names the primary: {r:?}");

    // Not the primary: UNAVAILABLE, NOT_PRIMARY, with the primary's address: not applied.
    let s = on(secondary).write(write(partition, None, vec![put(b"k", b"v", None)])).await.expect_err("a secondary");
    let d = detail::of(&s).expect("a detail");
    assert_eq!((s.code(), d.reason()), (Code::Unavailable, pb::ErrorReason::NotPrimary), "{s:?}");
    assert_eq!(d.leader_addr, addr_of(primary));
    // Not hosted: NOT_FOUND, NOT_HOSTED.
    let s = on(stranger).write(write(partition, None, vec![put(b"k", b"v", None)])).await.expect_err("a stranger");
    assert_eq!((s.code(), detail::reason_of(&s)), (Code::NotFound, pb::ErrorReason::NotHosted), "{s:?}");
    // A missing table is NOT_FOUND too, but the partition's own answer: no reason.
    let s = on(primary).get(get("nope")).await.expect_err("no such table");
    assert_eq!((s.code(), detail::of(&s)), (Code::NotFound, None), "{s:?}");

    // The same reasons reach a call of a session stream, in CallStatus.details.
    let call = pb::SessionCalls {
        calls: vec![pb::SessionCall {
            id: 7,
            call: Some(pb::session_call::Call::Write(write(partition, None, vec![put(b"k", b"v", None)]))),
        }],
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(call).await.expect("queue the call");
    let mut answers =
        on(secondary).session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("a session").into_inner();
    let answer = answers.message().await.expect("an answer").expect("a message").answers.remove(0);
    drop(tx);
    let Some(pb::session_answer::Answer::Error(c)) = answer.answer else { panic!("{answer:?}") };
    let d = detail::from_bytes(&c.details).expect("the call's detail");
    assert_eq!((c.code, d.reason()), (Code::Unavailable as i32, pb::ErrorReason::NotPrimary));
    assert_eq!(d.leader_addr, addr_of(primary));

    // Conditions that say nothing are refused, not ignored; nothing is written.
    for nothing in [pb::condition::Kind::Exists(false), pb::condition::Kind::Absent(false)] {
        let r =
            on(primary).write(write(partition, None, vec![put(b"c", b"v", Some(nothing))])).await.expect("an answer");
        let (code, message) = refusal(&r.into_inner()).expect("refused");
        assert_eq!(code, pb::ErrorCode::Invalid, "{message}");
    }
    let r = on(primary).get(get("default")).await.expect("read").into_inner();
    assert!(r.record.is_none());

    // One place for the session: a command carrying its own is refused.
    let session = pb::Session { client_id: 41, seq: 1, acked_below: 1 };
    let mut twice = write(partition, Some(session), vec![put(b"k", b"v", None)]);
    twice.command.as_mut().expect("command").session = Some(session);
    let s = on(primary).write(twice).await.expect_err("a session in the command");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // A retry below acked_below: the first answer is forgotten, so the outcome is
    // unknown, and the code says so (not INVALID, which means "not applied").
    let w = |seq, acked_below, key: &[u8]| {
        write(partition, Some(pb::Session { client_id: 41, seq, acked_below }), vec![put(key, b"v", None)])
    };
    for (seq, acked_below) in [(5, 1), (10, 10)] {
        let r = on(primary).write(w(seq, acked_below, b"s")).await.expect("applied").into_inner();
        assert_eq!(refusal(&r), None);
    }
    let r = on(primary).write(w(5, 10, b"s")).await.expect("an answer").into_inner();
    let (code, message) = refusal(&r).expect("refused");
    assert_eq!(code, pb::ErrorCode::SessionExpired, "{message}");

    let s = too_big.await.expect("the task").expect_err("5 replicas on 4 nodes");
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("5 replicas need 5 nodes up with room; the cluster has 4"), "{}", s.message());
}

/// A replica opened but not yet built answers stale reads "not ready", not "no such
/// table"; once it has its data it serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_being_built_refuses_stale_reads_until_it_has_state() {
    const P: u64 = 1;
    let nodes: Vec<LocalNode> = (1..=2).map(|i| common::start(i, &[])).collect();
    let leader = common::open_partition(&[&nodes[0]], P, 100).await;
    assert_eq!(leader, 101);
    let client = weft::Client::new(vec![nodes[0].addr.clone()], common::harness());
    client.create_table(P, "t").await.expect("create table");
    client.put(P, "t", b"k", b"v").await.expect("put");

    let mut admin = nodes[1].admin().await.expect("admin");
    admin
        .open_replica(pb::OpenReplicaRequest { partition: P, replica: 102, mode: 0, initial: None, staged: false })
        .await
        .expect("open an empty replica");
    let stale = pb::GetRequest {
        header: Some(pb::ReadHeader { partition: P, mode: pb::ReadMode::Stale as i32 }),
        table: "t".into(),
        key: b"k".to_vec().into(),
    };
    let mut built = Store::new(common::channel(&nodes[1].addr));
    let s = built.get(stale.clone()).await.expect_err("nothing applied yet");
    assert_eq!((s.code(), detail::reason_of(&s)), (Code::Unavailable, pb::ErrorReason::NotReady), "{s:?}");

    let mut primary = nodes[0].admin().await.expect("admin");
    primary
        .add_learner(pb::AddLearnerRequest { partition: P, replica: 102, addr: nodes[1].addr.clone(), blocking: true })
        .await
        .expect("add the learner");
    let got = wait_for(Duration::from_secs(10), "the learner to serve the record", || {
        let (mut built, stale) = (built.clone(), stale.clone());
        async move { built.get(stale).await.ok()?.into_inner().record }
    })
    .await;
    assert_eq!(&got.value[..], b"v");
}
