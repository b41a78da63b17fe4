//! The PostgreSQL store. A batch is written by binary COPY with the rollup upsert in the
//! same transaction; a batch holding a key that exists already (a retry) falls back to
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING RETURNING` and the same rollup
//! upsert over the rows it inserted.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, ApiKey, AuditAction, AuditEvent, AuditQuery, Event, IngestOutcome, Scope, Tenant,
    TenantId,
    breakdown::{BreakdownQuery, BreakdownRow},
    query::{
        Cohort, CommittedQuery, CountQuery, CountRow, EventQuery, FunnelCounts, FunnelQuery,
        RetentionQuery, UserCounts,
    },
};
use sqlx::{
    PgPool, Row,
    postgres::{PgPoolOptions, PgRow},
};
use uuid::Uuid;

use crate::{Appended, Store, StoreError, Watermarks};

mod alerts;
mod cached;
mod copy;
mod lifecycle;
mod nodelay;
mod read;
mod search;
mod streams;

pub use copy::{RollupGrain, copy_events, upsert_rollups_into};
pub use nodelay::disable_nagle;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The channel every append notifies after COMMIT.
pub const COMMIT_CHANNEL: &str = "eventline_commits";

/// Calls `on_commit` whenever any replica commits events, until the task is aborted.
/// Reconnects after connection loss; a missed notification only delays a tail until its
/// next poll.
pub fn listen_for_commits(
    url: String,
    on_commit: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut listener) => {
                    if let Err(error) = listener.listen(COMMIT_CHANNEL).await {
                        tracing::warn!(error = %error, "cannot LISTEN for commits");
                    } else {
                        while listener.recv().await.is_ok() {
                            on_commit();
                        }
                    }
                }
                Err(error) => tracing::warn!(error = %error, "commit listener cannot connect"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
}

/// A PostgreSQL-backed store. Reads go to `read_pool`, which is a replica's when
/// `database.read_url` is set and the primary's otherwise.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    read_pool: PgPool,
    slots: std::sync::Arc<RollupSlots>,
    /// Whether the database has Citus (README "Scale out"): then commit sequences,
    /// horizons and watermarks come from each tenant's worker, not the coordinator.
    citus: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether `read_pool` is a replica's rather than the primary's own.
    replica: bool,
}

/// The rollup slots of this process's write transactions in flight: each takes one no
/// other holds (migration 0008), so concurrent commits never wait on each other's rollup
/// rows. At most as many slots as appends ever ran at once (the writer's workers).
#[derive(Debug, Default)]
struct RollupSlots {
    free: std::sync::Mutex<Vec<i16>>,
    issued: std::sync::atomic::AtomicI16,
}

impl RollupSlots {
    /// The lowest free slot, held until the returned guard drops.
    fn take(&self) -> RollupSlot<'_> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let slot = reused.unwrap_or_else(|| {
            self.issued
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        RollupSlot { slots: self, slot }
    }
}

struct RollupSlot<'a> {
    slots: &'a RollupSlots,
    slot: i16,
}

impl Drop for RollupSlot<'_> {
    fn drop(&mut self) {
        let mut free = self
            .slots
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        free.push(self.slot);
        // Lowest last, so `take` hands out the fewest distinct slots.
        free.sort_unstable_by(|a, b| b.cmp(a));
    }
}

impl PgStore {
    /// Connects a pool of at most `max_connections` to `url`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = pool_options(max_connections).connect(url).await?;
        let citus: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
        )
        .fetch_one(&pool)
        .await?;
        Ok(Self {
            read_pool: pool.clone(),
            pool,
            slots: std::sync::Arc::default(),
            citus: std::sync::Arc::new(citus.into()),
            replica: false,
        })
    }

    /// Whether the events are distributed over Citus workers.
    pub fn is_distributed(&self) -> bool {
        self.citus.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends reads to the replica at `read_url`.
    pub async fn with_read_replica(
        mut self,
        read_url: &str,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        self.read_pool = pool_options(max_connections).connect(read_url).await?;
        self.replica = true;
        Ok(self)
    }

    /// Applies pending migrations (sqlx holds an advisory lock, so replicas may race),
    /// then distributes the tables when the database has Citus: idempotent, so it also
    /// converts a database first migrated on one PostgreSQL (migration 0009).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        let mut transaction = self.pool.begin().await?;
        // Replicas starting together distribute one after the other; the second finds
        // everything done.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('eventline_distribute'))")
            .execute(&mut *transaction)
            .await?;
        let distributed: bool = sqlx::query_scalar("SELECT eventline_distribute()")
            .fetch_one(&mut *transaction)
            .await?;
        transaction.commit().await?;
        self.citus
            .store(distributed, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The pool, for tests and diagnostics.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The fast path: one binary COPY and the rollup upsert in one transaction. Fails with
    /// [`StoreError::Conflict`], having changed nothing, when any key exists already.
    async fn append_by_copy(&self, events: &[Event], order: &[usize]) -> Result<(), StoreError> {
        let slot = self.slots.take();
        let mut transaction = self.pool.begin().await?;
        let rows = || order.iter().map(|&index| &events[index]);
        copy::copy_events(&mut transaction, rows()).await?;
        copy::upsert_rollups(&mut transaction, rows(), slot.slot).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Writes `events` by the exact path only, never by COPY; returns how many were new.
    /// The bench measures this statement shape against raw COPY.
    pub async fn append_by_insert(&self, events: &[Event]) -> Result<usize, StoreError> {
        Ok(self
            .append_on_conflict(events, &key_order(events))
            .await?
            .len())
    }

    /// The exact path for batches holding keys that exist already: `INSERT … ON CONFLICT
    /// DO NOTHING RETURNING`, then the same rollup upsert as the COPY path over the rows
    /// it inserted, in one transaction. Returns the indices of the inserted events.
    async fn append_on_conflict(
        &self,
        events: &[Event],
        order: &[usize],
    ) -> Result<Vec<usize>, StoreError> {
        let columns = Columns::from_sorted(events, order);
        let slot = self.slots.take();
        let mut transaction = self.pool.begin().await?;
        let inserted_keys: Vec<PgRow> = sqlx::query(include_str!("append.sql"))
            .bind(&columns.tenant_ids)
            .bind(&columns.event_ids)
            .bind(&columns.event_types)
            .bind(&columns.user_ids)
            .bind(&columns.session_ids)
            .bind(&columns.timestamps)
            .bind(&columns.client_timestamps)
            .bind(&columns.received_ats)
            .bind(&columns.properties)
            .fetch_all(&mut *transaction)
            .await?;
        let mut position: HashMap<(Uuid, &str), usize> = HashMap::with_capacity(order.len());
        for &index in order {
            position.insert(
                (events[index].tenant_id.0, events[index].event_id.as_str()),
                index,
            );
        }
        let mut inserted = Vec::with_capacity(inserted_keys.len());
        for row in &inserted_keys {
            let tenant_id: Uuid = row.try_get(0)?;
            let event_id: &str = row.try_get(1)?;
            if let Some(&index) = position.get(&(tenant_id, event_id)) {
                inserted.push(index);
            }
        }
        copy::upsert_rollups(
            &mut transaction,
            inserted.iter().map(|&index| &events[index]),
            slot.slot,
        )
        .await?;
        transaction.commit().await?;
        Ok(inserted)
    }

    /// On Citus: the WAL position of each tenant's worker after COMMIT, asked of
    /// the workers at once (each call is delegated by tenant_id), and the commit notice
    /// that wakes the tails of every server.
    async fn tenant_watermarks(&self, events: &[Event]) -> Result<Watermarks, StoreError> {
        // Every tenant of the batch, duplicates too: their first copy may be a moment old.
        let mut tenants: Vec<TenantId> = events.iter().map(|event| event.tenant_id).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let notify = sqlx::query("SELECT pg_notify($1, '')")
            .bind(COMMIT_CHANNEL)
            .execute(&self.pool);
        let positions = futures::future::try_join_all(tenants.iter().map(|tenant_id| {
            sqlx::query_scalar::<_, String>("SELECT eventline_wal_position($1)")
                .bind(tenant_id.0)
                .fetch_one(&self.pool)
        }));
        let (_, positions) = futures::future::try_join(notify, positions).await?;
        Ok(Watermarks::PerTenant(
            tenants.into_iter().zip(positions).collect(),
        ))
    }
}

