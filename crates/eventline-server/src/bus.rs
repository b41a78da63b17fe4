//! Commit notifications that wake live tails. The writer bumps the generation after each
//! commit on this replica; on PostgreSQL a LISTEN task bumps it for commits of every
//! replica. A tail only ever learns "something committed": it then reads from the store,
//! so a missed or coalesced wake-up can delay a tail but never make it skip an event.

use std::sync::Arc;

use tokio::sync::watch;

/// Broadcasts "events were committed" to every waiting tail.
#[derive(Debug, Clone)]
pub struct CommitBus {
    generation: Arc<watch::Sender<u64>>,
}

impl Default for CommitBus {
    fn default() -> Self {
        Self {
            generation: Arc::new(watch::channel(0).0),
        }
    }
}

impl CommitBus {
    /// Wakes every subscriber.
    pub fn notify(&self) {
        self.generation
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// A receiver that sees every later notification (coalesced).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Number of tails waiting on the bus.
    pub fn subscribers(&self) -> usize {
        self.generation.receiver_count()
    }
}
