//! The engine's error type. Every variant names what was wrong; a request that fails
//! changes nothing.

/// What went wrong with an engine request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No table by that name.
    #[error("table {0:?} does not exist")]
    TableNotFound(String),
    /// A table by that name already exists.
    #[error("table {0:?} already exists")]
    TableExists(String),
    /// No index by that name on the table.
    #[error("index {index:?} does not exist on table {table:?}")]
    IndexNotFound {
        /// The table.
        table: String,
        /// The missing index.
        index: String,
    },
    /// An index by that name already exists on the table.
    #[error("index {index:?} already exists on table {table:?}")]
    IndexExists {
        /// The table.
        table: String,
        /// The existing index.
        index: String,
    },
    /// The operation needs an index of another kind.
    #[error("index {index:?} is {actual}, this operation needs {needed}")]
    WrongIndexKind {
        /// The index.
        index: String,
        /// Its kind.
        actual: &'static str,
        /// The kind the operation needs.
        needed: &'static str,
    },
    /// A size or count limit was exceeded.
    #[error("{what} is {actual}, over the limit of {limit}")]
    LimitExceeded {
        /// What was too large ("key bytes", "batch operations", ...).
        what: &'static str,
        /// The offending size or count.
        actual: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A name or key that must not be empty was empty, or a name had bad characters.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A batch condition did not hold; nothing in the batch was applied.
    #[error("condition failed on operation {op} (table {table:?}): expected {expected}, found {found}")]
    ConditionFailed {
        /// Position of the operation in the batch.
        op: usize,
        /// Its table.
        table: String,
        /// What the condition asked for.
        expected: String,
        /// What was there.
        found: String,
    },
    /// A continuation token was malformed or belongs to another request.
    #[error("invalid continuation token: {0}")]
    InvalidToken(&'static str),
    /// A write asked for a version below the store's current version.
    #[error("version {given} is below the current version {current}")]
    VersionNotIncreasing {
        /// The version asked for.
        given: u64,
        /// The store's current version.
        current: u64,
    },
    /// A bulk load received keys out of order or repeated.
    #[error("bulk load input is not strictly increasing at record {0}")]
    UnsortedInput(usize),
}

/// Result alias for engine calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
