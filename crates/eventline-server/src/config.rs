//! Server configuration: one struct, read as flags > `EVENTLINE_*` environment >
//! optional TOML file > defaults. Keys are dotted and shared by all three sources:
//! `grpc.addr` is `EVENTLINE_GRPC_ADDR` and `[grpc] addr` in the file.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// One line of help per setting, by dotted key: `eventline serve --help` is built from
/// this table, the key (flag `--grpc-addr`, env `EVENTLINE_GRPC_ADDR`) and
/// [`Config::default`], so flags, environment names and defaults cannot drift apart; a
/// unit test fails when a setting has no line here. The README's configuration table is
/// checked against the same defaults by `crates/eventline/tests/configuration.rs`.
pub const SETTINGS_HELP: &[(&str, &str)] = &[
    ("grpc.addr", "Address to listen on for gRPC and gRPC-Web"),
    (
        "grpc.max_concurrent_streams",
        "Most concurrent HTTP/2 streams per gRPC connection",
    ),
    (
        "grpc.max_connections",
        "Most open gRPC connections; more wait in the accept backlog",
    ),
    (
        "grpc.first_byte_timeout_ms",
        "Longest wait from accept to a gRPC connection's first byte (and TLS handshake), in ms",
    ),
    (
        "grpc.idle_timeout_ms",
        "Longest a gRPC connection stays open with no active call, in ms",
    ),
    (
        "grpc.message_timeout_ms",
        "Longest a request message may take to arrive once it started, in ms",
    ),
    (
        "grpc.keepalive_interval_ms",
        "Interval of HTTP/2 keep-alive pings, in ms",
    ),
    (
        "grpc.keepalive_timeout_ms",
        "Longest wait for a keep-alive ping's answer, in ms",
    ),
    ("http.addr", "REST/JSON gateway listen address"),
    (
        "http.max_connections",
        "Most open HTTP connections; more wait in the accept backlog",
    ),
    (
        "http.request_timeout_ms",
        "Longest unary REST request, in ms (streams are not limited)",
    ),
    (
        "http.header_read_timeout_ms",
        "Longest wait for a request's headers and a new connection's first byte, in ms",
    ),
    (
        "http.body_read_timeout_ms",
        "Longest a request body may take to arrive, in ms",
    ),
    (
        "http.idle_timeout_ms",
        "Longest an HTTP connection stays open with no active request, in ms",
    ),
    (
        "http.cors_origins",
        "Origins browsers may call from, as [a, b]; * allows any",
    ),
    (
        "metrics.addr",
        "Prometheus metrics (and /healthz, /readyz) listen address, always plaintext",
    ),
    (
        "database.url",
        "PostgreSQL URL (postgres://…); unset means embedded SQLite in data.dir",
    ),
    (
        "database.read_url",
        "PostgreSQL streaming replica for reads",
    ),
    (
        "database.max_connections",
        "Pool size; 0 picks writer workers + 4",
    ),
    ("data.dir", "Directory of the embedded SQLite store"),
    (
        "admin.token",
        "Admin token for AdminService, at least 16 characters",
    ),
    (
        "bootstrap.api_key",
        "Secret of the first API key on an empty database (at least 20 characters)",
    ),
    ("log.format", "Log format: pretty or json"),
    ("log.level", "Log filter such as info or eventline=debug"),
    (
        "writer.queue_events",
        "Most events waiting for a commit; past it ingest answers RESOURCE_EXHAUSTED",
    ),
    (
        "writer.max_batch_events",
        "Most events coalesced into one transaction",
    ),
    (
        "writer.workers",
        "Parallel commit workers; 0 picks 2 on PostgreSQL, 1 on SQLite",
    ),
    (
        "writer.enqueue_timeout_ms",
        "How long a request waits for queue room before it is refused, in ms",
    ),
    (
        "limits.request_memory_bytes",
        "Bytes of requests held at once, shared by every connection",
    ),
    (
        "limits.events_per_second_per_key",
        "Ingest events per second of a key without its own limit, per replica; unset is unlimited",
    ),
    (
        "lifecycle.interval_ms",
        "How often user deletions and retention run when nothing wakes them, in ms",
    ),
    (
        "lifecycle.dedupe_window_ms",
        "Raw events are kept at least this long after receipt, whatever the retention, in ms",
    ),
    (
        "lifecycle.quarantine_max_events",
        "Most rejected events kept per tenant; the oldest go first",
    ),
    (
        "summaries.prepare_interval_ms",
        "How often funnel, retention and unique-user summaries are built ahead of queries, in ms; 0 turns it off",
    ),
    (
        "summaries.prepare_days",
        "How many days back the summaries are kept ready",
    ),
    (
        "tracing.otlp_endpoint",
        "OTLP/gRPC collector to export traces to, such as http://localhost:4317; unset turns tracing off",
    ),
    (
        "tracing.service_name",
        "service.name of the exported traces",
    ),
    (
        "tracing.sample_ratio",
        "Share of traces started here that are sampled, 0 to 1; a caller's traceparent decides for its own",
    ),
    (
        "search.index_interval_ms",
        "How often new events of tenants with search on are indexed, in ms; 0 turns indexing off",
    ),
    (
        "search.index_batch_events",
        "Most events indexed in one transaction",
    ),
    (
        "streams.interval_ms",
        "How often subscriptions' new events are delivered, in ms; 0 turns delivery off",
    ),
    (
        "streams.batch_events",
        "Most events in one delivered batch (a webhook body, or messages awaiting JetStream acks)",
    ),
    (
        "streams.max_attempts",
        "Attempts at one batch, with backoff, before its subscription is paused",
    ),
    (
        "streams.nats_url",
        "NATS server of NATS subscriptions, such as nats://127.0.0.1:4222; unset refuses them",
    ),
    (
        "alerts.evaluate_interval_ms",
        "How often every tenant's alert rules are evaluated, in ms; 0 turns alerts off on this replica",
    ),
    (
        "tls.cert_path",
        "PEM certificate chain: serve gRPC and HTTP over TLS",
    ),
    ("tls.key_path", "PEM private key of tls.cert_path"),
    (
        "tls.client_ca_path",
        "PEM CA bundle: require client certificates it signed (mTLS)",
    ),
    (
        "tls.reload_interval_ms",
        "How often the TLS files are checked for changes, in ms",
    ),
];

