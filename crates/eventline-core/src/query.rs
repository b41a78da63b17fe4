//! Read-side domain types: filters, windows, keyset positions, count groupings, and the
//! parsing of property filters. Stores take these; the server builds them from requests.

use chrono::{DateTime, Utc};

use crate::{Error, TenantId};

/// Most property filters in one request.
pub const MAX_PROPERTY_FILTERS: usize = 10;
/// Default and largest page of a listing.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
/// Default and largest `limit` of TopEventTypes.
pub const DEFAULT_TOP_LIMIT: usize = 10;
pub const MAX_TOP_LIMIT: usize = 1000;
/// Most buckets one time series may have.
pub const MAX_TIMESERIES_BUCKETS: i64 = 10_000;

/// Which events a read selects, besides its time window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub user_id: Option<String>,
    /// Equality on top-level properties; every one must match.
    pub properties: Vec<PropertyFilter>,
}

/// `properties[key] == value` for a scalar JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyFilter {
    pub key: String,
    pub value: serde_json::Value,
}

impl PropertyFilter {
    /// Parses `key=value`: the value is JSON when it parses as a scalar, else a string.
    pub fn parse(field: &str, text: &str) -> Result<Self, Error> {
        let Some((key, raw_value)) = text.split_once('=') else {
            return Err(Error::invalid(
                field,
                format!("must be key=value, got {text:?}"),
            ));
        };
        if key.is_empty() || key.chars().count() > 128 || key.contains('\0') {
            return Err(Error::invalid(
                field,
                "key must be 1 to 128 characters without NUL",
            ));
        }
        let value = match serde_json::from_str::<serde_json::Value>(raw_value) {
            Ok(
                value @ (serde_json::Value::Null
                | serde_json::Value::Bool(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::String(_)),
            ) => value,
            _ => serde_json::Value::String(raw_value.to_owned()),
        };
        if value.as_str().is_some_and(|text| text.contains('\0')) {
            return Err(Error::invalid(
                field,
                "value must not contain NUL characters",
            ));
        }
        Ok(Self {
            key: key.to_owned(),
            value,
        })
    }

    /// The filter as a one-key JSON object (for JSONB containment).
    pub fn as_json_object(&self) -> String {
        let mut object = serde_json::Map::new();
        object.insert(self.key.clone(), self.value.clone());
        serde_json::Value::Object(object).to_string()
    }
}

impl EventFilter {
    /// Builds a filter from the request fields shared by every read RPC.
    pub fn from_request(
        event_type: &str,
        user_id: &str,
        property_filters: &[String],
    ) -> Result<Self, Error> {
        if property_filters.len() > MAX_PROPERTY_FILTERS {
            return Err(Error::invalid(
                "property_filters",
                format!(
                    "at most {MAX_PROPERTY_FILTERS} filters, got {}",
                    property_filters.len()
                ),
            ));
        }
        let properties = property_filters
            .iter()
            .enumerate()
            .map(|(index, text)| PropertyFilter::parse(&format!("property_filters[{index}]"), text))
            .collect::<Result<_, _>>()?;
        // The same rules as ingest: no stored event could match anything else, and a
        // NUL would not even reach the database as text.
        let checked = |field: &str, value: &str, max_chars: usize| {
            if value.is_empty() {
                return Ok(());
            }
            crate::validate::check_text(field, value, 1, max_chars)
                .map_err(|violation| Error::InvalidArgument { violation })
        };
        checked(
            "event_type",
            event_type,
            crate::limits::MAX_EVENT_TYPE_CHARS,
        )?;
        checked("user_id", user_id, crate::limits::MAX_ID_CHARS)?;
        Ok(Self {
            event_type: non_empty(event_type),
            user_id: non_empty(user_id),
            properties,
        })
    }

