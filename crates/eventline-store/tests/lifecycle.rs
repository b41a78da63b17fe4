//! The data lifecycle's conformance cases (README "Data lifecycle"): user deletion,
//! expiry, the quarantine and schemas, each on SQLite and PostgreSQL (and on Citus, by
//! scripts/test-citus), each on a fresh database.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Duration, TimeZone, Utc};
use eventline_core::{
    Actor, AuditAction, AuditQuery, Event, TenantId,
    lifecycle::{
        DELETE_BATCH_EVENTS, DeletionState, EventSchema, QuarantineQuery, QuarantinedEvent,
        Retention, SchemaMode,
    },
    query::{BucketWidth, CountQuery, EventFilter, EventQuery, Grouping, Order},
};
use eventline_store::{Store, StoreError, testing};

eventline_store::conformance_suite!(
    deleting_a_user_in_batches_keeps_every_count_and_sketch_equal_to_a_recount,
    a_deletion_request_is_idempotent_audited_and_spares_later_events,
    expiry_deletes_old_events_outside_the_dedupe_window_and_rollups_keep_counting,
    the_quarantine_keeps_the_newest_events_per_tenant_and_pages_newest_first,
    schemas_are_set_replaced_listed_and_removed_with_audit_records,
    retention_policies_round_trip_and_are_audited,
);

fn day_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()
}

/// An event of `user` at `minutes` after `day_start()`, received then.
fn event_of(tenant_id: TenantId, id: usize, user: &str, event_type: &str, minutes: i64) -> Event {
    let timestamp = day_start() + Duration::minutes(minutes) + Duration::seconds(id as i64 % 50);
    Event {
        tenant_id,
        event_id: format!("e{id}"),
        event_type: event_type.to_owned(),
        user_id: Some(user.to_owned()),
        session_id: None,
        timestamp,
        client_timestamp: None,
        received_at: timestamp,
        properties_json: format!(
            r#"{{"plan":"{}"}}"#,
            if id.is_multiple_of(3) { "pro" } else { "free" }
        ),
    }
}

async fn new_tenant(store: &dyn Store, name: &str) -> TenantId {
    store
        .create_tenant(name, &Actor::Cli)
        .await
        .expect("create tenant")
        .tenant_id
}

/// Five users over three days, every hour or so; "u2" has the most events.
fn spread_events(tenant_id: TenantId) -> Vec<Event> {
    let users = ["u1", "u2", "u3", "u4", "u2"];
    (0..400)
        .map(|id| {
            let user = users[id % users.len()];
            let event_type = if id.is_multiple_of(4) {
                "signup"
            } else {
                "view"
            };
            event_of(tenant_id, id, user, event_type, (id as i64) * 11 - 600)
        })
        .collect()
}

fn window() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        day_start() - Duration::days(1),
        day_start() + Duration::days(3),
    )
}

/// Every grouping a count answers, against a count of `events` one by one.
async fn assert_counts_equal(store: &dyn Store, tenant_id: TenantId, events: &[&Event]) {
    let (start, end) = window();
    for grouping in [
        Grouping::Total,
        Grouping::EventType,
        Grouping::Bucket(BucketWidth::Minute),
        Grouping::Bucket(BucketWidth::Hour),
        Grouping::Bucket(BucketWidth::Day),
    ] {
        let query = CountQuery {
            tenant_id,
            event_type: None,
            start,
            end,
            grouping,
        };
        let mut expected: BTreeMap<(Option<DateTime<Utc>>, Option<String>), u64> = BTreeMap::new();
        for event in events {
            let key = match grouping {
                Grouping::Total => (None, None),
                Grouping::EventType => (None, Some(event.event_type.clone())),
                Grouping::Bucket(width) => (Some(width.floor(event.timestamp)), None),
            };
            *expected.entry(key).or_default() += 1;
        }
        let answered: BTreeMap<_, u64> = store
            .count(&query)
            .await
            .expect("count")
            .into_iter()
            .map(|row| ((row.bucket, row.event_type), row.count))
            .collect();
        assert_eq!(answered, expected, "counts by {grouping:?}");
    }
}