/// The environment variable of a dotted key: `grpc.addr` → `EVENTLINE_GRPC_ADDR`.
pub fn env_name(key: &str) -> String {
    format!("EVENTLINE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The flag of a dotted key: `grpc.addr` → `grpc-addr`.
pub fn flag_name(key: &str) -> String {
    key.replace(['.', '_'], "-")
}

/// Every setting's default by dotted key, as the configuration table shows it: the
/// literal, or `None` for unset.
pub fn default_values() -> Vec<(String, Option<String>)> {
    fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, Option<String>)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (name, inner) in map {
                    let key = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    flatten(&key, inner, out);
                }
            }
            serde_json::Value::Null => out.push((prefix.to_owned(), None)),
            serde_json::Value::String(text) => out.push((prefix.to_owned(), Some(text.clone()))),
            other => out.push((prefix.to_owned(), Some(other.to_string()))),
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(Config::default()) {
        flatten("", &value, &mut out);
    }
    out
}

/// Every setting of `eventline serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub grpc: GrpcConfig,
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub database: DatabaseConfig,
    pub data: DataConfig,
    pub admin: AdminConfig,
    pub bootstrap: BootstrapConfig,
    pub log: LogConfig,
    pub writer: WriterConfig,
    pub limits: LimitsConfig,
    pub lifecycle: LifecycleConfig,
    pub summaries: SummariesConfig,
    pub search: SearchConfig,
    pub streams: StreamsConfig,
    pub tracing: TracingConfig,
    pub alerts: AlertsConfig,
    pub tls: TlsConfig,
}

