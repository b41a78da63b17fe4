//! OpenAPI 3 for the REST gateway, generated from the same descriptor set and route
//! table that serve the requests, with the proto comments as descriptions, so the
//! document cannot drift from the API. Served as YAML at `/openapi.yaml`.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{DescriptorPool, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::routes::{BodyTarget, Route, Segment};

/// Leading comments of every element, by file and source path.
#[derive(Default)]
struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    fn of(pool: &DescriptorPool) -> Self {
        let mut comments = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else {
                continue;
            };
            for location in &info.location {
                if let Some(text) = &location.leading_comments {
                    comments.insert((file.name().to_owned(), location.path.clone()), tidy(text));
                }
            }
        }
        Self(comments)
    }

    fn get(&self, file: &FileDescriptor, path: &[i32]) -> Option<&str> {
        self.0
            .get(&(file.name().to_owned(), path.to_vec()))
            .map(String::as_str)
    }
}

fn tidy(comment: &str) -> String {
    comment
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// The OpenAPI document as a JSON value.
pub(crate) fn document(pool: &DescriptorPool, routes: &[Route]) -> Value {
    let comments = Comments::of(pool);
    let mut schemas = BTreeMap::new();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut operation_ids: HashMap<String, usize> = HashMap::new();
    for route in routes {
        let operation_id = operation_id(route, &mut operation_ids);
        let operation = operation(route, operation_id, &mut schemas, &comments);
        let path = format!("/{}", route.template.trim_start_matches('/'));
        paths
            .entry(path)
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), operation);
    }
    schemas.insert("Error".to_owned(), error_schema());
    envelope(paths, schemas)
}

/// A unique operationId: `Service_Method`, numbered from the RPC's second route on.
fn operation_id(route: &Route, seen: &mut HashMap<String, usize>) -> String {
    let rpc = &route.rpc;
    let base_id = format!("{}_{}", rpc.parent_service().name(), rpc.name());
    let seen = seen.entry(base_id.clone()).or_default();
    *seen += 1;
    if *seen == 1 {
        base_id
    } else {
        format!("{base_id}{seen}")
    }
}

/// The operation of `route`: its parameters, request body and responses.
fn operation(
    route: &Route,
    operation_id: String,
    schemas: &mut BTreeMap<String, Value>,
    comments: &Comments,
) -> Value {
    let rpc = &route.rpc;
    let input = rpc.input();
    let parameters = parameters(route, &input, comments);
    let mut operation = json!({
        "operationId": operation_id,
        "tags": [rpc.parent_service().name()],
        "summary": rpc.name(),
        "description": comments.get(&rpc.parent_file(), rpc.path()).unwrap_or_default(),
        "parameters": parameters,
        "responses": responses(rpc.output(), rpc.is_server_streaming(), schemas, comments),
    });
    if let Some(schema) = body_schema(route, &input, schemas, comments) {
        operation["requestBody"] = json!({"required": route.body_required(), "content": {"application/json": {"schema": schema}}});
    }
    if rpc.full_name() == super::TRACK {
        document_track(&mut operation);
    }
    operation
}

/// The path variables of `route`, then, without a body, the other `input` fields as queries.
fn parameters(route: &Route, input: &MessageDescriptor, comments: &Comments) -> Vec<Value> {
    let path_fields: Vec<String> = route
        .segments
        .iter()
        .filter_map(|segment| match segment {
            Segment::Variable { field, .. } => Some(field.clone()),
            Segment::Literal(_) => None,
        })
        .collect();
    let mut parameters: Vec<Value> = path_fields
        .iter()
        .map(|name| {
            let field = input.get_field_by_name(name);
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": field.as_ref().and_then(|field| comments.get(&field.parent_file(), field.path())).unwrap_or_default(),
                "schema": {"type": "string"},
            })
        })
        .collect();
    if route.body == BodyTarget::None {
        for field in input
            .fields()
            .filter(|field| !path_fields.contains(&field.name().to_owned()))
        {
            let Some(schema) = query_schema(&field) else {
                continue;
            };
            parameters.push(json!({
                "name": field.name(),
                "in": "query",
                "description": comments.get(&field.parent_file(), field.path()).unwrap_or_default(),
                "schema": schema,
                "explode": true,
            }));
        }
    }
    parameters
}

