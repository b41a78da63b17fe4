//! AdminService's data lifecycle RPCs (README "Data lifecycle"): user deletions,
//! retention, the quarantine and event schemas. Each takes the admin token or an
//! admin-scoped key of the tenant it names, and every change is audited.

use std::sync::Arc;

use eventline_core::{
    Error, IngestClock, TenantId,
    lifecycle::{EventSchema, QuarantineQuery, QuarantinedEvent, Retention, SchemaMode},
    limits,
};
use eventline_proto::v1;
use tokio::sync::Notify;

use super::{AdminApi, may_manage};
use crate::{auth::Principal, ingest, quarantine::IngestChecks, writer::Writer};

/// What the lifecycle RPCs need beyond the store: the writer that stores replayed
/// events, the schema cache to refresh, and the background task to wake.
#[derive(Debug, Clone)]
pub struct LifecycleParts {
    pub(crate) checks: IngestChecks,
    pub(crate) writer: Writer,
    pub(crate) wake: Arc<Notify>,
}

/// Most quarantined events one ReplayQuarantined or PurgeQuarantined names.
const MAX_NAMED_EVENTS: usize = 1_000;
/// Events replayed per batch with `all`.
const REPLAY_BATCH: usize = 1_000;

impl AdminApi {
    /// The tenant a lifecycle request names, once the caller may manage it.
    pub(super) async fn managed_tenant(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        tenant_id: &str,
    ) -> Result<(Principal, TenantId), Error> {
        let principal = self.auth.admin(metadata).await?;
        let tenant_id = TenantId::parse("tenant_id", tenant_id)?;
        may_manage(&principal, tenant_id)?;
        Ok((principal, tenant_id))
    }

