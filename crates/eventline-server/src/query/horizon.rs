//! What a query may ask of a tenant with a retention (README "Data lifecycle"): reads of
//! raw events start within the raw retention, counts within the rollup retention, and
//! counts older than the raw retention come from whole hours of the hourly rollup.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use eventline_core::{
    Error, TenantId,
    lifecycle::Retention,
    query::{BucketWidth, Grouping},
};
use eventline_store::Store;

use crate::tenant_cache::TenantCache;

/// What a query reads, for [`Horizons::default_start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    Raw,
    Counts,
}

/// Each tenant's retention, cached like the schemas.
#[derive(Clone)]
pub(crate) struct Horizons {
    store: Arc<dyn Store>,
    cache: TenantCache<Retention>,
}

impl std::fmt::Debug for Horizons {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Horizons").finish_non_exhaustive()
    }
}

impl Horizons {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: TenantCache::default(),
        }
    }

    async fn retention(&self, tenant_id: TenantId) -> Result<Retention, Error> {
        if let Some(retention) = self.cache.fresh(tenant_id) {
            return Ok(retention);
        }
        let retention = self.store.retention_policy(tenant_id).await?;
        self.cache.keep(tenant_id, retention);
        Ok(retention)
    }

    /// A window start the caller did not give (the 30-day default, or all of history
    /// for an export), moved to what the tenant's retention can answer: to the raw
    /// horizon for reads of raw events, to the hour for counts (which then come from the
    /// hourly rollup). A start the caller gave is checked instead, never moved.
    pub(crate) async fn default_start(
        &self,
        tenant_id: TenantId,
        start: DateTime<Utc>,
        reads: Reads,
    ) -> Result<DateTime<Utc>, Error> {
        let retention = self.retention(tenant_id).await?;
        let now = eventline_core::time::now();
        // The first whole minute or hour inside a horizon: the checks that follow, a
        // moment later, find it inside still.
        let after = |horizon: DateTime<Utc>, width: BucketWidth| {
            width.floor(horizon) + chrono::TimeDelta::microseconds(width.micros())
        };
        let mut start = start;
        if let Some(horizon) = retention.rollup_horizon(now)
            && start < horizon
        {
            start = after(horizon, BucketWidth::Hour);
        }
        match (reads, retention.raw_horizon(now)) {
            (Reads::Raw, Some(horizon)) if start < horizon => {
                Ok(after(horizon, BucketWidth::Minute))
            }
            (Reads::Counts, Some(horizon)) if start < horizon => {
                Ok(eventline_store::hour_of(start))
            }
            _ => Ok(start),
        }
    }

    /// Refuses a read of raw events from `start` when the tenant's raw retention has
    /// let events that old go.
    pub(crate) async fn raw_from(
        &self,
        tenant_id: TenantId,
        start: DateTime<Utc>,
        field: &str,
    ) -> Result<(), Error> {
        let retention = self.retention(tenant_id).await?;
        match retention.raw_horizon(eventline_core::time::now()) {
            Some(horizon) if start < horizon => Err(Error::FailedPrecondition(format!(
                "{field}: {} is before the tenant's raw retention ({} s; raw events start at {}): \
                 start within it, or count from the rollups",
                start.to_rfc3339(),
                retention.raw.map_or(0, |raw| raw.as_secs()),
                horizon.to_rfc3339(),
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a count of `[start, end)` that the kept rollups and raw events cannot
    /// answer exactly.
    pub(crate) async fn count_from(
        &self,
        tenant_id: TenantId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        grouping: Grouping,
    ) -> Result<(), Error> {
        let retention = self.retention(tenant_id).await?;
        let now = eventline_core::time::now();
        if let Some(horizon) = retention.rollup_horizon(now)
            && start < horizon
        {
            return Err(Error::FailedPrecondition(format!(
                "start_time: {} is before the tenant's rollup retention (counts start at {})",
                start.to_rfc3339(),
                horizon.to_rfc3339(),
            )));
        }
        let Some(raw_horizon) = retention.raw_horizon(now) else {
            return Ok(());
        };
        if start >= raw_horizon {
            return Ok(());
        }
        if grouping == Grouping::Bucket(BucketWidth::Minute) {
            return Err(Error::FailedPrecondition(format!(
                "interval: minute buckets need raw events, kept from {} on",
                raw_horizon.to_rfc3339()
            )));
        }
        let whole_hour = |time: DateTime<Utc>| eventline_store::hour_of(time) == time;
        let end_in_raw = end >= raw_horizon;
        if !whole_hour(start) || !(end_in_raw || whole_hour(end)) {
            return Err(Error::FailedPrecondition(format!(
                "start_time: counts before {} (the raw retention) come from the hourly rollup: \
                 start{} on a whole hour",
                raw_horizon.to_rfc3339(),
                if end_in_raw { "" } else { " and end" },
            )));
        }
        Ok(())
    }
}
