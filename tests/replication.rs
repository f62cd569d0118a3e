//! One partition of standalone nodes (replicas opened by the harness, no cluster
//! manager), written once against `weft_testkit::world::Cluster` and run in both worlds
//! (in-process nodes and `weft node` processes): writes survive a crash of a secondary and
//! of the primary under load, a new learner is built by snapshot and joins, leadership
//! moves to the replica an operator names, stale and linearizable reads behave as
//! documented, session streams multiplex and hold back, defective snapshot streams are
//! refused, and a cut-off primary serves no stale read.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::wait_for;
use parking_lot::Mutex;
use weft::client::ClientConfig;
use weft::proto as pb;
use weft::{Client, ClientError, ReadMode};
use weft_testkit::world::{self, Cluster};

const P: u64 = 1;
const BASE: u64 = 100;

two_worlds!(
    // Frequent snapshots and short logs, so a new replica must be built from a snapshot.
    writes_survive_crashes_and_a_learner_is_built_by_snapshot: Options::standalone(5).snapshots(100, 10),
    linearizable_reads_go_to_the_primary_and_stale_reads_do_not: Options::standalone(4),
    calls_multiplexed_on_one_session_each_get_their_own_answer: Options::standalone(4),
    a_session_that_reads_no_answers_is_held_back_not_buffered: Options::standalone(1),
    corrupt_or_truncated_snapshot_streams_are_rejected_and_change_nothing: Options::standalone(1),
    leadership_moves_on_command_under_load: Options::standalone(4),
    heartbeats_resume_over_a_healed_link: Options::standalone(4),
    a_cut_off_primary_with_writes_in_flight_serves_no_stale_read: Options::standalone(4),
);

/// Writes keys `prefix-i` until told to stop, recording every acknowledged write.
fn spawn_writer(
    client: Client,
    prefix: String,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (k, v) = (format!("{prefix}-{i:05}"), format!("value-{i}"));
            match client.put(P, "t", k.as_bytes(), v.as_bytes()).await {
                Ok(_) => {
                    acked.lock().insert(k, v);
                }
                // Not acknowledged: it may have applied, or provably did not.
                Err(ClientError::Indeterminate { .. } | ClientError::Unavailable { .. }) => {}
                Err(e) => panic!("write {k} failed: {e}"),
            }
            i += 1;
        }
        i
    })
}

/// Runs four writers while `during` runs; returns what `during` returned.
async fn write_for<T>(
    client: &Client,
    prefix: &str,
    acked: &Arc<Mutex<BTreeMap<String, String>>>,
    during: impl Future<Output = T>,
) -> T {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> =
        (0..4).map(|w| spawn_writer(client.clone(), format!("{prefix}{w}"), acked.clone(), stop.clone())).collect();
    let out = during.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer task");
    }
    out
}

/// Every acknowledged write is there: a linearizable paged scan of the whole table, and a
/// linearizable point read of a sample.
async fn assert_all_present(client: &Client, acked: &BTreeMap<String, String>) {
    let mut table = BTreeMap::new();
    let mut token = Vec::new();
    loop {
        let (records, next) = client.scan(P, "t", &[], 1000, token, ReadMode::Linearizable).await.expect("scan");
        for r in records {
            table.insert(String::from_utf8(r.key.to_vec()).expect("utf-8 key"), r.value.to_vec());
        }
        if next.is_empty() {
            break;
        }
        token = next;
    }
    for (k, v) in acked {
        assert_eq!(table.get(k), Some(&v.as_bytes().to_vec()), "acknowledged write {k} lost");
    }
    for (k, v) in acked.iter().step_by(97) {
        let got = client.get(P, "t", k.as_bytes(), ReadMode::Linearizable).await.expect("read");
        assert_eq!(got.map(|r| r.value.to_vec()), Some(v.as_bytes().to_vec()), "acknowledged write {k} lost");
    }
}

/// Opens partition `P` on the nodes `ids` (replica id = `BASE` + node id) and waits for
/// its primary; returns the primary's replica id.
async fn open(c: &impl Cluster, ids: &[u64]) -> u64 {
    world::open_partition(c, ids, P, BASE).await.expect("open partition");
    primary(c, ids).await
}

/// The primary of `P` among the running nodes of `ids`.
async fn primary(c: &impl Cluster, ids: &[u64]) -> u64 {
    world::primary(c, ids, P, Duration::from_secs(20)).await.expect("a primary")
}

