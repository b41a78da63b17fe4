//! Outbound streams' storage (README "Streams"): subscriptions, the commit position each
//! has delivered through, and the lease that lets one replica at a time deliver one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, AuditAction, AuditEvent, TenantId,
    streams::{Sink, Subscription, SubscriptionState},
};

use crate::StoreError;

/// A tenant's subscriptions and their delivery state.
#[async_trait]
pub trait Subscriptions: Send + Sync {
    /// Stores a new subscription with its audit record; `NotFound` for an unknown tenant.
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        actor: &Actor,
    ) -> Result<(), StoreError>;

    /// The tenant's subscriptions, oldest first.
    async fn list_subscriptions(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<Subscription>, StoreError>;

    /// Removes a subscription, with its audit record; returns whether it existed.
    async fn delete_subscription(
        &self,
        tenant_id: TenantId,
        subscription_id: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError>;

    /// Makes a paused subscription active again (and clears its error), with its audit
    /// record; returns it, or `None` when it does not exist.
    async fn resume_subscription(
        &self,
        tenant_id: TenantId,
        subscription_id: &str,
        actor: &Actor,
    ) -> Result<Option<Subscription>, StoreError>;

    /// The tenant's active subscriptions that no other replica holds, each now leased to
    /// `owner` until `until` (a lease `owner` holds already is extended).
    async fn lease_subscriptions(
        &self,
        tenant_id: TenantId,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Subscription>, StoreError>;

    /// Gives up `owner`'s leases of the tenant's subscriptions (a replica stopping).
    async fn release_subscriptions(
        &self,
        tenant_id: TenantId,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// Moves the subscription's position from where `subscription` has it to `to` and
    /// adds `delivered` events, if it is still there and still leased to `owner`;
    /// returns whether it moved.
    async fn advance_subscription(
        &self,
        subscription: &Subscription,
        owner: &str,
        to: &(u64, String),
        delivered: u64,
    ) -> Result<bool, StoreError>;

    /// Pauses the subscription with `error`, keeping its position.
    async fn pause_subscription(
        &self,
        subscription: &Subscription,
        error: &str,
    ) -> Result<(), StoreError>;
}

/// The audit record of a change to a subscription.
pub(crate) fn subscription_audit(
    tenant_id: TenantId,
    subscription_id: &str,
    action: AuditAction,
    actor: &Actor,
    sink: Option<&Sink>,
) -> AuditEvent {
    let mut audit = AuditEvent::new(tenant_id, actor, action, subscription_id);
    if let Some(sink) = sink {
        audit
            .details
            .insert(sink.kind().to_owned(), sink.target().to_owned());
    }
    audit
}

/// A subscription's columns as both backends read them.
pub(crate) struct SubscriptionParts {
    pub(crate) subscription_id: String,
    pub(crate) tenant_id: TenantId,
    pub(crate) sink_kind: String,
    pub(crate) target: String,
    pub(crate) secret: String,
    pub(crate) event_types: Vec<String>,
    pub(crate) state: String,
    pub(crate) last_error: String,
    pub(crate) events_delivered: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) cursor_sequence: i64,
    pub(crate) cursor_event_id: String,
}

impl SubscriptionParts {
    pub(crate) fn into_subscription(self) -> Result<Subscription, StoreError> {
        Ok(Subscription {
            subscription_id: self.subscription_id,
            tenant_id: self.tenant_id,
            sink: Sink::from_stored(&self.sink_kind, self.target).map_err(StoreError::Internal)?,
            event_types: self.event_types,
            state: SubscriptionState::parse(&self.state).map_err(StoreError::Internal)?,
            last_error: self.last_error,
            events_delivered: self.events_delivered.max(0) as u64,
            created_at: self.created_at,
            position: (self.cursor_sequence.max(0) as u64, self.cursor_event_id),
            secret: self.secret,
        })
    }
}

/// The columns every subscription read selects, in [`SubscriptionParts`]' order.
pub(crate) const SUBSCRIPTION_COLUMNS: &str = "subscription_id, tenant_id, sink_kind, target, \
     secret, event_types, state, last_error, events_delivered, created_at, cursor_sequence, \
     cursor_event_id";
