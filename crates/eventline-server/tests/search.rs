//! Search end to end (README "Search"): an admin turns it on over REST, events sent
//! over REST are indexed by the server's background indexer, and found over REST and
//! gRPC, page by page, on PostgreSQL and SQLite.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, TestServer};
use eventline_proto::v1;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn search(server: &TestServer, key: &str, query: &str) -> (StatusCode, Value) {
    server
        .rest(
            Method::GET,
            &format!("/v1/events:search?{query}"),
            key,
            None,
        )
        .await
}

fn ids(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|event| event["event_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn search_is_off_by_default_then_finds_new_and_old_events(server: TestServer) {
    let (status, tenants) = server
        .rest(Method::GET, "/v1/tenants", ADMIN_TOKEN, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{tenants}");
    let tenant_id = tenants["tenants"][0]["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = server.api_key.clone();
    let now = chrono::Utc::now();
    let stamp = |seconds: i64| (now - chrono::Duration::seconds(seconds)).to_rfc3339();
    // History, sent before search is turned on.
    let old: Vec<Value> = (0..5)
        .map(|i| {
            json!({"event_id": format!("old-{i}"), "event_type": "checkout_failed",
                   "user_id": format!("u{i}"), "timestamp": stamp(100 - i),
                   "properties": {"error": "Payment gateway timeout", "attempt": i}})
        })
        .collect();
    let (status, body) = server
        .rest(
            Method::POST,
            "/v1/events:batch",
            &key,
            Some(json!({"events": old})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = search(&server, &key, "query=timeout").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("SetSearchIndex"),
        "{body}"
    );
    let path = format!("/v1/tenants/{tenant_id}/search-index");
    let (status, body) = server.rest(Method::GET, &path, ADMIN_TOKEN, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["search_index"]["enabled"], json!(false), "{body}");

    // A query-only key may not turn it on; the admin token may.
    let (_, query_only) = server
        .tenant_with_key("other", &[v1::Scope::Query, v1::Scope::Ingest])
        .await;
    let (status, _) = server
        .rest(
            Method::PUT,
            &path,
            &query_only,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = server
        .rest(
            Method::PUT,
            &path,
            ADMIN_TOKEN,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["search_index"]["enabled"], json!(true), "{body}");
    assert!(body["search_index"]["enable_time"].is_string(), "{body}");

    // New events, after it was turned on; one of them without the words.
    let new = json!([
        {"event_id": "new-1", "event_type": "checkout_failed", "timestamp": stamp(10),
         "properties": {"error": "payment GATEWAY timeout", "region": {"name": "eu-west"}}},
        {"event_id": "new-2", "event_type": "page_view", "timestamp": stamp(9),
         "properties": {"path": "/docs/gateway"}},
    ]);
    let (status, body) = server
        .rest(
            Method::POST,
            "/v1/events:batch",
            &key,
            Some(json!({"events": new})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let expected = ["new-1", "old-4", "old-3", "old-2", "old-1", "old-0"];
    loop {
        let (status, body) = search(&server, &key, "query=%22gateway+timeout%22").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if ids(&body) == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the indexer did not index every event: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = server.rest(Method::GET, &path, ADMIN_TOKEN, None).await;
    assert_eq!(body["search_index"]["events_indexed"], json!("7"), "{body}");
    assert_eq!(body["search_index"]["caught_up"], json!(true), "{body}");

    // Pages of two, each continuing the last.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let (status, body) = search(
            &server,
            &key,
            &format!("query=gateway+-docs&page_size=2&page_token={token}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        paged.extend(ids(&body));
        token = body["next_page_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, expected, "-docs leaves out the page view");
    // Nested values and filters.
    let (_, body) = search(&server, &key, "query=eu+west&event_type=checkout_failed").await;
    assert_eq!(ids(&body), ["new-1"]);
    let (_, body) = search(&server, &key, "query=gateway&property_filters=attempt%3D2").await;
    assert_eq!(ids(&body), ["old-2"]);

    // Bad input names its field; a token of another query is refused.
    let (status, body) = search(&server, &key, "query=-only+-excluded").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("query"),
        "{body}"
    );
    let (_, first) = search(&server, &key, "query=gateway&page_size=1").await;
    let token = first["next_page_token"].as_str().unwrap();
    let (status, body) = search(
        &server,
        &key,
        &format!("query=timeout&page_size=1&page_token={token}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("page_token"),
        "{body}"
    );

    // Over gRPC, and never another tenant's events: the other tenant has search off.
    let mut client = server.query(&key).await;
    let found = client
        .search_events(v1::SearchEventsRequest {
            query: "timeout".into(),
            user_id: "u3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let found: Vec<&str> = found.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(found, ["old-3"]);
    let refused = server
        .query(&query_only)
        .await
        .search_events(v1::SearchEventsRequest {
            query: "timeout".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // Off drops the index.
    let (status, body) = server
        .rest(
            Method::PUT,
            &path,
            ADMIN_TOKEN,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["search_index"]["events_indexed"], json!("0"), "{body}");
    let (status, _) = search(&server, &key, "query=timeout").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("eventline_search_indexed_events_total 7"),
        "{metrics}"
    );
    server.stop().await;
}

fn fast_indexer(config: &mut eventline_server::Config) {
    config.search.index_interval_ms = 50;
    config.search.index_batch_events = 3;
}

#[tokio::test]
async fn search_is_off_by_default_then_finds_new_and_old_events_on_postgres() {
    let server = TestServer::postgres_with(fast_indexer).await;
    search_is_off_by_default_then_finds_new_and_old_events(server).await;
}

#[tokio::test]
async fn search_is_off_by_default_then_finds_new_and_old_events_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let server = TestServer::sqlite_with(directory.path(), fast_indexer).await;
    search_is_off_by_default_then_finds_new_and_old_events(server).await;
}
