//! Outbound streams end to end (README "Streams"): subscriptions created over REST, events
//! ingested over REST, and what arrives at a real webhook receiver started in the test
//! and at the real NATS JetStream of the machine (127.0.0.1:4222): every wanted event,
//! in commit order, signed, resumed after a restart, paused on a failing receiver and
//! resumed on request.

mod common;

use std::time::Duration;

use common::{
    ADMIN_TOKEN, TestServer,
    webhook::{Receiver, assert_signed, eventually},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const NATS_URL: &str = "nats://127.0.0.1:4222";

async fn subscribe(server: &TestServer, tenant: &str, request: Value) -> Value {
    let (status, body) = server
        .rest(
            Method::POST,
            &format!("/v1/tenants/{tenant}/subscriptions"),
            ADMIN_TOKEN,
            Some(request),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn subscriptions(server: &TestServer, tenant: &str) -> Vec<Value> {
    let (status, body) = server
        .rest(
            Method::GET,
            &format!("/v1/tenants/{tenant}/subscriptions"),
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["subscriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sends events `ids` (each `id:type`) in one REST batch.
async fn send(server: &TestServer, key: &str, ids: &[&str]) {
    let events: Vec<Value> = ids
        .iter()
        .map(|id_and_type| {
            let (id, event_type) = id_and_type.split_once(':').unwrap();
            json!({"event_id": id, "event_type": event_type, "user_id": "u1",
                   "properties": {"n": id}})
        })
        .collect();
    let (status, body) = server
        .rest(
            Method::POST,
            "/v1/events:batch",
            key,
            Some(json!({ "events": events })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The event ids of every batch the receiver got, first sight only, in arrival order.
fn delivered_ids(receiver: &Receiver) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for request in receiver.received() {
        for event in request.json()["events"].as_array().unwrap() {
            let id = event["event_id"].as_str().unwrap().to_owned();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

fn fast(config: &mut eventline_server::Config) {
    config.streams.interval_ms = 50;
    config.streams.batch_events = 3;
    config.streams.max_attempts = 4;
    config.streams.nats_url = Some(NATS_URL.into());
}

async fn webhook_gets_wanted_events_in_commit_order_signed_and_resumes_after_a_restart(
    server: TestServer,
    restart: impl AsyncFnOnce(TestServer) -> TestServer,
) {
    // The first two attempts fail: the dispatcher retries the same batch.
    let receiver = Receiver::start(&[500, 503]).await;
    let tenant = server.first_tenant_id().await;
    let key = server.api_key.clone();
    let created = subscribe(
        &server,
        &tenant,
        json!({"webhook": {"url": receiver.url}, "event_types": ["signup", "buy"]}),
    )
    .await;
    let secret = created["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(
        created["subscription"]["state"], "SUBSCRIPTION_STATE_ACTIVE",
        "{created}"
    );
    assert!(
        created["subscription"].get("secret").is_none(),
        "never listed again"
    );

    send(
        &server,
        &key,
        &["a1:signup", "a2:view", "a3:buy", "a4:signup"],
    )
    .await;
    send(&server, &key, &["b1:view", "b2:buy"]).await;
    send(
        &server,
        &key,
        &["c1:signup", "c2:signup", "c3:view", "c4:buy"],
    )
    .await;
    let wanted = ["a1", "a3", "a4", "b2", "c1", "c2", "c4"];
    eventually("every wanted event at the webhook", || async {
        (delivered_ids(&receiver).len() >= wanted.len()).then_some(())
    })
    .await;
    assert_eq!(delivered_ids(&receiver), wanted, "commit order, no view");
    let received = receiver.received();
    for request in &received {
        assert_signed(&secret, request);
    }
    // The retried batch kept its webhook-id, so a receiver can drop the repeat.
    assert_eq!(received[0].id, received[1].id);
    assert_eq!(received[1].id, received[2].id);
    let listed = eventually("the position stored", || async {
        let listed = subscriptions(&server, &tenant).await;
        (listed[0]["events_delivered"] == json!("7")).then_some(listed)
    })
    .await;
    assert_eq!(listed[0]["state"], "SUBSCRIPTION_STATE_ACTIVE");

    // After a restart delivery goes on from the stored position: nothing twice.
    let requests_before = received.len();
    let server = restart(server).await;
    send(&server, &key, &["d1:buy", "d2:view"]).await;
    eventually("the event sent after the restart", || async {
        delivered_ids(&receiver)
            .contains(&"d1".to_owned())
            .then_some(())
    })
    .await;
    let after: Vec<String> = receiver.received()[requests_before..]
        .iter()
        .flat_map(|request| {
            request.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| event["event_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(after, ["d1"]);
    server.stop().await;
}

#[tokio::test]
async fn webhook_gets_wanted_events_in_commit_order_signed_and_resumes_after_a_restart_on_postgres()
{
    let url = eventline_store::testing::fresh_postgres_database().await;
    let server = TestServer::postgres_at(url.clone(), fast).await;
    let key = server.api_key.clone();
    webhook_gets_wanted_events_in_commit_order_signed_and_resumes_after_a_restart(
        server,
        async move |server: TestServer| {
            server.stop().await;
            let mut restarted = TestServer::postgres_at(url, fast).await;
            restarted.api_key = key;
            restarted
        },
    )
    .await;
}

#[tokio::test]
async fn webhook_gets_wanted_events_in_commit_order_signed_and_resumes_after_a_restart_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let server = TestServer::sqlite_with(directory.path(), fast).await;
    let key = server.api_key.clone();
    let path = directory.path().to_path_buf();
    webhook_gets_wanted_events_in_commit_order_signed_and_resumes_after_a_restart(
        server,
        async move |server: TestServer| {
            server.stop().await;
            let mut restarted = TestServer::sqlite_with(&path, fast).await;
            restarted.api_key = key;
            restarted
        },
    )
    .await;
}

#[tokio::test]
async fn a_refusing_receiver_pauses_the_subscription_with_its_error_until_resumed() {
    let server = TestServer::postgres_with(fast).await;
    // 410 is final: no retry, the subscription pauses at once.
    let receiver = Receiver::start(&[410]).await;
    let tenant = server.first_tenant_id().await;
    let key = server.api_key.clone();
    let created = subscribe(&server, &tenant, json!({"webhook": {"url": receiver.url}})).await;
    let id = created["subscription"]["subscription_id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&server, &key, &["e1:signup", "e2:buy"]).await;
    let paused = eventually("the subscription paused", || async {
        let listed = subscriptions(&server, &tenant).await;
        (listed[0]["state"] == "SUBSCRIPTION_STATE_PAUSED").then_some(listed[0].clone())
    })
    .await;
    assert!(
        paused["last_error"].as_str().unwrap().contains("410"),
        "{paused}"
    );
    assert_eq!(receiver.received().len(), 1, "a 4xx is never retried");
    // While paused nothing is sent; resumed, the failed batch and the rest go out.
    send(&server, &key, &["e3:signup"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
    let (status, body) = server
        .rest(
            Method::POST,
            &format!("/v1/tenants/{tenant}/subscriptions/{id}:resume"),
            ADMIN_TOKEN,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["subscription"]["last_error"], "", "{body}");
    eventually("the batch delivered after resuming", || async {
        (delivered_ids(&receiver) == ["e1", "e2", "e3"]).then_some(())
    })
    .await;

    // Bad input names its field; deleting stops it.
    for (request, field) in [
        (json!({"webhook": {"url": "ftp://x"}}), "webhook.url"),
        (
            json!({"webhook": {"url": "mailto:ops@example.com"}}),
            "webhook.url",
        ),
        (json!({"nats": {"subject": "a.>"}}), "nats.subject"),
        (json!({}), "sink"),
        (
            json!({"webhook": {"url": receiver.url}, "event_types": [""]}),
            "event_types[0]",
        ),
    ] {
        let (status, body) = server
            .rest(
                Method::POST,
                &format!("/v1/tenants/{tenant}/subscriptions"),
                ADMIN_TOKEN,
                Some(request),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    let (status, _) = server
        .rest(
            Method::DELETE,
            &format!("/v1/tenants/{tenant}/subscriptions/{id}"),
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(subscriptions(&server, &tenant).await.is_empty());
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("eventline_stream_subscriptions_paused_total 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn nats_jetstream_gets_history_and_new_events_in_commit_order_each_with_its_id() {
    let client = async_nats::connect(NATS_URL).await.unwrap_or_else(|error| {
        panic!(
            "NATS with JetStream must run on {NATS_URL} for this test ({error}); start it with \
             `nats-server -a 127.0.0.1 -p 4222 -js`"
        )
    });
    let jetstream = async_nats::jetstream::new(client);
    let name = format!("EVENTLINE_TEST_{}", uuid::Uuid::now_v7().simple());
    let subject = format!("eventline.test.{name}");
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .expect("create a JetStream stream");

    let server = TestServer::postgres_with(fast).await;
    let tenant = server.first_tenant_id().await;
    let key = server.api_key.clone();
    // History first: replay_history delivers what was stored before the subscription.
    send(&server, &key, &["h1:signup", "h2:view"]).await;
    subscribe(
        &server,
        &tenant,
        json!({"nats": {"subject": subject}, "replay_history": true}),
    )
    .await;
    send(&server, &key, &["n1:buy", "n2:signup", "n3:view", "n4:buy"]).await;
    let expected = ["h1", "h2", "n1", "n2", "n3", "n4"];
    eventually("every event in the JetStream stream", || async {
        let info = stream.get_info().await.unwrap();
        (info.state.messages >= expected.len() as u64).then_some(())
    })
    .await;
    let mut got = Vec::new();
    for sequence in 1..=stream.get_info().await.unwrap().state.messages {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        let id = event["event_id"].as_str().unwrap().to_owned();
        assert_eq!(
            message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|value| value.as_str().to_owned()),
            Some(id.clone()),
            "each message carries its event id for JetStream's dedupe"
        );
        got.push(id);
    }
    assert_eq!(got, expected, "each event once, in commit order");
    let listed = eventually("the position stored", || async {
        let listed = subscriptions(&server, &tenant).await;
        (listed[0]["events_delivered"] == json!("6")).then_some(listed)
    })
    .await;
    assert_eq!(listed[0]["nats"]["subject"], subject.as_str());
    jetstream.delete_stream(&name).await.unwrap();

    // A subject that no stream captures pauses the subscription with the reason.
    subscribe(
        &server,
        &tenant,
        json!({"nats": {"subject": format!("eventline.nobody.{name}")}}),
    )
    .await;
    send(&server, &key, &["x1:buy"]).await;
    let paused = eventually("the subscription without a stream paused", || async {
        subscriptions(&server, &tenant)
            .await
            .into_iter()
            .find(|subscription| subscription["state"] == "SUBSCRIPTION_STATE_PAUSED")
    })
    .await;
    assert!(
        paused["last_error"].as_str().unwrap().contains("NATS"),
        "{paused}"
    );
    server.stop().await;
}
