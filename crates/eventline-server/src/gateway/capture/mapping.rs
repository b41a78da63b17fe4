//! The one mapping from Segment messages and PostHog events to eventline events, shared
//! by both doors so a team moving from one to the other sees the same event types:
//!
//! | Segment call | PostHog event | eventline `event_type` |
//! | --- | --- | --- |
//! | `track` (`event`) | any custom event | the event name, unchanged |
//! | `identify` | `$identify` | `$identify` (traits in `$set`) |
//! | `page` | `$pageview` | `$pageview` (`$current_url` from `properties.url`) |
//! | `screen` | `$screen` | `$screen` (`$screen_name` from `name`) |
//! | `group` | `$groupidentify` | `$groupidentify` (`$group_key`, `$group_set`) |
//! | `alias` | `$create_alias` | `$create_alias` (`user_id` the previous id, `alias` the new) |
//!
//! `user_id` is Segment's `userId` (else its `anonymousId`) or PostHog's `distinct_id`;
//! `anonymousId` is kept in `$anonymous_id`, Segment's `context` in `$context` with its
//! library as `$lib`/`$lib_version` (PostHog sends those itself); the event id is
//! `messageId` or `uuid`, so SDK retries deduplicate. A message without one gets an id
//! derived from its content, so that resending the same body stores it once too.

use chrono::{DateTime, NaiveDateTime, Utc};
use eventline_core::FieldViolation;
use eventline_proto::{Properties, v1};
use pbjson_types::Timestamp;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Segment's documented limit for one message (a larger one is answered 400 by Segment).
pub(crate) const SEGMENT_MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// The event types of the calls both doors share.
pub(crate) const IDENTIFY: &str = "$identify";
pub(crate) const PAGEVIEW: &str = "$pageview";
pub(crate) const SCREEN: &str = "$screen";
pub(crate) const GROUP_IDENTIFY: &str = "$groupidentify";
pub(crate) const CREATE_ALIAS: &str = "$create_alias";

/// A Segment call type (`type`, or implied by the path of a single-call endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentCall {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl SegmentCall {
    /// The call named by Segment's `type` field.
    pub(crate) fn from_type(name: &str) -> Option<Self> {
        match name {
            "track" => Some(Self::Track),
            "identify" => Some(Self::Identify),
            "page" => Some(Self::Page),
            "screen" => Some(Self::Screen),
            "group" => Some(Self::Group),
            "alias" => Some(Self::Alias),
            _ => None,
        }
    }
}

/// `field` below `prefix` (`batch[3]` + `userId` = `batch[3].userId`).
fn path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// A string id (Segment and PostHog accept numbers too, sent as their decimal form).
fn id_value(value: Option<&Value>, field: &str) -> Result<Option<String>, FieldViolation> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => Err(FieldViolation::new(field, "must be a string")),
    }
}

/// An optional JSON object field.
fn object_field<'a>(
    message: &'a Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, FieldViolation> {
    match message.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(FieldViolation::new(field, "must be a JSON object")),
    }
}

/// Parses an ISO 8601 / RFC 3339 time as the SDKs send it; one without an offset is UTC.
pub(crate) fn parse_time(value: &Value, field: &str) -> Result<Option<Timestamp>, FieldViolation> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(text) if text.is_empty() => return Ok(None),
        Value::String(text) => text,
        _ => {
            return Err(FieldViolation::new(
                field,
                "must be an ISO 8601 time string such as 2026-12-01T10:00:00.000Z",
            ));
        }
    };
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|time| time.and_utc())
        })
        .map_err(|_| {
            FieldViolation::new(
                field,
                format!("is not an ISO 8601 time such as 2026-12-01T10:00:00.000Z, got {text:?}"),
            )
        })?;
    Ok(Some(to_timestamp(parsed)))
}

pub(crate) fn to_timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// An id for a message that carries none: the same message body gives the same id, so a
/// resent batch stores it once.
fn derived_id(door: &str, message: &Map<String, Value>) -> String {
    let encoded = serde_json::to_vec(message).unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(door.as_bytes())
        .chain_update(&encoded);
    let hex: String = digest.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{door}-{hex}")
}

/// The length of `message` encoded as JSON, counted without building the encoding.
fn encoded_len(message: &Map<String, Value>) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and a JSON map always serializes.
    let _ = serde_json::to_writer(&mut counter, message);
    counter.0
}

