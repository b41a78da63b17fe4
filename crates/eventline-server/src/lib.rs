//! eventline's server: the gRPC services (Ingest, Query, Admin, health, reflection,
//! gRPC-Web), the group-commit writer, API-key auth, configuration and [`Server`], which
//! `main` and the integration tests run alike. It depends on the store, core and proto
//! crates and nothing depends on it but the binary.

pub mod admin;
pub mod auth;
pub mod budget;
pub mod bus;
pub mod config;
mod connection;
mod gateway;
mod health;
pub mod ingest;
mod metered_store;
pub mod metrics;
pub mod query;
pub mod rate_limit;
mod readiness;
mod tls;
pub mod writer;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use eventline_core::{Scope, TenantId};
use eventline_proto::v1::{
    admin_service_server::AdminServiceServer, ingest_service_server::IngestServiceServer,
    query_service_server::QueryServiceServer,
};
use eventline_store::Store;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tracing::info;

pub use config::Config;

use crate::{
    admin::AdminApi,
    auth::{Authenticator, issue_key},
    budget::{MemoryBudget, MessageLimits},
    bus::CommitBus,
    connection::{Acceptor, ConnectionLimits},
    ingest::IngestApi,
    query::QueryApi,
    rate_limit::RateLimiter,
    readiness::Readiness,
    tls::Tls,
    writer::{Writer, WriterOptions, WriterTasks},
};

