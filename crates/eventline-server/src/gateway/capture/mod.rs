//! Drop-in capture (issue #29): the Segment HTTP Tracking API and PostHog's capture
//! endpoints on the HTTP port, so existing Segment and PostHog SDKs send to eventline
//! unchanged. Each door maps its body to IngestBatch requests (`mapping.rs`) and calls
//! `eventline.v1.IngestService/IngestBatch` through the same in-process tonic routes as
//! the REST gateway, so dedupe, clock-skew correction (`sentAt`/`sent_at` as the batch's
//! `sent_at`), the key's rate limit, ack-after-commit and 429 + Retry-After are native
//! ingest's own. Answers are the ones each SDK expects: Segment `200 {"success": true}`,
//! PostHog `200 {"status": 1}`; bad events in a batch are counted and left out (the
//! good ones are stored), a bad single call is a 400 naming the field.

mod mapping;
mod posthog;
mod segment;

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Path, Request, State},
    response::Response,
    routing::{get, post},
};
use base64::Engine;
use eventline_core::{Error, FieldViolation};
use eventline_proto::v1;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use pbjson_types::Timestamp;
use prost::Message;
use serde_json::Value;
use tonic::Status;

use super::{Gateway, body, call, response};

/// The RPC every door calls.
const INGEST_BATCH_PATH: &str = "/eventline.v1.IngestService/IngestBatch";
const INGEST_BATCH: &str = "eventline.v1.IngestService.IngestBatch";
/// Events per IngestBatch call (the native per-message limit).
const EVENTS_PER_CALL: usize = eventline_core::limits::MAX_EVENTS_PER_BATCH;
/// Encoded bytes per IngestBatch call, well under the 20 MiB message limit.
const BYTES_PER_CALL: usize = 8 * 1024 * 1024;

/// The door a request came through (the `door` label of the capture metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Segment(segment::Shape),
    PostHog,
}

impl Door {
    fn label(self) -> &'static str {
        match self {
            Self::Segment(_) => "segment",
            Self::PostHog => "posthog",
        }
    }
}

/// A decoded capture body: the key it carries, its send time and each event mapped or
/// rejected, in order.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) key: Option<String>,
    pub(crate) sent_at: Option<Timestamp>,
    pub(crate) events: Vec<Result<v1::Event, FieldViolation>>,
    /// One call (`/v1/track`, a single PostHog event): a rejection fails the request.
    pub(crate) single: bool,
}

/// Event outcomes counted per door.
const OUTCOMES: [&str; 3] = ["accepted", "duplicate", "rejected"];

/// Registers the capture counters at zero, so `increase()` sees the first event.
pub(crate) fn register_metrics() {
    for door in ["segment", "posthog"] {
        for outcome in OUTCOMES {
            metrics::counter!("eventline_capture_events_total", "door" => door, "outcome" => outcome)
                .increment(0);
        }
    }
}

/// The capture routes, merged into the gateway's router.
pub(crate) fn routes() -> Router<Arc<Gateway>> {
    let mut router = Router::new();
    for (path, shape) in segment::PATHS {
        router = router.route(
            path,
            post(
                move |State(gateway): State<Arc<Gateway>>, request: Request| async move {
                    receive(&gateway, Door::Segment(shape), request).await
                },
            ),
        );
    }
    for path in posthog::PATHS {
        router = router.route(
            path,
            post(
                |State(gateway): State<Arc<Gateway>>, request: Request| async move {
                    receive(&gateway, Door::PostHog, request).await
                },
            ),
        );
    }
    for path in posthog::FLAG_PATHS {
        router = router.route(path, post(flags).get(flags));
    }
    router
        .route("/array/{token}/config", get(remote_config))
        .route("/array/{token}/config.js", get(remote_config_script))
        .route("/v1/projects/{write_key}/settings", get(segment_settings))
}

