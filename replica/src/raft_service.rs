//! The raft transport's receiving side: the `Raft` gRPC service, which routes each message
//! to the replica it addresses on this node ([`Host::target`]).
//!
//! A snapshot stream is checked chunk by chunk ([`ChunkCheck`]) while a decoder thread
//! bulk-builds a fresh engine from the bytes ([`ChunkReader`]); only a stream whose totals
//! and end marker check out is handed to openraft to install. The sending side is
//! [`crate::transport`], which this module uses and which never uses it.

use std::io::{self, BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use openraft::raft::TransferLeaderRequest;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::v1 as pb;

use crate::host::Host;
use crate::snapshot;
use crate::state_machine::Image;
use crate::transport::{ChunkCheck, PARTITION_KEY, REPLICA_KEY, SNAPSHOT_CHUNK_WAIT, SNAPSHOT_CHUNKS_IN_FLIGHT};
use crate::wire;

/// Feeds received chunk bytes to the decoder thread as a [`BufRead`].
struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
    /// Every chunk is queued before decoding starts (a seeded simulation decodes on the
    /// runtime's own thread): never wait.
    inline: bool,
}

impl ChunkReader {
    /// Waits for the next non-empty chunk; false once the stream has ended.
    fn fill(&mut self) -> bool {
        while self.cur.is_empty() {
            let next = if self.inline { self.rx.try_recv().ok() } else { self.rx.blocking_recv() };
            match next {
                Some(b) => self.cur = b,
                None => return false,
            }
        }
        true
    }
}

/// Where a received snapshot is decoded: on a blocking thread as its chunks arrive, or, in
/// a seeded simulation, on this task once all have arrived.
enum Decoding<T> {
    Thread(tokio::task::JoinHandle<T>),
    Inline(ChunkReader),
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.fill() {
            return Ok(0);
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// The decoder reads straight from the received chunks, with no copy into a buffer.
impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.fill();
        Ok(&self.cur)
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.cur.len());
        bytes::Buf::advance(&mut self.cur, n);
    }
}

/// The server side of the raft service: routes each message to the addressed replica.
#[derive(Clone, Debug)]
pub struct RaftService {
    host: Arc<Host>,
}

impl RaftService {
    /// Serves the replicas of `host`.
    pub fn new(host: Arc<Host>) -> Self {
        RaftService { host }
    }

    /// As a tonic service with the configured message-size limits.
    pub fn into_server(self) -> pb::raft_server::RaftServer<Self> {
        let max = self.host.peers().config().max_message_bytes;
        pb::raft_server::RaftServer::new(self).max_decoding_message_size(max).max_encoding_message_size(max)
    }
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("replica stopped: {e}"))
}

fn target_from_metadata(m: &tonic::metadata::MetadataMap) -> Result<pb::Target, Status> {
    let num = |key: &str| -> Result<u64, Status> {
        m.get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Status::invalid_argument(format!("append stream without a numeric {key} header")))
    };
    Ok(pb::Target { partition: num(PARTITION_KEY)?, replica: num(REPLICA_KEY)? })
}

