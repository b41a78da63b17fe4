//! The group-commit writer. Ingest requests enqueue validated events; each worker takes
//! whatever is queued (up to `max_batch_events`), commits it in one transaction and only
//! then answers each request. The queue is bounded in events by a semaphore: a request
//! that cannot get room within `enqueue_timeout` is refused with RESOURCE_EXHAUSTED and a
//! retry delay, so overload never grows memory or blocks forever.
//!
//! Tracing: one commit carries the events of many requests, so its `writer.commit` span
//! is a child of the first request it carries (so a lone request's trace shows its
//! commit) and holds an OpenTelemetry link to each of the others' spans.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use eventline_core::{Error, Event, IngestOutcome, TenantId};
use eventline_store::{Appended, Store, StoreError};
use opentelemetry::trace::TraceContextExt;
use tokio::{
    sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::JoinSet,
};
use tracing::{Instrument, Span, debug, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::bus::CommitBus;

/// Attempts of a transaction that lost a race (deadlock, busy) before giving up.
const MAX_RETRYABLE_ATTEMPTS: u32 = 5;
/// How long a failed commit marks the writer unhealthy when no commit succeeds after it;
/// without traffic nothing else would ever clear the mark.
const UNHEALTHY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Retry delay suggested to clients when the queue is full.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_millis(500);

/// Sizing of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    pub queue_events: usize,
    pub max_batch_events: usize,
    pub workers: usize,
    pub enqueue_timeout: Duration,
}

/// The committed outcome of one request's events.
#[derive(Debug, Clone)]
pub struct Commit {
    /// One outcome per submitted event, in order.
    pub outcomes: Vec<IngestOutcome>,
    /// Commit watermark: reads that wait for it see these events.
    pub watermark: String,
}

struct Job {
    events: Vec<Event>,
    /// When it was queued: its wait until a worker takes it is the ack's queueing time.
    queued_at: Instant,
    reply: oneshot::Sender<Result<Commit, Error>>,
    /// The submitting request's span, which the commit's span descends from or links to.
    caller: Span,
    _room: OwnedSemaphorePermit,
}

/// Handle to submit events; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    sender: mpsc::Sender<Job>,
    room: Arc<Semaphore>,
    /// Events queued that no worker has taken yet.
    waiting: Arc<AtomicUsize>,
    health: Arc<Health>,
    options: WriterOptions,
}

/// Whether the last commit failed, and when.
#[derive(Debug)]
struct Health {
    failing: AtomicBool,
    since: std::sync::Mutex<Instant>,
}

impl Health {
    fn record(&self, succeeded: bool) {
        if !succeeded {
            *self
                .since
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
        }
        self.failing.store(!succeeded, Ordering::Relaxed);
    }

    fn is_healthy(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
            || self
                .since
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .elapsed()
                > UNHEALTHY_AFTER_FAILURE
    }
}

/// How busy the writer is (see [`Writer::load`]).
#[derive(Debug, Clone)]
pub struct WriterLoad {
    room: Arc<Semaphore>,
    queue_events: usize,
    waiting: Arc<AtomicUsize>,
}

impl WriterLoad {
    /// Events waiting for, or in, a commit.
    pub fn queued_events(&self) -> usize {
        self.queue_events
            .saturating_sub(self.room.available_permits())
    }

    /// Whether events are waiting for a worker: every worker is committing and more
    /// arrive, which is what ingest at capacity looks like. (Events merely in a commit
    /// are not enough: group commit keeps the workers busy at moderate load too.)
    pub fn is_saturated(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }
}

/// The running workers; await [`WriterTasks::drain`] after dropping every [`Writer`].
#[derive(Debug)]
pub struct WriterTasks {
    workers: JoinSet<()>,
}

impl WriterTasks {
    /// Waits until every queued job has been committed and answered.
    pub async fn drain(mut self) {
        while self.workers.join_next().await.is_some() {}
    }
}

