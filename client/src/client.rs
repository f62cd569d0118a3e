//! The Rust client.
//!
//! A [`Client`] knows some node endpoints. For each partition it caches the primary's
//! address; a not-primary answer carries the primary's address in its metadata and the
//! client follows it at once; an unreachable node or an answer without a hint makes it try
//! the next endpoint after a backoff (doubling from [`ClientConfig::backoff_min`] to
//! [`ClientConfig::backoff_max`]). Every call has an overall deadline.
//!
//! Writes carry a session `(client_id, seq)`: the seq is fixed before the first attempt and
//! reused by every retry, and the state machine answers a retried seq with its first result,
//! so a write retried after a timeout is applied at most once. A write whose every attempt
//! failed ambiguously ends in [`ClientError::Indeterminate`]: it may or may not have applied.
//!
//! Gets and writes travel on one `Session` stream per node ([`crate::session`]), many
//! calls to a message; scans and backups are unary calls. Both carry the same statuses,
//! so one retry loop serves both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::{Mutex, RwLock};
use tonic::{Code, Status};
use weft_proto::detail;
use weft_proto::v1::store_client::StoreClient;
use weft_proto::v1::{self as pb, ErrorReason};
use weft_security::{AuthChannel, Channels, ClientSecurity};

use crate::session::Mux;

/// One attempt's ways to reach a node: unary calls, and the node's session stream.
pub(crate) struct Conn {
    pub(crate) unary: StoreClient<AuthChannel>,
    session: Mux,
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Overall time a call may take, retries included.
    pub deadline: Duration,
    /// Time one attempt may take.
    pub attempt_timeout: Duration,
    /// First backoff between attempts.
    pub backoff_min: Duration,
    /// Longest backoff between attempts.
    pub backoff_max: Duration,
    /// TLS and identity (a client certificate or a bearer token); the default is plaintext
    /// with no identity, which only `--insecure` nodes accept.
    pub security: ClientSecurity,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            security: ClientSecurity::insecure(),
        }
    }
}

impl ClientConfig {
    /// The default settings with `security`.
    pub fn secured(security: ClientSecurity) -> Self {
        ClientConfig { security, ..ClientConfig::default() }
    }
}

/// Which replica may answer a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// The primary, after confirming with a quorum that it still is (read index).
    Linearizable,
    /// Any replica, from its applied state; the response says it may be stale.
    Stale,
}

/// What went wrong with a client call, by partition ([`Client`]) or by key
/// ([`crate::routing::ServiceClient`]): the one error this crate returns. `docs/api.md`
/// says which variants mean applied, not applied, or unknown. New variants may be added:
/// match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The command was refused, by the state machine or by the node before proposing it
    /// (condition failed, no such table, limits...): not applied. Deterministic: retrying
    /// will not help.
    #[error("refused ({code:?}): {message}")]
    Refused {
        /// Why.
        code: pb::ErrorCode,
        /// The engine's message.
        message: String,
    },
    /// The request was invalid or failed for a reason retrying cannot fix.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Rpc(Status),
    /// A write's outcome is unknown: it may have applied. No attempt got a definite answer
    /// before the deadline and at least one may have been proposed, or the session said
    /// its result is forgotten (`ERROR_CODE_SESSION_EXPIRED`).
    #[error("write outcome unknown after {attempts} attempts (last error: {last})")]
    Indeterminate {
        /// Attempts made.
        attempts: u32,
        /// The last error seen.
        last: String,
    },
    /// No primary (or no reachable replica) answered before the deadline: a read, or a
    /// write every attempt of which was refused before it was proposed (not applied).
    #[error("no answer after {attempts} attempts (last error: {last})")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last error seen.
        last: String,
    },
    /// Every node this client knows either answered that it hosts no replica of the
    /// partition or did not answer, and at least one so answered: the caller's routing (a
    /// cluster map) is probably stale. A write may still have reached a node that did not
    /// answer: retry it with the same [`WriteTicket`], as
    /// [`crate::routing::ServiceClient`] does after refreshing its map.
    #[error("no known node hosts partition {partition} (the routing is stale)")]
    NotHosted {
        /// The partition asked for.
        partition: u64,
    },
    /// No endpoints were given.
    #[error("the client has no endpoints")]
    NoEndpoints,
    /// No endpoint answered with the cluster map.
    #[error("no node answered with the cluster map: {0}")]
    NoMap(String),
    /// The map has no such service.
    #[error("no service {0:?} (weft ctl services lists them)")]
    NoService(String),
    /// The service's partitions are still being created (their groups opened and table
    /// `default` made); nothing was sent. Calls wait for them until the deadline.
    #[error("partition {partition} of service {service:?} is still being created")]
    NotReady {
        /// The service.
        service: String,
        /// A partition not created yet.
        partition: u64,
    },
    /// A watch needs changes the replicas no longer keep (it asked for an old version, or
    /// read so slowly that what it had not read was dropped): read the data afresh and
    /// watch from the version that read reports, or from `oldest` if a gap is acceptable.
    #[error("watch of partition {partition}: {message}")]
    Compacted {
        /// The partition.
        partition: u64,
        /// The oldest version still kept.
        oldest: u64,
        /// The node's message.
        message: String,
    },
    /// The cluster refused a request or did not get ready in time
    /// ([`crate::routing::ready_service`]).
    #[error("{0}")]
    Cluster(String),
}

