//! `eventline bench ingest`: acknowledged events per second through a chosen transport,
//! ack latency, server CPU and memory, and in the same run the raw PostgreSQL rate of
//! identical rows, with the ratio of the two.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use eventline_client::Authorized;
use eventline_core::TenantId;
use eventline_proto::v1::{self, ingest_service_client::IngestServiceClient};
use hdrhistogram::Histogram;
use sqlx::Connection;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

use super::{generator::EventGenerator, nodes, pgstat, raw, server};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Transport {
    /// IngestBidi: pipelined batches, one ack each.
    Bidi,
    /// IngestStream: one client stream per worker.
    Stream,
    /// IngestBatch: one unary call per batch.
    Batch,
    /// POST /v1/events:batch through the REST gateway.
    Rest,
}

/// The store the bench's server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreKind {
    /// A fresh database on --database-url.
    Postgres,
    /// The embedded store, in a fresh file under the temporary directory.
    Sqlite,
}

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    #[command(flatten)]
    postgres: super::PostgresServer,
    /// Bench a running server (gRPC URL) instead of starting one; needs --api-key.
    #[arg(long)]
    target: Option<String>,
    /// REST base URL of --target, for --transport rest.
    #[arg(long)]
    target_http: Option<String>,
    /// API key for --target.
    #[arg(long, env = "EVENTLINE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[arg(long, value_enum, default_value_t = Transport::Bidi)]
    transport: Transport,
    /// The server's store; the raw baseline writes into the same kind.
    #[arg(long, value_enum, default_value_t = StoreKind::Postgres)]
    store: StoreKind,
    /// Events to send.
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Events per batch message.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Spread the load over this many tenants, each with its own key: connection i
    /// sends as tenant i mod N, and there are at least N connections (each with fewer
    /// batches in flight, so the total stays --concurrency × --pipeline). The report
    /// shows each PostgreSQL node's CPU and, on Citus, how the rows landed on the
    /// workers (README "Scale out").
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    tenants: u16,
    /// Batches in flight per bidi stream.
    #[arg(long, default_value_t = 4)]
    pipeline: usize,
    /// Offered load in events/s (open loop); unset sends as fast as acks allow.
    #[arg(long)]
    rate: Option<f64>,
    /// Rows for the raw baseline (0 skips it); defaults to min(events, 200000).
    #[arg(long)]
    raw_rows: Option<usize>,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give the bench key a rate limit this high (events/s), so that every request
    /// passes through its token bucket; compare with a run without it to see the
    /// bucket's cost.
    #[arg(long)]
    key_events_per_second: Option<u32>,
    /// Turn search on for every bench tenant before sending, so the server's indexer
    /// runs beside the load; compare with a run without it for search's ingest cost
    /// (README "Search").
    #[arg(long)]
    search: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

impl IngestArgs {
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// The result of one ingest bench run.
#[derive(Debug, serde::Serialize)]
pub(crate) struct IngestReport {
    transport: Transport,
    store: StoreKind,
    /// The PostgreSQL settings the run met (README "Performance" says which matter).
    postgres_settings: Option<Vec<(String, String)>>,
    events: usize,
    batch_size: usize,
    concurrency: usize,
    tenants: u16,
    offered_rate: Option<f64>,
    /// The bench key's rate limit, when it had one.
    key_events_per_second: Option<u32>,
    acked_events_per_second: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_p999: f64,
    server_cpu_seconds: Option<f64>,
    server_cpu_microseconds_per_event: Option<f64>,
    server_peak_rss_mib: Option<f64>,
    /// Resident memory at the start of the steady window and at its end.
    server_rss_mib_steady_first: Option<f64>,
    server_rss_mib_steady_last: Option<f64>,
    /// Mean events per group commit and mean commit time, from the server's metrics.
    writer_mean_group_events: Option<f64>,
    writer_mean_commit_ms: Option<f64>,
    /// Where an acknowledgement's time went: waiting in the writer's queue for a worker,
    /// then the commit, of which each WAL fsync (cluster-wide `pg_stat_wal`).
    queue_wait_ms_mean: Option<f64>,
    wal_syncs_per_commit: Option<f64>,
    wal_sync_ms_mean: Option<f64>,
    /// Wait events of the server's sessions, sampled every 50 ms during the run.
    waits: Option<pgstat::WaitProfile>,
    /// The raw rates measured just before and just after the ingest run; `raw` is their
    /// mean, so drift in the machine's speed during the run cancels out of the ratio.
    raw_before: Option<raw::RawRates>,
    raw_after: Option<raw::RawRates>,
    raw: Option<raw::RawRates>,
    ratio_to_best_raw: Option<f64>,
    /// Each PostgreSQL node's CPU, and the rows and tenants it holds.
    postgres_nodes: Option<Vec<nodes::NodeShare>>,
}

/// Shared state of the workers.
struct Run {
    batches: Mutex<VecDeque<Vec<v1::Event>>>,
    acked: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
    /// When acknowledgements passed 10 % of the events (start of the steady window).
    steady_from: Mutex<Option<(Instant, u64)>>,
    total: u64,
}

impl Run {
    /// Shared state for sending `batches`, `total` events in all.
    fn new(batches: Vec<Vec<v1::Event>>, total: u64) -> anyhow::Result<Self> {
        Ok(Self {
            batches: Mutex::new(batches.into()),
            acked: AtomicU64::new(0),
            latencies: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3)?),
            steady_from: Mutex::new(None),
            total,
        })
    }

    fn take(&self) -> Option<Vec<v1::Event>> {
        self.batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop_front()
    }

    fn acknowledge(&self, events: usize, latency: Duration) {
        let acked = self.acked.fetch_add(events as u64, Ordering::Relaxed) + events as u64;
        let _ = self
            .latencies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(latency.as_micros().max(1) as u64);
        if acked >= self.total / 10 {
            let mut steady = self
                .steady_from
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if steady.is_none() {
                *steady = Some((Instant::now(), acked));
            }
        }
    }

    /// `acked` events/s over the steady window (from `started` if 10 % was never reached).
    fn steady_rate(&self, acked: u64, started: Instant, finished: Instant) -> f64 {
        let (steady_start, steady_acked) = self
            .steady_from
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unwrap_or((started, 0));
        (acked - steady_acked) as f64 / (finished - steady_start).as_secs_f64().max(1e-9)
    }
}

