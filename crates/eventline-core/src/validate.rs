//! Turns an API event into a stored [`Event`]: checks every limit of DESIGN §3 (reject,
//! never truncate), assigns missing ids and timestamps, applies clock-skew correction and
//! encodes the properties to JSON exactly once.

use std::io::Write;

use chrono::{DateTime, Utc};
use eventline_proto::v1;
use pbjson_types::{Struct, Timestamp, Value, value::Kind};
use prost::Message;
use uuid::Uuid;

use crate::{Error, Event, FieldViolation, TenantId, limits, time};

/// The receive time of a batch and the clock-skew correction derived from its `sent_at`.
#[derive(Debug, Clone, Copy)]
pub struct IngestClock {
    pub received_at: DateTime<Utc>,
    /// Added to every event timestamp of the batch; zero unless the skew was large.
    pub skew_correction: chrono::Duration,
}

impl IngestClock {
    /// A clock for a batch received at `received_at` and sent at `sent_at` by the
    /// client's clock. Skews within five minutes are ignored (network delay, not a wrong
    /// clock); larger ones shift every event timestamp, as Segment does.
    pub fn new(received_at: DateTime<Utc>, sent_at: Option<&Timestamp>) -> Result<Self, Error> {
        let Some(sent_at) = sent_at else {
            return Ok(Self {
                received_at,
                skew_correction: chrono::Duration::zero(),
            });
        };
        let sent_at = time::from_proto(sent_at)
            .ok_or_else(|| Error::invalid("sent_at", "must be a valid timestamp"))?;
        let skew = received_at - sent_at;
        let threshold = chrono::Duration::from_std(limits::CLOCK_SKEW_THRESHOLD)
            .unwrap_or(chrono::Duration::MAX);
        let skew_correction = if skew.abs() > threshold {
            skew
        } else {
            chrono::Duration::zero()
        };
        Ok(Self {
            received_at,
            skew_correction,
        })
    }

    /// A clock with no skew correction, received now.
    pub fn now() -> Self {
        Self {
            received_at: time::now(),
            skew_correction: chrono::Duration::zero(),
        }
    }
}

/// Validates and normalises one event for `tenant_id`. Field names in violations are
/// relative to the event (`event_type`, `properties.plan`); callers prefix them.
pub fn validate_event(
    tenant_id: TenantId,
    event: v1::Event,
    clock: &IngestClock,
) -> Result<Event, FieldViolation> {
    let encoded_len = event.encoded_len();
    if encoded_len > limits::MAX_EVENT_BYTES {
        return Err(FieldViolation::new(
            "event",
            format!(
                "encoded event is {encoded_len} bytes, over the limit of {} bytes",
                limits::MAX_EVENT_BYTES
            ),
        ));
    }
    let event_id = normalize_event_id(event.event_id)?;
    check_text(
        "event_type",
        &event.event_type,
        1,
        limits::MAX_EVENT_TYPE_CHARS,
    )?;
    let user_id = optional_id("user_id", event.user_id)?;
    let session_id = optional_id("session_id", event.session_id)?;
    let (timestamp, client_timestamp) = event_time(event.timestamp.as_ref(), clock)?;
    let properties_json = encode_properties(event.properties.as_ref(), encoded_len)?;
    Ok(Event {
        tenant_id,
        event_id,
        event_type: event.event_type,
        user_id,
        session_id,
        timestamp,
        client_timestamp,
        received_at: clock.received_at,
        properties_json,
    })
}

fn normalize_event_id(event_id: String) -> Result<String, FieldViolation> {
    if event_id.is_empty() {
        return Ok(Uuid::now_v7().to_string());
    }
    check_text("event_id", &event_id, 1, limits::MAX_EVENT_ID_CHARS)?;
    Ok(event_id)
}

fn optional_id(field: &str, value: String) -> Result<Option<String>, FieldViolation> {
    if value.is_empty() {
        return Ok(None);
    }
    check_text(field, &value, 1, limits::MAX_ID_CHARS)?;
    Ok(Some(value))
}

pub(crate) fn check_text(
    field: &str,
    value: &str,
    min_chars: usize,
    max_chars: usize,
) -> Result<(), FieldViolation> {
    // Byte length bounds the char count from above, so most values skip the count.
    if value.len() < min_chars || value.len() > max_chars {
        let chars = value.chars().count();
        if chars < min_chars || chars > max_chars {
            return Err(FieldViolation::new(
                field,
                format!("must be {min_chars} to {max_chars} characters, got {chars}"),
            ));
        }
    }
    if value.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn event_time(
    timestamp: Option<&Timestamp>,
    clock: &IngestClock,
) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>), FieldViolation> {
    let Some(raw) = timestamp else {
        return Ok((clock.received_at, None));
    };
    let client_time = time::from_proto(raw)
        .ok_or_else(|| FieldViolation::new("timestamp", "must be a valid timestamp"))?;
    let corrected = client_time
        .checked_add_signed(clock.skew_correction)
        .ok_or_else(|| {
            FieldViolation::new("timestamp", "is out of range after clock-skew correction")
        })?;
    if corrected.timestamp() < limits::MIN_EVENT_UNIX_SECONDS {
        return Err(FieldViolation::new(
            "timestamp",
            format!("{} is before 1971-01-01T00:00:00Z", corrected.to_rfc3339()),
        ));
    }
    let latest = clock.received_at
        + chrono::Duration::from_std(limits::MAX_FUTURE_SKEW).unwrap_or(chrono::Duration::MAX);
    if corrected > latest {
        return Err(FieldViolation::new(
            "timestamp",
            format!(
                "{} is more than 1 hour after the receive time",
                corrected.to_rfc3339()
            ),
        ));
    }
    Ok((corrected, Some(client_time)))
}

