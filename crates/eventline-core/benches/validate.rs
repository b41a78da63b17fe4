//! Guards the per-event cost on the ingest hot path: validating an API event and
//! encoding its properties to JSON once.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventline_core::{IngestClock, TenantId, validate_event};
use eventline_proto::v1;

fn realistic_event(n: u32) -> v1::Event {
    let properties = serde_json::json!({
        "plan": "pro",
        "page": "/pricing",
        "referrer": format!("https://example.com/campaign/{n}"),
        "duration_ms": 1234,
        "browser": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
        "experiment": {"id": 7, "variant": "b"},
    });
    v1::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "page_view".into(),
        user_id: format!("user_{n}"),
        session_id: format!("session_{n}"),
        properties: serde_json::from_value(properties).ok(),
        ..Default::default()
    }
}

fn validate_and_encode(criterion: &mut Criterion) {
    let tenant_id = TenantId::generate();
    let clock = IngestClock::now();
    let batch: Vec<v1::Event> = (0..1000).map(realistic_event).collect();
    let mut group = criterion.benchmark_group("ingest");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("validate_and_encode_1000_events", |bencher| {
        bencher.iter_batched(
            || batch.clone(),
            |events| {
                for event in events {
                    black_box(validate_event(tenant_id, event, &clock).expect("valid"));
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, validate_and_encode);
criterion_main!(benches);
