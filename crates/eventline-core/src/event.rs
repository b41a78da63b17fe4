//! The stored event and the outcome of storing it.

use chrono::{DateTime, Utc};
use eventline_proto::v1;

use crate::{TenantId, time};

/// A validated, normalised event, ready to store or just read back.
///
/// `properties_json` holds the properties already encoded as a JSON object: the ingest
/// path encodes each event once and the stores write that text as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub tenant_id: TenantId,
    pub event_id: String,
    pub event_type: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    /// Event time after clock-skew correction.
    pub timestamp: DateTime<Utc>,
    /// The timestamp as the client sent it, when it sent one.
    pub client_timestamp: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub properties_json: String,
}

impl Event {
    /// Roughly the heap and inline bytes the event holds, for the request memory budget.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.event_id.len()
            + self.event_type.len()
            + self.user_id.as_ref().map_or(0, String::len)
            + self.session_id.as_ref().map_or(0, String::len)
            + self.properties_json.len()
    }

    /// Converts to the API message.
    pub fn to_proto(&self) -> v1::Event {
        let properties =
            serde_json::from_str::<pbjson_types::Struct>(&self.properties_json).unwrap_or_default();
        v1::Event {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            user_id: self.user_id.clone().unwrap_or_default(),
            session_id: self.session_id.clone().unwrap_or_default(),
            timestamp: Some(time::to_proto(self.timestamp)),
            properties: Some(eventline_proto::Properties::from_struct(&properties)),
            received_at: Some(time::to_proto(self.received_at)),
            client_timestamp: self.client_timestamp.map(time::to_proto),
        }
    }
}

/// What storing one valid event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The event was new and is now committed.
    Accepted,
    /// The same `(tenant, event_id)` was already stored.
    Duplicate,
}

impl IngestOutcome {
    /// The API status of this outcome.
    pub fn to_proto(self) -> v1::IngestStatus {
        match self {
            Self::Accepted => v1::IngestStatus::Accepted,
            Self::Duplicate => v1::IngestStatus::Duplicate,
        }
    }
}
