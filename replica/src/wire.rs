//! Conversions between openraft's message types and their `weft.v1` protobuf forms.
//!
//! Decoding is total: a message with a missing required field is a [`WireError`] naming
//! the field, never a panic, since peers and disks are not trusted to be well formed.

use std::collections::{BTreeMap, BTreeSet};

use openraft::BasicNode;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, RaftTypeConfig};
use weft_proto::v1 as pb;

use crate::types::{
    Commands, Entry, LeaderId, LogId, Membership, ReplicaId, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

/// A protobuf message that does not describe a valid openraft message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed {0}")]
pub struct WireError(pub String);

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Unwraps a required message field.
pub fn need<T>(v: Option<T>, what: &str) -> Result<T, WireError> {
    v.ok_or_else(|| WireError(format!("message: missing {what}")))
}

/// Leader id to wire.
pub fn leader_id_to_pb(l: &LeaderId) -> pb::LeaderId {
    pb::LeaderId { term: l.term, node_id: l.node_id }
}

/// The largest raft term a peer may send: 2^48, 280 trillion elections (at a thousand a
/// second, nine thousand years). A term near 2^64 is nonsense, not a long history: adopted,
/// it would leave a group unable to elect anyone (the term cannot grow), so it is refused.
pub const TERM_MAX: u64 = 1 << 48;

/// The largest log index a peer may send: 2^62, far beyond any log, and far enough below
/// 2^64 that no `index + 1` overflows.
pub const INDEX_MAX: u64 = 1 << 62;

fn leader_id_from_pb(l: pb::LeaderId) -> Result<LeaderId, WireError> {
    if l.term > TERM_MAX {
        return Err(WireError(format!("term {}: above {TERM_MAX}, refused as nonsense", l.term)));
    }
    Ok(LeaderId { term: l.term, node_id: l.node_id })
}

/// Vote to wire.
pub fn vote_to_pb(v: &Vote) -> pb::Vote {
    pb::Vote { leader_id: Some(leader_id_to_pb(&v.leader_id)), committed: v.committed }
}

/// Vote from wire.
pub fn vote_from_pb(v: Option<pb::Vote>) -> Result<Vote, WireError> {
    let v = need(v, "vote")?;
    Ok(Vote { leader_id: leader_id_from_pb(need(v.leader_id, "vote.leader_id")?)?, committed: v.committed })
}

/// Log id to wire.
pub fn log_id_to_pb(l: &LogId) -> pb::LogId {
    pb::LogId { leader_id: Some(leader_id_to_pb(&l.leader_id)), index: l.index }
}

/// Optional log id to wire.
pub fn opt_log_id_to_pb(l: Option<&LogId>) -> Option<pb::LogId> {
    l.map(log_id_to_pb)
}

/// A pipelined append's answer to wire.
pub fn stream_append_result_to_pb(r: &StreamAppendResult<TypeConfig>) -> pb::StreamAppendResponse {
    use pb::stream_append_response::{Accepted, Result as R};
    let result = match r {
        Ok(last) => R::Accepted(Accepted { last: opt_log_id_to_pb(last.as_ref()) }),
        Err(StreamAppendError::Conflict(id)) => R::Conflict(log_id_to_pb(id)),
        Err(StreamAppendError::HigherVote(v)) => R::HigherVote(vote_to_pb(v)),
    };
    pb::StreamAppendResponse { result: Some(result) }
}

/// A pipelined append's answer from wire.
pub fn stream_append_result_from_pb(r: pb::StreamAppendResponse) -> Result<StreamAppendResult<TypeConfig>, WireError> {
    use pb::stream_append_response::Result as R;
    Ok(match need(r.result, "stream append result")? {
        R::Accepted(a) => Ok(opt_log_id_from_pb(a.last)?),
        R::Conflict(id) => Err(StreamAppendError::Conflict(need(opt_log_id_from_pb(Some(id))?, "conflict log id")?)),
        R::HigherVote(v) => Err(StreamAppendError::HigherVote(vote_from_pb(Some(v))?)),
    })
}

/// Snapshot metadata to wire.
pub fn snapshot_meta_to_pb(m: &SnapshotMeta) -> pb::SnapshotMeta {
    let (last_membership_log_id, last_membership) = stored_membership_to_pb(&m.last_membership);
    pb::SnapshotMeta {
        last_log_id: opt_log_id_to_pb(m.last_log_id.as_ref()),
        last_membership_log_id,
        last_membership: Some(last_membership),
        snapshot_id: String::new(),
    }
}

/// Snapshot metadata from wire.
pub fn snapshot_meta_from_pb(m: pb::SnapshotMeta) -> Result<SnapshotMeta, WireError> {
    let last_membership = membership_from_pb(need(m.last_membership, "snapshot membership")?)?;
    Ok(SnapshotMeta {
        last_log_id: opt_log_id_from_pb(m.last_log_id)?,
        last_membership: openraft::StoredMembership::new(
            opt_log_id_from_pb(m.last_membership_log_id)?,
            last_membership,
        ),
    })
}

/// Optional log id from wire.
pub fn opt_log_id_from_pb(l: Option<pb::LogId>) -> Result<Option<LogId>, WireError> {
    l.map(|l| {
        if l.index > INDEX_MAX {
            return Err(WireError(format!("log index {}: above {INDEX_MAX}, refused as nonsense", l.index)));
        }
        Ok(LogId { leader_id: leader_id_from_pb(need(l.leader_id, "log_id.leader_id")?)?, index: l.index })
    })
    .transpose()
}

/// Membership to wire.
pub fn membership_to_pb(m: &Membership) -> pb::Membership {
    pb::Membership {
        configs: m.get_joint_config().iter().map(|c| pb::ReplicaSet { ids: c.iter().copied().collect() }).collect(),
        nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
    }
}

/// Membership from wire.
pub fn membership_from_pb(m: pb::Membership) -> Result<Membership, WireError> {
    let configs: Vec<BTreeSet<ReplicaId>> = m.configs.into_iter().map(|c| c.ids.into_iter().collect()).collect();
    let nodes: BTreeMap<ReplicaId, BasicNode> =
        m.nodes.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
    Membership::new(configs, nodes).map_err(|e| WireError(format!("membership: {e}")))
}

/// Stored membership to wire (log id and membership).
pub fn stored_membership_to_pb(m: &StoredMembership) -> (Option<pb::LogId>, pb::Membership) {
    (opt_log_id_to_pb(m.log_id().as_ref()), membership_to_pb(m.membership()))
}

/// Entry to wire.
pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    let payload = match &e.payload {
        EntryPayload::Blank => None,
        EntryPayload::Normal(c) => Some(pb::entry::Payload::Commands(pb::CommandBatch { commands: c.0.clone() })),
        EntryPayload::Membership(m) => Some(pb::entry::Payload::Membership(membership_to_pb(m))),
    };
    pb::Entry { log_id: Some(log_id_to_pb(&e.log_id)), payload }
}

