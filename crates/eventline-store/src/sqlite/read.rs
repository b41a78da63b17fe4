//! SQLite reads. Statements are assembled from fixed fragments chosen by enums; every
//! value is a bind parameter.

use eventline_core::{
    Event,
    breakdown::{BreakdownQuery, BreakdownRow},
    query::{
        BucketWidth, CommittedQuery, CountQuery, CountRow, EventFilter, EventQuery, Grouping, Order,
    },
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{event_from_row, from_micros, micros};
use crate::{
    StoreError,
    analytics::{Reading, UserEvent},
    counts::CountSource,
};
use futures::{StreamExt, stream::BoxStream};

pub(super) const EVENT_COLUMNS: &str =
    "SELECT tenant_id, event_id, event_type, user_id, session_id, timestamp_us,
       client_timestamp_us, received_us, properties";

pub(super) fn push_filter(builder: &mut QueryBuilder<Sqlite>, filter: &EventFilter) {
    if let Some(event_type) = &filter.event_type {
        builder
            .push(" AND event_type = ")
            .push_bind(event_type.clone());
    }
    if let Some(user_id) = &filter.user_id {
        builder.push(" AND user_id = ").push_bind(user_id.clone());
    }
    for property in &filter.properties {
        builder.push(" AND EXISTS (SELECT 1 FROM json_each(events.properties) AS p WHERE p.key = ");
        builder.push_bind(property.key.clone());
        match &property.value {
            serde_json::Value::Null => {
                builder.push(" AND p.type = 'null'");
            }
            serde_json::Value::Bool(true) => {
                builder.push(" AND p.type = 'true'");
            }
            serde_json::Value::Bool(false) => {
                builder.push(" AND p.type = 'false'");
            }
            serde_json::Value::Number(number) => match number.as_i64() {
                Some(integer) => {
                    builder
                        .push(" AND p.type IN ('integer', 'real') AND p.value = ")
                        .push_bind(integer);
                }
                None => {
                    builder
                        .push(" AND p.type IN ('integer', 'real') AND p.value = ")
                        .push_bind(number.as_f64().unwrap_or(f64::NAN));
                }
            },
            serde_json::Value::String(text) => {
                builder
                    .push(" AND p.type = 'text' AND p.value = ")
                    .push_bind(text.clone());
            }
            // Parsing admits only scalars; a composite never matches.
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                builder.push(" AND 0");
            }
        }
        builder.push(")");
    }
}

pub(super) async fn list_events(
    pool: &SqlitePool,
    query: &EventQuery,
) -> Result<Vec<Event>, StoreError> {
    let mut builder = QueryBuilder::new(EVENT_COLUMNS);
    builder
        .push(" FROM events WHERE tenant_id = ")
        .push_bind(query.tenant_id.to_string());
    builder
        .push(" AND timestamp_us >= ")
        .push_bind(micros(query.start));
    builder
        .push(" AND timestamp_us < ")
        .push_bind(micros(query.end));
    push_filter(&mut builder, &query.filter);
    if let Some(after) = &query.after {
        let comparison = match query.order {
            Order::NewestFirst => " < ",
            Order::OldestFirst => " > ",
        };
        builder
            .push(" AND (timestamp_us, event_id)")
            .push(comparison);
        builder
            .push("(")
            .push_bind(micros(after.timestamp))
            .push(", ")
            .push_bind(after.event_id.clone())
            .push(")");
    }
    if let Some(horizon) = query.committed_before {
        builder.push(" AND rowid < ").push_bind(horizon as i64);
    }
    builder.push(match query.order {
        Order::NewestFirst => " ORDER BY timestamp_us DESC, event_id DESC",
        Order::OldestFirst => " ORDER BY timestamp_us, event_id",
    });
    builder.push(" LIMIT ").push_bind(query.limit as i64);
    let rows = builder.build().fetch_all(pool).await?;
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn list_committed(
    pool: &SqlitePool,
    query: &CommittedQuery,
) -> Result<Vec<(u64, Event)>, StoreError> {
    let mut builder = QueryBuilder::new(EVENT_COLUMNS);
    builder
        .push(", rowid FROM events WHERE tenant_id = ")
        .push_bind(query.tenant_id.to_string());
    // The position is exclusive: (rowid, event_id) > (after.0, after.1), so a start at
    // (horizon, "") includes the event at the horizon itself.
    let (after_rowid, after_event_id) = (query.after.0 as i64, query.after.1.clone());
    builder.push(" AND (rowid > ").push_bind(after_rowid);
    builder.push(" OR (rowid = ").push_bind(after_rowid);
    builder
        .push(" AND event_id > ")
        .push_bind(after_event_id)
        .push("))");
    builder
        .push(" AND rowid < ")
        .push_bind(query.horizon as i64);
    if let Some(min_timestamp) = query.min_timestamp {
        builder
            .push(" AND timestamp_us >= ")
            .push_bind(micros(min_timestamp));
    }
    push_filter(&mut builder, &query.filter);
    builder
        .push(" ORDER BY rowid LIMIT ")
        .push_bind(query.limit as i64);
    let rows = builder.build().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let rowid: i64 = row.try_get(9)?;
            Ok((rowid.max(0) as u64, event_from_row(row)?))
        })
        .collect()
}

