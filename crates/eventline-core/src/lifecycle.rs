//! A tenant's data lifecycle (README "Data lifecycle"): user deletions, retention, the
//! quarantine of rejected events and event schemas, as the store keeps them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use eventline_proto::v1;
use uuid::Uuid;

use crate::{Error, TenantId, time};

/// How long a raw event is kept after it was received, whatever the retention, so that
/// a retry of it is still found to be a duplicate (Segment deduplicates over a day).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Events a user deletion or a retention pass deletes per transaction: each batch and
/// its rollup correction commit together, and no lock is held longer than one batch.
pub const DELETE_BATCH_EVENTS: usize = 5_000;

/// How far a user deletion has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionState {
    Pending,
    Running,
    Done,
}

impl DeletionState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "pending" => Ok(Self::Pending),
            "running" => Ok(Self::Running),
            "done" => Ok(Self::Done),
            other => Err(format!("unknown deletion state {other:?}")),
        }
    }

    fn to_proto(self) -> v1::DeletionState {
        match self {
            Self::Pending => v1::DeletionState::Pending,
            Self::Running => v1::DeletionState::Running,
            Self::Done => v1::DeletionState::Done,
        }
    }
}

/// One request to delete every event of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// A time-ordered UUID.
    pub deletion_id: String,
    pub tenant_id: TenantId,
    pub user_id: String,
    pub state: DeletionState,
    pub events_deleted: u64,
    pub requested_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Deletion {
    /// A new pending deletion of `user_id`, requested now.
    pub fn new(tenant_id: TenantId, user_id: &str) -> Self {
        Self {
            deletion_id: Uuid::now_v7().to_string(),
            tenant_id,
            user_id: user_id.to_owned(),
            state: DeletionState::Pending,
            events_deleted: 0,
            requested_at: time::now(),
            finished_at: None,
        }
    }

    /// Converts to the API message.
    pub fn to_proto(&self) -> v1::Deletion {
        v1::Deletion {
            deletion_id: self.deletion_id.clone(),
            tenant_id: self.tenant_id.to_string(),
            user_id: self.user_id.clone(),
            state: self.state.to_proto() as i32,
            events_deleted: self.events_deleted,
            request_time: Some(time::to_proto(self.requested_at)),
            finish_time: self.finished_at.map(time::to_proto),
        }
    }
}

/// How long a tenant's data is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub raw: Option<Duration>,
    pub rollups: Option<Duration>,
}

impl Retention {
    /// Validates the API message: rollups are kept at least as long as raw events,
    /// since counts over windows without raw events come from the rollups.
    pub fn from_proto(field: &str, retention: Option<&v1::Retention>) -> Result<Self, Error> {
        let Some(retention) = retention else {
            return Ok(Self::default());
        };
        let seconds = |value: u64| (value > 0).then(|| Duration::from_secs(value));
        let parsed = Self {
            raw: seconds(retention.raw_retention_seconds),
            rollups: seconds(retention.rollup_retention_seconds),
        };
        // Below an hour, a count at the raw horizon could need raw rows already gone
        // from a bucket no rollup covers whole.
        const SHORTEST: Duration = Duration::from_secs(3600);
        for (name, value) in [
            ("raw_retention_seconds", parsed.raw),
            ("rollup_retention_seconds", parsed.rollups),
        ] {
            if value.is_some_and(|value| value < SHORTEST) {
                return Err(Error::invalid(
                    format!("{field}.{name}"),
                    "must be 0 (keep forever) or at least 3600",
                ));
            }
            if value.is_some_and(|value| value.as_secs() > 100 * 365 * 86_400) {
                return Err(Error::invalid(
                    format!("{field}.{name}"),
                    "must be at most 100 years",
                ));
            }
        }
        match (parsed.raw, parsed.rollups) {
            (None, Some(_)) => Err(Error::invalid(
                format!("{field}.rollup_retention_seconds"),
                "must be 0 while raw events are kept forever: rollups are never kept shorter",
            )),
            (Some(raw), Some(rollups)) if rollups < raw => Err(Error::invalid(
                format!("{field}.rollup_retention_seconds"),
                format!(
                    "must be 0 or at least raw_retention_seconds ({})",
                    raw.as_secs()
                ),
            )),
            _ => Ok(parsed),
        }
    }

