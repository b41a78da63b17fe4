//! [`MeteredStore`]'s data lifecycle traits and search: each operation timed and traced
//! like the rest.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, Event, TenantId,
    lifecycle::{Deletion, EventSchema, QuarantineQuery, QuarantinedEvent, Retention},
    search::{SearchIndex, SearchQuery},
    streams::Subscription,
};
use eventline_store::{
    Expiry, Quarantine, Schemas, Search, StoreError, Subscriptions, UserDeletions,
    search::{SearchBatch, SearchCursor},
};

use crate::metered_store::MeteredStore;

#[async_trait]
impl UserDeletions for MeteredStore {
    async fn request_deletion(
        &self,
        tenant_id: TenantId,
        user_id: &str,
        actor: &Actor,
    ) -> Result<Deletion, StoreError> {
        let inner = self.inner.request_deletion(tenant_id, user_id, actor);
        self.timed("request_deletion", inner).await
    }

    async fn deletion(
        &self,
        tenant_id: TenantId,
        deletion_id: &str,
    ) -> Result<Option<Deletion>, StoreError> {
        self.timed("deletion", self.inner.deletion(tenant_id, deletion_id))
            .await
    }

    async fn unfinished_deletions(&self, tenant_id: TenantId) -> Result<Vec<Deletion>, StoreError> {
        let inner = self.inner.unfinished_deletions(tenant_id);
        self.timed("unfinished_deletions", inner).await
    }

    async fn delete_user_events(
        &self,
        deletion: &Deletion,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let inner = self.inner.delete_user_events(deletion, limit);
        self.timed("delete_user_events", inner).await
    }

    async fn finish_deletion(&self, deletion: &Deletion) -> Result<Deletion, StoreError> {
        self.timed("finish_deletion", self.inner.finish_deletion(deletion))
            .await
    }
}

#[async_trait]
impl Expiry for MeteredStore {
    async fn retention_policy(&self, tenant_id: TenantId) -> Result<Retention, StoreError> {
        self.timed("retention_policy", self.inner.retention_policy(tenant_id))
            .await
    }

    async fn set_retention_policy(
        &self,
        tenant_id: TenantId,
        retention: Retention,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let inner = self.inner.set_retention_policy(tenant_id, retention, actor);
        self.timed("set_retention_policy", inner).await
    }

    async fn expire_events(
        &self,
        tenant_id: TenantId,
        before: DateTime<Utc>,
        received_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let inner = self
            .inner
            .expire_events(tenant_id, before, received_before, limit);
        self.timed("expire_events", inner).await
    }

    async fn expire_rollups(
        &self,
        tenant_id: TenantId,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.timed(
            "expire_rollups",
            self.inner.expire_rollups(tenant_id, before),
        )
        .await
    }
}

#[async_trait]
impl Quarantine for MeteredStore {
    async fn quarantine(
        &self,
        events: &[QuarantinedEvent],
        keep_per_tenant: u64,
    ) -> Result<u64, StoreError> {
        let inner = self.inner.quarantine(events, keep_per_tenant);
        self.timed("quarantine", inner).await
    }

    async fn list_quarantined(
        &self,
        query: &QuarantineQuery,
    ) -> Result<Vec<QuarantinedEvent>, StoreError> {
        self.timed("list_quarantined", self.inner.list_quarantined(query))
            .await
    }

    async fn quarantined(
        &self,
        tenant_id: TenantId,
        quarantine_ids: &[String],
    ) -> Result<Vec<QuarantinedEvent>, StoreError> {
        let inner = self.inner.quarantined(tenant_id, quarantine_ids);
        self.timed("quarantined", inner).await
    }

    async fn set_quarantine_reason(
        &self,
        tenant_id: TenantId,
        quarantine_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let inner = self
            .inner
            .set_quarantine_reason(tenant_id, quarantine_id, reason);
        self.timed("set_quarantine_reason", inner).await
    }

    async fn remove_quarantined(
        &self,
        tenant_id: TenantId,
        quarantine_ids: &[String],
    ) -> Result<u64, StoreError> {
        let inner = self.inner.remove_quarantined(tenant_id, quarantine_ids);
        self.timed("remove_quarantined", inner).await
    }