struct Inner {
    /// Replaced whole by [`Client::set_endpoints`]; each attempt reads the current list.
    endpoints: RwLock<Arc<Vec<String>>>,
    /// Node addresses as peers know them (a leader hint's) to the ones this client dials,
    /// for a client outside the nodes' network ([`Client::set_aliases`]).
    aliases: RwLock<Arc<BTreeMap<String, String>>>,
    /// One lazily connected channel per node, the same way nodes reach their peers.
    channels: Channels,
    primaries: Mutex<BTreeMap<u64, String>>,
    /// One session stream per node for gets and writes (see [`crate::session`]).
    sessions: Mutex<BTreeMap<String, Mux>>,
    client_id: u64,
    seqs: Seqs,
    config: ClientConfig,
}

/// A client session's write numbers: the next seq, and the seqs of writes still waiting
/// for an answer, whose smallest bounds the `acked_below` every write carries.
///
/// Both live under one lock. They once did not: a seq was drawn from an atomic counter and
/// entered in the in-flight set a moment later, so a write that drew the next seq in that
/// moment could send an `acked_below` above the first one's seq, and the state machine
/// then refused the first write as expired ("older than the remembered window"), which
/// `writes_survive_kills_and_a_learner_is_built_by_snapshot` hit in CI.
#[derive(Debug)]
struct Seqs(Mutex<(u64, std::collections::BTreeSet<u64>)>);

impl Default for Seqs {
    fn default() -> Self {
        Seqs(Mutex::new((1, Default::default())))
    }
}

impl Seqs {
    /// A new write's seq, in flight until [`Seqs::done`].
    fn take(&self) -> u64 {
        let mut g = self.0.lock();
        let seq = g.0;
        g.0 += 1;
        g.1.insert(seq);
        seq
    }

    /// The `acked_below` for a write with `seq`: no write still in flight lies below it.
    fn acked_below(&self, seq: u64) -> u64 {
        self.0.lock().1.first().copied().unwrap_or(seq).min(seq)
    }

    /// The write with `seq` has its answer (or was given up).
    fn done(&self, seq: u64) {
        self.0.lock().1.remove(&seq);
    }
}

/// One write's session number, fixed before its first attempt and carried by every
/// attempt, however many calls those take (see [`Client::ticket`]): the state machine
/// applies the write at most once. Dropping it ends the write (its seq leaves the
/// in-flight set that bounds `acked_below`).
pub struct WriteTicket {
    client: Client,
    seq: u64,
}

impl Drop for WriteTicket {
    fn drop(&mut self) {
        self.client.inner.seqs.done(self.seq);
    }
}

