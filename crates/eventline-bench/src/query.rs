//! `eventline bench query`: loads N events of one tenant over 30 days (binary COPY, then
//! the hourly rollup built from them), then measures p50/p99 of each query RPC through a
//! real server and the export throughput.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use eventline_core::{Actor, IngestClock, TenantId, time, validate_event};
use eventline_proto::v1::{self, query_service_client::QueryServiceClient};
use eventline_store::{Search, Store, postgres::PgStore, sqlite::SqliteStore};
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;

use super::{generator::EventGenerator, ingest::StoreKind, server};

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    postgres: super::PostgresServer,
    /// The store the server runs on: PostgreSQL (loaded by COPY) or the embedded SQLite
    /// (loaded through the store's own append, which keeps its rollup).
    #[arg(long, value_enum, default_value_t = StoreKind::Postgres)]
    store: StoreKind,
    /// Events to load (one tenant, spread over the last 30 days).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Calls per RPC.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the loaded database (its name goes to stderr) to profile queries on it;
    /// drop it by hand afterwards.
    #[arg(long)]
    keep_database: bool,
    /// Reuse this database, loaded and kept by an earlier run (PostgreSQL only), instead
    /// of loading one: its bucket summaries are emptied first, so the background
    /// preparation and the first calls are measured again. It is never dropped.
    #[arg(long, conflicts_with = "keep_database")]
    database: Option<String>,
}

impl QueryArgs {
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// Latency of one RPC.
#[derive(Debug, serde::Serialize)]
pub(crate) struct RpcLatency {
    rpc: &'static str,
    /// The first call after the load (and the background summaries), before warm-up.
    first_call_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Mean time inside the server, from its own metrics.
    server_mean_ms: f64,
}

/// The result of one query bench run.
#[derive(Debug, serde::Serialize)]
pub(crate) struct QueryReport {
    events: usize,
    load_seconds: f64,
    /// How long the server's background task took to build the summaries of the load
    /// (funnel and retention timelines, user sketches), off the query path.
    summaries_prepare_seconds: f64,
    /// How long the server's indexer took to index the load for search, once turned on
    /// after it (README "Search").
    search_index_seconds: f64,
    latencies: Vec<RpcLatency>,
    export_events_per_second: f64,
    /// Server memory before the export, and its peak by the end of it.
    server_rss_mib_before_export: f64,
    server_peak_rss_mib_after_export: f64,
}

impl QueryReport {
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
            return;
        }
        println!(
            "| query ({} events of one tenant over 30 days) | first call (ms) | p50 (ms) | p99 (ms) |",
            self.events
        );
        println!("| --- | ---: | ---: | ---: |");
        for latency in &self.latencies {
            println!(
                "| {} | {:.2} | {:.2} | {:.2} |",
                latency.rpc, latency.first_call_ms, latency.p50_ms, latency.p99_ms
            );
        }
        println!(
            "| summaries built in the background after the load (s) | {:.1} | | |",
            self.summaries_prepare_seconds
        );
        println!(
            "| search index built in the background after the load (s) | {:.1} | | |",
            self.search_index_seconds
        );
        println!(
            "| ExportEvents, everything (events/s) | {:.0} | |",
            self.export_events_per_second
        );
        println!(
            "| server RSS before the export / peak after it (MiB) | {:.0} | {:.0} |",
            self.server_rss_mib_before_export, self.server_peak_rss_mib_after_export
        );
    }
}

type Client = QueryServiceClient<eventline_client::Authorized>;

/// Calls of each RPC made before its measured iterations.
const WARM_UP_CALLS: usize = 3;

