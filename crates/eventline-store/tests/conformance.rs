//! The store conformance suite: every case runs against SQLite and PostgreSQL, each on a
//! fresh database. A backend that lacks a capability would opt out of a case by name in
//! its list below; none does today.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use eventline_core::{
    Actor, ApiKey, AuditAction, AuditQuery, Event, IngestOutcome, RateLimit, Scope, TenantId,
    query::{
        BucketWidth, CommittedQuery, CountQuery, CountRow, EventFilter, EventQuery, Grouping,
        Order, Position, PropertyFilter,
    },
};
use eventline_store::{Store, StoreError, testing};

eventline_store::conformance_suite!(
    append_reports_accepted_then_duplicate_and_stores_once,
    duplicates_within_one_batch_are_stored_once,
    large_batches_report_stored_and_repeated_keys_as_duplicates,
    same_event_id_in_two_tenants_is_two_rows,
    rollup_counts_only_inserted_rows,
    rollup_buckets_by_utc_hour,
    event_round_trips_every_field,
    a_batch_with_a_retried_event_stores_the_same_fields,
    concurrent_overlapping_batches_store_each_event_once,
    tenant_names_are_unique,
    api_keys_are_created_listed_and_revoked,
    api_key_for_a_missing_tenant_is_not_found,
    bootstrap_creates_the_first_tenant_only_once,
    ready_after_migrations,
    listing_is_newest_first_with_ties_by_event_id_and_half_open_windows,
    keyset_pages_stay_correct_while_new_events_arrive,
    filters_select_by_type_user_and_properties,
    oldest_first_reads_resume_after_a_position,
    counts_equal_counting_the_events_for_every_window_and_grouping,
    commit_order_reads_deliver_each_event_once_below_the_horizon,
    live_reads_of_each_tenant_miss_nothing_while_many_tenants_commit_at_once,
    watermarks_are_visible_after_append,
    reads_never_cross_tenants,
    a_live_read_starting_at_the_horizon_includes_the_next_commit,
    api_keys_keep_their_expiry_and_rate_limit,
    every_admin_change_is_audited_in_its_transaction,
    audit_pages_are_newest_first_and_scoped_to_a_tenant,
    the_write_pool_reports_its_open_and_idle_connections,
    funnels_match_an_independent_walk_of_the_events,
    prepared_timelines_answer_funnels_and_follow_late_events,
    retention_matches_an_independent_count_of_the_events,
    breakdowns_match_an_independent_count_of_the_events,
    unique_users_match_an_independent_count_of_the_events,
    unique_users_from_sketches_stay_within_two_percent_and_see_late_events,
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
        .create_tenant(name, &Actor::Cli)
        .await
        .expect("create tenant")
        .tenant_id
}

fn whole_day() -> (DateTime<Utc>, DateTime<Utc>) {
    (at(0, 0, 0), at(0, 0, 0) + Duration::days(1))
}

use testing::{counted_events as counted, stored_events as stored};

async fn append_reports_accepted_then_duplicate_and_stores_once(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let batch = [event(tenant_id, "e1", "signup", at(10, 0, 0))];
    assert_eq!(
        store.append(&batch).await.unwrap().outcomes,
        [IngestOutcome::Accepted]
    );
    assert_eq!(
        store.append(&batch).await.unwrap().outcomes,
        [IngestOutcome::Duplicate]
    );
    let (start, end) = whole_day();
    assert_eq!(stored(&*store, tenant_id, start, end).await, 1);
}

async fn duplicates_within_one_batch_are_stored_once(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let batch = [
        event(tenant_id, "a", "signup", at(10, 0, 0)),
        event(tenant_id, "b", "signup", at(10, 0, 1)),
        event(tenant_id, "a", "signup", at(10, 0, 2)),
    ];
    let outcomes = store.append(&batch).await.unwrap().outcomes;
    assert_eq!(
        outcomes,
        [
            IngestOutcome::Accepted,
            IngestOutcome::Accepted,
            IngestOutcome::Duplicate
        ]
    );
    let (start, end) = whole_day();
    assert_eq!(stored(&*store, tenant_id, start, end).await, 2);
    assert_eq!(counted(&*store, tenant_id, start, end).await, 2);
}

/// Larger than one insert statement of either store (SQLite writes 2,000 rows a statement,
/// PostgreSQL falls back from COPY to its exact path): stored keys spread over every
/// statement, and repeats at the end.
async fn large_batches_report_stored_and_repeated_keys_as_duplicates(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let id = |n: usize| format!("e{n:05}");
    let stored_before: Vec<Event> = (0..5_000)
        .step_by(4)
        .map(|n| event(tenant_id, &id(n), "view", at(9, 0, 0)))
        .collect();
    store.append(&stored_before).await.unwrap();
    let mut batch: Vec<Event> = (0..5_000)
        .map(|n| event(tenant_id, &id(n), "view", at(10, (n % 60) as u32, 0)))
        .collect();
    batch.extend((1..=10).map(|n| event(tenant_id, &id(n), "view", at(11, 0, 0))));
    let outcomes = store.append(&batch).await.unwrap().outcomes;
    let expected: Vec<IngestOutcome> = (0..5_000)
        .map(|n| match n % 4 {
            0 => IngestOutcome::Duplicate,
            _ => IngestOutcome::Accepted,
        })
        .chain(std::iter::repeat_n(IngestOutcome::Duplicate, 10))
        .collect();
    assert_eq!(outcomes, expected);
    let (start, end) = whole_day();
    assert_eq!(stored(&*store, tenant_id, start, end).await, 5_000);
    assert_eq!(counted(&*store, tenant_id, start, end).await, 5_000);
    // The stored copy of a key stored before is the first one, at 09:00.
    let kept = store.event(tenant_id, &id(4)).await.unwrap().unwrap();
    assert_eq!(kept.timestamp, at(9, 0, 0));
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
        .unwrap()
        .outcomes;
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
    assert_eq!(stored(&*store, tenant_a, start, end).await, 1);
    assert_eq!(stored(&*store, tenant_b, start, end).await, 1);
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
    let outcomes = store.append(&second).await.unwrap().outcomes;
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| **outcome == IngestOutcome::Duplicate)
            .count(),
        25
    );
    let (start, end) = whole_day();
    assert_eq!(stored(&*store, tenant_id, start, end).await, 75);
    assert_eq!(counted(&*store, tenant_id, start, end).await, 75);
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
        counted(&*store, tenant_id, at(10, 0, 0), at(11, 0, 0)).await,
        1
    );
    assert_eq!(
        counted(&*store, tenant_id, at(11, 0, 0), at(12, 0, 0)).await,
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

/// PostgreSQL writes a new batch by COPY and a batch holding a retried key by `INSERT …
/// ON CONFLICT`; both must store identical values, down to sub-microsecond timestamps
/// before PostgreSQL's 2000 epoch.
async fn a_batch_with_a_retried_event_stores_the_same_fields(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let template = |event_id: &str| Event {
        tenant_id,
        event_id: event_id.into(),
        event_type: "purchase".into(),
        user_id: Some("user-7".into()),
        session_id: None,
        timestamp: Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap()
            + Duration::nanoseconds(999_999_500),
        client_timestamp: Some(at(7, 15, 0) + Duration::nanoseconds(1_500)),
        received_at: at(9, 15, 1),
        properties_json: r#"{"amount": 12.5, "tags": ["a"]}"#.into(),
    };
    let fresh = store.append(&[template("fresh")]).await.unwrap().outcomes;
    assert_eq!(fresh, [IngestOutcome::Accepted]);
    let mixed = store
        .append(&[template("fresh"), template("after-retry")])
        .await
        .unwrap()
        .outcomes;
    assert_eq!(mixed, [IngestOutcome::Duplicate, IngestOutcome::Accepted]);
    let read = |event_id: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let event = store.event(tenant_id, event_id).await.unwrap().unwrap();
            let properties: serde_json::Value =
                serde_json::from_str(&event.properties_json).unwrap();
            (
                Event {
                    event_id: String::new(),
                    properties_json: String::new(),
                    ..event
                },
                properties,
            )
        }
    };
    let (fresh, fresh_properties) = read("fresh").await;
    assert_eq!((fresh.clone(), fresh_properties), read("after-retry").await);
    // Both rows counted in the rollup hour of the stored timestamp.
    let stored = fresh.timestamp;
    let hour = stored
        - Duration::seconds(stored.timestamp().rem_euclid(3600))
        - Duration::nanoseconds(i64::from(stored.timestamp_subsec_nanos()));
    assert_eq!(
        counted(&*store, tenant_id, hour, hour + Duration::hours(1)).await,
        2
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
                    Ok(appended) => break appended.outcomes,
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
    assert_eq!(stored(&*store, tenant_id, start, end).await, 500);
    assert_eq!(counted(&*store, tenant_id, start, end).await, 500);
}

