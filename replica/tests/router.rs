//! Raft groups of several hosts in one process over the in-memory router
//! (`weft_replica::router`), with filters that drop, duplicate, delay (reorder) and
//! partition messages. Each test says what the group must still do under those faults:
//! commit every write, elect around an isolated leader, catch a replica up after healing,
//! and build a new replica from a snapshot carried through the router.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::BasicNode;
use openraft::async_runtime::watch::WatchReceiver;
use tokio::time::Instant;
use weft_proto::v1 as pb;
use weft_replica::router::{DropRate, DuplicateRate, Filter, Kind, Message, Partition, RandomDelay, Router, Verdict};
use weft_replica::{Host, RaftSettings, Replica, Storage, TransportConfig};
use weft_store::Limits;

const PARTITION: u64 = 1;
const TABLE: &str = "t";

fn settings() -> RaftSettings {
    RaftSettings {
        heartbeat: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        // Small, so a replica added late needs a snapshot: the log it would need is purged.
        snapshot_every: 40,
        keep_behind_snapshot: 10,
        ..RaftSettings::default()
    }
}

fn addr(i: u64) -> String {
    format!("node-{i}")
}

/// A host on the router at `addr(i)`.
fn host(router: &Router, i: u64) -> Arc<Host> {
    host_with(router, i, &settings())
}

fn host_with(router: &Router, i: u64, settings: &RaftSettings) -> Arc<Host> {
    let transport = TransportConfig { router: Some(router.seat(addr(i))), ..TransportConfig::default() };
    let host = Host::new(settings, transport, Limits::default(), Storage::default()).expect("host");
    router.attach(addr(i), &host);
    host
}

/// `n` hosts, each with replica `i` of the partition; the first initializes the group.
/// No liveness loop runs: the groups never quiesce.
async fn group(n: u64) -> (Router, Vec<Arc<Host>>) {
    group_with(n, &settings()).await
}

/// `n` hosts as [`group`] makes them, each running its liveness loop (pings through the
/// router), with groups that quiesce after 300 ms idle.
async fn quiet_group(n: u64) -> (Router, Vec<Arc<Host>>) {
    let settings = RaftSettings { quiesce_after: Some(Duration::from_millis(300)), ..settings() };
    let (router, hosts) = group_with(n, &settings).await;
    for (i, h) in hosts.iter().enumerate() {
        h.start_liveness(Some(addr(i as u64 + 1)));
    }
    (router, hosts)
}

async fn group_with(n: u64, settings: &RaftSettings) -> (Router, Vec<Arc<Host>>) {
    let router = Router::new();
    let hosts: Vec<Arc<Host>> = (1..=n).map(|i| host_with(&router, i, settings)).collect();
    let members: BTreeMap<u64, BasicNode> = (1..=n).map(|i| (i, BasicNode { addr: addr(i) })).collect();
    for (i, h) in hosts.iter().enumerate() {
        let initial = (i == 0).then(|| members.clone());
        h.open(PARTITION, i as u64 + 1, pb::LogMode::Volatile, initial, false).await.expect("open");
    }
    (router, hosts)
}

fn replica(h: &Host) -> Arc<Replica> {
    h.get(PARTITION).expect("the partition is open")
}

/// The replica that is leader, as it says itself, among `hosts`.
fn leader(hosts: &[Arc<Host>]) -> Option<Arc<Replica>> {
    hosts.iter().map(|h| replica(h)).find(|r| {
        let m = r.raft().metrics().borrow_watched().clone();
        m.current_leader == Some(r.id()) && m.state.is_leader()
    })
}