/// A client of the nodes at `endpoints`, as the harness.
fn client(c: &impl Cluster, endpoints: Vec<String>) -> Client {
    Client::new(endpoints, c.client_config().expect("client settings"))
}

/// The node hosting replica `replica` of `P`.
fn node_of(replica: u64) -> u64 {
    replica - BASE
}

/// The address of node `id`.
fn addr(c: &impl Cluster, id: u64) -> String {
    c.addr(id).expect("a node's address")
}

/// Node `id`'s replica of `P`, if it answers.
async fn status(c: &impl Cluster, id: u64) -> Option<pb::ReplicaStatus> {
    world::status(c, id, P).await
}

/// Sets node `at`'s cut links (an empty list heals them).
async fn cut(c: &impl Cluster, at: u64, to: Vec<String>) {
    world::cut_links(c, &addr(c, at), to).await.expect("cut links");
}

async fn writes_survive_crashes_and_a_learner_is_built_by_snapshot(c: &mut impl Cluster) {
    let group = [1, 2, 3, 4];
    let first_primary = open(c, &group).await;
    let client = client(c, c.endpoints());
    client.create_table(P, "t").await.expect("create table");
    let acked = Arc::new(Mutex::new(BTreeMap::new()));

    // Crash a secondary under load.
    let victim = group.into_iter().find(|id| BASE + id != first_primary).expect("a secondary");
    write_for(&client, "a", &acked, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.crash(victim);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    })
    .await;
    let after_secondary = acked.lock().len();
    assert!(after_secondary > 100, "too few writes acknowledged: {after_secondary}");

    // Replace the dead secondary with a learner on node 5, built by snapshot.
    let new_replica = BASE + 5;
    world::admin(c, 5)
        .expect("admin")
        .open_replica(pb::OpenReplicaRequest {
            partition: P,
            replica: new_replica,
            mode: 0,
            initial: None,
            staged: false,
        })
        .await
        .expect("open learner");
    let leader = primary(c, &c.ids()).await;
    let mut admin = world::admin(c, node_of(leader)).expect("admin");
    admin
        .add_learner(pb::AddLearnerRequest { partition: P, replica: new_replica, addr: addr(c, 5), blocking: true })
        .await
        .expect("add learner");
    let voters: Vec<u64> = (1..=5).filter(|i| *i != victim).map(|i| BASE + i).collect();
    admin
        .change_membership(pb::ChangeMembershipRequest { partition: P, voters, retain: false })
        .await
        .expect("change membership");
    // The membership change commits at a quorum of the others; the new replica learns of
    // it when the entry reaches it.
    let st = wait_for(Duration::from_secs(10), "the new replica to become a voter", || async {
        let st = status(c, 5).await?;
        (st.role == pb::Role::Secondary as i32).then_some(st)
    })
    .await;
    assert!(st.snapshots_installed >= 1, "the new replica was not built from a snapshot: {st:?}");
    assert!(st.snapshot_bytes > 0 && st.snapshot_records > 0, "no snapshot progress recorded: {st:?}");

    // Crash the primary under load.
    write_for(&client, "b", &acked, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.crash(node_of(leader));
        tokio::time::sleep(Duration::from_millis(2500)).await;
    })
    .await;
    let survivors: Vec<u64> = c.ids().into_iter().filter(|id| c.up(*id)).collect();
    let new_primary = primary(c, &survivors).await;
    assert_ne!(new_primary, leader, "the crashed primary cannot still lead");
    let acked = acked.lock().clone();
    assert!(acked.len() > after_secondary + 50, "writes did not continue after the primary died");

    assert_all_present(&client, &acked).await;

    // Stale reads from each survivor: flagged stale, served by that replica, and converge.
    let (last_key, last_value) = acked.iter().next_back().expect("some writes");
    for id in survivors {
        let one = client_of(c, id);
        let (rec, info) = wait_for(Duration::from_secs(10), "the survivor to apply the last write", || async {
            let (rec, info) = one.get_with_info(P, "t", last_key.as_bytes(), ReadMode::Stale).await.ok()?;
            rec.is_some().then_some((rec, info))
        })
        .await;
        assert!(info.stale, "a stale read must say so");
        assert_eq!(info.replica, BASE + id, "a stale read is served by the replica asked");
        assert_eq!(rec.map(|r| r.value.to_vec()), Some(last_value.as_bytes().to_vec()));
    }
}

