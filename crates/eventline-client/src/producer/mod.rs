//! The producer: `track()` validates, stamps and queues an event and returns at once; a
//! background task sends batches over IngestBidi and accounts for every event. The
//! contract it keeps (shared with every eventline SDK) is written in `clients/README.md`.

mod encode;
mod options;
mod sender;
mod state;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use eventline_proto::{Properties, v1};
use pbjson_types::{Struct, Timestamp};
use tokio::{task::JoinHandle, time::Instant};

pub use options::{Counts, ProducerOptions, QueueFullPolicy, Rejection, RejectionCallback, Stats};

use crate::{Error, connect::Authorized};
use state::Shared;

/// How long a producer dropped without `shutdown()` keeps sending what it holds.
const DROP_GRACE: Duration = Duration::from_secs(10);
/// Extra time `shutdown` gives the sender to stop after its deadline.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// One event to track: the type, and optionally a user, session, time, id and properties.
#[derive(Debug, Clone, Default)]
pub struct TrackEvent {
    event_type: String,
    user_id: Option<String>,
    session_id: Option<String>,
    event_id: Option<String>,
    timestamp: Option<SystemTime>,
    properties: TrackProperties,
}

#[derive(Debug, Clone, Default)]
enum TrackProperties {
    #[default]
    None,
    Json(serde_json::Value),
    Struct(Struct),
}

impl TrackEvent {
    /// An event of `event_type` (1 to 128 characters).
    pub fn new(event_type: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            ..Self::default()
        }
    }

    /// The user it belongs to.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// The session it belongs to.
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Its idempotency key; by default a UUIDv7 made at `track()`.
    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    /// When it happened; by default the time of `track()`.
    pub fn timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Its properties: a JSON object (anything else is refused by `track()`).
    pub fn properties(mut self, properties: serde_json::Value) -> Self {
        self.properties = TrackProperties::Json(properties);
        self
    }

    /// Its properties as a `google.protobuf.Struct`.
    pub fn properties_struct(mut self, properties: Struct) -> Self {
        self.properties = TrackProperties::Struct(properties);
        self
    }

    /// The wire event, with an id and a timestamp stamped now when not given.
    fn into_proto(self) -> Result<v1::Event, Error> {
        let properties = match &self.properties {
            TrackProperties::None => None,
            TrackProperties::Json(serde_json::Value::Object(object)) => {
                Some(encode::properties_from_json(object))
            }
            TrackProperties::Json(_) => {
                return Err(Error::InvalidEvent(eventline_core::FieldViolation::new(
                    "properties",
                    "must be a JSON object",
                )));
            }
            TrackProperties::Struct(object) => Some(Properties::from_struct(object)),
        };
        Ok(v1::Event {
            event_id: self
                .event_id
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            event_type: self.event_type,
            user_id: self.user_id.unwrap_or_default(),
            session_id: self.session_id.unwrap_or_default(),
            timestamp: Some(timestamp(self.timestamp.unwrap_or_else(SystemTime::now))),
            properties,
            ..Default::default()
        })
    }
}

/// A protobuf timestamp of a system time (before 1970 counts backwards).
pub(crate) fn timestamp(time: SystemTime) -> Timestamp {
    let (seconds, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(since) => (since.as_secs() as i64, since.subsec_nanos() as i32),
        Err(before) => {
            let before = before.duration();
            let (seconds, nanos) = (-(before.as_secs() as i64), before.subsec_nanos() as i32);
            match nanos {
                0 => (seconds, 0),
                _ => (seconds - 1, 1_000_000_000 - nanos),
            }
        }
    };
    Timestamp { seconds, nanos }
}

/// Sends tracked events in the background and accounts for each one. Cloning shares the
/// producer. Call [`Producer::shutdown`] before the program exits; a producer dropped
/// without it keeps sending for 10 s while the runtime lives, then counts the rest failed.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Producer")
            .field("options", &self.shared.options)
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close(Instant::now() + DROP_GRACE);
    }
}

