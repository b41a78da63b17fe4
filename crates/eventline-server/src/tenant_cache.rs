//! A per-tenant copy of something read from the store (compiled schemas, the retention),
//! trusted for [`CACHE_TTL`]: a change made on another replica takes effect here within
//! that time, and the replica that made it drops its copy at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use eventline_core::TenantId;

/// How long a replica trusts a tenant's cached settings.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(10);

type Entries<T> = HashMap<TenantId, (Instant, T)>;

/// Each tenant's value and when it was read; as many entries as tenants.
#[derive(Debug)]
pub(crate) struct TenantCache<T> {
    entries: Arc<Mutex<Entries<T>>>,
}

impl<T> Clone for TenantCache<T> {
    fn clone(&self) -> Self {
        Self {
            entries: Arc::clone(&self.entries),
        }
    }
}

impl<T> Default for TenantCache<T> {
    fn default() -> Self {
        Self {
            entries: Arc::default(),
        }
    }
}

impl<T: Clone> TenantCache<T> {
    fn lock(&self) -> MutexGuard<'_, Entries<T>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The tenant's value while it is fresh.
    pub(crate) fn fresh(&self, tenant_id: TenantId) -> Option<T> {
        self.lock()
            .get(&tenant_id)
            .filter(|(loaded, _)| loaded.elapsed() < CACHE_TTL)
            .map(|(_, value)| value.clone())
    }

    /// Keeps `value` as the tenant's, read now.
    pub(crate) fn keep(&self, tenant_id: TenantId, value: T) {
        self.lock().insert(tenant_id, (Instant::now(), value));
    }

    /// Forgets the tenant's value (after a change on this replica).
    pub(crate) fn forget(&self, tenant_id: TenantId) {
        self.lock().remove(&tenant_id);
    }
}
