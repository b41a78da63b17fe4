//! The [`Store`] trait over domain types, its PostgreSQL (production) and SQLite
//! (embedded default) implementations, their embedded migrations, and a test harness
//! that hands out fresh databases. It must not depend on the server or on proto types.

pub mod alerts;
mod analytics;
mod breakdowns;
mod counts;
mod error;
pub mod lifecycle;
pub mod postgres;
pub mod search;
pub mod sqlite;
pub mod streams;
mod summaries;
#[cfg(feature = "testing")]
pub mod testing;
mod timelines;
mod uniques;

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, ApiKey, AuditEvent, AuditQuery, Event, IngestOutcome, Tenant, TenantId,
    breakdown::{BreakdownQuery, BreakdownRow},
    query::{
        Cohort, CommittedQuery, CountQuery, CountRow, EventQuery, FunnelCounts, FunnelQuery,
        RetentionQuery, UserCounts,
    },
};

pub use alerts::Alerts;
pub use error::StoreError;
pub use lifecycle::{Expiry, Quarantine, Schemas, UserDeletions};
pub use search::Search;
pub use streams::Subscriptions;

/// Where events are kept. Every method is tenant-scoped by its arguments; no method
/// returns data of a tenant it was not asked about. The data lifecycle's traits
/// ([`UserDeletions`], [`Expiry`], [`Quarantine`], [`Schemas`]), [`Search`], outbound
/// streams ([`Subscriptions`]) and alert rules ([`Alerts`]) come with every store.
#[async_trait]
pub trait Store:
    UserDeletions
    + Expiry
    + Quarantine
    + Schemas
    + Search
    + Subscriptions
    + Alerts
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// Appends `events` in one transaction and returns one outcome per event, in order:
    /// `Accepted` for rows inserted, `Duplicate` for `(tenant, event_id)` pairs already
    /// stored (or repeated earlier in the same batch). The hourly rollup is updated in
    /// the same transaction from the inserted rows only. Returns only after COMMIT.
    async fn append(&self, events: &[Event]) -> Result<Appended, StoreError>;

    /// Whether the writes behind `watermark` (the tenant's, from [`Appended`]) are visible
    /// to the tenant's reads.
    async fn watermark_visible(
        &self,
        tenant_id: TenantId,
        watermark: &str,
    ) -> Result<bool, StoreError>;

    /// Succeeds when the database answers and every embedded migration is applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Creates a tenant and its audit record (by `actor`) in one transaction; a taken
    /// name is `StoreError::Conflict`.
    async fn create_tenant(&self, name: &str, actor: &Actor) -> Result<Tenant, StoreError>;

    /// Lists every tenant by name.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    /// Creates the `name` tenant with `key` in one transaction, only if no tenant
    /// exists yet, audited as [`Actor::Bootstrap`]; returns whether it did. Replicas
    /// starting together create one.
    async fn bootstrap(&self, name: &str, key: &ApiKey) -> Result<bool, StoreError>;

    /// Stores a new API key (its hash, never the secret) and its audit record.
    async fn create_api_key(&self, key: &ApiKey, actor: &Actor) -> Result<(), StoreError>;

    /// Finds a key by its public id, revoked or not.
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Lists a tenant's keys, oldest first.
    async fn list_api_keys(&self, tenant_id: TenantId) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key and records it, and returns the key; revoking twice keeps the
    /// first revoke time.
    async fn revoke_api_key(&self, key_id: &str, actor: &Actor) -> Result<ApiKey, StoreError>;

    /// Stores an audit record made outside an admin action (an expired key presented).
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Reads one page of the audit trail, newest first (ties by `audit_id`).
    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// Reads one event.
    async fn event(&self, tenant_id: TenantId, event_id: &str)
    -> Result<Option<Event>, StoreError>;

    /// Reads one page of events in time order, per `query`.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError>;

    /// Counts the events of `query`'s window (and type, when set), grouped per
    /// `query.grouping`: one row per non-empty group, in no particular order. Each store
    /// answers from its own tables (rollups where they cover the window, raw rows at the
    /// edges); the rows are always those a count of raw events would give.
    async fn count(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError>;

    /// Distinct users (`user_id`) among the events of a window, one row per group of
    /// `query.grouping` (per bucket: a user counts in every bucket they were active in).
    /// Events without a user are left out. Exact when the window holds at most
    /// `exact_up_to_events` events or is grouped by minute, else estimated from sketches
    /// of whole hours and days (`uniques`).
    async fn count_users(
        &self,
        query: &CountQuery,
        exact_up_to_events: u64,
    ) -> Result<UserCounts, StoreError>;

    /// A count in a window split by the value of one top-level property, read from the
    /// events: one row per (bucket, type, value) as `query.counting.grouping` asks.
    async fn breakdown(&self, query: &BreakdownQuery) -> Result<Vec<BreakdownRow>, StoreError>;

    /// The users who reached each step of a funnel (QueryService.Funnel's semantics).
    async fn funnel(&self, query: &FunnelQuery) -> Result<FunnelCounts, StoreError>;

    /// A retention table, one cohort per interval (QueryService.Retention's semantics).
    async fn retention(&self, query: &RetentionQuery) -> Result<Vec<Cohort>, StoreError>;

    /// Builds ahead of queries the bucket summaries that funnels, retention and unique
    /// users read (README "Funnels and retention"): of every whole hour and day in
    /// `[start, end)` of every tenant and type with events there, those missing or
    /// stale. Returns how many it built.
    async fn prepare_summaries(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// The tenant's commit horizon: every event of the tenant with a commit sequence below
    /// it is committed and visible, and no event below it can still appear. Sequences
    /// compare only within one tenant (on Citus they come from the tenant's worker).
    async fn commit_horizon(&self, tenant_id: TenantId) -> Result<u64, StoreError>;

    /// Reads events in commit order below `query.horizon`, with their commit sequence.
    async fn list_committed(&self, query: &CommittedQuery)
    -> Result<Vec<(u64, Event)>, StoreError>;

    /// Connections of the write pool: open, and idle among them.
    fn pool_status(&self) -> PoolStatus;

    /// How far the read replica (`database.read_url`) is behind the primary; `None` when
    /// reads go to the primary itself.
    async fn replica_lag(&self) -> Result<Option<ReplicaLag>, StoreError> {
        Ok(None)
    }
}

/// A read replica's distance behind its primary.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReplicaLag {
    /// WAL the primary has written that the replica has not replayed.
    pub bytes: u64,
    /// Age of the newest transaction the replica replayed while it has WAL left to
    /// replay; zero once it has replayed everything the primary wrote.
    pub seconds: f64,
}

