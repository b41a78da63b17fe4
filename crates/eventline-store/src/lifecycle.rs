//! The data lifecycle's storage (README "Data lifecycle"), one small trait per concern:
//! user deletions, retention, the quarantine and event schemas. Every [`crate::Store`]
//! implements all four; each method is scoped to one tenant by its arguments (on Citus,
//! a router statement on the tenant's worker).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, AuditAction, AuditEvent, TenantId,
    lifecycle::{Deletion, EventSchema, QuarantineQuery, QuarantinedEvent, Retention, SchemaMode},
};

use crate::StoreError;

/// Deleting one user's events with every rollup and summary that counted them.
#[async_trait]
pub trait UserDeletions: Send + Sync {
    /// Records a pending deletion of `user_id` and its audit record, or returns the
    /// unfinished one already recorded for that user.
    async fn request_deletion(
        &self,
        tenant_id: TenantId,
        user_id: &str,
        actor: &Actor,
    ) -> Result<Deletion, StoreError>;

    /// Reads one deletion.
    async fn deletion(
        &self,
        tenant_id: TenantId,
        deletion_id: &str,
    ) -> Result<Option<Deletion>, StoreError>;

    /// The tenant's unfinished deletions, oldest first.
    async fn unfinished_deletions(&self, tenant_id: TenantId) -> Result<Vec<Deletion>, StoreError>;

    /// Deletes up to `limit` events of the deletion's user and, in the same transaction,
    /// subtracts them from every rollup, drops the bucket summaries of the hours and
    /// days they were in, and adds them to the deletion's count (marking it running).
    /// Returns how many it deleted: fewer than `limit` means none is left. A crash
    /// between two calls leaves counts exact; the next call goes on.
    async fn delete_user_events(
        &self,
        deletion: &Deletion,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Marks a deletion done, with its audit record, and returns it as stored.
    async fn finish_deletion(&self, deletion: &Deletion) -> Result<Deletion, StoreError>;
}

/// How long a tenant's events and rollups are kept, and the expiry of what is older.
#[async_trait]
pub trait Expiry: Send + Sync {
    /// The tenant's retention; `NotFound` for an unknown tenant.
    async fn retention_policy(&self, tenant_id: TenantId) -> Result<Retention, StoreError>;

    /// Sets the tenant's retention, with its audit record.
    async fn set_retention_policy(
        &self,
        tenant_id: TenantId,
        retention: Retention,
        actor: &Actor,
    ) -> Result<(), StoreError>;