/// Unique users per day and per hour from sketches (`exact_up_to_events` 0), against
/// the users of `events`.
async fn assert_sketched_users_equal(store: &dyn Store, tenant_id: TenantId, events: &[&Event]) {
    let (start, end) = window();
    for width in [BucketWidth::Day, BucketWidth::Hour] {
        let query = CountQuery {
            tenant_id,
            event_type: None,
            start,
            end,
            grouping: Grouping::Bucket(width),
        };
        let mut expected: BTreeMap<DateTime<Utc>, std::collections::BTreeSet<&str>> =
            BTreeMap::new();
        for event in events {
            expected
                .entry(width.floor(event.timestamp))
                .or_default()
                .insert(event.user_id.as_deref().unwrap_or_default());
        }
        let expected: BTreeMap<_, u64> = expected
            .into_iter()
            .map(|(bucket, users)| (bucket, users.len() as u64))
            .collect();
        let answered: BTreeMap<_, u64> = store
            .count_users(&query, 0)
            .await
            .expect("count users")
            .rows
            .into_iter()
            .filter_map(|row| Some((row.bucket?, row.count)))
            .collect();
        assert_eq!(answered, expected, "unique users by {width:?}");
    }
}

async fn events_of_user(store: &dyn Store, tenant_id: TenantId, user: &str) -> Vec<Event> {
    let (start, end) = window();
    store
        .list_events(&EventQuery {
            tenant_id,
            filter: EventFilter {
                user_id: Some(user.to_owned()),
                ..EventFilter::default()
            },
            start,
            end,
            order: Order::OldestFirst,
            after: None,
            committed_before: None,
            limit: 10_000,
        })
        .await
        .expect("list events")
}

async fn deleting_a_user_in_batches_keeps_every_count_and_sketch_equal_to_a_recount(
    store: Arc<dyn Store>,
) {
    let tenant_id = new_tenant(&*store, "acme").await;
    let other = new_tenant(&*store, "other").await;
    let events = spread_events(tenant_id);
    let copies = spread_events(other);
    store.append(&events).await.expect("append");
    store
        .append(&copies)
        .await
        .expect("append the other tenant");
    let everyone: Vec<&Event> = events.iter().collect();
    // The sketches are built and kept now, so the deletion must correct them.
    assert_sketched_users_equal(&*store, tenant_id, &everyone).await;

    let deletion = store
        .request_deletion(tenant_id, "u2", &Actor::AdminToken)
        .await
        .expect("request deletion");
    assert_eq!(deletion.state, DeletionState::Pending);
    let of_u2 = events
        .iter()
        .filter(|event| event.user_id.as_deref() == Some("u2"))
        .count() as u64;
    // A batch is one transaction with its corrections: after any one of them (where a
    // crash could stop the deletion) the counts equal the rows left.
    let first = store
        .delete_user_events(&deletion, 7)
        .await
        .expect("first batch");
    assert_eq!(first, 7);
    let left = events_of_user(&*store, tenant_id, "u2").await;
    let remaining: Vec<&Event> = events
        .iter()
        .filter(|event| {
            event.user_id.as_deref() != Some("u2")
                || left.iter().any(|kept| kept.event_id == event.event_id)
        })
        .collect();
    assert_eq!(remaining.len() as u64, events.len() as u64 - 7);
    assert_counts_equal(&*store, tenant_id, &remaining).await;
    let running = store
        .deletion(tenant_id, &deletion.deletion_id)
        .await
        .unwrap()
        .expect("the deletion");
    assert_eq!(
        (running.state, running.events_deleted),
        (DeletionState::Running, 7)
    );

    let mut deleted = first;
    loop {
        let batch = store
            .delete_user_events(&deletion, DELETE_BATCH_EVENTS)
            .await
            .expect("batch");
        deleted += batch;
        if batch < DELETE_BATCH_EVENTS as u64 {
            break;
        }
    }
    let finished = store.finish_deletion(&deletion).await.expect("finish");
    assert_eq!(deleted, of_u2);
    assert_eq!(
        (finished.state, finished.events_deleted),
        (DeletionState::Done, of_u2)
    );
    assert!(finished.finished_at.is_some());
    assert!(events_of_user(&*store, tenant_id, "u2").await.is_empty());
    let without_u2: Vec<&Event> = events
        .iter()
        .filter(|event| event.user_id.as_deref() != Some("u2"))
        .collect();
    assert_counts_equal(&*store, tenant_id, &without_u2).await;
    assert_sketched_users_equal(&*store, tenant_id, &without_u2).await;
    // The other tenant's user of the same id is untouched.
    assert_eq!(
        events_of_user(&*store, other, "u2").await.len() as u64,
        of_u2
    );
    let all_copies: Vec<&Event> = copies.iter().collect();
    assert_counts_equal(&*store, other, &all_copies).await;
}

