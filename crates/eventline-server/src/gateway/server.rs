//! The HTTP listener: hyper-util with a timer so header-read timeouts fire (slowloris),
//! a connection cap, CORS, and graceful shutdown.

use std::{sync::Arc, time::Duration};

use axum::Router;
use http::HeaderValue;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// CORS for browsers sending events with write-only keys: `*` or a list of origins.
pub(super) fn cors(origins: &[String]) -> Result<CorsLayer, String> {
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

/// Serves `app` on `listener` until `stop` turns true, then lets open requests finish
/// for at most `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let connections = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        // Wait for room before accepting: past the cap, connections queue in the backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit { Ok(permit) => permit, Err(_) => break },
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "http accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http connections still open after the shutdown grace period");
    }
}
