//! The statuses a node answers with when a caller must act on why: one place that turns
//! openraft's and the engine's errors into gRPC codes, messages and a
//! [`pb::ErrorDetail`] (`weft_proto::detail`), so every service answers alike and a
//! client matches reasons, never message text or metadata.
//!
//! The classification that matters most is a write's outcome. A write refused before it
//! was proposed (not the primary, not hosted, refused by the checks) was **not applied**.
//! A write proposed and then lost to a leader change or a stopping replica is **of unknown
//! outcome**: openraft's `LogEntryDiscarded` says the entry may still commit through
//! another leader, so it is never reported as "not applied" (`OUTCOME_UNKNOWN`).
//! `docs/api.md` gives each answer and what a client does with it.
//!
//! Owns no state and never depends on the cluster manager.

use openraft::error::{
    ChangeMembershipError, ClientWriteError, ForwardReason, ForwardToLeader, LinearizableReadError, RaftError,
};
use openraft::type_config::alias::CommittedLeaderIdOf;
use tonic::{Code, Status};
use weft_proto::detail;
use weft_proto::v1::{self as pb, ErrorReason};
use weft_replica::TypeConfig;

/// The primary a forward names, as a detail with `reason`.
fn with_leader(reason: ErrorReason, f: &ForwardToLeader<TypeConfig>) -> pb::ErrorDetail {
    pb::ErrorDetail {
        reason: reason as i32,
        leader_id: f.leader_id.unwrap_or(0),
        leader_addr: f.leader_node.as_ref().map(|n| n.addr.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// This node hosts no replica of `partition` (`NOT_FOUND`, `NOT_HOSTED`): the caller's
/// map is stale. Nothing was applied.
pub fn not_hosted(partition: u64) -> Status {
    detail::reason(
        Code::NotFound,
        format!("partition {partition} has no replica on this node: the cluster map you routed by is stale"),
        ErrorReason::NotHosted,
    )
}

/// This replica is not `partition`'s primary (`UNAVAILABLE`, `NOT_PRIMARY`), with the
/// primary when known. Nothing was proposed.
pub fn not_primary(partition: u64, f: &ForwardToLeader<TypeConfig>) -> Status {
    let why = match f.reason {
        ForwardReason::NotLeader => "",
        ForwardReason::LeadershipTransfer => " (handing the primary over)",
        ForwardReason::LeaseExpired => " (its quorum lease lapsed: no quorum has answered it lately)",
    };
    let leader = f.leader_node.as_ref().map_or("unknown", |n| n.addr.as_str());
    detail::status(
        Code::Unavailable,
        format!("not the primary of partition {partition}{why}; primary is {leader}"),
        with_leader(ErrorReason::NotPrimary, f),
    )
}

/// A write that was proposed and whose fate is unknown (`UNAVAILABLE`,
/// `OUTCOME_UNKNOWN`): retry it under the same session seq.
fn outcome_unknown(message: String, leader: Option<&ForwardToLeader<TypeConfig>>) -> Status {
    let d = match leader {
        Some(f) => with_leader(ErrorReason::OutcomeUnknown, f),
        None => pb::ErrorDetail { reason: ErrorReason::OutcomeUnknown as i32, ..Default::default() },
    };
    detail::status(Code::Unavailable, message, d)
}

/// A failed proposal (a client write, or a membership change) of `partition`.
pub fn write_error(partition: u64, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_primary(partition, &f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Status::failed_precondition(format!(
            "membership change of partition {partition} refused: {}",
            membership_refusal(&e)
        )),
        RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => Status::failed_precondition(format!(
            "membership change of partition {partition} refused: the membership changed since it was read ({e})"
        )),
        // Appended, then truncated by a new leader: another leader may still commit it.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => outcome_unknown(
            format!(
                "partition {partition}'s primary changed before the write committed; it may still commit: \
                 retry it with the same session seq"
            ),
            Some(&f),
        ),
        // The replica stopped, before or after the write joined its log: unknown.
        RaftError::Fatal(f) => outcome_unknown(
            format!("partition {partition}'s replica here stopped ({f}); the write may have applied"),
            None,
        ),
    }
}

/// A linearizable read whose read-index round failed.
pub fn read_index_error(partition: u64, e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => not_primary(partition, &f),
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)) => detail::reason(
            Code::Unavailable,
            format!("partition {partition}'s primary could not confirm itself with a quorum: {q}"),
            ErrorReason::NoQuorum,
        ),
        RaftError::Fatal(f) => detail::reason(
            Code::Unavailable,
            format!("partition {partition}'s replica here stopped ({f})"),
            ErrorReason::NoQuorum,
        ),
    }
}

