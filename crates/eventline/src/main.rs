//! The `eventline` binary: `serve` runs the server; `migrate`, `tenant` and `key` manage
//! a database directly; `send` sends events to a running server. It only parses
//! arguments and calls the library crates.

mod admin;
mod bench;
mod client;
mod read;
mod send;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eventline_server::{Config, Server, config::LogFormat};
use figment::{Figment, providers::Serialized};

/// With glibc malloc, allocation (malloc, free, chunk consolidation) was the largest share
/// of the server's ingest CPU (perf during `eventline bench ingest`). jemalloc cut server
/// CPU per event from 17.8 to 7.6 µs at the same peak RSS (mimalloc: 10.8 µs, twice the RSS).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Self-hosted event tracking: ingest over gRPC, store in PostgreSQL or SQLite.
#[derive(Debug, Parser)]
#[command(name = "eventline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server (SQLite in ./eventline-data unless a database URL is given).
    Serve(ServeArgs),
    /// Applies pending database migrations and exits.
    Migrate(DatabaseArgs),
    /// Manages tenants directly in the database.
    Tenant {
        #[command(subcommand)]
        command: admin::TenantCommand,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Manages API keys directly in the database.
    Key {
        #[command(subcommand)]
        command: admin::KeyCommand,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Lists the audit trail of admin actions, newest first, from the database.
    Audit {
        #[command(flatten)]
        args: admin::AuditArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Sends one event from flags, or NDJSON events from stdin, to a running server.
    Send(send::SendArgs),
    /// Streams NDJSON events from stdin to a server, with a progress bar.
    Import(send::ImportArgs),
    /// Lists, counts, ranks and charts events.
    Query(read::QueryArgs),
    /// Follows events live, optionally replaying from a time or cursor first.
    Tail(read::TailArgs),
    /// Writes every matching event, oldest first, as NDJSON to stdout.
    Export(read::ExportArgs),
    /// Measures ingest and query performance against a real PostgreSQL.
    Bench(bench::BenchArgs),
}

/// Where the database is. Each flag is also read from the environment and the config file.
#[derive(Debug, Args)]
struct DatabaseArgs {
    /// TOML config file (keys as in `[database] url = …`).
    #[arg(long, env = "EVENTLINE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// PostgreSQL URL (postgres://…); unset means embedded SQLite in --data-dir
    /// [env: EVENTLINE_DATABASE_URL, DATABASE_URL].
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Directory of the embedded SQLite store [env: EVENTLINE_DATA_DIR] [default: ./eventline-data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

/// Settings of `serve`; every one also comes from `EVENTLINE_*` or the config file.
#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// gRPC listen address [env: EVENTLINE_GRPC_ADDR] [default: 0.0.0.0:50051].
    #[arg(long)]
    grpc_addr: Option<String>,
    /// REST/JSON listen address [env: EVENTLINE_HTTP_ADDR] [default: 0.0.0.0:8080].
    #[arg(long)]
    http_addr: Option<String>,
    /// Prometheus metrics listen address [env: EVENTLINE_METRICS_ADDR] [default: 0.0.0.0:9090].
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Admin token for AdminService, at least 16 characters [env: EVENTLINE_ADMIN_TOKEN].
    #[arg(long)]
    admin_token: Option<String>,
    /// Secret of the first API key on an empty database [env: EVENTLINE_BOOTSTRAP_API_KEY].
    #[arg(long)]
    bootstrap_api_key: Option<String>,
    /// PostgreSQL replica for reads [env: EVENTLINE_DATABASE_READ_URL].
    #[arg(long)]
    database_read_url: Option<String>,
    /// Log format, pretty or json [env: EVENTLINE_LOG_FORMAT] [default: pretty].
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter such as info or eventline=debug [env: EVENTLINE_LOG_LEVEL] [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// Most events coalesced into one transaction [env: EVENTLINE_WRITER_MAX_BATCH_EVENTS] [default: 5000].
    #[arg(long)]
    writer_max_batch_events: Option<u32>,
    /// Most events waiting for a commit [env: EVENTLINE_WRITER_QUEUE_EVENTS] [default: 100000].
    #[arg(long)]
    writer_queue_events: Option<u32>,
    /// Parallel commit workers; 0 picks 2 on PostgreSQL, 1 on SQLite [env: EVENTLINE_WRITER_WORKERS].
    #[arg(long)]
    writer_workers: Option<u32>,
    /// Ingest events per second of a key without its own limit, per replica; unset is
    /// unlimited [env: EVENTLINE_LIMITS_EVENTS_PER_SECOND_PER_KEY].
    #[arg(long)]
    events_per_second_per_key: Option<u32>,
    /// PEM certificate chain: serve gRPC and HTTP over TLS [env: EVENTLINE_TLS_CERT_PATH].
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [env: EVENTLINE_TLS_KEY_PATH].
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates it signed (mTLS) [env: EVENTLINE_TLS_CLIENT_CA_PATH].
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
}

impl DatabaseArgs {
    fn overrides(&self) -> Figment {
        let figment = with_flag(Figment::new(), "database.url", &self.database_url);
        with_flag(figment, "data.dir", &self.data_dir)
    }

    fn load(&self) -> anyhow::Result<Config> {
        self.load_with(Figment::new())
    }

    fn load_with(&self, more: Figment) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), self.overrides().merge(more))
            .map_err(anyhow::Error::msg)
    }
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let flags = Figment::new();
        let flags = with_flag(flags, "grpc.addr", &self.grpc_addr);
        let flags = with_flag(flags, "http.addr", &self.http_addr);
        let flags = with_flag(flags, "metrics.addr", &self.metrics_addr);
        let flags = with_flag(flags, "admin.token", &self.admin_token);
        let flags = with_flag(flags, "database.read_url", &self.database_read_url);
        let flags = with_flag(flags, "bootstrap.api_key", &self.bootstrap_api_key);
        let flags = with_flag(flags, "log.format", &self.log_format);
        let flags = with_flag(flags, "log.level", &self.log_level);
        let flags = with_flag(
            flags,
            "writer.max_batch_events",
            &self.writer_max_batch_events,
        );
        let flags = with_flag(flags, "writer.queue_events", &self.writer_queue_events);
        let flags = with_flag(flags, "writer.workers", &self.writer_workers);
        let flags = with_flag(
            flags,
            "limits.events_per_second_per_key",
            &self.events_per_second_per_key,
        );
        let flags = with_flag(flags, "tls.cert_path", &self.tls_cert);
        let flags = with_flag(flags, "tls.key_path", &self.tls_key);
        let flags = with_flag(flags, "tls.client_ca_path", &self.tls_client_ca);
        self.database.load_with(flags)
    }
}

