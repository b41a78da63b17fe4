//! The store conformance suite: every case runs against SQLite and PostgreSQL, each on a
//! fresh database. A backend that lacks a capability would opt out of a case by name in
//! its list below; none does today.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use eventline_core::{ApiKey, Event, IngestOutcome, Scope, TenantId};
use eventline_store::{Store, StoreError, testing};

macro_rules! conformance_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _directory) = eventline_store::testing::fresh_sqlite_store().await;
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = eventline_store::testing::fresh_pg_store().await;
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

conformance_suite!(
    append_reports_accepted_then_duplicate_and_stores_once,
    duplicates_within_one_batch_are_stored_once,
    same_event_id_in_two_tenants_is_two_rows,
    rollup_counts_only_inserted_rows,
    rollup_buckets_by_utc_hour,
    event_round_trips_every_field,
    concurrent_overlapping_batches_store_each_event_once,
    tenant_names_are_unique,
    api_keys_are_created_listed_and_revoked,
    api_key_for_a_missing_tenant_is_not_found,
    bootstrap_creates_the_first_tenant_only_once,
    ready_after_migrations,
);

fn at(hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, hour, minute, second)
        .unwrap()
}

fn event(tenant_id: TenantId, event_id: &str, event_type: &str, timestamp: DateTime<Utc>) -> Event {
    Event {
        tenant_id,
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        user_id: Some("u1".to_owned()),
        session_id: None,
        timestamp,
        client_timestamp: None,
        received_at: timestamp,
        properties_json: r#"{"plan":"pro"}"#.to_owned(),
    }
}

async fn tenant(store: &dyn Store, name: &str) -> TenantId {
    store
        .create_tenant(name)
        .await
        .expect("create tenant")
        .tenant_id
}

fn whole_day() -> (DateTime<Utc>, DateTime<Utc>) {
    (at(0, 0, 0), at(0, 0, 0) + Duration::days(1))
}

async fn append_reports_accepted_then_duplicate_and_stores_once(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let batch = [event(tenant_id, "e1", "signup", at(10, 0, 0))];
    assert_eq!(
        store.append(&batch).await.unwrap(),
        [IngestOutcome::Accepted]
    );
    assert_eq!(
        store.append(&batch).await.unwrap(),
        [IngestOutcome::Duplicate]
    );
    let (start, end) = whole_day();
    assert_eq!(store.count_events(tenant_id, start, end).await.unwrap(), 1);
}

async fn duplicates_within_one_batch_are_stored_once(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let batch = [
        event(tenant_id, "a", "signup", at(10, 0, 0)),
        event(tenant_id, "b", "signup", at(10, 0, 1)),
        event(tenant_id, "a", "signup", at(10, 0, 2)),
    ];
    let outcomes = store.append(&batch).await.unwrap();
    assert_eq!(
        outcomes,
        [
            IngestOutcome::Accepted,
            IngestOutcome::Accepted,
            IngestOutcome::Duplicate
        ]
    );
    let (start, end) = whole_day();
    assert_eq!(store.count_events(tenant_id, start, end).await.unwrap(), 2);
    assert_eq!(store.rollup_total(tenant_id, start, end).await.unwrap(), 2);
}

async fn same_event_id_in_two_tenants_is_two_rows(store: Arc<dyn Store>) {
    let tenant_a = tenant(&*store, "a").await;
    let tenant_b = tenant(&*store, "b").await;
    let outcomes = store
        .append(&[
            event(tenant_a, "same", "signup", at(10, 0, 0)),
            event(tenant_b, "same", "login", at(10, 0, 0)),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, [IngestOutcome::Accepted, IngestOutcome::Accepted]);
    assert_eq!(
        store
            .event(tenant_a, "same")
            .await
            .unwrap()
            .unwrap()
            .event_type,
        "signup"
    );
    assert_eq!(
        store
            .event(tenant_b, "same")
            .await
            .unwrap()
            .unwrap()
            .event_type,
        "login"
    );
    let (start, end) = whole_day();
    assert_eq!(store.count_events(tenant_a, start, end).await.unwrap(), 1);
    assert_eq!(store.count_events(tenant_b, start, end).await.unwrap(), 1);
}

async fn rollup_counts_only_inserted_rows(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let first: Vec<Event> = (0..50)
        .map(|n| event(tenant_id, &format!("e{n}"), "view", at(10, 0, n % 60)))
        .collect();
    store.append(&first).await.unwrap();
    // Half retried, half new: only the new half may move the rollup.
    let second: Vec<Event> = (25..75)
        .map(|n| event(tenant_id, &format!("e{n}"), "view", at(10, 0, n % 60)))
        .collect();
    let outcomes = store.append(&second).await.unwrap();
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| **outcome == IngestOutcome::Duplicate)
            .count(),
        25
    );
    let (start, end) = whole_day();
    assert_eq!(store.count_events(tenant_id, start, end).await.unwrap(), 75);
    assert_eq!(store.rollup_total(tenant_id, start, end).await.unwrap(), 75);
}

