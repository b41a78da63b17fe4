//! `eventline bench query`: loads N events of one tenant over 30 days (binary COPY, then
//! the hourly rollup built from them), then measures p50/p99 of each query RPC through a
//! real server and the export throughput.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use eventline_core::{IngestClock, validate_event};
use eventline_proto::v1::{self, query_service_client::QueryServiceClient};
use eventline_store::{Store, postgres::PgStore};
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;

use super::{generator::EventGenerator, server};

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// PostgreSQL server on which the bench creates its database.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
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
            "| query ({} events of one tenant over 30 days) | p50 (ms) | p99 (ms) |",
            self.events
        );
        println!("| --- | ---: | ---: |");
        for latency in &self.latencies {
            println!(
                "| {} | {:.2} | {:.2} |",
                latency.rpc, latency.p50_ms, latency.p99_ms
            );
        }
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
    let url = server::fresh_database(&args.database_url, &format!("{}_query", std::process::id()))
        .await?;
    let process = server::ServerProcess::start(&url).await?;
    let store = PgStore::connect(&url, 3).await?;
    let tenant_id = store
        .list_tenants()
        .await?
        .first()
        .context("the server bootstrapped no tenant")?
        .tenant_id;

    eprintln!("loading {} events", args.events);
    let load_started = Instant::now();
    let mut generator = EventGenerator::new(args.seed);
    let now = Utc::now();
    let clock = IngestClock::now();
    let span_micros = 30 * 24 * 3_600_000_000i64;
    let progress = indicatif::ProgressBar::new(args.events as u64);
    let mut loaded = 0;
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
    // Secondary indexes are built once after the load, not maintained row by row: 10M rows
    // load in minutes instead of most of an hour. The definitions come from the migrated
    // schema, so the indexes queried are exactly eventline's.
    let secondary_indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname, indexdef FROM pg_indexes
         WHERE tablename = 'events' AND indexname <> 'events_pkey'",
    )
    .fetch_all(&mut connection)
    .await?;
    for (name, _) in &secondary_indexes {
        // Names come from pg_indexes.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(&mut connection)
            .await?;
    }
    while loaded < args.events {
        let chunk = (args.events - loaded).min(20_000);
        let mut rows = Vec::with_capacity(chunk);
        for index in 0..chunk {
            let mut event = generator.next_event();
            // Spread evenly over 30 days, oldest first, as if ingested over time.
            let offset = span_micros - span_micros * (loaded + index) as i64 / args.events as i64;
            event.timestamp = Some(eventline_core::time::to_proto(
                now - chrono::Duration::microseconds(offset),
            ));
            rows.push(
                validate_event(tenant_id, event, &clock)
                    .map_err(|violation| anyhow::anyhow!("{violation}"))?,
            );
        }
        eventline_store::postgres::copy_events(&mut connection, rows.iter()).await?;
        loaded += chunk;
        progress.set_position(loaded as u64);
    }
    progress.finish_and_clear();
    eprintln!("building {} secondary indexes", secondary_indexes.len());
    sqlx::query("SET maintenance_work_mem = '1GB'")
        .execute(&mut connection)
        .await?;
    for (_, definition) in &secondary_indexes {
        sqlx::query(sqlx::AssertSqlSafe(definition.clone()))
            .execute(&mut connection)
            .await?;
    }
    sqlx::query(
        "INSERT INTO event_rollups_minutely (tenant_id, minute, event_type, event_count)
         SELECT tenant_id, date_trunc('minute', \"timestamp\", 'UTC'), event_type, count(*)
         FROM events GROUP BY 1, 2, 3",
    )
    .execute(store.pool())
    .await?;
    sqlx::query(
        "INSERT INTO event_rollups_hourly (tenant_id, hour, event_type, event_count)
         SELECT tenant_id, date_trunc('hour', minute, 'UTC'), event_type, sum(event_count)
         FROM event_rollups_minutely GROUP BY 1, 2, 3",
    )
    .execute(store.pool())
    .await?;
    sqlx::query(
        "INSERT INTO event_rollups_daily (tenant_id, day, event_type, event_count)
         SELECT tenant_id, date_trunc('day', hour, 'UTC'), event_type, sum(event_count)
         FROM event_rollups_hourly GROUP BY 1, 2, 3",
    )
    .execute(store.pool())
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(store.pool()).await?;
    let load_seconds = load_started.elapsed().as_secs_f64();

    let mut client = eventline_client::Client::connect(process.grpc.clone(), server::BENCH_API_KEY)
        .await?
        .query_service();
    let window = (
        Some(eventline_core::time::to_proto(
            now - chrono::Duration::days(30),
        )),
        Some(eventline_core::time::to_proto(
            now + chrono::Duration::minutes(1),
        )),
    );
    let mut latencies = Vec::new();
    macro_rules! measure {
        ($name:expr, $rpc:expr, $call:expr) => {{
            // Unmeasured warm-up: the first calls open pool connections and plan statements,
            // which a running server has done long before.
            for _ in 0..WARM_UP_CALLS {
                $call
                    .await
                    .map_err(|status| anyhow::anyhow!("{}: {status}", $name))?;
            }
            let (sum_before, count_before) = process.server_time($rpc).await;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            for _ in 0..args.iterations {
                let started = Instant::now();
                $call
                    .await
                    .map_err(|status| anyhow::anyhow!("{}: {status}", $name))?;
                histogram.record(started.elapsed().as_micros().max(1) as u64)?;
            }
            let (sum_after, count_after) = process.server_time($rpc).await;
            latencies.push(RpcLatency {
                rpc: $name,
                p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
                server_mean_ms: (sum_after - sum_before) / (count_after - count_before).max(1.0)
                    * 1000.0,
            });
        }};
    }
    measure!(
        "ListEvents, first page of 100",
        "QueryService/ListEvents",
        client.list_events(v1::ListEventsRequest {
            page_size: 100,
            ..Default::default()
        })
    );
    measure!(
        "ListEvents, a user's timeline page",
        "QueryService/ListEvents",
        client.list_events(v1::ListEventsRequest {
            user_id: "user_42".into(),
            page_size: 100,
            ..Default::default()
        })
    );
    measure!(
        "ListEvents, one type, property filter",
        "QueryService/ListEvents",
        client.list_events(v1::ListEventsRequest {
            event_type: "type_3".into(),
            property_filters: vec!["plan=pro".into()],
            page_size: 100,
            ..Default::default()
        })
    );
    measure!(
        "CountEvents, one type, 30 days",
        "QueryService/CountEvents",
        client.count_events(v1::CountEventsRequest {
            event_type: "type_0".into(),
            start_time: window.0,
            end_time: window.1,
            ..Default::default()
        })
    );
    measure!(
        "TopEventTypes, 30 days",
        "QueryService/TopEventTypes",
        client.top_event_types(v1::TopEventTypesRequest {
            start_time: window.0,
            end_time: window.1,
            limit: 10,
            ..Default::default()
        })
    );
    measure!(
        "EventTimeseries, hourly, one type, 30 days",
        "QueryService/EventTimeseries",
        client.event_timeseries(v1::EventTimeseriesRequest {
            event_type: "type_0".into(),
            start_time: window.0,
            end_time: window.1,
            interval: v1::Interval::Hour as i32,
            ..Default::default()
        })
    );
    measure!(
        "EventTimeseries, daily, 30 days",
        "QueryService/EventTimeseries",
        client.event_timeseries(v1::EventTimeseriesRequest {
            start_time: window.0,
            end_time: window.1,
            interval: v1::Interval::Day as i32,
            ..Default::default()
        })
    );
    let server_rss_mib_before_export = process.rss_mib();
    let export_events_per_second = export_rate(&mut client).await?;
    let server_peak_rss_mib_after_export = process.peak_rss_mib();
    drop(process);
    server::drop_databases(&args.database_url, &std::process::id().to_string()).await?;
    Ok(QueryReport {
        events: args.events,
        load_seconds,
        latencies,
        export_events_per_second,
        server_rss_mib_before_export,
        server_peak_rss_mib_after_export,
    })
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
