//! The `eventline` binary: `serve` runs the server; `migrate`, `tenant` and `key` manage
//! a database directly; `send` sends events to a running server. It only parses
//! arguments and calls the library crates.

mod admin;
mod client;
mod read;
mod send;
mod settings;
mod telemetry;

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
    /// Applies pending database migrations and exits; on a database with the citus
    /// extension, also distributes the tables (README "Scale out").
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Fail unless the tables end up distributed on Citus, instead of running on one
        /// node when the extension is missing (the chart's database.citus).
        #[arg(long)]
        require_citus: bool,
    },
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
    Bench(eventline_bench::BenchArgs),
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
    #[command(flatten)]
    settings: settings::SettingFlags,
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
        self.database.load_with(self.settings.figment())
    }
}

/// Adds a flag that was given to the highest-priority config layer.
fn with_flag<T: serde::Serialize>(figment: Figment, key: &str, value: &Option<T>) -> Figment {
    match value {
        Some(value) => figment.merge(Serialized::default(key, value)),
        None => figment,
    }
}

/// Installs the log output and, when `tracing.otlp_endpoint` is set, the OTLP trace
/// exporter. Each has its own filter: `log.level` chooses what is logged, never what is
/// traced.
fn init_logging(config: &Config) -> anyhow::Result<Option<telemetry::Telemetry>> {
    use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = log_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let log = match config.log.format {
        LogFormat::Json => log.json().with_filter(filter).boxed(),
        LogFormat::Pretty => log.with_filter(filter).boxed(),
    };
    let mut layers = vec![log];
    let telemetry = match telemetry::Telemetry::start(&config.tracing)? {
        Some((telemetry, layer)) => {
            layers.push(layer);
            Some(telemetry)
        }
        None => None,
    };
    tracing_subscriber::registry().with(layers).init();
    Ok(telemetry)
}

/// Whether the pretty log format colours its output: only on a terminal, and never with
/// `NO_COLOR` set to anything (https://no-color.org), so files and pipes get plain text.
fn log_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
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
    let telemetry = init_logging(&config)?;
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
        "  console          http://{}/  (sign in with a query key)",
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
    let served = server
        .run(shutdown_signal())
        .await
        .context("eventline stopped with an error");
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    served
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate {
            database,
            require_citus,
        } => admin::migrate(database.load()?, require_citus).await,
        Command::Tenant { command, database } => admin::tenant(command, database.load()?).await,
        Command::Key { command, database } => admin::key(command, database.load()?).await,
        Command::Audit { args, database } => admin::audit(args, database.load()?).await,
        Command::Send(args) => send::run(args).await,
        Command::Import(args) => send::import(args).await,
        Command::Query(args) => read::query(args).await,
        Command::Tail(args) => read::tail(args).await,
        Command::Export(args) => read::export(args).await,
        Command::Bench(args) => eventline_bench::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::log_colour;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(
            !log_colour(false, None),
            "a file or a pipe gets no colour codes"
        );
        assert!(
            !log_colour(true, Some("1".into())),
            "NO_COLOR turns colour off"
        );
        assert!(
            log_colour(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
    }
}