/// Maps one Segment message. `implied` is the call of a single-call endpoint
/// (`/v1/track`), `batch_context` the `context` of a batch body, `prefix` the message's
/// path in the body for error messages.
pub(crate) fn segment_event(
    message: &Map<String, Value>,
    implied: Option<SegmentCall>,
    batch_context: Option<&Value>,
    prefix: &str,
) -> Result<v1::Event, FieldViolation> {
    let size = encoded_len(message);
    if size > SEGMENT_MAX_MESSAGE_BYTES {
        return Err(FieldViolation::new(
            if prefix.is_empty() { "body" } else { prefix },
            format!(
                "is {size} bytes; a Segment message is at most {SEGMENT_MAX_MESSAGE_BYTES} bytes (32 KB)"
            ),
        ));
    }
    let call = match message.get("type") {
        Some(Value::String(name)) => SegmentCall::from_type(name).ok_or_else(|| {
            FieldViolation::new(
                path(prefix, "type"),
                format!("must be track, identify, page, screen, group or alias, got {name:?}"),
            )
        })?,
        _ => implied.ok_or_else(|| {
            FieldViolation::new(
                path(prefix, "type"),
                "is required: track, identify, page, screen, group or alias",
            )
        })?,
    };
    let user_id = id_value(message.get("userId"), &path(prefix, "userId"))?;
    let anonymous_id = id_value(message.get("anonymousId"), &path(prefix, "anonymousId"))?;
    let Some(owner) = user_id.clone().or_else(|| anonymous_id.clone()) else {
        return Err(FieldViolation::new(
            path(prefix, "userId"),
            "or anonymousId is required",
        ));
    };
    let mut properties = Map::new();
    let (event_type, aliased) =
        segment_call_properties(call, message, prefix, &owner, &mut properties)?;
    if let Some(anonymous_id) = anonymous_id {
        properties.insert("$anonymous_id".into(), Value::String(anonymous_id));
    }
    let context = match message.get("context") {
        Some(Value::Object(context)) => Some(Value::Object(context.clone())),
        None | Some(Value::Null) => batch_context.cloned(),
        Some(_) => {
            return Err(FieldViolation::new(
                path(prefix, "context"),
                "must be a JSON object",
            ));
        }
    };
    if let Some(context) = context {
        if let Some(Value::Object(library)) = context.get("library") {
            for (from, to) in [("name", "$lib"), ("version", "$lib_version")] {
                if let Some(value) = library.get(from) {
                    properties.insert(to.into(), value.clone());
                }
            }
        }
        properties.insert("$context".into(), context);
    }
    let timestamp_field = if message.contains_key("timestamp") {
        "timestamp"
    } else {
        "originalTimestamp"
    };
    let timestamp = match message.get(timestamp_field) {
        Some(value) => parse_time(value, &path(prefix, timestamp_field))?,
        None => None,
    };
    let event_id = match id_value(message.get("messageId"), &path(prefix, "messageId"))? {
        Some(id) => id,
        None => derived_id("segment", message),
    };
    Ok(v1::Event {
        event_id,
        event_type,
        user_id: aliased.unwrap_or(owner),
        timestamp,
        properties: Some(Properties::from_json(properties)),
        ..Default::default()
    })
}

