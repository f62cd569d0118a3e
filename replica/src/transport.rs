//! The raft transport over gRPC.
//!
//! Sending side: [`Peers`] keeps one lazily connected HTTP/2 channel per peer node address;
//! every group's traffic to that node shares it (HTTP/2 multiplexes the concurrent calls).
//! openraft asks [`GroupNetworkFactory`] for a [`Link`] per (group, target replica); a link
//! is the shared channel plus the target's `(partition, replica)` address.
//!
//! Snapshots stream: an encoder thread walks the O(1) engine snapshot and writes the Avro
//! stream into bounded chunks, each sent as soon as it is full (a bounded channel of
//! [`SNAPSHOT_CHUNKS_IN_FLIGHT`] applies backpressure), every chunk with its CRC32C and the
//! last with the CRC32C and length of the whole stream. Receiving side (`raft_service`):
//! `RaftService::snapshot` checks each chunk's CRC, feeds the bytes to a decoder thread
//! that bulk-builds a fresh engine, checks the totals and the stream's end marker, and only
//! then hands the built engine to openraft to install. Any defect rejects the stream and the
//! replica keeps its previous state.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkFactory};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::{Request, Status};
use weft_proto::v1 as pb;
use weft_proto::v1::raft_client::RaftClient;
use weft_security::AuthChannel;

use crate::append_calls;
use crate::snapshot;
use crate::state_machine::Image;
use crate::types::{PartitionId, ReplicaId, TypeConfig, Vote};
use crate::wire::{self, WireError};

/// Metadata naming the target of a pipelined append stream.
pub(crate) const PARTITION_KEY: &str = "weft-partition";
pub(crate) const REPLICA_KEY: &str = "weft-replica";

/// Snapshot chunks buffered between the encoder and the network, per stream.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 8;

// The largest gRPC message a node sends or accepts, on every service; appends carrying
// many entries are cut into messages of `APPEND_MESSAGE_BYTES`, so no valid message comes
// near it.
use weft_proto::MAX_MESSAGE_BYTES;

/// Entry bytes past which a pipelined append is cut into several messages (a single
/// larger entry travels alone).
pub const APPEND_MESSAGE_BYTES: usize = 16 << 20;

/// Longest wait for the next chunk of a snapshot stream being received: a sender that
/// stops sending does not hold the receiver's decoder and memory.
pub const SNAPSHOT_CHUNK_WAIT: Duration = Duration::from_secs(30);

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Bytes of Avro stream per snapshot chunk message.
    pub snapshot_chunk_bytes: usize,
    /// Largest gRPC message this node sends or accepts on the raft service.
    pub max_message_bytes: usize,
    /// Connect timeout to a peer.
    pub connect_timeout: Duration,
    /// TLS and identity for calls to peers (a node's own certificate).
    pub security: weft_security::ClientSecurity,
    /// Raft messages go through this in-memory router instead of gRPC (tests only; see
    /// [`crate::router`]).
    pub router: Option<crate::router::Seat>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            snapshot_chunk_bytes: 1 << 20,
            max_message_bytes: MAX_MESSAGE_BYTES,
            connect_timeout: Duration::from_secs(2),
            security: weft_security::ClientSecurity::insecure(),
            router: None,
        }
    }
}

#[derive(Debug)]
struct PeersInner {
    channels: weft_security::Channels,
    /// Addresses whose links fault injection has cut (see [`Peers::cut_links`]).
    cut: Mutex<std::collections::BTreeSet<String>>,
    config: TransportConfig,
    /// Snapshots sent from and installed on this node.
    snapshots: crate::stats::SnapshotStats,
}

/// One channel per peer node, shared by every group.
#[derive(Clone, Debug)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

impl Peers {
    /// No channels yet; they connect lazily on first use.
    pub fn new(config: TransportConfig) -> Self {
        let channels = weft_security::Channels::new(config.security.clone(), config.connect_timeout);
        Peers {
            inner: Arc::new(PeersInner {
                channels,
                cut: Mutex::default(),
                config,
                snapshots: crate::stats::SnapshotStats::default(),
            }),
        }
    }