    /// A stable digest of the filter, so a page token cannot be replayed on another query.
    pub fn fingerprint(&self) -> String {
        serde_json::json!([
            self.event_type,
            self.user_id,
            self.properties
                .iter()
                .map(|filter| (&filter.key, &filter.value))
                .collect::<Vec<_>>()
        ])
        .to_string()
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// A keyset position: the `(timestamp, event_id)` of the last event returned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub timestamp: DateTime<Utc>,
    pub event_id: String,
}

impl Position {
    /// The position of `event`, to continue after it.
    pub fn of(event: &crate::Event) -> Self {
        Self {
            timestamp: event.timestamp,
            event_id: event.event_id.clone(),
        }
    }
}

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// One page of a time-ordered read.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub tenant_id: TenantId,
    pub filter: EventFilter,
    /// Inclusive.
    pub start: DateTime<Utc>,
    /// Exclusive.
    pub end: DateTime<Utc>,
    pub order: Order,
    /// Continue strictly after this position (in `order`).
    pub after: Option<Position>,
    /// Only events whose commit sequence is below this (a tail's history phase).
    pub committed_before: Option<u64>,
    pub limit: usize,
}

/// One page of a commit-ordered read (a tail's live phase).
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedQuery {
    pub tenant_id: TenantId,
    pub filter: EventFilter,
    /// Only events with `timestamp >= min_timestamp`, when set.
    pub min_timestamp: Option<DateTime<Utc>>,
    /// Continue strictly after this `(commit sequence, event_id)`.
    pub after: (u64, String),
    /// Only events whose commit sequence is below this horizon (all final).
    pub horizon: u64,
    pub limit: usize,
}

/// Width of a time bucket, aligned in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketWidth {
    Minute,
    Hour,
    Day,
}

impl BucketWidth {
    /// The width in microseconds.
    pub fn micros(self) -> i64 {
        match self {
            Self::Minute => 60_000_000,
            Self::Hour => 3_600_000_000,
            Self::Day => 86_400_000_000,
        }
    }

    /// The start of the bucket holding `time`.
    pub fn floor(self, time: DateTime<Utc>) -> DateTime<Utc> {
        let micros = time.timestamp_micros();
        DateTime::from_timestamp_micros(micros - micros.rem_euclid(self.micros())).unwrap_or(time)
    }

    /// The start of the first bucket at or after `time`.
    pub fn ceil(self, time: DateTime<Utc>) -> DateTime<Utc> {
        let floor = self.floor(time);
        if floor == time {
            floor
        } else {
            floor + chrono::Duration::microseconds(self.micros())
        }
    }
}

/// What a count counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Measure {
    /// Events.
    #[default]
    Events,
    /// Distinct `user_id`s among the events; events without one are left out.
    UniqueUsers,
}

/// How counts are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Total,
    EventType,
    Bucket(BucketWidth),
}

/// A count over `[start, end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct CountQuery {
    pub tenant_id: TenantId,
    pub event_type: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub grouping: Grouping,
}

impl CountQuery {
    /// One total over `[start, end)`, all types.
    pub fn total(tenant_id: TenantId, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            tenant_id,
            event_type: None,
            start,
            end,
            grouping: Grouping::Total,
        }
    }
}

/// One group of a count: `bucket` is set for bucket groupings, `event_type` for type ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    pub bucket: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
    pub count: u64,
}

/// Unique users of a window with at most this many events are counted exactly from the
/// events; larger windows are estimated from HyperLogLog sketches (`crate::sketch`).
pub const EXACT_USERS_UP_TO_EVENTS: u64 = 100_000;

/// Distinct users per group of a count, and whether they are exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCounts {
    pub rows: Vec<CountRow>,
    pub exact: bool,
}

/// Steps of a funnel: at least 2, at most this many.
pub const MAX_FUNNEL_STEPS: usize = 10;
/// Default and longest conversion window of a funnel.
pub const DEFAULT_CONVERSION_WINDOW: chrono::Duration = chrono::Duration::days(30);
pub const MAX_CONVERSION_WINDOW: chrono::Duration = chrono::Duration::days(90);
/// Most intervals (cohorts) of one retention table.
pub const MAX_RETENTION_INTERVALS: i64 = 400;

/// A funnel (QueryService.Funnel has the semantics): users entering at their first
/// `steps[0]` event in `[start, end)`, then each next step in order within
/// `conversion_window` of entering.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelQuery {
    pub tenant_id: TenantId,
    pub steps: Vec<String>,
    pub conversion_window: chrono::Duration,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Property filters applied to every step's events (no type or user filter).
    pub filter: EventFilter,
    /// Split by this top-level property of each user's entering event, when set.
    pub group_by_property: Option<String>,
}

