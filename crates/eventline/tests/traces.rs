//! OpenTelemetry tracing against a real OTLP receiver (issue #27, part 4): the test runs
//! an OTLP/gRPC `TraceService` on a free port, starts the real binary pointed at it, and
//! reads back what the server exported. A caller's W3C `traceparent` must continue into
//! the server span of a gRPC call and of a REST request, and on into the spans of auth,
//! validation, the writer's commit and a store call; without an endpoint nothing is
//! exported, and spans still queued at SIGTERM are flushed before the process exits. A
//! collector on `https://` is reached over TLS, trusted through `SSL_CERT_FILE`.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{API_KEY, ServerProcess, authority::Authority, free_port, spawn_server_with};
use eventline_proto::v1::{self, ingest_service_client::IngestServiceClient};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value},
    trace::v1::{Span, span::SpanKind},
};
use tokio_stream::wrappers::TcpListenerStream;

/// One exported span and the `service.name` of the resource that sent it.
#[derive(Debug, Clone)]
struct Received {
    service_name: String,
    span: Span,
}

/// An OTLP/gRPC trace receiver: keeps every span exported to it, counts export calls.
#[derive(Debug, Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    exports: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        *self.exports.lock().unwrap() += 1;
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| string_attribute(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans.into_iter().map(|span| Received {
                    service_name: service_name.clone(),
                    span,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves on a free port of 127.0.0.1 for the rest of the test.
    async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, addr)
    }

    /// [`Receiver::start`] speaking TLS with `certificate` and `key` (PEM files), on
    /// localhost; returns its port.
    async fn start_tls(certificate: &str, key: &str) -> (Self, u16) {
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(certificate).unwrap(),
            std::fs::read(key).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, port)
    }

    fn trace(&self, trace_id: &[u8]) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|received| received.span.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// The spans of `trace_id` once every name in `names` is among them (the batch
    /// processor exports on its own schedule); panics after a deadline.
    async fn wait_for_trace(&self, trace_id: &[u8], names: &[&str]) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let trace = self.trace(trace_id);
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|name| !trace.iter().any(|received| received.span.name == *name))
                .collect();
            if missing.is_empty() {
                return trace;
            }
            assert!(
                Instant::now() < deadline,
                "trace {} lacks {missing:?}; it has {:?}",
                hex(trace_id),
                trace
                    .iter()
                    .map(|received| &received.span.name)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            any_value::Value::StringValue(text) => text.clone(),
            any_value::Value::IntValue(number) => number.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A caller's span: random trace and span ids, as a `traceparent` header.
struct Caller {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

impl Caller {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4();
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        Self {
            trace_id: *id.as_bytes(),
            span_id,
        }
    }

    /// `traceparent` with the sampled flag set, or not.
    fn traceparent(&self, sampled: bool) -> String {
        let flags = if sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", hex(&self.trace_id), hex(&self.span_id))
    }
}

async fn start_traced_server(
    receiver: SocketAddr,
    schedule_delay_ms: &str,
    database_url: &str,
) -> ServerProcess {
    let endpoint = format!("http://{receiver}");
    spawn_server_with(
        database_url,
        free_port(),
        &[
            ("EVENTLINE_TRACING_OTLP_ENDPOINT", endpoint.as_str()),
            ("EVENTLINE_TRACING_SERVICE_NAME", "eventline-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", schedule_delay_ms),
        ],
    )
    .await
}

/// An IngestService client of `server`.
async fn ingest_client(server: &ServerProcess) -> IngestServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    IngestServiceClient::new(channel)
}

/// `message` with the test's key and `traceparent` in its metadata.
fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", API_KEY.parse().unwrap());
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

fn signup(event_id: &str) -> v1::Event {
    v1::Event {
        event_id: event_id.into(),
        event_type: "signup".into(),
        user_id: "u1".into(),
        ..Default::default()
    }
}

/// Sends Track over gRPC with `traceparent` in the metadata.
async fn track_over_grpc(server: &ServerProcess, traceparent: &str, event_id: &str) {
    let request = v1::TrackRequest {
        event: Some(signup(event_id)),
    };
    let response = ingest_client(server)
        .await
        .track(traced(request, traceparent))
        .await
        .expect("Track over gRPC");
    assert_eq!(
        response.into_inner().result.unwrap().status(),
        v1::IngestStatus::Accepted
    );
}

/// Sends one batch over IngestBidi with `traceparent` in the metadata, and reads the
/// stream to its end.
async fn ingest_bidi_over_grpc(server: &ServerProcess, traceparent: &str, event_id: &str) {
    let batch = v1::IngestBidiRequest {
        sequence: 1,
        events: vec![signup(event_id)],
        sent_at: None,
    };
    let outgoing = tokio_stream::iter(vec![batch]);
    let mut acks = ingest_client(server)
        .await
        .ingest_bidi(traced(outgoing, traceparent))
        .await
        .expect("IngestBidi")
        .into_inner();
    let ack = acks.message().await.unwrap().expect("an ack");
    assert_eq!(ack.results[0].status(), v1::IngestStatus::Accepted);
    while acks.message().await.unwrap().is_some() {}
}

