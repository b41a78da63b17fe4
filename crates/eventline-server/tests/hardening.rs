//! Issue #12: no client, authenticated or not, can pin the server's connections or
//! memory, and every bad input is a 4xx (or INVALID_ARGUMENT) naming its field. Each test
//! talks to the real listeners: raw TCP for silent and trickling clients, raw HTTP/2
//! frames for partial gRPC messages, reqwest and tonic for the rest.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{ADMIN_TOKEN, TestServer};
use eventline_proto::v1::{self, IngestStatus, Scope};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

/// Long enough for anything the server must do at once, on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(15);

fn url(server: &TestServer, path: &str) -> String {
    format!("http://{}{path}", server.http_addr)
}

/// Reads until the peer closes; fails the test if it does not within `PATIENCE`.
async fn closed_by_server(mut stream: TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    received
}

async fn healthz_answers(server: &TestServer) {
    let response = reqwest::Client::new()
        .get(url(server, "/healthz"))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("a well-behaved client's /healthz is answered");
    assert_eq!(response.status(), 200);
}

async fn grpc_health_answers(server: &TestServer) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let answer = tokio::time::timeout(
        PATIENCE,
        health.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .expect("grpc.health.v1/Check answers")
    .expect("health check");
    assert_eq!(answer.into_inner().status, 1);
}

