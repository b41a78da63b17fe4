//! Funnels and retention from per-type timelines: for each event type, the (user, time)
//! of its events, kept per whole UTC hour and day as a bucket summary (`user_times`,
//! `crate::summaries`: reused while the rollups show the bucket's event count, dropped
//! by a user deletion, rebuilt after a late event) and read raw only at the window's
//! unaligned edges. A server builds them in the background as hours close
//! (`prepare_summaries`), so queries read ready summaries instead of sorting events.
//!
//! With the timelines a funnel of distinct steps is a chain of per-user minimums, one
//! pass over each step's events in any order: the entering time is the user's first
//! `steps[0]` time in the window, and step k's time is the first `steps[k]` time at or
//! after step k-1's and at most the conversion window after entering. Greedy earliest
//! matching is what `analytics::funnel`'s walk does, so the answers are the same; the
//! walk stays for what the timelines do not carry (a property filter or grouping, a
//! repeated step). Retention is one pass too: each user's first start time gives the
//! cohort, each return time at or after it marks its interval.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use eventline_core::{
    Tenant, TenantId,
    query::{
        BucketWidth, Cohort, CountQuery, EventFilter, FunnelCounts, FunnelQuery, Grouping,
        RetentionQuery,
    },
};
use futures::{FutureExt, StreamExt};

use crate::{
    StoreError, analytics,
    breakdowns::{self, BreakdownReads},
    counts,
    summaries::{self, Summary},
    uniques::{self, UserReads},
};

/// The bucket summary that holds a type's (user, time) pairs.
pub(crate) const TIMES_SUMMARY: &str = "user_times";

type UserMap<V> = HashMap<u64, V, foldhash::fast::RandomState>;

/// The (user key, microseconds since the epoch) of each event of one type in a bucket;
/// the user key is `analytics::user_key` of the user id on every store.
#[derive(Debug, Default)]
pub(crate) struct UserTimes(Vec<(u64, i64)>);

/// Bytes of one stored pair: the user key and the time, little-endian.
const PAIR_BYTES: usize = 16;

impl Summary for UserTimes {
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.0.len() * PAIR_BYTES);
        for (user, time) in &self.0 {
            body.extend_from_slice(&user.to_le_bytes());
            body.extend_from_slice(&time.to_le_bytes());
        }
        body
    }

    fn decode(body: &[u8]) -> Result<Self, StoreError> {
        if !body.len().is_multiple_of(PAIR_BYTES) {
            return Err(StoreError::Internal(format!(
                "a user_times summary of {} bytes is not whole pairs",
                body.len()
            )));
        }
        let pairs = body
            .chunks_exact(PAIR_BYTES)
            .map(|pair| {
                let (user, time) = pair.split_at(8);
                (
                    u64::from_le_bytes(user.try_into().unwrap_or_default()),
                    i64::from_le_bytes(time.try_into().unwrap_or_default()),
                )
            })
            .collect();
        Ok(Self(pairs))
    }
}