impl Producer {
    pub(crate) fn start(
        client: eventline_proto::v1::ingest_service_client::IngestServiceClient<Authorized>,
        options: ProducerOptions,
    ) -> Result<Self, Error> {
        options.validate()?;
        let shared = Arc::new(Shared::new(options));
        let task = tokio::spawn(sender::Sender::new(Arc::clone(&shared), client).run());
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Queues an event and returns its id at once; it never waits for the network.
    /// It fails only for what the server would reject anyway (the error names the field:
    /// empty or over-long `event_type`, properties that are not an object, nested over 10
    /// levels or holding NaN, an event over 1 MiB), and after `shutdown`. A full queue
    /// counts the event as dropped ([`Counts::dropped`]) and still returns `Ok`.
    pub fn track(&self, event: TrackEvent) -> Result<String, Error> {
        let event = event.into_proto()?;
        // The server's own rules, from the same code, so client and server cannot drift.
        eventline_core::check_event(&event, &eventline_core::IngestClock::now())
            .map_err(Error::InvalidEvent)?;
        let event_id = event.event_id.clone();
        self.inner.shared.push(event)?;
        Ok(event_id)
    }

    /// Queues a wire event as it is, without the checks of `track()`: for tests of what the
    /// server's REJECTED answer leads to, and for replaying events that were valid once.
    #[doc(hidden)]
    pub fn enqueue_unchecked(&self, event: v1::Event) -> Result<(), Error> {
        self.inner.shared.push(event)
    }

    /// Waits until every event tracked before the call is resolved (acknowledged,
    /// rejected, dropped or failed), sending partial batches at once; `FlushTimeout` when
    /// `timeout` passes first.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let shared = &self.inner.shared;
        let mut progress = shared.subscribe();
        let upto = shared.request_flush();
        loop {
            let pending = shared.pending_below(upto);
            if pending == 0 || shared.is_finished() {
                return Ok(());
            }
            tokio::select! {
                changed = progress.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Error::FlushTimeout { pending });
                }
            }
        }
    }

    /// Stops `track()`, sends everything queued, waits for the acknowledgements until
    /// `timeout`, stops the sender and returns the final counts, whose total equals the
    /// successful `track()` calls. Events still unacknowledged at the timeout count as
    /// failed. Calling it again returns the same counts.
    pub async fn shutdown(&self, timeout: Duration) -> Counts {
        let deadline = Instant::now() + timeout;
        let shared = &self.inner.shared;
        shared.close(deadline);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match task {
            Some(mut task) => {
                let stopped = tokio::time::timeout_at(deadline + STOP_GRACE, &mut task).await;
                if stopped.is_err() {
                    task.abort();
                    let _ = task.await;
                }
            }
            None => {
                // Another shutdown call owns the task: wait for it to finish.
                let mut progress = shared.subscribe();
                while !shared.is_finished() {
                    let changed =
                        tokio::time::timeout_at(deadline + STOP_GRACE, progress.changed()).await;
                    if !matches!(changed, Ok(Ok(()))) {
                        break;
                    }
                }
            }
        }
        shared.finish()
    }

    /// The counts so far, plus the events queued and in flight.
    pub fn stats(&self) -> Stats {
        self.inner.shared.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(error: Error) -> String {
        match error {
            Error::InvalidEvent(violation) => violation.field,
            other => panic!("expected an invalid event, got {other}"),
        }
    }

    fn check(event: TrackEvent) -> Result<v1::Event, Error> {
        let event = event.into_proto()?;
        eventline_core::check_event(&event, &eventline_core::IngestClock::now())
            .map_err(Error::InvalidEvent)?;
        Ok(event)
    }

    #[test]
    fn invalid_events_are_refused_naming_the_field() {
        assert_eq!(
            violation(check(TrackEvent::new("")).unwrap_err()),
            "event_type"
        );
        let long = "t".repeat(129);
        assert_eq!(
            violation(check(TrackEvent::new(long)).unwrap_err()),
            "event_type"
        );
        let not_object = TrackEvent::new("t").properties(serde_json::json!([1, 2]));
        assert_eq!(violation(check(not_object).unwrap_err()), "properties");
        let mut deep = serde_json::json!(1);
        for _ in 0..11 {
            deep = serde_json::json!({ "a": deep });
        }
        let deep = TrackEvent::new("t").properties(deep);
        assert!(violation(check(deep).unwrap_err()).starts_with("properties.a"));
        let nan = Struct {
            fields: [(
                "ratio".to_owned(),
                pbjson_types::Value {
                    kind: Some(pbjson_types::value::Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        let nan = TrackEvent::new("t").properties_struct(nan);
        assert_eq!(violation(check(nan).unwrap_err()), "properties.ratio");
        let huge =
            TrackEvent::new("t").properties(serde_json::json!({ "blob": "x".repeat(1024 * 1024) }));
        assert_eq!(violation(check(huge).unwrap_err()), "event");
    }

    #[test]
    fn events_get_a_uuid_v7_and_the_time_of_track() {
        let before = SystemTime::now();
        let event = check(TrackEvent::new("signup").user_id("u1")).unwrap();
        let id = uuid::Uuid::parse_str(&event.event_id).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let stamped = event.timestamp.unwrap();
        assert!(stamped.seconds >= timestamp(before).seconds);
        let given = check(TrackEvent::new("signup").event_id("mine")).unwrap();
        assert_eq!(given.event_id, "mine");
    }

    #[test]
    fn times_before_1970_convert_with_positive_nanos() {
        let time = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(
            timestamp(time),
            Timestamp {
                seconds: -2,
                nanos: 500_000_000
            }
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_exactly_the_events_that_do_not_fit() {
        let client = crate::Client::builder("127.0.0.1:1", "key")
            .connect_lazy()
            .unwrap();
        for policy in [QueueFullPolicy::DropNewest, QueueFullPolicy::DropOldest] {
            let producer = client
                .producer(
                    ProducerOptions::default()
                        .max_queue_size(100)
                        .queue_full_policy(policy),
                )
                .unwrap();
            for n in 0..150 {
                producer.track(TrackEvent::new(format!("t{n}"))).unwrap();
            }
            let stats = producer.stats();
            assert_eq!(stats.counts.dropped, 50);
            assert_eq!(stats.queued + stats.in_flight, 100);
            let counts = producer.shutdown(Duration::from_millis(50)).await;
            assert_eq!(counts.dropped, 50);
            assert_eq!(counts.failed, 100);
            assert_eq!(counts.total(), 150);
            assert!(matches!(
                producer.track(TrackEvent::new("late")),
                Err(Error::ProducerClosed)
            ));
        }
    }
}
