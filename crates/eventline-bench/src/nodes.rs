//! Where an ingest run's load went on PostgreSQL (README "Scale out"): each node's CPU
//! (its postmaster and every process it started, read from /proc, so the nodes must run
//! on this machine) and the rows, tenants and bytes each node holds. One node on a single
//! PostgreSQL; the coordinator and every worker on Citus.

use anyhow::Context;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

use super::{
    pgstat,
    server::{self, CitusNode},
};

/// A node being watched: its postmaster and its CPU seconds at the start.
struct Watched {
    node: CitusNode,
    postmaster: Option<u32>,
    cpu_before: f64,
}

/// Started before the ingest, finished after it.
pub(crate) struct NodeProbe {
    database_url: String,
    citus: bool,
    nodes: Vec<Watched>,
}

/// One node's share of a run.
#[derive(Debug, serde::Serialize)]
pub(crate) struct NodeShare {
    pub(crate) node: String,
    /// `single` (one PostgreSQL), `coordinator` or `worker`.
    pub(crate) role: &'static str,
    /// Events stored on the node (0 on a Citus coordinator, which holds none).
    pub(crate) rows: u64,
    /// Distinct tenants among them.
    pub(crate) tenants: u64,
    /// Bytes of the event tables and their indexes on the node (shards on Citus).
    pub(crate) bytes: u64,
    /// CPU seconds of all the node's processes during the run; `None` when /proc does not
    /// show them (the node runs on another host).
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) cpu_microseconds_per_event: Option<f64>,
}

impl NodeProbe {
    /// Watches the node of `database_url`, or every node of its Citus cluster.
    pub(crate) async fn start(database_url: &str) -> anyhow::Result<Self> {
        let mut connection = PgConnection::connect(database_url).await?;
        let (citus, nodes) = match server::citus_nodes(&mut connection).await? {
            Some(nodes) => (true, nodes),
            None => {
                let options: PgConnectOptions = database_url.parse()?;
                let node = CitusNode {
                    host: options.get_host().to_owned(),
                    port: options.get_port(),
                    coordinator: false,
                };
                (false, vec![node])
            }
        };
        let mut watched = Vec::with_capacity(nodes.len());
        for node in nodes {
            let postmaster = postmaster_of(database_url, &node).await?;
            let cpu_before = postmaster.map(node_cpu_seconds).unwrap_or(0.0);
            watched.push(Watched {
                node,
                postmaster,
                cpu_before,
            });
        }
        Ok(Self {
            database_url: database_url.to_owned(),
            citus,
            nodes: watched,
        })
    }

    /// Each node's CPU since the start, and what it holds.
    pub(crate) async fn finish(self, events: usize) -> anyhow::Result<Vec<NodeShare>> {
        let cpu: Vec<Option<f64>> = self
            .nodes
            .iter()
            .map(|watched| {
                watched
                    .postmaster
                    .map(|pid| (node_cpu_seconds(pid) - watched.cpu_before).max(0.0))
            })
            .collect();
        let mut connection = PgConnection::connect(&self.database_url).await?;
        let held = if self.citus {
            held_per_worker(&mut connection).await?
        } else {
            let (rows, tenants, bytes): (i64, i64, i64) = sqlx::query_as(
                "SELECT count(*), count(DISTINCT tenant_id),
                        (SELECT sum(pg_total_relation_size(relname::regclass))::bigint
                         FROM unnest(ARRAY['events', 'event_rollups_minutely',
                                           'event_rollups_hourly', 'event_rollups_daily'])
                              AS t (relname))
                 FROM events",
            )
            .fetch_one(&mut connection)
            .await?;
            let node = &self.nodes[0].node;
            vec![(
                node.host.clone(),
                i32::from(node.port),
                rows,
                tenants,
                bytes,
            )]
        };
        Ok(self
            .nodes
            .into_iter()
            .zip(cpu)
            .map(|(watched, cpu_seconds)| {
                let (rows, tenants, bytes) = held
                    .iter()
                    .find(|(host, port, ..)| {
                        *host == watched.node.host && *port == i32::from(watched.node.port)
                    })
                    .map_or((0, 0, 0), |(_, _, rows, tenants, bytes)| {
                        (*rows as u64, *tenants as u64, *bytes as u64)
                    });
                NodeShare {
                    node: watched.node.to_string(),
                    role: match (self.citus, watched.node.coordinator) {
                        (false, _) => "single",
                        (true, true) => "coordinator",
                        (true, false) => "worker",
                    },
                    rows,
                    tenants,
                    bytes,
                    cpu_seconds,
                    cpu_microseconds_per_event: cpu_seconds
                        .map(|seconds| seconds * 1e6 / events.max(1) as f64),
                }
            })
            .collect())
    }
}

/// (host, port, rows, tenants, bytes) of each Citus worker holding event shards.
async fn held_per_worker(
    connection: &mut PgConnection,
) -> anyhow::Result<Vec<(String, i32, i64, i64, i64)>> {
    let counted: Vec<(String, i32, i64, i64)> = sqlx::query_as(
        "SELECT s.nodename, s.nodeport, sum(r.result::bigint)::bigint,
                sum(t.result::bigint)::bigint
         FROM run_command_on_shards('events', 'SELECT count(*) FROM %s') r
         JOIN run_command_on_shards('events', 'SELECT count(DISTINCT tenant_id) FROM %s') t
           USING (shardid)
         JOIN citus_shards s USING (shardid)
         GROUP BY 1, 2",
    )
    .fetch_all(&mut *connection)
    .await
    .context("count the rows on each worker")?;
    let sizes: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT nodename, nodeport, sum(shard_size)::bigint FROM citus_shards
         WHERE citus_table_type = 'distributed'
           AND table_name::text IN ('events', 'event_rollups_minutely',
                                    'event_rollups_hourly', 'event_rollups_daily')
         GROUP BY 1, 2",
    )
    .fetch_all(&mut *connection)
    .await
    .context("size the shards on each worker")?;
    Ok(counted
        .into_iter()
        .map(|(host, port, rows, tenants)| {
            let bytes = sizes
                .iter()
                .find(|(size_host, size_port, _)| *size_host == host && *size_port == port)
                .map_or(0, |(_, _, bytes)| *bytes);
            (host, port, rows, tenants, bytes)
        })
        .collect())
}

/// The postmaster of `node`: the parent of the backend that answers there. `None` when
/// /proc does not show that backend (the node is on another host).
async fn postmaster_of(database_url: &str, node: &CitusNode) -> anyhow::Result<Option<u32>> {
    let options = database_url
        .parse::<PgConnectOptions>()?
        .host(&node.host)
        .port(node.port);
    let mut connection = PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("connect to PostgreSQL node {node}"))?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut connection)
        .await?;
    Ok(parent_of(backend as u32))
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name: state, then the parent pid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds of a postmaster and every process it started (backends, WAL writer,
/// checkpointer, autovacuum, Citus' maintenance daemon), those that have exited included:
/// Citus closes the extra connections of a transaction to a worker once it ends.
fn node_cpu_seconds(postmaster: u32) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let children: f64 = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(postmaster))
        .map(pgstat::process_cpu_seconds)
        .sum();
    children
        + pgstat::process_cpu_seconds(postmaster)
        + pgstat::reaped_children_cpu_seconds(postmaster)
}
