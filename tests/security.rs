//! Security end to end, on real `weft node` processes with real certificates: what an
//! attacker on the same network tried against an unsecured playground, each
//! attempt now refused; roles, grants and tokens taking effect without a restart; write
//! sessions bound to their caller; bad input refused before it is proposed; connection
//! floods, slow handshakes and idle connections cut off; certificates rotated under load.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{LocalNode, Security, free_addrs, wait_for, weft};
use tonic::Code;
use weft::client::{Client, ClientConfig, ClientError, ReadMode};
use weft::proto as pb;
use weft::routing::ServiceClient;
use weft_security::issue::Validity;
use weft_security::{ClientSecurity, Credentials, Holder};
use weft_testkit::local::{Pki, channel, ready_service};

const EXE: &str = env!("CARGO_BIN_EXE_weft");

fn exe() -> &'static std::path::Path {
    std::path::Path::new(EXE)
}

/// A managed cluster of `n` nodes (all seeds when `n` <= 3) with the shared CA; `more`
/// gives node i's further flags.
async fn managed(n: u64, more: impl Fn(u64) -> Vec<String>) -> (Vec<LocalNode>, Vec<String>) {
    let addrs = free_addrs(n as usize);
    let seeds = addrs[..addrs.len().min(3)].join(",");
    let nodes = (1..=n)
        .map(|i| {
            let (ud, fd) = (format!("ud{i}"), format!("fd{i}"));
            let mut flags: Vec<String> =
                ["--ud", &ud, "--fd", &fd, "--seeds", &seeds, "--balance-every", "0"].map(String::from).to_vec();
            flags.extend(more(i));
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            LocalNode::start_at(exe(), i, &addrs[i as usize - 1], &flags).expect("start node")
        })
        .collect();
    ready_service(&common::root(), &addrs, n as usize, "s", 2, n.min(3) as u32, Duration::from_secs(60))
        .await
        .expect("service s ready");
    (nodes, addrs)
}

/// A raw TLS handshake to `addr` trusting `ca_pem`, presenting `client` (cert, key PEM) if
/// given; then the HTTP/2 preface and one read. `Ok(serial of the node's certificate)` when
/// the node accepted the connection; `Err(why)` when it refused it. With TLS 1.3 a refused
/// client certificate shows on the first read, as the node's alert.
async fn handshake(addr: &str, ca_pem: &str, client: Option<(&str, &str)>) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA pem")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(weft_security::credentials::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes()).map(|c| c.expect("cert")).collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| weft_security::identity::info(c).expect("node certificate").serial)
        .unwrap_or_default();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(_)) => Ok(serial),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

fn pem(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("refused");
    (s.code(), s.message().to_string())
}

