//! Builds an RPC request message from an HTTP request: the body (whole message or one
//! field), path variables and query parameters, decoded as proto3 JSON (snake_case and
//! lowerCamelCase names both accepted). A value that does not decode is reported under
//! its own field path (`event.event_type`, `start_time`), never as the whole body; in a
//! batch, events that do not decode are taken out and reported alone (`batch.rs`).

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::{
    batch::UndecodableEvents,
    routes::{BodyTarget, Route},
};
use eventline_core::{Error, FieldViolation};

/// Assembles and decodes the request message of `route`; for IngestBatch, events that do
/// not decode are left out and returned for the response to report.
pub(crate) fn build(
    route: &Route,
    path_variables: Vec<(String, String)>,
    query: Option<&str>,
    body: &[u8],
) -> Result<(DynamicMessage, UndecodableEvents), Error> {
    let descriptor = route.rpc.input();
    let mut request = match &route.body {
        BodyTarget::None => Map::new(),
        BodyTarget::Whole => parse_body(body)?.unwrap_or_default(),
        BodyTarget::Field(field) => {
            let mut request = Map::new();
            if let Some(object) = parse_body(body)? {
                request.insert(field.clone(), Value::Object(object));
            }
            request
        }
    };
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        // As in grpc-gateway, a field bound by the path is the path's alone.
        let top_level = name.split('.').next().unwrap_or_default();
        if path_variables.iter().any(|(field, _)| {
            find_field(&descriptor, top_level).is_some_and(|bound| bound.name() == field)
        }) {
            return Err(Error::invalid(
                name.as_ref(),
                "is bound by the URL path and cannot be given as a query parameter",
            ));
        }
        set_path(&descriptor, &mut request, &name, value.into_owned())?;
    }
    for (field, value) in path_variables {
        set_path(&descriptor, &mut request, &field, value)?;
    }
    let undecodable = UndecodableEvents::take_out(route, &mut request);
    let request = Value::Object(request);
    match DynamicMessage::deserialize(descriptor.clone(), request.clone()) {
        Ok(message) => Ok((message, undecodable)),
        Err(error) => {
            let Value::Object(object) = request else {
                unreachable!("the request was built as an object")
            };
            let violation = locate(&descriptor, &object, "")
                .unwrap_or_else(|| FieldViolation::new("body", plain(&error.to_string())));
            Err(Error::InvalidArgument { violation })
        }
    }
}

/// The field of `object` that does not decode as `descriptor`, with why, as a path below
/// `prefix`; nested messages and lists are followed down to the innermost culprit.
pub(crate) fn locate(
    descriptor: &MessageDescriptor,
    object: &Map<String, Value>,
    prefix: &str,
) -> Option<FieldViolation> {
    for (key, value) in object {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(field) = find_field(descriptor, key) else {
            return Some(FieldViolation::new(
                path,
                format!("is not a field of {}", descriptor.name()),
            ));
        };
        let alone = Value::Object(Map::from_iter([(key.clone(), value.clone())]));
        let Err(error) = DynamicMessage::deserialize(descriptor.clone(), alone) else {
            continue;
        };
        let inner = match field.kind() {
            Kind::Message(inner) if !is_well_known(&inner) && !field.is_map() => Some(inner),
            _ => None,
        };
        match (inner, value) {
            (Some(inner), Value::Object(nested)) if !field.is_list() => {
                if let Some(violation) = locate(&inner, nested, &path) {
                    return Some(violation);
                }
            }
            (inner, Value::Array(items)) if field.is_list() => {
                if let Some(violation) = locate_in_list(&field, inner.as_ref(), items, &path) {
                    return Some(violation);
                }
            }
            _ => {}
        }
        return Some(FieldViolation::new(path, plain(&error.to_string())));
    }
    None
}

fn locate_in_list(
    field: &FieldDescriptor,
    inner: Option<&MessageDescriptor>,
    items: &[Value],
    path: &str,
) -> Option<FieldViolation> {
    let parent = field.parent_message().clone();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        if let (Some(inner), Value::Object(nested)) = (inner, item)
            && let Some(violation) = locate(inner, nested, &item_path)
        {
            return Some(violation);
        }
        let alone = Value::Object(Map::from_iter([(
            field.name().to_owned(),
            Value::Array(vec![item.clone()]),
        )]));
        if let Err(error) = DynamicMessage::deserialize(parent.clone(), alone) {
            return Some(FieldViolation::new(item_path, plain(&error.to_string())));
        }
    }
    None
}