/// Encodes `properties` as a JSON object, checking depth, NUL characters and numbers.
fn encode_properties(
    properties: Option<&Struct>,
    size_hint: usize,
) -> Result<String, FieldViolation> {
    let mut json = Vec::with_capacity(size_hint.min(64 * 1024));
    match properties {
        None => json.extend_from_slice(b"{}"),
        Some(object) => write_struct(&mut json, object, 1, "properties")?,
    }
    // Only valid UTF-8 was written: keys and strings come from Rust strings.
    String::from_utf8(json).map_err(|_| FieldViolation::new("properties", "must be valid UTF-8"))
}

fn write_struct(
    json: &mut Vec<u8>,
    object: &Struct,
    depth: usize,
    path: &str,
) -> Result<(), FieldViolation> {
    check_depth(depth, path)?;
    json.push(b'{');
    for (position, (key, value)) in object.fields.iter().enumerate() {
        if key.contains('\0') {
            return Err(FieldViolation::new(
                path,
                "keys must not contain NUL characters",
            ));
        }
        if position > 0 {
            json.push(b',');
        }
        write_json_string(json, key);
        json.push(b':');
        write_value(json, value, depth, &|| format!("{path}.{key}"))?;
    }
    json.push(b'}');
    Ok(())
}

fn write_value(
    json: &mut Vec<u8>,
    value: &Value,
    depth: usize,
    path: &dyn Fn() -> String,
) -> Result<(), FieldViolation> {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => json.extend_from_slice(b"null"),
        Some(Kind::BoolValue(flag)) => {
            json.extend_from_slice(if *flag { b"true" } else { b"false" })
        }
        Some(Kind::NumberValue(number)) => write_number(json, *number)
            .map_err(|description| FieldViolation::new(path(), description))?,
        Some(Kind::StringValue(text)) => {
            if text.contains('\0') {
                return Err(FieldViolation::new(
                    path(),
                    "must not contain NUL characters",
                ));
            }
            write_json_string(json, text);
        }
        Some(Kind::StructValue(object)) => write_struct(json, object, depth + 1, &path())?,
        Some(Kind::ListValue(list)) => {
            check_depth(depth + 1, &path())?;
            json.push(b'[');
            for (index, item) in list.values.iter().enumerate() {
                if index > 0 {
                    json.push(b',');
                }
                write_value(json, item, depth + 1, &|| format!("{}[{index}]", path()))?;
            }
            json.push(b']');
        }
    }
    Ok(())
}

fn check_depth(depth: usize, path: &str) -> Result<(), FieldViolation> {
    if depth > limits::MAX_PROPERTIES_DEPTH {
        return Err(FieldViolation::new(
            path,
            format!("nests deeper than {} levels", limits::MAX_PROPERTIES_DEPTH),
        ));
    }
    Ok(())
}

/// Integral values within f64's exact range are written as integers, so `5` stays `5`.
fn write_number(json: &mut Vec<u8>, number: f64) -> Result<(), &'static str> {
    if !number.is_finite() {
        return Err("must be a finite number");
    }
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let written = if number.fract() == 0.0 && number.abs() <= EXACT {
        write!(json, "{}", number as i64)
    } else {
        write!(json, "{number}")
    };
    written.map_err(|_| "could not be encoded")
}