    /// Snapshots sent from and installed on this node.
    pub fn snapshots(&self) -> &crate::stats::SnapshotStats {
        &self.inner.snapshots
    }

    /// The transport settings.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Fault injection: from now on every call to these addresses fails as unreachable
    /// and every open append stream to them ends; an empty list restores every link.
    /// A one-way cut; a partition cuts both sides.
    pub fn cut_links(&self, addrs: impl IntoIterator<Item = String>) {
        *self.inner.cut.lock() = addrs.into_iter().collect();
    }

    /// Whether fault injection has cut the link to `addr`.
    pub fn is_cut(&self, addr: &str) -> bool {
        self.inner.cut.lock().contains(addr)
    }

    /// The shared channel to `addr` (`host:port`), secured as the transport says
    /// ([`weft_security::Channels`]), unless fault injection cut the link.
    pub fn channel(&self, addr: &str) -> Result<AuthChannel, Status> {
        if self.is_cut(addr) {
            return Err(Status::unavailable(format!("link to {addr} cut by fault injection")));
        }
        self.inner.channels.channel(addr)
    }

    /// One liveness ping to the node at `addr` (`crate::quiesce`).
    pub(crate) async fn ping(&self, addr: &str, req: pb::PingRequest) -> Result<pb::PingResponse, Status> {
        Ok(self.raft_client(addr)?.ping(req).await?.into_inner())
    }

    fn raft_client(&self, addr: &str) -> Result<RaftClient<AuthChannel>, Status> {
        let max = self.inner.config.max_message_bytes;
        Ok(RaftClient::new(self.channel(addr)?).max_decoding_message_size(max).max_encoding_message_size(max))
    }
}

/// openraft's network factory for one group.
#[derive(Clone, Debug)]
pub struct GroupNetworkFactory {
    peers: Peers,
    partition: PartitionId,
}

impl GroupNetworkFactory {
    /// The factory for `partition`'s group.
    pub fn new(peers: Peers, partition: PartitionId) -> Self {
        GroupNetworkFactory { peers, partition }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = Link;

    async fn new_client(&mut self, target: ReplicaId, node: &BasicNode) -> Link {
        Link {
            peers: self.peers.clone(),
            addr: node.addr.clone(),
            target: pb::Target { partition: self.partition, replica: target },
            backoff: Arc::default(),
        }
    }
}

/// The network to one target replica of one group.
#[derive(Debug)]
pub struct Link {
    peers: Peers,
    addr: String,
    target: pb::Target,
    /// When the next append session may start after failed ones.
    backoff: Arc<Backoff>,
}

/// How long a new append session waits after `failures` failed ones in a row: nothing
/// after a success, then 10 ms doubling to 500 ms. openraft's own backoff sleeps inside
/// the request stream, which a session that cannot connect never polls; without this, a
/// leader retries a dead follower in a tight loop.
fn append_backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        f => Duration::from_millis(10u64.saturating_mul(1 << (f - 1).min(6)).min(500)),
    }
}

/// Append sessions that could not be established in a row (connection refused, replica not
/// hosted there, link cut) and the instant before which no new one starts.
///
/// The window is fixed when a session fails, not when the next one asks: a caller whose
/// own deadline ends inside the window (openraft gives each heartbeat one heartbeat
/// interval) is dropped while it waits and changes nothing, and the first caller after the
/// window goes at once. A plain sleep before each attempt would instead let heartbeats that
/// time out while sleeping never attempt again: a leader then stops hearing from a follower
/// whose link healed, its lease lapses, and with one other voter down it refuses every
/// write while that follower, still hearing heartbeats, refuses to elect anyone else.
#[derive(Debug, Default)]
struct Backoff {
    state: Mutex<(u32, Option<Instant>)>,
}

impl Backoff {
    /// How long until a new session may start.
    fn wait(&self, now: Instant) -> Duration {
        self.state.lock().1.map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
    }

    /// A session failed to start at `now`.
    fn failed(&self, now: Instant) {
        let mut st = self.state.lock();
        st.0 = st.0.saturating_add(1);
        st.1 = Some(now + append_backoff(st.0));
    }

