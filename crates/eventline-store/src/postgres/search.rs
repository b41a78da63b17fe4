//! Full-text search on PostgreSQL (migration 0014): `event_search` holds a tsvector per
//! indexed event, built by `to_tsvector('simple', …)` from words the server has already
//! split and lowercased, so the parser only splits at spaces. Every statement names one
//! tenant: a router query on Citus.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, Event, TenantId,
    query::EventFilter,
    search::{SearchIndex, SearchQuery},
};
use sqlx::{Postgres, QueryBuilder, Row};

use super::{PgStore, event_from_row, insert_audit, read};
use crate::{
    StoreError,
    search::{Search, SearchBatch, SearchCursor, search_audit, search_index_of},
};

#[async_trait]
impl Search for PgStore {
    async fn search_events(&self, query: &SearchQuery) -> Result<Vec<Event>, StoreError> {
        // USING merges tenant_id and event_id; "timestamp" is the event's, event_time
        // the index's copy of it (in its time index: a common word walks it newest first).
        let mut builder = QueryBuilder::<Postgres>::new(read::EVENT_COLUMNS);
        if query.filter == EventFilter::default() {
            // Nothing to check in `events`: the page is chosen in event_search alone and
            // only its rows are joined, not every match (a selective word at 10M events
            // matches 10,000).
            builder.push(" FROM (SELECT tenant_id, event_id, event_time FROM event_search");
            push_match(&mut builder, query);
            builder
                .push(" ORDER BY event_time DESC, event_id DESC LIMIT ")
                .push_bind(query.limit as i64);
            // The tenant named on both sides, so Citus routes the whole statement to
            // the tenant's worker.
            builder.push(
                ") AS page JOIN events USING (tenant_id, event_id) WHERE events.tenant_id = ",
            );
            builder.push_bind(query.tenant_id.0);
            builder.push(" ORDER BY event_time DESC, event_id DESC");
        } else {
            builder.push(" FROM events JOIN event_search USING (tenant_id, event_id)");
            push_match(&mut builder, query);
            read::push_filter(&mut builder, &query.filter);
            builder.push(" ORDER BY event_time DESC, event_id DESC LIMIT ");
            builder.push_bind(query.limit as i64);
        }
        // Planned for this query's words every time (an unnamed statement): a prepared
        // statement's generic plan cannot tell a word in every event, best found by
        // walking the time index newest first, from a rare one, best found by GIN.
        let rows = builder
            .build()
            .persistent(false)
            .fetch_all(&self.read_pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn search_index(&self, tenant_id: TenantId) -> Result<SearchIndex, StoreError> {
        let row: Option<(DateTime<Utc>, i64, bool)> = sqlx::query_as(
            "SELECT enabled_at, events_indexed, caught_up FROM search_indexes
             WHERE tenant_id = $1",
        )
        .bind(tenant_id.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(search_index_of(tenant_id, row))
    }

    async fn set_search_index(
        &self,
        tenant_id: TenantId,
        enabled: bool,
        actor: &Actor,
    ) -> Result<SearchIndex, StoreError> {
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
        let changed = if enabled {
            sqlx::query(
                "INSERT INTO search_indexes (tenant_id, enabled_at) VALUES ($1, $2)
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant_id.0)
            .bind(eventline_core::time::now())
            .execute(&mut *transaction)
            .await?
            .rows_affected()
        } else {
            sqlx::query("DELETE FROM event_search WHERE tenant_id = $1")
                .bind(tenant_id.0)
                .execute(&mut *transaction)
                .await?;
            sqlx::query("DELETE FROM search_indexes WHERE tenant_id = $1")
                .bind(tenant_id.0)
                .execute(&mut *transaction)
                .await?
                .rows_affected()
        };
        let audit = (changed > 0).then(|| search_audit(tenant_id, enabled, actor));
        if let Some(audit) = &audit {
            insert_audit(&mut *transaction, audit).await?;
        }
        transaction.commit().await?;
        if let Some(audit) = audit {
            audit.log();
        }
        self.search_index(tenant_id).await
    }

    async fn search_cursor(&self, tenant_id: TenantId) -> Result<Option<SearchCursor>, StoreError> {
        let row = sqlx::query(
            "SELECT tenant_id, cursor_sequence, cursor_event_id, caught_up FROM search_indexes
             WHERE tenant_id = $1",
        )
        .bind(tenant_id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let sequence: i64 = row.try_get(1)?;
            Ok(SearchCursor {
                tenant_id: TenantId(row.try_get(0)?),
                position: (sequence.max(0) as u64, row.try_get(2)?),
                caught_up: row.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn store_search_batch(&self, batch: &SearchBatch) -> Result<bool, StoreError> {
        let tenant_id = batch.tenant_id.0;
        let mut transaction = self.pool.begin().await?;
        // The index is derived: a crash that loses this commit loses the position with
        // it, and the batch is indexed again. So it does not wait for its WAL flush, which
        // ingest's commits would otherwise queue behind.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *transaction)
            .await?;
        let moved = sqlx::query(
            "UPDATE search_indexes
             SET cursor_sequence = $4, cursor_event_id = $5, caught_up = $6,
                 events_indexed = events_indexed + $7
             WHERE tenant_id = $1 AND cursor_sequence = $2 AND cursor_event_id = $3",
        )
        .bind(tenant_id)
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
        if !batch.documents.is_empty() {
            let ids: Vec<&str> = batch
                .documents
                .iter()
                .map(|d| d.event_id.as_str())
                .collect();
            // The events still there. A deletion takes the same lock before it drops
            // words, so it either committed before this read (its events are left out
            // here) or waits for this commit and then drops these words too: no deleted
            // event's words outlive it. One lock, not a row lock on each event.
            lock_tenant_words(&mut transaction, batch.tenant_id).await?;
            let present: Vec<String> = sqlx::query_scalar(
                "SELECT event_id FROM events WHERE tenant_id = $1 AND event_id = ANY($2)",
            )
            .bind(tenant_id)
            .bind(&ids)
            .fetch_all(&mut *transaction)
            .await?;
            let present: std::collections::HashSet<String> = present.into_iter().collect();
            let kept: Vec<_> = batch
                .documents
                .iter()
                .filter(|document| present.contains(&document.event_id))
                .collect();
            sqlx::query(
                "INSERT INTO event_search (tenant_id, event_id, event_time, document)
                 SELECT $1, event_id, event_time, to_tsvector('simple', words)
                 FROM unnest($2::text[], $3::timestamptz[], $4::text[])
                      AS d (event_id, event_time, words)
                 ON CONFLICT (tenant_id, event_id) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(kept.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>())
            .bind(kept.iter().map(|d| d.timestamp).collect::<Vec<_>>())
            .bind(kept.iter().map(|d| d.words.as_str()).collect::<Vec<_>>())
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(true)
    }
}

/// `WHERE` for event_search's rows that match the query, its time range and page
/// position.
fn push_match(builder: &mut QueryBuilder<Postgres>, query: &SearchQuery) {
    builder
        .push(" WHERE tenant_id = ")
        .push_bind(query.tenant_id.0)
        .push(" AND document @@ to_tsquery('simple', ")
        .push_bind(query.text.to_tsquery())
        .push(")");
    builder.push(" AND event_time >= ").push_bind(query.start);
    builder.push(" AND event_time < ").push_bind(query.end);
    if let Some(after) = &query.after {
        builder
            .push(" AND (event_time, event_id) < (")
            .push_bind(after.timestamp)
            .push(", ")
            .push_bind(after.event_id.clone())
            .push(")");
    }
}

/// The class of the advisory lock that orders a tenant's indexing batches and deletions.
const WORDS_LOCK_CLASS: i32 = 0x5EA2C4;

/// Takes, until the transaction ends, the lock on the tenant's words that an indexing
/// batch and a deletion of its events both take (see `store_search_batch`).
async fn lock_tenant_words(
    transaction: &mut sqlx::PgConnection,
    tenant_id: TenantId,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(WORDS_LOCK_CLASS)
        .bind(tenant_id.0)
        .execute(transaction)
        .await?;
    Ok(())
}

/// Drops the words of deleted events, in the deleting transaction.
pub(super) async fn unsearch(
    transaction: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    event_ids: &[String],
) -> Result<(), StoreError> {
    if event_ids.is_empty() {
        return Ok(());
    }
    lock_tenant_words(&mut *transaction, tenant_id).await?;
    sqlx::query("DELETE FROM event_search WHERE tenant_id = $1 AND event_id = ANY($2)")
        .bind(tenant_id.0)
        .bind(event_ids)
        .execute(transaction)
        .await?;
    Ok(())
}
