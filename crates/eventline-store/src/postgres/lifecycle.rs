//! The data lifecycle on PostgreSQL (migration 0010). Every statement names one tenant,
//! so on Citus each is a router query on the tenant's worker.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, AuditAction, AuditEvent, TenantId,
    lifecycle::{
        Deletion, DeletionState, EventSchema, QuarantineQuery, QuarantinedEvent, Retention,
        SchemaMode,
    },
};
use sqlx::{Row, postgres::PgRow};

use super::{PgStore, copy, insert_audit, search::unsearch};
use crate::{
    StoreError,
    lifecycle::{
        Expiry, Quarantine, Schemas, UserDeletions, deletion_finished_audit, missing_schema,
        retention_audit, retention_columns, retention_from_columns, schema_audit, touched_buckets,
    },
};

const DELETION_COLUMNS: &str =
    "deletion_id, tenant_id, user_id, state, events_deleted, requested_at, finished_at";

fn deletion_from_row(row: &PgRow) -> Result<Deletion, StoreError> {
    let state: String = row.try_get(3)?;
    let events_deleted: i64 = row.try_get(4)?;
    Ok(Deletion {
        deletion_id: row.try_get(0)?,
        tenant_id: TenantId(row.try_get(1)?),
        user_id: row.try_get(2)?,
        state: DeletionState::parse(&state).map_err(StoreError::Internal)?,
        events_deleted: events_deleted.max(0) as u64,
        requested_at: row.try_get(5)?,
        finished_at: row.try_get(6)?,
    })
}

#[async_trait]
impl UserDeletions for PgStore {
    async fn request_deletion(
        &self,
        tenant_id: TenantId,
        user_id: &str,
        actor: &Actor,
    ) -> Result<Deletion, StoreError> {
        let deletion = Deletion::new(tenant_id, user_id);
        let mut transaction = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO user_deletions (tenant_id, deletion_id, user_id, state, requested_at)
             VALUES ($1, $2, $3, 'pending', $4)
             ON CONFLICT (tenant_id, user_id) WHERE state <> 'done' DO NOTHING",
        )
        .bind(tenant_id.0)
        .bind(&deletion.deletion_id)
        .bind(user_id)
        .bind(deletion.requested_at)
        .execute(&mut *transaction)
        .await?;
        if inserted.rows_affected() == 0 {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {DELETION_COLUMNS} FROM user_deletions
                 WHERE tenant_id = $1 AND user_id = $2 AND state <> 'done'"
            )))
            .bind(tenant_id.0)
            .bind(user_id)
            .fetch_one(&mut *transaction)
            .await?;
            transaction.commit().await?;
            return deletion_from_row(&row);
        }
        let mut audit = AuditEvent::new(
            tenant_id,
            actor,
            AuditAction::UserDeletionRequested,
            &deletion.deletion_id,
        );
        audit.details.insert("user_id".into(), user_id.to_owned());
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(deletion)
    }

    async fn deletion(
        &self,
        tenant_id: TenantId,
        deletion_id: &str,
    ) -> Result<Option<Deletion>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELETION_COLUMNS} FROM user_deletions
             WHERE tenant_id = $1 AND deletion_id = $2"
        )))
        .bind(tenant_id.0)
        .bind(deletion_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deletion_from_row).transpose()
    }

    async fn unfinished_deletions(&self, tenant_id: TenantId) -> Result<Vec<Deletion>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELETION_COLUMNS} FROM user_deletions
             WHERE tenant_id = $1 AND state <> 'done' ORDER BY deletion_id"
        )))
        .bind(tenant_id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deletion_from_row).collect()
    }

    async fn delete_user_events(
        &self,
        deletion: &Deletion,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let tenant_id = deletion.tenant_id.0;
        let mut transaction = self.pool.begin().await?;
        // Only what was stored before the request: a later event of the same user id is
        // a new one, kept.
        let (deleted, event_ids): (Vec<(DateTime<Utc>, String)>, Vec<String>) =
            sqlx::query_as::<_, (DateTime<Utc>, String, String)>(
                r#"DELETE FROM events WHERE tenant_id = $1 AND event_id IN (
                       SELECT event_id FROM events
                       WHERE tenant_id = $1 AND user_id = $2 AND received_at <= $3
                       LIMIT $4)
                   RETURNING "timestamp", event_type, event_id"#,
            )
            .bind(tenant_id)
            .bind(&deletion.user_id)
            .bind(deletion.requested_at)
            .bind(limit as i64)
            .fetch_all(&mut *transaction)
            .await?
            .into_iter()
            .map(|(time, event_type, event_id)| ((time, event_type), event_id))
            .unzip();
        unsearch(&mut transaction, deletion.tenant_id, &event_ids).await?;
        copy::subtract_from_rollups(&mut transaction, tenant_id, &deleted).await?;
        // Summaries of these buckets counted the user; the next read rebuilds them.
        let buckets = touched_buckets(deleted.iter().map(|(time, _)| *time));
        if !buckets.is_empty() {
            sqlx::query("DELETE FROM bucket_summaries WHERE tenant_id = $1 AND bucket = ANY($2)")
                .bind(tenant_id)
                .bind(&buckets)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query(
            "UPDATE user_deletions SET state = 'running', events_deleted = events_deleted + $3
             WHERE tenant_id = $1 AND deletion_id = $2",
        )
        .bind(tenant_id)
        .bind(&deletion.deletion_id)
        .bind(deleted.len() as i64)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(deleted.len() as u64)
    }

    async fn finish_deletion(&self, deletion: &Deletion) -> Result<Deletion, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE user_deletions SET state = 'done', finished_at = coalesce(finished_at, $3)
             WHERE tenant_id = $1 AND deletion_id = $2 RETURNING {DELETION_COLUMNS}"
        )))
        .bind(deletion.tenant_id.0)
        .bind(&deletion.deletion_id)
        .bind(eventline_core::time::now())
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "deletion {:?} does not exist",
                deletion.deletion_id
            ))
        })?;
        let finished = deletion_from_row(&row)?;
        let audit = deletion_finished_audit(&finished);
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(finished)
    }
}

