//! The REST/JSON gateway on the HTTP port. Its route table comes from the
//! `google.api.http` annotations; each request is decoded as proto3 JSON into the RPC's
//! request message and sent in-process through the same tonic routes as gRPC, so REST
//! exposes exactly what gRPC does, with the same auth and limits.

mod batch;
mod body;
mod call;
mod capture;
mod console;
mod docs;
mod openapi;
mod request;
mod response;
mod routes;
mod server;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    response::Response,
    routing::get,
};
use eventline_core::Error;
use http::{HeaderMap, StatusCode};
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tonic::{Status, service::Routes};

use crate::auth::Admission;
pub(crate) use server::{cors, serve};

/// The full name of Track, whose REST form answers 201/200 and reads `Idempotency-Key`.
const TRACK: &str = "eventline.v1.IngestService.Track";

/// What every gateway request needs: the route table, the tonic routes every call goes
/// through, and the admission checks the gRPC port runs too (the key is checked before
/// a body is read, and the body is read into the shared memory budget).
#[derive(Debug)]
pub(crate) struct Gateway {
    routes: Vec<routes::Route>,
    grpc: Routes,
    admission: Admission,
    request_timeout: Duration,
    body_read_timeout: Duration,
    max_body_bytes: usize,
    /// Whether this port serves TLS (the Segment settings tell browsers which scheme).
    tls: bool,
}

/// Options of the HTTP port.
#[derive(Debug, Clone)]
pub(crate) struct GatewayOptions {
    pub(crate) request_timeout: Duration,
    pub(crate) body_read_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) tls: bool,
}

impl Gateway {
    /// A gateway calling `grpc`; fails if the descriptor set's annotations are unusable.
    pub(crate) fn router(
        grpc: Routes,
        admission: Admission,
        options: &GatewayOptions,
    ) -> Result<Router, String> {
        let pool = DescriptorPool::decode(eventline_proto::FILE_DESCRIPTOR_SET)
            .map_err(|error| error.to_string())?;
        let routes = routes::route_table(&pool)?;
        let openapi_yaml = openapi::to_yaml(&openapi::document(&pool, &routes));
        let gateway = Arc::new(Gateway {
            routes,
            grpc,
            admission,
            request_timeout: options.request_timeout,
            body_read_timeout: options.body_read_timeout,
            max_body_bytes: options.max_body_bytes,
            tls: options.tls,
        });
        capture::register_metrics();
        let cors = server::cors(&options.cors_origins)?;
        Ok(Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .route(
                "/openapi.yaml",
                get(move || async move {
                    (
                        [(http::header::CONTENT_TYPE, "application/yaml")],
                        openapi_yaml,
                    )
                }),
            )
            .route("/docs", get(docs::page))
            .route("/docs/swagger-ui.css", get(docs::stylesheet))
            .route("/docs/swagger-ui-bundle.js", get(docs::script))
            // The web console at `/` (console/dist, embedded).
            .merge(console::router())
            .merge(capture::routes())
            .fallback(handle)
            .with_state(gateway)
            .layer(tower_http::limit::RequestBodyLimitLayer::new(
                options.max_body_bytes,
            ))
            .layer(tower_http::decompression::RequestDecompressionLayer::new())
            .layer(cors)
            .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
            .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                tower_http::request_id::MakeRequestUuid,
            )))
    }
}

/// Readiness as the health task last saw it: answers at once, whatever the database does.
async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    gateway.admission.readiness.readyz()
}

/// Records `eventline_http_requests_total{route, status}` and the time to the response
/// head (for streams, to the first byte).
async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    // The one route match of the request: its label here, its call in `dispatch`.
    let matched = gateway.match_route(&method, request.uri().path());
    let route = matched
        .as_ref()
        .map(|(route, _)| route.template.clone())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
    );
    crate::trace_context::continue_callers_trace(&span, request.headers());
    let response =
        tracing::Instrument::instrument(dispatch(&gateway, request, matched), span.clone()).await;
    crate::trace_context::record_http_status(&span, response.status());
    let labels = [
        ("method", method.as_str().to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("eventline_http_requests_total", &labels).increment(1);
    metrics::histogram!("eventline_http_request_duration_seconds", &labels[..2])
        .record(started.elapsed().as_secs_f64());
    response
}

/// The route and path variables of `method` on `path`, if any.
type Matched<'a> = Option<(&'a routes::Route, Vec<(String, String)>)>;

impl Gateway {
    fn match_route(&self, method: &http::Method, path: &str) -> Matched<'_> {
        self.routes
            .iter()
            .filter(|route| route.method == *method)
            .find_map(|route| route.matches(path).map(|variables| (route, variables)))
    }
}

