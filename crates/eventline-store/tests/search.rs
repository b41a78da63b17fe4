//! Full-text search on every store (README "Search"): answers are checked against a
//! model that matches the words of each event by the definition in
//! `eventline_core::search`, independently of either database's text search.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use eventline_core::{
    Actor, AuditAction, AuditQuery, Event, TenantId,
    query::{EventFilter, Position, PropertyFilter},
    search::{Phrase, SearchQuery, SearchText, document},
};
use eventline_store::{
    Store,
    search::{SearchCursor, index_for_search},
};

eventline_store::conformance_suite!(
    search_matches_a_model_of_words_and_phrases_newest_first_in_pages,
    search_is_off_until_turned_on_and_turning_it_off_drops_the_index,
    indexing_follows_commits_and_a_deleted_events_words_go_with_it,
);

const WORDS: [&str; 8] = [
    "timeout", "gateway", "payment", "retry", "alpha", "beta", "checkout", "blue",
];

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap() + Duration::minutes(minute)
}

fn event(tenant_id: TenantId, id: usize, event_type: &str, properties: serde_json::Value) -> Event {
    Event {
        tenant_id,
        event_id: format!("e{id:04}"),
        event_type: event_type.to_owned(),
        user_id: Some(format!("u{}", id % 5)),
        session_id: None,
        timestamp: at((id * 7 % 300) as i64),
        client_timestamp: None,
        received_at: at(0),
        properties_json: properties.to_string(),
    }
}

/// 120 events whose messages are pseudo-random runs of [`WORDS`], some nested, some
/// with punctuation between words.
fn corpus(tenant_id: TenantId) -> Vec<Event> {
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..120)
        .map(|id| {
            let message: Vec<&str> = (0..1 + next() % 4).map(|_| WORDS[next() % 8]).collect();
            let separator = if id % 3 == 0 { "_" } else { " " };
            let properties = serde_json::json!({
                "message": message.join(separator),
                "detail": {"tags": [WORDS[next() % 8].to_uppercase()]},
                "plan": if id % 2 == 0 { "pro" } else { "free" },
                "amount": id,
            });
            let event_type = ["page_view", "error", "purchase"][id % 3];
            event(tenant_id, id, event_type, properties)
        })
        .collect()
}

/// Whether `phrase` occurs in `words` as consecutive words.
fn holds(words: &[String], phrase: &Phrase) -> bool {
    words
        .windows(phrase.0.len())
        .any(|window| window == phrase.0.as_slice())
}

fn model(events: &[Event], text: &SearchText, filter: &EventFilter) -> Vec<String> {
    let mut matching: Vec<&Event> = events
        .iter()
        .filter(|event| {
            let words: Vec<String> = document(&event.event_type, &event.properties_json)
                .split(' ')
                .map(str::to_owned)
                .collect();
            text.include.iter().all(|phrase| holds(&words, phrase))
                && !text.exclude.iter().any(|phrase| holds(&words, phrase))
                && filter
                    .event_type
                    .as_ref()
                    .is_none_or(|event_type| *event_type == event.event_type)
                && filter.properties.iter().all(|property| {
                    let properties: serde_json::Value =
                        serde_json::from_str(&event.properties_json).unwrap();
                    properties.get(&property.key) == Some(&property.value)
                })
        })
        .collect();
    matching.sort_by(|a, b| (b.timestamp, &b.event_id).cmp(&(a.timestamp, &a.event_id)));
    matching
        .iter()
        .map(|event| event.event_id.clone())
        .collect()
}

async fn tenant(store: &dyn Store, name: &str) -> TenantId {
    store
        .create_tenant(name, &Actor::Cli)
        .await
        .unwrap()
        .tenant_id
}

/// Indexes everything committed so far; returns how many events that took.
async fn index_all(store: &dyn Store, tenant_id: TenantId) -> u64 {
    let mut indexed = 0;
    loop {
        let cursor: SearchCursor = store
            .search_cursor(tenant_id)
            .await
            .unwrap()
            .expect("search is on");
        // A small batch, so that paging through commit order is exercised.
        let done = index_for_search(store, &cursor, 25).await.unwrap();
        indexed += done;
        if done == 0 {
            return indexed;
        }
    }
}

/// Every page of a search, `page` events at a time, as event ids.
async fn search_all(
    store: &dyn Store,
    tenant_id: TenantId,
    text: &SearchText,
    filter: &EventFilter,
    page: usize,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut after = None;
    loop {
        let events = store
            .search_events(&SearchQuery {
                tenant_id,
                text: text.clone(),
                filter: filter.clone(),
                start: at(0),
                end: at(24 * 60),
                after: after.clone(),
                limit: page,
            })
            .await
            .unwrap();
        found.extend(events.iter().map(|event| event.event_id.clone()));
        match events.last() {
            Some(last) if events.len() == page => {
                after = Some(Position {
                    timestamp: last.timestamp,
                    event_id: last.event_id.clone(),
                })
            }
            _ => return found,
        }
    }
}