/// Adds a flag that was given to the highest-priority config layer.
fn with_flag<T: serde::Serialize>(figment: Figment, key: &str, value: &Option<T>) -> Figment {
    match value {
        Some(value) => figment.merge(Serialized::default(key, value)),
        None => figment,
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    init_logging(&config);
    let store_description = match &config.database.url {
        Some(_) => "PostgreSQL".to_owned(),
        None => format!("SQLite in {}", config.data.dir.display()),
    };
    let server = Server::start(config)
        .await
        .context("eventline could not start")?;
    println!("eventline with {store_description}");
    println!("  gRPC, gRPC-Web   {}", server.grpc_addr());
    println!(
        "  REST/JSON        http://{}  (docs: /docs, OpenAPI: /openapi.yaml)",
        server.http_addr()
    );
    println!(
        "  metrics          http://{}/metrics",
        server.metrics_addr()
    );
    if let Some(key) = server.bootstrap_key() {
        println!();
        println!(
            "First start: created tenant \"default\" ({}) and an ingest+query API key.",
            key.tenant_id
        );
        println!("It is shown only this once; store it now:");
        println!();
        println!("    {}", key.secret);
        println!();
        println!("Try it:");
        println!("    export EVENTLINE_API_KEY={}", key.secret);
        println!("    eventline send --type signup --user u1 --prop plan=pro");
    }
    server
        .run(shutdown_signal())
        .await
        .context("eventline stopped with an error")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(database) => admin::migrate(database.load()?).await,
        Command::Tenant { command, database } => admin::tenant(command, database.load()?).await,
        Command::Key { command, database } => admin::key(command, database.load()?).await,
        Command::Audit { args, database } => admin::audit(args, database.load()?).await,
        Command::Send(args) => send::run(args).await,
        Command::Import(args) => send::import(args).await,
        Command::Query(args) => read::query(args).await,
        Command::Tail(args) => read::tail(args).await,
        Command::Export(args) => read::export(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
