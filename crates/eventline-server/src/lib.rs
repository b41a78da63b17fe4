//! eventline's server: the gRPC services (Ingest, Query, Admin, health, reflection,
//! gRPC-Web), the group-commit writer, API-key auth, configuration and [`Server`], which
//! `main` and the integration tests run alike. It depends on the store, core and proto
//! crates and nothing depends on it but the binary.

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod budget;
pub mod bus;
pub mod config;
mod connection;
mod gateway;
mod health;
pub mod ingest;
mod lifecycle;
mod metered_alerts;
mod metered_lifecycle;
mod metered_store;
pub mod metrics;
mod parts;
pub mod quarantine;
pub mod query;
pub mod rate_limit;
mod readiness;
mod schemas;
mod search_indexer;
mod streams;
mod summaries;
mod tenant_cache;
mod tls;
mod trace_context;
pub mod webhook;
pub mod writer;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use eventline_core::{Scope, TenantId};
use eventline_store::Store;
use tokio::net::TcpListener;
use tracing::info;

pub use config::Config;

use crate::{
    auth::{Authenticator, issue_key},
    budget::MemoryBudget,
    bus::CommitBus,
    readiness::Readiness,
    tls::Tls,
    writer::{Writer, WriterOptions, WriterTasks},
};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

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
        let db_system = if config.uses_postgres() {
            "postgresql"
        } else {
            "sqlite"
        };
        let store = metered_store::MeteredStore::wrap(store, db_system);
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
        quarantine::register_metrics();
        lifecycle::register_metrics();
        summaries::register_metrics();
        search_indexer::register_metrics();
        streams::register_metrics();
        alerts::register_metrics();
        budget::register_metrics();
        connection::register_metrics();
        let (tls, tls_reloader) = match tls {
            Some((tls, reloader)) => (Some(tls), Some(reloader.spawn())),
            None => (None, None),
        };
        let bus = CommitBus::default();
        let (writer, writer_tasks) =
            Writer::start(Arc::clone(&store), writer_options(&config), bus.clone());
        let commit_listener = parts::spawn_commit_listener(&config, &bus);
        let (stop_accepting, stop_signal) = tokio::sync::watch::channel(false);
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = Readiness::default();
        let health_task = health::start(
            Arc::clone(&store),
            writer.clone(),
            health_reporter,
            readiness.clone(),
        )
        .await;
        let wake_lifecycle = Arc::new(tokio::sync::Notify::new());
        let lifecycle_task = lifecycle::LifecycleTask {
            store: Arc::clone(&store),
            interval: Duration::from_millis(config.lifecycle.interval_ms),
            dedupe_window: quarantine::dedupe_window(config.lifecycle.dedupe_window_ms),
            wake: Arc::clone(&wake_lifecycle),
        }
        .spawn();
        let summaries_task = summaries::SummariesTask {
            store: Arc::clone(&store),
            interval: Duration::from_millis(config.summaries.prepare_interval_ms),
            days: config.summaries.prepare_days,
        }
        .spawn();
        let search_indexer = search_indexer::SearchIndexer {
            store: Arc::clone(&store),
            interval: Duration::from_millis(config.search.index_interval_ms),
            batch_events: config.search.index_batch_events as usize,
            ingest: writer.load(),
        }
        .spawn();
        let streams_task = streams::StreamsTask {
            store: Arc::clone(&store),
            interval: Duration::from_millis(config.streams.interval_ms),
            batch_events: config.streams.batch_events as usize,
            nats_url: config.streams.nats_url.clone(),
            policy: webhook::RetryPolicy {
                max_attempts: config.streams.max_attempts,
                ..webhook::RetryPolicy::default()
            },
        }
        .spawn();
        let alerts_task = alerts::AlertsTask {
            evaluator: alerts::AlertEvaluator::new(
                Arc::clone(&store),
                webhook::RetryPolicy::default(),
            ),
            interval: Duration::from_millis(config.alerts.evaluate_interval_ms),
        }
        .spawn();
        let shared = parts::Shared {
            auth: Authenticator::new(Arc::clone(&store), config.admin.token.as_deref()),
            checks: quarantine::IngestChecks::new(
                Arc::clone(&store),
                config.lifecycle.quarantine_max_events,
            ),
            wake_lifecycle,
            store: Arc::clone(&store),
            writer,
            bus,
            budget: MemoryBudget::new(
                usize::try_from(config.limits.request_memory_bytes).unwrap_or(usize::MAX),
            ),
            readiness,
            stop: stop_signal.clone(),
        };
        let grpc_routes = parts::grpc_routes(&config, &shared, health_service)?;
        let metrics_task = parts::spawn_metrics_listener(metrics_listener, &shared);
        let http_task =
            parts::spawn_http_listener(http_listener, &config, &shared, &grpc_routes, tls.clone())?;
        let serving = parts::serve_grpc(listener, &config, grpc_routes, tls, stop_signal.clone())?;
        // The writer drains once its last handle, held by the services, is gone.
        drop(shared);
        info!(grpc_addr = %grpc_addr, http_addr = %http_addr, metrics_addr = %metrics_addr, store = store_kind(&config), tls = config.tls.enabled(), "eventline serving");
        let result = serve_until(serving, shutdown, stop_accepting, stop_signal).await;
        let _ = http_task.await;
        let _ = metrics_task.await;
        if let Some(streams) = streams_task {
            streams.stop().await;
        }
        for task in [
            Some(health_task),
            Some(lifecycle_task),
            summaries_task,
            search_indexer,
            alerts_task,
            tls_reloader,
            commit_listener,
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        drain_writer(writer_tasks).await;
        info!("eventline stopped");
        result
    }
}

/// Serves until `shutdown`, then stops accepting (`stop_accepting`) and gives open
/// requests [`SHUTDOWN_GRACE`] to finish.
async fn serve_until(
    serving: impl Future<Output = Result<(), tonic::transport::Error>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop_accepting: tokio::sync::watch::Sender<bool>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServeError> {
    tokio::spawn(async move {
        shutdown.await;
        info!("shutdown requested: draining in-flight requests");
        let _ = stop_accepting.send(true);
    });
    let grace = async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serving => served.map_err(ServeError::from),
        () = grace => {
            tracing::warn!("shutdown grace period over: closing remaining streams");
            Ok(())
        }
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
