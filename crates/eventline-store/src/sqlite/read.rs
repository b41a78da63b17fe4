//! SQLite reads. Statements are assembled from fixed fragments chosen by enums; every
//! value is a bind parameter.

use eventline_core::{
    Event,
    query::{
        BucketWidth, CommittedQuery, CountQuery, CountRow, EventFilter, EventQuery, Grouping, Order,
    },
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{event_from_row, from_micros, micros};
use crate::{StoreError, counts::CountSource};

const EVENT_COLUMNS: &str =
    "SELECT tenant_id, event_id, event_type, user_id, session_id, timestamp_us,
       client_timestamp_us, received_us, properties";

fn push_filter(builder: &mut QueryBuilder<Sqlite>, filter: &EventFilter) {
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
    let bucket = match query.grouping {
        Grouping::Bucket(width) => {
            format!("({time_column} - ({time_column} % {}))", width.micros())
        }
        Grouping::Total | Grouping::EventType => "NULL".to_owned(),
    };
    let event_type = match query.grouping {
        Grouping::EventType => "event_type",
        _ => "NULL",
    };
    // Only fixed fragments above are formatted in; values are bound below.
    let mut builder = QueryBuilder::new(format!(
        "SELECT {bucket}, {event_type}, {total} FROM {table} WHERE tenant_id = "
    ));
    builder.push_bind(query.tenant_id.to_string());
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