async fn tenant_names_are_unique(store: Arc<dyn Store>) {
    store.create_tenant("acme", &Actor::Cli).await.unwrap();
    match store.create_tenant("acme", &Actor::Cli).await {
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
        expires_at: None,
        rate_limit: None,
    }
}

async fn api_keys_are_created_listed_and_revoked(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let key = api_key(tenant_id, "k1", &[Scope::Ingest, Scope::Query]);
    store.create_api_key(&key, &Actor::Cli).await.unwrap();
    assert_eq!(store.api_key("k1").await.unwrap(), Some(key.clone()));
    assert_eq!(store.api_key("missing").await.unwrap(), None);
    assert_eq!(
        store.list_api_keys(tenant_id).await.unwrap(),
        std::slice::from_ref(&key)
    );
    let revoked = store.revoke_api_key("k1", &Actor::Cli).await.unwrap();
    let revoked_at = revoked.revoked_at.expect("revoke time set");
    assert!(!revoked.allows(Scope::Ingest));
    let again = store.revoke_api_key("k1", &Actor::Cli).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(revoked_at),
        "second revoke keeps the first time"
    );
    assert!(matches!(
        store.revoke_api_key("nope", &Actor::Cli).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn api_key_for_a_missing_tenant_is_not_found(store: Arc<dyn Store>) {
    let key = api_key(TenantId::generate(), "k1", &[Scope::Ingest]);
    assert!(matches!(
        store.create_api_key(&key, &Actor::Cli).await,
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

/// sqlx leaves Nagle's algorithm on; with it, each COPY's closing message waited for the
/// server's delayed acknowledgement (README "Performance").
#[tokio::test]
async fn postgres_tcp_connections_run_with_nagle_off() {
    use sqlx::Connection;
    let url = testing::fresh_postgres_database().await;
    assert!(
        url.contains("127.0.0.1") || url.contains("localhost"),
        "this test needs a TCP URL, got {url}"
    );
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    assert!(
        eventline_store::postgres::disable_nagle(&mut connection)
            .await
            .unwrap(),
        "found and set this connection's socket"
    );
}

#[tokio::test]
async fn harness_gives_each_test_its_own_postgres_database() {
    let first = testing::fresh_postgres_database().await;
    let second = testing::fresh_postgres_database().await;
    assert_ne!(first, second);
}

fn listing(tenant_id: TenantId, order: Order, limit: usize) -> EventQuery {
    let (start, end) = whole_day();
    EventQuery {
        tenant_id,
        filter: EventFilter::default(),
        start,
        end,
        order,
        after: None,
        committed_before: None,
        limit,
    }
}

fn ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|event| event.event_id.as_str()).collect()
}

async fn listing_is_newest_first_with_ties_by_event_id_and_half_open_windows(
    store: Arc<dyn Store>,
) {
    let tenant_id = tenant(&*store, "acme").await;
    store
        .append(&[
            event(tenant_id, "at-start", "view", at(10, 0, 0)),
            event(tenant_id, "tie-b", "view", at(10, 30, 0)),
            event(tenant_id, "tie-a", "view", at(10, 30, 0)),
            event(tenant_id, "tie-c", "view", at(10, 30, 0)),
            event(tenant_id, "at-end", "view", at(11, 0, 0)),
        ])
        .await
        .unwrap();
    let mut query = listing(tenant_id, Order::NewestFirst, 100);
    query.start = at(10, 0, 0);
    query.end = at(11, 0, 0);
    let page = store.list_events(&query).await.unwrap();
    assert_eq!(
        ids(&page),
        ["tie-c", "tie-b", "tie-a", "at-start"],
        "end excluded, start included"
    );
    query.order = Order::OldestFirst;
    let page = store.list_events(&query).await.unwrap();
    assert_eq!(ids(&page), ["at-start", "tie-a", "tie-b", "tie-c"]);
}

async fn keyset_pages_stay_correct_while_new_events_arrive(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let original: Vec<Event> = (0..10)
        .map(|n| event(tenant_id, &format!("e{n:02}"), "view", at(10, n, 0)))
        .collect();
    store.append(&original).await.unwrap();
    let mut query = listing(tenant_id, Order::NewestFirst, 3);
    let mut seen = Vec::new();
    for round in 0..10 {
        let page = store.list_events(&query).await.unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|event| event.event_id.clone()));
        let last = page.last().unwrap();
        query.after = Some(Position {
            timestamp: last.timestamp,
            event_id: last.event_id.clone(),
        });
        // Newer events and an event tied with the page boundary arrive between pages.
        store
            .append(&[
                event(tenant_id, &format!("new{round}"), "view", at(12, round, 0)),
                event(tenant_id, &format!("zz-tie{round}"), "view", last.timestamp),
            ])
            .await
            .unwrap();
    }
    let expected: Vec<String> = (0..10).rev().map(|n| format!("e{n:02}")).collect();
    let originals: Vec<&String> = seen.iter().filter(|id| id.starts_with('e')).collect();
    assert_eq!(
        originals,
        expected.iter().collect::<Vec<_>>(),
        "every original event once, in order"
    );
    assert!(
        seen.iter().all(|id| !id.starts_with("new")),
        "newer events do not shift later pages"
    );
}

async fn filters_select_by_type_user_and_properties(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let mut pro = event(tenant_id, "pro", "signup", at(10, 0, 0));
    pro.properties_json = r#"{"plan":"pro","seats":5,"trial":false}"#.into();
    let mut free = event(tenant_id, "free", "signup", at(10, 1, 0));
    free.properties_json = r#"{"plan":"free","seats":1,"trial":true}"#.into();
    free.user_id = Some("u2".into());
    let mut view = event(tenant_id, "view", "view", at(10, 2, 0));
    view.properties_json = r#"{"plan":"pro","nested":{"plan":"free"}}"#.into();
    store.append(&[pro, free, view]).await.unwrap();
    let select = |filter: EventFilter| {
        let store = Arc::clone(&store);
        async move {
            let mut query = listing(tenant_id, Order::OldestFirst, 100);
            query.filter = filter;
            ids(&store.list_events(&query).await.unwrap())
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    let property = |text: &str| PropertyFilter::parse("property_filters[0]", text).unwrap();
    assert_eq!(
        select(EventFilter {
            event_type: Some("signup".into()),
            ..Default::default()
        })
        .await,
        ["pro", "free"]
    );
    assert_eq!(
        select(EventFilter {
            user_id: Some("u2".into()),
            ..Default::default()
        })
        .await,
        ["free"]
    );
    assert_eq!(
        select(EventFilter {
            properties: vec![property("plan=pro")],
            ..Default::default()
        })
        .await,
        ["pro", "view"]
    );
    assert_eq!(
        select(EventFilter {
            properties: vec![property("seats=5")],
            ..Default::default()
        })
        .await,
        ["pro"]
    );
    assert_eq!(
        select(EventFilter {
            properties: vec![property("trial=true")],
            ..Default::default()
        })
        .await,
        ["free"]
    );
    assert_eq!(
        select(EventFilter {
            properties: vec![property("plan=pro"), property("seats=5")],
            ..Default::default()
        })
        .await,
        ["pro"]
    );
    assert!(
        select(EventFilter {
            properties: vec![property("seats=\"5\"")],
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

async fn oldest_first_reads_resume_after_a_position(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let events: Vec<Event> = (0..7)
        .map(|n| event(tenant_id, &format!("x{n}"), "view", at(9, n, 0)))
        .collect();
    store.append(&events).await.unwrap();
    let mut query = listing(tenant_id, Order::OldestFirst, 4);
    let first = store.list_events(&query).await.unwrap();
    assert_eq!(ids(&first), ["x0", "x1", "x2", "x3"]);
    query.after = Some(Position {
        timestamp: first[3].timestamp,
        event_id: first[3].event_id.clone(),
    });
    let rest = store.list_events(&query).await.unwrap();
    assert_eq!(ids(&rest), ["x4", "x5", "x6"]);
}

async fn counts_equal_counting_the_events_for_every_window_and_grouping(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let types = ["view", "click", "buy"];
    let events: Vec<Event> = (0..300u32)
        .map(|n| {
            event(
                tenant_id,
                &format!("r{n}"),
                types[(n % 7 % 3) as usize],
                at(n % 24, n % 60, n % 59),
            )
        })
        .collect();
    store.append(&events).await.unwrap();
    // Retries and a late duplicate must not move the counts.
    store.append(&events[..50]).await.unwrap();
    // The whole day (day or hour rollups), a window with unaligned edges (raw rows, then
    // minute and hour rollups where a store keeps them) and one inside a single minute.
    let windows = [
        whole_day(),
        (at(3, 17, 25), at(20, 42, 10)),
        (at(5, 10, 5), at(5, 10, 50)),
    ];
    for (start, end) in windows {
        for grouping in [
            Grouping::Total,
            Grouping::EventType,
            Grouping::Bucket(BucketWidth::Minute),
            Grouping::Bucket(BucketWidth::Hour),
            Grouping::Bucket(BucketWidth::Day),
        ] {
            for event_type in [None, Some("click".to_owned())] {
                let query = CountQuery {
                    tenant_id,
                    event_type: event_type.clone(),
                    start,
                    end,
                    grouping,
                };
                let mut counted = store.count(&query).await.unwrap();
                let mut expected = expected_counts(&events, &query);
                let key = |row: &CountRow| (row.bucket, row.event_type.clone());
                counted.sort_by_key(key);
                expected.sort_by_key(key);
                assert_eq!(
                    counted, expected,
                    "{start}..{end} {grouping:?} {event_type:?}"
                );
            }
        }
    }
}

/// What counting `events` by hand gives for `query`: the rows any store must return.
fn expected_counts(events: &[Event], query: &CountQuery) -> Vec<CountRow> {
    let mut groups: std::collections::BTreeMap<(Option<DateTime<Utc>>, Option<String>), u64> =
        Default::default();
    for event in events.iter().filter(|event| {
        event.timestamp >= query.start
            && event.timestamp < query.end
            && query
                .event_type
                .as_ref()
                .is_none_or(|event_type| *event_type == event.event_type)
    }) {
        let key = match query.grouping {
            Grouping::Total => (None, None),
            Grouping::EventType => (None, Some(event.event_type.clone())),
            Grouping::Bucket(width) => (Some(width.floor(event.timestamp)), None),
        };
        *groups.entry(key).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((bucket, event_type), count)| CountRow {
            bucket,
            event_type,
            count,
        })
        .collect()
}

/// What a live tail does: read the tenant's commits after its position and below the
/// horizon, move on to the last one read, and repeat until it has `expected` events or
/// 60 s have passed. A horizon that ran ahead of a commit would make it move past that
/// commit's events for good.
async fn follow_commits(
    store: Arc<dyn Store>,
    tenant_id: TenantId,
    expected: usize,
) -> Vec<(u64, String)> {
    let mut received: Vec<(u64, String)> = Vec::new();
    let mut after = (0, String::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while received.len() < expected && tokio::time::Instant::now() < deadline {
        let horizon = store.commit_horizon(tenant_id).await.unwrap();
        let page = store
            .list_committed(&CommittedQuery {
                tenant_id,
                filter: EventFilter::default(),
                min_timestamp: None,
                after: after.clone(),
                horizon,
                limit: 37,
            })
            .await
            .unwrap();
        match page.last() {
            Some((sequence, event)) => after = (*sequence, event.event_id.clone()),
            None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
        received.extend(
            page.into_iter()
                .map(|(sequence, event)| (sequence, event.event_id)),
        );
    }
    received
}

async fn live_reads_of_each_tenant_miss_nothing_while_many_tenants_commit_at_once(
    store: Arc<dyn Store>,
) {
    // Each commit holds three tenants' events (on Citus: one distributed transaction over
    // the workers holding them); four writers commit at once while one reader per tenant
    // follows its commits live from the start.
    const TENANTS: usize = 6;
    const WRITERS: usize = 4;
    const BATCHES: usize = 12;
    const PER_TENANT: usize = 10;
    let mut tenants = Vec::new();
    for index in 0..TENANTS {
        tenants.push(tenant(&*store, &format!("t{index}")).await);
    }
    let mut expected = vec![std::collections::BTreeSet::new(); TENANTS];
    let mut batches = Vec::new();
    for writer in 0..WRITERS {
        let mut writer_batches = Vec::new();
        for batch in 0..BATCHES {
            let mut events = Vec::new();
            for offset in 0..3 {
                let index = (writer + batch + offset * 2) % TENANTS;
                for n in 0..PER_TENANT {
                    let event_id = format!("w{writer}-b{batch}-n{n}");
                    expected[index].insert(event_id.clone());
                    events.push(event(tenants[index], &event_id, "view", at(10, 0, 0)));
                }
            }
            writer_batches.push(events);
        }
        batches.push(writer_batches);
    }
    let readers: Vec<_> = tenants
        .iter()
        .zip(&expected)
        .map(|(tenant_id, ids)| {
            tokio::spawn(follow_commits(Arc::clone(&store), *tenant_id, ids.len()))
        })
        .collect();
    let writers: Vec<_> = batches
        .into_iter()
        .map(|writer_batches| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for events in writer_batches {
                    store.append(&events).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for ((reader, ids), tenant_id) in readers.into_iter().zip(&expected).zip(&tenants) {
        let received = reader.await.unwrap();
        let received_ids: Vec<&str> = received.iter().map(|(_, id)| id.as_str()).collect();
        let distinct: std::collections::BTreeSet<String> =
            received.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(
            distinct.len(),
            received.len(),
            "tenant {tenant_id}: an event came twice: {received_ids:?}"
        );
        assert_eq!(&distinct, ids, "tenant {tenant_id}: events missed");
        assert!(
            received.windows(2).all(|pair| pair[0] < pair[1]),
            "tenant {tenant_id}: not in commit order: {received:?}"
        );
    }
}

async fn commit_order_reads_deliver_each_event_once_below_the_horizon(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    store
        .append(&[
            event(tenant_id, "a1", "view", at(10, 0, 0)),
            event(tenant_id, "a2", "view", at(9, 0, 0)),
        ])
        .await
        .unwrap();
    let mut live = CommittedQuery {
        tenant_id,
        filter: EventFilter::default(),
        min_timestamp: None,
        after: (0, String::new()),
        horizon: 0,
        limit: 100,
    };
    let (first_horizon, before) =
        eventline_store::testing::horizon_covering(&*store, &live, 2).await;
    let mut before_ids: Vec<&str> = before
        .iter()
        .map(|(_, event)| event.event_id.as_str())
        .collect();
    before_ids.sort_unstable();
    assert_eq!(before_ids, ["a1", "a2"]);

    store
        .append(&[event(tenant_id, "b1", "view", at(8, 0, 0))])
        .await
        .unwrap();
    let (last_sequence, last_event) = before.last().unwrap();
    live.after = (*last_sequence, last_event.event_id.clone());
    live.horizon = first_horizon;
    assert!(
        store.list_committed(&live).await.unwrap().is_empty(),
        "a later commit lies beyond an earlier horizon"
    );
    let mut history = listing(tenant_id, Order::OldestFirst, 100);
    history.committed_before = Some(first_horizon);
    assert_eq!(
        ids(&store.list_events(&history).await.unwrap()),
        ["a2", "a1"]
    );

    let (_, after) = eventline_store::testing::horizon_covering(&*store, &live, 1).await;
    let after: Vec<&str> = after
        .iter()
        .map(|(_, event)| event.event_id.as_str())
        .collect();
    assert_eq!(
        after,
        ["b1"],
        "an event committed later, with an older timestamp, is not skipped"
    );
    live.min_timestamp = Some(at(9, 30, 0));
    live.after = (0, String::new());
    let (_, recent) = eventline_store::testing::horizon_covering(&*store, &live, 1).await;
    let recent: Vec<&str> = recent
        .iter()
        .map(|(_, event)| event.event_id.as_str())
        .collect();
    assert_eq!(recent, ["a1"]);
}

async fn watermarks_are_visible_after_append(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let appended = store
        .append(&[event(tenant_id, "w", "view", at(10, 0, 0))])
        .await
        .unwrap();
    let watermark = appended.watermarks.of(tenant_id);
    assert!(!watermark.is_empty());
    assert!(store.watermark_visible(tenant_id, watermark).await.unwrap());
    assert!(matches!(
        store.watermark_visible(tenant_id, "not a watermark").await,
        Err(StoreError::ForeignWatermark(_))
    ));
}

async fn reads_never_cross_tenants(store: Arc<dyn Store>) {
    let tenant_a = tenant(&*store, "a").await;
    let tenant_b = tenant(&*store, "b").await;
    store
        .append(&[event(tenant_a, "secret", "view", at(10, 0, 0))])
        .await
        .unwrap();
    assert!(
        store
            .list_events(&listing(tenant_b, Order::NewestFirst, 100))
            .await
            .unwrap()
            .is_empty()
    );
    let (start, end) = whole_day();
    let counts = CountQuery {
        tenant_id: tenant_b,
        event_type: None,
        start,
        end,
        grouping: Grouping::EventType,
    };
    assert!(store.count(&counts).await.unwrap().is_empty());
    let live = CommittedQuery {
        tenant_id: tenant_b,
        filter: EventFilter::default(),
        min_timestamp: None,
        after: (0, String::new()),
        horizon: store.commit_horizon(tenant_b).await.unwrap(),
        limit: 100,
    };
    assert!(store.list_committed(&live).await.unwrap().is_empty());
}

async fn a_live_read_starting_at_the_horizon_includes_the_next_commit(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    store
        .append(&[event(tenant_id, "before", "view", at(10, 0, 0))])
        .await
        .unwrap();
    let probe = CommittedQuery {
        tenant_id,
        filter: EventFilter::default(),
        min_timestamp: None,
        after: (0, String::new()),
        horizon: 0,
        limit: 100,
    };
    let (horizon, _) = eventline_store::testing::horizon_covering(&*store, &probe, 1).await;
    store
        .append(&[event(tenant_id, "next", "view", at(10, 0, 1))])
        .await
        .unwrap();
    let from_horizon = CommittedQuery {
        after: (horizon, String::new()),
        ..probe
    };
    let (_, page) = eventline_store::testing::horizon_covering(&*store, &from_horizon, 1).await;
    let ids: Vec<&str> = page
        .iter()
        .map(|(_, event)| event.event_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["next"],
        "(horizon, \"\") is exclusive of nothing at the horizon"
    );
}

async fn api_keys_keep_their_expiry_and_rate_limit(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let mut key = api_key(tenant_id, "k1", &[Scope::Ingest]);
    key.expires_at = Some(at(9, 30, 0));
    key.rate_limit = Some(RateLimit {
        events_per_second: 100,
        burst: 250,
    });
    store.create_api_key(&key, &Actor::Cli).await.unwrap();
    let stored = store.api_key("k1").await.unwrap().expect("stored");
    assert_eq!(stored, key);
    assert!(stored.expired_at(at(9, 30, 0)));
    assert!(!stored.expired_at(at(9, 29, 59)));
    let plain = api_key(tenant_id, "k2", &[Scope::Query]);
    store.create_api_key(&plain, &Actor::Cli).await.unwrap();
    let listed = store.list_api_keys(tenant_id).await.unwrap();
    assert_eq!(listed, [key, plain]);
}

async fn every_admin_change_is_audited_in_its_transaction(store: Arc<dyn Store>) {
    let boot = api_key(TenantId::generate(), "boot", &[Scope::Ingest]);
    assert!(store.bootstrap("default", &boot).await.unwrap());
    let acme = store
        .create_tenant("acme", &Actor::AdminToken)
        .await
        .unwrap();
    let mut key = api_key(acme.tenant_id, "k1", &[Scope::Ingest, Scope::Query]);
    key.rate_limit = Some(RateLimit {
        events_per_second: 5,
        burst: 5,
    });
    store
        .create_api_key(&key, &Actor::Key("admin-key".into()))
        .await
        .unwrap();
    store
        .revoke_api_key("k1", &Actor::AdminToken)
        .await
        .unwrap();
    // A refused change leaves no record.
    assert!(
        store
            .create_tenant("acme", &Actor::AdminToken)
            .await
            .is_err()
    );
    assert!(
        store
            .create_api_key(
                &api_key(TenantId::generate(), "k2", &[Scope::Ingest]),
                &Actor::Cli
            )
            .await
            .is_err()
    );
    let all = store
        .list_audit_events(&AuditQuery {
            tenant_id: None,
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    let trail: Vec<(String, AuditAction, String)> = all
        .iter()
        .rev()
        .map(|event| (event.actor.clone(), event.action, event.target.clone()))
        .collect();
    assert_eq!(
        trail,
        [
            (
                "bootstrap".into(),
                AuditAction::TenantCreated,
                boot.tenant_id.to_string()
            ),
            ("bootstrap".into(), AuditAction::KeyCreated, "boot".into()),
            (
                "admin_token".into(),
                AuditAction::TenantCreated,
                acme.tenant_id.to_string()
            ),
            ("key:admin-key".into(), AuditAction::KeyCreated, "k1".into()),
            ("admin_token".into(), AuditAction::KeyRevoked, "k1".into()),
        ]
    );
    let key_created = &all[1];
    assert_eq!(key_created.tenant_id, acme.tenant_id);
    assert_eq!(key_created.details["scopes"], "ingest,query");
    assert_eq!(key_created.details["events_per_second"], "5");
    assert_eq!(all[2].details["name"], "acme");
}

async fn audit_pages_are_newest_first_and_scoped_to_a_tenant(store: Arc<dyn Store>) {
    let acme = tenant(&*store, "acme").await;
    let other = tenant(&*store, "other").await;
    let mut recorded = Vec::new();
    for index in 0..5 {
        let mut event = eventline_core::AuditEvent::new(
            if index % 2 == 0 { acme } else { other },
            &Actor::Key(format!("key-{index}")),
            AuditAction::ExpiredKeyUsed,
            &format!("key-{index}"),
        );
        // Two records in the same microsecond are ordered by their id.
        event.occurred_at = at(10, 0, index / 2);
        store.record_audit(&event).await.unwrap();
        recorded.push(event);
    }
    let page = |tenant_id: Option<TenantId>, before: Option<&eventline_core::AuditEvent>| {
        let store = Arc::clone(&store);
        let query = AuditQuery {
            tenant_id,
            before: before.map(|event| (event.occurred_at, event.audit_id.clone())),
            limit: 2,
        };
        async move { store.list_audit_events(&query).await.unwrap() }
    };
    let mut walked: Vec<eventline_core::AuditEvent> = Vec::new();
    loop {
        let next = page(Some(acme), walked.last()).await;
        if next.is_empty() {
            break;
        }
        assert!(next.len() <= 2, "pages hold at most the limit");
        walked.extend(next);
    }
    assert!(walked.iter().all(|event| event.tenant_id == acme));
    // acme's records: its creation (now, so newest) and the three recorded above.
    assert_eq!(walked.len(), 4);
    assert_eq!(walked[0].action, AuditAction::TenantCreated);
    let mut expected: Vec<_> = recorded
        .iter()
        .filter(|event| event.tenant_id == acme)
        .cloned()
        .collect();
    expected.sort_by(|left, right| {
        (right.occurred_at, &right.audit_id).cmp(&(left.occurred_at, &left.audit_id))
    });
    assert_eq!(&walked[1..], &expected[..]);
    let everyone = page(None, None).await;
    assert_eq!(everyone.len(), 2);
    assert!(
        everyone
            .iter()
            .all(|event| event.action == AuditAction::TenantCreated)
    );
}

async fn the_write_pool_reports_its_open_and_idle_connections(store: Arc<dyn Store>) {
    // An append goes through the write pool, so it holds at least one connection after.
    let tenant_id = tenant(&*store, "acme").await;
    store
        .append(&[event(tenant_id, "p1", "view", at(10, 0, 0))])
        .await
        .unwrap();
    let status = store.pool_status();
    assert!(status.open >= 1, "{status:?}");
    assert!(status.idle <= status.open, "{status:?}");
}

/// Events of 30 users over the 32 hours around 2026-11-20 00:00 UTC: types that funnels
/// and retention ask about, ties at one timestamp (every time is a whole 20 minutes),
/// users without a `user_id`, and two plans. Another tenant gets the same events, to be
/// counted never.
async fn analytics_events(store: &dyn Store) -> (TenantId, Vec<Event>) {
    let tenant_id = tenant(store, "acme").await;
    let other = tenant(store, "other").await;
    let types = ["view", "signup", "buy", "login"];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let first = at(0, 0, 0) - Duration::hours(8);
    let events: Vec<Event> = (0..600)
        .map(|n| {
            let user = next(32);
            let timestamp = first + Duration::minutes(20 * next(96) as i64);
            let mut event = event(
                tenant_id,
                &format!("a{n:04}"),
                types[next(4) as usize],
                timestamp,
            );
            // Users 30 and 31 stand for events sent without a user id.
            event.user_id = (user < 30).then(|| format!("user{user:02}"));
            if next(3) == 0 {
                event.properties_json = r#"{"plan":"free"}"#.to_owned();
            }
            event
        })
        .collect();
    append_with_copies_for(store, &events, other).await;
    (tenant_id, events)
}

/// Appends `events`, then the same events as `other`'s: identical users and ids in a
/// second tenant, which no answer about the first may count.
async fn append_with_copies_for(store: &dyn Store, events: &[Event], other: TenantId) {
    store.append(events).await.unwrap();
    let copies: Vec<Event> = events
        .iter()
        .map(|event| Event {
            tenant_id: other,
            ..event.clone()
        })
        .collect();
    store.append(&copies).await.unwrap();
}

/// Each user's events with a user id, grouped by user.
fn by_user(events: &[Event]) -> std::collections::BTreeMap<&str, Vec<&Event>> {
    let mut users: std::collections::BTreeMap<&str, Vec<&Event>> = Default::default();
    for event in events {
        if let Some(user_id) = &event.user_id {
            users.entry(user_id.as_str()).or_default().push(event);
        }
    }
    users
}

/// The longest chain of steps a user completes, by exhaustive search: the first step at
/// the user's first first-step time in the window, each next step another event at or
/// after the one before, all within the conversion window.
fn steps_reached(events: &[&Event], query: &eventline_core::query::FunnelQuery) -> usize {
    let Some(entered) = events
        .iter()
        .filter(|event| {
            event.event_type == query.steps[0]
                && event.timestamp >= query.start
                && event.timestamp < query.end
        })
        .map(|event| event.timestamp)
        .min()
    else {
        return 0;
    };
    fn extend(
        events: &[&Event],
        query: &eventline_core::query::FunnelQuery,
        entered: DateTime<Utc>,
        chain: &mut Vec<usize>,
    ) -> usize {
        let step = chain.len();
        if step == query.steps.len() {
            return step;
        }
        let mut best = step;
        for (index, event) in events.iter().enumerate() {
            let after = chain
                .last()
                .is_none_or(|&last| event.timestamp >= events[last].timestamp);
            let fits = if step == 0 {
                event.timestamp == entered
            } else {
                after && event.timestamp - entered <= query.conversion_window
            };
            if fits && event.event_type == query.steps[step] && !chain.contains(&index) {
                chain.push(index);
                best = best.max(extend(events, query, entered, chain));
                chain.pop();
            }
        }
        best
    }
    extend(events, query, entered, &mut Vec::new())
}

async fn funnels_match_an_independent_walk_of_the_events(store: Arc<dyn Store>) {
    let (tenant_id, events) = analytics_events(&*store).await;
    let pro = EventFilter {
        properties: vec![PropertyFilter::parse("property_filters[0]", "plan=pro").unwrap()],
        ..Default::default()
    };
    let cases = [
        (vec!["view", "signup", "buy"], 3, EventFilter::default()),
        (vec!["view", "view"], 2, EventFilter::default()),
        (vec!["signup", "view", "signup"], 6, EventFilter::default()),
        (vec!["login", "buy"], 4, pro.clone()),
    ];
    for (steps, hours, filter) in cases {
        let query = eventline_core::query::FunnelQuery {
            tenant_id,
            steps: steps.iter().map(|step| (*step).to_owned()).collect(),
            conversion_window: Duration::hours(hours),
            // Crosses midnight UTC; later steps may fall after the end.
            start: at(0, 0, 0) - Duration::hours(6),
            end: at(12, 0, 0),
            filter: filter.clone(),
            // Split by the entering event's plan ("free", "pro", or none for users 30
            // and 31, who have no user id and so never count).
            group_by_property: Some("plan".to_owned()),
        };
        let selected: Vec<Event> = events
            .iter()
            .filter(|event| filter.properties.is_empty() || !event.properties_json.contains("free"))
            .cloned()
            .collect();
        let mut expected = vec![0u64; steps.len()];
        let mut expected_by_value: std::collections::BTreeMap<Option<String>, Vec<u64>> =
            Default::default();
        for user_events in by_user(&selected).values() {
            let reached = steps_reached(user_events, &query);
            for users in &mut expected[..reached] {
                *users += 1;
            }
            // The entering event: the first step-1 event in the window, by (time, id).
            let Some(entering) = user_events
                .iter()
                .filter(|event| {
                    event.event_type == query.steps[0]
                        && event.timestamp >= query.start
                        && event.timestamp < query.end
                })
                .min_by_key(|event| (event.timestamp, event.event_id.clone()))
            else {
                continue;
            };
            let properties: serde_json::Value =
                serde_json::from_str(&entering.properties_json).unwrap();
            let value = properties.get("plan").map(serde_json::Value::to_string);
            let by_value = expected_by_value
                .entry(value)
                .or_insert_with(|| vec![0; steps.len()]);
            for users in &mut by_value[..reached] {
                *users += 1;
            }
        }
        let counts = store.funnel(&query).await.unwrap();
        assert_eq!(counts.reached, expected, "{steps:?} within {hours} h");
        // Ungrouped, distinct steps without a filter are answered from the timelines.
        let ungrouped = eventline_core::query::FunnelQuery {
            group_by_property: None,
            ..query.clone()
        };
        let ungrouped = store.funnel(&ungrouped).await.unwrap();
        assert_eq!(ungrouped.reached, expected, "{steps:?} ungrouped");
        assert!(ungrouped.by_value.is_empty());
        let by_value: std::collections::BTreeMap<Option<String>, Vec<u64>> =
            counts.by_value.into_iter().collect();
        assert_eq!(by_value, expected_by_value, "{steps:?} by plan");
        assert!(
            expected[0] > expected[steps.len() - 1],
            "the case drops users: {expected:?}"
        );
    }
}

/// Users per step of `query` over `events`, by exhaustive search (`steps_reached`).
fn expected_funnel(events: &[Event], query: &eventline_core::query::FunnelQuery) -> Vec<u64> {
    let mut expected = vec![0u64; query.steps.len()];
    for user_events in by_user(events).values() {
        for users in &mut expected[..steps_reached(user_events, query)] {
            *users += 1;
        }
    }
    expected
}

async fn prepared_timelines_answer_funnels_and_follow_late_events(store: Arc<dyn Store>) {
    let (tenant_id, mut events) = analytics_events(&*store).await;
    let (start, end) = (
        at(0, 0, 0) - Duration::hours(8),
        at(0, 0, 0) + Duration::hours(24),
    );
    // A breakdown asked once is kept ready by later passes.
    let by_plan = eventline_core::breakdown::BreakdownQuery {
        counting: CountQuery {
            event_type: Some("buy".to_owned()),
            ..CountQuery::total(tenant_id, start, end)
        },
        property: "plan".to_owned(),
    };
    store.breakdown(&by_plan).await.unwrap();
    let built = store.prepare_summaries(start, end).await.unwrap();
    assert!(built > 0, "nothing was prepared");
    assert_eq!(
        store.prepare_summaries(start, end).await.unwrap(),
        0,
        "a second pass rebuilt summaries that were current"
    );
    let query = eventline_core::query::FunnelQuery {
        tenant_id,
        steps: vec!["signup".into(), "buy".into(), "login".into()],
        conversion_window: Duration::hours(30),
        start,
        end,
        filter: EventFilter::default(),
        group_by_property: None,
    };
    let before = store.funnel(&query).await.unwrap().reached;
    assert_eq!(before, expected_funnel(&events, &query));
    // A new user takes all three steps in hours whose timelines are already stored.
    let late: Vec<Event> = ["signup", "buy", "login"]
        .iter()
        .enumerate()
        .map(|(n, step)| {
            let mut late = event(
                tenant_id,
                &format!("late{n}"),
                step,
                at(2, 0, 0) + Duration::hours(n as i64),
            );
            late.user_id = Some("newcomer".to_owned());
            late
        })
        .collect();
    store.append(&late).await.unwrap();
    events.extend(late);
    let after = store.funnel(&query).await.unwrap().reached;
    assert_eq!(after, expected_funnel(&events, &query));
    assert_eq!(after[2], before[2] + 1, "the late user was not counted");
    // The funnel rebuilt on its path the stale day timelines it read (its window holds
    // the whole day); the pass builds exactly the rest the late events made stale: the
    // user sketches of their three hours and their day (4), each type's timeline of its
    // hour (3), and the kept breakdown of `buy` by plan of its hour and of the day (2).
    assert_eq!(store.prepare_summaries(start, end).await.unwrap(), 9);
    assert_eq!(store.prepare_summaries(start, end).await.unwrap(), 0);
}

async fn retention_matches_an_independent_count_of_the_events(store: Arc<dyn Store>) {
    let (tenant_id, events) = analytics_events(&*store).await;
    for (start_type, return_type, interval) in [
        ("signup", "login", Duration::days(1)),
        ("view", "view", Duration::hours(6)),
        ("login", "buy", Duration::hours(4)),
    ] {
        let query = eventline_core::query::RetentionQuery {
            tenant_id,
            start_event_type: start_type.to_owned(),
            return_event_type: return_type.to_owned(),
            interval,
            start: at(0, 0, 0) - Duration::days(1),
            end: at(20, 0, 0),
        };
        let intervals = query.intervals();
        let interval_of = |time: DateTime<Utc>| {
            ((time - query.start).num_seconds() / interval.num_seconds()) as usize
        };
        let mut expected: Vec<(u64, Vec<u64>)> = (0..intervals)
            .map(|index| (0, vec![0; intervals - index]))
            .collect();
        for user_events in by_user(&events).values() {
            let in_window: Vec<&&Event> = user_events
                .iter()
                .filter(|event| event.timestamp >= query.start && event.timestamp < query.end)
                .collect();
            let Some(first) = in_window
                .iter()
                .filter(|event| event.event_type == start_type)
                .min_by_key(|event| event.timestamp)
            else {
                continue;
            };
            let cohort = interval_of(first.timestamp);
            expected[cohort].0 += 1;
            for later in 0..intervals - cohort {
                let came_back = in_window.iter().any(|event| {
                    event.event_type == return_type
                        && event.event_id != first.event_id
                        && event.timestamp >= first.timestamp
                        && interval_of(event.timestamp) == cohort + later
                });
                expected[cohort].1[later] += u64::from(came_back);
            }
        }
        let cohorts = store.retention(&query).await.unwrap();
        let table: Vec<(u64, Vec<u64>)> = cohorts
            .iter()
            .map(|cohort| (cohort.users, cohort.returned.clone()))
            .collect();
        assert_eq!(
            table, expected,
            "{start_type} → {return_type} per {interval}"
        );
        assert_eq!(cohorts[1].start, query.start + interval);
        assert!(
            expected
                .iter()
                .any(|(users, returned)| *users > 0 && returned.iter().sum::<u64>() > 0)
        );
    }
}

async fn breakdowns_match_an_independent_count_of_the_events(store: Arc<dyn Store>) {
    let (tenant_id, mut events) = analytics_events(&*store).await;
    // Values of every JSON kind, "5" beside 5, and events without the property.
    let plans = [
        r#"{"plan":"pro"}"#,
        r#"{"plan":5}"#,
        r#"{"plan":"5"}"#,
        r#"{"plan":true}"#,
        r#"{"plan":null}"#,
        r#"{"plan":{"seats":3,"tier":"a"}}"#,
        r#"{"plan":[1,"x"]}"#,
        r#"{"seats":1}"#,
        "{}",
    ];
    let more: Vec<Event> = (0..180)
        .map(|n| {
            let mut event = event(
                tenant_id,
                &format!("b{n:04}"),
                ["view", "buy"][n % 2],
                at(0, 0, 0) - Duration::hours(5) + Duration::minutes(7 * n as i64),
            );
            event.properties_json = plans[n % plans.len()].to_owned();
            event
        })
        .collect();
    store.append(&more).await.unwrap();
    events.extend(more);
    let (start, end) = (at(0, 0, 0) - Duration::hours(4), at(12, 30, 0));
    for (event_type, grouping) in [
        (None, Grouping::Total),
        (Some("view"), Grouping::Total),
        (None, Grouping::EventType),
        (None, Grouping::Bucket(BucketWidth::Hour)),
        (Some("buy"), Grouping::Bucket(BucketWidth::Day)),
    ] {
        let query = eventline_core::breakdown::BreakdownQuery {
            counting: CountQuery {
                tenant_id,
                event_type: event_type.map(str::to_owned),
                start,
                end,
                grouping,
            },
            property: "plan".to_owned(),
        };
        let mut expected: std::collections::BTreeMap<_, u64> = Default::default();
        for event in &events {
            if event.timestamp < start
                || event.timestamp >= end
                || event_type.is_some_and(|wanted| wanted != event.event_type)
            {
                continue;
            }
            let properties: serde_json::Value =
                serde_json::from_str(&event.properties_json).unwrap();
            let value = properties.get("plan").map(serde_json::Value::to_string);
            let (bucket, grouped_type) = match grouping {
                Grouping::Total => (None, None),
                Grouping::EventType => (None, Some(event.event_type.clone())),
                Grouping::Bucket(width) => (Some(width.floor(event.timestamp)), None),
            };
            *expected.entry((bucket, grouped_type, value)).or_default() += 1;
        }
        let rows = store.breakdown(&query).await.unwrap();
        let mut answered: std::collections::BTreeMap<_, u64> = Default::default();
        for row in &rows {
            let value = row.value.as_deref().map(|text| {
                serde_json::from_str::<serde_json::Value>(text)
                    .unwrap()
                    .to_string()
            });
            *answered
                .entry((row.bucket, row.event_type.clone(), value))
                .or_default() += row.count;
        }
        assert_eq!(answered, expected, "{event_type:?} by {grouping:?}");
        assert!(
            expected.keys().any(|(_, _, value)| value.is_none()) && expected.len() > 8,
            "the case covers missing values and many groups"
        );
    }
    // Whole hours were answered from stored summaries; a late event for one of them
    // changes its count, so its summary is rebuilt and the event counted.
    let mut late = event(tenant_id, "late", "view", at(2, 30, 0));
    late.properties_json = r#"{"plan":"late"}"#.to_owned();
    store.append(&[late]).await.unwrap();
    let total = eventline_core::breakdown::BreakdownQuery {
        counting: CountQuery {
            tenant_id,
            event_type: None,
            start,
            end,
            grouping: Grouping::Total,
        },
        property: "plan".to_owned(),
    };
    let rows = store.breakdown(&total).await.unwrap();
    let late_rows: u64 = rows
        .iter()
        .filter(|row| row.value.as_deref() == Some(r#""late""#))
        .map(|row| row.count)
        .sum();
    assert_eq!(late_rows, 1);
    let in_window = events
        .iter()
        .filter(|event| event.timestamp >= start && event.timestamp < end)
        .count() as u64;
    assert_eq!(rows.iter().map(|row| row.count).sum::<u64>(), in_window + 1);
}

async fn unique_users_match_an_independent_count_of_the_events(store: Arc<dyn Store>) {
    let (tenant_id, events) = analytics_events(&*store).await;
    // Windows crossing midnight UTC, with and without a type, in total and per bucket.
    let (start, end) = (at(0, 0, 0) - Duration::hours(7), at(9, 40, 0));
    for (event_type, grouping) in [
        (None, Grouping::Total),
        (Some("login"), Grouping::Total),
        (None, Grouping::Bucket(BucketWidth::Day)),
        (Some("view"), Grouping::Bucket(BucketWidth::Hour)),
        (None, Grouping::Bucket(BucketWidth::Minute)),
    ] {
        let query = CountQuery {
            tenant_id,
            event_type: event_type.map(str::to_owned),
            start,
            end,
            grouping,
        };
        let mut expected: std::collections::BTreeMap<
            Option<DateTime<Utc>>,
            std::collections::BTreeSet<&str>,
        > = Default::default();
        for event in &events {
            let Some(user_id) = &event.user_id else {
                continue;
            };
            if event.timestamp < start
                || event.timestamp >= end
                || event_type.is_some_and(|wanted| wanted != event.event_type)
            {
                continue;
            }
            let bucket = match grouping {
                Grouping::Bucket(width) => Some(width.floor(event.timestamp)),
                Grouping::Total | Grouping::EventType => None,
            };
            expected.entry(bucket).or_default().insert(user_id);
        }
        let expected: std::collections::BTreeMap<_, u64> = expected
            .into_iter()
            .map(|(bucket, users)| (bucket, users.len() as u64))
            .collect();
        let counted = store.count_users(&query, u64::MAX).await.unwrap();
        assert!(counted.exact);
        let answered: std::collections::BTreeMap<_, u64> = counted
            .rows
            .into_iter()
            .map(|row| (row.bucket, row.count))
            .collect();
        assert_eq!(answered, expected, "{event_type:?} by {grouping:?}");
        // Users 30 and 31 send no user id; the other tenant has the same users.
        assert!(expected.values().all(|&users| users <= 30), "{expected:?}");
    }
}

async fn unique_users_from_sketches_stay_within_two_percent_and_see_late_events(
    store: Arc<dyn Store>,
) {
    let tenant_id = tenant(&*store, "acme").await;
    let other = tenant(&*store, "other").await;
    let first = at(0, 0, 0) - Duration::days(2);
    // 100,000 users over three days, one event each, plus a second event for every
    // tenth user (repeats must not count) and the same users in another tenant.
    let spread = |n: i64| first + Duration::milliseconds(n * 2_592);
    let mut events: Vec<Event> = (0..100_000)
        .map(|n| {
            let mut event = event(tenant_id, &format!("e{n}"), "view", spread(n));
            event.user_id = Some(format!("user{n}"));
            event
        })
        .collect();
    events.extend((0..100_000).step_by(10).map(|n| {
        let mut event = event(tenant_id, &format!("r{n}"), "view", spread(99_999 - n));
        event.user_id = Some(format!("user{n}"));
        event
    }));
    for chunk in events.chunks(10_000) {
        append_with_copies_for(&*store, chunk, other).await;
    }
    // Unaligned edges: raw rows, whole hours and whole days all take part.
    let (start, end) = (
        first + Duration::minutes(30) + Duration::seconds(17),
        first + Duration::days(3) - Duration::minutes(10),
    );
    let truth = |events: &[Event], from: DateTime<Utc>, to: DateTime<Utc>| {
        events
            .iter()
            .filter(|event| event.timestamp >= from && event.timestamp < to)
            .filter_map(|event| event.user_id.as_deref())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as f64
    };
    let total = CountQuery {
        tenant_id,
        event_type: None,
        start,
        end,
        grouping: Grouping::Total,
    };
    let within_two_percent =
        |estimate: u64, expected: f64| ((estimate as f64 - expected) / expected).abs() <= 0.02;
    for round in 0..2 {
        // The second round reads the sketches the first one stored.
        let counted = store.count_users(&total, 0).await.unwrap();
        assert!(!counted.exact);
        let expected = truth(&events, start, end);
        assert!(
            within_two_percent(counted.rows[0].count, expected),
            "round {round}: {} against {expected}",
            counted.rows[0].count
        );
    }
    let daily = CountQuery {
        grouping: Grouping::Bucket(BucketWidth::Day),
        ..total.clone()
    };
    let counted = store.count_users(&daily, 0).await.unwrap();
    assert_eq!(counted.rows.len(), 3);
    for row in &counted.rows {
        let day = row.bucket.unwrap();
        let expected = truth(&events, day.max(start), (day + Duration::days(1)).min(end));
        assert!(
            within_two_percent(row.count, expected),
            "{day}: {} against {expected}",
            row.count
        );
    }
    // 10,000 new users arrive late for the middle day: its stored sketch is stale now.
    let late: Vec<Event> = (0..10_000)
        .map(|n| {
            let mut event = event(
                tenant_id,
                &format!("late{n}"),
                "view",
                first + Duration::days(1) + Duration::seconds(n),
            );
            event.user_id = Some(format!("late-user{n}"));
            event
        })
        .collect();
    store.append(&late).await.unwrap();
    events.extend(late);
    let counted = store.count_users(&total, 0).await.unwrap();
    let expected = truth(&events, start, end);
    assert!(
        within_two_percent(counted.rows[0].count, expected),
        "after late events: {} against {expected}",
        counted.rows[0].count
    );
    let exact = store.count_users(&total, u64::MAX).await.unwrap();
    assert!(exact.exact);
    assert_eq!(exact.rows[0].count, expected as u64);
}
