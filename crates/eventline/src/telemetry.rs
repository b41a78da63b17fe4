//! OpenTelemetry traces over OTLP/gRPC (README "Tracing"), installed only when
//! `tracing.otlp_endpoint` is set: a `tracing-opentelemetry` layer that sees the server's
//! spans whatever `log.level` says, a batch span processor, and the W3C TraceContext
//! propagator that reads callers' `traceparent` headers.

use anyhow::Context;
use eventline_server::config::TracingConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing::Level;
use tracing_subscriber::{Layer, Registry, filter::Targets};

/// How long a stopping server waits for its last spans to reach the collector.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The spans and events exported: eventline's own, at debug and above (the spans of
/// auth, validation, commits and store calls are debug spans, so with tracing off they
/// cost nothing under the default `log.level` of `info`).
fn exported() -> Targets {
    Targets::new().with_target("eventline", Level::DEBUG)
}

/// A layer of the process's subscriber, whatever its kind.
pub(crate) type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// A running exporter; [`Telemetry::shutdown`] flushes what is still queued.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// The layer exporting spans to `config.otlp_endpoint`, or nothing when it is unset.
    /// Must run inside the Tokio runtime: the OTLP client is a tonic channel.
    pub(crate) fn start(config: &TracingConfig) -> anyhow::Result<Option<(Self, BoxedLayer)>> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone());
        if endpoint.starts_with("https://") {
            // The system's roots, or those SSL_CERT_FILE / SSL_CERT_DIR name.
            exporter = exporter
                .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
        }
        let exporter = exporter
            .build()
            .with_context(|| format!("tracing.otlp_endpoint {endpoint:?} is unusable"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // A caller's traceparent decides for its trace; the ratio decides for the rest.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = provider.tracer("eventline");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(exported())
            .boxed();
        Ok(Some((Self { provider }, layer)))
    }

    /// Exports every span still queued and stops the exporter; called once the server
    /// has drained, so a SIGTERM loses no span.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        // The batch processor's thread blocks until the export is done.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(error = %error, "could not export the last spans");
        }
    }
}