/// Entry from wire.
pub fn entry_from_pb(e: pb::Entry) -> Result<Entry, WireError> {
    let log_id = need(opt_log_id_from_pb(e.log_id)?, "entry.log_id")?;
    let payload = match e.payload {
        None => EntryPayload::Blank,
        Some(pb::entry::Payload::Command(c)) => EntryPayload::Normal(Commands(vec![c])),
        Some(pb::entry::Payload::Commands(b)) => EntryPayload::Normal(Commands(b.commands)),
        Some(pb::entry::Payload::Membership(m)) => EntryPayload::Membership(membership_from_pb(m)?),
    };
    Ok(openraft::Entry { log_id, payload })
}

/// Append request to wire.
pub fn append_to_pb(target: pb::Target, r: &AppendEntriesRequest<TypeConfig>) -> pb::AppendRequest {
    pb::AppendRequest {
        target: Some(target),
        vote: Some(vote_to_pb(&r.vote)),
        prev_log_id: opt_log_id_to_pb(r.prev_log_id.as_ref()),
        entries: r.entries.iter().map(entry_to_pb).collect(),
        leader_commit: opt_log_id_to_pb(r.leader_commit.as_ref()),
    }
}

/// `r` as one or more messages whose entries each stay under `max_bytes` (a single larger
/// entry goes alone). Each part follows the one before it (its `prev_log_id` is the last
/// entry of the part before), and commits no further than its own last entry, as a
/// follower would from the whole request; delivered in order, the parts leave the follower
/// exactly as the whole request would, and a failure midway leaves it a prefix, which is an
/// ordinary follower state.
pub fn split_append(
    target: pb::Target,
    r: &AppendEntriesRequest<TypeConfig>,
    max_bytes: usize,
) -> Vec<pb::AppendRequest> {
    use prost::Message;
    let whole = append_to_pb(target, r);
    if whole.entries.len() <= 1 {
        return vec![whole];
    }
    let total: usize = whole.entries.iter().map(|e| e.encoded_len()).sum();
    if total <= max_bytes {
        return vec![whole];
    }
    let mut parts = Vec::new();
    let mut prev = whole.prev_log_id;
    let mut cur: Vec<pb::Entry> = Vec::new();
    let mut bytes = 0usize;
    let finish = |cur: &mut Vec<pb::Entry>, prev: &mut Option<pb::LogId>, parts: &mut Vec<pb::AppendRequest>| {
        let entries = std::mem::take(cur);
        let last = entries.last().and_then(|e| e.log_id);
        let commit = match (&whole.leader_commit, &last) {
            (Some(c), Some(l)) if c.index > l.index => Some(*l),
            (c, _) => *c,
        };
        parts.push(pb::AppendRequest {
            target: Some(target),
            vote: whole.vote,
            prev_log_id: *prev,
            entries,
            leader_commit: commit,
        });
        *prev = last;
    };
    for e in &whole.entries {
        let n = e.encoded_len();
        if !cur.is_empty() && bytes + n > max_bytes {
            finish(&mut cur, &mut prev, &mut parts);
            bytes = 0;
        }
        bytes += n;
        cur.push(e.clone());
    }
    finish(&mut cur, &mut prev, &mut parts);
    parts
}