/// Sends Track as gRPC-Web (HTTP/1.1, as a browser does) with a `traceparent` header.
async fn track_over_grpc_web(server: &ServerProcess, traceparent: &str, event_id: &str) {
    let message = prost::Message::encode_to_vec(&v1::TrackRequest {
        event: Some(signup(event_id)),
    });
    let mut framed = vec![0u8];
    framed.extend(u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend(message);
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/eventline.v1.IngestService/Track",
            server.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-api-key", API_KEY)
        .header("traceparent", traceparent)
        .body(framed)
        .send()
        .await
        .expect("Track over gRPC-Web");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body = response.bytes().await.unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("grpc-status:0"),
        "gRPC-Web's trailers, in the body, say OK"
    );
}

/// Sends `POST /v1/events` with a `traceparent` header.
async fn track_over_rest(server: &ServerProcess, traceparent: &str, event_id: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/events", server.http_addr))
        .header("x-api-key", API_KEY)
        .header("traceparent", traceparent)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"event_id": "{event_id}", "event_type": "signup", "user_id": "u2"}}"#
        ))
        .send()
        .await
        .expect("POST /v1/events");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
}

/// Stops the server with SIGTERM and waits for it to exit by itself (asynchronously: the
/// receiver runs on this test's runtime and must answer the server's last export).
async fn terminate(server: &mut ServerProcess) {
    use nix::{sys::signal, unistd::Pid};
    let pid = Pid::from_raw(i32::try_from(server.child.id()).unwrap());
    signal::kill(pid, signal::Signal::SIGTERM).expect("SIGTERM the server");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not stop within 60 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn the_span<'a>(trace: &'a [Received], name: &str) -> &'a Span {
    &trace
        .iter()
        .find(|received| received.span.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
        .span
}

/// The spans of one request's work below its server span, each in the caller's trace.
const WORK_SPANS: [&str; 4] = [
    "auth.authenticate",
    "ingest.validate",
    "writer.commit",
    "store.append",
];

/// Checks that the server span continues `caller` and that the work spans descend from it.
fn assert_continues(trace: &[Received], server_span_name: &str, caller: &Caller) {
    let server_span = the_span(trace, server_span_name);
    assert_eq!(
        server_span.parent_span_id, caller.span_id,
        "{server_span_name}'s parent must be the caller's span"
    );
    assert_eq!(server_span.kind, SpanKind::Server as i32);
    assert!(
        trace
            .iter()
            .all(|received| received.service_name == "eventline-under-test"),
        "tracing.service_name names the resource"
    );
    let by_id = |id: &[u8]| {
        trace
            .iter()
            .find(|received| received.span.span_id == id)
            .map(|received| &received.span)
    };
    for name in WORK_SPANS {
        // Walk up the parents: each work span must reach the server span.
        let mut span = the_span(trace, name);
        while span.span_id != server_span.span_id {
            span = by_id(&span.parent_span_id).unwrap_or_else(|| {
                panic!("{name} does not descend from {server_span_name} in this trace")
            });
        }
    }
    let store = the_span(trace, "store.append");
    assert_eq!(
        string_attribute(&store.attributes, "db.system").as_deref(),
        Some("postgresql")
    );
}

#[tokio::test]
async fn a_traceparent_on_grpc_and_on_rest_continues_into_auth_validation_commit_and_store_spans() {
    let (receiver, receiver_addr) = Receiver::start().await;
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let server = start_traced_server(receiver_addr, "100", &database_url).await;

    let grpc_caller = Caller::new();
    track_over_grpc(&server, &grpc_caller.traceparent(true), "traced-grpc").await;
    let grpc_attributes = [
        ("rpc.system", "grpc"),
        ("rpc.service", "eventline.v1.IngestService"),
        ("rpc.method", "Track"),
        ("rpc.grpc.status_code", "0"),
    ];
    let grpc_span = "eventline.v1.IngestService/Track";
    assert_traced(&receiver, &grpc_caller, grpc_span, &grpc_attributes).await;

    // gRPC-Web is traced as gRPC, its status included.
    let web_caller = Caller::new();
    track_over_grpc_web(&server, &web_caller.traceparent(true), "traced-web").await;
    let web_attributes = [("rpc.method", "Track"), ("rpc.grpc.status_code", "0")];
    assert_traced(&receiver, &web_caller, grpc_span, &web_attributes).await;

    // A stream's batches are validated and committed in tasks of their own.
    let bidi_caller = Caller::new();
    ingest_bidi_over_grpc(&server, &bidi_caller.traceparent(true), "traced-bidi").await;
    let bidi_attributes = [("rpc.method", "IngestBidi"), ("rpc.grpc.status_code", "0")];
    let bidi_span = "eventline.v1.IngestService/IngestBidi";
    assert_traced(&receiver, &bidi_caller, bidi_span, &bidi_attributes).await;

    let rest_caller = Caller::new();
    track_over_rest(&server, &rest_caller.traceparent(true), "traced-rest").await;
    let rest_attributes = [
        ("http.request.method", "POST"),
        ("http.route", "/v1/events"),
        ("http.response.status_code", "201"),
    ];
    assert_traced(&receiver, &rest_caller, "POST /v1/events", &rest_attributes).await;
}

