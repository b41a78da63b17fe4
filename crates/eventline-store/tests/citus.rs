//! What only a Citus cluster can show (README "Scale out"): the schema distributed by
//! `migrate`, a single-node database converted, tail horizons that wait for a worker's
//! prepared transaction, and tenants spread over the workers. Run by `scripts/test-citus`
//! (`EVENTLINE_TEST_CITUS=1`), which also runs the store conformance suite, the query tests
//! and the crash test on the same three-node cluster; outside it these tests fail, never
//! skip.

use chrono::{DateTime, TimeZone, Utc};
use eventline_core::{
    Actor, AuditQuery, Event, TenantId,
    query::{CommittedQuery, CountQuery, EventFilter},
};
use eventline_store::{Store, postgres::PgStore, testing};
use sqlx::{Connection, PgPool, Row};

fn citus_cluster() {
    assert!(
        testing::citus_requested(),
        "these tests need the three-node Citus cluster: run scripts/test-citus"
    );
}

fn event(tenant_id: TenantId, event_id: &str, timestamp: DateTime<Utc>) -> Event {
    Event {
        tenant_id,
        event_id: event_id.to_owned(),
        event_type: "view".to_owned(),
        user_id: Some("u1".to_owned()),
        session_id: None,
        timestamp,
        client_timestamp: None,
        received_at: timestamp,
        properties_json: r#"{"plan":"pro"}"#.to_owned(),
    }
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// The Citus table type of each eventline table, and the colocation group of each.
async fn table_types(pool: &PgPool) -> Vec<(String, String, i32)> {
    sqlx::query_as(
        "SELECT table_name::text, citus_table_type, colocation_id FROM citus_tables
         ORDER BY table_name::text",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn store_on(url: &str) -> PgStore {
    let store = PgStore::connect(url, 4).await.unwrap();
    store.migrate().await.unwrap();
    store
}

#[tokio::test]
async fn citus_migrate_distributes_by_tenant_colocated_and_twice_changes_nothing() {
    citus_cluster();
    let url = testing::fresh_postgres_database().await;
    let store = store_on(&url).await;
    assert!(store.is_distributed());
    let tables = table_types(store.pool()).await;
    let kinds: Vec<(&str, &str)> = tables
        .iter()
        .map(|(name, kind, _)| (name.as_str(), kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("alert_deliveries", "distributed"),
            ("alert_rules", "distributed"),
            ("api_keys", "reference"),
            ("audit_events", "distributed"),
            ("bucket_summaries", "distributed"),
            ("event_rollups_daily", "distributed"),
            ("event_rollups_hourly", "distributed"),
            ("event_rollups_minutely", "distributed"),
            ("event_schemas", "distributed"),
            ("event_search", "distributed"),
            ("events", "distributed"),
            ("quarantined_events", "distributed"),
            ("search_indexes", "distributed"),
            ("subscriptions", "distributed"),
            ("tenants", "reference"),
            ("user_deletions", "distributed"),
        ]
    );
    let events_group = tables.iter().find(|(name, ..)| name == "events").unwrap().2;
    for (name, kind, group) in &tables {
        if kind == "distributed" {
            assert_eq!(*group, events_group, "{name} is colocated with events");
        }
    }
    let distribution: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition
         WHERE partmethod = 'h'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(distribution, ["tenant_id"]);
    let delegated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_object
         WHERE classid = 'pg_proc'::regclass AND distribution_argument_index = 0
           AND colocationid = $1",
    )
    .bind(events_group)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        delegated, 3,
        "horizon, WAL position and visibility run on the worker"
    );

    store.migrate().await.expect("a second migrate");
    assert_eq!(table_types(store.pool()).await, tables);
}