fn write_json_string(json: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail, and serde_json escapes exactly as JSON requires.
    let _ = serde_json::to_writer(&mut *json, text);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn tenant() -> TenantId {
        TenantId(Uuid::nil())
    }

    fn event(event_type: &str) -> v1::Event {
        v1::Event {
            event_type: event_type.into(),
            ..Default::default()
        }
    }

    fn string_value(text: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(text.into())),
        }
    }

    fn nested(depth: usize) -> Struct {
        let mut object = Struct {
            fields: HashMap::from([("leaf".to_owned(), string_value("x"))]),
        };
        for _ in 1..depth {
            object = Struct {
                fields: HashMap::from([(
                    "n".to_owned(),
                    Value {
                        kind: Some(Kind::StructValue(object)),
                    },
                )]),
            };
        }
        object
    }

    #[test]
    fn empty_event_type_is_rejected_naming_the_field() {
        let violation = validate_event(tenant(), event(""), &IngestClock::now()).unwrap_err();
        assert_eq!(violation.field, "event_type");
        assert!(violation.description.contains("1 to 128"), "{violation}");
    }

    #[test]
    fn missing_event_id_gets_a_uuid_v7_and_missing_timestamp_the_receive_time() {
        let clock = IngestClock::now();
        let stored = validate_event(tenant(), event("signup"), &clock).unwrap();
        let id = Uuid::parse_str(&stored.event_id).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(stored.timestamp, clock.received_at);
        assert_eq!(stored.client_timestamp, None);
        assert_eq!(stored.properties_json, "{}");
    }

    #[test]
    fn long_ids_are_rejected_not_truncated() {
        let mut too_long = event("signup");
        too_long.user_id = "u".repeat(257);
        let violation = validate_event(tenant(), too_long, &IngestClock::now()).unwrap_err();
        assert_eq!(violation.field, "user_id");
        let mut control = event("sign\nup");
        control.event_id = "a".into();
        assert_eq!(
            validate_event(tenant(), control, &IngestClock::now())
                .unwrap_err()
                .field,
            "event_type"
        );
    }

    #[test]
    fn properties_encode_as_json_with_integers_kept_integral() {
        let mut with_props = event("signup");
        with_props.properties = Some(Struct {
            fields: HashMap::from([
                ("plan".to_owned(), string_value("pro \"x\"")),
                (
                    "seats".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(5.0)),
                    },
                ),
                (
                    "ratio".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(0.5)),
                    },
                ),
            ]),
        });
        let stored = validate_event(tenant(), with_props, &IngestClock::now()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&stored.properties_json).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"plan": "pro \"x\"", "seats": 5, "ratio": 0.5})
        );
    }

    #[test]
    fn nesting_is_limited_to_ten_levels() {
        let mut ok = event("deep");
        ok.properties = Some(nested(10));
        assert!(validate_event(tenant(), ok, &IngestClock::now()).is_ok());
        let mut too_deep = event("deep");
        too_deep.properties = Some(nested(11));
        let violation = validate_event(tenant(), too_deep, &IngestClock::now()).unwrap_err();
        assert!(violation.field.starts_with("properties.n"), "{violation}");
        assert!(violation.description.contains("10 levels"));
    }

    #[test]
    fn nul_characters_and_non_finite_numbers_are_rejected() {
        let mut nul = event("x");
        nul.properties = Some(Struct {
            fields: HashMap::from([("k".to_owned(), string_value("a\0b"))]),
        });
        assert_eq!(
            validate_event(tenant(), nul, &IngestClock::now())
                .unwrap_err()
                .field,
            "properties.k"
        );
        let mut nan = event("x");
        nan.properties = Some(Struct {
            fields: HashMap::from([(
                "n".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]),
        });
        assert_eq!(
            validate_event(tenant(), nan, &IngestClock::now())
                .unwrap_err()
                .field,
            "properties.n"
        );
    }

    #[test]
    fn oversized_event_is_rejected() {
        let mut big = event("big");
        big.properties = Some(Struct {
            fields: HashMap::from([(
                "blob".to_owned(),
                string_value(&"x".repeat(limits::MAX_EVENT_BYTES)),
            )]),
        });
        assert_eq!(
            validate_event(tenant(), big, &IngestClock::now())
                .unwrap_err()
                .field,
            "event"
        );
    }

    #[test]
    fn timestamps_before_1971_or_an_hour_ahead_are_rejected() {
        let clock = IngestClock::now();
        let mut old = event("x");
        old.timestamp = Some(Timestamp {
            seconds: 1000,
            nanos: 0,
        });
        assert_eq!(
            validate_event(tenant(), old, &clock).unwrap_err().field,
            "timestamp"
        );
        let mut future = event("x");
        future.timestamp = Some(time::to_proto(
            clock.received_at + chrono::Duration::minutes(61),
        ));
        assert_eq!(
            validate_event(tenant(), future, &clock).unwrap_err().field,
            "timestamp"
        );
    }

    #[test]
    fn large_clock_skew_shifts_timestamps_and_keeps_the_raw_one() {
        let received_at = time::now();
        let client_clock_behind = chrono::Duration::hours(2);
        let sent_at = time::to_proto(received_at - client_clock_behind);
        let clock = IngestClock::new(received_at, Some(&sent_at)).unwrap();
        let raw = received_at - client_clock_behind - chrono::Duration::seconds(10);
        let mut skewed = event("x");
        skewed.timestamp = Some(time::to_proto(raw));
        let stored = validate_event(tenant(), skewed, &clock).unwrap();
        assert_eq!(stored.client_timestamp, Some(raw));
        assert_eq!(
            stored.timestamp,
            received_at - chrono::Duration::seconds(10)
        );
    }

    #[test]
    fn small_clock_skew_is_ignored() {
        let received_at = time::now();
        let sent_at = time::to_proto(received_at - chrono::Duration::seconds(30));
        let clock = IngestClock::new(received_at, Some(&sent_at)).unwrap();
        assert_eq!(clock.skew_correction, chrono::Duration::zero());
    }
}
