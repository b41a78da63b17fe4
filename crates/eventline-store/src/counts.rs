//! How a store answers a count from its tables: a window is tiled with the coarsest
//! rollups the store keeps (whole days in the middle, whole hours and minutes towards the
//! edges) and raw events only for what no rollup covers, so the cost follows
//! buckets × types, not events. Both backends share this; each says which rollups it
//! keeps and how to count one tile from one table.

use std::{collections::HashMap, future::Future};

use chrono::{DateTime, Utc};
use eventline_core::query::{BucketWidth, CountQuery, CountRow, Grouping};

use crate::StoreError;

/// A table a count can read: the raw events, or a rollup at one width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountSource {
    Events,
    Rollup(BucketWidth),
}

/// Counts `query` by tiling its window over `rollups` (the widths the store keeps, finest
/// first) and counting every tile with `count` at once, each on its own connection;
/// returns one row per (bucket, type), the same rows counting raw events would give.
pub(crate) async fn tiled<F, Fut>(
    query: &CountQuery,
    rollups: &[BucketWidth],
    count: F,
) -> Result<Vec<CountRow>, StoreError>
where
    F: Fn(CountSource, CountQuery) -> Fut,
    Fut: Future<Output = Result<Vec<CountRow>, StoreError>>,
{
    let tiles = tile(query.start, query.end, query.grouping, rollups);
    let reads = tiles.into_iter().map(|(source, start, end)| {
        count(
            source,
            CountQuery {
                start,
                end,
                ..query.clone()
            },
        )
    });
    let rows = futures::future::try_join_all(reads).await?;
    Ok(merge(rows.into_iter().flatten()))
}

/// Tiles `[start, end)`: each rollup width takes the aligned middle of what is left and
/// leaves the unaligned edges to the finer source before it. A rollup is never used for
/// buckets finer than its width (hourly buckets never read the daily rollup).
pub(crate) fn tile(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    grouping: Grouping,
    rollups: &[BucketWidth],
) -> Vec<(CountSource, DateTime<Utc>, DateTime<Utc>)> {
    let usable = |width: BucketWidth| match grouping {
        Grouping::Bucket(bucket) => width.micros() <= bucket.micros(),
        Grouping::Total | Grouping::EventType => true,
    };
    let mut tiles = Vec::new();
    let (mut low, mut high) = (start, end);
    let mut finer = CountSource::Events;
    for &width in rollups.iter().filter(|&&width| usable(width)) {
        let (aligned_low, aligned_high) = (width.ceil(low), width.floor(high));
        if aligned_low >= aligned_high {
            break;
        }
        tiles.push((finer, low, aligned_low));
        tiles.push((finer, aligned_high, high));
        (low, high, finer) = (aligned_low, aligned_high, CountSource::Rollup(width));
    }
    tiles.push((finer, low, high));
    tiles.retain(|(_, from, to)| from < to);
    tiles
}

/// Sums rows of the same (bucket, type) read from different tiles.
fn merge(rows: impl Iterator<Item = CountRow>) -> Vec<CountRow> {
    let mut merged: HashMap<(Option<DateTime<Utc>>, Option<String>), u64> = HashMap::new();
    for row in rows {
        *merged.entry((row.bucket, row.event_type)).or_default() += row.count;
    }
    merged
        .into_iter()
        .map(|((bucket, event_type), count)| CountRow {
            bucket,
            event_type,
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [BucketWidth; 3] = [BucketWidth::Minute, BucketWidth::Hour, BucketWidth::Day];

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn rollup(width: BucketWidth) -> CountSource {
        CountSource::Rollup(width)
    }

    #[test]
    fn a_multi_day_window_tiles_into_raw_minute_hour_and_day_ranges() {
        let (start, end) = (at("2026-11-17T10:30:05Z"), at("2026-11-20T05:15:30Z"));
        let mut tiles = tile(start, end, Grouping::EventType, &ALL);
        tiles.sort_by_key(|(_, from, _)| *from);
        assert_eq!(
            tiles,
            [
                (CountSource::Events, start, at("2026-11-17T10:31:00Z")),
                (
                    rollup(BucketWidth::Minute),
                    at("2026-11-17T10:31:00Z"),
                    at("2026-11-17T11:00:00Z")
                ),
                (
                    rollup(BucketWidth::Hour),
                    at("2026-11-17T11:00:00Z"),
                    at("2026-11-18T00:00:00Z")
                ),
                (
                    rollup(BucketWidth::Day),
                    at("2026-11-18T00:00:00Z"),
                    at("2026-11-20T00:00:00Z")
                ),
                (
                    rollup(BucketWidth::Hour),
                    at("2026-11-20T00:00:00Z"),
                    at("2026-11-20T05:00:00Z")
                ),
                (
                    rollup(BucketWidth::Minute),
                    at("2026-11-20T05:00:00Z"),
                    at("2026-11-20T05:15:00Z")
                ),
                (CountSource::Events, at("2026-11-20T05:15:00Z"), end),
            ]
        );
        // Hourly buckets never read whole days; minute buckets only minutes and raw rows.
        let hourly = tile(start, end, Grouping::Bucket(BucketWidth::Hour), &ALL);
        assert!(
            hourly
                .iter()
                .all(|(source, ..)| *source != rollup(BucketWidth::Day))
        );
        let minutes = tile(start, end, Grouping::Bucket(BucketWidth::Minute), &ALL);
        assert_eq!(minutes.len(), 3);
        // A window inside one minute is all raw.
        let inside = tile(start, at("2026-11-17T10:30:50Z"), Grouping::Total, &ALL);
        assert_eq!(
            inside,
            [(CountSource::Events, start, at("2026-11-17T10:30:50Z"))]
        );
    }

    #[test]
    fn a_store_with_only_an_hourly_rollup_reads_raw_rows_at_the_edges() {
        let (start, end) = (at("2026-11-17T10:30:05Z"), at("2026-11-20T05:15:30Z"));
        let mut tiles = tile(start, end, Grouping::Total, &[BucketWidth::Hour]);
        tiles.sort_by_key(|(_, from, _)| *from);
        assert_eq!(
            tiles,
            [
                (CountSource::Events, start, at("2026-11-17T11:00:00Z")),
                (
                    rollup(BucketWidth::Hour),
                    at("2026-11-17T11:00:00Z"),
                    at("2026-11-20T05:00:00Z")
                ),
                (CountSource::Events, at("2026-11-20T05:00:00Z"), end),
            ]
        );
        // Minute buckets are finer than the only rollup: all raw.
        let minutes = tile(
            start,
            end,
            Grouping::Bucket(BucketWidth::Minute),
            &[BucketWidth::Hour],
        );
        assert_eq!(minutes, [(CountSource::Events, start, end)]);
    }

    #[test]
    fn rows_of_the_same_group_from_different_tiles_are_summed() {
        let row = |event_type: &str, count| CountRow {
            bucket: None,
            event_type: Some(event_type.to_owned()),
            count,
        };
        let mut merged = merge([row("a", 2), row("b", 1), row("a", 3)].into_iter());
        merged.sort_by(|left, right| left.event_type.cmp(&right.event_type));
        assert_eq!(merged, [row("a", 5), row("b", 1)]);
    }
}
