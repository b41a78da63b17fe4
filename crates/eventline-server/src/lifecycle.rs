//! The data lifecycle's background task (README "Data lifecycle"): runs pending user
//! deletions to the end and deletes what each tenant's retention lets go, in bounded
//! batches, every `lifecycle.interval_ms` or as soon as a request wakes it. Every
//! replica runs one; two deleting the same rows at once each subtract only the rows
//! their own DELETE removed, so counts stay exact.

use std::{sync::Arc, time::Duration};

use eventline_core::{
    Tenant,
    lifecycle::{DELETE_BATCH_EVENTS, Deletion},
};
use eventline_store::{Store, StoreError};
use tokio::{sync::Notify, task::JoinHandle};

/// Expiry is never urgent: after each batch it pauses this many times as long as the
/// batch took, so it holds the database at most a quarter of the time and ingest
/// commits get the rest (README "Data lifecycle": ingest p99 while expiring).
const EXPIRY_PAUSE_FACTOR: u32 = 3;
/// Raw events one expiry batch deletes: far fewer than a user deletion's, since the
/// length of one statement is what stalls the commits around it (measured: ingest ack
/// p99 ×4.0 at 5,000 rows a batch, ×1.6 at 1,000, ×1.2 at 200; README "Performance").
const EXPIRY_BATCH_EVENTS: usize = 200;

/// The background task's settings.
#[derive(Debug, Clone)]
pub(crate) struct LifecycleTask {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) interval: Duration,
    pub(crate) dedupe_window: chrono::TimeDelta,
    pub(crate) wake: Arc<Notify>,
}

/// Every counter of the task at zero, so `increase()` sees the first deletion.
pub(crate) fn register_metrics() {
    for reason in ["user_deletion", "retention"] {
        metrics::counter!("eventline_lifecycle_events_deleted_total", "reason" => reason)
            .absolute(0);
    }
    metrics::counter!("eventline_lifecycle_rollup_rows_deleted_total").absolute(0);
    metrics::counter!("eventline_lifecycle_errors_total").absolute(0);
}

impl LifecycleTask {
    /// Runs until aborted.
    pub(crate) fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(error) = self.pass().await {
                    metrics::counter!("eventline_lifecycle_errors_total").increment(1);
                    tracing::warn!(error = %error, "data lifecycle pass failed; retrying later");
                }
                tokio::select! {
                    () = tokio::time::sleep(self.interval) => {}
                    () = self.wake.notified() => {}
                }
            }
        })
    }

    /// One pass over every tenant.
    async fn pass(&self) -> Result<(), StoreError> {
        for tenant in self.store.list_tenants().await? {
            for deletion in self.store.unfinished_deletions(tenant.tenant_id).await? {
                self.run_deletion(&deletion).await?;
            }
            self.expire(&tenant).await?;
        }
        Ok(())
    }

    async fn run_deletion(&self, deletion: &Deletion) -> Result<(), StoreError> {
        let span =
            tracing::info_span!("lifecycle.delete_user", deletion_id = %deletion.deletion_id);
        let _entered = span.enter();
        loop {
            let deleted = self
                .store
                .delete_user_events(deletion, DELETE_BATCH_EVENTS)
                .await?;
            metrics::counter!("eventline_lifecycle_events_deleted_total", "reason" => "user_deletion")
                .increment(deleted);
            if deleted < DELETE_BATCH_EVENTS as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let finished = self.store.finish_deletion(deletion).await?;
        tracing::info!(
            events_deleted = finished.events_deleted,
            "user deletion finished"
        );
        Ok(())
    }

    async fn expire(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let retention = self.store.retention_policy(tenant.tenant_id).await?;
        let now = eventline_core::time::now();
        if let Some(horizon) = retention.raw_horizon(now) {
            let received_before = now - self.dedupe_window;
            loop {
                let started = std::time::Instant::now();
                let deleted = self
                    .store
                    .expire_events(
                        tenant.tenant_id,
                        horizon,
                        received_before,
                        EXPIRY_BATCH_EVENTS,
                    )
                    .await?;
                metrics::counter!("eventline_lifecycle_events_deleted_total", "reason" => "retention")
                    .increment(deleted);
                if deleted < EXPIRY_BATCH_EVENTS as u64 {
                    break;
                }
                tokio::time::sleep(started.elapsed() * EXPIRY_PAUSE_FACTOR).await;
            }
        }
        if let Some(horizon) = retention.rollup_horizon(now) {
            let deleted = self.store.expire_rollups(tenant.tenant_id, horizon).await?;
            metrics::counter!("eventline_lifecycle_rollup_rows_deleted_total").increment(deleted);
        }
        Ok(())
    }
}
