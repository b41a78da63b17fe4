//! Starts the real server in-process on an ephemeral port against a fresh database and
//! hands out real tonic clients.

#![allow(dead_code, unreachable_pub)]

pub mod webhook;

use std::net::SocketAddr;

use eventline_proto::v1::{
    admin_service_client::AdminServiceClient, ingest_service_client::IngestServiceClient,
    query_service_client::QueryServiceClient,
};
use eventline_server::{Config, Server};
use eventline_store::Store;
use std::sync::Arc;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub api_key: String,
    pub store: Arc<dyn Store>,
    pub database_url: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on a fresh PostgreSQL database.
    pub async fn postgres() -> Self {
        Self::postgres_with(|_| {}).await
    }

    /// A server on a fresh PostgreSQL database, with config tweaks.
    pub async fn postgres_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let url = eventline_store::testing::fresh_postgres_database().await;
        Self::postgres_at(url, tweak).await
    }

    /// A server whose writer queue is full after one 2,000-event batch: one commit
    /// worker, and 1 ms for a request to find room (the overload tests).
    pub async fn postgres_with_a_small_queue() -> Self {
        Self::postgres_with(|config| {
            config.writer.queue_events = 2000;
            config.writer.enqueue_timeout_ms = 1;
            config.writer.workers = 1;
        })
        .await
    }

    /// A server on the PostgreSQL database at `url`, with config tweaks.
    pub async fn postgres_at(url: String, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = base_config();
        config.database.url = Some(url.clone());
        tweak(&mut config);
        Self::start(config, Some(url)).await
    }

    /// A server on a fresh SQLite store.
    pub async fn sqlite(directory: &std::path::Path) -> Self {
        Self::sqlite_with(directory, |_| {}).await
    }

    /// A server on a fresh SQLite store, with config tweaks.
    pub async fn sqlite_with(directory: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = base_config();
        config.data.dir = directory.to_path_buf();
        tweak(&mut config);
        Self::start(config, None).await
    }

    async fn start(config: Config, database_url: Option<String>) -> Self {
        let server = Server::start(config).await.expect("server starts");
        let addr = server.grpc_addr();
        let http_addr = server.http_addr();
        let metrics_addr = server.metrics_addr();
        // A second server on the same database finds it bootstrapped already.
        let api_key = server
            .bootstrap_key()
            .map(|key| key.secret.clone())
            .unwrap_or_default();
        let store = server.store();
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
            http_addr,
            metrics_addr,
            api_key,
            store,
            database_url,
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    pub async fn ingest(
        &self,
        key: &str,
    ) -> IngestServiceClient<InterceptedService<Channel, WithKey>> {
        IngestServiceClient::with_interceptor(self.channel().await, WithKey::api_key(key))
            .max_encoding_message_size(32 * 1024 * 1024)
    }

    pub async fn query(
        &self,
        key: &str,
    ) -> QueryServiceClient<InterceptedService<Channel, WithKey>> {
        QueryServiceClient::with_interceptor(self.channel().await, WithKey::api_key(key))
    }

    pub async fn admin(
        &self,
        bearer: &str,
    ) -> AdminServiceClient<InterceptedService<Channel, WithKey>> {
        AdminServiceClient::with_interceptor(self.channel().await, WithKey::bearer(bearer))
    }

    /// A new tenant (over AdminService with the admin token) and a key of it with
    /// `scopes`: the tenant id and the key's secret.
    pub async fn tenant_with_key(
        &self,
        name: &str,
        scopes: &[eventline_proto::v1::Scope],
    ) -> (String, String) {
        use eventline_proto::v1;
        let mut admin = self.admin(ADMIN_TOKEN).await;
        let tenant = admin
            .create_tenant(v1::CreateTenantRequest { name: name.into() })
            .await
            .expect("create tenant")
            .into_inner()
            .tenant
            .expect("tenant");
        let created = admin
            .create_api_key(v1::CreateApiKeyRequest {
                tenant_id: tenant.tenant_id.clone(),
                scopes: scopes.iter().map(|scope| *scope as i32).collect(),
                ..Default::default()
            })
            .await
            .expect("create key")
            .into_inner();
        (tenant.tenant_id, created.secret)
    }

    /// A REST request with `credential` as `Authorization: Bearer` (the admin token or
    /// a key): the status and the body as JSON (a JSON string when it is not JSON).
    pub async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        credential: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.http_addr))
            .header("Authorization", format!("Bearer {credential}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// `POST /v1/events:batch` with the bootstrap key; fails the test unless it is 200.
    pub async fn rest_batch(&self, events: serde_json::Value) -> serde_json::Value {
        let (status, body) = self
            .rest(
                reqwest::Method::POST,
                "/v1/events:batch",
                &self.api_key,
                Some(serde_json::json!({ "events": events })),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body
    }

    /// The id of the first tenant (by name) over REST with the admin token: the
    /// `default` one of a fresh server.
    pub async fn first_tenant_id(&self) -> String {
        let (status, body) = self
            .rest(reqwest::Method::GET, "/v1/tenants", ADMIN_TOKEN, None)
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body["tenants"][0]["tenant_id"].as_str().unwrap().to_owned()
    }

    /// The metrics port's `GET /metrics` text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .expect("scrape /metrics")
            .text()
            .await
            .expect("read /metrics")
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
}

fn base_config() -> Config {
    let mut config = Config::default();
    config.grpc.addr = "127.0.0.1:0".parse().unwrap();
    config.http.addr = "127.0.0.1:0".parse().unwrap();
    config.metrics.addr = "127.0.0.1:0".parse().unwrap();
    config.admin.token = Some(ADMIN_TOKEN.into());
    config
}

/// Adds credentials to every request.
#[derive(Clone)]
pub struct WithKey {
    header: &'static str,
    value: MetadataValue<tonic::metadata::Ascii>,
}

impl WithKey {
    pub fn api_key(key: &str) -> Self {
        Self {
            header: "x-api-key",
            value: key.parse().unwrap(),
        }
    }

    pub fn bearer(token: &str) -> Self {
        Self {
            header: "authorization",
            value: format!("Bearer {token}").parse().unwrap(),
        }
    }
}

impl Interceptor for WithKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.value.is_empty() {
            request
                .metadata_mut()
                .insert(self.header, self.value.clone());
        }
        Ok(request)
    }
}
