//! Unique users of a window, the same way on every store. A window with few events is
//! answered exactly (`count(DISTINCT user_id)` over its events). A larger one is tiled
//! like a count (whole days, whole hours, raw edges; `counts::tile`): each whole day or
//! hour contributes its HyperLogLog sketch (`eventline_core::sketch`, kept as a bucket
//! summary: `summaries`), the raw edges their users hashed in, and the merged sketches
//! give the estimate.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    query::{BucketWidth, CountQuery, CountRow, Grouping},
    sketch::UserSketch,
};
use futures::{FutureExt, StreamExt, stream::BoxStream};

use crate::{
    StoreError, counts,
    summaries::{self, BucketReads, Summary},
};

/// The bucket summary that holds a sketch of the bucket's users.
const USERS_SUMMARY: &str = "users";

/// The widths user sketches are kept at: besides hours and days, whole minutes at a
/// window's edges, so that only the partial minutes there are read from the events
/// (a partial hour holds up to an hour of them; README "Unique users and breakdowns").
const SKETCH_WIDTHS: &[BucketWidth] = &[BucketWidth::Minute, BucketWidth::Hour, BucketWidth::Day];

impl Summary for UserSketch {
    fn encode(&self) -> Vec<u8> {
        UserSketch::encode(self)
    }

    fn decode(body: &[u8]) -> Result<Self, StoreError> {
        UserSketch::decode(body).map_err(|error| StoreError::Internal(error.to_string()))
    }
}

/// What a backend provides for unique users, besides bucket summaries.
#[async_trait]
pub(crate) trait UserReads: BucketReads {
    /// Exact distinct users per group of `query`, from the events.
    async fn distinct_users(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError>;

    /// The `(timestamp, user_id)` of every event of `query`'s tenant and type in its
    /// window that has a user.
    fn users<'a>(
        &'a self,
        query: &'a CountQuery,
    ) -> BoxStream<'a, Result<(DateTime<Utc>, String), StoreError>>;

    /// The `(event type, timestamp, user_id)` of every event of `tenant_id` of one of
    /// `event_types` in `[start, end)` that has a user: one read for many timelines.
    fn typed_users<'a>(
        &'a self,
        tenant_id: eventline_core::TenantId,
        event_types: &'a [String],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> BoxStream<'a, Result<TypedUser, StoreError>>;
}

/// An event's type, timestamp and user id, as `UserReads::typed_users` reads them.
pub(crate) type TypedUser = (String, DateTime<Utc>, String);

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
    // the partial buckets at the window's edges) merge here. The tiles are read at once,
    // each on its own connection: the raw edges' index scans overlap the sketches' reads.
    let tiles = counts::tile(query.start, query.end, query.grouping, SKETCH_WIDTHS)
        .into_iter()
        .map(|(source, start, end)| async move {
            let tile = CountQuery {
                start,
                end,
                ..query.clone()
            };
            let mut merged: BTreeMap<Option<DateTime<Utc>>, UserSketch> = BTreeMap::new();
            let mut rows: Vec<CountRow> = Vec::new();
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
                    let build = |window: CountQuery| sketch_of(reads, window).boxed();
                    summaries::for_each_summary(
                        reads,
                        &tile,
                        width,
                        USERS_SUMMARY,
                        build,
                        |bucket, sketch: UserSketch| {
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
                        },
                    )
                    .await?;
                }
            }
            Ok::<_, StoreError>((merged, rows))
        });
    let mut merged: BTreeMap<Option<DateTime<Utc>>, UserSketch> = BTreeMap::new();
    let mut rows: Vec<CountRow> = Vec::new();
    for (tile_merged, tile_rows) in futures::future::try_join_all(tiles).await? {
        rows.extend(tile_rows);
        for (bucket, sketch) in tile_merged {
            merged.entry(bucket).or_default().merge(&sketch);
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

/// The sketch of the users of `window`'s events.
async fn sketch_of(reads: &impl UserReads, window: CountQuery) -> Result<UserSketch, StoreError> {
    let mut sketch = UserSketch::default();
    let mut users = reads.users(&window);
    while let Some((_, user_id)) = users.next().await.transpose()? {
        sketch.insert(&user_id);
    }
    Ok(sketch)
}

/// Builds the user sketches of every whole hour and day in `[start, end)` of `tenant_id`
/// (of `event_type`, or all types) that has none or a stale one: off the query path.
pub(crate) async fn prepare(
    reads: &impl UserReads,
    tenant_id: eventline_core::TenantId,
    event_type: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let tile = CountQuery {
        tenant_id,
        event_type: event_type.map(str::to_owned),
        start,
        end,
        grouping: Grouping::Total,
    };
    let build = |window: CountQuery| sketch_of(reads, window).boxed();
    summaries::refresh(reads, &tile, USERS_SUMMARY, build).await
}
