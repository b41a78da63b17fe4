//! Each read RPC's request as a domain query, in one step: `TryFrom<…Request>` checks
//! every field and names the one that is wrong, so a handler reads authenticate →
//! convert → ask the store → convert back. The tenant is not in any request (it comes
//! from the API key), and page tokens stay opaque strings here: the server binds them to
//! the tenant and the filter when it decodes them.

use chrono::{DateTime, Utc};
use eventline_proto::v1;
use pbjson_types::Timestamp;

use crate::{
    Error, TenantId,
    breakdown::{BreakdownQuery, GroupBy},
    query::{
        self, BucketWidth, CountQuery, DEFAULT_CONVERSION_WINDOW, EventFilter, FunnelQuery,
        Grouping, MAX_CONVERSION_WINDOW, MAX_FUNNEL_STEPS, MAX_RETENTION_INTERVALS,
        MAX_TIMESERIES_BUCKETS, MAX_TOP_LIMIT, Measure, RetentionQuery,
    },
    search::SearchText,
    time,
};

/// The filter of a request with `event_type`, `user_id` and `property_filters` fields.
macro_rules! filter_of {
    ($request:expr) => {
        EventFilter::from_request(
            &$request.event_type,
            &$request.user_id,
            &$request.property_filters,
        )
    };
}

/// Default window of listings and statistics: the 30 days before `end_time`.
pub const DEFAULT_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// `ListEvents`: one page, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEvents {
    pub filter: EventFilter,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub page_size: usize,
    /// Empty for the first page.
    pub page_token: String,
    pub min_watermark: String,
}

impl TryFrom<v1::ListEventsRequest> for ListEvents {
    type Error = Error;

    fn try_from(request: v1::ListEventsRequest) -> Result<Self, Error> {
        let (start, end) = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        Ok(Self {
            filter: filter_of!(request)?,
            start,
            end,
            page_size: page_size(request.page_size)?,
            page_token: request.page_token,
            min_watermark: request.min_watermark,
        })
    }
}

/// `SearchEvents`: one page of the events matching a query, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchEvents {
    pub text: SearchText,
    pub filter: EventFilter,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub page_size: usize,
    /// Empty for the first page.
    pub page_token: String,
}

impl TryFrom<v1::SearchEventsRequest> for SearchEvents {
    type Error = Error;

    fn try_from(request: v1::SearchEventsRequest) -> Result<Self, Error> {
        let (start, end) = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        Ok(Self {
            text: SearchText::parse("query", &request.query)?,
            filter: filter_of!(request)?,
            start,
            end,
            page_size: page_size(request.page_size)?,
            page_token: request.page_token,
        })
    }
}

/// `ExportEvents`: everything in the window, oldest first; by default all of history.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportEvents {
    pub filter: EventFilter,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Empty to start at `start`.
    pub cursor: String,
}

impl TryFrom<v1::ExportEventsRequest> for ExportEvents {
    type Error = Error;

    fn try_from(request: v1::ExportEventsRequest) -> Result<Self, Error> {
        Ok(Self {
            filter: filter_of!(request)?,
            start: optional_time("start_time", request.start_time.as_ref())?
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            end: optional_time("end_time", request.end_time.as_ref())?.unwrap_or_else(time::now),
            cursor: request.cursor,
        })
    }
}

/// `TailEvents`: history from `start` (when set), then every commit as it lands.
#[derive(Debug, Clone, PartialEq)]
pub struct TailEvents {
    pub filter: EventFilter,
    pub start: Option<DateTime<Utc>>,
    /// Empty for a new tail.
    pub cursor: String,
}

impl TryFrom<v1::TailEventsRequest> for TailEvents {
    type Error = Error;

    fn try_from(request: v1::TailEventsRequest) -> Result<Self, Error> {
        Ok(Self {
            filter: filter_of!(request)?,
            start: optional_time("start_time", request.start_time.as_ref())?,
            cursor: request.cursor,
        })
    }
}

/// A count in a window, grouped one way: what `CountEvents`, `TopEventTypes` and
/// `EventTimeseries` each ask the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Counting {
    pub event_type: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub grouping: Grouping,
    /// Split by a property's value (`group_by_property`), when asked.
    pub group_by: Option<GroupBy>,
    pub measure: Measure,
    pub min_watermark: String,
}

