//! PostgreSQL reads. Statements are assembled from fixed fragments chosen by enums;
//! every value is a bind parameter.

use eventline_core::{
    Event,
    breakdown::{BreakdownQuery, BreakdownRow},
    query::{
        BucketWidth, CommittedQuery, CountQuery, CountRow, EventFilter, EventQuery, Grouping, Order,
    },
};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::event_from_row;
use crate::{
    StoreError,
    analytics::{Reading, UserEvent},
    counts::CountSource,
};
use futures::{StreamExt, stream::BoxStream};

pub(super) const EVENT_COLUMNS: &str = r#"SELECT tenant_id, event_id, event_type, user_id, session_id, "timestamp",
       client_timestamp, received_at, properties::text"#;

pub(super) fn push_filter(builder: &mut QueryBuilder<Postgres>, filter: &EventFilter) {
    if let Some(event_type) = &filter.event_type {
        builder
            .push(" AND event_type = ")
            .push_bind(event_type.clone());
    }
    if let Some(user_id) = &filter.user_id {
        builder.push(" AND user_id = ").push_bind(user_id.clone());
    }
    // jsonb containment has no statistics: the planner guesses 1 % of rows match. With a
    // type or user filter that guess picks a GIN bitmap and a sort of every match (120 ms
    // for `plan=pro` on 1M events); walking the type's (or user's) time index newest-first
    // and checking each row finds a page at once. So the GIN index serves only filters
    // that have no ordered index of their own; `IS TRUE` keeps the planner off it.
    let (prefix, suffix) = if filter.event_type.is_some() || filter.user_id.is_some() {
        (" AND (properties @> ", "::jsonb) IS TRUE")
    } else {
        (" AND properties @> ", "::jsonb")
    };
    for property in &filter.properties {
        builder
            .push(prefix)
            .push_bind(property.as_json_object())
            .push(suffix);
    }
}

