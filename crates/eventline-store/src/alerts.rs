//! Alert rules, their state and their delivery log (README "Alerts"; migrations
//! postgres/0013 and 0016, sqlite/0007 and 0010). Every method is scoped to one tenant by its
//! arguments (on Citus, a router statement on the tenant's worker).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, AuditAction, AuditEvent, TenantId,
    alerts::{
        AlertCondition, AlertDelivery, AlertRule, AlertState, AlertStatus, Comparison,
        DeliveryOutcome, DeliveryQuery, DeliveryResult, Evaluation,
    },
};
use sqlx::Row;

use crate::StoreError;

/// Alert rules with their state, and the notifications their changes send.
#[async_trait]
pub trait Alerts: Send + Sync {
    /// Stores a new rule with its state, and its audit record (by `actor`).
    async fn create_alert_rule(&self, rule: &AlertRule, actor: &Actor) -> Result<(), StoreError>;

    /// The tenant's rules with their state, oldest first.
    async fn alert_rules(&self, tenant_id: TenantId) -> Result<Vec<AlertRule>, StoreError>;

    /// One rule with its state.
    async fn alert_rule(
        &self,
        tenant_id: TenantId,
        rule_id: &str,
    ) -> Result<Option<AlertRule>, StoreError>;

    /// Removes a rule and its delivery log, with its audit record (by `actor`);
    /// `NotFound` when there was none.
    async fn delete_alert_rule(
        &self,
        tenant_id: TenantId,
        rule_id: &str,
        actor: &Actor,
    ) -> Result<(), StoreError>;

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

    /// Takes on the tenant's pending deliveries last taken on before `claimed_before`
    /// (their server stopped while sending), marking them taken at `now`, and returns
    /// them: of several replicas asking at once, one gets each.
    async fn claim_stale_deliveries(
        &self,
        tenant_id: TenantId,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AlertDelivery>, StoreError>;

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

    /// Binds the columns, in `sql::INSERT_RULE`'s order, after the others.
    pub(crate) fn bind<'q, DB>(
        &self,
        query: sqlx::query::Query<'q, DB, DB::Arguments>,
    ) -> sqlx::query::Query<'q, DB, DB::Arguments>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<f64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<i32>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.kind.clone())
            .bind(self.event_type.clone())
            .bind(self.denominator_event_type.clone())
            .bind(self.comparison.clone())
            .bind(self.threshold)
            .bind(self.min_denominator)
            .bind(self.baseline_windows)
            .bind(self.sensitivity)
            .bind(self.min_count)
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

/// What the backends decode their own way: the tenant id and the times of a row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowKeys {
    pub(crate) tenant_id: TenantId,
    pub(crate) created_at: DateTime<Utc>,
    /// A rule's `state_since`, a delivery's `window_end`.
    pub(crate) since: DateTime<Utc>,
    /// A rule's `evaluated_until` or a delivery's `finished_at`.
    pub(crate) until: Option<DateTime<Utc>>,
}

/// A rule from a row of `sql::SELECT_RULES`, with the keys its backend decoded.
pub(crate) fn rule_from_row<'r, R>(row: &'r R, keys: RowKeys) -> Result<AlertRule, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let window_seconds: i32 = row.try_get(3)?;
    let state: String = row.try_get(7)?;
    let condition = ConditionColumns {
        kind: row.try_get(11)?,
        event_type: row.try_get(12)?,
        denominator_event_type: row.try_get(13)?,
        comparison: row.try_get(14)?,
        threshold: row.try_get(15)?,
        min_denominator: row.try_get(16)?,
        baseline_windows: row.try_get(17)?,
        sensitivity: row.try_get(18)?,
        min_count: row.try_get(19)?,
    };
    Ok(AlertRule {
        tenant_id: keys.tenant_id,
        rule_id: row.try_get(1)?,
        name: row.try_get(2)?,
        window: Duration::from_secs(window_seconds.max(0) as u64),
        condition: condition.into_condition()?,
        webhook_url: row.try_get(4)?,
        webhook_secret: row.try_get(5)?,
        created_at: keys.created_at,
        status: AlertStatus {
            state: AlertState::parse(&state).map_err(StoreError::Internal)?,
            since: keys.since,
            last_value: row.try_get(9)?,
            evaluated_until: keys.until,
        },
    })
}

/// A delivery from a row of `sql::DELIVERY_COLUMNS`, with the keys its backend decoded.
pub(crate) fn delivery_from_row<'r, R>(
    row: &'r R,
    keys: RowKeys,
) -> Result<AlertDelivery, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let transition: String = row.try_get(3)?;
    let outcome: String = row.try_get(5)?;
    let attempts: i32 = row.try_get(6)?;
    let last_status: Option<i32> = row.try_get(7)?;
    Ok(AlertDelivery {
        tenant_id: keys.tenant_id,
        delivery_id: row.try_get(1)?,
        rule_id: row.try_get(2)?,
        transition: AlertState::parse(&transition).map_err(StoreError::Internal)?,
        value: row.try_get(4)?,
        outcome: DeliveryOutcome::parse(&outcome).map_err(StoreError::Internal)?,
        attempts: attempts.max(0) as u32,
        last_status: last_status.and_then(|status| u16::try_from(status).ok()),
        last_error: row.try_get(8)?,
        created_at: keys.created_at,
        finished_at: keys.until,
        window_end: keys.since,
    })
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The audit record of a rule created.
pub(crate) fn rule_created_audit(rule: &AlertRule, actor: &Actor) -> AuditEvent {
    let mut audit = AuditEvent::new(
        rule.tenant_id,
        actor,
        AuditAction::AlertRuleCreated,
        &rule.rule_id,
    );
    audit.details.insert("name".into(), rule.name.clone());
    audit
        .details
        .insert("kind".into(), rule.condition.kind().to_owned());
    audit
        .details
        .insert("webhook_url".into(), rule.webhook_url.clone());
    audit
}