/// Connection counts of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    pub open: u32,
    pub idle: u32,
}

/// What one append did: an outcome per event, and the watermarks reads can wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub outcomes: Vec<IngestOutcome>,
    pub watermarks: Watermarks,
}

/// The watermark of an append for each tenant in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watermarks {
    /// One position for every tenant: the store commits on one node.
    Shared(String),
    /// A position per tenant: on Citus each tenant's events commit on its worker, and
    /// only that worker's WAL position says what a replica of it has replayed.
    PerTenant(Vec<(TenantId, String)>),
}

impl Watermarks {
    /// The watermark a read of `tenant_id` waits for; empty when the append held none of
    /// its events.
    pub fn of(&self, tenant_id: TenantId) -> &str {
        match self {
            Watermarks::Shared(watermark) => watermark,
            Watermarks::PerTenant(watermarks) => watermarks
                .iter()
                .find(|(tenant, _)| *tenant == tenant_id)
                .map_or("", |(_, watermark)| watermark),
        }
    }
}

/// Opens the store a server is configured for: PostgreSQL when `database_url` is set,
/// else SQLite in `data_dir`. Runs pending migrations.
pub async fn open(
    database_url: Option<&str>,
    read_url: Option<&str>,
    data_dir: &Path,
    max_connections: u32,
) -> Result<Arc<dyn Store>, StoreError> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let mut store = postgres::PgStore::connect(url, max_connections).await?;
            store.migrate().await?;
            if let Some(read_url) = read_url {
                store = store.with_read_replica(read_url, max_connections).await?;
            }
            Ok(Arc::new(store))
        }
        Some(url) if url.starts_with("sqlite:") => {
            let store = sqlite::SqliteStore::connect_url(url).await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        Some(url) => Err(StoreError::Config(format!(
            "database url must start with postgres://, postgresql:// or sqlite:, got {:?}",
            url.split(':').next().unwrap_or_default()
        ))),
        None => {
            let store = sqlite::SqliteStore::open_dir(data_dir).await?;
            store.migrate().await?;
            Ok(Arc::new(store))
        }
    }
}