pub(crate) async fn run(args: IngestArgs) -> anyhow::Result<IngestReport> {
    check_batch_size(args.batch_size)?;
    let suffix = format!("{}", std::process::id());
    let target = Target::prepare(&args, &suffix).await?;

    eprintln!("generating {} events (seed {})", args.events, args.seed);
    let mut generator = EventGenerator::new(args.seed);
    let batches = generator.batches(args.events, args.batch_size);
    let raw_baseline = RawBaseline::prepare(&args, &suffix, &batches).await?;
    if let Some(baseline) = &raw_baseline {
        eprintln!(
            "measuring raw {:?} on {} identical rows",
            args.store,
            baseline.rows.len()
        );
    }
    let raw_before = measure_raw(raw_baseline.as_ref()).await?;

    let postgres = PostgresProbe::start(&args, &target).await?;
    let nodes = match &target.database_url {
        Some(url) => Some(nodes::NodeProbe::start(url).await?),
        None => None,
    };
    let run = Arc::new(Run::new(batches, args.events as u64)?);
    let ingested = ingest(&args, &target, &run).await?;
    let probed = match postgres {
        Some(probe) => Some(probe.finish(&args.postgres.database_url).await?),
        None => None,
    };
    let postgres_nodes = match nodes {
        Some(probe) => Some(probe.finish(args.events).await?),
        None => None,
    };
    let figures = ServerFigures::read(target.server.as_ref(), &ingested).await;
    let acknowledged = Acknowledged::of(&run, args.events, &ingested)?;

    // The server stopped and its database gone, so that neither its autovacuum nor its
    // pages compete with the second raw run.
    drop(target);
    if args.store == StoreKind::Postgres && args.target.is_none() {
        server::drop_database(&args.postgres.database_url, &format!("{suffix}_ingest")).await?;
    }
    let raw_after = measure_raw(raw_baseline.as_ref()).await?;
    match args.store {
        StoreKind::Postgres => server::drop_databases(&args.postgres.database_url, &suffix).await?,
        StoreKind::Sqlite => {
            let _ = std::fs::remove_dir_all(sqlite_dir(&suffix)?);
        }
    }
    let mut report = IngestReport::new(
        &args,
        acknowledged,
        figures,
        probed,
        (raw_before, raw_after),
    );
    report.postgres_nodes = postgres_nodes;
    Ok(report)
}

/// What the bench watches of PostgreSQL while the server it started ingests.
struct PostgresProbe {
    settings: Vec<(String, String)>,
    waits: pgstat::WaitSampler,
    syncs_before: pgstat::WalSyncs,
}

/// What it saw.
struct Probed {
    settings: Vec<(String, String)>,
    waits: pgstat::WaitProfile,
    syncs: pgstat::WalSyncs,
}

