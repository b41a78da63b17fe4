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

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

/// The URL schemes [`deliver`] can send to. The workspace's reqwest is built without a
/// TLS backend: its rustls-without-provider feature would make every other
/// `reqwest::Client` in the workspace (CLI, tests) panic unless a crypto provider were
/// installed first, and its default one compiles aws-lc. So https is refused where a
/// URL is taken, naming the field, rather than failing at every delivery.
pub const SUPPORTED_SCHEMES: &[&str] = &["http"];

/// Parses a webhook URL as deliveries will, refusing (naming `field`) one that does not
/// parse or whose scheme [`deliver`] cannot send to; `readme` names the section to read.
pub fn check_url(field: &str, url: &str, readme: &str) -> Result<(), eventline_core::Error> {
    let parsed = reqwest::Url::parse(url).map_err(|error| {
        eventline_core::Error::invalid(field, format!("is not a valid URL: {error}"))
    })?;
    if !SUPPORTED_SCHEMES.contains(&parsed.scheme()) {
        return Err(eventline_core::Error::invalid(
            field,
            format!(
                "{}:// is not supported by this build's webhook client yet; use http:// (README \"{readme}\")",
                parsed.scheme()
            ),
        ));
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

/// The client every delivery shares: no redirects (a signed message goes where it was
/// addressed or fails), a connect timeout, pooled connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("eventline-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client without TLS or proxy settings always builds")
}

/// One attempt's result: final, or worth trying again after an optional `Retry-After`.
enum Attempt {
    Final(DeliveryOutcome),
    Retry(DeliveryOutcome, Option<Duration>),
}

/// POSTs `message` signed with `secret`, retrying as `policy` says; returns the attempts
/// made and how the last one ended.
pub async fn deliver(
    client: &reqwest::Client,
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
    client: &reqwest::Client,
    secret: &WebhookSecret,
    message: &WebhookMessage<'_>,
    policy: &RetryPolicy,
) -> Attempt {
    let timestamp = chrono::Utc::now().timestamp();
    let sent = client
        .post(message.url)
        .timeout(policy.attempt_timeout)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            secret.sign(message.id, timestamp, message.body),
        )
        .body(message.body.to_vec())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        // A URL reqwest cannot send to is not worth another try; anything else
        // (refused, reset, timed out) may pass later.
        Err(error) if error.is_builder() => {
            return Attempt::Final(DeliveryOutcome::Unreachable {
                error: error_chain(&error),
            });
        }
        Err(error) => {
            return Attempt::Retry(
                DeliveryOutcome::Unreachable {
                    error: error_chain(&error),
                },
                None,
            );
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Final(DeliveryOutcome::Delivered {
            status: status.as_u16(),
        });
    }
    let retry_after = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    let outcome = DeliveryOutcome::Failed {
        status: status.as_u16(),
        error: failure_text(status, &body),
    };
    if is_retryable(status) {
        Attempt::Retry(outcome, retry_after)
    } else {
        Attempt::Final(outcome)
    }
}

/// 5xx and 429 may pass later; every other answer is final.
fn is_retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
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

fn failure_text(status: reqwest::StatusCode, body: &str) -> String {
    let body: String = body.trim().chars().take(MAX_ERROR_BODY_CHARS).collect();
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    }
}

/// The error and its causes, which say what actually failed (refused, timed out, DNS).
fn error_chain(error: &reqwest::Error) -> String {
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
            let status = reqwest::StatusCode::from_u16(status).unwrap();
            assert_eq!(is_retryable(status), retried, "{status}");
        }
    }
}
