//! The sender task: takes batches off the queue, sends them over one IngestBidi stream
//! with sequence numbers, matches acknowledgements, and after a broken stream reconnects
//! with backoff and resends every unacknowledged batch with the same event ids (the
//! server stores each id once and answers DUPLICATE for a resend).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use eventline_proto::v1::{self, ingest_service_client::IngestServiceClient};
use futures::StreamExt;
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{
    options::{Counts, Rejection},
    state::Shared,
};
use crate::{
    connect::Authorized,
    retry::{Backoff, retry_info_delay},
};

/// How far ahead the sender sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);

/// A batch taken off the queue and not yet acknowledged.
struct Batch {
    events: Vec<v1::Event>,
    /// When it was first taken off the queue; bounds its retries.
    taken_at: Instant,
    /// When it was sent on the current stream; `None` until then.
    sent_at: Option<Instant>,
}

pub(crate) struct Sender {
    shared: Arc<Shared>,
    client: IngestServiceClient<Authorized>,
    batches: BTreeMap<u64, Batch>,
    next_sequence: u64,
    backoff: Backoff,
    /// Batches sent and unacknowledged at once on the current stream, up to
    /// `max_in_flight`. Halved when the server is overloaded, grown by one per
    /// acknowledgement: one failed batch ends the stream and loses the acknowledgements of
    /// the others, so resending the full window into a full server would never progress.
    window: usize,
}

type Requests = mpsc::Sender<v1::IngestBidiRequest>;

impl Sender {
    pub(crate) fn new(shared: Arc<Shared>, client: IngestServiceClient<Authorized>) -> Self {
        let backoff = Backoff::new(shared.options.initial_backoff, shared.options.max_backoff);
        let window = shared.options.max_in_flight;
        Self {
            shared,
            client,
            batches: BTreeMap::new(),
            next_sequence: 1,
            backoff,
            window,
        }
    }

    /// Runs until shutdown has drained everything or reached its deadline, then counts
    /// whatever is left as failed.
    pub(crate) async fn run(mut self) {
        let mut delay = None;
        loop {
            if let Some(delay) = delay.take() {
                self.pause(delay).await;
            }
            self.expire_batches();
            if self.shared.should_stop() {
                break;
            }
            let broken = match self.open().await {
                Ok((requests, acks)) => match self.pump(requests, acks).await {
                    Ok(()) => break,
                    Err(status) => status,
                },
                Err(status) => status,
            };
            self.shared.count_reconnect();
            if broken.code() == tonic::Code::ResourceExhausted {
                self.window = (self.window / 2).max(1);
            }
            if is_permanent(&broken) {
                self.fail_batches(&broken);
            }
            let wait = self.backoff.next_delay(retry_info_delay(&broken));
            tracing::warn!(
                code = ?broken.code(),
                message = broken.message(),
                retry_in_ms = wait.as_millis() as u64,
                unacknowledged_batches = self.batches.len(),
                "eventline ingest stream broken; reconnecting"
            );
            delay = Some(wait);
        }
        self.shared.finish();
    }