/// The gRPC listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Address to listen on for gRPC and gRPC-Web.
    pub addr: SocketAddr,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Most open connections; more wait in the accept backlog.
    pub max_connections: u32,
    /// Longest wait from accept to a connection's first byte, in milliseconds.
    pub first_byte_timeout_ms: u64,
    /// Longest a connection stays open with no active call, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Longest a request message may take to arrive once its first byte came, in
    /// milliseconds (a stream may idle between messages).
    pub message_timeout_ms: u64,
    /// Interval of HTTP/2 keep-alive pings, in milliseconds.
    pub keepalive_interval_ms: u64,
    /// Longest wait for a keep-alive ping's answer before the connection is closed, in
    /// milliseconds.
    pub keepalive_timeout_ms: u64,
}

/// The HTTP port: REST/JSON gateway, health, OpenAPI and docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Most open connections; more wait in the accept backlog.
    pub max_connections: u32,
    /// Longest unary request, in milliseconds (streams are not limited).
    pub request_timeout_ms: u64,
    /// Longest wait for a request's headers, in milliseconds, and for a new connection's
    /// first byte (slowloris and silent-connection guard).
    pub header_read_timeout_ms: u64,
    /// Longest a request body may take to arrive, in milliseconds.
    pub body_read_timeout_ms: u64,
    /// Longest a connection stays open with no active request, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Origins browsers may call from; `*` allows any (keys, not cookies, authenticate).
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_connections: 1024,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            cors_origins: vec!["*".to_owned()],
        }
    }
}

/// The Prometheus metrics port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address serving `GET /metrics`.
    pub addr: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

/// The database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` for PostgreSQL; unset for embedded SQLite in `data.dir`.
    pub url: Option<String>,
    /// A streaming replica of `url` for queries, exports and tails (PostgreSQL only).
    pub read_url: Option<String>,
    /// Pool size; 0 picks one from the writer's parallelism.
    pub max_connections: u32,
}

/// Local files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory of the embedded SQLite store.
    pub dir: PathBuf,
}

/// Operator access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for AdminService; unset means only admin-scoped keys work.
    pub token: Option<String>,
}

/// First start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Use this secret (at least 20 characters) for the first key instead of a random one.
    pub api_key: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `eventline=debug,info`.
    pub level: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// The group-commit writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Most events waiting for a commit; past it ingest answers RESOURCE_EXHAUSTED.
    pub queue_events: u32,
    /// Most events coalesced into one transaction.
    pub max_batch_events: u32,
    /// Parallel transactions; 0 means 2 on PostgreSQL and 1 on SQLite.
    pub workers: u32,
    /// How long a request waits for queue room before it is refused, in milliseconds.
    pub enqueue_timeout_ms: u64,
}

/// Memory limits shared by both listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Bytes of requests held at once, shared by every connection: messages being
    /// received and decoded batches until their commit; past it requests are refused
    /// with RESOURCE_EXHAUSTED (429) and a retry delay.
    pub request_memory_bytes: u64,
    /// Ingest rate limit of a key created without one, in events per second on each
    /// replica (a token bucket holding one second's worth); unset means unlimited.
    pub events_per_second_per_key: Option<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            request_memory_bytes: 64 * 1024 * 1024,
            events_per_second_per_key: None,
        }
    }
}

/// The data lifecycle's background work and bounds (README "Data lifecycle").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// How often pending user deletions and retention run, in milliseconds; a
    /// DeleteUser request wakes them at once on the replica that took it.
    pub interval_ms: u64,
    /// Raw events are kept at least this long after they were received, whatever the
    /// tenant's retention, so a retried event is still found to be a duplicate.
    pub dedupe_window_ms: u64,
    /// Most rejected events kept in each tenant's quarantine; past it the oldest go.
    pub quarantine_max_events: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            dedupe_window_ms: eventline_core::lifecycle::DEDUPE_WINDOW.as_millis() as u64,
            quarantine_max_events: 10_000,
        }
    }
}

/// The most days back `summaries.prepare_days` may reach.
const MAX_PREPARE_DAYS: u32 = 3_660;

