//! End-to-end ingest over gRPC against a real PostgreSQL (and SQLite where noted).

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::TestServer;
use eventline_core::TenantId;
use eventline_proto::v1::ingest_service_client::IngestServiceClient;
use eventline_proto::v1::{self, IngestStatus};
use tokio_stream::StreamExt;
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

fn event(event_id: &str, event_type: &str) -> v1::Event {
    v1::Event {
        event_id: event_id.into(),
        event_type: event_type.into(),
        user_id: "u1".into(),
        ..Default::default()
    }
}

fn all_time() -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(1971, 1, 1, 0, 0, 0).unwrap(),
        Utc::now() + chrono::Duration::hours(2),
    )
}

/// Opens a bidi stream sending `batches` numbered batches of `size` "view" events with
/// ids `{prefix}{sequence}-{n}`, and returns the acks.
async fn bidi(
    client: &mut IngestServiceClient<InterceptedService<Channel, common::WithKey>>,
    prefix: &str,
    batches: u64,
    size: usize,
) -> tonic::Streaming<v1::IngestBidiResponse> {
    let requests: Vec<v1::IngestBidiRequest> = (1..=batches)
        .map(|sequence| v1::IngestBidiRequest {
            sequence,
            events: (0..size)
                .map(|n| event(&format!("{prefix}{sequence}-{n}"), "view"))
                .collect(),
            sent_at: None,
        })
        .collect();
    client
        .ingest_bidi(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
}

async fn stored(server: &TestServer, tenant_id: TenantId) -> u64 {
    let (start, end) = all_time();
    eventline_store::testing::stored_events(&*server.store, tenant_id, start, end).await
}

async fn default_tenant(server: &TestServer) -> TenantId {
    server.store.list_tenants().await.unwrap()[0].tenant_id
}

async fn track_twice_is_accepted_then_duplicate_and_stored_once(server: TestServer) {
    let mut client = server.ingest(&server.api_key).await;
    let request = || v1::TrackRequest {
        event: Some(event("signup-1", "signup")),
    };
    let first = client
        .track(request())
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    let second = client
        .track(request())
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(first.status(), IngestStatus::Accepted);
    assert_eq!(second.status(), IngestStatus::Duplicate);
    assert_eq!(first.event_id, "signup-1");
    let tenant_id = default_tenant(&server).await;
    assert_eq!(stored(&server, tenant_id).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn track_twice_is_accepted_then_duplicate_and_stored_once_on_postgres() {
    track_twice_is_accepted_then_duplicate_and_stored_once(TestServer::postgres().await).await;
}

#[tokio::test]
async fn track_twice_is_accepted_then_duplicate_and_stored_once_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    track_twice_is_accepted_then_duplicate_and_stored_once(
        TestServer::sqlite(directory.path()).await,
    )
    .await;
}

#[tokio::test]
async fn track_of_an_invalid_event_is_invalid_argument_naming_the_field() {
    let server = TestServer::postgres().await;
    let mut client = server.ingest(&server.api_key).await;
    let status = client
        .track(v1::TrackRequest {
            event: Some(event("x", "")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_request = status.get_details_bad_request().expect("field violations");
    assert_eq!(bad_request.field_violations[0].field, "event.event_type");
    assert_eq!(stored(&server, default_tenant(&server).await).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn batch_with_one_empty_event_type_stores_the_others_and_rejects_it_by_name() {
    let server = TestServer::postgres().await;
    let mut client = server.ingest(&server.api_key).await;
    let events = vec![
        event("a", "view"),
        event("b", "view"),
        event("c", ""),
        event("d", "click"),
    ];
    let response = client
        .ingest_batch(v1::IngestBatchRequest {
            events,
            sent_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<IngestStatus> = response
        .results
        .iter()
        .map(|result| result.status())
        .collect();
    assert_eq!(
        statuses,
        [
            IngestStatus::Accepted,
            IngestStatus::Accepted,
            IngestStatus::Rejected,
            IngestStatus::Accepted
        ]
    );
    assert!(
        response.results[2].error.contains("event_type"),
        "{}",
        response.results[2].error
    );
    assert_eq!(response.results[2].index, 2);
    assert_eq!(
        (response.accepted, response.duplicates, response.rejected),
        (3, 0, 1)
    );
    assert_eq!(stored(&server, default_tenant(&server).await).await, 3);
    server.stop().await;
}

#[tokio::test]
async fn batch_over_2000_events_is_refused_whole_naming_events() {
    let server = TestServer::postgres().await;
    let mut client = server.ingest(&server.api_key).await;
    let events = (0..2001).map(|n| event(&format!("e{n}"), "view")).collect();
    let status = client
        .ingest_batch(v1::IngestBatchRequest {
            events,
            sent_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("events"), "{}", status.message());
    assert_eq!(stored(&server, default_tenant(&server).await).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn client_stream_of_100k_events_is_stored_and_the_summary_matches_the_database() {
    let server = TestServer::postgres().await;
    let mut client = server.ingest(&server.api_key).await;
    let batches = (0..50).map(|batch| {
        let events = (0..2000)
            .map(|n| event(&format!("s{batch}-{n}"), ["view", "click", "buy"][n % 3]))
            .collect();
        v1::IngestStreamRequest {
            events,
            sent_at: None,
        }
    });
    // A repeated batch at the end: all duplicates, none stored again.
    let repeat = v1::IngestStreamRequest {
        events: (0..100)
            .map(|n| event(&format!("s0-{n}"), "view"))
            .collect(),
        sent_at: None,
    };
    let stream = tokio_stream::iter(batches.chain(std::iter::once(repeat)));
    let summary = client.ingest_stream(stream).await.unwrap().into_inner();
    assert_eq!(
        (summary.accepted, summary.duplicates, summary.rejected),
        (100_000, 100, 0)
    );
    assert_eq!(summary.results.len(), 100);
    assert_eq!(
        summary.results[0].index, 100_000,
        "indexes count over the whole stream"
    );
    let tenant_id = default_tenant(&server).await;
    assert_eq!(stored(&server, tenant_id).await, summary.accepted);
    let (start, end) = all_time();
    assert_eq!(
        eventline_store::testing::counted_events(&*server.store, tenant_id, start, end).await,
        summary.accepted
    );
    server.stop().await;
}

#[tokio::test]
async fn bidi_stream_acks_50_pipelined_batches_with_their_sequence_numbers() {
    let server = TestServer::postgres().await;
    let mut client = server.ingest(&server.api_key).await;
    let mut acks = bidi(&mut client, "b", 50, 200).await;
    let mut sequences = Vec::new();
    while let Some(ack) = acks.next().await {
        let ack = ack.unwrap();
        assert_eq!(ack.results.len(), 200);
        assert!(
            ack.results
                .iter()
                .all(|result| result.status() == IngestStatus::Accepted)
        );
        assert!(
            ack.results[0]
                .event_id
                .starts_with(&format!("b{}-", ack.sequence))
        );
        assert!(!ack.watermark.is_empty());
        sequences.push(ack.sequence);
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=50).collect::<Vec<_>>());
    assert_eq!(stored(&server, default_tenant(&server).await).await, 10_000);
    server.stop().await;
}

#[tokio::test]
async fn clock_skew_in_sent_at_shifts_timestamps_and_keeps_the_raw_one() {
    let server = TestServer::postgres().await;
    let mut client = server.ingest(&server.api_key).await;
    let now = Utc::now();
    let client_clock = now - chrono::Duration::hours(3);
    let mut skewed = event("skewed", "view");
    skewed.timestamp = Some(eventline_core::time::to_proto(
        client_clock - chrono::Duration::seconds(60),
    ));
    let sent_at = Some(eventline_core::time::to_proto(client_clock));
    client
        .ingest_batch(v1::IngestBatchRequest {
            events: vec![skewed],
            sent_at,
        })
        .await
        .unwrap();
    let stored_event = server
        .store
        .event(default_tenant(&server).await, "skewed")
        .await
        .unwrap()
        .unwrap();
    let corrected_offset = now - chrono::Duration::seconds(60) - stored_event.timestamp;
    assert!(
        corrected_offset.num_seconds().abs() < 30,
        "timestamp corrected to server time: {corrected_offset}"
    );
    assert_eq!(
        stored_event.client_timestamp,
        Some(eventline_core::time::truncate_to_micros(
            client_clock - chrono::Duration::seconds(60)
        ))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_resource_exhausted_with_retry_info() {
    let server = TestServer::postgres_with_a_small_queue().await;
    let mut requests = Vec::new();
    for request_number in 0..12 {
        let mut client = server.ingest(&server.api_key).await;
        requests.push(tokio::spawn(async move {
            let events = (0..2000)
                .map(|n| event(&format!("q{request_number}-{n}"), "view"))
                .collect();
            client
                .ingest_batch(v1::IngestBatchRequest {
                    events,
                    sent_at: None,
                })
                .await
        }));
    }
    let mut refused = 0;
    for request in requests {
        if let Err(status) = request.await.unwrap() {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            let retry = status.get_details_retry_info().expect("retry info");
            assert!(retry.retry_delay.unwrap() > Duration::ZERO);
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "a 2000-event queue cannot take 12 concurrent full batches within 1 ms"
    );
    server.stop().await;
}

#[tokio::test]
async fn database_outage_answers_unavailable_and_readiness_follows_it() {
    use sqlx::Connection;
    // CONNECTION LIMIT does not bind superusers: the server connects as an ordinary
    // role that owns its database.
    let admin_url = eventline_store::testing::postgres_admin_url();
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let database = database_url.rsplit('/').next().unwrap().to_owned();
    let role = format!("{database}_owner");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} OWNER TO {role}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let role_url = database_url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(
        role_url, database_url,
        "test database URLs name the postgres user"
    );
    let server = TestServer::postgres_at(role_url, |_| {}).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let check = || tonic_health::pb::HealthCheckRequest {
        service: "eventline.v1.IngestService".into(),
    };
    assert_eq!(
        health.check(check()).await.unwrap().into_inner().status,
        1,
        "SERVING before the outage"
    );

    // The outage: no new connections to the database, existing ones cut.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} CONNECTION LIMIT 0"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .unwrap();
    let mut client = server.ingest(&server.api_key).await;
    let status = client
        .track(v1::TrackRequest {
            event: Some(event("during", "view")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_details_retry_info().is_some());
    let mut not_serving = false;
    for _ in 0..50 {
        if health.check(check()).await.unwrap().into_inner().status == 2 {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(not_serving, "readiness goes NOT_SERVING during the outage");

    // Recovery: the same request now succeeds and readiness returns.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} CONNECTION LIMIT -1"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let mut recovered = None;
    for _ in 0..50 {
        if let Ok(response) = client
            .track(v1::TrackRequest {
                event: Some(event("during", "view")),
            })
            .await
        {
            recovered = Some(response.into_inner().result.unwrap().status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        recovered,
        Some(IngestStatus::Accepted),
        "the refused event was not stored"
    );
    let mut serving = false;
    for _ in 0..50 {
        if health.check(check()).await.unwrap().into_inner().status == 1 {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(serving, "readiness returns to SERVING");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_commits_every_acknowledged_event_before_returning() {
    let server = TestServer::postgres().await;
    let mut client = server.ingest(&server.api_key).await;
    let mut acks = bidi(&mut client, "d", 20, 500).await;
    let mut acknowledged = 0;
    while let Some(Ok(ack)) = acks.next().await {
        acknowledged += ack.results.len() as u64;
    }
    let store = server.store.clone();
    let tenant_id = default_tenant(&server).await;
    server.stop().await;
    let (start, end) = all_time();
    assert_eq!(
        eventline_store::testing::stored_events(&*store, tenant_id, start, end).await,
        acknowledged
    );
    assert_eq!(acknowledged, 10_000);
}