/// Answers of a pipelined append stream.
pub type AppendAnswers = std::pin::Pin<Box<dyn Stream<Item = Result<pb::StreamAppendResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    type StreamAppendStream = AppendAnswers;

    async fn stream_append(
        &self,
        req: Request<Streaming<pb::AppendRequest>>,
    ) -> Result<Response<AppendAnswers>, Status> {
        let target = target_from_metadata(req.metadata())?;
        let replica = self.host.target(Some(target))?;
        // The input ends at the first transport error, undecodable request or request
        // for another target; the answers then end after those already accepted.
        let input = req
            .into_inner()
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok()))
            .take_while(move |r| {
                let ok = r.target == Some(target);
                if !ok {
                    tracing::warn!(?target, got = ?r.target, "append stream switched targets; ending it");
                }
                std::future::ready(ok)
            })
            .map(wire::append_from_pb)
            .inspect({
                let woken = replica.clone();
                move |r| {
                    if r.as_ref().is_ok_and(|r| !r.entries.is_empty()) {
                        woken.quiet.heard(&woken.raft, true);
                    }
                }
            })
            .take_while(|r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "undecodable append on a stream; ending it");
                }
                std::future::ready(r.is_ok())
            })
            .filter_map(|r| std::future::ready(r.ok()));
        let woken = replica.clone();
        let open = StreamCount::open(&self.host.append_streams);
        let answers = replica.raft.stream_append(input).map(move |r| {
            let _open = &open;
            woken.quiet.heard(&woken.raft, false);
            match r {
                Ok(result) => Ok(wire::stream_append_result_to_pb(&result)),
                Err(f) => Err(fatal(f)),
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn append(&self, req: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let req = req.into_inner();
        let replica = self.host.target(req.target)?;
        let rpc = wire::append_from_pb(req)?;
        let news = !rpc.entries.is_empty();
        replica.quiet.heard(&replica.raft, news);
        let resp = replica.raft.append_entries(rpc).await;
        // Again after: a quiesce that landed while the message was handled is undone.
        replica.quiet.heard(&replica.raft, news);
        Ok(Response::new(wire::append_resp_to_pb(&resp.map_err(fatal)?)))
    }

    async fn vote(&self, req: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        let req = req.into_inner();
        let replica = self.host.target(req.target)?;
        let pre_vote = req.pre_vote;
        let rpc = wire::vote_req_from_pb(req)?;
        replica.quiet.heard(&replica.raft, !pre_vote);
        let resp = if pre_vote { replica.raft.pre_vote(rpc).await } else { replica.raft.vote(rpc).await };
        replica.quiet.heard(&replica.raft, !pre_vote);
        Ok(Response::new(wire::vote_resp_to_pb(&resp.map_err(fatal)?)))
    }

    /// A snapshot received and installed: its span names the target replica once the
    /// first chunk says which.
    #[tracing::instrument(level = "info", name = "snapshot_receive", skip_all, fields(target = tracing::field::Empty))]
    async fn snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let mut stream = req.into_inner();
        let first = first_chunk(&mut stream).await?;
        let started = Instant::now();
        let stats = self.host.peers().snapshots().clone();
        let transfer = stats.start(crate::stats::Direction::Receive);
        let first_target = first.target;
        tracing::Span::current().record("target", tracing::field::debug(&first_target));
        let replica = self.host.target(first.target)?;
        let vote = wire::vote_from_pb(first.vote)?;
        let meta = wire::snapshot_meta_from_pb(wire::need(first.meta.clone(), "snapshot meta")?)?;
        let limits = self.host.limits().clone();
        let (store, sessions, bytes, received_s) =
            decode_stream(first, &mut stream, limits, replica.sm.progress_handle(), |n| stats.received_bytes(n as u64))
                .await?;
        let built_s = started.elapsed().as_secs_f64();
        let snapshot = openraft::Snapshot { meta, snapshot: Image::Built { store: Box::new(store), sessions } };
        replica.quiet.heard(&replica.raft, true);
        let resp = replica.raft.install_full_snapshot(vote, snapshot).await.map_err(fatal)?;
        transfer.ok();
        tracing::info!(
            target = ?first_target,
            bytes,
            received_s,
            built_s,
            installed_s = started.elapsed().as_secs_f64(),
            "snapshot received"
        );
        Ok(Response::new(pb::SnapshotResponse { vote: Some(wire::vote_to_pb(&resp.vote)) }))
    }

    async fn ping(&self, req: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(self.host.ping(req.into_inner())))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let req = req.into_inner();
        let replica = self.host.target(req.target)?;
        let from = wire::vote_from_pb(req.from_leader)?;
        let last = wire::opt_log_id_from_pb(req.last_log_id)?;
        let r = TransferLeaderRequest::new(from, req.to, last);
        replica.quiet.heard(&replica.raft, true);
        match replica.raft.handle_transfer_leader(r).await.map_err(fatal)? {
            Ok(()) => Ok(Response::new(pb::TransferLeaderResponse {})),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
}

/// One open append stream, counted in the host's gauge until the stream is dropped.
struct StreamCount(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl StreamCount {
    fn open(count: &std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        StreamCount(count.clone())
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first chunk of a snapshot stream (it names the target, the vote and the meta).
pub async fn first_chunk(stream: &mut Streaming<pb::SnapshotChunk>) -> Result<pb::SnapshotChunk, Status> {
    next_chunk(stream).await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))
}

/// The next chunk on `stream`, None once the sender has closed it, waiting at most
/// [`SNAPSHOT_CHUNK_WAIT`].
async fn next_chunk(stream: &mut Streaming<pb::SnapshotChunk>) -> Result<Option<pb::SnapshotChunk>, Status> {
    tokio::time::timeout(SNAPSHOT_CHUNK_WAIT, stream.message())
        .await
        .map_err(|_| Status::deadline_exceeded(format!("no snapshot chunk in {SNAPSHOT_CHUNK_WAIT:?}")))?
}

/// Receives a snapshot stream from `first` on, checking every chunk ([`ChunkCheck`]) while
/// a decoder thread builds the engine from the bytes ([`ChunkReader`]); `on_chunk` hears
/// each chunk's size. Answers the built state, the bytes received and the seconds the
/// receiving took; only a stream whose totals and end marker check out is answered.
pub async fn decode_stream(
    first: pb::SnapshotChunk,
    stream: &mut Streaming<pb::SnapshotChunk>,
    limits: weft_store::Limits,
    progress: Arc<snapshot::Progress>,
    mut on_chunk: impl FnMut(usize),
) -> Result<(weft_store::Store, crate::sessions::Sessions, u64, f64), Status> {
    let started = Instant::now();
    progress.bytes.store(0, Ordering::Relaxed);
    progress.records.store(0, Ordering::Relaxed);
    let inline = weft_security::rng::seeded();
    let capacity = if inline { crate::transport::SIMULATED_CHUNKS_MAX } else { SNAPSHOT_CHUNKS_IN_FLIGHT };
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let reader = ChunkReader { rx, cur: Bytes::new(), inline };
    let decoder = if inline {
        Decoding::Inline(reader)
    } else {
        let (limits, progress) = (limits.clone(), progress.clone());
        Decoding::Thread(tokio::task::spawn_blocking(move || snapshot::decode(reader, limits, &progress)))
    };
    let mut check = ChunkCheck::default();
    let mut chunk = Some(first);
    let checked: Result<(), Status> = async {
        while let Some(c) = chunk.take() {
            let done = check.check(&c).map_err(Status::data_loss)?;
            on_chunk(c.data.len());
            progress.bytes.store(check.bytes(), Ordering::Relaxed);
            // The decoder thread may have stopped on a defect; that is then reported
            // through its result below.
            let sent = tx.send(c.data).await.is_ok();
            if !sent || done {
                break;
            }
            chunk = next_chunk(stream).await?;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let received_s = started.elapsed().as_secs_f64();
    let decoded = match decoder {
        Decoding::Thread(h) => h.await.map_err(|e| Status::internal(format!("snapshot decoder: {e}")))?,
        Decoding::Inline(reader) => snapshot::decode(reader, limits, &progress),
    };
    checked?;
    // A decoder that stopped early explains a stream that stopped early.
    let (store, sessions) = decoded.map_err(|e| Status::data_loss(e.to_string()))?;
    if !check.is_done() {
        return Err(Status::data_loss("snapshot stream ended before its last chunk"));
    }
    Ok((store, sessions, check.bytes(), received_s))
}

/// The next of the byte streams a sender sends one after another on `stream`, after a
/// snapshot (a restored chain's changes files): its first chunk's meta and its bytes, every
/// chunk checked as a snapshot's are ([`ChunkCheck`]). None once the sender has closed the
/// stream; a stream longer than `max` bytes is refused.
pub async fn next_bytes(
    stream: &mut Streaming<pb::SnapshotChunk>,
    max: u64,
) -> Result<Option<(Option<pb::SnapshotMeta>, Vec<u8>)>, Status> {
    let Some(first) = next_chunk(stream).await? else { return Ok(None) };
    let meta = first.meta.clone();
    let (mut check, mut data, mut chunk) = (ChunkCheck::default(), Vec::new(), first);
    loop {
        let done = check.check(&chunk).map_err(Status::data_loss)?;
        if check.bytes() > max {
            return Err(Status::invalid_argument(format!("a stream of more than {max} bytes")));
        }
        data.extend_from_slice(&chunk.data);
        if done {
            return Ok(Some((meta, data)));
        }
        chunk = next_chunk(stream).await?.ok_or_else(|| Status::data_loss("a stream ended before its last chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Progress;
    use crate::transport::ChunkWriter;
    use weft_store::{Op, Store};

    /// The Avro writer issues single `write` calls and ignores short counts, so the chunk
    /// writer must consume everything: a stream cut into many small chunks, checked and
    /// reassembled by a `ChunkReader`, decodes to the same store.
    #[test]
    fn multi_chunk_streams_reassemble_exactly() {
        let mut store = Store::default();
        store.create_table("t").unwrap();
        for i in 0..2_000u32 {
            store.apply(&[Op::put("t", i.to_be_bytes().to_vec(), vec![i as u8; 50])]).unwrap();
        }
        for chunk_bytes in [1, 7, 1000, 4096] {
            let (tx, mut rx) = mpsc::channel(1 << 20);
            let mut w = ChunkWriter::new(tx, pb::SnapshotChunk::default(), chunk_bytes);
            snapshot::encode(&store.snapshot(), &Default::default(), &mut w).unwrap();
            w.finish().unwrap();
            let (dtx, drx) = mpsc::channel(1 << 20);
            let (mut crc, mut total, mut chunks) = (0u32, 0u64, 0);
            while let Ok(c) = rx.try_recv() {
                assert_eq!(crc32c::crc32c(&c.data), c.crc32c);
                assert!(c.data.len() <= chunk_bytes);
                crc = crc32c::crc32c_append(crc, &c.data);
                total += c.data.len() as u64;
                chunks += 1;
                if c.done {
                    assert_eq!((c.total_crc32c, c.total_bytes), (crc, total));
                }
                dtx.try_send(c.data).unwrap();
            }
            drop(dtx);
            assert!(chunk_bytes > 1000 || chunks > 10, "expected many chunks at {chunk_bytes} bytes");
            let (back, _) = snapshot::decode(
                ChunkReader { rx: drx, cur: Bytes::new(), inline: false },
                Default::default(),
                &Progress::default(),
            )
            .unwrap();
            assert_eq!(back.count("t").unwrap(), 2_000);
            assert_eq!(back.get("t", &7u32.to_be_bytes()).unwrap().map(|r| r.value().to_vec()), Some(vec![7; 50]));
        }
    }
}