/// Largest response message; a page of events may be large, but never unbounded.
const MAX_ENCODING_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// HTTP/2 receive windows of the gRPC port. Data a handler has not read yet waits in
/// these, so they bound what one connection can make the server hold beyond the memory
/// budget: connections × 1 MiB at most (README "Limits and timeouts").
const GRPC_CONNECTION_WINDOW: u32 = 1024 * 1024;
const GRPC_STREAM_WINDOW: u32 = 256 * 1024;
/// The metrics port serves scrapers only.
const METRICS_CONNECTION_LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 64,
    first_byte_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
};

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open the store: {0}")]
    Store(#[from] eventline_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The key created on the first start of an empty database.
#[derive(Debug, Clone)]
pub struct BootstrapKey {
    pub tenant_id: TenantId,
    pub key_id: String,
    pub secret: String,
}

/// A started server: store open and migrated, listener bound, writer running.
#[derive(Debug)]
pub struct Server {
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
    grpc_addr: SocketAddr,
    http_listener: TcpListener,
    http_addr: SocketAddr,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    bootstrap_key: Option<BootstrapKey>,
    tls: Option<(Tls, tls::TlsReloader)>,
}

impl Server {
    /// Opens the store, applies migrations, bootstraps an empty database and binds the
    /// gRPC listener.
    pub async fn start(config: Config) -> Result<Self, ServeError> {
        config.validate().map_err(ServeError::Config)?;
        let tls = Tls::load(&config.tls).map_err(ServeError::Config)?;
        let max_connections = match config.database.max_connections {
            0 => writer_workers(&config) as u32 + 4,
            configured => configured,
        };
        let store = eventline_store::open(
            config.database.url.as_deref(),
            config.database.read_url.as_deref(),
            &config.data.dir,
            max_connections,
        )
        .await?;
        let store = metered_store::MeteredStore::wrap(store);
        let bootstrap_key = bootstrap(&*store, config.bootstrap.api_key.as_deref()).await?;
        let (listener, grpc_addr) = bind(config.grpc.addr).await?;
        let (http_listener, http_addr) = bind(config.http.addr).await?;
        let (metrics_listener, metrics_addr) = bind(config.metrics.addr).await?;
        Ok(Self {
            config,
            store,
            listener,
            grpc_addr,
            http_listener,
            http_addr,
            metrics_listener,
            metrics_addr,
            bootstrap_key,
            tls,
        })
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP (REST gateway) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound Prometheus metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The key created by this start, if the database was empty.
    pub fn bootstrap_key(&self) -> Option<&BootstrapKey> {
        self.bootstrap_key.as_ref()
    }

    /// The store, for tests that check what was written.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
    /// finish (bounded) and commits every queued event before returning.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            config,
            store,
            listener,
            grpc_addr,
            http_listener,
            http_addr,
            metrics_listener,
            metrics_addr,
            tls,
            ..
        } = self;
        metrics::handle();
        rate_limit::register_metrics();
        let (tls, tls_reloader) = match tls {
            Some((tls, reloader)) => (Some(tls), Some(reloader.spawn())),
            None => (None, None),
        };
        let bus = CommitBus::default();
        let (writer, writer_tasks) =
            Writer::start(Arc::clone(&store), writer_options(&config), bus.clone());
        let commit_listener = config
            .database
            .url
            .clone()
            .filter(|_| config.uses_postgres())
            .map(|url| {
                let bus = bus.clone();
                eventline_store::postgres::listen_for_commits(url, move || bus.notify())
            });
        let (stop_accepting, stop_signal) = tokio::sync::watch::channel(false);
        let auth = Authenticator::new(Arc::clone(&store), config.admin.token.as_deref());
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = Readiness::default();
        let health_task = health::start(
            Arc::clone(&store),
            writer.clone(),
            health_reporter,
            readiness.clone(),
        )
        .await;
        let budget = MemoryBudget::new(
            usize::try_from(config.limits.request_memory_bytes).unwrap_or(usize::MAX),
        );

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(eventline_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(eventline_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let max_message = eventline_core::limits::MAX_MESSAGE_BYTES;
        let limiter = Arc::new(RateLimiter::new(config.limits.events_per_second_per_key));
        let ingest = IngestServiceServer::new(IngestApi::new(
            auth.clone(),
            writer.clone(),
            budget.clone(),
            limiter,
        ))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
        let query = QueryServiceServer::new(QueryApi::new(
            auth.clone(),
            Arc::clone(&store),
            bus.clone(),
            stop_signal.clone(),
        ))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
        let admin = AdminServiceServer::new(AdminApi::new(auth.clone(), Arc::clone(&store)))
            .max_decoding_message_size(1024 * 1024)
            .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES);
        let grpc_routes = tonic::service::Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ingest)
            .add_service(query)
            .add_service(admin);
        // Every RPC is measured, whether it arrives over gRPC or through the gateway; its
        // caller is authenticated before its body is read, and its messages are read
        // through the memory budget (layers run bottom-up: activity, metrics, auth, body).
        let message_limits = MessageLimits {
            budget: budget.clone(),
            message_timeout: Duration::from_millis(config.grpc.message_timeout_ms),
        };
        let grpc_routes = tonic::service::Routes::from(
            grpc_routes
                .into_axum_router()
                .layer(axum::middleware::from_fn_with_state(
                    message_limits,
                    budget::limit_grpc_body,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    (auth.clone(), readiness.clone()),
                    auth::authenticate_before_reading,
                ))
                .layer(metrics::RpcMetricsLayer)
                .layer(axum::middleware::from_fn(connection::track_activity)),
        );
        let gateway_options = gateway::GatewayOptions {
            request_timeout: Duration::from_millis(config.http.request_timeout_ms),
            body_read_timeout: Duration::from_millis(config.http.body_read_timeout_ms),
            max_body_bytes: eventline_core::limits::MAX_MESSAGE_BYTES,
            cors_origins: config.http.cors_origins.clone(),
        };
        let rest = gateway::Gateway::router(
            grpc_routes.clone(),
            auth.clone(),
            readiness.clone(),
            budget.clone(),
            &gateway_options,
        )
        .map_err(ServeError::Config)?;
        let metrics_app = metrics::router(
            Arc::clone(&store),
            writer.clone(),
            bus.clone(),
            budget.clone(),
            readiness.clone(),
        );
        let metrics_task = tokio::spawn(gateway::serve(
            Acceptor::new(metrics_listener, METRICS_CONNECTION_LIMITS),
            None,
            metrics_app,
            METRICS_CONNECTION_LIMITS.first_byte_timeout,
            stop_signal.clone(),
            Duration::from_secs(1),
        ));
        drop(writer);
        let http_task = tokio::spawn(gateway::serve(
            Acceptor::new(http_listener, http_connection_limits(&config)),
            tls.clone(),
            rest,
            Duration::from_millis(config.http.header_read_timeout_ms),
            stop_signal.clone(),
            SHUTDOWN_GRACE,
        ));

        // Browsers call gRPC-Web on this port from other origins (write-only keys in pages).
        let grpc_cors = gateway::cors(&config.http.cors_origins).map_err(ServeError::Config)?;
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
            .trace_fn(|request| tracing::info_span!("grpc.request", path = %request.uri().path()))
            .layer(grpc_cors)
            .layer(tonic_web::GrpcWebLayer::new())
            .add_routes(grpc_routes);
        let mut wait_for_stop = stop_signal.clone();
        let serving = router.serve_with_incoming_shutdown(
            // Sockets get TCP_NODELAY (without it, responses written in pieces wait ~40 ms
            // for delayed ACKs), keep-alive, a connection cap and first-byte/idle deadlines.
            tls::incoming(
                Acceptor::new(listener, grpc_connection_limits(&config)),
                tls,
                Duration::from_millis(config.grpc.first_byte_timeout_ms),
            ),
            async move {
                let _ = wait_for_stop.wait_for(|stopped| *stopped).await;
            },
        );
        info!(grpc_addr = %grpc_addr, http_addr = %http_addr, metrics_addr = %metrics_addr, store = store_kind(&config), tls = config.tls.enabled(), "eventline serving");
        tokio::spawn(async move {
            shutdown.await;
            info!("shutdown requested: draining in-flight requests");
            let _ = stop_accepting.send(true);
        });
        let mut grace_signal = stop_signal;
        let grace = async move {
            let _ = grace_signal.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let result = tokio::select! {
            served = serving => served.map_err(ServeError::from),
            () = grace => {
                tracing::warn!("shutdown grace period over: closing remaining streams");
                Ok(())
            }
        };
        let _ = http_task.await;
        let _ = metrics_task.await;
        health_task.abort();
        if let Some(reloader) = tls_reloader {
            reloader.abort();
        }
        if let Some(listener) = commit_listener {
            listener.abort();
        }
        drain_writer(writer_tasks).await;
        info!("eventline stopped");
        result
    }
}

/// Runs a server until `shutdown`: the library entry point `main` calls.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::start(config).await?.run(shutdown).await
}

