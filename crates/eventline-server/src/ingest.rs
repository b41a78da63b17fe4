//! IngestService: Track, IngestBatch, IngestStream and IngestBidi over one batch path:
//! authenticate (ingest scope), admit the whole message under the key's rate limit,
//! validate every event (bad ones are reported, never stored), hand the good ones to the
//! group-commit writer, answer after COMMIT.

use std::{pin::Pin, sync::Arc};

use eventline_core::{
    ApiKey, Error, Event, FieldViolation, IngestClock, Scope, TenantId, limits, validate_or_return,
};
use eventline_proto::v1::{self, ingest_service_server::IngestService};
use futures::{Stream, StreamExt, stream::FuturesOrdered};
use pbjson_types::Timestamp;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    auth::Authenticator,
    budget::MemoryBudget,
    quarantine::{IngestChecks, Rejected},
    rate_limit::RateLimiter,
    schemas::Verdict,
    writer::Writer,
};

/// Batches of one IngestStream or IngestBidi committing at once; bounds per-stream memory
/// while letting a client pipeline.
const MAX_IN_FLIGHT_BATCHES_PER_STREAM: usize = 4;
/// Most non-accepted results an IngestStream summary lists; its counts stay exact.
const MAX_STREAM_SUMMARY_RESULTS: usize = 100_000;

/// The IngestService implementation.
#[derive(Debug, Clone)]
pub struct IngestApi {
    auth: Authenticator,
    writer: Writer,
    budget: MemoryBudget,
    limiter: Arc<RateLimiter>,
    checks: IngestChecks,
}

/// What one batch came to.
#[derive(Debug, Default)]
struct BatchReport {
    results: Vec<v1::EventResult>,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    watermark: String,
}

impl IngestApi {
    /// A service submitting to `writer`; decoded batches are charged to `budget` until
    /// their commit is answered, and each message to its key's bucket in `limiter`.
    pub fn new(
        auth: Authenticator,
        writer: Writer,
        budget: MemoryBudget,
        limiter: Arc<RateLimiter>,
        checks: IngestChecks,
    ) -> Self {
        Self {
            auth,
            writer,
            budget,
            limiter,
            checks,
        }
    }

    async fn caller(&self, metadata: &tonic::metadata::MetadataMap) -> Result<ApiKey, Status> {
        Ok(self.auth.key_with_scope(metadata, Scope::Ingest).await?)
    }

    /// Admits, validates and commits one batch message (already checked as a whole by
    /// [`batch_clock`]), reporting every event in order.
    async fn ingest(
        &self,
        key: &ApiKey,
        events: Vec<v1::Event>,
        clock: IngestClock,
    ) -> Result<BatchReport, Error> {
        // Every event of the message counts, valid or not: all of them cost the server.
        self.limiter.admit(key, events.len())?;
        let screened = screen(&self.checks, key.tenant_id, events, &clock).await?;
        // Kept before anything is stored or answered: a rejection is never only a reply.
        self.checks.keep(screened.rejected).await?;
        let mut report = BatchReport {
            results: screened.results,
            rejected: screened.rejected_count,
            ..Default::default()
        };
        let validated = Validated {
            events: screened.events,
            positions: screened.positions,
        };
        let types = TypeSlots::of(&validated.events);
        // Held while the batch waits for queue room and commits: under overload, requests
        // past the budget are refused at once instead of piling up decoded in memory.
        let _charge = self
            .budget
            .try_charge(validated.events.iter().map(Event::memory_bytes).sum())?;
        let commit = self.writer.submit(validated.events).await?;
        report.watermark = commit.watermark;
        let accepted_by_type = types.accepted(&commit.outcomes);
        for (position, outcome) in validated.positions.into_iter().zip(commit.outcomes) {
            report.results[position].status = outcome.to_proto() as i32;
            match outcome {
                eventline_core::IngestOutcome::Accepted => report.accepted += 1,
                eventline_core::IngestOutcome::Duplicate => report.duplicates += 1,
            }
        }
        record_outcomes(
            accepted_by_type,
            report.accepted,
            report.duplicates,
            report.rejected,
        );
        Ok(report)
    }
}

