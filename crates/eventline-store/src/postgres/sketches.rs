//! PostgreSQL's part of unique users (`crate::uniques`): exact distinct counts, the
//! events' users, and the stored sketches (migration 0007).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::query::{CountQuery, CountRow};
use futures::{StreamExt, stream::BoxStream};
use sqlx::Row;

use super::{PgStore, read};
use crate::{
    Store, StoreError,
    uniques::{SketchKey, StoredSketch, UserReads},
};

const USERS: &str = r#"SELECT "timestamp", user_id FROM events
    WHERE tenant_id = $1 AND "timestamp" >= $2 AND "timestamp" < $3 AND user_id IS NOT NULL"#;
const USERS_OF_TYPE: &str = r#"SELECT "timestamp", user_id FROM events
    WHERE tenant_id = $1 AND "timestamp" >= $2 AND "timestamp" < $3 AND user_id IS NOT NULL
      AND event_type = $4"#;

#[async_trait]
impl UserReads for PgStore {
    async fn distinct_users(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError> {
        read::count_users(&self.read_pool, query).await
    }

    async fn event_counts(&self, query: &CountQuery) -> Result<Vec<CountRow>, StoreError> {
        self.count(query).await
    }

    async fn stored_sketches(
        &self,
        key: SketchKey<'_>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<StoredSketch>, StoreError> {
        let rows = sqlx::query(
            "SELECT bucket, event_count, registers FROM user_sketches
             WHERE tenant_id = $1 AND event_type = $2 AND width_seconds = $3
               AND bucket >= $4 AND bucket < $5",
        )
        .bind(key.tenant_id.0)
        .bind(key.event_type)
        .bind(width_seconds(key))
        .bind(start)
        .bind(end)
        .fetch_all(&self.read_pool)
        .await?;
        rows.iter()
            .map(|row| {
                let event_count: i64 = row.try_get(1)?;
                Ok(StoredSketch {
                    bucket: row.try_get(0)?,
                    event_count: event_count.max(0) as u64,
                    registers: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn store_sketch(
        &self,
        key: SketchKey<'_>,
        sketch: StoredSketch,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_sketches
                 (tenant_id, event_type, width_seconds, bucket, event_count, registers)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, event_type, width_seconds, bucket) DO UPDATE
             SET event_count = excluded.event_count, registers = excluded.registers",
        )
        .bind(key.tenant_id.0)
        .bind(key.event_type)
        .bind(width_seconds(key))
        .bind(sketch.bucket)
        .bind(sketch.event_count as i64)
        .bind(sketch.registers)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn users<'a>(
        &'a self,
        query: &'a CountQuery,
    ) -> BoxStream<'a, Result<(DateTime<Utc>, String), StoreError>> {
        let statement = sqlx::query(match query.event_type {
            None => USERS,
            Some(_) => USERS_OF_TYPE,
        })
        .bind(query.tenant_id.0)
        .bind(query.start)
        .bind(query.end);
        let statement = match &query.event_type {
            None => statement,
            Some(event_type) => statement.bind(event_type.as_str()),
        };
        statement
            .fetch(&self.read_pool)
            .map(|row| {
                let row = row?;
                Ok((row.try_get(0)?, row.try_get(1)?))
            })
            .boxed()
    }
}

fn width_seconds(key: SketchKey<'_>) -> i32 {
    (key.width.micros() / 1_000_000) as i32
}