/// Append request from wire.
pub fn append_from_pb(r: pb::AppendRequest) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(r.vote)?,
        prev_log_id: opt_log_id_from_pb(r.prev_log_id)?,
        entries: r.entries.into_iter().map(entry_from_pb).collect::<Result<_, _>>()?,
        leader_commit: opt_log_id_from_pb(r.leader_commit)?,
    })
}

/// Append response to wire.
pub fn append_resp_to_pb(r: &AppendEntriesResponse<TypeConfig>) -> pb::AppendResponse {
    use pb::append_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(true),
        AppendEntriesResponse::PartialSuccess(l) => match l {
            Some(l) => R::Partial(log_id_to_pb(l)),
            None => R::Success(false),
        },
        AppendEntriesResponse::Conflict => R::Conflict(true),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendResponse { result: Some(result) }
}

/// Append response from wire. `Success(false)` is a partial success with nothing accepted.
pub fn append_resp_from_pb(r: pb::AppendResponse) -> Result<AppendEntriesResponse<TypeConfig>, WireError> {
    use pb::append_response::Result as R;
    Ok(match need(r.result, "append response")? {
        R::Success(true) => AppendEntriesResponse::Success,
        R::Success(false) => AppendEntriesResponse::PartialSuccess(None),
        R::Partial(l) => AppendEntriesResponse::PartialSuccess(opt_log_id_from_pb(Some(l))?),
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from_pb(Some(v))?),
    })
}

/// Vote request to wire.
pub fn vote_req_to_pb(target: pb::Target, r: &VoteRequest<TypeConfig>, pre_vote: bool) -> pb::VoteRequest {
    pb::VoteRequest {
        target: Some(target),
        vote: Some(vote_to_pb(&r.vote)),
        last_log_id: opt_log_id_to_pb(r.last_log_id.as_ref()),
        pre_vote,
        leadership_transfer: r.leadership_transfer,
    }
}

/// Vote request from wire.
pub fn vote_req_from_pb(r: pb::VoteRequest) -> Result<VoteRequest<TypeConfig>, WireError> {
    let mut req = VoteRequest::new(vote_from_pb(r.vote)?, opt_log_id_from_pb(r.last_log_id)?);
    req.leadership_transfer = r.leadership_transfer;
    Ok(req)
}

