//! Durable log mode on real `weft node` processes: a whole cluster SIGKILLed under load
//! comes back from its own disks with every acknowledged write, a torn WAL tail is cut on
//! restart, and corruption in the middle of a WAL stops the node with an error naming the
//! file. The first read after such a restart already sees the last write acknowledged
//! before the kill.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{LocalNode, open_partition, primary, wait_for};
use parking_lot::Mutex;
use weft::proto as pb;
use weft::{Client, ReadMode};

const P: u64 = 1;
const BASE: u64 = 100;

fn start_durable(id: u64, dir: &Path) -> LocalNode {
    let dir = dir.to_str().expect("utf-8 temp path");
    // Frequent snapshots, so checkpoints are written and WAL purges happen during the load.
    common::start(id, &["--durable", "--data-dir", dir, "--snapshot-every", "300", "--keep-behind-snapshot", "50"])
}

/// The WAL segments of the partition's replica on a node, oldest first.
fn wal_segments(data_dir: &Path, replica: u64) -> Vec<PathBuf> {
    let dir = data_dir.join("replicas").join(format!("p{P}-r{replica}")).join("wal");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("wal dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Where a WAL segment's records end: the segment is zero-filled past them. Walks the
/// framing (length u32 LE, CRC32C u32 LE, payload; never an empty payload).
fn records_end(data: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(len) = data.get(pos..pos + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize) {
        if len == 0 || pos + 8 + len > data.len() {
            break;
        }
        pos += 8 + len;
    }
    pos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_kill_loses_no_acknowledged_write() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut nodes: Vec<LocalNode> = (1..=4).map(|i| start_durable(i, dirs[i as usize - 1].path())).collect();
    let group: Vec<&LocalNode> = nodes.iter().collect();
    open_partition(&group, P, BASE).await;
    for n in &nodes {
        let s = n.status(P).await.expect("status");
        assert_eq!(s.mode, pb::LogMode::Durable as i32, "node {} opened the replica durable", n.id);
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let client = Client::new(endpoints.clone(), common::harness());
    client.create_table(P, "t").await.expect("create table");

    // Writers run until the whole cluster is killed under them; one secondary is killed
    // and restarted from its disk first, mid-load.
    let acked = Arc::new(Mutex::new(BTreeMap::<String, String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (k, v) = (format!("w{w}-{i:06}"), format!("value-{w}-{i}"));
                    if client.put(P, "t", k.as_bytes(), v.as_bytes()).await.is_ok() {
                        acked.lock().insert(k, v);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let leader = primary(&group, P).await;
    let secondary = nodes.iter().position(|n| BASE + n.id != leader).expect("a secondary");
    tokio::time::sleep(Duration::from_millis(800)).await;
    nodes[secondary].restart().expect("restart secondary");
    let restarted = &nodes[secondary];
    // It comes back as the same replica, from its own disk, and catches up with what the
    // primary had applied when it returned.
    let leader_node = nodes.iter().find(|n| BASE + n.id == leader).expect("leader node");
    let target = leader_node.status(P).await.expect("primary status").applied_index;
    wait_for(Duration::from_secs(20), "the restarted secondary to catch up", || async {
        let s = restarted.status(P).await?;
        (s.replica == BASE + restarted.id && s.applied_index >= target).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_kill = acked.lock().len();
    for n in nodes.iter_mut() {
        n.kill();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.abort();
    }
    let acked = acked.lock().clone();
    assert!(before_kill > 200, "the load acknowledged only {before_kill} writes before the kill");

    // A write that never finished: garbage after the last record of one node's WAL.
    let torn = &dirs[1];
    let segment = wal_segments(torn.path(), BASE + 2).pop().expect("a WAL segment");
    let end = records_end(&std::fs::read(&segment).expect("read segment"));
    let f = OpenOptions::new().write(true).open(&segment).expect("open segment");
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 37], end as u64).expect("write garbage after the last record");

    for n in nodes.iter_mut() {
        n.restart().expect("restart");
    }
    let group: Vec<&LocalNode> = nodes.iter().collect();
    primary(&group, P).await;
    for n in &nodes {
        let s = wait_for(Duration::from_secs(10), "the replica to reopen", || n.status(P)).await;
        assert_eq!(s.replica, BASE + n.id, "node {} reopened its own replica", n.id);
    }
    let reader = Client::new(endpoints, common::harness());
    let mut missing = Vec::new();
    for (k, v) in &acked {
        match reader.get(P, "t", k.as_bytes(), ReadMode::Linearizable).await.expect("read") {
            Some(r) if r.value == v.as_bytes() => {}
            other => missing.push((k.clone(), other.map(|r| String::from_utf8_lossy(&r.value).into_owned()))),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost or wrong: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );

    // The cluster still takes writes after the restart.
    reader.put(P, "t", b"after", b"restart").await.expect("write after restart");

    // Corruption in the middle of a WAL: the node refuses to start and names the file.
    let victim = nodes.iter().position(|n| n.id == 3).expect("node 3");
    nodes[victim].kill();
    let segment = wal_segments(dirs[2].path(), BASE + 3).pop().expect("a WAL segment");
    let mut data = std::fs::read(&segment).expect("read segment");
    let end = records_end(&data);
    assert!(end > 1000, "records too short to corrupt in the middle: {end} bytes");
    let mid = end / 2;
    data[mid] ^= 0xff;
    std::fs::write(&segment, &data).expect("write segment");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["node", "--id", "3", "--listen", "127.0.0.1:0", "--durable", "--data-dir"])
        .arg(dirs[2].path())
        .args(common::security().node_flags(3).expect("node 3's certificates"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run weft node");
    // A node that wrongly starts would serve forever: it gets 20 s to exit, then is killed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait for node").is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("node output");
    assert!(!out.status.success(), "a node with a corrupt WAL started");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = segment.file_name().and_then(|n| n.to_str()).expect("segment name");
    assert!(err.contains(name) && err.contains("corrupt"), "the error names the corrupt file: {err}");
}

/// A whole cluster killed under load, then restarted primary first: the first
/// linearizable reads must return the last write acknowledged before the kill, or a later
/// one. The primary's state machine is memory only and rebuilt from the log up to the
/// committed index it last persisted, which under load trails the acknowledged writes; it
/// may serve reads only once the group has told it what was committed. (openraft's leader
/// restore let the old primary resume its term from that stale committed index and answer
/// reads from a state without the last writes: seen in `tests/chaos.rs`, seed 1, durable;
/// this test failed within three rounds in three runs out of three.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_reads_after_a_whole_cluster_kill_see_every_acknowledged_write() {
    const ROUNDS: u32 = 8;
    const WRITERS: usize = 8;
    // Large values keep the primary's WAL busy, so its persisted committed index trails.
    const PAD: usize = 16 << 10;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    // Not `start_durable`: its frequent checkpoints narrow the window (with restore on,
    // this test then failed only in round 7 or 8, where it otherwise fails in the first few).
    let mut nodes: Vec<LocalNode> = (1..=3)
        .map(|i| {
            let dir = dirs[i as usize - 1].path().to_str().expect("utf-8 temp path");
            common::start(i, &["--durable", "--data-dir", dir])
        })
        .collect();
    open_partition(&nodes.iter().collect::<Vec<_>>(), P, BASE).await;
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    Client::new(endpoints.clone(), common::harness()).create_table(P, "t").await.expect("create table");
    let key = |w: usize| format!("w{w}");
    for round in 0..ROUNDS {
        let group: Vec<&LocalNode> = nodes.iter().collect();
        let leader = primary(&group, P).await;
        // Each writer counts up its own key; `acked[w]` is its last acknowledged count.
        let acked = Arc::new(Mutex::new(vec![0u64; WRITERS]));
        let client = Client::new(endpoints.clone(), common::harness());
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, acked) = (client.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 1u64.. {
                        let mut value = i.to_be_bytes().to_vec();
                        value.resize(PAD, 0);
                        if client.put(P, "t", key(w).as_bytes(), &value).await.is_ok() {
                            acked.lock()[w] = i;
                        }
                    }
                })
            })
            .collect();
        wait_for(Duration::from_secs(20), "every writer to be acknowledged", || async {
            acked.lock().iter().all(|&n| n > 20).then_some(())
        })
        .await;
        for n in nodes.iter_mut() {
            n.kill();
        }
        for w in writers {
            w.abort();
        }
        let acked = acked.lock().clone();
        // The primary first, the reads on their way while the secondaries start: the
        // window in which a primary that resumed its term has not heard from them yet.
        nodes.sort_by_key(|n| n.id + BASE != leader);
        nodes[0].restart().expect("restart the primary");
        let reader = Client::new(endpoints.clone(), common::harness());
        let reads: Vec<_> = (0..WRITERS)
            .map(|w| {
                let reader = reader.clone();
                tokio::spawn(async move { reader.get(P, "t", key(w).as_bytes(), ReadMode::Linearizable).await })
            })
            .collect();
        for n in nodes.iter_mut().skip(1) {
            n.restart().expect("restart a secondary");
        }
        for (w, read) in reads.into_iter().enumerate() {
            let got = read.await.expect("read task").expect("read after the restart");
            let got = got.and_then(|r| <[u8; 8]>::try_from(r.value.get(..8)?).ok()).map(u64::from_be_bytes);
            assert!(
                got.is_some_and(|n| n >= acked[w]),
                "round {round}, writer {w}: read {got:?} after the restart, but {} was acknowledged",
                acked[w]
            );
        }
    }
}