/// Timestamps, Structs and the other well-known types decode as one JSON value.
fn is_well_known(message: &MessageDescriptor) -> bool {
    message.full_name().starts_with("google.protobuf.")
}

/// A decoder message without its position in the synthetic JSON document.
fn plain(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    format!("is not valid: {message}")
}

fn parse_body(body: &[u8]) -> Result<Option<Map<String, Value>>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(_) => Err(Error::invalid("body", "must be a JSON object")),
        Err(error) => Err(Error::invalid(
            "body",
            format!("is not valid JSON: {error}"),
        )),
    }
}

fn find_field(descriptor: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    descriptor
        .get_field_by_name(name)
        .or_else(|| descriptor.get_field_by_json_name(name))
}

/// Sets `a.b.c = text` on the JSON request, converting `text` to the field's JSON form.
fn set_path(
    descriptor: &MessageDescriptor,
    request: &mut Map<String, Value>,
    path: &str,
    text: String,
) -> Result<(), Error> {
    let mut message = descriptor.clone();
    let mut object = request;
    let parts: Vec<&str> = path.split('.').collect();
    for (position, part) in parts.iter().enumerate() {
        let field = find_field(&message, part)
            .ok_or_else(|| Error::invalid(path, format!("is not a field of {}", message.name())))?;
        let is_last = position + 1 == parts.len();
        if is_last {
            let value = scalar(&field, path, &text)?;
            if field.is_list() {
                let entry = object
                    .entry(field.name().to_owned())
                    .or_insert_with(|| Value::Array(Vec::new()));
                match entry {
                    Value::Array(items) => items.push(value),
                    _ => return Err(Error::invalid(path, "is given twice")),
                }
            } else {
                object.insert(field.name().to_owned(), value);
            }
            return Ok(());
        }
        let Kind::Message(inner) = field.kind() else {
            return Err(Error::invalid(
                path,
                format!("{part} is not a message field"),
            ));
        };
        let entry = object
            .entry(field.name().to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(inner_object) = entry else {
            return Err(Error::invalid(path, format!("{part} is not an object")));
        };
        object = inner_object;
        message = inner;
    }
    Ok(())
}

/// A query or path value in the JSON form of its field's type.
fn scalar(field: &FieldDescriptor, path: &str, text: &str) -> Result<Value, Error> {
    let invalid = |what: &str| Error::invalid(path, format!("must be {what}, got {text:?}"));
    match field.kind() {
        Kind::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(invalid("true or false")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => text
            .parse::<i32>()
            .map(Value::from)
            .map_err(|_| invalid("a 32-bit integer")),
        Kind::Uint32 | Kind::Fixed32 => text
            .parse::<u32>()
            .map(Value::from)
            .map_err(|_| invalid("an unsigned integer")),
        Kind::Float | Kind::Double => text
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| invalid("a number")),
        // 64-bit integers, enums (by name), timestamps (RFC 3339) and strings are JSON
        // strings in proto3 JSON; each is checked here so the error names the parameter.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => text
            .parse::<i64>()
            .map(|_| Value::String(text.to_owned()))
            .map_err(|_| invalid("a 64-bit integer")),
        Kind::Uint64 | Kind::Fixed64 => text
            .parse::<u64>()
            .map(|_| Value::String(text.to_owned()))
            .map_err(|_| invalid("an unsigned 64-bit integer")),
        Kind::Enum(enumeration) => {
            let known = enumeration.get_value_by_name(text).is_some()
                || text
                    .parse::<i32>()
                    .is_ok_and(|number| enumeration.get_value(number).is_some());
            if known {
                return Ok(Value::String(text.to_owned()));
            }
            let names: Vec<String> = enumeration
                .values()
                .map(|value| value.name().to_owned())
                .collect();
            Err(invalid(&format!("one of {}", names.join(", "))))
        }
        Kind::Message(message) if message.full_name() == "google.protobuf.Timestamp" => {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|_| Value::String(text.to_owned()))
                .map_err(|_| invalid("an RFC 3339 timestamp such as 2026-11-01T00:00:00Z"))
        }
        _ => Ok(Value::String(text.to_owned())),
    }
}
