//! Write requests: puts and deletes with optional conditions, grouped in atomic batches.
//!
//! Semantics (as etcd's transactions): every condition is checked against the state before
//! the batch; if any fails, nothing is applied. Otherwise the operations apply in order, so
//! when one key appears twice the later operation wins. Every record the batch writes gets
//! the batch's version.

use crate::scalar::Scalar;

/// A precondition on the current record under an operation's key.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Condition {
    /// No precondition.
    #[default]
    None,
    /// The key must exist.
    Exists,
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this version.
    Version(u64),
}

/// One write in a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Insert or replace a record.
    Put {
        /// Table.
        table: String,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Attributes (what indexes see); a repeated name keeps its last value.
        attrs: Vec<(String, Scalar)>,
        /// Precondition.
        condition: Condition,
    },
    /// Delete a record (deleting a missing key is not an error unless conditioned).
    Delete {
        /// Table.
        table: String,
        /// Key.
        key: Vec<u8>,
        /// Precondition.
        condition: Condition,
    },
}

impl Op {
    /// An unconditional put without attributes.
    pub fn put(table: impl Into<String>, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            table: table.into(),
            key: key.into(),
            value: value.into(),
            attrs: Vec::new(),
            condition: Condition::None,
        }
    }

    /// An unconditional delete.
    pub fn delete(table: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        Op::Delete { table: table.into(), key: key.into(), condition: Condition::None }
    }

    /// Adds an attribute to a put (no effect on a delete).
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<Scalar>) -> Self {
        if let Op::Put { attrs, .. } = &mut self {
            attrs.push((name.into(), value.into()));
        }
        self
    }

    /// Sets the precondition.
    pub fn with_condition(mut self, c: Condition) -> Self {
        match &mut self {
            Op::Put { condition, .. } | Op::Delete { condition, .. } => *condition = c,
        }
        self
    }

    pub(crate) fn table(&self) -> &str {
        match self {
            Op::Put { table, .. } | Op::Delete { table, .. } => table,
        }
    }

    /// The key it writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    pub(crate) fn condition(&self) -> &Condition {
        match self {
            Op::Put { condition, .. } | Op::Delete { condition, .. } => condition,
        }
    }
}

/// What a committed batch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// The version every record written by the batch now carries.
    pub version: u64,
    /// Per operation, the version of the record it replaced or deleted (`None`: was absent).
    pub previous: Vec<Option<u64>>,
}
