//! Turns an API event into a stored [`Event`]: checks every limit of README "The API" (reject,
//! never truncate), assigns missing ids and timestamps, applies clock-skew correction and
//! encodes the properties to JSON exactly once.

use std::io::Write;

use chrono::{DateTime, Utc};
use eventline_proto::Properties;
use eventline_proto::v1;
use pbjson_types::Timestamp;
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field},
};
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
    validate_or_return(tenant_id, event, clock).map_err(|rejected| rejected.0)
}

/// Like [`validate_event`], but a rejected event comes back with its violation, so it
/// can be kept (the quarantine) without copying every event that passes. Boxed: a
/// rejection is rare, and the `Ok` path stays small.
pub fn validate_or_return(
    tenant_id: TenantId,
    event: v1::Event,
    clock: &IngestClock,
) -> Result<Event, Box<(FieldViolation, v1::Event)>> {
    let properties_json = match check_fields(&event) {
        Ok(properties_json) => properties_json,
        Err(violation) => return Err(Box::new((violation, event))),
    };
    let (timestamp, client_timestamp) = match event_time(event.timestamp.as_ref(), clock) {
        Ok(times) => times,
        Err(violation) => return Err(Box::new((violation, event))),
    };
    let event_id = match event.event_id.is_empty() {
        true => Uuid::now_v7().to_string(),
        false => event.event_id,
    };
    Ok(Event {
        tenant_id,
        event_id,
        event_type: event.event_type,
        user_id: none_if_empty(event.user_id),
        session_id: none_if_empty(event.session_id),
        timestamp,
        client_timestamp,
        received_at: clock.received_at,
        properties_json,
    })
}

/// Checks every rule of [`validate_event`] without building the stored event: size, ids,
/// event type, properties (depth, UTF-8, NUL, finite numbers) and the timestamp against
/// `clock` (SDKs pass [`IngestClock::now`], their own clock standing in for the server's
/// receive time). SDKs call this in `track()`, so what the server would reject anyway
/// fails at once, by the very same code.
pub fn check_event(event: &v1::Event, clock: &IngestClock) -> Result<(), FieldViolation> {
    check_fields(event)?;
    event_time(event.timestamp.as_ref(), clock).map(drop)
}

/// The clock-independent rules; returns the properties written as JSON.
fn check_fields(event: &v1::Event) -> Result<String, FieldViolation> {
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
    if !event.event_id.is_empty() {
        check_text("event_id", &event.event_id, 1, limits::MAX_EVENT_ID_CHARS)?;
    }
    check_text(
        "event_type",
        &event.event_type,
        1,
        limits::MAX_EVENT_TYPE_CHARS,
    )?;
    check_optional_id("user_id", &event.user_id)?;
    check_optional_id("session_id", &event.session_id)?;
    encode_properties(event.properties.as_ref(), encoded_len)
}

fn none_if_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn check_optional_id(field: &str, value: &str) -> Result<(), FieldViolation> {
    if value.is_empty() {
        return Ok(());
    }
    check_text(field, value, 1, limits::MAX_ID_CHARS)
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

/// Writes the encoded `properties` (a `google.protobuf.Struct`) as a JSON object in one
/// pass over its bytes, checking depth, UTF-8, NUL characters and numbers. Keys are
/// written sorted; a key repeated on the wire keeps its last value, as protobuf maps do.
fn encode_properties(
    properties: Option<&Properties>,
    size_hint: usize,
) -> Result<String, FieldViolation> {
    let mut json = Vec::with_capacity(size_hint.min(64 * 1024));
    match properties {
        None => json.extend_from_slice(b"{}"),
        Some(properties) => write_struct(&mut json, properties.encoded(), 1, &|| {
            "properties".to_owned()
        })?,
    }
    // Only valid UTF-8 was written: keys and strings were checked as they were read.
    String::from_utf8(json).map_err(|_| FieldViolation::new("properties", "must be valid UTF-8"))
}

/// One field of an encoded message: its number and its payload.
enum WireField<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    /// Fixed32 or a group: no `Struct`, `Value` or `ListValue` field has these types.
    Other,
}

/// Bytes that no protobuf encoder writes: a truncated field or a bad varint.
struct Malformed;

impl From<DecodeError> for Malformed {
    fn from(_: DecodeError) -> Self {
        Self
    }
}

