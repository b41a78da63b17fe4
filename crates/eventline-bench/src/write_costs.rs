//! `eventline bench write-costs`: what each part of the schema costs PostgreSQL per row.
//! The same rows are written the way the writer writes them (binary COPY of key-sorted
//! groups, then the rollup upsert, one transaction per group, one connection per writer
//! worker) into the events table with only its primary key, then again with each
//! secondary index and each rollup added in turn, and PostgreSQL's CPU, WAL and time are
//! read for every step.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use eventline_core::Event;
use eventline_store::postgres::{
    PgStore, RollupGrain, copy_events, disable_nagle, upsert_rollups_into,
};
use sqlx::{Connection, PgConnection};

use super::{generator::EventGenerator, pgstat, raw, server};

#[derive(Debug, Args)]
pub(crate) struct WriteCostArgs {
    #[command(flatten)]
    postgres: super::PostgresServer,
    /// Rows written at every step.
    #[arg(long, default_value_t = 200_000)]
    rows: usize,
    /// Times each step is written; the table shows the run of median CPU per row.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

impl WriteCostArgs {
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// One step: the schema so far and what writing the rows into it cost.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Step {
    /// What this step added (`table + primary key` first).
    added: String,
    rows_per_second: f64,
    /// CPU of the writing sessions, per row.
    backend_cpu_us_per_row: f64,
    /// CPU of every PostgreSQL process (WAL writer, checkpointer, autovacuum too), per row.
    postgres_cpu_us_per_row: f64,
    wal_bytes_per_row: f64,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct WriteCostReport {
    rows: usize,
    repeat: usize,
    group_rows: usize,
    connections: usize,
    settings: Vec<(String, String)>,
    steps: Vec<Step>,
}

pub(crate) async fn run(args: WriteCostArgs) -> anyhow::Result<WriteCostReport> {
    let suffix = format!("{}", std::process::id());
    let url =
        server::fresh_database(&args.postgres.database_url, &format!("{suffix}_costs")).await?;
    let settings = pgstat::settings(&url).await?;
    let mut generator = EventGenerator::new(args.seed);
    let sample = generator
        .batches(args.rows, 1000)
        .into_iter()
        .flatten()
        .collect();
    let rows = raw::rows_for_new_tenant(&url, sample).await?;
    let store = PgStore::connect(&url, 2).await?;
    let indexes = drop_secondary_indexes(&store).await?;

    let mut steps = Vec::new();
    eprintln!(
        "writing {} rows at each of {} steps",
        rows.len(),
        indexes.len() + 4
    );
    let repeat = args.repeat.max(1);
    steps.push(median(&url, &store, &rows, &[], "table + primary key", repeat).await?);
    for (name, definition) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(definition.clone()))
            .execute(store.pool())
            .await
            .with_context(|| format!("create {name}"))?;
        let added = format!("+ index {name}");
        steps.push(median(&url, &store, &rows, &[], &added, repeat).await?);
    }
    for (count, grain) in RollupGrain::ALL.iter().enumerate() {
        let grains = &RollupGrain::ALL[..=count];
        let added = format!("+ rollup {}", grain.table());
        steps.push(median(&url, &store, &rows, grains, &added, repeat).await?);
    }
    drop(store);
    server::drop_databases(&args.postgres.database_url, &suffix).await?;
    Ok(WriteCostReport {
        rows: rows.len(),
        repeat: args.repeat.max(1),
        group_rows: raw::GROUP_ROWS,
        connections: raw::CONNECTIONS,
        settings,
        steps,
    })
}

/// Drops every index of `events` but its primary key; returns their names and
/// definitions as the migrations left them, in creation order.
async fn drop_secondary_indexes(store: &PgStore) -> anyhow::Result<Vec<(String, String)>> {
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = 'events'::regclass AND NOT i.indisprimary
         ORDER BY i.indexrelid",
    )
    .fetch_all(store.pool())
    .await?;
    for (name, _) in &indexes {
        // Names come from the catalog of the bench's own scratch database.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(store.pool())
            .await?;
    }
    Ok(indexes)
}