    pub(super) async fn delete_user_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::DeleteUserRequest,
    ) -> Result<v1::DeleteUserResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let chars = body.user_id.chars().count();
        if chars == 0 || chars > limits::MAX_ID_CHARS {
            return Err(Error::invalid(
                "user_id",
                format!(
                    "must be 1 to {} characters, got {chars}",
                    limits::MAX_ID_CHARS
                ),
            ));
        }
        let deletion = self
            .store
            .request_deletion(tenant_id, &body.user_id, &principal.actor())
            .await?;
        self.lifecycle.wake.notify_one();
        Ok(v1::DeleteUserResponse {
            deletion: Some(deletion.to_proto()),
        })
    }

    pub(super) async fn get_deletion_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::GetDeletionRequest,
    ) -> Result<v1::GetDeletionResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let deletion = self
            .store
            .deletion(tenant_id, &body.deletion_id)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("deletion {:?} does not exist", body.deletion_id))
            })?;
        Ok(v1::GetDeletionResponse {
            deletion: Some(deletion.to_proto()),
        })
    }

    pub(super) async fn get_retention_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::GetRetentionRequest,
    ) -> Result<v1::GetRetentionResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let retention = self.store.retention_policy(tenant_id).await?;
        Ok(v1::GetRetentionResponse {
            retention: Some(retention.to_proto()),
        })
    }

    pub(super) async fn set_retention_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::SetRetentionRequest,
    ) -> Result<v1::SetRetentionResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let retention = Retention::from_proto("retention", body.retention.as_ref())?;
        self.store
            .set_retention_policy(tenant_id, retention, &principal.actor())
            .await?;
        self.lifecycle.wake.notify_one();
        Ok(v1::SetRetentionResponse {
            retention: Some(retention.to_proto()),
        })
    }

    pub(super) async fn list_quarantined_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::ListQuarantinedRequest,
    ) -> Result<v1::ListQuarantinedResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let limit = eventline_core::request::page_size(body.page_size)?;
        let mut events = self
            .store
            .list_quarantined(&QuarantineQuery {
                tenant_id,
                event_type: non_empty(body.event_type),
                before: non_empty(body.page_token),
                limit: limit + 1,
            })
            .await?;
        let next_page_token = if events.len() > limit {
            events.truncate(limit);
            events
                .last()
                .map_or_else(String::new, |last| last.quarantine_id.clone())
        } else {
            String::new()
        };
        Ok(v1::ListQuarantinedResponse {
            events: events.iter().map(QuarantinedEvent::to_proto).collect(),
            next_page_token,
        })
    }

    pub(super) async fn replay_quarantined_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::ReplayQuarantinedRequest,
    ) -> Result<v1::ReplayQuarantinedResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        check_selection(&body.quarantine_ids, body.all)?;
        let mut answer = v1::ReplayQuarantinedResponse::default();
        if body.all {
            // Oldest first would need another index; newest first, page by page, with
            // each page's still-invalid events skipped by the cursor.
            let mut before = None;
            loop {
                let page = self
                    .store
                    .list_quarantined(&QuarantineQuery {
                        tenant_id,
                        event_type: non_empty(body.event_type.clone()),
                        before: before.clone(),
                        limit: REPLAY_BATCH,
                    })
                    .await?;
                let Some(last) = page.last() else { break };
                before = Some(last.quarantine_id.clone());
                let full = page.len() == REPLAY_BATCH;
                self.replay(tenant_id, page, &mut answer).await?;
                if !full {
                    break;
                }
            }
        } else {
            let events = self
                .store
                .quarantined(tenant_id, &body.quarantine_ids)
                .await?;
            self.replay(tenant_id, events, &mut answer).await?;
        }
        let mut audit = eventline_core::AuditEvent::new(
            tenant_id,
            &principal.actor(),
            eventline_core::AuditAction::QuarantineReplayed,
            &tenant_id.to_string(),
        );
        for (name, value) in [
            ("accepted", answer.accepted),
            ("duplicates", answer.duplicates),
            ("rejected", answer.rejected),
        ] {
            audit.details.insert(name.into(), value.to_string());
        }
        self.store.record_audit(&audit).await?;
        Ok(answer)
    }

    /// Validates `events` again and stores the valid ones through the writer, exactly as
    /// IngestBatch would; those stored (or found stored already) leave the quarantine,
    /// the rest stay with their new reason.
    async fn replay(
        &self,
        tenant_id: TenantId,
        events: Vec<QuarantinedEvent>,
        answer: &mut v1::ReplayQuarantinedResponse,
    ) -> Result<(), Error> {
        let mut ids = Vec::with_capacity(events.len());
        let mut sent = Vec::with_capacity(events.len());
        for event in events {
            match serde_json::from_str::<v1::Event>(&event.payload) {
                Ok(decoded) => {
                    ids.push(event.quarantine_id);
                    sent.push(decoded);
                }
                Err(error) => {
                    let reason = format!("payload: does not decode as an event: {error}");
                    self.still_rejected(tenant_id, &event, reason, answer)
                        .await?;
                }
            }
        }
        let screened =
            ingest::screen(&self.lifecycle.checks, tenant_id, sent, &IngestClock::now()).await?;
        let commit = self.lifecycle.writer.submit(screened.events).await?;
        let mut done = Vec::with_capacity(ids.len());
        for (position, outcome) in screened.positions.iter().zip(&commit.outcomes) {
            match outcome {
                eventline_core::IngestOutcome::Accepted => answer.accepted += 1,
                eventline_core::IngestOutcome::Duplicate => answer.duplicates += 1,
            }
            done.push(ids[*position].clone());
        }
        for (position, result) in screened.results.into_iter().enumerate() {
            if result.status == v1::IngestStatus::Rejected as i32 {
                self.store
                    .set_quarantine_reason(tenant_id, &ids[position], &result.error)
                    .await?;
                answer.rejected += 1;
                push_result(answer, result);
            }
        }
        self.store.remove_quarantined(tenant_id, &done).await?;
        Ok(())
    }

    async fn still_rejected(
        &self,
        tenant_id: TenantId,
        event: &QuarantinedEvent,
        reason: String,
        answer: &mut v1::ReplayQuarantinedResponse,
    ) -> Result<(), Error> {
        self.store
            .set_quarantine_reason(tenant_id, &event.quarantine_id, &reason)
            .await?;
        answer.rejected += 1;
        push_result(
            answer,
            v1::EventResult {
                event_id: event.event_id.clone(),
                status: v1::IngestStatus::Rejected as i32,
                error: reason,
                index: 0,
            },
        );
        Ok(())
    }

    pub(super) async fn purge_quarantined_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::PurgeQuarantinedRequest,
    ) -> Result<v1::PurgeQuarantinedResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        check_selection(&body.quarantine_ids, body.all)?;
        let purged = if body.all {
            let event_type = non_empty(body.event_type);
            self.store
                .purge_quarantined(tenant_id, event_type.as_deref())
                .await?
        } else {
            self.store
                .remove_quarantined(tenant_id, &body.quarantine_ids)
                .await?
        };
        let mut audit = eventline_core::AuditEvent::new(
            tenant_id,
            &principal.actor(),
            eventline_core::AuditAction::QuarantinePurged,
            &tenant_id.to_string(),
        );
        audit.details.insert("purged".into(), purged.to_string());
        self.store.record_audit(&audit).await?;
        Ok(v1::PurgeQuarantinedResponse { purged })
    }

    pub(super) async fn set_event_schema_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::SetEventSchemaRequest,
    ) -> Result<v1::SetEventSchemaResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        check_event_type(&body.event_type)?;
        let mode = SchemaMode::from_proto("mode", body.mode)?;
        let schema = body
            .schema
            .ok_or_else(|| Error::invalid("schema", "is required: a JSON Schema object"))?;
        let schema_value = schema
            .to_struct()
            .ok()
            .and_then(|object| serde_json::to_value(&object).ok())
            .ok_or_else(|| Error::invalid("schema", "is not a JSON object"))?;
        crate::schemas::compile("schema", &schema_value)?;
        let stored = EventSchema {
            tenant_id,
            event_type: body.event_type,
            schema_json: schema_value.to_string(),
            mode,
            updated_at: eventline_core::time::now(),
        };
        self.store.put_schema(&stored, &principal.actor()).await?;
        self.lifecycle.checks.schemas.invalidate(tenant_id);
        Ok(v1::SetEventSchemaResponse {
            schema: Some(schema_to_proto(&stored, Some(schema))),
        })
    }

    pub(super) async fn list_event_schemas_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::ListEventSchemasRequest,
    ) -> Result<v1::ListEventSchemasResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let schemas = self.store.list_schemas(tenant_id).await?;
        Ok(v1::ListEventSchemasResponse {
            schemas: schemas
                .iter()
                .map(|schema| schema_to_proto(schema, None))
                .collect(),
        })
    }

    pub(super) async fn delete_event_schema_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::DeleteEventSchemaRequest,
    ) -> Result<v1::DeleteEventSchemaResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        check_event_type(&body.event_type)?;
        self.store
            .delete_schema(tenant_id, &body.event_type, &principal.actor())
            .await?;
        self.lifecycle.checks.schemas.invalidate(tenant_id);
        Ok(v1::DeleteEventSchemaResponse {})
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn check_selection(quarantine_ids: &[String], all: bool) -> Result<(), Error> {
    match (quarantine_ids.len(), all) {
        (0, false) => Err(Error::invalid(
            "quarantine_ids",
            "name at least one event, or set all",
        )),
        (_, true) if !quarantine_ids.is_empty() => Err(Error::invalid(
            "all",
            "cannot be set together with quarantine_ids",
        )),
        (count, _) if count > MAX_NAMED_EVENTS => Err(Error::invalid(
            "quarantine_ids",
            format!("names {count} events, over the limit of {MAX_NAMED_EVENTS}"),
        )),
        _ => Ok(()),
    }
}

