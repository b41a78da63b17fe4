//! Issue #17 over the real listeners, on both stores: per-key rate limits (whole requests
//! refused with a retry delay that a retry can honour exactly), keys that expire on every
//! RPC, and the audit trail of admin actions.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, TestServer};
use eventline_proto::v1::{self, AuditAction, Scope};
use eventline_server::Config;
use futures::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

/// Runs each case once on a fresh PostgreSQL database and once on a fresh SQLite store.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_key_limited_to_100_per_second_stores_one_burst_of_1000_and_the_retries_store_the_rest,
    an_expired_key_is_refused_on_every_rpc_and_its_use_audited_once,
    every_admin_action_is_in_the_audit_trail_and_admin_keys_see_their_own_tenant,
    the_server_default_limit_applies_to_keys_without_their_own,
    bad_key_settings_are_refused_naming_the_field,
);

#[derive(Clone, Copy)]
enum Backend {
    Postgres,
    Sqlite,
}

/// A server on `backend`, and the temporary directory a SQLite store lives in.
async fn start(
    backend: Backend,
    tweak: impl FnOnce(&mut Config),
) -> (TestServer, Option<tempfile::TempDir>) {
    match backend {
        Backend::Postgres => (TestServer::postgres_with(tweak).await, None),
        Backend::Sqlite => {
            let directory = tempfile::tempdir().unwrap();
            let server = TestServer::sqlite_with(directory.path(), tweak).await;
            (server, Some(directory))
        }
    }
}

