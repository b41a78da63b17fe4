//! Calls an RPC in-process through the same tonic routes the gRPC port serves, so REST
//! requests pass the same auth, limits and services. Messages are framed and unframed
//! as gRPC does (uncompressed: the gateway never asks for compression).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Stream;
use http::HeaderMap;
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::{Status, service::Routes};
use tower::ServiceExt;

/// Largest response message the gateway accepts (the gRPC encoding limit).
const MAX_RESPONSE_MESSAGE: usize = 64 * 1024 * 1024;

/// Headers passed from the HTTP request to the RPC as metadata.
const FORWARDED_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-request-id"];

/// Sends `message` to `grpc_path` and returns the response headers and body.
pub(crate) async fn call(
    routes: &Routes,
    grpc_path: &str,
    headers: &HeaderMap,
    message: &DynamicMessage,
) -> Result<http::Response<tonic::body::Body>, Status> {
    call_encoded(routes, grpc_path, headers, message.encode_to_vec()).await
}

/// Sends an already encoded request message to `grpc_path` (the capture doors build
/// prost messages, not dynamic ones).
pub(crate) async fn call_encoded(
    routes: &Routes,
    grpc_path: &str,
    headers: &HeaderMap,
    encoded: Vec<u8>,
) -> Result<http::Response<tonic::body::Body>, Status> {
    let mut framed = BytesMut::with_capacity(encoded.len() + 5);
    framed.put_u8(0);
    framed.put_u32(
        u32::try_from(encoded.len()).map_err(|_| Status::invalid_argument("request too large"))?,
    );
    framed.extend_from_slice(&encoded);
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://eventline.gateway{grpc_path}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            framed.freeze(),
        )))
        .map_err(|error| Status::internal(error.to_string()))?;
    for name in FORWARDED_HEADERS {
        if let Some(value) = headers.get(name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    let response = routes
        .clone()
        .oneshot(request)
        .await
        .map_err(|error| Status::internal(error.to_string()))?;
    // A trailers-only response carries its status in the headers.
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    Ok(response)
}

/// Reads a unary response: one message, then an OK status.
pub(crate) async fn unary(
    response: http::Response<tonic::body::Body>,
    output: MessageDescriptor,
) -> Result<DynamicMessage, Status> {
    let mut messages = Box::pin(messages(response, output));
    use futures::StreamExt;
    let first = messages
        .next()
        .await
        .ok_or_else(|| Status::internal("the RPC returned no message"))??;
    // Drain to the trailers so a late error status is not lost.
    while let Some(next) = messages.next().await {
        next?;
    }
    Ok(first)
}

/// Reads a (server-streaming) response as a stream of messages ending in its status.
pub(crate) fn messages(
    response: http::Response<tonic::body::Body>,
    output: MessageDescriptor,
) -> impl Stream<Item = Result<DynamicMessage, Status>> + Send {
    let body = response.into_body();
    futures::stream::unfold(Some((body, BytesMut::new(), output)), |state| async move {
        let (mut body, mut buffer, output) = state?;
        loop {
            if let Some(frame) = next_frame(&mut buffer) {
                return match frame {
                    Ok(bytes) => match DynamicMessage::decode(output.clone(), bytes) {
                        Ok(message) => Some((Ok(message), Some((body, buffer, output)))),
                        Err(error) => Some((Err(Status::internal(error.to_string())), None)),
                    },
                    Err(status) => Some((Err(status), None)),
                };
            }
            match body.frame().await {
                None => return None,
                Some(Err(status)) => return Some((Err(status), None)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        return match Status::from_header_map(&trailers) {
                            Some(status) if status.code() != tonic::Code::Ok => {
                                Some((Err(status), None))
                            }
                            _ => None,
                        };
                    }
                },
            }
        }
    })
}

fn next_frame(buffer: &mut BytesMut) -> Option<Result<Bytes, Status>> {
    if buffer.len() < 5 {
        return None;
    }
    if buffer[0] != 0 {
        return Some(Err(Status::internal("compressed response frame")));
    }
    let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if length > MAX_RESPONSE_MESSAGE {
        return Some(Err(Status::resource_exhausted(
            "response message too large",
        )));
    }
    if buffer.len() < 5 + length {
        return None;
    }
    buffer.advance(5);
    Some(Ok(buffer.split_to(length).freeze()))
}