    /// Converts to the API message.
    pub fn to_proto(self) -> v1::Retention {
        v1::Retention {
            raw_retention_seconds: self.raw.map_or(0, |value| value.as_secs()),
            rollup_retention_seconds: self.rollups.map_or(0, |value| value.as_secs()),
        }
    }

    /// The oldest event time whose raw rows are all kept, at `now`.
    pub fn raw_horizon(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.raw.map(|raw| now - chrono_duration(raw))
    }

    /// The oldest time whose rollups are kept, at `now`.
    pub fn rollup_horizon(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.rollups.map(|rollups| now - chrono_duration(rollups))
    }
}

/// A std duration as chrono's, saturating (retentions are validated to 100 years).
pub fn chrono_duration(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

/// An event rejected by validation and kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedEvent {
    /// A time-ordered UUID.
    pub quarantine_id: String,
    pub tenant_id: TenantId,
    /// The id sent or, when none was, one assigned at quarantine so a replay stores it
    /// once however often it runs.
    pub event_id: String,
    /// The type sent, cut to 128 characters.
    pub event_type: String,
    pub reason: String,
    /// The event as received, as proto3 JSON.
    pub payload: String,
    pub received_at: DateTime<Utc>,
}

impl QuarantinedEvent {
    /// Converts to the API message.
    pub fn to_proto(&self) -> v1::QuarantinedEvent {
        v1::QuarantinedEvent {
            quarantine_id: self.quarantine_id.clone(),
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            reason: self.reason.clone(),
            payload: self.payload.clone(),
            receive_time: Some(time::to_proto(self.received_at)),
        }
    }
}

/// A page of a tenant's quarantine, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineQuery {
    pub tenant_id: TenantId,
    pub event_type: Option<String>,
    /// Events with a smaller `quarantine_id` only, for the next page.
    pub before: Option<String>,
    pub limit: usize,
}

/// What a schema does to an event that fails it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    Enforce,
    Warn,
}

impl SchemaMode {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Warn => "warn",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "enforce" => Ok(Self::Enforce),
            "warn" => Ok(Self::Warn),
            other => Err(format!("unknown schema mode {other:?}")),
        }
    }

    /// Validates the API enum.
    pub fn from_proto(field: &str, value: i32) -> Result<Self, Error> {
        match v1::SchemaMode::try_from(value) {
            Ok(v1::SchemaMode::Enforce) => Ok(Self::Enforce),
            Ok(v1::SchemaMode::Warn) => Ok(Self::Warn),
            _ => Err(Error::invalid(
                field,
                "must be SCHEMA_MODE_ENFORCE or SCHEMA_MODE_WARN",
            )),
        }
    }

    /// The API enum.
    pub fn to_proto(self) -> v1::SchemaMode {
        match self {
            Self::Enforce => v1::SchemaMode::Enforce,
            Self::Warn => v1::SchemaMode::Warn,
        }
    }
}

/// A JSON Schema for the properties of one event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSchema {
    pub tenant_id: TenantId,
    pub event_type: String,
    /// The schema as JSON text.
    pub schema_json: String,
    pub mode: SchemaMode,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(raw: u64, rollups: u64) -> v1::Retention {
        v1::Retention {
            raw_retention_seconds: raw,
            rollup_retention_seconds: rollups,
        }
    }

    #[test]
    fn rollups_are_never_kept_shorter_than_raw_events() {
        let error = Retention::from_proto("retention", Some(&retention(86_400, 7200)))
            .expect_err("shorter rollups");
        assert!(
            error
                .to_string()
                .contains("retention.rollup_retention_seconds")
        );
        let error = Retention::from_proto("retention", Some(&retention(0, 86_400)))
            .expect_err("rollups without raw retention");
        assert!(error.to_string().contains("kept forever"), "{error}");
        let kept = Retention::from_proto("retention", Some(&retention(86_400, 0))).unwrap();
        assert_eq!(kept.raw, Some(Duration::from_secs(86_400)));
        assert_eq!(kept.rollups, None);
    }

    #[test]
    fn a_retention_under_an_hour_is_refused_naming_the_field() {
        let error =
            Retention::from_proto("retention", Some(&retention(60, 0))).expect_err("too short");
        assert!(
            error
                .to_string()
                .contains("retention.raw_retention_seconds"),
            "{error}"
        );
    }
}
