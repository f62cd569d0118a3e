//! One weft partition replica as an openraft group.
//!
//! The crate's surface is what the root re-exports ([`Host`] and [`Replica`], the
//! [`RaftService`], the conversions the node's services need, [`Error`]) plus four public
//! modules: [`disk`] (the storage seam and its faulty twin), [`router`] (the transport's
//! in-memory twin) and [`snapshot`] (the Avro snapshot format, which backups share). Every other module is private.
//!
//! - `error`: [`Error`], the one error the crate returns.
//! - `types`: the group's openraft type configuration; replica ids are per incarnation.
//! - `log_store`: the raft log, volatile (memory only) or durable (over `wal`).
//! - `wal`: write-ahead log segment files: framing, group-commit sync, torn-tail recovery.
//! - `checkpoint`: engine checkpoints of durable replicas.
//! - [`disk`]: the file calls the WAL and checkpoints make, on the real file system or on
//!   a faulty in-memory twin that loses unsynced writes in a crash.
//! - `state_machine`: applies commands to a `weft-store` engine; O(1) snapshots.
//! - [`changes`]: each replica's recent committed changes, which watchers read.
//! - `sessions`: exactly-once application of retried client writes.
//! - [`snapshot`]: the Avro snapshot stream codec.
//! - `wire`, `command`: conversions to and from the `weft.v1` protobuf messages.
//! - `transport`: the raft network's sending side over gRPC, one channel per peer node
//!   for all groups.
//! - [`router`]: the transport's in-memory twin: raft messages between hosts in one
//!   process, through filters that drop, delay, reorder, duplicate and partition.
//! - `raft_service`: its receiving side, the `Raft` service that routes each message to
//!   the addressed replica.
//! - `proposer`, `read_gate`: a primary's writes batched into entries, its
//!   linearizable reads into read-index rounds.
//! - `quiesce`: idle groups stop ticking; liveness per node pair stands in for their
//!   heartbeats and elects for the groups of a node that went down.
//! - `host`: the replicas one node process hosts.
//! - `runtime`: openraft's tokio runtime with randomness a simulation can seed.
//!
//! No module imports another in a circle: `disk` and `types` depend on nothing in the crate and
//! `wire` on `types`; `snapshot` (with its transfer `Progress`) on `sessions`; the state
//! machine (and the `Raft` alias over it) on those; the transport's sending side on the
//! state machine; the host on the transport; the receiving side (`raft_service`) on the
//! host.
//!
//! openraft is pinned exactly at 0.10.0-alpha.37: the 0.10 line alone has streamed full
//! snapshots owned by the state machine, leader transfer, read-index and lease reads and
//! pre-vote. `openraft-multi`'s `GroupRouter` is not used: its calls carry only the target
//! id, while our transport needs the target node's address, which openraft hands to
//! [`openraft::RaftNetworkFactory::new_client`]; so `transport` implements the
//! per-(group, target) network directly, over one shared channel per peer address.

mod append_calls;
pub mod changes;
mod checkpoint;
mod command;
pub mod disk;
mod error;
mod host;
mod log_store;
mod proposer;
mod quiesce;
mod raft_service;
mod read_gate;
pub mod router;
mod runtime;
mod sessions;
pub mod snapshot;
mod state_machine;
pub mod stats;
mod transport;
mod types;
mod wal;
mod wire;

pub use command::{index_from_pb, index_to_pb, op_from_pb, record_to_pb, scalar_from_pb, scalar_to_pb};
pub use error::Error;
pub use host::{Host, RaftSettings, Replica, SINGLE_RECORD_KEEP_BEHIND, SINGLE_RECORD_SNAPSHOT_EVERY, Storage};
pub use proposer::ProposeError;
pub use raft_service::{RaftService, decode_stream, first_chunk, next_bytes};
pub use read_gate::ReadError;
pub use transport::{ChunkCheck, TransportConfig, stream_bytes, stream_snapshot};
pub use types::{Commands, PartitionId, ReplicaId, TypeConfig};
pub use wire::{INDEX_MAX, log_id_to_pb, membership_from_pb, node_of};
