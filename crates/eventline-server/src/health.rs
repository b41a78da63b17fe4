//! Readiness: grpc.health.v1 reports SERVING (overall and per service) only while the
//! database answers, migrations are applied and the writer's last commit succeeded. The
//! check runs in the background, bounded in time, and publishes to [`Readiness`], which
//! every probe reads without waiting.

use std::{sync::Arc, time::Duration};

use eventline_proto::v1::{
    admin_service_server::AdminServiceServer, ingest_service_server::IngestServiceServer,
    query_service_server::QueryServiceServer,
};
use eventline_store::Store;
use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    admin::AdminApi, ingest::IngestApi, query::QueryApi, readiness::Readiness, writer::Writer,
};

/// How often readiness is checked; a probe sees a change within about this.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a check waits for the store: an unreachable database otherwise holds the check
/// for the pool's acquire timeout.
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

const SERVICES: [&str; 4] = [
    "",
    <IngestServiceServer<IngestApi> as NamedService>::NAME,
    <QueryServiceServer<QueryApi> as NamedService>::NAME,
    <AdminServiceServer<AdminApi> as NamedService>::NAME,
];

/// Publishes the current readiness, then keeps it current every couple of seconds until
/// aborted. The first publication happens before this returns a future that loops, so a
/// server reports its status from its first request on.
pub(crate) async fn start(
    store: Arc<dyn Store>,
    writer: Writer,
    reporter: HealthReporter,
    readiness: Readiness,
) -> tokio::task::JoinHandle<()> {
    let mut last = publish(&*store, &writer, &reporter, &readiness, None).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            last = publish(&*store, &writer, &reporter, &readiness, Some(last)).await;
        }
    })
}

async fn publish(
    store: &dyn Store,
    writer: &Writer,
    reporter: &HealthReporter,
    readiness: &Readiness,
    last: Option<bool>,
) -> bool {
    let checked = tokio::time::timeout(CHECK_TIMEOUT, store.ready()).await;
    let (store_down, not_ready_because) = match checked {
        Ok(Ok(())) if writer.is_healthy() => (false, None),
        Ok(Ok(())) => (false, Some("writer failing".to_owned())),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "not ready: store check failed");
            (true, Some(format!("store: {error}")))
        }
        Err(_elapsed) => {
            tracing::warn!("not ready: store check timed out");
            (
                true,
                Some("store: no answer within the check timeout".to_owned()),
            )
        }
    };
    let ready = not_ready_because.is_none();
    readiness.record(store_down, not_ready_because);
    metrics::gauge!("eventline_ready").set(if ready { 1.0 } else { 0.0 });
    if last != Some(ready) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in SERVICES {
            reporter.set_service_status(service, status).await;
        }
        tracing::info!(ready, "readiness changed");
    }
    ready
}
