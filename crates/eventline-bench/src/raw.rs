//! The raw PostgreSQL baseline: identical rows written straight into a scratch database
//! with eventline's schema, by binary COPY and by the writer's own statement, over as many
//! connections as the writer has workers, in groups of the writer's size sorted as the
//! writer sorts them, so the service's rate can be read as a ratio of the database's and
//! a ratio above 1 would mean the service did something a loader could not.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use eventline_core::{Event, IngestClock, TenantId, validate_event};
use eventline_proto::v1;
use eventline_store::postgres::{PgStore, copy_events, disable_nagle};
use sqlx::{Connection, PgConnection};

/// Rows per transaction: the writer's default `max_batch_events`, the size its groups
/// reach at full load.
pub(crate) const GROUP_ROWS: usize = 5_000;
/// The writer's default number of workers on PostgreSQL.
pub(crate) const CONNECTIONS: usize = 2;

/// Rates of one raw run in rows per second, by method (`copy_binary`, `insert_unnest`
/// on PostgreSQL; `sqlite_executemany` on SQLite).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(transparent)]
pub(crate) struct RawRates(pub(crate) BTreeMap<&'static str, f64>);

impl RawRates {
    /// The mean of two runs, method by method.
    pub(crate) fn mean(&self, other: &Self) -> Self {
        Self(
            self.0
                .iter()
                .filter_map(|(method, rate)| Some((*method, (rate + other.0.get(method)?) / 2.0)))
                .collect(),
        )
    }

    /// The fastest method's rate.
    pub(crate) fn best(&self) -> f64 {
        self.0.values().copied().fold(0.0, f64::max)
    }
}

/// Measures both methods on `rows`, in `database_url` (a fresh, migrated database).
pub(crate) async fn measure(database_url: &str, rows: &[Event]) -> anyhow::Result<RawRates> {
    let store = PgStore::connect(database_url, CONNECTIONS as u32 + 1).await?;
    store.migrate().await?;
    // Each method starts with the tables empty and nothing dirty to write back.
    truncate(&store).await?;
    let copy_binary = rate(rows.len(), copy_all(database_url, rows).await?);
    truncate(&store).await?;
    let insert_unnest = rate(rows.len(), insert_all(&store, rows).await?);
    truncate(&store).await?;
    Ok(RawRates(BTreeMap::from([
        ("copy_binary", copy_binary),
        ("insert_unnest", insert_unnest),
    ])))
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
    sqlx::query("CHECKPOINT").execute(store.pool()).await?;
    Ok(())
}

/// `rows` cut into the writer's groups, each sorted by `(tenant_id, event_id)` as the
/// writer sorts a group, dealt round-robin to `connections`.
pub(crate) fn writer_shares(rows: &[Event], connections: usize) -> Vec<Vec<Vec<Event>>> {
    let count = connections.max(1);
    let mut shares: Vec<Vec<Vec<Event>>> = vec![Vec::new(); count];
    for (index, group) in rows.chunks(GROUP_ROWS).enumerate() {
        let mut group = group.to_vec();
        group.sort_unstable_by(|left, right| {
            (left.tenant_id, &left.event_id).cmp(&(right.tenant_id, &right.event_id))
        });
        shares[index % count].push(group);
    }
    shares
}

async fn copy_all(database_url: &str, rows: &[Event]) -> anyhow::Result<Duration> {
    let shares = writer_shares(rows, CONNECTIONS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for share in shares {
        let url = database_url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut connection = PgConnection::connect(&url).await?;
            disable_nagle(&mut connection).await?;
            for group in &share {
                copy_events(&mut connection, group.iter()).await?;
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
    let shares = writer_shares(rows, CONNECTIONS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for share in shares {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for group in &share {
                store.append_by_insert(group).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("insert task")??;
    }
    Ok(started.elapsed())
}

/// `sample` validated as the server would, for a tenant created in the fresh, migrated
/// database at `url`: the rows every raw method writes.
pub(crate) async fn rows_for_new_tenant(
    url: &str,
    sample: Vec<v1::Event>,
) -> anyhow::Result<Vec<Event>> {
    let tenant_id = TenantId::generate();
    let rows = validated(tenant_id, sample)?;
    let store = PgStore::connect(url, 1).await?;
    store.migrate().await?;
    sqlx::query("INSERT INTO tenants (tenant_id, name) VALUES ($1, 'bench')")
        .bind(tenant_id.0)
        .execute(store.pool())
        .await?;
    Ok(rows)
}

/// `sample` validated as the server would validate it for `tenant_id`.
pub(crate) fn validated(tenant_id: TenantId, sample: Vec<v1::Event>) -> anyhow::Result<Vec<Event>> {
    let clock = IngestClock::now();
    sample
        .into_iter()
        .map(|event| validate_event(tenant_id, event, &clock))
        .collect::<Result<_, _>>()
        .map_err(|violation| anyhow::anyhow!("generated an invalid event: {violation}"))
}

/// The raw SQLite baseline: `rows` inserted into a fresh file at `path` with the embedded
/// store's schema (its migrations), WAL and `synchronous=FULL` as the store opens it, by one
/// prepared INSERT executed per row (an `executemany`) in transactions of the writer's
/// group size, on one connection (SQLite has one writer). Returns rows per second.
pub(crate) async fn measure_sqlite(
    path: &std::path::Path,
    rows: &[Event],
) -> anyhow::Result<RawRates> {
    for file in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{file}", path.display()));
    }
    let url = format!("sqlite:{}", path.display());
    let store = eventline_store::sqlite::SqliteStore::connect_url(&url).await?;
    store.migrate().await?;
    store.close().await;
    let (path, rows) = (path.to_owned(), rows.to_vec());
    let rate = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut connection = rusqlite::Connection::open(&path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        let started = Instant::now();
        for group in rows.chunks(GROUP_ROWS) {
            let transaction = connection.transaction()?;
            {
                let mut insert = transaction.prepare(
                    "INSERT INTO events (tenant_id, event_id, event_type, user_id, session_id,
                         timestamp_us, client_timestamp_us, received_us, properties)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?;
                for row in group {
                    insert.execute(rusqlite::params![
                        row.tenant_id.to_string(),
                        row.event_id,
                        row.event_type,
                        row.user_id,
                        row.session_id,
                        row.timestamp.timestamp_micros(),
                        row.client_timestamp.map(|time| time.timestamp_micros()),
                        row.received_at.timestamp_micros(),
                        row.properties_json,
                    ])?;
                }
            }
            transaction.commit()?;
        }
        Ok(rate(rows.len(), started.elapsed()))
    })
    .await
    .context("raw SQLite task")??;
    Ok(RawRates(BTreeMap::from([("sqlite_executemany", rate)])))
}
