//! The node host: one process, one port, every replica it hosts.
//!
//! Serves three gRPC services: `Store` (client reads and writes, addressed by partition),
//! `Raft` (the internal transport, see `weft_replica::transport`) and `NodeAdmin` (open
//! and close replicas, membership changes, status). A write or linearizable read that
//! reaches a replica that is not the primary is answered `UNAVAILABLE` with the primary's
//! address and replica id in the response metadata ([`crate::LEADER_ADDR_KEY`]), so
//! clients can follow it. Stale reads are served by any replica from its applied state and
//! flagged `stale` in the response.
//!
//! Linearizable reads use openraft's read index: the primary confirms its leadership by a
//! quorum's acknowledgement of a message it sent after the read arrived, then waits until
//! it has applied up to its commit index. Concurrent reads share rounds, and while writes
//! are in flight the writes' own replication messages serve as that message, so a round
//! costs no heartbeat (`weft_replica::read_gate`). Lease reads would save the round trip
//! but trust bounded clock drift; weft does not assume it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardReason, ForwardToLeader, LinearizableReadError, RaftError};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use weft_proto::v1 as pb;
use weft_replica::command::{record_to_pb, scalar_from_pb};
use weft_replica::host::{Host, RaftSettings, Replica, Storage};
use weft_replica::transport::{RaftService, TransportConfig};
use weft_replica::types::TypeConfig;
use weft_replica::wire;
use weft_store::{Limits, Query, Scan, Token};

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node id (stable across restarts; replica ids are per incarnation).
    pub id: u64,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Raft timings and log policy for every hosted group.
    pub raft: RaftSettings,
    /// Transport settings.
    pub transport: TransportConfig,
    /// Engine limits.
    pub limits: Limits,
    /// Data directory and default log mode.
    pub storage: Storage,
    /// Seeds, domains, capacity and timings for the cluster manager.
    pub cluster: crate::manager::ClusterConfig,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Binding or serving failed.
    #[error("node transport")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server")]
    Server(#[from] tonic::transport::Error),
    /// Replica host setup failed.
    #[error(transparent)]
    Host(#[from] weft_replica::host::HostError),
}

/// A bound node, ready to serve.
pub struct Node {
    host: Arc<Host>,
    manager: Arc<crate::manager::Manager>,
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
    addr: SocketAddr,
}

impl Node {
    /// Binds the listening socket.
    pub async fn bind(config: NodeConfig) -> Result<Self, NodeError> {
        let host = Host::new(&config.raft, config.transport.clone(), config.limits.clone(), config.storage.clone())?;
        let recovered = host.recover().await?;
        if !recovered.is_empty() {
            tracing::info!(?recovered, "durable replicas reopened from disk");
        }
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let manager = crate::manager::Manager::new(host.clone(), config.id, addr.to_string(), config.cluster);
        let metrics = match config.metrics {
            Some(a) => Some(crate::metrics::bind(a).await?),
            None => None,
        };
        Ok(Node { host, manager, listener, metrics, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
        let max = self.host.peers().config().max_message_bytes;
        let store = pb::store_server::StoreServer::new(StoreService { host: self.host.clone() })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let admin = pb::node_admin_server::NodeAdminServer::new(AdminService {
            host: self.host.clone(),
            incarnation: self.manager.incarnation(),
        });
        let raft = RaftService::new(self.host.clone()).into_server();
        let cluster = pb::cluster_server::ClusterServer::new(crate::manager::ClusterService::new(self.manager.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        self.manager.start();
        if let Some(l) = self.metrics {
            let (host, manager) = (self.host.clone(), self.manager.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(l, host, manager).await {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            });
        }
        // `Server::tcp_nodelay` only covers listeners tonic binds itself; set it on every
        // accepted socket, or Nagle holds a stream's trailing frames for a delayed ACK
        // (40 ms per pipelined-append heartbeat, so per idle linearizable read).
        let incoming =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(self.listener), |s| {
                s.and_then(|s| s.set_nodelay(true).map(|()| s))
            });
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(weft_replica::transport::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(weft_replica::transport::CONNECTION_WINDOW_BYTES)
            .add_service(store)
            .add_service(admin)
            .add_service(raft)
            .add_service(cluster)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

fn replica_of(host: &Host, partition: u64) -> Result<Arc<Replica>, Status> {
    host.get(partition).ok_or_else(|| {
        let mut s = Status::not_found(format!("partition {partition} has no replica on this node"));
        s.metadata_mut().insert(crate::NOT_HOSTED_KEY, MetadataValue::from_static("1"));
        s
    })
}

/// `UNAVAILABLE` with the primary's address and id attached when known.
fn not_primary(partition: u64, f: &ForwardToLeader<TypeConfig>) -> Status {
    let why = match f.reason {
        ForwardReason::NotLeader => "",
        ForwardReason::LeadershipTransfer => " (handing the primary over)",
        ForwardReason::LeaseExpired => " (its quorum lease lapsed: no quorum has answered it lately)",
    };
    let mut s = Status::unavailable(format!(
        "not the primary of partition {partition}{why}; primary is {}",
        f.leader_node.as_ref().map_or("unknown", |n| n.addr.as_str())
    ));
    if let (Some(id), Some(node)) = (f.leader_id, f.leader_node.as_ref())
        && let (Ok(addr), Ok(id)) =
            (MetadataValue::try_from(node.addr.as_str()), MetadataValue::try_from(id.to_string()))
    {
        s.metadata_mut().insert(crate::LEADER_ADDR_KEY, addr);
        s.metadata_mut().insert(crate::LEADER_ID_KEY, id);
    }
    s
}

fn write_error(partition: u64, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_primary(partition, &f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Status::failed_precondition(e.to_string()),
        RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => Status::failed_precondition(e.to_string()),
        // Discarded by a leader change before it committed: not applied, safe to retry.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(e)) => Status::unavailable(e.to_string()),
        RaftError::Fatal(f) => Status::unavailable(format!("replica of partition {partition} stopped: {f}")),
    }
}

/// The client Store service.
#[derive(Clone)]
struct StoreService {
    host: Arc<Host>,
}

impl StoreService {
    /// Replicates one command through the partition's primary; answers with its result.
    async fn propose(
        &self,
        partition: u64,
        session: Option<pb::Session>,
        mut cmd: pb::Command,
    ) -> Result<pb::WriteResponse, Status> {
        let replica = replica_of(&self.host, partition)?;
        replica.requests.fetch_add(1, Ordering::Relaxed);
        if cmd.session.is_none() {
            cmd.session = session;
        }
        let result = replica.proposer.propose(cmd).await.map_err(|e| write_error(partition, e))?;
        Ok(pb::WriteResponse { result: Some(result) })
    }

    /// Waits until this replica may answer a read of the given mode, then runs `read` on
    /// its applied state; returns the answer with what the response says about it.
    async fn read<T>(
        &self,
        header: Option<pb::ReadHeader>,
        read: impl FnOnce(&weft_store::Store) -> weft_store::Result<T>,
    ) -> Result<(T, Option<pb::ReadInfo>), Status> {
        let header = header.ok_or_else(|| Status::invalid_argument("read without a header"))?;
        let replica = replica_of(&self.host, header.partition)?;
        replica.requests.fetch_add(1, Ordering::Relaxed);
        let stale = header.mode == pb::ReadMode::Stale as i32;
        if !stale {
            match replica.reads.ensure().await {
                Ok(_) => {}
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                    return Err(not_primary(header.partition, &f));
                }
                Err(e) => return Err(Status::unavailable(format!("read index: {e}"))),
            }
        }
        let (answer, applied) = replica.sm.read(|st| (read(&st.store), st.last_applied.map_or(0, |l| l.index)));
        Ok((answer.map_err(engine_status)?, Some(pb::ReadInfo { stale, replica: replica.id, applied })))
    }
}

/// A command applying `ops` as one atomic batch.
fn batch_command(ops: Vec<pb::Op>) -> pb::Command {
    pb::Command { session: None, kind: Some(pb::command::Kind::Batch(pb::Batch { ops })) }
}

fn page_response(page: weft_store::Page, info: Option<pb::ReadInfo>) -> pb::ScanResponse {
    pb::ScanResponse {
        info,
        records: page.records.iter().map(record_to_pb).collect(),
        token: page.next.map(|t| t.as_bytes().to_vec().into()).unwrap_or_default(),
    }
}

fn engine_status(e: weft_store::StoreError) -> Status {
    match e {
        weft_store::StoreError::TableNotFound(_) | weft_store::StoreError::IndexNotFound { .. } => {
            Status::not_found(e.to_string())
        }
        _ => Status::invalid_argument(e.to_string()),
    }
}

fn key_bound(b: Option<pb::KeyBound>) -> Bound<Vec<u8>> {
    match b {
        None => Bound::Unbounded,
        Some(b) if b.inclusive => Bound::Included(b.key.to_vec()),
        Some(b) => Bound::Excluded(b.key.to_vec()),
    }
}

fn value_bound(b: Option<pb::ValueBound>) -> Result<Bound<weft_store::Scalar>, Status> {
    Ok(match b {
        None => Bound::Unbounded,
        Some(b) => {
            let v = scalar_from_pb(b.value)?;
            if b.inclusive { Bound::Included(v) } else { Bound::Excluded(v) }
        }
    })
}

fn token(t: &[u8]) -> Option<Token> {
    (!t.is_empty()).then(|| Token::from_bytes(t))
}

/// The answer stream of a session (see [`crate::session`]).
type SessionStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SessionAnswers, Status>> + Send>>;

impl StoreService {
    /// One session call, answered as its unary RPC would answer it.
    async fn session_call(self, call: pb::session_call::Call) -> pb::session_answer::Answer {
        use pb::store_server::Store;
        let answer = match call {
            pb::session_call::Call::Get(r) => {
                self.get(Request::new(r)).await.map(|r| pb::session_answer::Answer::Get(r.into_inner()))
            }
            pb::session_call::Call::Write(r) => {
                self.write(Request::new(r)).await.map(|r| pb::session_answer::Answer::Write(r.into_inner()))
            }
        };
        answer.unwrap_or_else(|s| pb::session_answer::Answer::Error(crate::session::status_to_pb(&s)))
    }
}

/// The chunk stream a backup answers with.
type BackupStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::store_server::Store for StoreService {
    type BackupStream = BackupStream;
    type SessionStream = SessionStream;

    async fn session(
        &self,
        req: Request<tonic::Streaming<pb::SessionCalls>>,
    ) -> Result<Response<SessionStream>, Status> {
        let svc = self.clone();
        let answers = crate::session::serve(req.into_inner(), move |call| svc.clone().session_call(call));
        Ok(Response::new(Box::pin(answers)))
    }

    /// The primary, after a read-index round (so it holds everything acknowledged), takes
    /// an O(1) engine snapshot and streams it as a snapshot transfer would, without client
    /// sessions: they mean nothing to a restored service.
    async fn backup(&self, req: Request<pb::BackupRequest>) -> Result<Response<BackupStream>, Status> {
        let partition = req.into_inner().partition;
        let header = Some(pb::ReadHeader { partition, mode: pb::ReadMode::Linearizable as i32 });
        let (snapshot, _) = self.read(header, |s| Ok(s.snapshot())).await?;
        let chunk_bytes = self.host.peers().config().snapshot_chunk_bytes;
        let (rx, encoder) = weft_replica::transport::stream_snapshot(
            pb::SnapshotChunk::default(),
            snapshot,
            Default::default(),
            chunk_bytes,
        );
        // A failed encoder ends the stream without its last chunk, which the reader rejects.
        tokio::spawn(async move {
            match encoder.await {
                Ok(Ok(counts)) => tracing::info!(partition, ?counts, "backup streamed"),
                Ok(Err(e)) => tracing::warn!(partition, error = %e, "backup stream stopped"),
                Err(e) => tracing::warn!(partition, error = %e, "backup encoder failed"),
            }
        });
        let stream = futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = req.into_inner();
        let (record, info) = self.read(req.header, |s| Ok(s.get(&req.table, &req.key)?.map(record_to_pb))).await?;
        Ok(Response::new(pb::GetResponse { info, record }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let put = req.put.ok_or_else(|| Status::invalid_argument("put request without a put"))?;
        let cmd = batch_command(vec![pb::Op { kind: Some(pb::op::Kind::Put(put)) }]);
        Ok(Response::new(self.propose(req.partition, req.session, cmd).await?))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let del = req.delete.ok_or_else(|| Status::invalid_argument("delete request without a delete"))?;
        let cmd = batch_command(vec![pb::Op { kind: Some(pb::op::Kind::Delete(del)) }]);
        Ok(Response::new(self.propose(req.partition, req.session, cmd).await?))
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(self.propose(req.partition, req.session, batch_command(req.ops)).await?))
    }

    async fn write(&self, req: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let req = req.into_inner();
        let cmd = req.command.ok_or_else(|| Status::invalid_argument("write request without a command"))?;
        Ok(Response::new(self.propose(req.partition, req.session, cmd).await?))
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let req = req.into_inner();
        let scan = Scan {
            start: key_bound(req.start),
            end: key_bound(req.end),
            reverse: req.reverse,
            limit: req.limit as usize,
            token: token(&req.token),
        };
        let (page, info) = self.read(req.header, |s| s.scan(&req.table, &scan)).await?;
        Ok(Response::new(page_response(page, info)))
    }

    async fn query(&self, req: Request<pb::QueryRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let req = req.into_inner();
        let query = Query {
            index: req.index,
            start: value_bound(req.lower)?,
            end: value_bound(req.upper)?,
            reverse: req.descending,
            limit: req.limit as usize,
            token: token(&req.token),
        };
        let (page, info) = self.read(req.header, |s| s.query(&req.table, &query)).await?;
        Ok(Response::new(page_response(page, info)))
    }

    async fn top_k(&self, req: Request<pb::TopKRequest>) -> Result<Response<pb::TopKResponse>, Status> {
        let req = req.into_inner();
        let (top, info) = self.read(req.header, |s| s.top_k(&req.table, &req.index, req.k as usize)).await?;
        Ok(Response::new(pb::TopKResponse { info, records: top.iter().map(record_to_pb).collect() }))
    }
}

/// The node-admin service.
struct AdminService {
    host: Arc<Host>,
    incarnation: u64,
}

fn role(state: ServerState, is_voter: bool) -> pb::Role {
    match state {
        ServerState::Leader => pb::Role::Primary,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Follower if is_voter => pb::Role::Secondary,
        ServerState::Learner | ServerState::Follower => pb::Role::Learner,
        _ => pb::Role::Unknown,
    }
}

pub(crate) fn status_of(r: &Replica) -> pb::ReplicaStatus {
    let m = r.raft.metrics().borrow_watched().clone();
    let is_voter = m.membership_config.membership().voter_ids().any(|v| v == r.id);
    let (memory, records) = r.sm.read(|st| {
        let records = st.store.table_names().filter_map(|t| st.store.count(t).ok()).sum::<usize>();
        (st.store.memory_bytes(), records)
    });
    let p = r.sm.progress();
    pb::ReplicaStatus {
        partition: r.partition,
        replica: r.id,
        role: role(m.state, is_voter) as i32,
        term: m.current_term,
        leader: m.current_leader.unwrap_or(0),
        has_leader: m.current_leader.is_some(),
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        membership: Some(wire::membership_to_pb(m.membership_config.membership())),
        memory_bytes: memory as u64,
        records: records as u64,
        mode: r.mode as i32,
        snapshot_bytes: p.bytes.load(Ordering::Relaxed),
        snapshot_records: p.records.load(Ordering::Relaxed),
        snapshots_installed: p.installed.load(Ordering::Relaxed),
        requests: r.requests.load(Ordering::Relaxed),
        requests_per_s: 0.0,
    }
}

#[tonic::async_trait]
impl pb::node_admin_server::NodeAdmin for AdminService {
    async fn open_replica(
        &self,
        req: Request<pb::OpenReplicaRequest>,
    ) -> Result<Response<pb::OpenReplicaResponse>, Status> {
        let req = req.into_inner();
        let mode = pb::LogMode::try_from(req.mode).map_err(|_| Status::invalid_argument("unknown log mode"))?;
        let initial = match req.initial {
            None => None,
            Some(m) => {
                let m = wire::membership_from_pb(m)?;
                let voters: BTreeMap<_, _> = m.nodes().map(|(id, n)| (*id, n.clone())).collect();
                Some(voters)
            }
        };
        self.host.open(req.partition, req.replica, mode, initial).await?;
        Ok(Response::new(pb::OpenReplicaResponse {}))
    }

    async fn close_replica(
        &self,
        req: Request<pb::CloseReplicaRequest>,
    ) -> Result<Response<pb::CloseReplicaResponse>, Status> {
        let req = req.into_inner();
        if req.replica != 0 {
            match self.host.get(req.partition) {
                Some(r) if r.id != req.replica => {
                    return Err(Status::not_found(format!(
                        "partition {} is hosted here as replica {}, not {}",
                        req.partition, r.id, req.replica
                    )));
                }
                _ => {}
            }
        }
        self.host.close(req.partition).await?;
        Ok(Response::new(pb::CloseReplicaResponse {}))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = req.into_inner();
        let r = replica_of(&self.host, req.partition)?;
        let resp = r
            .raft
            .add_learner(req.replica, wire::node_of(&req.addr), req.blocking)
            .await
            .map_err(|e| write_error(req.partition, e))?;
        Ok(Response::new(pb::MembershipResponse { log_id: Some(wire::log_id_to_pb(&resp.log_id)) }))
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let req = req.into_inner();
        let r = replica_of(&self.host, req.partition)?;
        let voters: std::collections::BTreeSet<u64> = req.voters.into_iter().collect();
        // Without `retain`, the group keeps exactly `voters`: learners that are neither
        // current nor new voters (a move's target given a fresh id after its node restarted,
        // or one a move abandoned) leave too, or the primary would replicate to them forever.
        // Current voters are left to openraft, which drops them once the joint change ends.
        let leftovers: std::collections::BTreeSet<u64> = if req.retain {
            Default::default()
        } else {
            let m = r.raft.metrics().borrow_watched().clone();
            let members = m.membership_config.membership();
            let now: std::collections::BTreeSet<u64> = members.voter_ids().collect();
            members.nodes().map(|(id, _)| *id).filter(|id| !voters.contains(id) && !now.contains(id)).collect()
        };
        let change = if leftovers.is_empty() {
            openraft::ChangeMembers::ReplaceAllVoters(voters)
        } else {
            tracing::info!(partition = req.partition, learners = ?leftovers, "leftover learners leave the group");
            openraft::ChangeMembers::Batch(vec![
                openraft::ChangeMembers::ReplaceAllVoters(voters),
                openraft::ChangeMembers::RemoveNodes(leftovers),
            ])
        };
        let resp = r.raft.change_membership(change, req.retain).await.map_err(|e| write_error(req.partition, e))?;
        Ok(Response::new(pb::MembershipResponse { log_id: Some(wire::log_id_to_pb(&resp.log_id)) }))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderToRequest>,
    ) -> Result<Response<pb::TransferLeaderToResponse>, Status> {
        let req = req.into_inner();
        let r = replica_of(&self.host, req.partition)?;
        r.raft.trigger().transfer_leader(req.to).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::TransferLeaderToResponse {}))
    }

    async fn status(&self, req: Request<pb::ReplicaStatusRequest>) -> Result<Response<pb::ReplicaStatus>, Status> {
        let r = replica_of(&self.host, req.into_inner().partition)?;
        Ok(Response::new(status_of(&r)))
    }

    async fn restart(&self, _req: Request<pb::RestartRequest>) -> Result<Response<pb::RestartResponse>, Status> {
        let exe = std::env::current_exe().map_err(|e| Status::internal(format!("finding this binary: {e}")))?;
        tracing::warn!(exe = %exe.display(), "restart requested: re-executing the node binary");
        tokio::spawn(async move {
            // Let the answer leave first.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).exec();
            tracing::error!(error = %err, "re-executing the node binary failed; exiting");
            std::process::exit(1);
        });
        Ok(Response::new(pb::RestartResponse { incarnation: self.incarnation }))
    }

    async fn cut_links(&self, req: Request<pb::CutLinksRequest>) -> Result<Response<pb::CutLinksResponse>, Status> {
        let addrs = req.into_inner().addrs;
        tracing::warn!(?addrs, "fault injection: links cut (an empty list restores them)");
        self.host.peers().cut_links(addrs);
        Ok(Response::new(pb::CutLinksResponse {}))
    }

    async fn list(&self, _req: Request<pb::ListReplicasRequest>) -> Result<Response<pb::ListReplicasResponse>, Status> {
        Ok(Response::new(pb::ListReplicasResponse {
            replicas: self.host.list().iter().map(|r| status_of(r)).collect(),
        }))
    }
}