/// A pool of at most `max_connections`, each with Nagle's algorithm off (see `nodelay`).
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(std::time::Duration::from_secs(5))
        .after_connect(|connection, _| {
            Box::pin(async move { disable_nagle(connection).await.map(drop) })
        })
}

/// Indices of `events` in `(tenant_id, event_id)` order, the first of each repeated key
/// only: concurrent writers then lock rows in one order, and a statement never meets
/// the same key twice.
fn key_order(events: &[Event]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_unstable_by(|&left, &right| {
        (events[left].tenant_id, &events[left].event_id, left).cmp(&(
            events[right].tenant_id,
            &events[right].event_id,
            right,
        ))
    });
    order.dedup_by(|right, left| {
        events[*left].tenant_id == events[*right].tenant_id
            && events[*left].event_id == events[*right].event_id
    });
    order
}

/// The batch as one array per column, rows ordered by `(tenant_id, event_id)` so that
/// concurrent writers take row locks in the same order and cannot deadlock.
#[derive(Default)]
struct Columns<'a> {
    tenant_ids: Vec<Uuid>,
    event_ids: Vec<&'a str>,
    event_types: Vec<&'a str>,
    user_ids: Vec<Option<&'a str>>,
    session_ids: Vec<Option<&'a str>>,
    timestamps: Vec<DateTime<Utc>>,
    client_timestamps: Vec<Option<DateTime<Utc>>>,
    received_ats: Vec<DateTime<Utc>>,
    properties: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn from_sorted(events: &'a [Event], order: &[usize]) -> Self {
        let mut columns = Columns::default();
        for &index in order {
            let event = &events[index];
            columns.tenant_ids.push(event.tenant_id.0);
            columns.event_ids.push(&event.event_id);
            columns.event_types.push(&event.event_type);
            columns.user_ids.push(event.user_id.as_deref());
            columns.session_ids.push(event.session_id.as_deref());
            columns.timestamps.push(event.timestamp);
            columns.client_timestamps.push(event.client_timestamp);
            columns.received_ats.push(event.received_at);
            columns.properties.push(&event.properties_json);
        }
        columns
    }
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, events: &[Event]) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Ok(Appended {
                outcomes: Vec::new(),
                watermarks: Watermarks::Shared(String::new()),
            });
        }
        let order = key_order(events);
        let inserted = match self.append_by_copy(events, &order).await {
            // Every distinct key was new.
            Ok(()) => order,
            Err(StoreError::Conflict(_)) => self.append_on_conflict(events, &order).await?,
            Err(error) => return Err(error),
        };
        // Repeats within the batch and keys stored before are duplicates.
        let mut outcomes = vec![IngestOutcome::Duplicate; events.len()];
        for index in inserted {
            outcomes[index] = IngestOutcome::Accepted;
        }
        let watermarks = if self.is_distributed() {
            self.tenant_watermarks(events).await?
        } else {
            // Read after COMMIT: a reader whose WAL position reached it sees this batch.
            // The same round trip wakes the tails of every replica.
            Watermarks::Shared(
                sqlx::query_scalar("SELECT pg_current_wal_lsn()::text FROM pg_notify($1, '')")
                    .bind(COMMIT_CHANNEL)
                    .fetch_one(&self.pool)
                    .await?,
            )
        };
        Ok(Appended {
            outcomes,
            watermarks,
        })
    }

    async fn watermark_visible(
        &self,
        tenant_id: TenantId,
        watermark: &str,
    ) -> Result<bool, StoreError> {
        let query = if self.is_distributed() {
            // Delegated to the tenant's worker (or, on a secondary cluster, its replica).
            sqlx::query_scalar("SELECT eventline_wal_visible($1, $2::pg_lsn)").bind(tenant_id.0)
        } else {
            sqlx::query_scalar(
                "SELECT coalesce(pg_last_wal_replay_lsn(), pg_current_wal_lsn()) >= $1::pg_lsn",
            )
        };
        let visible: Option<bool> = query
            .bind(watermark)
            .fetch_one(&self.read_pool)
            .await
            .map_err(|error| match StoreError::from(error) {
                StoreError::Internal(_) => StoreError::ForeignWatermark(format!(
                    "{watermark:?} is not a watermark of this server"
                )),
                other => other,
            })?;
        Ok(visible.unwrap_or(false))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        crate::error::check_migrations(applied, &MIGRATOR)
    }

    async fn create_tenant(&self, name: &str, actor: &Actor) -> Result<Tenant, StoreError> {
        let tenant_id = TenantId::generate();
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO tenants (tenant_id, name) VALUES ($1, $2) RETURNING created_at",
        )
        .bind(tenant_id.0)
        .bind(name)
        .fetch_one(&mut *transaction)
        .await
        .map_err(|error| tenant_name_conflict(error, name))?;
        let tenant = Tenant {
            tenant_id,
            name: name.to_owned(),
            created_at: row.try_get(0)?,
        };
        let audit = AuditEvent::tenant_created(&tenant, actor);
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(tenant)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, name, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn bootstrap(&self, name: &str, key: &ApiKey) -> Result<bool, StoreError> {
        let mut transaction = self.pool.begin().await?;
        // Serialises concurrent first starts of several replicas.
        sqlx::query("LOCK TABLE tenants IN EXCLUSIVE MODE")
            .execute(&mut *transaction)
            .await?;
        let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
            .fetch_one(&mut *transaction)
            .await?;
        if existing > 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO tenants (tenant_id, name) VALUES ($1, $2)")
            .bind(key.tenant_id.0)
            .bind(name)
            .execute(&mut *transaction)
            .await?;
        insert_key(&mut *transaction, key).await?;
        let audits = crate::bootstrap_audit(name, key);
        for audit in &audits {
            insert_audit(&mut *transaction, audit).await?;
        }
        transaction.commit().await?;
        audits.iter().for_each(AuditEvent::log);
        Ok(true)
    }

    async fn create_api_key(&self, key: &ApiKey, actor: &Actor) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        insert_key(&mut *transaction, key)
            .await
            .map_err(|error| crate::missing_tenant(error, key.tenant_id))?;
        let audit = AuditEvent::key_created(key, actor);
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1"
        )))
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_api_keys(&self, tenant_id: TenantId) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, key_id"
        )))
        .bind(tenant_id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_api_key(&self, key_id: &str, actor: &Actor) -> Result<ApiKey, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE key_id = $1
             RETURNING {KEY_COLUMNS}"
        )))
        .bind(key_id)
        // Bound rather than now(): Citus refuses a volatile function inside coalesce.
        .bind(Utc::now())
        .fetch_optional(&mut *transaction)
        .await?;
        let key = key_from_row(&row.ok_or_else(|| crate::missing_key(key_id))?)?;
        let audit = AuditEvent::new(key.tenant_id, actor, AuditAction::KeyRevoked, key_id);
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(key)
    }

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        insert_audit(&self.pool, event).await?;
        event.log();
        Ok(())
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT audit_id, tenant_id, actor, action, target, occurred_at, details::text
             FROM audit_events WHERE true",
        );
        if let Some(tenant_id) = query.tenant_id {
            sql.push(" AND tenant_id = ").push_bind(tenant_id.0);
        }
        if let Some((time, audit_id)) = &query.before {
            sql.push(" AND (occurred_at, audit_id) < (")
                .push_bind(*time)
                .push(", ")
                .push_bind(audit_id.clone())
                .push(")");
        }
        sql.push(" ORDER BY occurred_at DESC, audit_id DESC LIMIT ")
            .push_bind(query.limit as i64);
        let rows = if query.tenant_id.is_none() && self.is_distributed() {
            let mut transaction = self.pool.begin().await?;
            allow_cross_tenant(&mut transaction).await?;
            let rows = sql.build().fetch_all(&mut *transaction).await?;
            transaction.commit().await?;
            rows
        } else {
            sql.build().fetch_all(&self.pool).await?
        };
        rows.iter()
            .map(|row| {
                crate::audit_from_parts(crate::AuditParts {
                    audit_id: row.try_get(0)?,
                    tenant_id: TenantId(row.try_get(1)?),
                    actor: row.try_get(2)?,
                    action: row.try_get(3)?,
                    target: row.try_get(4)?,
                    occurred_at: row.try_get(5)?,
                    details_json: row.try_get(6)?,
                })
            })
            .collect()
    }

    async fn event(
        &self,
        tenant_id: TenantId,
        event_id: &str,
    ) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query(
            r#"SELECT tenant_id, event_id, event_type, user_id, session_id, "timestamp",
                      client_timestamp, received_at, properties::text
               FROM events WHERE tenant_id = $1 AND event_id = $2"#,
        )
        .bind(tenant_id.0)
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        read::list_events(&self.read_pool, query).await
    }

    async fn count(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError> {
        crate::counts::tiled(query, read::ROLLUPS, |source, tile| async move {
            read::count(&self.read_pool, &tile, source).await
        })
        .await
    }

    async fn count_users(
        &self,
        query: &CountQuery,
        exact_up_to_events: u64,
    ) -> Result<UserCounts, StoreError> {
        let (rows, exact) = crate::uniques::count_users(self, query, exact_up_to_events).await?;
        Ok(UserCounts { rows, exact })
    }

    async fn breakdown(&self, query: &BreakdownQuery) -> Result<Vec<BreakdownRow>, StoreError> {
        crate::breakdowns::breakdown(self, query).await
    }

    async fn funnel(&self, query: &FunnelQuery) -> Result<FunnelCounts, StoreError> {
        if crate::timelines::answers_funnel(self, query).await? {
            return crate::timelines::funnel(self, query).await;
        }
        let reading = crate::analytics::Reading::funnel(query);
        read::with_user_events(&self.read_pool, &reading, async |events| {
            crate::analytics::funnel(events, query).await
        })
        .await
    }

    async fn retention(&self, query: &RetentionQuery) -> Result<Vec<Cohort>, StoreError> {
        if crate::timelines::answers_retention(self, query).await? {
            return crate::timelines::retention(self, query).await;
        }
        let reading = crate::analytics::Reading::retention(query);
        read::with_user_events(&self.read_pool, &reading, async |events| {
            crate::analytics::retention(events, query).await
        })
        .await
    }

    async fn prepare_summaries(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let tenants = self.list_tenants().await?;
        crate::timelines::prepare_summaries(self, &tenants, start, end).await
    }

    fn pool_status(&self) -> crate::PoolStatus {
        crate::PoolStatus {
            open: self.pool.size(),
            idle: self.pool.num_idle() as u32,
        }
    }

    async fn replica_lag(&self) -> Result<Option<crate::ReplicaLag>, StoreError> {
        if !self.replica {
            return Ok(None);
        }
        // The primary's position first: the replica can only be closer by the time it is
        // asked, so the lag is never overstated.
        let primary: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.pool)
            .await?;
        let (bytes, seconds): (f64, f64) = sqlx::query_as(
            "SELECT coalesce(pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()), 0)::float8,
                    CASE WHEN pg_last_wal_replay_lsn() IS NULL
                              OR pg_last_wal_replay_lsn() >= $1::pg_lsn THEN 0
                         ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
                    END::float8",
        )
        .bind(primary)
        .fetch_one(&self.read_pool)
        .await?;
        Ok(Some(crate::ReplicaLag {
            bytes: bytes.max(0.0) as u64,
            seconds: seconds.max(0.0),
        }))
    }

    async fn commit_horizon(&self, tenant_id: TenantId) -> Result<u64, StoreError> {
        let horizon: i64 = if self.is_distributed() {
            // Delegated to the worker that stamped the tenant's commit sequences.
            sqlx::query_scalar("SELECT eventline_commit_horizon($1)")
                .bind(tenant_id.0)
                .fetch_one(&self.read_pool)
                .await?
        } else {
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(&self.read_pool)
                .await?
        };
        Ok(horizon.max(0) as u64)
    }

    async fn list_committed(
        &self,
        query: &CommittedQuery,
    ) -> Result<Vec<(u64, Event)>, StoreError> {
        read::list_committed(&self.read_pool, query).await
    }
}