    /// A session started: the path works.
    fn succeeded(&self) {
        *self.state.lock() = (0, None);
    }
}

fn rpc_error(s: Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::NotFound | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

fn wire_rpc_error(e: WireError) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&e))
}

fn streaming_error(s: Status) -> StreamingError<TypeConfig> {
    match rpc_error(s) {
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        other => StreamingError::Network(NetworkError::new(&other)),
    }
}

/// One result per request from the answers to its parts: the first failure, else the
/// last part's result (the whole request's entries accepted). A stream that ends inside a
/// request's parts ends with that request's failure if one came, else with nothing (the
/// leader sees a broken stream and sends again, as for any stream that ends early).
fn merge_parts<S>(
    answers: S,
    parts: Arc<Mutex<std::collections::VecDeque<usize>>>,
) -> impl Stream<Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>
where
    S: Stream<Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> + Unpin,
{
    futures::stream::unfold((answers, parts), |(mut answers, parts)| async move {
        // The count is read once the request's first answer is in: by then the request
        // has been taken from openraft's stream and its count entered.
        let mut merged = answers.next().await?;
        let n = parts.lock().pop_front().unwrap_or(1).max(1);
        for _ in 1..n {
            match answers.next().await {
                Some(r) => {
                    if !matches!(merged, Err(_) | Ok(Err(_))) {
                        merged = r;
                    }
                }
                None => {
                    return matches!(merged, Err(_) | Ok(Err(_))).then_some((merged, (answers, parts)));
                }
            }
        }
        Some((merged, (answers, parts)))
    })
}

fn with_ttl<T>(msg: T, option: &RPCOption) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

impl Link {
    fn client(&self) -> Result<RaftClient<AuthChannel>, Status> {
        self.peers.raft_client(&self.addr)
    }

    async fn vote_rpc(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        pre_vote: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let msg = wire::vote_req_to_pb(self.target, &rpc, pre_vote);
        let resp = self.client().map_err(rpc_error)?.vote(with_ttl(msg, &option)).await.map_err(rpc_error)?;
        wire::vote_resp_from_pb(resp.into_inner()).map_err(wire_rpc_error)
    }
}

impl RaftNetworkV2<TypeConfig> for Link {
    type SnapshotData = Image;

