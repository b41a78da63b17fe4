//! QueryService end to end against a real PostgreSQL: every RPC checked against an
//! independent computation over the events sent, tenant isolation for every RPC,
//! export resume, tails from the past while ingesting, and tails across two servers.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use common::{ADMIN_TOKEN, TestServer};
use eventline_core::time;
use eventline_proto::v1::{self, Scope};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

const TYPES: [&str; 5] = ["view", "click", "signup", "buy", "share"];

/// 1,000 events of mixed types for two users, spread over the last 47 hours.
fn sample(now: DateTime<Utc>) -> Vec<v1::Event> {
    (0..1000u32)
        .map(|n| v1::Event {
            event_id: format!("q{n:04}"),
            event_type: TYPES[(n * 7 % 11 % 5) as usize].into(),
            user_id: if n % 3 == 0 {
                "alice".into()
            } else {
                "bob".into()
            },
            // Several events share each timestamp, so ties are exercised.
            timestamp: Some(time::to_proto(
                now - chrono::Duration::seconds(i64::from(n / 4) * 677 + 5),
            )),
            properties: Some(
                serde_json::from_value(
                    serde_json::json!({"plan": if n % 2 == 0 { "pro" } else { "free" }}),
                )
                .unwrap(),
            ),
            ..Default::default()
        })
        .collect()
}

fn stamp(event: &v1::Event) -> DateTime<Utc> {
    time::from_proto(event.timestamp.as_ref().unwrap()).unwrap()
}