/// Lets the rest of `transaction` run statements over every shard. On Citus every
/// statement of eventline is a router query (one tenant, one shard, one worker), and an
/// operator may enforce that with `citus.multi_task_query_log_level = 'error'`; the only
/// statement that may fan out is the operator's audit listing across tenants
/// (`AdminService.ListAuditEvents` without a tenant). README "Scale out" names it.
async fn allow_cross_tenant(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<(), StoreError> {
    sqlx::query("SET LOCAL citus.multi_task_query_log_level = 'off'")
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

async fn insert_key<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    key: &ApiKey,
) -> Result<(), StoreError> {
    let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_keys (key_id, tenant_id, scopes, secret_hash, created_at, expires_at,
                               events_per_second, burst)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.key_id)
    .bind(key.tenant_id.0)
    .bind(&scopes)
    .bind(&key.secret_hash)
    .bind(key.created_at)
    .bind(key.expires_at)
    .bind(key.rate_limit.map(|limit| limit.events_per_second as i32))
    .bind(key.rate_limit.map(|limit| limit.burst as i32))
    .execute(executor)
    .await?;
    Ok(())
}

async fn insert_audit<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, audit_id, occurred_at, actor, action, target, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
    )
    .bind(event.tenant_id.0)
    .bind(&event.audit_id)
    .bind(event.occurred_at)
    .bind(&event.actor)
    .bind(event.action.as_str())
    .bind(&event.target)
    .bind(crate::details_json(event))
    .execute(executor)
    .await?;
    Ok(())
}