/// A stale read of a replica that has applied nothing yet (`UNAVAILABLE`, `NOT_READY`):
/// it is being built, and its empty state would look like missing tables.
pub fn not_ready(partition: u64, replica: u64) -> Status {
    detail::reason(
        Code::Unavailable,
        format!(
            "replica {replica} of partition {partition} is still being built (it has applied nothing): read another replica"
        ),
        ErrorReason::NotReady,
    )
}

/// An engine error answering a read: a missing table or index is `NOT_FOUND` (with no
/// detail: the partition's own answer, the same on every replica), anything else
/// `INVALID_ARGUMENT`.
pub fn engine(e: weft_store::StoreError) -> Status {
    match e {
        weft_store::StoreError::TableNotFound(_) | weft_store::StoreError::IndexNotFound { .. } => {
            Status::not_found(e.to_string())
        }
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// Why openraft refused a membership change, in words (its own texts print Rust debug
/// output of memberships and log ids).
fn membership_refusal(e: &ChangeMembershipError<CommittedLeaderIdOf<TypeConfig>, u64>) -> String {
    let ids = |sets: &[std::collections::BTreeSet<u64>]| {
        sets.iter()
            .map(|s| s.iter().map(u64::to_string).collect::<Vec<_>>().join(", "))
            .map(|s| format!("{{{s}}}"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    match e {
        ChangeMembershipError::InProgress(p) => format!(
            "another membership change (log index {}) has not committed yet: retry when it has",
            p.membership_log_id.map_or(0, |l| l.index)
        ),
        ChangeMembershipError::EmptyMembership(_) => "the group would have no voters".into(),
        ChangeMembershipError::LearnerNotFound(l) => {
            format!("replica {} is not a learner of the group: add it as a learner first", l.node_id)
        }
        ChangeMembershipError::UnsupportedMembershipTransition(t) => {
            format!("the group cannot go from voters {} to voters {} in one step", ids(&t.previous), ids(&t.proposed))
        }
        ChangeMembershipError::UncommittedLeaderLog(_) => {
            "the primary has not committed an entry of its own term yet: retry shortly".into()
        }
        ChangeMembershipError::NodeMetadataChanged(n) => {
            format!("replica {} is already a member with another address: remove it first", n.node_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::Fatal;
    use weft_proto::detail;

    use super::*;

    fn forward(leader: Option<u64>) -> ForwardToLeader<TypeConfig> {
        let mut f = ForwardToLeader::empty();
        if let Some(id) = leader {
            f.leader_id = Some(id);
            f.leader_node = Some(weft_replica::node_of("10.0.0.9:7001"));
        }
        f
    }

    /// Each way a write can fail lands in its class: not applied (not the primary), or of
    /// unknown outcome (discarded after it was appended, or the replica stopped): never
    /// "not applied" for an entry that may still commit.
    #[test]
    fn write_failures_are_classified_by_whether_the_write_may_have_applied() {
        let s = write_error(3, RaftError::APIError(ClientWriteError::ForwardToLeader(forward(Some(9)))));
        let d = detail::of(&s).expect("detail");
        assert_eq!((s.code(), d.reason()), (Code::Unavailable, ErrorReason::NotPrimary));
        assert_eq!((d.leader_id, d.leader_addr.as_str()), (9, "10.0.0.9:7001"));

        let s = write_error(3, RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward(Some(9)))));
        let d = detail::of(&s).expect("detail");
        assert_eq!((s.code(), d.reason()), (Code::Unavailable, ErrorReason::OutcomeUnknown));
        assert_eq!(d.leader_addr, "10.0.0.9:7001", "the retry goes to the new primary");
        assert!(s.message().contains("may still commit"), "{}", s.message());

        let s = write_error(3, RaftError::Fatal(Fatal::Stopped));
        assert_eq!((s.code(), detail::reason_of(&s)), (Code::Unavailable, ErrorReason::OutcomeUnknown));

        let s = not_hosted(3);
        assert_eq!((s.code(), detail::reason_of(&s)), (Code::NotFound, ErrorReason::NotHosted));
        let s = engine(weft_store::StoreError::TableNotFound("t".into()));
        assert_eq!((s.code(), detail::of(&s)), (Code::NotFound, None), "a missing table is no routing answer");
    }

    #[test]
    fn membership_refusals_print_no_rust_debug_output() {
        let t = openraft::errors::UnsupportedMembershipTransition {
            previous: vec![[1, 2, 3].into_iter().collect()],
            proposed: vec![[4].into_iter().collect()],
        };
        let s = write_error(
            5,
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::UnsupportedMembershipTransition(t),
            )),
        );
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "membership change of partition 5 refused: the group cannot go from voters {1, 2, 3} to voters {4} in one step"
        );
    }
}
