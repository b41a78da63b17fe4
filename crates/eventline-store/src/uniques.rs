//! Unique users of a window, the same way on every store. A window with few events is
//! answered exactly (`count(DISTINCT user_id)` over its events). A larger one is tiled
//! like a count (whole days, whole hours, raw edges; `counts::tile`): each whole day or
//! hour contributes its HyperLogLog sketch (`eventline_core::sketch`), the raw edges
//! their users hashed in, and the merged sketches give the estimate. A bucket's sketch is
//! built from its events on first use and kept with the bucket's event count (table
//! `user_sketches`); it is reused only while the rollups still show that count, so an
//! event arriving late for an old bucket gets that bucket's sketch rebuilt. Ingest never
//! touches sketches.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    TenantId,
    query::{BucketWidth, CountQuery, CountRow, Grouping},
    sketch::UserSketch,
};
use futures::{StreamExt, stream::BoxStream};

use crate::{StoreError, counts};

/// The sketch widths, finest first.
const SKETCH_WIDTHS: &[BucketWidth] = &[BucketWidth::Hour, BucketWidth::Day];
/// Buckets whose counts and stored sketches are read at once (≤ 4 MiB of sketches).
const BUCKETS_PER_READ: i64 = 256;

/// A stored sketch: the bucket's event count when it was built, and its stored form.
#[derive(Debug, Clone)]
pub(crate) struct StoredSketch {
    pub(crate) bucket: DateTime<Utc>,
    pub(crate) event_count: u64,
    pub(crate) registers: Vec<u8>,
}

/// Which sketches: one tenant, one event type ('' for all), one width.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SketchKey<'k> {
    pub(crate) tenant_id: TenantId,
    pub(crate) event_type: &'k str,
    pub(crate) width: BucketWidth,
}