/// The run of median PostgreSQL CPU per row out of `repeat` runs of [`measure`]: one run
/// moved by ±3 µs/row on this shared machine.
async fn median(
    url: &str,
    store: &PgStore,
    rows: &[Event],
    grains: &[RollupGrain],
    added: &str,
    repeat: usize,
) -> anyhow::Result<Step> {
    let mut runs = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        runs.push(measure(url, store, rows, grains, added).await?);
    }
    runs.sort_by(|a, b| {
        a.postgres_cpu_us_per_row
            .total_cmp(&b.postgres_cpu_us_per_row)
    });
    Ok(runs.swap_remove(runs.len() / 2))
}

/// Empties the tables, checkpoints (so every step starts from the same state of the
/// WAL), then writes `rows` as the writer would and reads what that cost.
async fn measure(
    url: &str,
    store: &PgStore,
    rows: &[Event],
    grains: &[RollupGrain],
    added: &str,
) -> anyhow::Result<Step> {
    sqlx::query(
        "TRUNCATE events, event_rollups_minutely, event_rollups_hourly, event_rollups_daily",
    )
    .execute(store.pool())
    .await?;
    sqlx::query("CHECKPOINT").execute(store.pool()).await?;
    let shares = raw::writer_shares(rows, raw::CONNECTIONS);
    let mut connections = Vec::new();
    for _ in 0..shares.len() {
        let mut connection = PgConnection::connect(url).await?;
        disable_nagle(&mut connection).await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut connection)
            .await?;
        connections.push((connection, pid as u32));
    }
    let pids: Vec<u32> = connections.iter().map(|(_, pid)| *pid).collect();
    let backend_cpu = || {
        pids.iter()
            .copied()
            .map(pgstat::process_cpu_seconds)
            .sum::<f64>()
    };
    let mut probe = PgConnection::connect(url).await?;
    let (wal_before, backend_before, postgres_before) = (
        pgstat::wal_position(&mut probe).await?,
        backend_cpu(),
        pgstat::postgres_cpu_seconds(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for ((mut connection, _), share) in connections.into_iter().zip(shares) {
        let grains = grains.to_vec();
        tasks.push(tokio::spawn(async move {
            for group in &share {
                let mut transaction = connection.begin().await?;
                copy_events(&mut transaction, group.iter()).await?;
                upsert_rollups_into(&mut transaction, group.iter(), &grains).await?;
                transaction.commit().await?;
            }
            anyhow::Ok(connection)
        }));
    }
    let mut finished = Vec::new();
    for task in tasks {
        finished.push(task.await.context("write task")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (wal_after, backend_after, postgres_after) = (
        pgstat::wal_position(&mut probe).await?,
        backend_cpu(),
        pgstat::postgres_cpu_seconds(),
    );
    drop(finished);
    let per_row = |value: f64| value / rows.len().max(1) as f64;
    let step = Step {
        added: added.to_owned(),
        rows_per_second: rows.len() as f64 / elapsed.max(1e-9),
        backend_cpu_us_per_row: per_row((backend_after - backend_before) * 1e6),
        postgres_cpu_us_per_row: per_row((postgres_after - postgres_before) * 1e6),
        wal_bytes_per_row: per_row((wal_after - wal_before) as f64),
    };
    eprintln!(
        "{added}: {:.0} rows/s, {:.1} µs/row",
        step.rows_per_second, step.postgres_cpu_us_per_row
    );
    Ok(step)
}

impl WriteCostReport {
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
            return;
        }
        println!("PostgreSQL: {}", pgstat::settings_line(&self.settings));
        if let Some(note) = pgstat::advice(&self.settings) {
            println!("{note}");
        }
        println!();
        println!(
            "| write {} rows: COPY + rollups, groups of {}, {} connections (median of {}) | rows/s | PostgreSQL CPU µs/row (Δ) | of which writing sessions | WAL bytes/row |",
            self.rows, self.group_rows, self.connections, self.repeat
        );
        println!("| --- | ---: | ---: | ---: | ---: |");
        let mut previous: Option<f64> = None;
        for step in &self.steps {
            let delta = previous
                .map(|before| format!(" ({:+.1})", step.postgres_cpu_us_per_row - before))
                .unwrap_or_default();
            println!(
                "| {} | {:.0} | {:.1}{delta} | {:.1} | {:.0} |",
                step.added,
                step.rows_per_second,
                step.postgres_cpu_us_per_row,
                step.backend_cpu_us_per_row,
                step.wal_bytes_per_row
            );
            previous = Some(step.postgres_cpu_us_per_row);
        }
    }
}
