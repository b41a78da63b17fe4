//! SQLite's part of the summaries built on read (`crate::summaries`, migration 0003):
//! stored summaries, and the event reads unique users and breakdowns build from.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    breakdown::{BreakdownQuery, BreakdownRow},
    query::{CountQuery, CountRow},
};
use futures::{StreamExt, stream::BoxStream};
use sqlx::Row;

use super::{SqliteStore, from_micros, micros, read};
use crate::{
    Store, StoreError,
    breakdowns::BreakdownReads,
    summaries::{BucketReads, StoredSummary, SummaryKey},
    uniques::{TypedUser, UserReads},
};

const USERS: &str = "SELECT timestamp_us, user_id FROM events
    WHERE tenant_id = ?1 AND timestamp_us >= ?2 AND timestamp_us < ?3 AND user_id IS NOT NULL";
const USERS_OF_TYPE: &str = "SELECT timestamp_us, user_id FROM events
    WHERE tenant_id = ?1 AND timestamp_us >= ?2 AND timestamp_us < ?3 AND user_id IS NOT NULL
      AND event_type = ?4";
const TYPED_USERS: &str = "SELECT event_type, timestamp_us, user_id FROM events
    WHERE tenant_id = ?1 AND timestamp_us >= ?2 AND timestamp_us < ?3 AND user_id IS NOT NULL
      AND event_type IN (SELECT value FROM json_each(?4))";

#[async_trait]
impl BucketReads for SqliteStore {
    async fn event_counts(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError> {
        self.count(query).await
    }

    async fn stored_summaries(
        &self,
        key: SummaryKey<'_>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        with_bodies: bool,
    ) -> Result<Vec<StoredSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT bucket_us, event_count, CASE WHEN ?7 THEN body ELSE x'' END FROM bucket_summaries
             WHERE tenant_id = ?1 AND event_type = ?2 AND summary = ?3 AND width_seconds = ?4
               AND bucket_us >= ?5 AND bucket_us < ?6",
        )
        .bind(key.tenant_id.to_string())
        .bind(key.event_type)
        .bind(key.summary)
        .bind(key.width_seconds())
        .bind(micros(start))
        .bind(micros(end))
        .bind(with_bodies)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let event_count: i64 = row.try_get(1)?;
                Ok(StoredSummary {
                    bucket: from_micros(row.try_get(0)?)?,
                    event_count: event_count.max(0) as u64,
                    body: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn kept_summaries(
        &self,
        tenant_id: eventline_core::TenantId,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT event_type, summary FROM bucket_summaries
             WHERE tenant_id = ?1 AND substr(summary, 1, length(?2)) = ?2 ORDER BY 1, 2",
        )
        .bind(tenant_id.to_string())
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn drop_summaries(
        &self,
        tenant_id: eventline_core::TenantId,
        width: eventline_core::query::BucketWidth,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let width_seconds = (width.micros() / 1_000_000) as i32;
        Ok(sqlx::query("DELETE FROM bucket_summaries WHERE tenant_id = ?1 AND width_seconds = ?2 AND bucket_us < ?3")
            .bind(tenant_id.to_string())
            .bind(width_seconds)
            .bind(micros(before))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn store_summary(
        &self,
        key: SummaryKey<'_>,
        summary: StoredSummary,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bucket_summaries
                 (tenant_id, event_type, summary, width_seconds, bucket_us, event_count, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (tenant_id, event_type, summary, width_seconds, bucket_us) DO UPDATE
             SET event_count = excluded.event_count, body = excluded.body",
        )
        .bind(key.tenant_id.to_string())
        .bind(key.event_type)
        .bind(key.summary)
        .bind(key.width_seconds())
        .bind(micros(summary.bucket))
        .bind(summary.event_count as i64)
        .bind(summary.body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl UserReads for SqliteStore {
    async fn distinct_users(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError> {
        read::count_users(&self.pool, query).await
    }

    fn users<'a>(
        &'a self,
        query: &'a CountQuery,
    ) -> BoxStream<'a, Result<(DateTime<Utc>, String), StoreError>> {
        let statement = sqlx::query(match query.event_type {
            None => USERS,
            Some(_) => USERS_OF_TYPE,
        })
        .bind(query.tenant_id.to_string())
        .bind(micros(query.start))
        .bind(micros(query.end));
        let statement = match &query.event_type {
            None => statement,
            Some(event_type) => statement.bind(event_type.as_str()),
        };
        statement
            .fetch(&self.pool)
            .map(|row| {
                let row = row?;
                Ok((from_micros(row.try_get(0)?)?, row.try_get(1)?))
            })
            .boxed()
    }
    fn typed_users<'a>(
        &'a self,
        tenant_id: eventline_core::TenantId,
        event_types: &'a [String],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> BoxStream<'a, Result<TypedUser, StoreError>> {
        // The types go in as one JSON array: SQLite binds no arrays.
        let types = serde_json::to_string(event_types).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(TYPED_USERS)
            .bind(tenant_id.to_string())
            .bind(micros(start))
            .bind(micros(end))
            .bind(types)
            .fetch(&self.pool)
            .map(|row| {
                let row = row?;
                Ok((
                    row.try_get(0)?,
                    from_micros(row.try_get(1)?)?,
                    row.try_get(2)?,
                ))
            })
            .boxed()
    }
}

#[async_trait]
impl BreakdownReads for SqliteStore {
    async fn raw_breakdown(&self, query: &BreakdownQuery) -> Result<Vec<BreakdownRow>, StoreError> {
        read::breakdown(&self.pool, query).await
    }
}
