//! Prometheus metrics, served at `GET /metrics` on the metrics port. Names follow
//! `eventline_<subsystem>_<name>_<unit>`; labels are low-cardinality. The recorder is
//! installed once per process; every server in the process shares it.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::{Mutex, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use std::sync::Arc;

use bytes::Bytes;
use eventline_store::Store;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::{Layer, Service};

use crate::{bus::CommitBus, writer::Writer};

/// Latency buckets in seconds: 1 ms to 30 s, roughly ×2.5 apart, covering a cached
/// unary call up to a long group commit under overload.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch-size buckets in events: one event to the largest group commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
/// Distinct event types counted by name; the rest are counted as `other`.
const MAX_EVENT_TYPE_LABELS: usize = 100;

/// The process-wide Prometheus handle.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("eventline_writer_batch_events".into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host program's); ours still renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The metrics port: `GET /metrics` in the Prometheus text format. Gauges that are
/// states rather than events are read at scrape time.
pub(crate) fn router(
    store: Arc<dyn Store>,
    writer: Writer,
    bus: CommitBus,
    budget: crate::budget::MemoryBudget,
    readiness: crate::readiness::Readiness,
) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let response = readiness.readyz();
                async move { response }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let pool = store.pool_status();
                metrics::gauge!("eventline_store_pool_connections", "state" => "open")
                    .set(f64::from(pool.open));
                metrics::gauge!("eventline_store_pool_connections", "state" => "idle")
                    .set(f64::from(pool.idle));
                metrics::gauge!("eventline_writer_queue_events").set(writer.queued_events() as f64);
                metrics::gauge!("eventline_tail_subscribers").set(bus.subscribers() as f64);
                metrics::gauge!("eventline_request_memory_bytes").set(budget.in_use() as f64);
                let store = store.clone();
                async move {
                    record_replica_lag(&*store).await;
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle().render(),
                    )
                }
            }),
        )
}

/// Sets the replica lag gauges when reads go to a replica. Bounded, so a replica that
/// does not answer delays a scrape by at most a second; it then keeps its last value and
/// the error is logged.
async fn record_replica_lag(store: &dyn Store) {
    match tokio::time::timeout(Duration::from_secs(1), store.replica_lag()).await {
        Ok(Ok(Some(lag))) => {
            metrics::gauge!("eventline_replica_lag_bytes").set(lag.bytes as f64);
            metrics::gauge!("eventline_replica_lag_seconds").set(lag.seconds);
        }
        Ok(Ok(None)) => {}
        Ok(Err(error)) => tracing::warn!(error = %error, "cannot read the replica lag"),
        Err(_) => tracing::warn!("the replica lag did not answer within 1 s"),
    }
}

/// Counts committed events by type, folding types past the cap into `other`.
pub(crate) fn count_event_type(event_type: &str, accepted: u64) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    let label = {
        let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.contains(event_type) {
            event_type.to_owned()
        } else if seen.len() < MAX_EVENT_TYPE_LABELS {
            seen.insert(event_type.to_owned());
            event_type.to_owned()
        } else {
            "other".to_owned()
        }
    };
    metrics::counter!("eventline_ingest_events_by_type_total", "event_type" => label)
        .increment(accepted);
}

/// Records `eventline_grpc_requests_total{rpc, code}` and the request duration for
/// every RPC, whether it came over gRPC or through the REST gateway.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for RpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let rpc = rpc_label(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // A trailers-only response (an early error) carries its status in the headers.
            let early = response
                .headers()
                .get("grpc-status")
                .map(|value| value.as_bytes().to_vec());
            let (parts, body) = response.into_parts();
            let mut metered = MeteredBody {
                inner: body,
                rpc,
                started,
                recorded: false,
            };
            if let Some(code) = early {
                metered.record(&String::from_utf8_lossy(&code));
            }
            Ok(Response::from_parts(parts, metered))
        })
    }
}

fn rpc_label(path: &str) -> String {
    // `/eventline.v1.IngestService/Track` → `IngestService/Track`; unknown paths fold.
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, method))
            if service.starts_with("eventline.v1.") || service.starts_with("grpc.") =>
        {
            format!("{}/{method}", service.rsplit('.').next().unwrap_or(service))
        }
        _ => "unknown".to_owned(),
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the RPC's status when its trailers pass.
    pub(crate) struct MeteredBody<B> {
        #[pin]
        inner: B,
        rpc: String,
        started: Instant,
        recorded: bool,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.recorded {
                // The client went away before the status: count it as cancelled.
                record(this.rpc, "1", *this.started);
            }
        }
    }
}

impl<B> MeteredBody<B> {
    fn record(&mut self, code: &str) {
        if !self.recorded {
            self.recorded = true;
            record(&self.rpc, code, self.started);
        }
    }
}

fn record(rpc: &str, code: &str, started: Instant) {
    let code = code_name(code);
    metrics::counter!("eventline_grpc_requests_total", "rpc" => rpc.to_owned(), "code" => code)
        .increment(1);
    metrics::histogram!("eventline_grpc_request_duration_seconds", "rpc" => rpc.to_owned())
        .record(started.elapsed().as_secs_f64());
}

fn code_name(code: &str) -> &'static str {
    let number: i32 = code.trim().parse().unwrap_or(2);
    match tonic::Code::from_i32(number) {
        tonic::Code::Ok => "ok",
        tonic::Code::Cancelled => "cancelled",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::DeadlineExceeded => "deadline_exceeded",
        tonic::Code::NotFound => "not_found",
        tonic::Code::AlreadyExists => "already_exists",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Unimplemented => "unimplemented",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Unauthenticated => "unauthenticated",
        _ => "internal",
    }
}

impl<B: Body<Data = Bytes>> Body for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(context);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && !*this.recorded
        {
            *this.recorded = true;
            let code = trailers
                .get("grpc-status")
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
            record(this.rpc, code.as_deref().unwrap_or("2"), *this.started);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_labels_are_short_and_bounded() {
        assert_eq!(
            rpc_label("/eventline.v1.IngestService/Track"),
            "IngestService/Track"
        );
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(rpc_label("/some/random/path"), "unknown");
    }
}
