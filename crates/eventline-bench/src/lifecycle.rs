//! `eventline bench lifecycle` (README "Data lifecycle"): over N loaded events of one
//! tenant, through a real server,
//! 1. how long `DeleteUser` takes for one user holding `--user-events` of them;
//! 2. ingest events/s with and without a schema on every event type, interleaved;
//! 3. ingest ack p99 at a fixed rate, alone and while retention expires a third of the
//!    events.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use eventline_proto::v1::{self, ingest_service_client::IngestServiceClient};
use eventline_store::postgres::PgStore;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{generator::EventGenerator, query, server};

#[derive(Debug, Args)]
pub(crate) struct LifecycleArgs {
    #[command(flatten)]
    postgres: super::PostgresServer,
    /// Events to load (one tenant, spread over the last 30 days).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events of the user that DeleteUser deletes, spread over the 30 days.
    #[arg(long, default_value_t = 10_000)]
    user_events: usize,
    /// Events per ingest run of the schema comparison (four runs).
    #[arg(long, default_value_t = 100_000)]
    ingest_events: usize,
    /// Offered rate (events/s) of the latency runs, in batches of 100 over 4 streams.
    #[arg(long, default_value_t = 5_000)]
    rate: u32,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// The user whose events the bench deletes.
const DELETED_USER: &str = "bench_deleted_user";

pub(crate) async fn run(args: LifecycleArgs) -> anyhow::Result<()> {
    let suffix = format!("{}_lifecycle", std::process::id());
    let url = server::fresh_database(&args.postgres.database_url, &suffix).await?;
    let process = server::ServerProcess::start_with(
        &url,
        &[
            // Loaded events were all received now: without this none could expire.
            ("EVENTLINE_LIFECYCLE_DEDUPE_WINDOW_MS", "0".to_owned()),
            ("EVENTLINE_LIFECYCLE_INTERVAL_MS", "500".to_owned()),
        ],
    )
    .await?;
    let store = PgStore::connect(&url, 3).await?;
    let tenant_id = query::bootstrapped_tenant(&store).await?;
    query::load_events(&url, &store, tenant_id, args.events, 1).await?;
    let moved = give_events_to_one_user(&store, args.events, args.user_events).await?;
    let admin = Admin::new(&process, &tenant_id.to_string());

    println!("| lifecycle, {} events | value |", args.events);
    println!("| --- | ---: |");
    let started = Instant::now();
    let deleted = admin.delete_user(DELETED_USER).await?;
    let seconds = started.elapsed().as_secs_f64();
    if deleted != moved {
        bail!("DeleteUser deleted {deleted} events, the user had {moved}");
    }
    println!(
        "| DeleteUser of one user's {deleted} events: seconds (events/s) | {seconds:.1} ({:.0}) |",
        deleted as f64 / seconds
    );

    let client = eventline_client::Client::connect(process.grpc.clone(), server::BENCH_API_KEY)
        .await?
        .ingest_service();
    let mut generator = EventGenerator::new(7);
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..4 {
        let with_schema = round % 2 == 1;
        admin.set_schemas(with_schema).await?;
        let batches = generator.batches(args.ingest_events, 1_000);
        rates[usize::from(with_schema)].push(ingest_rate(&client, batches).await?);
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let (without, with) = (mean(&rates[0]), mean(&rates[1]));
    println!("| ingest events/s, no schema (two runs) | {without:.0} |");
    println!(
        "| ingest events/s, a schema on every type, ENFORCE (two runs, interleaved) | {with:.0} ({:.2} of it) |",
        with / without
    );
    admin.remove_schemas().await?;

    let pace = Pace {
        rate: args.rate,
        duration: Duration::from_secs(args.seconds),
    };
    let alone = pace.p99_ms(&client, &mut generator).await?;
    let expiring: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM events WHERE "timestamp" < now() - interval '20 days'"#,
    )
    .fetch_one(store.pool())
    .await?;
    admin.set_raw_retention(20 * 86_400).await?;
    let expiry_started = Instant::now();
    let during = pace.p99_ms(&client, &mut generator).await?;
    let expired = wait_for_expiry(&process, expiring as u64).await?;
    let expiry_seconds = expiry_started.elapsed().as_secs_f64();
    println!(
        "| ingest ack p99 (ms) at {} events/s, batches of 100: alone / while expiring | {alone:.1} / {during:.1} ({:.2}×) |",
        args.rate,
        during / alone
    );
    println!(
        "| retention: {expired} expired events deleted, seconds (events/s) | {expiry_seconds:.1} ({:.0}) |",
        expired as f64 / expiry_seconds
    );
    drop(process);
    server::drop_databases(&args.postgres.database_url, &std::process::id().to_string()).await?;
    Ok(())
}

/// Gives `user_events` of the loaded events, spread over the whole window, to one user.
async fn give_events_to_one_user(
    store: &PgStore,
    events: usize,
    user_events: usize,
) -> anyhow::Result<u64> {
    let every = (events / user_events.max(1)).max(1) as i32;
    let moved = sqlx::query(
        "UPDATE events SET user_id = $1
         WHERE event_id IN (SELECT event_id FROM events WHERE abs(hashtext(event_id)) % $2 = 0 LIMIT $3)",
    )
    .bind(DELETED_USER)
    .bind(every)
    .bind(user_events as i64)
    .execute(store.pool())
    .await?
    .rows_affected();
    sqlx::query("VACUUM ANALYZE events")
        .execute(store.pool())
        .await?;
    Ok(moved)
}

/// The tenant's admin calls over REST.
struct Admin {
    client: reqwest::Client,
    base: String,
}

impl Admin {
    fn new(process: &server::ServerProcess, tenant_id: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: format!("{}/v1/tenants/{tenant_id}", process.http),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(server::BENCH_ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Deletes `user` and waits until done; returns the events deleted.
    async fn delete_user(&self, user: &str) -> anyhow::Result<u64> {
        let started = self
            .call(
                reqwest::Method::POST,
                &format!("/users/{user}:delete"),
                Some(json!({})),
            )
            .await?;
        let id = started["deletion"]["deletion_id"]
            .as_str()
            .context("DeleteUser answered no deletion id")?
            .to_owned();
        loop {
            let deletion = self
                .call(reqwest::Method::GET, &format!("/deletions/{id}"), None)
                .await?;
            if deletion["deletion"]["state"] == "DELETION_STATE_DONE" {
                return deletion["deletion"]["events_deleted"]
                    .as_str()
                    .and_then(|count| count.parse().ok())
                    .context("GetDeletion answered no count");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A schema on each of the generator's event types, or none.
    async fn set_schemas(&self, on: bool) -> anyhow::Result<()> {
        if !on {
            return self.remove_schemas().await;
        }
        let schema = json!({
            "type": "object",
            "required": ["plan", "page", "duration_ms"],
            "properties": {
                "plan": {"enum": ["free", "starter", "pro", "enterprise"]},
                "page": {"type": "string", "pattern": "^/"},
                "referrer": {"type": "string", "maxLength": 2048},
                "duration_ms": {"type": "integer", "minimum": 0},
                "browser": {"type": "string"},
                "experiment": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "variant": {"enum": ["a", "b"]}}
                }
            }
        });
        for index in 0..EVENT_TYPES {
            self.call(
                reqwest::Method::PUT,
                &format!("/schemas/type_{index}"),
                Some(json!({"schema": schema, "mode": "SCHEMA_MODE_ENFORCE"})),
            )
            .await?;
        }
        Ok(())
    }

    async fn remove_schemas(&self) -> anyhow::Result<()> {
        let listed = self.call(reqwest::Method::GET, "/schemas", None).await?;
        for schema in listed["schemas"].as_array().into_iter().flatten() {
            let event_type = schema["event_type"].as_str().unwrap_or_default();
            self.call(
                reqwest::Method::DELETE,
                &format!("/schemas/{event_type}"),
                None,
            )
            .await?;
        }
        Ok(())
    }

    async fn set_raw_retention(&self, seconds: u64) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::PUT,
            "/retention",
            Some(json!({"retention": {"raw_retention_seconds": seconds}})),
        )
        .await
        .map(drop)
    }
}

/// The generator's event types (`type_0` … `type_49`).
const EVENT_TYPES: usize = 50;

type Ingest = IngestServiceClient<eventline_client::Authorized>;

/// Events/s of IngestBatch over 4 concurrent streams of calls.
async fn ingest_rate(client: &Ingest, batches: Vec<Vec<v1::Event>>) -> anyhow::Result<f64> {
    let events: usize = batches.iter().map(Vec::len).sum();
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(batches)
        .map(|events| {
            let mut client = client.clone();
            async move {
                let answer = client
                    .ingest_batch(v1::IngestBatchRequest {
                        events,
                        sent_at: None,
                    })
                    .await?
                    .into_inner();
                if answer.rejected > 0 {
                    bail!(
                        "{} events rejected: {:?}",
                        answer.rejected,
                        answer.results.first()
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// A paced load: `rate` events/s in batches of 100 for `duration`.
struct Pace {
    rate: u32,
    duration: Duration,
}

impl Pace {
    /// The p99 of the acks, in ms.
    async fn p99_ms(&self, client: &Ingest, generator: &mut EventGenerator) -> anyhow::Result<f64> {
        let calls = (u64::from(self.rate) * self.duration.as_secs() / 100) as usize;
        let interval = Duration::from_secs_f64(100.0 / f64::from(self.rate.max(1)));
        let batches = generator.batches(calls * 100, 100);
        let started = tokio::time::Instant::now();
        let latencies: Vec<anyhow::Result<u64>> =
            futures::stream::iter(batches.into_iter().enumerate())
                .map(|(index, events)| {
                    let mut client = client.clone();
                    async move {
                        tokio::time::sleep_until(started + interval * index as u32).await;
                        let sent = Instant::now();
                        client
                            .ingest_batch(v1::IngestBatchRequest {
                                events,
                                sent_at: None,
                            })
                            .await?;
                        Ok(sent.elapsed().as_micros() as u64)
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
        let mut histogram = Histogram::<u64>::new(3)?;
        for latency in latencies {
            histogram.record(latency?)?;
        }
        Ok(histogram.value_at_quantile(0.99) as f64 / 1000.0)
    }
}

/// Waits until the server's retention counter reaches `expected` (10 minutes at most).
async fn wait_for_expiry(process: &server::ServerProcess, expected: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let series = "eventline_lifecycle_events_deleted_total{reason=\"retention\"} ";
    loop {
        let text = reqwest::get(&process.metrics).await?.text().await?;
        let expired = text
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if expired >= expected {
            return Ok(expired);
        }
        if Instant::now() > deadline {
            bail!("retention expired {expired} of {expected} events in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