/// The audit record of a rule deleted.
pub(crate) fn rule_deleted_audit(tenant_id: TenantId, rule_id: &str, actor: &Actor) -> AuditEvent {
    AuditEvent::new(tenant_id, actor, AuditAction::AlertRuleDeleted, rule_id)
}

/// The error of a rule that does not exist.
pub(crate) fn missing_rule(rule_id: &str) -> StoreError {
    StoreError::NotFound(format!("alert rule {rule_id:?} does not exist"))
}

/// Deliveries kept per rule, as a bind value.
pub(crate) fn deliveries_kept() -> i64 {
    eventline_core::alerts::MAX_DELIVERIES_PER_RULE as i64
}

/// The statements, the same text on both backends: the columns have the same names
/// (SQLite keeps times as microseconds under them) and both take `$n` parameters.
pub(crate) mod sql {
    pub(crate) const DELIVERY_COLUMNS: &str = "tenant_id, delivery_id, rule_id, transition, \
         value, outcome, attempts, last_status, last_error, created_at, finished_at, window_end";

    pub(crate) const INSERT_RULE: &str = "INSERT INTO alert_rules (tenant_id, rule_id, name,
             window_seconds, webhook_url, webhook_secret, created_at, state, state_since,
             last_value, evaluated_until, kind, event_type, denominator_event_type, comparison,
             threshold, min_denominator, baseline_windows, sensitivity, min_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
             $18, $19, $20)";

    pub(crate) const SELECT_RULES: &str = "SELECT tenant_id, rule_id, name, window_seconds,
             webhook_url, webhook_secret, created_at, state, state_since, last_value,
             evaluated_until, kind, event_type, denominator_event_type, comparison, threshold,
             min_denominator, baseline_windows, sensitivity, min_count
         FROM alert_rules WHERE tenant_id = $1 ORDER BY rule_id";

    pub(crate) const SELECT_RULE: &str = "SELECT tenant_id, rule_id, name, window_seconds,
             webhook_url, webhook_secret, created_at, state, state_since, last_value,
             evaluated_until, kind, event_type, denominator_event_type, comparison, threshold,
             min_denominator, baseline_windows, sensitivity, min_count
         FROM alert_rules WHERE tenant_id = $1 AND rule_id = $2";

    pub(crate) const DELETE_RULE: &str =
        "DELETE FROM alert_rules WHERE tenant_id = $1 AND rule_id = $2";

    pub(crate) const DELETE_RULE_DELIVERIES: &str =
        "DELETE FROM alert_deliveries WHERE tenant_id = $1 AND rule_id = $2";

    /// An evaluation that keeps the state: its value, unless a later window was recorded.
    pub(crate) const RECORD_VALUE: &str = "UPDATE alert_rules
         SET last_value = $3, evaluated_until = $4
         WHERE tenant_id = $1 AND rule_id = $2
           AND (evaluated_until IS NULL OR evaluated_until < $4)";

    /// The compare-and-set of a change of state ($3 the state read, $4 the new one).
    pub(crate) const CHANGE_STATE: &str = "UPDATE alert_rules
         SET state = $4, state_since = $5, last_value = $6, evaluated_until = $5
         WHERE tenant_id = $1 AND rule_id = $2 AND state = $3
           AND (evaluated_until IS NULL OR evaluated_until < $5)";

    pub(crate) const INSERT_DELIVERY: &str = "INSERT INTO alert_deliveries (tenant_id,
             delivery_id, rule_id, transition, value, outcome, created_at, window_end,
             claimed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7)";

    pub(crate) const CLAIM_STALE: &str = "UPDATE alert_deliveries SET claimed_at = $3
         WHERE tenant_id = $1 AND outcome = 'pending' AND claimed_at < $2
         RETURNING tenant_id, delivery_id, rule_id, transition, value, outcome, attempts,
             last_status, last_error, created_at, finished_at, window_end";

    /// The oldest of a rule's newest $3 deliveries: older ones are dropped. Two plain
    /// statements rather than a DELETE with a subquery, so that each is a router
    /// statement on Citus without relying on how it plans modifications with
    /// subqueries.
    pub(crate) const OLDEST_KEPT_DELIVERY: &str = "SELECT delivery_id FROM alert_deliveries
         WHERE tenant_id = $1 AND rule_id = $2
         ORDER BY delivery_id DESC LIMIT 1 OFFSET $3 - 1";

    pub(crate) const DELETE_DELIVERIES_BEFORE: &str = "DELETE FROM alert_deliveries
         WHERE tenant_id = $1 AND rule_id = $2 AND delivery_id < $3";

    pub(crate) const FINISH_DELIVERY: &str = "UPDATE alert_deliveries
         SET outcome = $3, attempts = $4, last_status = $5, last_error = $6, finished_at = $7
         WHERE tenant_id = $1 AND delivery_id = $2";
}
