//! A host's durable replicas live entirely behind its `Disk`: a host started again on the
//! same disk finds them (`Host::recover` lists the replicas directory through the disk) and
//! replays every acknowledged write; a closed replica's files are removed through the disk
//! and the removal is made durable, so a power cut does not bring the replica back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::async_runtime::watch::WatchReceiver;
use tokio::time::Instant;
use weft_proto::v1 as pb;
use weft_replica::disk::{Disk, FaultyDisk};
use weft_replica::{Host, RaftSettings, Replica, Storage, TransportConfig};
use weft_store::Limits;

const PARTITION: u64 = 3;
const REPLICA: u64 = 9;
const TABLE: &str = "t";

fn host(disk: &Arc<FaultyDisk>) -> Arc<Host> {
    let storage = Storage {
        data_dir: Some(PathBuf::from("/data")),
        durable_by_default: true,
        disk: Some(disk.clone() as Arc<dyn Disk>),
        ..Default::default()
    };
    let raft = RaftSettings {
        heartbeat: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        ..RaftSettings::default()
    };
    Host::new(&raft, TransportConfig::default(), Limits::default(), storage).expect("host")
}

async fn wait_leader(r: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.raft().metrics().borrow_watched().state.is_leader() {
        assert!(Instant::now() < deadline, "the single voter did not lead within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn command(kind: pb::command::Kind) -> pb::Command {
    pb::Command { session: None, kind: Some(kind) }
}

fn put(key: &str) -> pb::Command {
    let put = pb::Put {
        table: TABLE.into(),
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    };
    command(pb::command::Kind::Batch(pb::Batch { ops: vec![pb::Op { kind: Some(pb::op::Kind::Put(put)) }] }))
}

fn present(r: &Replica, keys: &[String]) -> usize {
    r.state(|st| keys.iter().filter(|k| st.store.get(TABLE, k.as_bytes()).ok().flatten().is_some()).count())
}

/// Stops every replica of `host` (its groups shut down) and drops it.
async fn stop(host: Arc<Host>) {
    for r in host.list() {
        r.raft().shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_started_again_on_its_disk_recovers_its_replicas_and_their_writes() {
    let disk = Arc::new(FaultyDisk::new(5));
    let first = host(&disk);
    let members = BTreeMap::from([(REPLICA, BasicNode { addr: "solo".into() })]);
    let r = first.open(PARTITION, REPLICA, pb::LogMode::NodeDefault, Some(members), false).await.expect("open");
    assert_eq!(r.mode(), pb::LogMode::Durable);
    wait_leader(&r).await;
    r.write(command(pb::command::Kind::CreateTable(pb::CreateTable { table: TABLE.into() }))).await.expect("table");
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    for k in &keys {
        r.write(put(k)).await.expect("put");
    }
    drop(r);
    stop(first).await;

    let second = host(&disk);
    let recovered = second.recover().await.expect("recover");
    assert_eq!(recovered, vec![(PARTITION, REPLICA)], "the replica was not found through the disk");
    let r = second.get(PARTITION).expect("reopened");
    wait_leader(&r).await;
    // A read-index round: everything the log holds is applied before the count.
    let applied = r.read(true, |_| ()).await.expect("read");
    assert!(applied.is_some());
    assert_eq!(present(&r, &keys), keys.len(), "acknowledged writes were lost");

    // Closed: its files are gone, durably: after a power cut nothing is recovered.
    second.close(PARTITION, true).await.expect("close");
    stop(second).await;
    disk.crash();
    let third = host(&disk);
    assert_eq!(third.recover().await.expect("recover"), vec![], "a closed replica came back after a power cut");
}

/// A durable replica asked to open from a restored state before it arrived is refused and
/// leaves nothing on the disk (a node restarted while a restore waits recovers no empty
/// replica that would block the restore); opened from the state, it starts at the staged
/// index, and a host started again on the disk recovers it with every record, a power cut
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_opened_from_a_staged_state_is_recovered_from_its_disk() {
    const INDEX: u64 = 700;
    let disk = Arc::new(FaultyDisk::new(6));
    let first = host(&disk);
    let members = BTreeMap::from([(REPLICA, BasicNode { addr: "solo".into() })]);
    let early = first.open(PARTITION, REPLICA, pb::LogMode::NodeDefault, Some(members.clone()), true).await;
    assert!(early.is_err(), "nothing staged yet: refused");
    stop(first).await;
    let second = host(&disk);
    assert_eq!(second.recover().await.expect("recover"), vec![], "the refused open left a replica on the disk");

    let mut state = weft_store::Store::new(Limits::default());
    state.create_table(TABLE).expect("table");
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let op = weft_store::Op::Put {
            table: TABLE.into(),
            key: k.as_bytes().to_vec(),
            value: b"v".to_vec(),
            attrs: Vec::new(),
            condition: weft_store::Condition::None,
        };
        state.apply_at(&[op], 100 + i as u64).expect("put");
    }
    second.stage(PARTITION, REPLICA, INDEX, state);
    let r = second.open(PARTITION, REPLICA, pb::LogMode::NodeDefault, Some(members), true).await.expect("open");
    wait_leader(&r).await;
    r.write(put("after")).await.expect("a write after the restore");
    let applied = r.state(|st| st.last_applied.map(|l| l.index));
    assert!(applied.is_some_and(|a| a > INDEX), "applied {applied:?}, not past {INDEX}");
    drop(r);
    stop(second).await;
    disk.crash();

    let third = host(&disk);
    assert_eq!(third.recover().await.expect("recover"), vec![(PARTITION, REPLICA)]);
    let r = third.get(PARTITION).expect("reopened");
    wait_leader(&r).await;
    r.read(true, |_| ()).await.expect("read");
    let mut all = keys.clone();
    all.push("after".into());
    assert_eq!(present(&r, &all), all.len(), "the restored state or the write after it was lost");
}
