//! The data lifecycle on SQLite (migration 0004). Writes take the write lock up front
//! (`BEGIN IMMEDIATE`), as appends do.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, AuditAction, AuditEvent, TenantId,
    lifecycle::{
        Deletion, DeletionState, EventSchema, QuarantineQuery, QuarantinedEvent, Retention,
        SchemaMode,
    },
};
use sqlx::{Row, sqlite::SqliteRow};

use super::{SqliteStore, from_micros, insert_audit, micros, parse_tenant_id};
use crate::{
    StoreError, hour_of,
    lifecycle::{
        Expiry, Quarantine, Schemas, UserDeletions, deletion_finished_audit, missing_schema,
        retention_audit, retention_columns, retention_from_columns, schema_audit, touched_buckets,
    },
};

const DELETION_COLUMNS: &str =
    "deletion_id, tenant_id, user_id, state, events_deleted, requested_us, finished_us";

fn deletion_from_row(row: &SqliteRow) -> Result<Deletion, StoreError> {
    let state: String = row.try_get(3)?;
    let events_deleted: i64 = row.try_get(4)?;
    let tenant_id: String = row.try_get(1)?;
    let finished_us: Option<i64> = row.try_get(6)?;
    Ok(Deletion {
        deletion_id: row.try_get(0)?,
        tenant_id: parse_tenant_id(&tenant_id)?,
        user_id: row.try_get(2)?,
        state: DeletionState::parse(&state).map_err(StoreError::Internal)?,
        events_deleted: events_deleted.max(0) as u64,
        requested_at: from_micros(row.try_get(5)?)?,
        finished_at: finished_us.map(from_micros).transpose()?,
    })
}

#[async_trait]
impl UserDeletions for SqliteStore {
    async fn request_deletion(
        &self,
        tenant_id: TenantId,
        user_id: &str,
        actor: &Actor,
    ) -> Result<Deletion, StoreError> {
        let deletion = Deletion::new(tenant_id, user_id);
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELETION_COLUMNS} FROM user_deletions
             WHERE tenant_id = ? AND user_id = ? AND state <> 'done'"
        )))
        .bind(tenant_id.to_string())
        .bind(user_id)
        .fetch_optional(&mut *transaction)
        .await?;
        if let Some(row) = existing {
            transaction.commit().await?;
            return deletion_from_row(&row);
        }
        sqlx::query(
            "INSERT INTO user_deletions (tenant_id, deletion_id, user_id, state, requested_us)
             VALUES (?, ?, ?, 'pending', ?)",
        )
        .bind(tenant_id.to_string())
        .bind(&deletion.deletion_id)
        .bind(user_id)
        .bind(micros(deletion.requested_at))
        .execute(&mut *transaction)
        .await?;
        let mut audit = AuditEvent::new(
            tenant_id,
            actor,
            AuditAction::UserDeletionRequested,
            &deletion.deletion_id,
        );
        audit.details.insert("user_id".into(), user_id.to_owned());
        insert_audit(&mut transaction, &audit).await?;
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
            "SELECT {DELETION_COLUMNS} FROM user_deletions WHERE tenant_id = ? AND deletion_id = ?"
        )))
        .bind(tenant_id.to_string())
        .bind(deletion_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deletion_from_row).transpose()
    }

    async fn unfinished_deletions(&self, tenant_id: TenantId) -> Result<Vec<Deletion>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELETION_COLUMNS} FROM user_deletions
             WHERE tenant_id = ? AND state <> 'done' ORDER BY deletion_id"
        )))
        .bind(tenant_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deletion_from_row).collect()
    }

    async fn delete_user_events(
        &self,
        deletion: &Deletion,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let tenant_id = deletion.tenant_id.to_string();
        let mut connection = self.write_connection().await?;
        let mut transaction =
            sqlx::Connection::begin_with(&mut *connection, "BEGIN IMMEDIATE").await?;
        let deleted: Vec<(i64, String)> = sqlx::query_as(
            "DELETE FROM events WHERE tenant_id = ?1 AND event_id IN (
                 SELECT event_id FROM events
                 WHERE tenant_id = ?1 AND user_id = ?2 AND received_us <= ?3
                 LIMIT ?4)
             RETURNING timestamp_us, event_type",
        )
        .bind(&tenant_id)
        .bind(&deletion.user_id)
        .bind(micros(deletion.requested_at))
        .bind(limit as i64)
        .fetch_all(&mut *transaction)
        .await?;
        let mut per_hour: BTreeMap<(i64, &str), i64> = BTreeMap::new();
        let mut times = Vec::with_capacity(deleted.len());
        for (timestamp_us, event_type) in &deleted {
            let time = from_micros(*timestamp_us)?;
            times.push(time);
            *per_hour
                .entry((micros(hour_of(time)), event_type.as_str()))
                .or_default() += 1;
        }
        for ((hour_us, event_type), count) in &per_hour {
            sqlx::query(
                "UPDATE event_rollups_hourly SET event_count = event_count - ?4
                 WHERE tenant_id = ?1 AND hour_us = ?2 AND event_type = ?3",
            )
            .bind(&tenant_id)
            .bind(hour_us)
            .bind(*event_type)
            .bind(count)
            .execute(&mut *transaction)
            .await?;
        }
        sqlx::query("DELETE FROM event_rollups_hourly WHERE tenant_id = ? AND event_count <= 0")
            .bind(&tenant_id)
            .execute(&mut *transaction)
            .await?;
        let buckets = touched_buckets(times.into_iter());
        for chunk in buckets.chunks(500) {
            let mut sql =
                sqlx::QueryBuilder::new("DELETE FROM bucket_summaries WHERE tenant_id = ");
            sql.push_bind(&tenant_id).push(" AND bucket_us IN (");
            let mut separated = sql.separated(", ");
            for bucket in chunk {
                separated.push_bind(micros(*bucket));
            }
            sql.push(")");
            sql.build().execute(&mut *transaction).await?;
        }
        sqlx::query(
            "UPDATE user_deletions SET state = 'running', events_deleted = events_deleted + ?
             WHERE tenant_id = ? AND deletion_id = ?",
        )
        .bind(deleted.len() as i64)
        .bind(&tenant_id)
        .bind(&deletion.deletion_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(deleted.len() as u64)
    }

    async fn finish_deletion(&self, deletion: &Deletion) -> Result<Deletion, StoreError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE user_deletions SET state = 'done', finished_us = coalesce(finished_us, ?)
             WHERE tenant_id = ? AND deletion_id = ? RETURNING {DELETION_COLUMNS}"
        )))
        .bind(micros(eventline_core::time::now()))
        .bind(deletion.tenant_id.to_string())
        .bind(&deletion.deletion_id)
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
        insert_audit(&mut transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(finished)
    }
}