impl PostgresProbe {
    /// Starts watching, when the server under test is one this run started on PostgreSQL.
    async fn start(args: &IngestArgs, target: &Target) -> anyhow::Result<Option<Self>> {
        let Some(database) = target.database.as_deref() else {
            return Ok(None);
        };
        // Like each raw run, the ingest starts with nothing dirty to write back.
        let mut admin = sqlx::PgConnection::connect(&args.postgres.database_url).await?;
        sqlx::query("CHECKPOINT").execute(&mut admin).await?;
        Ok(Some(Self {
            settings: pgstat::settings(&args.postgres.database_url).await?,
            waits: pgstat::WaitSampler::start(&args.postgres.database_url, database).await?,
            syncs_before: pgstat::WalSyncs::read(&args.postgres.database_url).await?,
        }))
    }

    async fn finish(self, url: &str) -> anyhow::Result<Probed> {
        let syncs = self.syncs_before.until(pgstat::WalSyncs::read(url).await?);
        Ok(Probed {
            settings: self.settings,
            waits: self.waits.finish(),
            syncs,
        })
    }
}

/// Rejects a --batch-size the server would refuse.
fn check_batch_size(batch_size: usize) -> anyhow::Result<()> {
    if batch_size == 0 || batch_size > eventline_core::limits::MAX_EVENTS_PER_BATCH {
        bail!(
            "--batch-size must be 1 to {}",
            eventline_core::limits::MAX_EVENTS_PER_BATCH
        );
    }
    Ok(())
}

/// The server under test: one this run starts on a fresh database, or --target.
struct Target {
    /// The server this run started, stopped when dropped.
    server: Option<server::ServerProcess>,
    /// The PostgreSQL database of the server this run started, and its URL.
    database: Option<String>,
    database_url: Option<String>,
    grpc: String,
    http: String,
    /// One key per tenant (--tenants).
    api_keys: Vec<String>,
}

impl Target {
    /// Starts a server unless --target names one, and picks the addresses and key to use.
    async fn prepare(args: &IngestArgs, suffix: &str) -> anyhow::Result<Self> {
        if let Some(target) = &args.target {
            if args.tenants > 1 {
                bail!("--tenants needs a server the bench starts, not --target");
            }
            return Ok(Self {
                server: None,
                database: None,
                database_url: None,
                grpc: target.clone(),
                http: args.target_http.clone().unwrap_or_default(),
                api_keys: vec![args.api_key.clone().context("--target needs --api-key")?],
            });
        }
        let (process, database) = start_server(args, suffix).await?;
        let mut api_keys = vec![server::BENCH_API_KEY.to_owned()];
        for tenant in 2..=args.tenants {
            api_keys.push(
                process
                    .create_tenant_key(&format!("bench-{tenant}"))
                    .await?,
            );
        }
        if args.search {
            process.enable_search().await?;
        }
        Ok(Self {
            grpc: process.grpc.clone(),
            http: process.http.clone(),
            api_keys,
            server: Some(process),
            database_url: database.as_ref().map(|(_, url)| url.clone()),
            database: database.map(|(name, _)| name),
        })
    }
}

/// A fresh scratch directory for this run's SQLite files.
pub(super) fn sqlite_dir(suffix: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("eventline-bench-{suffix}"));
    std::fs::create_dir_all(&dir).context("create the SQLite scratch directory")?;
    Ok(dir)
}

/// Starts `serve` on a fresh store, giving the bench key --key-events-per-second when
/// set; returns it and its PostgreSQL database (name and URL), if on PostgreSQL.
async fn start_server(
    args: &IngestArgs,
    suffix: &str,
) -> anyhow::Result<(server::ServerProcess, Option<(String, String)>)> {
    let settings: Vec<(&str, String)> = args
        .key_events_per_second
        .map(|rate| {
            (
                "EVENTLINE_LIMITS_EVENTS_PER_SECOND_PER_KEY",
                rate.to_string(),
            )
        })
        .into_iter()
        .collect();
    match args.store {
        StoreKind::Postgres => {
            let database = format!("eventline_bench_{suffix}_ingest");
            let url =
                server::fresh_database(&args.postgres.database_url, &format!("{suffix}_ingest"))
                    .await?;
            // Times every WAL fsync in pg_stat_wal, for the latency breakdown.
            let mut admin = sqlx::PgConnection::connect(&args.postgres.database_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {database} SET track_wal_io_timing = on"
            )))
            .execute(&mut admin)
            .await?;
            let process = server::ServerProcess::start_with(&url, &settings).await?;
            Ok((process, Some((database, url))))
        }
        StoreKind::Sqlite => {
            let path = sqlite_dir(suffix)?.join("served.sqlite3");
            for file in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{file}", path.display()));
            }
            let url = format!("sqlite:{}", path.display());
            Ok((
                server::ServerProcess::start_with(&url, &settings).await?,
                None,
            ))
        }
    }
}

