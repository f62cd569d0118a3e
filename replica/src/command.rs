//! Translation between the `weft.v1` data messages and the engine's types: scalars,
//! operations, records, index definitions, and engine errors as command results.

use std::sync::Arc;

use weft_proto::v1 as pb;
use weft_store::{Condition, IndexDef, Op, Record, Scalar, StoreError};

use crate::wire::WireError;

/// Scalar from wire.
pub fn scalar_from_pb(s: Option<pb::Scalar>) -> Result<Scalar, WireError> {
    use pb::scalar::Kind;
    Ok(match s.and_then(|s| s.kind) {
        Some(Kind::Bool(b)) => Scalar::Bool(b),
        Some(Kind::I64(i)) => Scalar::I64(i),
        Some(Kind::F64(f)) => Scalar::F64(f),
        Some(Kind::Str(s)) => Scalar::String(s.into()),
        Some(Kind::Bytes(b)) => Scalar::Bytes(b.to_vec().into()),
        None => return Err(WireError("scalar: no value".into())),
    })
}

/// Scalar to wire.
pub fn scalar_to_pb(s: &Scalar) -> pb::Scalar {
    use pb::scalar::Kind;
    let kind = match s {
        Scalar::Bool(b) => Kind::Bool(*b),
        Scalar::I64(i) => Kind::I64(*i),
        Scalar::F64(f) => Kind::F64(*f),
        Scalar::String(s) => Kind::Str(s.to_string()),
        Scalar::Bytes(b) => Kind::Bytes(b.to_vec().into()),
    };
    pb::Scalar { kind: Some(kind) }
}

fn condition_from_pb(c: Option<pb::Condition>) -> Condition {
    use pb::condition::Kind;
    match c.and_then(|c| c.kind) {
        None => Condition::None,
        Some(Kind::Version(v)) => Condition::Version(v),
        Some(Kind::Exists(true)) => Condition::Exists,
        Some(Kind::Absent(true)) => Condition::Absent,
        Some(Kind::Exists(false) | Kind::Absent(false)) => Condition::None,
    }
}

fn attrs_from_pb(attrs: Vec<pb::Attr>) -> Result<Vec<(String, Scalar)>, WireError> {
    attrs.into_iter().map(|a| Ok((a.name, scalar_from_pb(a.value)?))).collect()
}

/// One batch operation from wire.
pub fn op_from_pb(op: pb::Op) -> Result<Op, WireError> {
    match op.kind {
        Some(pb::op::Kind::Put(p)) => Ok(Op::Put {
            table: p.table,
            key: p.key.to_vec(),
            value: p.value.to_vec(),
            attrs: attrs_from_pb(p.attrs)?,
            condition: condition_from_pb(p.condition),
        }),
        Some(pb::op::Kind::Delete(d)) => {
            Ok(Op::Delete { table: d.table, key: d.key.to_vec(), condition: condition_from_pb(d.condition) })
        }
        None => Err(WireError("op: neither put nor delete".into())),
    }
}

/// Index definition from wire.
pub fn index_from_pb(d: Option<pb::IndexDef>) -> Result<IndexDef, WireError> {
    let d = d.ok_or_else(|| WireError("create_index: no index".into()))?;
    match pb::IndexKind::try_from(d.kind) {
        Ok(pb::IndexKind::Ordered) => Ok(IndexDef::ordered(d.name, d.attr)),
        Ok(pb::IndexKind::MaxHeap) => Ok(IndexDef::max_heap(d.name, d.attr)),
        _ => Err(WireError(format!("index {:?}: unknown kind {}", d.name, d.kind))),
    }
}

/// Index definition to wire.
pub fn index_to_pb(d: &IndexDef) -> pb::IndexDef {
    let kind = match d.kind {
        weft_store::IndexKind::Ordered => pb::IndexKind::Ordered,
        weft_store::IndexKind::MaxHeap => pb::IndexKind::MaxHeap,
    };
    pb::IndexDef { name: d.name.clone(), attr: d.attr.clone(), kind: kind as i32 }
}

/// Record to wire.
pub fn record_to_pb(r: &Arc<Record>) -> pb::Record {
    pb::Record {
        key: r.key().to_vec().into(),
        value: r.value().to_vec().into(),
        attrs: r
            .attrs()
            .iter()
            .map(|a| pb::Attr { name: a.name().to_string(), value: Some(scalar_to_pb(a.value())) })
            .collect(),
        version: r.version(),
    }
}

/// An engine error as the deterministic refusal of a command.
pub fn error_to_pb(e: &StoreError) -> pb::CommandError {
    let code = match e {
        StoreError::ConditionFailed { .. } => pb::ErrorCode::ConditionFailed,
        StoreError::TableNotFound(_) => pb::ErrorCode::NoSuchTable,
        StoreError::TableExists(_) => pb::ErrorCode::TableExists,
        StoreError::IndexNotFound { .. } => pb::ErrorCode::NoSuchIndex,
        StoreError::IndexExists { .. } => pb::ErrorCode::IndexExists,
        StoreError::LimitExceeded { .. } => pb::ErrorCode::Limit,
        _ => pb::ErrorCode::Invalid,
    };
    pb::CommandError { code: code as i32, message: e.to_string() }
}

/// A malformed command as its refusal.
pub fn wire_error_to_pb(e: &WireError) -> pb::CommandError {
    pb::CommandError { code: pb::ErrorCode::Invalid as i32, message: e.to_string() }
}