/// The start of the UTC hour holding `time`.
pub fn hour_of(time: DateTime<Utc>) -> DateTime<Utc> {
    const HOUR_MICROS: i64 = 3_600_000_000;
    let micros = time.timestamp_micros();
    DateTime::from_timestamp_micros(micros - micros.rem_euclid(HOUR_MICROS)).unwrap_or(time)
}

/// The audit records of a first start: the tenant and its key, by [`Actor::Bootstrap`].
fn bootstrap_audit(name: &str, key: &ApiKey) -> [AuditEvent; 2] {
    let tenant = Tenant {
        tenant_id: key.tenant_id,
        name: name.to_owned(),
        created_at: key.created_at,
    };
    [
        AuditEvent::tenant_created(&tenant, &Actor::Bootstrap),
        AuditEvent::key_created(key, &Actor::Bootstrap),
    ]
}

/// A foreign-key refusal of a new key, in words.
fn missing_tenant(error: StoreError, tenant_id: TenantId) -> StoreError {
    match error {
        StoreError::NotFound(_) => {
            StoreError::NotFound(format!("tenant {tenant_id} does not exist"))
        }
        other => other,
    }
}

fn missing_key(key_id: &str) -> StoreError {
    StoreError::NotFound(format!("api key {key_id:?} does not exist"))
}

/// An audit record's details as stored: a JSON object of strings.
fn details_json(event: &AuditEvent) -> String {
    serde_json::to_string(&event.details).unwrap_or_else(|_| "{}".to_owned())
}

/// An audit row as both backends read it.
struct AuditParts {
    audit_id: String,
    tenant_id: TenantId,
    actor: String,
    action: String,
    target: String,
    occurred_at: DateTime<Utc>,
    details_json: String,
}

fn audit_from_parts(parts: AuditParts) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        audit_id: parts.audit_id,
        tenant_id: parts.tenant_id,
        actor: parts.actor,
        action: parts.action.parse().map_err(StoreError::Internal)?,
        target: parts.target,
        occurred_at: parts.occurred_at,
        details: serde_json::from_str(&parts.details_json).map_err(|error| {
            StoreError::Internal(format!("stored audit details are not an object: {error}"))
        })?,
    })
}

/// A key's stored limit columns (both set, or neither).
fn rate_limit_from_columns(
    events_per_second: Option<i32>,
    burst: Option<i32>,
) -> Result<Option<eventline_core::RateLimit>, StoreError> {
    match (events_per_second, burst) {
        (None, None) => Ok(None),
        (Some(rate), Some(burst)) if rate > 0 && burst > 0 => Ok(Some(eventline_core::RateLimit {
            events_per_second: rate as u32,
            burst: burst as u32,
        })),
        other => Err(StoreError::Internal(format!(
            "stored key limit columns are inconsistent: {other:?}"
        ))),
    }
}