fn check_event_type(event_type: &str) -> Result<(), Error> {
    let chars = event_type.chars().count();
    if chars == 0 || chars > limits::MAX_EVENT_TYPE_CHARS {
        return Err(Error::invalid(
            "event_type",
            format!(
                "must be 1 to {} characters, got {chars}",
                limits::MAX_EVENT_TYPE_CHARS
            ),
        ));
    }
    if event_type.chars().any(char::is_control) {
        return Err(Error::invalid(
            "event_type",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Keeps at most [`MAX_NAMED_EVENTS`] results: the counts stay exact.
fn push_result(answer: &mut v1::ReplayQuarantinedResponse, result: v1::EventResult) {
    if answer.results.len() < MAX_NAMED_EVENTS {
        answer.results.push(result);
    }
}

fn schema_to_proto(
    schema: &EventSchema,
    sent: Option<eventline_proto::Properties>,
) -> v1::EventSchema {
    let body = sent.or_else(|| match serde_json::from_str(&schema.schema_json) {
        Ok(serde_json::Value::Object(object)) => {
            Some(eventline_proto::Properties::from_json(object))
        }
        _ => None,
    });
    v1::EventSchema {
        event_type: schema.event_type.clone(),
        schema: body,
        mode: schema.mode.to_proto() as i32,
        update_time: Some(eventline_core::time::to_proto(schema.updated_at)),
    }
}