/// What a routed call's refusal says: its gRPC code.
fn routed_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Code {
    match r.expect_err("refused") {
        ClientError::Rpc(s) => s.code(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Each thing the unsecured playground let an attacker do, tried again: without TLS,
/// with TLS and no identity, with a certificate of another CA or an expired one, with a
/// client certificate against the internal services, with a node certificate that speaks
/// for another node, and as a node that is not of this cluster. Everything is refused,
/// and the cluster is untouched afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_without_the_right_credentials_gets_nothing() {
    let metrics = free_addrs(1).remove(0);
    let m = metrics.clone();
    let (_nodes, addrs) = managed(3, move |i| if i == 1 { vec!["--metrics".into(), m.clone()] } else { vec![] }).await;
    let ep = addrs[0].clone();
    let dir = common::certs_dir();
    let root = common::root().security;
    let delete = || pb::DeleteServiceRequest { name: "s".into() };
    let create = || pb::CreateServiceRequest { name: "evil".into(), partitions: 1, replicas: 0, restoring: false };

    // Plaintext: every call refused, saying what is needed.
    let plain = ClientSecurity::insecure();
    let mut c = pb::cluster_client::ClusterClient::new(channel(&plain, &ep).unwrap());
    let (code_, why) = code(c.create_service(create()).await);
    assert_eq!(code_, Code::Unauthenticated, "{why}");
    assert!(why.contains("only TLS") && why.contains("WEFT_CERTS_DIR"), "{why}");
    assert_eq!(code(c.delete_service(delete()).await).0, Code::Unauthenticated);
    let mut store = pb::store_client::StoreClient::new(channel(&plain, &ep).unwrap());
    let get0 = || pb::GetRequest {
        header: Some(pb::ReadHeader { partition: 0, mode: pb::ReadMode::Stale as i32 }),
        table: "cluster".into(),
        key: b"map".to_vec().into(),
    };
    assert_eq!(code(store.get(get0()).await).0, Code::Unauthenticated);

    // TLS, but neither a certificate nor a token.
    let anon = ClientSecurity::tls(Credentials::load(&dir, Holder::Client { user: None }).unwrap());
    let mut c = pb::cluster_client::ClusterClient::new(channel(&anon, &ep).unwrap());
    let (code_, why) = code(c.delete_service(delete()).await);
    assert_eq!(code_, Code::Unauthenticated, "{why}");
    assert!(why.contains("no client certificate"), "{why}");
    let wrong = anon.clone().with_token("weft_not-a-token");
    let mut c = pb::cluster_client::ClusterClient::new(channel(&wrong, &ep).unwrap());
    assert_eq!(code(c.create_service(create()).await).0, Code::Unauthenticated);

    // A client certificate of another CA, and an expired one of this CA: the handshake
    // refuses them (the node keeps serving everyone else).
    let ca = pem(dir.join("ca.crt"));
    let other = Pki::temporary().unwrap();
    let foreign = other.ca().client("root", Validity::days(1)).unwrap();
    let e = handshake(&ep, &ca, Some((&foreign.cert_pem, &foreign.key_pem))).await.expect_err("foreign CA");
    assert!(e.to_lowercase().contains("alert"), "{e}");
    let now = time::OffsetDateTime::now_utc();
    let past = Validity { not_before: now - time::Duration::days(3), not_after: now - time::Duration::days(1) };
    let Security::Tls(pki) = common::security() else { unreachable!() };
    let expired = pki.ca().client("root", past).unwrap();
    let e = handshake(&ep, &ca, Some((&expired.cert_pem, &expired.key_pem))).await.expect_err("expired");
    assert!(e.to_lowercase().contains("alert"), "{e}");
    let ok = handshake(&ep, &ca, Some((&pem(dir.join("client.root.crt")), &pem(dir.join("client.root.key"))))).await;
    assert!(ok.is_ok(), "root's own certificate is taken: {ok:?}");

    // A client certificate, even an operator's, cannot call the internal services.
    let mut raft = pb::raft_client::RaftClient::new(channel(&root, &ep).unwrap());
    let vote = pb::VoteRequest {
        target: Some(pb::Target { partition: 1, replica: 1 }),
        vote: Some(pb::Vote { leader_id: Some(pb::LeaderId { term: 1_000_000, node_id: 7 }), committed: false }),
        last_log_id: None,
        pre_vote: false,
        leadership_transfer: true,
    };
    let (code_, why) = code(raft.vote(vote).await);
    assert_eq!(code_, Code::PermissionDenied, "{why}");
    assert!(why.contains("internal"), "{why}");
    let mut admin = pb::node_admin_client::NodeAdminClient::new(channel(&root, &ep).unwrap());
    assert_eq!(code(admin.restart(pb::RestartRequest {}).await).0, Code::PermissionDenied);
    assert_eq!(
        code(admin.close_replica(pb::CloseReplicaRequest { partition: 1, replica: 0, partition_gone: false }).await).0,
        Code::PermissionDenied
    );
    let fake =
        pb::NodeInfo { id: 98, addr: "127.0.0.1:1".into(), ud: "ud9".into(), fd: "fd9".into(), ..Default::default() };
    let beat = || pb::HeartbeatRequest { node: Some(fake.clone()), ..Default::default() };
    let mut c = pb::cluster_client::ClusterClient::new(channel(&root, &ep).unwrap());
    assert_eq!(code(c.heartbeat(beat()).await).0, Code::PermissionDenied);
    // A node's certificate speaks for that node only.
    let mut as_node2 = pb::cluster_client::ClusterClient::new(common::channel_as_node(2, &ep));
    let (code_, why) = code(as_node2.heartbeat(beat()).await);
    assert_eq!(code_, Code::PermissionDenied, "{why}");
    assert!(why.contains("only for itself"), "{why}");

    // The cluster map's partition is out of the Store API's reach, for everyone.
    for who in [root.clone(), common::harness().security] {
        let mut store = pb::store_client::StoreClient::new(channel(&who, &ep).unwrap());
        let put = pb::Put {
            table: "cluster".into(),
            key: b"map".to_vec().into(),
            value: b"garbage".to_vec().into(),
            ..Default::default()
        };
        let (code_, why) = code(store.put(pb::PutRequest { partition: 0, session: None, put: Some(put) }).await);
        assert_eq!(code_, Code::PermissionDenied, "{why}");
        assert!(why.contains("cluster map"), "{why}");
        assert_eq!(code(store.get(get0()).await).0, Code::PermissionDenied);
        let backup = store.backup(pb::BackupRequest { partition: 0, since: 0 }).await;
        assert_eq!(backup.err().map(|s| s.code()), Some(Code::PermissionDenied));
    }

    // Fault injection is not part of a node started without --fault-injection.
    let mut faults = weft_proto::testing::v1::faults_client::FaultsClient::new(channel(&root, &ep).unwrap());
    let cut = weft_proto::testing::v1::CutLinksRequest { addrs: vec![addrs[1].clone()] };
    assert_eq!(code(faults.cut_links(cut).await).0, Code::Unimplemented);

    // The metrics port: nothing without TLS, nothing without a certificate.
    let plain_http = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&metrics).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.expect("send");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    };
    assert!(!plain_http.contains("weft_node_replicas"), "plaintext got metrics: {plain_http}");
    let no_cert = common::https_get(&metrics, "/metrics", &ClientSecurity::insecure()).await;
    assert!(no_cert.starts_with("HTTP/1.0 401") && !no_cert.contains("weft_node_replicas"), "{no_cert}");
    let scraped = common::https_get(&metrics, "/metrics", &root).await;
    assert!(scraped.starts_with("HTTP/1.0 200") && scraped.contains("weft_node_replicas"), "{scraped}");
    let refused = scraped
        .lines()
        .find(|l| l.starts_with("weft_node_refused_requests_total{code=\"unauthenticated\",node=\"1\"}"));
    let n: f64 = refused.and_then(|l| l.split_whitespace().last()?.parse().ok()).expect("the refusal counter");
    assert!(n >= 4.0, "refusals are counted: {refused:?}");

    // A node with a certificate of another CA cannot join.
    let other = Arc::new(other);
    let outsider = LocalNode::start_secured(
        exe(),
        9,
        "127.0.0.1:0",
        &["--seeds", &addrs[..3].join(","), "--ud", "ud9", "--fd", "fd9"],
        &Security::Tls(other.clone()),
    )
    .expect("start the outsider");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Nothing changed: no node 98 or 9, no service evil, the map reads, writes go on.
    let map = ServiceClient::fetch_map(&common::root(), &addrs, Duration::from_secs(5)).await.expect("map");
    let m = map.map.expect("a map");
    assert!(!m.nodes.contains_key(&98) && !m.nodes.contains_key(&9), "{:?}", m.nodes.keys());
    assert_eq!(m.services.keys().collect::<Vec<_>>(), ["s"]);
    assert!(m.users.is_empty(), "GetMap shows users to nodes only");
    let (ok, _, err) = weft(&["kv", "--endpoint", &ep, "put", "--service", "s", "after", "1"]);
    assert!(ok, "{err}");
    drop(outsider);
}

