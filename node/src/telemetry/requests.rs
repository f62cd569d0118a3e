//! Every gRPC request the node answers, counted by service, method and gRPC code
//! (`weft_requests_total`), and unary requests timed (`weft_request_duration_seconds`): a
//! tower layer outside the gate, so refusals count too.
//!
//! The code is read where gRPC puts it: a refusal or error answered at once carries
//! `grpc-status` in its headers; otherwise it comes in the trailers at the end of the body.
//! A body dropped before its trailers (the client went away) counts as `CANCELLED`. A stream
//! (`weft_security::access::is_stream`) is counted when it ends and never timed: its
//! lifetime is not a latency.
//!
//! Labels stay bounded: a path that no service of this node declares is counted as
//! `service="unknown", method="unknown"`, so a caller inventing paths cannot grow the series.
//! Depends on nothing of the node but the descriptor set weft-proto embeds.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tonic::body::Body;

/// Latency buckets, in seconds: 100 µs to 10 s.
const BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The request counters and latency histograms of one node.
#[derive(Clone)]
pub struct RequestMetrics {
    total: IntCounterVec,
    duration: HistogramVec,
    streams: IntGaugeVec,
}

impl RequestMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let total = IntCounterVec::new(
            Opts::new("weft_requests_total", "gRPC requests answered, by service, method and gRPC code."),
            &["service", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "weft_request_duration_seconds",
                "Time to answer a unary gRPC request, by service and method (streams are not timed).",
            )
            .buckets(BUCKETS.to_vec()),
            &["service", "method"],
        )?;
        let streams = IntGaugeVec::new(
            Opts::new("weft_streams_open", "gRPC streams open now (sessions, watches, raft appends...), by method."),
            &["service", "method"],
        )?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(streams.clone()))?;
        Ok(RequestMetrics { total, duration, streams })
    }

    /// The layer that counts every request passing it.
    pub fn layer(&self) -> RequestLayer {
        RequestLayer(self.clone())
    }
}

/// Every `/package.Service/Method` this node serves: weft's own services (from the
/// descriptor set weft-proto embeds), the health protocol and reflection.
static KNOWN: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
    use prost::Message;
    let mut known: BTreeSet<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    // The set is built into the binary by weft-proto's build script; should it not decode,
    // every path counts as unknown rather than anything failing.
    if let Ok(set) = prost_types::FileDescriptorSet::decode(weft_proto::FILE_DESCRIPTOR_SET) {
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    known.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    known
});

/// A gRPC status code's canonical name (`OK`, `UNAVAILABLE`...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `grpc-status` in `headers`, if there is one.
fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(v))
}

/// One request being answered: recorded once, when its answer ends.
struct Pending {
    metrics: RequestMetrics,
    service: &'static str,
    method: &'static str,
    started: Instant,
    /// A stream: counted open until it ends, and not timed.
    stream: bool,
    done: bool,
}

impl Pending {
    fn new(metrics: &RequestMetrics, path: &str) -> Self {
        let (service, method) = labels(path);
        let stream = weft_security::access::is_stream(path);
        if stream {
            metrics.streams.with_label_values(&[service, method]).inc();
        }
        Pending { metrics: metrics.clone(), service, method, started: Instant::now(), stream, done: false }
    }

    fn finish(&mut self, code: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        let m = &self.metrics;
        m.total.with_label_values(&[self.service, self.method, code_name(code)]).inc();
        if self.stream {
            m.streams.with_label_values(&[self.service, self.method]).dec();
        } else {
            m.duration.with_label_values(&[self.service, self.method]).observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // The body went away before its trailers: the client cancelled (or the
        // connection broke).
        self.finish(tonic::Code::Cancelled);
    }
}

/// `(service, method)` labels for a request path, borrowed from the set of known paths
/// (which lives for the process): `("weft.v1.Store", "Get")`, or `("unknown", "unknown")`
/// for a path no service declares. One lookup per request.
fn labels(path: &str) -> (&'static str, &'static str) {
    KNOWN.get(path).and_then(|p| p.trim_start_matches('/').split_once('/')).unwrap_or(("unknown", "unknown"))
}

/// The tower layer.
#[derive(Clone)]
pub struct RequestLayer(RequestMetrics);

impl<S> tower::Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> RequestService<S> {
        RequestService { metrics: self.0.clone(), inner }
    }
}

/// The counting service in front of a stack.
#[derive(Clone)]
pub struct RequestService<S> {
    metrics: RequestMetrics,
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for RequestService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let mut pending = Pending::new(&self.metrics, req.uri().path());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let res = match inner.call(req).await {
                Ok(res) => res,
                Err(e) => {
                    pending.finish(tonic::Code::Unknown);
                    return Err(e);
                }
            };
            if let Some(code) = status_in(res.headers()) {
                // Trailers-only: the answer is complete.
                pending.finish(code);
            }
            Ok(res.map(|b| Body::new(Counted { inner: b, pending })))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its request when its trailers (or its end) pass.
    struct Counted {
        #[pin]
        inner: Body,
        pending: Pending,
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    this.pending.finish(code);
                }
            }
            Poll::Ready(Some(Err(s))) => this.pending.finish(s.code()),
            // Ended without trailers: gRPC's OK is implied only with them, so this is a
            // broken answer; count it as what a client would see.
            Poll::Ready(None) => this.pending.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_paths_get_their_own_labels() {
        assert_eq!(labels("/weft.v1.Store/Get"), ("weft.v1.Store", "Get"));
        assert_eq!(labels("/weft.v1.Raft/StreamAppend"), ("weft.v1.Raft", "StreamAppend"));
        assert_eq!(labels("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        assert_eq!(labels("/weft.v1.Store/Invented"), ("unknown", "unknown"));
        assert_eq!(labels("/x"), ("unknown", "unknown"));
    }
}