impl WriteTicket {
    /// Applies `kind` to `partition` under this ticket's session: a first attempt, or a
    /// retry of one whose outcome is unknown. Returns the command's result; a refused
    /// command is [`ClientError::Refused`].
    pub async fn write(&self, partition: u64, kind: pb::command::Kind) -> Result<pb::CommandResult, ClientError> {
        let inner = &self.client.inner;
        let acked_below = inner.seqs.acked_below(self.seq);
        let session = pb::Session { client_id: inner.client_id, seq: self.seq, acked_below };
        let cmd = pb::Command { session: None, kind: Some(kind) };
        let resp = self
            .client
            .call(partition, true, true, |c| {
                let req = pb::WriteRequest { partition, session: Some(session), command: Some(cmd.clone()) };
                async move { c.session.write(req).await }
            })
            .await?;
        let result =
            resp.result.ok_or_else(|| ClientError::Rpc(Status::internal("write response without a result")))?;
        if let Some(pb::command_result::Outcome::Error(e)) = &result.outcome {
            let code = pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified);
            // The only refusal that does not mean "not applied": the first attempt's result
            // is forgotten.
            if code == pb::ErrorCode::SessionExpired {
                return Err(ClientError::Indeterminate { attempts: 1, last: e.message.clone() });
            }
            return Err(ClientError::Refused { code, message: e.message.clone() });
        }
        Ok(result)
    }

    /// [`WriteTicket::write`] of an atomic batch; returns its version.
    pub async fn batch(&self, partition: u64, ops: Vec<pb::Op>) -> Result<u64, ClientError> {
        Ok(self.write(partition, pb::command::Kind::Batch(pb::Batch { ops })).await?.version)
    }
}

/// The batch operation putting one record (if `condition` holds).
pub fn put_op(table: &str, key: &[u8], value: &[u8], condition: Option<pb::Condition>) -> pb::Op {
    let put = pb::Put {
        table: table.into(),
        key: key.to_vec().into(),
        value: value.to_vec().into(),
        condition,
        ..Default::default()
    };
    pb::Op { kind: Some(pb::op::Kind::Put(put)) }
}

/// The batch operation deleting one record.
pub fn delete_op(table: &str, key: &[u8]) -> pb::Op {
    let del = pb::Delete { table: table.into(), key: key.to_vec().into(), condition: None };
    pb::Op { kind: Some(pb::op::Kind::Delete(del)) }
}

/// A handle to a weft cluster; cheap to clone, safe to share.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Whether another attempt may get a different answer. `NOT_FOUND` is retried only when
/// the node says it hosts no replica of the partition; a missing table or index is the
/// partition's own answer, the same on every replica, and is returned at once.
fn retryable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => true,
        Code::NotFound => not_hosted(s),
        _ => false,
    }
}

/// Whether the attempt got no answer from a node at all: it timed out, or the transport
/// failed (tonic keeps the transport's error as the status's source; a node's own
/// answers have none).
fn no_answer(s: &Status) -> bool {
    matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) || std::error::Error::source(s).is_some()
}

/// Whether the node answered that it hosts no replica of the partition.
fn not_hosted(s: &Status) -> bool {
    s.code() == Code::NotFound && detail::reason_of(s) == ErrorReason::NotHosted
}

/// Whether a failed attempt proves its write was never proposed (see `docs/api.md`):
/// anything else (no answer, an unknown outcome, an unexplained failure) may have applied.
fn never_proposed(s: &Status) -> bool {
    matches!(
        detail::reason_of(s),
        ErrorReason::NotPrimary | ErrorReason::NotHosted | ErrorReason::NotReady | ErrorReason::NoQuorum
    )
}