/// The summaries built ahead of queries (README "Funnels and retention").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummariesConfig {
    /// How often the background task builds missing or stale summaries, in
    /// milliseconds; 0 leaves them all to the queries that need them.
    pub prepare_interval_ms: u64,
    /// How many days back the task keeps them ready: the longest window people query
    /// often (the console's presets go to 30 days).
    pub prepare_days: u32,
}

impl Default for SummariesConfig {
    fn default() -> Self {
        Self {
            prepare_interval_ms: 60_000,
            prepare_days: 35,
        }
    }
}

/// The most events `search.index_batch_events` may put in one transaction.
const MAX_SEARCH_BATCH_EVENTS: u32 = 100_000;

/// Search's background indexer (README "Search").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// How often the indexer looks for new events of tenants with search on, in
    /// milliseconds: how long after its ack an event can be found, at most.
    pub index_interval_ms: u64,
    /// Most events indexed in one transaction.
    pub index_batch_events: u32,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            index_interval_ms: 1_000,
            index_batch_events: 5_000,
        }
    }
}

/// The most events `streams.batch_events` may put in one batch.
const MAX_STREAM_BATCH_EVENTS: u32 = 10_000;

/// Outbound streams' dispatcher (README "Streams").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// How often the dispatcher delivers subscriptions' new events, in milliseconds: how
    /// long after its ack an event leaves, at most; 0 turns delivery off on this replica.
    pub interval_ms: u64,
    /// Most events in one batch: one webhook body, or the NATS messages whose
    /// acknowledgements are awaited together.
    pub batch_events: u32,
    /// Attempts at one batch (the first included), with exponential backoff, before its
    /// subscription is paused with the error.
    pub max_attempts: u32,
    /// The NATS server (with JetStream) that NATS subscriptions publish to; unset, a
    /// NATS subscription is refused. Tenants name subjects, never servers.
    pub nats_url: Option<String>,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            interval_ms: 500,
            batch_events: 500,
            max_attempts: 5,
            nats_url: None,
        }
    }
}

/// Alert rules' evaluation (README "Alerts").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often every tenant's rules are evaluated over the minutes that have ended, in
    /// milliseconds; 0 turns evaluation (and notifications) off on this replica.
    pub evaluate_interval_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            evaluate_interval_ms: 60_000,
        }
    }
}

/// OpenTelemetry traces over OTLP (README "Tracing"); off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP/gRPC endpoint of a collector (or Jaeger), such as
    /// `http://localhost:4317` (plaintext) or `https://collector:4317` (TLS, verified
    /// against the system's roots or those `SSL_CERT_FILE` names); unset exports nothing
    /// and installs no exporter.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of every exported span.
    pub service_name: String,
    /// Share of the traces this server starts that are sampled, from 0 to 1. A request
    /// with a `traceparent` follows its caller's sampling decision instead.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "eventline".into(),
            sample_ratio: 1.0,
        }
    }
}

impl TracingConfig {
    /// Whether traces are exported.
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "tracing.sample_ratio must be between 0 and 1, got {}",
                self.sample_ratio
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err("tracing.service_name must not be empty".into());
        }
        // https:// is verified against the system's roots (or SSL_CERT_FILE's).
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "tracing.otlp_endpoint must be an http:// or https:// URL such as http://localhost:4317, got {endpoint:?}"
            ));
        }
        Ok(())
    }
}

/// TLS on the gRPC and HTTP listeners (the metrics port stays plaintext, for scrapers
/// inside the cluster). The files are read again when they change, so a rotated
/// certificate is served to new connections without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first; with `key_path`, turns TLS on.
    pub cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key_path: Option<PathBuf>,
    /// PEM CA bundle; when set, every client must present a certificate it signed (mTLS).
    pub client_ca_path: Option<PathBuf>,
    /// How often the files are checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_path: None,
            key_path: None,
            client_ca_path: None,
            reload_interval_ms: 5_000,
        }
    }
}

