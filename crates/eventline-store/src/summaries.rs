//! Bucket summaries: what a question needs of one whole UTC hour or day of a tenant's
//! events (the HyperLogLog sketch of its users, its counts per property value), built
//! from the events the first time a query needs it and stored (table
//! `bucket_summaries`) with the bucket's event count. A later query reuses a summary
//! only while the rollups still show that count: a late event for an old bucket changes
//! the count in the transaction that stores it, so the next query rebuilds exactly that
//! summary. Ingest never touches summaries. Both backends share this; each provides the
//! reads and writes of [`BucketReads`].

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    TenantId,
    query::{BucketWidth, CountQuery, CountRow, Grouping},
};
use futures::future::BoxFuture;

use crate::StoreError;

/// The widths summaries are kept at, finest first.
pub(crate) const SUMMARY_WIDTHS: &[BucketWidth] = &[BucketWidth::Hour, BucketWidth::Day];
/// Buckets whose counts and stored summaries are read at once (≤ 4 MiB of sketches).
const BUCKETS_PER_READ: i64 = 256;

/// Which summaries: one tenant, one event type ('' for all), one kind, one width.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SummaryKey<'k> {
    pub(crate) tenant_id: TenantId,
    pub(crate) event_type: &'k str,
    /// `users`, or `property:<name>`.
    pub(crate) summary: &'k str,
    pub(crate) width: BucketWidth,
}

impl<'k> SummaryKey<'k> {
    /// The key of `summary` at `width` for `tile`'s tenant and type ('' for all types).
    pub(crate) fn of(tile: &'k CountQuery, summary: &'k str, width: BucketWidth) -> Self {
        Self {
            tenant_id: tile.tenant_id,
            event_type: tile.event_type.as_deref().unwrap_or(""),
            summary,
            width,
        }
    }

    /// The width in seconds, as stored.
    pub(crate) fn width_seconds(&self) -> i32 {
        (self.width.micros() / 1_000_000) as i32
    }
}

/// A stored summary: the bucket's event count when it was built, and its body.
#[derive(Debug, Clone)]
pub(crate) struct StoredSummary {
    pub(crate) bucket: DateTime<Utc>,
    pub(crate) event_count: u64,
    pub(crate) body: Vec<u8>,
}

/// A summary's stored form.
pub(crate) trait Summary: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(body: &[u8]) -> Result<Self, StoreError>;

    /// Whether storing it is worth its size; one that is not is rebuilt on every read.
    fn worth_keeping(&self) -> bool {
        true
    }
}

