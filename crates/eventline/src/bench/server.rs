//! A server process the bench starts on a fresh database, and what it measures of it:
//! CPU time and peak resident memory, read from /proc.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

/// The bootstrap key of servers the bench starts.
pub(crate) const BENCH_API_KEY: &str = "elk_bench_bootstrap_key_0123456789abcdef";

/// A fresh database `eventline_bench_<suffix>` next to `admin_url`; returns its URL.
pub(crate) async fn fresh_database(admin_url: &str, suffix: &str) -> anyhow::Result<String> {
    let name = format!("eventline_bench_{suffix}");
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context("connect to --database-url")?;
    // The name is built here from a fixed prefix and a suffix the bench chooses.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    // The database name replaced, parameters (`?host=/run/postgresql`, `sslmode`) kept.
    let (base, parameters) = match admin_url.split_once('?') {
        Some((base, parameters)) => (base, format!("?{parameters}")),
        None => (admin_url, String::new()),
    };
    let base = base.rsplit_once('/').map(|(base, _)| base).unwrap_or(base);
    Ok(format!("{base}/{name}{parameters}"))
}

/// Drops the database `eventline_bench_<suffix>`.
pub(crate) async fn drop_database(admin_url: &str, suffix: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    // The name is built here from a fixed prefix and a suffix the bench chooses.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS eventline_bench_{suffix} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// Drops the databases `eventline_bench_<suffix>_*` a finished run created.
pub(crate) async fn drop_databases(admin_url: &str, suffix: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(format!("eventline\\_bench\\_{suffix}\\_%"))
            .fetch_all(&mut admin)
            .await?;
    for name in names {
        // Names come from pg_database and match the bench's own prefix.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
    }
    Ok(())
}

/// An `eventline serve` child process.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) grpc: String,
    pub(crate) http: String,
    pub(crate) metrics: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ServerProcess {
    /// Starts this binary's `serve` on `database_url` and waits until it answers.
    pub(crate) async fn start(database_url: &str) -> anyhow::Result<Self> {
        Self::start_with(database_url, &[]).await
    }

    /// Starts `serve` with extra `EVENTLINE_*` settings.
    pub(crate) async fn start_with(
        database_url: &str,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let (grpc_port, http_port, metrics_port) = (free_port()?, free_port()?, free_port()?);
        let child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .envs(settings.iter().map(|(name, value)| (name, value)))
            .env("EVENTLINE_DATABASE_URL", database_url)
            .env("EVENTLINE_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("EVENTLINE_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env(
                "EVENTLINE_METRICS_ADDR",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("EVENTLINE_BOOTSTRAP_API_KEY", BENCH_API_KEY)
            .env("EVENTLINE_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start eventline serve")?;
        let mut server = Self {
            child,
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            http: format!("http://127.0.0.1:{http_port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait()? {
                bail!("eventline serve exited with {status}");
            }
            if reqwest::get(format!("{}/readyz", server.http))
                .await
                .is_ok_and(|response| response.status().is_success())
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("eventline serve was not ready within 60 s")
    }

    /// Server-side (seconds, calls) of `rpc` (`QueryService/ListEvents`) so far, from /metrics.
    pub(crate) async fn server_time(&self, rpc: &str) -> (f64, f64) {
        self.histogram(
            "eventline_grpc_request_duration_seconds",
            &format!("rpc=\"{rpc}\""),
        )
        .await
    }

    /// (sum, count) of the histogram `name{labels}` so far, from /metrics; zeros if absent.
    pub(crate) async fn histogram(&self, name: &str, labels: &str) -> (f64, f64) {
        let Ok(response) = reqwest::get(&self.metrics).await else {
            return (0.0, 0.0);
        };
        let text = response.text().await.unwrap_or_default();
        let value = |suffix: &str| {
            let series = if labels.is_empty() {
                format!("{name}_{suffix} ")
            } else {
                format!("{name}_{suffix}{{{labels}}} ")
            };
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (value("sum"), value("count"))
    }

    /// CPU seconds (user + system) the server has used.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        super::pgstat::process_cpu_seconds(self.child.id())
    }

    /// Peak resident set size in MiB (VmHWM).
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Current resident set size in MiB (VmRSS).
    pub(crate) fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status_mib(&self, field: &str) -> f64 {
        status_mib(self.child.id(), field)
    }
}

/// Current resident set size of process `pid` in MiB (VmRSS).
pub(crate) fn rss_mib_of(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}