impl TlsConfig {
    /// Whether the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.cert_path.is_some()
    }

    fn validate(&self) -> Result<(), String> {
        match (&self.cert_path, &self.key_path) {
            (Some(_), None) => return Err("tls.key_path is required with tls.cert_path".into()),
            (None, Some(_)) => return Err("tls.cert_path is required with tls.key_path".into()),
            _ => {}
        }
        if self.client_ca_path.is_some() && self.cert_path.is_none() {
            return Err("tls.client_ca_path needs tls.cert_path and tls.key_path".into());
        }
        if self.reload_interval_ms == 0 {
            return Err("tls.reload_interval_ms must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            max_concurrent_streams: 256,
            max_connections: 1024,
            first_byte_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            message_timeout_ms: 30_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./eventline-data"),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_events: 100_000,
            max_batch_events: 5_000,
            workers: 0,
            enqueue_timeout_ms: 2_000,
        }
    }
}

impl Config {
    /// Reads the configuration: `overrides` (flags) > `EVENTLINE_*` env > `file` >
    /// defaults. `DATABASE_URL` is read when `EVENTLINE_DATABASE_URL` is not set.
    pub fn load(file: Option<&std::path::Path>, overrides: Figment) -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(Self::env())
            .merge(overrides)
            .extract()
            .map_err(|error| format!("invalid configuration: {error}"))?;
        config.validate()?;
        Ok(config)
    }

    /// `EVENTLINE_GRPC_ADDR` → `grpc.addr`: the first underscore splits section and key.
    fn env() -> Env {
        // The sections are the top-level keys of the config itself, so a new section is
        // read from the environment without a second list to keep in step.
        let sections: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().map(|key| format!("{key}_")).collect(),
            _ => Vec::new(),
        };
        Env::prefixed("EVENTLINE_")
            .filter(move |key| {
                let key = key.as_str().to_ascii_lowercase();
                sections
                    .iter()
                    .any(|section| key.starts_with(section.as_str()))
            })
            .map(|key| {
                key.as_str()
                    .to_ascii_lowercase()
                    .replacen('_', ".", 1)
                    .into()
            })
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.writer.max_batch_events == 0 {
            return Err("writer.max_batch_events must be at least 1".into());
        }
        if self.lifecycle.interval_ms == 0 {
            return Err("lifecycle.interval_ms must be at least 1".into());
        }
        if self.summaries.prepare_days > MAX_PREPARE_DAYS {
            return Err(format!(
                "summaries.prepare_days must be at most {MAX_PREPARE_DAYS} (ten years)"
            ));
        }
        if !(1..=MAX_SEARCH_BATCH_EVENTS).contains(&self.search.index_batch_events) {
            return Err(format!(
                "search.index_batch_events must be 1 to {MAX_SEARCH_BATCH_EVENTS}"
            ));
        }
        if !(1..=MAX_STREAM_BATCH_EVENTS).contains(&self.streams.batch_events) {
            return Err(format!(
                "streams.batch_events must be 1 to {MAX_STREAM_BATCH_EVENTS}"
            ));
        }
        if !(1..=20).contains(&self.streams.max_attempts) {
            return Err("streams.max_attempts must be 1 to 20".into());
        }
        if let Some(url) = &self.streams.nats_url
            && !(url.starts_with("nats://") || url.starts_with("tls://"))
        {
            return Err(format!(
                "streams.nats_url must be a nats:// or tls:// URL such as nats://127.0.0.1:4222, got {url:?}"
            ));
        }
        if self.lifecycle.quarantine_max_events == 0 {
            return Err("lifecycle.quarantine_max_events must be at least 1".into());
        }
        if self.writer.queue_events < eventline_core::limits::MAX_EVENTS_PER_BATCH as u32 {
            return Err(format!(
                "writer.queue_events must be at least {} (one full batch)",
                eventline_core::limits::MAX_EVENTS_PER_BATCH
            ));
        }
        if self.limits.request_memory_bytes < eventline_core::limits::MAX_MESSAGE_BYTES as u64 {
            return Err(format!(
                "limits.request_memory_bytes must be at least {} (one largest message)",
                eventline_core::limits::MAX_MESSAGE_BYTES
            ));
        }
        let timeouts = [
            (
                "grpc.first_byte_timeout_ms",
                self.grpc.first_byte_timeout_ms,
            ),
            ("grpc.idle_timeout_ms", self.grpc.idle_timeout_ms),
            ("grpc.message_timeout_ms", self.grpc.message_timeout_ms),
            (
                "grpc.keepalive_interval_ms",
                self.grpc.keepalive_interval_ms,
            ),
            ("grpc.keepalive_timeout_ms", self.grpc.keepalive_timeout_ms),
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms),
            ("http.request_timeout_ms", self.http.request_timeout_ms),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.limits.events_per_second_per_key == Some(0) {
            return Err(
                "limits.events_per_second_per_key must be at least 1 (unset it for no limit)"
                    .into(),
            );
        }
        self.tls.validate()?;
        self.tracing.validate()?;
        if self.grpc.max_connections == 0 || self.http.max_connections == 0 {
            return Err("grpc.max_connections and http.max_connections must be at least 1".into());
        }
        if self.database.read_url.is_some() && !self.uses_postgres() {
            return Err("database.read_url needs database.url to be a postgres:// URL".into());
        }
        if let Some(key) = &self.bootstrap.api_key
            && key.chars().count() < 20
        {
            return Err("bootstrap.api_key must be at least 20 characters".into());
        }
        if let Some(token) = &self.admin.token
            && token.chars().count() < 16
        {
            return Err("admin.token must be at least 16 characters".into());
        }
        Ok(())
    }

    /// Whether the store is PostgreSQL.
    pub fn uses_postgres(&self) -> bool {
        self.database
            .url
            .as_deref()
            .is_some_and(|url| url.starts_with("postgres"))
    }
}