/// Receives one capture request and counts it by door and status.
async fn receive(gateway: &Gateway, door: Door, request: Request) -> Response {
    let response = match receive_events(gateway, door, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(door),
    };
    metrics::counter!(
        "eventline_capture_requests_total",
        "door" => door.label(),
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// Why a capture request was not taken, answered in the door's own error shape.
enum Refusal {
    /// A status of the native path (401, 429 + Retry-After, 503, a rejected single call).
    Status(Status),
    /// A body over the door's limit.
    TooLarge(usize),
    /// An answer the body reader already made (a stalled body, a full memory budget).
    Answered(Response),
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Self::Status(Status::from(error))
    }
}

impl Refusal {
    fn into_response(self, door: Door) -> Response {
        match (self, door) {
            (Self::Answered(response), _) => response,
            // Segment documents 400 for a request over 500 KB (its SDKs do not retry it).
            (Self::TooLarge(limit), Door::Segment(_)) => {
                response::error_response(&Status::from(too_large(limit)))
            }
            // 413 makes posthog-node split the batch and send the halves.
            (Self::TooLarge(limit), Door::PostHog) => {
                let error = too_large(limit);
                let mut answer = posthog_error(&Status::from(error));
                *answer.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                answer
            }
            (Self::Status(status), Door::Segment(_)) => response::error_response(&status),
            (Self::Status(status), Door::PostHog) => posthog_error(&status),
        }
    }
}

/// The error of a body over the door's limit.
fn too_large(max_bytes: usize) -> Error {
    Error::invalid(
        "body",
        format!("is larger than {max_bytes} bytes (after decompression)"),
    )
}

/// The native error response (status, Retry-After) with PostHog's error body.
fn posthog_error(status: &Status) -> Response {
    let mut answer = response::error_response(status);
    let code = match answer.status() {
        StatusCode::UNAUTHORIZED => "invalid_api_key",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "invalid_payload",
    };
    *answer.body_mut() = Body::from(posthog::error_body(code, status.message()).to_string());
    answer
}

async fn receive_events(
    gateway: &Gateway,
    door: Door,
    request: Request,
) -> Result<Response, Refusal> {
    let (parts, request_body) = request.into_parts();
    // A key in the headers (Segment's Basic auth, X-API-Key, Bearer) is checked before
    // a byte of the body is read, as on every other route.
    let header_key = header_key(&parts.headers)?;
    if let Some(key) = &header_key {
        admit(gateway, key).await?;
    }
    // Segment and PostHog SDKs may carry the key only in the body (`writeKey`, `api_key`,
    // posthog-js's `token`, inside a gzip body with no header to say so), so for these
    // doors alone the body is read before the key can be checked. It stays bounded: the
    // door's size limit (500 KB for Segment), the body-read timeout, and the shared
    // request memory budget it is charged to, exactly as an authenticated body is.
    let max_bytes = match door {
        Door::Segment(_) => segment::MAX_BODY_BYTES,
        Door::PostHog => gateway.max_body_bytes,
    };
    let (bytes, _charge) = body::read(
        request_body,
        &gateway.admission.budget,
        max_bytes,
        gateway.body_read_timeout,
    )
    .await
    .map_err(|answer| {
        if answer.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::TooLarge(max_bytes)
        } else {
            Refusal::Answered(answer)
        }
    })?;
    let (parsed, _decoded_charge) = match door {
        Door::Segment(shape) => (segment::parse(&bytes, shape)?, None),
        Door::PostHog => {
            let decoded = posthog::decode_body(&bytes, parts.uri.query(), max_bytes)?;
            if decoded.len() > max_bytes {
                return Err(Refusal::TooLarge(max_bytes));
            }
            let charge = gateway.admission.budget.try_charge(decoded.len())?;
            (posthog::parse(&decoded)?, Some(charge))
        }
    };
    let key = match (header_key, parsed.key.clone()) {
        (Some(key), _) => key,
        (None, Some(key)) => {
            admit(gateway, &key).await?;
            key
        }
        (None, None) => return Err(missing_key(door).into()),
    };
    let request_id = parts.headers.get("x-request-id").cloned();
    let single = parsed.single;
    let tally = tokio::time::timeout(
        gateway.request_timeout,
        ingest(gateway, &key, request_id, parsed),
    )
    .await
    .map_err(|_| {
        Refusal::Status(Status::deadline_exceeded(
            "the request took longer than the request timeout",
        ))
    })?;
    let tally = tally?;
    tally.record(door);
    if single && let Some(violation) = tally.first_rejection {
        return Err(Error::InvalidArgument { violation }.into());
    }
    if let Some(violation) = &tally.first_rejection {
        tracing::warn!(door = door.label(), rejected = tally.rejected, first = %violation, "capture batch had rejected events");
    }
    let body = match door {
        Door::Segment(_) => segment::success(),
        Door::PostHog => posthog::success(),
    };
    Ok(response::json_response(StatusCode::OK, &body))
}

fn missing_key(door: Door) -> Error {
    let how = match door {
        Door::Segment(_) => {
            "missing write key: send it as the HTTP Basic username or as writeKey in the body"
        }
        Door::PostHog => "missing project key: send it as api_key or token in the body",
    };
    Error::Unauthenticated(how.into())
}

