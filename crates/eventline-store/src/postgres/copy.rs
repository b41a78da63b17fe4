//! Binary COPY of events, the cheapest way into PostgreSQL (≈ 11 µs of server CPU per row
//! against ≈ 17 µs for the `unnest` insert, README "Performance"). COPY cannot skip duplicates, so
//! the writer uses it optimistically and falls back to `INSERT … ON CONFLICT DO NOTHING`
//! when a unique violation aborts it.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use eventline_core::Event;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

const COPY_EVENTS: &str = "COPY events (tenant_id, event_id, event_type, user_id, session_id, \
     \"timestamp\", client_timestamp, received_at, properties) FROM STDIN (FORMAT binary)";

/// One rollup table: counts per (tenant, bucket, event type, writer slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupGrain {
    Minute,
    Hour,
    Day,
}

impl RollupGrain {
    /// Every rollup the writer maintains, finest first (the order rows are locked in).
    pub const ALL: [RollupGrain; 3] = [RollupGrain::Minute, RollupGrain::Hour, RollupGrain::Day];

    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            RollupGrain::Minute => "event_rollups_minutely",
            RollupGrain::Hour => "event_rollups_hourly",
            RollupGrain::Day => "event_rollups_daily",
        }
    }

    /// Its bucket column, which is also the `date_trunc` unit.
    fn unit(self) -> &'static str {
        match self {
            RollupGrain::Minute => "minute",
            RollupGrain::Hour => "hour",
            RollupGrain::Day => "day",
        }
    }
}

/// The statement adding per-minute counts ($1–$4) to `grains`, each row in slot $5. Keys
/// are upserted in key order, finest table first, so writers sharing a slot (replicas of
/// one database) lock them in one order.
fn upsert_rollups_sql(grains: &[RollupGrain]) -> String {
    let upsert = |grain: RollupGrain| {
        let (table, unit) = (grain.table(), grain.unit());
        format!(
            "INSERT INTO {table} (tenant_id, {unit}, event_type, slot, event_count) \
             SELECT tenant_id, date_trunc('{unit}', minute, 'UTC'), event_type, $5, sum(event_count) \
             FROM counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 \
             ON CONFLICT (tenant_id, {unit}, event_type, slot) \
             DO UPDATE SET event_count = {table}.event_count + EXCLUDED.event_count"
        )
    };
    let mut sql = String::from(
        "WITH counts AS ( \
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::bigint[]) \
             AS c (tenant_id, minute, event_type, event_count))",
    );
    // Callers pass at least one grain; none would leave an empty statement.
    let Some((last, earlier)) = grains.split_last() else {
        return sql;
    };
    for (index, grain) in earlier.iter().enumerate() {
        sql.push_str(&format!(", g{index} AS ({})", upsert(*grain)));
    }
    sql.push(' ');
    sql.push_str(&upsert(*last));
    sql
}

/// PostgreSQL's epoch, 2000-01-01 UTC, in seconds from the Unix epoch.
const POSTGRES_EPOCH_SECONDS: i64 = 946_684_800;

/// Writes `rows` into `events` with one binary COPY statement. A row whose key exists
/// already fails the whole statement with [`StoreError::Conflict`].
pub async fn copy_events<'a>(
    connection: &mut PgConnection,
    rows: impl ExactSizeIterator<Item = &'a Event>,
) -> Result<(), StoreError> {
    let mut copy = connection.copy_in_raw(COPY_EVENTS).await?;
    if let Err(error) = copy.send(encode_binary(rows)).await {
        // Abort so the connection is usable again; the send error is the one to report.
        let _ = copy.abort("send failed").await;
        return Err(error.into());
    }
    copy.finish().await?;
    Ok(())
}

/// Adds one per row to the minute, hourly and daily rollups, in the caller's
/// transaction, in rows of `slot` (migration 0008: no other transaction in flight uses it).
pub(crate) async fn upsert_rollups<'a>(
    connection: &mut PgConnection,
    rows: impl Iterator<Item = &'a Event>,
    slot: i16,
) -> Result<(), StoreError> {
    static ALL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = ALL.get_or_init(|| upsert_rollups_sql(&RollupGrain::ALL));
    upsert_rollups_with(connection, rows, sql, slot).await
}

/// Like the writer's rollup upsert, into `grains` only: `eventline bench write-costs`
/// adds the rollups one at a time to measure what each costs per row.
pub async fn upsert_rollups_into<'a>(
    connection: &mut PgConnection,
    rows: impl Iterator<Item = &'a Event>,
    grains: &[RollupGrain],
) -> Result<(), StoreError> {
    if grains.is_empty() {
        return Ok(());
    }
    upsert_rollups_with(connection, rows, &upsert_rollups_sql(grains), 0).await
}

