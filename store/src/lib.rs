//! `weft-store`: weft's in-memory engine.
//!
//! A [`Store`] is one partition's state: named tables of [`Record`]s (key, opaque value,
//! scalar attributes, version). Each table keeps its records in a persistent AVL tree of
//! `Arc` nodes (ordered scans, O(1) snapshots by path copying) and a hashbrown index
//! (O(1) point reads on the live view), plus secondary indexes on one attribute each:
//! `ordered` (AVL over `(attribute, key)`) and `max_heap` (indexed binary heap).
//! Paged reads return opaque continuation tokens that encode a seek position.
//!
//! The crate is pure and synchronous: no I/O, no async, no threads, no knowledge of
//! partitions or networks. It must never depend on tokio, tonic or openraft. Snapshots
//! are `Send + Sync` and may be read on other threads while the store keeps writing.
//!
//! Formats and invariants are written down in `docs/engine.md`.

mod avl;
mod batch;
mod error;
mod heap;
mod index;
mod limits;
mod prefetch;
mod record;
mod scalar;
mod store;
mod table;
mod token;

#[cfg(test)]
mod tests;

pub use batch::{Condition, Op, WriteResult};
pub use error::{Result, StoreError};
pub use index::{IndexDef, IndexKind};
pub use limits::Limits;
pub use record::{Attr, Record};
pub use scalar::Scalar;
pub use store::{LoadRecord, Store, StoreSnapshot, TableLoader};
pub use table::{Page, Query, Scan, Table, TableData, TableSnapshot};
pub use token::Token;
