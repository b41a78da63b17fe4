//! The [`Store`] trait over domain types, its PostgreSQL (production) and SQLite
//! (embedded default) implementations, their embedded migrations, and a test harness
//! that hands out fresh databases. It must not depend on the server or on proto types.

mod error;
pub mod postgres;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{ApiKey, Event, IngestOutcome, Tenant, TenantId};

pub use error::StoreError;

/// Where events are kept. Every method is tenant-scoped by its arguments; no method
/// returns data of a tenant it was not asked about.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `events` in one transaction and returns one outcome per event, in order:
    /// `Accepted` for rows inserted, `Duplicate` for `(tenant, event_id)` pairs already
    /// stored (or repeated earlier in the same batch). The hourly rollup is updated in
    /// the same transaction from the inserted rows only. Returns only after COMMIT.
    async fn append(&self, events: &[Event]) -> Result<Vec<IngestOutcome>, StoreError>;

    /// Succeeds when the database answers and every embedded migration is applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Creates a tenant; a taken name is `StoreError::Conflict`.
    async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError>;

    /// Lists every tenant by name.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    /// Creates the `name` tenant with `key` in one transaction, only if no tenant
    /// exists yet; returns whether it did. Replicas starting together create one.
    async fn bootstrap(&self, name: &str, key: &ApiKey) -> Result<bool, StoreError>;

    /// Stores a new API key (its hash, never the secret).
    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// Finds a key by its public id, revoked or not.
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Lists a tenant's keys, oldest first.
    async fn list_api_keys(&self, tenant_id: TenantId) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key and returns it; revoking twice keeps the first revoke time.
    async fn revoke_api_key(&self, key_id: &str) -> Result<ApiKey, StoreError>;

    /// Reads one event.
    async fn event(&self, tenant_id: TenantId, event_id: &str)
    -> Result<Option<Event>, StoreError>;

    /// Counts a tenant's stored events (raw rows) in `[start, end)`.
    async fn count_events(
        &self,
        tenant_id: TenantId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Sums a tenant's hourly rollups whose hour lies in `[start, end)`.
    async fn rollup_total(
        &self,
        tenant_id: TenantId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// Opens the store a server is configured for: PostgreSQL when `database_url` is set,
/// else SQLite in `data_dir`. Runs pending migrations.
pub async fn open(
    database_url: Option<&str>,
    data_dir: &Path,
    max_connections: u32,
) -> Result<Arc<dyn Store>, StoreError> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = postgres::PgStore::connect(url, max_connections).await?;
            store.migrate().await?;
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