async fn search_matches_a_model_of_words_and_phrases_newest_first_in_pages(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let other = tenant(&*store, "other").await;
    let events = corpus(tenant_id);
    store.append(&events).await.unwrap();
    // The other tenant holds the same words: none of its events may ever be found.
    store.append(&corpus(other)).await.unwrap();
    store
        .set_search_index(tenant_id, true, &Actor::Cli)
        .await
        .unwrap();
    assert_eq!(index_all(&*store, tenant_id).await, 120);
    let index = store.search_index(tenant_id).await.unwrap();
    assert!(index.enabled && index.caught_up, "{index:?}");
    assert_eq!(index.events_indexed, 120);

    let queries = [
        "timeout",
        "TIMEOUT gateway",
        r#""payment gateway""#,
        r#""gateway payment" -retry"#,
        "page_view blue",
        "error -alpha -beta",
        "checkout_blue",
        "nowhere",
    ];
    let mut found_some = 0;
    for query in queries {
        let text = SearchText::parse("query", query).unwrap();
        for filter in [
            EventFilter::default(),
            EventFilter {
                event_type: Some("error".into()),
                properties: vec![PropertyFilter::parse("property_filters[0]", "plan=pro").unwrap()],
                ..EventFilter::default()
            },
        ] {
            let expected = model(&events, &text, &filter);
            found_some += usize::from(!expected.is_empty());
            for page in [1000, 7] {
                assert_eq!(
                    search_all(&*store, tenant_id, &text, &filter, page).await,
                    expected,
                    "{query:?}, {filter:?}, pages of {page}"
                );
            }
        }
    }
    assert!(found_some >= 8, "the corpus must make most queries match");
}

async fn search_is_off_until_turned_on_and_turning_it_off_drops_the_index(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    let index = store.search_index(tenant_id).await.unwrap();
    assert!(!index.enabled && index.enabled_at.is_none(), "{index:?}");
    assert!(store.search_cursor(tenant_id).await.unwrap().is_none());
    store.append(&corpus(tenant_id)).await.unwrap();

    let on = store
        .set_search_index(tenant_id, true, &Actor::AdminToken)
        .await
        .unwrap();
    assert!(on.enabled && on.enabled_at.is_some() && !on.caught_up);
    // Turning it on again keeps the index as it is, and is not audited again.
    index_all(&*store, tenant_id).await;
    let again = store
        .set_search_index(tenant_id, true, &Actor::AdminToken)
        .await
        .unwrap();
    assert_eq!(again.events_indexed, 120);
    assert_eq!(again.enabled_at, on.enabled_at);
    let text = SearchText::parse("query", "timeout").unwrap();
    let before = search_all(&*store, tenant_id, &text, &EventFilter::default(), 100).await;
    assert!(!before.is_empty());

    let off = store
        .set_search_index(tenant_id, false, &Actor::AdminToken)
        .await
        .unwrap();
    assert!(!off.enabled && off.events_indexed == 0);
    assert!(store.search_cursor(tenant_id).await.unwrap().is_none());
    // On again, it starts over from the first commit: nothing is found until indexed.
    store
        .set_search_index(tenant_id, true, &Actor::AdminToken)
        .await
        .unwrap();
    assert!(
        search_all(&*store, tenant_id, &text, &EventFilter::default(), 100)
            .await
            .is_empty(),
        "turning search off dropped every word"
    );
    assert_eq!(index_all(&*store, tenant_id).await, 120);
    assert_eq!(
        search_all(&*store, tenant_id, &text, &EventFilter::default(), 100).await,
        before
    );

    let audit = store
        .list_audit_events(&AuditQuery {
            tenant_id: Some(tenant_id),
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    let actions: Vec<AuditAction> = audit.iter().map(|event| event.action).collect();
    assert_eq!(
        actions
            .iter()
            .filter(|action| matches!(action, AuditAction::SearchEnabled))
            .count(),
        2
    );
    assert!(actions.contains(&AuditAction::SearchDisabled));
    let unknown = TenantId(uuid::Uuid::now_v7());
    assert!(
        store
            .set_search_index(unknown, true, &Actor::AdminToken)
            .await
            .is_err()
    );
}

async fn indexing_follows_commits_and_a_deleted_events_words_go_with_it(store: Arc<dyn Store>) {
    let tenant_id = tenant(&*store, "acme").await;
    store
        .set_search_index(tenant_id, true, &Actor::Cli)
        .await
        .unwrap();
    let secret = |id: usize, user: &str, word: &str| {
        let mut event = event(
            tenant_id,
            id,
            "note",
            serde_json::json!({"text": format!("{word} marker")}),
        );
        event.user_id = Some(user.to_owned());
        event
    };
    store
        .append(&[secret(1, "alice", "zebra"), secret(2, "bob", "zebra")])
        .await
        .unwrap();
    assert_eq!(index_all(&*store, tenant_id).await, 2);
    // Events committed after a pass are indexed by the next one, nothing twice.
    store.append(&[secret(3, "bob", "zebra")]).await.unwrap();
    assert_eq!(index_all(&*store, tenant_id).await, 1);
    let zebra = SearchText::parse("query", "zebra").unwrap();
    let all = EventFilter::default();
    assert_eq!(
        search_all(&*store, tenant_id, &zebra, &all, 10).await.len(),
        3
    );

    let deletion = store
        .request_deletion(tenant_id, "alice", &Actor::Cli)
        .await
        .unwrap();
    store.delete_user_events(&deletion, 100).await.unwrap();
    let found = search_all(&*store, tenant_id, &zebra, &all, 10).await;
    assert_eq!(found, ["e0003", "e0002"]);
    // A new event stored under the deleted one's id must not be found by the deleted
    // event's words: they left the index with it.
    store.append(&[secret(1, "carol", "yak")]).await.unwrap();
    assert!(
        search_all(&*store, tenant_id, &zebra, &all, 10)
            .await
            .iter()
            .all(|id| id != "e0001")
    );
    assert_eq!(index_all(&*store, tenant_id).await, 1);
    let yak = SearchText::parse("query", "yak").unwrap();
    assert_eq!(
        search_all(&*store, tenant_id, &yak, &all, 10).await,
        ["e0001"]
    );
    assert_eq!(
        search_all(&*store, tenant_id, &zebra, &all, 10).await,
        ["e0003", "e0002"]
    );
}
