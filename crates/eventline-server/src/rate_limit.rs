//! Per-key ingest rate limits: one token bucket per API key on this replica, shared by
//! every ingest RPC and the REST gateway (which calls the same services). A request of n
//! events is admitted whole or refused whole, before anything of it is stored, so a
//! client's retry after the given delay is exact.
//!
//! The bucket is GCRA (the generic cell rate algorithm), which keeps one instant per key:
//! the "theoretical arrival time" at which the bucket would be full again. A request
//! larger than the bucket is admitted when the bucket is full and drives it into debt,
//! so a batch never fails for its size alone and the long-run rate stays exact.
//!
//! Limits are per replica (README "Security"): coordinating buckets through the
//! database would put a round trip on every request, which the ingest path cannot
//! afford.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use eventline_core::{ApiKey, Error, RateLimit};

/// Most keys with a bucket. Past it, buckets that are full again (identical to a fresh
/// one) are dropped first; if none is, all are, which at worst grants each key one
/// extra burst.
const MAX_BUCKETS: usize = 10_000;

/// The buckets of every limited key.
#[derive(Debug)]
pub struct RateLimiter {
    default_limit: Option<RateLimit>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: RateLimit,
    /// When the bucket is full again; at or before now it is full.
    full_at: Instant,
}

impl Bucket {
    /// Takes `events` tokens at `now`, or says how long until they would be there.
    fn take(&mut self, events: u64, now: Instant) -> Result<(), Duration> {
        let per_event = Duration::from_secs(1) / self.limit.events_per_second;
        let capacity = per_event * self.limit.burst;
        let debt = self.full_at.saturating_duration_since(now);
        // A request larger than the bucket needs a full bucket, not more than one.
        let needed = per_event.saturating_mul(events.min(u64::from(self.limit.burst)) as u32);
        let after = debt.saturating_add(needed);
        if after > capacity {
            return Err(after - capacity);
        }
        let cost = per_event.saturating_mul(u32::try_from(events).unwrap_or(u32::MAX));
        self.full_at = now.max(self.full_at) + cost;
        Ok(())
    }
}

impl RateLimiter {
    /// A limiter that applies `default_events_per_second` (one second's worth of burst)
    /// to keys without their own limit; `None` leaves those keys unlimited.
    pub fn new(default_events_per_second: Option<u32>) -> Self {
        Self {
            default_limit: default_events_per_second
                .filter(|rate| *rate > 0)
                .map(|rate| RateLimit {
                    events_per_second: rate,
                    burst: rate,
                }),
            buckets: Mutex::default(),
        }
    }

    /// Admits a request of `events` events from `key`, or refuses it whole with
    /// RESOURCE_EXHAUSTED and the delay after which the same request would be admitted.
    pub fn admit(&self, key: &ApiKey, events: usize) -> Result<(), Error> {
        let Some(limit) = key.rate_limit.or(self.default_limit) else {
            return Ok(());
        };
        if events == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let outcome = {
            let mut buckets = self
                .buckets
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match buckets.get_mut(key.key_id.as_str()) {
                Some(bucket) => {
                    // The server default may have changed since the bucket was made.
                    bucket.limit = limit;
                    bucket.take(events as u64, now)
                }
                None => {
                    if buckets.len() >= MAX_BUCKETS {
                        buckets.retain(|_, bucket| bucket.full_at > now);
                        if buckets.len() >= MAX_BUCKETS {
                            buckets.clear();
                        }
                    }
                    let mut bucket = Bucket {
                        limit,
                        full_at: now,
                    };
                    let outcome = bucket.take(events as u64, now);
                    buckets.insert(key.key_id.clone(), bucket);
                    outcome
                }
            }
        };
        match outcome {
            Ok(()) => {
                metrics::counter!("eventline_rate_limit_admitted_events_total")
                    .increment(events as u64);
                Ok(())
            }
            Err(wait) => {
                metrics::counter!("eventline_rate_limited_events_total").increment(events as u64);
                Err(Error::Overloaded {
                    what: format!(
                        "API key {} is over its rate limit of {} events/s (burst {}); \
                         this request of {events} events was not stored",
                        key.key_id, limit.events_per_second, limit.burst
                    ),
                    // Rounded up, so a retry after the delay is admitted.
                    retry_after: Duration::from_millis(wait.as_millis() as u64 + 1),
                })
            }
        }
    }
}

/// Registers the rate-limit counters at zero, so dashboards and alerts find the series
/// before the first limited request.
pub(crate) fn register_metrics() {
    metrics::counter!("eventline_rate_limit_admitted_events_total").increment(0);
    metrics::counter!("eventline_rate_limited_events_total").increment(0);
}

#[cfg(test)]
mod tests {
    use eventline_core::{Scope, TenantId};

    use super::*;

    fn key(key_id: &str, rate_limit: Option<RateLimit>) -> ApiKey {
        ApiKey {
            key_id: key_id.into(),
            tenant_id: TenantId::generate(),
            scopes: vec![Scope::Ingest],
            secret_hash: vec![0; 32],
            created_at: eventline_core::time::now(),
            revoked_at: None,
            expires_at: None,
            rate_limit,
        }
    }

    fn limit(events_per_second: u32, burst: u32) -> Option<RateLimit> {
        Some(RateLimit {
            events_per_second,
            burst,
        })
    }

    fn retry_after(result: Result<(), Error>) -> Duration {
        match result {
            Err(Error::Overloaded { retry_after, .. }) => retry_after,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_full_bucket_admits_its_burst_then_refuses_with_the_time_to_refill() {
        let limiter = RateLimiter::new(None);
        let limited = key("key_a", limit(100, 100));
        assert!(limiter.admit(&limited, 60).is_ok());
        assert!(limiter.admit(&limited, 40).is_ok());
        let wait = retry_after(limiter.admit(&limited, 50));
        // 50 events at 100/s take 500 ms to refill.
        assert!(
            wait > Duration::from_millis(480) && wait <= Duration::from_millis(501),
            "{wait:?}"
        );
    }

    #[test]
    fn a_request_larger_than_the_bucket_is_admitted_when_full_and_leaves_debt() {
        let limiter = RateLimiter::new(None);
        let limited = key("key_b", limit(100, 10));
        assert!(limiter.admit(&limited, 1000).is_ok());
        let wait = retry_after(limiter.admit(&limited, 1));
        // 990 events of debt beyond the bucket at 100/s: about 9.9 s.
        assert!(wait > Duration::from_millis(9_800), "{wait:?}");
    }

    #[test]
    fn keys_without_a_limit_follow_the_server_default_or_pass() {
        let unlimited = RateLimiter::new(None);
        let plain = key("key_c", None);
        for _ in 0..100 {
            assert!(unlimited.admit(&plain, 2000).is_ok());
        }
        let defaulted = RateLimiter::new(Some(10));
        assert!(defaulted.admit(&plain, 10).is_ok());
        assert!(defaulted.admit(&plain, 1).is_err());
        // Buckets are per key.
        assert!(defaulted.admit(&key("key_d", None), 10).is_ok());
    }

    #[test]
    fn a_refused_request_takes_no_tokens() {
        let limiter = RateLimiter::new(None);
        let limited = key("key_e", limit(1000, 100));
        assert!(limiter.admit(&limited, 100).is_ok());
        for _ in 0..50 {
            assert!(limiter.admit(&limited, 100).is_err());
        }
        let wait = retry_after(limiter.admit(&limited, 100));
        assert!(wait <= Duration::from_millis(101), "{wait:?}");
    }
}
