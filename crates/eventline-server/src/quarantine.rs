//! What ingest does beyond the fixed validation rules (README "Data lifecycle"): checks
//! events against their type's schema, and keeps every rejected event in the tenant's
//! quarantine before the request is answered, so a rejection is never only a reply.

use std::sync::Arc;

use eventline_core::{
    Error, Event, TenantId,
    lifecycle::{QuarantinedEvent, chrono_duration},
};
use eventline_proto::v1;
use eventline_store::Store;
use uuid::Uuid;

use crate::schemas::{SchemaRegistry, Verdict};

/// Longest event type kept with a quarantined event (the payload keeps it whole).
const MAX_TYPE_CHARS: usize = 128;

/// The schema check and the quarantine, shared by ingest and the admin RPCs.
#[derive(Debug, Clone)]
pub struct IngestChecks {
    pub(crate) schemas: SchemaRegistry,
    store: Arc<dyn Store>,
    max_per_tenant: u64,
}

/// A rejected event on its way to the quarantine.
#[derive(Debug)]
pub(crate) struct Rejected(QuarantinedEvent);

impl Rejected {
    /// An event that failed validation, as sent; one without an id is given one here so
    /// that replaying it stores it once however often the replay runs.
    pub(crate) fn sent(tenant_id: TenantId, mut event: v1::Event, reason: String) -> Self {
        if event.event_id.is_empty() {
            event.event_id = Uuid::now_v7().to_string();
        }
        let payload = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
        Self(QuarantinedEvent {
            quarantine_id: Uuid::now_v7().to_string(),
            tenant_id,
            event_type: event.event_type.chars().take(MAX_TYPE_CHARS).collect(),
            event_id: event.event_id,
            reason,
            payload,
            received_at: eventline_core::time::now(),
        })
    }

    /// A valid event its type's schema refused, as it would have been stored.
    pub(crate) fn stored_form(event: &Event, reason: String) -> Self {
        Self(QuarantinedEvent {
            quarantine_id: Uuid::now_v7().to_string(),
            tenant_id: event.tenant_id,
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            reason,
            payload: stored_payload(event),
            received_at: event.received_at,
        })
    }
}

/// An event as proto3 JSON: the shape ReplayQuarantined reads back.
fn stored_payload(event: &Event) -> String {
    let properties: serde_json::Value =
        serde_json::from_str(&event.properties_json).unwrap_or_default();
    let mut payload = serde_json::json!({
        "event_id": event.event_id,
        "event_type": event.event_type,
        "timestamp": event
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "properties": properties,
    });
    if let Some(user_id) = &event.user_id {
        payload["user_id"] = user_id.clone().into();
    }
    if let Some(session_id) = &event.session_id {
        payload["session_id"] = session_id.clone().into();
    }
    payload.to_string()
}

/// Every counter of the quarantine at zero, so `increase()` sees the first event.
pub(crate) fn register_metrics() {
    metrics::counter!("eventline_quarantine_events_total").absolute(0);
    metrics::counter!("eventline_quarantine_dropped_total").absolute(0);
    for mode in ["enforce", "warn"] {
        metrics::counter!("eventline_schema_violations_total", "mode" => mode).absolute(0);
    }
}

impl IngestChecks {
    pub(crate) fn new(store: Arc<dyn Store>, max_per_tenant: u64) -> Self {
        Self {
            schemas: SchemaRegistry::new(Arc::clone(&store)),
            store,
            max_per_tenant,
        }
    }

    /// Stores `rejected` in the quarantine; fails (and the request with it) when it
    /// cannot, so no rejected event is answered without being kept.
    pub(crate) async fn keep(&self, rejected: Vec<Rejected>) -> Result<(), Error> {
        if rejected.is_empty() {
            return Ok(());
        }
        let events: Vec<QuarantinedEvent> = rejected.into_iter().map(|event| event.0).collect();
        let dropped = self
            .store
            .quarantine(&events, self.max_per_tenant)
            .await
            .map_err(Error::from)?;
        metrics::counter!("eventline_quarantine_events_total").increment(events.len() as u64);
        metrics::counter!("eventline_quarantine_dropped_total").increment(dropped);
        Ok(())
    }

    /// The schema verdict of each valid event.
    pub(crate) async fn check(
        &self,
        tenant_id: TenantId,
        events: &[Event],
    ) -> Result<Vec<Verdict>, Error> {
        self.schemas.check(tenant_id, events).await
    }
}

/// How long a raw event is kept after receipt whatever the retention, as chrono's.
pub(crate) fn dedupe_window(milliseconds: u64) -> chrono::TimeDelta {
    chrono_duration(std::time::Duration::from_millis(milliseconds))
}