    /// Sleeps `delay`, or less when the shutdown deadline comes first.
    async fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            let target = self
                .shared
                .closing_deadline()
                .map_or(until, |deadline| deadline.min(until));
            if Instant::now() >= target {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(target) => return,
                () = self.shared.wake.notified() => {}
            }
        }
    }

    /// Opens a stream; gives up at the shutdown deadline.
    async fn open(&mut self) -> Result<(Requests, Streaming<v1::IngestBidiResponse>), Status> {
        let (requests, outgoing) = mpsc::channel(self.shared.options.max_in_flight);
        let deadline = self
            .shared
            .closing_deadline()
            .unwrap_or_else(|| Instant::now() + IDLE);
        let call = self.client.ingest_bidi(ReceiverStream::new(outgoing));
        let response = tokio::select! {
            response = call => response?,
            () = tokio::time::sleep_until(deadline) => {
                return Err(Status::deadline_exceeded("shutdown deadline reached while connecting"));
            }
        };
        Ok((requests, response.into_inner()))
    }

    /// Sends and acknowledges batches on one stream until it breaks (`Err`) or the
    /// producer is done (`Ok`).
    async fn pump(
        &mut self,
        requests: Requests,
        mut acks: Streaming<v1::IngestBidiResponse>,
    ) -> Result<(), Status> {
        for batch in self.batches.values_mut() {
            batch.sent_at = None;
        }
        loop {
            self.expire_batches();
            self.fill(&requests)?;
            if self.waited_past_ack_timeout() {
                return Err(Status::deadline_exceeded(
                    "a batch waited ack_timeout for its acknowledgement",
                ));
            }
            if self.shared.should_stop() {
                return Ok(());
            }
            let wake_at = self.next_wake();
            tokio::select! {
                ack = acks.next() => match ack {
                    Some(Ok(ack)) => {
                        self.backoff.reset();
                        self.window = (self.window + 1).min(self.shared.options.max_in_flight);
                        self.acknowledge(ack);
                    }
                    Some(Err(status)) => return Err(status),
                    None => return Err(Status::unavailable("the server ended the stream")),
                },
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Sends unacknowledged batches not yet sent on this stream (oldest first), then new
    /// batches from the queue, while the window has room.
    fn fill(&mut self, requests: &Requests) -> Result<(), Status> {
        let mut on_stream = self
            .batches
            .values()
            .filter(|batch| batch.sent_at.is_some())
            .count();
        for (sequence, batch) in &mut self.batches {
            if on_stream >= self.window {
                return Ok(());
            }
            if batch.sent_at.is_none() {
                send(requests, *sequence, &batch.events)?;
                batch.sent_at = Some(Instant::now());
                on_stream += 1;
            }
        }
        while on_stream < self.window && self.batches.len() < self.shared.options.max_in_flight {
            let sequence = self.next_sequence;
            let Some(events) = self.shared.take_batch(sequence) else {
                break;
            };
            self.next_sequence += 1;
            send(requests, sequence, &events)?;
            let batch = Batch {
                events,
                taken_at: Instant::now(),
                sent_at: Some(Instant::now()),
            };
            self.batches.insert(sequence, batch);
            on_stream += 1;
        }
        Ok(())
    }

    /// The earliest of: the next partial batch (when there is room for it), the shutdown
    /// deadline, and the retry limit of the oldest unacknowledged batch.
    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + IDLE;
        if self.batches.len() < self.window
            && let Some(due) = self.shared.next_batch_due()
        {
            wake = wake.min(due);
        }
        if let Some(deadline) = self.shared.closing_deadline() {
            wake = wake.min(deadline);
        }
        if let Some(oldest) = self.batches.values().map(|batch| batch.taken_at).min() {
            wake = wake.min(oldest + self.shared.options.max_retry_duration);
        }
        if let Some(oldest) = self
            .batches
            .values()
            .filter_map(|batch| batch.sent_at)
            .min()
        {
            wake = wake.min(oldest + self.shared.options.ack_timeout);
        }
        wake
    }

    fn waited_past_ack_timeout(&self) -> bool {
        let timeout = self.shared.options.ack_timeout;
        self.batches
            .values()
            .filter_map(|batch| batch.sent_at)
            .any(|sent_at| sent_at.elapsed() >= timeout)
    }

    fn acknowledge(&mut self, ack: v1::IngestBidiResponse) {
        let Some(batch) = self.batches.remove(&ack.sequence) else {
            return; // expired already, or not ours
        };
        let mut outcome = Counts::default();
        let mut rejections = Vec::new();
        for result in &ack.results {
            match result.status() {
                v1::IngestStatus::Accepted => outcome.accepted += 1,
                v1::IngestStatus::Duplicate => outcome.duplicates += 1,
                v1::IngestStatus::Rejected => {
                    outcome.rejected += 1;
                    let event_type = usize::try_from(result.index)
                        .ok()
                        .and_then(|index| batch.events.get(index))
                        .map(|event| event.event_type.clone())
                        .unwrap_or_default();
                    rejections.push(Rejection {
                        event_id: result.event_id.clone(),
                        event_type,
                        error: result.error.clone(),
                    });
                }
                v1::IngestStatus::Unspecified => outcome.failed += 1,
            }
        }
        // A result missing from the acknowledgement cannot be known to be stored.
        outcome.failed += (batch.events.len() as u64).saturating_sub(ack.results.len() as u64);
        self.shared.resolve(ack.sequence, &outcome);
        for rejection in &rejections {
            self.report(rejection);
        }
    }

    fn report(&self, rejection: &Rejection) {
        tracing::warn!(
            event_id = %rejection.event_id,
            event_type = %rejection.event_type,
            error = %rejection.error,
            "eventline rejected an event; it is not resent"
        );
        if let Some(callback) = &self.shared.options.on_rejected {
            // A panicking callback must not stop the sender.
            let call = std::panic::AssertUnwindSafe(|| callback(rejection));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!("the on_rejected callback panicked");
            }
        }
    }

    /// Counts every unacknowledged batch as failed: the server answered a status that
    /// resending cannot fix.
    fn fail_batches(&mut self, status: &Status) {
        let failed: u64 = self
            .batches
            .values()
            .map(|batch| batch.events.len() as u64)
            .sum();
        if failed > 0 {
            tracing::error!(
                events = failed,
                code = ?status.code(),
                message = status.message(),
                "eventline refused the batches; their events count as failed"
            );
        }
        for (sequence, batch) in std::mem::take(&mut self.batches) {
            let outcome = Counts {
                failed: batch.events.len() as u64,
                ..Counts::default()
            };
            self.shared.resolve(sequence, &outcome);
        }
    }

    /// Counts batches retried for longer than `max_retry_duration` as failed.
    fn expire_batches(&mut self) {
        let limit = self.shared.options.max_retry_duration;
        let expired: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, batch)| batch.taken_at.elapsed() >= limit)
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in expired {
            let Some(batch) = self.batches.remove(&sequence) else {
                continue;
            };
            let failed = batch.events.len() as u64;
            tracing::error!(
                events = failed,
                "eventline gave up on a batch after max_retry_duration"
            );
            self.shared.resolve(
                sequence,
                &Counts {
                    failed,
                    ..Counts::default()
                },
            );
        }
    }
}

/// Statuses that resending the same batch with the same key cannot change.
fn is_permanent(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
    )
}

/// Queues one batch message on the stream. The channel holds `max_in_flight` messages
/// and at most that many batches are unacknowledged, so it never waits.
fn send(requests: &Requests, sequence: u64, events: &[v1::Event]) -> Result<(), Status> {
    let request = v1::IngestBidiRequest {
        sequence,
        events: events.to_vec(),
        sent_at: Some(super::timestamp(std::time::SystemTime::now())),
    };
    requests.try_send(request).map_err(|error| match error {
        mpsc::error::TrySendError::Closed(_) => Status::unavailable("the ingest stream closed"),
        mpsc::error::TrySendError::Full(_) => {
            Status::internal("more batches in flight than allowed")
        }
    })
}