async fn a_deletion_request_is_idempotent_audited_and_spares_later_events(store: Arc<dyn Store>) {
    let tenant_id = new_tenant(&*store, "acme").await;
    let events = spread_events(tenant_id);
    store.append(&events).await.expect("append");
    let first = store
        .request_deletion(tenant_id, "u3", &Actor::AdminToken)
        .await
        .unwrap();
    let again = store
        .request_deletion(tenant_id, "u3", &Actor::Key("k1".into()))
        .await
        .unwrap();
    assert_eq!(
        again.deletion_id, first.deletion_id,
        "one unfinished deletion per user"
    );
    assert!(
        store
            .unfinished_deletions(tenant_id)
            .await
            .unwrap()
            .iter()
            .any(|deletion| deletion.deletion_id == first.deletion_id)
    );
    // An event of the same user id that arrives after the request is a new one.
    let mut later = event_of(tenant_id, 9_999, "u3", "view", 30);
    later.received_at = first.requested_at + Duration::seconds(1);
    store.append(std::slice::from_ref(&later)).await.unwrap();
    while store.delete_user_events(&first, 1_000).await.unwrap() == 1_000 {}
    store.finish_deletion(&first).await.unwrap();
    let left = events_of_user(&*store, tenant_id, "u3").await;
    assert_eq!(
        left.iter()
            .map(|event| event.event_id.as_str())
            .collect::<Vec<_>>(),
        ["e9999"]
    );
    assert!(
        store
            .unfinished_deletions(tenant_id)
            .await
            .unwrap()
            .is_empty()
    );
    // Once done, a new request is a new deletion.
    let next = store
        .request_deletion(tenant_id, "u3", &Actor::AdminToken)
        .await
        .unwrap();
    assert_ne!(next.deletion_id, first.deletion_id);
    let audit = store
        .list_audit_events(&AuditQuery {
            tenant_id: Some(tenant_id),
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    let actions: Vec<(AuditAction, &str)> = audit
        .iter()
        .filter(|record| record.target == first.deletion_id)
        .map(|record| (record.action, record.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (AuditAction::UserDeletionFinished, "server"),
            (AuditAction::UserDeletionRequested, "admin_token"),
        ]
    );
    assert!(
        store
            .deletion(tenant_id, "no-such-deletion")
            .await
            .unwrap()
            .is_none()
    );
}

async fn expiry_deletes_old_events_outside_the_dedupe_window_and_rollups_keep_counting(
    store: Arc<dyn Store>,
) {
    let tenant_id = new_tenant(&*store, "acme").await;
    let other = new_tenant(&*store, "other").await;
    let mut events = spread_events(tenant_id);
    // Every tenth event arrived late: received long after it happened.
    for event in events.iter_mut().step_by(10) {
        event.received_at = day_start() + Duration::days(2);
    }
    store.append(&events).await.unwrap();
    store.append(&spread_events(other)).await.unwrap();
    let before = day_start() + Duration::hours(13);
    let received_before = day_start() + Duration::days(1);
    let (start, end) = window();
    let counted_before = testing::counted_events(&*store, tenant_id, start, before).await;
    let mut expired = 0;
    loop {
        let batch = store
            .expire_events(tenant_id, before, received_before, 50)
            .await
            .unwrap();
        expired += batch;
        if batch < 50 {
            break;
        }
    }
    let expected_gone = events
        .iter()
        .filter(|event| event.timestamp < before && event.received_at < received_before)
        .count() as u64;
    assert!(expected_gone > 100, "the case expires a few batches");
    assert_eq!(expired, expected_gone);
    let stored = testing::stored_events(&*store, tenant_id, start, end).await;
    assert_eq!(stored, events.len() as u64 - expected_gone);
    // Whole hours before the horizon still count every event, from the rollups.
    assert_eq!(
        testing::counted_events(&*store, tenant_id, start, before).await,
        counted_before
    );
    assert_eq!(
        testing::stored_events(&*store, other, start, end).await,
        events.len() as u64,
        "another tenant's events are not expired"
    );
    // Rollup expiry drops the buckets that end by the horizon, and nothing newer.
    let rollup_horizon = day_start() + Duration::hours(2);
    assert!(
        store
            .expire_rollups(tenant_id, rollup_horizon)
            .await
            .unwrap()
            > 0
    );
    let expired_hours = (day_start() - Duration::hours(10), day_start());
    assert!(
        events
            .iter()
            .any(|event| event.timestamp >= expired_hours.0 && event.timestamp < expired_hours.1),
        "the expired hours held events"
    );
    assert_eq!(
        testing::counted_events(&*store, tenant_id, expired_hours.0, expired_hours.1).await,
        0
    );
    let kept: u64 = events
        .iter()
        .filter(|event| event.timestamp >= rollup_horizon && event.timestamp < before)
        .count() as u64;
    assert_eq!(
        testing::counted_events(&*store, tenant_id, rollup_horizon, before).await,
        kept
    );
}

fn quarantined(tenant_id: TenantId, n: usize, event_type: &str) -> QuarantinedEvent {
    QuarantinedEvent {
        // Time-ordered like the UUIDv7s the server assigns.
        quarantine_id: format!("q{n:04}"),
        tenant_id,
        event_id: format!("e{n}"),
        event_type: event_type.to_owned(),
        reason: "timestamp: is before 1971".to_owned(),
        payload: format!(r#"{{"event_id":"e{n}","event_type":"{event_type}"}}"#),
        received_at: day_start() + Duration::seconds(n as i64),
    }
}

async fn the_quarantine_keeps_the_newest_events_per_tenant_and_pages_newest_first(
    store: Arc<dyn Store>,
) {
    let tenant_id = new_tenant(&*store, "acme").await;
    let other = new_tenant(&*store, "other").await;
    let first: Vec<QuarantinedEvent> = (0..4)
        .map(|n| quarantined(tenant_id, n, if n % 2 == 0 { "a" } else { "b" }))
        .collect();
    assert_eq!(store.quarantine(&first, 5).await.unwrap(), 0);
    let more: Vec<QuarantinedEvent> = (4..7)
        .map(|n| quarantined(tenant_id, n, "a"))
        .chain([quarantined(other, 100, "a")])
        .collect();
    assert_eq!(
        store.quarantine(&more, 5).await.unwrap(),
        2,
        "the two oldest of the tenant go"
    );
    let page = |before: Option<&str>, event_type: Option<&str>, limit| QuarantineQuery {
        tenant_id,
        event_type: event_type.map(str::to_owned),
        before: before.map(str::to_owned),
        limit,
    };
    let ids = |events: Vec<QuarantinedEvent>| -> Vec<String> {
        events
            .into_iter()
            .map(|event| event.quarantine_id)
            .collect()
    };
    let newest = store.list_quarantined(&page(None, None, 3)).await.unwrap();
    assert_eq!(newest[0], more[2], "every field round-trips");
    assert_eq!(ids(newest), ["q0006", "q0005", "q0004"]);
    let next = store
        .list_quarantined(&page(Some("q0004"), None, 3))
        .await
        .unwrap();
    assert_eq!(ids(next), ["q0003", "q0002"]);
    let only_a = store
        .list_quarantined(&page(None, Some("a"), 10))
        .await
        .unwrap();
    assert_eq!(ids(only_a), ["q0006", "q0005", "q0004", "q0002"]);

    let named = vec!["q0003".to_owned(), "q0005".to_owned(), "q0100".to_owned()];
    let found = store.quarantined(tenant_id, &named).await.unwrap();
    assert_eq!(
        ids(found),
        ["q0003", "q0005"],
        "another tenant's id is not found"
    );
    store
        .set_quarantine_reason(tenant_id, "q0003", "properties: still wrong")
        .await
        .unwrap();
    let again = store.quarantined(tenant_id, &named[..1]).await.unwrap();
    assert_eq!(again[0].reason, "properties: still wrong");
    assert_eq!(
        store.remove_quarantined(tenant_id, &named).await.unwrap(),
        2
    );
    assert_eq!(
        store.purge_quarantined(tenant_id, Some("b")).await.unwrap(),
        0
    );
    assert_eq!(store.purge_quarantined(tenant_id, None).await.unwrap(), 3);
    assert!(
        store
            .list_quarantined(&page(None, None, 10))
            .await
            .unwrap()
            .is_empty()
    );
    let others = QuarantineQuery {
        tenant_id: other,
        ..page(None, None, 10)
    };
    assert_eq!(store.list_quarantined(&others).await.unwrap().len(), 1);
}

async fn schemas_are_set_replaced_listed_and_removed_with_audit_records(store: Arc<dyn Store>) {
    let tenant_id = new_tenant(&*store, "acme").await;
    let other = new_tenant(&*store, "other").await;
    let schema = |event_type: &str, mode, body: &str| EventSchema {
        tenant_id,
        event_type: event_type.to_owned(),
        schema_json: body.to_owned(),
        mode,
        updated_at: day_start(),
    };
    let actor = Actor::AdminToken;
    store
        .put_schema(
            &schema("signup", SchemaMode::Warn, r#"{"type":"object"}"#),
            &actor,
        )
        .await
        .unwrap();
    store
        .put_schema(
            &schema("buy", SchemaMode::Enforce, r#"{"required":["sku"]}"#),
            &actor,
        )
        .await
        .unwrap();
    let replaced = schema("signup", SchemaMode::Enforce, r#"{"required":["plan"]}"#);
    store.put_schema(&replaced, &actor).await.unwrap();
    let listed = store.list_schemas(tenant_id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|schema| schema.event_type.as_str())
            .collect::<Vec<_>>(),
        ["buy", "signup"]
    );
    assert_eq!(listed[1].mode, SchemaMode::Enforce);
    let stored: serde_json::Value = serde_json::from_str(&listed[1].schema_json).unwrap();
    assert_eq!(stored, serde_json::json!({"required": ["plan"]}));
    assert!(store.list_schemas(other).await.unwrap().is_empty());
    store.delete_schema(tenant_id, "buy", &actor).await.unwrap();
    assert!(matches!(
        store.delete_schema(tenant_id, "buy", &actor).await,
        Err(StoreError::NotFound(_))
    ));
    let actions: Vec<(AuditAction, String)> = store
        .list_audit_events(&AuditQuery {
            tenant_id: Some(tenant_id),
            before: None,
            limit: 100,
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.action != AuditAction::TenantCreated)
        .map(|record| (record.action, record.target))
        .collect();
    assert_eq!(
        actions,
        [
            (AuditAction::SchemaDeleted, "buy".to_owned()),
            (AuditAction::SchemaSet, "signup".to_owned()),
            (AuditAction::SchemaSet, "buy".to_owned()),
            (AuditAction::SchemaSet, "signup".to_owned()),
        ]
    );
}

async fn retention_policies_round_trip_and_are_audited(store: Arc<dyn Store>) {
    let tenant_id = new_tenant(&*store, "acme").await;
    assert_eq!(
        store.retention_policy(tenant_id).await.unwrap(),
        Retention::default(),
        "kept forever by default"
    );
    let policy = Retention {
        raw: Some(std::time::Duration::from_secs(7 * 86_400)),
        rollups: Some(std::time::Duration::from_secs(400 * 86_400)),
    };
    store
        .set_retention_policy(tenant_id, policy, &Actor::Key("k1".into()))
        .await
        .unwrap();
    assert_eq!(store.retention_policy(tenant_id).await.unwrap(), policy);
    let missing = TenantId::generate();
    assert!(matches!(
        store.retention_policy(missing).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .set_retention_policy(missing, policy, &Actor::AdminToken)
            .await,
        Err(StoreError::NotFound(_))
    ));
    let audit = store
        .list_audit_events(&AuditQuery {
            tenant_id: Some(tenant_id),
            before: None,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(audit[0].action, AuditAction::RetentionSet);
    assert_eq!(audit[0].details["raw_retention_seconds"], "604800");
    assert_eq!(audit[0].actor, "key:k1");
}