/// The request body's schema, if `route` takes one: the whole `input` or one of its fields.
fn body_schema(
    route: &Route,
    input: &MessageDescriptor,
    schemas: &mut BTreeMap<String, Value>,
    comments: &Comments,
) -> Option<Value> {
    match &route.body {
        BodyTarget::None => None,
        BodyTarget::Whole => Some(schema_ref(input, schemas, comments)),
        BodyTarget::Field(name) => input
            .get_field_by_name(name)
            .map(|field| field_schema(&field, schemas, comments)),
    }
}

/// Track's extras: the Idempotency-Key header, and 201 (stored) beside 200 (duplicate).
fn document_track(operation: &mut Value) {
    if let Some(parameters) = operation["parameters"].as_array_mut() {
        parameters.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "description": "Used as the event_id when the body sets none.",
            "schema": {"type": "string"},
        }));
    }
    operation["responses"]["201"] = operation["responses"]["200"].clone();
    operation["responses"]["201"]["description"] = json!("The event was stored.");
    operation["responses"]["200"]["description"] =
        json!("The event was already stored (duplicate).");
}

/// The document around `paths` and `schemas`: its info, security and security schemes.
fn envelope(
    paths: BTreeMap<String, Map<String, Value>>,
    schemas: BTreeMap<String, Value>,
) -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "eventline",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted event tracking. This REST/JSON API is generated from the gRPC API \
                (package eventline.v1) and calls it; fields are proto3 JSON (snake_case out, \
                snake_case or lowerCamelCase in; 64-bit integers as strings; RFC 3339 times).",
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    })
}

fn responses(
    output: MessageDescriptor,
    streaming: bool,
    schemas: &mut BTreeMap<String, Value>,
    comments: &Comments,
) -> Value {
    let schema = schema_ref(&output, schemas, comments);
    let success = if streaming {
        json!({
            "description": "Newline-delimited JSON: one {\"result\": …} object per message, then {\"error\": …} if the stream fails.",
            "content": {"application/x-ndjson": {"schema": {
                "type": "object",
                "properties": {"result": schema, "error": {"$ref": "#/components/schemas/Error"}},
            }}},
        })
    } else {
        json!({"description": "OK", "content": {"application/json": {"schema": schema}}})
    };
    json!({
        "200": success,
        "default": {
            "description": "An error: 400 invalid argument, 401 unauthenticated, 403 permission denied, 404 not found, \
                409 already exists, 413 body too large, 429 overloaded (Retry-After), 503 unavailable (Retry-After), 504 deadline exceeded.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
    })
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "A gRPC status as JSON.",
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "The gRPC status code."},
            "message": {"type": "string", "description": "What was wrong, naming the field."},
            "details": {"type": "array", "items": {"type": "object", "additionalProperties": true}},
        },
    })
}

/// Query parameters: scalars, enums, timestamps and lists of them; not messages.
fn query_schema(field: &FieldDescriptor) -> Option<Value> {
    let item = match field.kind() {
        Kind::Message(message) if message.full_name() == "google.protobuf.Timestamp" => {
            json!({"type": "string", "format": "date-time"})
        }
        Kind::Message(_) => return None,
        _ => scalar_schema(field),
    };
    Some(if field.is_list() {
        json!({"type": "array", "items": item})
    } else {
        item
    })
}

