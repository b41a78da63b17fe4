//! Breakdowns: a count split by the value of one top-level property. A store answers
//! with one row per (bucket, type, value); this module folds those rows into the groups
//! a response lists (the most frequent values, the events without the property, the
//! rest), the same way for every store and every RPC.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::{Error, query::CountQuery};

/// Default and largest number of values that get a group of their own.
pub const DEFAULT_GROUP_LIMIT: usize = 10;
pub const MAX_GROUP_LIMIT: usize = 100;

/// Which property to break a count down by, and how many values to keep apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBy {
    pub property: String,
    pub limit: usize,
}

impl GroupBy {
    /// Reads `group_by_property` and `group_limit`; `None` when no property is named.
    pub fn from_request(property: &str, limit: i32) -> Result<Option<Self>, Error> {
        if property.is_empty() {
            if limit != 0 {
                return Err(Error::invalid(
                    "group_limit",
                    "needs group_by_property to be set",
                ));
            }
            return Ok(None);
        }
        crate::validate::check_text("group_by_property", property, 1, 128)
            .map_err(|violation| Error::InvalidArgument { violation })?;
        let limit = match limit {
            0 => DEFAULT_GROUP_LIMIT,
            limit if limit < 0 || limit as usize > MAX_GROUP_LIMIT => {
                return Err(Error::invalid(
                    "group_limit",
                    format!("must be 1 to {MAX_GROUP_LIMIT}, got {limit}"),
                ));
            }
            limit => limit as usize,
        };
        Ok(Some(Self {
            property: property.to_owned(),
            limit,
        }))
    }
}

/// A count in a window split by the value of `property` (a store reads raw events).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakdownQuery {
    pub counting: CountQuery,
    pub property: String,
}

/// One (bucket, type, value) of a breakdown: `value` is the property's value as JSON
/// text as the store prints it, `None` for events without the property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakdownRow {
    pub bucket: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
    pub value: Option<String>,
    pub count: u64,
}

/// Which events a group holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    /// Events whose property has this value (compact JSON).
    Value(String),
    /// Events without the property.
    Missing,
    /// Events whose value has no group of its own.
    Other,
}

/// One group of a breakdown and its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub key: GroupKey,
    pub count: u64,
}

/// A value as compact JSON, so that every store prints equal values alike (PostgreSQL's
/// `{"a": 1}` and SQLite's `{"a":1}`, `1.50` and `1.5`).
pub fn canonical_json(value: &str) -> String {
    serde_json::from_str::<serde_json::Value>(value)
        .map(|parsed| parsed.to_string())
        .unwrap_or_else(|_| value.to_owned())
}

/// The rows of one series (one type, one bucket, or the whole window) as counts per key,
/// values made canonical.
pub fn counts_by_key<'r>(
    rows: impl IntoIterator<Item = &'r BreakdownRow>,
) -> HashMap<GroupKey, u64> {
    let mut counts: HashMap<GroupKey, u64> = HashMap::new();
    for row in rows {
        let key = match &row.value {
            Some(value) => GroupKey::Value(canonical_json(value)),
            None => GroupKey::Missing,
        };
        *counts.entry(key).or_default() += row.count;
    }
    counts
}

/// The groups `counts` is listed in: the `limit` most frequent values (ties by value),
/// then the events without the property, then the rest; only kinds that occur.
pub fn choose_groups(counts: &HashMap<GroupKey, u64>, limit: usize) -> Vec<GroupKey> {
    let mut values: Vec<(&String, u64)> = counts
        .iter()
        .filter_map(|(key, count)| match key {
            GroupKey::Value(value) => Some((value, *count)),
            GroupKey::Missing | GroupKey::Other => None,
        })
        .collect();
    values.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(right.0)));
    let overflow = values.len() > limit;
    let mut keys: Vec<GroupKey> = values
        .into_iter()
        .take(limit)
        .map(|(value, _)| GroupKey::Value(value.clone()))
        .collect();
    if counts.contains_key(&GroupKey::Missing) {
        keys.push(GroupKey::Missing);
    }
    if overflow {
        keys.push(GroupKey::Other);
    }
    keys
}

/// `counts` in the groups `keys` (from [`choose_groups`]): a value without a group of its
/// own counts in `Other`; every key is listed, zeros included.
pub fn fill_groups(keys: &[GroupKey], counts: &HashMap<GroupKey, u64>) -> Vec<Group> {
    let mut groups: Vec<Group> = keys
        .iter()
        .map(|key| Group {
            key: key.clone(),
            count: 0,
        })
        .collect();
    let position: HashMap<&GroupKey, usize> =
        keys.iter().enumerate().map(|(at, key)| (key, at)).collect();
    let other = position.get(&GroupKey::Other).copied();
    for (key, count) in counts {
        if let Some(at) = position.get(key).copied().or(other) {
            groups[at].count += count;
        }
    }
    groups
}

/// The breakdown of one series on its own: its own most frequent values, zeros left out.
pub fn top_groups<'r>(
    rows: impl IntoIterator<Item = &'r BreakdownRow>,
    limit: usize,
) -> Vec<Group> {
    let counts = counts_by_key(rows);
    let keys = choose_groups(&counts, limit);
    let mut groups = fill_groups(&keys, &counts);
    groups.retain(|group| group.count > 0);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: Option<&str>, count: u64) -> BreakdownRow {
        BreakdownRow {
            bucket: None,
            event_type: None,
            value: value.map(str::to_owned),
            count,
        }
    }

    #[test]
    fn values_past_the_limit_fall_into_other_and_missing_stays_apart() {
        let rows = [
            row(Some(r#""pro""#), 5),
            row(Some(r#""free""#), 7),
            row(Some("5"), 2),
            row(Some(r#""5""#), 2),
            row(None, 4),
        ];
        let groups = top_groups(&rows, 2);
        assert_eq!(
            groups,
            [
                Group {
                    key: GroupKey::Value(r#""free""#.into()),
                    count: 7
                },
                Group {
                    key: GroupKey::Value(r#""pro""#.into()),
                    count: 5
                },
                Group {
                    key: GroupKey::Missing,
                    count: 4
                },
                Group {
                    key: GroupKey::Other,
                    count: 4
                },
            ]
        );
    }

    #[test]
    fn equal_json_values_printed_differently_are_one_group() {
        let rows = [
            row(Some(r#"{"a": 1}"#), 1),
            row(Some(r#"{"a":1}"#), 2),
            row(Some("1.50"), 1),
            row(Some("1.5"), 1),
        ];
        let groups = top_groups(&rows, 10);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].key, GroupKey::Value(r#"{"a":1}"#.into()));
        assert_eq!(groups[0].count, 3);
        assert_eq!(groups[1].count, 2);
    }

    #[test]
    fn a_limit_without_a_property_is_refused() {
        let error = GroupBy::from_request("", 3).unwrap_err();
        assert!(error.to_string().contains("group_limit"), "{error}");
        let error = GroupBy::from_request("plan", 101).unwrap_err();
        assert!(error.to_string().contains("group_limit"), "{error}");
        assert_eq!(GroupBy::from_request("", 0).unwrap(), None);
        assert_eq!(
            GroupBy::from_request("plan", 0).unwrap().unwrap().limit,
            DEFAULT_GROUP_LIMIT
        );
    }
}
