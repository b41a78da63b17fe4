//! `eventline bench capture`: in one run against one server, acknowledged events/s through
//! native IngestBatch (unary gRPC), the Segment door (`POST /v1/batch`, JSON) and the
//! PostHog door (`POST /batch/`, JSON), with the same generated events, batch size and
//! concurrency. Bodies are encoded before the clock starts, so the rates compare what the
//! server does per door. Native runs before and after the doors and each door's ratio is
//! to their mean, so drift in the machine's speed cancels out.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::Args;
use eventline_proto::v1::{self, ingest_service_client::IngestServiceClient};
use serde_json::{Value, json};

use super::{
    generator::{self, EventGenerator},
    server,
};

#[derive(Debug, Args)]
pub(crate) struct CaptureArgs {
    #[command(flatten)]
    postgres: super::PostgresServer,
    /// Events per door.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Events per request (Segment's 500 KB limit fits about 1,000 of the generated ones).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

impl CaptureArgs {
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// The result of one capture bench run.
#[derive(Debug, serde::Serialize)]
pub(crate) struct CaptureReport {
    events: usize,
    batch_size: usize,
    concurrency: usize,
    native_events_per_second: f64,
    native_before: f64,
    native_after: f64,
    segment_events_per_second: f64,
    posthog_events_per_second: f64,
    /// Door rate / mean native rate.
    segment_ratio: f64,
    posthog_ratio: f64,
}

/// One request's worth of events, as each door takes it.
enum Body {
    Native(v1::IngestBatchRequest),
    Http {
        path: &'static str,
        json: Vec<u8>,
        events: usize,
    },
}

pub(crate) async fn run(args: CaptureArgs) -> anyhow::Result<CaptureReport> {
    let suffix = format!("{}_capture", std::process::id());
    let url = server::fresh_database(&args.postgres.database_url, &format!("{suffix}_db")).await?;
    let process = server::ServerProcess::start(&url).await?;
    let mut generator = EventGenerator::new(args.seed);
    let mut rates = Vec::new();
    for door in ["native", "segment", "posthog", "native"] {
        eprintln!("{door}: {} events", args.events);
        let bodies = bodies(&mut generator, door, args.events, args.batch_size);
        rates.push(events_per_second(&process, bodies, args.events, args.concurrency).await?);
    }
    let [native_before, segment, posthog, native_after] = rates[..] else {
        bail!("one rate per door expected");
    };
    drop(process);
    server::drop_databases(&args.postgres.database_url, &suffix).await?;
    let native = (native_before + native_after) / 2.0;
    Ok(CaptureReport {
        events: args.events,
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        native_events_per_second: native,
        native_before,
        native_after,
        segment_events_per_second: segment,
        posthog_events_per_second: posthog,
        segment_ratio: segment / native,
        posthog_ratio: posthog / native,
    })
}

/// `count` fresh events in requests of `batch_size` for `door`.
fn bodies(
    generator: &mut EventGenerator,
    door: &str,
    count: usize,
    batch_size: usize,
) -> VecDeque<Body> {
    let now = chrono::Utc::now().to_rfc3339();
    let mut bodies = VecDeque::new();
    let mut left = count;
    while left > 0 {
        let size = left.min(batch_size);
        left -= size;
        let events: Vec<(String, String, String, Value)> =
            (0..size).map(|_| generator.next_fields()).collect();
        let body = match door {
            "segment" => {
                let batch: Vec<Value> = events
                    .into_iter()
                    .map(|(event_type, user_id, _, properties)| {
                        json!({"type": "track", "event": event_type, "userId": user_id,
                            "messageId": uuid::Uuid::now_v7().to_string(), "timestamp": now,
                            "properties": properties,
                            "context": {"library": {"name": "bench", "version": "1"}}})
                    })
                    .collect();
                let json =
                    json!({"batch": batch, "sentAt": now, "writeKey": server::BENCH_API_KEY});
                Body::Http {
                    path: "/v1/batch",
                    json: json.to_string().into_bytes(),
                    events: size,
                }
            }
            "posthog" => {
                let batch: Vec<Value> = events
                    .into_iter()
                    .map(|(event_type, user_id, session_id, mut properties)| {
                        properties["$session_id"] = Value::String(session_id);
                        properties["$lib"] = Value::String("bench".into());
                        json!({"event": event_type, "distinct_id": user_id,
                            "uuid": uuid::Uuid::now_v7().to_string(), "timestamp": now,
                            "properties": properties})
                    })
                    .collect();
                let json =
                    json!({"api_key": server::BENCH_API_KEY, "batch": batch, "sent_at": now});
                Body::Http {
                    path: "/batch/",
                    json: json.to_string().into_bytes(),
                    events: size,
                }
            }
            _ => Body::Native(v1::IngestBatchRequest {
                events: events.into_iter().map(generator::event_of).collect(),
                sent_at: None,
            }),
        };
        bodies.push_back(body);
    }
    bodies
}

/// Sends every body, `concurrency` at a time, and returns acknowledged events/s.
async fn events_per_second(
    process: &server::ServerProcess,
    bodies: VecDeque<Body>,
    events: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let queue = Arc::new(Mutex::new(bodies));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (queue, grpc, http) = (
            Arc::clone(&queue),
            process.grpc.clone(),
            process.http.clone(),
        );
        workers.push(tokio::spawn(
            async move { send_all(queue, &grpc, &http).await },
        ));
    }
    let mut acknowledged = 0;
    for worker in workers {
        acknowledged += worker.await.context("bench worker")??;
    }
    if acknowledged != events {
        bail!("only {acknowledged} of {events} events were acknowledged");
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// One worker: takes bodies until none is left; returns the events acknowledged.
async fn send_all(
    queue: Arc<Mutex<VecDeque<Body>>>,
    grpc: &str,
    http: &str,
) -> anyhow::Result<usize> {
    let mut native = IngestServiceClient::connect(grpc.to_owned()).await?;
    let client = reqwest::Client::new();
    let mut acknowledged = 0;
    loop {
        let next = queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop_front();
        let Some(body) = next else {
            return Ok(acknowledged);
        };
        match body {
            Body::Native(request) => {
                let events = request.events.len();
                let mut request = tonic::Request::new(request);
                request
                    .metadata_mut()
                    .insert("x-api-key", server::BENCH_API_KEY.parse()?);
                let reply = native.ingest_batch(request).await?.into_inner();
                if reply.accepted as usize != events {
                    bail!("native: {} of {events} accepted", reply.accepted);
                }
                acknowledged += events;
            }
            Body::Http { path, json, events } => {
                let response = client
                    .post(format!("{http}{path}"))
                    .header("content-type", "application/json")
                    .body(json)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("{path}: {} {}", response.status(), response.text().await?);
                }
                acknowledged += events;
            }
        }
    }
}

impl CaptureReport {
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
            return;
        }
        println!(
            "| {} events per door, batches of {}, {} in flight | events/s | of native |",
            self.events, self.batch_size, self.concurrency
        );
        println!("| --- | ---: | ---: |");
        println!(
            "| native IngestBatch (gRPC), mean of before / after ({:.0} / {:.0}) | {:.0} | 1.00 |",
            self.native_before, self.native_after, self.native_events_per_second
        );
        println!(
            "| Segment `POST /v1/batch` | {:.0} | {:.2} |",
            self.segment_events_per_second, self.segment_ratio
        );
        println!(
            "| PostHog `POST /batch/` | {:.0} | {:.2} |",
            self.posthog_events_per_second, self.posthog_ratio
        );
    }
}