async fn create_tenant(server: &TestServer, name: &str) -> String {
    server
        .admin(ADMIN_TOKEN)
        .await
        .create_tenant(v1::CreateTenantRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
        .tenant_id
}

async fn create_key(
    server: &TestServer,
    bearer: &str,
    request: v1::CreateApiKeyRequest,
) -> v1::CreateApiKeyResponse {
    server
        .admin(bearer)
        .await
        .create_api_key(request)
        .await
        .unwrap()
        .into_inner()
}

fn batch(prefix: &str, count: usize) -> v1::IngestBatchRequest {
    v1::IngestBatchRequest {
        events: (0..count)
            .map(|index| v1::Event {
                event_id: format!("{prefix}-{index}"),
                event_type: "view".into(),
                ..Default::default()
            })
            .collect(),
        sent_at: None,
    }
}

async fn stored(server: &TestServer, key: &str) -> u64 {
    server
        .query(key)
        .await
        .count_events(v1::CountEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count
}

async fn a_key_limited_to_100_per_second_stores_one_burst_of_1000_and_the_retries_store_the_rest(
    backend: Backend,
) {
    let (server, _directory) = start(backend, |_| {}).await;
    let tenant_id = create_tenant(&server, "limited").await;
    let created = create_key(
        &server,
        ADMIN_TOKEN,
        v1::CreateApiKeyRequest {
            tenant_id,
            scopes: vec![Scope::Ingest as i32, Scope::Query as i32],
            events_per_second: 100,
            ..Default::default()
        },
    )
    .await;
    let key = created.api_key.unwrap();
    assert_eq!((key.events_per_second, key.burst), (100, 100));
    let secret = created.secret;

    // 1,000 events at once, as ten batches of 100 sent together: the bucket holds one
    // second's worth (100), so exactly one batch is stored and nine are refused whole.
    let client = server.ingest(&secret).await;
    let sends = (0..10).map(|index| {
        let mut client = client.clone();
        async move {
            (
                index,
                client.ingest_batch(batch(&format!("b{index}"), 100)).await,
            )
        }
    });
    let answers = futures::future::join_all(sends).await;
    let mut refused = Vec::new();
    for (index, answer) in answers {
        match answer {
            Ok(response) => assert_eq!(response.into_inner().accepted, 100),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("rate limit"),
                    "{}",
                    status.message()
                );
                let delay = status
                    .get_details_retry_info()
                    .and_then(|info| info.retry_delay)
                    .expect("a refusal carries RetryInfo");
                assert!(
                    delay > Duration::ZERO && delay <= Duration::from_millis(1001),
                    "{delay:?}"
                );
                refused.push((index, delay));
            }
        }
    }
    assert_eq!(refused.len(), 9, "exactly one batch of the ten is admitted");
    // Over HTTP the same bucket answers 429 with Retry-After (another 100 events need
    // the bucket full again, a second after the first batch).
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/events:batch", server.http_addr))
        .header("x-api-key", &secret)
        .json(&serde_json::json!({"events": (0..100)
            .map(|index| serde_json::json!({"event_type": "view", "event_id": format!("rest-{index}")}))
            .collect::<Vec<_>>()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    assert_eq!(
        stored(&server, &secret).await,
        100,
        "refused batches stored nothing"
    );

    // A client that waits as told gets every refused batch stored.
    for (index, mut delay) in refused {
        let mut client = client.clone();
        loop {
            tokio::time::sleep(delay).await;
            match client.ingest_batch(batch(&format!("b{index}"), 100)).await {
                Ok(response) => {
                    assert_eq!(response.into_inner().accepted, 100);
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted);
                    delay = status
                        .get_details_retry_info()
                        .and_then(|info| info.retry_delay)
                        .unwrap();
                }
            }
        }
    }
    assert_eq!(stored(&server, &secret).await, 1000);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("eventline_rate_limited_events_total"),
        "{metrics}"
    );
    server.stop().await;
}

async fn the_server_default_limit_applies_to_keys_without_their_own(backend: Backend) {
    let (server, _directory) = start(backend, |config| {
        config.limits.events_per_second_per_key = Some(50);
    })
    .await;
    let mut client = server.ingest(&server.api_key).await;
    assert_eq!(
        client
            .ingest_batch(batch("default", 50))
            .await
            .unwrap()
            .into_inner()
            .accepted,
        50
    );
    // Another 50 need the bucket full again, a second after the first 50.
    let status = client
        .ingest_batch(batch("fifty-more", 50))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // A key with its own, higher limit is not held to the default.
    let tenant_id = create_tenant(&server, "roomy").await;
    let roomy = create_key(
        &server,
        ADMIN_TOKEN,
        v1::CreateApiKeyRequest {
            tenant_id,
            scopes: vec![Scope::Ingest as i32],
            events_per_second: 1000,
            burst: 2000,
            ..Default::default()
        },
    )
    .await
    .secret;
    let accepted = server
        .ingest(&roomy)
        .await
        .ingest_batch(batch("roomy", 2000))
        .await
        .unwrap()
        .into_inner()
        .accepted;
    assert_eq!(accepted, 2000);
    server.stop().await;
}

async fn an_expired_key_is_refused_on_every_rpc_and_its_use_audited_once(backend: Backend) {
    let (server, _directory) = start(backend, |_| {}).await;
    let tenant_id = create_tenant(&server, "expiring").await;
    // Long enough that the first Track lands before it on a loaded machine.
    let expires_at = chrono::Utc::now() + chrono::Duration::milliseconds(3000);
    let created = create_key(
        &server,
        ADMIN_TOKEN,
        v1::CreateApiKeyRequest {
            tenant_id: tenant_id.clone(),
            scopes: vec![
                Scope::Ingest as i32,
                Scope::Query as i32,
                Scope::Admin as i32,
            ],
            expire_time: Some(eventline_core::time::to_proto(expires_at)),
            ..Default::default()
        },
    )
    .await;
    let key_id = created.api_key.unwrap().key_id;
    let secret = created.secret;
    let mut ingest = server.ingest(&secret).await;
    ingest
        .track(v1::TrackRequest {
            event: Some(batch("before", 1).events.remove(0)),
        })
        .await
        .expect("works until it expires");
    let wait = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;

    let mut query = server.query(&secret).await;
    let mut admin = server.admin(&secret).await;
    let statuses = vec![
        ingest
            .track(v1::TrackRequest {
                event: Some(batch("after", 1).events.remove(0)),
            })
            .await
            .unwrap_err(),
        ingest.ingest_batch(batch("after", 2)).await.unwrap_err(),
        ingest
            .ingest_stream(futures::stream::iter([v1::IngestStreamRequest {
                events: batch("stream", 1).events,
                sent_at: None,
            }]))
            .await
            .unwrap_err(),
        match ingest
            .ingest_bidi(futures::stream::iter([v1::IngestBidiRequest {
                sequence: 1,
                events: batch("bidi", 1).events,
                sent_at: None,
            }]))
            .await
        {
            Err(status) => status,
            Ok(response) => response
                .into_inner()
                .next()
                .await
                .expect("an answer")
                .unwrap_err(),
        },
        query
            .list_events(v1::ListEventsRequest::default())
            .await
            .unwrap_err(),
        query
            .count_events(v1::CountEventsRequest::default())
            .await
            .unwrap_err(),
        query
            .top_event_types(v1::TopEventTypesRequest::default())
            .await
            .unwrap_err(),
        query
            .event_timeseries(v1::EventTimeseriesRequest {
                interval: v1::Interval::Hour as i32,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        match query
            .export_events(v1::ExportEventsRequest::default())
            .await
        {
            Err(status) => status,
            Ok(response) => response.into_inner().next().await.unwrap().unwrap_err(),
        },
        match query.tail_events(v1::TailEventsRequest::default()).await {
            Err(status) => status,
            Ok(response) => response.into_inner().next().await.unwrap().unwrap_err(),
        },
        admin
            .list_api_keys(v1::ListApiKeysRequest {
                tenant_id: tenant_id.clone(),
            })
            .await
            .unwrap_err(),
        admin
            .list_audit_events(v1::ListAuditEventsRequest::default())
            .await
            .unwrap_err(),
    ];
    for status in &statuses {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("expired"), "{}", status.message());
    }
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/events", server.http_addr))
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // ListApiKeys shows both times; the refused uses were audited once (per minute).
    let mut operator = server.admin(ADMIN_TOKEN).await;
    let keys = operator
        .list_api_keys(v1::ListApiKeysRequest {
            tenant_id: tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert!(keys[0].create_time.is_some());
    assert_eq!(
        eventline_core::time::from_proto(keys[0].expire_time.as_ref().unwrap()),
        Some(eventline_core::time::truncate_to_micros(expires_at))
    );
    let trail = operator
        .list_audit_events(v1::ListAuditEventsRequest {
            tenant_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    let expired_uses: Vec<_> = trail
        .iter()
        .filter(|event| event.action == AuditAction::ExpiredKeyUsed as i32)
        .collect();
    assert_eq!(expired_uses.len(), 1, "{trail:?}");
    assert_eq!(expired_uses[0].target, key_id);
    assert_eq!(expired_uses[0].actor, format!("key:{key_id}"));
    server.stop().await;
}

async fn every_admin_action_is_in_the_audit_trail_and_admin_keys_see_their_own_tenant(
    backend: Backend,
) {
    let (server, _directory) = start(backend, |_| {}).await;
    let acme = create_tenant(&server, "acme").await;
    let other = create_tenant(&server, "other").await;
    let admin_key = create_key(
        &server,
        ADMIN_TOKEN,
        v1::CreateApiKeyRequest {
            tenant_id: acme.clone(),
            scopes: vec![Scope::Admin as i32],
            ..Default::default()
        },
    )
    .await;
    let admin_key_id = admin_key.api_key.unwrap().key_id;
    let ingest_key = create_key(
        &server,
        &admin_key.secret,
        v1::CreateApiKeyRequest {
            tenant_id: acme.clone(),
            scopes: vec![Scope::Ingest as i32],
            events_per_second: 30,
            ..Default::default()
        },
    )
    .await
    .api_key
    .unwrap();
    let mut as_admin_key = server.admin(&admin_key.secret).await;
    as_admin_key
        .revoke_api_key(v1::RevokeApiKeyRequest {
            key_id: ingest_key.key_id.clone(),
        })
        .await
        .unwrap();

    // The operator pages through everything, newest first.
    let mut operator = server.admin(ADMIN_TOKEN).await;
    let mut trail = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = operator
            .list_audit_events(v1::ListAuditEventsRequest {
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.audit_events.len() <= 2);
        trail.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let summary: Vec<(String, i32, String)> = trail
        .iter()
        .rev()
        .map(|event| (event.actor.clone(), event.action, event.target.clone()))
        .collect();
    let admin_key_actor = format!("key:{admin_key_id}");
    assert_eq!(
        summary[2..],
        [
            (
                "admin_token".into(),
                AuditAction::TenantCreated as i32,
                acme.clone()
            ),
            (
                "admin_token".into(),
                AuditAction::TenantCreated as i32,
                other.clone()
            ),
            (
                "admin_token".into(),
                AuditAction::KeyCreated as i32,
                admin_key_id.clone()
            ),
            (
                admin_key_actor.clone(),
                AuditAction::KeyCreated as i32,
                ingest_key.key_id.clone()
            ),
            (
                admin_key_actor.clone(),
                AuditAction::KeyRevoked as i32,
                ingest_key.key_id.clone()
            ),
        ],
        "{trail:?}"
    );
    // The first two are the bootstrap tenant and key of the empty database's first start.
    assert!(
        summary[..2]
            .iter()
            .all(|(actor, _, _)| actor == "bootstrap")
    );
    assert!(trail.iter().all(|event| event.event_time.is_some()));
    let created = trail
        .iter()
        .find(|event| {
            event.target == ingest_key.key_id && event.action == AuditAction::KeyCreated as i32
        })
        .unwrap();
    assert_eq!(created.details["scopes"], "ingest");
    assert_eq!(created.details["events_per_second"], "30");

    // An admin key sees its own tenant's records only, and no other tenant's.
    let own = as_admin_key
        .list_audit_events(v1::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert_eq!(own.len(), 4, "{own:?}");
    assert!(own.iter().all(|event| event.tenant_id == acme));
    let status = as_admin_key
        .list_audit_events(v1::ListAuditEventsRequest {
            tenant_id: other,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = operator
        .list_audit_events(v1::ListAuditEventsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("page_token"),
        "{}",
        status.message()
    );

    // The REST gateway serves the same listing.
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/audit-events?page_size=1",
            server.http_addr
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["audit_events"][0]["action"],
        "AUDIT_ACTION_KEY_REVOKED"
    );
    assert!(!body["next_page_token"].as_str().unwrap().is_empty());
    server.stop().await;
}

async fn bad_key_settings_are_refused_naming_the_field(backend: Backend) {
    let (server, _directory) = start(backend, |_| {}).await;
    let tenant_id = create_tenant(&server, "strict").await;
    let mut operator = server.admin(ADMIN_TOKEN).await;
    let cases = [
        (
            v1::CreateApiKeyRequest {
                tenant_id: tenant_id.clone(),
                scopes: vec![Scope::Ingest as i32],
                expire_time: Some(eventline_core::time::to_proto(
                    chrono::Utc::now() - chrono::Duration::seconds(1),
                )),
                ..Default::default()
            },
            "expire_time",
        ),
        (
            v1::CreateApiKeyRequest {
                tenant_id: tenant_id.clone(),
                scopes: vec![Scope::Ingest as i32],
                burst: 10,
                ..Default::default()
            },
            "burst",
        ),
    ];
    for (request, field) in cases {
        let status = operator.create_api_key(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            field
        );
    }
    let keys = operator
        .list_api_keys(v1::ListApiKeysRequest { tenant_id })
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert!(keys.is_empty(), "a refused key is not created");
    server.stop().await;
}
