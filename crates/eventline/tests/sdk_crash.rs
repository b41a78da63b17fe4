//! The Rust SDK's producer across a server crash: the real binary is SIGKILLed while
//! 20,000 tracked events stream in and restarted a second later; every event must end
//! up stored exactly once and be counted accepted or duplicate.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{API_KEY, spawn_server};
use eventline_client::{Client, ProducerOptions, TrackEvent, v1};
use futures::StreamExt;

const EVENTS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_stores_every_event_exactly_once_across_a_sigkill() {
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let port = restartable_port();
    let mut server = spawn_server(&database_url, port).await;
    let client = Client::builder(format!("http://127.0.0.1:{port}"), API_KEY)
        .connect_lazy()
        .unwrap();
    // Room for everything tracked while the server is down: this test is about
    // exactly-once delivery, not about the queue bound.
    let options = ProducerOptions::default()
        .max_queue_size(EVENTS)
        .backoff(Duration::from_millis(100), Duration::from_secs(1));
    let producer = client.producer(options).unwrap();
    let tracking = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut ids = HashSet::new();
            for n in 0..EVENTS {
                let event = TrackEvent::new(["view", "click", "buy"][n % 3])
                    .user_id(format!("user-{}", n % 17))
                    .properties(serde_json::json!({ "n": n }));
                ids.insert(producer.track(event).unwrap());
                // Paced, so the kill lands while events still stream in.
                if n % 500 == 499 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            ids
        })
    };
    while producer.stats().counts.accepted < 3000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().unwrap();
    let at_kill = producer.stats();
    assert!(
        at_kill.counts.accepted < EVENTS as u64,
        "the kill came after every event was acknowledged: {at_kill:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _server = spawn_server(&database_url, port).await;
    let tracked = tracking.await.unwrap();
    let counts = producer.shutdown(Duration::from_secs(120)).await;
    assert_eq!(
        counts.accepted + counts.duplicates,
        EVENTS as u64,
        "{counts:?}"
    );
    assert_eq!(counts.total(), EVENTS as u64, "{counts:?}");

    let reader = Client::connect(format!("http://127.0.0.1:{port}"), API_KEY)
        .await
        .unwrap();
    let stored: Vec<String> = reader
        .export(v1::ExportEventsRequest::default())
        .map(|item| item.expect("export").event.event_id)
        .collect()
        .await;
    let distinct: HashSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "an event is stored twice");
    assert_eq!(stored.len(), EVENTS);
    assert!(stored.iter().all(|id| tracked.contains(id)));
}

/// A port free right now below the kernel's ephemeral range (32768–60999): the server
/// restarts on it, and an ephemeral port could meanwhile become a client's source port.
fn restartable_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    (0..2000u64)
        .map(|attempt| 20_000 + ((seed + attempt * 7919) % 12_000) as u16)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port in 20000-31999")
}
