//! Counts, top types and series answered from the daily rollup for whole days, from the
//! hourly rollup for the whole hours around them, and from raw events only for the partial
//! hours at the edges (and for minute buckets), so their cost follows buckets × types, not
//! events.

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
    let first_full_hour = BucketWidth::Hour.ceil(start);
    let last_full_hour = BucketWidth::Hour.floor(end);
    if grouping == Grouping::Bucket(BucketWidth::Minute) || first_full_hour >= last_full_hour {
        return Ok(merge(store.count_raw(&query(start, end)).await?));
    }
    let (raw, hourly, daily) = split(start, end, grouping);
    let queries: Vec<CountQuery> = [&raw, &hourly, &daily]
        .into_iter()
        .flatten()
        .map(|&(from, to)| query(from, to))
        .collect();
    // The reads are independent: run them at once, each on its own connection.
    let mut reads = Vec::with_capacity(queries.len());
    for (index, part) in queries.iter().enumerate() {
        reads.push(if index < raw.len() {
            store.count_raw(part)
        } else if index < raw.len() + hourly.len() {
            store.count_rollup(part)
        } else {
            store.count_daily_rollup(part)
        });
    }
    let rows = futures::future::try_join_all(reads).await?;
    Ok(merge(rows.into_iter().flatten().collect()))
}

type Ranges = Vec<(DateTime<Utc>, DateTime<Utc>)>;

/// Splits `[start, end)` (which holds at least one whole hour) into the ranges read from
/// raw rows (partial hours at the edges), from hourly rollups and from daily rollups
/// (whole UTC days, unless the grouping needs hourly buckets).
fn split(start: DateTime<Utc>, end: DateTime<Utc>, grouping: Grouping) -> (Ranges, Ranges, Ranges) {
    let first_full_hour = BucketWidth::Hour.ceil(start);
    let last_full_hour = BucketWidth::Hour.floor(end);
    let raw: Ranges = [(start, first_full_hour), (last_full_hour, end)]
        .into_iter()
        .filter(|(from, to)| from < to)
        .collect();
    let first_full_day = BucketWidth::Day.ceil(first_full_hour);
    let last_full_day = BucketWidth::Day.floor(last_full_hour);
    if grouping == Grouping::Bucket(BucketWidth::Hour) || first_full_day >= last_full_day {
        return (raw, vec![(first_full_hour, last_full_hour)], Vec::new());
    }
    let hourly: Ranges = [
        (first_full_hour, first_full_day),
        (last_full_day, last_full_hour),
    ]
    .into_iter()
    .filter(|(from, to)| from < to)
    .collect();
    (raw, hourly, vec![(first_full_day, last_full_day)])
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
    fn a_multi_day_window_splits_into_raw_hourly_and_daily_ranges_that_tile_it() {
        let (start, end) = (at("2026-11-17T10:30:00Z"), at("2026-11-20T05:15:00Z"));
        let (raw, hourly, daily) = split(start, end, Grouping::EventType);
        assert_eq!(
            raw,
            [
                (start, at("2026-11-17T11:00:00Z")),
                (at("2026-11-20T05:00:00Z"), end)
            ]
        );
        assert_eq!(
            hourly,
            [
                (at("2026-11-17T11:00:00Z"), at("2026-11-18T00:00:00Z")),
                (at("2026-11-20T00:00:00Z"), at("2026-11-20T05:00:00Z"))
            ]
        );
        assert_eq!(
            daily,
            [(at("2026-11-18T00:00:00Z"), at("2026-11-20T00:00:00Z"))]
        );
        // Hourly buckets never read whole days.
        let (_, hourly, daily) = split(start, end, Grouping::Bucket(BucketWidth::Hour));
        assert_eq!(
            hourly,
            [(at("2026-11-17T11:00:00Z"), at("2026-11-20T05:00:00Z"))]
        );
        assert!(daily.is_empty());
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
