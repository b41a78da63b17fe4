//! Realistic events from a seed: about 50 event types with a skewed distribution, about
//! 100,000 users, ~200-byte properties and client-side UUIDv7 ids.

use eventline_proto::v1;
use rand::{Rng, SeedableRng, rngs::StdRng};

const EVENT_TYPES: usize = 50;
const USERS: u32 = 100_000;
const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
const PAGES: [&str; 8] = [
    "/",
    "/pricing",
    "/docs",
    "/blog",
    "/signup",
    "/login",
    "/dashboard",
    "/settings",
];

/// A deterministic stream of events.
#[derive(Debug)]
pub(crate) struct EventGenerator {
    rng: StdRng,
}

impl EventGenerator {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next event. Type `type_0` is the most frequent; frequency falls off as u³.
    pub(crate) fn next_event(&mut self) -> v1::Event {
        event_of(self.next_fields())
    }

    /// The next event as the SDK's producer takes it (the id and time come from `track`).
    pub(crate) fn next_track_event(&mut self) -> eventline_client::TrackEvent {
        let (event_type, user_id, session_id, properties) = self.next_fields();
        eventline_client::TrackEvent::new(event_type)
            .user_id(user_id)
            .session_id(session_id)
            .properties(properties)
    }

    /// Type, user, session and properties of the next event.
    pub(crate) fn next_fields(&mut self) -> (String, String, String, serde_json::Value) {
        let skew: f64 = self.rng.random::<f64>().powi(3);
        let type_index = (skew * EVENT_TYPES as f64) as usize;
        let user = self.rng.random_range(0..USERS);
        let properties = serde_json::json!({
            "plan": PLANS[self.rng.random_range(0..PLANS.len())],
            "page": PAGES[self.rng.random_range(0..PAGES.len())],
            "referrer": format!("https://example.com/campaign/{}", self.rng.random_range(0..1000)),
            "duration_ms": self.rng.random_range(0..60_000),
            "browser": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
            "experiment": {"id": self.rng.random_range(0..20), "variant": if self.rng.random::<bool>() { "a" } else { "b" }},
        });
        (
            format!("type_{type_index}"),
            format!("user_{user}"),
            format!("session_{}", self.rng.random_range(0..1_000_000u32)),
            properties,
        )
    }

    /// `count` events in batches of `batch_size`.
    pub(crate) fn batches(&mut self, count: usize, batch_size: usize) -> Vec<Vec<v1::Event>> {
        let mut batches = Vec::with_capacity(count.div_ceil(batch_size));
        let mut left = count;
        while left > 0 {
            let size = left.min(batch_size);
            batches.push((0..size).map(|_| self.next_event()).collect());
            left -= size;
        }
        batches
    }
}

/// An event of generated fields, with a fresh UUIDv7 id.
pub(crate) fn event_of(
    (event_type, user_id, session_id, properties): (String, String, String, serde_json::Value),
) -> v1::Event {
    v1::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type,
        user_id,
        session_id,
        properties: serde_json::from_value(properties).ok(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn events_are_realistic_and_skewed() {
        let mut generator = EventGenerator::new(7);
        let events: Vec<v1::Event> = (0..2000).map(|_| generator.next_event()).collect();
        let popular = events
            .iter()
            .filter(|event| event.event_type == "type_0")
            .count();
        let rare = events
            .iter()
            .filter(|event| event.event_type == "type_49")
            .count();
        assert!(popular > 10 * rare.max(1), "popular {popular}, rare {rare}");
        let average = events
            .iter()
            .map(|event| event.properties.as_ref().unwrap().encoded_len())
            .sum::<usize>()
            / events.len();
        assert!(
            (150..350).contains(&average),
            "average properties size {average}"
        );
    }
}