    /// Pipelined: one gRPC stream per replication session (and per heartbeat); requests go
    /// out as openraft produces them and answers come back in order. A session's stream is
    /// carried by successive calls, each closed when idle ([`append_calls`]): a quiesced
    /// group keeps no HTTP/2 stream open.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let target = self.target;
        let backoff = self.backoff.clone();
        Box::pin(async move {
            let wait = backoff.wait(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            // A link cut while the stream is open ends it in both directions.
            let (peers, addr) = (self.peers.clone(), self.addr.clone());
            let open = {
                let peers = peers.clone();
                move || !peers.is_cut(&addr)
            };
            let still_open = open.clone();
            // A request whose entries pass [`APPEND_MESSAGE_BYTES`] goes as several messages;
            // `parts` says how many answers make up each request's one result.
            let parts: Arc<Mutex<std::collections::VecDeque<usize>>> = Arc::default();
            let counted = parts.clone();
            let input = input.take_while(move |_| std::future::ready(open())).flat_map(move |r| {
                let msgs = wire::split_append(target, &r, APPEND_MESSAGE_BYTES);
                counted.lock().push_back(msgs.len());
                futures::stream::iter(msgs)
            });
            // The stream's calls (see `append_calls`): the first is opened here, so a target
            // that cannot be reached fails the session at once; later ones when a message
            // follows an idle close.
            let addr = self.addr.clone();
            let call = move |body: mpsc::Receiver<pb::AppendRequest>| {
                let (peers, addr, failed) = (peers.clone(), addr.clone(), backoff.clone());
                async move {
                    let mut client = peers.raft_client(&addr)?;
                    let mut req = Request::new(tokio_stream::wrappers::ReceiverStream::new(body));
                    let md = req.metadata_mut();
                    md.insert(PARTITION_KEY, target.partition.into());
                    md.insert(REPLICA_KEY, target.replica.into());
                    match client.stream_append(req).await {
                        Ok(answers) => {
                            // The target accepted the stream: the path works, whatever the
                            // answers say.
                            failed.succeeded();
                            Ok(answers.into_inner().boxed())
                        }
                        Err(s) => {
                            failed.failed(Instant::now());
                            Err(s)
                        }
                    }
                }
            };
            let (sender, body) = append_calls::queue();
            let first = call(body).await.map_err(|s| RPCError::Unreachable(Unreachable::new(&s)))?;
            let answers = append_calls::carry(
                Box::pin(input),
                append_calls::Call::new(sender, first),
                call,
                append_calls::IDLE_CLOSE,
            );
            let answers =
                Box::pin(answers).take_while(move |_| std::future::ready(still_open())).map(move |r| match r {
                    Ok(a) => wire::stream_append_result_from_pb(a).map_err(wire_rpc_error),
                    Err(s) => Err(rpc_error(s)),
                });
            Ok(merge_parts(answers, parts).boxed())
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let msg = wire::append_to_pb(self.target, &rpc);
        let resp = self.client().map_err(rpc_error)?.append(with_ttl(msg, &option)).await.map_err(rpc_error)?;
        wire::append_resp_from_pb(resp.into_inner()).map_err(wire_rpc_error)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_rpc(rpc, option, true).await
    }

    #[tracing::instrument(level = "info", name = "snapshot_send", skip_all, fields(target = ?self.target))]
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, Image>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let started = Instant::now();
        let stats = self.peers.snapshots().clone();
        let transfer = stats.start(crate::stats::Direction::Send);
        let Image::Frozen { store, sessions } = snapshot.snapshot else {
            let e = io::Error::other("only a frozen engine snapshot can be sent");
            return Err(StreamingError::Network(NetworkError::new(&e)));
        };
        let header = pb::SnapshotChunk {
            target: Some(self.target),
            vote: Some(wire::vote_to_pb(&vote)),
            meta: Some(wire::snapshot_meta_to_pb(&snapshot.meta)),
            ..Default::default()
        };
        let (rx, encoder) = stream_snapshot(header, store, sessions, self.peers.config().snapshot_chunk_bytes);
        let mut client = self.client().map_err(streaming_error)?;
        let chunks = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), move |c| {
            stats.sent_bytes(c.data.len());
            c
        });
        let call = client.snapshot(Request::new(chunks));
        let resp = tokio::select! {
            r = call => r.map_err(|s| {
                tracing::warn!(target = ?self.target, status = %s, "snapshot stream failed");
                streaming_error(s)
            })?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        match encoder.await {
            Ok(Ok(counts)) => {
                tracing::info!(target = ?self.target, ?counts, sent_s = started.elapsed().as_secs_f64(), "snapshot sent")
            }
            Ok(Err(e)) => return Err(StreamingError::Network(NetworkError::new(&e))),
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        }
        let vote =
            wire::vote_from_pb(resp.into_inner().vote).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        transfer.ok();
        Ok(SnapshotResponse::new(vote))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let msg = pb::TransferLeaderRequest {
            target: Some(self.target),
            from_leader: Some(wire::vote_to_pb(req.from_leader())),
            to: *req.to_node_id(),
            last_log_id: wire::opt_log_id_to_pb(req.last_log_id()),
        };
        self.client().map_err(rpc_error)?.transfer_leader(with_ttl(msg, &option)).await.map_err(rpc_error)?;
        Ok(Ok(()))
    }
}

