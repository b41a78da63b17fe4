//! Store errors, and the one place SQLSTATEs and driver errors are classified.

use std::time::Duration;

/// What went wrong in a store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is not ready; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A transaction lost a race (deadlock, serialization); retrying it now may work.
    #[error("transaction conflict, retry: {0}")]
    Retryable(String),
    /// A unique constraint refused the write.
    #[error("{0}")]
    Conflict(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A watermark this store did not issue (another server's, or garbage).
    #[error("{0}")]
    ForeignWatermark(String),
    /// The store is configured wrongly.
    #[error("store configuration: {0}")]
    Config(String),
    /// Anything else: a bug or a database refusing data validation should have caught.
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the writer should retry the same transaction at once.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(database_error) => {
                let code = database_error
                    .code()
                    .map(|code| code.into_owned())
                    .unwrap_or_default();
                classify_sqlstate(&code, database_error.message())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => Self::Unavailable(error.to_string()),
            sqlx::Error::Migrate(_) => Self::Unavailable(error.to_string()),
            sqlx::Error::RowNotFound => Self::NotFound("row not found".into()),
            _ => Self::Internal(error.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Unavailable(format!("migrations: {error}"))
    }
}

/// Fails unless `applied` covers every migration embedded in `migrator`.
pub(crate) fn check_migrations(
    applied: i64,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let embedded = migrator.iter().count() as i64;
    if applied < embedded {
        return Err(StoreError::Unavailable(format!(
            "{applied} of {embedded} migrations applied"
        )));
    }
    Ok(())
}

/// Classifies PostgreSQL SQLSTATEs and SQLite extended result codes.
fn classify_sqlstate(code: &str, message: &str) -> StoreError {
    match code {
        // unique_violation; SQLite: SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY
        "23505" | "2067" | "1555" => StoreError::Conflict(message.to_owned()),
        // Citus relays a worker's unique violation during COPY as internal_error with the
        // worker's message: the same conflict, so the append takes its exact path.
        "XX000" if message.starts_with("duplicate key value violates unique constraint") => {
            StoreError::Conflict(message.to_owned())
        }
        // foreign_key_violation; SQLite: SQLITE_CONSTRAINT_FOREIGNKEY
        "23503" | "787" => StoreError::NotFound(message.to_owned()),
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => StoreError::Retryable(message.to_owned()),
        // SQLite: SQLITE_BUSY, SQLITE_LOCKED
        "5" | "6" | "517" | "261" => StoreError::Retryable(message.to_owned()),
        // connection exceptions, insufficient resources, operator intervention
        // (admin_shutdown, crash_shutdown, cannot_connect_now), read-only transactions,
        // and what a server answers a new connection it refuses: a database not accepting
        // connections (55000, `ALLOW_CONNECTIONS false`), gone (3D000), or a role that may
        // not log in (28xxx). Each is the database's state, not the request's: retry later.
        code if code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P")
            || code.starts_with("28")
            || code == "25006"
            || code == "55000"
            || code == "3D000" =>
        {
            StoreError::Unavailable(message.to_owned())
        }
        _ => StoreError::Internal(format!("{code}: {message}")),
    }
}

impl From<StoreError> for eventline_core::Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) | StoreError::Retryable(cause) => {
                tracing::warn!(cause = %cause, "store unavailable");
                eventline_core::Error::Unavailable {
                    what: "the database is unavailable".into(),
                    retry_after: Duration::from_secs(1),
                }
            }
            StoreError::Conflict(message) => eventline_core::Error::AlreadyExists(message),
            // The RPC that passed the watermark names its field (query/mod.rs); here
            // the domain error only says what was wrong.
            StoreError::ForeignWatermark(message) => {
                eventline_core::Error::invalid("watermark", message)
            }
            StoreError::NotFound(message) => eventline_core::Error::NotFound(message),
            StoreError::Config(message) | StoreError::Internal(message) => {
                eventline_core::Error::Internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        assert!(matches!(
            classify_sqlstate("23505", "dup"),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            classify_sqlstate("40P01", "deadlock"),
            StoreError::Retryable(_)
        ));
        assert!(matches!(
            classify_sqlstate("57P01", "admin shutdown"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify_sqlstate("55000", "database is not currently accepting connections"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify_sqlstate("22P02", "bad text"),
            StoreError::Internal(_)
        ));
    }
}
