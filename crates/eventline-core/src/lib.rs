//! eventline's domain: the event model and its validation against the API limits,
//! tenants, API keys and scopes, timestamp conversions, and the one error type with its
//! mapping to `tonic::Status`. It does no I/O and must not depend on the store or server.

pub mod admin;
pub mod alerts;
pub mod breakdown;
pub mod error;
pub mod event;
pub mod lifecycle;
pub mod limits;
pub mod query;
pub mod request;
pub mod search;
pub mod sketch;
pub mod streams;
pub mod time;
pub mod validate;

pub use admin::{
    Actor, ApiKey, AuditAction, AuditEvent, AuditQuery, RateLimit, Scope, Tenant, TenantId,
};
pub use error::{Error, ErrorCode, FieldViolation};
pub use event::{Event, IngestOutcome};
pub use validate::{IngestClock, check_event, validate_event, validate_or_return};