/// The key of `Authorization: Basic` (its username, as Segment sends the write key),
/// `Authorization: Bearer` or `X-API-Key`, if any.
fn header_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    if let Some(value) = headers.get("x-api-key") {
        let key = value
            .to_str()
            .map_err(|_| Error::Unauthenticated("x-api-key must be visible ASCII".into()))?;
        return Ok(Some(key.trim().to_owned()));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("authorization must be visible ASCII".into()))?;
    let (scheme, credential) = text.split_once(' ').unwrap_or((text, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(credential.trim().to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Error::Unauthenticated(
            "authorization must be Basic (the write key as username) or Bearer".into(),
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credential.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            Error::Unauthenticated("authorization: Basic credentials are not valid base64".into())
        })?;
    let (username, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    let key = if username.is_empty() {
        password
    } else {
        username
    };
    Ok((!key.is_empty()).then(|| key.to_owned()))
}

/// The headers the in-process call carries: the key as `x-api-key`.
fn key_headers(key: &str) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(key)
        .map_err(|_| Error::Unauthenticated("the key must be visible ASCII".into()))?;
    headers.insert("x-api-key", value);
    Ok(headers)
}

/// The key must have the ingest scope, and the store must be up (as `Admission` checks
/// every other route).
async fn admit(gateway: &Gateway, key: &str) -> Result<(), Error> {
    gateway
        .admission
        .admit(&key_headers(key)?, INGEST_BATCH_PATH)
        .await
}

/// What the events of one request came to.
#[derive(Debug, Default)]
struct Tally {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    first_rejection: Option<FieldViolation>,
}

impl Tally {
    fn reject(&mut self, violation: FieldViolation) {
        self.rejected += 1;
        self.first_rejection.get_or_insert(violation);
    }

    fn record(&self, door: Door) {
        for (outcome, count) in
            OUTCOMES
                .into_iter()
                .zip([self.accepted, self.duplicates, self.rejected])
        {
            metrics::counter!("eventline_capture_events_total", "door" => door.label(), "outcome" => outcome)
                .increment(count);
        }
    }
}

/// Sends the mapped events through IngestBatch, in calls of at most 2000 events. A call
/// that fails ends the request with its status; the calls before it committed, and the
/// SDK's resend of the whole body stores their events once (same ids).
async fn ingest(
    gateway: &Gateway,
    key: &str,
    request_id: Option<HeaderValue>,
    parsed: Parsed,
) -> Result<Tally, Refusal> {
    let mut headers = key_headers(key)?;
    if let Some(request_id) = request_id {
        headers.insert("x-request-id", request_id);
    }
    let route = gateway
        .routes
        .iter()
        .find(|route| route.rpc.full_name() == INGEST_BATCH)
        .ok_or_else(|| Status::internal("IngestBatch is not routed"))
        .map_err(Refusal::Status)?;
    let mut tally = Tally::default();
    let mut pending = Vec::new();
    let mut pending_bytes = 0;
    let total = parsed.events.len();
    for (position, mapped) in parsed.events.into_iter().enumerate() {
        match mapped {
            Ok(event) => {
                pending_bytes += event.encoded_len();
                pending.push(event);
            }
            Err(violation) => tally.reject(violation),
        }
        let last = position + 1 == total;
        if pending.len() == EVENTS_PER_CALL
            || pending_bytes >= BYTES_PER_CALL
            || (last && !pending.is_empty())
        {
            let request = v1::IngestBatchRequest {
                events: std::mem::take(&mut pending),
                sent_at: parsed.sent_at,
            };
            pending_bytes = 0;
            let answer = call::call_encoded(
                &gateway.grpc,
                INGEST_BATCH_PATH,
                &headers,
                request.encode_to_vec(),
            )
            .await
            .map_err(Refusal::Status)?;
            let reply = call::unary(answer, route.rpc.output())
                .await
                .map_err(Refusal::Status)?
                .transcode_to::<v1::IngestBatchResponse>()
                .map_err(|error| Refusal::Status(Status::internal(error.to_string())))?;
            tally.accepted += reply.accepted;
            tally.duplicates += reply.duplicates;
            for result in reply.results {
                if result.status == v1::IngestStatus::Rejected as i32 {
                    tally.reject(FieldViolation::new("event", result.error));
                }
            }
        }
    }
    Ok(tally)
}

/// `/flags` and `/decide`: no feature flags. The body (which carries only the key and
/// the person) is not read.
async fn flags() -> Response {
    response::json_response(StatusCode::OK, &posthog::flags())
}

async fn remote_config() -> Response {
    response::json_response(StatusCode::OK, &posthog::remote_config())
}

async fn remote_config_script(Path(token): Path<String>) -> Response {
    let Some(script) = posthog::remote_config_script(&token) else {
        return response::error_response(&Status::not_found(
            "token: no remote config for a token with characters other than letters, digits, _ and -",
        ));
    };
    let mut answer = Response::new(Body::from(script));
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript"),
    );
    answer
}

/// The settings analytics.js fetches from its CDN: delivery to this server, as the
/// browser reached it (`Host`), over TLS when this port serves it or a proxy says so.
async fn segment_settings(
    State(gateway): State<Arc<Gateway>>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| {
            host.bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b".-:[]".contains(&byte))
        })
        .unwrap_or("localhost");
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|proto| proto.to_str().ok());
    let protocol = match forwarded {
        Some("https") => "https",
        Some("http") => "http",
        _ if gateway.tls => "https",
        _ => "http",
    };
    let settings: Value = segment::settings(&write_key, host, protocol);
    response::json_response(StatusCode::OK, &settings)
}
