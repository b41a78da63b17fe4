//! The state `track()` and the sender task share: the bounded queue, the batches in
//! flight and the counts, under one lock that is never held across an await, so every
//! snapshot adds up.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Mutex, MutexGuard},
};

use eventline_proto::v1;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use super::options::{Counts, ProducerOptions, QueueFullPolicy, Stats};
use crate::Error;

/// A queued event and its ticket: the number of successful `track()` calls before it.
struct Queued {
    ticket: u64,
    event: v1::Event,
}

/// A batch the sender took and holds no acknowledgement for.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    first_ticket: u64,
    events: u64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// When the oldest queued event was tracked (only set when the queue is non-empty).
    oldest_since: Option<Instant>,
    /// Successful `track()` calls; the next ticket.
    tracked: u64,
    counts: Counts,
    in_flight: BTreeMap<u64, InFlight>,
    /// Partial batches are sent at once until every ticket below this one is taken.
    flush_upto: u64,
    /// Set by `shutdown` (or dropping the producer): send everything now, stop by then.
    closing: Option<Instant>,
    /// No more `track()`.
    closed: bool,
    /// The sender stopped; whatever was left is counted as failed.
    finished: bool,
    /// True between a drop and the next batch taken, so a full queue logs once.
    overflowing: bool,
    reconnects: u64,
}

/// What `track()`, `flush()`, `shutdown()` and the sender share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the sender: a batch may be ready, a flush or shutdown was asked for.
    pub(crate) wake: Notify,
    /// Changes whenever events are resolved or the sender finishes.
    progress: watch::Sender<()>,
    pub(crate) options: ProducerOptions,
}

