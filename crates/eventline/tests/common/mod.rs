//! Runs the real `eventline` binary as a child process against a real PostgreSQL.

#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic_health_probe::serving;

pub mod authority;

/// A bootstrap key the tests know in advance.
pub const API_KEY: &str = "elk_test_bootstrap_key_0123456789abcdef";

/// An `eventline serve` child process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    /// The REST gateway's address.
    pub http_addr: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `eventline serve` on `port` against `database_url` and waits until it is SERVING.
pub async fn spawn_server(database_url: &str, port: u16) -> ServerProcess {
    spawn_server_with(database_url, port, &[]).await
}

/// [`spawn_server`] with extra `EVENTLINE_*` settings.
pub async fn spawn_server_with(
    database_url: &str,
    port: u16,
    settings: &[(&str, &str)],
) -> ServerProcess {
    let addr = format!("127.0.0.1:{port}");
    let http_addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_eventline"))
        .arg("serve")
        .envs(settings.iter().copied())
        .env("EVENTLINE_DATABASE_URL", database_url)
        .env("EVENTLINE_GRPC_ADDR", &addr)
        .env("EVENTLINE_HTTP_ADDR", &http_addr)
        .env(
            "EVENTLINE_METRICS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("EVENTLINE_BOOTSTRAP_API_KEY", API_KEY)
        .env("EVENTLINE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn eventline serve");
    let mut server = ServerProcess {
        child,
        addr,
        http_addr,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("eventline serve exited early with {status}");
        }
        if serving(&server.addr).await {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("eventline serve did not become SERVING within 60 s");
}

/// Asks grpc.health.v1 whether the server is SERVING.
mod tonic_health_probe {
    pub async fn serving(addr: &str) -> bool {
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
            return false;
        };
        let Ok(channel) = endpoint.connect().await else {
            return false;
        };
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        matches!(client.check(request).await, Ok(response) if response.get_ref().status == 1)
    }
}