impl IngestApi {
    /// Quarantines a Track event that was refused and says why, naming the field
    /// under `event`; a failure to quarantine it is the answer instead.
    async fn refuse_tracked(&self, rejected: Rejected, violation: FieldViolation) -> Error {
        record_outcomes([], 0, 0, 1);
        if let Err(error) = self.checks.keep(vec![rejected]).await {
            return error;
        }
        Error::InvalidArgument {
            violation: violation.within("event"),
        }
    }

    /// ValidateEvents: every rule of IngestBatch, schemas included, and nothing stored
    /// or quarantined.
    async fn dry_run(
        &self,
        tenant_id: TenantId,
        events: Vec<v1::Event>,
        clock: IngestClock,
    ) -> Result<v1::ValidateEventsResponse, Error> {
        let mut screened = screen(&self.checks, tenant_id, events, &clock).await?;
        for &position in &screened.positions {
            screened.results[position].status = v1::IngestStatus::Accepted as i32;
        }
        let (results, invalid) = (screened.results, screened.rejected_count);
        Ok(v1::ValidateEventsResponse {
            valid: results.len() as u64 - invalid,
            invalid,
            results,
            warnings: screened.warnings,
        })
    }
}

/// A batch after validation and its types' schemas.
pub(crate) struct Screened {
    /// One result per event: the rejected ones final, the others waiting for a commit.
    pub(crate) results: Vec<v1::EventResult>,
    pub(crate) rejected_count: u64,
    /// The events to store, and where each stood in the batch.
    pub(crate) events: Vec<Event>,
    pub(crate) positions: Vec<usize>,
    /// The rejected events, for the quarantine.
    pub(crate) rejected: Vec<Rejected>,
    /// WARN-mode schema violations, "position: violation".
    pub(crate) warnings: Vec<String>,
}

/// Validates a batch exactly as IngestBatch does, schemas included.
#[tracing::instrument(name = "ingest.validate", level = "debug", skip_all, fields(events = events.len()))]
pub(crate) async fn screen(
    checks: &IngestChecks,
    tenant_id: TenantId,
    events: Vec<v1::Event>,
    clock: &IngestClock,
) -> Result<Screened, Error> {
    let (mut report, mut validated, mut rejected) = validate_batch(tenant_id, events, clock);
    let verdicts = checks.check(tenant_id, &validated.events).await?;
    let mut warnings = Vec::new();
    for (position, verdict) in validated.positions.iter().zip(&verdicts) {
        if let Verdict::Warned(violations) = verdict {
            warnings.extend(
                violations
                    .iter()
                    .map(|violation| format!("{position}: {violation}")),
            );
        }
    }
    apply_verdicts(&mut report, &mut validated, &mut rejected, verdicts);
    Ok(Screened {
        warnings,
        results: report.results,
        rejected_count: report.rejected,
        events: validated.events,
        positions: validated.positions,
        rejected,
    })
}

/// The valid events of a batch, and where each stood in it.
struct Validated {
    events: Vec<Event>,
    positions: Vec<usize>,
}

/// Validates every event of a batch: a report with one result per event (the rejected
/// ones final, the valid ones waiting for their commit) and the valid events.
fn validate_batch(
    tenant_id: TenantId,
    events: Vec<v1::Event>,
    clock: &IngestClock,
) -> (BatchReport, Validated, Vec<Rejected>) {
    let mut rejected = Vec::new();
    let mut report = BatchReport {
        results: Vec::with_capacity(events.len()),
        ..Default::default()
    };
    let mut validated = Validated {
        events: Vec::with_capacity(events.len()),
        positions: Vec::with_capacity(events.len()),
    };
    for (index, event) in events.into_iter().enumerate() {
        match validate_or_return(tenant_id, event, clock) {
            Ok(event) => {
                validated.positions.push(index);
                report.results.push(v1::EventResult {
                    event_id: event.event_id.clone(),
                    index: index as u64,
                    ..Default::default()
                });
                validated.events.push(event);
            }
            Err(rejection) => {
                let (violation, event) = *rejection;
                report.rejected += 1;
                report.results.push(v1::EventResult {
                    event_id: event.event_id.clone(),
                    status: v1::IngestStatus::Rejected as i32,
                    error: violation.to_string(),
                    index: index as u64,
                });
                rejected.push(Rejected::sent(tenant_id, event, violation.to_string()));
            }
        }
    }
    (report, validated, rejected)
}