impl Counting {
    fn new(
        event_type: &str,
        start_time: Option<&Timestamp>,
        end_time: Option<&Timestamp>,
        grouping: Grouping,
        group_by: Option<GroupBy>,
        measure: Measure,
        min_watermark: String,
    ) -> Result<Self, Error> {
        let (start, end) = window(start_time, end_time)?;
        if measure == Measure::UniqueUsers && group_by.is_some() {
            return Err(Error::invalid(
                "group_by_property",
                "cannot be combined with MEASURE_UNIQUE_USERS",
            ));
        }
        Ok(Self {
            // Checked like every other filter.
            event_type: EventFilter::from_request(event_type, "", &[])?.event_type,
            start,
            end,
            grouping,
            group_by,
            measure,
            min_watermark,
        })
    }

    /// The store's breakdown question for `tenant_id`, when a property was named.
    pub fn breakdown_query(&self, tenant_id: TenantId) -> Option<BreakdownQuery> {
        let group_by = self.group_by.as_ref()?;
        Some(BreakdownQuery {
            counting: self.query(tenant_id),
            property: group_by.property.clone(),
        })
    }

    /// The store's question for `tenant_id`.
    pub fn query(&self, tenant_id: TenantId) -> CountQuery {
        CountQuery {
            tenant_id,
            event_type: self.event_type.clone(),
            start: self.start,
            end: self.end,
            grouping: self.grouping,
        }
    }
}

impl TryFrom<v1::CountEventsRequest> for Counting {
    type Error = Error;

    fn try_from(request: v1::CountEventsRequest) -> Result<Self, Error> {
        Self::new(
            &request.event_type,
            request.start_time.as_ref(),
            request.end_time.as_ref(),
            Grouping::Total,
            GroupBy::from_request(&request.group_by_property, request.group_limit)?,
            measure(request.measure)?,
            request.min_watermark,
        )
    }
}

/// `TopEventTypes`: counts per type, the `limit` largest.
#[derive(Debug, Clone, PartialEq)]
pub struct TopEventTypes {
    pub counting: Counting,
    pub limit: usize,
}

impl TryFrom<v1::TopEventTypesRequest> for TopEventTypes {
    type Error = Error;

    fn try_from(request: v1::TopEventTypesRequest) -> Result<Self, Error> {
        let limit = match request.limit {
            0 => query::DEFAULT_TOP_LIMIT,
            limit if limit < 0 || limit as usize > MAX_TOP_LIMIT => {
                return Err(Error::invalid(
                    "limit",
                    format!("must be 1 to {MAX_TOP_LIMIT}, got {limit}"),
                ));
            }
            limit => limit as usize,
        };
        Ok(Self {
            counting: Counting::new(
                "",
                request.start_time.as_ref(),
                request.end_time.as_ref(),
                Grouping::EventType,
                GroupBy::from_request(&request.group_by_property, request.group_limit)?,
                Measure::Events,
                request.min_watermark,
            )?,
            limit,
        })
    }
}

/// `EventTimeseries`: counts per bucket, every bucket of the window listed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTimeseries {
    pub counting: Counting,
    /// The start of every bucket, in order, from the bucket holding `start`.
    pub buckets: Vec<DateTime<Utc>>,
}

impl TryFrom<v1::EventTimeseriesRequest> for EventTimeseries {
    type Error = Error;

    fn try_from(request: v1::EventTimeseriesRequest) -> Result<Self, Error> {
        let width = match v1::Interval::try_from(request.interval) {
            Ok(v1::Interval::Minute) => BucketWidth::Minute,
            Ok(v1::Interval::Hour) => BucketWidth::Hour,
            Ok(v1::Interval::Day) => BucketWidth::Day,
            _ => {
                return Err(Error::invalid(
                    "interval",
                    "must be INTERVAL_MINUTE, INTERVAL_HOUR or INTERVAL_DAY",
                ));
            }
        };
        let counting = Counting::new(
            &request.event_type,
            request.start_time.as_ref(),
            request.end_time.as_ref(),
            Grouping::Bucket(width),
            GroupBy::from_request(&request.group_by_property, request.group_limit)?,
            measure(request.measure)?,
            request.min_watermark,
        )?;
        let buckets = bucket_starts(width, counting.start, counting.end)?;
        Ok(Self { counting, buckets })
    }
}

/// `Funnel`: everything but the tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Funnel {
    pub steps: Vec<String>,
    pub conversion_window: chrono::Duration,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub filter: EventFilter,
    pub group_by: Option<GroupBy>,
    pub min_watermark: String,
}

impl Funnel {
    /// The store's question for `tenant_id`.
    pub fn query(&self, tenant_id: TenantId) -> FunnelQuery {
        FunnelQuery {
            tenant_id,
            steps: self.steps.clone(),
            conversion_window: self.conversion_window,
            start: self.start,
            end: self.end,
            filter: self.filter.clone(),
            group_by_property: self
                .group_by
                .as_ref()
                .map(|group_by| group_by.property.clone()),
        }
    }
}

