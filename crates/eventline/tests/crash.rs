//! The crash test: a client streams events with known ids over IngestBidi, the server is
//! killed with SIGKILL mid-stream and restarted, the client resends every batch it holds
//! no acknowledgement for, and the database must then hold every event exactly once.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use chrono::{TimeZone, Utc};
use common::{API_KEY, free_port, spawn_server, spawn_server_with};
use eventline_proto::v1::{self, IngestStatus, ingest_service_client::IngestServiceClient};
use eventline_store::{Store, UserDeletions, postgres::PgStore};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::metadata::MetadataValue;

const BATCHES: u64 = 40;
const EVENTS_PER_BATCH: usize = 500;

fn batch(sequence: u64) -> Vec<v1::Event> {
    (0..EVENTS_PER_BATCH)
        .map(|n| v1::Event {
            event_id: format!("crash-{sequence}-{n}"),
            event_type: ["view", "click", "buy"][n % 3].into(),
            user_id: format!("user-{}", n % 17),
            ..Default::default()
        })
        .collect()
}

/// Sends `sequences` over one bidi stream, one batch every `pace`, and records each ack's
/// per-event statuses until the stream ends, fails, or `stop_after` acks arrived.
async fn stream_batches(
    addr: &str,
    sequences: Vec<u64>,
    pace: Duration,
    stop_after: Option<usize>,
    acks: &mut BTreeMap<u64, Vec<(String, IngestStatus)>>,
) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key: MetadataValue<_> = API_KEY.parse().unwrap();
    let mut client =
        IngestServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("x-api-key", key.clone());
            Ok(request)
        });
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for sequence in sequences {
            let request = v1::IngestBidiRequest {
                sequence,
                events: batch(sequence),
                sent_at: None,
            };
            if sender.send(request).await.is_err() {
                return;
            }
            tokio::time::sleep(pace).await;
        }
    });
    let Ok(response) = client.ingest_bidi(ReceiverStream::new(receiver)).await else {
        return;
    };
    let mut incoming = response.into_inner();
    let mut received = 0;
    while let Some(Ok(ack)) = incoming.next().await {
        let statuses = ack
            .results
            .iter()
            .map(|result| (result.event_id.clone(), result.status()))
            .collect();
        acks.insert(ack.sequence, statuses);
        received += 1;
        if stop_after.is_some_and(|limit| received >= limit) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_and_resent_events_are_stored_once() {
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let port = free_port();
    let mut server = spawn_server(&database_url, port).await;

    // First run: pace the batches so the kill lands mid-stream.
    let mut first_acks = BTreeMap::new();
    stream_batches(
        &server.addr,
        (1..=BATCHES).collect(),
        Duration::from_millis(25),
        Some(8),
        &mut first_acks,
    )
    .await;
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().unwrap();
    assert!(
        first_acks.len() >= 8 && (first_acks.len() as u64) < BATCHES,
        "the kill came mid-stream: {} acks",
        first_acks.len()
    );

    // Restart on the same database; resend everything without an ack.
    let server = spawn_server(&database_url, port).await;
    let unacknowledged: Vec<u64> = (1..=BATCHES)
        .filter(|sequence| !first_acks.contains_key(sequence))
        .collect();
    let mut second_acks = BTreeMap::new();
    stream_batches(
        &server.addr,
        unacknowledged.clone(),
        Duration::ZERO,
        None,
        &mut second_acks,
    )
    .await;
    assert_eq!(
        second_acks.keys().copied().collect::<Vec<_>>(),
        unacknowledged,
        "every resent batch acknowledged"
    );

    // Each event has exactly one final acknowledgement, ACCEPTED or DUPLICATE.
    let mut final_status: HashMap<String, IngestStatus> = HashMap::new();
    for (event_id, status) in first_acks.values().chain(second_acks.values()).flatten() {
        assert!(
            matches!(status, IngestStatus::Accepted | IngestStatus::Duplicate),
            "{event_id}: {status:?}"
        );
        assert!(
            final_status.insert(event_id.clone(), *status).is_none(),
            "{event_id} acknowledged twice"
        );
    }
    let total = BATCHES as usize * EVENTS_PER_BATCH;
    assert_eq!(final_status.len(), total);
    // Acknowledged in the first run means committed: none of those may be missing.
    let first_run_accepted = first_acks
        .values()
        .flatten()
        .filter(|(_, status)| *status == IngestStatus::Accepted)
        .count();
    assert_eq!(first_run_accepted, first_acks.len() * EVENTS_PER_BATCH);

    let store = PgStore::connect(&database_url, 2).await.unwrap();
    let tenant_id = store.list_tenants().await.unwrap()[0].tenant_id;
    for (event_id, _) in first_acks.values().flatten() {
        assert!(
            store.event(tenant_id, event_id).await.unwrap().is_some(),
            "acknowledged {event_id} was lost"
        );
    }
    let (start, end) = (
        Utc.with_ymd_and_hms(1971, 1, 1, 0, 0, 0).unwrap(),
        Utc::now() + chrono::Duration::hours(2),
    );
    assert_eq!(
        eventline_store::testing::stored_events(&store, tenant_id, start, end).await,
        total as u64,
        "every event stored exactly once"
    );
    assert_eq!(
        eventline_store::testing::counted_events(&store, tenant_id, start, end).await,
        total as u64,
        "rollup counted each event once"
    );
    drop(server);
}

/// The user deleted by the crash test of user deletions, and their events.
const DELETED_USER: &str = "crash-deleted-user";
const DELETED_USER_EVENTS: usize = 60_000;

/// Raw events and every rollup agree for the tenant's whole history.
async fn assert_counts_equal_rows(store: &PgStore, tenant_id: eventline_core::TenantId) -> u64 {
    let (start, end) = (
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        Utc::now() + chrono::Duration::hours(2),
    );
    let stored = eventline_store::testing::stored_events(store, tenant_id, start, end).await;
    let counted = eventline_store::testing::counted_events(store, tenant_id, start, end).await;
    assert_eq!(counted, stored, "the rollups count exactly the rows left");
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deletion_killed_midway_leaves_exact_counts_and_finishes_after_restart() {
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let port = free_port();
    let settings = [("EVENTLINE_LIFECYCLE_INTERVAL_MS", "50")];
    let mut server = spawn_server_with(&database_url, port, &settings).await;
    let store = PgStore::connect(&database_url, 2).await.unwrap();
    let tenant_id = store.list_tenants().await.unwrap()[0].tenant_id;
    let start = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let events: Vec<eventline_core::Event> = (0..DELETED_USER_EVENTS + 10_000)
        .map(|n| eventline_core::Event {
            tenant_id,
            event_id: format!("d{n}"),
            event_type: ["view", "click", "buy"][n % 3].into(),
            user_id: Some(if n < DELETED_USER_EVENTS {
                DELETED_USER.to_owned()
            } else {
                format!("kept-{}", n % 13)
            }),
            session_id: None,
            timestamp: start + chrono::Duration::seconds(n as i64 * 37),
            client_timestamp: None,
            received_at: start,
            properties_json: "{}".into(),
        })
        .collect();
    for chunk in events.chunks(5_000) {
        store.append(chunk).await.unwrap();
    }
    let deletion = store
        .request_deletion(tenant_id, DELETED_USER, &eventline_core::Actor::Cli)
        .await
        .unwrap();
    // Kill the server once the deletion is under way, not finished.
    let mut seen = 0;
    for _ in 0..2_000 {
        let now = store
            .deletion(tenant_id, &deletion.deletion_id)
            .await
            .unwrap()
            .unwrap();
        seen = now.events_deleted;
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().unwrap();
    let midway = store
        .deletion(tenant_id, &deletion.deletion_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        seen > 0 && (midway.events_deleted as usize) < DELETED_USER_EVENTS,
        "the kill came mid-deletion: {midway:?}"
    );
    let left = assert_counts_equal_rows(&store, tenant_id).await;
    assert_eq!(
        left + midway.events_deleted,
        events.len() as u64,
        "the deletion's count is exactly the rows gone"
    );

    // The restarted server finishes it.
    let server = spawn_server_with(&database_url, port, &settings).await;
    let mut finished = midway;
    for _ in 0..600 {
        finished = store
            .deletion(tenant_id, &deletion.deletion_id)
            .await
            .unwrap()
            .unwrap();
        if finished.state == eventline_core::lifecycle::DeletionState::Done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        finished.state,
        eventline_core::lifecycle::DeletionState::Done
    );
    assert_eq!(finished.events_deleted as usize, DELETED_USER_EVENTS);
    assert_eq!(assert_counts_equal_rows(&store, tenant_id).await, 10_000);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_batches_and_exits_cleanly() {
    use nix::{sys::signal, unistd::Pid};
    let database_url = eventline_store::testing::fresh_postgres_database().await;
    let mut server = spawn_server(&database_url, free_port()).await;
    let pid = Pid::from_raw(server.child.id() as i32);
    let addr = server.addr.clone();
    let streaming = tokio::spawn(async move {
        let mut acks = BTreeMap::new();
        stream_batches(
            &addr,
            (1..=BATCHES).collect(),
            Duration::from_millis(25),
            None,
            &mut acks,
        )
        .await;
        acks
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal::kill(pid, signal::Signal::SIGTERM).unwrap();
    let acks = streaming.await.unwrap();
    let exit = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "eventline exited with {exit} after SIGTERM");
    assert!(
        !acks.is_empty(),
        "batches were acknowledged before the shutdown"
    );

    let store = PgStore::connect(&database_url, 2).await.unwrap();
    let tenant_id = store.list_tenants().await.unwrap()[0].tenant_id;
    let acknowledged: usize = acks.values().map(Vec::len).sum();
    let (start, end) = (
        Utc.with_ymd_and_hms(1971, 1, 1, 0, 0, 0).unwrap(),
        Utc::now() + chrono::Duration::hours(2),
    );
    let stored =
        eventline_store::testing::stored_events(&store, tenant_id, start, end).await as usize;
    assert!(
        stored >= acknowledged,
        "stored {stored} < acknowledged {acknowledged}"
    );
    for (event_id, _) in acks.values().flatten() {
        assert!(
            store.event(tenant_id, event_id).await.unwrap().is_some(),
            "acknowledged {event_id} was lost"
        );
    }
}
