//! The one error type of the SDK.

use eventline_core::FieldViolation;

/// Everything the SDK can fail with. Messages are lowercase and name the field or the
/// setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target is not a URL such as `http://127.0.0.1:50051`.
    #[error("target {target:?} is not a URL such as http://127.0.0.1:50051: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// Why it was refused.
        reason: String,
    },
    /// The API key cannot travel as a header value.
    #[error("api_key must be visible ASCII")]
    InvalidApiKey,
    /// The first connection failed.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The target.
        target: String,
        /// The transport's reason.
        source: tonic::transport::Error,
    },
    /// The server answered with an error status.
    #[error("server answered {:?}: {}", .0.code(), .0.message())]
    Status(Box<tonic::Status>),
    /// An event the server would reject anyway; the violation names the field.
    #[error("invalid event: {0}")]
    InvalidEvent(FieldViolation),
    /// A producer option is out of range.
    #[error("invalid producer option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// `track()` after `shutdown()`.
    #[error("the producer is shut down")]
    ProducerClosed,
    /// `flush()` reached its timeout before everything was acknowledged.
    #[error("flush timed out with {pending} events not yet acknowledged")]
    FlushTimeout {
        /// Events tracked before the flush and still unresolved.
        pending: u64,
    },
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Status(Box::new(status))
    }
}

impl Error {
    /// The gRPC status, when the server answered with one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }
}
