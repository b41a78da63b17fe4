//! Counts, top types and series answered from the daily rollup for whole days, the hourly
//! rollup for the whole hours around them, the minute rollup for the whole minutes around
//! those, and raw events only for the partial minutes at the edges, so their cost follows
//! buckets × types, not events.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use eventline_core::{
    Error, TenantId,
    query::{BucketWidth, CountQuery, CountRow, Grouping},
};
use eventline_store::Store;

/// Counts `[start, end)` grouped per `grouping`, merged across rollup and raw reads.
pub(crate) async fn counts(
    store: &dyn Store,
    tenant_id: TenantId,
    event_type: Option<String>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    grouping: Grouping,
) -> Result<HashMap<(Option<DateTime<Utc>>, Option<String>), u64>, Error> {
    let query = |start, end| CountQuery {
        tenant_id,
        event_type: event_type.clone(),
        start,
        end,
        grouping,
    };
    let reads: Vec<_> = split(start, end, grouping)
        .into_iter()
        .map(|(source, from, to)| (source, query(from, to)))
        .collect();
    // The reads are independent: run them at once, each on its own connection.
    let rows = futures::future::try_join_all(reads.iter().map(|(source, part)| match source {
        Source::Raw => store.count_raw(part),
        Source::Minutes => store.count_minute_rollup(part),
        Source::Hours => store.count_rollup(part),
        Source::Days => store.count_daily_rollup(part),
    }))
    .await?;
    Ok(merge(rows.into_iter().flatten().collect()))
}

/// Where a part of a window is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Raw,
    Minutes,
    Hours,
    Days,
}

/// Tiles `[start, end)` with the coarsest rollups that fit: whole days in the middle,
/// whole hours and whole minutes towards the edges, raw rows for the partial minutes at
/// the very edges. Buckets finer than a day cap the rollups at the bucket width.
fn split(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    grouping: Grouping,
) -> Vec<(Source, DateTime<Utc>, DateTime<Utc>)> {
    let coarsest = match grouping {
        Grouping::Bucket(BucketWidth::Minute) => 1,
        Grouping::Bucket(BucketWidth::Hour) => 2,
        _ => 3,
    };
    let levels = [
        (Source::Minutes, BucketWidth::Minute),
        (Source::Hours, BucketWidth::Hour),
        (Source::Days, BucketWidth::Day),
    ];
    let mut parts = Vec::new();
    // [low, high) is still to be covered; each level takes its aligned middle and leaves
    // the unaligned edges to the finer level before it.
    let (mut low, mut high) = (start, end);
    let mut finer = Source::Raw;
    for &(source, width) in &levels[..coarsest] {
        let (aligned_low, aligned_high) = (width.ceil(low), width.floor(high));
        if aligned_low >= aligned_high {
            break;
        }
        parts.push((finer, low, aligned_low));
        parts.push((finer, aligned_high, high));
        (low, high, finer) = (aligned_low, aligned_high, source);
    }
    parts.push((finer, low, high));
    parts.retain(|(_, from, to)| from < to);
    parts
}

/// Sums rows of the same (bucket, type) read from different sources.
fn merge(rows: Vec<CountRow>) -> HashMap<(Option<DateTime<Utc>>, Option<String>), u64> {
    let mut merged = HashMap::with_capacity(rows.len());
    for row in rows {
        *merged.entry((row.bucket, row.event_type)).or_default() += row.count;
    }
    merged
}

/// The bucket starts of a series over `[start, end)`, refusing more than `max_buckets`.
pub(crate) fn bucket_starts(
    width: BucketWidth,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max_buckets: i64,
) -> Result<Vec<DateTime<Utc>>, Error> {
    let first = width.floor(start);
    let span = (end - first).num_microseconds().unwrap_or(i64::MAX);
    let buckets = span / width.micros() + i64::from(span % width.micros() != 0);
    if buckets > max_buckets {
        return Err(Error::invalid(
            "start_time",
            format!(
                "the window holds {buckets} buckets of this interval; at most {max_buckets} are allowed"
            ),
        ));
    }
    let step = chrono::Duration::microseconds(width.micros());
    Ok((0..buckets)
        .map(|index| first + step * index as i32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn buckets_cover_the_window_from_the_aligned_start() {
        let starts = bucket_starts(
            BucketWidth::Hour,
            at("2026-11-20T10:30:00Z"),
            at("2026-11-20T13:00:00Z"),
            100,
        )
        .unwrap();
        let hours: Vec<String> = starts
            .iter()
            .map(|start| start.format("%H:%M").to_string())
            .collect();
        assert_eq!(hours, ["10:00", "11:00", "12:00"]);
    }

    #[test]
    fn a_multi_day_window_tiles_into_raw_minute_hour_and_day_ranges() {
        let (start, end) = (at("2026-11-17T10:30:05Z"), at("2026-11-20T05:15:30Z"));
        let mut parts = split(start, end, Grouping::EventType);
        parts.sort_by_key(|(_, from, _)| *from);
        assert_eq!(
            parts,
            [
                (Source::Raw, start, at("2026-11-17T10:31:00Z")),
                (
                    Source::Minutes,
                    at("2026-11-17T10:31:00Z"),
                    at("2026-11-17T11:00:00Z")
                ),
                (
                    Source::Hours,
                    at("2026-11-17T11:00:00Z"),
                    at("2026-11-18T00:00:00Z")
                ),
                (
                    Source::Days,
                    at("2026-11-18T00:00:00Z"),
                    at("2026-11-20T00:00:00Z")
                ),
                (
                    Source::Hours,
                    at("2026-11-20T00:00:00Z"),
                    at("2026-11-20T05:00:00Z")
                ),
                (
                    Source::Minutes,
                    at("2026-11-20T05:00:00Z"),
                    at("2026-11-20T05:15:00Z")
                ),
                (Source::Raw, at("2026-11-20T05:15:00Z"), end),
            ]
        );
        // Hourly buckets never read whole days; minute buckets only minutes and raw rows.
        let hourly = split(start, end, Grouping::Bucket(BucketWidth::Hour));
        assert!(hourly.iter().all(|(source, _, _)| *source != Source::Days));
        let minutes = split(start, end, Grouping::Bucket(BucketWidth::Minute));
        assert_eq!(minutes.len(), 3);
        // A window inside one minute is all raw.
        let inside = split(start, at("2026-11-17T10:30:50Z"), Grouping::Total);
        assert_eq!(inside, [(Source::Raw, start, at("2026-11-17T10:30:50Z"))]);
    }

    #[test]
    fn too_many_buckets_is_an_error_naming_start_time() {
        let error = bucket_starts(
            BucketWidth::Minute,
            at("2026-01-01T00:00:00Z"),
            at("2026-02-01T00:00:00Z"),
            10_000,
        )
        .unwrap_err();
        assert!(error.to_string().contains("start_time"), "{error}");
    }
}
