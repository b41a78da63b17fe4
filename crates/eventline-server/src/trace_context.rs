//! W3C trace context on both ports (README "Tracing"): each gRPC call and each REST
//! request gets a server span whose parent is the caller's `traceparent` (and
//! `tracestate`), read with the globally installed propagator. The spans are ordinary
//! `tracing` spans; the binary exports them over OTLP only when `tracing.otlp_endpoint`
//! is set, so with tracing off nothing here does more than `tracing` already did.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::Extractor;
use tower::Service;
use tracing::{Span, field::Empty, instrument::Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries a caller's trace and span id (a constant name, so
/// looking for it on every request parses nothing).
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Reads propagation headers out of an [`http::HeaderMap`] (gRPC metadata included).
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` continue the caller's trace when the request carries a `traceparent`.
/// Without one, or with tracing off, the span keeps the parent it was created with.
pub(crate) fn continue_callers_trace(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key(TRACEPARENT) {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    // Fails only when no OpenTelemetry layer is installed, i.e. tracing is off.
    let _ = span.set_parent(parent);
}

/// The server span of one gRPC call, named `package.Service/Method` as OpenTelemetry's
/// RPC conventions ask.
fn grpc_server_span(path: &str) -> Span {
    let full_method = path.trim_start_matches('/');
    let (service, method) = full_method.split_once('/').unwrap_or((full_method, ""));
    tracing::info_span!(
        "grpc.request",
        otel.name = full_method,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
    )
}

/// Records a gRPC status code (from the response head of a trailers-only response, or
/// from the trailers) on the call's span; OK is the only code that is not an error.
fn record_grpc_status(span: &Span, headers: &HeaderMap) {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i64>().ok())
    else {
        return;
    };
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "ERROR");
    }
}

/// A service of the gRPC port wrapped in a server span per call, continuing the caller's
/// trace (a layer: `tower::layer::layer_fn(GrpcTrace::new)`).
#[derive(Debug, Clone)]
pub(crate) struct GrpcTrace<S> {
    inner: S,
}

impl<S> GrpcTrace<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, ResBody> Service<Request<B>> for GrpcTrace<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = GrpcTraceFuture<S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = grpc_server_span(request.uri().path());
        continue_callers_trace(&span, request.headers());
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        GrpcTraceFuture {
            inner: tracing::Instrument::instrument(inner, span),
        }
    }
}

pin_project_lite::pin_project! {
    /// The call's future inside its span; records the status the response head carries,
    /// and hands the span on to the body, which ends it with the stream.
    pub(crate) struct GrpcTraceFuture<F> {
        #[pin]
        inner: Instrumented<F>,
    }
}

impl<F, ResBody, E> Future for GrpcTraceFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<TracedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let result = std::task::ready!(inner.as_mut().poll(context));
        let span = inner.as_ref().get_ref().span();
        Poll::Ready(result.map(|response| {
            record_grpc_status(span, response.headers());
            response.map(|body| TracedBody {
                inner: body,
                span: span.clone(),
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A gRPC response body holding its call's span open until the stream ends, and
    /// recording the status its trailers carry.
    pub(crate) struct TracedBody<B> {
        #[pin]
        inner: B,
        span: Span,
    }
}

impl<B: Body<Data = Bytes>> Body for TracedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(context);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            record_grpc_status(this.span, trailers);
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

/// Records the HTTP status of a REST request on its server span; 5xx are errors.
pub(crate) fn record_http_status(span: &Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_extractor_reads_visible_ascii_values_and_lists_names() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let extractor = HeaderExtractor(&headers);
        assert_eq!(
            extractor.get(TRACEPARENT.as_str()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(extractor.get("tracestate"), None);
        assert_eq!(extractor.keys(), vec![TRACEPARENT.as_str()]);
    }
}