/// Takes the events their type's schema refuses out of `validated`: REJECTED in the
/// report, on their way to the quarantine. WARN verdicts only count (in the metric).
fn apply_verdicts(
    report: &mut BatchReport,
    validated: &mut Validated,
    rejected: &mut Vec<Rejected>,
    verdicts: Vec<Verdict>,
) {
    if verdicts
        .iter()
        .all(|verdict| !matches!(verdict, Verdict::Rejected(_)))
    {
        return;
    }
    let events = std::mem::take(&mut validated.events);
    let positions = std::mem::take(&mut validated.positions);
    for ((event, position), verdict) in events.into_iter().zip(positions).zip(verdicts) {
        match verdict {
            Verdict::Rejected(reason) => {
                let violation = FieldViolation::new("properties", reason);
                let result = &mut report.results[position];
                result.status = v1::IngestStatus::Rejected as i32;
                result.error = violation.to_string();
                report.rejected += 1;
                rejected.push(Rejected::stored_form(&event, violation.to_string()));
            }
            Verdict::Valid | Verdict::Warned(_) => {
                validated.events.push(event);
                validated.positions.push(position);
            }
        }
    }
}

/// The event types of a batch for the per-type counter, each name copied once per batch.
struct TypeSlots {
    names: Vec<String>,
    slot_of_event: Vec<usize>,
}

impl TypeSlots {
    fn of(events: &[Event]) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut slots: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let slot_of_event = events
            .iter()
            .map(|event| {
                *slots.entry(event.event_type.as_str()).or_insert_with(|| {
                    names.push(event.event_type.clone());
                    names.len() - 1
                })
            })
            .collect();
        Self {
            names,
            slot_of_event,
        }
    }

    /// Accepted events per type, given each event's outcome in order.
    fn accepted<'a>(
        &'a self,
        outcomes: &[eventline_core::IngestOutcome],
    ) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let mut accepted = vec![0u64; self.names.len()];
        for (slot, outcome) in self.slot_of_event.iter().zip(outcomes) {
            if *outcome == eventline_core::IngestOutcome::Accepted {
                accepted[*slot] += 1;
            }
        }
        self.names.iter().map(String::as_str).zip(accepted)
    }
}