/// A funnel's answer: users per step, and with a property, per value of it (the value
/// of each user's entering event as JSON text, `None` when it had none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunnelCounts {
    pub reached: Vec<u64>,
    pub by_value: Vec<(Option<String>, Vec<u64>)>,
}

/// A retention table (QueryService.Retention has the semantics): cohorts of `interval`
/// width from `start` (a UTC midnight) to `end`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionQuery {
    pub tenant_id: TenantId,
    pub start_event_type: String,
    pub return_event_type: String,
    pub interval: chrono::Duration,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl RetentionQuery {
    /// How many intervals the window holds, the last one possibly cut short by `end`.
    pub fn intervals(&self) -> usize {
        interval_count(self.start, self.end, self.interval).max(0) as usize
    }

    /// The interval holding `time` (at or after `start`).
    pub fn interval_of(&self, time: DateTime<Utc>) -> usize {
        let offset = (time - self.start).num_microseconds().unwrap_or(0).max(0);
        (offset / self.interval.num_microseconds().unwrap_or(i64::MAX).max(1)) as usize
    }
}

/// How many intervals of `width` from `start` it takes to cover `[start, end)`.
pub fn interval_count(start: DateTime<Utc>, end: DateTime<Utc>, width: chrono::Duration) -> i64 {
    let span = (end - start).num_microseconds().unwrap_or(i64::MAX);
    let width = width.num_microseconds().unwrap_or(i64::MAX).max(1);
    span / width + i64::from(span % width != 0)
}

/// One cohort of a retention table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    pub start: DateTime<Utc>,
    pub users: u64,
    /// `returned[i]`: users of the cohort who came back `i` intervals after its own.
    pub returned: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_filter_values_are_json_scalars_or_strings() {
        assert_eq!(
            PropertyFilter::parse("f", "plan=pro").unwrap().value,
            serde_json::json!("pro")
        );
        assert_eq!(
            PropertyFilter::parse("f", "seats=5").unwrap().value,
            serde_json::json!(5)
        );
        assert_eq!(
            PropertyFilter::parse("f", "ok=true").unwrap().value,
            serde_json::json!(true)
        );
        assert_eq!(
            PropertyFilter::parse("f", "q=\"5\"").unwrap().value,
            serde_json::json!("5")
        );
        assert_eq!(
            PropertyFilter::parse("f", "o={\"a\":1}").unwrap().value,
            serde_json::json!("{\"a\":1}")
        );
        assert_eq!(
            PropertyFilter::parse("f", "a=b=c").unwrap().value,
            serde_json::json!("b=c")
        );
        let error = PropertyFilter::parse("property_filters[0]", "noequals").unwrap_err();
        assert!(error.to_string().contains("property_filters[0]"));
    }

    #[test]
    fn filters_with_control_characters_or_over_long_ids_are_rejected_by_name() {
        let error = EventFilter::from_request("a\0b", "", &[]).unwrap_err();
        assert!(error.to_string().contains("event_type"), "{error}");
        let error = EventFilter::from_request("", &"u".repeat(257), &[]).unwrap_err();
        assert!(error.to_string().contains("user_id"), "{error}");
        assert!(EventFilter::from_request("signup", "u1", &[]).is_ok());
    }

    #[test]
    fn buckets_floor_and_ceil_in_utc() {
        let time = DateTime::parse_from_rfc3339("2026-11-20T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            BucketWidth::Hour.floor(time).to_rfc3339(),
            "2026-11-20T10:00:00+00:00"
        );
        assert_eq!(
            BucketWidth::Hour.ceil(time).to_rfc3339(),
            "2026-11-20T11:00:00+00:00"
        );
        assert_eq!(
            BucketWidth::Day.floor(time).to_rfc3339(),
            "2026-11-20T00:00:00+00:00"
        );
        let aligned = BucketWidth::Hour.floor(time);
        assert_eq!(BucketWidth::Hour.ceil(aligned), aligned);
    }
}