async fn wait_leader(hosts: &[Arc<Host>], within: Duration) -> Arc<Replica> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = leader(hosts) {
            return l;
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn command(kind: pb::command::Kind) -> pb::Command {
    pb::Command { session: None, kind: Some(kind) }
}

fn put(key: &str, value: &str) -> pb::Command {
    let put = pb::Put {
        table: TABLE.into(),
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    };
    command(pb::command::Kind::Batch(pb::Batch { ops: vec![pb::Op { kind: Some(pb::op::Kind::Put(put)) }] }))
}

/// Proposes `cmd` through whichever replica leads, retrying (a put of the same value is
/// safe to repeat) until it commits with no error in its result.
async fn write(hosts: &[Arc<Host>], cmd: pb::Command, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(l) = leader(hosts) {
            match tokio::time::timeout(Duration::from_secs(2), l.write(cmd.clone())).await {
                Ok(Ok(r)) => match r.outcome {
                    Some(pb::command_result::Outcome::Error(e)) if e.code != pb::ErrorCode::TableExists as i32 => {
                        panic!("refused: {e:?}")
                    }
                    _ => return,
                },
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{cmd:?} not committed within {within:?}: {last}");
}

/// Waits until every host's replica has applied as far as the leader's, and returns each
/// replica's value of every key written.
async fn converged(hosts: &[Arc<Host>], keys: &[String], within: Duration) -> Vec<BTreeMap<String, Option<String>>> {
    let deadline = Instant::now() + within;
    loop {
        let applied: Vec<Option<u64>> =
            hosts.iter().map(|h| replica(h).state(|st| st.last_applied.map(|l| l.index))).collect();
        let top = applied.iter().flatten().max().copied();
        if top.is_some() && applied.iter().all(|a| *a == top) {
            break;
        }
        assert!(Instant::now() < deadline, "replicas did not converge within {within:?}: applied {applied:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hosts
        .iter()
        .map(|h| {
            replica(h).state(|st| {
                keys.iter()
                    .map(|k| {
                        let v = st.store.get(TABLE, k.as_bytes()).ok().flatten();
                        (k.clone(), v.map(|r| String::from_utf8_lossy(r.value()).into_owned()))
                    })
                    .collect()
            })
        })
        .collect()
}

fn create_table() -> pb::Command {
    command(pb::command::Kind::CreateTable(pb::CreateTable { table: TABLE.into() }))
}

/// Every write commits while a tenth of all messages (requests and answers) are dropped, a
/// tenth duplicated and every one delayed by up to 15 ms (so they overtake each other); once
/// the filters are gone every replica holds every write, and a replica added afterwards is
/// built from a snapshot carried through the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_through_drops_duplicates_and_reordering() {
    let (router, mut hosts) = group(3).await;
    wait_leader(&hosts, Duration::from_secs(10)).await;
    write(&hosts, create_table(), Duration::from_secs(10)).await;

    router.add_filter(DropRate { rate: 0.1, kinds: BTreeSet::new() });
    router.add_filter(DuplicateRate { rate: 0.1, kinds: BTreeSet::new() });
    router.add_filter(RandomDelay { max: Duration::from_millis(15) });
    let keys: Vec<String> = (0..150).map(|i| format!("k{i:03}")).collect();
    for k in &keys {
        write(&hosts, put(k, &format!("v-{k}")), Duration::from_secs(30)).await;
    }
    let counts = router.counts();
    assert!(counts.dropped > 0 && counts.duplicated > 0, "the filters did nothing: {counts:?}");
    router.clear_filters();

    let want: BTreeMap<String, Option<String>> = keys.iter().map(|k| (k.clone(), Some(format!("v-{k}")))).collect();
    for (i, got) in converged(&hosts, &keys, Duration::from_secs(20)).await.into_iter().enumerate() {
        assert_eq!(got, want, "replica {} differs", i + 1);
    }

    // A fourth replica joins after the log it would need was purged: it gets a snapshot.
    let fourth = host(&router, 4);
    fourth.open(PARTITION, 4, pb::LogMode::Volatile, None, false).await.expect("open the fourth");
    let l = wait_leader(&hosts, Duration::from_secs(10)).await;
    l.raft().add_learner(4, BasicNode { addr: addr(4) }, true).await.expect("add learner");
    hosts.push(fourth);
    for (i, got) in converged(&hosts, &keys, Duration::from_secs(20)).await.into_iter().enumerate() {
        assert_eq!(got, want, "replica {} differs", i + 1);
    }
    let purged = l.raft().metrics().borrow_watched().purged.map(|p| p.index);
    assert!(purged.is_some(), "the leader purged nothing: the learner was not built from a snapshot");
}

/// The leader is cut off from both followers: they elect another, writes go on through it,
/// and once the partition heals the old leader steps down and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_is_replaced_and_catches_up_after_healing() {
    let (router, hosts) = group(3).await;
    let old = wait_leader(&hosts, Duration::from_secs(10)).await;
    write(&hosts, create_table(), Duration::from_secs(10)).await;
    write(&hosts, put("before", "1"), Duration::from_secs(10)).await;

    let old_addr = addr(old.id());
    router.add_filter(Partition::isolate(old_addr.clone()));
    let majority: Vec<Arc<Host>> = hosts.iter().filter(|h| replica(h).id() != old.id()).cloned().collect();
    let new = wait_leader(&majority, Duration::from_secs(10)).await;
    assert_ne!(new.id(), old.id());
    let keys: Vec<String> = (0..30).map(|i| format!("during{i:02}")).collect();
    for k in &keys {
        write(&majority, put(k, "2"), Duration::from_secs(10)).await;
    }
    // Cut off, the old leader has none of them.
    let seen =
        old.state(|st| keys.iter().filter(|k| st.store.get(TABLE, k.as_bytes()).ok().flatten().is_some()).count());
    assert_eq!(seen, 0, "the isolated leader applied writes it cannot have committed");

    router.clear_filters();
    let mut all = keys.clone();
    all.push("before".into());
    for (i, got) in converged(&hosts, &all, Duration::from_secs(20)).await.into_iter().enumerate() {
        assert!(got.values().all(Option::is_some), "replica {} lacks writes: {got:?}", i + 1);
    }
    let m = old.raft().metrics().borrow_watched().clone();
    assert!(!m.state.is_leader() || m.current_leader == Some(old.id()), "{m:?}");
}

/// Answers to appends are lost while requests arrive: followers hold the entry but the
/// leader cannot learn it is committed, so the write does not complete (its outcome is
/// unknown to the caller); when answers flow again it commits, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_leave_a_write_pending_until_they_flow_again() {
    let (router, hosts) = group(3).await;
    let l = wait_leader(&hosts, Duration::from_secs(10)).await;
    write(&hosts, create_table(), Duration::from_secs(10)).await;

    let answers = BTreeSet::from([Kind::Answer(weft_replica::router::AnswerTo::Append)]);
    router.add_filter(DropRate { rate: 1.0, kinds: answers });
    let pending = tokio::spawn({
        let l = l.clone();
        async move { l.write(put("k", "v")).await }
    });
    // The entry reaches the followers (requests still flow)...
    let leader_last = || l.raft().metrics().borrow_watched().last_log_index;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let have = hosts
            .iter()
            .map(|h| replica(h))
            .filter(|r| r.id() != l.id() && r.raft().metrics().borrow_watched().last_log_index >= leader_last())
            .count();
        if have == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the followers did not receive the entry within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but without their answers the leader cannot know it is committed. Twenty
    // heartbeat intervals later the write is still pending.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!pending.is_finished(), "a write committed though no follower's answer arrived");

    router.clear_filters();
    let r = tokio::time::timeout(Duration::from_secs(10), pending).await;
    let r = r.expect("the write completes once answers flow").expect("task").expect("committed");
    assert!(!matches!(r.outcome, Some(pb::command_result::Outcome::Error(_))), "{r:?}");
    let got = converged(&hosts, &["k".to_string()], Duration::from_secs(10)).await;
    assert!(got.iter().all(|m| m["k"].as_deref() == Some("v")), "{got:?}");
}

/// Counts the messages of one kind that pass (and lets every one pass).
#[derive(Debug)]
struct Tally(Kind, Arc<AtomicU64>);

impl Filter for Tally {
    fn verdict(&self, m: &Message) -> Verdict {
        if m.kind == self.0 {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::Deliver
    }
}

/// Waits until every replica on `hosts` says it is quiesced.
async fn wait_quiesced(hosts: &[Arc<Host>], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let quiet: Vec<bool> = hosts.iter().map(|h| replica(h).is_quiesced()).collect();
        if quiet.iter().all(|q| *q) {
            return;
        }
        assert!(Instant::now() < deadline, "the group did not quiesce within {within:?}: {quiet:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn term(r: &Replica) -> u64 {
    r.raft().metrics().borrow_watched().current_term
}

/// An idle group quiesces: its primary stops sending heartbeats (no append message passes
/// for a second). A write wakes it and commits on every replica with no election (same
/// primary, same term); a linearizable read on the quiesced primary is served, also with
/// no election; and idle again, the group quiesces again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_quiesces_and_a_write_wakes_it_without_an_election() {
    let (router, hosts) = quiet_group(4).await;
    let l = wait_leader(&hosts, Duration::from_secs(10)).await;
    write(&hosts, create_table(), Duration::from_secs(10)).await;
    write(&hosts, put("a", "1"), Duration::from_secs(10)).await;
    wait_quiesced(&hosts, Duration::from_secs(10)).await;
    let before = term(&l);
    // A quiesced replica's status is not built again: the same one comes back.
    let follower = hosts.iter().map(|h| replica(h)).find(|r| r.id() != l.id()).expect("a follower");
    let idle = follower.status();
    assert!(Arc::ptr_eq(&idle, &follower.status()), "an unchanged status was built again");
    assert_eq!((idle.records, idle.role), (1, pb::Role::Secondary as i32), "{idle:?}");

    let appends = Arc::new(AtomicU64::new(0));
    router.add_filter(Tally(Kind::Append, appends.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(appends.load(Ordering::Relaxed), 0, "a quiesced group sent appends (heartbeats)");

    write(&hosts, put("b", "2"), Duration::from_secs(10)).await;
    assert!(appends.load(Ordering::Relaxed) > 0, "the write went out in no append");
    let got = converged(&hosts, &["a".to_string(), "b".to_string()], Duration::from_secs(10)).await;
    assert!(got.iter().all(|m| m["b"].as_deref() == Some("2")), "{got:?}");
    let after = follower.status();
    assert!(after.applied_index > idle.applied_index && after.records == 2, "a stale status after a write: {after:?}");
    assert_eq!(after.membership, idle.membership);
    assert_eq!(leader(&hosts).map(|r| r.id()), Some(l.id()), "the write moved the primary");
    assert!(hosts.iter().all(|h| term(&replica(h)) == before), "the write started an election");

    wait_quiesced(&hosts, Duration::from_secs(10)).await;
    let read = l.read(true, |st| st.store.get(TABLE, b"b").ok().flatten().map(|r| r.value().to_vec())).await;
    let (value, _) = read.expect("the linearizable read on a quiesced primary").expect("applied");
    assert_eq!(value.as_deref(), Some(&b"2"[..]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(hosts.iter().all(|h| term(&replica(h)) == before), "the read started an election");
    wait_quiesced(&hosts, Duration::from_secs(10)).await;
}

/// The primary of a quiesced group is cut off from every other node: the others learn it
/// from the failed pings (no group heartbeat tells them) and elect a new primary within
/// the failover time, in one round (one term up: the ranked candidates do not split the
/// vote). The cut-off primary serves no linearizable read and commits no write meanwhile;
/// after healing it steps down and every replica holds every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiesced_group_whose_primary_is_cut_off_elects_another_in_one_round() {
    let (router, hosts) = quiet_group(4).await;
    let old = wait_leader(&hosts, Duration::from_secs(10)).await;
    write(&hosts, create_table(), Duration::from_secs(10)).await;
    write(&hosts, put("before", "1"), Duration::from_secs(10)).await;
    wait_quiesced(&hosts, Duration::from_secs(10)).await;
    let before = term(&old);

    let cut = Instant::now();
    router.add_filter(Partition::isolate(addr(old.id())));
    let rest: Vec<Arc<Host>> = hosts.iter().filter(|h| replica(h).id() != old.id()).cloned().collect();
    let new = wait_leader(&rest, Duration::from_secs(10)).await;
    let took = cut.elapsed();
    assert!(took < Duration::from_secs(3), "a new primary took {took:?}");
    assert_eq!(term(&new), before + 1, "the election took more than one round");

    let read = tokio::time::timeout(Duration::from_secs(5), old.read(true, |_| ())).await;
    assert!(!matches!(read, Ok(Ok(_))), "the cut-off primary served a linearizable read: {read:?}");
    let stale_write = tokio::time::timeout(Duration::from_secs(3), old.write(put("lost", "x"))).await;
    assert!(!matches!(stale_write, Ok(Ok(_))), "the cut-off primary committed a write");
    write(&rest, put("after", "2"), Duration::from_secs(10)).await;

    router.clear_filters();
    let keys = ["before".to_string(), "after".to_string(), "lost".to_string()];
    let got = converged(&hosts, &keys, Duration::from_secs(20)).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["before"].as_deref(), Some("1"), "replica {}", i + 1);
        assert_eq!(m["after"].as_deref(), Some("2"), "replica {}", i + 1);
        assert_eq!(m["lost"], None, "replica {} applied the cut-off primary's write", i + 1);
    }
    assert_eq!(leader(&hosts).map(|r| r.id()), Some(new.id()), "the old primary came back as leader");
}

/// A group named in `single_record_partitions` (the cluster map's) snapshots every 64
/// entries, keeps 16 behind, and keeps only its newest change for watchers; a group beside
/// it with the node-wide settings keeps every entry and every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_record_group_keeps_a_short_log_and_no_history() {
    const OTHER: u64 = 2;
    let settings = RaftSettings {
        snapshot_every: 20_000,
        keep_behind_snapshot: 5_000,
        single_record_partitions: [PARTITION].into(),
        ..settings()
    };
    let (_router, hosts) = group_with(3, &settings).await;
    let members: BTreeMap<u64, BasicNode> = (1..=3).map(|i| (10 + i, BasicNode { addr: addr(i) })).collect();
    for (i, h) in hosts.iter().enumerate() {
        let initial = (i == 0).then(|| members.clone());
        h.open(OTHER, 11 + i as u64, pb::LogMode::Volatile, initial, false).await.expect("open the other group");
    }
    wait_leader(&hosts, Duration::from_secs(10)).await;
    write(&hosts, create_table(), Duration::from_secs(10)).await;
    // The whole record rewritten 300 times, as the manager rewrites the map.
    for i in 0..300 {
        write(&hosts, put("map", &format!("version {i:04} {}", "x".repeat(512))), Duration::from_secs(10)).await;
    }
    let l = wait_leader(&hosts, Duration::from_secs(10)).await;
    let m = l.raft().metrics().borrow_watched().clone();
    let last = m.last_log_index.unwrap_or(0);
    let snapshot = m.snapshot.map_or(0, |s| s.index);
    let purged = m.purged.map_or(0, |p| p.index);
    assert!(last >= 300, "{m:?}");
    assert!(snapshot + weft_replica::SINGLE_RECORD_SNAPSHOT_EVERY > last, "a snapshot every 64 entries: {m:?}");
    assert!(purged + 2 * weft_replica::SINGLE_RECORD_SNAPSHOT_EVERY > last, "the log behind it purged: {m:?}");
    // Only the newest change is kept for a watcher.
    let oldest = match l.changes_since(1, usize::MAX) {
        Err(weft_replica::changes::Compacted { oldest, .. }) => oldest,
        Ok((entries, _, _)) => panic!("{} entries of history kept", entries.len()),
    };
    assert!(oldest >= last.saturating_sub(1), "history kept from {oldest} of {last}");

    // The other group, with the node-wide settings, keeps its log and its history.
    let others: Vec<Arc<Replica>> = hosts.iter().filter_map(|h| h.get(OTHER)).collect();
    assert_eq!(others.len(), 3);
    let leading = || others.iter().find(|r| r.raft().metrics().borrow_watched().state.is_leader()).cloned();
    let cmds = std::iter::once(create_table()).chain((0..100).map(|i| put("map", &format!("version {i:04}"))));
    for c in cmds {
        let deadline = Instant::now() + Duration::from_secs(10);
        // A put of the same value is safe to repeat; a repeated create answers "exists".
        loop {
            if let Some(o) = leading()
                && o.write(c.clone()).await.is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "the other group took no write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let o = leading().expect("the other group's leader");
    let m = o.raft().metrics().borrow_watched().clone();
    assert_eq!((m.snapshot, m.purged), (None, None), "{m:?}");
    let (entries, _, _) = o.changes_since(1, usize::MAX).expect("the whole history");
    assert!(entries.len() >= 100, "{} entries of history", entries.len());
}

/// A group started from a staged state (a restore): the first replica opens from it at log
/// index 1,000 with every voter in its membership, the others open empty; they elect it,
/// get the state as a raft snapshot, hold every record at the version it had, and the next
/// write commits above that index. Opening from a state not staged is refused, and the
/// state is taken once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_starts_from_a_staged_state_at_its_index() {
    const INDEX: u64 = 1_000;
    let router = Router::new();
    let hosts: Vec<Arc<Host>> = (1..=3).map(|i| host(&router, i)).collect();
    let members: BTreeMap<u64, BasicNode> = (1..=3).map(|i| (i, BasicNode { addr: addr(i) })).collect();
    let mut state = weft_store::Store::new(Limits::default());
    state.create_table(TABLE).expect("table");
    let keys: Vec<String> = (0..50).map(|i| format!("r{i:02}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let op = weft_store::Op::Put {
            table: TABLE.into(),
            key: k.as_bytes().to_vec(),
            value: format!("v-{k}").into_bytes(),
            attrs: Vec::new(),
            condition: weft_store::Condition::None,
        };
        state.apply_at(&[op], 500 + i as u64).expect("put");
    }
    let first = &hosts[0];
    let refused = first.open(PARTITION, 1, pb::LogMode::Volatile, Some(members.clone()), true).await;
    assert!(refused.is_err(), "nothing staged: the replica does not open");
    assert_eq!(first.stage(PARTITION, 1, INDEX, state), INDEX);
    for (i, h) in hosts.iter().enumerate() {
        let (initial, staged) = if i == 0 { (Some(members.clone()), true) } else { (None, false) };
        h.open(PARTITION, i as u64 + 1, pb::LogMode::Volatile, initial, staged).await.expect("open");
    }
    let l = wait_leader(&hosts, Duration::from_secs(10)).await;
    assert_eq!(l.id(), 1, "the only voter with a log leads");
    write(&hosts, put("after", "x"), Duration::from_secs(10)).await;
    let mut all = keys.clone();
    all.push("after".into());
    let want: BTreeMap<String, Option<String>> =
        all.iter().map(|k| (k.clone(), Some(if k == "after" { "x".into() } else { format!("v-{k}") }))).collect();
    for (i, got) in converged(&hosts, &all, Duration::from_secs(10)).await.into_iter().enumerate() {
        assert_eq!(got, want, "replica {} differs", i + 1);
    }
    for h in &hosts {
        let r = replica(h);
        let (applied, versions) = r.state(|st| {
            let v: Vec<u64> = keys
                .iter()
                .filter_map(|k| st.store.get(TABLE, k.as_bytes()).ok().flatten().map(|rec| rec.version()))
                .collect();
            (st.last_applied.map(|l| l.index), v)
        });
        assert!(applied.is_some_and(|a| a > INDEX), "replica {} applied {applied:?}, not past {INDEX}", r.id());
        assert_eq!(versions, (500..550).collect::<Vec<u64>>(), "replica {} keeps the staged versions", r.id());
    }
    // The state was taken: opening it again elsewhere finds nothing.
    let other = host(&router, 9);
    let again = other.open(PARTITION, 1, pb::LogMode::Volatile, Some(members), true).await;
    assert!(again.is_err(), "a staged state is used once");
}
