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

/// Funnel: one funnel per chosen value of the entering event's property (the most
/// entering users first), then the users without it, then the rest summed.
pub(super) fn funnel_groups(
    by_value: Vec<(Option<String>, Vec<u64>)>,
    steps: &[String],
    limit: usize,
) -> Vec<v1::FunnelGroup> {
    let keyed: Vec<(GroupKey, Vec<u64>)> = by_value
        .into_iter()
        .map(|(value, reached)| {
            let key = value.map_or(GroupKey::Missing, GroupKey::Value);
            (key, reached)
        })
        .collect();
    let entering: std::collections::HashMap<GroupKey, u64> = keyed
        .iter()
        .map(|(key, reached)| (key.clone(), reached.first().copied().unwrap_or(0)))
        .collect();
    let keys = breakdown::choose_groups(&entering, limit);
    let mut groups: Vec<(GroupKey, Vec<u64>)> = keys
        .iter()
        .map(|key| (key.clone(), vec![0; steps.len()]))
        .collect();
    let other = keys.iter().position(|key| *key == GroupKey::Other);
    for (key, reached) in keyed {
        let Some(at) = keys.iter().position(|chosen| *chosen == key).or(other) else {
            continue;
        };
        for (sum, users) in groups[at].1.iter_mut().zip(reached) {
            *sum += users;
        }
    }
    groups
        .into_iter()
        .map(|(key, reached)| {
            let group = group_to_proto(Group { key, count: 0 });
            v1::FunnelGroup {
                kind: group.kind,
                value: group.value,
                steps: steps
                    .iter()
                    .zip(reached)
                    .map(|(event_type, users)| v1::FunnelStep {
                        event_type: event_type.clone(),
                        users,
                    })
                    .collect(),
            }
        })
        .collect()
}
