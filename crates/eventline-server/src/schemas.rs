//! Event schemas at ingest (README "Data lifecycle"): each tenant's JSON Schemas
//! (draft 2020-12), compiled once and cached (`tenant_cache`), checked against the
//! properties of every event whose type has one.

use std::{collections::HashMap, sync::Arc};

use eventline_core::{
    Error, Event, TenantId,
    lifecycle::{EventSchema, SchemaMode},
};
use eventline_store::Store;

use crate::tenant_cache::TenantCache;
/// Most violations reported for one event.
const MAX_VIOLATIONS: usize = 10;

/// A compiled schema.
struct Compiled {
    mode: SchemaMode,
    validator: jsonschema::Validator,
}

/// One tenant's compiled schemas by event type.
#[derive(Default)]
struct TenantSchemas {
    by_type: HashMap<String, Compiled>,
}

/// What a schema check found for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No schema, or the properties satisfy it.
    Valid,
    /// WARN mode: stored, with these violations.
    Warned(Vec<String>),
    /// ENFORCE mode: rejected, naming the first failing pointer.
    Rejected(String),
}

/// The schemas of every tenant this replica has seen lately.
#[derive(Clone)]
pub(crate) struct SchemaRegistry {
    store: Arc<dyn Store>,
    cache: TenantCache<Arc<TenantSchemas>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SchemaRegistry")
            .finish_non_exhaustive()
    }
}

/// Compiles a schema as draft 2020-12, refusing anything that does not compile.
pub(crate) fn compile(
    field: &str,
    schema: &serde_json::Value,
) -> Result<jsonschema::Validator, Error> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .map_err(|error| Error::invalid(field, format!("is not a valid JSON Schema: {error}")))
}

impl SchemaRegistry {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: TenantCache::default(),
        }
    }

    /// Drops the cached schemas of `tenant_id` (after a change on this replica).
    pub(crate) fn invalidate(&self, tenant_id: TenantId) {
        self.cache.forget(tenant_id);
    }

    async fn tenant(&self, tenant_id: TenantId) -> Result<Arc<TenantSchemas>, Error> {
        if let Some(schemas) = self.cache.fresh(tenant_id) {
            return Ok(schemas);
        }
        let stored = self
            .store
            .list_schemas(tenant_id)
            .await
            .map_err(Error::from)?;
        let schemas = Arc::new(compile_all(&stored));
        self.cache.keep(tenant_id, Arc::clone(&schemas));
        Ok(schemas)
    }

    /// Checks each event against its type's schema, if any: one verdict per event, or
    /// none at all (every event valid) when the tenant has no schema, the usual case.
    pub(crate) async fn check(
        &self,
        tenant_id: TenantId,
        events: &[Event],
    ) -> Result<Vec<Verdict>, Error> {
        let schemas = self.tenant(tenant_id).await?;
        if schemas.by_type.is_empty() {
            return Ok(Vec::new());
        }
        Ok(events
            .iter()
            .map(|event| match schemas.by_type.get(&event.event_type) {
                None => Verdict::Valid,
                Some(compiled) => verdict(compiled, event),
            })
            .collect())
    }
}

fn compile_all(stored: &[EventSchema]) -> TenantSchemas {
    let mut schemas = TenantSchemas::default();
    for schema in stored {
        // A stored schema compiled when it was set; one that no longer does (a crate
        // upgrade) is skipped and logged rather than refusing the type's events.
        let compiled = serde_json::from_str(&schema.schema_json)
            .map_err(|error| error.to_string())
            .and_then(|value| compile("schema", &value).map_err(|error| error.to_string()));
        match compiled {
            Ok(validator) => {
                schemas.by_type.insert(
                    schema.event_type.clone(),
                    Compiled {
                        mode: schema.mode,
                        validator,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(event_type = %schema.event_type, error = %error, "stored schema does not compile");
            }
        }
    }
    schemas
}

fn verdict(compiled: &Compiled, event: &Event) -> Verdict {
    let Ok(properties) = serde_json::from_str::<serde_json::Value>(&event.properties_json) else {
        return Verdict::Valid;
    };
    let violations: Vec<String> = compiled
        .validator
        .iter_errors(&properties)
        .take(MAX_VIOLATIONS)
        .map(|error| {
            let pointer = error.instance_path().to_string();
            format!("properties{pointer}: {error}")
        })
        .collect();
    if violations.is_empty() {
        return Verdict::Valid;
    }
    metrics::counter!(
        "eventline_schema_violations_total",
        "mode" => compiled.mode.as_str()
    )
    .increment(1);
    match compiled.mode {
        SchemaMode::Warn => Verdict::Warned(violations),
        SchemaMode::Enforce => Verdict::Rejected(format!(
            "does not match the schema of {:?}: {}",
            event.event_type,
            violations.join("; ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(mode: SchemaMode) -> Compiled {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"plan": {"enum": ["free", "pro"]}, "seats": {"type": "integer"}},
            "required": ["plan"]
        });
        Compiled {
            mode,
            validator: compile("schema", &schema).unwrap(),
        }
    }

    fn event(properties: &str) -> Event {
        Event {
            tenant_id: TenantId::generate(),
            event_id: "e1".into(),
            event_type: "signup".into(),
            user_id: None,
            session_id: None,
            timestamp: eventline_core::time::now(),
            client_timestamp: None,
            received_at: eventline_core::time::now(),
            properties_json: properties.into(),
        }
    }

    #[test]
    fn an_enforced_schema_names_the_failing_pointer() {
        let verdict = verdict(&compiled(SchemaMode::Enforce), &event(r#"{"plan":"gold"}"#));
        let Verdict::Rejected(reason) = verdict else {
            panic!("expected a rejection, got {verdict:?}");
        };
        assert!(reason.contains("properties/plan:"), "{reason}");
    }

    #[test]
    fn a_warned_schema_keeps_the_event_and_lists_every_violation() {
        let verdict = verdict(
            &compiled(SchemaMode::Warn),
            &event(r#"{"plan":"gold","seats":"many"}"#),
        );
        let Verdict::Warned(violations) = verdict else {
            panic!("expected warnings, got {verdict:?}");
        };
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(
            violations
                .iter()
                .any(|line| line.starts_with("properties/seats:"))
        );
    }

    #[test]
    fn valid_properties_pass_and_a_schema_that_does_not_compile_is_refused() {
        assert_eq!(
            verdict(&compiled(SchemaMode::Enforce), &event(r#"{"plan":"pro"}"#)),
            Verdict::Valid
        );
        let error = compile("schema", &serde_json::json!({"type": 12})).expect_err("bad schema");
        assert!(error.to_string().contains("schema"), "{error}");
    }
}
