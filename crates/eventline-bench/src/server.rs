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

/// The admin token of servers the bench starts, for the tenants of `--tenants`.
pub(crate) const BENCH_ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// `admin_url` with its database replaced by `name`, its parameters
/// (`?host=/run/postgresql`, `sslmode`) kept.
pub(crate) fn database_url(admin_url: &str, name: &str) -> String {
    let (base, parameters) = match admin_url.split_once('?') {
        Some((base, parameters)) => (base, format!("?{parameters}")),
        None => (admin_url, String::new()),
    };
    let base = base.rsplit_once('/').map(|(base, _)| base).unwrap_or(base);
    format!("{base}/{name}{parameters}")
}

/// A fresh database `eventline_bench_<suffix>` next to `admin_url`; returns its URL. When
/// `admin_url`'s database has Citus with workers registered (README "Scale out"), the
/// database is made on every node with the extension and the workers, so the server's
/// migration distributes it.
pub(crate) async fn fresh_database(admin_url: &str, suffix: &str) -> anyhow::Result<String> {
    let name = format!("eventline_bench_{suffix}");
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context("connect to --database-url")?;
    let nodes = propagate_database_commands(&mut admin).await?;
    // The name is built here from a fixed prefix and a suffix the bench chooses.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let url = database_url(admin_url, &name);
    if let Some(nodes) = nodes {
        join_citus_nodes(admin_url, &name, &nodes).await?;
    }
    Ok(url)
}

/// A node of a Citus cluster, as the coordinator's `pg_dist_node` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CitusNode {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) coordinator: bool,
}

impl std::fmt::Display for CitusNode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}", self.host, self.port)
    }
}

/// The nodes of the Citus cluster `connection`'s database belongs to, coordinator first;
/// `None` when the database has no Citus or no workers.
pub(crate) async fn citus_nodes(
    connection: &mut PgConnection,
) -> anyhow::Result<Option<Vec<CitusNode>>> {
    let citus: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
            .fetch_one(&mut *connection)
            .await?;
    if !citus {
        return Ok(None);
    }
    let rows: Vec<(String, i32, i32)> = sqlx::query_as(
        "SELECT nodename, nodeport, groupid FROM pg_dist_node
         WHERE noderole = 'primary' ORDER BY groupid",
    )
    .fetch_all(&mut *connection)
    .await?;
    let nodes: Vec<CitusNode> = rows
        .into_iter()
        .map(|(host, port, group)| CitusNode {
            host,
            port: port as u16,
            coordinator: group == 0,
        })
        .collect();
    Ok((nodes.first().is_some_and(|node| node.coordinator) && nodes.len() > 1).then_some(nodes))
}

/// Creates the citus extension in `database` on every node and registers the workers, as
/// README "Scale out" tells an operator to.
async fn join_citus_nodes(
    admin_url: &str,
    database: &str,
    nodes: &[CitusNode],
) -> anyhow::Result<()> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(admin_url)?.database(database);
    for node in nodes {
        let mut connection =
            PgConnection::connect_with(&options.clone().host(&node.host).port(node.port))
                .await
                .with_context(|| format!("connect to Citus node {node}"))?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS citus")
            .execute(&mut connection)
            .await?;
    }
    let mut coordinator = PgConnection::connect_with(&options).await?;
    for node in nodes {
        let register = if node.coordinator {
            "SELECT citus_set_coordinator_host($1, $2)"
        } else {
            "SELECT citus_add_node($1, $2)"
        };
        sqlx::query(register)
            .bind(&node.host)
            .bind(i32::from(node.port))
            .execute(&mut coordinator)
            .await?;
    }
    Ok(())
}

/// Drops the database `eventline_bench_<suffix>` (on every Citus node, when on Citus).
pub(crate) async fn drop_database(admin_url: &str, suffix: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    propagate_database_commands(&mut admin).await?;
    // The name is built here from a fixed prefix and a suffix the bench chooses.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS eventline_bench_{suffix} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// On a Citus coordinator, makes CREATE and DROP DATABASE reach the workers too, and
/// returns the cluster's nodes; `None` elsewhere.
async fn propagate_database_commands(
    admin: &mut PgConnection,
) -> anyhow::Result<Option<Vec<CitusNode>>> {
    let nodes = citus_nodes(admin).await?;
    if nodes.is_some() {
        sqlx::query("SET citus.enable_create_database_propagation = on")
            .execute(&mut *admin)
            .await?;
    }
    Ok(nodes)
}

/// Drops the databases `eventline_bench_<suffix>_*` a finished run created.
pub(crate) async fn drop_databases(admin_url: &str, suffix: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    propagate_database_commands(&mut admin).await?;
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
            .env("EVENTLINE_ADMIN_TOKEN", BENCH_ADMIN_TOKEN)
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

    /// Creates tenant `name` with an ingest key through the REST admin API; returns the
    /// key's secret.
    /// Turns search on for every tenant, so the server's indexer runs beside the load.
    pub(crate) async fn enable_search(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let tenants: serde_json::Value = client
            .get(format!("{}/v1/tenants", self.http))
            .bearer_auth(BENCH_ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()
            .context("list the bench tenants")?
            .json()
            .await?;
        for tenant in tenants["tenants"].as_array().into_iter().flatten() {
            let tenant_id = tenant["tenant_id"]
                .as_str()
                .context("a tenant without id")?;
            client
                .put(format!("{}/v1/tenants/{tenant_id}/search-index", self.http))
                .bearer_auth(BENCH_ADMIN_TOKEN)
                .json(&serde_json::json!({ "enabled": true }))
                .send()
                .await?
                .error_for_status()
                .context("turn search on")?;
        }
        Ok(())
    }

    pub(crate) async fn create_tenant_key(&self, name: &str) -> anyhow::Result<String> {
        let client = reqwest::Client::new();
        let tenant: serde_json::Value = client
            .post(format!("{}/v1/tenants", self.http))
            .bearer_auth(BENCH_ADMIN_TOKEN)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await?
            .error_for_status()
            .context("create a bench tenant")?
            .json()
            .await?;
        let tenant_id = tenant["tenant"]["tenant_id"]
            .as_str()
            .with_context(|| format!("CreateTenant answered no tenant id: {tenant}"))?;
        let key: serde_json::Value = client
            .post(format!("{}/v1/tenants/{tenant_id}/keys", self.http))
            .bearer_auth(BENCH_ADMIN_TOKEN)
            .json(&serde_json::json!({ "scopes": ["SCOPE_INGEST"] }))
            .send()
            .await?
            .error_for_status()
            .context("create a bench tenant's key")?
            .json()
            .await?;
        Ok(key["secret"]
            .as_str()
            .context("CreateApiKey answered no secret")?
            .to_owned())
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
        let text = self.scrape().await;
        let value = |suffix: &str| {
            let series = if labels.is_empty() {
                format!("{name}_{suffix}")
            } else {
                format!("{name}_{suffix}{{{labels}}}")
            };
            series_value(&text, &series)
        };
        (value("sum"), value("count"))
    }

    /// The value of the unlabelled counter or gauge `name` now; zero if absent.
    pub(crate) async fn counter(&self, name: &str) -> f64 {
        series_value(&self.scrape().await, name)
    }

    async fn scrape(&self) -> String {
        match reqwest::get(&self.metrics).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
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

/// The value of `series` (a name with its labels) in a /metrics text; zero if absent.
fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}
