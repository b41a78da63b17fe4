//! Breakdowns by a property, the same way on every store: the window is tiled like a
//! count (whole days, whole hours, raw edges; `counts::tile`); each whole day or hour
//! contributes its counts per (type, value), kept as a bucket summary (`summaries`), and
//! only the edges are grouped from the events at query time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    TenantId,
    breakdown::{BreakdownQuery, BreakdownRow},
    query::{CountQuery, Grouping},
};
use futures::FutureExt;

use crate::{
    StoreError,
    counts::{self, CountSource},
    summaries::{self, BucketReads, Summary},
};

/// What a backend provides for breakdowns, besides bucket summaries.
#[async_trait]
pub(crate) trait BreakdownReads: BucketReads {
    /// Counts per (group of `query.counting`, value), from the events.
    async fn raw_breakdown(&self, query: &BreakdownQuery) -> Result<Vec<BreakdownRow>, StoreError>;
}

/// One bucket's counts per (event type, value as JSON text or none).
#[derive(Debug, Default)]
struct TypeValueCounts(Vec<(String, Option<String>, u64)>);

impl Summary for TypeValueCounts {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }

    fn decode(body: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(body)
            .map(TypeValueCounts)
            .map_err(|error| StoreError::Internal(format!("a stored breakdown: {error}")))
    }

    /// A property with more distinct values than this in one bucket (an id, a URL) is
    /// not kept: its summary would be as large as the events it sums up.
    fn worth_keeping(&self) -> bool {
        self.0.len() <= MAX_KEPT_VALUES
    }
}

/// The most (type, value) pairs a kept breakdown summary may hold.
const MAX_KEPT_VALUES: usize = 1_000;

/// One bucket's counts per (type, value of `property`), from its events.
async fn bucket_counts(
    reads: &impl BreakdownReads,
    window: CountQuery,
    property: &str,
) -> Result<TypeValueCounts, StoreError> {
    let by_type = BreakdownQuery {
        counting: CountQuery {
            grouping: Grouping::EventType,
            ..window
        },
        property: property.to_owned(),
    };
    let raw = reads.raw_breakdown(&by_type).await?;
    Ok(TypeValueCounts(
        raw.into_iter()
            .map(|row| (row.event_type.unwrap_or_default(), row.value, row.count))
            .collect(),
    ))
}

/// Builds ahead of queries the breakdown summaries of every whole hour and day in
/// `[start, end)` of `tenant_id`, for each (type, property) it already keeps some of:
/// a breakdown asked once is ready the next time, new hours included. Returns how many
/// it built.
pub(crate) async fn prepare(
    reads: &impl BreakdownReads,
    tenant_id: TenantId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut built = 0;
    for (event_type, summary) in reads.kept_summaries(tenant_id, PROPERTY_PREFIX).await? {
        let Some(property) = summary.strip_prefix(PROPERTY_PREFIX) else {
            continue;
        };
        let tile = CountQuery {
            event_type: (!event_type.is_empty()).then_some(event_type),
            ..CountQuery::total(tenant_id, start, end)
        };
        let build = |window: CountQuery| bucket_counts(reads, window, property).boxed();
        built += summaries::refresh(reads, &tile, &summary, build).await?;
    }
    Ok(built)
}

/// The prefix of a breakdown summary's name: `property:<name>`.
const PROPERTY_PREFIX: &str = "property:";

/// Counts per (group of `query.counting`, value of `query.property`).
pub(crate) async fn breakdown(
    reads: &impl BreakdownReads,
    query: &BreakdownQuery,
) -> Result<Vec<BreakdownRow>, StoreError> {
    let counting = &query.counting;
    let summary = format!("{PROPERTY_PREFIX}{}", query.property);
    let mut rows = Vec::new();
    let tiles = counts::tile(
        counting.start,
        counting.end,
        counting.grouping,
        summaries::SUMMARY_WIDTHS,
    );
    for (source, start, end) in tiles {
        let tile = CountQuery {
            start,
            end,
            ..counting.clone()
        };
        match source {
            CountSource::Events => {
                let edge = BreakdownQuery {
                    counting: tile,
                    property: query.property.clone(),
                };
                rows.extend(reads.raw_breakdown(&edge).await?);
            }
            CountSource::Rollup(width) => {
                let build =
                    |window: CountQuery| bucket_counts(reads, window, &query.property).boxed();
                let visit = |bucket, counts: TypeValueCounts| {
                    for (event_type, value, count) in counts.0 {
                        rows.push(BreakdownRow {
                            bucket: match counting.grouping {
                                Grouping::Bucket(width) => Some(width.floor(bucket)),
                                Grouping::Total | Grouping::EventType => None,
                            },
                            event_type: (counting.grouping == Grouping::EventType)
                                .then_some(event_type),
                            value,
                            count,
                        });
                    }
                };
                summaries::for_each_summary(reads, &tile, width, &summary, build, visit).await?;
            }
        }
    }
    Ok(rows)
}