/// Reads the next field of the message in `bytes`; `Ok(None)` at its end.
fn next_field<'a>(bytes: &mut &'a [u8]) -> Result<Option<(u32, WireField<'a>)>, Malformed> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let (tag, wire_type) = decode_key(bytes)?;
    let field = match wire_type {
        WireType::Varint => WireField::Varint(decode_varint(bytes)?),
        WireType::SixtyFourBit => {
            let (value, rest) = bytes.split_first_chunk::<8>().ok_or(Malformed)?;
            *bytes = rest;
            WireField::Fixed64(*value)
        }
        WireType::LengthDelimited => {
            let length = usize::try_from(decode_varint(bytes)?).unwrap_or(usize::MAX);
            if length > bytes.len() {
                return Err(Malformed);
            }
            let (value, rest) = bytes.split_at(length);
            *bytes = rest;
            WireField::Bytes(value)
        }
        other => {
            skip_field(other, tag, bytes, DecodeContext::default())?;
            WireField::Other
        }
    };
    Ok(Some((tag, field)))
}

fn malformed(path: &dyn Fn() -> String) -> FieldViolation {
    FieldViolation::new(path(), "is not a well-formed google.protobuf.Struct")
}

fn utf8<'a>(bytes: &'a [u8], path: &dyn Fn() -> String) -> Result<&'a str, FieldViolation> {
    std::str::from_utf8(bytes).map_err(|_| FieldViolation::new(path(), "must be valid UTF-8"))
}

fn write_struct(
    json: &mut Vec<u8>,
    mut encoded: &[u8],
    depth: usize,
    path: &dyn Fn() -> String,
) -> Result<(), FieldViolation> {
    check_depth(depth, path)?;
    // (key, encoded Value) per map entry; a missing value is null.
    let mut entries: Vec<(&str, Option<&[u8]>)> = Vec::with_capacity(16);
    while let Some((tag, field)) = next_field(&mut encoded).map_err(|_| malformed(path))? {
        let (1, WireField::Bytes(mut entry)) = (tag, field) else {
            continue; // not a map entry: unknown fields are ignored
        };
        let (mut key, mut value) = ("", None);
        while let Some((tag, field)) = next_field(&mut entry).map_err(|_| malformed(path))? {
            match (tag, field) {
                (1, WireField::Bytes(bytes)) => key = utf8(bytes, path)?,
                (2, WireField::Bytes(bytes)) => value = Some(bytes),
                _ => {}
            }
        }
        if key.contains('\0') {
            return Err(FieldViolation::new(
                path(),
                "keys must not contain NUL characters",
            ));
        }
        entries.push((key, value));
    }
    // A stable sort keeps repeats in wire order, so the last of each run is the last sent.
    entries.sort_by(|left, right| left.0.cmp(right.0));
    json.push(b'{');
    let mut first = true;
    for (index, (key, value)) in entries.iter().enumerate() {
        if entries.get(index + 1).is_some_and(|next| next.0 == *key) {
            continue;
        }
        if !first {
            json.push(b',');
        }
        first = false;
        write_json_string(json, key);
        json.push(b':');
        write_value(json, value.unwrap_or_default(), depth, &|| {
            format!("{}.{key}", path())
        })?;
    }
    json.push(b'}');
    Ok(())
}

fn write_value(
    json: &mut Vec<u8>,
    mut encoded: &[u8],
    depth: usize,
    path: &dyn Fn() -> String,
) -> Result<(), FieldViolation> {
    // `kind` is a oneof: the last member on the wire wins; none at all is null.
    let mut kind = None;
    while let Some((tag, field)) = next_field(&mut encoded).map_err(|_| malformed(path))? {
        if (1..=6).contains(&tag) {
            kind = Some((tag, field));
        }
    }
    match kind {
        None | Some((1, WireField::Varint(_))) => json.extend_from_slice(b"null"),
        Some((2, WireField::Fixed64(bytes))) => write_number(json, f64::from_le_bytes(bytes))
            .map_err(|description| FieldViolation::new(path(), description))?,
        Some((3, WireField::Bytes(bytes))) => {
            let text = utf8(bytes, path)?;
            if text.contains('\0') {
                return Err(FieldViolation::new(
                    path(),
                    "must not contain NUL characters",
                ));
            }
            write_json_string(json, text);
        }
        Some((4, WireField::Varint(flag))) => {
            json.extend_from_slice(if flag != 0 { b"true" } else { b"false" })
        }
        Some((5, WireField::Bytes(object))) => write_struct(json, object, depth + 1, path)?,
        Some((6, WireField::Bytes(mut list))) => {
            check_depth(depth + 1, path)?;
            json.push(b'[');
            let mut index = 0;
            while let Some((tag, field)) = next_field(&mut list).map_err(|_| malformed(path))? {
                let (1, WireField::Bytes(item)) = (tag, field) else {
                    continue;
                };
                if index > 0 {
                    json.push(b',');
                }
                write_value(json, item, depth + 1, &|| format!("{}[{index}]", path()))?;
                index += 1;
            }
            json.push(b']');
        }
        Some(_) => return Err(malformed(path)),
    }
    Ok(())
}

