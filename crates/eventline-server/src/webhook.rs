//! Signed webhook delivery, shared by everything the server pushes to a URL (alert
//! notifications; outbound event webhooks). Messages are signed as the Standard Webhooks
//! specification says (<https://www.standardwebhooks.com>): three headers,
//! `webhook-id` (the same on every retry, so a receiver can deduplicate),
//! `webhook-timestamp` (unix seconds of this attempt) and
//! `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`, where
//! the key is the base64 after the secret's `whsec_` prefix. Any Standard Webhooks
//! library verifies them.
//!
//! [`deliver`] POSTs one JSON body and retries what may succeed later (connection
//! errors, timeouts, 5xx, 429) with exponential backoff and jitter, up to
//! [`RetryPolicy::max_attempts`]; any other 4xx is the receiver's final answer.
//!
//! `https://` receivers are verified against the system's roots; `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` name others, as they do for curl and OpenSSL (README "Streams").

use std::{sync::Arc, time::Duration};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rand::Rng;
use sha2::Sha256;

/// The URL schemes [`deliver`] sends to.
pub const SUPPORTED_SCHEMES: &[&str] = &["http", "https"];

/// Parses a webhook URL as deliveries will, refusing (naming `field`) one that does not
/// parse or whose scheme [`deliver`] cannot send to; `readme` names the section to read.
pub fn check_url(field: &str, url: &str, readme: &str) -> Result<(), eventline_core::Error> {
    let parsed: http::Uri = url.parse().map_err(|error| {
        eventline_core::Error::invalid(field, format!("is not a valid URL: {error}"))
    })?;
    let scheme = parsed.scheme_str().unwrap_or_default();
    if !SUPPORTED_SCHEMES.contains(&scheme) {
        return Err(eventline_core::Error::invalid(
            field,
            format!("must be an http:// or https:// URL (README \"{readme}\")"),
        ));
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(eventline_core::Error::invalid(field, "names no host"));
    }
    Ok(())
}

/// The prefix of a Standard Webhooks secret; the rest is the base64 of the key.
const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated key (the spec asks for 24 to 64).
const GENERATED_KEY_BYTES: usize = 32;
/// How much of a receiver's answer is kept as the error of a failed attempt.
const MAX_ERROR_BODY_CHARS: usize = 200;

/// A signing secret: `whsec_` followed by the base64 of the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WebhookSecret(…)")
    }
}

impl WebhookSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_KEY_BYTES];
        rand::rng().fill(key.as_mut_slice());
        Self { key }
    }

    /// Reads `whsec_<base64>` (the prefix may be left out, as the spec allows).
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|error| format!("not base64 after {SECRET_PREFIX}: {error}"))?;
        if key.is_empty() {
            return Err("the key is empty".to_owned());
        }
        Ok(Self { key })
    }

    /// The secret as it is shown to the receiver and stored: `whsec_<base64>`.
    pub fn expose(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&self.key)
        )
    }

    /// The `webhook-signature` value of one message: `v1,<base64 HMAC-SHA256>` over
    /// `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("v1,{signature}")
    }
}

/// How hard [`deliver`] tries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt; each later wait doubles, up to `max_backoff`.
    /// Each wait is then drawn uniformly from its upper half (jitter), so receivers that
    /// failed together are not retried together.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The deadline of one attempt: connecting, sending and reading the answer.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts over about 15 seconds, 10 s each.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based), before jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// The longest a delivery can take: every attempt timing out, every wait at its
    /// longest.
    pub fn longest(&self) -> Duration {
        let attempts = self.max_attempts.max(1);
        let waits: Duration = (1..attempts).map(|attempt| self.backoff(attempt)).sum();
        self.attempt_timeout.saturating_mul(attempts) + waits
    }

    /// The wait after failed attempt `attempt`, jittered into its upper half; a
    /// receiver's `Retry-After` lengthens it, never beyond `max_backoff`.
    pub(crate) fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.backoff(attempt);
        let half = backoff / 2;
        let jittered = half + half.mul_f64(rand::rng().random::<f64>());
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_backoff)),
            None => jittered,
        }
    }
}

/// One message to deliver.
#[derive(Debug, Clone)]
pub struct WebhookMessage<'a> {
    pub url: &'a str,
    /// The `webhook-id`: the same on every attempt and unique per message.
    pub id: &'a str,
    /// A JSON document, signed and sent as it is.
    pub body: &'a [u8],
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// The last attempt got this HTTP status: a 4xx other than 429 (never retried), or a
    /// 5xx/429/3xx after the last attempt.
    Failed { status: u16, error: String },
    /// The last attempt got no answer: connection refused, timeout, a bad URL.
    Unreachable { error: String },
}

impl DeliveryOutcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }

    /// The last HTTP status received, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } | Self::Failed { status, .. } => Some(*status),
            Self::Unreachable { .. } => None,
        }
    }

    /// Why it failed; `None` when delivered.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Delivered { .. } => None,
            Self::Failed { error, .. } | Self::Unreachable { error } => Some(error),
        }
    }
}

/// What [`deliver`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Attempts made, at least 1.
    pub attempts: u32,
    pub outcome: DeliveryOutcome,
}

/// The `User-Agent` of every delivery.
const USER_AGENT: &str = concat!("eventline-webhooks/", env!("CARGO_PKG_VERSION"));
/// How much of a failed attempt's answer is read (the first part names the error).
const MAX_ERROR_BODY_BYTES: usize = 4096;

/// The client every delivery shares: http and https (rustls with ring), pooled
/// connections, a connect timeout, and no redirects (a signed message goes where it was
/// addressed or fails).
#[derive(Clone)]
pub struct WebhookClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WebhookClient")
    }
}