/// The event type of a Segment call and the properties that call carries; for an alias,
/// also the id the event belongs to (see `CREATE_ALIAS`).
fn segment_call_properties(
    call: SegmentCall,
    message: &Map<String, Value>,
    prefix: &str,
    owner: &str,
    properties: &mut Map<String, Value>,
) -> Result<(String, Option<String>), FieldViolation> {
    let own = object_field(message, "properties", &path(prefix, "properties"))?;
    let traits = object_field(message, "traits", &path(prefix, "traits"))?;
    if let Some(own) = own {
        properties.extend(own.iter().map(|(key, value)| (key.clone(), value.clone())));
    }
    let name = message.get("name").filter(|name| !name.is_null());
    let event_type = match call {
        SegmentCall::Track => match message.get("event") {
            Some(Value::String(event)) if !event.is_empty() => event.clone(),
            _ => {
                return Err(FieldViolation::new(
                    path(prefix, "event"),
                    "is required for a track call: the event name as a string",
                ));
            }
        },
        SegmentCall::Identify => {
            if let Some(traits) = traits {
                properties.insert("$set".into(), Value::Object(traits.clone()));
            }
            IDENTIFY.to_owned()
        }
        SegmentCall::Page => {
            if let Some(url) = own.and_then(|own| own.get("url")) {
                properties.insert("$current_url".into(), url.clone());
            }
            for (from, to) in [("name", "$page_name"), ("category", "$page_category")] {
                if let Some(value) = message.get(from).filter(|value| !value.is_null()) {
                    properties.insert(to.into(), value.clone());
                }
            }
            PAGEVIEW.to_owned()
        }
        SegmentCall::Screen => {
            if let Some(name) = name {
                properties.insert("$screen_name".into(), name.clone());
            }
            SCREEN.to_owned()
        }
        SegmentCall::Group => {
            let group_id =
                id_value(message.get("groupId"), &path(prefix, "groupId"))?.ok_or_else(|| {
                    FieldViolation::new(path(prefix, "groupId"), "is required for a group call")
                })?;
            properties.insert("$group_type".into(), Value::String("group".into()));
            properties.insert("$group_key".into(), Value::String(group_id));
            if let Some(traits) = traits {
                properties.insert("$group_set".into(), Value::Object(traits.clone()));
            }
            GROUP_IDENTIFY.to_owned()
        }
        SegmentCall::Alias => {
            let previous_id = id_value(message.get("previousId"), &path(prefix, "previousId"))?
                .ok_or_else(|| {
                    FieldViolation::new(path(prefix, "previousId"), "is required for an alias call")
                })?;
            // As posthog-python's alias(previous_id, distinct_id) sends it: the event
            // belongs to the previous id and `alias` names the id it now also goes by.
            properties.insert("alias".into(), Value::String(owner.to_owned()));
            return Ok((CREATE_ALIAS.to_owned(), Some(previous_id)));
        }
    };
    Ok((event_type, None))
}

/// Properties PostHog SDKs put in an event that are not the event's: the project key.
const POSTHOG_DROPPED_PROPERTIES: [&str; 2] = ["token", "api_key"];

