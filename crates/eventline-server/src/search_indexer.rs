//! Search's background indexer (README "Search"): every `search.index_interval_ms` it
//! indexes the new events of each tenant with search on, in commit order, a batch of
//! `search.index_batch_events` at a time. A tenant's history is indexed the same way,
//! at most `MAX_BATCHES_PER_PASS` batches per tenant per pass, so one tenant's backfill
//! never holds up another's new events; while a backfill lasts, passes follow each other
//! without the wait. Replicas may run it together: a batch moves
//! the tenant's position only from where it read it, so each event is indexed once.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use eventline_store::{Store, search::index_for_search};
use tokio::task::JoinHandle;

use crate::writer::WriterLoad;

/// Batches one tenant may index in one pass before the next tenant's turn.
const MAX_BATCHES_PER_PASS: usize = 20;
/// The longest an indexer yields to ingest, in intervals, before it indexes a batch
/// anyway: search never stops, it trails.
const MAX_YIELD_INTERVALS: u32 = 10;
/// How often a yielding indexer looks again at the writer's queue.
const YIELD_POLL: Duration = Duration::from_millis(20);

/// Whether a pass left events to index (a tenant used up its batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    CaughtUp,
    MoreLeft,
}

/// The indexer's settings.
#[derive(Debug, Clone)]
pub(crate) struct SearchIndexer {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) interval: Duration,
    pub(crate) batch_events: usize,
    /// Indexing costs the database about what ingesting the same events does, so it
    /// yields to ingest (see `yield_to_ingest`) and catches up once the load eases.
    pub(crate) ingest: WriterLoad,
}

/// Every counter at zero, so `increase()` sees the first one.
pub(crate) fn register_metrics() {
    metrics::counter!("eventline_search_indexed_events_total").absolute(0);
    metrics::counter!("eventline_search_index_errors_total").absolute(0);
    metrics::counter!("eventline_search_index_yields_total").absolute(0);
}

impl SearchIndexer {
    /// Runs until aborted; `None` when the interval is 0 (turned off).
    pub(crate) fn spawn(self) -> Option<JoinHandle<()>> {
        if self.interval.is_zero() {
            return None;
        }
        Some(tokio::spawn(async move {
            // When the last batch was indexed, across passes: while ingest is busy the
            // indexer waits from there (see `yield_to_ingest`).
            let mut last_batch = None;
            loop {
                match self.pass(&mut last_batch).await {
                    // A backfill goes on at once; only a pass that caught up waits.
                    Ok(Progress::MoreLeft) => continue,
                    Ok(Progress::CaughtUp) => {}
                    Err(error) => {
                        metrics::counter!("eventline_search_index_errors_total").increment(1);
                        tracing::warn!(error = %error, "indexing for search failed; retrying later");
                    }
                }
                tokio::time::sleep(self.interval).await;
            }
        }))
    }

    async fn pass(
        &self,
        last_batch: &mut Option<Instant>,
    ) -> Result<Progress, eventline_store::StoreError> {
        let mut progress = Progress::CaughtUp;
        // Tenant by tenant: on Citus each statement stays on the tenant's worker.
        for tenant in self.store.list_tenants().await? {
            let mut batches = 0;
            loop {
                let Some(cursor) = self.store.search_cursor(tenant.tenant_id).await? else {
                    break;
                };
                self.yield_to_ingest(*last_batch).await;
                *last_batch = Some(Instant::now());
                let indexed = index_for_search(&*self.store, &cursor, self.batch_events).await?;
                metrics::counter!("eventline_search_indexed_events_total").increment(indexed);
                if (indexed as usize) < self.batch_events {
                    break;
                }
                batches += 1;
                if batches == MAX_BATCHES_PER_PASS {
                    progress = Progress::MoreLeft;
                    break;
                }
            }
        }
        Ok(progress)
    }

    /// Waits while ingest is at capacity (events wait for a writer worker), up to
    /// `MAX_YIELD_INTERVALS` intervals after the last batch: at moderate load indexing
    /// goes on; at capacity search trails until the load eases.
    async fn yield_to_ingest(&self, last_batch: Option<Instant>) {
        let Some(last_batch) = last_batch else {
            return;
        };
        let longest = self.interval * MAX_YIELD_INTERVALS;
        let mut yielded = false;
        while self.ingest.is_saturated() && last_batch.elapsed() < longest {
            yielded = true;
            tokio::time::sleep(YIELD_POLL).await;
        }
        if yielded {
            metrics::counter!("eventline_search_index_yields_total").increment(1);
        }
    }
}
