//! The API limits of README "The API", in one place so that validation, the server's message
//! size settings and the docs agree.

use std::time::Duration;

/// Longest `event_id`, in characters.
pub const MAX_EVENT_ID_CHARS: usize = 128;
/// Longest `event_type`, in characters.
pub const MAX_EVENT_TYPE_CHARS: usize = 128;
/// Longest `user_id` or `session_id`, in characters.
pub const MAX_ID_CHARS: usize = 256;
/// Largest encoded event, in bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Deepest nesting of `properties` (the top-level object is depth 1).
pub const MAX_PROPERTIES_DEPTH: usize = 10;
/// Most events in one batch message.
pub const MAX_EVENTS_PER_BATCH: usize = 2000;
/// Largest request or stream message, after decompression, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 20 * 1024 * 1024;
/// Clock skew above which event timestamps are shifted by the batch's `sent_at`.
pub const CLOCK_SKEW_THRESHOLD: Duration = Duration::from_secs(5 * 60);
/// How far past the receive time an event timestamp may lie.
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60 * 60);
/// Earliest accepted event timestamp: 1971-01-01T00:00:00Z, in Unix seconds.
pub const MIN_EVENT_UNIX_SECONDS: i64 = 31_536_000;
/// Longest tenant name, in characters.
pub const MAX_TENANT_NAME_CHARS: usize = 128;
