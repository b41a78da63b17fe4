//! Reads a REST request body: within the body-read timeout (a trickled or stalled body
//! cannot hold its connection), within the size limit after decompression, and charged
//! to the request memory budget from its first byte until the request is answered.

use std::time::Duration;

use axum::{body::Body, response::Response};
use bytes::{Bytes, BytesMut};
use eventline_core::Error;
use http::StatusCode;
use http_body_util::BodyExt;
use tonic::Status;

use super::response::error_response;
use crate::budget::{Charge, MemoryBudget};

/// The whole body and the budget it holds; drop the charge when the request is answered.
pub(super) async fn read(
    body: Body,
    budget: &MemoryBudget,
    max_bytes: usize,
    timeout: Duration,
) -> Result<(Bytes, Vec<Charge>), Response> {
    match tokio::time::timeout(timeout, collect(body, budget, max_bytes)).await {
        Ok(read) => read,
        Err(_elapsed) => {
            let status = Status::deadline_exceeded(format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ));
            Err(with_status(
                error_response(&status),
                StatusCode::REQUEST_TIMEOUT,
            ))
        }
    }
}

async fn collect(
    mut body: Body,
    budget: &MemoryBudget,
    max_bytes: usize,
) -> Result<(Bytes, Vec<Charge>), Response> {
    let mut collected = BytesMut::new();
    let mut charges = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if collected.len() + data.len() > max_bytes {
            return Err(too_large(max_bytes));
        }
        let charge = budget
            .try_charge(data.len())
            .map_err(|error| error_response(&Status::from(error)))?;
        charges.push(charge);
        collected.extend_from_slice(&data);
    }
    Ok((collected.freeze(), charges))
}

fn too_large(max_bytes: usize) -> Response {
    let error = Error::invalid(
        "body",
        format!("is larger than {max_bytes} bytes (after decompression)"),
    );
    with_status(
        error_response(&Status::from(error)),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

/// A body that failed while being read: over the size limit (413), or not decodable in
/// its `content-encoding` (400 naming the encoding's complaint).
fn unreadable(error: axum::Error) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return too_large(eventline_core::limits::MAX_MESSAGE_BYTES);
        }
        source = cause.source();
    }
    let innermost = std::iter::successors(
        Some(&error as &(dyn std::error::Error + 'static)),
        |cause| cause.source(),
    )
    .last()
    .map(ToString::to_string)
    .unwrap_or_default();
    error_response(&Status::from(Error::invalid(
        "body",
        format!("could not be read or decoded (content-encoding): {innermost}"),
    )))
}

fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}