#[tokio::test]
async fn citus_statements_over_several_shards_fail_but_the_named_cross_tenant_listing_runs() {
    citus_cluster();
    let store = store_on(&testing::fresh_postgres_database().await).await;
    let tenants = [
        store.create_tenant("a", &Actor::Cli).await.unwrap(),
        store.create_tenant("b", &Actor::Cli).await.unwrap(),
    ];
    // The check every other test on this cluster relies on is live.
    let error = sqlx::query("SELECT count(*) FROM events")
        .execute(store.pool())
        .await
        .expect_err("a multi-shard statement fails in a test database");
    assert!(error.to_string().contains("multi-task"), "{error}");
    // The one statement allowed to fan out: the operator's audit trail of every tenant.
    let audit = store
        .list_audit_events(&AuditQuery {
            tenant_id: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    for tenant in &tenants {
        assert!(
            audit
                .iter()
                .any(|event| event.tenant_id == tenant.tenant_id)
        );
    }
}

#[tokio::test]
async fn citus_converts_a_database_first_migrated_on_one_postgresql() {
    citus_cluster();
    let (name, url) = testing::fresh_database_on_every_node().await;
    let single = store_on(&url).await;
    assert!(!single.is_distributed());
    let mut tenants = Vec::new();
    for index in 0..6 {
        let tenant_id = single
            .create_tenant(&format!("t{index}"), &Actor::Cli)
            .await
            .unwrap()
            .tenant_id;
        let events: Vec<Event> = (0..50)
            .map(|n| event(tenant_id, &format!("e{n}"), noon()))
            .collect();
        single.append(&events).await.unwrap();
        tenants.push(tenant_id);
    }
    let key = eventline_core::ApiKey {
        key_id: "k1".to_owned(),
        tenant_id: tenants[0],
        scopes: vec![eventline_core::Scope::Ingest],
        secret_hash: vec![7; 32],
        created_at: noon(),
        revoked_at: None,
        expires_at: None,
        rate_limit: None,
    };
    single.create_api_key(&key, &Actor::Cli).await.unwrap();
    single.pool().close().await;

    // The operator installs Citus, adds the workers and runs `eventline migrate` again.
    testing::enable_citus(&name).await;
    let store = store_on(&url).await;
    assert!(store.is_distributed());
    let window = (
        noon() - chrono::Duration::hours(1),
        noon() + chrono::Duration::hours(1),
    );
    for tenant_id in &tenants {
        let stored = testing::stored_events(&store, *tenant_id, window.0, window.1).await;
        assert_eq!(stored, 50);
        let counted = store
            .count(&CountQuery::total(*tenant_id, window.0, window.1))
            .await
            .unwrap();
        assert_eq!(counted.iter().map(|row| row.count).sum::<u64>(), 50);
    }
    assert!(store.api_key(&key.key_id).await.unwrap().is_some());
    // The rows moved to the workers: the coordinator keeps none of its own.
    let local: i64 = sqlx::query_scalar("SELECT pg_relation_size('events')")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(local, 0, "the coordinator's own events table is emptied");
    assert_eq!(rows_per_worker(store.pool()).await.iter().sum::<i64>(), 300);

    // A tail begun now sees the next commit and none of the converted history.
    let tenant_id = tenants[0];
    let horizon = store.commit_horizon(tenant_id).await.unwrap();
    store
        .append(&[event(tenant_id, "after", noon())])
        .await
        .unwrap();
    let live = committed_until(&store, tenant_id, (horizon, String::new()), 1).await;
    let ids: Vec<&str> = live
        .iter()
        .map(|(_, event)| event.event_id.as_str())
        .collect();
    assert_eq!(ids, ["after"]);
}

/// Rows of `events` on each node that holds shards, in port order.
async fn rows_per_worker(pool: &PgPool) -> Vec<i64> {
    let rows = sqlx::query(
        "SELECT s.nodeport, sum(r.result::bigint)::bigint
         FROM run_command_on_shards('events', 'SELECT count(*) FROM %s') r
         JOIN citus_shards s ON s.shardid = r.shardid
         GROUP BY s.nodeport ORDER BY s.nodeport",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|row| row.get::<i64, _>(1))
        .collect::<Vec<_>>()
}

/// The tenant's committed events after `after`, once `expected` of them lie below the
/// horizon.
async fn committed_until(
    store: &dyn Store,
    tenant_id: TenantId,
    after: (u64, String),
    expected: usize,
) -> Vec<(u64, Event)> {
    let query = CommittedQuery {
        tenant_id,
        filter: EventFilter::default(),
        min_timestamp: None,
        after,
        horizon: 0,
        limit: 1000,
    };
    testing::horizon_covering(store, &query, expected).await.1
}

#[tokio::test]
async fn citus_a_tail_waits_for_a_transaction_still_prepared_on_the_tenants_worker() {
    // Citus commits on the coordinator first and then on each worker (two-phase commit):
    // in between, the coordinator has nothing running while the worker's rows are still
    // invisible. A horizon read on the coordinator would let a tail pass those rows for
    // good; the tenant's worker holds its horizon below them until they commit.
    citus_cluster();
    let url = testing::fresh_postgres_database().await;
    let store = store_on(&url).await;
    let tenant_id = store
        .create_tenant("a", &Actor::Cli)
        .await
        .unwrap()
        .tenant_id;
    let start = store.commit_horizon(tenant_id).await.unwrap();
    store
        .append(&[event(tenant_id, "first", noon())])
        .await
        .unwrap();

    // The window itself, made on purpose: a transaction on the tenant's shard, prepared
    // on its worker and not yet committed.
    let shard = sqlx::query(
        "SELECT shard_name::text, nodeport FROM citus_shards
         WHERE table_name = 'events'::regclass
           AND shardid = get_shard_id_for_distribution_column('events', $1)",
    )
    .bind(tenant_id.0)
    .fetch_one(store.pool())
    .await
    .unwrap();
    let (shard_name, port): (String, i32) = (shard.get(0), shard.get(1));
    let database = url.rsplit('/').next().unwrap();
    let mut worker =
        sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{port}/{database}"))
            .await
            .unwrap();
    sqlx::query("BEGIN").execute(&mut worker).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {shard_name} (tenant_id, event_id, event_type, \"timestamp\",
                                   received_at, properties)
         VALUES ($1, 'prepared', 'view', $2, $2, '{{}}')"
    )))
    .bind(tenant_id.0)
    .bind(noon())
    .execute(&mut worker)
    .await
    .unwrap();
    let prepared = format!("eventline_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PREPARE TRANSACTION '{prepared}'"
    )))
    .execute(&mut worker)
    .await
    .unwrap();

    // A later commit of the same tenant: visible, but not yet deliverable.
    store
        .append(&[event(tenant_id, "later", noon())])
        .await
        .unwrap();
    let horizon = store.commit_horizon(tenant_id).await.unwrap();
    let below = store
        .list_committed(&CommittedQuery {
            tenant_id,
            filter: EventFilter::default(),
            min_timestamp: None,
            after: (start, String::new()),
            horizon,
            limit: 100,
        })
        .await
        .unwrap();
    let ids: Vec<&str> = below
        .iter()
        .map(|(_, event)| event.event_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["first"],
        "the horizon stops below the prepared transaction"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!("COMMIT PREPARED '{prepared}'")))
        .execute(&mut worker)
        .await
        .unwrap();
    let all = committed_until(&store, tenant_id, (start, String::new()), 3).await;
    let ids: Vec<&str> = all
        .iter()
        .map(|(_, event)| event.event_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["first", "prepared", "later"],
        "commit order, nothing skipped"
    );
}

