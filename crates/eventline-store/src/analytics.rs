//! Funnels and retention, computed the same way on every store from one ordered read:
//! the events of the types asked about, of users with a `user_id`, each user's events
//! together (sorted by a 64-bit key of the user id) and in timestamp order; the order of
//! events of one user at one timestamp does not matter to either walk. Each backend
//! supplies that stream from its own SQL; these
//! functions walk it once, holding one user's state at a time (and, for a funnel, the
//! events of one user at one timestamp), so memory does not grow with the events read.
//! The semantics are QueryService.Funnel's and QueryService.Retention's proto comments.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use eventline_core::{
    TenantId,
    breakdown::canonical_json,
    query::{Cohort, EventFilter, FunnelCounts, FunnelQuery, RetentionQuery},
};
use futures::{Stream, StreamExt};

use crate::StoreError;

/// One event as the analytics read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserEvent {
    /// A 64-bit key of the user id: the events of one user share it. Two users whose
    /// keys collide would be walked as one; at a million users the odds are ~3·10⁻⁸.
    pub(crate) user: i64,
    pub(crate) event_type: String,
    pub(crate) timestamp: DateTime<Utc>,
    /// The value of the reading's `property` as JSON text, when it asks for one.
    pub(crate) value: Option<String>,
}

/// The user key of a store that reads user ids (SQLite; tests): XXH3-64 of the id.
pub(crate) fn user_key(user_id: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(user_id.as_bytes()) as i64
}

/// What an analytics question reads: events of these types, with a user, in
/// `[start, end)`, matching `filter`; each backend turns it into its SQL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reading {
    pub(crate) tenant_id: TenantId,
    pub(crate) event_types: Vec<String>,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) filter: EventFilter,
    /// Read this top-level property's value too, and order one user's events of one
    /// timestamp by event id (a funnel by property: the entering event decides).
    pub(crate) property: Option<String>,
}

impl Reading {
    /// A funnel's steps from its window's start until the conversion window has run out
    /// for the last user who can enter (inclusive: hence one microsecond more).
    pub(crate) fn funnel(query: &FunnelQuery) -> Self {
        let mut event_types = query.steps.clone();
        event_types.sort();
        event_types.dedup();
        Self {
            tenant_id: query.tenant_id,
            event_types,
            start: query.start,
            end: query
                .end
                .checked_add_signed(query.conversion_window + chrono::Duration::microseconds(1))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            filter: query.filter.clone(),
            property: query.group_by_property.clone(),
        }
    }

    /// A retention table's start and return events over its window.
    pub(crate) fn retention(query: &RetentionQuery) -> Self {
        let mut event_types = vec![
            query.start_event_type.clone(),
            query.return_event_type.clone(),
        ];
        event_types.dedup();
        Self {
            tenant_id: query.tenant_id,
            event_types,
            start: query.start,
            end: query.end,
            filter: EventFilter::default(),
            property: None,
        }
    }
}

/// Users who reached each step of `query` (and per value of its property), from
/// `events` in user, then timestamp order covering `[query.start, query.end +
/// conversion_window]` and the steps' types.
pub(crate) async fn funnel(
    events: impl Stream<Item = Result<UserEvent, StoreError>>,
    query: &FunnelQuery,
) -> Result<FunnelCounts, StoreError> {
    let mut tally = FunnelTally {
        reached: vec![0u64; query.steps.len()],
        by_value: HashMap::new(),
        grouped: query.group_by_property.is_some(),
    };
    let mut user = FunnelUser::default();
    let mut group: Vec<GroupedEvent> = Vec::new();
    let mut current: Option<(i64, DateTime<Utc>)> = None;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await.transpose()? {
        let same_user = current
            .as_ref()
            .is_some_and(|(user, _)| *user == event.user);
        let same_time = same_user
            && current
                .as_ref()
                .is_some_and(|(_, at)| *at == event.timestamp);
        if !same_time {
            if let Some((_, at)) = &current {
                user.take_group(query, *at, &mut group);
            }
            group.clear();
        }
        if !same_user {
            user.count_into(&mut tally);
            user = FunnelUser::default();
        }
        current = Some((event.user, event.timestamp));
        group.push(GroupedEvent {
            event_type: event.event_type,
            value: event.value,
            used: false,
        });
    }
    if let Some((_, at)) = &current {
        user.take_group(query, *at, &mut group);
    }
    user.count_into(&mut tally);
    Ok(FunnelCounts {
        reached: tally.reached,
        by_value: tally.by_value.into_iter().collect(),
    })
}

