//! Full-text search's storage (README "Search"): a tenant's index, built off the ingest
//! path. [`index_for_search`] reads the tenant's next events in commit order (the order
//! tails use, so nothing committed late is skipped), splits each into words by
//! `eventline_core::search::document`, and hands them to the store with the position
//! they end at; both are written in one transaction, so a crash indexes each event once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, AuditAction, AuditEvent, Event, TenantId,
    query::{CommittedQuery, EventFilter},
    search::{SearchIndex, SearchQuery, document},
};

use crate::{Store, StoreError};

/// Searching a tenant's events, and the index that answers it.
#[async_trait]
pub trait Search: Send + Sync {
    /// One page of the tenant's indexed events matching `query`, newest first.
    async fn search_events(&self, query: &SearchQuery) -> Result<Vec<Event>, StoreError>;

    /// The tenant's index; off (and zero) when search was never turned on.
    async fn search_index(&self, tenant_id: TenantId) -> Result<SearchIndex, StoreError>;

    /// Turns search on (keeping an index already on as it is) or off (dropping the
    /// index), with its audit record when it changed; `NotFound` for an unknown tenant.
    async fn set_search_index(
        &self,
        tenant_id: TenantId,
        enabled: bool,
        actor: &Actor,
    ) -> Result<SearchIndex, StoreError>;

    /// The position the tenant's index has reached; `None` while search is off.
    async fn search_cursor(&self, tenant_id: TenantId) -> Result<Option<SearchCursor>, StoreError>;

    /// Stores a batch of documents and moves the tenant's position from `batch.from` to
    /// `batch.to`, in one transaction. Documents of events deleted meanwhile are left
    /// out. Returns false, storing nothing, when the position is no longer `from` (another
    /// replica indexed the batch, or search was turned off).
    async fn store_search_batch(&self, batch: &SearchBatch) -> Result<bool, StoreError>;
}

/// Where a tenant's index has got: every event before this commit position is indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCursor {
    pub tenant_id: TenantId,
    pub position: (u64, String),
    /// Whether the last pass found nothing left to index.
    pub caught_up: bool,
}

/// The words of one event, as the index keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchDocument {
    pub event_id: String,
    pub timestamp: DateTime<Utc>,
    /// The event's commit sequence (SQLite's rowid keys its words).
    pub sequence: u64,
    pub words: String,
}

/// The documents of one indexing step and the positions it goes between.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchBatch {
    pub tenant_id: TenantId,
    pub from: (u64, String),
    pub to: (u64, String),
    pub documents: Vec<SearchDocument>,
    /// Whether `to` is the tenant's commit horizon: nothing committed is left.
    pub caught_up: bool,
}

/// Indexes up to `limit` of the tenant's next events; returns how many it indexed (0
/// when caught up, or when another replica took this batch).
pub async fn index_for_search<S: Store + ?Sized>(
    store: &S,
    cursor: &SearchCursor,
    limit: usize,
) -> Result<u64, StoreError> {
    let horizon = store.commit_horizon(cursor.tenant_id).await?;
    let events = store
        .list_committed(&CommittedQuery {
            tenant_id: cursor.tenant_id,
            filter: EventFilter::default(),
            min_timestamp: None,
            after: cursor.position.clone(),
            horizon,
            limit,
        })
        .await?;
    let caught_up = events.len() < limit;
    if events.is_empty() && cursor.caught_up {
        return Ok(0);
    }
    let to = match events.last() {
        Some((sequence, event)) => (*sequence, event.event_id.clone()),
        // Nothing new: the position stays, only `caught_up` is recorded.
        None => cursor.position.clone(),
    };
    let documents: Vec<SearchDocument> = events
        .iter()
        .map(|(sequence, event)| SearchDocument {
            event_id: event.event_id.clone(),
            timestamp: event.timestamp,
            sequence: *sequence,
            words: document(&event.event_type, &event.properties_json),
        })
        .collect();
    let batch = SearchBatch {
        tenant_id: cursor.tenant_id,
        from: cursor.position.clone(),
        to,
        documents,
        caught_up,
    };
    let stored = store.store_search_batch(&batch).await?;
    Ok(if stored {
        batch.documents.len() as u64
    } else {
        0
    })
}

/// The audit record of turning search on or off.
pub(crate) fn search_audit(tenant_id: TenantId, enabled: bool, actor: &Actor) -> AuditEvent {
    let action = if enabled {
        AuditAction::SearchEnabled
    } else {
        AuditAction::SearchDisabled
    };
    AuditEvent::new(tenant_id, actor, action, &tenant_id.to_string())
}

/// A tenant's index from its `search_indexes` row (enabled_at, events_indexed,
/// caught_up): off, and zero, without one.
pub(crate) fn search_index_of(
    tenant_id: TenantId,
    row: Option<(DateTime<Utc>, i64, bool)>,
) -> SearchIndex {
    match row {
        Some((enabled_at, events_indexed, caught_up)) => SearchIndex {
            tenant_id,
            enabled: true,
            enabled_at: Some(enabled_at),
            events_indexed: events_indexed.max(0) as u64,
            caught_up,
        },
        None => SearchIndex {
            tenant_id,
            enabled: false,
            enabled_at: None,
            events_indexed: 0,
            caught_up: false,
        },
    }
}
