//! Where an ingest run's load went on a Citus cluster (README "Scale out"): each node's
//! CPU (its postmaster and every process it started, read from /proc, so the cluster must
//! run on this machine) and the rows and tenants each worker's shards hold.

use anyhow::Context;
use sqlx::{Connection, PgConnection};

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

/// Started before the ingest on a Citus database, finished after it.
pub(crate) struct CitusProbe {
    database_url: String,
    nodes: Vec<Watched>,
}

/// One node's share of a run.
#[derive(Debug, serde::Serialize)]
pub(crate) struct NodeShare {
    pub(crate) node: String,
    pub(crate) role: &'static str,
    /// Events stored on the node's shards (0 on the coordinator, which holds none).
    pub(crate) rows: u64,
    /// Distinct tenants among them.
    pub(crate) tenants: u64,
    /// Bytes of every eventline shard on the node (tables and indexes).
    pub(crate) shard_bytes: u64,
    /// CPU seconds of all the node's processes during the run; `None` when /proc does not
    /// show them (the node runs on another host).
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) cpu_microseconds_per_event: Option<f64>,
}

impl CitusProbe {
    /// Watches the cluster of `database_url` when that database has Citus; `None` otherwise.
    pub(crate) async fn start(database_url: &str) -> anyhow::Result<Option<Self>> {
        let mut connection = PgConnection::connect(database_url).await?;
        let Some(nodes) = server::citus_nodes(&mut connection).await? else {
            return Ok(None);
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
        Ok(Some(Self {
            database_url: database_url.to_owned(),
            nodes: watched,
        }))
    }

    /// Each node's CPU since the start, and the rows and tenants on its shards.
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
        let placed: Vec<(String, i32, i64, i64)> = sqlx::query_as(
            "SELECT s.nodename, s.nodeport, sum(r.result::bigint)::bigint,
                    sum(t.result::bigint)::bigint
             FROM run_command_on_shards('events', 'SELECT count(*) FROM %s') r
             JOIN run_command_on_shards('events', 'SELECT count(DISTINCT tenant_id) FROM %s') t
               USING (shardid)
             JOIN citus_shards s USING (shardid)
             GROUP BY 1, 2",
        )
        .fetch_all(&mut connection)
        .await
        .context("count the rows on each worker")?;
        let sizes: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT nodename, nodeport, sum(shard_size)::bigint FROM citus_shards
             WHERE citus_table_type = 'distributed' GROUP BY 1, 2",
        )
        .fetch_all(&mut connection)
        .await
        .context("size the shards on each worker")?;
        Ok(self
            .nodes
            .into_iter()
            .zip(cpu)
            .map(|(watched, cpu_seconds)| {
                let (rows, tenants) = placed
                    .iter()
                    .find(|(host, port, ..)| {
                        *host == watched.node.host && *port == i32::from(watched.node.port)
                    })
                    .map_or((0, 0), |(_, _, rows, tenants)| {
                        (*rows as u64, *tenants as u64)
                    });
                let shard_bytes = sizes
                    .iter()
                    .find(|(host, port, _)| {
                        *host == watched.node.host && *port == i32::from(watched.node.port)
                    })
                    .map_or(0, |(_, _, bytes)| *bytes as u64);
                NodeShare {
                    shard_bytes,
                    node: watched.node.to_string(),
                    role: if watched.node.coordinator {
                        "coordinator"
                    } else {
                        "worker"
                    },
                    rows,
                    tenants,
                    cpu_seconds,
                    cpu_microseconds_per_event: cpu_seconds
                        .map(|seconds| seconds * 1e6 / events.max(1) as f64),
                }
            })
            .collect())
    }
}

/// The postmaster of `node`: the parent of the backend that answers there. `None` when
/// /proc does not show that backend (the node is on another host).
async fn postmaster_of(database_url: &str, node: &CitusNode) -> anyhow::Result<Option<u32>> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(database_url)?
        .host(&node.host)
        .port(node.port);
    let mut connection = PgConnection::connect_with(&options)
        .await
        .with_context(|| format!("connect to Citus node {node}"))?;
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
/// checkpointer, Citus' maintenance daemon).
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
    children + pgstat::process_cpu_seconds(postmaster)
}