#[cfg(test)]
// figment's Jail fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    #[test]
    fn stream_settings_out_of_bounds_are_refused_naming_the_setting() {
        for events in [0, MAX_STREAM_BATCH_EVENTS + 1] {
            let mut config = Config::default();
            config.streams.batch_events = events;
            let error = config.validate().unwrap_err();
            assert!(error.contains("streams.batch_events"), "{error}");
        }
        let mut config = Config::default();
        config.streams.nats_url = Some("http://127.0.0.1:4222".into());
        let error = config.validate().unwrap_err();
        assert!(error.contains("streams.nats_url"), "{error}");
        config.streams.nats_url = Some("nats://127.0.0.1:4222".into());
        config.validate().unwrap();
    }

    #[test]
    fn search_batches_outside_their_bounds_are_refused_naming_the_setting() {
        for events in [0, MAX_SEARCH_BATCH_EVENTS + 1] {
            let mut config = Config::default();
            config.search.index_batch_events = events;
            let error = config.validate().unwrap_err();
            assert!(error.contains("search.index_batch_events"), "{error}");
        }
    }

    #[test]
    fn summaries_prepare_days_past_ten_years_are_refused_naming_the_setting() {
        let mut config = Config::default();
        config.summaries.prepare_days = MAX_PREPARE_DAYS;
        assert_eq!(config.validate(), Ok(()));
        config.summaries.prepare_days = MAX_PREPARE_DAYS + 1;
        let error = config.validate().unwrap_err();
        assert!(error.contains("summaries.prepare_days"), "{error}");
    }

    #[test]
    fn tracing_is_off_by_default_and_bad_values_are_refused_naming_the_setting() {
        let mut config = Config::default();
        assert!(!config.tracing.enabled(), "tracing must be off by default");
        config.tracing.otlp_endpoint = Some("http://127.0.0.1:4317".into());
        config.tracing.sample_ratio = 0.0;
        assert_eq!(config.validate(), Ok(()));
        config.tracing.sample_ratio = 1.5;
        let error = config.validate().unwrap_err();
        assert!(error.contains("tracing.sample_ratio"), "{error}");
        config.tracing.sample_ratio = f64::NAN;
        let error = config.validate().unwrap_err();
        assert!(error.contains("tracing.sample_ratio"), "{error}");
        config.tracing.sample_ratio = 1.0;
        for unusable in ["127.0.0.1:4317", "grpc://collector:4317"] {
            config.tracing.otlp_endpoint = Some(unusable.into());
            let error = config.validate().unwrap_err();
            assert!(error.contains("tracing.otlp_endpoint"), "{error}");
        }
    }

    #[test]
    fn tracing_settings_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("EVENTLINE_TRACING_OTLP_ENDPOINT", "http://collector:4317");
            jail.set_env("EVENTLINE_TRACING_SAMPLE_RATIO", "0.25");
            let config = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(
                config.tracing.otlp_endpoint.as_deref(),
                Some("http://collector:4317")
            );
            assert_eq!(config.tracing.sample_ratio, 0.25);
            assert_eq!(config.tracing.service_name, "eventline");
            Ok(())
        });
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "eventline.toml",
                "[grpc]\naddr = \"127.0.0.1:1000\"\n[writer]\nmax_batch_events = 10\nqueue_events = 3000\n",
            )?;
            jail.set_env("EVENTLINE_WRITER_MAX_BATCH_EVENTS", "20");
            jail.set_env("EVENTLINE_DATA_DIR", "/tmp/from-env");
            jail.set_env("EVENTLINE_HTTP_ADDR", "127.0.0.1:8181");
            jail.set_env("EVENTLINE_METRICS_ADDR", "127.0.0.1:9191");
            jail.set_env("EVENTLINE_API_KEY", "client setting, not a server one");
            let flags = Figment::from(Serialized::default("data.dir", "/tmp/from-flag"));
            let config = Config::load(Some(std::path::Path::new("eventline.toml")), flags)
                .map_err(|e| e.to_string())?;
            assert_eq!(config.grpc.addr, "127.0.0.1:1000".parse().unwrap());
            assert_eq!(config.writer.max_batch_events, 20);
            assert_eq!(config.writer.queue_events, 3000);
            assert_eq!(config.data.dir, PathBuf::from("/tmp/from-flag"));
            assert_eq!(config.log, LogConfig::default());
            assert_eq!(config.http.addr, "127.0.0.1:8181".parse().unwrap());
            assert_eq!(config.metrics.addr, "127.0.0.1:9191".parse().unwrap());
            Ok(())
        });
    }

    #[test]
    fn every_setting_has_one_help_line_and_nothing_else_has_one() {
        let keys: Vec<String> = default_values().into_iter().map(|(key, _)| key).collect();
        let mut documented: Vec<String> = SETTINGS_HELP
            .iter()
            .map(|(key, _)| (*key).to_owned())
            .collect();
        documented.sort();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(documented, sorted, "SETTINGS_HELP and Config disagree");
        assert_eq!(env_name("grpc.addr"), "EVENTLINE_GRPC_ADDR");
        assert_eq!(
            flag_name("limits.events_per_second_per_key"),
            "limits-events-per-second-per-key"
        );
    }

    #[test]
    fn database_url_falls_back_to_the_unprefixed_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://fallback");
            let config = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(config.database.url.as_deref(), Some("postgres://fallback"));
            jail.set_env("EVENTLINE_DATABASE_URL", "postgres://preferred");
            let config = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(config.database.url.as_deref(), Some("postgres://preferred"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_them() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[grpc]\nadress = \"x\"\n")?;
            let error =
                Config::load(Some(std::path::Path::new("bad.toml")), Figment::new()).unwrap_err();
            assert!(error.contains("adress"), "{error}");
            jail.clear_env();
            jail.set_env("EVENTLINE_WRITER_MAX_BATCH_EVENTS", "0");
            let error = Config::load(None, Figment::new()).unwrap_err();
            assert!(error.contains("writer.max_batch_events"), "{error}");
            Ok(())
        });
    }
}