/// What a backend provides for unique users.
#[async_trait]
pub(crate) trait UserReads: Sync {
    /// Exact distinct users per group of `query`, from the events.
    async fn distinct_users(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError>;

    /// Event counts per group of `query` (`Store::count`: from the rollups).
    async fn event_counts(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError>;

    /// The stored sketches of `key` for buckets in `[start, end)`.
    async fn stored_sketches(
        &self,
        key: SketchKey<'_>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<StoredSketch>, StoreError>;

    /// Stores (or replaces) one bucket's sketch.
    async fn store_sketch(
        &self,
        key: SketchKey<'_>,
        sketch: StoredSketch,
    ) -> Result<(), StoreError>;

    /// The `(timestamp, user_id)` of every event of `query`'s tenant and type in its
    /// window that has a user.
    fn users<'a>(
        &'a self,
        query: &'a CountQuery,
    ) -> BoxStream<'a, Result<(DateTime<Utc>, String), StoreError>>;
}

/// Distinct users per group of `query` and whether they are exact: exact when the
/// window holds at most `exact_up_to` events or is grouped finer than hours.
pub(crate) async fn count_users(
    reads: &impl UserReads,
    query: &CountQuery,
    exact_up_to: u64,
) -> Result<(Vec<CountRow>, bool), StoreError> {
    let sketchable = matches!(
        query.grouping,
        Grouping::Total | Grouping::Bucket(BucketWidth::Hour | BucketWidth::Day)
    );
    if sketchable {
        let total = CountQuery {
            grouping: Grouping::Total,
            ..query.clone()
        };
        let events: u64 = reads
            .event_counts(&total)
            .await?
            .iter()
            .map(|row| row.count)
            .sum();
        if events > exact_up_to {
            return Ok((estimate(reads, query).await?, false));
        }
    }
    Ok((reads.distinct_users(query).await?, true))
}

/// The output bucket of an event or sketch at `time` (`None` for a total).
fn output_bucket(grouping: Grouping, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match grouping {
        Grouping::Bucket(width) => Some(width.floor(time)),
        Grouping::Total | Grouping::EventType => None,
    }
}

/// Sketch-based distinct users per group of `query` (total, hourly or daily).
async fn estimate(reads: &impl UserReads, query: &CountQuery) -> Result<Vec<CountRow>, StoreError> {
    // Output buckets a whole tile covers are estimated at once; the others (a total, or
    // the partial buckets at the window's edges) merge here: at most two at a time.
    let mut merged: BTreeMap<Option<DateTime<Utc>>, UserSketch> = BTreeMap::new();
    let mut rows: Vec<CountRow> = Vec::new();
    for (source, start, end) in counts::tile(query.start, query.end, query.grouping, SKETCH_WIDTHS)
    {
        let tile = CountQuery {
            start,
            end,
            ..query.clone()
        };
        match source {
            counts::CountSource::Events => {
                let mut users = reads.users(&tile);
                while let Some((time, user_id)) = users.next().await.transpose()? {
                    merged
                        .entry(output_bucket(query.grouping, time))
                        .or_default()
                        .insert(&user_id);
                }
            }
            counts::CountSource::Rollup(width) => {
                let whole = query.grouping == Grouping::Bucket(width);
                for_each_sketch(reads, &tile, width, |bucket, sketch| {
                    if whole {
                        rows.push(CountRow {
                            bucket: Some(bucket),
                            event_type: None,
                            count: sketch.estimate(),
                        });
                    } else {
                        merged
                            .entry(output_bucket(query.grouping, bucket))
                            .or_default()
                            .merge(&sketch);
                    }
                })
                .await?;
            }
        }
    }
    rows.extend(merged.into_iter().map(|(bucket, sketch)| CountRow {
        bucket,
        event_type: None,
        count: sketch.estimate(),
    }));
    rows.retain(|row| row.count > 0);
    Ok(rows)
}

/// Calls `visit` with the sketch of every bucket of `width` in `tile`'s window that has
/// events, stored ones reused while their event count still holds, the rest built from
/// the events and stored.
async fn for_each_sketch(
    reads: &impl UserReads,
    tile: &CountQuery,
    width: BucketWidth,
    mut visit: impl FnMut(DateTime<Utc>, UserSketch),
) -> Result<(), StoreError> {
    let key = SketchKey {
        tenant_id: tile.tenant_id,
        event_type: tile.event_type.as_deref().unwrap_or(""),
        width,
    };
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
        let counts: HashMap<DateTime<Utc>, u64> = reads
            .event_counts(&per_bucket)
            .await?
            .into_iter()
            .filter_map(|row| Some((row.bucket?, row.count)))
            .collect();
        let mut stored: HashMap<DateTime<Utc>, StoredSketch> = reads
            .stored_sketches(key, start, end)
            .await?
            .into_iter()
            .map(|sketch| (sketch.bucket, sketch))
            .collect();
        let mut buckets: Vec<(DateTime<Utc>, u64)> = counts.into_iter().collect();
        buckets.sort();
        for (bucket, event_count) in buckets {
            let sketch = match stored.remove(&bucket) {
                Some(kept) if kept.event_count == event_count => {
                    UserSketch::decode(&kept.registers)
                        .map_err(|error| StoreError::Internal(error.to_string()))?
                }
                _ => build_sketch(reads, key, tile, bucket, event_count).await?,
            };
            visit(bucket, sketch);
        }
        start = end;
    }
    Ok(())
}

/// Builds one bucket's sketch from its events and stores it with `event_count`.
async fn build_sketch(
    reads: &impl UserReads,
    key: SketchKey<'_>,
    tile: &CountQuery,
    bucket: DateTime<Utc>,
    event_count: u64,
) -> Result<UserSketch, StoreError> {
    let window = CountQuery {
        start: bucket,
        end: bucket + chrono::Duration::microseconds(key.width.micros()),
        ..tile.clone()
    };
    let mut sketch = UserSketch::default();
    let mut users = reads.users(&window);
    while let Some((_, user_id)) = users.next().await.transpose()? {
        sketch.insert(&user_id);
    }
    drop(users);
    reads
        .store_sketch(
            key,
            StoredSketch {
                bucket,
                event_count,
                registers: sketch.encode(),
            },
        )
        .await?;
    Ok(sketch)
}
