//! Explicit, configurable limits on everything a caller controls. Every limit is checked
//! before anything changes.

use crate::batch::Op;
use crate::error::{Result, StoreError};

/// Size and count limits; [`Limits::default`] suits most services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key.
    pub key_bytes_max: usize,
    /// Longest value.
    pub value_bytes_max: usize,
    /// Most attributes on one record.
    pub attrs_per_record_max: usize,
    /// Longest attribute name; also bounds table and index names.
    pub name_bytes_max: usize,
    /// Longest string or bytes attribute value.
    pub attr_value_bytes_max: usize,
    /// Most operations in one batch.
    pub batch_ops_max: usize,
    /// Most key, value and attribute bytes in one batch.
    pub batch_bytes_max: usize,
    /// Largest page a scan or query returns.
    pub page_records_max: usize,
    /// Record bytes (keys, values, attributes) past which a scan or query page ends early,
    /// with a token for the rest: a page is never far over this, whatever its limit.
    pub page_bytes_max: usize,
    /// Most indexes on one table.
    pub indexes_per_table_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 4 * 1024,
            value_bytes_max: 1024 * 1024,
            attrs_per_record_max: 32,
            name_bytes_max: 128,
            attr_value_bytes_max: 1024,
            batch_ops_max: 10_000,
            batch_bytes_max: 32 * 1024 * 1024,
            page_records_max: 10_000,
            page_bytes_max: 16 * 1024 * 1024,
            indexes_per_table_max: 16,
        }
    }
}

impl Limits {
    /// The checks on a batch that need no state: operation count, every record's key,
    /// value and attributes, and the batch's bytes. A write that fails them can be refused
    /// before it is proposed (the node does), so it never reaches a log; applying checks
    /// them again, with the checks that need the state (tables, conditions).
    pub fn check_ops(&self, ops: &[Op]) -> Result<()> {
        check("batch operations", ops.len(), self.batch_ops_max)?;
        let mut bytes = 0usize;
        for op in ops {
            match op {
                Op::Put { key, value, attrs, .. } => {
                    crate::store::check_record(self, key, value.len(), attrs.iter().map(|(n, v)| (n.as_str(), v)))?;
                    bytes += key.len()
                        + value.len()
                        + attrs.iter().map(|(n, v)| n.len() + v.heap_bytes() + 8).sum::<usize>();
                }
                Op::Delete { key, .. } => {
                    if key.is_empty() {
                        return Err(StoreError::Invalid { what: "key", reason: "empty".into() });
                    }
                    check("key bytes", key.len(), self.key_bytes_max)?;
                    bytes += key.len();
                }
            }
        }
        check("batch bytes", bytes, self.batch_bytes_max)
    }
}

/// Fails with [`StoreError::LimitExceeded`] when `actual > limit`.
pub(crate) fn check(what: &'static str, actual: usize, limit: usize) -> Result<()> {
    if actual > limit {
        return Err(StoreError::LimitExceeded { what, actual, limit });
    }
    Ok(())
}

/// Table, index and attribute names: non-empty, bounded, printable without control characters.
pub(crate) fn check_name(what: &'static str, name: &str, limits: &Limits) -> Result<()> {
    check(what, name.len(), limits.name_bytes_max)?;
    if name.is_empty() {
        return Err(StoreError::Invalid { what, reason: "empty".into() });
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::Invalid { what, reason: format!("{name:?} contains control characters") });
    }
    Ok(())
}
