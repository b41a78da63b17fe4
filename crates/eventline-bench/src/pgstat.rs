//! What the bench reads of the PostgreSQL it runs against: the settings that decide write
//! speed, CPU time of its processes, WAL volume and fsyncs, and the wait events of the
//! writer's sessions while a run is going.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{Connection, PgConnection};

/// The settings README "Performance" found to matter for ingest, and the durability ones.
const SETTINGS: &[&str] = &[
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "wal_compression",
    "wal_buffers",
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "commit_delay",
];

/// `name = value` of each setting in [`SETTINGS`], as `SHOW` prints them.
pub(crate) async fn settings(url: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut connection = PgConnection::connect(url).await?;
    let mut values = Vec::new();
    for name in SETTINGS {
        let value: String = sqlx::query_scalar("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&mut connection)
            .await?;
        values.push(((*name).to_owned(), value));
    }
    Ok(values)
}

/// One line: `shared_buffers=128MB, max_wal_size=1GB, …`.
pub(crate) fn settings_line(settings: &[(String, String)]) -> String {
    settings
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A note when a setting README "Performance" found to matter is below what it measured
/// with: at wal_buffers 4MB (the default with 128MB of shared_buffers) the writer's
/// sessions waited on each other to write WAL and ingest ran at three quarters the rate.
pub(crate) fn advice(settings: &[(String, String)]) -> Option<String> {
    let (_, wal_buffers) = settings.iter().find(|(name, _)| name == "wal_buffers")?;
    let digits: String = wal_buffers
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let kib = digits.parse::<u64>().ok()?
        * match &wal_buffers[digits.len()..] {
            "kB" => 1,
            "MB" => 1024,
            "GB" => 1024 * 1024,
            _ => return None,
        };
    (kib < 16 * 1024).then(|| {
        format!(
            "note: wal_buffers is {wal_buffers}; README \"Performance\" recommends 16MB (ALTER SYSTEM SET wal_buffers = '16MB', then restart)"
        )
    })
}

/// CPU seconds (user + system) process `pid` has used; 0 when it cannot be read.
pub(crate) fn process_cpu_seconds(pid: u32) -> f64 {
    stat_seconds(pid, [11, 12])
}

/// CPU seconds of the children of `pid` that exited and it waited for (a postmaster's
/// finished backends); 0 when it cannot be read.
pub(crate) fn reaped_children_cpu_seconds(pid: u32) -> f64 {
    stat_seconds(pid, [13, 14])
}

/// The sum of two tick counters of /proc/`pid`/stat, counted after the command name
/// (utime and stime are 11 and 12 there, cutime and cstime 13 and 14), in seconds.
fn stat_seconds(pid: u32, counters: [usize; 2]) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name (14 and 15 of proc(5) are 11 and 12).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // /proc reports in USER_HZ, which Linux fixes at 100.
    (ticks(counters[0]) + ticks(counters[1])) / 100.0
}

/// CPU seconds of every `postgres` process on this machine: backends, WAL writer,
/// checkpointer, autovacuum. The bench and PostgreSQL share the machine (README
/// "Performance"); on another host this reads 0.
pub(crate) fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .map(process_cpu_seconds)
        .sum()
}

/// The server's current WAL insert position, in bytes.
pub(crate) async fn wal_position(connection: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
            .fetch_one(connection)
            .await?,
    )
}

/// Cumulative WAL fsyncs and their time (ms; 0 unless `track_wal_io_timing` is on) of
/// the whole cluster, from `pg_stat_wal`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WalSyncs {
    pub(crate) syncs: f64,
    pub(crate) sync_ms: f64,
}

impl WalSyncs {
    pub(crate) async fn read(url: &str) -> anyhow::Result<Self> {
        let mut connection = PgConnection::connect(url).await?;
        let (syncs, sync_ms): (i64, f64) =
            sqlx::query_as("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")
                .fetch_one(&mut connection)
                .await?;
        Ok(Self {
            syncs: syncs as f64,
            sync_ms,
        })
    }

    /// What happened between `self` and `later`.
    pub(crate) fn until(self, later: Self) -> Self {
        Self {
            syncs: later.syncs - self.syncs,
            sync_ms: later.sync_ms - self.sync_ms,
        }
    }
}

/// Wait events of the sessions in one database, sampled every 50 ms while it runs:
/// how often a writer session was running, waiting on another's row lock, or on WAL.
#[derive(Debug)]
pub(crate) struct WaitSampler {
    task: tokio::task::JoinHandle<()>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// Share of the sampled active sessions per wait event (`CPU` when not waiting).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct WaitProfile {
    pub(crate) samples: u64,
    /// (wait, share of samples), largest first.
    pub(crate) shares: Vec<(String, f64)>,
}

impl WaitSampler {
    /// Starts sampling the active sessions of `database` through `url`.
    pub(crate) async fn start(url: &str, database: &str) -> anyhow::Result<Self> {
        let mut connection = PgConnection::connect(url).await?;
        let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let (database, sink) = (database.to_owned(), Arc::clone(&counts));
        let task = tokio::spawn(async move {
            loop {
                let rows: Result<Vec<(String,)>, _> = sqlx::query_as(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
                     FROM pg_stat_activity
                     WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()
                       AND backend_type = 'client backend'",
                )
                .bind(&database)
                .fetch_all(&mut connection)
                .await;
                if let Ok(rows) = rows {
                    let mut counts = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    for (wait,) in rows {
                        *counts.entry(wait).or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(Self { task, counts })
    }

    /// Stops sampling and returns the profile.
    pub(crate) fn finish(self) -> WaitProfile {
        self.task.abort();
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let samples: u64 = counts.values().sum();
        let mut shares: Vec<(String, f64)> = counts
            .into_iter()
            .map(|(wait, count)| (wait, count as f64 / samples.max(1) as f64))
            .collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        WaitProfile { samples, shares }
    }
}

impl WaitProfile {
    /// Share of samples waiting on another session's lock (`Lock:*`).
    pub(crate) fn lock_share(&self) -> f64 {
        self.shares
            .iter()
            .filter(|(wait, _)| wait.starts_with("Lock:"))
            .map(|(_, share)| share)
            .sum()
    }

    /// `CPU 61 %, IO:WALSync 30 %, …` (the five largest).
    pub(crate) fn line(&self) -> String {
        self.shares
            .iter()
            .take(5)
            .map(|(wait, share)| format!("{wait} {:.0} %", share * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
