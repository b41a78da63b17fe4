//! `eventline bench producer`: in one run against one server, the raw bidi load's
//! acknowledged events/s (the `bench ingest` workers), the Rust SDK producer's end-to-end
//! acknowledged events/s from one process, and the cost of `track()` in the calling
//! thread. The bidi baseline runs before and after the producer and the ratio is taken
//! to their mean, so drift in the machine's speed cancels out.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use eventline_client::{Client, Counts, ProducerOptions, TrackEvent};
use hdrhistogram::Histogram;

use super::{generator::EventGenerator, ingest, server};

/// Distinct generated events the producer cycles through (each `track` gets a new id).
const TRACK_POOL: usize = 10_000;

#[derive(Debug, Args)]
pub(crate) struct ProducerArgs {
    #[command(flatten)]
    postgres: super::PostgresServer,
    /// Bench a running server (gRPC URL) instead of starting one; needs --api-key.
    #[arg(long)]
    target: Option<String>,
    /// API key for --target.
    #[arg(long, env = "EVENTLINE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Events per measurement (each bidi run and the producer run).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Bidi baseline: events per batch message, streams and batches in flight per stream
    /// (the `bench ingest` defaults).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 4)]
    pipeline: usize,
    /// Producer: events per batch (the SDK default is 500).
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

impl ProducerArgs {
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// The result of one producer bench run.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ProducerReport {
    events: usize,
    bidi_events_per_second: f64,
    bidi_before: f64,
    bidi_after: f64,
    producer_events_per_second: f64,
    /// producer / mean of the two bidi runs; target ≥ 0.9.
    ratio: f64,
    track_ns_p50: u64,
    track_ns_p99: u64,
    track_ns_p999: u64,
    producer_max_batch: usize,
    producer_reconnects: u64,
}

pub(crate) async fn run(args: ProducerArgs) -> anyhow::Result<ProducerReport> {
    let suffix = format!("{}_producer", std::process::id());
    let process = match &args.target {
        Some(_) => None,
        None => {
            let url = server::fresh_database(&args.postgres.database_url, &format!("{suffix}_db"))
                .await?;
            Some(server::ServerProcess::start(&url).await?)
        }
    };
    let (grpc, key) = match (&args.target, &process) {
        (Some(target), _) => (
            target.clone(),
            args.api_key.clone().context("--target needs --api-key")?,
        ),
        (None, Some(process)) => (process.grpc.clone(), server::BENCH_API_KEY.to_owned()),
        (None, None) => bail!("no server to bench"),
    };
    let mut generator = EventGenerator::new(args.seed);

    eprintln!("bidi baseline: {} events", args.events);
    let batches = generator.batches(args.events, args.batch_size);
    let bidi_before =
        ingest::bidi_events_per_second(&grpc, &key, batches, args.concurrency, args.pipeline)
            .await?;

    eprintln!("producer: {} events", args.events);
    let pool: Vec<TrackEvent> = (0..TRACK_POOL)
        .map(|_| generator.next_track_event())
        .collect();
    let client = Client::connect(grpc.clone(), &key).await?;
    let measured = producer_rate(&client, pool, args.events, args.max_batch).await?;

    eprintln!("bidi baseline again: {} events", args.events);
    let batches = generator.batches(args.events, args.batch_size);
    let bidi_after =
        ingest::bidi_events_per_second(&grpc, &key, batches, args.concurrency, args.pipeline)
            .await?;
    drop(process);
    if args.target.is_none() {
        server::drop_databases(&args.postgres.database_url, &suffix).await?;
    }
    let bidi = (bidi_before + bidi_after) / 2.0;
    Ok(ProducerReport {
        events: args.events,
        bidi_events_per_second: bidi,
        bidi_before,
        bidi_after,
        producer_events_per_second: measured.rate,
        ratio: measured.rate / bidi,
        track_ns_p50: measured.track_ns.value_at_quantile(0.5),
        track_ns_p99: measured.track_ns.value_at_quantile(0.99),
        track_ns_p999: measured.track_ns.value_at_quantile(0.999),
        producer_max_batch: args.max_batch,
        producer_reconnects: measured.reconnects,
    })
}

struct ProducerRun {
    rate: f64,
    track_ns: Histogram<u64>,
    reconnects: u64,
}

/// Tracks `events` from one application thread as fast as it can, timing each call, and
/// measures acknowledged events/s over the steady window (after the first 10 %) up to
/// the moment `shutdown` returns with everything acknowledged. The queue holds every
/// event, so the rate is the sender's, not the queue bound's.
async fn producer_rate(
    client: &Client,
    pool: Vec<TrackEvent>,
    events: usize,
    max_batch: usize,
) -> anyhow::Result<ProducerRun> {
    let options = ProducerOptions::default()
        .max_queue_size(events)
        .max_batch(max_batch);
    let producer = client.producer(options)?;
    let done = Arc::new(AtomicBool::new(false));
    let steady = {
        let (producer, done) = (producer.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let acked = producer.stats().counts.accepted;
                if acked >= events as u64 / 10 {
                    return Some((Instant::now(), acked));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            None
        })
    };
    let application = {
        let producer = producer.clone();
        std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
            let mut track_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
            for n in 0..events {
                let event = pool[n % pool.len()].clone();
                let started = Instant::now();
                producer.track(event)?;
                let _ = track_ns.record(started.elapsed().as_nanos().max(1) as u64);
            }
            Ok(track_ns)
        })
    };
    let track_ns = tokio::task::spawn_blocking(move || application.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the tracking thread panicked"))??;
    let counts: Counts = producer.shutdown(Duration::from_secs(600)).await;
    let finished = Instant::now();
    done.store(true, Ordering::Relaxed);
    let (steady_start, steady_acked) = steady.await?.context("the producer never reached 10 %")?;
    if counts.accepted + counts.duplicates != events as u64 {
        bail!("the producer resolved {counts:?} of {events} events");
    }
    Ok(ProducerRun {
        rate: (counts.accepted - steady_acked) as f64
            / (finished - steady_start).as_secs_f64().max(1e-9),
        track_ns,
        reconnects: producer.stats().reconnects,
    })
}

impl ProducerReport {
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
            );
            return;
        }
        println!("producer bench, {} events per run", self.events);
        println!(
            "  bidi (bench ingest workers)   {:>10.0} events/s  (before {:.0}, after {:.0})",
            self.bidi_events_per_second, self.bidi_before, self.bidi_after
        );
        println!(
            "  Rust producer, one process    {:>10.0} events/s  (max_batch {})",
            self.producer_events_per_second, self.producer_max_batch
        );
        println!(
            "  ratio producer / bidi         {:>10.2}  (target >= 0.9)",
            self.ratio
        );
        println!(
            "  track() in the calling thread p50 {} ns, p99 {} ns, p99.9 {} ns",
            self.track_ns_p50, self.track_ns_p99, self.track_ns_p999
        );
    }
}