/// The columns [`key_from_row`] reads, in its order.
const KEY_COLUMNS: &str = "key_id, tenant_id, scopes, secret_hash, created_at, revoked_at, \
                           expires_at, events_per_second, burst";

fn tenant_name_conflict(error: sqlx::Error, name: &str) -> StoreError {
    match StoreError::from(error) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("tenant name {name:?} is taken")),
        other => other,
    }
}

fn tenant_from_row(row: &PgRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        tenant_id: TenantId(row.try_get(0)?),
        name: row.try_get(1)?,
        created_at: row.try_get(2)?,
    })
}

fn key_from_row(row: &PgRow) -> Result<ApiKey, StoreError> {
    let scope_names: Vec<String> = row.try_get(2)?;
    let scopes = scope_names
        .iter()
        .map(|name| name.parse::<Scope>().map_err(StoreError::Internal))
        .collect::<Result<_, _>>()?;
    Ok(ApiKey {
        key_id: row.try_get(0)?,
        tenant_id: TenantId(row.try_get(1)?),
        scopes,
        secret_hash: row.try_get(3)?,
        created_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
        expires_at: row.try_get(6)?,
        rate_limit: crate::rate_limit_from_columns(row.try_get(7)?, row.try_get(8)?)?,
    })
}

pub(crate) fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        tenant_id: TenantId(row.try_get(0)?),
        event_id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        user_id: row.try_get(3)?,
        session_id: row.try_get(4)?,
        timestamp: row.try_get(5)?,
        client_timestamp: row.try_get(6)?,
        received_at: row.try_get(7)?,
        properties_json: row.try_get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::RollupSlots;

    #[test]
    fn writers_in_flight_hold_distinct_slots_and_free_ones_are_reused_lowest_first() {
        let slots = RollupSlots::default();
        let first = slots.take();
        let second = slots.take();
        let third = slots.take();
        assert_eq!((first.slot, second.slot, third.slot), (0, 1, 2));
        drop(second);
        drop(first);
        let again = slots.take();
        assert_eq!(again.slot, 0, "the lowest free slot comes back first");
        let next = slots.take();
        assert_eq!(next.slot, 1);
        assert_eq!(slots.take().slot, 3, "a slot in use is never handed out");
        drop((again, next, third));
    }
}
