//! A JSON object written straight into the wire form of `google.protobuf.Struct`, the
//! type of `Event.properties`. Going through `pbjson_types::Struct` instead builds a map
//! of boxed values per event only to encode and drop it, on the caller's thread.

use eventline_proto::Properties;
use serde_json::{Map, Value};

/// `Struct.fields` entries, `ListValue.values` and the entry key/value fields are 1/2.
const FIELD_ONE: u32 = 1;
const FIELD_TWO: u32 = 2;

/// `google.protobuf.Value` kinds (the oneof's field numbers).
const NULL_VALUE: u32 = 1;
const NUMBER_VALUE: u32 = 2;
const STRING_VALUE: u32 = 3;
const BOOL_VALUE: u32 = 4;
const STRUCT_VALUE: u32 = 5;
const LIST_VALUE: u32 = 6;

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH_DELIMITED: u32 = 2;

/// Encodes a JSON object as `google.protobuf.Struct`.
pub(crate) fn properties_from_json(object: &Map<String, Value>) -> Properties {
    let mut encoded = Vec::with_capacity(256);
    write_struct(&mut encoded, object);
    Properties::from_encoded(encoded)
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_key(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    write_varint(out, u64::from(field << 3 | wire_type));
}

/// Writes a length-delimited field whose body `body` writes, patching in the length.
fn write_nested(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    write_key(out, field, LENGTH_DELIMITED);
    let length_at = out.len();
    out.push(0); // one byte reserved; moved when the length needs more
    let body_start = out.len();
    body(out);
    let length = out.len() - body_start;
    if length < 0x80 {
        out[length_at] = length as u8;
        return;
    }
    let mut prefix = Vec::with_capacity(5);
    write_varint(&mut prefix, length as u64);
    out.splice(length_at..body_start, prefix);
}

fn write_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    write_key(out, field, LENGTH_DELIMITED);
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn write_struct(out: &mut Vec<u8>, object: &Map<String, Value>) {
    for (key, value) in object {
        write_nested(out, FIELD_ONE, |entry| {
            write_bytes(entry, FIELD_ONE, key.as_bytes());
            write_nested(entry, FIELD_TWO, |encoded| write_value(encoded, value));
        });
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => {
            write_key(out, NULL_VALUE, VARINT);
            out.push(0);
        }
        Value::Bool(flag) => {
            write_key(out, BOOL_VALUE, VARINT);
            out.push(u8::from(*flag));
        }
        Value::Number(number) => {
            write_key(out, NUMBER_VALUE, FIXED64);
            out.extend_from_slice(&number.as_f64().unwrap_or(f64::NAN).to_le_bytes());
        }
        Value::String(text) => write_bytes(out, STRING_VALUE, text.as_bytes()),
        Value::Array(items) => write_nested(out, LIST_VALUE, |list| {
            for item in items {
                write_nested(list, FIELD_ONE, |encoded| write_value(encoded, item));
            }
        }),
        Value::Object(object) => {
            write_nested(out, STRUCT_VALUE, |encoded| write_struct(encoded, object))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_exactly_what_the_generic_struct_encoding_decodes_to() {
        let long_text = "x".repeat(300);
        let object = serde_json::json!({
            "plan": "pro",
            "count": 5,
            "ratio": 0.25,
            "flag": true,
            "nothing": null,
            "long": long_text,
            "nested": {"list": [1, "two", {"three": [false]}], "empty": {}},
            "many": (0..50).collect::<Vec<_>>(),
        });
        let serde_json::Value::Object(object) = object else {
            unreachable!()
        };
        let mut ours = properties_from_json(&object).to_struct().unwrap();
        let mut generic = Properties::from_json(object).to_struct().unwrap();
        // pbjson reads JSON null as an unset kind; both mean null on the wire.
        let null = ours.fields.remove("nothing").unwrap();
        assert!(matches!(
            null.kind,
            Some(pbjson_types::value::Kind::NullValue(_))
        ));
        assert!(generic.fields.remove("nothing").unwrap().kind.is_none());
        assert_eq!(ours, generic);
    }
}