fn scalar_schema(field: &FieldDescriptor) -> Value {
    match field.kind() {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Float | Kind::Double => json!({"type": "number"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(enumeration) => {
            json!({"type": "string", "enum": enumeration.values().map(|value| value.name().to_owned()).collect::<Vec<_>>()})
        }
        Kind::String | Kind::Message(_) => json!({"type": "string"}),
    }
}

fn field_schema(
    field: &FieldDescriptor,
    schemas: &mut BTreeMap<String, Value>,
    comments: &Comments,
) -> Value {
    let item = match field.kind() {
        // proto3 JSON reads null as "unset" for message fields.
        Kind::Message(message) if !field.is_list() => {
            let schema = schema_ref(&message, schemas, comments);
            if schema.get("$ref").is_some() {
                json!({"allOf": [schema], "nullable": true})
            } else {
                let mut schema = schema;
                schema["nullable"] = json!(true);
                schema
            }
        }
        Kind::Message(message) => schema_ref(&message, schemas, comments),
        _ => scalar_schema(field),
    };
    if field.is_list() {
        // proto3 JSON reads null as an empty list.
        json!({"type": "array", "items": item, "nullable": true})
    } else {
        item
    }
}

/// A reference to the schema of `message`, adding it (and what it uses) to `schemas`.
fn schema_ref(
    message: &MessageDescriptor,
    schemas: &mut BTreeMap<String, Value>,
    comments: &Comments,
) -> Value {
    match message.full_name() {
        "google.protobuf.Timestamp" => return json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Struct" => return json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => return json!({}),
        _ => {}
    }
    let name = message.full_name().replace('.', "_");
    if !schemas.contains_key(&name) {
        schemas.insert(name.clone(), Value::Null);
        let mut properties = Map::new();
        for field in message.fields() {
            let mut schema = field_schema(&field, schemas, comments);
            if schema.get("$ref").is_some() {
                schema = json!({"allOf": [schema]});
            }
            // proto3 JSON reads null as the field's default, for every field.
            schema["nullable"] = json!(true);
            if let Some(text) = comments.get(&field.parent_file(), field.path()) {
                schema["description"] = json!(text);
            }
            properties.insert(field.name().to_owned(), schema);
        }
        let description = comments
            .get(&message.parent_file(), message.path())
            .unwrap_or_default();
        schemas.insert(
            name.clone(),
            // Unknown fields are rejected, as proto3 JSON parsing here does.
            json!({"type": "object", "description": description, "properties": properties, "additionalProperties": false}),
        );
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Writes `value` as block YAML. Strings are double-quoted JSON strings, which YAML reads
/// as the same strings.
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(&mut out, value, 0);
    out
}

fn write_yaml(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                out.push_str(&pad);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_nested(out, item, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                write_nested(out, item, indent);
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&scalar.to_string());
            out.push('\n');
        }
    }
}

fn write_nested(out: &mut String, item: &Value, indent: usize) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_yaml(out, item, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(out, item, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar.to_string());
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document_for_tests() -> Value {
        let pool = DescriptorPool::decode(eventline_proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = super::super::routes::route_table(&pool).unwrap();
        document(&pool, &routes)
    }

    #[test]
    fn every_route_is_documented_with_its_proto_comment() {
        let document = document_for_tests();
        let track = &document["paths"]["/v1/events"]["post"];
        assert!(
            track["description"]
                .as_str()
                .unwrap()
                .contains("Track stores one event"),
            "{track}"
        );
        assert!(track["responses"]["201"].is_object());
        let listing = &document["paths"]["/v1/users/{user_id}/events"]["get"];
        let names: Vec<&str> = listing["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"user_id")
                && names.contains(&"page_token")
                && names.contains(&"start_time"),
            "{names:?}"
        );
        let event = &document["components"]["schemas"]["eventline_v1_Event"];
        assert!(
            event["properties"]["event_type"]["description"]
                .as_str()
                .unwrap()
                .contains("What happened")
        );
        let operations: usize = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|path| path.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, 40);
    }

    #[test]
    fn yaml_output_nests_and_quotes() {
        let yaml = to_yaml(&json!({"a": {"b": [1, "x: y"]}, "empty": {}}));
        assert_eq!(
            yaml,
            "\"a\":\n  \"b\":\n    - 1\n    - \"x: y\"\n\"empty\": {}\n"
        );
    }
}
