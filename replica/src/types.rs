//! The openraft type configuration of a weft partition group, and short names for the
//! openraft types the crate uses.
//!
//! Replica ids (`NodeId`) are unique per incarnation: the node-admin caller gives every
//! replica that starts from empty state a fresh id, so a replica that lost its log can never
//! vote under an id that already voted (openraft documents the split brain this prevents).
//! A replica's `Node` is the address of the node process hosting it.

use std::fmt;

use weft_proto::v1 as pb;

/// The payload of a normal raft entry: one or more commands, applied in order at the
/// entry's log index (the primary batches concurrent client writes into one entry).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commands(pub Vec<pb::Command>);

impl fmt::Display for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} commands", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The type configuration of every partition group.
    pub TypeConfig:
        D = Commands,
        R = Vec<pb::CommandResult>,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::runtime::WeftRuntime,
);

/// A replica id: unique per incarnation.
pub type ReplicaId = u64;
/// A partition id: the raft group id.
pub type PartitionId = u64;
/// Log id.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// Vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// Log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// Leader id.
pub type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;
/// A group's membership.
pub type Membership = openraft::Membership<ReplicaId, openraft::BasicNode>;
/// Membership with the log id that set it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
