//! A live tail. It replays history, then follows new commits, with no gap and no repeat
//! at the switch:
//!
//! - On start it takes the store's commit horizon H: every event committed below H is
//!   final and visible; every event at or above H commits later.
//! - History: events below H (from `start_time`), in `(timestamp, event_id)` order.
//! - Live: events at or above H, in commit order, read only below the current horizon,
//!   so an event whose transaction commits late is still delivered.
//!
//! Each message carries a cursor naming its phase and position, so a client resumes
//! exactly after the last event it saw. The tail reads the store at its own pace, so a
//! slow client is never dropped from; it only falls behind.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use eventline_core::{
    Error, Event, TenantId,
    query::{CommittedQuery, EventFilter, EventQuery, Order, Position},
};
use eventline_proto::v1;
use eventline_store::Store;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::{
    STREAM_PAGE,
    cursor::{self, Cursor, filter_digest, micros},
};

/// How often an idle tail reads even without a wake-up (covers missed notifications and
/// transactions that held the horizon back).
const IDLE_POLL: Duration = Duration::from_millis(500);

#[derive(Debug)]
enum Phase {
    History {
        after: Option<Position>,
        horizon: u64,
    },
    Live {
        after: (u64, String),
    },
}

/// What one read of the tail did.
enum Step {
    Delivered,
    Idle,
    ClientGone,
}

/// A tail of one tenant's events.
#[derive(Debug)]
pub(crate) struct Tail {
    store: Arc<dyn Store>,
    tenant_id: TenantId,
    filter: EventFilter,
    digest: String,
    min_timestamp: Option<DateTime<Utc>>,
    phase: Phase,
}

impl Tail {
    /// Starts at `resume`, else at `start` (history first), else now.
    pub(crate) async fn begin(
        store: Arc<dyn Store>,
        tenant_id: TenantId,
        filter: EventFilter,
        start: Option<DateTime<Utc>>,
        resume: Option<Cursor>,
    ) -> Result<Self, Error> {
        let digest = filter_digest(tenant_id, &filter);
        let (phase, min_timestamp) = match resume {
            Some(Cursor::TailHistory { t, i, h, m, .. }) => (
                Phase::History {
                    after: Some(cursor::position("cursor", t, &i)?),
                    horizon: h,
                },
                m.map(|micros| cursor::time("cursor", micros)).transpose()?,
            ),
            Some(Cursor::TailLive { q, i, m, .. }) => (
                Phase::Live { after: (q, i) },
                m.map(|micros| cursor::time("cursor", micros)).transpose()?,
            ),
            Some(_) => return Err(Error::invalid("cursor", "is not a TailEvents cursor")),
            None => {
                let horizon = store.commit_horizon(tenant_id).await?;
                match start {
                    Some(start) => (
                        Phase::History {
                            after: None,
                            horizon,
                        },
                        Some(start),
                    ),
                    None => (
                        Phase::Live {
                            after: (horizon, String::new()),
                        },
                        None,
                    ),
                }
            }
        };
        Ok(Self {
            store,
            tenant_id,
            filter,
            digest,
            min_timestamp,
            phase,
        })
    }

    /// Streams into `sender` until the client goes away, the store fails or `shutdown`.
    pub(crate) async fn run(
        mut self,
        sender: mpsc::Sender<Result<v1::TailEventsResponse, Status>>,
        mut wake: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                let status =
                    Status::unavailable("the server is shutting down; resume from the last cursor");
                let _ = sender.send(Err(status)).await;
                return;
            }
            wake.borrow_and_update();
            match self.step(&sender).await {
                Ok(Step::Delivered) => {}
                Ok(Step::ClientGone) => return,
                Ok(Step::Idle) => {
                    tokio::select! {
                        _ = wake.changed() => {}
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        () = sender.closed() => return,
                    }
                }
                Err(error) => {
                    let _ = sender.send(Err(Status::from(error))).await;
                    return;
                }
            }
        }
    }

    async fn step(
        &mut self,
        sender: &mpsc::Sender<Result<v1::TailEventsResponse, Status>>,
    ) -> Result<Step, Error> {
        match &mut self.phase {
            Phase::History { after, horizon } => {
                let query = EventQuery {
                    tenant_id: self.tenant_id,
                    filter: self.filter.clone(),
                    start: self.min_timestamp.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
                    end: far_future(),
                    order: Order::OldestFirst,
                    after: after.clone(),
                    committed_before: Some(*horizon),
                    limit: STREAM_PAGE,
                };
                let page = self.store.list_events(&query).await?;
                let horizon = *horizon;
                let Some(last) = page.last() else {
                    self.phase = Phase::Live {
                        after: (horizon, String::new()),
                    };
                    return Ok(Step::Delivered);
                };
                *after = Some(Position::of(last));
                for event in &page {
                    let cursor = Cursor::TailHistory {
                        t: micros(event.timestamp),
                        i: event.event_id.clone(),
                        h: horizon,
                        m: self.min_timestamp.map(micros),
                        f: self.digest.clone(),
                    };
                    if !send(sender, event, cursor).await {
                        return Ok(Step::ClientGone);
                    }
                }
                Ok(Step::Delivered)
            }
            Phase::Live { after } => {
                let horizon = self.store.commit_horizon(self.tenant_id).await?;
                let query = CommittedQuery {
                    tenant_id: self.tenant_id,
                    filter: self.filter.clone(),
                    min_timestamp: self.min_timestamp,
                    after: after.clone(),
                    horizon,
                    limit: STREAM_PAGE,
                };
                let page = self.store.list_committed(&query).await?;
                let Some((last_sequence, last_event)) = page.last() else {
                    return Ok(Step::Idle);
                };
                *after = (*last_sequence, last_event.event_id.clone());
                for (sequence, event) in &page {
                    let cursor = Cursor::TailLive {
                        q: *sequence,
                        i: event.event_id.clone(),
                        m: self.min_timestamp.map(micros),
                        f: self.digest.clone(),
                    };
                    if !send(sender, event, cursor).await {
                        return Ok(Step::ClientGone);
                    }
                }
                Ok(Step::Delivered)
            }
        }
    }
}

async fn send(
    sender: &mpsc::Sender<Result<v1::TailEventsResponse, Status>>,
    event: &Event,
    cursor: Cursor,
) -> bool {
    let message = v1::TailEventsResponse {
        event: Some(event.to_proto()),
        cursor: cursor.encode(),
    };
    sender.send(Ok(message)).await.is_ok()
}

/// Later than any accepted event time (at most an hour past its receipt).
fn far_future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
