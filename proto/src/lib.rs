//! weft's wire API, package `weft.v1`: the client `Store` service, the internal
//! `Raft` service between nodes and the `NodeAdmin` service. The `.proto` files
//! under `proto/` are the source of truth; code is generated at build time by
//! protox and tonic-prost-build, so no system `protoc` is needed.

#![allow(missing_docs, clippy::all, clippy::unwrap_used)]

/// Generated messages and services of package `weft.v1`.
pub mod v1 {
    tonic::include_proto!("weft.v1");
}

/// Why a call failed, carried in the gRPC status details as the standard rich error model
/// has it: `grpc-status-details-bin` holds a `google.rpc.Status` whose `details` hold one
/// `google.protobuf.Any` packing a [`v1::ErrorDetail`]. Any gRPC library can read it
/// (Python's `grpc_status.rpc_status.from_call`, Go's `status.FromError(...).Details()`).
/// The node attaches details here and nowhere else; clients read them here.
pub mod detail {
    use prost::Message;

    use crate::v1::{ErrorDetail, ErrorReason};

    /// The `Any` type URL of [`ErrorDetail`].
    pub const TYPE_URL: &str = "type.googleapis.com/weft.v1.ErrorDetail";

    /// A status with `code`, `message` and `detail` in its details.
    pub fn status(code: tonic::Code, message: impl Into<String>, detail: ErrorDetail) -> tonic::Status {
        let message = message.into();
        let any = prost_types::Any { type_url: TYPE_URL.into(), value: detail.encode_to_vec() };
        let rich = tonic_types::Status { code: code as i32, message: message.clone(), details: vec![any] };
        tonic::Status::with_details(code, message, rich.encode_to_vec().into())
    }

    /// A status with `code`, `message` and a detail naming only `reason`.
    pub fn reason(code: tonic::Code, message: impl Into<String>, reason: ErrorReason) -> tonic::Status {
        status(code, message, ErrorDetail { reason: reason as i32, ..Default::default() })
    }

    /// The [`ErrorDetail`] a status carries, if any.
    pub fn of(s: &tonic::Status) -> Option<ErrorDetail> {
        from_bytes(s.details())
    }

    /// The [`ErrorDetail`] in encoded status details (`grpc-status-details-bin`, or a
    /// session call's `CallStatus.details`), if any.
    pub fn from_bytes(details: &[u8]) -> Option<ErrorDetail> {
        if details.is_empty() {
            return None;
        }
        let rich = tonic_types::Status::decode(details).ok()?;
        rich.details.iter().find(|a| a.type_url == TYPE_URL).and_then(|a| ErrorDetail::decode(a.value.as_slice()).ok())
    }

    /// The reason a status carries; [`ErrorReason::Unspecified`] when it has none.
    pub fn reason_of(s: &tonic::Status) -> ErrorReason {
        of(s).and_then(|d| ErrorReason::try_from(d.reason).ok()).unwrap_or(ErrorReason::Unspecified)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_detail_survives_the_status_round_trip_and_plain_statuses_have_none() {
            let d = ErrorDetail {
                reason: ErrorReason::NotPrimary as i32,
                leader_id: 7,
                leader_addr: "10.0.0.7:7001".into(),
            };
            let s = status(tonic::Code::Unavailable, "not the primary", d.clone());
            assert_eq!(of(&s), Some(d));
            assert_eq!(reason_of(&s), ErrorReason::NotPrimary);
            // The details are a google.rpc.Status any client library decodes.
            let rich = tonic_types::Status::decode(s.details()).expect("google.rpc.Status");
            assert_eq!((rich.code, rich.message.as_str()), (tonic::Code::Unavailable as i32, "not the primary"));
            assert_eq!(of(&tonic::Status::unavailable("plain")), None);
            assert_eq!(reason_of(&tonic::Status::unavailable("plain")), ErrorReason::Unspecified);
            assert_eq!(from_bytes(b"\xff\xff not a status"), None);
        }
    }
}