#[tokio::test]
async fn silent_connections_are_closed_and_cannot_hold_the_http_port() {
    let server = TestServer::postgres_with(|config| {
        config.http.max_connections = 4;
        config.http.header_read_timeout_ms = 300;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(server.http_addr).await.unwrap());
    }
    healthz_answers(&server).await;
    for stream in silent {
        assert!(closed_by_server(stream).await.is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn silent_connections_are_closed_and_cannot_hold_the_grpc_port() {
    let server = TestServer::postgres_with(|config| {
        config.grpc.max_connections = 4;
        config.grpc.first_byte_timeout_ms = 300;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    grpc_health_answers(&server).await;
    for stream in silent {
        assert!(closed_by_server(stream).await.is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::postgres_with(|config| config.http.idle_timeout_ms = 300).await;
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: eventline\r\n\r\n")
        .await
        .unwrap();
    let received = closed_by_server(stream).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_grpc_connection_is_closed_but_a_live_stream_is_not() {
    let server = TestServer::postgres_with(|config| config.grpc.idle_timeout_ms = 300).await;
    // A tail stays open past the idle timeout: its request is active.
    let mut query = server.query(&server.api_key).await;
    let mut tail = query
        .tail_events(v1::TailEventsRequest::default())
        .await
        .expect("tail starts")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut ingest = server.ingest(&server.api_key).await;
    ingest
        .track(v1::TrackRequest {
            event: Some(v1::Event {
                event_type: "after_idle".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("track");
    let live = tokio::time::timeout(PATIENCE, tail.message())
        .await
        .expect("the tail delivers")
        .expect("tail message")
        .expect("tail open");
    assert_eq!(live.event.unwrap().event_type, "after_idle");
    drop(tail);
    // A raw HTTP/2 connection that sends its preface and nothing else is closed.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    closed_by_server(stream).await;
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_rest_body_is_answered_408_after_the_body_timeout() {
    let server = TestServer::postgres_with(|config| config.http.body_read_timeout_ms = 300).await;
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    let head = format!(
        "POST /v1/events:batch HTTP/1.1\r\nhost: eventline\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"events\":[",
        server.api_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let received = closed_by_server(stream).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_rest_request_with_a_wrong_key_is_refused_before_its_body_is_read() {
    let server = TestServer::postgres().await;
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    // Announces 19 MB and sends none of it: only an answer from the headers can come back.
    stream
        .write_all(
            b"POST /v1/events:batch HTTP/1.1\r\nhost: eventline\r\nx-api-key: elk_wrong_key_000000000000\r\ncontent-type: application/json\r\ncontent-length: 19000000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 12];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    server.stop().await;
}

/// One gRPC call over raw HTTP/2: the headers, then `data` as sent (a message prefix may
/// announce more than is sent), the stream left open. Returns the call's grpc-status.
async fn raw_grpc_status(server: &TestServer, path: &str, key: &str, data: Bytes) -> Option<u32> {
    raw_grpc_call(server, path, key, data, false).await
}

/// As [`raw_grpc_status`], ending the request stream after `data` when `end_stream`.
async fn raw_grpc_call(
    server: &TestServer,
    path: &str,
    key: &str,
    data: Bytes,
    end_stream: bool,
) -> Option<u32> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{path}", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", key)
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.reserve_capacity(data.len());
    send.send_data(data, end_stream).unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("the server answers the call")
        .expect("response headers");
    let status_of = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
    };
    if let Some(status) = status_of(response.headers()) {
        return Some(status);
    }
    let mut body = response.into_body();
    while let Some(chunk) = tokio::time::timeout(PATIENCE, body.data())
        .await
        .expect("body")
    {
        if chunk.is_err() {
            break;
        }
    }
    let trailers = tokio::time::timeout(PATIENCE, body.trailers())
        .await
        .expect("trailers")
        .ok()
        .flatten()?;
    status_of(&trailers)
}

/// A gRPC message prefix announcing `announced` bytes, followed by `sent` of them.
fn partial_message(announced: u32, sent: usize) -> Bytes {
    let mut data = vec![0u8];
    data.extend_from_slice(&announced.to_be_bytes());
    data.extend(std::iter::repeat_n(0x0a, sent));
    Bytes::from(data)
}

#[tokio::test]
async fn a_partial_grpc_message_without_a_valid_key_is_refused_before_it_is_read() {
    let server = TestServer::postgres().await;
    let status = raw_grpc_status(
        &server,
        "/eventline.v1.IngestService/IngestBatch",
        "elk_wrong_key_000000000000",
        partial_message(10 * 1024 * 1024, 64 * 1024),
    )
    .await;
    assert_eq!(status, Some(Code::Unauthenticated as u32));
    server.stop().await;
}

#[tokio::test]
async fn a_partial_grpc_message_with_a_key_times_out() {
    let server = TestServer::postgres_with(|config| config.grpc.message_timeout_ms = 300).await;
    let status = raw_grpc_status(
        &server,
        "/eventline.v1.IngestService/IngestBatch",
        &server.api_key,
        partial_message(10 * 1024 * 1024, 64 * 1024),
    )
    .await;
    assert_eq!(status, Some(Code::DeadlineExceeded as u32));
    server.stop().await;
}

#[tokio::test]
async fn partial_messages_past_the_memory_budget_are_refused_with_resource_exhausted() {
    let budget = eventline_core::limits::MAX_MESSAGE_BYTES as u64;
    let server = TestServer::postgres_with(|config| {
        config.limits.request_memory_bytes = budget;
        config.grpc.message_timeout_ms = 60_000;
    })
    .await;
    let path = "/eventline.v1.IngestService/IngestBatch";
    // The first call holds 3/4 of the budget with a message it never finishes.
    let holder = {
        let key = server.api_key.clone();
        let addr = server.addr;
        let data = partial_message(19 * 1024 * 1024, (budget as usize) * 3 / 4);
        tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (client, connection) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(connection);
            let mut client = client.ready().await.unwrap();
            let request = http::Request::builder()
                .method("POST")
                .uri(format!("http://{addr}{path}"))
                .header("content-type", "application/grpc")
                .header("x-api-key", key)
                .body(())
                .unwrap();
            let (response, mut send) = client.send_request(request, false).unwrap();
            let mut remaining = data;
            while !remaining.is_empty() {
                send.reserve_capacity(remaining.len());
                let capacity = futures::future::poll_fn(|context| send.poll_capacity(context))
                    .await
                    .unwrap()
                    .unwrap();
                let chunk = remaining.split_to(capacity.min(remaining.len()));
                send.send_data(chunk, false).unwrap();
            }
            let _keep_open = (response, send);
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
    };
    // Wait until the server holds it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = server.metrics_text().await;
        let in_use = metrics
            .lines()
            .find_map(|line| line.strip_prefix("eventline_request_memory_bytes "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if in_use >= (budget as f64) * 0.7 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first message never filled the budget ({in_use} bytes)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = raw_grpc_status(
        &server,
        path,
        &server.api_key,
        partial_message(10 * 1024 * 1024, (budget as usize) / 2),
    )
    .await;
    assert_eq!(status, Some(Code::ResourceExhausted as u32));
    holder.abort();
    server.stop().await;
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let server = TestServer::postgres().await;
    // TrackRequest.event (field 1) holding event_type (field 2) with bytes that are not UTF-8.
    let event = [0x12, 0x02, 0xff, 0xfe];
    let mut message = vec![0x0a, event.len() as u8];
    message.extend_from_slice(&event);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let path = "/eventline.v1.IngestService/Track";
    let status = raw_grpc_status(&server, path, &server.api_key, Bytes::from(framed)).await;
    assert_eq!(status, Some(Code::InvalidArgument as u32));
    // Truncated: the prefix announces 10 bytes, 3 arrive, then the stream ends.
    let truncated = Bytes::from_static(&[0, 0, 0, 0, 10, 0x0a, 0x01, 0x12]);
    let status = raw_grpc_call(&server, path, &server.api_key, truncated, true).await;
    assert_eq!(status, Some(Code::InvalidArgument as u32));
    server.stop().await;
}

async fn post_json(server: &TestServer, path: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url(server, path))
        .header("x-api-key", &server.api_key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn violation_field(error: &Value) -> String {
    error["details"][0]["field_violations"][0]["field"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_batch_with_an_unparseable_timestamp_stores_the_good_events_and_names_the_bad_one() {
    let server = TestServer::postgres().await;
    let body = json!({"events": [
        {"event_type": "good", "event_id": "g1"},
        {"event_type": "bad", "event_id": "b1", "timestamp": "yesterday"},
        {"event_type": 5, "event_id": "b2"},
        {"event_type": "good", "event_id": "g2"},
    ]});
    let (status, answer) = post_json(&server, "/v1/events:batch", &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], "2", "{answer}");
    assert_eq!(answer["rejected"], "2", "{answer}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|result| result["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "INGEST_STATUS_ACCEPTED",
            "INGEST_STATUS_REJECTED",
            "INGEST_STATUS_REJECTED",
            "INGEST_STATUS_ACCEPTED"
        ]
    );
    for (position, result) in results.iter().enumerate() {
        assert_eq!(result["index"], position.to_string());
    }
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("events[1].timestamp:"),
        "{answer}"
    );
    assert_eq!(results[1]["event_id"], "b1");
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .starts_with("events[2].event_type:"),
        "{answer}"
    );
    assert_eq!(results[3]["event_id"], "g2");
    let mut query = server.query(&server.api_key).await;
    let stored = query
        .count_events(v1::CountEventsRequest {
            start_time: Some(pbjson_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(stored, 2);
    server.stop().await;
}

#[tokio::test]
async fn json_type_errors_and_bad_query_parameters_name_their_field() {
    let server = TestServer::postgres().await;
    let cases = [
        (r#"{"event_type":5}"#, "event.event_type"),
        (
            r#"{"event_type":"x","properties":"a string"}"#,
            "event.properties",
        ),
        (
            r#"{"event_type":"x","timestamp":"yesterday"}"#,
            "event.timestamp",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = post_json(&server, "/v1/events", body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(violation_field(&error), field, "{body}: {error}");
    }
    let gets = [
        ("/v1/stats/count?start_time=notatime", "start_time"),
        ("/v1/stats/timeseries?interval=99", "interval"),
        (
            "/v1/stats/timeseries?interval=INTERVAL_FORTNIGHT",
            "interval",
        ),
        ("/v1/events?page_size=many", "page_size"),
    ];
    for (path, field) in gets {
        let response = reqwest::Client::new()
            .get(url(&server, path))
            .header("x-api-key", &server.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(violation_field(&error), field, "{path}: {error}");
    }
    let tenant_id = server.store.list_tenants().await.unwrap()[0]
        .tenant_id
        .to_string();
    let response = reqwest::Client::new()
        .post(url(&server, &format!("/v1/tenants/{tenant_id}/keys")))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"scopes":["SCOPE_INGEST","SCOPE_EVERYTHING"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(violation_field(&error), "scopes[1]", "{error}");
    server.stop().await;
}

#[tokio::test]
async fn a_query_parameter_cannot_override_a_path_variable() {
    let server = TestServer::postgres().await;
    let response = reqwest::Client::new()
        .get(url(&server, "/v1/users/u1/events?user_id=u2"))
        .header("x-api-key", &server.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(violation_field(&error), "user_id", "{error}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_claims_gzip_but_is_not_is_400_not_413() {
    let server = TestServer::postgres().await;
    let response = reqwest::Client::new()
        .post(url(&server, "/v1/events"))
        .header("x-api-key", &server.api_key)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(r#"{"event_type":"plain"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(violation_field(&error), "body", "{error}");
    server.stop().await;
}

#[tokio::test]
async fn a_bidi_batch_over_the_limit_is_refused_alone_and_the_stream_goes_on() {
    let server = TestServer::postgres().await;
    let mut ingest = server.ingest(&server.api_key).await;
    let batch = |sequence: u64, count: usize| v1::IngestBidiRequest {
        sequence,
        events: (0..count)
            .map(|index| v1::Event {
                event_id: format!("s{sequence}-{index}"),
                event_type: "bulk".into(),
                ..Default::default()
            })
            .collect(),
        sent_at: None,
    };
    let requests = futures::stream::iter([batch(1, 2001), batch(2, 3)]);
    let mut acks = ingest.ingest_bidi(requests).await.unwrap().into_inner();
    let mut by_sequence = std::collections::HashMap::new();
    for _ in 0..2 {
        let ack = tokio::time::timeout(PATIENCE, acks.message())
            .await
            .expect("ack")
            .expect("the stream goes on")
            .expect("an ack");
        by_sequence.insert(ack.sequence, ack);
    }
    let refused = &by_sequence[&1];
    assert_eq!(refused.results.len(), 2001);
    assert!(refused.results.iter().all(|result| {
        result.status == IngestStatus::Rejected as i32 && result.error.starts_with("events:")
    }));
    let stored = &by_sequence[&2];
    assert!(
        stored
            .results
            .iter()
            .all(|result| result.status == IngestStatus::Accepted as i32)
    );
    server.stop().await;
}

#[tokio::test]
async fn page_tokens_and_export_cursors_are_refused_to_another_tenant() {
    let server = TestServer::postgres().await;
    let mut ingest = server.ingest(&server.api_key).await;
    ingest
        .ingest_batch(v1::IngestBatchRequest {
            events: (0..5)
                .map(|index| v1::Event {
                    event_id: format!("e{index}"),
                    event_type: "seen".into(),
                    ..Default::default()
                })
                .collect(),
            sent_at: None,
        })
        .await
        .unwrap();
    let mut admin = server.admin(ADMIN_TOKEN).await;
    let other = admin
        .create_tenant(v1::CreateTenantRequest {
            name: "other".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let other_key = admin
        .create_api_key(v1::CreateApiKeyRequest {
            tenant_id: other.tenant_id,
            scopes: vec![Scope::Query as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let mut mine = server.query(&server.api_key).await;
    let page = mine
        .list_events(v1::ListEventsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let mut theirs = server.query(&other_key).await;
    let refused = theirs
        .list_events(v1::ListEventsRequest {
            page_size: 2,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("page_token"), "{refused:?}");
    let mut export = mine
        .export_events(v1::ExportEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = export.message().await.unwrap().expect("an export message");
    let refused = theirs
        .export_events(v1::ExportEventsRequest {
            cursor: first.cursor,
            ..Default::default()
        })
        .await;
    let refused = match refused {
        Err(status) => status,
        Ok(stream) => stream.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("cursor"), "{refused:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_database_refusing_connections_is_unavailable_and_probes_answer_at_once() {
    let url = eventline_store::testing::fresh_postgres_database().await;
    let server = TestServer::postgres_at(url.clone(), |_| {}).await;
    let database = url.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(eventline_store::testing::postgres_admin_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&admin)
        .await
        .unwrap();
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    // Readiness turns false within a few checks, and every probe answers within 1 s.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ready = probe
            .get(url_of(&server, "/readyz"))
            .send()
            .await
            .expect("/readyz answers within a probe's 1 s");
        if ready.status() == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never turned false"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let healthz = probe.get(url_of(&server, "/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let mut ingest = server.ingest(&server.api_key).await;
    let refused = ingest
        .track(v1::TrackRequest {
            event: Some(v1::Event {
                event_type: "during_outage".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    use tonic_types::StatusExt;
    assert!(refused.get_details_retry_info().is_some());
    let rest = probe
        .post(url_of(&server, "/v1/events"))
        .header("x-api-key", &server.api_key)
        .body(r#"{"event_type":"during_outage"}"#)
        .send()
        .await
        .expect("REST fails fast");
    assert_eq!(rest.status(), 503);
    assert!(rest.headers().contains_key("retry-after"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS true"
    )))
    .execute(&admin)
    .await
    .unwrap();
    server.stop().await;
}

fn url_of(server: &TestServer, path: &str) -> String {
    url(server, path)
}

#[tokio::test]
async fn listings_break_timestamp_ties_by_bytes_on_an_icu_database_as_on_sqlite() {
    use sqlx::Connection;
    let admin_url = eventline_store::testing::postgres_admin_url();
    let name = format!("eventline_test_icu_{}", uuid::Uuid::new_v4().simple());
    let mut connection = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    )))
    .execute(&mut connection)
    .await
    .expect("PostgreSQL with ICU creates an ICU-collated database");
    let url = format!(
        "{}/{name}",
        admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base)
    );
    let postgres = TestServer::postgres_at(url, |_| {}).await;
    let directory = tempfile::tempdir().unwrap();
    let sqlite = TestServer::sqlite(directory.path()).await;
    let ids = ["a1", "B1", "_1", "b0", "A2"];
    let mut orders = Vec::new();
    for server in [&postgres, &sqlite] {
        let mut ingest = server.ingest(&server.api_key).await;
        ingest
            .ingest_batch(v1::IngestBatchRequest {
                events: ids
                    .iter()
                    .map(|id| v1::Event {
                        event_id: (*id).into(),
                        event_type: "tie".into(),
                        timestamp: Some(pbjson_types::Timestamp {
                            seconds: 1_780_000_000,
                            nanos: 0,
                        }),
                        ..Default::default()
                    })
                    .collect(),
                sent_at: None,
            })
            .await
            .unwrap();
        let mut query = server.query(&server.api_key).await;
        let listed: Vec<String> = query
            .list_events(v1::ListEventsRequest {
                start_time: Some(pbjson_types::Timestamp {
                    seconds: 1_779_999_000,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .into_iter()
            .map(|event| event.event_id)
            .collect();
        orders.push(listed);
    }
    let mut ascending: Vec<&str> = ids.to_vec();
    ascending.sort_unstable();
    let descending: Vec<&str> = ascending.iter().rev().copied().collect();
    assert_eq!(orders[0], orders[1], "PostgreSQL (ICU) and SQLite agree");
    assert!(
        orders[0] == ascending || orders[0] == descending,
        "ties come back in byte order: {:?}",
        orders[0]
    );
    postgres.stop().await;
    sqlite.stop().await;
}
