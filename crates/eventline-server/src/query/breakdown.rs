//! Responses of CountEvents, TopEventTypes and EventTimeseries broken down by a property
//! (`group_by_property`), built from the store's (bucket, type, value) rows with the
//! grouping rules of `eventline_core::breakdown`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eventline_core::{
    breakdown::{self, BreakdownRow, Group, GroupKey},
    time,
};
use eventline_proto::v1;

fn group_to_proto(group: Group) -> v1::PropertyGroup {
    let (kind, value) = match group.key {
        GroupKey::Value(value) => (v1::PropertyGroupKind::Value, value),
        GroupKey::Missing => (v1::PropertyGroupKind::Missing, String::new()),
        GroupKey::Other => (v1::PropertyGroupKind::Other, String::new()),
    };
    v1::PropertyGroup {
        kind: kind as i32,
        value,
        count: group.count,
    }
}

fn groups_to_proto(groups: Vec<Group>) -> Vec<v1::PropertyGroup> {
    groups.into_iter().map(group_to_proto).collect()
}

/// CountEvents: the total and its groups.
pub(super) fn count(rows: &[BreakdownRow], limit: usize) -> v1::CountEventsResponse {
    v1::CountEventsResponse {
        count: rows.iter().map(|row| row.count).sum(),
        groups: groups_to_proto(breakdown::top_groups(rows, limit)),
        exact: true,
    }
}

/// TopEventTypes: the `top` largest types, each with its own most frequent values.
pub(super) fn top_event_types(
    rows: &[BreakdownRow],
    top: usize,
    limit: usize,
) -> v1::TopEventTypesResponse {
    let mut by_type: BTreeMap<&str, Vec<&BreakdownRow>> = BTreeMap::new();
    for row in rows {
        if let Some(event_type) = &row.event_type {
            by_type.entry(event_type).or_default().push(row);
        }
    }
    let mut event_types: Vec<v1::EventTypeCount> = by_type
        .into_iter()
        .map(|(event_type, rows)| v1::EventTypeCount {
            event_type: event_type.to_owned(),
            count: rows.iter().map(|row| row.count).sum(),
            groups: groups_to_proto(breakdown::top_groups(rows, limit)),
        })
        .collect();
    super::rank_event_types(&mut event_types, top);
    v1::TopEventTypesResponse { event_types }
}

/// EventTimeseries: every bucket split into the same groups, chosen over the window.
pub(super) fn timeseries(
    rows: &[BreakdownRow],
    buckets: Vec<DateTime<Utc>>,
    limit: usize,
) -> v1::EventTimeseriesResponse {
    let keys = breakdown::choose_groups(&breakdown::counts_by_key(rows), limit);
    let mut by_bucket: BTreeMap<DateTime<Utc>, Vec<&BreakdownRow>> = BTreeMap::new();
    for row in rows {
        if let Some(bucket) = row.bucket {
            by_bucket.entry(bucket).or_default().push(row);
        }
    }
    let buckets = buckets
        .into_iter()
        .map(|bucket| {
            let rows = by_bucket.remove(&bucket).unwrap_or_default();
            let counts = breakdown::counts_by_key(rows.iter().copied());
            v1::TimeseriesBucket {
                start_time: Some(time::to_proto(bucket)),
                count: rows.iter().map(|row| row.count).sum(),
                groups: groups_to_proto(breakdown::fill_groups(&keys, &counts)),
            }
        })
        .collect();
    v1::EventTimeseriesResponse {
        buckets,
        exact: true,
    }
}