impl Writer {
    /// Starts `options.workers` workers committing to `store`.
    pub fn start(
        store: Arc<dyn Store>,
        options: WriterOptions,
        bus: CommitBus,
    ) -> (Writer, WriterTasks) {
        // Every job holds at least one event of room, so the channel never holds more
        // jobs than there is room for.
        let (sender, receiver) = mpsc::channel(options.queue_events.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let health = Arc::new(Health {
            failing: AtomicBool::new(false),
            since: std::sync::Mutex::new(Instant::now()),
        });
        let waiting = Arc::new(AtomicUsize::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..options.workers.max(1) {
            let worker = Worker {
                store: Arc::clone(&store),
                receiver: Arc::clone(&receiver),
                waiting: Arc::clone(&waiting),
                health: Arc::clone(&health),
                bus: bus.clone(),
                max_batch_events: options.max_batch_events.max(1),
            };
            workers.spawn(worker.run());
        }
        let writer = Writer {
            sender,
            room: Arc::new(Semaphore::new(options.queue_events)),
            waiting,
            health,
            options,
        };
        (writer, WriterTasks { workers })
    }

    /// Commits `events` and returns their outcomes once the transaction committed.
    pub async fn submit(&self, events: Vec<Event>) -> Result<Commit, Error> {
        if events.is_empty() {
            return Ok(Commit {
                outcomes: Vec::new(),
                watermark: String::new(),
            });
        }
        let wanted = u32::try_from(events.len()).unwrap_or(u32::MAX);
        let acquire = Arc::clone(&self.room).acquire_many_owned(wanted);
        let room = match tokio::time::timeout(self.options.enqueue_timeout, acquire).await {
            Ok(Ok(room)) => room,
            Ok(Err(_closed)) => return Err(shutting_down()),
            Err(_elapsed) => {
                warn!(batch_len = events.len(), "writer queue full");
                return Err(Error::Overloaded {
                    what: "ingest queue is full".into(),
                    retry_after: OVERLOAD_RETRY_AFTER,
                });
            }
        };
        let (reply, answer) = oneshot::channel();
        let count = events.len();
        self.waiting.fetch_add(count, Ordering::Relaxed);
        let sent = self
            .sender
            .send(Job {
                events,
                queued_at: Instant::now(),
                reply,
                caller: Span::current(),
                _room: room,
            })
            .await;
        if sent.is_err() {
            self.waiting.fetch_sub(count, Ordering::Relaxed);
            return Err(shutting_down());
        }
        answer.await.map_err(|_| shutting_down())?
    }

    /// Events waiting for, or in, a commit.
    pub fn queued_events(&self) -> usize {
        self.load().queued_events()
    }

    /// A view of how busy the writer is, for background work that should yield to
    /// ingest; unlike a `Writer`, it does not keep the queue open.
    pub fn load(&self) -> WriterLoad {
        WriterLoad {
            room: Arc::clone(&self.room),
            queue_events: self.options.queue_events,
            waiting: Arc::clone(&self.waiting),
        }
    }

    /// False for a few seconds after a commit failed, unless one succeeded since.
    pub fn is_healthy(&self) -> bool {
        self.health.is_healthy()
    }
}

fn shutting_down() -> Error {
    Error::Unavailable {
        what: "the server is shutting down".into(),
        retry_after: Duration::from_secs(1),
    }
}

struct Worker {
    store: Arc<dyn Store>,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    waiting: Arc<AtomicUsize>,
    health: Arc<Health>,
    bus: CommitBus,
    max_batch_events: usize,
}

impl Worker {
    async fn run(self) {
        while let Some(jobs) = self.next_group().await {
            self.commit(jobs).await;
        }
    }

    /// Waits for one job, then takes every job already queued, up to the batch size.
    async fn next_group(&self) -> Option<Vec<Job>> {
        let mut receiver = self.receiver.lock().await;
        let first = receiver.recv().await?;
        let mut total = first.events.len();
        let mut jobs = vec![first];
        while total < self.max_batch_events {
            match receiver.try_recv() {
                Ok(job) => {
                    total += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        self.waiting.fetch_sub(total, Ordering::Relaxed);
        Some(jobs)
    }

    async fn commit(&self, mut jobs: Vec<Job>) {
        let lengths: Vec<usize> = jobs.iter().map(|job| job.events.len()).collect();
        // One request holds one tenant's events (its key's).
        let tenants: Vec<Option<TenantId>> = jobs
            .iter()
            .map(|job| job.events.first().map(|event| event.tenant_id))
            .collect();
        let events: Vec<Event> = jobs
            .iter_mut()
            .flat_map(|job| std::mem::take(&mut job.events))
            .collect();
        let span = commit_span(&jobs, events.len());
        span.in_scope(|| {
            debug!(
                batch_len = events.len(),
                requests = jobs.len(),
                "committing group"
            )
        });
        let started = Instant::now();
        for job in &jobs {
            metrics::histogram!("eventline_writer_queue_wait_seconds")
                .record((started - job.queued_at).as_secs_f64());
        }
        let result = self
            .append_with_retries(&events)
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        metrics::histogram!("eventline_writer_batch_events").record(events.len() as f64);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("eventline_writer_commit_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(appended) => {
                self.health.record(true);
                self.bus.notify();
                let mut remaining = appended.outcomes.into_iter();
                for ((job, length), tenant_id) in jobs.into_iter().zip(lengths).zip(tenants) {
                    let outcomes: Vec<IngestOutcome> = remaining.by_ref().take(length).collect();
                    let watermark = tenant_id
                        .map(|tenant_id| appended.watermarks.of(tenant_id).to_owned())
                        .unwrap_or_default();
                    // The requester may have gone away; its events are committed anyway.
                    let _ = job.reply.send(Ok(Commit {
                        outcomes,
                        watermark,
                    }));
                }
            }
            Err(error) => {
                warn!(error = %error, batch_len = events.len(), "group commit failed");
                self.health.record(false);
                for job in jobs {
                    let _ = job.reply.send(Err(Error::from(error.clone())));
                }
            }
        }
    }

    async fn append_with_retries(&self, events: &[Event]) -> Result<Appended, StoreError> {
        let mut attempt = 1;
        loop {
            match self.store.append(events).await {
                Err(error) if error.is_retryable() && attempt < MAX_RETRYABLE_ATTEMPTS => {
                    debug!(attempt, error = %error, "retrying group commit");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// The span of one group commit: a child of the first request it carries, linked to the
/// span of every other one (OpenTelemetry links; nothing is looked up when it is off).
fn commit_span(jobs: &[Job], batch_len: usize) -> Span {
    let first = jobs.first().and_then(|job| job.caller.id());
    let span = tracing::debug_span!(
        parent: first,
        "writer.commit",
        batch_len,
        requests = jobs.len(),
        otel.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        for job in jobs.iter().skip(1) {
            span.add_link(job.caller.context().span().span_context().clone());
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn job_of(caller: Span) -> Job {
        let room = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        Job {
            events: Vec::new(),
            queued_at: Instant::now(),
            reply: oneshot::channel().0,
            caller,
            _room: room,
        }
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans.iter().find(|span| span.name == name).unwrap()
    }

    #[test]
    fn a_commit_span_is_a_child_of_its_first_request_and_links_the_others() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let jobs: Vec<Job> = ["first", "second", "third"]
                .into_iter()
                .map(|name| job_of(tracing::info_span!("request", otel.name = name)))
                .collect();
            drop(commit_span(&jobs, 0));
        });
        let spans = exporter.get_finished_spans().unwrap();
        let commit = named(&spans, "writer.commit");
        let first = named(&spans, "first");
        assert_eq!(commit.parent_span_id, first.span_context.span_id());
        assert_eq!(
            commit.span_context.trace_id(),
            first.span_context.trace_id()
        );
        let linked: Vec<_> = commit
            .links
            .links
            .iter()
            .map(|link| link.span_context.span_id())
            .collect();
        let others: Vec<_> = ["second", "third"]
            .into_iter()
            .map(|name| named(&spans, name).span_context.span_id())
            .collect();
        assert_eq!(linked, others);
    }
}
