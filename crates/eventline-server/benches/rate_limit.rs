//! Guards the cost of the per-key token bucket (issue #17) on the ingest path: one
//! `admit` per request message, next to the per-event cost the core bench measures
//! (`cargo bench -p eventline-core`). A batch of 1,000 events costs the server ≈ 4 ms of
//! CPU (README "Performance"); the bucket must stay far below 2 % of that.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use eventline_core::{ApiKey, RateLimit, Scope, TenantId};
use eventline_server::rate_limit::RateLimiter;

fn key(index: usize) -> ApiKey {
    ApiKey {
        key_id: format!("key_{index:016x}"),
        tenant_id: TenantId::generate(),
        scopes: vec![Scope::Ingest],
        secret_hash: vec![0; 32],
        created_at: eventline_core::time::now(),
        revoked_at: None,
        expires_at: None,
        // High enough that every request is admitted: the common case costs the most work.
        rate_limit: Some(RateLimit {
            events_per_second: u32::MAX,
            burst: u32::MAX,
        }),
    }
}

fn admit(criterion: &mut Criterion) {
    let limiter = RateLimiter::new(None);
    // A replica serving many keys: buckets for 1,000 of them.
    let keys: Vec<ApiKey> = (0..1000).map(key).collect();
    for key in &keys {
        limiter.admit(key, 1).unwrap();
    }
    let mut next = 0;
    criterion.bench_function("rate_limit_admit_one_request", |bencher| {
        bencher.iter(|| {
            next = (next + 1) % keys.len();
            black_box(limiter.admit(black_box(&keys[next]), black_box(1000))).unwrap();
        })
    });
    let unlimited = ApiKey {
        rate_limit: None,
        ..key(0)
    };
    criterion.bench_function("rate_limit_admit_unlimited_key", |bencher| {
        bencher.iter(|| black_box(limiter.admit(black_box(&unlimited), black_box(1000))).unwrap())
    });
}

criterion_group!(benches, admit);
criterion_main!(benches);
