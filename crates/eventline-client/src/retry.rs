//! Reconnect delays: exponential backoff with full jitter, and the server's
//! `google.rpc.RetryInfo` when it sends one.

use std::time::Duration;

use rand::Rng;
use tonic_types::StatusExt;

/// Exponential backoff with full jitter (each delay uniform in [0, cap], the cap doubling
/// from `initial` to `max`), as in AWS's "Exponential Backoff and Jitter".
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The next delay; `after` (a server's RetryInfo) wins when given.
    pub(crate) fn next_delay(&mut self, after: Option<Duration>) -> Duration {
        let cap = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.attempt.min(30)))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if let Some(delay) = after {
            return delay.min(self.max);
        }
        let nanos = rand::rng().random_range(0..=cap.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }

    /// Back to the initial cap, after the server made progress.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The delay a RESOURCE_EXHAUSTED or UNAVAILABLE status asks for in its RetryInfo.
pub(crate) fn retry_info_delay(status: &tonic::Status) -> Option<Duration> {
    if !matches!(
        status.code(),
        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
    ) {
        return None;
    }
    status.get_details_retry_info()?.retry_delay
}

/// Whether a broken read stream (export, tail) is worth resuming: the transport broke, or
/// the server is overloaded, restarting or timed the call out.
pub(crate) fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::DeadlineExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_cap_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for attempt in 0..20u32 {
            let cap = Duration::from_millis(100)
                .saturating_mul(2u32.pow(attempt.min(20)))
                .min(Duration::from_secs(30));
            assert!(backoff.next_delay(None) <= cap);
        }
        backoff.reset();
        assert!(backoff.next_delay(None) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_info_is_honoured_on_resource_exhausted() {
        let mut details = tonic_types::ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_millis(700)));
        let status = tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "queue full",
            details,
        );
        let after = retry_info_delay(&status);
        assert_eq!(after, Some(Duration::from_millis(700)));
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(backoff.next_delay(after), Duration::from_millis(700));
        let other = tonic::Status::invalid_argument("no");
        assert_eq!(retry_info_delay(&other), None);
    }
}
