//! HTTP answers of the gateway: proto3 JSON bodies, newline-delimited JSON streams, and
//! errors as `{"code", "message", "details"}` with the status grpc-gateway would give.

use std::time::Duration;

use axum::{body::Body, response::Response};
use bytes::Bytes;
use eventline_core::ErrorCode;
use futures::{Stream, StreamExt};
use http::{HeaderValue, StatusCode, header};
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Value, json};
use tonic::Status;
use tonic_types::StatusExt;

fn options() -> SerializeOptions {
    // snake_case names, defaults included so a zero count reads as "0", not as absent.
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
}

/// A message as proto3 JSON.
pub(crate) fn to_json(message: &DynamicMessage) -> Value {
    message
        .serialize_with_options(serde_json::value::Serializer, &options())
        .unwrap_or(Value::Null)
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The JSON error object of a status.
pub(crate) fn error_json(status: &Status) -> Value {
    let details = status.get_error_details();
    let mut detail_list = Vec::new();
    if let Some(bad_request) = details.bad_request() {
        let violations: Vec<Value> = bad_request
            .field_violations
            .iter()
            .map(
                |violation| json!({"field": violation.field, "description": violation.description}),
            )
            .collect();
        detail_list.push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest", "field_violations": violations}));
    }
    if let Some(delay) = retry_delay(status) {
        detail_list.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retry_delay": format!("{}s", delay.as_secs_f64()),
        }));
    }
    json!({"code": status.code() as i32, "message": status.message(), "details": detail_list})
}

fn retry_delay(status: &Status) -> Option<Duration> {
    status
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
}

/// An error response; 429 and 503 carry `Retry-After`.
pub(crate) fn error_response(status: &Status) -> Response {
    let http_status = StatusCode::from_u16(ErrorCode::from_grpc(status.code()).http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(http_status, &error_json(status));
    if matches!(
        http_status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        let seconds = retry_delay(status)
            .map(|delay| delay.as_secs_f64().ceil().max(1.0) as u64)
            .unwrap_or(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A server stream as newline-delimited JSON: `{"result": …}` per message, then
/// `{"error": …}` if the stream fails. Each line is its own chunk, so it is flushed.
pub(crate) fn ndjson_response(
    messages: impl Stream<Item = Result<DynamicMessage, Status>> + Send + 'static,
) -> Response {
    let lines = messages.scan(false, |failed, item| {
        if *failed {
            return futures::future::ready(None);
        }
        let line = match item {
            Ok(message) => json!({"result": to_json(&message)}),
            Err(status) => {
                *failed = true;
                json!({"error": error_json(&status)})
            }
        };
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        futures::future::ready(Some(Ok::<_, std::convert::Infallible>(Bytes::from(bytes))))
    });
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}
