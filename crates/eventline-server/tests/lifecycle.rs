//! The data lifecycle end to end (README "Data lifecycle"): user deletion, retention and
//! expiry, the quarantine with replay, and event schemas, over REST and gRPC against the
//! real server on PostgreSQL and SQLite.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, TestServer};
use eventline_proto::v1;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn url(server: &TestServer, path: &str) -> String {
    format!("http://{}{path}", server.http_addr)
}

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    credential: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    server.rest(method, path, credential, body).await
}

async fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(server, method, path, ADMIN_TOKEN, body).await
}

async fn tenant_id(server: &TestServer) -> String {
    server.first_tenant_id().await
}

async fn send_batch(server: &TestServer, events: Value) -> Value {
    server.rest_batch(events).await
}

async fn count(server: &TestServer, query: &str) -> (StatusCode, Value) {
    call(
        server,
        reqwest::Method::GET,
        &format!("/v1/stats/count?{query}"),
        &server.api_key,
        None,
    )
    .await
}

fn hours_ago(hours: i64) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    eventline_store::hour_of(now) - chrono::Duration::hours(hours)
}

fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Polls GetDeletion until DONE (10 s at most) and returns it.
async fn wait_for_deletion(server: &TestServer, tenant: &str, deletion_id: &str) -> Value {
    let path = format!("/v1/tenants/{tenant}/deletions/{deletion_id}");
    for _ in 0..200 {
        let (status, body) = admin(server, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["deletion"]["state"] == "DELETION_STATE_DONE" {
            return body["deletion"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deletion {deletion_id} did not finish in 10 s");
}

async fn deleting_a_user_over_rest_removes_every_event_and_corrects_counts(server: TestServer) {
    let tenant = tenant_id(&server).await;
    let start = hours_ago(30);
    let events: Vec<Value> = (0..300)
        .map(|n| {
            json!({
                "event_id": format!("e{n}"),
                "event_type": if n % 3 == 0 { "signup" } else { "view" },
                "user_id": format!("u{}", n % 4),
                "timestamp": rfc3339(start + chrono::Duration::minutes(n * 5)),
            })
        })
        .collect();
    send_batch(&server, Value::Array(events)).await;
    let window = format!("start_time={}", rfc3339(start));
    let (_, before) = count(&server, &format!("{window}&measure=MEASURE_UNIQUE_USERS")).await;
    assert_eq!(before["count"], "4", "{before}");

    let path = format!("/v1/tenants/{tenant}/users/u1:delete");
    let (status, body) = admin(&server, reqwest::Method::POST, &path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deletion_id = body["deletion"]["deletion_id"].as_str().unwrap().to_owned();
    let done = wait_for_deletion(&server, &tenant, &deletion_id).await;
    assert_eq!(done["events_deleted"], "75", "{done}");
    assert_eq!(done["user_id"], "u1");

    let (status, listed) = call(
        &server,
        reqwest::Method::GET,
        &format!("/v1/users/u1/events?{window}"),
        &server.api_key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed["events"].as_array().is_none_or(Vec::is_empty),
        "{listed}"
    );
    let (_, total) = count(&server, &window).await;
    assert_eq!(total["count"], "225");
    let (_, signups) = count(&server, &format!("{window}&event_type=signup")).await;
    let expected_signups = (0..300).filter(|n| n % 3 == 0 && n % 4 != 1).count();
    assert_eq!(signups["count"], expected_signups.to_string());
    let (_, users) = count(&server, &format!("{window}&measure=MEASURE_UNIQUE_USERS")).await;
    assert_eq!(users["count"], "3", "{users}");
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_user_over_rest_removes_every_event_and_corrects_counts_on_postgres() {
    deleting_a_user_over_rest_removes_every_event_and_corrects_counts(TestServer::postgres().await)
        .await;
}

#[tokio::test]
async fn deleting_a_user_over_rest_removes_every_event_and_corrects_counts_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    deleting_a_user_over_rest_removes_every_event_and_corrects_counts(
        TestServer::sqlite(directory.path()).await,
    )
    .await;
}

#[tokio::test]
async fn lifecycle_rpcs_name_bad_fields_and_need_the_admin_scope() {
    let server = TestServer::postgres().await;
    let tenant = tenant_id(&server).await;
    let mut admin_client = server.admin(ADMIN_TOKEN).await;
    let error = admin_client
        .delete_user(v1::DeleteUserRequest {
            tenant_id: tenant.clone(),
            user_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("user_id"), "{}", error.message());
    let error = admin_client
        .get_deletion(v1::GetDeletionRequest {
            tenant_id: tenant.clone(),
            deletion_id: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);
    // The bootstrap key has the ingest and query scopes, not admin.
    let (status, body) = call(
        &server,
        reqwest::Method::POST,
        &format!("/v1/tenants/{tenant}/users/u1:delete"),
        &server.api_key,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = admin(
        &server,
        reqwest::Method::PUT,
        &format!("/v1/tenants/{tenant}/retention"),
        Some(json!({"retention": {"raw_retention_seconds": 86400, "rollup_retention_seconds": 7200}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("retention.rollup_retention_seconds"),
        "{body}"
    );
    let (status, body) = admin(
        &server,
        reqwest::Method::PUT,
        &format!("/v1/tenants/{tenant}/schemas/signup"),
        Some(json!({"schema": {"type": 12}, "mode": "SCHEMA_MODE_ENFORCE"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("schema"),
        "{body}"
    );
    let (status, body) = admin(
        &server,
        reqwest::Method::POST,
        &format!("/v1/tenants/{tenant}/quarantine:replay"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("quarantine_ids"),
        "{body}"
    );
    server.stop().await;
}

async fn set_signup_schema(server: &TestServer, tenant: &str, mode: &str) {
    let (status, body) = admin(
        server,
        reqwest::Method::PUT,
        &format!("/v1/tenants/{tenant}/schemas/signup"),
        Some(json!({
            "schema": {
                "type": "object",
                "properties": {"plan": {"enum": ["free", "pro"]}},
                "required": ["plan"]
            },
            "mode": mode,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn quarantined(server: &TestServer, tenant: &str) -> Vec<Value> {
    let (status, body) = admin(
        server,
        reqwest::Method::GET,
        &format!("/v1/tenants/{tenant}/quarantine"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn rejected_events_are_quarantined_then_replayed_once_and_purged() {
    let server = TestServer::postgres().await;
    let tenant = tenant_id(&server).await;
    set_signup_schema(&server, &tenant, "SCHEMA_MODE_ENFORCE").await;
    let report = send_batch(
        &server,
        json!([
            {"event_id": "ok", "event_type": "signup", "properties": {"plan": "pro"}},
            {"event_id": "gold", "event_type": "signup", "properties": {"plan": "gold"}},
            {"event_id": "untyped", "event_type": ""},
            {"event_type": "view", "timestamp": "1960-01-01T00:00:00Z"},
        ]),
    )
    .await;
    assert_eq!(
        (report["accepted"].as_str(), report["rejected"].as_str()),
        (Some("1"), Some("3"))
    );
    assert!(
        report["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("properties/plan"),
        "{report}"
    );
    // Track refuses with 400 and keeps the event too.
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        "/v1/events",
        &server.api_key,
        Some(json!({"event_id": "tracked", "event_type": "signup"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let kept = quarantined(&server, &tenant).await;
    assert_eq!(kept.len(), 4, "{kept:?}");
    let gold = kept
        .iter()
        .find(|event| event["event_id"] == "gold")
        .expect("gold kept");
    assert!(
        gold["reason"].as_str().unwrap().contains("properties/plan"),
        "{gold}"
    );
    let payload: Value = serde_json::from_str(gold["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["properties"]["plan"], "gold");
    assert!(
        kept.iter()
            .all(|event| !event["event_id"].as_str().unwrap_or_default().is_empty()),
        "an event sent without an id is given one, so a replay stores it once"
    );

    // Still invalid: nothing is stored and the events stay.
    let replay_all = json!({"all": true});
    let replay_path = format!("/v1/tenants/{tenant}/quarantine:replay");
    let (status, replayed) = admin(
        &server,
        reqwest::Method::POST,
        &replay_path,
        Some(replay_all.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["rejected"], "4", "{replayed}");
    assert_eq!(quarantined(&server, &tenant).await.len(), 4);

    // Once the schema allows gold, replaying stores it exactly once, however often.
    let (status, _) = admin(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/tenants/{tenant}/schemas/signup"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let gold_id = gold["quarantine_id"].as_str().unwrap().to_owned();
    // A copy of it, as a crash between the commit and the removal would leave behind.
    let stored_copy = server
        .store
        .quarantined(
            eventline_core::TenantId::parse("tenant", &tenant).unwrap(),
            std::slice::from_ref(&gold_id),
        )
        .await
        .unwrap();
    let mut copy = stored_copy[0].clone();
    copy.quarantine_id = uuid::Uuid::now_v7().to_string();
    server.store.quarantine(&[copy], 100).await.unwrap();
    let (_, first) = admin(
        &server,
        reqwest::Method::POST,
        &replay_path,
        Some(json!({"quarantine_ids": [gold_id]})),
    )
    .await;
    assert_eq!(first["accepted"], "1", "{first}");
    let (_, again) = admin(
        &server,
        reqwest::Method::POST,
        &replay_path,
        Some(replay_all),
    )
    .await;
    assert_eq!(
        again["duplicates"], "1",
        "the copy is found stored: {again}"
    );
    assert_eq!(
        again["accepted"], "1",
        "tracked has no plan, but no schema now: {again}"
    );
    let (_, signups) = count(&server, "event_type=signup").await;
    assert_eq!(
        signups["count"], "3",
        "ok, gold and tracked, each once: {signups}"
    );

    let (status, purged) = admin(
        &server,
        reqwest::Method::POST,
        &format!("/v1/tenants/{tenant}/quarantine:purge"),
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        purged["purged"], "2",
        "the untyped and 1960 events: {purged}"
    );
    assert!(quarantined(&server, &tenant).await.is_empty());
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("eventline_quarantine_events_total 4"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn warn_schemas_store_and_count_and_validate_events_stores_nothing() {
    let server = TestServer::postgres().await;
    let tenant = tenant_id(&server).await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"eventline_schema_violations_total{mode="warn"} 0"#),
        "registered at zero: {metrics}"
    );
    set_signup_schema(&server, &tenant, "SCHEMA_MODE_WARN").await;
    let report = send_batch(
        &server,
        json!([{"event_type": "signup", "properties": {"plan": "gold"}}]),
    )
    .await;
    assert_eq!(report["accepted"], "1", "{report}");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"eventline_schema_violations_total{mode="warn"} 1"#),
        "{metrics}"
    );
    let (status, answer) = call(
        &server,
        reqwest::Method::POST,
        "/v1/events:validate",
        &server.api_key,
        Some(json!({"events": [
            {"event_type": "signup", "properties": {"plan": "gold"}},
            {"event_type": "signup", "properties": {"plan": "free"}},
            {"event_type": ""},
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["valid"].as_str(), answer["invalid"].as_str()),
        (Some("2"), Some("1"))
    );
    let warnings = answer["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("0: properties/plan"),
        "{answer}"
    );
    set_signup_schema(&server, &tenant, "SCHEMA_MODE_ENFORCE").await;
    let mut ingest = server.ingest(&server.api_key).await;
    let answer = ingest
        .validate_events(v1::ValidateEventsRequest {
            events: vec![v1::Event {
                event_type: "signup".into(),
                ..Default::default()
            }],
            sent_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results[0].status, v1::IngestStatus::Rejected as i32);
    assert!(
        answer.results[0].error.contains("plan"),
        "{}",
        answer.results[0].error
    );
    let (_, total) = count(&server, "").await;
    assert_eq!(total["count"], "1", "a dry run stores nothing: {total}");
    assert!(
        quarantined(&server, &tenant).await.is_empty(),
        "nor quarantines"
    );
    server.stop().await;
}

async fn retention_expires_old_events_keeps_rollups_and_refuses_raw_reads(server: TestServer) {
    let tenant = tenant_id(&server).await;
    let old_start = hours_ago(72);
    let events: Vec<Value> = (0..120)
        .map(|n| {
            json!({
                "event_type": "view",
                "user_id": format!("u{}", n % 7),
                "timestamp": rfc3339(old_start + chrono::Duration::minutes(n * 10)),
            })
        })
        .chain((0..10).map(|n| json!({"event_type": "view", "user_id": format!("new{n}")})))
        .collect();
    send_batch(&server, Value::Array(events)).await;
    let (status, body) = admin(
        &server,
        reqwest::Method::PUT,
        &format!("/v1/tenants/{tenant}/retention"),
        Some(json!({"retention": {"raw_retention_seconds": 86400, "rollup_retention_seconds": 864000}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, got) = admin(
        &server,
        reqwest::Method::GET,
        &format!("/v1/tenants/{tenant}/retention"),
        None,
    )
    .await;
    assert_eq!(got["retention"]["raw_retention_seconds"], "86400");
    // The background task expires the old raw events (the dedupe window is 0 here).
    let tenant_id = eventline_core::TenantId::parse("tenant", &tenant).unwrap();
    let mut left = u64::MAX;
    for _ in 0..200 {
        left = eventline_store::testing::stored_events(
            &*server.store,
            tenant_id,
            old_start,
            chrono::Utc::now() + chrono::Duration::hours(1),
        )
        .await;
        if left == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 10, "only the recent events are kept raw");
    // Counts over whole hours still see every old event, from the rollups.
    let whole_hours = format!("start_time={}", rfc3339(old_start));
    let (status, counted) = count(&server, &whole_hours).await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(counted["count"], "130");
    let unaligned = format!(
        "start_time={}",
        rfc3339(old_start + chrono::Duration::minutes(7))
    );
    let (status, refused) = count(&server, &unaligned).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("whole hour"),
        "{refused}"
    );
    for path in [
        format!("/v1/events?{whole_hours}"),
        format!("/v1/stats/count?{whole_hours}&measure=MEASURE_UNIQUE_USERS"),
    ] {
        let (status, refused) =
            call(&server, reqwest::Method::GET, &path, &server.api_key, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("raw retention"),
            "{refused}"
        );
    }
    // Windows left to their defaults are moved to what the retention can answer.
    let (status, listed) = call(
        &server,
        reqwest::Method::GET,
        "/v1/events",
        &server.api_key,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["events"].as_array().map(Vec::len), Some(10));
    let (status, counted) = count(&server, "").await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(
        counted["count"], "130",
        "the default 30 days, from the rollups"
    );
    let exported = reqwest::Client::new()
        .get(url(&server, "/v1/events:export"))
        .header("X-API-Key", &server.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(exported.status(), StatusCode::OK);
    assert_eq!(exported.text().await.unwrap().lines().count(), 10);
    let too_old = format!("start_time={}", rfc3339(hours_ago(24 * 20)));
    let (status, refused) = count(&server, &too_old).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("rollup retention"),
        "{refused}"
    );
    server.stop().await;
}

fn fast_expiry(config: &mut eventline_server::Config) {
    config.lifecycle.interval_ms = 100;
    config.lifecycle.dedupe_window_ms = 0;
}

#[tokio::test]
async fn retention_expires_old_events_keeps_rollups_and_refuses_raw_reads_on_postgres() {
    let server = TestServer::postgres_with(fast_expiry).await;
    retention_expires_old_events_keeps_rollups_and_refuses_raw_reads(server).await;
}

#[tokio::test]
async fn retention_expires_old_events_keeps_rollups_and_refuses_raw_reads_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let server = TestServer::sqlite_with(directory.path(), fast_expiry).await;
    retention_expires_old_events_keeps_rollups_and_refuses_raw_reads(server).await;
}