/// The rollups this store keeps, finest first: hours only (migration 0001).
pub(super) const ROLLUPS: &[BucketWidth] = &[BucketWidth::Hour];

/// The bucket and type columns of a count grouped by `grouping` (NULL where it does not
/// group), bucketing `time_column` (microseconds).
fn group_columns(grouping: Grouping, time_column: &str) -> (String, &'static str) {
    let bucket = match grouping {
        Grouping::Bucket(width) => {
            format!("({time_column} - ({time_column} % {}))", width.micros())
        }
        Grouping::Total | Grouping::EventType => "NULL".to_owned(),
    };
    let event_type = match grouping {
        Grouping::EventType => "event_type",
        Grouping::Total | Grouping::Bucket(_) => "NULL",
    };
    (bucket, event_type)
}

/// `AND time_column >= start AND time_column < end`, and the type when the count has
/// one.
fn push_window_and_type(builder: &mut QueryBuilder<Sqlite>, time_column: &str, query: &CountQuery) {
    builder
        .push(format!(" AND {time_column} >= "))
        .push_bind(micros(query.start));
    builder
        .push(format!(" AND {time_column} < "))
        .push_bind(micros(query.end));
    if let Some(event_type) = &query.event_type {
        builder
            .push(" AND event_type = ")
            .push_bind(event_type.clone());
    }
}

pub(super) async fn count(
    pool: &SqlitePool,
    query: &CountQuery,
    source: CountSource,
) -> Result<Vec<CountRow>, StoreError> {
    let (time_column, table, total) = match source {
        CountSource::Events => ("timestamp_us", "events", "count(*)"),
        CountSource::Rollup(BucketWidth::Hour) => {
            ("hour_us", "event_rollups_hourly", "sum(event_count)")
        }
        CountSource::Rollup(width) => {
            return Err(StoreError::Internal(format!(
                "no {width:?} rollup in SQLite"
            )));
        }
    };
    let (bucket, event_type) = group_columns(query.grouping, time_column);
    // Only fixed fragments above are formatted in; values are bound below.
    let mut builder = QueryBuilder::new(format!(
        "SELECT {bucket}, {event_type}, {total} FROM {table} WHERE tenant_id = "
    ));
    builder.push_bind(query.tenant_id.to_string());
    push_window_and_type(&mut builder, time_column, query);
    builder.push(" GROUP BY 1, 2");
    let rows = builder.build().fetch_all(pool).await?;
    let mut counts = Vec::with_capacity(rows.len());
    for row in &rows {
        let count: Option<i64> = row.try_get(2)?;
        let count = count.unwrap_or(0);
        if count <= 0 {
            continue;
        }
        let bucket: Option<i64> = row.try_get(0)?;
        counts.push(CountRow {
            bucket: bucket.map(from_micros).transpose()?,
            event_type: row.try_get(1)?,
            count: count as u64,
        });
    }
    Ok(counts)
}

/// The events analytics read: of `event_types`, with a user, in `[start, end)`, in
/// (user, timestamp, event id) order.
fn user_events_sql(reading: &Reading) -> QueryBuilder<Sqlite> {
    let mut builder = QueryBuilder::new("SELECT user_id, event_type, timestamp_us, ");
    match &reading.property {
        Some(property) => push_property_value(&mut builder, property),
        None => {
            builder.push("NULL");
        }
    }
    builder.push(" FROM events WHERE tenant_id = ");
    builder.push_bind(reading.tenant_id.to_string());
    builder.push(" AND user_id IS NOT NULL AND event_type IN (");
    let mut types = builder.separated(", ");
    for event_type in &reading.event_types {
        types.push_bind(event_type.clone());
    }
    builder
        .push(") AND timestamp_us >= ")
        .push_bind(micros(reading.start));
    builder
        .push(" AND timestamp_us < ")
        .push_bind(micros(reading.end));
    push_filter(&mut builder, &reading.filter);
    builder.push(match reading.property {
        Some(_) => " ORDER BY user_id, timestamp_us, event_id",
        None => " ORDER BY user_id, timestamp_us",
    });
    builder
}

