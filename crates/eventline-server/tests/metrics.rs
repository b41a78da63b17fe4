//! Metrics after a known load: a test binary of its own, because the Prometheus recorder
//! is process-wide and other tests would move the counters.

mod common;

use common::TestServer;
use eventline_proto::v1;
use serde_json::json;

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn counters_and_histograms_move_by_the_load_applied() {
    let server = TestServer::postgres().await;
    let mut ingest = server.ingest(&server.api_key).await;
    // gRPC: 10 new, 2 duplicates, 1 rejected.
    let mut events: Vec<v1::Event> = (0..10)
        .map(|n| v1::Event {
            event_id: format!("m{n}"),
            event_type: if n < 7 { "view".into() } else { "buy".into() },
            ..Default::default()
        })
        .collect();
    events.push(v1::Event {
        event_id: "m0".into(),
        event_type: "view".into(),
        ..Default::default()
    });
    events.push(v1::Event {
        event_id: "m1".into(),
        event_type: "view".into(),
        ..Default::default()
    });
    events.push(v1::Event {
        event_type: String::new(),
        ..Default::default()
    });
    ingest
        .ingest_batch(v1::IngestBatchRequest {
            events,
            sent_at: None,
        })
        .await
        .unwrap();
    // REST: one more accepted through the gateway.
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/events", server.http_addr))
        .header("X-API-Key", &server.api_key)
        .json(&json!({"event_type": "signup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut query = server.query(&server.api_key).await;
    let count = query
        .count_events(v1::CountEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 11);

    let text = server.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "eventline_ingest_events_total",
            &[("outcome", "accepted")]
        ),
        11.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_ingest_events_total",
            &[("outcome", "duplicate")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_ingest_events_total",
            &[("outcome", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_ingest_events_by_type_total",
            &[("event_type", "view")]
        ),
        7.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_ingest_events_by_type_total",
            &[("event_type", "buy")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_ingest_events_by_type_total",
            &[("event_type", "signup")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_grpc_requests_total",
            &[("rpc", "IngestService/IngestBatch"), ("code", "ok")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_grpc_requests_total",
            &[("rpc", "IngestService/Track"), ("code", "ok")]
        ),
        1.0,
        "REST calls count as RPCs"
    );
    assert_eq!(
        sample(
            &text,
            "eventline_grpc_requests_total",
            &[("rpc", "QueryService/CountEvents"), ("code", "ok")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_http_requests_total",
            &[("route", "/v1/events"), ("status", "201")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "eventline_grpc_request_duration_seconds_count",
            &[("rpc", "IngestService/IngestBatch")]
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "eventline_writer_batch_events_sum", &[]),
        13.0,
        "12 valid events in one batch + 1 by REST"
    );
    assert!(sample(&text, "eventline_writer_commit_duration_seconds_count", &[]) >= 2.0);
    assert!(
        sample(
            &text,
            "eventline_store_operation_duration_seconds_count",
            &[("operation", "append")]
        ) >= 2.0
    );
    assert!(
        sample(
            &text,
            "eventline_store_pool_connections",
            &[("state", "open")]
        ) >= 1.0
    );
    assert_eq!(sample(&text, "eventline_writer_queue_events", &[]), 0.0);
    assert_eq!(sample(&text, "eventline_tail_subscribers", &[]), 0.0);

    // An unauthenticated call is counted with its code.
    let mut anonymous = server.ingest("").await;
    anonymous
        .track(v1::TrackRequest {
            event: Some(v1::Event {
                event_type: "x".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    let text = server.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "eventline_grpc_requests_total",
            &[("rpc", "IngestService/Track"), ("code", "unauthenticated")]
        ),
        1.0
    );
    server.stop().await;
}