#[async_trait]
impl Expiry for SqliteStore {
    async fn retention_policy(&self, tenant_id: TenantId) -> Result<Retention, StoreError> {
        let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT raw_retention_seconds, rollup_retention_seconds FROM tenants
             WHERE tenant_id = ?",
        )
        .bind(tenant_id.to_string())
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
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let updated = sqlx::query(
            "UPDATE tenants SET raw_retention_seconds = ?, rollup_retention_seconds = ?
             WHERE tenant_id = ?",
        )
        .bind(raw)
        .bind(rollups)
        .bind(tenant_id.to_string())
        .execute(&mut *transaction)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "tenant {tenant_id} does not exist"
            )));
        }
        let audit = retention_audit(tenant_id, retention, actor);
        insert_audit(&mut transaction, &audit).await?;
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
        let mut connection = self.write_connection().await?;
        let done = sqlx::query(
            "DELETE FROM events WHERE tenant_id = ?1 AND event_id IN (
                 SELECT event_id FROM events
                 WHERE tenant_id = ?1 AND timestamp_us < ?2 AND received_us < ?3
                 LIMIT ?4)",
        )
        .bind(tenant_id.to_string())
        .bind(micros(before))
        .bind(micros(received_before))
        .bind(limit as i64)
        .execute(&mut *connection)
        .await?;
        Ok(done.rows_affected())
    }

    async fn expire_rollups(
        &self,
        tenant_id: TenantId,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        const HOUR_US: i64 = 3_600_000_000;
        let mut connection = self.write_connection().await?;
        let mut transaction =
            sqlx::Connection::begin_with(&mut *connection, "BEGIN IMMEDIATE").await?;
        // Only buckets that end by `before`: a bucket across it still counts newer events.
        let rollups = sqlx::query(
            "DELETE FROM event_rollups_hourly WHERE tenant_id = ? AND hour_us + ? <= ?",
        )
        .bind(tenant_id.to_string())
        .bind(HOUR_US)
        .bind(micros(before))
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        let summaries = sqlx::query(
            "DELETE FROM bucket_summaries
             WHERE tenant_id = ? AND bucket_us + width_seconds * 1000000 <= ?",
        )
        .bind(tenant_id.to_string())
        .bind(micros(before))
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok(rollups + summaries)
    }
}

const QUARANTINE_COLUMNS: &str =
    "quarantine_id, tenant_id, event_id, event_type, reason, payload, received_us";

fn quarantined_from_row(row: &SqliteRow) -> Result<QuarantinedEvent, StoreError> {
    let tenant_id: String = row.try_get(1)?;
    Ok(QuarantinedEvent {
        quarantine_id: row.try_get(0)?,
        tenant_id: parse_tenant_id(&tenant_id)?,
        event_id: row.try_get(2)?,
        event_type: row.try_get(3)?,
        reason: row.try_get(4)?,
        payload: row.try_get(5)?,
        received_at: from_micros(row.try_get(6)?)?,
    })
}