type BidiStream = Pin<Box<dyn Stream<Item = Result<v1::IngestBidiResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn track(
        &self,
        request: Request<v1::TrackRequest>,
    ) -> Result<Response<v1::TrackResponse>, Status> {
        let key = self.caller(request.metadata()).await?;
        let tenant_id = key.tenant_id;
        let event = request
            .into_inner()
            .event
            .ok_or_else(|| Error::invalid("event", "is required"))?;
        self.limiter.admit(&key, 1)?;
        let clock = IngestClock::now();
        let validation = tracing::debug_span!("ingest.validate", events = 1_usize);
        let validated = validation.in_scope(|| validate_or_return(tenant_id, event, &clock));
        let event = match validated {
            Ok(event) => event,
            Err(rejection) => {
                let (violation, event) = *rejection;
                let reason = violation.to_string();
                return Err(self
                    .refuse_tracked(Rejected::sent(tenant_id, event, reason), violation)
                    .await
                    .into());
            }
        };
        let verdicts = tracing::Instrument::instrument(
            self.checks.check(tenant_id, std::slice::from_ref(&event)),
            validation,
        )
        .await?;
        if let Some(Verdict::Rejected(reason)) = verdicts.into_iter().next() {
            let violation = FieldViolation::new("properties", reason);
            let rejected = Rejected::stored_form(&event, violation.to_string());
            return Err(self.refuse_tracked(rejected, violation).await.into());
        }
        let event_id = event.event_id.clone();
        let event_type = event.event_type.clone();
        let _charge = self.budget.try_charge(event.memory_bytes())?;
        let commit = self.writer.submit(vec![event]).await?;
        let status = commit
            .outcomes
            .first()
            .copied()
            .ok_or_else(|| Error::Internal("writer returned no outcome".into()))?;
        match status {
            eventline_core::IngestOutcome::Accepted => {
                record_outcomes([(event_type.as_str(), 1)], 1, 0, 0)
            }
            eventline_core::IngestOutcome::Duplicate => record_outcomes([], 0, 1, 0),
        }
        Ok(Response::new(v1::TrackResponse {
            result: Some(v1::EventResult {
                event_id,
                status: status.to_proto() as i32,
                error: String::new(),
                index: 0,
            }),
            watermark: commit.watermark,
        }))
    }

    async fn ingest_batch(
        &self,
        request: Request<v1::IngestBatchRequest>,
    ) -> Result<Response<v1::IngestBatchResponse>, Status> {
        let key = self.caller(request.metadata()).await?;
        let batch = request.into_inner();
        let clock = batch_clock(&batch.events, batch.sent_at.as_ref())?;
        let report = self.ingest(&key, batch.events, clock).await?;
        Ok(Response::new(v1::IngestBatchResponse {
            results: report.results,
            accepted: report.accepted,
            duplicates: report.duplicates,
            rejected: report.rejected,
            watermark: report.watermark,
        }))
    }

    async fn ingest_stream(
        &self,
        request: Request<Streaming<v1::IngestStreamRequest>>,
    ) -> Result<Response<v1::IngestStreamResponse>, Status> {
        let key = Arc::new(self.caller(request.metadata()).await?);
        let mut incoming = request.into_inner();
        let mut summary = v1::IngestStreamResponse::default();
        let mut in_flight = FuturesOrdered::new();
        let mut events_seen: u64 = 0;
        let mut watermark = String::new();
        loop {
            // Read ahead only while fewer than the limit are committing.
            let next = if in_flight.len() < MAX_IN_FLIGHT_BATCHES_PER_STREAM {
                tokio::select! {
                    message = incoming.next() => Some(message),
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                        merge_stream_batch(&mut summary, &mut watermark, done)?;
                        None
                    }
                }
            } else {
                let done = in_flight.next().await.expect("in_flight is not empty");
                merge_stream_batch(&mut summary, &mut watermark, done)?;
                None
            };
            match next {
                None => {}
                Some(None) => break,
                Some(Some(message)) => {
                    let message = message?;
                    let offset = events_seen;
                    events_seen += message.events.len() as u64;
                    let api = self.clone();
                    let key = Arc::clone(&key);
                    in_flight.push_back(async move {
                        let clock = batch_clock(&message.events, message.sent_at.as_ref())?;
                        api.ingest(&key, message.events, clock)
                            .await
                            .map(|report| (offset, report))
                    });
                }
            }
        }
        while let Some(done) = in_flight.next().await {
            merge_stream_batch(&mut summary, &mut watermark, done)?;
        }
        summary.watermark = watermark;
        Ok(Response::new(summary))
    }

    async fn validate_events(
        &self,
        request: Request<v1::ValidateEventsRequest>,
    ) -> Result<Response<v1::ValidateEventsResponse>, Status> {
        let key = self.caller(request.metadata()).await?;
        let batch = request.into_inner();
        let clock = batch_clock(&batch.events, batch.sent_at.as_ref())?;
        let answer = self.dry_run(key.tenant_id, batch.events, clock).await?;
        Ok(Response::new(answer))
    }

    type IngestBidiStream = BidiStream;

    async fn ingest_bidi(
        &self,
        request: Request<Streaming<v1::IngestBidiRequest>>,
    ) -> Result<Response<Self::IngestBidiStream>, Status> {
        let key = Arc::new(self.caller(request.metadata()).await?);
        let mut incoming = request.into_inner();
        let (acks, ack_stream) = mpsc::channel(MAX_IN_FLIGHT_BATCHES_PER_STREAM);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT_BATCHES_PER_STREAM));
        let api = self.clone();
        // The reader and each batch's task stay inside the call's span, so the batches'
        // validation and commits are in the caller's trace (README "Tracing").
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            loop {
                // Take a slot before reading, so a fast client is paced by commits.
                let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                let message = match incoming.next().await {
                    None => break,
                    Some(Err(status)) => {
                        let _ = acks.send(Err(status)).await;
                        break;
                    }
                    Some(Ok(message)) => message,
                };
                let api = api.clone();
                let acks = acks.clone();
                let key = Arc::clone(&key);
                tokio::spawn(tracing::Instrument::in_current_span(async move {
                    let sequence = message.sequence;
                    let answer = match batch_clock(&message.events, message.sent_at.as_ref()) {
                        Ok(clock) => api
                            .ingest(&key, message.events, clock)
                            .await
                            .map(|report| v1::IngestBidiResponse {
                                sequence,
                                results: report.results,
                                watermark: report.watermark,
                            })
                            .map_err(|error| bidi_error(sequence, error)),
                        // A batch the client got wrong as a whole is refused alone, in its
                        // ack: the batches pipelined behind it go on (issue #12).
                        Err(Error::InvalidArgument { violation }) => {
                            Ok(rejected_batch(sequence, &message.events, &violation))
                        }
                        Err(error) => Err(bidi_error(sequence, error)),
                    };
                    let _ = acks.send(answer).await;
                    drop(slot);
                }));
            }
        }));
        Ok(Response::new(
            Box::pin(ReceiverStream::new(ack_stream)) as BidiStream
        ))
    }
}