impl WebhookClient {
    /// Trusting the system's roots, or those `SSL_CERT_FILE`/`SSL_CERT_DIR` name. With
    /// none found (a bare container), http:// still works and https:// fails naming the
    /// certificate, after a warning here.
    pub fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(Arc::clone(&provider)) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no root certificates found: https:// webhooks will fail until SSL_CERT_FILE names some");
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .expect("ring supports the default protocol versions")
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Default for WebhookClient {
    fn default() -> Self {
        Self::new()
    }
}

/// One attempt's result: final, or worth trying again after an optional `Retry-After`.
enum Attempt {
    Final(DeliveryOutcome),
    Retry(DeliveryOutcome, Option<Duration>),
}

/// POSTs `message` signed with `secret`, retrying as `policy` says; returns the attempts
/// made and how the last one ended.
pub async fn deliver(
    client: &WebhookClient,
    secret: &WebhookSecret,
    message: &WebhookMessage<'_>,
    policy: &RetryPolicy,
) -> Delivery {
    let max_attempts = policy.max_attempts.max(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (outcome, retry_after) = match attempt(client, secret, message, policy).await {
            Attempt::Final(outcome) => return Delivery { attempts, outcome },
            Attempt::Retry(outcome, retry_after) => (outcome, retry_after),
        };
        if attempts >= max_attempts {
            return Delivery { attempts, outcome };
        }
        tracing::debug!(attempts, id = message.id, outcome = ?outcome, "webhook attempt failed; retrying");
        tokio::time::sleep(policy.wait(attempts, retry_after)).await;
    }
}

async fn attempt(
    client: &WebhookClient,
    secret: &WebhookSecret,
    message: &WebhookMessage<'_>,
    policy: &RetryPolicy,
) -> Attempt {
    let timestamp = chrono::Utc::now().timestamp();
    let request = http::Request::post(message.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT)
        .header("webhook-id", message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            secret.sign(message.id, timestamp, message.body),
        )
        .body(Full::new(Bytes::copy_from_slice(message.body)));
    let request = match request {
        Ok(request) => request,
        // A URL that cannot be sent to is not worth another try.
        Err(error) => {
            return Attempt::Final(DeliveryOutcome::Unreachable {
                error: format!("invalid URL: {error}"),
            });
        }
    };
    // The whole attempt, connecting and reading the answer, within its timeout; anything
    // that fails here (refused, reset, TLS, timed out) may pass later.
    let answer = tokio::time::timeout(policy.attempt_timeout, async {
        let response = client
            .inner
            .request(request)
            .await
            .map_err(|error| error_chain(&error))?;
        let (parts, body) = response.into_parts();
        let body = if parts.status.is_success() {
            String::new()
        } else {
            // Only the first part names the error; a failed read just leaves it out.
            Limited::new(body, MAX_ERROR_BODY_BYTES)
                .collect()
                .await
                .map(|collected| String::from_utf8_lossy(&collected.to_bytes()).into_owned())
                .unwrap_or_default()
        };
        Ok::<_, String>((parts.status, parts.headers, body))
    })
    .await;
    let (status, headers, body) = match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => return Attempt::Retry(DeliveryOutcome::Unreachable { error }, None),
        Err(_) => {
            return Attempt::Retry(
                DeliveryOutcome::Unreachable {
                    error: format!("timed out after {:?}", policy.attempt_timeout),
                },
                None,
            );
        }
    };
    if status.is_success() {
        return Attempt::Final(DeliveryOutcome::Delivered {
            status: status.as_u16(),
        });
    }
    let outcome = DeliveryOutcome::Failed {
        status: status.as_u16(),
        error: failure_text(status, &body),
    };
    if is_retryable(status) {
        Attempt::Retry(outcome, retry_after(&headers))
    } else {
        Attempt::Final(outcome)
    }
}

/// 5xx and 429 may pass later; every other answer is final.
fn is_retryable(status: http::StatusCode) -> bool {
    status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

fn failure_text(status: http::StatusCode, body: &str) -> String {
    let body: String = body.trim().chars().take(MAX_ERROR_BODY_CHARS).collect();
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    }
}

/// The error and its causes, which say what actually failed (refused, timed out, DNS).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example published in the Standard Webhooks specification
    /// (github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md),
    /// checked independently with Python's hmac, hashlib and base64 modules.
    #[test]
    fn signature_matches_the_standard_webhooks_published_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secret_round_trips_through_its_text() {
        let secret = WebhookSecret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(WebhookSecret::parse(&text).unwrap(), secret);
        assert_ne!(WebhookSecret::generate(), secret);
    }

    #[test]
    fn secret_that_is_not_base64_is_refused() {
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::parse("whsec_").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitter_stays_in_the_upper_half() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            attempt_timeout: Duration::from_secs(1),
        };
        let backoffs: Vec<u128> = (1..=5).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(backoffs, [100, 200, 400, 700, 700]);
        for attempt in 1..=5 {
            let wait = policy.wait(attempt, None);
            let backoff = policy.backoff(attempt);
            assert!(
                wait >= backoff / 2 && wait <= backoff,
                "{wait:?} for {backoff:?}"
            );
        }
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(60))),
            Duration::from_millis(700),
            "Retry-After never waits past max_backoff"
        );
    }

    #[test]
    fn only_server_errors_and_429_are_retried() {
        for (status, retried) in [
            (500, true),
            (503, true),
            (429, true),
            (400, false),
            (404, false),
            (410, false),
        ] {
            let status = http::StatusCode::from_u16(status).unwrap();
            assert_eq!(is_retryable(status), retried, "{status}");
        }
    }
}
