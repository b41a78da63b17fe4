//! The raw PostgreSQL baseline: identical rows written straight into a scratch database
//! with eventline's schema, by binary COPY and by the writer's own statement, over two
//! connections, so the service's rate can be read as a ratio of the database's.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, TimeZone, Utc};
use eventline_core::Event;
use eventline_store::{Store, postgres::PgStore};
use sqlx::{Connection, PgConnection};

/// Rows per COPY statement and per INSERT statement (DESIGN §5's measured shapes).
const COPY_CHUNK: usize = 10_000;
const INSERT_CHUNK: usize = 5_000;
const CONNECTIONS: usize = 2;

/// Rates of one raw run, in rows per second.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct RawRates {
    pub(crate) copy_binary: f64,
    pub(crate) insert_unnest: f64,
}

/// Measures both methods on `rows`, in `database_url` (a fresh, migrated database).
pub(crate) async fn measure(database_url: &str, rows: &[Event]) -> anyhow::Result<RawRates> {
    let store = PgStore::connect(database_url, CONNECTIONS as u32 + 1).await?;
    store.migrate().await?;
    let copy_binary = rate(rows.len(), copy_all(database_url, rows).await?);
    truncate(&store).await?;
    let insert_unnest = rate(rows.len(), insert_all(&store, rows).await?);
    truncate(&store).await?;
    Ok(RawRates {
        copy_binary,
        insert_unnest,
    })
}

fn rate(rows: usize, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64().max(1e-9)
}

async fn truncate(store: &PgStore) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE events, event_rollups_hourly")
        .execute(store.pool())
        .await?;
    Ok(())
}

async fn copy_all(database_url: &str, rows: &[Event]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let shares: Vec<Vec<Event>> = split(rows, CONNECTIONS);
    let mut tasks = Vec::new();
    for share in shares {
        let url = database_url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut connection = PgConnection::connect(&url).await?;
            for chunk in share.chunks(COPY_CHUNK) {
                copy_rows(&mut connection, chunk).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("copy task")??;
    }
    Ok(started.elapsed())
}

async fn insert_all(store: &PgStore, rows: &[Event]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for share in split(rows, CONNECTIONS) {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for chunk in share.chunks(INSERT_CHUNK) {
                store.append(chunk).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("insert task")??;
    }
    Ok(started.elapsed())
}

fn split(rows: &[Event], parts: usize) -> Vec<Vec<Event>> {
    let size = rows.len().div_ceil(parts).max(1);
    rows.chunks(size).map(<[Event]>::to_vec).collect()
}

/// Writes `rows` into `events` with one binary COPY statement.
pub(crate) async fn copy_rows(connection: &mut PgConnection, rows: &[Event]) -> anyhow::Result<()> {
    let mut copy = connection
        .copy_in_raw(
            "COPY events (tenant_id, event_id, event_type, user_id, session_id, \"timestamp\", \
             client_timestamp, received_at, properties) FROM STDIN (FORMAT binary)",
        )
        .await?;
    copy.send(encode_binary(rows)).await?;
    copy.finish().await?;
    Ok(())
}

/// Rows in PostgreSQL's binary COPY format.
pub(crate) fn encode_binary(rows: &[Event]) -> Vec<u8> {
    let mut buffer = BytesMut::with_capacity(rows.len() * 400 + 32);
    buffer.put_slice(b"PGCOPY\n\xff\r\n\0");
    buffer.put_i32(0);
    buffer.put_i32(0);
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
        buffer.put_i32(row.properties_json.len() as i32 + 1);
        buffer.put_u8(1);
        buffer.put_slice(row.properties_json.as_bytes());
    }
    buffer.put_i16(-1);
    buffer.to_vec()
}

fn put_field(buffer: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            buffer.put_i32(bytes.len() as i32);
            buffer.put_slice(bytes);
        }
        None => buffer.put_i32(-1),
    }
}

fn put_time(buffer: &mut BytesMut, time: Option<DateTime<Utc>>) {
    // timestamptz: microseconds since 2000-01-01 UTC.
    let postgres_epoch = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    match time {
        Some(time) => {
            buffer.put_i32(8);
            buffer.put_i64((time - postgres_epoch).num_microseconds().unwrap_or(0));
        }
        None => buffer.put_i32(-1),
    }
}
