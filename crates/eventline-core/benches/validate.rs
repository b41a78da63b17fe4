//! Guards the per-event cost on the ingest hot path: decoding a batch from the wire,
//! validating each event and encoding its properties to JSON once.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventline_core::{IngestClock, TenantId, validate_event};
use eventline_proto::v1;
use prost::Message;

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
    let batch = v1::IngestBatchRequest {
        events: (0..1000).map(realistic_event).collect(),
        sent_at: None,
    };
    let wire = batch.encode_to_vec();
    let mut group = criterion.benchmark_group("ingest");
    group.throughput(Throughput::Elements(batch.events.len() as u64));
    group.bench_function("decode_validate_and_encode_1000_events", |bencher| {
        bencher.iter(|| {
            let request =
                v1::IngestBatchRequest::decode(black_box(wire.as_slice())).expect("decodes");
            for event in request.events {
                black_box(validate_event(tenant_id, event, &clock).expect("valid"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, validate_and_encode);
criterion_main!(benches);
