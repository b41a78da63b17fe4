//! One rule's evaluation: its counts from the store (rollups where they cover the
//! window) and the arithmetic of `eventline_core::alerts`.

use chrono::{DateTime, Utc};
use eventline_core::{
    TenantId,
    alerts::{AlertCondition, AlertRule, AlertState, Evaluation, ratio, spike_score},
    lifecycle::chrono_duration,
    query::{BucketWidth, CountQuery, Grouping},
};
use eventline_store::{Store, StoreError};

/// Evaluates `rule` over the window `[window_end - window, window_end)`.
pub(super) async fn evaluate(
    store: &dyn Store,
    rule: &AlertRule,
    window_end: DateTime<Utc>,
) -> Result<Evaluation, StoreError> {
    let window = chrono_duration(rule.window);
    let window_start = window_end - window;
    let tenant_id = rule.tenant_id;
    let (value, firing) = match &rule.condition {
        AlertCondition::Threshold {
            event_type,
            comparison,
            threshold,
        } => {
            let count = count(store, tenant_id, event_type, window_start, window_end).await?;
            let value = count as f64;
            (Some(value), comparison.holds(value, *threshold))
        }
        AlertCondition::Ratio {
            numerator_event_type,
            denominator_event_type,
            comparison,
            threshold,
            min_denominator,
        } => {
            let numerator = Some(numerator_event_type.clone());
            let (numerator, denominator) = tokio::try_join!(
                count(store, tenant_id, &numerator, window_start, window_end),
                count(
                    store,
                    tenant_id,
                    denominator_event_type,
                    window_start,
                    window_end
                ),
            )?;
            let value = ratio(numerator, denominator, *min_denominator);
            (
                value,
                value.is_some_and(|value| comparison.holds(value, *threshold)),
            )
        }
        AlertCondition::Spike {
            event_type,
            baseline_windows,
            sensitivity,
            min_count,
        } => {
            let windows =
                window_counts(store, rule, event_type, *baseline_windows, window_end).await?;
            let current = windows[0];
            let score = spike_score(current, &windows[1..]);
            (
                Some(current as f64),
                current >= *min_count && score.score > *sensitivity,
            )
        }
    };
    Ok(Evaluation {
        window_end,
        value,
        state: if firing {
            AlertState::Firing
        } else {
            AlertState::Resolved
        },
    })
}

/// Events of `event_type` (or of every type) in `[start, end)`.
async fn count(
    store: &dyn Store,
    tenant_id: TenantId,
    event_type: &Option<String>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let query = CountQuery {
        event_type: event_type.clone(),
        ..CountQuery::total(tenant_id, start, end)
    };
    Ok(store.count(&query).await?.iter().map(|row| row.count).sum())
}

/// The counts of `event_type` in the window ending at `window_end` (index 0) and in
/// each of the `baseline_windows` windows before it, from one count per minute.
async fn window_counts(
    store: &dyn Store,
    rule: &AlertRule,
    event_type: &str,
    baseline_windows: u32,
    window_end: DateTime<Utc>,
) -> Result<Vec<u64>, StoreError> {
    let window_seconds = i64::from(rule.window_seconds()).max(60);
    let windows = baseline_windows as usize + 1;
    let start = window_end - chrono::Duration::seconds(window_seconds * windows as i64);
    let query = CountQuery {
        event_type: Some(event_type.to_owned()),
        grouping: Grouping::Bucket(BucketWidth::Minute),
        ..CountQuery::total(rule.tenant_id, start, window_end)
    };
    let mut counts = vec![0u64; windows];
    for row in store.count(&query).await? {
        let Some(bucket) = row.bucket else { continue };
        // Minute buckets of [end - (k + 1)·w, end - k·w) belong to window k.
        let seconds_before_end = (window_end - bucket).num_seconds();
        let index = ((seconds_before_end - 1).max(0) / window_seconds) as usize;
        if let Some(slot) = counts.get_mut(index) {
            *slot += row.count;
        }
    }
    Ok(counts)
}