/// A client that knows only node `id`.
fn client_of(c: &impl Cluster, id: u64) -> Client {
    client(c, vec![addr(c, id)])
}

async fn linearizable_reads_go_to_the_primary_and_stale_reads_do_not(c: &mut impl Cluster) {
    let leader = open(c, &c.ids()).await;
    let client = client(c, c.endpoints());
    client.create_table(P, "t").await.expect("create table");
    let v = client.put(P, "t", b"k", b"v1").await.expect("put");
    let secondary = c.ids().into_iter().find(|id| BASE + id != leader).expect("a secondary");
    // A client that only knows a secondary: a linearizable read follows the primary hint.
    let one = client_of(c, secondary);
    let (rec, info) = one.get_with_info(P, "t", b"k", ReadMode::Linearizable).await.expect("linearizable read");
    assert!(!info.stale);
    assert_eq!(info.replica, leader, "served by the primary");
    assert!(info.applied >= v, "a linearizable read sees the acknowledged write");
    assert_eq!(rec.map(|r| r.value.to_vec()), Some(b"v1".to_vec()));
    let (_, info) = one.get_with_info(P, "t", b"k", ReadMode::Stale).await.expect("stale read");
    assert!(info.stale);
    assert_eq!(info.replica, BASE + secondary);
    // A refused write is a typed error and changes nothing.
    let bad = client.create_table(P, "t").await;
    assert!(matches!(bad, Err(ClientError::Refused { code: pb::ErrorCode::TableExists, .. })), "{bad:?}");
    let missing = client.put(P, "nope", b"k", b"v").await;
    assert!(matches!(missing, Err(ClientError::Refused { code: pb::ErrorCode::NoSuchTable, .. })), "{missing:?}");
}

/// A raw Store client of node `id`, as the harness.
fn store(c: &impl Cluster, id: u64) -> pb::store_client::StoreClient<weft_security::AuthChannel> {
    pb::store_client::StoreClient::new(c.security().channel(&addr(c, id)).expect("a channel"))
}

/// Many calls in flight on one client share one session stream per node: each gets its
/// own answer, and a malformed call is refused alone while the stream keeps serving.
async fn calls_multiplexed_on_one_session_each_get_their_own_answer(c: &mut impl Cluster) {
    let leader = open(c, &c.ids()).await;
    let client = client(c, c.endpoints());
    client.create_table(P, "t").await.expect("create table");
    let n = 400u32;
    let puts = (0..n).map(|i| {
        let c = client.clone();
        async move { c.put(P, "t", format!("k{i}").as_bytes(), format!("v{i}").as_bytes()).await }
    });
    for r in futures::future::join_all(puts).await {
        r.expect("put");
    }
    let gets = (0..n).map(|i| {
        let c = client.clone();
        async move { (i, c.get(P, "t", format!("k{i}").as_bytes(), ReadMode::Linearizable).await) }
    });
    for (i, r) in futures::future::join_all(gets).await {
        let value = r.expect("get").map(|rec| rec.value.to_vec());
        assert_eq!(value, Some(format!("v{i}").into_bytes()), "key k{i} answered with another call's record");
    }
    // A raw session on the primary: a call without a call is refused on its own.
    let mut raw = store(c, node_of(leader));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let header = pb::ReadHeader { partition: P, mode: pb::ReadMode::Linearizable as i32 };
    let get = pb::GetRequest { header: Some(header), table: "t".into(), key: b"k7".to_vec().into() };
    let calls = vec![
        pb::SessionCall { id: 1, call: None },
        pb::SessionCall { id: 2, call: Some(pb::session_call::Call::Get(get)) },
    ];
    tx.send(pb::SessionCalls { calls }).await.expect("queue calls");
    let mut answers = raw.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("session").into_inner();
    let mut got = BTreeMap::new();
    while got.len() < 2 {
        let m = answers.message().await.expect("answers").expect("the stream stays open");
        got.extend(m.answers.into_iter().map(|a| (a.id, a.answer)));
    }
    match &got[&1] {
        Some(pb::session_answer::Answer::Error(e)) => assert_eq!(e.code, tonic::Code::InvalidArgument as i32, "{e:?}"),
        other => panic!("an empty call was answered with {other:?}"),
    }
    match &got[&2] {
        Some(pb::session_answer::Answer::Get(g)) => {
            assert_eq!(g.record.as_ref().map(|r| r.value.to_vec()), Some(b"v7".to_vec()))
        }
        other => panic!("the get beside it was answered with {other:?}"),
    }
    drop(tx);
    assert!(answers.message().await.expect("clean end").is_none(), "the stream ends once the client closes its side");
}