#[async_trait]
impl Quarantine for SqliteStore {
    async fn quarantine(
        &self,
        events: &[QuarantinedEvent],
        keep_per_tenant: u64,
    ) -> Result<u64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in events.chunks(500) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO quarantined_events
                     (tenant_id, quarantine_id, event_id, event_type, reason, payload, received_us) ",
            );
            insert.push_values(chunk, |mut row, event| {
                row.push_bind(event.tenant_id.to_string())
                    .push_bind(&event.quarantine_id)
                    .push_bind(&event.event_id)
                    .push_bind(&event.event_type)
                    .push_bind(&event.reason)
                    .push_bind(&event.payload)
                    .push_bind(micros(event.received_at));
            });
            insert.build().execute(&mut *transaction).await?;
        }
        let mut tenants: Vec<TenantId> = events.iter().map(|event| event.tenant_id).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut dropped = 0;
        for tenant_id in tenants {
            dropped += sqlx::query(
                "DELETE FROM quarantined_events WHERE tenant_id = ?1 AND quarantine_id <= (
                     SELECT quarantine_id FROM quarantined_events WHERE tenant_id = ?1
                     ORDER BY quarantine_id DESC LIMIT 1 OFFSET ?2)",
            )
            .bind(tenant_id.to_string())
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
        sql.push_bind(query.tenant_id.to_string());
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
        let mut found = Vec::with_capacity(quarantine_ids.len());
        for chunk in quarantine_ids.chunks(500) {
            let mut sql = sqlx::QueryBuilder::new(format!(
                "SELECT {QUARANTINE_COLUMNS} FROM quarantined_events WHERE tenant_id = "
            ));
            sql.push_bind(tenant_id.to_string())
                .push(" AND quarantine_id IN (");
            let mut separated = sql.separated(", ");
            for id in chunk {
                separated.push_bind(id.clone());
            }
            sql.push(") ORDER BY quarantine_id");
            for row in sql.build().fetch_all(&self.pool).await? {
                found.push(quarantined_from_row(&row)?);
            }
        }
        Ok(found)
    }

    async fn set_quarantine_reason(
        &self,
        tenant_id: TenantId,
        quarantine_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE quarantined_events SET reason = ? WHERE tenant_id = ? AND quarantine_id = ?",
        )
        .bind(reason)
        .bind(tenant_id.to_string())
        .bind(quarantine_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_quarantined(
        &self,
        tenant_id: TenantId,
        quarantine_ids: &[String],
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        for chunk in quarantine_ids.chunks(500) {
            let mut sql =
                sqlx::QueryBuilder::new("DELETE FROM quarantined_events WHERE tenant_id = ");
            sql.push_bind(tenant_id.to_string())
                .push(" AND quarantine_id IN (");
            let mut separated = sql.separated(", ");
            for id in chunk {
                separated.push_bind(id.clone());
            }
            sql.push(")");
            removed += sql.build().execute(&self.pool).await?.rows_affected();
        }
        Ok(removed)
    }

    async fn purge_quarantined(
        &self,
        tenant_id: TenantId,
        event_type: Option<&str>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM quarantined_events
             WHERE tenant_id = ?1 AND (?2 IS NULL OR event_type = ?2)",
        )
        .bind(tenant_id.to_string())
        .bind(event_type)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Schemas for SqliteStore {
    async fn put_schema(&self, schema: &EventSchema, actor: &Actor) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO event_schemas (tenant_id, event_type, schema, mode, updated_us)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, event_type) DO UPDATE
             SET schema = excluded.schema, mode = excluded.mode, updated_us = excluded.updated_us",
        )
        .bind(schema.tenant_id.to_string())
        .bind(&schema.event_type)
        .bind(&schema.schema_json)
        .bind(schema.mode.as_str())
        .bind(micros(schema.updated_at))
        .execute(&mut *transaction)
        .await?;
        let audit = schema_audit(
            schema.tenant_id,
            &schema.event_type,
            AuditAction::SchemaSet,
            Some(schema.mode),
            actor,
        );
        insert_audit(&mut transaction, &audit).await?;
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
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query("DELETE FROM event_schemas WHERE tenant_id = ? AND event_type = ?")
            .bind(tenant_id.to_string())
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
        insert_audit(&mut transaction, &audit).await?;
        transaction.commit().await?;
        audit.log();
        Ok(())
    }

    async fn list_schemas(&self, tenant_id: TenantId) -> Result<Vec<EventSchema>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_type, schema, mode, updated_us FROM event_schemas
             WHERE tenant_id = ? ORDER BY event_type",
        )
        .bind(tenant_id.to_string())
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
                    updated_at: from_micros(row.try_get(3)?)?,
                })
            })
            .collect()
    }
}