    async fn purge_quarantined(
        &self,
        tenant_id: TenantId,
        event_type: Option<&str>,
    ) -> Result<u64, StoreError> {
        let inner = self.inner.purge_quarantined(tenant_id, event_type);
        self.timed("purge_quarantined", inner).await
    }
}

#[async_trait]
impl Schemas for MeteredStore {
    async fn put_schema(&self, schema: &EventSchema, actor: &Actor) -> Result<(), StoreError> {
        self.timed("put_schema", self.inner.put_schema(schema, actor))
            .await
    }

    async fn delete_schema(
        &self,
        tenant_id: TenantId,
        event_type: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let inner = self.inner.delete_schema(tenant_id, event_type, actor);
        self.timed("delete_schema", inner).await
    }

    async fn list_schemas(&self, tenant_id: TenantId) -> Result<Vec<EventSchema>, StoreError> {
        self.timed("list_schemas", self.inner.list_schemas(tenant_id))
            .await
    }
}

#[async_trait]
impl Search for MeteredStore {
    async fn search_events(&self, query: &SearchQuery) -> Result<Vec<Event>, StoreError> {
        self.timed("search_events", self.inner.search_events(query))
            .await
    }

    async fn search_index(&self, tenant_id: TenantId) -> Result<SearchIndex, StoreError> {
        self.timed("search_index", self.inner.search_index(tenant_id))
            .await
    }

    async fn set_search_index(
        &self,
        tenant_id: TenantId,
        enabled: bool,
        actor: &Actor,
    ) -> Result<SearchIndex, StoreError> {
        let inner = self.inner.set_search_index(tenant_id, enabled, actor);
        self.timed("set_search_index", inner).await
    }

    async fn search_cursor(&self, tenant_id: TenantId) -> Result<Option<SearchCursor>, StoreError> {
        self.timed("search_cursor", self.inner.search_cursor(tenant_id))
            .await
    }

    async fn store_search_batch(&self, batch: &SearchBatch) -> Result<bool, StoreError> {
        self.timed("store_search_batch", self.inner.store_search_batch(batch))
            .await
    }
}

#[async_trait]
impl Subscriptions for MeteredStore {
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let inner = self.inner.create_subscription(subscription, actor);
        self.timed("create_subscription", inner).await
    }

    async fn list_subscriptions(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<Subscription>, StoreError> {
        let inner = self.inner.list_subscriptions(tenant_id);
        self.timed("list_subscriptions", inner).await
    }

    async fn delete_subscription(
        &self,
        tenant_id: TenantId,
        subscription_id: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        let inner = self
            .inner
            .delete_subscription(tenant_id, subscription_id, actor);
        self.timed("delete_subscription", inner).await
    }

    async fn resume_subscription(
        &self,
        tenant_id: TenantId,
        subscription_id: &str,
        actor: &Actor,
    ) -> Result<Option<Subscription>, StoreError> {
        let inner = self
            .inner
            .resume_subscription(tenant_id, subscription_id, actor);
        self.timed("resume_subscription", inner).await
    }

    async fn lease_subscriptions(
        &self,
        tenant_id: TenantId,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let inner = self.inner.lease_subscriptions(tenant_id, owner, now, until);
        self.timed("lease_subscriptions", inner).await
    }

    async fn release_subscriptions(
        &self,
        tenant_id: TenantId,
        owner: &str,
    ) -> Result<(), StoreError> {
        let inner = self.inner.release_subscriptions(tenant_id, owner);
        self.timed("release_subscriptions", inner).await
    }

    async fn advance_subscription(
        &self,
        subscription: &Subscription,
        owner: &str,
        to: &(u64, String),
        delivered: u64,
    ) -> Result<bool, StoreError> {
        let inner = self
            .inner
            .advance_subscription(subscription, owner, to, delivered);
        self.timed("advance_subscription", inner).await
    }

    async fn pause_subscription(
        &self,
        subscription: &Subscription,
        error: &str,
    ) -> Result<(), StoreError> {
        let inner = self.inner.pause_subscription(subscription, error);
        self.timed("pause_subscription", inner).await
    }
}
