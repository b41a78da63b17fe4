//! Builds an RPC request message from an HTTP request: the body (whole message or one
//! field), path variables and query parameters, decoded as proto3 JSON (snake_case and
//! lowerCamelCase names both accepted).

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::routes::{BodyTarget, Route};
use eventline_core::Error;

/// Assembles and decodes the request message of `route`.
pub(crate) fn build(
    route: &Route,
    path_variables: Vec<(String, String)>,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, Error> {
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
    for (field, value) in path_variables {
        set_path(&descriptor, &mut request, &field, value)?;
    }
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        set_path(&descriptor, &mut request, &name, value.into_owned())?;
    }
    DynamicMessage::deserialize(descriptor, Value::Object(request)).map_err(|error| {
        Error::invalid(
            "body",
            format!("is not a valid {}: {error}", route.rpc.input().name()),
        )
    })
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
        // strings in proto3 JSON.
        _ => Ok(Value::String(text.to_owned())),
    }
}