pub(super) async fn list_events(
    pool: &PgPool,
    query: &EventQuery,
) -> Result<Vec<Event>, StoreError> {
    let mut builder = QueryBuilder::new(EVENT_COLUMNS);
    builder
        .push(" FROM events WHERE tenant_id = ")
        .push_bind(query.tenant_id.0);
    builder
        .push(r#" AND "timestamp" >= "#)
        .push_bind(query.start);
    builder.push(r#" AND "timestamp" < "#).push_bind(query.end);
    push_filter(&mut builder, &query.filter);
    if let Some(after) = &query.after {
        let comparison = match query.order {
            Order::NewestFirst => " < ",
            Order::OldestFirst => " > ",
        };
        builder
            .push(r#" AND ("timestamp", event_id)"#)
            .push(comparison);
        builder
            .push("(")
            .push_bind(after.timestamp)
            .push(", ")
            .push_bind(after.event_id.clone())
            .push(")");
    }
    if let Some(horizon) = query.committed_before {
        builder
            .push(" AND commit_xid < ")
            .push_bind(horizon.to_string())
            .push("::xid8");
    }
    builder.push(match query.order {
        Order::NewestFirst => r#" ORDER BY "timestamp" DESC, event_id DESC"#,
        Order::OldestFirst => r#" ORDER BY "timestamp", event_id"#,
    });
    builder.push(" LIMIT ").push_bind(query.limit as i64);
    let rows = builder.build().fetch_all(pool).await?;
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn list_committed(
    pool: &PgPool,
    query: &CommittedQuery,
) -> Result<Vec<(u64, Event)>, StoreError> {
    let mut builder = QueryBuilder::new(EVENT_COLUMNS);
    // Named apart: an output column named commit_xid (a cast keeps its column's name)
    // would be what ORDER BY commit_xid sorts, a bigint no index holds, so every read
    // sorted the tenant's whole history instead of walking events_by_commit.
    builder
        .push(", commit_xid::text::bigint AS commit_sequence FROM events WHERE tenant_id = ")
        .push_bind(query.tenant_id.0);
    builder
        .push(" AND (commit_xid, event_id) > (")
        .push_bind(query.after.0.to_string())
        .push("::xid8, ");
    builder.push_bind(query.after.1.clone()).push(")");
    builder
        .push(" AND commit_xid < ")
        .push_bind(query.horizon.to_string())
        .push("::xid8");
    if let Some(min_timestamp) = query.min_timestamp {
        builder
            .push(r#" AND "timestamp" >= "#)
            .push_bind(min_timestamp);
    }
    push_filter(&mut builder, &query.filter);
    builder
        .push(" ORDER BY commit_xid, event_id LIMIT ")
        .push_bind(query.limit as i64);
    let rows = builder.build().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let sequence: i64 = row.try_get(9)?;
            Ok((sequence.max(0) as u64, event_from_row(row)?))
        })
        .collect()
}

/// The rollups this store keeps, finest first (migrations 0004, 0001 and 0003).
pub(super) const ROLLUPS: &[BucketWidth] =
    &[BucketWidth::Minute, BucketWidth::Hour, BucketWidth::Day];

/// The bucket and type columns of a count grouped by `grouping` (NULL where it does not
/// group), bucketing `time_column`.
fn group_columns(grouping: Grouping, time_column: &str) -> (String, &'static str) {
    let bucket = match grouping {
        Grouping::Bucket(width) => {
            let unit = match width {
                BucketWidth::Minute => "'minute'",
                BucketWidth::Hour => "'hour'",
                BucketWidth::Day => "'day'",
            };
            format!("date_trunc({unit}, {time_column}, 'UTC')")
        }
        Grouping::Total | Grouping::EventType => "NULL::timestamptz".to_owned(),
    };
    let event_type = match grouping {
        Grouping::EventType => "event_type",
        Grouping::Total | Grouping::Bucket(_) => "NULL::text",
    };
    (bucket, event_type)
}

/// `AND time_column >= start AND time_column < end`, and the type when the count has
/// one.
fn push_window_and_type(
    builder: &mut QueryBuilder<Postgres>,
    time_column: &str,
    query: &CountQuery,
) {
    builder
        .push(format!(" AND {time_column} >= "))
        .push_bind(query.start);
    builder
        .push(format!(" AND {time_column} < "))
        .push_bind(query.end);
    if let Some(event_type) = &query.event_type {
        builder
            .push(" AND event_type = ")
            .push_bind(event_type.clone());
    }
}

pub(super) async fn count(
    pool: &PgPool,
    query: &CountQuery,
    source: CountSource,
) -> Result<Vec<CountRow>, StoreError> {
    let (time_column, table, total) = match source {
        CountSource::Events => (r#""timestamp""#, "events", "count(*)"),
        CountSource::Rollup(BucketWidth::Minute) => (
            "minute",
            "event_rollups_minutely",
            "sum(event_count)::bigint",
        ),
        CountSource::Rollup(BucketWidth::Hour) => {
            ("hour", "event_rollups_hourly", "sum(event_count)::bigint")
        }
        CountSource::Rollup(BucketWidth::Day) => {
            ("day", "event_rollups_daily", "sum(event_count)::bigint")
        }
    };
    let (bucket, event_type) = group_columns(query.grouping, time_column);
    // Only fixed fragments above are formatted in; values are bound below.
    let mut builder = QueryBuilder::new(format!(
        "SELECT {bucket}, {event_type}, {total} FROM {table} WHERE tenant_id = "
    ));
    builder.push_bind(query.tenant_id.0);
    push_window_and_type(&mut builder, time_column, query);
    builder.push(" GROUP BY 1, 2");
    let rows = builder.build().fetch_all(pool).await?;
    rows.iter()
        .filter_map(|row| {
            let count: Option<i64> = match row.try_get(2) {
                Ok(count) => count,
                Err(error) => return Some(Err(error.into())),
            };
            let count = count.unwrap_or(0);
            (count > 0).then(|| {
                Ok(CountRow {
                    bucket: row.try_get(0)?,
                    event_type: row.try_get(1)?,
                    count: count as u64,
                })
            })
        })
        .collect()
}

/// The events analytics read: of `event_types`, with a user, in `[start, end)`, each
/// user's together (by `hashtextextended`, a 64-bit key: a bigint sorts faster than
/// text) in timestamp order.
fn user_events_sql(reading: &Reading) -> QueryBuilder<Postgres> {
    let mut builder =
        QueryBuilder::new(r#"SELECT hashtextextended(user_id, 0), event_type, "timestamp", "#);
    match &reading.property {
        Some(property) => builder
            .push("(properties -> ")
            .push_bind(property.clone())
            .push(")::text"),
        None => builder.push("NULL::text"),
    };
    builder.push(" FROM events WHERE tenant_id = ");
    builder.push_bind(reading.tenant_id.0);
    builder.push(" AND user_id IS NOT NULL AND event_type = ANY(");
    builder.push_bind(reading.event_types.clone());
    builder
        .push(r#") AND "timestamp" >= "#)
        .push_bind(reading.start);
    builder
        .push(r#" AND "timestamp" < "#)
        .push_bind(reading.end);
    push_filter(&mut builder, &reading.filter);
    builder.push(match reading.property {
        Some(_) => r#" ORDER BY 1, "timestamp", event_id"#,
        None => r#" ORDER BY 1, "timestamp""#,
    });
    builder
}

fn user_event(row: sqlx::Result<sqlx::postgres::PgRow>) -> Result<UserEvent, StoreError> {
    let row = row?;
    Ok(UserEvent {
        user: row.try_get(0)?,
        event_type: row.try_get(1)?,
        timestamp: row.try_get(2)?,
        value: row.try_get(3)?,
    })
}

/// Runs `walk` over the events `reading` selects, streamed from the database.
pub(super) async fn with_user_events<T>(
    pool: &PgPool,
    reading: &Reading,
    walk: impl for<'s> AsyncFnOnce(
        BoxStream<'s, Result<UserEvent, StoreError>>,
    ) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut builder = user_events_sql(reading);
    // The sort of a 30-day read (≈ 300,000 rows at 1M events) spills to disk at the
    // default 4 MB; this read may take more, in its own transaction only.
    let mut transaction = pool.begin().await?;
    sqlx::query(ANALYTICS_WORK_MEM)
        .execute(&mut *transaction)
        .await?;
    let walked = walk(
        builder
            .build()
            .fetch(&mut *transaction)
            .map(user_event)
            .boxed(),
    )
    .await;
    transaction.rollback().await?;
    walked
}

/// Sort memory of one analytics read (per query, bounded by the read pool's size).
const ANALYTICS_WORK_MEM: &str = "SET LOCAL work_mem = '64MB'";

/// A count split by a property's value, read from the events (rollups keep no
/// properties); `jsonb` prints each value, compared as JSON.
pub(super) async fn breakdown(
    pool: &PgPool,
    query: &BreakdownQuery,
) -> Result<Vec<BreakdownRow>, StoreError> {
    let counting = &query.counting;
    let (bucket, event_type) = group_columns(counting.grouping, r#""timestamp""#);
    // Only fixed fragments are formatted in; values are bound.
    let mut builder = QueryBuilder::new(format!("SELECT {bucket}, {event_type}, (properties -> "));
    builder.push_bind(query.property.clone());
    builder.push(")::text, count(*) FROM events WHERE tenant_id = ");
    builder.push_bind(counting.tenant_id.0);
    push_window_and_type(&mut builder, r#""timestamp""#, counting);
    builder.push(" GROUP BY 1, 2, 3");
    let rows = builder.build().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let count: i64 = row.try_get(3)?;
            Ok(BreakdownRow {
                bucket: row.try_get(0)?,
                event_type: row.try_get(1)?,
                value: row.try_get(2)?,
                count: count.max(0) as u64,
            })
        })
        .collect()
}

/// Distinct users per group, from the events (a rollup cannot merge them).
pub(super) async fn count_users(
    pool: &PgPool,
    query: &CountQuery,
) -> Result<Vec<CountRow>, StoreError> {
    let (bucket, event_type) = group_columns(query.grouping, r#""timestamp""#);
    // Only fixed fragments are formatted in; values are bound.
    let mut builder = QueryBuilder::new(format!(
        "SELECT {bucket}, {event_type}, count(DISTINCT user_id) FROM events \
         WHERE user_id IS NOT NULL AND tenant_id = "
    ));
    builder.push_bind(query.tenant_id.0);
    push_window_and_type(&mut builder, r#""timestamp""#, query);
    builder.push(" GROUP BY 1, 2");
    let rows = builder.build().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let users: i64 = row.try_get(2)?;
            Ok(CountRow {
                bucket: row.try_get(0)?,
                event_type: row.try_get(1)?,
                count: users.max(0) as u64,
            })
        })
        .collect()
}