/// A status's message with its causes: a transport error says only "transport error" and
/// keeps why (refused, a TLS alert, a certificate the node rejected) in its source chain.
pub fn status_text(s: &Status) -> String {
    let mut text = s.message().to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

/// The primary a failed attempt names, if any.
pub fn leader_hint(s: &Status) -> Option<String> {
    detail::of(s).map(|d| d.leader_addr).filter(|a| !a.is_empty())
}

impl Client {
    /// A client for the nodes at `endpoints` (`host:port`).
    pub fn new(endpoints: Vec<String>, config: ClientConfig) -> Self {
        Client {
            inner: Arc::new(Inner {
                endpoints: RwLock::new(Arc::new(endpoints)),
                aliases: RwLock::default(),
                channels: Channels::new(config.security.clone(), Duration::from_secs(1)),
                primaries: Mutex::default(),
                sessions: Mutex::default(),
                client_id: weft_security::rng::random_u64() | 1,
                seqs: Seqs::default(),
                config,
            }),
        }
    }

    /// This client's session id.
    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    /// Its channels to nodes, one per node, secured as its config says.
    pub fn channels(&self) -> &Channels {
        &self.inner.channels
    }

    /// Runs one call against the partition's primary (or, for stale reads, any replica),
    /// retrying as the module docs say.
    async fn call<T, F, Fut>(&self, partition: u64, to_primary: bool, write: bool, f: F) -> Result<T, ClientError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_from(partition, to_primary, write, self.inner.client_id as usize, f).await
    }

    /// [`Client::call`], asking the endpoints from the one after `start` on when no
    /// primary is known (a watch spreads its streams over the replicas this way).
    pub(crate) async fn call_from<T, F, Fut>(
        &self,
        partition: u64,
        to_primary: bool,
        write: bool,
        start: usize,
        f: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let cfg = &self.inner.config;
        if self.inner.endpoints.read().is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let deadline = Instant::now() + cfg.deadline;
        let mut backoff = cfg.backoff_min;
        let mut next_endpoint = start;
        let mut attempts = 0u32;
        // The last address that failed without naming a primary: a hint pointing back at
        // it (a follower still naming a dead primary before the election) is not followed.
        let mut dead: Option<String> = None;
        // Endpoints that answered "not hosted" or did not answer at all, and whether any
        // answered as a replica of the partition would (see `ClientError::NotHosted`).
        let mut not_hosted_at: BTreeSet<String> = BTreeSet::new();
        let mut answered_as_host = false;
        // Whether any attempt of a write may have applied it (it got no answer, or one
        // that does not prove the write was never proposed).
        let mut maybe_applied = false;
        loop {
            attempts += 1;
            let endpoints = self.inner.endpoints.read().clone();
            let cached = if to_primary { self.inner.primaries.lock().get(&partition).cloned() } else { None };
            let addr = cached.unwrap_or_else(|| {
                next_endpoint = next_endpoint.wrapping_add(1);
                endpoints[next_endpoint % endpoints.len().max(1)].clone()
            });
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = match self.inner.channels.channel(&addr) {
                Ok(ch) => {
                    let max = weft_proto::MAX_MESSAGE_BYTES;
                    let unary = StoreClient::new(ch).max_decoding_message_size(max).max_encoding_message_size(max);
                    let session = {
                        let mut sessions = self.inner.sessions.lock();
                        match sessions.get(&addr) {
                            Some(m) if !m.is_closed() => m.clone(),
                            _ => {
                                let m = Mux::open(unary.clone());
                                sessions.insert(addr.clone(), m.clone());
                                m
                            }
                        }
                    };
                    match tokio::time::timeout(cfg.attempt_timeout.min(left), f(Conn { unary, session })).await {
                        Ok(r) => r,
                        Err(_) => Err(Status::deadline_exceeded("attempt timed out")),
                    }
                }
                Err(s) => Err(s),
            };
            match outcome {
                Ok(resp) => {
                    if to_primary {
                        self.inner.primaries.lock().insert(partition, addr);
                    }
                    return Ok(resp);
                }
                Err(s) if retryable(&s) => {
                    let last = format!("{addr}: {}", status_text(&s));
                    maybe_applied |= write && !never_proposed(&s);
                    let unhosted = not_hosted(&s);
                    if unhosted || no_answer(&s) {
                        not_hosted_at.insert(addr.clone());
                    } else {
                        answered_as_host = true;
                    }
                    if unhosted && !answered_as_host && endpoints.iter().all(|e| not_hosted_at.contains(e)) {
                        self.inner.primaries.lock().remove(&partition);
                        return Err(ClientError::NotHosted { partition });
                    }
                    let hint = leader_hint(&s)
                        .map(|h| self.inner.aliases.read().get(&h).cloned().unwrap_or(h))
                        .filter(|h| dead.as_ref() != Some(h));
                    if hint.is_none() {
                        dead = Some(addr.clone());
                    }
                    let follow = hint.as_ref().is_some_and(|h| *h != addr);
                    {
                        let mut p = self.inner.primaries.lock();
                        match &hint {
                            Some(h) if to_primary => {
                                p.insert(partition, h.clone());
                            }
                            _ => {
                                p.remove(&partition);
                            }
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(if maybe_applied {
                            ClientError::Indeterminate { attempts, last }
                        } else {
                            ClientError::Unavailable { attempts, last }
                        });
                    }
                    // A node without the partition says nothing about the others: ask the
                    // next one at once.
                    if !follow && !unhosted {
                        tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                        backoff = (backoff * 2).min(cfg.backoff_max);
                    }
                }
                Err(s) => return Err(ClientError::Rpc(s)),
            }
        }
    }

    /// A new write's session number; see [`WriteTicket`].
    pub fn ticket(&self) -> WriteTicket {
        WriteTicket { client: self.clone(), seq: self.inner.seqs.take() }
    }

    /// Replaces the endpoints (a refreshed cluster map's nodes); calls in flight switch
    /// at their next attempt. The session and cached primaries stay.
    pub fn set_endpoints(&self, endpoints: Vec<String>) {
        *self.inner.endpoints.write() = Arc::new(endpoints);
    }

    /// Replaces the address translation applied to primaries' addresses that nodes name
    /// in their answers: for a client outside the nodes' network, each node's peer address
    /// to the client address it dials instead (`NodeInfo.client_addr`).
    pub fn set_aliases(&self, aliases: BTreeMap<String, String>) {
        *self.inner.aliases.write() = Arc::new(aliases);
    }

    /// Applies one command to a partition, exactly once. Returns the command's result;
    /// a refused command is [`ClientError::Refused`].
    pub async fn write(&self, partition: u64, kind: pb::command::Kind) -> Result<pb::CommandResult, ClientError> {
        self.ticket().write(partition, kind).await
    }

    /// Creates a table.
    pub async fn create_table(&self, partition: u64, table: &str) -> Result<u64, ClientError> {
        let kind = pb::command::Kind::CreateTable(pb::CreateTable { table: table.into() });
        Ok(self.write(partition, kind).await?.version)
    }

    /// Declares an index.
    pub async fn create_index(&self, partition: u64, table: &str, index: pb::IndexDef) -> Result<u64, ClientError> {
        let kind = pb::command::Kind::CreateIndex(pb::CreateIndex { table: table.into(), index: Some(index) });
        Ok(self.write(partition, kind).await?.version)
    }

    /// Applies a batch atomically; returns its version.
    pub async fn batch(&self, partition: u64, ops: Vec<pb::Op>) -> Result<u64, ClientError> {
        Ok(self.write(partition, pb::command::Kind::Batch(pb::Batch { ops })).await?.version)
    }

    /// Puts one record; returns its version.
    pub async fn put(&self, partition: u64, table: &str, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        self.put_if(partition, table, key, value, None).await
    }

    /// Puts one record if `condition` holds (a failed condition is
    /// [`ClientError::Refused`] with `ConditionFailed`); returns its version.
    pub async fn put_if(
        &self,
        partition: u64,
        table: &str,
        key: &[u8],
        value: &[u8],
        condition: Option<pb::Condition>,
    ) -> Result<u64, ClientError> {
        self.batch(partition, vec![put_op(table, key, value, condition)]).await
    }

    /// Deletes one record; returns the batch version.
    pub async fn delete(&self, partition: u64, table: &str, key: &[u8]) -> Result<u64, ClientError> {
        self.batch(partition, vec![delete_op(table, key)]).await
    }

    /// A consistent snapshot of `partition` from its primary (`since` 0), or the changes
    /// committed after log index `since`, as a stream of checksummed chunks (see
    /// `weft_replica::ChunkCheck`); the first chunk's meta names the log index it holds
    /// everything up to. Changes no longer kept: `ClientError::Rpc` with `OUT_OF_RANGE`.
    pub async fn backup(&self, partition: u64, since: u64) -> Result<tonic::Streaming<pb::SnapshotChunk>, ClientError> {
        self.call(partition, true, false, |mut c| async move {
            Ok(c.unary.backup(pb::BackupRequest { partition, since }).await?.into_inner())
        })
        .await
    }

    /// Reads one record, with what the response says about who served it.
    pub async fn get_with_info(
        &self,
        partition: u64,
        table: &str,
        key: &[u8],
        mode: ReadMode,
    ) -> Result<(Option<pb::Record>, pb::ReadInfo), ClientError> {
        let header = header(partition, mode);
        let resp = self
            .call(partition, mode == ReadMode::Linearizable, false, |c| {
                let req = pb::GetRequest { header: Some(header), table: table.into(), key: key.to_vec().into() };
                async move { c.session.get(req).await }
            })
            .await?;
        Ok((resp.record, resp.info.unwrap_or_default()))
    }

    /// Reads one record.
    pub async fn get(
        &self,
        partition: u64,
        table: &str,
        key: &[u8],
        mode: ReadMode,
    ) -> Result<Option<pb::Record>, ClientError> {
        Ok(self.get_with_info(partition, table, key, mode).await?.0)
    }

    /// One page of a scan of the table from key `from` (inclusive; empty: the first key);
    /// pass the returned token back for the next page (empty: done).
    pub async fn scan(
        &self,
        partition: u64,
        table: &str,
        from: &[u8],
        limit: u32,
        token: Vec<u8>,
        mode: ReadMode,
    ) -> Result<(Vec<pb::Record>, Vec<u8>), ClientError> {
        let header = header(partition, mode);
        let start = (!from.is_empty()).then(|| pb::KeyBound { key: from.to_vec().into(), inclusive: true });
        let resp = self
            .call(partition, mode == ReadMode::Linearizable, false, |mut c| {
                let req = pb::ScanRequest {
                    header: Some(header),
                    table: table.into(),
                    start: start.clone(),
                    limit,
                    token: token.clone().into(),
                    ..Default::default()
                };
                async move { Ok(c.unary.scan(req).await?.into_inner()) }
            })
            .await?;
        Ok((resp.records, resp.token.to_vec()))
    }
}

fn header(partition: u64, mode: ReadMode) -> pb::ReadHeader {
    let mode = match mode {
        ReadMode::Linearizable => pb::ReadMode::Linearizable,
        ReadMode::Stale => pb::ReadMode::Stale,
    };
    pb::ReadHeader { partition, mode: mode as i32 }
}

#[cfg(test)]
mod tests {
    use super::{Seqs, never_proposed};
    use std::sync::atomic::{AtomicU64, Ordering};
    use tonic::{Code, Status};
    use weft_proto::detail;
    use weft_proto::v1::ErrorReason;

    /// A write that ends without an answer is "not applied" only when every failed attempt
    /// proves it was never proposed; an unknown outcome, a bare failure or a timeout may
    /// have applied it.
    #[test]
    fn only_answers_that_prove_no_proposal_count_as_not_applied() {
        for reason in [ErrorReason::NotPrimary, ErrorReason::NotHosted, ErrorReason::NotReady, ErrorReason::NoQuorum] {
            assert!(never_proposed(&detail::reason(Code::Unavailable, "x", reason)), "{reason:?}");
        }
        assert!(!never_proposed(&detail::reason(Code::Unavailable, "x", ErrorReason::OutcomeUnknown)));
        assert!(!never_proposed(&Status::unavailable("a failure without a reason")));
        assert!(!never_proposed(&Status::deadline_exceeded("attempt timed out")));
        assert!(!never_proposed(&Status::cancelled("the session stream broke")));
    }

    /// What the state machine checks: a write whose seq lies below an `acked_below` it has
    /// already heard from this client is refused. Writers on several threads draw seqs and
    /// publish their `acked_below`; no write may ever find its own seq below one already
    /// published. (With the seq drawn outside the in-flight set's lock, this failed.)
    #[test]
    fn no_write_is_ever_below_a_published_acked_below() {
        let seqs = Seqs::default();
        let heard = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50_000 {
                        let seq = seqs.take();
                        let acked_below = seqs.acked_below(seq);
                        assert!(acked_below <= seq);
                        let before = heard.fetch_max(acked_below, Ordering::SeqCst);
                        assert!(seq >= before, "seq {seq} is below an acked_below of {before} already sent");
                        seqs.done(seq);
                    }
                });
            }
        });
    }
}