/// Roles nest and take effect within a second of a grant or revoke; a removed user and an
/// unknown token are refused; a write session cannot be reached by another caller; a write
/// to a partition that does not hold its key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_take_effect_at_once_and_sessions_belong_to_their_caller() {
    let (_nodes, addrs) = managed(3, |_| vec![]).await;
    let ep = addrs[0].clone();
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--endpoint", &ep];
        all.extend_from_slice(args);
        weft(&all)
    };
    let security = common::security();
    let alice = ClientConfig::secured(security.user("alice").unwrap());
    let as_alice = ServiceClient::new(addrs.clone(), alice.clone());
    let root = ServiceClient::new(addrs.clone(), common::root());
    root.put("s", "default", b"k", b"0").await.expect("root writes");

    // Not a user yet: refused as unknown.
    assert_eq!(routed_code(as_alice.get("s", "default", b"k").await), Code::Unauthenticated);
    let (ok, _, err) = ctl(&["user", "add", "alice"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(&["grant", "alice", "reader", "--service", "s"]);
    assert!(ok, "{err}");
    let got = wait_for(Duration::from_secs(2), "the reader grant", || async {
        as_alice.get("s", "default", b"k").await.ok().flatten()
    })
    .await;
    assert_eq!(&got.value[..], b"0");
    // A reader cannot write, nor run an operator command.
    assert_eq!(routed_code(as_alice.put("s", "default", b"k", b"1").await), Code::PermissionDenied);
    let alice_ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--endpoint", &ep, "--user", "alice"];
        all.extend_from_slice(args);
        weft(&all)
    };
    let (ok, _, err) = alice_ctl(&["drain", "3"]);
    assert!(!ok && err.contains("lacks the cluster-wide operator role"), "{err}");
    // Writer: writes within a second; still no operator command.
    let (ok, _, err) = ctl(&["grant", "alice", "writer", "--service", "s"]);
    assert!(ok, "{err}");
    wait_for(Duration::from_secs(2), "the writer grant", || async {
        as_alice.put("s", "default", b"k", b"1").await.ok()
    })
    .await;
    for args in [&["create-service", "x", "--partitions", "1"][..], &["delete-service", "s"], &["user", "list"]] {
        let (ok, _, err) = alice_ctl(args);
        assert!(!ok && err.contains("lacks"), "{args:?}: {err}");
    }
    // Revoked: the next request is refused (within a second).
    let (ok, _, err) = ctl(&["revoke", "alice", "writer", "--service", "s"]);
    assert!(ok, "{err}");
    wait_for(Duration::from_secs(2), "the revoke", || async {
        matches!(
            as_alice.put("s", "default", b"k", b"2").await,
            Err(ClientError::Rpc(s)) if s.code() == Code::PermissionDenied
        )
        .then_some(())
    })
    .await;

    // A token, for a client without a certificate.
    let (ok, out, err) = ctl(&["user", "add", "svc", "--with-token"]);
    assert!(ok, "{err}");
    let token = out.split_whitespace().find(|w| w.starts_with("weft_")).expect("a token printed").to_string();
    let (ok, _, err) = ctl(&["grant", "svc", "writer"]);
    assert!(ok, "{err}");
    let (ok, list, _) = ctl(&["--json", "user", "list"]);
    assert!(ok && !list.contains(&token), "the token is never shown again: {list}");
    let by_token = {
        let ca = Credentials::load(&common::certs_dir(), Holder::Client { user: None }).unwrap();
        ServiceClient::new(addrs.clone(), ClientConfig::secured(ClientSecurity::tls(ca).with_token(token.as_str())))
    };
    wait_for(Duration::from_secs(2), "the token's grant", || async {
        by_token.put("s", "default", b"t", b"1").await.ok()
    })
    .await;

    // A write session is its caller's own: alice (a writer again) sends a write under
    // root's client id claiming every seq below 2^64 acknowledged. Without the binding,
    // root's next write would be refused as older than its session's window.
    let (ok, _, err) = ctl(&["grant", "alice", "writer", "--service", "s"]);
    assert!(ok, "{err}");
    let victim = Client::new(addrs.clone(), common::root());
    let map = ServiceClient::fetch_map(&common::root(), &addrs, Duration::from_secs(5)).await.expect("map");
    let parts = weft::node::view::partitions(&map, Some("s"));
    let h = weft_cluster_manager::keyspace::hash(b"v");
    let p = parts.iter().find(|p| p.low <= h && h <= p.high).expect("v's partition").id;
    victim.put(p, "default", b"v", b"1").await.expect("root's first write");
    let hijack = |session: pb::Session, key: &'static [u8]| {
        let put = pb::Put {
            table: "default".into(),
            key: key.to_vec().into(),
            value: b"x".to_vec().into(),
            ..Default::default()
        };
        let cmd = pb::Command {
            session: None,
            kind: Some(pb::command::Kind::Batch(pb::Batch {
                ops: vec![pb::Op { kind: Some(pb::op::Kind::Put(put)) }],
            })),
        };
        pb::WriteRequest { partition: p, session: Some(session), command: Some(cmd) }
    };
    let session = pb::Session { client_id: victim.client_id(), seq: 1_000_000, acked_below: u64::MAX };
    let alice_sec = alice.security.clone();
    let answered = wait_for(Duration::from_secs(10), "alice's write reaching the primary", || {
        let (addrs, alice_sec) = (addrs.clone(), alice_sec.clone());
        async move {
            for a in &addrs {
                let mut raw = pb::store_client::StoreClient::new(channel(&alice_sec, a).unwrap());
                if let Ok(r) = raw.write(hijack(session, b"v")).await {
                    return Some(r.into_inner());
                }
            }
            None
        }
    })
    .await;
    assert!(answered.result.is_some_and(|r| r.outcome.is_none()), "alice's own write applied");
    victim.put(p, "default", b"v", b"2").await.expect("root's session is untouched");
    let got = victim.get(p, "default", b"v", ReadMode::Linearizable).await.expect("read").expect("v");
    assert_eq!(&got.value[..], b"2");

    // A key the partition's hash range does not hold is refused before it is proposed.
    let stray = (0u32..).map(|i| format!("stray{i}")).find(|k| {
        let h = weft_cluster_manager::keyspace::hash(k.as_bytes());
        h < parts.iter().find(|q| q.id == p).unwrap().low || h > parts.iter().find(|q| q.id == p).unwrap().high
    });
    let stray = stray.expect("a key of another partition");
    match victim.put(p, "default", stray.as_bytes(), b"x").await {
        Err(ClientError::Refused { code: pb::ErrorCode::Invalid, message }) => {
            assert!(message.contains("outside this partition's range"), "{message}")
        }
        other => panic!("a misrouted key was {other:?}"),
    }

    // Removed: refused as unknown from the next request on.
    let (ok, _, err) = ctl(&["user", "remove", "alice"]);
    assert!(ok, "{err}");
    wait_for(Duration::from_secs(2), "the removal", || async {
        matches!(
            as_alice.get("s", "default", b"k").await,
            Err(ClientError::Rpc(s)) if s.code() == Code::Unauthenticated
        )
        .then_some(())
    })
    .await;
}

