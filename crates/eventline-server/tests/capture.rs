//! Drop-in capture (issue #29) end to end over real HTTP against a real database: the
//! Segment and PostHog doors, their auth, limits, encodings, error answers, the shared
//! mapping as read back through QueryService, dedupe by messageId/uuid, 429 +
//! Retry-After under overload, and the per-door metrics. The real SDKs are tested by
//! `scripts/test-capture`.

mod common;

use std::io::Write;

use base64::Engine;
use common::TestServer;
use eventline_proto::v1::{self, Scope};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn url(server: &TestServer, path: &str) -> String {
    format!("http://{}{path}", server.http_addr)
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn post_json(server: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url(server, path))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Every stored event of the server's default tenant, newest first.
async fn stored(server: &TestServer) -> Vec<v1::Event> {
    let mut query = server.query(&server.api_key).await;
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = query
            .list_events(v1::ListEventsRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                start_time: Some(pbjson_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

fn properties(event: &v1::Event) -> Value {
    serde_json::to_value(event.properties.as_ref().unwrap().to_struct().unwrap()).unwrap()
}

fn by_id<'a>(events: &'a [v1::Event], id: &str) -> &'a v1::Event {
    events
        .iter()
        .find(|event| event.event_id == id)
        .unwrap_or_else(|| panic!("event {id} is not stored"))
}

fn segment_batch(key: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339();
    json!({
        "writeKey": key,
        "sentAt": now,
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        "batch": [
            {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "s-track", "timestamp": now, "properties": {"plan": "pro"}},
            {"type": "identify", "userId": "u1", "anonymousId": "anon-1", "messageId": "s-identify", "traits": {"email": "a@example.com"}},
            {"type": "page", "anonymousId": "anon-1", "messageId": "s-page", "name": "Home", "properties": {"url": "https://example.com/"}},
            {"type": "screen", "userId": "u1", "messageId": "s-screen", "name": "Settings"},
            {"type": "group", "userId": "u1", "messageId": "s-group", "groupId": "g1", "traits": {"seats": 5}},
            {"type": "alias", "userId": "u1", "previousId": "anon-1", "messageId": "s-alias"},
            {"type": "track", "event": "No Owner", "messageId": "s-bad"},
        ],
    })
}

#[tokio::test]
async fn segment_batch_maps_every_call_type_and_rejects_only_the_bad_message() {
    let server = TestServer::postgres().await;
    let response = post_json(&server, "/v1/batch", &segment_batch(&server.api_key)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"success": true})
    );
    let events = stored(&server).await;
    assert_eq!(
        events.len(),
        6,
        "every good message once, the bad one left out"
    );
    let expected = [
        ("s-track", "Signed Up", "u1"),
        ("s-identify", "$identify", "u1"),
        ("s-page", "$pageview", "anon-1"),
        ("s-screen", "$screen", "u1"),
        ("s-group", "$groupidentify", "u1"),
        ("s-alias", "$create_alias", "anon-1"),
    ];
    for (id, event_type, user_id) in expected {
        let event = by_id(&events, id);
        assert_eq!(
            (event.event_type.as_str(), event.user_id.as_str()),
            (event_type, user_id)
        );
        assert_eq!(properties(event)["$lib"], "analytics-python", "{id}");
    }
    assert_eq!(properties(by_id(&events, "s-track"))["plan"], "pro");
    assert_eq!(
        properties(by_id(&events, "s-identify"))["$set"]["email"],
        "a@example.com"
    );
    assert_eq!(
        properties(by_id(&events, "s-identify"))["$anonymous_id"],
        "anon-1"
    );
    assert_eq!(
        properties(by_id(&events, "s-page"))["$current_url"],
        "https://example.com/"
    );
    assert_eq!(properties(by_id(&events, "s-group"))["$group_key"], "g1");
    assert_eq!(properties(by_id(&events, "s-alias"))["alias"], "u1");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"eventline_capture_events_total{door="segment",outcome="rejected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"eventline_capture_events_total{door="posthog",outcome="accepted"} 0"#)
    );
    server.stop().await;
}

