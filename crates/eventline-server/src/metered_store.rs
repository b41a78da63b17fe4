//! Store metrics and spans in one decorator around any store: the duration of every
//! operation, `eventline_store_operation_duration_seconds{operation, outcome}`, and a
//! `store.<operation>` span per call (README "Tracing").

use std::{future::Future, sync::Arc, time::Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, ApiKey, AuditEvent, AuditQuery, Event, Tenant, TenantId,
    breakdown::{BreakdownQuery, BreakdownRow},
    query::{
        Cohort, CommittedQuery, CountQuery, CountRow, EventQuery, FunnelCounts, FunnelQuery,
        RetentionQuery, UserCounts,
    },
};
use eventline_store::{Appended, PoolStatus, ReplicaLag, Store, StoreError};
use tracing::Instrument;

/// A store that times and traces every operation of the store it wraps.
#[derive(Debug)]
pub(crate) struct MeteredStore {
    pub(crate) inner: Arc<dyn Store>,
    /// `db.system` of the spans: `postgresql` or `sqlite`.
    db_system: &'static str,
}

impl MeteredStore {
    pub(crate) fn wrap(inner: Arc<dyn Store>, db_system: &'static str) -> Arc<dyn Store> {
        Arc::new(Self { inner, db_system })
    }

    /// Runs one store operation inside its span and records its duration.
    pub(crate) async fn timed<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // A call outside any span (the health check's `ready`, every second) is not
        // traced: each would be a trace of its own. The name is formatted only when a
        // subscriber wants the span.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!(
                "store.operation",
                otel.name = %format_args!("store.{operation}"),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                db.system = self.db_system,
                db.operation.name = operation,
            )
        };
        let started = Instant::now();
        let result = future.instrument(span.clone()).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        metrics::histogram!("eventline_store_operation_duration_seconds", "operation" => operation, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn append(&self, events: &[Event]) -> Result<Appended, StoreError> {
        self.timed("append", self.inner.append(events)).await
    }

    async fn watermark_visible(
        &self,
        tenant_id: TenantId,
        watermark: &str,
    ) -> Result<bool, StoreError> {
        self.timed(
            "watermark_visible",
            self.inner.watermark_visible(tenant_id, watermark),
        )
        .await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.timed("ready", self.inner.ready()).await
    }

    async fn create_tenant(&self, name: &str, actor: &Actor) -> Result<Tenant, StoreError> {
        self.timed("create_tenant", self.inner.create_tenant(name, actor))
            .await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.timed("list_tenants", self.inner.list_tenants()).await
    }

    async fn bootstrap(&self, name: &str, key: &ApiKey) -> Result<bool, StoreError> {
        self.timed("bootstrap", self.inner.bootstrap(name, key))
            .await
    }

    async fn create_api_key(&self, key: &ApiKey, actor: &Actor) -> Result<(), StoreError> {
        self.timed("create_api_key", self.inner.create_api_key(key, actor))
            .await
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.timed("api_key", self.inner.api_key(key_id)).await
    }

    async fn list_api_keys(&self, tenant_id: TenantId) -> Result<Vec<ApiKey>, StoreError> {
        self.timed("list_api_keys", self.inner.list_api_keys(tenant_id))
            .await
    }

    async fn revoke_api_key(&self, key_id: &str, actor: &Actor) -> Result<ApiKey, StoreError> {
        self.timed("revoke_api_key", self.inner.revoke_api_key(key_id, actor))
            .await
    }

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.timed("record_audit", self.inner.record_audit(event))
            .await
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed("list_audit_events", self.inner.list_audit_events(query))
            .await
    }

    async fn event(
        &self,
        tenant_id: TenantId,
        event_id: &str,
    ) -> Result<Option<Event>, StoreError> {
        self.timed("event", self.inner.event(tenant_id, event_id))
            .await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        self.timed("list_events", self.inner.list_events(query))
            .await
    }

    async fn count(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError> {
        self.timed("count", self.inner.count(query)).await
    }

    async fn count_users(
        &self,
        query: &CountQuery,
        exact_up_to_events: u64,
    ) -> Result<UserCounts, StoreError> {
        self.timed(
            "count_users",
            self.inner.count_users(query, exact_up_to_events),
        )
        .await
    }

    async fn breakdown(&self, query: &BreakdownQuery) -> Result<Vec<BreakdownRow>, StoreError> {
        self.timed("breakdown", self.inner.breakdown(query)).await
    }

    async fn funnel(&self, query: &FunnelQuery) -> Result<FunnelCounts, StoreError> {
        self.timed("funnel", self.inner.funnel(query)).await
    }

    async fn retention(&self, query: &RetentionQuery) -> Result<Vec<Cohort>, StoreError> {
        self.timed("retention", self.inner.retention(query)).await
    }

    async fn prepare_summaries(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.timed(
            "prepare_summaries",
            self.inner.prepare_summaries(start, end),
        )
        .await
    }

    async fn commit_horizon(&self, tenant_id: TenantId) -> Result<u64, StoreError> {
        self.timed("commit_horizon", self.inner.commit_horizon(tenant_id))
            .await
    }

    async fn list_committed(
        &self,
        query: &CommittedQuery,
    ) -> Result<Vec<(u64, Event)>, StoreError> {
        self.timed("list_committed", self.inner.list_committed(query))
            .await
    }

    fn pool_status(&self) -> PoolStatus {
        self.inner.pool_status()
    }

    async fn replica_lag(&self) -> Result<Option<ReplicaLag>, StoreError> {
        self.timed("replica_lag", self.inner.replica_lag()).await
    }
}