fn put_op(key: Vec<u8>, value: Vec<u8>, attrs: Vec<pb::Attr>) -> pb::Op {
    pb::Op {
        kind: Some(pb::op::Kind::Put(pb::Put {
            table: "t".into(),
            key: key.into(),
            value: value.into(),
            attrs,
            condition: None,
        })),
    }
}

/// A raft message with a term near 2^64 is refused as nonsense; writes over the limits, a
/// NaN attribute and an unknown read mode are refused before anything is proposed (the
/// replicas' logs do not grow); a message over the transport's bound is refused and the
/// node serves on; a durable node's files are its user's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonsense_and_oversized_input_is_refused_before_it_reaches_a_log() {
    const P: u64 = 5;
    let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<LocalNode> = (1..=3u64)
        .map(|i| {
            let dir = data[i as usize - 1].path().display().to_string();
            common::start(i, &["--durable", "--data-dir", &dir])
        })
        .collect();
    let group: Vec<&LocalNode> = nodes.iter().collect();
    let leader = common::open_partition(&group, P, 500).await;
    let client = Client::new(nodes.iter().map(|n| n.addr.clone()).collect(), common::harness());
    client.create_table(P, "t").await.expect("table");
    client.put(P, "t", b"a", b"1").await.expect("put");
    let logs = || async {
        let mut v = Vec::new();
        for n in &nodes {
            v.push(n.status(P).await.expect("status").last_log_index);
        }
        v
    };
    wait_for(Duration::from_secs(5), "every replica caught up", || async {
        let l = logs().await;
        l.iter().all(|x| *x == l[0]).then_some(())
    })
    .await;
    let before = logs().await;

    // Terms and indexes near 2^64, from a node (the harness holds a node certificate).
    let leader_node = nodes.iter().find(|n| 500 + n.id == leader).expect("the leader's node");
    let follower = nodes.iter().find(|n| 500 + n.id != leader).expect("a follower");
    let mut raft = pb::raft_client::RaftClient::new(common::channel(&follower.addr));
    let vote = pb::VoteRequest {
        target: Some(pb::Target { partition: P, replica: 500 + follower.id }),
        vote: Some(pb::Vote { leader_id: Some(pb::LeaderId { term: u64::MAX, node_id: 77 }), committed: false }),
        last_log_id: Some(pb::LogId { leader_id: Some(pb::LeaderId { term: u64::MAX, node_id: 77 }), index: u64::MAX }),
        pre_vote: false,
        leadership_transfer: true,
    };
    let (code_, why) = code(raft.vote(vote).await);
    assert_eq!(code_, Code::InvalidArgument, "{why}");
    assert!(why.contains("nonsense"), "{why}");
    let st = follower.status(P).await.expect("status");
    assert!(st.term < 1000, "the term was not adopted: {}", st.term);
    assert_eq!(leader_node.status(P).await.expect("status").role, pb::Role::Primary as i32);

    // Over the limits: a 5 MiB key (the limit is 4 KiB) and a 2 MiB value (1 MiB).
    for (k, v) in [(vec![1u8; 5 << 20], vec![1u8]), (b"big".to_vec(), vec![0u8; 2 << 20])] {
        match client.batch(P, vec![put_op(k, v, vec![])]).await {
            Err(ClientError::Refused { code: pb::ErrorCode::Limit, message }) => {
                assert!(message.contains("bytes"), "{message}")
            }
            other => panic!("an over-limit write was {other:?}"),
        }
    }
    // NaN in an attribute.
    let nan =
        pb::Attr { name: "score".into(), value: Some(pb::Scalar { kind: Some(pb::scalar::Kind::F64(f64::NAN)) }) };
    match client.batch(P, vec![put_op(b"n".to_vec(), b"1".to_vec(), vec![nan])]).await {
        Err(ClientError::Refused { code: pb::ErrorCode::Invalid, message }) => {
            assert!(message.contains("NaN"), "{message}")
        }
        other => panic!("a NaN attribute was {other:?}"),
    }
    assert_eq!(logs().await, before, "refused writes never reached a log");

    // A message over the transport's bound (64 MiB) is refused; the node serves on.
    let mut raw =
        pb::store_client::StoreClient::new(common::channel(&leader_node.addr)).max_encoding_message_size(80 << 20);
    let huge =
        pb::BatchRequest { partition: P, session: None, ops: vec![put_op(b"h".to_vec(), vec![0u8; 70 << 20], vec![])] };
    let e = raw.batch(huge).await.expect_err("a 70 MiB message is refused");
    assert!(matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange | Code::Internal | Code::Unknown), "{e:?}");
    // An unknown read mode.
    let get = pb::GetRequest {
        header: Some(pb::ReadHeader { partition: P, mode: 7 }),
        table: "t".into(),
        key: b"a".to_vec().into(),
    };
    let (code_, why) = code(raw.get(get).await);
    assert_eq!(code_, Code::InvalidArgument, "{why}");
    assert_eq!(&client.get(P, "t", b"a", ReadMode::Linearizable).await.expect("read").expect("a").value[..], b"1");
    assert_eq!(logs().await, before);

    // Durable files: directories 0700, files 0600.
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut stack = vec![data[0].path().join("replicas")];
    while let Some(d) = stack.pop() {
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{}", path.display());
                seen += 1;
            }
        }
    }
    assert!(seen > 0, "the durable node wrote files");
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A client that sends gets of a 1 MiB value on a session stream and never reads the
/// answers grew a node by about 1 GiB per stream when the bound counted calls (1,024 of
/// them). The bound is also on answer bytes now: the node holds tens of MiB, then answers
/// everything once the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_that_reads_no_large_answers_holds_bounded_memory() {
    const P: u64 = 6;
    let node = common::start(1, &[]);
    common::open_partition(&[&node], P, 600).await;
    let client = Client::new(vec![node.addr.clone()], common::harness());
    client.create_table(P, "t").await.expect("table");
    client.put(P, "t", b"big", &vec![7u8; 1 << 20]).await.expect("put 1 MiB");
    let pid = node.pid().expect("pid");
    let before = rss(pid);
    let calls = 2048u64;
    let mut raw = pb::store_client::StoreClient::new(common::channel(&node.addr)).max_decoding_message_size(256 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sender = tokio::spawn(async move {
        for batch in 0..calls / 64 {
            let calls = (0..64)
                .map(|i| {
                    let header = pb::ReadHeader { partition: P, mode: pb::ReadMode::Stale as i32 };
                    let get = pb::GetRequest { header: Some(header), table: "t".into(), key: b"big".to_vec().into() };
                    pb::SessionCall { id: batch * 64 + i, call: Some(pb::session_call::Call::Get(get)) }
                })
                .collect();
            if tx.send(pb::SessionCalls { calls }).await.is_err() {
                break;
            }
        }
        tx
    });
    let mut answers = raw.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("session").into_inner();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 300 << 20, "the node grew {} MiB for a client that read nothing", grown >> 20);
    let mut got = 0u64;
    while got < calls {
        let m = answers.message().await.expect("answers").expect("the stream stays open");
        for a in m.answers {
            match a.answer {
                Some(pb::session_answer::Answer::Get(g)) => assert_eq!(g.record.map(|r| r.value.len()), Some(1 << 20)),
                other => panic!("call {} answered with {other:?}", a.id),
            }
            got += 1;
        }
    }
    drop(sender.await.expect("sender"));
}

