//! The one error type every layer answers with, and the one table that maps its code to
//! a gRPC status code and an HTTP status. Validation errors carry
//! `google.rpc.BadRequest` field violations; retryable refusals carry
//! `google.rpc.RetryInfo`. Internal errors never leak their cause to the client.

use std::{fmt, time::Duration};

use tonic_types::{ErrorDetails, StatusExt};

/// The kind of an error, which decides its gRPC and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    ResourceExhausted,
    FailedPrecondition,
    Unavailable,
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

impl ErrorCode {
    /// The gRPC status code, as grpc-gateway maps it.
    pub fn grpc_code(self) -> tonic::Code {
        self.mapping().0
    }

    /// The HTTP status, as grpc-gateway maps it.
    pub fn http_status(self) -> u16 {
        self.mapping().1
    }

    /// The code of a gRPC status, for statuses that arrive over the wire (the REST
    /// gateway); codes eventline never sends map to the nearest kind.
    pub fn from_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::Ok => Self::Internal,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Self::InvalidArgument,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::PermissionDenied => Self::PermissionDenied,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::AlreadyExists | tonic::Code::Aborted => Self::AlreadyExists,
            tonic::Code::ResourceExhausted => Self::ResourceExhausted,
            tonic::Code::FailedPrecondition => Self::FailedPrecondition,
            tonic::Code::Unavailable => Self::Unavailable,
            tonic::Code::DeadlineExceeded => Self::DeadlineExceeded,
            tonic::Code::Unimplemented => Self::Unimplemented,
            tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::DataLoss => Self::Internal,
        }
    }

    fn mapping(self) -> (tonic::Code, u16) {
        match self {
            Self::InvalidArgument => (tonic::Code::InvalidArgument, 400),
            Self::Unauthenticated => (tonic::Code::Unauthenticated, 401),
            Self::PermissionDenied => (tonic::Code::PermissionDenied, 403),
            Self::NotFound => (tonic::Code::NotFound, 404),
            Self::AlreadyExists => (tonic::Code::AlreadyExists, 409),
            Self::ResourceExhausted => (tonic::Code::ResourceExhausted, 429),
            Self::FailedPrecondition => (tonic::Code::FailedPrecondition, 400),
            Self::Unavailable => (tonic::Code::Unavailable, 503),
            Self::DeadlineExceeded => (tonic::Code::DeadlineExceeded, 504),
            Self::Unimplemented => (tonic::Code::Unimplemented, 501),
            Self::Internal => (tonic::Code::Internal, 500),
        }
    }
}

/// One invalid field: its path in the request (`event.event_type`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    /// Creates a violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// Prefixes the field path, turning `event_type` into `events[3].event_type`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.description)
    }
}

/// Every error eventline answers with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {violation}")]
    InvalidArgument { violation: FieldViolation },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{what}; retry after {}ms", retry_after.as_millis())]
    Overloaded { what: String, retry_after: Duration },
    #[error("{what}; retry after {}ms", retry_after.as_millis())]
    Unavailable { what: String, retry_after: Duration },
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An invalid-argument error naming `field`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            violation: FieldViolation::new(field, description),
        }
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::Overloaded { .. } => ErrorCode::ResourceExhausted,
            Self::Unavailable { .. } => ErrorCode::Unavailable,
            Self::Unimplemented(_) => ErrorCode::Unimplemented,
            Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// How long a client should wait before retrying, for retryable refusals.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The message a client sees: internal causes are replaced by a generic text.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error; see the server log".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        if let Error::Internal(cause) = &error {
            tracing::error!(cause = %cause, "internal error answered to a client");
        }
        let mut details = ErrorDetails::new();
        if let Error::InvalidArgument { violation } = &error {
            details.add_bad_request_violation(&violation.field, &violation.description);
        }
        if let Some(delay) = error.retry_after() {
            details.set_retry_info(Some(delay));
        }
        tonic::Status::with_error_details(error.code().grpc_code(), error.public_message(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_the_field_as_bad_request_detail() {
        let status: tonic::Status = Error::invalid("event.event_type", "must not be empty").into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("event.event_type"));
        let bad_request = status
            .get_details_bad_request()
            .expect("bad request detail");
        assert_eq!(bad_request.field_violations[0].field, "event.event_type");
    }

    #[test]
    fn overload_carries_retry_info_and_maps_to_429() {
        let error = Error::Overloaded {
            what: "writer queue full".into(),
            retry_after: Duration::from_millis(250),
        };
        assert_eq!(error.code().http_status(), 429);
        let status: tonic::Status = error.into();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry = status.get_details_retry_info().expect("retry info");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(250)));
    }

    #[test]
    fn grpc_codes_map_back_to_the_same_http_status() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::ResourceExhausted,
            ErrorCode::Unavailable,
            ErrorCode::DeadlineExceeded,
        ] {
            assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code);
        }
        assert_eq!(
            ErrorCode::from_grpc(tonic::Code::Unavailable).http_status(),
            503
        );
        assert_eq!(
            ErrorCode::from_grpc(tonic::Code::DeadlineExceeded).http_status(),
            504
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: tonic::Status = Error::Internal("password=hunter2".into()).into();
        assert!(!status.message().contains("hunter2"));
    }
}