/// Encodes `store` and `sessions` on a blocking thread into checksummed chunks of at most
/// `chunk_bytes` (the first carrying `header`'s fields, the last `done` with the totals), at
/// most `SNAPSHOT_CHUNKS_IN_FLIGHT` (8) ahead of the reader. Snapshot transfers and backups
/// both send this stream; dropping the receiver stops the encoder.
pub fn stream_snapshot(
    header: pb::SnapshotChunk,
    store: weft_store::StoreSnapshot,
    sessions: crate::sessions::Sessions,
    chunk_bytes: usize,
) -> (mpsc::Receiver<pb::SnapshotChunk>, tokio::task::JoinHandle<Result<snapshot::Counts, crate::error::Error>>) {
    if weft_security::rng::seeded() {
        // A seeded simulation: encoded here and now, every chunk queued, so the stream is
        // ready at the same simulated moment in every run.
        let (tx, rx) = mpsc::channel(SIMULATED_CHUNKS_MAX);
        let mut out = ChunkWriter::new(tx, header, chunk_bytes);
        out.inline = true;
        let encoded = snapshot::encode(&store, &sessions, &mut out).and_then(|counts| {
            out.finish()?;
            Ok(counts)
        });
        return (rx, tokio::spawn(async move { encoded }));
    }
    let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_IN_FLIGHT);
    let encoder = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter::new(tx, header, chunk_bytes);
        let counts = snapshot::encode(&store, &sessions, &mut out)?;
        out.finish()?;
        Ok(counts)
    });
    (rx, encoder)
}

/// Cuts `data` (already encoded, such as an incremental backup's changes file) into the
/// same checksummed chunks as [`stream_snapshot`], the first carrying `header`'s fields.
pub fn stream_bytes(header: pb::SnapshotChunk, data: &[u8], chunk_bytes: usize) -> mpsc::Receiver<pb::SnapshotChunk> {
    let chunks = data.len() / chunk_bytes.max(1) + 2;
    let (tx, rx) = mpsc::channel(chunks);
    let mut out = ChunkWriter::new(tx, header, chunk_bytes);
    out.inline = true;
    // The channel holds every chunk, so queueing never fails while `rx` lives.
    let _ = out.write_all(data).and_then(|()| out.finish());
    rx
}

/// Most chunks one snapshot stream holds in a seeded simulation, where the whole stream is
/// queued at once (simulated partitions are small).
pub(crate) const SIMULATED_CHUNKS_MAX: usize = 1 << 16;

/// The checks a receiver of a chunked snapshot stream makes on each chunk: its CRC32C, and
/// on the last one the CRC32C and length of the whole stream.
#[derive(Debug, Default)]
pub struct ChunkCheck {
    crc: u32,
    total: u64,
    done: bool,
}

impl ChunkCheck {
    /// Checks the next chunk; returns whether it was the last. A chunk after the last is
    /// an error too.
    pub fn check(&mut self, c: &pb::SnapshotChunk) -> Result<bool, String> {
        if self.done {
            return Err("a chunk after the last one".into());
        }
        if crc32c::crc32c(&c.data) != c.crc32c {
            return Err(format!("snapshot chunk at byte {} fails its CRC32C", self.total));
        }
        self.crc = crc32c::crc32c_append(self.crc, &c.data);
        self.total += c.data.len() as u64;
        if c.done {
            if c.total_crc32c != self.crc || c.total_bytes != self.total {
                return Err(format!(
                    "snapshot stream totals disagree: {} bytes crc {:#x}, sender says {} bytes crc {:#x}",
                    self.total, self.crc, c.total_bytes, c.total_crc32c
                ));
            }
            self.done = true;
        }
        Ok(c.done)
    }

    /// Bytes checked so far.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// CRC32C of the bytes checked so far.
    pub fn crc32c(&self) -> u32 {
        self.crc
    }

    /// Whether the last chunk has been checked.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Cuts the encoder's output into checksummed chunk messages and sends each when full.
pub(crate) struct ChunkWriter {
    tx: mpsc::Sender<pb::SnapshotChunk>,
    /// Queue without waiting (a seeded simulation encodes on the runtime's own thread).
    inline: bool,
    next: pb::SnapshotChunk,
    buf: Vec<u8>,
    chunk_bytes: usize,
    total_crc: u32,
    total_bytes: u64,
}

impl ChunkWriter {
    pub(crate) fn new(tx: mpsc::Sender<pb::SnapshotChunk>, header: pb::SnapshotChunk, chunk_bytes: usize) -> Self {
        let chunk_bytes = chunk_bytes.max(1);
        ChunkWriter {
            tx,
            inline: false,
            next: header,
            buf: Vec::with_capacity(chunk_bytes),
            chunk_bytes,
            total_crc: 0,
            total_bytes: 0,
        }
    }