async fn ingest(server: &TestServer, key: &str, events: Vec<v1::Event>) -> String {
    let mut client = server.ingest(key).await;
    let mut watermark = String::new();
    for chunk in events.chunks(500) {
        let response = client
            .ingest_batch(v1::IngestBatchRequest {
                events: chunk.to_vec(),
                sent_at: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.rejected, 0);
        watermark = response.watermark;
    }
    watermark
}

async fn second_tenant_query_key(server: &TestServer) -> String {
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let tenant = admin
        .create_tenant(v1::CreateTenantRequest {
            name: "tenant-b".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    admin
        .create_api_key(v1::CreateApiKeyRequest {
            tenant_id: tenant.tenant_id,
            scopes: vec![Scope::Query as i32, Scope::Ingest as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

fn in_window(event: &v1::Event, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    stamp(event) >= start && stamp(event) < end
}

#[tokio::test]
async fn every_query_rpc_matches_an_independent_count_and_another_tenant_sees_nothing() {
    let server = TestServer::postgres().await;
    let now = Utc::now();
    let events = sample(now);
    let watermark = ingest(&server, &server.api_key, events.clone()).await;
    let mut query = server.query(&server.api_key).await;
    let start = now - chrono::Duration::hours(48);
    let end = now + chrono::Duration::minutes(1);
    let (start_proto, end_proto) = (Some(time::to_proto(start)), Some(time::to_proto(end)));

    // ListEvents, paged: newest first, ties by event_id descending.
    let mut expected = events.clone();
    expected
        .sort_by(|left, right| (stamp(right), &right.event_id).cmp(&(stamp(left), &left.event_id)));
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = query
            .list_events(v1::ListEventsRequest {
                start_time: start_proto,
                end_time: end_proto,
                page_size: 97,
                page_token: page_token.clone(),
                min_watermark: watermark.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.events.into_iter().map(|event| event.event_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        listed,
        expected
            .iter()
            .map(|event| event.event_id.clone())
            .collect::<Vec<_>>()
    );

    // A user's timeline with a property filter, default window (last 30 days).
    let timeline = query
        .list_events(v1::ListEventsRequest {
            user_id: "alice".into(),
            property_filters: vec!["plan=pro".into()],
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let alice_pro: Vec<&String> = expected
        .iter()
        .filter(|event| {
            event.user_id == "alice" && event.event_id[1..].parse::<u32>().unwrap() % 2 == 0
        })
        .map(|event| &event.event_id)
        .collect();
    assert_eq!(
        timeline
            .events
            .iter()
            .map(|event| &event.event_id)
            .collect::<Vec<_>>(),
        alice_pro
    );

    // CountEvents over a window with partial hours at both edges.
    let count_start = now - chrono::Duration::minutes(30 * 60 + 17);
    let count_end = now - chrono::Duration::minutes(3 * 60 + 41);
    let expected_clicks = events
        .iter()
        .filter(|event| event.event_type == "click" && in_window(event, count_start, count_end))
        .count();
    let count = query
        .count_events(v1::CountEventsRequest {
            event_type: "click".into(),
            start_time: Some(time::to_proto(count_start)),
            end_time: Some(time::to_proto(count_end)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, expected_clicks as u64);

    // TopEventTypes.
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|event| in_window(event, count_start, count_end))
    {
        *by_type.entry(event.event_type.clone()).or_default() += 1;
    }
    let mut expected_top: Vec<(String, u64)> = by_type.into_iter().collect();
    expected_top.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));
    expected_top.truncate(3);
    let top = query
        .top_event_types(v1::TopEventTypesRequest {
            start_time: Some(time::to_proto(count_start)),
            end_time: Some(time::to_proto(count_end)),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let top: Vec<(String, u64)> = top
        .event_types
        .into_iter()
        .map(|row| (row.event_type, row.count))
        .collect();
    assert_eq!(top, expected_top);

    // EventTimeseries by hour and by day, empty buckets included.
    for (interval, width) in [(v1::Interval::Hour, 3_600i64), (v1::Interval::Day, 86_400)] {
        let series = query
            .event_timeseries(v1::EventTimeseriesRequest {
                event_type: "view".into(),
                start_time: Some(time::to_proto(count_start)),
                end_time: Some(time::to_proto(count_end)),
                interval: interval as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let total: u64 = series.buckets.iter().map(|bucket| bucket.count).sum();
        let expected_views = events
            .iter()
            .filter(|event| event.event_type == "view" && in_window(event, count_start, count_end))
            .count();
        assert_eq!(total, expected_views as u64, "{interval:?}");
        for bucket in &series.buckets {
            let bucket_start = time::from_proto(bucket.start_time.as_ref().unwrap()).unwrap();
            assert_eq!(
                bucket_start.timestamp() % width,
                0,
                "buckets align to the interval in UTC"
            );
            let bucket_end = bucket_start + chrono::Duration::seconds(width);
            let in_bucket = events
                .iter()
                .filter(|event| {
                    event.event_type == "view"
                        && in_window(
                            event,
                            count_start.max(bucket_start),
                            count_end.min(bucket_end),
                        )
                })
                .count();
            assert_eq!(
                bucket.count, in_bucket as u64,
                "{interval:?} bucket {bucket_start}"
            );
        }
    }

    // ExportEvents: everything, oldest first.
    let exported: Vec<String> = query
        .export_events(v1::ExportEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .map(|message| message.unwrap().event.unwrap().event_id)
        .collect()
        .await;
    let oldest_first: Vec<String> = expected
        .iter()
        .rev()
        .map(|event| event.event_id.clone())
        .collect();
    assert_eq!(exported, oldest_first);

    // Tenant B sees, counts and tails nothing of tenant A.
    let key_b = second_tenant_query_key(&server).await;
    let mut query_b = server.query(&key_b).await;
    let listed_b = query_b
        .list_events(v1::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed_b.events.is_empty());
    let count_b = query_b
        .count_events(v1::CountEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count_b.count, 0);
    let top_b = query_b
        .top_event_types(v1::TopEventTypesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(top_b.event_types.is_empty());
    let series_b = query_b
        .event_timeseries(v1::EventTimeseriesRequest {
            interval: v1::Interval::Day as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(series_b.buckets.iter().all(|bucket| bucket.count == 0));
    let exported_b: Vec<_> = query_b
        .export_events(v1::ExportEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(exported_b.is_empty());
    let mut tail_b = query_b
        .tail_events(v1::TailEventsRequest {
            start_time: Some(time::to_proto(start)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    ingest(
        &server,
        &server.api_key,
        vec![v1::Event {
            event_type: "late".into(),
            ..Default::default()
        }],
    )
    .await;
    let nothing = tokio::time::timeout(Duration::from_secs(2), tail_b.next()).await;
    assert!(nothing.is_err(), "tenant B's tail received {nothing:?}");
    server.stop().await;
}

#[tokio::test]
async fn bad_query_arguments_are_invalid_argument_naming_the_field() {
    let server = TestServer::postgres().await;
    let mut query = server.query(&server.api_key).await;
    let cases = [
        // Regression: a NUL in a filter reached PostgreSQL and answered 500 (found by schemathesis).
        (
            v1::ListEventsRequest {
                event_type: "a\0b".into(),
                ..Default::default()
            },
            "event_type",
        ),
        (
            v1::ListEventsRequest {
                page_size: 5000,
                ..Default::default()
            },
            "page_size",
        ),
        (
            v1::ListEventsRequest {
                page_token: "bm90IGEgdG9rZW4".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            v1::ListEventsRequest {
                property_filters: vec!["no-equals".into()],
                ..Default::default()
            },
            "property_filters[0]",
        ),
        (
            v1::ListEventsRequest {
                min_watermark: "nonsense".into(),
                ..Default::default()
            },
            "min_watermark",
        ),
        (
            v1::ListEventsRequest {
                start_time: Some(time::to_proto(Utc::now())),
                end_time: Some(time::to_proto(Utc::now() - chrono::Duration::hours(1))),
                ..Default::default()
            },
            "start_time",
        ),
    ];
    for (request, field) in cases {
        let status = query.list_events(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    let status = query
        .event_timeseries(v1::EventTimeseriesRequest {
            interval: v1::Interval::Minute as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("start_time"),
        "{}",
        status.message()
    );
    let status = query
        .event_timeseries(v1::EventTimeseriesRequest::default())
        .await
        .unwrap_err();
    assert!(
        status.message().contains("interval"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn export_resumes_from_a_cursor_without_gap_or_repeat() {
    let server = TestServer::postgres().await;
    let events = sample(Utc::now());
    ingest(&server, &server.api_key, events.clone()).await;
    let mut query = server.query(&server.api_key).await;
    let request = v1::ExportEventsRequest {
        event_type: "view".into(),
        ..Default::default()
    };
    let mut first = query
        .export_events(request.clone())
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    while seen.len() < 50 {
        let message = first.next().await.unwrap().unwrap();
        seen.push(message.event.unwrap().event_id);
        cursor = message.cursor;
    }
    drop(first);
    let rest: Vec<String> = query
        .export_events(v1::ExportEventsRequest { cursor, ..request })
        .await
        .unwrap()
        .into_inner()
        .map(|message| message.unwrap().event.unwrap().event_id)
        .collect()
        .await;
    seen.extend(rest);
    let mut views: Vec<&v1::Event> = events
        .iter()
        .filter(|event| event.event_type == "view")
        .collect();
    views
        .sort_by(|left, right| (stamp(left), &left.event_id).cmp(&(stamp(right), &right.event_id)));
    assert_eq!(
        seen,
        views
            .iter()
            .map(|event| event.event_id.clone())
            .collect::<Vec<_>>()
    );
    server.stop().await;
}

async fn collect_tail(
    stream: &mut tonic::Streaming<v1::TailEventsResponse>,
    expected: usize,
) -> Vec<v1::TailEventsResponse> {
    let mut received = Vec::with_capacity(expected);
    while received.len() < expected {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(message)) => received.push(message.unwrap()),
            other => {
                let mut ids: Vec<&String> = received
                    .iter()
                    .map(|message| &message.event.as_ref().unwrap().event_id)
                    .collect();
                ids.sort();
                panic!(
                    "tail stopped after {} of {expected} events: {other:?}; received {ids:?}",
                    received.len()
                )
            }
        }
    }
    received
}

#[tokio::test]
async fn a_tail_from_an_hour_ago_delivers_every_event_once_while_ingesting() {
    let server = TestServer::postgres().await;
    let now = Utc::now();
    let history: Vec<v1::Event> = (0..500)
        .map(|n| v1::Event {
            event_id: format!("h{n:03}"),
            event_type: "view".into(),
            timestamp: Some(time::to_proto(now - chrono::Duration::seconds(3000 - n))),
            ..Default::default()
        })
        .collect();
    let too_old = v1::Event {
        event_id: "too-old".into(),
        event_type: "view".into(),
        timestamp: Some(time::to_proto(now - chrono::Duration::hours(2))),
        ..Default::default()
    };
    ingest(
        &server,
        &server.api_key,
        [history.clone(), vec![too_old]].concat(),
    )
    .await;
    let mut query = server.query(&server.api_key).await;
    let mut tail = query
        .tail_events(v1::TailEventsRequest {
            start_time: Some(time::to_proto(now - chrono::Duration::hours(1))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // 10,000 live events from four concurrent writers while the tail replays history.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let mut client = server.ingest(&server.api_key).await;
        writers.push(tokio::spawn(async move {
            for batch in 0..5 {
                let events = (0..500)
                    .map(|n| v1::Event {
                        event_id: format!("live-{writer}-{batch}-{n}"),
                        event_type: "click".into(),
                        ..Default::default()
                    })
                    .collect();
                client
                    .ingest_batch(v1::IngestBatchRequest {
                        events,
                        sent_at: None,
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    let received = collect_tail(&mut tail, 10_500).await;
    for writer in writers {
        writer.await.unwrap();
    }
    let ids: Vec<String> = received
        .iter()
        .map(|message| message.event.as_ref().unwrap().event_id.clone())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 10_500, "no event delivered twice");
    assert!(!unique.contains(&"too-old".to_owned()));
    // History comes first, in time order.
    let replayed: Vec<&String> = ids.iter().filter(|id| id.starts_with('h')).collect();
    let mut sorted = replayed.clone();
    sorted.sort();
    assert_eq!(replayed, sorted);
    // Nothing more arrives: the stream is quiet once every event was delivered.
    let extra = tokio::time::timeout(Duration::from_millis(1500), tail.next()).await;
    assert!(extra.is_err(), "unexpected extra message {extra:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_tail_on_one_server_sees_events_ingested_through_another_and_resumes_from_its_cursor() {
    let first = TestServer::postgres().await;
    let url = first.database_url.clone().unwrap();
    let second = TestServer::postgres_at(url, |_| {}).await;
    let mut query = second.query(&first.api_key).await;
    let mut tail = query
        .tail_events(v1::TailEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let events: Vec<v1::Event> = (0..300)
        .map(|n| v1::Event {
            event_id: format!("x{n:03}"),
            event_type: "view".into(),
            ..Default::default()
        })
        .collect();
    ingest(&first, &first.api_key, events[..200].to_vec()).await;
    let received = collect_tail(&mut tail, 200).await;
    let mut ids: Vec<String> = received
        .iter()
        .map(|message| message.event.as_ref().unwrap().event_id.clone())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        events[..200]
            .iter()
            .map(|event| event.event_id.clone())
            .collect::<Vec<_>>()
    );

    // Disconnect after 120 events, miss 100 more, resume from the last cursor.
    drop(tail);
    let cursor = received[119].cursor.clone();
    ingest(&first, &first.api_key, events[200..].to_vec()).await;
    let mut resumed = query
        .tail_events(v1::TailEventsRequest {
            cursor,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest = collect_tail(&mut resumed, 180).await;
    let before: Vec<&String> = received[..120]
        .iter()
        .map(|message| &message.event.as_ref().unwrap().event_id)
        .collect();
    let after: Vec<&String> = rest
        .iter()
        .map(|message| &message.event.as_ref().unwrap().event_id)
        .collect();
    let all: HashSet<&String> = before.iter().chain(after.iter()).copied().collect();
    assert_eq!(all.len(), 300, "resuming neither skips nor repeats");
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn queries_read_from_the_configured_read_database() {
    // A second, empty database stands in for a replica that has not caught up: reads
    // must come from it, writes must not.
    let replica_url = eventline_store::testing::fresh_postgres_database().await;
    eventline_store::postgres::PgStore::connect(&replica_url, 1)
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let server =
        TestServer::postgres_with(|config| config.database.read_url = Some(replica_url)).await;
    let watermark = ingest(&server, &server.api_key, sample(Utc::now())[..10].to_vec()).await;
    let mut query = server.query(&server.api_key).await;
    let listed = query
        .list_events(v1::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.events.is_empty(), "reads went to the primary");
    let tenant_id = server.store.list_tenants().await.unwrap()[0].tenant_id;
    let (start, end) = (
        Utc::now() - chrono::Duration::days(3),
        Utc::now() + chrono::Duration::hours(1),
    );
    assert_eq!(
        eventline_store::testing::stored_events(&*server.store, tenant_id, start, end).await,
        0,
        "the store reads the replica"
    );
    assert!(!watermark.is_empty());
    server.stop().await;
}

/// Whether `condition` came true within 15 s, asked every 50 ms.
async fn poll_until<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if condition().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// The replica's gauges as the metrics port shows them.
async fn replica_lag_bytes(server: &TestServer) -> f64 {
    let text = server.metrics_text().await;
    assert!(text.contains("eventline_replica_lag_seconds "), "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix("eventline_replica_lag_bytes "))
        .unwrap_or_else(|| panic!("no eventline_replica_lag_bytes in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn read_your_writes_against_a_streaming_replica_and_unavailable_while_it_lags() {
    // A real hot standby: pg_basebackup from a throwaway primary, streaming from it.
    let primary = eventline_store::testing::OwnCluster::start(61_530);
    let replica = primary.start_replica(61_531);
    let admin = sqlx::PgPool::connect(&primary.url()).await.unwrap();
    sqlx::query("CREATE DATABASE eventline")
        .execute(&admin)
        .await
        .unwrap();
    let replica_admin = sqlx::PgPool::connect(&replica.url()).await.unwrap();
    // The standby has the database once it replayed the CREATE DATABASE.
    let replayed = poll_until(|| async {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'eventline')")
            .fetch_one(&replica_admin)
            .await
            .unwrap()
    })
    .await;
    assert!(replayed, "the standby replays CREATE DATABASE within 15 s");
    let replica_url = replica.database_url("eventline");
    let server = TestServer::postgres_at(primary.database_url("eventline"), |config| {
        config.database.read_url = Some(replica_url.clone());
    })
    .await;
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&replica_admin)
        .await
        .unwrap();
    assert!(in_recovery, "the read database is a standby");

    let now = Utc::now();
    let events = sample(now);
    let watermark = ingest(&server, &server.api_key, events[..200].to_vec()).await;
    let mut query = server.query(&server.api_key).await;
    let read = |watermark: String| v1::ListEventsRequest {
        min_watermark: watermark,
        page_size: 1000,
        ..Default::default()
    };
    let listed = query
        .list_events(read(watermark))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.events.len(),
        200,
        "min_watermark reads its own writes"
    );

    // Replay paused: the replica falls behind the writes of the next watermark.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&replica_admin)
        .await
        .unwrap();
    // A pause is a request; replay stops at its next record.
    let paused = poll_until(|| async {
        sqlx::query_scalar::<_, String>("SELECT pg_get_wal_replay_pause_state()")
            .fetch_one(&replica_admin)
            .await
            .unwrap()
            == "paused"
    })
    .await;
    assert!(paused, "replay pauses within 15 s");
    let lagging = ingest(&server, &server.api_key, events[200..300].to_vec()).await;
    let status = query
        .list_events(read(lagging.clone()))
        .await
        .expect_err("a replica behind min_watermark cannot answer");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("min_watermark"), "{status:?}");
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("UNAVAILABLE carries RetryInfo");
    assert!(delay > std::time::Duration::ZERO, "{delay:?}");
    assert!(
        replica_lag_bytes(&server).await > 0.0,
        "the lag shows while replay is paused"
    );
    let without = query
        .list_events(read(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        without.events.len(),
        200,
        "the replica still has the old state"
    );

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica_admin)
        .await
        .unwrap();
    let listed = query.list_events(read(lagging)).await.unwrap().into_inner();
    assert_eq!(listed.events.len(), 300, "caught up, it answers");
    let caught_up = poll_until(|| async { replica_lag_bytes(&server).await == 0.0 }).await;
    assert!(caught_up, "the lag returns to zero once replay catches up");
    server.stop().await;
    replica_admin.close().await;
    admin.close().await;
}

#[tokio::test]
async fn a_tail_on_sqlite_switches_from_history_to_live_without_gap_or_repeat() {
    let directory = tempfile::tempdir().unwrap();
    let server = TestServer::sqlite(directory.path()).await;
    let now = Utc::now();
    let history: Vec<v1::Event> = (0..300)
        .map(|n| v1::Event {
            event_id: format!("old{n:03}"),
            event_type: "view".into(),
            timestamp: Some(time::to_proto(now - chrono::Duration::seconds(600 - n))),
            ..Default::default()
        })
        .collect();
    ingest(&server, &server.api_key, history).await;
    let mut query = server.query(&server.api_key).await;
    let mut tail = query
        .tail_events(v1::TailEventsRequest {
            start_time: Some(time::to_proto(now - chrono::Duration::hours(1))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let live: Vec<v1::Event> = (0..700)
        .map(|n| v1::Event {
            event_id: format!("new{n:03}"),
            event_type: "click".into(),
            ..Default::default()
        })
        .collect();
    let writer = {
        let mut client = server.ingest(&server.api_key).await;
        tokio::spawn(async move {
            for chunk in live.chunks(70) {
                client
                    .ingest_batch(v1::IngestBatchRequest {
                        events: chunk.to_vec(),
                        sent_at: None,
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let received = collect_tail(&mut tail, 1000).await;
    writer.await.unwrap();
    let ids: Vec<&String> = received
        .iter()
        .map(|message| &message.event.as_ref().unwrap().event_id)
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000, "no repeats");
    assert!(
        ids[..300].iter().all(|id| id.starts_with("old")),
        "history first"
    );
    let mut history_ids = ids[..300].to_vec();
    history_ids.sort();
    assert_eq!(history_ids, ids[..300].to_vec(), "history in time order");
    server.stop().await;
}

/// Windows of several days read daily rollups for whole days, hourly rollups around them
/// and raw rows at the partial edge hours; the sum must equal an independent count.
#[tokio::test]
async fn stats_over_several_days_match_an_independent_count_on_both_stores() {
    let directory = tempfile::tempdir().unwrap();
    for server in [
        TestServer::postgres().await,
        TestServer::sqlite(directory.path()).await,
    ] {
        let now = Utc::now();
        let events: Vec<v1::Event> = (0..600u32)
            .map(|n| v1::Event {
                event_id: format!("d{n:04}"),
                event_type: TYPES[(n * 3 % 7 % 5) as usize].into(),
                timestamp: Some(time::to_proto(
                    now - chrono::Duration::seconds(i64::from(n) * 733 + 5),
                )),
                ..Default::default()
            })
            .collect();
        ingest(&server, &server.api_key, events.clone()).await;
        let mut query = server.query(&server.api_key).await;
        // 96.6 hours: at least three whole UTC days, whole hours and partial hours around.
        let start = now - chrono::Duration::minutes(100 * 60 + 17);
        let end = now - chrono::Duration::minutes(3 * 60 + 41);
        let window = (Some(time::to_proto(start)), Some(time::to_proto(end)));
        let count_of = |event_type: Option<&str>, from: DateTime<Utc>, to: DateTime<Utc>| {
            events
                .iter()
                .filter(|event| event_type.is_none_or(|wanted| event.event_type == wanted))
                .filter(|event| in_window(event, start.max(from), end.min(to)))
                .count() as u64
        };

        for event_type in ["", "click"] {
            let counted = query
                .count_events(v1::CountEventsRequest {
                    event_type: event_type.into(),
                    start_time: window.0,
                    end_time: window.1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .count;
            let wanted = (!event_type.is_empty()).then_some(event_type);
            assert_eq!(counted, count_of(wanted, start, end), "{event_type:?}");
        }

        let top = query
            .top_event_types(v1::TopEventTypesRequest {
                start_time: window.0,
                end_time: window.1,
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(top.event_types.len(), 5);
        for row in &top.event_types {
            assert_eq!(
                row.count,
                count_of(Some(row.event_type.as_str()), start, end),
                "{}",
                row.event_type
            );
        }

        let series = query
            .event_timeseries(v1::EventTimeseriesRequest {
                event_type: "view".into(),
                start_time: window.0,
                end_time: window.1,
                interval: v1::Interval::Day as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(series.buckets.len() >= 4);
        for bucket in &series.buckets {
            let bucket_start = time::from_proto(bucket.start_time.as_ref().unwrap()).unwrap();
            let bucket_end = bucket_start + chrono::Duration::days(1);
            assert_eq!(
                bucket.count,
                count_of(Some("view"), bucket_start, bucket_end),
                "day {bucket_start}"
            );
        }
    }
}
