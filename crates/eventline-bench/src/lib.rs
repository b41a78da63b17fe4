//! `eventline bench`: end-to-end ingest and query measurements against a real
//! PostgreSQL, each reported with an in-run baseline so figures read as ratios. A crate
//! of its own so the binary stays the product; the benches start `eventline serve` from
//! the running executable, which must be the `eventline` binary.

mod capture;
mod generator;
mod ingest;
mod lifecycle;
mod nodes;
mod pgstat;
mod producer;
mod query;
mod raw;
mod server;
mod write_costs;

use clap::{Args, Subcommand};

/// The PostgreSQL server on which a bench creates its scratch databases (and drops them
/// when it is done); shared by every bench command.
#[derive(Debug, Clone, Args)]
pub(crate) struct PostgresServer {
    /// PostgreSQL server on which the bench creates its databases.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
}

/// `eventline bench`'s arguments: one bench command.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Acknowledged ingest rate and latency vs. raw PostgreSQL on identical rows.
    Ingest(ingest::IngestArgs),
    /// Latency of each query RPC over a loaded tenant.
    Query(query::QueryArgs),
    /// User deletion time, the cost of event schemas, and ingest latency while retention
    /// expires events, over a loaded tenant.
    Lifecycle(lifecycle::LifecycleArgs),
    /// The Rust SDK producer's acknowledged rate against the raw bidi load, and the cost
    /// of track().
    Producer(producer::ProducerArgs),
    /// Acknowledged events/s through the Segment and PostHog capture doors against native
    /// IngestBatch, in one run.
    Capture(capture::CaptureArgs),
    /// PostgreSQL's CPU, WAL and rate per row for the bare events table, then with each
    /// index and rollup added in turn.
    WriteCosts(write_costs::WriteCostArgs),
}

/// Runs the bench command and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Ingest(args) => {
            let json = args.json();
            ingest::run(args).await?.print(json);
        }
        BenchCommand::Producer(args) => {
            let json = args.json();
            producer::run(args).await?.print(json);
        }
        BenchCommand::WriteCosts(args) => {
            let json = args.json();
            write_costs::run(args).await?.print(json);
        }
        BenchCommand::Lifecycle(args) => lifecycle::run(args).await?,
        BenchCommand::Capture(args) => {
            let json = args.json();
            capture::run(args).await?.print(json);
        }
        BenchCommand::Query(args) => {
            let json = args.json();
            query::run(args).await?.print(json);
        }
    }
    Ok(())
}
