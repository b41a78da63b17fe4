//! Alert rules' background task (README "Alerts"): every `alerts.evaluate_interval_ms`
//! it evaluates every tenant's rules over the whole minutes that have ended, records
//! each rule's value, and for each change of state (recorded once, however many
//! replicas evaluate: `Alerts::record_alert_evaluation` is a compare-and-set) sends a
//! signed notification to the rule's webhook, with retries, logging how it went.
//! Every replica runs one; a minute already evaluated (by any replica) is skipped. A
//! notification its server stopped sending is sent again by a later pass, with the same
//! `webhook-id` and body, once it has been pending for [`RESEND_AFTER`].

mod evaluate;
mod notify;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use eventline_core::{TenantId, alerts::AlertRule, query::BucketWidth};
use eventline_store::{Store, StoreError};
use tokio::task::JoinHandle;

use crate::webhook::RetryPolicy;

/// How long a delivery may stay pending before another pass takes it on: far longer than
/// a delivery takes with [`RetryPolicy::default`] (5 attempts of 10 s at most, 15 s of
/// waits), so a live one is never sent twice.
pub const RESEND_AFTER: Duration = Duration::from_secs(5 * 60);

pub use notify::Notifier;

/// Every counter of the task at zero, so `increase()` sees the first evaluation.
pub(crate) fn register_metrics() {
    metrics::counter!("eventline_alert_evaluations_total").absolute(0);
    metrics::counter!("eventline_alert_evaluation_errors_total").absolute(0);
    for state in ["firing", "resolved"] {
        metrics::counter!("eventline_alert_transitions_total", "state" => state).absolute(0);
    }
    for outcome in ["delivered", "failed"] {
        metrics::counter!("eventline_alert_notifications_total", "outcome" => outcome).absolute(0);
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// Rules evaluated (those whose last window ended before this one).
    pub evaluated: u64,
    /// Changes of state this replica recorded, each with a notification sent.
    pub transitions: u64,
    /// Rules whose evaluation failed; they are tried again on the next pass.
    pub errors: u64,
    /// Notifications left pending by a server that stopped, sent again.
    pub resent: u64,
}

/// Evaluates rules and sends the notifications of their changes. `main`'s server runs
/// it on an interval; tests call [`AlertEvaluator::evaluate_at`] with the time they
/// want.
#[derive(Debug, Clone)]
pub struct AlertEvaluator {
    store: Arc<dyn Store>,
    notifier: Notifier,
}

impl AlertEvaluator {
    /// An evaluator over `store`, delivering with `policy`.
    pub fn new(store: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        let notifier = Notifier::new(Arc::clone(&store), policy);
        Self { store, notifier }
    }

    /// Evaluates every tenant's rules over the windows ending at the last whole minute
    /// before `now`. Notifications go out in the background; their outcome lands in the
    /// delivery log.
    pub async fn evaluate_at(&self, now: DateTime<Utc>) -> Result<PassSummary, StoreError> {
        let window_end = BucketWidth::Minute.floor(now);
        let mut summary = PassSummary::default();
        for tenant in self.store.list_tenants().await? {
            // Before the evaluation, so what this pass records is never taken for stale.
            self.resend_stale(tenant.tenant_id, now, &mut summary)
                .await?;
            self.evaluate_tenant(tenant.tenant_id, window_end, &mut summary)
                .await?;
        }
        Ok(summary)
    }

    async fn evaluate_tenant(
        &self,
        tenant_id: TenantId,
        window_end: DateTime<Utc>,
        summary: &mut PassSummary,
    ) -> Result<(), StoreError> {
        for rule in self.store.alert_rules(tenant_id).await? {
            if rule
                .status
                .evaluated_until
                .is_some_and(|until| until >= window_end)
            {
                continue;
            }
            match self.evaluate_rule(&rule, window_end).await {
                Ok(changed) => {
                    summary.evaluated += 1;
                    summary.transitions += u64::from(changed);
                }
                Err(error) => {
                    summary.errors += 1;
                    metrics::counter!("eventline_alert_evaluation_errors_total").increment(1);
                    tracing::warn!(rule_id = %rule.rule_id, error = %error, "alert rule evaluation failed; retrying next pass");
                }
            }
        }
        Ok(())
    }

    /// Sends again the tenant's deliveries left pending by a server that stopped.
    async fn resend_stale(
        &self,
        tenant_id: TenantId,
        now: DateTime<Utc>,
        summary: &mut PassSummary,
    ) -> Result<(), StoreError> {
        let claimed_before = now - eventline_core::lifecycle::chrono_duration(RESEND_AFTER);
        let stale = self
            .store
            .claim_stale_deliveries(tenant_id, claimed_before, now)
            .await?;
        for delivery in stale {
            let Some(rule) = self.store.alert_rule(tenant_id, &delivery.rule_id).await? else {
                continue;
            };
            tracing::info!(delivery_id = %delivery.delivery_id, rule_id = %rule.rule_id, "sending an alert notification again after its server stopped");
            summary.resent += 1;
            self.notifier.send(&rule, &delivery.evaluation(), delivery);
        }
        Ok(())
    }

    /// Evaluates one rule and records it; returns whether this call changed its state.
    async fn evaluate_rule(
        &self,
        rule: &AlertRule,
        window_end: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let evaluation = evaluate::evaluate(&*self.store, rule, window_end).await?;
        metrics::counter!("eventline_alert_evaluations_total").increment(1);
        let Some(delivery) = self
            .store
            .record_alert_evaluation(rule, &evaluation)
            .await?
        else {
            return Ok(false);
        };
        let state = evaluation.state.as_str();
        metrics::counter!("eventline_alert_transitions_total", "state" => state).increment(1);
        tracing::info!(rule_id = %rule.rule_id, tenant_id = %rule.tenant_id, state, value = ?evaluation.value, "alert rule changed state");
        self.notifier.send(rule, &evaluation, delivery);
        Ok(true)
    }
}

/// The background task's settings.
#[derive(Debug, Clone)]
pub(crate) struct AlertsTask {
    pub(crate) evaluator: AlertEvaluator,
    pub(crate) interval: Duration,
}

impl AlertsTask {
    /// Runs until aborted; `None` when the interval is 0 (turned off).
    pub(crate) fn spawn(self) -> Option<JoinHandle<()>> {
        if self.interval.is_zero() {
            return None;
        }
        Some(tokio::spawn(async move {
            loop {
                let span = tracing::debug_span!("alerts.evaluate");
                let pass = self.evaluator.evaluate_at(chrono::Utc::now());
                match tracing::Instrument::instrument(pass, span).await {
                    Ok(summary) if summary.transitions > 0 => {
                        tracing::debug!(?summary, "alert rules evaluated");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        metrics::counter!("eventline_alert_evaluation_errors_total").increment(1);
                        tracing::warn!(error = %error, "evaluating alert rules failed; retrying later");
                    }
                }
                tokio::time::sleep(self.interval).await;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_in_flight_is_never_taken_for_one_its_server_left() {
        let longest = RetryPolicy::default().longest();
        assert_eq!(longest, Duration::from_secs(65));
        assert!(longest * 2 < RESEND_AFTER, "{longest:?}");
    }
}