/// The raw baseline: where identical rows are written, and the rows.
struct RawBaseline {
    place: RawPlace,
    rows: Vec<eventline_core::Event>,
}

enum RawPlace {
    /// A scratch PostgreSQL database.
    Postgres(String),
    /// A scratch SQLite file.
    Sqlite(std::path::PathBuf),
}

impl RawBaseline {
    /// The first --raw-rows events of `batches` as rows of a fresh store of --store's
    /// kind; none for 0.
    async fn prepare(
        args: &IngestArgs,
        suffix: &str,
        batches: &[Vec<v1::Event>],
    ) -> anyhow::Result<Option<Self>> {
        let raw_rows = args
            .raw_rows
            .unwrap_or(args.events.min(200_000))
            .min(args.events);
        let raw_sample: Vec<v1::Event> = batches.iter().flatten().take(raw_rows).cloned().collect();
        if raw_rows == 0 {
            return Ok(None);
        }
        Ok(Some(match args.store {
            StoreKind::Postgres => {
                let url =
                    server::fresh_database(&args.postgres.database_url, &format!("{suffix}_raw"))
                        .await?;
                let rows = raw::rows_for_new_tenant(&url, raw_sample).await?;
                Self {
                    place: RawPlace::Postgres(url),
                    rows,
                }
            }
            StoreKind::Sqlite => Self {
                place: RawPlace::Sqlite(sqlite_dir(suffix)?.join("raw.sqlite3")),
                rows: raw::validated(TenantId::generate(), raw_sample)?,
            },
        }))
    }
}

/// The raw rates on the baseline's rows, when there is a baseline.
async fn measure_raw(baseline: Option<&RawBaseline>) -> anyhow::Result<Option<raw::RawRates>> {
    let Some(baseline) = baseline else {
        return Ok(None);
    };
    Ok(Some(match &baseline.place {
        RawPlace::Postgres(url) => raw::measure(url, &baseline.rows).await?,
        RawPlace::Sqlite(path) => raw::measure_sqlite(path, &baseline.rows).await?,
    }))
}

/// When the ingest ran, and what was sampled of the server meanwhile.
struct Ingested {
    started: Instant,
    finished: Instant,
    /// The server's CPU seconds at the start.
    cpu_before: Option<f64>,
    /// The server's RSS (MiB) once a second after the first 10 %.
    rss_samples: Arc<Mutex<Vec<f64>>>,
}

/// Sends every batch of `run` to `target` through the workers, with progress, until all are done.
async fn ingest(args: &IngestArgs, target: &Target, run: &Arc<Run>) -> anyhow::Result<Ingested> {
    let server_process = target.server.as_ref();
    let progress = acked_progress(args.events);
    let cpu_before = server_process.map(server::ServerProcess::cpu_seconds);
    let started = Instant::now();
    // Server RSS once a second after the first 10 %: flat memory shows as first ≈ last.
    let rss_samples: Arc<Mutex<Vec<f64>>> = Arc::default();
    let ticker = spawn_ticker(
        Arc::clone(run),
        progress.clone(),
        server_process.map(server::ServerProcess::pid),
        Arc::clone(&rss_samples),
    );
    for worker in spawn_workers(args, target, run) {
        worker.await.context("bench worker")??;
    }
    let finished = Instant::now();
    ticker.abort();
    progress.finish_and_clear();
    Ok(Ingested {
        started,
        finished,
        cpu_before,
        rss_samples,
    })
}

