//! Alerts end to end (README "Alerts"): rules created over REST, events ingested, the
//! evaluator run (through `AlertEvaluator::evaluate_at`, or the server's own background
//! task), and the notifications checked at a real HTTP receiver started in the test:
//! their Standard Webhooks signature, their body, retries and the delivery log.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    ADMIN_TOKEN, TestServer,
    webhook::{Receiver, assert_signed, eventually},
};
use eventline_core::query::BucketWidth;
use eventline_server::{alerts::AlertEvaluator, webhook::RetryPolicy};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    credential: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    server.rest(method, path, credential, body).await
}

async fn tenant_id(server: &TestServer) -> String {
    server.first_tenant_id().await
}

/// Creates a rule over REST: its id and signing secret.
async fn create_rule(server: &TestServer, tenant: &str, rule: Value) -> (String, String) {
    let (status, body) = call(
        server,
        reqwest::Method::POST,
        &format!("/v1/tenants/{tenant}/alerts"),
        ADMIN_TOKEN,
        Some(json!({ "rule": rule })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["alert"]["state"], "ALERT_STATE_RESOLVED");
    (
        body["alert"]["rule"]["rule_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        body["webhook_secret"].as_str().unwrap().to_owned(),
    )
}

async fn list_alerts(server: &TestServer, tenant: &str) -> Vec<Value> {
    let (status, body) = call(
        server,
        reqwest::Method::GET,
        &format!("/v1/tenants/{tenant}/alerts"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["alerts"].as_array().cloned().unwrap_or_default()
}

async fn alert(server: &TestServer, tenant: &str, rule_id: &str) -> Value {
    let alerts = list_alerts(server, tenant).await;
    alerts
        .into_iter()
        .find(|alert| alert["rule"]["rule_id"] == rule_id)
        .expect("the rule is listed")
}

async fn deliveries(server: &TestServer, tenant: &str, rule_id: &str) -> Vec<Value> {
    let (status, body) = call(
        server,
        reqwest::Method::GET,
        &format!("/v1/tenants/{tenant}/alerts/{rule_id}/deliveries"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

/// Sends `count` events of `event_type` at `at` (spread over its second).
async fn send(server: &TestServer, event_type: &str, count: usize, at: DateTime<Utc>) {
    let events: Vec<Value> = (0..count)
        .map(|index| {
            json!({
                "event_type": event_type,
                "user_id": format!("u{}", index % 7),
                "timestamp": (at + chrono::Duration::milliseconds(index as i64 % 900)).to_rfc3339(),
            })
        })
        .collect();
    for chunk in events.chunks(1000) {
        server.rest_batch(Value::from(chunk.to_vec())).await;
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(5),
    }
}

/// A server whose own evaluation is off, so the test decides when and at what time.
async fn server_without_background_evaluation() -> TestServer {
    TestServer::postgres_with(|config| config.alerts.evaluate_interval_ms = 0).await
}

fn threshold_rule(url: &str, event_type: &str, threshold: f64) -> Value {
    json!({
        "name": format!("too many {event_type}"),
        "window_seconds": 300,
        "threshold": {
            "event_type": event_type,
            "comparison": "COMPARISON_GREATER_THAN",
            "threshold": threshold,
        },
        "webhook_url": url,
    })
}

async fn threshold_rule_fires_then_resolves_with_two_signed_notifications(server: TestServer) {
    let receiver = Receiver::start(&[]).await;
    let tenant = tenant_id(&server).await;
    let (rule_id, secret) = create_rule(
        &server,
        &tenant,
        threshold_rule(&receiver.url, "error", 2.0),
    )
    .await;
    let evaluator = AlertEvaluator::new(server.store.clone(), fast_retries());
    let now = Utc::now();
    let window_end = BucketWidth::Minute.floor(now);
    send(
        &server,
        "error",
        3,
        window_end - chrono::Duration::seconds(90),
    )
    .await;
    send(
        &server,
        "checkout",
        5,
        window_end - chrono::Duration::seconds(90),
    )
    .await;

    let pass = evaluator.evaluate_at(now).await.unwrap();
    assert_eq!((pass.evaluated, pass.transitions), (1, 1));
    let again = evaluator.evaluate_at(now).await.unwrap();
    assert_eq!(again.evaluated, 0, "a minute is evaluated once");

    let firing = receiver.wait_for(1).await;
    assert_signed(&secret, &firing[0]);
    let body = firing[0].json();
    assert_eq!(body["type"], "alert.firing");
    assert_eq!(body["data"]["rule_id"], rule_id.as_str());
    assert_eq!(body["data"]["state"], "firing");
    assert_eq!(body["data"]["kind"], "threshold");
    assert_eq!(body["data"]["event_type"], "error");
    assert_eq!(body["data"]["value"], 3.0);
    assert_eq!(body["data"]["comparison"], ">");
    assert_eq!(body["data"]["threshold"], 2.0);
    assert_eq!(body["data"]["window_seconds"], 300);
    let window_end_text = window_end.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(body["data"]["window_end"], window_end_text.as_str());

    eventually("the firing delivery recorded", || async {
        let log = deliveries(&server, &tenant, &rule_id).await;
        (log.first()?["outcome"] == "ALERT_DELIVERY_OUTCOME_DELIVERED").then_some(())
    })
    .await;
    let listed = alert(&server, &tenant, &rule_id).await;
    assert_eq!(listed["state"], "ALERT_STATE_FIRING", "{listed}");
    assert_eq!(listed["last_value"], 3.0);
    let since: DateTime<Utc> = listed["state_since"].as_str().unwrap().parse().unwrap();
    assert_eq!(since, window_end);

    // Six minutes on, the errors have left the window: the rule resolves.
    let later = now + chrono::Duration::minutes(6);
    let pass = evaluator.evaluate_at(later).await.unwrap();
    assert_eq!(pass.transitions, 1);
    let both = receiver.wait_for(2).await;
    assert_eq!(both.len(), 2, "one notification per change");
    assert_signed(&secret, &both[1]);
    let resolved = both[1].json();
    assert_eq!(resolved["type"], "alert.resolved");
    assert_eq!(resolved["data"]["value"], 0.0);
    assert_ne!(both[0].id, both[1].id);
    assert_eq!(
        alert(&server, &tenant, &rule_id).await["state"],
        "ALERT_STATE_RESOLVED"
    );

    let log = eventually("both deliveries recorded", || async {
        let log = deliveries(&server, &tenant, &rule_id).await;
        let done = log.len() == 2
            && log
                .iter()
                .all(|entry| entry["outcome"] == "ALERT_DELIVERY_OUTCOME_DELIVERED");
        done.then_some(log)
    })
    .await;
    assert_eq!(log[0]["transition"], "ALERT_STATE_RESOLVED");
    assert_eq!(log[0]["delivery_id"], both[1].id.as_str());
    assert_eq!(log[1]["transition"], "ALERT_STATE_FIRING");
    for entry in &log {
        assert_eq!(entry["attempts"], 1);
        assert_eq!(entry["last_http_status"], 200);
    }
    server.stop().await;
}

#[tokio::test]
async fn threshold_rule_fires_then_resolves_with_two_signed_notifications_on_postgres() {
    threshold_rule_fires_then_resolves_with_two_signed_notifications(
        server_without_background_evaluation().await,
    )
    .await;
}

#[tokio::test]
async fn threshold_rule_fires_then_resolves_with_two_signed_notifications_on_sqlite() {
    let directory = tempfile::tempdir().unwrap();
    let server = TestServer::sqlite_with(directory.path(), |config| {
        config.alerts.evaluate_interval_ms = 0;
    })
    .await;
    threshold_rule_fires_then_resolves_with_two_signed_notifications(server).await;
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_three_attempts_and_a_4xx_is_never_retried() {
    let server = server_without_background_evaluation().await;
    let flaky = Receiver::start(&[500, 500, 200]).await;
    let gone = Receiver::start(&[410, 200]).await;
    let tenant = tenant_id(&server).await;
    let (flaky_rule, secret) =
        create_rule(&server, &tenant, threshold_rule(&flaky.url, "error", 0.0)).await;
    let (gone_rule, _) =
        create_rule(&server, &tenant, threshold_rule(&gone.url, "error", 0.0)).await;
    let now = Utc::now();
    send(
        &server,
        "error",
        1,
        BucketWidth::Minute.floor(now) - chrono::Duration::seconds(30),
    )
    .await;
    let pass = AlertEvaluator::new(server.store.clone(), fast_retries())
        .evaluate_at(now)
        .await
        .unwrap();
    assert_eq!(pass.transitions, 2);

    let entry = eventually("the flaky delivery to finish", || async {
        let log = deliveries(&server, &tenant, &flaky_rule).await;
        log.into_iter()
            .find(|entry| entry["outcome"] != "ALERT_DELIVERY_OUTCOME_PENDING")
    })
    .await;
    assert_eq!(
        entry["outcome"], "ALERT_DELIVERY_OUTCOME_DELIVERED",
        "{entry}"
    );
    assert_eq!(entry["attempts"], 3);
    assert_eq!(entry["last_http_status"], 200);
    let attempts = flaky.received();
    assert_eq!(attempts.len(), 3);
    for attempt in &attempts {
        assert_eq!(attempt.id, attempts[0].id, "one webhook-id for every retry");
        assert_eq!(attempt.body, attempts[0].body);
        assert_signed(&secret, attempt);
    }

    let refused = eventually("the refused delivery to finish", || async {
        let log = deliveries(&server, &tenant, &gone_rule).await;
        log.into_iter()
            .find(|entry| entry["outcome"] != "ALERT_DELIVERY_OUTCOME_PENDING")
    })
    .await;
    assert_eq!(
        refused["outcome"], "ALERT_DELIVERY_OUTCOME_FAILED",
        "{refused}"
    );
    assert_eq!(refused["attempts"], 1);
    assert_eq!(refused["last_http_status"], 410);
    assert!(refused["last_error"].as_str().unwrap().contains("410"));
    assert_eq!(gone.received().len(), 1);

    let (status, every) = call(
        &server,
        reqwest::Method::GET,
        &format!("/v1/tenants/{tenant}/alerts/-/deliveries?page_size=1"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{every}");
    assert_eq!(every["deliveries"].as_array().unwrap().len(), 1);
    assert!(!every["next_page_token"].as_str().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_notification_its_server_stopped_sending_is_sent_again_by_a_later_pass() {
    let server = server_without_background_evaluation().await;
    let receiver = Receiver::start(&[]).await;
    let tenant = tenant_id(&server).await;
    let (rule_id, secret) = create_rule(
        &server,
        &tenant,
        threshold_rule(&receiver.url, "error", 0.0),
    )
    .await;
    // A replica records the change, then stops before sending it.
    let tenant_id = eventline_core::TenantId::parse("tenant_id", &tenant).unwrap();
    let rule = server
        .store
        .alert_rule(tenant_id, &rule_id)
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    let left = eventline_core::alerts::Evaluation {
        window_end: BucketWidth::Minute.floor(now),
        value: Some(4.0),
        state: eventline_core::alerts::AlertState::Firing,
    };
    let delivery = server
        .store
        .record_alert_evaluation(&rule, &left)
        .await
        .unwrap()
        .expect("the change");
    let evaluator = AlertEvaluator::new(server.store.clone(), fast_retries());

    let soon = evaluator.evaluate_at(now).await.unwrap();
    assert_eq!(soon.resent, 0, "a delivery in flight is left to its server");
    let later = now + chrono::Duration::minutes(6);
    let pass = evaluator.evaluate_at(later).await.unwrap();
    assert_eq!(pass.resent, 1);
    let received = receiver.wait_for(1).await;
    let resent = received
        .iter()
        .find(|request| request.id == delivery.delivery_id)
        .expect("the pending notification, with its own webhook-id");
    assert_signed(&secret, resent);
    let body = resent.json();
    assert_eq!(body["type"], "alert.firing");
    assert_eq!(body["data"]["value"], 4.0);
    let window_end = left
        .window_end
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(body["data"]["window_end"], window_end.as_str());
    // The resent one and the pass's own change (the rule resolves: no errors came).
    eventually("both deliveries recorded", || async {
        let log = deliveries(&server, &tenant, &rule_id).await;
        let done = log.len() == 2
            && log
                .iter()
                .all(|entry| entry["outcome"] == "ALERT_DELIVERY_OUTCOME_DELIVERED");
        done.then_some(())
    })
    .await;
    let again = evaluator
        .evaluate_at(later + chrono::Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(
        again.resent, 0,
        "a delivered notification is never sent again"
    );
    server.stop().await;
}

#[tokio::test]
async fn ratio_rule_fires_on_a_high_error_rate_and_not_on_a_low_or_undefined_one() {
    // The server's own background task evaluates here, every 200 ms.
    let server = TestServer::postgres_with(|config| config.alerts.evaluate_interval_ms = 200).await;
    let receiver = Receiver::start(&[]).await;
    let tenant = tenant_id(&server).await;
    let ratio_rule = |name: &str, numerator: &str, denominator: &str| {
        json!({
            "name": name,
            "window_seconds": 300,
            "ratio": {
                "numerator_event_type": numerator,
                "denominator_event_type": denominator,
                "comparison": "COMPARISON_GREATER_THAN",
                "threshold": 0.05,
            },
            "webhook_url": receiver.url,
        })
    };
    let at = BucketWidth::Minute.floor(Utc::now()) - chrono::Duration::seconds(90);
    send(&server, "request", 100, at).await;
    send(&server, "error", 10, at).await;
    send(&server, "warning", 2, at).await;
    let (high, _) = create_rule(
        &server,
        &tenant,
        ratio_rule("error rate", "error", "request"),
    )
    .await;
    let (low, _) = create_rule(
        &server,
        &tenant,
        ratio_rule("warning rate", "warning", "request"),
    )
    .await;
    let (undefined, _) = create_rule(
        &server,
        &tenant,
        ratio_rule("nothing to divide by", "error", "never"),
    )
    .await;

    let alerts = eventually("every rule evaluated", || async {
        let alerts = list_alerts(&server, &tenant).await;
        let evaluated = alerts.len() == 3
            && alerts
                .iter()
                .all(|alert| alert.get("last_evaluation_time").is_some());
        evaluated.then_some(alerts)
    })
    .await;
    let state_of = |rule_id: &str| {
        alerts
            .iter()
            .find(|alert| alert["rule"]["rule_id"] == rule_id)
            .unwrap()
            .clone()
    };
    assert_eq!(state_of(&high)["state"], "ALERT_STATE_FIRING");
    assert_eq!(state_of(&high)["last_value"], 0.1);
    assert_eq!(state_of(&low)["state"], "ALERT_STATE_RESOLVED");
    assert_eq!(state_of(&low)["last_value"], 0.02);
    assert_eq!(state_of(&undefined)["state"], "ALERT_STATE_RESOLVED");
    assert!(
        state_of(&undefined).get("last_value").is_none(),
        "a zero denominator has no ratio: {}",
        state_of(&undefined)
    );
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].json()["data"]["rule_id"], high.as_str());
    assert_eq!(received[0].json()["data"]["value"], 0.1);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("eventline_alert_evaluations_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"eventline_alert_notifications_total{outcome="delivered"}"#),
        "{metrics}"
    );
    server.stop().await;
    assert_eq!(
        receiver.received().len(),
        1,
        "only the high error rate fired"
    );
}

#[tokio::test]
async fn spike_rule_fires_on_a_burst_above_its_baseline_and_not_on_steady_traffic() {
    let server = server_without_background_evaluation().await;
    let receiver = Receiver::start(&[]).await;
    let tenant = tenant_id(&server).await;
    let spike_rule = |event_type: &str| {
        json!({
            "name": format!("{event_type} spike"),
            "window_seconds": 60,
            "spike": {"event_type": event_type, "baseline_windows": 6, "sensitivity": 3.5},
            "webhook_url": receiver.url,
        })
    };
    let now = Utc::now();
    let window_end = BucketWidth::Minute.floor(now);
    let minute_before_end = |minutes: i64| window_end - chrono::Duration::minutes(minutes);
    // Six baseline minutes of 8 to 12 events of each type, then the last minute: 60
    // signups (a burst) and 12 logins (ordinary).
    for (index, count) in [10, 8, 12, 9, 11, 10].into_iter().enumerate() {
        let at = minute_before_end(index as i64 + 2) + chrono::Duration::seconds(20);
        send(&server, "signup", count, at).await;
        send(&server, "login", count, at).await;
    }
    send(
        &server,
        "signup",
        60,
        minute_before_end(1) + chrono::Duration::seconds(20),
    )
    .await;
    send(
        &server,
        "login",
        12,
        minute_before_end(1) + chrono::Duration::seconds(20),
    )
    .await;
    let (burst, _) = create_rule(&server, &tenant, spike_rule("signup")).await;
    let (steady, _) = create_rule(&server, &tenant, spike_rule("login")).await;
    // A type too rare to fire however it jumps: 0 → 5 is under min_count (10).
    send(
        &server,
        "refund",
        5,
        minute_before_end(1) + chrono::Duration::seconds(20),
    )
    .await;
    let (rare, _) = create_rule(&server, &tenant, spike_rule("refund")).await;

    let pass = AlertEvaluator::new(server.store.clone(), fast_retries())
        .evaluate_at(now)
        .await
        .unwrap();
    assert_eq!((pass.evaluated, pass.transitions), (3, 1));
    let burst_alert = alert(&server, &tenant, &burst).await;
    assert_eq!(burst_alert["state"], "ALERT_STATE_FIRING", "{burst_alert}");
    assert_eq!(burst_alert["last_value"], 60.0);
    let steady_alert = alert(&server, &tenant, &steady).await;
    assert_eq!(
        steady_alert["state"], "ALERT_STATE_RESOLVED",
        "{steady_alert}"
    );
    assert_eq!(steady_alert["last_value"], 12.0);
    assert_eq!(
        alert(&server, &tenant, &rare).await["state"],
        "ALERT_STATE_RESOLVED"
    );
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].json()["data"]["rule_id"], burst.as_str());
    assert_eq!(received[0].json()["data"]["kind"], "spike");
    server.stop().await;
}

#[tokio::test]
async fn bad_rules_are_refused_with_400_naming_the_field_and_a_key_without_admin_scope_is_denied() {
    let server = server_without_background_evaluation().await;
    let tenant = tenant_id(&server).await;
    let cases = [
        (
            threshold_rule("ftp://example.com/x", "error", 1.0),
            "rule.webhook_url",
        ),
        (
            threshold_rule("https:///no-host", "error", 1.0),
            "rule.webhook_url",
        ),
        (
            threshold_rule("http://exa mple.com/", "error", 1.0),
            "rule.webhook_url",
        ),
        (
            json!({"name": "w", "window_seconds": 30, "threshold": {"comparison": "COMPARISON_LESS_THAN", "threshold": 1}, "webhook_url": "http://h/"}),
            "rule.window_seconds",
        ),
        (
            json!({"name": "t", "window_seconds": 60, "threshold": {"comparison": "COMPARISON_LESS_THAN", "threshold": -1}, "webhook_url": "http://h/"}),
            "rule.threshold.threshold",
        ),
        (
            json!({"name": "c", "window_seconds": 60, "webhook_url": "http://h/"}),
            "rule.condition",
        ),
        (
            json!({"name": "s", "window_seconds": 60, "spike": {"event_type": "x", "baseline_windows": 1000}, "webhook_url": "http://h/"}),
            "rule.spike.baseline_windows",
        ),
        (
            json!({"name": "", "window_seconds": 60, "threshold": {"comparison": "COMPARISON_LESS_THAN", "threshold": 1}, "webhook_url": "http://h/"}),
            "rule.name",
        ),
    ];
    for (rule, field) in cases {
        let (status, body) = call(
            &server,
            reqwest::Method::POST,
            &format!("/v1/tenants/{tenant}/alerts"),
            ADMIN_TOKEN,
            Some(json!({ "rule": rule })),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{field}: {body}"
        );
    }
    assert!(list_alerts(&server, &tenant).await.is_empty());

    let (status, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("/v1/tenants/{tenant}/alerts"),
        &server.api_key,
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an ingest+query key is no admin: {body}"
    );
    let (status, _) = call(
        &server,
        reqwest::Method::GET,
        &format!("/v1/tenants/{tenant}/alerts/nope"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/tenants/{tenant}/alerts/nope"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("/v1/tenants/{tenant}/alerts/a%00b/deliveries"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("rule_id"),
        "{body}"
    );
    server.stop().await;
}
