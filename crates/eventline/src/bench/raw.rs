//! The raw PostgreSQL baseline: identical rows written straight into a scratch database
//! with eventline's schema, by binary COPY and by the writer's own statement, over two
//! connections, so the service's rate can be read as a ratio of the database's.

use std::time::{Duration, Instant};

use anyhow::Context;
use eventline_core::Event;
use eventline_store::postgres::{PgStore, copy_events};
use sqlx::{Connection, PgConnection};

/// Rows per COPY statement and per INSERT statement (the shapes README "Performance" measured).
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

/// Empties every table a write touches, so each measured pass inserts rollup rows as the
/// first did instead of updating rows the previous pass left (issue #16, item 9).
async fn truncate(store: &PgStore) -> anyhow::Result<()> {
    sqlx::query(
        "TRUNCATE events, event_rollups_minutely, event_rollups_hourly, event_rollups_daily",
    )
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
                copy_events(&mut connection, chunk.iter()).await?;
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
                store.append_by_insert(chunk).await?;
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