#[tokio::test]
async fn segment_resends_store_each_message_id_once_with_basic_auth_and_gzip() {
    let server = TestServer::postgres().await;
    let body = segment_batch("");
    let compressed = gzip(body.to_string().as_bytes());
    for _ in 0..3 {
        let response = reqwest::Client::new()
            .post(url(&server, "/v1/batch"))
            .header("Authorization", basic(&server.api_key))
            .header("Content-Encoding", "gzip")
            .header("Content-Type", "application/json")
            .body(compressed.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(stored(&server).await.len(), 6);
    server.stop().await;
}

#[tokio::test]
async fn segment_single_calls_take_the_type_from_the_path_and_reject_with_400_naming_the_field() {
    let server = TestServer::postgres().await;
    let key = server.api_key.clone();
    let ok = post_json(
        &server,
        "/v1/track",
        &json!({"writeKey": key, "event": "Clicked", "userId": "u2", "messageId": "t1"}),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let page = post_json(
        &server,
        "/v1/p",
        &json!({"writeKey": key, "anonymousId": "a2", "messageId": "p1"}),
    )
    .await;
    assert_eq!(page.status(), StatusCode::OK);
    let no_owner = post_json(
        &server,
        "/v1/identify",
        &json!({"writeKey": key, "messageId": "i1"}),
    )
    .await;
    assert_eq!(no_owner.status(), StatusCode::BAD_REQUEST);
    let error: Value = no_owner.json().await.unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("userId"),
        "{error}"
    );
    let no_event = post_json(
        &server,
        "/v1/track",
        &json!({"writeKey": key, "userId": "u"}),
    )
    .await;
    assert_eq!(no_event.status(), StatusCode::BAD_REQUEST);
    let not_json = reqwest::Client::new()
        .post(url(&server, "/v1/batch"))
        .header("Authorization", basic(&key))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let events = stored(&server).await;
    assert_eq!(events.len(), 2);
    assert_eq!(by_id(&events, "t1").event_type, "Clicked");
    assert_eq!(by_id(&events, "p1").event_type, "$pageview");
    server.stop().await;
}

#[tokio::test]
async fn segment_limits_are_32_kb_per_message_and_500_kb_per_batch() {
    let server = TestServer::postgres().await;
    let key = server.api_key.clone();
    let big = "x".repeat(33 * 1024);
    let batch = json!({"writeKey": key, "batch": [
        {"type": "track", "event": "big", "userId": "u", "messageId": "big", "properties": {"blob": big}},
        {"type": "track", "event": "small", "userId": "u", "messageId": "small"},
    ]});
    let response = post_json(&server, "/v1/batch", &batch).await;
    assert_eq!(response.status(), StatusCode::OK);
    let events = stored(&server).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, "small");
    let huge: Vec<Value> = (0..20)
        .map(|n| json!({"type": "track", "event": "e", "userId": "u", "messageId": format!("h{n}"), "properties": {"blob": "y".repeat(30 * 1024)}}))
        .collect();
    let response = post_json(
        &server,
        "/v1/batch",
        &json!({"writeKey": key, "batch": huge}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("512000"),
        "{error}"
    );
    assert_eq!(
        stored(&server).await.len(),
        1,
        "nothing of a refused batch is stored"
    );
    server.stop().await;
}

#[tokio::test]
async fn capture_keys_must_exist_and_have_the_ingest_scope() {
    let server = TestServer::postgres().await;
    let (_, query_only) = server.tenant_with_key("readers", &[Scope::Query]).await;
    let event = json!({"type": "track", "event": "e", "userId": "u", "messageId": "k1"});
    let unknown = reqwest::Client::new()
        .post(url(&server, "/v1/track"))
        .header("Authorization", basic("elk_not_a_key"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let missing = post_json(&server, "/v1/track", &event).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(missing.text().await.unwrap().contains("writeKey"));
    let denied = post_json(
        &server,
        "/batch/",
        &json!({"api_key": query_only, "batch": [{"event": "e", "distinct_id": "d"}]}),
    )
    .await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body: Value = denied.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("ingest"),
        "{body}"
    );
    let no_key = post_json(
        &server,
        "/batch/",
        &json!({"batch": [{"event": "e", "distinct_id": "d"}]}),
    )
    .await;
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    assert!(stored(&server).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn posthog_bodies_in_every_sdk_encoding_are_stored_once_per_uuid() {
    let server = TestServer::postgres().await;
    let key = server.api_key.clone();
    let now = chrono::Utc::now().to_rfc3339();
    let batch = json!({"api_key": key, "sent_at": now, "batch": [
        {"event": "clicked", "distinct_id": "d1", "uuid": "ph-1", "timestamp": now, "properties": {"$lib": "posthog-python", "color": "red"}},
        {"event": "$identify", "distinct_id": "d1", "uuid": "ph-2", "properties": {"$set": {"plan": "pro"}, "$anon_distinct_id": "anon"}},
        {"event": "no owner", "uuid": "ph-bad"},
    ]});
    let plain = post_json(&server, "/batch/", &batch).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(plain.json::<Value>().await.unwrap(), json!({"status": 1}));
    // posthog-node: Content-Encoding: gzip.
    let with_header = reqwest::Client::new()
        .post(url(&server, "/batch/"))
        .header("Content-Encoding", "gzip")
        .body(gzip(batch.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(with_header.status(), StatusCode::OK);
    // posthog-js: a gzip body sent as text/plain with no header, the key in each event.
    let js_batch = json!({"batch": [
        {"event": "$pageview", "uuid": "ph-3", "timestamp": now, "properties": {"token": key, "distinct_id": "d2", "$current_url": "https://example.com/", "$session_id": "sess-1"}},
    ], "sent_at": now});
    let gzip_js = reqwest::Client::new()
        .post(url(&server, "/e/?ip=0&ver=1.0"))
        .header("Content-Type", "text/plain")
        .body(gzip(js_batch.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(gzip_js.status(), StatusCode::OK);
    // posthog-js's beacon fallback: data=<base64> as a form.
    let single = json!({"event": "$pageleave", "uuid": "ph-4", "properties": {"token": key, "distinct_id": "d2"}});
    let encoded = base64::engine::general_purpose::STANDARD.encode(single.to_string());
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("data", &encoded)
        .finish();
    let beacon = reqwest::Client::new()
        .post(url(&server, "/i/v0/e/?compression=base64"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), StatusCode::OK);
    let events = stored(&server).await;
    assert_eq!(events.len(), 4, "{events:?}");
    let clicked = by_id(&events, "ph-1");
    assert_eq!(
        (clicked.event_type.as_str(), clicked.user_id.as_str()),
        ("clicked", "d1")
    );
    assert_eq!(properties(clicked)["color"], "red");
    assert_eq!(properties(clicked)["$lib"], "posthog-python");
    assert_eq!(by_id(&events, "ph-2").event_type, "$identify");
    let pageview = by_id(&events, "ph-3");
    assert_eq!(pageview.session_id, "sess-1");
    assert!(
        properties(pageview).get("token").is_none(),
        "the key is not stored"
    );
    assert_eq!(by_id(&events, "ph-4").user_id, "d2");
    server.stop().await;
}

#[tokio::test]
async fn posthog_rejections_and_limits_answer_what_the_sdks_expect() {
    let server = TestServer::postgres().await;
    let key = server.api_key.clone();
    let single = post_json(&server, "/capture/", &json!({"api_key": key, "event": "e"})).await;
    assert_eq!(single.status(), StatusCode::BAD_REQUEST);
    let body: Value = single.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("distinct_id"),
        "{body}"
    );
    let bomb = gzip(&vec![b' '; 30 * 1024 * 1024]);
    let too_large = reqwest::Client::new()
        .post(url(&server, "/e/"))
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let lz64 = reqwest::Client::new()
        .post(url(&server, "/e/?compression=lz64"))
        .body("data=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(lz64.status(), StatusCode::BAD_REQUEST);
    assert!(lz64.text().await.unwrap().contains("lz64"));
    assert!(stored(&server).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn posthog_js_start_up_calls_get_no_flags_and_nothing_enabled() {
    let server = TestServer::postgres().await;
    let flags = post_json(
        &server,
        "/flags/?v=2&config=true",
        &json!({"token": "x", "distinct_id": "d"}),
    )
    .await;
    assert_eq!(flags.status(), StatusCode::OK);
    let flags: Value = flags.json().await.unwrap();
    assert_eq!(flags["featureFlags"], json!({}));
    assert_eq!(flags["flags"], json!({}));
    let decide = post_json(&server, "/decide/?v=3", &json!({})).await;
    assert_eq!(decide.status(), StatusCode::OK);
    let config: Value = reqwest::get(url(&server, "/array/phc_test/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["sessionRecording"], json!(false));
    assert_eq!(config["hasFeatureFlags"], json!(false));
    let script = reqwest::get(url(&server, "/array/phc_test/config.js"))
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script
            .text()
            .await
            .unwrap()
            .contains("_POSTHOG_REMOTE_CONFIG[\"phc_test\"]")
    );
    let hostile = reqwest::get(url(&server, "/array/a%22b/config.js"))
        .await
        .unwrap();
    assert_eq!(hostile.status(), StatusCode::NOT_FOUND);
    let settings: Value = reqwest::get(url(&server, "/v1/projects/wk/settings"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let segment = &settings["integrations"]["Segment.io"];
    assert_eq!(segment["apiHost"], format!("{}/v1", server.http_addr));
    assert_eq!(segment["protocol"], "http");
    server.stop().await;
}

#[tokio::test]
async fn overload_answers_429_with_retry_after_through_both_doors_and_stores_what_was_acknowledged()
{
    let server = TestServer::postgres_with_a_small_queue().await;
    let mut requests = Vec::new();
    for request_number in 0..12 {
        let key = server.api_key.clone();
        let http = url(
            &server,
            if request_number % 2 == 0 {
                "/v1/batch"
            } else {
                "/batch/"
            },
        );
        requests.push(tokio::spawn(async move {
            let body = if request_number % 2 == 0 {
                let batch: Vec<Value> = (0..1500)
                    .map(|n| json!({"type": "track", "event": "e", "userId": "u", "messageId": format!("s{request_number}-{n}")}))
                    .collect();
                json!({"writeKey": key, "batch": batch})
            } else {
                let batch: Vec<Value> = (0..2000)
                    .map(|n| json!({"event": "e", "distinct_id": "d", "uuid": format!("p{request_number}-{n}")}))
                    .collect();
                json!({"api_key": key, "batch": batch})
            };
            let response = reqwest::Client::new().post(http).json(&body).send().await.unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            (request_number, response.status(), retry_after)
        }));
    }
    let mut acknowledged = 0;
    let mut refused = 0;
    for request in requests {
        let (request_number, status, retry_after) = request.await.unwrap();
        match status {
            StatusCode::OK => acknowledged += if request_number % 2 == 0 { 1500 } else { 2000 },
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(retry_after.is_some(), "429 without Retry-After");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        refused > 0,
        "a 2000-event queue cannot take 12 concurrent batches within 1 ms"
    );
    let stored = stored(&server).await.len();
    assert!(
        stored >= acknowledged,
        "{stored} stored < {acknowledged} acknowledged"
    );
    server.stop().await;
}

#[tokio::test]
async fn capture_works_on_the_sqlite_store_too() {
    let directory = tempfile::tempdir().unwrap();
    let server = TestServer::sqlite(directory.path()).await;
    let response = post_json(&server, "/v1/batch", &segment_batch(&server.api_key)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let posthog = post_json(&server, "/batch/", &json!({"api_key": server.api_key, "batch": [{"event": "e", "distinct_id": "d", "uuid": "sq-1"}]})).await;
    assert_eq!(posthog.status(), StatusCode::OK);
    assert_eq!(stored(&server).await.len(), 7);
    server.stop().await;
}