/// Past `--max-client-connections` a client is told so (`RESOURCE_EXHAUSTED`), while node
/// connections still get through; a handshake sent a byte at a time is cut at
/// `--handshake-timeout-s`; connections with no request in flight are closed after
/// `--idle-timeout-s`, which frees room for new clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_slow_handshakes_and_idle_connections_are_cut() {
    let node =
        common::start(1, &["--max-client-connections", "2", "--idle-timeout-s", "1", "--handshake-timeout-s", "1"]);
    let dir = common::certs_dir();
    let ca = pem(dir.join("ca.crt"));
    let (cert, key) = (pem(dir.join("client.root.crt")), pem(dir.join("client.root.key")));

    // A handshake that trickles in, one byte every 300 ms, is cut after about a second.
    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(&node.addr).await.expect("connect");
    let closed = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let hello = [0x16u8, 0x03, 0x01, 0x00, 0xff, 0x01];
        for b in hello.iter().cycle() {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            let mut buf = [0u8; 16];
            match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed).await.expect("the slow handshake was cut");
    assert!(started.elapsed() < Duration::from_secs(3), "cut after {:?}", started.elapsed());

    // Two client connections held open, doing nothing: a third client is refused clearly.
    let hold = |cert: String, key: String, ca: String, addr: String| {
        tokio::spawn(async move {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
            let config = rustls::ClientConfig::builder_with_provider(weft_security::credentials::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap();
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            // Read (the node's HTTP/2 settings) until the node closes the connection.
            let mut buf = [0u8; 256];
            let t = std::time::Instant::now();
            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await {
                if n == 0 {
                    break;
                }
            }
            t.elapsed()
        })
    };
    let held = [hold(cert.clone(), key.clone(), ca.clone(), node.addr.clone()), hold(cert, key, ca, node.addr.clone())];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = pb::cluster_client::ClusterClient::new(channel(&common::root().security, &node.addr).unwrap());
    let (code_, why) = code(third.get_map(pb::GetMapRequest {}).await);
    assert_eq!(code_, Code::ResourceExhausted, "{why}");
    assert!(why.contains("maximum of client connections"), "{why}");
    // The node still serves nodes (the harness holds a node certificate).
    let mut admin = node.admin().await.expect("admin");
    admin.list(pb::ListReplicasRequest {}).await.expect("a node is served while clients are at their limit");
    // The idle connections are closed after a second; then a client gets in again (and is
    // told this standalone node knows no users, which is a different refusal).
    for h in held {
        let idle_for = tokio::time::timeout(Duration::from_secs(5), h).await.expect("closed").expect("task");
        assert!(idle_for < Duration::from_secs(3), "an idle connection lived {idle_for:?}");
    }
    let mut fresh = pb::cluster_client::ClusterClient::new(channel(&common::root().security, &node.addr).unwrap());
    let (code_, why) = code(fresh.get_map(pb::GetMapRequest {}).await);
    assert_eq!(code_, Code::Unauthenticated, "{why}");
}