/// A client that sends calls and never reads the answers is held to a bounded number of
/// calls in flight (HTTP/2 flow control does the rest); once it reads, every call is
/// answered. Without the bound the node would read every call and hold every answer.
async fn a_session_that_reads_no_answers_is_held_back_not_buffered(c: &mut impl Cluster) {
    open(c, &[1]).await;
    let client = client(c, c.endpoints());
    client.create_table(P, "t").await.expect("create table");
    // 64 KiB answers: the transport's windows (4 MiB a stream) hold a few dozen.
    client.put(P, "t", b"big", &vec![7u8; 64 << 10]).await.expect("put");
    let served = || async { status(c, 1).await.expect("status").requests };
    let before = served().await;

    let calls = 8 * weft::node::SESSION_IN_FLIGHT_MAX as u64;
    let mut raw = store(c, 1).max_decoding_message_size(64 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sender = tokio::spawn(async move {
        for batch in 0..calls / 256 {
            let calls = (0..256)
                .map(|i| {
                    let header = pb::ReadHeader { partition: P, mode: pb::ReadMode::Stale as i32 };
                    let get = pb::GetRequest { header: Some(header), table: "t".into(), key: b"big".to_vec().into() };
                    pb::SessionCall { id: batch * 256 + i, call: Some(pb::session_call::Call::Get(get)) }
                })
                .collect();
            if tx.send(pb::SessionCalls { calls }).await.is_err() {
                break;
            }
        }
        tx
    });
    let mut answers = raw.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("session").into_inner();
    // Unread, the node serves the bound, a message's worth and what the windows hold, no more.
    let held = weft::node::SESSION_IN_FLIGHT_MAX as u64 + 256 + (16 << 20) / (64 << 10);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let n = served().await - before;
        assert!(n <= held, "{n} calls served for a client that read no answer (at most {held} expected)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = 0u64;
    while got < calls {
        let m = answers.message().await.expect("answers").expect("the stream stays open");
        for a in m.answers {
            match a.answer {
                Some(pb::session_answer::Answer::Get(g)) => {
                    assert_eq!(g.record.map(|r| r.value.len()), Some(64 << 10), "call {}", a.id)
                }
                other => panic!("call {} answered with {other:?}", a.id),
            }
            got += 1;
        }
    }
    drop(sender.await.expect("sender"));
    assert!(answers.message().await.expect("clean end").is_none());
}

/// Sends a hand-made snapshot stream to node `id`'s raft service.
async fn send_snapshot(c: &impl Cluster, id: u64, chunks: Vec<pb::SnapshotChunk>) -> tonic::Status {
    let mut raft = pb::raft_client::RaftClient::new(c.security().channel(&addr(c, id)).expect("a channel"));
    match raft.snapshot(tokio_stream::iter(chunks)).await {
        Ok(r) => panic!("a defective snapshot stream was accepted: {:?}", r.into_inner()),
        Err(s) => s,
    }
}

async fn corrupt_or_truncated_snapshot_streams_are_rejected_and_change_nothing(c: &mut impl Cluster) {
    world::open_partition(c, &[1], 7, 700).await.expect("open partition");
    let leader = world::primary(c, &[1], 7, Duration::from_secs(20)).await.expect("a primary");
    assert_eq!(leader, 701);
    let client = client(c, c.endpoints());
    client.create_table(7, "t").await.expect("create table");
    client.put(7, "t", b"k", b"kept").await.expect("put");

    // A well-formed Avro stream of an empty store, cut into two chunks.
    let mut avro = Vec::new();
    weft_replica::snapshot::encode(&weft::store::Store::default().snapshot(), &Default::default(), &mut avro)
        .expect("encode");
    let (a, b) = avro.split_at(avro.len() / 2);
    let target = Some(pb::Target { partition: 7, replica: 701 });
    let vote = Some(pb::Vote { leader_id: Some(pb::LeaderId { term: 1000, node_id: 9 }), committed: true });
    let meta = Some(pb::SnapshotMeta {
        last_log_id: Some(pb::LogId { leader_id: Some(pb::LeaderId { term: 1000, node_id: 9 }), index: 1_000_000 }),
        last_membership_log_id: None,
        last_membership: Some(common::membership(&[(9, "127.0.0.1:1")])),
        snapshot_id: String::new(),
    });
    let chunk = |data: &[u8], first: bool| pb::SnapshotChunk {
        target: if first { target } else { None },
        vote: if first { vote } else { None },
        meta: if first { meta.clone() } else { None },
        data: data.to_vec().into(),
        crc32c: crc32c::crc32c(data),
        ..Default::default()
    };
    let total = crc32c::crc32c(&avro);

    // 1. A chunk whose bytes do not match its checksum.
    let mut bad = chunk(b, false);
    bad.data = {
        let mut d = bad.data.to_vec();
        d[0] ^= 0xff;
        d.into()
    };
    bad.done = true;
    bad.total_crc32c = total;
    bad.total_bytes = avro.len() as u64;
    let s = send_snapshot(c, 1, vec![chunk(a, true), bad]).await;
    assert_eq!(s.code(), tonic::Code::DataLoss, "{s:?}");
    assert!(s.message().contains("CRC32C"), "{s:?}");

    // 2. A stream cut short: good chunks, no last chunk.
    let s = send_snapshot(c, 1, vec![chunk(a, true)]).await;
    assert_eq!(s.code(), tonic::Code::DataLoss, "{s:?}");

    // 3. Whole-stream totals that disagree.
    let mut last = chunk(b, false);
    last.done = true;
    last.total_crc32c = total ^ 1;
    last.total_bytes = avro.len() as u64;
    let s = send_snapshot(c, 1, vec![chunk(a, true), last]).await;
    assert_eq!(s.code(), tonic::Code::DataLoss, "{s:?}");
    assert!(s.message().contains("totals"), "{s:?}");

    // 4. Every chunk intact but the Avro stream truncated inside.
    let mut short = chunk(&b[..b.len() / 2], false);
    short.done = true;
    short.total_crc32c = crc32c::crc32c_append(crc32c::crc32c(a), &b[..b.len() / 2]);
    short.total_bytes = (a.len() + b.len() / 2) as u64;
    let s = send_snapshot(c, 1, vec![chunk(a, true), short]).await;
    assert_eq!(s.code(), tonic::Code::DataLoss, "{s:?}");

    // Nothing was installed; the replica still serves its own data and still leads.
    let st = world::status(c, 1, 7).await.expect("status");
    assert_eq!(st.snapshots_installed, 0);
    assert_eq!(st.role, pb::Role::Primary as i32);
    let got = client.get(7, "t", b"k", ReadMode::Linearizable).await.expect("read after rejected streams");
    assert_eq!(got.map(|r| r.value.to_vec()), Some(b"kept".to_vec()));
    client.put(7, "t", b"k2", b"still writable").await.expect("write after rejected streams");
}

async fn leadership_moves_on_command_under_load(c: &mut impl Cluster) {
    let leader = open(c, &c.ids()).await;
    let client = client(c, c.endpoints());
    client.create_table(P, "t").await.expect("create table");
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let target = c.ids().into_iter().map(|id| BASE + id).find(|r| *r != leader).expect("a secondary");
    write_for(&client, "m", &acked, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut admin = world::admin(c, node_of(leader)).expect("admin");
        admin.transfer_leader(pb::TransferLeaderToRequest { partition: P, to: target }).await.expect("transfer leader");
        wait_for(Duration::from_secs(10), "the chosen replica to lead", || async {
            (status(c, node_of(target)).await?.role == pb::Role::Primary as i32).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let st = status(c, node_of(leader)).await.expect("old primary status");
    assert_eq!(st.role, pb::Role::Secondary as i32, "the old primary follows: {st:?}");
    assert_eq!(st.leader, target);
    let acked = acked.lock().clone();
    assert!(acked.len() > 50, "too few writes acknowledged: {}", acked.len());
    assert_all_present(&client, &acked).await;
}

/// The primary's link to one secondary is cut long enough for its heartbeats to back off,
/// then healed; another secondary dies, so the primary's quorum now needs the healed one,
/// and no write flows while its lease runs out. Only heartbeats can renew that lease: the
/// next write must still commit (it once stayed refused for good, see `Backoff` in the
/// transport).
async fn heartbeats_resume_over_a_healed_link(c: &mut impl Cluster) {
    let leader = open(c, &c.ids()).await;
    let client = client(c, c.endpoints());
    client.create_table(P, "t").await.expect("create table");
    client.put(P, "t", b"before", b"1").await.expect("put before the cut");
    let l = node_of(leader);
    let followers: Vec<u64> = c.ids().into_iter().filter(|id| *id != l).collect();
    let (healed, doomed) = (followers[0], followers[1]);
    cut(c, l, vec![addr(c, healed)]).await;
    // Twenty heartbeat intervals: every heartbeat to it fails and the backoff reaches its cap.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cut(c, l, vec![]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.crash(doomed);
    // Idle for several leases: nothing but heartbeats reaches the secondaries.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status(c, l).await.expect("primary status");
    assert_eq!(st.role, pb::Role::Primary as i32, "the primary is still primary: {st:?}");
    client.put(P, "t", b"after", b"2").await.expect("a write after the heal commits");
    let got = client.get(P, "t", b"after", ReadMode::Linearizable).await.expect("read");
    assert_eq!(got.map(|r| r.value.to_vec()), Some(b"2".to_vec()));
}

/// A primary cut off from every secondary while writes are in flight on it must serve no
/// linearizable read that misses a write the new primary acknowledged. Its read rounds
/// take the path that waits for answers to replication messages (writes in flight,
/// `replica/src/read_gate.rs`); none come, so it must fall back to a heartbeat round and
/// fail, never answer from its own state.
async fn a_cut_off_primary_with_writes_in_flight_serves_no_stale_read(c: &mut impl Cluster) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let leader = open(c, &c.ids()).await;
    let old = node_of(leader);
    let everyone = client(c, c.endpoints());
    everyone.create_table(P, "t").await.expect("create table");
    everyone.put(P, "t", b"k", b"0").await.expect("first put");
    let short = ClientConfig { deadline: Duration::from_secs(1), ..c.client_config().expect("client settings") };
    let only_old = Client::new(vec![addr(c, old)], short);
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // One writer through every node: its acknowledged values only grow.
    let writer = {
        let (c, acked, stop) = (everyone.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if c.put(P, "t", b"k", i.to_string().as_bytes()).await.is_ok() {
                    acked.fetch_max(i, Ordering::SeqCst);
                }
            }
        })
    };
    // Writers that know only the old primary keep entries in flight on it after the cut.
    let stuck: Vec<_> = (0..4)
        .map(|w| {
            let (c, stop) = (only_old.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = c.put(P, "t", format!("s{w}").as_bytes(), b"x").await;
                }
            })
        })
        .collect();
    // Readers of the old primary: every read that succeeds must see every value
    // acknowledged before it began.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (c, acked, stop) = (only_old.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let before = acked.load(Ordering::SeqCst);
                    match c.get_with_info(P, "t", b"k", ReadMode::Linearizable).await {
                        Ok((rec, info)) => {
                            let seen: u64 = rec
                                .map(|r| String::from_utf8_lossy(&r.value).parse().expect("a counter value"))
                                .expect("k exists");
                            assert!(
                                seen >= before,
                                "stale read from replica {}: {seen} after {before} was acknowledged",
                                info.replica
                            );
                            ok += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_cut = acked.load(Ordering::SeqCst);
    assert!(before_cut > 0, "the writer acknowledged nothing before the cut");
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    cut(c, old, others.iter().map(|id| addr(c, *id)).collect()).await;
    for id in &others {
        cut(c, *id, vec![addr(c, old)]).await;
    }
    let new = primary(c, &others).await;
    assert_ne!(new, leader, "a new primary among the others");
    wait_for(Duration::from_secs(10), "the new primary to acknowledge writes", || async {
        (acked.load(Ordering::SeqCst) > before_cut + 20).then_some(())
    })
    .await;
    // Reads keep hitting the cut-off primary while the new one acknowledges writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    world::heal(c).await.expect("heal");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    for s in stuck {
        s.await.expect("stuck writer");
    }
    let (mut ok, mut failed) = (0, 0);
    for r in readers {
        let (o, f) = r.await.expect("a reader saw a stale value");
        ok += o;
        failed += f;
    }
    assert!(failed > 0, "no read failed: the old primary was never asked while cut off");
    assert!(ok > 0, "no read succeeded, before the cut or after the heal");
}
