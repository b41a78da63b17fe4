//! The producer's settings and what it reports: [`ProducerOptions`], [`Counts`],
//! [`Stats`] and [`Rejection`].

use std::{fmt, sync::Arc, time::Duration};

use crate::Error;

/// What `track()` does when the queue is full. Either way the lost event is counted in
/// [`Counts::dropped`] and `track()` returns at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueFullPolicy {
    /// Drops the event being tracked (the default, as Segment's and PostHog's SDKs do).
    #[default]
    DropNewest,
    /// Drops the oldest queued event to make room for the new one.
    DropOldest,
}

/// An event the server rejected, with its reason (which names the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The server's message, such as `timestamp: … is more than 1 hour after the receive
    /// time`.
    pub error: String,
}

/// Called on the sender task for each rejected event; it must return quickly.
pub type RejectionCallback = Arc<dyn Fn(&Rejection) + Send + Sync>;

/// What became of every successfully tracked event. Their sum always equals the number
/// of successful `track()` calls once the producer is shut down; before that, the events
/// still `queued` or `in_flight` (see [`Stats`]) make up the difference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Stored by this producer.
    pub accepted: u64,
    /// Already stored (a resend after a lost acknowledgement); stored once.
    pub duplicates: u64,
    /// Refused by the server as invalid; never resent.
    pub rejected: u64,
    /// Lost because the queue was full.
    pub dropped: u64,
    /// Given up: retried for longer than `max_retry_duration`, or still unacknowledged
    /// when `shutdown` timed out.
    pub failed: u64,
}

impl Counts {
    /// Every event accounted for.
    pub fn total(&self) -> u64 {
        self.accepted + self.duplicates + self.rejected + self.dropped + self.failed
    }

    pub(crate) fn add(&mut self, other: &Counts) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.dropped += other.dropped;
        self.failed += other.failed;
    }
}

/// A snapshot of the producer: the final [`Counts`] so far plus what is still on its way.
/// `counts.total() + queued + in_flight` equals the successful `track()` calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Resolved events by outcome.
    pub counts: Counts,
    /// Events waiting in the queue.
    pub queued: u64,
    /// Events sent and not yet acknowledged.
    pub in_flight: u64,
    /// Streams that broke or could not be opened (each followed by a backoff).
    pub reconnects: u64,
}

/// Settings of a [`crate::Producer`]. The defaults, and how they compare with Segment's,
/// PostHog's and OpenTelemetry's, are in `clients/README.md`.
#[derive(Clone)]
pub struct ProducerOptions {
    pub(crate) max_queue_size: usize,
    pub(crate) queue_full_policy: QueueFullPolicy,
    pub(crate) max_batch: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_retry_duration: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) on_rejected: Option<RejectionCallback>,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            max_queue_size: 10_000,
            queue_full_policy: QueueFullPolicy::DropNewest,
            max_batch: 500,
            flush_interval: Duration::from_secs(1),
            max_in_flight: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_retry_duration: Duration::from_secs(600),
            ack_timeout: Duration::from_secs(30),
            on_rejected: None,
        }
    }
}

impl fmt::Debug for ProducerOptions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ProducerOptions")
            .field("max_queue_size", &self.max_queue_size)
            .field("queue_full_policy", &self.queue_full_policy)
            .field("max_batch", &self.max_batch)
            .field("flush_interval", &self.flush_interval)
            .field("max_in_flight", &self.max_in_flight)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_duration", &self.max_retry_duration)
            .field("ack_timeout", &self.ack_timeout)
            .field("on_rejected", &self.on_rejected.is_some())
            .finish()
    }
}

impl ProducerOptions {
    /// Most events waiting to be sent (default 10,000).
    pub fn max_queue_size(mut self, events: usize) -> Self {
        self.max_queue_size = events;
        self
    }

    /// What a full queue drops (default [`QueueFullPolicy::DropNewest`]).
    pub fn queue_full_policy(mut self, policy: QueueFullPolicy) -> Self {
        self.queue_full_policy = policy;
        self
    }

    /// Most events per batch message (default 500, at most 2000: the server ends a
    /// stream whose message holds more).
    pub fn max_batch(mut self, events: usize) -> Self {
        self.max_batch = events;
        self
    }

    /// Longest an event waits for its batch to fill (default 1 s).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Most unacknowledged batches (default 4, the server's per-stream limit).
    pub fn max_in_flight(mut self, batches: usize) -> Self {
        self.max_in_flight = batches;
        self
    }

    /// First and largest reconnect delay cap (defaults 100 ms and 30 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// How long one batch is retried before its events count as failed (default 10 min).
    pub fn max_retry_duration(mut self, duration: Duration) -> Self {
        self.max_retry_duration = duration;
        self
    }

    /// How long a batch may wait for its acknowledgement before the stream counts as
    /// broken (a stuck server, or a connection that died without a reset); default 30 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Called for every event the server rejects (they are also logged with `tracing`).
    pub fn on_rejected(mut self, callback: impl Fn(&Rejection) + Send + Sync + 'static) -> Self {
        self.on_rejected = Some(Arc::new(callback));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |option, reason: &str| {
            Err(Error::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        let max_events = eventline_core::limits::MAX_EVENTS_PER_BATCH;
        if self.max_queue_size == 0 {
            return invalid("max_queue_size", "must be at least 1");
        }
        if self.max_batch == 0 || self.max_batch > max_events {
            return invalid("max_batch", &format!("must be 1 to {max_events}"));
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1");
        }
        if self.ack_timeout.is_zero() {
            return invalid("ack_timeout", "must be above zero");
        }
        if self.flush_interval.is_zero() {
            return invalid("flush_interval", "must be above zero");
        }
        if self.initial_backoff.is_zero() || self.initial_backoff > self.max_backoff {
            return invalid("backoff", "initial must be above zero and at most max");
        }
        Ok(())
    }
}