pub(crate) async fn run(args: QueryArgs) -> anyhow::Result<QueryReport> {
    let suffix = format!("{}_query", std::process::id());
    // Summaries are prepared every second here, not every minute, so the wait below
    // ends soon after the background task has caught up with the load.
    let settings = [("EVENTLINE_SUMMARIES_PREPARE_INTERVAL_MS", "1000".to_owned())];
    let load_started = Instant::now();
    // PostgreSQL's pool, to analyze the search index once built (see below).
    let (process, load, store, pg_pool) = match args.store {
        StoreKind::Postgres => match &args.database {
            Some(database) => {
                let url = server::database_url(&args.postgres.database_url, database);
                let store = PgStore::connect(&url, 3).await?;
                let load = reused_load(&store).await?;
                // The search index is built again too: turned off (dropped), then on.
                store
                    .set_search_index(load.tenant_id, false, &Actor::Cli)
                    .await?;
                let process = server::ServerProcess::start_with(&url, &settings).await?;
                let pool = store.pool().clone();
                (process, load, Arc::new(store) as Arc<dyn Store>, Some(pool))
            }
            None => {
                let url = server::fresh_database(&args.postgres.database_url, &suffix).await?;
                let process = server::ServerProcess::start_with(&url, &settings).await?;
                let store = PgStore::connect(&url, 3).await?;
                let tenant_id = bootstrapped_tenant(&store).await?;
                let load = load_events(&url, &store, tenant_id, args.events, args.seed).await?;
                let pool = store.pool().clone();
                (process, load, Arc::new(store) as Arc<dyn Store>, Some(pool))
            }
        },
        StoreKind::Sqlite => {
            let path = super::ingest::sqlite_dir(&suffix)?.join("query.sqlite3");
            let url = format!("sqlite:{}", path.display());
            let process = server::ServerProcess::start_with(&url, &settings).await?;
            let store = SqliteStore::connect_url(&url).await?;
            let tenant_id = bootstrapped_tenant(&store).await?;
            let load = append_events(&store, tenant_id, args.events, args.seed).await?;
            (process, load, Arc::new(store) as Arc<dyn Store>, None)
        }
    };
    let load_seconds = load_started.elapsed().as_secs_f64();
    let summaries_prepare_seconds = summaries_prepared(&process).await?;
    let search_index_seconds = search_indexed(&*store, &load).await?;
    if let Some(pool) = &pg_pool {
        // The statistics autovacuum gathers after a load like this one, taken now rather
        // than whenever it runs: how often a word occurs picks the plan of its search.
        sqlx::query("ANALYZE event_search").execute(pool).await?;
    }

    let mut client = eventline_client::Client::connect(process.grpc.clone(), server::BENCH_API_KEY)
        .await?
        .query_service();
    let mut latencies = Vec::new();
    for (name, call) in listing_calls()
        .into_iter()
        .chain(statistics_calls(load.now))
        .chain(analytics_calls(load.now))
        .chain(search_calls(load.now))
    {
        latencies.push(measure(&process, &mut client, name, &call, args.iterations).await?);
    }
    let server_rss_mib_before_export = process.rss_mib();
    let export_events_per_second = export_rate(&mut client).await?;
    let server_peak_rss_mib_after_export = process.peak_rss_mib();
    drop(process);
    if args.store == StoreKind::Sqlite {
        let directory = super::ingest::sqlite_dir(&suffix)?;
        if args.keep_database {
            eprintln!("kept the SQLite store in {}", directory.display());
        } else {
            std::fs::remove_dir_all(directory)?;
        }
    } else if args.database.is_some() {
        eprintln!("kept the reused database");
    } else if args.keep_database {
        eprintln!(
            "kept the databases eventline_bench_{}_*",
            std::process::id()
        );
    } else {
        server::drop_databases(&args.postgres.database_url, &std::process::id().to_string())
            .await?;
    }
    Ok(QueryReport {
        events: load.events,
        load_seconds,
        summaries_prepare_seconds,
        search_index_seconds,
        latencies,
        export_events_per_second,
        server_rss_mib_before_export,
        server_peak_rss_mib_after_export,
    })
}

/// Loads `events` generated events of `tenant_id` over the 30 days before now into the
/// database at `url` the fast way (COPY, then indexes and rollups built once); returns
/// the load, whose `now` ends the 30 days.
pub(super) async fn load_events(
    url: &str,
    store: &PgStore,
    tenant_id: TenantId,
    events: usize,
    seed: u64,
) -> anyhow::Result<Load> {
    eprintln!("loading {events} events");
    let mut load = Load::new(tenant_id, events, seed);
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
    let secondary_indexes = drop_secondary_indexes(&mut connection).await?;
    copy_rows(&mut connection, &mut load).await?;
    rebuild_secondary_indexes(&mut connection, &secondary_indexes).await?;
    build_rollups(store).await?;
    Ok(load)
}

