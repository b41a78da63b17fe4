//! Outbound streams on PostgreSQL (migration 0015). Every statement names one tenant: a
//! router statement on Citus.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{Actor, AuditAction, TenantId, streams::Subscription};
use sqlx::{Row, postgres::PgRow};

use super::{PgStore, insert_audit};
use crate::{
    StoreError,
    streams::{SUBSCRIPTION_COLUMNS, SubscriptionParts, Subscriptions, subscription_audit},
};

fn subscription_from_row(row: &PgRow) -> Result<Subscription, StoreError> {
    SubscriptionParts {
        subscription_id: row.try_get(0)?,
        tenant_id: TenantId(row.try_get(1)?),
        sink_kind: row.try_get(2)?,
        target: row.try_get(3)?,
        secret: row.try_get(4)?,
        event_types: row.try_get(5)?,
        state: row.try_get(6)?,
        last_error: row.try_get(7)?,
        events_delivered: row.try_get(8)?,
        created_at: row.try_get(9)?,
        cursor_sequence: row.try_get(10)?,
        cursor_event_id: row.try_get(11)?,
    }
    .into_subscription()
}

#[async_trait]
impl Subscriptions for PgStore {
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let tenant_id = subscription.tenant_id;
        let mut transaction = self.pool.begin().await?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE tenant_id = $1")
            .bind(tenant_id.0)
            .fetch_optional(&mut *transaction)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!(
                "tenant {tenant_id} does not exist"
            )));
        }
        sqlx::query(
            "INSERT INTO subscriptions (tenant_id, subscription_id, sink_kind, target, secret,
                 event_types, state, created_at, cursor_sequence, cursor_event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(tenant_id.0)
        .bind(&subscription.subscription_id)
        .bind(subscription.sink.kind())
        .bind(subscription.sink.target())
        .bind(&subscription.secret)
        .bind(&subscription.event_types)
        .bind(subscription.state.as_str())
        .bind(subscription.created_at)
        .bind(subscription.position.0 as i64)
        .bind(&subscription.position.1)
        .execute(&mut *transaction)
        .await?;
        let audit = subscription_audit(
            tenant_id,
            &subscription.subscription_id,
            AuditAction::SubscriptionCreated,
            actor,
            Some(&subscription.sink),
        );
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn list_subscriptions(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant_id = $1
             ORDER BY subscription_id"
        )))
        .bind(tenant_id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn delete_subscription(
        &self,
        tenant_id: TenantId,
        subscription_id: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let deleted =
            sqlx::query("DELETE FROM subscriptions WHERE tenant_id = $1 AND subscription_id = $2")
                .bind(tenant_id.0)
                .bind(subscription_id)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        let audit = subscription_audit(
            tenant_id,
            subscription_id,
            AuditAction::SubscriptionDeleted,
            actor,
            None,
        );
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(true)
    }

    async fn resume_subscription(
        &self,
        tenant_id: TenantId,
        subscription_id: &str,
        actor: &Actor,
    ) -> Result<Option<Subscription>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET state = 'active', last_error = ''
             WHERE tenant_id = $1 AND subscription_id = $2
             RETURNING {SUBSCRIPTION_COLUMNS}"
        )))
        .bind(tenant_id.0)
        .bind(subscription_id)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let audit = subscription_audit(
            tenant_id,
            subscription_id,
            AuditAction::SubscriptionResumed,
            actor,
            None,
        );
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        subscription_from_row(&row).map(Some)
    }

    async fn lease_subscriptions(
        &self,
        tenant_id: TenantId,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE subscriptions SET lease_owner = $2, lease_until = $4
             WHERE tenant_id = $1 AND state = 'active'
               AND (lease_owner = $2 OR lease_until < $3)
             RETURNING {SUBSCRIPTION_COLUMNS}"
        )))
        .bind(tenant_id.0)
        .bind(owner)
        .bind(now)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        let mut leased: Vec<Subscription> = rows
            .iter()
            .map(subscription_from_row)
            .collect::<Result<_, _>>()?;
        leased.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
        Ok(leased)
    }

    async fn release_subscriptions(
        &self,
        tenant_id: TenantId,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE subscriptions SET lease_owner = '', lease_until = '-infinity'
             WHERE tenant_id = $1 AND lease_owner = $2",
        )
        .bind(tenant_id.0)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn advance_subscription(
        &self,
        subscription: &Subscription,
        owner: &str,
        to: &(u64, String),
        delivered: u64,
    ) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE subscriptions
             SET cursor_sequence = $5, cursor_event_id = $6,
                 events_delivered = events_delivered + $7
             WHERE tenant_id = $1 AND subscription_id = $2 AND lease_owner = $8
               AND cursor_sequence = $3 AND cursor_event_id = $4",
        )
        .bind(subscription.tenant_id.0)
        .bind(&subscription.subscription_id)
        .bind(subscription.position.0 as i64)
        .bind(&subscription.position.1)
        .bind(to.0 as i64)
        .bind(&to.1)
        .bind(delivered as i64)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(moved > 0)
    }

    async fn pause_subscription(
        &self,
        subscription: &Subscription,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE subscriptions SET state = 'paused', last_error = $3
             WHERE tenant_id = $1 AND subscription_id = $2",
        )
        .bind(subscription.tenant_id.0)
        .bind(&subscription.subscription_id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
