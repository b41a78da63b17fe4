//! The producer against the real server (in-process) on a fresh PostgreSQL database per
//! test: every tracked event is accounted for, and stored exactly once.

mod common;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{
    API_KEY, SHUTDOWN, TestServer, assert_all_accounted, assert_exactly_once, restartable_port,
};
use eventline_client::{Client, ProducerOptions, Rejection, TrackEvent, v1};

fn event(n: usize) -> TrackEvent {
    TrackEvent::new(["view", "click", "buy"][n % 3])
        .user_id(format!("user-{}", n % 17))
        .properties(serde_json::json!({ "n": n, "plan": "pro", "nested": { "ok": true } }))
}

async fn count(client: &Client) -> u64 {
    client
        .count_events(v1::CountEventsRequest::default())
        .await
        .expect("CountEvents")
}

#[tokio::test]
async fn ten_thousand_events_are_all_accepted_and_counted() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let producer = client.producer(ProducerOptions::default()).unwrap();
    let mut ids = HashSet::new();
    for n in 0..10_000 {
        ids.insert(producer.track(event(n)).unwrap());
    }
    let counts = producer.shutdown(SHUTDOWN).await;
    assert_eq!(counts.accepted, 10_000, "{counts:?}");
    assert_all_accounted(&counts, 10_000);
    assert_eq!(count(&client).await, 10_000);
    assert_exactly_once(&common::exported_ids(&client).await, &ids);
    server.stop().await;
}

#[tokio::test]
async fn flush_returns_once_everything_tracked_before_it_is_acknowledged() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // A long interval: without the flush, the partial batch would wait a minute.
    let options = ProducerOptions::default().flush_interval(Duration::from_secs(60));
    let producer = client.producer(options).unwrap();
    for n in 0..42 {
        producer.track(event(n)).unwrap();
    }
    producer.flush(SHUTDOWN).await.expect("flush");
    let stats = producer.stats();
    assert_eq!(stats.counts.accepted, 42, "{stats:?}");
    assert_eq!((stats.queued, stats.in_flight), (0, 0));
    assert_eq!(count(&client).await, 42);
    producer.shutdown(SHUTDOWN).await;
    server.stop().await;
}

#[tokio::test]
async fn an_overloaded_server_is_backed_off_from_and_every_event_ends_up_stored() {
    // The smallest writer queue the server allows, and no waiting for room: four batches
    // of 1000 in flight cannot all fit, so the server answers RESOURCE_EXHAUSTED with
    // RetryInfo.
    let server = TestServer::start_with(|config| {
        config.writer.queue_events = 2000;
        config.writer.enqueue_timeout_ms = 1;
    })
    .await;
    let client = server.client().await;
    let options = ProducerOptions::default()
        .max_batch(1000)
        .max_queue_size(20_000);
    let producer = client.producer(options).unwrap();
    let mut ids = HashSet::new();
    for n in 0..12_000 {
        ids.insert(producer.track(event(n)).unwrap());
    }
    let counts = producer.shutdown(SHUTDOWN).await;
    assert_eq!(counts.accepted + counts.duplicates, 12_000, "{counts:?}");
    assert_all_accounted(&counts, 12_000);
    assert!(
        producer.stats().reconnects > 0,
        "the server never refused a batch, so backoff was not exercised"
    );
    assert_exactly_once(&common::exported_ids(&client).await, &ids);
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_drops_exactly_the_events_that_did_not_fit() {
    // The producer starts before the server exists, so nothing leaves the queue.
    let port = restartable_port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"), API_KEY)
        .connect_lazy()
        .unwrap();
    let options = ProducerOptions::default()
        .max_queue_size(100)
        .backoff(Duration::from_millis(50), Duration::from_millis(200));
    let producer = client.producer(options).unwrap();
    let mut kept = HashSet::new();
    for n in 0..150 {
        let id = producer.track(event(n)).unwrap();
        if n < 100 {
            kept.insert(id);
        }
    }
    assert_eq!(producer.stats().counts.dropped, 50);
    let url = eventline_store::testing::fresh_postgres_database().await;
    let server = TestServer::start_on(url, port, |_| {}).await;
    let counts = producer.shutdown(SHUTDOWN).await;
    assert_eq!(counts.dropped, 50, "{counts:?}");
    assert_eq!(counts.accepted, 100, "{counts:?}");
    assert_all_accounted(&counts, 150);
    let client = server.client().await;
    assert_exactly_once(&common::exported_ids(&client).await, &kept);
    server.stop().await;
}

#[tokio::test]
async fn rejected_events_are_counted_reported_with_the_field_and_not_resent() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let reported: Arc<Mutex<Vec<Rejection>>> = Arc::default();
    let sink = Arc::clone(&reported);
    let options = ProducerOptions::default().on_rejected(move |rejection| {
        sink.lock().unwrap().push(rejection.clone());
    });
    let producer = client.producer(options).unwrap();
    for n in 0..20 {
        producer.track(event(n)).unwrap();
    }
    // track() refuses what the server would reject; an older SDK or a stricter server
    // would send it, so it goes to the queue directly to see what REJECTED leads to.
    let rejected_id = "bad-user".to_owned();
    producer
        .enqueue_unchecked(v1::Event {
            event_id: rejected_id.clone(),
            event_type: "too_long_a_user".into(),
            user_id: "u".repeat(257),
            ..Default::default()
        })
        .unwrap();
    let counts = producer.shutdown(SHUTDOWN).await;
    assert_eq!((counts.accepted, counts.rejected), (20, 1), "{counts:?}");
    assert_all_accounted(&counts, 21);
    let reported = reported.lock().unwrap().clone();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].event_id, rejected_id);
    assert_eq!(reported[0].event_type, "too_long_a_user");
    assert!(
        reported[0].error.starts_with("user_id:"),
        "{}",
        reported[0].error
    );
    // The server saw the bad event exactly once: it was not resent.
    let rejected_on_server = server
        .metric("eventline_ingest_events_total{outcome=\"rejected\"} ")
        .await;
    assert_eq!(rejected_on_server, 1.0);
    assert_eq!(count(&client).await, 20);
    server.stop().await;
}

#[tokio::test]
async fn invalid_events_fail_at_track_and_are_not_counted() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let producer = client.producer(ProducerOptions::default()).unwrap();
    let error = producer.track(TrackEvent::new("")).unwrap_err();
    assert!(error.to_string().contains("event_type"), "{error}");
    producer.track(event(1)).unwrap();
    let counts = producer.shutdown(SHUTDOWN).await;
    assert_eq!(counts.total(), 1, "{counts:?}");
    assert_eq!(counts.accepted, 1);
    server.stop().await;
}
