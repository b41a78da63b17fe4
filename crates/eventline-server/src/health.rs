//! Readiness: grpc.health.v1 reports SERVING (overall and per service) only while the
//! database answers, migrations are applied and the writer's last commit succeeded.

use std::{sync::Arc, time::Duration};

use eventline_proto::v1::{
    admin_service_server::AdminServiceServer, ingest_service_server::IngestServiceServer,
    query_service_server::QueryServiceServer,
};
use eventline_store::Store;
use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{admin::AdminApi, ingest::IngestApi, query::QueryApi, writer::Writer};

const CHECK_INTERVAL: Duration = Duration::from_secs(2);

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
) -> tokio::task::JoinHandle<()> {
    let mut last = publish(&*store, &writer, &reporter, None).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            last = publish(&*store, &writer, &reporter, Some(last)).await;
        }
    })
}

async fn publish(
    store: &dyn Store,
    writer: &Writer,
    reporter: &HealthReporter,
    last: Option<bool>,
) -> bool {
    let ready = match store.ready().await {
        Ok(()) => writer.is_healthy(),
        Err(error) => {
            tracing::warn!(error = %error, "not ready: store check failed");
            false
        }
    };
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