fn check_depth(depth: usize, path: &dyn Fn() -> String) -> Result<(), FieldViolation> {
    if depth > limits::MAX_PROPERTIES_DEPTH {
        return Err(FieldViolation::new(
            path(),
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
    // Most keys and values need no escaping: copy them as they are.
    if !text
        .bytes()
        .any(|byte| byte == b'"' || byte == b'\\' || byte < 0x20)
    {
        json.reserve(text.len() + 2);
        json.push(b'"');
        json.extend_from_slice(text.as_bytes());
        json.push(b'"');
        return;
    }
    // Writing into a Vec cannot fail, and serde_json escapes exactly as JSON requires.
    let _ = serde_json::to_writer(&mut *json, text);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use pbjson_types::{Struct, Value, value::Kind};

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
        with_props.properties = Some(Properties::from(Struct {
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
        }));
        let stored = validate_event(tenant(), with_props, &IngestClock::now()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&stored.properties_json).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"plan": "pro \"x\"", "seats": 5, "ratio": 0.5})
        );
    }

    /// A length-delimited field `tag` holding `payload`, as protobuf encodes it.
    fn field(tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![tag << 3 | 2, u8::try_from(payload.len()).unwrap()];
        bytes.extend_from_slice(payload);
        bytes
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        field(1, &[field(1, key.as_bytes()), field(2, value)].concat())
    }

    fn with_encoded_properties(encoded: Vec<u8>) -> v1::Event {
        let mut event = event("wire");
        event.properties = Some(Properties::from_encoded(encoded));
        event
    }

    #[test]
    fn keys_are_sorted_and_a_repeated_key_keeps_its_last_value() {
        let number_two = [[2 << 3 | 1].as_slice(), &2.0f64.to_le_bytes()].concat();
        let encoded = [
            entry("b", &field(3, b"first")),
            entry("a", &[4 << 3, 1]),
            entry("b", &number_two),
            entry(
                "c",
                &field(6, &[field(1, &field(3, b"x")), field(1, &[])].concat()),
            ),
        ]
        .concat();
        let stored = validate_event(
            tenant(),
            with_encoded_properties(encoded),
            &IngestClock::now(),
        )
        .unwrap();
        assert_eq!(stored.properties_json, r#"{"a":true,"b":2,"c":["x",null]}"#);
    }

    #[test]
    fn invalid_utf8_and_malformed_bytes_name_the_property() {
        let bad_text = entry("k", &field(3, &[0xff, 0xfe]));
        let violation = validate_event(
            tenant(),
            with_encoded_properties(bad_text),
            &IngestClock::now(),
        )
        .unwrap_err();
        assert_eq!(violation.field, "properties.k");
        assert!(violation.description.contains("UTF-8"), "{violation}");

        let mut truncated = entry("k", &field(3, b"value"));
        truncated.truncate(truncated.len() - 2);
        let violation = validate_event(
            tenant(),
            with_encoded_properties(truncated),
            &IngestClock::now(),
        )
        .unwrap_err();
        assert_eq!(violation.field, "properties");
        assert!(violation.description.contains("well-formed"), "{violation}");
    }

    #[test]
    fn nesting_is_limited_to_ten_levels() {
        let mut ok = event("deep");
        ok.properties = Some(Properties::from(nested(10)));
        assert!(validate_event(tenant(), ok, &IngestClock::now()).is_ok());
        let mut too_deep = event("deep");
        too_deep.properties = Some(Properties::from(nested(11)));
        let violation = validate_event(tenant(), too_deep, &IngestClock::now()).unwrap_err();
        assert!(violation.field.starts_with("properties.n"), "{violation}");
        assert!(violation.description.contains("10 levels"));
    }

    #[test]
    fn nul_characters_and_non_finite_numbers_are_rejected() {
        let mut nul = event("x");
        nul.properties = Some(Properties::from(Struct {
            fields: HashMap::from([("k".to_owned(), string_value("a\0b"))]),
        }));
        assert_eq!(
            validate_event(tenant(), nul, &IngestClock::now())
                .unwrap_err()
                .field,
            "properties.k"
        );
        let mut nan = event("x");
        nan.properties = Some(Properties::from(Struct {
            fields: HashMap::from([(
                "n".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]),
        }));
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
        big.properties = Some(Properties::from(Struct {
            fields: HashMap::from([(
                "blob".to_owned(),
                string_value(&"x".repeat(limits::MAX_EVENT_BYTES)),
            )]),
        }));
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
