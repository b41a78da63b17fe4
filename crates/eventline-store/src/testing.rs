//! Test harness: fresh databases for every test. PostgreSQL comes from `DATABASE_URL`
//! when it is set, else from a throwaway cluster started from the local PostgreSQL
//! binaries and shared by every test process of the run. Neither available is a panic
//! with the reason, never a skip.
//!
//! With `EVENTLINE_TEST_CITUS=1` (`scripts/test-citus`), every PostgreSQL test runs on a
//! three-node Citus cluster instead (a coordinator and two workers, started once per run
//! from the installed extension); Citus missing is a panic, never a fallback.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use crate::{postgres::PgStore, sqlite::SqliteStore};

const CLUSTER_PORT: u16 = 55_439;

/// A fresh, migrated PostgreSQL store on its own database.
pub async fn fresh_pg_store() -> PgStore {
    let url = fresh_postgres_database().await;
    let store = PgStore::connect(&url, 4)
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    store
}

/// A fresh, migrated SQLite store in a temporary directory (kept alive by the guard).
pub async fn fresh_sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let store = SqliteStore::open_dir(directory.path())
        .await
        .expect("open sqlite store");
    store.migrate().await.expect("migrate sqlite store");
    (store, directory)
}

/// Creates an empty database named `eventline_test_<uuid>` and returns its URL. On the
/// Citus test cluster the database exists on every node, with the extension and the
/// workers registered, as README "Scale out" asks of an operator.
pub async fn fresh_postgres_database() -> String {
    let (name, url) = fresh_database_on_every_node().await;
    if citus_requested() {
        enable_citus(&name).await;
    }
    url
}

/// Creates an empty database, on every node of the Citus test cluster when that runs,
/// and returns its name and URL (the coordinator's).
pub async fn fresh_database_on_every_node() -> (String, String) {
    let name = format!("eventline_test_{}", uuid::Uuid::new_v4().simple());
    let admin_url = postgres_admin_url();
    let mut servers = vec![admin_url.to_owned()];
    if citus_requested() {
        servers.extend(
            CITUS_PORTS[1..]
                .iter()
                .map(|port| citus_node_url(*port, "postgres")),
        );
    }
    for server in servers {
        // The name is generated here from a UUID, never from input.
        execute_on(&server, &format!("CREATE DATABASE {name}")).await;
    }
    let url = with_database(admin_url, &name);
    (name, url)
}

fn citus_node_url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

/// Runs one statement on its own connection to `url`, panicking with the reason.
async fn execute_on(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to test PostgreSQL at {url}: {error}"));
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("{sql} on {url}: {error}"));
    let _ = connection.close().await;
}

/// The URL of a PostgreSQL server tests may create databases on: the Citus test
/// cluster's coordinator when `EVENTLINE_TEST_CITUS=1`.
pub fn postgres_admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if citus_requested() {
            return start_citus_cluster();
        }
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => start_throwaway_cluster(),
        }
    })
}

/// Whether this run's PostgreSQL tests run on the three-node Citus cluster.
pub fn citus_requested() -> bool {
    std::env::var("EVENTLINE_TEST_CITUS").is_ok_and(|value| value == "1")
}

/// The ports of the Citus test cluster: coordinator first. Outside the kernel's
/// ephemeral range, and clear of 61500–61502, where README "Scale out" starts one.
pub const CITUS_PORTS: [u16; 3] = [61_510, 61_511, 61_512];

/// Starts (once per machine and run) a coordinator and two workers with Citus preloaded
/// and returns the coordinator's URL. Panics, with the fix, when Citus is not installed.
fn start_citus_cluster() -> String {
    let bin_dir = find_postgres_bin_dir()
        .expect("initdb and pg_ctl are required: install PostgreSQL's server binaries");
    let library_dir = Command::new(bin_dir.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        .unwrap_or_else(|| bin_dir.join("../lib"));
    assert!(
        library_dir.join("citus.so").exists(),
        "EVENTLINE_TEST_CITUS=1 but Citus is not installed ({} has no citus.so): install the \
         citus extension for this PostgreSQL (README \"Scale out\")",
        library_dir.display()
    );
    let root = std::env::temp_dir().join("eventline-test-citus");
    std::fs::create_dir_all(&root).expect("create Citus cluster dir");
    let lock_file = std::fs::File::create(root.join("lock")).expect("create cluster lock");
    lock_file.lock().expect("lock Citus cluster dir");
    for port in CITUS_PORTS {
        // Two-phase commit across workers needs prepared transactions; the connection
        // cache is README "Scale out"'s; four shards per table keep a test database's
        // creation quick and still spread tenants.
        let options = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c max_connections=300 -c max_prepared_transactions=300 \
             -c citus.max_cached_conns_per_worker=8 \
             -c shared_preload_libraries=citus -c citus.shard_count=4",
            root.display()
        );
        start_shared_node(&root, &bin_dir, &format!("node-{port}"), &options);
    }
    format!("postgres://postgres@127.0.0.1:{}/postgres", CITUS_PORTS[0])
}