/// Accept backlog of each listener (the kernel caps it at `net.core.somaxconn`): room for
/// the connections that arrive while a listener is at its cap and closing silent ones.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` and reports the address actually bound (for port 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bind_error = |source| ServeError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(bind_error)?;
    socket.set_reuseaddr(true).map_err(bind_error)?;
    socket.bind(addr).map_err(bind_error)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((listener, bound))
}

async fn drain_writer(tasks: WriterTasks) {
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.drain())
        .await
        .is_err()
    {
        tracing::warn!(
            "writer did not drain in time; unacknowledged events are left to client retries"
        );
    }
}

/// Creates the `default` tenant and an ingest+query key when the database has no tenant.
async fn bootstrap(
    store: &dyn Store,
    secret: Option<&str>,
) -> Result<Option<BootstrapKey>, ServeError> {
    if !store.list_tenants().await?.is_empty() {
        return Ok(None);
    }
    let issued = issue_key(
        TenantId::generate(),
        vec![Scope::Ingest, Scope::Query],
        secret,
    );
    if !store.bootstrap("default", &issued.key).await? {
        return Ok(None);
    }
    Ok(Some(BootstrapKey {
        tenant_id: issued.key.tenant_id,
        key_id: issued.key.key_id,
        secret: issued.secret,
    }))
}

fn grpc_connection_limits(config: &Config) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: config.grpc.max_connections as usize,
        first_byte_timeout: Duration::from_millis(config.grpc.first_byte_timeout_ms),
        idle_timeout: Duration::from_millis(config.grpc.idle_timeout_ms),
    }
}

fn http_connection_limits(config: &Config) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: config.http.max_connections as usize,
        first_byte_timeout: Duration::from_millis(config.http.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.http.idle_timeout_ms),
    }
}

fn writer_workers(config: &Config) -> usize {
    match config.writer.workers {
        0 if config.uses_postgres() => 2,
        0 => 1,
        workers => workers as usize,
    }
}

fn writer_options(config: &Config) -> WriterOptions {
    WriterOptions {
        queue_events: config.writer.queue_events as usize,
        max_batch_events: config.writer.max_batch_events as usize,
        workers: writer_workers(config),
        enqueue_timeout: Duration::from_millis(config.writer.enqueue_timeout_ms),
    }
}

fn store_kind(config: &Config) -> &'static str {
    if config.uses_postgres() {
        "postgres"
    } else {
        "sqlite"
    }
}