/// Vote response to wire.
pub fn vote_resp_to_pb(r: &VoteResponse<TypeConfig>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id_to_pb(r.last_log_id.as_ref()),
    }
}

/// Vote response from wire.
pub fn vote_resp_from_pb(r: pb::VoteResponse) -> Result<VoteResponse<TypeConfig>, WireError> {
    Ok(VoteResponse::new(vote_from_pb(r.vote)?, opt_log_id_from_pb(r.last_log_id)?, r.vote_granted))
}

/// The openraft node (the hosting node's address) of a replica at `addr`.
pub fn node_of(addr: &str) -> <TypeConfig as RaftTypeConfig>::Node {
    BasicNode { addr: addr.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, value_bytes: usize) -> Entry {
        let put = pb::Put {
            table: "t".into(),
            key: index.to_be_bytes().to_vec().into(),
            value: vec![7u8; value_bytes].into(),
            ..Default::default()
        };
        let cmd = pb::Command {
            session: None,
            kind: Some(pb::command::Kind::Batch(pb::Batch {
                ops: vec![pb::Op { kind: Some(pb::op::Kind::Put(put)) }],
            })),
        };
        openraft::Entry {
            log_id: LogId { leader_id: LeaderId { term, node_id: 1 }, index },
            payload: EntryPayload::Normal(Commands(vec![cmd])),
        }
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId { leader_id: LeaderId { term, node_id: 1 }, index }
    }

    /// Parts chain on their prev ids, carry every entry once in order, and commit no further
    /// than their own last entry.
    #[test]
    fn a_large_append_is_cut_into_parts_that_follow_each_other() {
        let target = pb::Target { partition: 3, replica: 9 };
        let entries: Vec<Entry> = (11..=20).map(|i| entry(2, i, 1000)).collect();
        let r = AppendEntriesRequest {
            vote: Vote { leader_id: LeaderId { term: 2, node_id: 1 }, committed: true },
            prev_log_id: Some(log_id(2, 10)),
            entries,
            leader_commit: Some(log_id(2, 18)),
        };
        let parts = split_append(target, &r, 3500);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        let mut prev = Some(log_id(2, 10));
        let mut seen = Vec::new();
        for p in &parts {
            assert_eq!(opt_log_id_from_pb(p.prev_log_id).unwrap(), prev);
            let back = append_from_pb(p.clone()).unwrap();
            let last = back.entries.last().unwrap().log_id;
            assert!(back.leader_commit.unwrap().index <= last.index.max(18));
            assert!(back.leader_commit.unwrap().index <= 18);
            if last.index < 18 {
                assert_eq!(back.leader_commit, Some(last), "a part commits no further than its last entry");
            }
            seen.extend(back.entries.iter().map(|e| e.log_id.index));
            prev = Some(last);
        }
        assert_eq!(seen, (11..=20).collect::<Vec<_>>());
        assert_eq!(split_append(target, &r, 1 << 20).len(), 1, "a small append goes whole");
    }

    #[test]
    fn terms_and_indexes_near_two_to_the_sixty_four_are_refused() {
        let vote = |term| pb::Vote { leader_id: Some(pb::LeaderId { term, node_id: 1 }), committed: false };
        assert!(vote_from_pb(Some(vote(TERM_MAX))).is_ok());
        let e = vote_from_pb(Some(vote(u64::MAX))).unwrap_err();
        assert!(e.to_string().contains("refused as nonsense"), "{e}");
        assert!(vote_from_pb(Some(vote(TERM_MAX + 1))).is_err());
        let id = |index| Some(pb::LogId { leader_id: Some(pb::LeaderId { term: 1, node_id: 1 }), index });
        assert!(opt_log_id_from_pb(id(INDEX_MAX)).is_ok());
        assert!(opt_log_id_from_pb(id(u64::MAX)).is_err());
        let req = pb::VoteRequest {
            target: None,
            vote: Some(vote(u64::MAX)),
            last_log_id: id(u64::MAX),
            pre_vote: false,
            leadership_transfer: true,
        };
        assert!(vote_req_from_pb(req).is_err());
    }
}