#[async_trait]
impl Expiry for PgStore {
    async fn retention_policy(&self, tenant_id: TenantId) -> Result<Retention, StoreError> {
        let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT raw_retention_seconds, rollup_retention_seconds FROM tenants
             WHERE tenant_id = $1",
        )
        .bind(tenant_id.0)
        .fetch_optional(&self.pool)
        .await?;
        let (raw, rollups) =
            row.ok_or_else(|| StoreError::NotFound(format!("tenant {tenant_id} does not exist")))?;
        retention_from_columns(raw, rollups)
    }

    async fn set_retention_policy(
        &self,
        tenant_id: TenantId,
        retention: Retention,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let (raw, rollups) = retention_columns(retention);
        let mut transaction = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tenants SET raw_retention_seconds = $2, rollup_retention_seconds = $3
             WHERE tenant_id = $1",
        )
        .bind(tenant_id.0)
        .bind(raw)
        .bind(rollups)
        .execute(&mut *transaction)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "tenant {tenant_id} does not exist"
            )));
        }
        let audit = retention_audit(tenant_id, retention, actor);
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn expire_events(
        &self,
        tenant_id: TenantId,
        before: DateTime<Utc>,
        received_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let event_ids: Vec<String> = sqlx::query_scalar(
            r#"DELETE FROM events WHERE tenant_id = $1 AND event_id IN (
                   SELECT event_id FROM events
                   WHERE tenant_id = $1 AND "timestamp" < $2 AND received_at < $3
                   LIMIT $4)
               RETURNING event_id"#,
        )
        .bind(tenant_id.0)
        .bind(before)
        .bind(received_before)
        .bind(limit as i64)
        .fetch_all(&mut *transaction)
        .await?;
        unsearch(&mut transaction, tenant_id, &event_ids).await?;
        transaction.commit().await?;
        Ok(event_ids.len() as u64)
    }

    async fn expire_rollups(
        &self,
        tenant_id: TenantId,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Only buckets that end by `before`: a bucket across it still counts newer events.
        // The bounds are computed here: Citus refuses a DELETE that does date arithmetic
        // on a column (a STABLE function of it).
        let hour = chrono::TimeDelta::hours(1);
        let day = chrono::TimeDelta::days(1);
        let statements = [
            (
                "DELETE FROM event_rollups_minutely WHERE tenant_id = $1 AND minute <= $2",
                before - chrono::TimeDelta::minutes(1),
                None,
            ),
            (
                "DELETE FROM event_rollups_hourly WHERE tenant_id = $1 AND hour <= $2",
                before - hour,
                None,
            ),
            (
                "DELETE FROM event_rollups_daily WHERE tenant_id = $1 AND day <= $2",
                before - day,
                None,
            ),
            (
                "DELETE FROM bucket_summaries WHERE tenant_id = $1
                 AND ((width_seconds IN (60, 3600) AND bucket <= $2)
                      OR (width_seconds = 86400 AND bucket <= $3))",
                before - hour,
                Some(before - day),
            ),
        ];
        let mut transaction = self.pool.begin().await?;
        let mut deleted = 0;
        for (statement, bound, day_bound) in statements {
            let mut query = sqlx::query(statement).bind(tenant_id.0).bind(bound);
            if let Some(day_bound) = day_bound {
                query = query.bind(day_bound);
            }
            deleted += query.execute(&mut *transaction).await?.rows_affected();
        }
        transaction.commit().await?;
        Ok(deleted)
    }
}

