//! The summaries' background task (README "Funnels and retention"): every
//! `summaries.prepare_interval_ms` it builds the bucket summaries that funnels, retention
//! and unique users read (per-type timelines, user sketches) for the whole hours and
//! days of the last `summaries.prepare_days`, those missing or stale, so a query finds
//! them ready instead of building them on its path. Every replica runs one; two building
//! the same summary store the same body.

use std::{sync::Arc, time::Duration};

use eventline_store::Store;
use tokio::task::JoinHandle;

/// The background task's settings.
#[derive(Debug, Clone)]
pub(crate) struct SummariesTask {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) interval: Duration,
    pub(crate) days: u32,
}

/// Every counter of the task at zero, so `increase()` sees the first pass.
pub(crate) fn register_metrics() {
    metrics::counter!("eventline_summaries_built_total").absolute(0);
    metrics::counter!("eventline_summaries_passes_total").absolute(0);
    metrics::counter!("eventline_summaries_errors_total").absolute(0);
}

impl SummariesTask {
    /// Runs until aborted; `None` when the interval is 0 (turned off).
    pub(crate) fn spawn(self) -> Option<JoinHandle<()>> {
        if self.interval.is_zero() {
            return None;
        }
        Some(tokio::spawn(async move {
            loop {
                let now = chrono::Utc::now();
                let start = now
                    .checked_sub_signed(chrono::Duration::days(i64::from(self.days)))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
                match self.store.prepare_summaries(start, now).await {
                    Ok(built) => {
                        metrics::counter!("eventline_summaries_built_total").increment(built);
                        metrics::counter!("eventline_summaries_passes_total").increment(1);
                        if built > 0 {
                            tracing::debug!(built, "bucket summaries prepared");
                        }
                    }
                    Err(error) => {
                        metrics::counter!("eventline_summaries_errors_total").increment(1);
                        tracing::warn!(error = %error, "preparing summaries failed; retrying later");
                    }
                }
                tokio::time::sleep(self.interval).await;
            }
        }))
    }
}