impl TryFrom<v1::FunnelRequest> for Funnel {
    type Error = Error;

    fn try_from(request: v1::FunnelRequest) -> Result<Self, Error> {
        if !(2..=MAX_FUNNEL_STEPS).contains(&request.steps.len()) {
            return Err(Error::invalid(
                "steps",
                format!(
                    "must hold 2 to {MAX_FUNNEL_STEPS} event types, got {}",
                    request.steps.len()
                ),
            ));
        }
        for (index, step) in request.steps.iter().enumerate() {
            event_type(&format!("steps[{index}]"), step)?;
        }
        let conversion_window = match &request.conversion_window {
            None => DEFAULT_CONVERSION_WINDOW,
            Some(duration) => {
                let window = chrono::Duration::seconds(duration.seconds)
                    + chrono::Duration::nanoseconds(i64::from(duration.nanos));
                if window <= chrono::Duration::zero() || window > MAX_CONVERSION_WINDOW {
                    return Err(Error::invalid(
                        "conversion_window",
                        "must be more than 0 and at most 90 days",
                    ));
                }
                window
            }
        };
        let (start, end) = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        Ok(Self {
            filter: EventFilter::from_request("", "", &request.property_filters)?,
            group_by: GroupBy::from_request(&request.group_by_property, request.group_limit)?,
            steps: request.steps,
            conversion_window,
            start,
            end,
            min_watermark: request.min_watermark,
        })
    }
}

/// `Retention`: everything but the tenant; `start` is already a UTC midnight.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub start_event_type: String,
    pub return_event_type: String,
    pub interval: chrono::Duration,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub min_watermark: String,
}

impl Retention {
    /// The store's question for `tenant_id`.
    pub fn query(&self, tenant_id: TenantId) -> RetentionQuery {
        RetentionQuery {
            tenant_id,
            start_event_type: self.start_event_type.clone(),
            return_event_type: self.return_event_type.clone(),
            interval: self.interval,
            start: self.start,
            end: self.end,
        }
    }
}

impl TryFrom<v1::RetentionRequest> for Retention {
    type Error = Error;

    fn try_from(request: v1::RetentionRequest) -> Result<Self, Error> {
        event_type("start_event_type", &request.start_event_type)?;
        event_type("return_event_type", &request.return_event_type)?;
        let interval = match v1::RetentionInterval::try_from(request.interval) {
            Ok(v1::RetentionInterval::Day) => chrono::Duration::days(1),
            Ok(v1::RetentionInterval::Week) => chrono::Duration::days(7),
            _ => {
                return Err(Error::invalid(
                    "interval",
                    "must be RETENTION_INTERVAL_DAY or RETENTION_INTERVAL_WEEK",
                ));
            }
        };
        let (start, end) = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        let retention = Self {
            start_event_type: request.start_event_type,
            return_event_type: request.return_event_type,
            interval,
            start: BucketWidth::Day.floor(start),
            end,
            min_watermark: request.min_watermark,
        };
        let intervals = query::interval_count(retention.start, retention.end, interval);
        if intervals > MAX_RETENTION_INTERVALS {
            return Err(Error::invalid(
                "start_time",
                format!(
                    "the window holds {intervals} intervals; at most {MAX_RETENTION_INTERVALS} are allowed"
                ),
            ));
        }
        Ok(retention)
    }
}

/// A `measure` field: unset means events.
fn measure(value: i32) -> Result<Measure, Error> {
    match v1::Measure::try_from(value) {
        Ok(v1::Measure::Unspecified | v1::Measure::Events) => Ok(Measure::Events),
        Ok(v1::Measure::UniqueUsers) => Ok(Measure::UniqueUsers),
        Err(_) => Err(Error::invalid(
            "measure",
            format!("must be MEASURE_EVENTS or MEASURE_UNIQUE_USERS, got {value}"),
        )),
    }
}

/// A required event type field, checked as ingest checks `event_type`.
fn event_type(field: &str, value: &str) -> Result<(), Error> {
    crate::validate::check_text(field, value, 1, crate::limits::MAX_EVENT_TYPE_CHARS)
        .map_err(|violation| Error::InvalidArgument { violation })
}