async fn upsert_rollups_with<'a>(
    connection: &mut PgConnection,
    rows: impl Iterator<Item = &'a Event>,
    sql: &str,
    slot: i16,
) -> Result<(), StoreError> {
    let mut counts: HashMap<(Uuid, DateTime<Utc>, &str), i64> = HashMap::new();
    for row in rows {
        // The minute of the value stored, which is whole microseconds.
        let stored = postgres_epoch() + TimeDelta::microseconds(stored_micros(row.timestamp));
        *counts
            .entry((row.tenant_id.0, minute_of(stored)?, row.event_type.as_str()))
            .or_default() += 1;
    }
    add_rollup_counts(connection, counts, sql, slot).await
}

/// The slot a user deletion subtracts its counts in: writers take slots from 0 up, so
/// it never meets a writer's rows (migration 0008), and reads sum every slot.
const CORRECTION_SLOT: i16 = -1;

/// Subtracts one per event `(stored timestamp, type)` of `tenant_id` from every rollup,
/// in the caller's transaction: the correction of a user deletion.
pub(crate) async fn subtract_from_rollups(
    connection: &mut PgConnection,
    tenant_id: Uuid,
    deleted: &[(DateTime<Utc>, String)],
) -> Result<(), StoreError> {
    if deleted.is_empty() {
        return Ok(());
    }
    let mut counts: HashMap<(Uuid, DateTime<Utc>, &str), i64> = HashMap::new();
    for (timestamp, event_type) in deleted {
        *counts
            .entry((tenant_id, minute_of(*timestamp)?, event_type.as_str()))
            .or_default() -= 1;
    }
    static ALL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = ALL.get_or_init(|| upsert_rollups_sql(&RollupGrain::ALL));
    add_rollup_counts(connection, counts, sql, CORRECTION_SLOT).await
}

fn minute_of(time: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
    time.duration_trunc(TimeDelta::minutes(1))
        .map_err(|error| StoreError::Internal(format!("rollup minute: {error}")))
}

async fn add_rollup_counts(
    connection: &mut PgConnection,
    counts: HashMap<(Uuid, DateTime<Utc>, &str), i64>,
    sql: &str,
    slot: i16,
) -> Result<(), StoreError> {
    let mut tenant_ids = Vec::with_capacity(counts.len());
    let mut minutes = Vec::with_capacity(counts.len());
    let mut event_types = Vec::with_capacity(counts.len());
    let mut event_counts = Vec::with_capacity(counts.len());
    for ((tenant_id, minute, event_type), count) in counts {
        tenant_ids.push(tenant_id);
        minutes.push(minute);
        event_types.push(event_type);
        event_counts.push(count);
    }
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_ids)
        .bind(minutes)
        .bind(event_types)
        .bind(event_counts)
        .bind(slot)
        .persistent(true)
        .execute(connection)
        .await?;
    Ok(())
}

/// Rows in PostgreSQL's binary COPY format.
fn encode_binary<'a>(rows: impl ExactSizeIterator<Item = &'a Event>) -> BytesMut {
    // 9 field headers, a UUID, three timestamps and the usual text sizes.
    let mut buffer = BytesMut::with_capacity(rows.len() * 360 + 32);
    buffer.put_slice(b"PGCOPY\n\xff\r\n\0");
    buffer.put_i32(0); // flags
    buffer.put_i32(0); // header extension length
    for row in rows {
        buffer.put_i16(9);
        put_field(&mut buffer, Some(row.tenant_id.0.as_bytes()));
        put_field(&mut buffer, Some(row.event_id.as_bytes()));
        put_field(&mut buffer, Some(row.event_type.as_bytes()));
        put_field(&mut buffer, row.user_id.as_deref().map(str::as_bytes));
        put_field(&mut buffer, row.session_id.as_deref().map(str::as_bytes));
        put_time(&mut buffer, Some(row.timestamp));
        put_time(&mut buffer, row.client_timestamp);
        put_time(&mut buffer, Some(row.received_at));
        // jsonb's binary form: a version byte, then the text.
        put_length(&mut buffer, row.properties_json.len() + 1);
        buffer.put_u8(1);
        buffer.put_slice(row.properties_json.as_bytes());
    }
    buffer.put_i16(-1);
    buffer
}

fn put_length(buffer: &mut BytesMut, length: usize) {
    // Validation caps every field far below 2 GiB.
    buffer.put_i32(i32::try_from(length).unwrap_or(i32::MAX));
}

fn put_field(buffer: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            put_length(buffer, bytes.len());
            buffer.put_slice(bytes);
        }
        None => buffer.put_i32(-1),
    }
}

fn postgres_epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(POSTGRES_EPOCH_SECONDS, 0).unwrap_or_default()
}

/// Microseconds since 2000 as stored: truncated toward zero exactly as sqlx encodes a
/// bound timestamptz, so COPY and the fallback insert store the same value.
fn stored_micros(time: DateTime<Utc>) -> i64 {
    (time - postgres_epoch())
        .num_microseconds()
        .unwrap_or(i64::MAX)
}

fn put_time(buffer: &mut BytesMut, time: Option<DateTime<Utc>>) {
    match time {
        Some(time) => {
            buffer.put_i32(8);
            buffer.put_i64(stored_micros(time));
        }
        None => buffer.put_i32(-1),
    }
}