/// Checks what applies to a batch message as a whole and returns its clock.
fn batch_clock(events: &[v1::Event], sent_at: Option<&Timestamp>) -> Result<IngestClock, Error> {
    if events.len() > limits::MAX_EVENTS_PER_BATCH {
        return Err(Error::invalid(
            "events",
            format!(
                "holds {} events, over the limit of {}",
                events.len(),
                limits::MAX_EVENTS_PER_BATCH
            ),
        ));
    }
    IngestClock::new(eventline_core::time::now(), sent_at)
}

/// Counts ingested events by outcome, and accepted ones by type.
fn record_outcomes<'a>(
    accepted_by_type: impl IntoIterator<Item = (&'a str, u64)>,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
) {
    for (event_type, count) in accepted_by_type {
        if count > 0 {
            crate::metrics::count_event_type(event_type, count);
        }
    }
    metrics::counter!("eventline_ingest_events_total", "outcome" => "accepted").increment(accepted);
    metrics::counter!("eventline_ingest_events_total", "outcome" => "duplicate")
        .increment(duplicates);
    metrics::counter!("eventline_ingest_events_total", "outcome" => "rejected").increment(rejected);
}

/// Adds one committed batch of a client stream to the summary.
fn merge_stream_batch(
    summary: &mut v1::IngestStreamResponse,
    watermark: &mut String,
    done: Result<(u64, BatchReport), Error>,
) -> Result<(), Status> {
    let (offset, report) = done?;
    summary.accepted += report.accepted;
    summary.duplicates += report.duplicates;
    summary.rejected += report.rejected;
    // Batches commit in order of their futures, so the last one seen is the latest.
    if !report.watermark.is_empty() {
        *watermark = report.watermark;
    }
    for result in report.results {
        if result.status == v1::IngestStatus::Accepted as i32 {
            continue;
        }
        if summary.results.len() >= MAX_STREAM_SUMMARY_RESULTS {
            summary.results_truncated = true;
            break;
        }
        summary.results.push(v1::EventResult {
            index: result.index + offset,
            ..result
        });
    }
    Ok(())
}

/// The ack of a batch refused as a whole (too many events, a bad `sent_at`): every event
/// REJECTED with the batch's violation, so a client counts them and does not resend them.
fn rejected_batch(
    sequence: u64,
    events: &[v1::Event],
    violation: &eventline_core::FieldViolation,
) -> v1::IngestBidiResponse {
    record_outcomes([], 0, 0, events.len() as u64);
    let error = violation.to_string();
    v1::IngestBidiResponse {
        sequence,
        results: events
            .iter()
            .enumerate()
            .map(|(index, event)| v1::EventResult {
                event_id: event.event_id.clone(),
                status: v1::IngestStatus::Rejected as i32,
                error: error.clone(),
                index: index as u64,
            })
            .collect(),
        watermark: String::new(),
    }
}

/// A failed batch (overload, outage) ends the bidi stream; the client resends every
/// unacknowledged batch.
fn bidi_error(sequence: u64, error: Error) -> Status {
    let status = Status::from(error);
    Status::with_details(
        status.code(),
        format!("batch {sequence}: {}", status.message()),
        status.details().to_vec().into(),
    )
}
