//! Alert rules and their delivery log on SQLite (migrations 0007 and 0010). Writes take the write
//! lock up front (`BEGIN IMMEDIATE`), as appends do; times are microseconds.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, TenantId,
    alerts::{AlertDelivery, AlertRule, DeliveryQuery, DeliveryResult, Evaluation},
};
use sqlx::{Row, sqlite::SqliteRow};

use super::{SqliteStore, from_micros, insert_audit, micros, parse_tenant_id};
use crate::{
    StoreError,
    alerts::{
        self, Alerts, ConditionColumns, RowKeys, deliveries_kept, missing_rule, rule_created_audit,
        rule_deleted_audit, sql,
    },
};

fn rule_from_row(row: &SqliteRow) -> Result<AlertRule, StoreError> {
    let keys = RowKeys {
        tenant_id: tenant(row)?,
        created_at: from_micros(row.try_get(6)?)?,
        since: from_micros(row.try_get(8)?)?,
        until: optional_time(row.try_get(10)?)?,
    };
    alerts::rule_from_row(row, keys)
}

fn delivery_from_row(row: &SqliteRow) -> Result<AlertDelivery, StoreError> {
    let keys = RowKeys {
        tenant_id: tenant(row)?,
        created_at: from_micros(row.try_get(9)?)?,
        since: from_micros(row.try_get(11)?)?,
        until: optional_time(row.try_get(10)?)?,
    };
    alerts::delivery_from_row(row, keys)
}

fn tenant(row: &SqliteRow) -> Result<TenantId, StoreError> {
    let text: String = row.try_get(0)?;
    parse_tenant_id(&text)
}

fn optional_time(value: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    value.map(from_micros).transpose()
}

#[async_trait]
impl Alerts for SqliteStore {
    async fn create_alert_rule(&self, rule: &AlertRule, actor: &Actor) -> Result<(), StoreError> {
        let condition = ConditionColumns::of(&rule.condition);
        let query = sqlx::query(sql::INSERT_RULE)
            .bind(rule.tenant_id.to_string())
            .bind(&rule.rule_id)
            .bind(&rule.name)
            .bind(i32::try_from(rule.window.as_secs()).unwrap_or(i32::MAX))
            .bind(&rule.webhook_url)
            .bind(&rule.webhook_secret)
            .bind(micros(rule.created_at))
            .bind(rule.status.state.as_str())
            .bind(micros(rule.status.since))
            .bind(rule.status.last_value)
            .bind(rule.status.evaluated_until.map(micros));
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        condition.bind(query).execute(&mut *transaction).await?;
        let audit = rule_created_audit(rule, actor);
        insert_audit(&mut transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn alert_rules(&self, tenant_id: TenantId) -> Result<Vec<AlertRule>, StoreError> {
        let rows = sqlx::query(sql::SELECT_RULES)
            .bind(tenant_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn alert_rule(
        &self,
        tenant_id: TenantId,
        rule_id: &str,
    ) -> Result<Option<AlertRule>, StoreError> {
        let row = sqlx::query(sql::SELECT_RULE)
            .bind(tenant_id.to_string())
            .bind(rule_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rule_from_row).transpose()
    }

    async fn delete_alert_rule(
        &self,
        tenant_id: TenantId,
        rule_id: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = sqlx::query(sql::DELETE_RULE)
            .bind(tenant_id.to_string())
            .bind(rule_id)
            .execute(&mut *transaction)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(missing_rule(rule_id));
        }
        sqlx::query(sql::DELETE_RULE_DELIVERIES)
            .bind(tenant_id.to_string())
            .bind(rule_id)
            .execute(&mut *transaction)
            .await?;
        let audit = rule_deleted_audit(tenant_id, rule_id, actor);
        insert_audit(&mut transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn record_alert_evaluation(
        &self,
        rule: &AlertRule,
        evaluation: &Evaluation,
    ) -> Result<Option<AlertDelivery>, StoreError> {
        if evaluation.state == rule.status.state {
            sqlx::query(sql::RECORD_VALUE)
                .bind(rule.tenant_id.to_string())
                .bind(&rule.rule_id)
                .bind(evaluation.value)
                .bind(micros(evaluation.window_end))
                .execute(&self.pool)
                .await?;
            return Ok(None);
        }
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let changed = sqlx::query(sql::CHANGE_STATE)
            .bind(rule.tenant_id.to_string())
            .bind(&rule.rule_id)
            .bind(rule.status.state.as_str())
            .bind(evaluation.state.as_str())
            .bind(micros(evaluation.window_end))
            .bind(evaluation.value)
            .execute(&mut *transaction)
            .await?;
        if changed.rows_affected() == 0 {
            return Ok(None);
        }
        let delivery = AlertDelivery::pending(rule, evaluation);
        sqlx::query(sql::INSERT_DELIVERY)
            .bind(delivery.tenant_id.to_string())
            .bind(&delivery.delivery_id)
            .bind(&delivery.rule_id)
            .bind(delivery.transition.as_str())
            .bind(delivery.value)
            .bind(delivery.outcome.as_str())
            .bind(micros(delivery.created_at))
            .bind(micros(delivery.window_end))
            .execute(&mut *transaction)
            .await?;
        let oldest_kept: Option<String> = sqlx::query_scalar(sql::OLDEST_KEPT_DELIVERY)
            .bind(rule.tenant_id.to_string())
            .bind(&rule.rule_id)
            .bind(deliveries_kept())
            .fetch_optional(&mut *transaction)
            .await?;
        if let Some(oldest_kept) = oldest_kept {
            sqlx::query(sql::DELETE_DELIVERIES_BEFORE)
                .bind(rule.tenant_id.to_string())
                .bind(&rule.rule_id)
                .bind(oldest_kept)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(Some(delivery))
    }

    async fn finish_alert_delivery(
        &self,
        tenant_id: TenantId,
        delivery_id: &str,
        result: &DeliveryResult,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::FINISH_DELIVERY)
            .bind(tenant_id.to_string())
            .bind(delivery_id)
            .bind(result.outcome.as_str())
            .bind(i64::from(result.attempts))
            .bind(result.last_status.map(i64::from))
            .bind(&result.last_error)
            .bind(micros(eventline_core::time::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_stale_deliveries(
        &self,
        tenant_id: TenantId,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AlertDelivery>, StoreError> {
        let rows = sqlx::query(sql::CLAIM_STALE)
            .bind(tenant_id.to_string())
            .bind(micros(claimed_before))
            .bind(micros(now))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn alert_deliveries(
        &self,
        query: &DeliveryQuery,
    ) -> Result<Vec<AlertDelivery>, StoreError> {
        let mut builder = sqlx::QueryBuilder::new(format!(
            "SELECT {} FROM alert_deliveries WHERE tenant_id = ",
            sql::DELIVERY_COLUMNS
        ));
        builder.push_bind(query.tenant_id.to_string());
        if let Some(rule_id) = &query.rule_id {
            builder.push(" AND rule_id = ").push_bind(rule_id);
        }
        if let Some(before) = &query.before {
            builder.push(" AND delivery_id < ").push_bind(before);
        }
        builder
            .push(" ORDER BY delivery_id DESC LIMIT ")
            .push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let rows = builder.build().fetch_all(&self.pool).await?;
        rows.iter().map(delivery_from_row).collect()
    }
}
