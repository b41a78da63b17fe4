//! The one readiness source: the health task writes it, and grpc.health.v1, `/readyz` and
//! the fail-fast check in front of every RPC read it, so none of them waits on a database
//! that is down (a pool acquire waits seconds; a probe must answer within one).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Whether the server is ready, and whether its store is known to be down; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness(Arc<State>);

#[derive(Debug, Default)]
struct State {
    ready: AtomicBool,
    store_down: AtomicBool,
    reason: std::sync::Mutex<String>,
}

impl Readiness {
    /// Records the outcome of one check: `None` when ready, else why not.
    pub(crate) fn record(&self, store_down: bool, not_ready_because: Option<String>) {
        self.0.store_down.store(store_down, Ordering::Relaxed);
        self.0
            .ready
            .store(not_ready_because.is_none(), Ordering::Relaxed);
        *self
            .0
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            not_ready_because.unwrap_or_default();
    }

    /// Ready to serve: the store answered the last check and the writer is healthy.
    pub(crate) fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed)
    }

    /// Why the server is not ready (empty when it is).
    pub(crate) fn reason(&self) -> String {
        self.0
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The last check could not reach the store: requests needing it fail at once.
    pub(crate) fn store_down(&self) -> bool {
        self.0.store_down.load(Ordering::Relaxed)
    }
}

impl Readiness {
    /// The answer of `GET /readyz`, on the HTTP port and on the metrics port (where
    /// kubelet probes reach it in plaintext when the other ports speak TLS).
    pub(crate) fn readyz(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        if self.is_ready() {
            return (http::StatusCode::OK, "ready\n").into_response();
        }
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", self.reason()),
        )
            .into_response()
    }
}