impl Shared {
    pub(crate) fn new(options: ProducerOptions) -> Self {
        Self {
            state: Mutex::default(),
            wake: Notify::new(),
            progress: watch::Sender::new(()),
            options,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock guards plain bookkeeping; a panic elsewhere leaves it consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a tracked event, or counts it dropped when the queue is full.
    pub(crate) fn push(&self, event: v1::Event) -> Result<(), Error> {
        let mut state = self.lock();
        if state.closed {
            return Err(Error::ProducerClosed);
        }
        let ticket = state.tracked;
        state.tracked += 1;
        if state.queue.len() >= self.options.max_queue_size {
            state.counts.dropped += 1;
            if !state.overflowing {
                state.overflowing = true;
                tracing::warn!(
                    capacity = self.options.max_queue_size,
                    policy = ?self.options.queue_full_policy,
                    "eventline producer queue full; dropping events"
                );
            }
            match self.options.queue_full_policy {
                QueueFullPolicy::DropNewest => return Ok(()),
                QueueFullPolicy::DropOldest => {
                    state.queue.pop_front();
                }
            }
        }
        state.queue.push_back(Queued { ticket, event });
        let queued = state.queue.len();
        if queued == 1 {
            state.oldest_since = Some(Instant::now());
        }
        drop(state);
        // Only the events that can make the sender act wake it: the first (it starts the
        // flush-interval timer) and each that completes a batch.
        if queued == 1 || queued.is_multiple_of(self.options.max_batch) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Takes the next batch under `sequence` when one is due: a full batch, or a partial
    /// one whose oldest event waited `flush_interval`, or any while flushing or closing.
    pub(crate) fn take_batch(&self, sequence: u64) -> Option<Vec<v1::Event>> {
        let mut state = self.lock();
        let first_ticket = state.queue.front()?.ticket;
        let due = state.queue.len() >= self.options.max_batch
            || state.closing.is_some()
            || state.flush_upto > first_ticket
            || state
                .oldest_since
                .is_some_and(|since| since.elapsed() >= self.options.flush_interval);
        if !due {
            return None;
        }
        let take = state.queue.len().min(self.options.max_batch);
        let events: Vec<v1::Event> = state
            .queue
            .drain(..take)
            .map(|queued| queued.event)
            .collect();
        state.in_flight.insert(
            sequence,
            InFlight {
                first_ticket,
                events: take as u64,
            },
        );
        // The rest keep the old stamp: no event waits longer than flush_interval.
        if state.queue.is_empty() {
            state.oldest_since = None;
        }
        state.overflowing = false;
        Some(events)
    }

    /// When the next partial batch falls due, if any event is queued.
    pub(crate) fn next_batch_due(&self) -> Option<Instant> {
        let state = self.lock();
        state
            .oldest_since
            .map(|since| since + self.options.flush_interval)
    }

    /// Records the outcome of batch `sequence`; false when it was resolved already
    /// (a late acknowledgement of a batch that expired).
    pub(crate) fn resolve(&self, sequence: u64, outcome: &Counts) -> bool {
        let mut state = self.lock();
        if state.in_flight.remove(&sequence).is_none() {
            return false;
        }
        state.counts.add(outcome);
        drop(state);
        self.progress.send_replace(());
        true
    }

    pub(crate) fn count_reconnect(&self) {
        self.lock().reconnects += 1;
    }

    /// The shutdown deadline, once shutdown was asked for.
    pub(crate) fn closing_deadline(&self) -> Option<Instant> {
        self.lock().closing
    }

    /// True when the sender should stop: closing, and either nothing is left or the
    /// deadline passed.
    pub(crate) fn should_stop(&self) -> bool {
        let state = self.lock();
        match state.closing {
            None => false,
            Some(deadline) => {
                (state.queue.is_empty() && state.in_flight.is_empty()) || Instant::now() >= deadline
            }
        }
    }

    /// Stops `track()` and asks the sender to send everything and stop by `deadline`.
    pub(crate) fn close(&self, deadline: Instant) {
        let mut state = self.lock();
        state.closed = true;
        state.closing = Some(
            state
                .closing
                .map_or(deadline, |earlier| earlier.min(deadline)),
        );
        drop(state);
        self.wake.notify_one();
    }

    /// Counts everything still queued or in flight as failed and marks the sender
    /// finished. Idempotent.
    pub(crate) fn finish(&self) -> Counts {
        let mut state = self.lock();
        let left = state.queue.len() as u64
            + state
                .in_flight
                .values()
                .map(|batch| batch.events)
                .sum::<u64>();
        state.queue.clear();
        state.in_flight.clear();
        state.oldest_since = None;
        state.counts.failed += left;
        state.closed = true;
        state.finished = true;
        let counts = state.counts;
        drop(state);
        if left > 0 {
            tracing::warn!(
                failed = left,
                "eventline producer stopped with unacknowledged events"
            );
        }
        self.progress.send_replace(());
        counts
    }

    /// Asks for every event tracked so far to be sent now; returns the ticket that every
    /// one of them is below.
    pub(crate) fn request_flush(&self) -> u64 {
        let mut state = self.lock();
        let upto = state.tracked;
        state.flush_upto = state.flush_upto.max(upto);
        drop(state);
        self.wake.notify_one();
        upto
    }

    /// Events tracked before ticket `upto` that are not resolved yet (0 once the sender
    /// finished, which resolves everything).
    pub(crate) fn pending_below(&self, upto: u64) -> u64 {
        let state = self.lock();
        let queued = state
            .queue
            .iter()
            .take_while(|queued| queued.ticket < upto)
            .count() as u64;
        let in_flight = state
            .in_flight
            .values()
            .filter(|batch| batch.first_ticket < upto)
            .map(|batch| batch.events)
            .sum::<u64>();
        queued + in_flight
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.lock().finished
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.progress.subscribe()
    }

    pub(crate) fn stats(&self) -> Stats {
        let state = self.lock();
        Stats {
            counts: state.counts,
            queued: state.queue.len() as u64,
            in_flight: state.in_flight.values().map(|batch| batch.events).sum(),
            reconnects: state.reconnects,
        }
    }
}
