//! Outbound streams' storage on every store (README "Streams"): subscriptions, their
//! leases, the position compare-and-set, pausing and resuming, each audited.

use std::sync::Arc;

use chrono::{Duration, Utc};
use eventline_core::{
    Actor, AuditAction, AuditQuery, TenantId,
    streams::{Sink, Subscription, SubscriptionState},
};
use eventline_store::Store;

eventline_store::conformance_suite!(
    subscriptions_are_created_listed_resumed_and_deleted_with_audit_records,
    one_owner_at_a_time_leases_a_subscription_and_only_it_moves_the_position,
);

async fn tenant(store: &dyn Store, name: &str) -> TenantId {
    store
        .create_tenant(name, &Actor::Cli)
        .await
        .unwrap()
        .tenant_id
}

fn webhook(tenant_id: TenantId, types: &[&str]) -> Subscription {
    Subscription {
        subscription_id: uuid::Uuid::now_v7().to_string(),
        tenant_id,
        sink: Sink::Webhook {
            url: "https://hooks.example.com/in".into(),
        },
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        state: SubscriptionState::Active,
        last_error: String::new(),
        events_delivered: 0,
        // Stored to the microsecond.
        created_at: chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
        position: (7, String::new()),
        secret: "whsec_c2VjcmV0".into(),
    }
}

async fn subscriptions_are_created_listed_resumed_and_deleted_with_audit_records(
    store: Arc<dyn Store>,
) {
    let tenant_id = tenant(&*store, "acme").await;
    let other = tenant(&*store, "other").await;
    let first = webhook(tenant_id, &["signup", "buy"]);
    let mut second = webhook(tenant_id, &[]);
    second.sink = Sink::Nats {
        subject: "eventline.acme".into(),
    };
    second.secret.clear();
    store
        .create_subscription(&first, &Actor::Cli)
        .await
        .unwrap();
    store
        .create_subscription(&second, &Actor::AdminToken)
        .await
        .unwrap();
    store
        .create_subscription(&webhook(other, &[]), &Actor::Cli)
        .await
        .unwrap();
    let listed = store.list_subscriptions(tenant_id).await.unwrap();
    assert_eq!(
        listed,
        [first.clone(), second.clone()],
        "stored as given, oldest first"
    );
    let unknown = TenantId(uuid::Uuid::now_v7());
    assert!(
        store
            .create_subscription(&webhook(unknown, &[]), &Actor::Cli)
            .await
            .is_err()
    );

    store
        .pause_subscription(&first, "receiver said 410")
        .await
        .unwrap();
    let paused = &store.list_subscriptions(tenant_id).await.unwrap()[0];
    assert_eq!(paused.state, SubscriptionState::Paused);
    assert_eq!(paused.last_error, "receiver said 410");
    let resumed = store
        .resume_subscription(tenant_id, &first.subscription_id, &Actor::Cli)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.state, SubscriptionState::Active);
    assert!(resumed.last_error.is_empty());
    assert_eq!(
        resumed.position, first.position,
        "resuming keeps the position"
    );
    assert!(
        store
            .resume_subscription(other, &first.subscription_id, &Actor::Cli)
            .await
            .unwrap()
            .is_none(),
        "another tenant's id finds nothing"
    );

    assert!(
        !store
            .delete_subscription(other, &first.subscription_id, &Actor::Cli)
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_subscription(tenant_id, &first.subscription_id, &Actor::Cli)
            .await
            .unwrap()
    );
    assert_eq!(store.list_subscriptions(tenant_id).await.unwrap(), [second]);

    let actions: Vec<AuditAction> = store
        .list_audit_events(&AuditQuery {
            tenant_id: Some(tenant_id),
            before: None,
            limit: 100,
        })
        .await
        .unwrap()
        .iter()
        .map(|event| event.action)
        .collect();
    for action in [
        AuditAction::SubscriptionCreated,
        AuditAction::SubscriptionResumed,
        AuditAction::SubscriptionDeleted,
    ] {
        assert!(actions.contains(&action), "{action:?} in {actions:?}");
    }
}

async fn one_owner_at_a_time_leases_a_subscription_and_only_it_moves_the_position(
    store: Arc<dyn Store>,
) {
    let tenant_id = tenant(&*store, "acme").await;
    let subscription = webhook(tenant_id, &[]);
    store
        .create_subscription(&subscription, &Actor::Cli)
        .await
        .unwrap();
    let now = Utc::now();
    let until = now + Duration::seconds(30);
    let leased = store
        .lease_subscriptions(tenant_id, "a", now, until)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert!(
        store
            .lease_subscriptions(tenant_id, "b", now, until)
            .await
            .unwrap()
            .is_empty(),
        "held by a"
    );
    // a renews its own lease; b may not move the position.
    let leased = store
        .lease_subscriptions(tenant_id, "a", now, until)
        .await
        .unwrap();
    let to = (9, "e9".to_owned());
    assert!(
        !store
            .advance_subscription(&leased[0], "b", &to, 3)
            .await
            .unwrap()
    );
    assert!(
        store
            .advance_subscription(&leased[0], "a", &to, 3)
            .await
            .unwrap()
    );
    // From a stale position nothing moves: the batch was delivered already.
    assert!(
        !store
            .advance_subscription(&leased[0], "a", &(11, "e11".into()), 2)
            .await
            .unwrap()
    );
    let stored = &store.list_subscriptions(tenant_id).await.unwrap()[0];
    assert_eq!(stored.position, to);
    assert_eq!(stored.events_delivered, 3);

    // Once a's lease has run out, b takes it over.
    let later = until + Duration::seconds(1);
    let taken = store
        .lease_subscriptions(tenant_id, "b", later, later + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].position, to);
    // A paused subscription is leased by nobody.
    store.pause_subscription(&taken[0], "broken").await.unwrap();
    let much_later = later + Duration::seconds(60);
    assert!(
        store
            .lease_subscriptions(tenant_id, "c", much_later, much_later)
            .await
            .unwrap()
            .is_empty()
    );
}