/// Every node's certificate is replaced while a client writes without pause: no write
/// fails, each node presents its new certificate to the next connection, and a node given
/// a broken key first keeps serving with its old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_every_node_under_load() {
    const P: u64 = 8;
    let pki = Arc::new(Pki::temporary().expect("a CA of this test's own"));
    let security = Security::Tls(pki.clone());
    let nodes: Vec<LocalNode> =
        (1..=3u64).map(|i| LocalNode::start_secured(exe(), i, "127.0.0.1:0", &[], &security).expect("start")).collect();
    let group: Vec<&LocalNode> = nodes.iter().collect();
    weft_testkit::local::open_partition(&group, P, 800).await.expect("open");
    let client = Client::new(nodes.iter().map(|n| n.addr.clone()).collect(), security.harness_config().unwrap());
    client.create_table(P, "t").await.expect("table");
    let ca = pem(pki.dir().join("ca.crt"));
    let serial = |addr: String| {
        let ca = ca.clone();
        async move { handshake(&addr, &ca, None).await.expect("the node takes a connection") }
    };
    let old: Vec<String> = futures::future::join_all(nodes.iter().map(|n| serial(n.addr.clone()))).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("k{i:06}");
                match client.put(P, "t", key.as_bytes(), b"v").await {
                    Ok(_) => acked.push(key),
                    Err(e) => failed.push(format!("{key}: {e}")),
                }
                i += 1;
            }
            (acked, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A broken key for node 1: refused, the old certificate stays in use.
    let dir1 = pki.node_dir(1).unwrap();
    std::fs::write(dir1.join("node.key"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(serial(nodes[0].addr.clone()).await, old[0], "node 1 serves on with its old certificate");

    // New certificates for every node (same CA), written as an operator would.
    for n in &nodes {
        let issued = pki.ca().node(n.id, &["127.0.0.1".into()], Validity::days(30)).unwrap();
        weft_security::issue::write_pair(&pki.node_dir(n.id).unwrap(), "node.crt", "node.key", &issued, true).unwrap();
    }
    for (i, n) in nodes.iter().enumerate() {
        let now = wait_for(Duration::from_secs(10), "the new certificate in use", || {
            let addr = n.addr.clone();
            let old = old[i].clone();
            async move {
                let s = serial(addr).await;
                (s != old).then_some(s)
            }
        })
        .await;
        assert_ne!(now, old[i]);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = writer.await.expect("writer");
    assert!(failed.is_empty(), "writes failed during the rotation: {failed:?}");
    assert!(acked.len() > 50, "the writer kept writing ({})", acked.len());
    // Every acknowledged write is there, read over connections made with the new certificates.
    let fresh = Client::new(nodes.iter().map(|n| n.addr.clone()).collect(), security.harness_config().unwrap());
    for key in acked.iter().step_by(7) {
        assert!(fresh.get(P, "t", key.as_bytes(), ReadMode::Linearizable).await.expect("read").is_some(), "{key}");
    }
}

/// A replica that a group's primary is told to build on a node of another CA gets nothing:
/// the primary's connections to it fail their handshakes, so no log entry and no snapshot
/// byte reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_ca_receives_no_entry_and_no_snapshot() {
    const P: u64 = 9;
    let node = common::start(1, &[]);
    common::open_partition(&[&node], P, 900).await;
    let client = Client::new(vec![node.addr.clone()], common::harness());
    client.create_table(P, "t").await.expect("table");
    for i in 0..200u32 {
        client.put(P, "t", &i.to_be_bytes(), &[7u8; 100]).await.expect("put");
    }
    let other = Security::Tls(Arc::new(Pki::temporary().expect("another CA")));
    let outsider = LocalNode::start_secured(exe(), 2, "127.0.0.1:0", &[], &other).expect("the outsider");
    let mut theirs = outsider.admin().await.expect("the outsider's own harness");
    theirs
        .open_replica(pb::OpenReplicaRequest { partition: P, replica: 902, mode: 0, initial: None, staged: false })
        .await
        .expect("open");
    let mut ours = node.admin().await.expect("admin");
    let learner = pb::AddLearnerRequest { partition: P, replica: 902, addr: outsider.addr.clone(), blocking: false };
    ours.add_learner(learner).await.expect("the primary takes the learner into its membership");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = theirs.status(pb::ReplicaStatusRequest { partition: P }).await.expect("status").into_inner();
    assert_eq!((st.last_log_index, st.snapshot_bytes, st.records), (0, 0, 0), "the outsider received {st:?}");
    // The primary itself goes on serving.
    client.put(P, "t", b"after", b"1").await.expect("writes go on");
}

/// `weft cert` makes a CA, node and client certificates with private keys, lists them, and
/// refuses to overwrite or to name a user badly.
#[test]
fn weft_cert_makes_and_lists_certificates() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("certs");
    let d = dir.to_str().unwrap();
    let (ok, _, err) = weft(&["cert", "create-ca", "--certs-dir", d]);
    assert!(ok, "{err}");
    let (ok, _, err) =
        weft(&["cert", "create-node", "--id", "3", "--host", "127.0.0.1", "--host", "n3.example", "--certs-dir", d]);
    assert!(ok, "{err}");
    let (ok, _, err) = weft(&["cert", "create-client", "alice", "--certs-dir", d, "--lifetime-days", "30"]);
    assert!(ok, "{err}");
    for key in ["ca.key", "node.key", "client.alice.key"] {
        assert_eq!(std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777, 0o600, "{key}");
    }
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let (ok, out, err) = weft(&["cert", "list", d, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let kinds: Vec<&str> = v.as_array().unwrap().iter().filter_map(|c| c["kind"].as_str()).collect();
    assert_eq!(kinds, ["ca", "client alice", "node 3"], "{out}");
    let node = &v.as_array().unwrap()[2];
    assert!(
        node["names"].to_string().contains("n3.example") && node["names"].to_string().contains("weft://node/3"),
        "{node}"
    );
    assert_eq!(node["expired"], false);
    let (ok, _, err) = weft(&["cert", "create-ca", "--certs-dir", d]);
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = weft(&["cert", "create-client", "Bad Name", "--certs-dir", d]);
    assert!(!ok && err.contains("user name"), "{err}");
    let (ok, _, _) = weft(&["cert", "create-node", "--id", "4", "--certs-dir", d]);
    assert!(!ok, "a node certificate needs a host");
}

/// A node without certificates refuses to start unless `--insecure`; an insecure node says
/// so in its log, and `weft ctl status` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_is_asked_for_and_announced() {
    let (ok, _, err) = common::weft_plain(&["node", "--id", "1", "--listen", "127.0.0.1:0"]);
    assert!(!ok && err.contains("no certificates") && err.contains("--insecure"), "{err}");
    let addr = free_addrs(1).remove(0);
    let _node = LocalNode::start_at(exe(), 1, &addr, &["--insecure", "--seeds", &addr]).expect("an insecure node");
    let status = wait_for(Duration::from_secs(30), "the insecure node registered", || async {
        let (ok, out, _) = common::weft_plain(&["ctl", "--endpoint", &addr, "status"]);
        (ok && out.contains("1 up")).then_some(out)
    })
    .await;
    assert!(status.contains("INSECURE: nodes [1]"), "{status}");
    let (ok, out, _) = common::weft_plain(&["ctl", "--endpoint", &addr, "--json", "status"]);
    assert!(ok && out.contains("\"insecure_nodes\":[1]"), "{out}");
}
