//! Runs the real server in-process on a fresh PostgreSQL database and hands out SDK
//! clients for it.

#![allow(dead_code, unreachable_pub)]

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use eventline_client::{Client, Counts, v1};
use eventline_server::{Config, Server};
use futures::StreamExt;
use tokio::{sync::oneshot, task::JoinHandle};

/// The bootstrap key of every test server.
pub const API_KEY: &str = "elk_test_bootstrap_key_0123456789abcdef";

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port free right now below the kernel's ephemeral range (32768–60999), for a server
/// that restarts on the same port: an ephemeral port could be taken meanwhile as some
/// client's source port.
pub fn restartable_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    (0..2000u64)
        .map(|attempt| 20_000 + ((seed + attempt * 7919) % 12_000) as u16)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port in 20000-31999")
}

impl TestServer {
    /// A server on a fresh database, on any port.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server on a fresh database, with config tweaks.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let url = eventline_store::testing::fresh_postgres_database().await;
        Self::start_on(url, 0, tweak).await
    }

    /// A server on the database at `url`, listening for gRPC on `port` (0: any).
    pub async fn start_on(url: String, port: u16, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.grpc.addr = format!("127.0.0.1:{port}").parse().unwrap();
        config.http.addr = "127.0.0.1:0".parse().unwrap();
        config.metrics.addr = "127.0.0.1:0".parse().unwrap();
        config.database.url = Some(url.clone());
        config.bootstrap.api_key = Some(API_KEY.into());
        tweak(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let (addr, metrics_addr) = (server.grpc_addr(), server.metrics_addr());
        let (shutdown, signal) = oneshot::channel();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = signal.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            addr,
            metrics_addr,
            database_url: url,
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.target(), API_KEY)
            .await
            .expect("connect")
    }

    /// Stops the server and waits until it drained.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task");
        }
    }

    /// The value of one counter series from /metrics, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut connection = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .expect("connect to /metrics");
        connection
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        connection.read_to_string(&mut text).await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// Every stored event id, by exporting everything.
pub async fn exported_ids(client: &Client) -> Vec<String> {
    client
        .export(v1::ExportEventsRequest::default())
        .map(|item| item.expect("export").event.event_id)
        .collect()
        .await
}

/// Asserts `ids` holds each of `expected` exactly once and nothing else.
pub fn assert_exactly_once(ids: &[String], expected: &HashSet<String>) {
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an event is stored twice");
    assert_eq!(ids.len(), expected.len(), "stored count differs");
    assert!(
        ids.iter().all(|id| expected.contains(id)),
        "an unknown event is stored"
    );
}

/// The total of `counts` and that nothing is left.
pub fn assert_all_accounted(counts: &Counts, tracked: u64) {
    assert_eq!(counts.total(), tracked, "{counts:?}");
}

/// A generous shutdown timeout: tests wait for outcomes, they do not time them.
pub const SHUTDOWN: Duration = Duration::from_secs(120);