/// What a backend provides for bucket summaries.
#[async_trait]
pub(crate) trait BucketReads: Sync {
    /// Event counts per group of `query` (`Store::count`: from the rollups).
    async fn event_counts(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError>;

    /// The stored summaries of `key` for buckets in `[start, end)`; their bodies empty
    /// unless `with_bodies` (what is stored, and of which count, is enough to refresh).
    async fn stored_summaries(
        &self,
        key: SummaryKey<'_>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        with_bodies: bool,
    ) -> Result<Vec<StoredSummary>, StoreError>;

    /// The (event type, summary) pairs `tenant_id` keeps summaries of whose name starts
    /// with `prefix`.
    async fn kept_summaries(
        &self,
        tenant_id: eventline_core::TenantId,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Deletes `tenant_id`'s summaries of `width` for buckets before `before`; returns
    /// how many.
    async fn drop_summaries(
        &self,
        tenant_id: eventline_core::TenantId,
        width: BucketWidth,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Stores (or replaces) one bucket's summary.
    async fn store_summary(
        &self,
        key: SummaryKey<'_>,
        summary: StoredSummary,
    ) -> Result<(), StoreError>;
}

/// Calls `visit` with the summary of every bucket of `width` in `tile`'s window (of its
/// tenant and type) that has events: stored ones while their event count still holds,
/// the others made by `build` from the bucket's window and stored.
pub(crate) async fn for_each_summary<'b, S: Summary>(
    reads: &impl BucketReads,
    tile: &CountQuery,
    width: BucketWidth,
    summary: &str,
    build: impl Fn(CountQuery) -> BoxFuture<'b, Result<S, StoreError>>,
    mut visit: impl FnMut(DateTime<Utc>, S),
) -> Result<(), StoreError> {
    let key = SummaryKey::of(tile, summary, width);
    let step = chrono::Duration::microseconds(width.micros() * BUCKETS_PER_READ);
    let mut start = tile.start;
    while start < tile.end {
        let end = (start + step).min(tile.end);
        let per_bucket = CountQuery {
            start,
            end,
            grouping: Grouping::Bucket(width),
            ..tile.clone()
        };
        let mut buckets: Vec<(DateTime<Utc>, u64)> = reads
            .event_counts(&per_bucket)
            .await?
            .into_iter()
            .filter_map(|row| Some((row.bucket?, row.count)))
            .collect();
        buckets.sort();
        let mut stored: HashMap<DateTime<Utc>, StoredSummary> = reads
            .stored_summaries(key, start, end, true)
            .await?
            .into_iter()
            .map(|summary| (summary.bucket, summary))
            .collect();
        for (bucket, event_count) in buckets {
            let summary = match stored.remove(&bucket) {
                Some(kept) if kept.event_count == event_count => S::decode(&kept.body)?,
                _ => {
                    build_and_store(reads, key, tile, bucket, event_count, &build)
                        .await?
                        .0
                }
            };
            visit(bucket, summary);
        }
        start = end;
    }
    Ok(())
}

/// Builds the summary of `bucket` (of `key`'s width, `tile`'s tenant and type) from its
/// events and stores it with `event_count` when it is worth keeping; returns it, and
/// whether it was stored.
async fn build_and_store<'b, S: Summary>(
    reads: &impl BucketReads,
    key: SummaryKey<'_>,
    tile: &CountQuery,
    bucket: DateTime<Utc>,
    event_count: u64,
    build: &impl Fn(CountQuery) -> BoxFuture<'b, Result<S, StoreError>>,
) -> Result<(S, bool), StoreError> {
    let window = CountQuery {
        start: bucket,
        end: bucket + chrono::Duration::microseconds(key.width.micros()),
        ..tile.clone()
    };
    let built = build(window).await?;
    let keep = built.worth_keeping();
    if keep {
        let summary = StoredSummary {
            bucket,
            event_count,
            body: built.encode(),
        };
        reads.store_summary(key, summary).await?;
    }
    Ok((built, keep))
}

/// The whole buckets of `width` in `tile`'s window (of its tenant and type) with events
/// and no stored `summary` of their current count, each with that count.
pub(crate) async fn stale_buckets(
    reads: &impl BucketReads,
    tile: &CountQuery,
    width: BucketWidth,
    summary: &str,
) -> Result<Vec<(DateTime<Utc>, u64)>, StoreError> {
    let key = SummaryKey::of(tile, summary, width);
    let step = chrono::Duration::microseconds(width.micros() * BUCKETS_PER_READ);
    let (mut start, end) = (width.ceil(tile.start), width.floor(tile.end));
    let mut stale = Vec::new();
    while start < end {
        let chunk_end = (start + step).min(end);
        let per_bucket = CountQuery {
            start,
            end: chunk_end,
            grouping: Grouping::Bucket(width),
            ..tile.clone()
        };
        let stored: HashMap<DateTime<Utc>, u64> = reads
            .stored_summaries(key, start, chunk_end, false)
            .await?
            .into_iter()
            .map(|summary| (summary.bucket, summary.event_count))
            .collect();
        for row in reads.event_counts(&per_bucket).await? {
            if let Some(bucket) = row.bucket
                && stored.get(&bucket) != Some(&row.count)
            {
                stale.push((bucket, row.count));
            }
        }
        start = chunk_end;
    }
    Ok(stale)
}

/// Builds the summary of every whole bucket of each summary width in `tile`'s window
/// that `stale_buckets` names: what a query would build on its path, built ahead of
/// it. Returns how many it built.
pub(crate) async fn refresh<'b, S: Summary>(
    reads: &impl BucketReads,
    tile: &CountQuery,
    summary: &str,
    build: impl Fn(CountQuery) -> BoxFuture<'b, Result<S, StoreError>>,
) -> Result<u64, StoreError> {
    let mut built = 0;
    for &width in SUMMARY_WIDTHS {
        let key = SummaryKey::of(tile, summary, width);
        for (bucket, event_count) in stale_buckets(reads, tile, width, summary).await? {
            let (_, stored) =
                build_and_store(reads, key, tile, bucket, event_count, &build).await?;
            built += u64::from(stored);
        }
    }
    Ok(built)
}
