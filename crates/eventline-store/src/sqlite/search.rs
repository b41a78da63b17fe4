//! Full-text search on SQLite (migration 0008): an FTS5 table without content of its
//! own, keyed by the event's rowid, holding words the server has already split and
//! lowercased. A trigger drops an event's words when the event is deleted.

use async_trait::async_trait;
use eventline_core::{
    Actor, Event, TenantId,
    search::{SearchIndex, SearchQuery},
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{
    SqliteStore, event_from_row, from_micros, insert_audit, micros, parse_tenant_id, read,
};
use crate::{
    StoreError,
    search::{Search, SearchBatch, SearchCursor, search_audit, search_index_of},
};

#[async_trait]
impl Search for SqliteStore {
    async fn search_events(&self, query: &SearchQuery) -> Result<Vec<Event>, StoreError> {
        let mut builder = QueryBuilder::<Sqlite>::new(read::EVENT_COLUMNS);
        builder
            .push(" FROM events WHERE tenant_id = ")
            .push_bind(query.tenant_id.to_string());
        builder
            .push(" AND rowid IN (SELECT rowid FROM event_search WHERE event_search MATCH ")
            .push_bind(query.text.to_fts5())
            .push(")");
        builder
            .push(" AND timestamp_us >= ")
            .push_bind(micros(query.start));
        builder
            .push(" AND timestamp_us < ")
            .push_bind(micros(query.end));
        read::push_filter(&mut builder, &query.filter);
        if let Some(after) = &query.after {
            builder
                .push(" AND (timestamp_us, event_id) < (")
                .push_bind(micros(after.timestamp))
                .push(", ")
                .push_bind(after.event_id.clone())
                .push(")");
        }
        builder
            .push(" ORDER BY timestamp_us DESC, event_id DESC LIMIT ")
            .push_bind(query.limit as i64);
        let rows = builder.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn search_index(&self, tenant_id: TenantId) -> Result<SearchIndex, StoreError> {
        let row: Option<(i64, i64, bool)> = sqlx::query_as(
            "SELECT enabled_us, events_indexed, caught_up FROM search_indexes
             WHERE tenant_id = ?",
        )
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let row = row
            .map(|(enabled_us, events_indexed, caught_up)| {
                Ok::<_, StoreError>((from_micros(enabled_us)?, events_indexed, caught_up))
            })
            .transpose()?;
        Ok(search_index_of(tenant_id, row))
    }

    async fn set_search_index(
        &self,
        tenant_id: TenantId,
        enabled: bool,
        actor: &Actor,
    ) -> Result<SearchIndex, StoreError> {
        let tenant = tenant_id.to_string();
        let mut connection = self.write_connection().await?;
        let mut transaction =
            sqlx::Connection::begin_with(&mut *connection, "BEGIN IMMEDIATE").await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE tenant_id = ?")
            .bind(&tenant)
            .fetch_optional(&mut *transaction)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!(
                "tenant {tenant_id} does not exist"
            )));
        }
        let changed = if enabled {
            sqlx::query(
                "INSERT INTO search_indexes (tenant_id, enabled_us) VALUES (?, ?)
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(&tenant)
            .bind(micros(eventline_core::time::now()))
            .execute(&mut *transaction)
            .await?
            .rows_affected()
        } else {
            sqlx::query(
                "DELETE FROM event_search WHERE rowid IN
                     (SELECT rowid FROM events WHERE tenant_id = ?)",
            )
            .bind(&tenant)
            .execute(&mut *transaction)
            .await?;
            sqlx::query("DELETE FROM search_indexes WHERE tenant_id = ?")
                .bind(&tenant)
                .execute(&mut *transaction)
                .await?
                .rows_affected()
        };
        let audit = (changed > 0).then(|| search_audit(tenant_id, enabled, actor));
        if let Some(audit) = &audit {
            insert_audit(&mut transaction, audit).await?;
        }
        transaction.commit().await?;
        drop(connection);
        if let Some(audit) = audit {
            audit.log();
        }
        self.search_index(tenant_id).await
    }

    async fn search_cursor(&self, tenant_id: TenantId) -> Result<Option<SearchCursor>, StoreError> {
        let row = sqlx::query(
            "SELECT tenant_id, cursor_sequence, cursor_event_id, caught_up FROM search_indexes
             WHERE tenant_id = ?",
        )
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let sequence: i64 = row.try_get(1)?;
            Ok(SearchCursor {
                tenant_id: parse_tenant_id(&row.try_get::<String, _>(0)?)?,
                position: (sequence.max(0) as u64, row.try_get(2)?),
                caught_up: row.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn store_search_batch(&self, batch: &SearchBatch) -> Result<bool, StoreError> {
        let tenant = batch.tenant_id.to_string();
        let mut connection = self.write_connection().await?;
        let mut transaction =
            sqlx::Connection::begin_with(&mut *connection, "BEGIN IMMEDIATE").await?;
        let moved = sqlx::query(
            "UPDATE search_indexes
             SET cursor_sequence = ?4, cursor_event_id = ?5, caught_up = ?6,
                 events_indexed = events_indexed + ?7
             WHERE tenant_id = ?1 AND cursor_sequence = ?2 AND cursor_event_id = ?3",
        )
        .bind(&tenant)
        .bind(batch.from.0 as i64)
        .bind(&batch.from.1)
        .bind(batch.to.0 as i64)
        .bind(&batch.to.1)
        .bind(batch.caught_up)
        .bind(batch.documents.len() as i64)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        for document in &batch.documents {
            // Only if the event is still there (one writer: nothing deletes it meanwhile).
            sqlx::query(
                "INSERT INTO event_search (rowid, document)
                 SELECT rowid, ?3 FROM events
                 WHERE rowid = ?1 AND tenant_id = ?2 AND event_id = ?4",
            )
            .bind(document.sequence as i64)
            .bind(&tenant)
            .bind(&document.words)
            .bind(&document.event_id)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(true)
    }
}