/// The (user, time) of every event of `event_type` with a user in `[start, end)`: whole
/// hours and days from their summaries, the edges from the events.
async fn times_of(
    reads: &impl UserReads,
    tenant_id: TenantId,
    event_type: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<(u64, i64)>, StoreError> {
    // The tiles are read at once, each on its own connection: the raw edges' index
    // scans overlap the summaries' reads.
    let tiles = counts::tile(start, end, Grouping::Total, summaries::SUMMARY_WIDTHS)
        .into_iter()
        .map(|(source, start, end)| async move {
            let tile = CountQuery {
                event_type: Some(event_type.to_owned()),
                ..CountQuery::total(tenant_id, start, end)
            };
            match source {
                counts::CountSource::Events => Ok(read_times(reads, &tile).await?.0),
                counts::CountSource::Rollup(width) => {
                    let mut times = Vec::new();
                    let build = |window: CountQuery| {
                        async move { read_times(reads, &window).await }.boxed()
                    };
                    summaries::for_each_summary(
                        reads,
                        &tile,
                        width,
                        TIMES_SUMMARY,
                        build,
                        |_, bucket: UserTimes| times.extend(bucket.0),
                    )
                    .await?;
                    Ok::<_, StoreError>(times)
                }
            }
        });
    Ok(futures::future::try_join_all(tiles).await?.concat())
}

/// The timeline of `window`'s type from its events.
async fn read_times(reads: &impl UserReads, window: &CountQuery) -> Result<UserTimes, StoreError> {
    let mut times = Vec::new();
    let mut users = reads.users(window);
    while let Some((time, user_id)) = users.next().await.transpose()? {
        times.push((
            analytics::user_key(&user_id) as u64,
            time.timestamp_micros(),
        ));
    }
    Ok(UserTimes(times))
}

/// Builds the timelines of `event_types` (of one tenant) for every whole hour and day in
/// `[start, end)` that has none or a stale one: one read of the events of each such
/// bucket serves all its types. Returns how many it built.
async fn prepare_tenant(
    reads: &impl UserReads,
    tenant_id: TenantId,
    event_types: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut built = 0;
    for &width in summaries::SUMMARY_WIDTHS {
        let mut stale: BTreeMap<DateTime<Utc>, Vec<(&str, u64)>> = BTreeMap::new();
        for event_type in event_types {
            let tile = CountQuery {
                event_type: Some(event_type.clone()),
                ..CountQuery::total(tenant_id, start, end)
            };
            for (bucket, count) in
                summaries::stale_buckets(reads, &tile, width, TIMES_SUMMARY).await?
            {
                stale.entry(bucket).or_default().push((event_type, count));
            }
        }
        for (bucket, wanted) in stale {
            let types: Vec<String> = wanted
                .iter()
                .map(|(event_type, _)| (*event_type).to_owned())
                .collect();
            let bucket_end = bucket + chrono::Duration::microseconds(width.micros());
            let mut by_type: HashMap<String, Vec<(u64, i64)>> = HashMap::new();
            let mut rows = reads.typed_users(tenant_id, &types, bucket, bucket_end);
            while let Some((event_type, time, user_id)) = rows.next().await.transpose()? {
                by_type.entry(event_type).or_default().push((
                    analytics::user_key(&user_id) as u64,
                    time.timestamp_micros(),
                ));
            }
            drop(rows);
            for (event_type, event_count) in wanted {
                let times = UserTimes(by_type.remove(event_type).unwrap_or_default());
                let key = summaries::SummaryKey {
                    tenant_id,
                    event_type,
                    summary: TIMES_SUMMARY,
                    width,
                };
                let summary = summaries::StoredSummary {
                    bucket,
                    event_count,
                    body: times.encode(),
                };
                reads.store_summary(key, summary).await?;
                built += 1;
            }
        }
    }
    Ok(built)
}

/// Builds what queries read of `[start, end)` of one tenant ahead of them: the sketches
/// of its users (unique users per hour or day, all types), the breakdowns it has been
/// asked for, and the timelines of `event_types`, those with events there. Returns how many summaries it built.
pub(crate) async fn prepare_summaries(
    reads: &(impl UserReads + BreakdownReads),
    tenants: &[Tenant],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<u64, StoreError> {
    // Tenant by tenant: each statement stays on one tenant's shard on Citus.
    let mut built = 0;
    for tenant in tenants {
        built += prepare_tenant_summaries(reads, tenant.tenant_id, start, end).await?;
    }
    Ok(built)
}

/// `prepare_summaries` of one tenant, for the types the rollups show in the window.
async fn prepare_tenant_summaries(
    reads: &(impl UserReads + BreakdownReads),
    tenant_id: TenantId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let by_type = CountQuery {
        grouping: Grouping::EventType,
        ..CountQuery::total(tenant_id, start, end)
    };
    let event_types: Vec<String> = reads
        .event_counts(&by_type)
        .await?
        .into_iter()
        .filter(|row| row.count > 0)
        .filter_map(|row| row.event_type)
        .collect();
    // Minute sketches are built only for a window's edges, by the queries; those older
    // than the prepared days go (README "Unique users and breakdowns").
    reads
        .drop_summaries(tenant_id, BucketWidth::Minute, start)
        .await?;
    let users = uniques::prepare(reads, tenant_id, None, start, end).await?;
    let breakdowns = breakdowns::prepare(reads, tenant_id, start, end).await?;
    Ok(users + breakdowns + prepare_tenant(reads, tenant_id, &event_types, start, end).await?)
}

/// The most events a funnel or retention reads into memory as timelines (16 bytes each:
/// 256 MiB); a window with more is walked from one ordered, streamed read instead,
/// holding one user at a time.
const MAX_TIMELINE_EVENTS: u64 = 16 * 1024 * 1024;

/// Whether `event_types` have few enough events in `[start, end)` to be read as
/// timelines (`MAX_TIMELINE_EVENTS`), by the rollups.
pub(crate) async fn fits_in_memory(
    reads: &impl UserReads,
    tenant_id: TenantId,
    event_types: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let total = CountQuery {
        grouping: Grouping::EventType,
        ..CountQuery::total(tenant_id, start, end)
    };
    let events: u64 = reads
        .event_counts(&total)
        .await?
        .iter()
        .filter(|row| {
            row.event_type
                .as_ref()
                .is_some_and(|event_type| event_types.contains(event_type))
        })
        .map(|row| row.count)
        .sum();
    Ok(events <= MAX_TIMELINE_EVENTS)
}

/// Whether the timelines answer `query`: steps all different, no property filter or
/// grouping (the timelines carry neither), and few enough events to hold.
pub(crate) async fn answers_funnel(
    reads: &impl UserReads,
    query: &FunnelQuery,
) -> Result<bool, StoreError> {
    let reading = analytics::Reading::funnel(query);
    Ok(shape_answers_funnel(query)
        && fits_in_memory(
            reads,
            query.tenant_id,
            &query.steps,
            query.start,
            reading.end,
        )
        .await?)
}

/// Whether the timelines answer `query`: two different types, and few enough events.
pub(crate) async fn answers_retention(
    reads: &impl UserReads,
    query: &RetentionQuery,
) -> Result<bool, StoreError> {
    let types = [
        query.start_event_type.clone(),
        query.return_event_type.clone(),
    ];
    Ok(query.start_event_type != query.return_event_type
        && fits_in_memory(reads, query.tenant_id, &types, query.start, query.end).await?)
}

/// Whether a funnel's shape suits the timelines: steps all different, no property filter
/// or grouping (the timelines carry neither).
fn shape_answers_funnel(query: &FunnelQuery) -> bool {
    let mut steps: Vec<&String> = query.steps.iter().collect();
    steps.sort();
    steps.dedup();
    steps.len() == query.steps.len()
        && query.filter == EventFilter::default()
        && query.group_by_property.is_none()
}

/// A funnel of distinct steps, without filter or grouping (`answers_funnel`).
pub(crate) async fn funnel(
    reads: &impl UserReads,
    query: &FunnelQuery,
) -> Result<FunnelCounts, StoreError> {
    let window = query
        .conversion_window
        .num_microseconds()
        .unwrap_or(i64::MAX);
    // What the walk reads: up to the last entering user's conversion window, inclusive.
    let read_end = analytics::Reading::funnel(query).end;
    let mut reached = vec![0u64; query.steps.len()];
    // Every step's timeline at once: the first one's window, then the read window.
    let timelines = query.steps.iter().enumerate().map(|(index, step)| {
        let end = if index == 0 { query.end } else { read_end };
        times_of(reads, query.tenant_id, step, query.start, end)
    });
    let timelines = futures::future::try_join_all(timelines).await?;
    // Each user still in the funnel: when they entered, when they took the last step.
    let mut progress: UserMap<(i64, i64)> = UserMap::default();
    for (index, times) in timelines.into_iter().enumerate() {
        if index == 0 {
            for (user, time) in times {
                progress
                    .entry(user)
                    .and_modify(|(entered, last)| {
                        *entered = (*entered).min(time);
                        *last = *entered;
                    })
                    .or_insert((time, time));
            }
        } else {
            let mut next: UserMap<(i64, i64)> = UserMap::default();
            for (user, time) in times {
                let Some(&(entered, last)) = progress.get(&user) else {
                    continue;
                };
                if time < last || time.saturating_sub(entered) > window {
                    continue;
                }
                next.entry(user)
                    .and_modify(|(_, taken)| *taken = (*taken).min(time))
                    .or_insert((entered, time));
            }
            progress = next;
        }
        reached[index] = progress.len() as u64;
    }
    Ok(FunnelCounts {
        reached,
        by_value: Vec::new(),
    })
}

/// A retention table of two different types (`answers_retention`).
pub(crate) async fn retention(
    reads: &impl UserReads,
    query: &RetentionQuery,
) -> Result<Vec<Cohort>, StoreError> {
    let intervals = query.intervals();
    let mut cohorts = analytics::empty_cohorts(query);
    let times = |event_type| times_of(reads, query.tenant_id, event_type, query.start, query.end);
    let (starts, returns) = futures::future::try_join(
        times(&query.start_event_type),
        times(&query.return_event_type),
    )
    .await?;
    let mut started: UserMap<i64> = UserMap::default();
    for (user, time) in starts {
        started
            .entry(user)
            .and_modify(|first| *first = (*first).min(time))
            .or_insert(time);
    }
    // `RetentionQuery::interval_of` in integers, for the hot loop.
    let start = query.start.timestamp_micros();
    let width = query.interval.num_microseconds().unwrap_or(i64::MAX).max(1);
    let interval_of = |time: i64| (time.saturating_sub(start).max(0) / width) as usize;
    // Each started user's row: their cohort and first start, and in `returned` the
    // intervals after it they came back in, one bit each (one word for up to 64).
    let words = intervals.div_ceil(64).max(1);
    let mut rows: UserMap<usize> = UserMap::default();
    let mut firsts: Vec<(usize, i64)> = Vec::with_capacity(started.len());
    for (user, first) in started {
        let cohort = interval_of(first);
        if let Some(counted) = cohorts.get_mut(cohort) {
            counted.users += 1;
            rows.insert(user, firsts.len());
            firsts.push((cohort, first));
        }
    }
    let mut returned = vec![0u64; firsts.len() * words];
    for (user, time) in returns {
        let Some(&row) = rows.get(&user) else {
            continue;
        };
        let (cohort, first) = firsts[row];
        let offset = interval_of(time).saturating_sub(cohort);
        if time >= first
            && offset < intervals.saturating_sub(cohort)
            && let Some(word) = returned.get_mut(row * words + offset / 64)
        {
            *word |= 1 << (offset % 64);
        }
    }
    for (row, (cohort, _)) in firsts.into_iter().enumerate() {
        let Some(cohort) = cohorts.get_mut(cohort) else {
            continue;
        };
        let bits = &returned[row * words..(row + 1) * words];
        for (offset, count) in cohort.returned.iter_mut().enumerate() {
            *count += bits
                .get(offset / 64)
                .map_or(0, |word| (word >> (offset % 64)) & 1);
        }
    }
    Ok(cohorts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_round_trips_and_a_torn_body_is_an_error() {
        let times = UserTimes(vec![(u64::MAX, -1), (7, 1_700_000_000_000_000)]);
        let decoded = UserTimes::decode(&times.encode()).unwrap();
        assert_eq!(decoded.0, times.0);
        assert!(UserTimes::decode(&[0; 17]).is_err());
    }
}