/// The value of top-level `property` of `events.properties` as JSON text (NULL when
/// absent): json_each gives a scalar's SQL value and its JSON type, printed back as JSON.
fn push_property_value(builder: &mut QueryBuilder<Sqlite>, property: &str) {
    builder.push(
        "(SELECT CASE p.type WHEN 'null' THEN 'null' WHEN 'true' THEN 'true' \
         WHEN 'false' THEN 'false' WHEN 'text' THEN json_quote(p.value) \
         ELSE CAST(p.value AS TEXT) END FROM json_each(events.properties) AS p WHERE p.key = ",
    );
    builder.push_bind(property.to_owned());
    builder.push(")");
}

fn user_event(row: sqlx::Result<sqlx::sqlite::SqliteRow>) -> Result<UserEvent, StoreError> {
    let row = row?;
    let user_id: String = row.try_get(0)?;
    Ok(UserEvent {
        user: crate::analytics::user_key(&user_id),
        event_type: row.try_get(1)?,
        timestamp: from_micros(row.try_get(2)?)?,
        value: row.try_get(3)?,
    })
}

/// Runs `walk` over the events `reading` selects, streamed from the database.
pub(super) async fn with_user_events<T>(
    pool: &SqlitePool,
    reading: &Reading,
    walk: impl for<'s> AsyncFnOnce(
        BoxStream<'s, Result<UserEvent, StoreError>>,
    ) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut builder = user_events_sql(reading);
    walk(builder.build().fetch(pool).map(user_event).boxed()).await
}

/// A count split by a property's value, read from the events (the rollup keeps no
/// properties); each value printed as compact JSON, compared as JSON.
pub(super) async fn breakdown(
    pool: &SqlitePool,
    query: &BreakdownQuery,
) -> Result<Vec<BreakdownRow>, StoreError> {
    let counting = &query.counting;
    let (bucket, event_type) = group_columns(counting.grouping, "timestamp_us");
    // Only fixed fragments are formatted in; values are bound.
    let mut builder = QueryBuilder::new(format!("SELECT {bucket}, {event_type}, "));
    push_property_value(&mut builder, &query.property);
    builder.push(", count(*) FROM events WHERE tenant_id = ");
    builder.push_bind(counting.tenant_id.to_string());
    push_window_and_type(&mut builder, "timestamp_us", counting);
    builder.push(" GROUP BY 1, 2, 3");
    let rows = builder.build().fetch_all(pool).await?;
    let mut breakdown = Vec::with_capacity(rows.len());
    for row in &rows {
        let bucket: Option<i64> = row.try_get(0)?;
        let count: i64 = row.try_get(3)?;
        breakdown.push(BreakdownRow {
            bucket: bucket.map(from_micros).transpose()?,
            event_type: row.try_get(1)?,
            value: row.try_get(2)?,
            count: count.max(0) as u64,
        });
    }
    Ok(breakdown)
}

/// Distinct users per group, from the events (the rollup cannot merge them).
pub(super) async fn count_users(
    pool: &SqlitePool,
    query: &CountQuery,
) -> Result<Vec<CountRow>, StoreError> {
    let (bucket, event_type) = group_columns(query.grouping, "timestamp_us");
    // Only fixed fragments are formatted in; values are bound.
    let mut builder = QueryBuilder::new(format!(
        "SELECT {bucket}, {event_type}, count(DISTINCT user_id) FROM events \
         WHERE user_id IS NOT NULL AND tenant_id = "
    ));
    builder.push_bind(query.tenant_id.to_string());
    push_window_and_type(&mut builder, "timestamp_us", query);
    builder.push(" GROUP BY 1, 2");
    let rows = builder.build().fetch_all(pool).await?;
    let mut counts = Vec::with_capacity(rows.len());
    for row in &rows {
        let bucket: Option<i64> = row.try_get(0)?;
        let users: i64 = row.try_get(2)?;
        counts.push(CountRow {
            bucket: bucket.map(from_micros).transpose()?,
            event_type: row.try_get(1)?,
            count: users.max(0) as u64,
        });
    }
    Ok(counts)
}