    fn send(&mut self, done: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk_bytes));
        self.total_crc = crc32c::crc32c_append(self.total_crc, &data);
        self.total_bytes += data.len() as u64;
        let mut msg = std::mem::take(&mut self.next);
        msg.crc32c = crc32c::crc32c(&data);
        msg.data = Bytes::from(data);
        if done {
            msg.done = true;
            msg.total_crc32c = self.total_crc;
            msg.total_bytes = self.total_bytes;
        }
        let sent = if self.inline { self.tx.try_send(msg).is_ok() } else { self.tx.blocking_send(msg).is_ok() };
        if sent { Ok(()) } else { Err(io::Error::new(io::ErrorKind::BrokenPipe, "snapshot stream closed")) }
    }

    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.send(true)
    }
}

impl Write for ChunkWriter {
    /// Always consumes all of `data`.
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let len = data.len();
        while !data.is_empty() {
            let n = (self.chunk_bytes - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.chunk_bytes {
                self.send(false)?;
            }
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn append_backoff_grows_and_caps() {
        let d: Vec<u64> = (0..10).map(|f| append_backoff(f).as_millis() as u64).collect();
        assert_eq!(d, [0, 10, 20, 40, 80, 160, 320, 500, 500, 500]);
    }

    #[test]
    fn the_window_runs_from_the_last_failure_not_from_each_caller() {
        let b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.wait(t0), Duration::ZERO, "a fresh link never waits");
        for _ in 0..8 {
            b.failed(t0);
        }
        assert_eq!(b.wait(t0), Duration::from_millis(500));
        // Callers that give up while waiting change nothing: later ones wait less, and the
        // first after the window goes at once.
        assert_eq!(b.wait(t0 + Duration::from_millis(450)), Duration::from_millis(50));
        assert_eq!(b.wait(t0 + Duration::from_millis(500)), Duration::ZERO);
        assert_eq!(b.wait(t0 + Duration::from_secs(60)), Duration::ZERO);
        b.failed(t0 + Duration::from_millis(600));
        assert_eq!(b.wait(t0 + Duration::from_millis(600)), Duration::from_millis(500), "capped");
        b.succeeded();
        assert_eq!(b.wait(t0 + Duration::from_millis(600)), Duration::ZERO, "a success clears it");
        b.failed(t0);
        assert_eq!(b.wait(t0), Duration::from_millis(10), "and the count starts again");
    }
}

#[cfg(test)]
mod merge_tests {
    use openraft::raft::StreamAppendError;

    use super::*;
    use crate::types::{LeaderId, LogId};

    fn ok(i: u64) -> Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
        Ok(Ok(Some(LogId { leader_id: LeaderId { term: 1, node_id: 1 }, index: i })))
    }

    fn conflict(i: u64) -> Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
        Ok(Err(StreamAppendError::Conflict(LogId { leader_id: LeaderId { term: 1, node_id: 1 }, index: i })))
    }

    fn index(r: &Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>) -> (bool, u64) {
        match r {
            Ok(Ok(Some(l))) => (true, l.index),
            Ok(Err(StreamAppendError::Conflict(l))) => (false, l.index),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Each request's parts answer as one: the last part's acceptance, or the first failure.
    #[tokio::test]
    async fn the_answers_to_a_requests_parts_make_one_result() {
        let parts: Arc<Mutex<std::collections::VecDeque<usize>>> = Arc::new(Mutex::new([1, 3, 2, 2].into()));
        let answers = futures::stream::iter([ok(5), ok(7), ok(9), ok(12), conflict(13), ok(14), ok(15)]);
        let merged: Vec<_> = merge_parts(answers, parts).collect().await;
        let got: Vec<_> = merged.iter().map(index).collect();
        // The last request's second answer never came: its first part was accepted, which
        // proves nothing about the whole, so the stream just ends.
        assert_eq!(got, [(true, 5), (true, 12), (false, 13)]);
    }
}