/// Turns `database` (on every node) into a Citus database as README "Scale out" tells an
/// operator: the extension on every node, the coordinator's host and the workers
/// registered (node metadata is per database).
pub async fn enable_citus(database: &str) {
    for port in CITUS_PORTS {
        execute_on(
            &citus_node_url(port, database),
            "CREATE EXTENSION IF NOT EXISTS citus",
        )
        .await;
    }
    let coordinator = citus_node_url(CITUS_PORTS[0], database);
    execute_on(
        &coordinator,
        &format!(
            "SELECT citus_set_coordinator_host('127.0.0.1', {})",
            CITUS_PORTS[0]
        ),
    )
    .await;
    // The router-query check: Citus fails any statement planned over more than one
    // shard, so every test on this cluster proves the store's statements are router
    // queries. The store opts its one named cross-tenant listing out (README
    // "Scale out").
    execute_on(
        &coordinator,
        &format!("ALTER DATABASE {database} SET citus.multi_task_query_log_level = 'error'"),
    )
    .await;
    for port in &CITUS_PORTS[1..] {
        add_citus_node(&coordinator, *port).await;
    }
}

/// Registers the worker on `port` with the coordinator at `url`. The coordinator's first
/// connection to a worker's new database now and then fails ("failure on connection
/// marked as essential"): tried again a few times before the test fails on it.
async fn add_citus_node(url: &str, port: u16) {
    use sqlx::Connection;
    let sql = format!("SELECT citus_add_node('127.0.0.1', {port})");
    for attempt in 1.. {
        let mut connection = sqlx::PgConnection::connect(url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to test PostgreSQL at {url}: {error}"));
        let added = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut connection)
            .await;
        let _ = connection.close().await;
        match added {
            Ok(_) => return,
            Err(error) if attempt < 5 => {
                eprintln!("{sql} on {url}: {error}; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(error) => panic!("{sql} on {url}: {error}"),
        }
    }
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_end = base.find("://").map(|scheme| scheme + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    format!("{base}/{database}{query}")
}

/// Starts (once per machine and run) a cluster in the temp dir and returns its URL.
fn start_throwaway_cluster() -> String {
    let bin_dir = find_postgres_bin_dir().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL for tests: DATABASE_URL is unset and no initdb/pg_ctl was found \
             in /usr/lib/postgresql/*/bin or PATH; set DATABASE_URL or install PostgreSQL"
        )
    });
    let root = std::env::temp_dir().join(format!("eventline-test-pg-{CLUSTER_PORT}"));
    std::fs::create_dir_all(&root).expect("create cluster dir");
    // Every test process of the run shares one cluster; the lock makes one of them start it.
    let lock_file = std::fs::File::create(root.join("lock")).expect("create cluster lock");
    lock_file.lock().expect("lock cluster dir");
    let options = format!(
        "-k {} -p {CLUSTER_PORT} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
        root.display()
    );
    start_shared_node(&root, &bin_dir, "data", &options);
    format!("postgres://postgres@127.0.0.1:{CLUSTER_PORT}/postgres")
}

/// Makes the node in `root`/`name` (initdb the first time) run with `options`, unless it
/// runs already: another test process of the run started it. Its log is `name`.log.
fn start_shared_node(root: &Path, bin_dir: &Path, name: &str, options: &str) {
    let data_dir = root.join(name);
    if !data_dir.join("PG_VERSION").exists() {
        run_as_postgres(
            root,
            &bin_dir.join("initdb"),
            &["-D", path_str(&data_dir), "-U", "postgres", "-A", "trust"],
        );
    }
    let running = as_postgres_command(
        root,
        &bin_dir.join("pg_ctl"),
        &["-D", path_str(&data_dir), "status"],
    )
    .status()
    .is_ok_and(|status| status.success());
    if running {
        return;
    }
    let log = root.join(format!("{name}.log"));
    run_as_postgres(
        root,
        &bin_dir.join("pg_ctl"),
        &[
            "-D",
            path_str(&data_dir),
            "-w",
            "-l",
            path_str(&log),
            "-o",
            options,
            "start",
        ],
    );
}

/// A PostgreSQL cluster of one test's own, which the test may crash and restart
/// (`pg_ctl restart -m immediate`); stopped and deleted when dropped.
#[derive(Debug)]
pub struct OwnCluster {
    root: tempfile::TempDir,
    bin_dir: PathBuf,
    port: u16,
}

impl OwnCluster {
    /// initdb and start a cluster on `port` (pick one outside the ephemeral range).
    pub fn start(port: u16) -> Self {
        let bin_dir = find_postgres_bin_dir()
            .expect("initdb and pg_ctl are required: install PostgreSQL's server binaries");
        let root = tempfile::Builder::new()
            .prefix("eventline-own-pg-")
            .tempdir()
            .expect("create cluster dir");
        let cluster = Self {
            root,
            bin_dir,
            port,
        };
        let data_dir = cluster.data_dir();
        run_as_postgres(
            cluster.root.path(),
            &cluster.bin_dir.join("initdb"),
            &["-D", path_str(&data_dir), "-U", "postgres", "-A", "trust"],
        );
        cluster.pg_ctl(&["start"]);
        cluster
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of `database` on this cluster.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A streaming replica of this cluster on `port`, as an operator makes one:
    /// `pg_basebackup -R` (a base backup with `standby.signal` and the primary's
    /// conninfo), then started as a hot standby; stopped and deleted when dropped.
    pub fn start_replica(&self, port: u16) -> Self {
        let root = tempfile::Builder::new()
            .prefix("eventline-own-replica-")
            .tempdir()
            .expect("create replica dir");
        let replica = Self {
            root,
            bin_dir: self.bin_dir.clone(),
            port,
        };
        let data_dir = replica.data_dir();
        let primary_port = self.port.to_string();
        run_as_postgres(
            replica.root.path(),
            &self.bin_dir.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port,
                "-U",
                "postgres",
                "-D",
                path_str(&data_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        replica.pg_ctl(&["start"]);
        replica
    }

    /// Crashes the cluster (no checkpoint, as a power cut would) and starts it again.
    pub fn restart_immediately(&self) {
        self.pg_ctl(&["restart", "-m", "immediate"]);
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1",
            self.root.path().display(),
            self.port
        );
        let data_dir = self.data_dir();
        let log = self.root.path().join("log");
        let mut args = vec![
            "-D",
            path_str(&data_dir),
            "-w",
            "-l",
            path_str(&log),
            "-o",
            &options,
        ];
        args.extend_from_slice(action);
        run_as_postgres(self.root.path(), &self.bin_dir.join("pg_ctl"), &args);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let data_dir = self.data_dir();
        let _ = as_postgres_command(
            self.root.path(),
            &self.bin_dir.join("pg_ctl"),
            &["-D", path_str(&data_dir), "-m", "immediate", "stop"],
        )
        .output();
    }
}

fn find_postgres_bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    candidates.sort();
    candidates.reverse();
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| out.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// initdb refuses to run as root: run the cluster as the `postgres` user then.
fn as_postgres_command(root: &Path, program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let _ = Command::new("chown")
            .args(["-R", "postgres", path_str(root)])
            .status();
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

fn run_as_postgres(root: &Path, program: &Path, args: &[&str]) {
    let output = as_postgres_command(root, program, args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    assert!(
        output.status.success(),
        "{} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The events a tenant has stored in `[start, end)`, counted row by row from a listing:
/// the ground truth the store's own `count` (rollups included) is checked against.
pub async fn stored_events(
    store: &dyn crate::Store,
    tenant_id: eventline_core::TenantId,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> u64 {
    use eventline_core::query::{EventFilter, EventQuery, Order, Position};
    let mut query = EventQuery {
        tenant_id,
        filter: EventFilter::default(),
        start,
        end,
        order: Order::OldestFirst,
        after: None,
        committed_before: None,
        limit: 10_000,
    };
    let mut stored = 0;
    loop {
        let page = store.list_events(&query).await.expect("list events");
        stored += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == query.limit => query.after = Some(Position::of(last)),
            _ => return stored,
        }
    }
}

/// Polls the horizon until `expected` of `query`'s events lie below it (5 s at most), and
/// returns that horizon and the page read under it. On PostgreSQL the horizon is the
/// oldest running transaction of the whole cluster (on Citus, of the tenant's worker), so
/// other work can hold it back for a moment.
pub async fn horizon_covering(
    store: &dyn crate::Store,
    query: &eventline_core::query::CommittedQuery,
    expected: usize,
) -> (u64, Vec<(u64, eventline_core::Event)>) {
    use eventline_core::query::CommittedQuery;
    for _ in 0..500 {
        let horizon = store
            .commit_horizon(query.tenant_id)
            .await
            .expect("commit horizon");
        let page = store
            .list_committed(&CommittedQuery {
                horizon,
                ..query.clone()
            })
            .await
            .expect("list committed events");
        if page.len() >= expected {
            return (horizon, page);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the commit horizon never passed {expected} committed events");
}

/// What the store's `count` answers for a tenant's `[start, end)`, all types; on
/// aligned windows it comes from the rollups.
pub async fn counted_events(
    store: &dyn crate::Store,
    tenant_id: eventline_core::TenantId,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> u64 {
    let query = eventline_core::query::CountQuery::total(tenant_id, start, end);
    let rows = store.count(&query).await.expect("count events");
    rows.iter().map(|row| row.count).sum()
}

/// Expands each named case, an `async fn(Arc<dyn Store>)` of the calling test file, into
/// one `#[tokio::test]` per store: `sqlite::case` and `postgres::case`, each on a fresh
/// database (the conformance suites in `tests/`).
#[macro_export]
macro_rules! conformance_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _directory) = eventline_store::testing::fresh_sqlite_store().await;
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = eventline_store::testing::fresh_pg_store().await;
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5/postgres?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    }
}