/// Waits for `caller`'s trace to hold `server_span_name` and the work spans, then checks
/// that they continue the caller's span and that the server span has `attributes`.
async fn assert_traced(
    receiver: &Receiver,
    caller: &Caller,
    server_span_name: &str,
    attributes: &[(&str, &str)],
) {
    let mut wanted = vec![server_span_name];
    wanted.extend(WORK_SPANS);
    let trace = receiver.wait_for_trace(&caller.trace_id, &wanted).await;
    assert_continues(&trace, server_span_name, caller);
    let server_span = the_span(&trace, server_span_name);
    for (key, value) in attributes {
        assert_eq!(
            string_attribute(&server_span.attributes, key).as_deref(),
            Some(*value),
            "{server_span_name}: {key}"
        );
    }
}

#[tokio::test]
async fn spans_reach_an_https_collector_whose_ca_ssl_cert_file_names() {
    let directory = tempfile::tempdir().unwrap();
    let authority = Authority::new(directory.path(), "collector");
    let (certificate, key) = authority.server_certificate();
    let (receiver, port) = Receiver::start_tls(&certificate, &key).await;
    let endpoint = format!("https://localhost:{port}");
    let ca = authority.ca();
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let server = spawn_server_with(
        &database_url,
        free_port(),
        &[
            ("EVENTLINE_TRACING_OTLP_ENDPOINT", endpoint.as_str()),
            ("EVENTLINE_TRACING_SERVICE_NAME", "eventline-under-test"),
            ("SSL_CERT_FILE", ca.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let caller = Caller::new();
    track_over_grpc(&server, &caller.traceparent(true), "traced-over-tls").await;
    let attributes = [("rpc.method", "Track"), ("rpc.grpc.status_code", "0")];
    assert_traced(
        &receiver,
        &caller,
        "eventline.v1.IngestService/Track",
        &attributes,
    )
    .await;
}

#[tokio::test]
async fn spans_still_queued_at_sigterm_are_exported_before_exit_and_unsampled_callers_are_not() {
    let (receiver, receiver_addr) = Receiver::start().await;
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    // A schedule far longer than the test: only the shutdown flush can export these.
    let mut server = start_traced_server(receiver_addr, "600000", &database_url).await;
    let sampled = Caller::new();
    track_over_grpc(&server, &sampled.traceparent(true), "queued-at-sigterm").await;
    let unsampled = Caller::new();
    track_over_rest(&server, &unsampled.traceparent(false), "not-sampled").await;
    terminate(&mut server).await;
    // The process has exited, so whatever it exported has already been received.
    let trace = receiver.trace(&sampled.trace_id);
    let names: Vec<&str> = trace
        .iter()
        .map(|received| received.span.name.as_str())
        .collect();
    for name in ["eventline.v1.IngestService/Track", "writer.commit"] {
        assert!(
            names.contains(&name),
            "{name} was lost at shutdown: {names:?}"
        );
    }
    assert!(
        receiver.trace(&unsampled.trace_id).is_empty(),
        "a caller that did not sample its trace gets no spans exported"
    );
    let everything = receiver.spans.lock().unwrap();
    assert!(
        !everything
            .iter()
            .any(|received| received.span.name == "store.ready"),
        "the health check's store calls, outside any span, are not traces of their own"
    );
}

#[tokio::test]
async fn without_an_endpoint_the_server_serves_traced_calls_and_exports_nothing() {
    let (receiver, receiver_addr) = Receiver::start().await;
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    // The SDK's own variable alone must not turn tracing on: only tracing.otlp_endpoint.
    let endpoint = format!("http://{receiver_addr}");
    let mut server = spawn_server_with(
        &database_url,
        free_port(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ],
    )
    .await;
    let caller = Caller::new();
    track_over_grpc(&server, &caller.traceparent(true), "untraced-grpc").await;
    track_over_rest(&server, &caller.traceparent(true), "untraced-rest").await;
    terminate(&mut server).await;
    assert_eq!(
        *receiver.exports.lock().unwrap(),
        0,
        "nothing may be exported without tracing.otlp_endpoint"
    );
}
