//! The embedded SQLite store: zero set-up, one file in the data directory, WAL mode with
//! full synchronous commits so that an acknowledged event survives a crash.

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    path::Path,
    str::FromStr,
    time::Duration,
};

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
    Row, Sqlite, SqlitePool,
    pool::PoolConnection,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};
use uuid::Uuid;

use crate::{Appended, Store, StoreError, hour_of};

mod alerts;
mod cached;
mod lifecycle;
mod read;
mod search;
mod streams;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// A SQLite-backed store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection that every append uses. A connection throws its page cache away
    /// when another one wrote since its last transaction; with appends spread over the
    /// pool, each began cold and re-read its index pages from the file (README
    /// "Performance").
    write_pool: SqlitePool,
    /// Set by the background checkpoints when the WAL should start over; the next
    /// append does that before it begins (see `checkpoint_in_background`).
    wal_restart_due: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating if needed) `eventline.sqlite3` in `data_dir`.
    pub async fn open_dir(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::Config(format!(
                "cannot create data dir {}: {error}",
                data_dir.display()
            ))
        })?;
        let options = SqliteConnectOptions::new().filename(data_dir.join("eventline.sqlite3"));
        Self::connect_with(options).await
    }

    /// Opens a `sqlite:` URL.
    pub async fn connect_url(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| StoreError::Config(format!("invalid sqlite url: {error}")))?;
        Self::connect_with(options).await
    }

    async fn connect_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // 32 MB of page cache a connection (2 MB by default), filled only as used: the
            // indexes' hot pages stay in the writer's (README "Performance").
            .pragma("cache_size", "-32768")
            // Commits never checkpoint; `checkpoint_in_background` does (see there).
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let wal_restart_due = std::sync::Arc::default();
        checkpoint_in_background(pool.clone(), std::sync::Arc::clone(&wal_restart_due));
        Ok(Self {
            pool,
            write_pool,
            wal_restart_due,
        })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The writers' connection, after restarting the WAL if the background checkpoints
    /// asked for it (see `checkpoint_in_background`).
    async fn write_connection(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        let mut connection = self.write_pool.acquire().await?;
        if self
            .wal_restart_due
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
                .fetch_one(&mut *connection)
                .await?;
            if busy != 0 {
                // A reader still used the WAL; the next write tries again.
                self.wal_restart_due
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(connection)
    }

    /// Closes every connection (checkpointing the WAL into the file) and stops the
    /// background checkpoints.
    pub async fn close(&self) {
        self.write_pool.close().await;
        self.pool.close().await;
    }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// WAL frames (pages) past which the WAL is started again: 64 MiB of 4 KiB pages. Each
/// restart delays one commit (README "Performance"), so they are kept rare.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] off the ingest path. SQLite's
/// automatic checkpoint runs inside whichever commit pushes the WAL past 1,000 pages, and
/// that commit's acknowledgements waited for the copy and its fsync: it set the ack p99
/// at half load (README "Performance"). A PASSIVE checkpoint blocks neither readers nor
/// the writer, but under steady writes it never catches up with the WAL's end, so the
/// WAL would only grow. Once it holds [`WAL_RESTART_FRAMES`], `wal_restart_due` asks the
/// next append to run a RESTART checkpoint before it begins: the writer then copies only
/// what the passive checkpoint left, and the WAL starts again from its beginning. (Run
/// from here, a RESTART checkpoint starved waiting for the writer's lock.) Ends when the
/// store's pool is closed.
fn checkpoint_in_background(
    pool: SqlitePool,
    wal_restart_due: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    tokio::spawn(async move {
        while !pool.is_closed() {
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
            let passive: Result<(i64, i64, i64), _> =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&pool)
                    .await;
            match passive {
                Ok((_busy, wal_frames, _copied)) if wal_frames >= WAL_RESTART_FRAMES => {
                    wal_restart_due.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(error = %error, "WAL checkpoint"),
            }
        }
    });
}

pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(crate) fn from_micros(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Internal(format!("stored time {value} is out of range")))
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, events: &[Event]) -> Result<Appended, StoreError> {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut rollup: BTreeMap<(String, i64, &str), i64> = BTreeMap::new();
        // BEGIN IMMEDIATE takes the write lock up front instead of failing on upgrade.
        let mut connection = self.write_connection().await?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await?;
        let result: Result<i64, StoreError> = async {
            let (inserted, last_rowid) = insert_events(&mut connection, events).await?;
            for (event, inserted) in events.iter().zip(inserted) {
                if inserted {
                    let key = (
                        event.tenant_id.to_string(),
                        micros(hour_of(event.timestamp)),
                        event.event_type.as_str(),
                    );
                    *rollup.entry(key).or_default() += 1;
                    outcomes.push(IngestOutcome::Accepted);
                } else {
                    outcomes.push(IngestOutcome::Duplicate);
                }
            }
            add_to_hourly_rollup(&mut connection, &rollup).await?;
            // One writer: the largest rowid once this commits is this batch's watermark.
            Ok(last_rowid)
        }
        .await;
        match result {
            Ok(last_rowid) => {
                sqlx::query("COMMIT").execute(&mut *connection).await?;
                Ok(Appended {
                    outcomes,
                    watermarks: crate::Watermarks::Shared(last_rowid.to_string()),
                })
            }
            Err(error) => {
                // A failed ROLLBACK leaves the connection unusable: drop it from the pool.
                if sqlx::query("ROLLBACK")
                    .execute(&mut *connection)
                    .await
                    .is_err()
                {
                    connection.close_on_drop();
                }
                Err(error)
            }
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        crate::error::check_migrations(applied, &MIGRATOR)
    }

    async fn create_tenant(&self, name: &str, actor: &Actor) -> Result<Tenant, StoreError> {
        let tenant = Tenant {
            tenant_id: TenantId::generate(),
            name: name.to_owned(),
            created_at: eventline_core::time::now(),
        };
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO tenants (tenant_id, name, created_us) VALUES (?, ?, ?)")
            .bind(tenant.tenant_id.to_string())
            .bind(name)
            .bind(micros(tenant.created_at))
            .execute(&mut *transaction)
            .await
            .map_err(|error| match StoreError::from(error) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("tenant name {name:?} is taken"))
                }
                other => other,
            })?;
        let audit = AuditEvent::tenant_created(&tenant, actor);
        insert_audit(&mut transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(tenant)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, name, created_us FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn bootstrap(&self, name: &str, key: &ApiKey) -> Result<bool, StoreError> {
        let mut connection = self.write_connection().await?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await?;
        let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
            .fetch_one(&mut *connection)
            .await?;
        if existing > 0 {
            sqlx::query("ROLLBACK").execute(&mut *connection).await?;
            return Ok(false);
        }
        let created = async {
            sqlx::query("INSERT INTO tenants (tenant_id, name, created_us) VALUES (?, ?, ?)")
                .bind(key.tenant_id.to_string())
                .bind(name)
                .bind(micros(key.created_at))
                .execute(&mut *connection)
                .await?;
            insert_key(&mut connection, key).await?;
            let audits = crate::bootstrap_audit(name, key);
            for audit in &audits {
                insert_audit(&mut connection, audit).await?;
            }
            Ok::<_, StoreError>(audits)
        }
        .await;
        match created {
            Ok(audits) => {
                sqlx::query("COMMIT").execute(&mut *connection).await?;
                audits.iter().for_each(AuditEvent::log);
                Ok(true)
            }
            Err(error) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                Err(error)
            }
        }
    }

    async fn create_api_key(&self, key: &ApiKey, actor: &Actor) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_key(&mut transaction, key)
            .await
            .map_err(|error| crate::missing_tenant(error, key.tenant_id))?;
        let audit = AuditEvent::key_created(key, actor);
        insert_audit(&mut transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?"
        )))
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_api_keys(&self, tenant_id: TenantId) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = ? ORDER BY created_us, key_id"
        )))
        .bind(tenant_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_api_key(&self, key_id: &str, actor: &Actor) -> Result<ApiKey, StoreError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_keys SET revoked_us = coalesce(revoked_us, ?) WHERE key_id = ?
             RETURNING {KEY_COLUMNS}"
        )))
        .bind(micros(eventline_core::time::now()))
        .bind(key_id)
        .fetch_optional(&mut *transaction)
        .await?;
        let key = key_from_row(&row.ok_or_else(|| crate::missing_key(key_id))?)?;
        let audit = AuditEvent::new(key.tenant_id, actor, AuditAction::KeyRevoked, key_id);
        insert_audit(&mut transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(key)
    }

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?;
        insert_audit(&mut connection, event).await?;
        event.log();
        Ok(())
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT audit_id, tenant_id, actor, action, target, occurred_us, details
             FROM audit_events WHERE 1",
        );
        if let Some(tenant_id) = query.tenant_id {
            sql.push(" AND tenant_id = ")
                .push_bind(tenant_id.to_string());
        }
        if let Some((time, audit_id)) = &query.before {
            sql.push(" AND (occurred_us, audit_id) < (")
                .push_bind(micros(*time))
                .push(", ")
                .push_bind(audit_id.clone())
                .push(")");
        }
        sql.push(" ORDER BY occurred_us DESC, audit_id DESC LIMIT ")
            .push_bind(query.limit as i64);
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                crate::audit_from_parts(crate::AuditParts {
                    audit_id: row.try_get(0)?,
                    tenant_id: parse_tenant_id(row.try_get(1)?)?,
                    actor: row.try_get(2)?,
                    action: row.try_get(3)?,
                    target: row.try_get(4)?,
                    occurred_at: from_micros(row.try_get(5)?)?,
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
            "SELECT tenant_id, event_id, event_type, user_id, session_id, timestamp_us,
                    client_timestamp_us, received_us, properties
             FROM events WHERE tenant_id = ? AND event_id = ?",
        )
        .bind(tenant_id.to_string())
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn watermark_visible(
        &self,
        _tenant_id: TenantId,
        watermark: &str,
    ) -> Result<bool, StoreError> {
        let rowid: i64 = watermark.parse().map_err(|_| {
            StoreError::ForeignWatermark(format!("{watermark:?} is not a watermark of this server"))
        })?;
        let last: i64 = sqlx::query_scalar("SELECT coalesce(max(rowid), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(last >= rowid)
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        read::list_events(&self.pool, query).await
    }

    async fn count(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError> {
        crate::counts::tiled(query, read::ROLLUPS, |source, tile| async move {
            read::count(&self.pool, &tile, source).await
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
        read::with_user_events(&self.pool, &reading, async |events| {
            crate::analytics::funnel(events, query).await
        })
        .await
    }

    async fn retention(&self, query: &RetentionQuery) -> Result<Vec<Cohort>, StoreError> {
        if crate::timelines::answers_retention(self, query).await? {
            return crate::timelines::retention(self, query).await;
        }
        let reading = crate::analytics::Reading::retention(query);
        read::with_user_events(&self.pool, &reading, async |events| {
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

    async fn commit_horizon(&self, _tenant_id: TenantId) -> Result<u64, StoreError> {
        let horizon: i64 = sqlx::query_scalar("SELECT coalesce(max(rowid), 0) + 1 FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(horizon.max(0) as u64)
    }

    async fn list_committed(
        &self,
        query: &CommittedQuery,
    ) -> Result<Vec<(u64, Event)>, StoreError> {
        read::list_committed(&self.pool, query).await
    }
}

/// Rows per INSERT statement: 9 bound values each, 18,000 in all, below SQLite's limit
/// of 32,766. One statement per event cost a round trip to sqlx's SQLite thread per row,
/// which was most of the store's time; 2,000 rows measured a little faster than 500
/// (README "Performance").
const ROWS_PER_INSERT: usize = 2000;

/// Inserts `events` in the caller's transaction, in order, skipping keys stored before
/// and repeats within the batch; returns, per event, whether it was inserted, and the
/// table's largest rowid afterwards.
async fn insert_events(
    connection: &mut sqlx::SqliteConnection,
    events: &[Event],
) -> Result<(Vec<bool>, i64), StoreError> {
    // The first of each repeated key is the one that may be new.
    let mut first_of: HashMap<(Uuid, &str), usize> = HashMap::with_capacity(events.len());
    let mut candidates = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        if let Entry::Vacant(entry) = first_of.entry((event.tenant_id.0, event.event_id.as_str())) {
            entry.insert(index);
            candidates.push(index);
        }
    }
    let mut inserted = vec![false; events.len()];
    // One writer holds the write lock: rows this statement inserts get rowids above it.
    let mut last_rowid: i64 = sqlx::query_scalar("SELECT coalesce(max(rowid), 0) FROM events")
        .fetch_one(&mut *connection)
        .await?;
    for chunk in candidates.chunks(ROWS_PER_INSERT) {
        let mut builder = sqlx::QueryBuilder::new(
            "INSERT INTO events (tenant_id, event_id, event_type, user_id, session_id,
                 timestamp_us, client_timestamp_us, received_us, properties) ",
        );
        builder.push_values(chunk, |mut row, &index| {
            let event = &events[index];
            row.push_bind(event.tenant_id.to_string())
                .push_bind(event.event_id.as_str())
                .push_bind(event.event_type.as_str())
                .push_bind(event.user_id.as_deref())
                .push_bind(event.session_id.as_deref())
                .push_bind(micros(event.timestamp))
                .push_bind(event.client_timestamp.map(micros))
                .push_bind(micros(event.received_at))
                .push_bind(event.properties_json.as_str());
        });
        builder.push(" ON CONFLICT (tenant_id, event_id) DO NOTHING");
        let done = builder.build().execute(&mut *connection).await?;
        if done.rows_affected() == chunk.len() as u64 {
            // Every row was new: the common case needs no read-back.
            chunk.iter().for_each(|&index| inserted[index] = true);
        } else {
            // Some keys were stored before: the new rows are those above the last rowid.
            let rows = sqlx::query("SELECT tenant_id, event_id FROM events WHERE rowid > ?")
                .bind(last_rowid)
                .fetch_all(&mut *connection)
                .await?;
            for row in &rows {
                let tenant: &str = row.try_get(0)?;
                let event_id: &str = row.try_get(1)?;
                let tenant = Uuid::parse_str(tenant)
                    .map_err(|error| StoreError::Internal(format!("stored tenant id: {error}")))?;
                if let Some(&index) = first_of.get(&(tenant, event_id)) {
                    inserted[index] = true;
                }
            }
        }
        if done.rows_affected() > 0 {
            last_rowid = done.last_insert_rowid();
        }
    }
    Ok((inserted, last_rowid))
}

/// Adds the inserted events' counts, by (tenant, hour, type), to the hourly rollup.
async fn add_to_hourly_rollup(
    connection: &mut sqlx::SqliteConnection,
    counts: &BTreeMap<(String, i64, &str), i64>,
) -> Result<(), StoreError> {
    // One statement for up to 1,000 keys (4,000 bound values) rather than one per key:
    // each statement is a round trip to sqlx's SQLite thread.
    let keys: Vec<_> = counts.iter().collect();
    for chunk in keys.chunks(1_000) {
        let mut builder = sqlx::QueryBuilder::new(
            "INSERT INTO event_rollups_hourly (tenant_id, hour_us, event_type, event_count) ",
        );
        builder.push_values(
            chunk,
            |mut row, ((tenant_id, hour_us, event_type), count)| {
                row.push_bind(tenant_id.as_str())
                    .push_bind(*hour_us)
                    .push_bind(*event_type)
                    .push_bind(**count);
            },
        );
        builder.push(
            " ON CONFLICT (tenant_id, hour_us, event_type)
             DO UPDATE SET event_count = event_count + excluded.event_count",
        );
        builder.build().execute(&mut *connection).await?;
    }
    Ok(())
}

async fn insert_key(
    connection: &mut sqlx::SqliteConnection,
    key: &ApiKey,
) -> Result<(), StoreError> {
    let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_keys (key_id, tenant_id, scopes, secret_hash, created_us, expires_us,
                               events_per_second, burst)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&key.key_id)
    .bind(key.tenant_id.to_string())
    .bind(scopes.join(","))
    .bind(&key.secret_hash)
    .bind(micros(key.created_at))
    .bind(key.expires_at.map(micros))
    .bind(key.rate_limit.map(|limit| limit.events_per_second as i32))
    .bind(key.rate_limit.map(|limit| limit.burst as i32))
    .execute(connection)
    .await?;
    Ok(())
}

async fn insert_audit(
    connection: &mut sqlx::SqliteConnection,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, audit_id, occurred_us, actor, action, target, details)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(event.tenant_id.to_string())
    .bind(&event.audit_id)
    .bind(micros(event.occurred_at))
    .bind(&event.actor)
    .bind(event.action.as_str())
    .bind(&event.target)
    .bind(crate::details_json(event))
    .execute(connection)
    .await?;
    Ok(())
}

/// The columns [`key_from_row`] reads, in its order.
const KEY_COLUMNS: &str = "key_id, tenant_id, scopes, secret_hash, created_us, revoked_us, \
                           expires_us, events_per_second, burst";

fn parse_tenant_id(text: &str) -> Result<TenantId, StoreError> {
    Uuid::parse_str(text)
        .map(TenantId)
        .map_err(|error| StoreError::Internal(format!("stored tenant id {text:?}: {error}")))
}

fn tenant_from_row(row: &SqliteRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        tenant_id: parse_tenant_id(row.try_get(0)?)?,
        name: row.try_get(1)?,
        created_at: from_micros(row.try_get(2)?)?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKey, StoreError> {
    let scope_names: &str = row.try_get(2)?;
    let scopes = scope_names
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| name.parse::<Scope>().map_err(StoreError::Internal))
        .collect::<Result<_, _>>()?;
    let revoked_us: Option<i64> = row.try_get(5)?;
    let expires_us: Option<i64> = row.try_get(6)?;
    Ok(ApiKey {
        key_id: row.try_get(0)?,
        tenant_id: parse_tenant_id(row.try_get(1)?)?,
        scopes,
        secret_hash: row.try_get(3)?,
        created_at: from_micros(row.try_get(4)?)?,
        revoked_at: revoked_us.map(from_micros).transpose()?,
        expires_at: expires_us.map(from_micros).transpose()?,
        rate_limit: crate::rate_limit_from_columns(row.try_get(7)?, row.try_get(8)?)?,
    })
}

pub(crate) fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    let client_timestamp_us: Option<i64> = row.try_get(6)?;
    Ok(Event {
        tenant_id: parse_tenant_id(row.try_get(0)?)?,
        event_id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        user_id: row.try_get(3)?,
        session_id: row.try_get(4)?,
        timestamp: from_micros(row.try_get(5)?)?,
        client_timestamp: client_timestamp_us.map(from_micros).transpose()?,
        received_at: from_micros(row.try_get(7)?)?,
        properties_json: row.try_get(8)?,
    })
}