#[tokio::test]
async fn citus_tenants_spread_over_both_workers_and_each_stays_on_one() {
    citus_cluster();
    let store = store_on(&testing::fresh_postgres_database().await).await;
    let mut batch = Vec::new();
    for index in 0..24 {
        let tenant_id = store
            .create_tenant(&format!("t{index}"), &Actor::Cli)
            .await
            .unwrap()
            .tenant_id;
        batch.extend((0..10).map(|n| event(tenant_id, &format!("e{n}"), noon())));
    }
    // One append of 24 tenants: one distributed transaction over both workers.
    let appended = store.append(&batch).await.unwrap();
    assert_eq!(appended.outcomes.len(), 240);
    let per_worker = rows_per_worker(store.pool()).await;
    assert_eq!(per_worker.len(), 2, "{per_worker:?}");
    assert_eq!(per_worker.iter().sum::<i64>(), 240);
    assert!(
        per_worker.iter().all(|rows| *rows >= 30),
        "24 tenants land on both workers: {per_worker:?}"
    );
    // Each tenant's watermark is its own worker's, and reads of that tenant see it.
    for event in batch.iter().step_by(10) {
        let watermark = appended.watermarks.of(event.tenant_id);
        assert!(!watermark.is_empty());
        assert!(
            store
                .watermark_visible(event.tenant_id, watermark)
                .await
                .unwrap()
        );
    }
}