/// A progress bar of acknowledged events out of `events`.
fn acked_progress(events: usize) -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new(events as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} acked ({per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress
}

/// Shows the acked count every 200 ms and, after the first 10 %, samples server RSS each second.
fn spawn_ticker(
    run: Arc<Run>,
    progress: indicatif::ProgressBar,
    server_pid: Option<u32>,
    rss_samples: Arc<Mutex<Vec<f64>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for tick in 0u64.. {
            let acked = run.acked.load(Ordering::Relaxed);
            progress.set_position(acked);
            if let Some(pid) = server_pid.filter(|_| tick % 5 == 0 && acked >= run.total / 10) {
                rss_samples
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(server::rss_mib_of(pid));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// One task per connection (--concurrency) sending by --transport, paced to its share of --rate.
fn spawn_workers(
    args: &IngestArgs,
    target: &Target,
    run: &Arc<Run>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let mut workers = Vec::new();
    let connections = connections(args);
    for worker in 0..connections {
        let run = Arc::clone(run);
        let (grpc, http, key) = (
            target.grpc.clone(),
            target.http.clone(),
            target.api_keys[worker % target.api_keys.len()].clone(),
        );
        let pacing = args.rate.map(|rate| {
            Duration::from_secs_f64(args.batch_size as f64 * connections as f64 / rate)
        });
        // More connections for --tenants keep the batches in flight of --concurrency ×
        // --pipeline, so the load offered stays the same and fits the server's queue.
        let pipeline = (args.pipeline.max(1) * args.concurrency.max(1))
            .div_ceil(connections)
            .max(1);
        let transport = args.transport;
        workers.push(tokio::spawn(async move {
            match transport {
                Transport::Bidi => {
                    bidi_worker(&grpc, &key, Arc::clone(&run), pipeline, pacing, worker).await
                }
                Transport::Stream => stream_worker(&grpc, &key, &run).await,
                Transport::Batch => batch_worker(&grpc, &key, &run, pacing).await,
                Transport::Rest => rest_worker(&http, &key, &run, pacing).await,
            }
        }));
    }
    workers
}

/// Connections the run opens: --concurrency, and at least one per tenant.
fn connections(args: &IngestArgs) -> usize {
    args.concurrency.max(usize::from(args.tenants)).max(1)
}

/// What the server's process and metrics showed of the run; all `None` against --target.
struct ServerFigures {
    cpu_seconds: Option<f64>,
    writer_mean_group_events: Option<f64>,
    writer_mean_commit_ms: Option<f64>,
    queue_wait_ms_mean: Option<f64>,
    peak_rss: Option<f64>,
    rss_steady_first: Option<f64>,
    rss_steady_last: Option<f64>,
}

impl ServerFigures {
    /// Reads them once the run is over: CPU used, group commits, peak and steady-window RSS.
    async fn read(server_process: Option<&server::ServerProcess>, ingested: &Ingested) -> Self {
        let cpu_seconds = server_process
            .map(|process| process.cpu_seconds() - ingested.cpu_before.unwrap_or(0.0));
        let (writer_mean_group_events, writer_mean_commit_ms, queue_wait_ms_mean) =
            match server_process {
                Some(process) => {
                    let (events, groups) =
                        process.histogram("eventline_writer_batch_events", "").await;
                    let (seconds, commits) = process
                        .histogram("eventline_writer_commit_duration_seconds", "outcome=\"ok\"")
                        .await;
                    let (waited, jobs) = process
                        .histogram("eventline_writer_queue_wait_seconds", "")
                        .await;
                    (
                        Some(events / groups.max(1.0)),
                        Some(seconds * 1000.0 / commits.max(1.0)),
                        Some(waited * 1000.0 / jobs.max(1.0)),
                    )
                }
                None => (None, None, None),
            };
        let peak_rss = server_process.map(server::ServerProcess::peak_rss_mib);
        let (rss_steady_first, rss_steady_last) = {
            let samples = ingested
                .rss_samples
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (samples.first().copied(), samples.last().copied())
        };
        Self {
            cpu_seconds,
            writer_mean_group_events,
            writer_mean_commit_ms,
            queue_wait_ms_mean,
            peak_rss,
            rss_steady_first,
            rss_steady_last,
        }
    }
}

/// What the client saw: the acknowledged rate over the steady window, and ack latency.
struct Acknowledged {
    events_per_second: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_p999: f64,
}

impl Acknowledged {
    /// Fails unless all `events` were acknowledged; then reads the rate and the quantiles.
    fn of(run: &Run, events: usize, ingested: &Ingested) -> anyhow::Result<Self> {
        let acked = run.acked.load(Ordering::Relaxed);
        if acked != events as u64 {
            bail!("only {acked} of {events} events were acknowledged");
        }
        let events_per_second = run.steady_rate(acked, ingested.started, ingested.finished);
        let histogram = run
            .latencies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let quantile = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Ok(Self {
            events_per_second,
            latency_ms_p50: quantile(0.5),
            latency_ms_p99: quantile(0.99),
            latency_ms_p999: quantile(0.999),
        })
    }
}

impl IngestReport {
    /// The report, with the mean of the raw rates before and after and the ratio to the best.
    fn new(
        args: &IngestArgs,
        acknowledged: Acknowledged,
        figures: ServerFigures,
        probed: Option<Probed>,
        (raw_before, raw_after): (Option<raw::RawRates>, Option<raw::RawRates>),
    ) -> Self {
        let raw = raw_before
            .as_ref()
            .zip(raw_after.as_ref())
            .map(|(before, after)| before.mean(after));
        let acked_rate = acknowledged.events_per_second;
        let ratio = raw.as_ref().map(|raw| acked_rate / raw.best().max(1e-9));
        let commits = figures
            .writer_mean_group_events
            .map(|group| args.events as f64 / group.max(1.0));
        let (postgres_settings, waits, wal_syncs_per_commit, wal_sync_ms_mean) = match probed {
            Some(probed) => (
                Some(probed.settings),
                Some(probed.waits),
                commits.map(|commits| probed.syncs.syncs / commits.max(1.0)),
                Some(probed.syncs.sync_ms / probed.syncs.syncs.max(1.0)),
            ),
            None => (None, None, None, None),
        };
        Self {
            transport: args.transport,
            store: args.store,
            postgres_settings,
            events: args.events,
            batch_size: args.batch_size,
            concurrency: connections(args),
            tenants: args.tenants,
            offered_rate: args.rate,
            key_events_per_second: args.key_events_per_second,
            acked_events_per_second: acked_rate,
            latency_ms_p50: acknowledged.latency_ms_p50,
            latency_ms_p99: acknowledged.latency_ms_p99,
            latency_ms_p999: acknowledged.latency_ms_p999,
            server_cpu_seconds: figures.cpu_seconds,
            server_cpu_microseconds_per_event: figures
                .cpu_seconds
                .map(|seconds| seconds * 1e6 / args.events as f64),
            server_peak_rss_mib: figures.peak_rss,
            server_rss_mib_steady_first: figures.rss_steady_first,
            server_rss_mib_steady_last: figures.rss_steady_last,
            writer_mean_group_events: figures.writer_mean_group_events,
            writer_mean_commit_ms: figures.writer_mean_commit_ms,
            queue_wait_ms_mean: figures.queue_wait_ms_mean,
            wal_syncs_per_commit,
            wal_sync_ms_mean,
            waits,
            raw_before,
            raw_after,
            raw,
            ratio_to_best_raw: ratio,
            postgres_nodes: None,
        }
    }
}

/// Acknowledged events/s of `batches` sent as fast as acks allow by `concurrency` bidi
/// streams with `pipeline` batches in flight each, over the steady window (after the
/// first 10 % of acknowledgements), as `run` measures it.
pub(crate) async fn bidi_events_per_second(
    grpc: &str,
    key: &str,
    batches: Vec<Vec<v1::Event>>,
    concurrency: usize,
    pipeline: usize,
) -> anyhow::Result<f64> {
    let total = batches.iter().map(Vec::len).sum::<usize>() as u64;
    let run = Arc::new(Run::new(batches, total)?);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (run, grpc, key) = (Arc::clone(&run), grpc.to_owned(), key.to_owned());
        workers.push(tokio::spawn(async move {
            bidi_worker(&grpc, &key, run, pipeline.max(1), None, worker).await
        }));
    }
    for worker in workers {
        worker.await.context("bench worker")??;
    }
    let finished = Instant::now();
    let acked = run.acked.load(Ordering::Relaxed);
    if acked != total {
        bail!("only {acked} of {total} events were acknowledged");
    }
    Ok(run.steady_rate(acked, started, finished))
}

impl IngestReport {
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
            return;
        }
        if let Some(settings) = &self.postgres_settings {
            println!("PostgreSQL: {}", pgstat::settings_line(settings));
            if let Some(note) = pgstat::advice(settings) {
                println!("{note}");
            }
            println!();
        }
        self.print_heading();
        self.print_service_rows();
        self.print_writer_rows();
        self.print_raw_rows();
        self.print_node_rows();
    }

    /// Prints each PostgreSQL node's CPU per event and the rows and tenants it holds.
    fn print_node_rows(&self) {
        let Some(nodes) = &self.postgres_nodes else {
            return;
        };
        for node in nodes {
            println!(
                "| PostgreSQL {} {}: CPU (s) / per event (µs); rows (tenants); tables (MiB) | {} / {}; {} ({}); {:.0} |",
                node.role,
                node.node,
                optional(node.cpu_seconds, 1),
                optional(node.cpu_microseconds_per_event, 1),
                node.rows,
                node.tenants,
                node.bytes as f64 / (1024.0 * 1024.0)
            );
        }
    }

    /// Prints the table's heading: transport and load, with the offered rate and key limit.
    fn print_heading(&self) {
        let offered = self
            .offered_rate
            .map(|rate| format!(", offered {rate:.0}/s"))
            .unwrap_or_default();
        let limited = self
            .key_events_per_second
            .map(|rate| format!(", key limited to {rate}/s"))
            .unwrap_or_default();
        let tenants = if self.tenants > 1 {
            format!(", {} tenants", self.tenants)
        } else {
            String::new()
        };
        let distributed = self
            .postgres_nodes
            .as_ref()
            .is_some_and(|nodes| nodes.len() > 1);
        let engine = if distributed { " (Citus)" } else { "" };
        println!(
            "| ingest ({:?} on {:?}{engine}, {} events, batches of {}, {} connections{tenants}{offered}{limited}) | value |",
            self.transport, self.store, self.events, self.batch_size, self.concurrency,
        );
        println!("| --- | ---: |");
    }

    /// Prints the service's rows: acknowledged rate, ack latency, server CPU and memory.
    fn print_service_rows(&self) {
        println!(
            "| acknowledged events/s (steady, after the first 10 %) | {:.0} |",
            self.acked_events_per_second
        );
        println!(
            "| ack latency p50 / p99 / p99.9 (ms) | {:.1} / {:.1} / {:.1} |",
            self.latency_ms_p50, self.latency_ms_p99, self.latency_ms_p999
        );
        println!(
            "| server CPU (s) / per event (µs) | {} / {} |",
            optional(self.server_cpu_seconds, 1),
            optional(self.server_cpu_microseconds_per_event, 1)
        );
        println!(
            "| server peak RSS (MiB); RSS at steady start → end | {}; {} → {} |",
            optional(self.server_peak_rss_mib, 0),
            optional(self.server_rss_mib_steady_first, 0),
            optional(self.server_rss_mib_steady_last, 0)
        );
    }

    /// Prints the writer's group commits and where an ack's time went, when the server's
    /// metrics were read, and the wait events sampled on PostgreSQL.
    fn print_writer_rows(&self) {
        if let (Some(group), Some(commit)) =
            (self.writer_mean_group_events, self.writer_mean_commit_ms)
        {
            println!(
                "| writer: mean events per commit / mean commit (ms) | {group:.0} / {commit:.1} |"
            );
        }
        if let Some(queued) = self.queue_wait_ms_mean {
            println!(
                "| ack time: mean queue wait / mean commit / mean WAL fsync (ms); fsyncs per commit | {queued:.1} / {} / {}; {} |",
                optional(self.writer_mean_commit_ms, 1),
                optional(self.wal_sync_ms_mean, 1),
                optional(self.wal_syncs_per_commit, 1),
            );
        }
        if let Some(waits) = &self.waits {
            println!(
                "| PostgreSQL sessions, sampled every 50 ms ({} samples): waiting on another's lock | {:.1} % |",
                waits.samples,
                (waits.lock_share() * 100.0).max(0.0) + 0.0
            );
            println!("| … by wait event | {} |", waits.line());
        }
    }

    /// Prints the raw rates before and after the run, and the ratio to the best.
    fn print_raw_rows(&self) {
        let (Some(raw), Some(before), Some(after)) = (&self.raw, &self.raw_before, &self.raw_after)
        else {
            return;
        };
        for (method, rate) in &raw.0 {
            let shape = match *method {
                "copy_binary" => "raw PostgreSQL: binary COPY, key-sorted",
                "insert_unnest" => "raw PostgreSQL: the writer's INSERT … unnest, key-sorted",
                _ => "raw SQLite: one prepared INSERT per row, in arrival order",
            };
            println!(
                "| {shape}, groups of {} (rows/s; before / after) | {rate:.0} ({:.0} / {:.0}) |",
                raw::GROUP_ROWS,
                before.0.get(method).copied().unwrap_or(0.0),
                after.0.get(method).copied().unwrap_or(0.0),
            );
        }
        println!(
            "| **ratio to the best raw method** | **{:.2}** |",
            self.ratio_to_best_raw.unwrap_or(0.0)
        );
    }
}

/// `value` with `digits` decimals, or "-" when it was not measured.
fn optional(value: Option<f64>, digits: usize) -> String {
    value
        .map(|value| format!("{value:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// An ingest client that sends `key` with every call.
async fn ingest_client(grpc: &str, key: &str) -> anyhow::Result<IngestServiceClient<Authorized>> {
    Ok(eventline_client::Client::connect(grpc, key)
        .await?
        .ingest_service())
}

async fn paced(pacing: Option<Duration>, next_send: &mut Instant) {
    if let Some(interval) = pacing {
        tokio::time::sleep_until((*next_send).into()).await;
        *next_send += interval;
    }
}

async fn batch_worker(
    grpc: &str,
    key: &str,
    run: &Run,
    pacing: Option<Duration>,
) -> anyhow::Result<()> {
    let mut client = ingest_client(grpc, key).await?;
    let mut next_send = Instant::now();
    while let Some(events) = run.take() {
        paced(pacing, &mut next_send).await;
        let count = events.len();
        let request = v1::IngestBatchRequest {
            events,
            sent_at: None,
        };
        let sent = Instant::now();
        client
            .ingest_batch(request)
            .await
            .map_err(|status| anyhow::anyhow!("IngestBatch: {status}"))?;
        run.acknowledge(count, sent.elapsed());
    }
    Ok(())
}

async fn rest_worker(
    http: &str,
    key: &str,
    run: &Run,
    pacing: Option<Duration>,
) -> anyhow::Result<()> {
    if http.is_empty() {
        bail!("--transport rest against --target needs --target-http");
    }
    let client = reqwest::Client::new();
    let url = format!("{http}/v1/events:batch");
    let mut next_send = Instant::now();
    while let Some(events) = run.take() {
        paced(pacing, &mut next_send).await;
        let count = events.len();
        let body = serde_json::to_vec(&v1::IngestBatchRequest {
            events,
            sent_at: None,
        })?;
        let sent = Instant::now();
        let response = client
            .post(&url)
            .header("X-API-Key", key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("POST /v1/events:batch answered {}", response.status());
        }
        run.acknowledge(count, sent.elapsed());
    }
    Ok(())
}

async fn stream_worker(grpc: &str, key: &str, run: &Run) -> anyhow::Result<()> {
    let mut client = ingest_client(grpc, key).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let request = ReceiverStream::new(receiver);
    let started = Instant::now();
    let call = tokio::spawn(async move { client.ingest_stream(request).await });
    let mut sent = 0;
    while let Some(events) = run.take() {
        sent += events.len();
        if sender
            .send(v1::IngestStreamRequest {
                events,
                sent_at: None,
            })
            .await
            .is_err()
        {
            break;
        }
    }
    drop(sender);
    let summary = call
        .await?
        .map_err(|status| anyhow::anyhow!("IngestStream: {status}"))?
        .into_inner();
    // A client stream acknowledges once, at its end.
    run.acknowledge(sent, started.elapsed());
    if (summary.accepted + summary.duplicates) as usize != sent {
        bail!(
            "the stream summary counts {} of {sent} events",
            summary.accepted + summary.duplicates
        );
    }
    Ok(())
}

async fn bidi_worker(
    grpc: &str,
    key: &str,
    run: Arc<Run>,
    pipeline: usize,
    pacing: Option<Duration>,
    worker: usize,
) -> anyhow::Result<()> {
    let mut client = ingest_client(grpc, key).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel(pipeline);
    let request = ReceiverStream::new(receiver);
    let in_flight = InFlight {
        batches: Arc::default(),
        slots: Arc::new(tokio::sync::Semaphore::new(pipeline)),
    };
    let next_send = Instant::now();
    tokio::spawn(send_bidi_batches(
        sender,
        in_flight.clone(),
        Arc::clone(&run),
        pacing,
        next_send,
        worker,
    ));
    let acks = client
        .ingest_bidi(request)
        .await
        .map_err(|status| anyhow::anyhow!("IngestBidi: {status}"))?
        .into_inner();
    receive_bidi_acks(acks, &in_flight, &run).await
}

/// A bidi stream's unacknowledged batches (sent at, events) by sequence, at most --pipeline.
#[derive(Clone)]
struct InFlight {
    batches: Arc<Mutex<HashMap<u64, (Instant, usize)>>>,
    slots: Arc<tokio::sync::Semaphore>,
}

/// Sends `run`'s batches as slots free up, each recorded in flight first, until either runs out.
async fn send_bidi_batches(
    sender: tokio::sync::mpsc::Sender<v1::IngestBidiRequest>,
    in_flight: InFlight,
    run: Arc<Run>,
    pacing: Option<Duration>,
    mut next_send: Instant,
    worker: usize,
) {
    let mut index = 0u64;
    loop {
        // A free slot first, so batches are taken only as fast as acks return.
        let Ok(slot) = Arc::clone(&in_flight.slots).acquire_owned().await else {
            return;
        };
        slot.forget();
        let Some(events) = run.take() else { return };
        paced(pacing, &mut next_send).await;
        index += 1;
        let sequence = (worker as u64) << 32 | index;
        in_flight
            .batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(sequence, (Instant::now(), events.len()));
        if sender
            .send(v1::IngestBidiRequest {
                sequence,
                events,
                sent_at: None,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Acknowledges on `run` each batch that `acks` confirms, freeing its slot.
async fn receive_bidi_acks(
    mut acks: tonic::Streaming<v1::IngestBidiResponse>,
    in_flight: &InFlight,
    run: &Run,
) -> anyhow::Result<()> {
    while let Some(ack) = acks.next().await {
        let ack = ack.map_err(|status| anyhow::anyhow!("IngestBidi: {status}"))?;
        let entry = in_flight
            .batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&ack.sequence);
        if let Some((sent, count)) = entry {
            run.acknowledge(count, sent.elapsed());
        }
        in_flight.slots.add_permits(1);
    }
    Ok(())
}
