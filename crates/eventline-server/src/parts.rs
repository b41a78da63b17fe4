//! The parts [`crate::Server::run`] is made of, one named function each: the gRPC
//! services and their routes, the three listeners and the commit listener. Limits and
//! timeouts are named constants here or settings in [`Config`].

use std::{future::Future, sync::Arc, time::Duration};

use eventline_proto::v1::{
    admin_service_server::AdminServiceServer, ingest_service_server::IngestServiceServer,
    query_service_server::QueryServiceServer,
};
use eventline_store::Store;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::{codec::CompressionEncoding, service::Routes};
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::{
    Config, SHUTDOWN_GRACE, ServeError,
    admin::AdminApi,
    auth::{self, Authenticator},
    budget::{self, MemoryBudget, MessageLimits},
    bus::CommitBus,
    connection::{self, Acceptor, ConnectionLimits},
    gateway,
    ingest::IngestApi,
    metrics,
    query::QueryApi,
    rate_limit::RateLimiter,
    readiness::Readiness,
    tls::{self, Tls},
    writer::Writer,
};

/// Largest response message; a page of events may be large, but never unbounded.
const MAX_ENCODING_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Largest AdminService request: names and ids, nothing bulky.
const MAX_ADMIN_MESSAGE_BYTES: usize = 1024 * 1024;
/// HTTP/2 receive windows of the gRPC port. Data a handler has not read yet waits in
/// these, so they bound what one connection can make the server hold beyond the memory
/// budget: connections × 1 MiB at most (README "Limits and timeouts").
const GRPC_CONNECTION_WINDOW: u32 = 1024 * 1024;
const GRPC_STREAM_WINDOW: u32 = 256 * 1024;
/// The metrics port serves scrapers and probes only.
const METRICS_CONNECTION_LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 64,
    first_byte_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
};
/// A scrape in flight at shutdown gets this long.
const METRICS_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What the services and listeners share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) writer: Writer,
    pub(crate) bus: CommitBus,
    pub(crate) budget: MemoryBudget,
    pub(crate) readiness: Readiness,
    pub(crate) checks: crate::quarantine::IngestChecks,
    pub(crate) wake_lifecycle: Arc<tokio::sync::Notify>,
    /// Turns true when the server stops accepting.
    pub(crate) stop: watch::Receiver<bool>,
}

impl Shared {
    /// The checks both ports run before reading a request's body.
    fn admission(&self) -> auth::Admission {
        auth::Admission {
            authenticator: self.auth.clone(),
            readiness: self.readiness.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// Wakes tails on this replica when any replica commits (PostgreSQL only).
pub(crate) fn spawn_commit_listener(config: &Config, bus: &CommitBus) -> Option<JoinHandle<()>> {
    let url = config
        .database
        .url
        .clone()
        .filter(|_| config.uses_postgres())?;
    let bus = bus.clone();
    Some(eventline_store::postgres::listen_for_commits(
        url,
        move || bus.notify(),
    ))
}

fn ingest_service(config: &Config, shared: &Shared) -> IngestServiceServer<IngestApi> {
    let limiter = Arc::new(RateLimiter::new(config.limits.events_per_second_per_key));
    IngestServiceServer::new(IngestApi::new(
        shared.auth.clone(),
        shared.writer.clone(),
        shared.budget.clone(),
        limiter,
        shared.checks.clone(),
    ))
    .max_decoding_message_size(eventline_core::limits::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES)
    .accept_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Zstd)
    .send_compressed(CompressionEncoding::Gzip)
}

fn query_service(shared: &Shared) -> QueryServiceServer<QueryApi> {
    QueryServiceServer::new(QueryApi::new(
        shared.auth.clone(),
        Arc::clone(&shared.store),
        shared.bus.clone(),
        shared.stop.clone(),
    ))
    .max_decoding_message_size(eventline_core::limits::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES)
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
}

fn admin_service(shared: &Shared) -> AdminServiceServer<AdminApi> {
    AdminServiceServer::new(AdminApi::new(
        shared.auth.clone(),
        Arc::clone(&shared.store),
        crate::admin::LifecycleParts {
            checks: shared.checks.clone(),
            writer: shared.writer.clone(),
            wake: Arc::clone(&shared.wake_lifecycle),
        },
    ))
    .max_decoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES)
}

/// Server reflection, v1 and v1alpha (grpcurl 1.8 speaks only v1alpha).
fn add_reflection(routes: Routes) -> Result<Routes, ServeError> {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(eventline_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(routes
        .add_service(configure().build_v1()?)
        .add_service(configure().build_v1alpha()?))
}

/// Every gRPC service behind the layers both ports share. Every RPC is measured, whether
/// it arrives over gRPC or through the gateway; its caller is authenticated before its
/// body is read, and its messages are read through the memory budget (layers run
/// bottom-up: activity, metrics, auth, body).
pub(crate) fn grpc_routes(
    config: &Config,
    shared: &Shared,
    health_service: HealthServer<impl Health>,
) -> Result<Routes, ServeError> {
    let routes = add_reflection(Routes::new(health_service))?
        .add_service(ingest_service(config, shared))
        .add_service(query_service(shared))
        .add_service(admin_service(shared));
    let message_limits = MessageLimits {
        budget: shared.budget.clone(),
        message_timeout: Duration::from_millis(config.grpc.message_timeout_ms),
    };
    Ok(Routes::from(
        routes
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                message_limits,
                budget::limit_grpc_body,
            ))
            .layer(axum::middleware::from_fn_with_state(
                shared.admission(),
                auth::authenticate_before_reading,
            ))
            .layer(metrics::RpcMetricsLayer)
            .layer(axum::middleware::from_fn(connection::track_activity)),
    ))
}