/// One event of a user's events at one timestamp, flagged once a step used it.
#[derive(Debug)]
struct GroupedEvent {
    event_type: String,
    value: Option<String>,
    used: bool,
}

/// Users per step, overall and per value of the entering event's property.
#[derive(Debug)]
struct FunnelTally {
    reached: Vec<u64>,
    by_value: HashMap<Option<String>, Vec<u64>>,
    grouped: bool,
}

/// One user's progress through a funnel.
#[derive(Debug, Default)]
struct FunnelUser {
    /// When the user entered (their first first-step event in the window).
    entered: Option<DateTime<Utc>>,
    /// The property's value on the entering event (JSON text), when grouping.
    entered_value: Option<String>,
    /// Steps matched so far.
    steps: usize,
}

impl FunnelUser {
    /// Matches what it can among the events of one timestamp (`group`, flagged once
    /// used): every one is at or after the event matched last, so it may take the next
    /// step, and then the one after, each with another event.
    fn take_group(&mut self, query: &FunnelQuery, at: DateTime<Utc>, group: &mut [GroupedEvent]) {
        match self.entered {
            None if at < query.start || at >= query.end => return,
            None => {}
            Some(entered) if at - entered > query.conversion_window => return,
            Some(_) => {}
        }
        while self.steps < query.steps.len() {
            let step = &query.steps[self.steps];
            let Some(slot) = group
                .iter_mut()
                .find(|event| !event.used && event.event_type == *step)
            else {
                return;
            };
            slot.used = true;
            if self.steps == 0 {
                self.entered = Some(at);
                self.entered_value = slot.value.clone();
            }
            self.steps += 1;
        }
    }

    fn count_into(&self, tally: &mut FunnelTally) {
        if self.steps == 0 {
            return;
        }
        for users in &mut tally.reached[..self.steps] {
            *users += 1;
        }
        if tally.grouped {
            let value = self.entered_value.as_deref().map(canonical_json);
            let by_value = tally
                .by_value
                .entry(value)
                .or_insert_with(|| vec![0; tally.reached.len()]);
            for users in &mut by_value[..self.steps] {
                *users += 1;
            }
        }
    }
}

/// The cohorts of `query` from `events` in (user, timestamp, id) order covering
/// `[query.start, query.end)` and the two types. An event whose type is both the start
/// and the return type is read once and plays both parts.
pub(crate) async fn retention(
    events: impl Stream<Item = Result<UserEvent, StoreError>>,
    query: &RetentionQuery,
) -> Result<Vec<Cohort>, StoreError> {
    let intervals = query.intervals();
    let mut cohorts = empty_cohorts(query);
    let mut user = RetentionUser::new(intervals);
    let mut current: Option<i64> = None;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await.transpose()? {
        if current != Some(event.user) {
            user.count_into(&mut cohorts);
            user.reset();
            current = Some(event.user);
        }
        user.take(query, &event);
    }
    user.count_into(&mut cohorts);
    Ok(cohorts)
}

/// The cohorts of `query`, each with no user yet.
pub(crate) fn empty_cohorts(query: &RetentionQuery) -> Vec<Cohort> {
    let intervals = query.intervals();
    (0..intervals)
        .map(|index| Cohort {
            start: query.start + query.interval * index as i32,
            users: 0,
            returned: vec![0; intervals - index],
        })
        .collect()
}

/// One user's cohort and the intervals they came back in.
#[derive(Debug)]
struct RetentionUser {
    /// The first start event: its interval and time.
    started: Option<(usize, DateTime<Utc>)>,
    /// The time of the last return event read before the user started.
    returned_before: Option<DateTime<Utc>>,
    /// `returned[i]`: came back `i` intervals after their cohort's.
    returned: Vec<bool>,
}

impl RetentionUser {
    fn new(intervals: usize) -> Self {
        Self {
            started: None,
            returned_before: None,
            returned: vec![false; intervals],
        }
    }

    fn reset(&mut self) {
        self.started = None;
        self.returned_before = None;
        self.returned.fill(false);
    }