const QUARANTINE_COLUMNS: &str =
    "quarantine_id, tenant_id, event_id, event_type, reason, payload, received_at";

fn quarantined_from_row(row: &PgRow) -> Result<QuarantinedEvent, StoreError> {
    Ok(QuarantinedEvent {
        quarantine_id: row.try_get(0)?,
        tenant_id: TenantId(row.try_get(1)?),
        event_id: row.try_get(2)?,
        event_type: row.try_get(3)?,
        reason: row.try_get(4)?,
        payload: row.try_get(5)?,
        received_at: row.try_get(6)?,
    })
}

#[async_trait]
impl Quarantine for PgStore {
    async fn quarantine(
        &self,
        events: &[QuarantinedEvent],
        keep_per_tenant: u64,
    ) -> Result<u64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut transaction = self.pool.begin().await?;
        // One statement per 1,000 events (7,000 parameters): a bad SDK release can send
        // whole batches of rejects.
        for chunk in events.chunks(1_000) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO quarantined_events
                     (tenant_id, quarantine_id, event_id, event_type, reason, payload, received_at) ",
            );
            insert.push_values(chunk, |mut row, event| {
                row.push_bind(event.tenant_id.0)
                    .push_bind(&event.quarantine_id)
                    .push_bind(&event.event_id)
                    .push_bind(&event.event_type)
                    .push_bind(&event.reason)
                    .push_bind(&event.payload)
                    .push_bind(event.received_at);
            });
            insert.build().execute(&mut *transaction).await?;
        }
        let mut tenants: Vec<TenantId> = events.iter().map(|event| event.tenant_id).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut dropped = 0;
        for tenant_id in tenants {
            dropped += sqlx::query(
                "DELETE FROM quarantined_events WHERE tenant_id = $1 AND quarantine_id <= (
                     SELECT quarantine_id FROM quarantined_events WHERE tenant_id = $1
                     ORDER BY quarantine_id DESC OFFSET $2 LIMIT 1)",
            )
            .bind(tenant_id.0)
            .bind(keep_per_tenant as i64)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        }
        transaction.commit().await?;
        Ok(dropped)
    }

    async fn list_quarantined(
        &self,
        query: &QuarantineQuery,
    ) -> Result<Vec<QuarantinedEvent>, StoreError> {
        let mut sql = sqlx::QueryBuilder::new(format!(
            "SELECT {QUARANTINE_COLUMNS} FROM quarantined_events WHERE tenant_id = "
        ));
        sql.push_bind(query.tenant_id.0);
        if let Some(event_type) = &query.event_type {
            sql.push(" AND event_type = ").push_bind(event_type.clone());
        }
        if let Some(before) = &query.before {
            sql.push(" AND quarantine_id < ").push_bind(before.clone());
        }
        sql.push(" ORDER BY quarantine_id DESC LIMIT ")
            .push_bind(query.limit as i64);
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(quarantined_from_row).collect()
    }

    async fn quarantined(
        &self,
        tenant_id: TenantId,
        quarantine_ids: &[String],
    ) -> Result<Vec<QuarantinedEvent>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {QUARANTINE_COLUMNS} FROM quarantined_events
             WHERE tenant_id = $1 AND quarantine_id = ANY($2) ORDER BY quarantine_id"
        )))
        .bind(tenant_id.0)
        .bind(quarantine_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(quarantined_from_row).collect()
    }

    async fn set_quarantine_reason(
        &self,
        tenant_id: TenantId,
        quarantine_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE quarantined_events SET reason = $3 WHERE tenant_id = $1 AND quarantine_id = $2",
        )
        .bind(tenant_id.0)
        .bind(quarantine_id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_quarantined(
        &self,
        tenant_id: TenantId,
        quarantine_ids: &[String],
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM quarantined_events WHERE tenant_id = $1 AND quarantine_id = ANY($2)",
        )
        .bind(tenant_id.0)
        .bind(quarantine_ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_quarantined(
        &self,
        tenant_id: TenantId,
        event_type: Option<&str>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM quarantined_events
             WHERE tenant_id = $1 AND ($2::text IS NULL OR event_type = $2)",
        )
        .bind(tenant_id.0)
        .bind(event_type)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Schemas for PgStore {
    async fn put_schema(&self, schema: &EventSchema, actor: &Actor) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO event_schemas (tenant_id, event_type, schema, mode, updated_at)
             VALUES ($1, $2, $3::jsonb, $4, $5)
             ON CONFLICT (tenant_id, event_type) DO UPDATE
             SET schema = EXCLUDED.schema, mode = EXCLUDED.mode, updated_at = EXCLUDED.updated_at",
        )
        .bind(schema.tenant_id.0)
        .bind(&schema.event_type)
        .bind(&schema.schema_json)
        .bind(schema.mode.as_str())
        .bind(schema.updated_at)
        .execute(&mut *transaction)
        .await
        .map_err(|error| crate::missing_tenant(StoreError::from(error), schema.tenant_id))?;
        let audit = schema_audit(
            schema.tenant_id,
            &schema.event_type,
            AuditAction::SchemaSet,
            Some(schema.mode),
            actor,
        );
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn delete_schema(
        &self,
        tenant_id: TenantId,
        event_type: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        let done =
            sqlx::query("DELETE FROM event_schemas WHERE tenant_id = $1 AND event_type = $2")
                .bind(tenant_id.0)
                .bind(event_type)
                .execute(&mut *transaction)
                .await?;
        if done.rows_affected() == 0 {
            return Err(missing_schema(event_type));
        }
        let audit = schema_audit(
            tenant_id,
            event_type,
            AuditAction::SchemaDeleted,
            None,
            actor,
        );
        insert_audit(&mut *transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn list_schemas(&self, tenant_id: TenantId) -> Result<Vec<EventSchema>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_type, schema::text, mode, updated_at FROM event_schemas
             WHERE tenant_id = $1 ORDER BY event_type",
        )
        .bind(tenant_id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let mode: String = row.try_get(2)?;
                Ok(EventSchema {
                    tenant_id,
                    event_type: row.try_get(0)?,
                    schema_json: row.try_get(1)?,
                    mode: SchemaMode::parse(&mode).map_err(StoreError::Internal)?,
                    updated_at: row.try_get(3)?,
                })
            })
            .collect()
    }
}