async fn rollup_buckets_by_utc_hour(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    store
        .append(&[
            event(tenant_id, "before", "view", at(10, 59, 59)),
            event(tenant_id, "on", "view", at(11, 0, 0)),
            event(tenant_id, "after", "click", at(11, 30, 0)),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .rollup_total(tenant_id, at(10, 0, 0), at(11, 0, 0))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .rollup_total(tenant_id, at(11, 0, 0), at(12, 0, 0))
            .await
            .unwrap(),
        2
    );
}

async fn event_round_trips_every_field(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let stored = Event {
        tenant_id,
        event_id: "round-trip".into(),
        event_type: "purchase".into(),
        user_id: Some("user-7".into()),
        session_id: Some("session-3".into()),
        timestamp: at(9, 15, 0) + Duration::microseconds(123_456),
        client_timestamp: Some(at(7, 15, 0)),
        received_at: at(9, 15, 1),
        properties_json: r#"{"amount": 12.5, "items": ["a", "b"], "nested": {"ok": true}}"#.into(),
    };
    store.append(std::slice::from_ref(&stored)).await.unwrap();
    let read = store
        .event(tenant_id, "round-trip")
        .await
        .unwrap()
        .expect("stored event");
    let properties =
        |event: &Event| serde_json::from_str::<serde_json::Value>(&event.properties_json).unwrap();
    assert_eq!(properties(&read), properties(&stored));
    assert_eq!(
        Event {
            properties_json: String::new(),
            ..read
        },
        Event {
            properties_json: String::new(),
            ..stored
        }
    );
}

async fn concurrent_overlapping_batches_store_each_event_once(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let writers = (0..4).map(|writer| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            // Writers overlap by half and insert in opposite orders.
            let mut ids: Vec<u32> = (writer * 100..writer * 100 + 200).collect();
            if writer % 2 == 1 {
                ids.reverse();
            }
            let batch: Vec<Event> = ids
                .iter()
                .map(|n| event(tenant_id, &format!("e{n}"), "view", at(12, 0, 0)))
                .collect();
            loop {
                match store.append(&batch).await {
                    Ok(outcomes) => break outcomes,
                    Err(error) if error.is_retryable() => continue,
                    Err(error) => panic!("append failed: {error}"),
                }
            }
        })
    });
    let mut accepted = 0;
    for writer in writers {
        accepted += writer
            .await
            .unwrap()
            .iter()
            .filter(|outcome| **outcome == IngestOutcome::Accepted)
            .count();
    }
    let (start, end) = whole_day();
    assert_eq!(accepted, 500, "every distinct id accepted exactly once");
    assert_eq!(
        store.count_events(tenant_id, start, end).await.unwrap(),
        500
    );
    assert_eq!(
        store.rollup_total(tenant_id, start, end).await.unwrap(),
        500
    );
}

async fn tenant_names_are_unique(store: Arc<dyn Store>) {
    store.create_tenant("acme").await.unwrap();
    match store.create_tenant("acme").await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("acme"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let names: Vec<String> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|tenant| tenant.name)
        .collect();
    assert_eq!(names, ["acme"]);
}

fn api_key(tenant_id: TenantId, key_id: &str, scopes: &[Scope]) -> ApiKey {
    ApiKey {
        key_id: key_id.to_owned(),
        tenant_id,
        scopes: scopes.to_vec(),
        secret_hash: vec![7; 32],
        created_at: at(8, 0, 0),
        revoked_at: None,
    }
}

async fn api_keys_are_created_listed_and_revoked(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let key = api_key(tenant_id, "k1", &[Scope::Ingest, Scope::Query]);
    store.create_api_key(&key).await.unwrap();
    assert_eq!(store.api_key("k1").await.unwrap(), Some(key.clone()));
    assert_eq!(store.api_key("missing").await.unwrap(), None);
    assert_eq!(
        store.list_api_keys(tenant_id).await.unwrap(),
        std::slice::from_ref(&key)
    );
    let revoked = store.revoke_api_key("k1").await.unwrap();
    let revoked_at = revoked.revoked_at.expect("revoke time set");
    assert!(!revoked.allows(Scope::Ingest));
    let again = store.revoke_api_key("k1").await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(revoked_at),
        "second revoke keeps the first time"
    );
    assert!(matches!(
        store.revoke_api_key("nope").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn api_key_for_a_missing_tenant_is_not_found(store: Arc<dyn Store>) {
    let key = api_key(TenantId::generate(), "k1", &[Scope::Ingest]);
    assert!(matches!(
        store.create_api_key(&key).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn bootstrap_creates_the_first_tenant_only_once(store: Arc<dyn Store>) {
    let key = api_key(TenantId::generate(), "boot", &[Scope::Ingest, Scope::Query]);
    assert!(store.bootstrap("default", &key).await.unwrap());
    let other = api_key(TenantId::generate(), "boot2", &[Scope::Ingest]);
    assert!(!store.bootstrap("default", &other).await.unwrap());
    let tenants = store.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].tenant_id, key.tenant_id);
    assert_eq!(
        store
            .api_key("boot")
            .await
            .unwrap()
            .map(|key| key.tenant_id),
        Some(key.tenant_id)
    );
    assert_eq!(store.api_key("boot2").await.unwrap(), None);
}

async fn ready_after_migrations(store: Arc<dyn Store>) {
    store.ready().await.expect("ready after migrate");
}

#[tokio::test]
async fn harness_gives_each_test_its_own_postgres_database() {
    let first = testing::fresh_postgres_database().await;
    let second = testing::fresh_postgres_database().await;
    assert_ne!(first, second);
}