/// A `page_size` field: 0 is the default, at most [`query::MAX_PAGE_SIZE`].
pub fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        0 => Ok(query::DEFAULT_PAGE_SIZE),
        size if size < 0 => Err(Error::invalid("page_size", "must not be negative")),
        size if size as usize > query::MAX_PAGE_SIZE => Err(Error::invalid(
            "page_size",
            format!("must be at most {}, got {size}", query::MAX_PAGE_SIZE),
        )),
        size => Ok(size as usize),
    }
}

/// An optional timestamp field, named in the error when it is invalid.
pub fn optional_time(
    field: &str,
    timestamp: Option<&Timestamp>,
) -> Result<Option<DateTime<Utc>>, Error> {
    timestamp
        .map(|timestamp| {
            time::from_proto(timestamp)
                .ok_or_else(|| Error::invalid(field, "must be a valid timestamp"))
        })
        .transpose()
}

/// Resolves `[start_time, end_time)`: end defaults to now, start to 30 days before end.
fn window(
    start_time: Option<&Timestamp>,
    end_time: Option<&Timestamp>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    let end = optional_time("end_time", end_time)?.unwrap_or_else(time::now);
    let start = optional_time("start_time", start_time)?.unwrap_or(end - DEFAULT_WINDOW);
    if start >= end {
        return Err(Error::invalid("start_time", "must be before end_time"));
    }
    Ok((start, end))
}

/// The bucket starts of a series over `[start, end)`, refusing more than
/// [`MAX_TIMESERIES_BUCKETS`].
fn bucket_starts(
    width: BucketWidth,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, Error> {
    let first = width.floor(start);
    let span = (end - first).num_microseconds().unwrap_or(i64::MAX);
    let buckets = span / width.micros() + i64::from(span % width.micros() != 0);
    if buckets > MAX_TIMESERIES_BUCKETS {
        return Err(Error::invalid(
            "start_time",
            format!(
                "the window holds {buckets} buckets of this interval; at most {MAX_TIMESERIES_BUCKETS} are allowed"
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

    fn stamp(text: &str) -> Option<Timestamp> {
        let time = DateTime::parse_from_rfc3339(text).unwrap();
        Some(time::to_proto(time.with_timezone(&Utc)))
    }

    #[test]
    fn a_timeseries_lists_every_bucket_from_the_aligned_start() {
        let series = EventTimeseries::try_from(v1::EventTimeseriesRequest {
            interval: v1::Interval::Hour as i32,
            start_time: stamp("2026-11-20T10:30:00Z"),
            end_time: stamp("2026-11-20T13:00:00Z"),
            ..Default::default()
        })
        .unwrap();
        let hours: Vec<String> = series
            .buckets
            .iter()
            .map(|start| start.format("%H:%M").to_string())
            .collect();
        assert_eq!(hours, ["10:00", "11:00", "12:00"]);
        assert_eq!(
            series.counting.grouping,
            Grouping::Bucket(BucketWidth::Hour)
        );
    }

    #[test]
    fn too_many_buckets_is_an_error_naming_start_time() {
        let error = EventTimeseries::try_from(v1::EventTimeseriesRequest {
            interval: v1::Interval::Minute as i32,
            start_time: stamp("2026-01-01T00:00:00Z"),
            end_time: stamp("2026-02-01T00:00:00Z"),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("start_time"), "{error}");
    }

    #[test]
    fn each_bad_field_is_named() {
        let error = ListEvents::try_from(v1::ListEventsRequest {
            page_size: -1,
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("page_size"), "{error}");
        let error = TopEventTypes::try_from(v1::TopEventTypesRequest {
            limit: 1001,
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("limit"), "{error}");
        let error = Counting::try_from(v1::CountEventsRequest {
            start_time: stamp("2026-11-20T10:00:00Z"),
            end_time: stamp("2026-11-20T09:00:00Z"),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("start_time"), "{error}");
        let error = EventTimeseries::try_from(v1::EventTimeseriesRequest::default()).unwrap_err();
        assert!(error.to_string().contains("interval"), "{error}");
        let error = ExportEvents::try_from(v1::ExportEventsRequest {
            property_filters: vec!["no operator".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("property_filters[0]"), "{error}");
    }

    #[test]
    fn the_default_window_is_the_last_30_days() {
        let listing = ListEvents::try_from(v1::ListEventsRequest::default()).unwrap();
        assert_eq!(listing.end - listing.start, DEFAULT_WINDOW);
        assert_eq!(listing.page_size, query::DEFAULT_PAGE_SIZE);
        let export = ExportEvents::try_from(v1::ExportEventsRequest::default()).unwrap();
        assert_eq!(export.start, DateTime::<Utc>::UNIX_EPOCH);
    }
}