    fn take(&mut self, query: &RetentionQuery, event: &UserEvent) {
        let is_start = event.event_type == query.start_event_type;
        let is_return = event.event_type == query.return_event_type;
        match self.started {
            None if is_start => {
                let cohort = query.interval_of(event.timestamp);
                self.started = Some((cohort, event.timestamp));
                // A return event of the same timestamp, read first for its smaller id,
                // is at or after the start: it counts in the cohort's own interval.
                if self.returned_before == Some(event.timestamp) {
                    self.returned[0] = true;
                }
            }
            None if is_return => self.returned_before = Some(event.timestamp),
            None => {}
            Some((cohort, _)) if is_return => {
                let interval = query.interval_of(event.timestamp);
                if let Some(slot) = self.returned.get_mut(interval.saturating_sub(cohort)) {
                    *slot = true;
                }
            }
            Some(_) => {}
        }
    }

    fn count_into(&self, cohorts: &mut [Cohort]) {
        let Some((cohort, _)) = self.started else {
            return;
        };
        let Some(cohort) = cohorts.get_mut(cohort) else {
            return;
        };
        cohort.users += 1;
        for (count, returned) in cohort.returned.iter_mut().zip(&self.returned) {
            *count += u64::from(*returned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-20T{hour:02}:{minute:02}:00Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn event(
        user_id: &str,
        event_type: &str,
        timestamp: DateTime<Utc>,
    ) -> Result<UserEvent, StoreError> {
        Ok(UserEvent {
            user: user_key(user_id),
            value: None,
            event_type: event_type.to_owned(),
            timestamp,
        })
    }

    fn funnel_query(steps: &[&str]) -> FunnelQuery {
        FunnelQuery {
            tenant_id: TenantId(uuid::Uuid::nil()),
            steps: steps.iter().map(|step| (*step).to_owned()).collect(),
            conversion_window: chrono::Duration::hours(1),
            start: at(10, 0),
            end: at(12, 0),
            filter: EventFilter::default(),
            group_by_property: None,
        }
    }

    #[tokio::test]
    async fn a_repeated_step_needs_another_event_and_ties_count_as_in_order() {
        let events = futures::stream::iter([
            // a: view and signup at one timestamp, then view again: all three steps.
            event("a", "signup", at(10, 0)),
            event("a", "view", at(10, 0)),
            event("a", "view", at(10, 5)),
            // b: one view only: step 1 of view → view, never step 2.
            event("b", "view", at(10, 0)),
            // c: the second step after the conversion window.
            event("c", "view", at(10, 0)),
            event("c", "view", at(11, 1)),
        ]);
        let reached = funnel(events, &funnel_query(&["view", "view"]))
            .await
            .unwrap()
            .reached;
        assert_eq!(reached, [3, 1]);
        let events = futures::stream::iter([
            event("a", "signup", at(10, 0)),
            event("a", "view", at(10, 0)),
        ]);
        let reached = funnel(events, &funnel_query(&["view", "signup"]))
            .await
            .unwrap()
            .reached;
        assert_eq!(reached, [1, 1], "a tie is in order either way");
    }

    #[tokio::test]
    async fn a_user_enters_only_inside_the_window() {
        let events = futures::stream::iter([
            event("a", "view", at(9, 59)),
            event("a", "buy", at(10, 1)),
            event("b", "view", at(12, 0)),
            event("b", "buy", at(12, 1)),
        ]);
        let reached = funnel(events, &funnel_query(&["view", "buy"]))
            .await
            .unwrap()
            .reached;
        assert_eq!(reached, [0, 0]);
    }

    #[tokio::test]
    async fn retention_counts_the_cohort_interval_and_later_ones() {
        let query = RetentionQuery {
            tenant_id: TenantId(uuid::Uuid::nil()),
            start_event_type: "signup".into(),
            return_event_type: "login".into(),
            interval: chrono::Duration::hours(1),
            start: at(10, 0),
            end: at(13, 0),
        };
        let events = futures::stream::iter([
            event("a", "login", at(10, 0)),
            event("a", "signup", at(10, 0)),
            event("a", "login", at(12, 30)),
            event("b", "login", at(10, 10)),
            event("b", "signup", at(11, 0)),
        ]);
        let cohorts = retention(events, &query).await.unwrap();
        let table: Vec<(u64, Vec<u64>)> = cohorts
            .into_iter()
            .map(|cohort| (cohort.users, cohort.returned))
            .collect();
        assert_eq!(table, [(1, vec![1, 0, 1]), (1, vec![0, 0]), (0, vec![0])]);
    }
}