/// Appends `events` generated events of `tenant_id` over the 30 days before now through
/// the store's own append (5,000 a transaction, rollup included), as the embedded store
/// has no bulk path; returns the load.
async fn append_events(
    store: &SqliteStore,
    tenant_id: TenantId,
    events: usize,
    seed: u64,
) -> anyhow::Result<Load> {
    eprintln!("appending {events} events");
    let mut load = Load::new(tenant_id, events, seed);
    let progress = indicatif::ProgressBar::new(events as u64);
    let mut loaded = 0;
    while loaded < events {
        let chunk = (events - loaded).min(5_000);
        store.append(&load.rows(loaded, chunk)?).await?;
        loaded += chunk;
        progress.set_position(loaded as u64);
    }
    progress.finish_and_clear();
    Ok(load)
}

/// The load an earlier run left in `store`: its tenant, its size and the end of its 30
/// days (its newest event); its bucket summaries emptied, to be prepared again.
async fn reused_load(store: &PgStore) -> anyhow::Result<Load> {
    let tenant_id = bootstrapped_tenant(store).await?;
    let (events, newest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as(r#"SELECT count(*), max("timestamp") FROM events WHERE tenant_id = $1"#)
            .bind(tenant_id.0)
            .fetch_one(store.pool())
            .await?;
    sqlx::query("TRUNCATE bucket_summaries")
        .execute(store.pool())
        .await?;
    let mut load = Load::new(tenant_id, events.max(0) as usize, 0);
    load.now = newest.context("the reused database holds no events")?;
    Ok(load)
}

/// The tenant the server bootstrapped for the bench key.
pub(super) async fn bootstrapped_tenant(store: &dyn Store) -> anyhow::Result<TenantId> {
    Ok(store
        .list_tenants()
        .await?
        .first()
        .context("the server bootstrapped no tenant")?
        .tenant_id)
}

/// The bench's load: `events` generated events of one tenant over the 30 days before `now`.
pub(super) struct Load {
    tenant_id: TenantId,
    events: usize,
    generator: EventGenerator,
    pub(super) now: DateTime<Utc>,
    clock: IngestClock,
}

impl Load {
    /// The load of `events` events of `tenant_id` from generator `seed`, ending now.
    fn new(tenant_id: TenantId, events: usize, seed: u64) -> Self {
        let generator = EventGenerator::new(seed);
        let now = Utc::now();
        let clock = IngestClock::now();
        Self {
            tenant_id,
            events,
            generator,
            now,
            clock,
        }
    }

    /// The next `count` rows, the first `loaded` being done, validated as the server would.
    fn rows(&mut self, loaded: usize, count: usize) -> anyhow::Result<Vec<eventline_core::Event>> {
        let span_micros = 30 * 24 * 3_600_000_000i64;
        let mut rows = Vec::with_capacity(count);
        for index in 0..count {
            let mut event = self.generator.next_event();
            // Spread evenly over 30 days, oldest first, as if ingested over time.
            // In i128: span × index overflows i64 past 3.5M events, and the wrapped
            // offsets scattered a 10M load outside the 30 days.
            let elapsed = i128::from(span_micros) * (loaded + index) as i128 / self.events as i128;
            let offset = span_micros - elapsed as i64;
            event.timestamp = Some(eventline_core::time::to_proto(
                self.now - chrono::Duration::microseconds(offset),
            ));
            rows.push(
                validate_event(self.tenant_id, event, &self.clock)
                    .map_err(|violation| anyhow::anyhow!("{violation}"))?,
            );
        }
        Ok(rows)
    }
}

/// Drops the secondary indexes of `events`, returning their names and definitions.
async fn drop_secondary_indexes(
    connection: &mut sqlx::PgConnection,
) -> anyhow::Result<Vec<(String, String)>> {
    // Secondary indexes are built once after the load, not maintained row by row: 10M rows
    // load in minutes instead of most of an hour. The definitions come from the migrated
    // schema, so the indexes queried are exactly eventline's.
    let secondary_indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname, indexdef FROM pg_indexes
         WHERE tablename = 'events' AND indexname <> 'events_pkey'",
    )
    .fetch_all(&mut *connection)
    .await?;
    for (name, _) in &secondary_indexes {
        // Names come from pg_indexes.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(&mut *connection)
            .await?;
    }
    Ok(secondary_indexes)
}

/// Writes every row of `load` by binary COPY, 20 000 a statement, with a progress bar.
async fn copy_rows(connection: &mut sqlx::PgConnection, load: &mut Load) -> anyhow::Result<()> {
    let progress = indicatif::ProgressBar::new(load.events as u64);
    let mut loaded = 0;
    while loaded < load.events {
        let chunk = (load.events - loaded).min(20_000);
        let rows = load.rows(loaded, chunk)?;
        eventline_store::postgres::copy_events(&mut *connection, rows.iter()).await?;
        loaded += chunk;
        progress.set_position(loaded as u64);
    }
    progress.finish_and_clear();
    Ok(())
}

/// Builds again the secondary indexes that `drop_secondary_indexes` dropped.
async fn rebuild_secondary_indexes(
    connection: &mut sqlx::PgConnection,
    secondary_indexes: &[(String, String)],
) -> anyhow::Result<()> {
    eprintln!("building {} secondary indexes", secondary_indexes.len());
    sqlx::query("SET maintenance_work_mem = '1GB'")
        .execute(&mut *connection)
        .await?;
    for (_, definition) in secondary_indexes {
        sqlx::query(sqlx::AssertSqlSafe(definition.clone()))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Fills the minutely, hourly and daily rollups from the loaded events, then analyzes.
/// Each bucket's count is split over two slots, as the writer's two workers leave them
/// (migration 0008), so that reads sum what they would sum in production.
async fn build_rollups(store: &PgStore) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO event_rollups_minutely (tenant_id, minute, event_type, slot, event_count)
         SELECT tenant_id, date_trunc('minute', \"timestamp\", 'UTC'), event_type,
                (hashtext(event_id) & 1)::smallint, count(*)
         FROM events GROUP BY 1, 2, 3, 4",
    )
    .execute(store.pool())
    .await?;
    sqlx::query(
        "INSERT INTO event_rollups_hourly (tenant_id, hour, event_type, slot, event_count)
         SELECT tenant_id, date_trunc('hour', minute, 'UTC'), event_type, slot, sum(event_count)
         FROM event_rollups_minutely GROUP BY 1, 2, 3, 4",
    )
    .execute(store.pool())
    .await?;
    sqlx::query(
        "INSERT INTO event_rollups_daily (tenant_id, day, event_type, slot, event_count)
         SELECT tenant_id, date_trunc('day', hour, 'UTC'), event_type, slot, sum(event_count)
         FROM event_rollups_hourly GROUP BY 1, 2, 3, 4",
    )
    .execute(store.pool())
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(store.pool()).await?;
    Ok(())
}

/// A query RPC the bench measures, with its request.
enum Call {
    ListEvents(v1::ListEventsRequest),
    CountEvents(v1::CountEventsRequest),
    TopEventTypes(v1::TopEventTypesRequest),
    EventTimeseries(v1::EventTimeseriesRequest),
    Funnel(v1::FunnelRequest),
    Retention(v1::RetentionRequest),
    SearchEvents(v1::SearchEventsRequest),
}

impl Call {
    /// The RPC as the server's metrics name it.
    fn rpc(&self) -> &'static str {
        match self {
            Self::ListEvents(_) => "QueryService/ListEvents",
            Self::CountEvents(_) => "QueryService/CountEvents",
            Self::TopEventTypes(_) => "QueryService/TopEventTypes",
            Self::EventTimeseries(_) => "QueryService/EventTimeseries",
            Self::Funnel(_) => "QueryService/Funnel",
            Self::Retention(_) => "QueryService/Retention",
            Self::SearchEvents(_) => "QueryService/SearchEvents",
        }
    }

    /// Makes the call once, with a fresh copy of the request.
    async fn send(&self, client: &mut Client) -> Result<(), tonic::Status> {
        match self {
            Self::ListEvents(request) => {
                client.list_events(request.clone()).await?;
            }
            Self::CountEvents(request) => {
                client.count_events(request.clone()).await?;
            }
            Self::TopEventTypes(request) => {
                client.top_event_types(request.clone()).await?;
            }
            Self::EventTimeseries(request) => {
                client.event_timeseries(request.clone()).await?;
            }
            Self::Funnel(request) => {
                client.funnel(request.clone()).await?;
            }
            Self::Retention(request) => {
                client.retention(request.clone()).await?;
            }
            Self::SearchEvents(request) => {
                client.search_events(request.clone()).await?;
            }
        }
        Ok(())
    }
}

/// The ListEvents calls measured, each with its row of the table.
fn listing_calls() -> [(&'static str, Call); 3] {
    [
        (
            "ListEvents, first page of 100",
            Call::ListEvents(v1::ListEventsRequest {
                page_size: 100,
                ..Default::default()
            }),
        ),
        (
            "ListEvents, a user's timeline page",
            Call::ListEvents(v1::ListEventsRequest {
                user_id: "user_42".into(),
                page_size: 100,
                ..Default::default()
            }),
        ),
        (
            "ListEvents, one type, property filter",
            Call::ListEvents(v1::ListEventsRequest {
                event_type: "type_3".into(),
                property_filters: vec!["plan=pro".into()],
                page_size: 100,
                ..Default::default()
            }),
        ),
    ]
}

/// The statistics calls measured, over the 30 days before `now`, each with its row.
fn statistics_calls(now: DateTime<Utc>) -> [(&'static str, Call); 4] {
    let window = (
        Some(eventline_core::time::to_proto(
            now - chrono::Duration::days(30),
        )),
        Some(eventline_core::time::to_proto(
            now + chrono::Duration::minutes(1),
        )),
    );
    [
        (
            "CountEvents, one type, 30 days",
            Call::CountEvents(v1::CountEventsRequest {
                event_type: "type_0".into(),
                start_time: window.0,
                end_time: window.1,
                ..Default::default()
            }),
        ),
        (
            "TopEventTypes, 30 days",
            Call::TopEventTypes(v1::TopEventTypesRequest {
                start_time: window.0,
                end_time: window.1,
                limit: 10,
                ..Default::default()
            }),
        ),
        (
            "EventTimeseries, hourly, one type, 30 days",
            Call::EventTimeseries(v1::EventTimeseriesRequest {
                event_type: "type_0".into(),
                start_time: window.0,
                end_time: window.1,
                interval: v1::Interval::Hour as i32,
                ..Default::default()
            }),
        ),
        (
            "EventTimeseries, daily, 30 days",
            Call::EventTimeseries(v1::EventTimeseriesRequest {
                start_time: window.0,
                end_time: window.1,
                interval: v1::Interval::Day as i32,
                ..Default::default()
            }),
        ),
    ]
}

/// The analytics calls measured over the 30 days: daily unique users, a breakdown of one
/// type by a property, a funnel and a retention table. Their types are the second to
/// fourth most frequent (type_0 alone is a quarter of the load).
fn analytics_calls(now: DateTime<Utc>) -> [(&'static str, Call); 4] {
    let start_time = Some(eventline_core::time::to_proto(
        now - chrono::Duration::days(30),
    ));
    let end_time = Some(eventline_core::time::to_proto(
        now + chrono::Duration::minutes(1),
    ));
    [
        (
            "Unique users per day, 30 days",
            Call::EventTimeseries(v1::EventTimeseriesRequest {
                interval: v1::Interval::Day as i32,
                measure: v1::Measure::UniqueUsers as i32,
                start_time,
                end_time,
                ..Default::default()
            }),
        ),
        (
            "Breakdown of type_1 by plan, 30 days",
            Call::CountEvents(v1::CountEventsRequest {
                event_type: "type_1".into(),
                group_by_property: "plan".into(),
                start_time,
                end_time,
                ..Default::default()
            }),
        ),
        (
            "Funnel, type_1 → type_2 → type_3 within 7 days, 30 days",
            Call::Funnel(v1::FunnelRequest {
                steps: vec!["type_1".into(), "type_2".into(), "type_3".into()],
                conversion_window: Some(pbjson_types::Duration {
                    seconds: 7 * 86_400,
                    nanos: 0,
                }),
                start_time,
                end_time,
                ..Default::default()
            }),
        ),
        (
            "Retention, type_1 → type_2, daily, 30 days",
            Call::Retention(v1::RetentionRequest {
                start_event_type: "type_1".into(),
                return_event_type: "type_2".into(),
                interval: v1::RetentionInterval::Day as i32,
                start_time,
                end_time,
                ..Default::default()
            }),
        ),
    ]
}

/// p50/p99 of `iterations` calls after the warm-up, and the server's own mean time for them.
async fn measure(
    process: &server::ServerProcess,
    client: &mut Client,
    name: &'static str,
    call: &Call,
    iterations: usize,
) -> anyhow::Result<RpcLatency> {
    // The first call is reported alone; the rest of the warm-up is unmeasured: the
    // first calls open pool connections and plan statements, which a running server has
    // done long before.
    let mut first_call_ms = 0.0;
    for warm_up in 0..WARM_UP_CALLS {
        let started = Instant::now();
        call.send(client)
            .await
            .map_err(|status| anyhow::anyhow!("{name}: {status}"))?;
        if warm_up == 0 {
            first_call_ms = started.elapsed().as_secs_f64() * 1000.0;
        }
    }
    let (sum_before, count_before) = process.server_time(call.rpc()).await;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for _ in 0..iterations {
        let started = Instant::now();
        call.send(client)
            .await
            .map_err(|status| anyhow::anyhow!("{name}: {status}"))?;
        histogram.record(started.elapsed().as_micros().max(1) as u64)?;
    }
    let (sum_after, count_after) = process.server_time(call.rpc()).await;
    Ok(RpcLatency {
        rpc: name,
        first_call_ms,
        p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        server_mean_ms: (sum_after - sum_before) / (count_after - count_before).max(1.0) * 1000.0,
    })
}

/// The SearchEvents calls measured, over the load's 30 days. The generator's referrers
/// end in one of 1,000 campaign numbers, so `417` is a word of 1 event in 1,000; every
/// event names its browser.
fn search_calls(now: DateTime<Utc>) -> [(&'static str, Call); 3] {
    let search = |query: &str| {
        Call::SearchEvents(v1::SearchEventsRequest {
            query: query.to_owned(),
            start_time: Some(time::to_proto(now - chrono::Duration::days(30))),
            end_time: Some(time::to_proto(now)),
            page_size: 100,
            ..Default::default()
        })
    };
    [
        ("SearchEvents, a word in 1 of 1,000 events", search("417")),
        (
            "SearchEvents, a phrase in 1 of 1,000 events",
            search("\"campaign 417\""),
        ),
        ("SearchEvents, a word in every event", search("chrome")),
    ]
}

/// Turns search on for the load's tenant and waits until the server's indexer has
/// indexed every event of it; returns how long that took.
async fn search_indexed(store: &dyn Store, load: &Load) -> anyhow::Result<f64> {
    let started = Instant::now();
    store
        .set_search_index(load.tenant_id, true, &Actor::Cli)
        .await?;
    loop {
        let index = store.search_index(load.tenant_id).await?;
        if index.caught_up && index.events_indexed >= load.events as u64 {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3_600),
            "the search index was not built within an hour ({index:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the server's background task has prepared the summaries of the load (a
/// pass that started after the load built nothing new); returns how long that took.
async fn summaries_prepared(process: &server::ServerProcess) -> anyhow::Result<f64> {
    const PASSES: &str = "eventline_summaries_passes_total";
    const BUILT: &str = "eventline_summaries_built_total";
    let started = Instant::now();
    // The pass running now may have started before the load ended: wait for two more.
    let after_load = process.counter(PASSES).await + 2.0;
    let mut seen = (process.counter(PASSES).await, process.counter(BUILT).await);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = (process.counter(PASSES).await, process.counter(BUILT).await);
        if now.0 >= after_load && now.0 > seen.0 && now.1 == seen.1 {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3_600),
            "the summaries were not prepared within an hour"
        );
        seen = now;
    }
}

async fn export_rate(client: &mut Client) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut stream = client
        .export_events(v1::ExportEventsRequest::default())
        .await
        .map_err(|status| anyhow::anyhow!("ExportEvents: {status}"))?
        .into_inner();
    let mut exported = 0u64;
    while let Some(message) = stream.next().await {
        message.map_err(|status| anyhow::anyhow!("ExportEvents: {status}"))?;
        exported += 1;
    }
    Ok(exported as f64
        / started
            .elapsed()
            .max(Duration::from_millis(1))
            .as_secs_f64())
}