async fn dispatch(gateway: &Gateway, request: Request, matched: Matched<'_>) -> Response {
    let (parts, body) = request.into_parts();
    let Some((route, variables)) = matched else {
        return gateway.unmatched(&parts.method, parts.uri.path());
    };
    // The key is checked from the headers before a byte of the body is read.
    let admitted = gateway
        .admission
        .admit(&parts.headers, &route.grpc_path())
        .await;
    if let Err(error) = admitted {
        return response::error_response(&Status::from(error));
    }
    // The body's memory stays charged to the budget until the call has answered.
    let (body, _charge) = match body::read(
        body,
        &gateway.admission.budget,
        gateway.max_body_bytes,
        gateway.body_read_timeout,
    )
    .await
    {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    match message(route, variables, &parts, &body) {
        Ok((message, undecodable)) => {
            gateway
                .call(route, &parts.headers, message, undecodable)
                .await
        }
        Err(error) => response::error_response(&Status::from(error)),
    }
}

/// The RPC's request message: the body, path variables and query parameters decoded as
/// proto3 JSON, with `Idempotency-Key` applied.
fn message(
    route: &routes::Route,
    variables: Vec<(String, String)>,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<(DynamicMessage, batch::UndecodableEvents), Error> {
    if route.body_required() && body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid("body", "is required: send a JSON object"));
    }
    let (message, undecodable) = request::build(route, variables, parts.uri.query(), body)?;
    Ok((
        apply_idempotency_key(route, &parts.headers, message)?,
        undecodable,
    ))
}

impl Gateway {
    /// 405 with `Allow` when another method has the path, else 404.
    fn unmatched(&self, method: &http::Method, path: &str) -> Response {
        let allowed: Vec<&str> = self
            .routes
            .iter()
            .filter(|route| route.matches(path).is_some())
            .map(|route| route.method.as_str())
            .collect();
        if allowed.is_empty() {
            return response::error_response(&Status::not_found(format!(
                "no route for {method} {path}"
            )));
        }
        let mut response = response::error_response(&Status::unimplemented(format!(
            "{method} is not allowed on {path}"
        )));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        if let Ok(allow) = http::HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(http::header::ALLOW, allow);
        }
        response
    }

    /// Calls the route's RPC through the tonic routes: a stream becomes NDJSON, a unary
    /// reply JSON within the request timeout.
    async fn call(
        &self,
        route: &routes::Route,
        headers: &HeaderMap,
        message: DynamicMessage,
        undecodable: batch::UndecodableEvents,
    ) -> Response {
        if route.rpc.is_server_streaming() {
            return match call::call(&self.grpc, &route.grpc_path(), headers, &message).await {
                Ok(answer) => response::ndjson_response(call::messages(answer, route.rpc.output())),
                Err(status) => response::error_response(&status),
            };
        }
        let unary = async {
            let answer = call::call(&self.grpc, &route.grpc_path(), headers, &message).await?;
            call::unary(answer, route.rpc.output()).await
        };
        match tokio::time::timeout(self.request_timeout, unary).await {
            Ok(Ok(reply)) => {
                let reply = undecodable.merge_into(reply);
                let status = success_status(route, &reply);
                response::json_response(status, &response::to_json(&reply))
            }
            Ok(Err(status)) => response::error_response(&status),
            Err(_) => response::error_response(&Status::deadline_exceeded(
                "the request took longer than the request timeout",
            )),
        }
    }
}

/// `Idempotency-Key` on `POST /v1/events` becomes the event id, unless the body set one.
fn apply_idempotency_key(
    route: &routes::Route,
    headers: &HeaderMap,
    mut message: DynamicMessage,
) -> Result<DynamicMessage, Error> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(message);
    };
    if route.rpc.full_name() != TRACK {
        return Ok(message);
    }
    let key = key
        .to_str()
        .map_err(|_| Error::invalid("Idempotency-Key", "must be visible ASCII"))?
        .to_owned();
    if let Some(Value::Message(event)) = message.get_field_by_name_mut("event")
        && event
            .get_field_by_name("event_id")
            .and_then(|id| id.as_str().map(str::is_empty))
            .unwrap_or(true)
    {
        event.set_field_by_name("event_id", Value::String(key));
    }
    Ok(message)
}

/// 201 for a Track that stored a new event, 200 otherwise.
fn success_status(route: &routes::Route, reply: &DynamicMessage) -> StatusCode {
    if route.rpc.full_name() != TRACK {
        return StatusCode::OK;
    }
    let accepted = eventline_proto::v1::IngestStatus::Accepted as i32;
    let stored = reply.get_field_by_name("result").and_then(|result| {
        result.as_message().and_then(|result| {
            result
                .get_field_by_name("status")
                .and_then(|status| status.as_enum_number())
        })
    }) == Some(accepted);
    if stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}
