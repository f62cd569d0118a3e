//! weft's wire API, package `weft.v1`: the client `Store` service, the internal
//! `Raft` service between nodes and the `NodeAdmin` service. The `.proto` files
//! under `proto/` are the source of truth; code is generated at build time by
//! protox and tonic-prost-build, so no system `protoc` is needed.

#![allow(missing_docs, clippy::all, clippy::unwrap_used)]

/// Largest gRPC message a node sends or accepts and a client sends, on every service:
/// twice the largest command the engine's default limits allow (a batch of 32 MiB of keys,
/// values and attributes, plus per-operation framing), with room for a session message's
/// other calls. Writes are checked against the limits before they are proposed, so no
/// valid message comes near it; anything larger is refused by the transport before it is
/// read whole.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The encoded `FileDescriptorSet` of every `.proto` file here (`weft.v1` and
/// `weft.testing.v1`), which a node's gRPC server reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/weft_descriptors.bin"));

/// Generated messages and services of package `weft.v1`.
pub mod v1 {
    tonic::include_proto!("weft.v1");
}

/// Package `weft.testing.v1`: fault injection for weft's own tests and `weft chaos`, kept
/// out of the API package. A node serves it only when started with `--fault-injection`.
pub mod testing {
    /// Generated messages and services of package `weft.testing.v1`.
    pub mod v1 {
        tonic::include_proto!("weft.testing.v1");
    }
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
                oldest_version: 0,
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

/// The framing both ends of a `Store.Session` stream share: how queued calls (or answers)
/// are gathered into one message, and how a failed call's status travels in a
/// [`v1::CallStatus`].
pub mod session {
    use tonic::{Code, Status};

    use crate::v1::CallStatus;

    /// Most calls (or answers) put in one message.
    pub const MAX_PER_MESSAGE: usize = 256;

    /// Encoded bytes past which no further call (or answer) joins a message: large values
    /// travel in messages of their own, far below [`crate::MAX_MESSAGE_BYTES`].
    pub const BYTES_PER_MESSAGE: usize = 4 << 20;

    /// `first` and whatever `next` yields now, up to one message's worth:
    /// [`MAX_PER_MESSAGE`] items, or until `encoded` sums past [`BYTES_PER_MESSAGE`]
    /// (`first` always goes).
    pub fn take_ready<T>(first: T, mut next: impl FnMut() -> Option<T>, encoded: impl Fn(&T) -> usize) -> Vec<T> {
        let mut bytes = encoded(&first);
        let mut taken = vec![first];
        while taken.len() < MAX_PER_MESSAGE && bytes < BYTES_PER_MESSAGE {
            let Some(item) = next() else { break };
            bytes += encoded(&item);
            taken.push(item);
        }
        taken
    }

    /// A failed call's status as a session carries it: code, message, ASCII metadata and
    /// the status details (`crate::detail`).
    pub fn status_to_pb(s: &Status) -> CallStatus {
        let metadata = s
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.to_string(), v.to_str().ok()?.to_string())),
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        CallStatus {
            code: s.code() as i32,
            message: s.message().to_string(),
            metadata,
            details: s.details().to_vec().into(),
        }
    }

    /// The status a session answer carries, as its unary RPC would have returned it.
    pub fn status_from_pb(c: CallStatus) -> Status {
        let mut s = Status::with_details(Code::from_i32(c.code), c.message, c.details);
        for (k, v) in c.metadata {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()),
                tonic::metadata::AsciiMetadataValue::try_from(v.as_str()),
            ) {
                s.metadata_mut().insert(k, v);
            }
        }
        s
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::v1::{ErrorDetail, ErrorReason};

        #[test]
        fn a_status_crosses_the_session_as_its_unary_rpc_would_return_it() {
            let detail = ErrorDetail {
                reason: ErrorReason::NotPrimary as i32,
                leader_id: 103,
                leader_addr: "127.0.0.1:7001".into(),
                oldest_version: 0,
            };
            let mut s = crate::detail::status(Code::Unavailable, "not the primary of partition 3", detail.clone());
            s.metadata_mut().insert("x-note", "kept".parse().expect("ascii"));
            let back = status_from_pb(status_to_pb(&s));
            assert_eq!(back.code(), Code::Unavailable);
            assert_eq!(back.message(), s.message());
            assert_eq!(crate::detail::of(&back), Some(detail));
            assert_eq!(back.metadata().get("x-note"), s.metadata().get("x-note"));
            assert!(std::error::Error::source(&back).is_none(), "a node's own answer, not a transport failure");
            let unknown = status_from_pb(CallStatus { code: 999, message: "?".into(), ..Default::default() });
            assert_eq!(unknown.code(), Code::Unknown, "an unknown code stays a failure");
        }

        #[test]
        fn a_message_takes_what_is_ready_up_to_its_bounds() {
            let mut queue = (1..=1000).collect::<std::collections::VecDeque<u32>>();
            let taken = take_ready(0, || queue.pop_front(), |_| 1);
            assert_eq!(taken.len(), MAX_PER_MESSAGE);
            let mut big = vec![BYTES_PER_MESSAGE, 1].into_iter();
            assert_eq!(take_ready(1, || big.next(), |n| *n), vec![1, BYTES_PER_MESSAGE], "past the bytes, no more");
        }
    }
}