    /// Deletes up to `limit` raw events of the tenant with a timestamp before
    /// `before` and received before `received_before` (the dedupe window). Rollups keep
    /// counting them. Returns how many it deleted.
    async fn expire_events(
        &self,
        tenant_id: TenantId,
        before: DateTime<Utc>,
        received_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Deletes the tenant's rollup rows and bucket summaries of buckets starting before
    /// `before`; returns how many rows it deleted.
    async fn expire_rollups(
        &self,
        tenant_id: TenantId,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// Events rejected by validation, kept with their reason.
#[async_trait]
pub trait Quarantine: Send + Sync {
    /// Stores `events` in one transaction, then drops each tenant's oldest past
    /// `keep_per_tenant`; returns how many it dropped.
    async fn quarantine(
        &self,
        events: &[QuarantinedEvent],
        keep_per_tenant: u64,
    ) -> Result<u64, StoreError>;

    /// Reads one page, newest first.
    async fn list_quarantined(
        &self,
        query: &QuarantineQuery,
    ) -> Result<Vec<QuarantinedEvent>, StoreError>;

    /// Reads the named events (those that exist).
    async fn quarantined(
        &self,
        tenant_id: TenantId,
        quarantine_ids: &[String],
    ) -> Result<Vec<QuarantinedEvent>, StoreError>;

    /// Replaces the reason of a quarantined event that failed again.
    async fn set_quarantine_reason(
        &self,
        tenant_id: TenantId,
        quarantine_id: &str,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Drops the named events; returns how many existed.
    async fn remove_quarantined(
        &self,
        tenant_id: TenantId,
        quarantine_ids: &[String],
    ) -> Result<u64, StoreError>;

    /// Drops every quarantined event of the tenant (of `event_type` when set); returns
    /// how many.
    async fn purge_quarantined(
        &self,
        tenant_id: TenantId,
        event_type: Option<&str>,
    ) -> Result<u64, StoreError>;
}

/// A JSON Schema per event type.
#[async_trait]
pub trait Schemas: Send + Sync {
    /// Sets (replacing) a schema, with its audit record.
    async fn put_schema(&self, schema: &EventSchema, actor: &Actor) -> Result<(), StoreError>;

    /// Removes a schema, with its audit record; `NotFound` when there was none.
    async fn delete_schema(
        &self,
        tenant_id: TenantId,
        event_type: &str,
        actor: &Actor,
    ) -> Result<(), StoreError>;

    /// The tenant's schemas by event type.
    async fn list_schemas(&self, tenant_id: TenantId) -> Result<Vec<EventSchema>, StoreError>;
}

/// The minutes, hours and days (bucket starts) that events at `times` fall in: the
/// bucket summaries a deletion makes stale.
pub(crate) fn touched_buckets(times: impl Iterator<Item = DateTime<Utc>>) -> Vec<DateTime<Utc>> {
    let mut buckets: Vec<DateTime<Utc>> = times
        .flat_map(|time| {
            [
                eventline_core::query::BucketWidth::Minute.floor(time),
                crate::hour_of(time),
                day_of(time),
            ]
        })
        .collect();
    buckets.sort_unstable();
    buckets.dedup();
    buckets
}

/// The start of the UTC day holding `time`.
pub(crate) fn day_of(time: DateTime<Utc>) -> DateTime<Utc> {
    const DAY_MICROS: i64 = 86_400_000_000;
    let micros = time.timestamp_micros();
    DateTime::from_timestamp_micros(micros - micros.rem_euclid(DAY_MICROS)).unwrap_or(time)
}

/// The audit record of a finished deletion, by the server itself.
pub(crate) fn deletion_finished_audit(deletion: &Deletion) -> AuditEvent {
    let mut audit = AuditEvent::new(
        deletion.tenant_id,
        &Actor::Server,
        AuditAction::UserDeletionFinished,
        &deletion.deletion_id,
    );
    audit
        .details
        .insert("user_id".into(), deletion.user_id.clone());
    audit
        .details
        .insert("events_deleted".into(), deletion.events_deleted.to_string());
    audit
}

/// The audit record of a retention change.
pub(crate) fn retention_audit(
    tenant_id: TenantId,
    retention: Retention,
    actor: &Actor,
) -> AuditEvent {
    let mut audit = AuditEvent::new(
        tenant_id,
        actor,
        AuditAction::RetentionSet,
        &tenant_id.to_string(),
    );
    let proto = retention.to_proto();
    audit.details.insert(
        "raw_retention_seconds".into(),
        proto.raw_retention_seconds.to_string(),
    );
    audit.details.insert(
        "rollup_retention_seconds".into(),
        proto.rollup_retention_seconds.to_string(),
    );
    audit
}

pub(crate) fn retention_from_columns(
    raw: Option<i64>,
    rollups: Option<i64>,
) -> Result<Retention, StoreError> {
    let seconds = |value: Option<i64>| {
        value
            .filter(|value| *value > 0)
            .map(|value| std::time::Duration::from_secs(value as u64))
    };
    Ok(Retention {
        raw: seconds(raw),
        rollups: seconds(rollups),
    })
}

pub(crate) fn retention_columns(retention: Retention) -> (Option<i64>, Option<i64>) {
    (
        retention.raw.map(|value| value.as_secs() as i64),
        retention.rollups.map(|value| value.as_secs() as i64),
    )
}

pub(crate) fn schema_audit(
    schema_tenant: TenantId,
    event_type: &str,
    action: AuditAction,
    mode: Option<SchemaMode>,
    actor: &Actor,
) -> AuditEvent {
    let mut audit = AuditEvent::new(schema_tenant, actor, action, event_type);
    if let Some(mode) = mode {
        audit
            .details
            .insert("mode".into(), mode.as_str().to_owned());
    }
    audit
}

pub(crate) fn missing_schema(event_type: &str) -> StoreError {
    StoreError::NotFound(format!("event type {event_type:?} has no schema"))
}
