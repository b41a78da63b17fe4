//! Sends a rule's change of state to its webhook (README "Alerts": the body and how to
//! verify it) and records how the delivery went.

use std::sync::Arc;

use eventline_core::alerts::{
    AlertCondition, AlertDelivery, AlertRule, DeliveryOutcome, DeliveryResult, Evaluation,
};
use eventline_store::Store;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::webhook::{self, RetryPolicy, WebhookClient, WebhookMessage, WebhookSecret};

/// Deliveries in flight at once on a replica; more wait for a turn.
const MAX_CONCURRENT_DELIVERIES: usize = 64;

/// Delivers notifications in the background, one task each, with a shared client.
#[derive(Debug, Clone)]
pub struct Notifier {
    store: Arc<dyn Store>,
    client: WebhookClient,
    policy: RetryPolicy,
    permits: Arc<Semaphore>,
}

impl Notifier {
    pub(super) fn new(store: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        Self {
            store,
            client: WebhookClient::new(),
            policy,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES)),
        }
    }

    /// Sends `delivery` of `rule`'s change in the background and records its outcome.
    pub(super) fn send(&self, rule: &AlertRule, evaluation: &Evaluation, delivery: AlertDelivery) {
        let body = notification(rule, evaluation, &delivery).to_string();
        let url = rule.webhook_url.clone();
        let secret = WebhookSecret::parse(&rule.webhook_secret);
        let notifier = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = notifier.permits.acquire().await else {
                return;
            };
            let result = match secret {
                Ok(secret) => {
                    let message = WebhookMessage {
                        url: &url,
                        id: &delivery.delivery_id,
                        body: body.as_bytes(),
                    };
                    let sent =
                        webhook::deliver(&notifier.client, &secret, &message, &notifier.policy)
                            .await;
                    DeliveryResult {
                        outcome: if sent.outcome.is_delivered() {
                            DeliveryOutcome::Delivered
                        } else {
                            DeliveryOutcome::Failed
                        },
                        attempts: sent.attempts,
                        last_status: sent.outcome.status(),
                        last_error: sent.outcome.error().map(str::to_owned),
                    }
                }
                Err(error) => DeliveryResult {
                    outcome: DeliveryOutcome::Failed,
                    attempts: 0,
                    last_status: None,
                    last_error: Some(format!("the rule's signing secret is unreadable: {error}")),
                },
            };
            notifier.record(&delivery, &result).await;
        });
    }

    async fn record(&self, delivery: &AlertDelivery, result: &DeliveryResult) {
        let outcome = result.outcome.as_str();
        metrics::counter!("eventline_alert_notifications_total", "outcome" => outcome).increment(1);
        if result.outcome == DeliveryOutcome::Failed {
            tracing::warn!(delivery_id = %delivery.delivery_id, rule_id = %delivery.rule_id, attempts = result.attempts, error = ?result.last_error, "alert notification failed");
        }
        let recorded = self
            .store
            .finish_alert_delivery(delivery.tenant_id, &delivery.delivery_id, result)
            .await;
        if let Err(error) = recorded {
            tracing::warn!(delivery_id = %delivery.delivery_id, error = %error, "recording an alert delivery failed");
        }
    }
}

/// The JSON body of a notification, in the Standard Webhooks shape `{type, timestamp,
/// data}`.
pub(crate) fn notification(
    rule: &AlertRule,
    evaluation: &Evaluation,
    delivery: &AlertDelivery,
) -> Value {
    let window_start =
        evaluation.window_end - eventline_core::lifecycle::chrono_duration(rule.window);
    let mut data = json!({
        "tenant_id": rule.tenant_id.to_string(),
        "rule_id": rule.rule_id,
        "name": rule.name,
        "kind": rule.condition.kind(),
        "state": evaluation.state.as_str(),
        "value": evaluation.value,
        "window_seconds": rule.window_seconds(),
        "window_start": rfc3339(window_start),
        "window_end": rfc3339(evaluation.window_end),
    });
    let fields = data.as_object_mut().expect("a JSON object");
    match &rule.condition {
        AlertCondition::Threshold {
            event_type,
            comparison,
            threshold,
        } => {
            fields.insert("event_type".into(), json!(event_type));
            fields.insert("comparison".into(), json!(comparison.as_str()));
            fields.insert("threshold".into(), json!(threshold));
        }
        AlertCondition::Ratio {
            numerator_event_type,
            denominator_event_type,
            comparison,
            threshold,
            min_denominator,
        } => {
            fields.insert("numerator_event_type".into(), json!(numerator_event_type));
            fields.insert(
                "denominator_event_type".into(),
                json!(denominator_event_type),
            );
            fields.insert("comparison".into(), json!(comparison.as_str()));
            fields.insert("threshold".into(), json!(threshold));
            fields.insert("min_denominator".into(), json!(min_denominator));
        }
        AlertCondition::Spike {
            event_type,
            baseline_windows,
            sensitivity,
            min_count,
        } => {
            fields.insert("event_type".into(), json!(event_type));
            fields.insert("baseline_windows".into(), json!(baseline_windows));
            fields.insert("sensitivity".into(), json!(sensitivity));
            fields.insert("min_count".into(), json!(min_count));
        }
    }
    json!({
        "type": format!("alert.{}", evaluation.state.as_str()),
        "timestamp": rfc3339(delivery.created_at),
        "data": data,
    })
}

fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