/// Maps one PostHog event. `sent_at` is the batch's send time (for events that carry an
/// `offset` instead of a `timestamp`), `prefix` the event's path in the body.
pub(crate) fn posthog_event(
    event: &Map<String, Value>,
    sent_at: Option<DateTime<Utc>>,
    prefix: &str,
) -> Result<v1::Event, FieldViolation> {
    let event_type = match event.get("event") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => {
            return Err(FieldViolation::new(
                path(prefix, "event"),
                "is required: the event name as a string",
            ));
        }
    };
    let own = object_field(event, "properties", &path(prefix, "properties"))?;
    let mut properties: Map<String, Value> = own.cloned().unwrap_or_default();
    let distinct_id = match id_value(event.get("distinct_id"), &path(prefix, "distinct_id"))? {
        Some(id) => Some(id),
        None => id_value(
            properties
                .get("distinct_id")
                .or_else(|| properties.get("$distinct_id")),
            &path(prefix, "properties.distinct_id"),
        )?,
    };
    let Some(distinct_id) = distinct_id else {
        return Err(FieldViolation::new(
            path(prefix, "distinct_id"),
            "is required (or properties.distinct_id)",
        ));
    };
    for dropped in POSTHOG_DROPPED_PROPERTIES
        .into_iter()
        .chain(["distinct_id"])
    {
        properties.remove(dropped);
    }
    for carried in ["$set", "$set_once"] {
        if let Some(value) = event.get(carried)
            && !properties.contains_key(carried)
        {
            properties.insert(carried.into(), value.clone());
        }
    }
    if let Some(library) = event.get("library")
        && !properties.contains_key("$lib")
    {
        properties.insert("$lib".into(), library.clone());
    }
    let session_id = match properties.get("$session_id") {
        Some(Value::String(session)) => session.clone(),
        _ => String::new(),
    };
    let timestamp = match event.get("timestamp") {
        Some(value) => parse_time(value, &path(prefix, "timestamp"))?,
        None => event.get("offset").and_then(Value::as_i64).map(|offset| {
            to_timestamp(sent_at.unwrap_or_else(Utc::now) - chrono::Duration::milliseconds(offset))
        }),
    };
    let event_id = match id_value(event.get("uuid"), &path(prefix, "uuid"))? {
        Some(id) => id,
        None => derived_id("posthog", event),
    };
    Ok(v1::Event {
        event_id,
        event_type,
        user_id: distinct_id,
        session_id,
        timestamp,
        properties: Some(Properties::from_json(properties)),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    fn properties(event: &v1::Event) -> Value {
        let decoded = event.properties.as_ref().unwrap().to_struct().unwrap();
        serde_json::to_value(decoded).unwrap()
    }

    #[test]
    fn segment_calls_map_to_the_shared_event_types() {
        let cases = [
            (
                json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}),
                IDENTIFY,
            ),
            (
                json!({"type": "page", "userId": "u1", "properties": {"url": "https://x"}}),
                PAGEVIEW,
            ),
            (
                json!({"type": "screen", "userId": "u1", "name": "Home"}),
                SCREEN,
            ),
            (
                json!({"type": "group", "userId": "u1", "groupId": "g1"}),
                GROUP_IDENTIFY,
            ),
            (
                json!({"type": "alias", "userId": "a1", "previousId": "u1"}),
                CREATE_ALIAS,
            ),
            (
                json!({"type": "track", "userId": "u1", "event": "Signed Up"}),
                "Signed Up",
            ),
        ];
        for (message, expected) in cases {
            let event = segment_event(&object(message), None, None, "").unwrap();
            assert_eq!(event.event_type, expected);
            assert_eq!(event.user_id, "u1");
        }
    }

    #[test]
    fn segment_keeps_anonymous_id_context_and_library() {
        let message = object(json!({
            "type": "track", "event": "e", "anonymousId": "anon", "messageId": "m1",
            "timestamp": "2026-12-01T10:00:00.5+01:00", "properties": {"n": 1},
        }));
        let context = json!({"library": {"name": "analytics-python", "version": "2.4.0"}});
        let event = segment_event(&message, None, Some(&context), "batch[0]").unwrap();
        assert_eq!(event.user_id, "anon");
        assert_eq!(event.event_id, "m1");
        assert_eq!(event.timestamp.unwrap().seconds, 1_796_115_600);
        let properties = properties(&event);
        assert_eq!(properties["$anonymous_id"], "anon");
        assert_eq!(properties["$lib"], "analytics-python");
        assert_eq!(properties["$context"], context);
        assert_eq!(properties["n"], 1.0);
    }

    #[test]
    fn segment_rejections_name_the_field() {
        let missing_owner = object(json!({"type": "track", "event": "e"}));
        let error = segment_event(&missing_owner, None, None, "batch[2]").unwrap_err();
        assert_eq!(error.field, "batch[2].userId");
        let no_event = object(json!({"userId": "u"}));
        let error = segment_event(&no_event, Some(SegmentCall::Track), None, "").unwrap_err();
        assert_eq!(error.field, "event");
        let bad_time =
            object(json!({"type": "track", "event": "e", "userId": "u", "timestamp": "yesterday"}));
        assert_eq!(
            segment_event(&bad_time, None, None, "").unwrap_err().field,
            "timestamp"
        );
        let big = object(
            json!({"type": "track", "event": "e", "userId": "u", "properties": {"x": "a".repeat(40_000)}}),
        );
        assert!(
            segment_event(&big, None, None, "batch[0]")
                .unwrap_err()
                .description
                .contains("32 KB")
        );
    }

    #[test]
    fn posthog_events_map_distinct_id_uuid_and_drop_the_token() {
        let event = object(json!({
            "event": "$pageview", "uuid": "u-1", "timestamp": "2026-12-01T10:00:00Z",
            "properties": {"distinct_id": "d1", "token": "secret", "$session_id": "s1", "$lib": "web"},
            "$set": {"plan": "pro"},
        }));
        let mapped = posthog_event(&event, None, "batch[0]").unwrap();
        assert_eq!(
            (mapped.event_id.as_str(), mapped.user_id.as_str()),
            ("u-1", "d1")
        );
        assert_eq!(mapped.session_id, "s1");
        let properties = properties(&mapped);
        assert!(properties.get("token").is_none());
        assert_eq!(properties["$set"]["plan"], "pro");
        assert_eq!(properties["$lib"], "web");
    }

    #[test]
    fn messages_without_ids_get_the_same_id_every_time() {
        let message = object(json!({"type": "track", "event": "e", "userId": "u"}));
        let first = segment_event(&message, None, None, "").unwrap();
        let second = segment_event(&message, None, None, "").unwrap();
        assert_eq!(first.event_id, second.event_id);
        assert!(first.event_id.starts_with("segment-"));
        let missing = object(json!({"event": "e"}));
        assert_eq!(
            posthog_event(&missing, None, "").unwrap_err().field,
            "distinct_id"
        );
    }
}