/// The metrics port: `/metrics`, `/healthz` and `/readyz`, always plaintext.
pub(crate) fn spawn_metrics_listener(listener: TcpListener, shared: &Shared) -> JoinHandle<()> {
    let app = metrics::router(
        Arc::clone(&shared.store),
        shared.writer.clone(),
        shared.bus.clone(),
        shared.budget.clone(),
        shared.readiness.clone(),
    );
    tokio::spawn(gateway::serve(
        Acceptor::new(listener, METRICS_CONNECTION_LIMITS),
        None,
        app,
        METRICS_CONNECTION_LIMITS.first_byte_timeout,
        shared.stop.clone(),
        METRICS_SHUTDOWN_GRACE,
    ))
}

/// The HTTP port: the REST gateway over `grpc_routes`, health, OpenAPI and docs.
pub(crate) fn spawn_http_listener(
    listener: TcpListener,
    config: &Config,
    shared: &Shared,
    grpc_routes: &Routes,
    tls: Option<Tls>,
) -> Result<JoinHandle<()>, ServeError> {
    let options = gateway::GatewayOptions {
        request_timeout: Duration::from_millis(config.http.request_timeout_ms),
        body_read_timeout: Duration::from_millis(config.http.body_read_timeout_ms),
        max_body_bytes: eventline_core::limits::MAX_MESSAGE_BYTES,
        cors_origins: config.http.cors_origins.clone(),
        tls: tls.is_some(),
    };
    let rest = gateway::Gateway::router(grpc_routes.clone(), shared.admission(), &options)
        .map_err(ServeError::Config)?;
    let limits = ConnectionLimits {
        max_connections: config.http.max_connections as usize,
        first_byte_timeout: Duration::from_millis(config.http.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.http.idle_timeout_ms),
    };
    Ok(tokio::spawn(gateway::serve(
        Acceptor::new(listener, limits),
        tls,
        rest,
        Duration::from_millis(config.http.header_read_timeout_ms),
        shared.stop.clone(),
        SHUTDOWN_GRACE,
    )))
}

/// The gRPC port (with gRPC-Web and CORS for browsers sending with write-only keys),
/// serving until `stop` turns true.
pub(crate) fn serve_grpc(
    listener: TcpListener,
    config: &Config,
    grpc_routes: Routes,
    tls: Option<Tls>,
    mut stop: watch::Receiver<bool>,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send, ServeError> {
    let cors = gateway::cors(&config.http.cors_origins).map_err(ServeError::Config)?;
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(config.grpc.max_concurrent_streams)
        .initial_connection_window_size(GRPC_CONNECTION_WINDOW)
        .initial_stream_window_size(GRPC_STREAM_WINDOW)
        .http2_keepalive_interval(Some(Duration::from_millis(
            config.grpc.keepalive_interval_ms,
        )))
        .http2_keepalive_timeout(Some(Duration::from_millis(
            config.grpc.keepalive_timeout_ms,
        )))
        .layer(cors)
        .layer(tonic_web::GrpcWebLayer::new())
        // The call's server span, continuing the caller's `traceparent` (README "Tracing"):
        // inside gRPC-Web, so it sees every call as gRPC (trailers included) and CORS
        // preflights get none.
        .layer(tower::layer::layer_fn(crate::trace_context::GrpcTrace::new))
        .add_routes(grpc_routes);
    let limits = ConnectionLimits {
        max_connections: config.grpc.max_connections as usize,
        first_byte_timeout: Duration::from_millis(config.grpc.first_byte_timeout_ms),
        idle_timeout: Duration::from_millis(config.grpc.idle_timeout_ms),
    };
    Ok(router.serve_with_incoming_shutdown(
        // Sockets get TCP_NODELAY (without it, responses written in pieces wait ~40 ms
        // for delayed ACKs), keep-alive, a connection cap and first-byte/idle deadlines.
        tls::incoming(
            Acceptor::new(listener, limits),
            tls,
            Duration::from_millis(config.grpc.first_byte_timeout_ms),
        ),
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        },
    ))
}
