//! Alert rules' conformance cases (README "Alerts"): rules and their state, the
//! compare-and-set of a change of state, and the delivery log, each on SQLite and
//! PostgreSQL (and on Citus, by scripts/test-citus), each on a fresh database.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use eventline_core::{
    Actor, AuditAction, AuditQuery, TenantId,
    alerts::{
        AlertCondition, AlertDelivery, AlertRule, AlertState, AlertStatus, Comparison,
        DeliveryOutcome, DeliveryQuery, DeliveryResult, Evaluation, MAX_DELIVERIES_PER_RULE,
    },
};
use eventline_store::{Store, StoreError};

eventline_store::conformance_suite!(
    alert_rules_of_every_kind_round_trip_per_tenant_and_delete_with_their_log,
    a_change_of_state_is_recorded_once_and_never_by_an_older_window,
    deliveries_are_logged_finished_and_paged_newest_first,
    the_delivery_log_keeps_each_rules_newest_thousand,
    pending_deliveries_left_too_long_are_claimed_once,
);

fn minute(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

async fn new_tenant(store: &dyn Store, name: &str) -> TenantId {
    store
        .create_tenant(name, &Actor::Cli)
        .await
        .expect("create tenant")
        .tenant_id
}

fn rule(tenant_id: TenantId, name: &str, condition: AlertCondition) -> AlertRule {
    let created_at = eventline_core::time::now();
    AlertRule {
        tenant_id,
        rule_id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        window: Duration::from_secs(300),
        condition,
        webhook_url: "http://127.0.0.1:9/hook".to_owned(),
        webhook_secret: "whsec_c2VjcmV0".to_owned(),
        created_at,
        status: AlertStatus {
            state: AlertState::Resolved,
            since: created_at,
            last_value: None,
            evaluated_until: None,
        },
    }
}

fn every_kind(tenant_id: TenantId) -> Vec<AlertRule> {
    vec![
        rule(
            tenant_id,
            "errors",
            AlertCondition::Threshold {
                event_type: Some("error".into()),
                comparison: Comparison::Greater,
                threshold: 10.0,
            },
        ),
        rule(
            tenant_id,
            "all quiet",
            AlertCondition::Threshold {
                event_type: None,
                comparison: Comparison::LessOrEqual,
                threshold: 0.0,
            },
        ),
        rule(
            tenant_id,
            "error rate",
            AlertCondition::Ratio {
                numerator_event_type: "error".into(),
                denominator_event_type: Some("request".into()),
                comparison: Comparison::GreaterOrEqual,
                threshold: 0.05,
                min_denominator: 20,
            },
        ),
        rule(
            tenant_id,
            "signup spike",
            AlertCondition::Spike {
                event_type: "signup".into(),
                baseline_windows: 12,
                sensitivity: 3.5,
                min_count: 10,
            },
        ),
    ]
}

/// Tenant "acme" with the first `count` rules of `every_kind`, and tenant "other" with
/// one rule, all stored: (acme, its rules, other's rule).
async fn acme_and_other(store: &dyn Store, count: usize) -> (TenantId, Vec<AlertRule>, AlertRule) {
    let tenant_id = new_tenant(store, "acme").await;
    let other = new_tenant(store, "other").await;
    let mut rules = every_kind(tenant_id);
    rules.truncate(count);
    let others_rule = every_kind(other).remove(0);
    for rule in rules.iter().chain([&others_rule]) {
        store.create_alert_rule(rule, &Actor::Cli).await.unwrap();
    }
    (tenant_id, rules, others_rule)
}

fn evaluation(minutes: i64, value: f64, state: AlertState) -> Evaluation {
    Evaluation {
        window_end: minute(minutes),
        value: Some(value),
        state,
    }
}

async fn alert_rules_of_every_kind_round_trip_per_tenant_and_delete_with_their_log(
    store: Arc<dyn Store>,
) {
    let (tenant_id, rules, others_rule) = acme_and_other(&*store, 4).await;
    let other = others_rule.tenant_id;

    assert_eq!(store.alert_rules(tenant_id).await.unwrap(), rules);
    assert_eq!(
        store
            .alert_rule(tenant_id, &rules[2].rule_id)
            .await
            .unwrap(),
        Some(rules[2].clone())
    );
    assert_eq!(
        store
            .alert_rule(tenant_id, &others_rule.rule_id)
            .await
            .unwrap(),
        None,
        "another tenant's rule is not found"
    );

    let delivery = store
        .record_alert_evaluation(&rules[0], &evaluation(5, 11.0, AlertState::Firing))
        .await
        .unwrap()
        .expect("a change of state");
    assert!(matches!(
        store
            .delete_alert_rule(tenant_id, &others_rule.rule_id, &Actor::Cli)
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .delete_alert_rule(tenant_id, &rules[0].rule_id, &Actor::Cli)
        .await
        .unwrap();
    assert!(matches!(
        store
            .delete_alert_rule(tenant_id, &rules[0].rule_id, &Actor::Cli)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.alert_rules(tenant_id).await.unwrap(), rules[1..]);
    let log = store
        .alert_deliveries(&DeliveryQuery {
            tenant_id,
            rule_id: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(
        log.iter()
            .all(|kept| kept.delivery_id != delivery.delivery_id),
        "the deleted rule's log goes with it"
    );
    assert_eq!(store.alert_rules(other).await.unwrap(), [others_rule]);

    let audit = store
        .list_audit_events(&AuditQuery {
            tenant_id: Some(tenant_id),
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    let rule_actions: Vec<(AuditAction, &str)> = audit
        .iter()
        .filter(|event| event.target == rules[0].rule_id)
        .map(|event| {
            (
                event.action,
                event.details.get("name").map_or("", String::as_str),
            )
        })
        .collect();
    assert_eq!(
        rule_actions,
        [
            (AuditAction::AlertRuleDeleted, ""),
            (AuditAction::AlertRuleCreated, "errors")
        ],
        "newest first"
    );
}

async fn a_change_of_state_is_recorded_once_and_never_by_an_older_window(store: Arc<dyn Store>) {
    let tenant_id = new_tenant(&*store, "acme").await;
    let rule = every_kind(tenant_id).remove(0);
    store.create_alert_rule(&rule, &Actor::Cli).await.unwrap();

    // Two replicas read the rule resolved and both find it firing at 12:05: one records it.
    let firing = evaluation(5, 12.0, AlertState::Firing);
    let (first, second) = tokio::join!(
        store.record_alert_evaluation(&rule, &firing),
        store.record_alert_evaluation(&rule, &firing),
    );
    let recorded: Vec<AlertDelivery> = [first.unwrap(), second.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(recorded.len(), 1, "exactly one replica records the change");
    assert_eq!(recorded[0].transition, AlertState::Firing);
    assert_eq!(recorded[0].value, Some(12.0));
    assert_eq!(recorded[0].outcome, DeliveryOutcome::Pending);

    let stored = store
        .alert_rule(tenant_id, &rule.rule_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status,
        AlertStatus {
            state: AlertState::Firing,
            since: minute(5),
            last_value: Some(12.0),
            evaluated_until: Some(minute(5)),
        }
    );

    // Still firing a minute later: the value moves, the state and its start do not.
    let still = evaluation(6, 15.0, AlertState::Firing);
    assert_eq!(
        store
            .record_alert_evaluation(&stored, &still)
            .await
            .unwrap(),
        None
    );
    let stored = store
        .alert_rule(tenant_id, &rule.rule_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status.since, minute(5));
    assert_eq!(stored.status.last_value, Some(15.0));
    assert_eq!(stored.status.evaluated_until, Some(minute(6)));

    // A slow replica's older window changes nothing.
    let late = evaluation(4, 0.0, AlertState::Resolved);
    assert_eq!(
        store.record_alert_evaluation(&stored, &late).await.unwrap(),
        None
    );
    let unchanged = store
        .alert_rule(tenant_id, &rule.rule_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged, stored);

    // A newer window resolves it, once.
    let resolved = evaluation(7, 1.0, AlertState::Resolved);
    let delivery = store
        .record_alert_evaluation(&stored, &resolved)
        .await
        .unwrap()
        .expect("resolved");
    assert_eq!(delivery.transition, AlertState::Resolved);
    assert_eq!(
        store
            .record_alert_evaluation(&stored, &resolved)
            .await
            .unwrap(),
        None,
        "the rule as read is no longer firing"
    );
    let stored = store
        .alert_rule(tenant_id, &rule.rule_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status.state, AlertState::Resolved);
    assert_eq!(stored.status.since, minute(7));
}

async fn deliveries_are_logged_finished_and_paged_newest_first(store: Arc<dyn Store>) {
    let (tenant_id, rules, others_rule) = acme_and_other(&*store, 2).await;
    store
        .record_alert_evaluation(&others_rule, &evaluation(1, 50.0, AlertState::Firing))
        .await
        .unwrap()
        .expect("the other tenant's change");

    // Rule 0 fires, resolves and fires again; rule 1 fires once.
    let mut ids = Vec::new();
    for (minutes, state) in [
        (1, AlertState::Firing),
        (2, AlertState::Resolved),
        (3, AlertState::Firing),
    ] {
        let current = store
            .alert_rule(tenant_id, &rules[0].rule_id)
            .await
            .unwrap()
            .unwrap();
        let delivery = store
            .record_alert_evaluation(&current, &evaluation(minutes, 20.0, state))
            .await
            .unwrap()
            .expect("a change");
        ids.push(delivery.delivery_id);
    }
    let last = store
        .record_alert_evaluation(&rules[1], &evaluation(3, 0.0, AlertState::Firing))
        .await
        .unwrap()
        .expect("a change");

    let result = DeliveryResult {
        outcome: DeliveryOutcome::Failed,
        attempts: 5,
        last_status: Some(503),
        last_error: Some("HTTP 503 Service Unavailable".into()),
    };
    store
        .finish_alert_delivery(tenant_id, &ids[0], &result)
        .await
        .unwrap();

    let page = |rule_id: Option<&str>, before: Option<&str>, limit| DeliveryQuery {
        tenant_id,
        rule_id: rule_id.map(str::to_owned),
        before: before.map(str::to_owned),
        limit,
    };
    let everything = store.alert_deliveries(&page(None, None, 10)).await.unwrap();
    let listed: Vec<&str> = everything.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(
        listed,
        [&last.delivery_id, &ids[2], &ids[1], &ids[0]],
        "newest first, this tenant's only"
    );
    let finished = &everything[3];
    assert_eq!(finished.outcome, DeliveryOutcome::Failed);
    assert_eq!(finished.attempts, 5);
    assert_eq!(finished.last_status, Some(503));
    assert_eq!(
        finished.last_error.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    assert!(finished.finished_at.is_some());
    assert_eq!(finished.transition, AlertState::Firing);
    assert_eq!(everything[2].transition, AlertState::Resolved);
    assert_eq!(everything[1].outcome, DeliveryOutcome::Pending);
    assert_eq!(everything[1].finished_at, None);

    let first_page = store
        .alert_deliveries(&page(Some(&rules[0].rule_id), None, 2))
        .await
        .unwrap();
    let second_page = store
        .alert_deliveries(&page(
            Some(&rules[0].rule_id),
            Some(&first_page[1].delivery_id),
            2,
        ))
        .await
        .unwrap();
    let paged: Vec<String> = first_page
        .iter()
        .chain(&second_page)
        .map(|d| d.delivery_id.clone())
        .collect();
    assert_eq!(paged, [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
}

async fn the_delivery_log_keeps_each_rules_newest_thousand(store: Arc<dyn Store>) {
    let tenant_id = new_tenant(&*store, "acme").await;
    let rules = every_kind(tenant_id);
    for rule in &rules[..2] {
        store.create_alert_rule(rule, &Actor::Cli).await.unwrap();
    }
    store
        .record_alert_evaluation(&rules[1], &evaluation(0, 1.0, AlertState::Firing))
        .await
        .unwrap()
        .expect("the other rule's change");
    // Flip rule 0 one more time than it keeps, tracking its state here.
    let mut rule = rules[0].clone();
    let mut newest = Vec::new();
    for minutes in 1..=(MAX_DELIVERIES_PER_RULE as i64 + 1) {
        let state = if minutes % 2 == 1 {
            AlertState::Firing
        } else {
            AlertState::Resolved
        };
        let delivery = store
            .record_alert_evaluation(&rule, &evaluation(minutes, 1.0, state))
            .await
            .unwrap()
            .expect("a change");
        newest.push(delivery.delivery_id);
        rule.status.state = state;
        rule.status.evaluated_until = Some(minute(minutes));
    }
    let page = |rule_id: &str| DeliveryQuery {
        tenant_id,
        rule_id: Some(rule_id.to_owned()),
        before: None,
        limit: 2 * MAX_DELIVERIES_PER_RULE,
    };
    let kept = store.alert_deliveries(&page(&rule.rule_id)).await.unwrap();
    assert_eq!(kept.len(), MAX_DELIVERIES_PER_RULE);
    assert_eq!(
        kept.last().unwrap().delivery_id,
        newest[1],
        "the oldest one went"
    );
    assert_eq!(kept[0].delivery_id, *newest.last().unwrap());
    let others = store
        .alert_deliveries(&page(&rules[1].rule_id))
        .await
        .unwrap();
    assert_eq!(others.len(), 1, "another rule's log is untouched");
}

async fn pending_deliveries_left_too_long_are_claimed_once(store: Arc<dyn Store>) {
    let (tenant_id, rules, others_rule) = acme_and_other(&*store, 2).await;
    let mut recorded = Vec::new();
    for rule in [&rules[0], &rules[1], &others_rule] {
        let delivery = store
            .record_alert_evaluation(rule, &evaluation(3, 7.0, AlertState::Firing))
            .await
            .unwrap()
            .expect("a change");
        recorded.push(delivery);
    }
    store
        .finish_alert_delivery(
            tenant_id,
            &recorded[1].delivery_id,
            &DeliveryResult {
                outcome: DeliveryOutcome::Delivered,
                attempts: 1,
                last_status: Some(200),
                last_error: None,
            },
        )
        .await
        .unwrap();

    let now = eventline_core::time::now();
    let recent = store
        .claim_stale_deliveries(tenant_id, now - chrono::Duration::minutes(5), now)
        .await
        .unwrap();
    assert!(
        recent.is_empty(),
        "a delivery just recorded is its server's"
    );
    let later = now + chrono::Duration::minutes(10);
    let claimed = store
        .claim_stale_deliveries(tenant_id, later - chrono::Duration::minutes(5), later)
        .await
        .unwrap();
    assert_eq!(
        claimed,
        [recorded[0].clone()],
        "pending, this tenant's only"
    );
    assert_eq!(claimed[0].window_end, minute(3));
    assert_eq!(
        claimed[0].evaluation(),
        evaluation(3, 7.0, AlertState::Firing)
    );
    let again = store
        .claim_stale_deliveries(tenant_id, later - chrono::Duration::minutes(5), later)
        .await
        .unwrap();
    assert!(again.is_empty(), "claimed once");
}
