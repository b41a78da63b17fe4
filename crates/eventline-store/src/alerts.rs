//! Alert rules, their state and their delivery log (README "Alerts"; migrations
//! postgres/0013 and sqlite/0007). Every method is scoped to one tenant by its
//! arguments (on Citus, a router statement on the tenant's worker).

use async_trait::async_trait;
use eventline_core::{
    TenantId,
    alerts::{
        AlertCondition, AlertDelivery, AlertRule, Comparison, DeliveryQuery, DeliveryResult,
        Evaluation,
    },
};

use crate::StoreError;

/// Alert rules with their state, and the notifications their changes send.
#[async_trait]
pub trait Alerts: Send + Sync {
    /// Stores a new rule with its state.
    async fn create_alert_rule(&self, rule: &AlertRule) -> Result<(), StoreError>;

    /// The tenant's rules with their state, oldest first.
    async fn alert_rules(&self, tenant_id: TenantId) -> Result<Vec<AlertRule>, StoreError>;

    /// One rule with its state.
    async fn alert_rule(
        &self,
        tenant_id: TenantId,
        rule_id: &str,
    ) -> Result<Option<AlertRule>, StoreError>;

    /// Removes a rule and its delivery log; `NotFound` when there was none.
    async fn delete_alert_rule(&self, tenant_id: TenantId, rule_id: &str)
    -> Result<(), StoreError>;

    /// Records an evaluation of `rule` (as it was read). When `evaluation.state` differs
    /// from `rule.status.state`, the state changes only if it still is the one read and
    /// no later window was evaluated (`… WHERE state = $old AND evaluated_until <
    /// $end`), together with a pending delivery in one transaction, and the delivery is
    /// returned: of several replicas evaluating at once, one gets it. Otherwise the
    /// value and window end are recorded (unless a later window was) and `None` is
    /// returned.
    async fn record_alert_evaluation(
        &self,
        rule: &AlertRule,
        evaluation: &Evaluation,
    ) -> Result<Option<AlertDelivery>, StoreError>;

    /// Records how a delivery ended.
    async fn finish_alert_delivery(
        &self,
        tenant_id: TenantId,
        delivery_id: &str,
        result: &DeliveryResult,
    ) -> Result<(), StoreError>;

    /// Reads one page of the delivery log, newest first.
    async fn alert_deliveries(
        &self,
        query: &DeliveryQuery,
    ) -> Result<Vec<AlertDelivery>, StoreError>;
}

/// A condition as the `alert_rules` columns hold it, the same on both backends.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ConditionColumns {
    pub(crate) kind: String,
    pub(crate) event_type: Option<String>,
    pub(crate) denominator_event_type: Option<String>,
    pub(crate) comparison: Option<String>,
    pub(crate) threshold: Option<f64>,
    pub(crate) min_denominator: Option<i64>,
    pub(crate) baseline_windows: Option<i32>,
    pub(crate) sensitivity: Option<f64>,
    pub(crate) min_count: Option<i64>,
}

impl ConditionColumns {
    pub(crate) fn of(condition: &AlertCondition) -> Self {
        let kind = condition.kind().to_owned();
        match condition {
            AlertCondition::Threshold {
                event_type,
                comparison,
                threshold,
            } => Self {
                kind,
                event_type: event_type.clone(),
                comparison: Some(comparison.as_str().to_owned()),
                threshold: Some(*threshold),
                ..Self::default()
            },
            AlertCondition::Ratio {
                numerator_event_type,
                denominator_event_type,
                comparison,
                threshold,
                min_denominator,
            } => Self {
                kind,
                event_type: Some(numerator_event_type.clone()),
                denominator_event_type: denominator_event_type.clone(),
                comparison: Some(comparison.as_str().to_owned()),
                threshold: Some(*threshold),
                min_denominator: Some(saturating_i64(*min_denominator)),
                ..Self::default()
            },
            AlertCondition::Spike {
                event_type,
                baseline_windows,
                sensitivity,
                min_count,
            } => Self {
                kind,
                event_type: Some(event_type.clone()),
                baseline_windows: Some(i32::try_from(*baseline_windows).unwrap_or(i32::MAX)),
                sensitivity: Some(*sensitivity),
                min_count: Some(saturating_i64(*min_count)),
                ..Self::default()
            },
        }
    }

    pub(crate) fn into_condition(self) -> Result<AlertCondition, StoreError> {
        let missing = |column: &str| {
            StoreError::Internal(format!("alert rule of kind {} without {column}", self.kind))
        };
        let comparison = || {
            let text = self
                .comparison
                .as_deref()
                .ok_or_else(|| missing("comparison"))?;
            Comparison::parse(text).map_err(StoreError::Internal)
        };
        let threshold = || self.threshold.ok_or_else(|| missing("threshold"));
        let event_type = || self.event_type.clone().ok_or_else(|| missing("event_type"));
        match self.kind.as_str() {
            "threshold" => Ok(AlertCondition::Threshold {
                event_type: self.event_type.clone(),
                comparison: comparison()?,
                threshold: threshold()?,
            }),
            "ratio" => Ok(AlertCondition::Ratio {
                numerator_event_type: event_type()?,
                denominator_event_type: self.denominator_event_type.clone(),
                comparison: comparison()?,
                threshold: threshold()?,
                min_denominator: self.min_denominator.unwrap_or(1).max(1) as u64,
            }),
            "spike" => Ok(AlertCondition::Spike {
                event_type: event_type()?,
                baseline_windows: self
                    .baseline_windows
                    .ok_or_else(|| missing("baseline_windows"))?
                    .max(1) as u32,
                sensitivity: self.sensitivity.ok_or_else(|| missing("sensitivity"))?,
                min_count: self.min_count.unwrap_or(0).max(0) as u64,
            }),
            other => Err(StoreError::Internal(format!(
                "unknown alert rule kind {other:?}"
            ))),
        }
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The error of a rule that does not exist.
pub(crate) fn missing_rule(rule_id: &str) -> StoreError {
    StoreError::NotFound(format!("alert rule {rule_id:?} does not exist"))
}

/// Deliveries kept per rule, as a bind value.
pub(crate) fn deliveries_kept() -> i64 {
    eventline_core::alerts::MAX_DELIVERIES_PER_RULE as i64
}
