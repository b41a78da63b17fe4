//! The query helpers against the real server (in-process): listings page through every
//! event once, export and tail resume from their cursor.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{SHUTDOWN, TestServer, assert_exactly_once, restartable_port};
use eventline_client::{Client, ProducerOptions, TrackEvent, v1};
use futures::{StreamExt, TryStreamExt};

/// Tracks `count` events through the producer; returns their ids.
async fn ingest(client: &Client, count: usize, prefix: &str) -> HashSet<String> {
    let producer = client.producer(ProducerOptions::default()).unwrap();
    let mut ids = HashSet::new();
    for n in 0..count {
        let event = TrackEvent::new(["view", "click", "buy"][n % 3])
            .event_id(format!("{prefix}-{n:05}"))
            .user_id(format!("user-{}", n % 7));
        ids.insert(producer.track(event).unwrap());
    }
    let counts = producer.shutdown(SHUTDOWN).await;
    assert_eq!(counts.accepted as usize, count, "{counts:?}");
    ids
}

#[tokio::test]
async fn query_helpers_page_through_2500_events_exactly_once_each() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let ids = ingest(&client, 2500, "page").await;

    let listed: Vec<String> = client
        .list_events(v1::ListEventsRequest {
            page_size: 100,
            ..Default::default()
        })
        .map_ok(|event| event.event_id)
        .try_collect()
        .await
        .unwrap();
    assert_exactly_once(&listed, &ids);
    assert_exactly_once(&common::exported_ids(&client).await, &ids);

    let count = client
        .count_events(v1::CountEventsRequest::default())
        .await
        .unwrap();
    assert_eq!(count, 2500);
    let top = client
        .top_event_types(v1::TopEventTypesRequest::default())
        .await
        .unwrap();
    let by_type: Vec<(String, u64)> = top
        .into_iter()
        .map(|row| (row.event_type, row.count))
        .collect();
    assert_eq!(
        by_type,
        [
            ("view".into(), 834),
            ("buy".into(), 833),
            ("click".into(), 833)
        ]
    );
    let buckets = client
        .timeseries(v1::EventTimeseriesRequest {
            interval: v1::Interval::Hour as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(buckets.iter().map(|bucket| bucket.count).sum::<u64>(), 2500);
    server.stop().await;
}

#[tokio::test]
async fn an_export_resumes_from_a_cursor_without_a_gap_or_a_repeat() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let ids = ingest(&client, 300, "export").await;
    let first: Vec<_> = client
        .export(v1::ExportEventsRequest::default())
        .take(120)
        .try_collect()
        .await
        .unwrap();
    let cursor = first.last().unwrap().cursor.clone();
    let rest: Vec<_> = client
        .export(v1::ExportEventsRequest {
            cursor,
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    let all: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|item| item.event.event_id.clone())
        .collect();
    assert_exactly_once(&all, &ids);
    server.stop().await;
}

#[tokio::test]
async fn a_tail_resumes_after_a_reconnect_without_a_gap_or_a_repeat() {
    let url = eventline_store::testing::fresh_postgres_database().await;
    let port = restartable_port();
    let server = TestServer::start_on(url.clone(), port, |_| {}).await;
    let client = server.client().await;
    let start_time = eventline_core::time::to_proto(eventline_core::time::now() - chrono_hours(1));
    let mut tail = Box::pin(client.tail(v1::TailEventsRequest {
        start_time: Some(start_time),
        ..Default::default()
    }));
    let mut expected = ingest(&client, 150, "before").await;
    let mut seen = Vec::new();
    while seen.len() < 150 {
        seen.push(tail.next().await.unwrap().unwrap().event.event_id);
    }
    // The server goes away and comes back on the same port and database; the tail
    // reconnects by itself and resumes after the last event it delivered.
    server.stop().await;
    let server = TestServer::start_on(url, port, |_| {}).await;
    let client = server.client().await;
    expected.extend(ingest(&client, 150, "after").await);
    while seen.len() < 300 {
        let next = tokio::time::timeout(Duration::from_secs(90), tail.next())
            .await
            .expect("the tail resumed")
            .unwrap()
            .unwrap();
        seen.push(next.event.event_id);
    }
    assert_exactly_once(&seen, &expected);
    // Nothing more arrives: no repeat after the switch.
    let extra = tokio::time::timeout(Duration::from_millis(500), tail.next()).await;
    assert!(extra.is_err(), "unexpected extra event {extra:?}");
    server.stop().await;
}

fn chrono_hours(hours: i64) -> chrono::Duration {
    chrono::Duration::hours(hours)
}
