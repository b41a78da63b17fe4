//! The HTTP listener: hyper-util with a timer so header-read timeouts fire (slowloris),
//! the connection limits of `connection.rs` (cap, first byte, idle), TLS when configured
//! (`tls.rs`), CORS, and graceful shutdown.

use std::time::Duration;

use axum::Router;
use http::HeaderValue;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::sync::watch;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::{
    connection::{Acceptor, track_activity},
    tls::{ServerStream, Tls},
};

/// CORS for browsers sending events with write-only keys: `*` or a list of origins.
pub(crate) fn cors(origins: &[String]) -> Result<CorsLayer, String> {
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(Duration::from_secs(600));
    if origins.is_empty() || origins.iter().any(|origin| origin == "*") {
        return Ok(layer.allow_origin(Any));
    }
    let origins = origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin)
                .map_err(|_| format!("http.cors_origins: {origin:?} is not a valid origin"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(layer.allow_origin(AllowOrigin::list(origins)))
}

/// Serves `app` on `acceptor`'s connections until `stop` turns true, then lets open
/// requests finish for at most `grace`. Each request carries its connection's
/// [`ConnectionInfo`], so that [`track_activity`] keeps the idle timeout off live requests.
/// With `tls`, each connection's handshake runs in its own task, bounded by
/// `header_read_timeout`.
pub(crate) async fn serve(
    acceptor: Acceptor,
    tls: Option<Tls>,
    app: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let app = app.layer(axum::middleware::from_fn(track_activity));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        // Past the connection cap the acceptor waits, and connections queue in the backlog.
        let stream = tokio::select! {
            stream = acceptor.accept() => stream,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let info = stream.info();
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(info.clone());
                request
            },
        ));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream = match tls {
                None => ServerStream::Plain(stream),
                Some(tls) => match tls.handshake(stream, header_read_timeout).await {
                    Some(stream) => stream,
                    None => return,
                },
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(connection).await;
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http connections still open after the shutdown grace period");
    }
}
