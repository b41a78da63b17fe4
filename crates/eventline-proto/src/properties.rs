//! `google.protobuf.Struct` as the Rust type of `Event.properties`, kept in its encoded
//! form. The ingest path never builds the map: the server validates the encoded fields and
//! writes them as JSON in one pass (eventline-core), instead of decoding ~10 keys per event
//! into a SipHash map of boxed values, measuring it, walking it and dropping it, which was
//! two thirds of the server's CPU per ingested event (perf, `eventline bench ingest`).
//! On the wire it is exactly a `Struct`, so clients and the descriptors see no change.

use std::fmt;

use bytes::{Buf, BufMut};
use pbjson_types::Struct;
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, decode_varint, encode_key, encode_varint, skip_field},
};

/// The `fields` entries (field 1) of an encoded `google.protobuf.Struct`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties {
    encoded: Vec<u8>,
}

impl Properties {
    /// Properties from an encoded `google.protobuf.Struct` message body.
    pub fn from_encoded(encoded: Vec<u8>) -> Self {
        Self { encoded }
    }

    /// The encoded `google.protobuf.Struct` message body.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Encodes a decoded `Struct`.
    pub fn from_struct(object: &Struct) -> Self {
        Self {
            encoded: object.encode_to_vec(),
        }
    }

    /// Decodes into a `Struct`; only malformed bytes (never sent by a protobuf encoder)
    /// fail.
    pub fn to_struct(&self) -> Result<Struct, DecodeError> {
        Struct::decode(self.encoded.as_slice())
    }

    /// Properties from a JSON object, as proto3 JSON maps `Struct`.
    pub fn from_json(object: serde_json::Map<String, serde_json::Value>) -> Self {
        let object: Struct =
            serde_json::from_value(serde_json::Value::Object(object)).unwrap_or_default();
        Self::from_struct(&object)
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }
}

impl From<Struct> for Properties {
    fn from(object: Struct) -> Self {
        Self::from_struct(&object)
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_struct() {
            Ok(object) => fmt::Debug::fmt(&object, formatter),
            Err(_) => write!(
                formatter,
                "Properties({} malformed bytes)",
                self.encoded.len()
            ),
        }
    }
}

impl Message for Properties {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.encoded);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != 1 || wire_type != WireType::LengthDelimited {
            // Struct has no other field; proto3 parsers drop unknown ones.
            return skip_field(wire_type, tag, buf, ctx);
        }
        let length = decode_varint(buf)?;
        let Some(length) = usize::try_from(length)
            .ok()
            .filter(|&length| length <= buf.remaining())
        else {
            // prost offers no public constructor for its own "buffer underflow".
            #[allow(deprecated)]
            return Err(DecodeError::new("buffer underflow"));
        };
        if self.encoded.is_empty() {
            // A Struct has ~10 entries of similar size: one allocation, not six.
            self.encoded
                .reserve(length.saturating_mul(12).min(64 * 1024));
        }
        // Keep the entry as it came: key, length, then its bytes.
        encode_key(1, WireType::LengthDelimited, &mut self.encoded);
        encode_varint(length as u64, &mut self.encoded);
        let mut entry = buf.take(length);
        while entry.has_remaining() {
            let chunk = entry.chunk();
            let taken = chunk.len();
            self.encoded.extend_from_slice(chunk);
            entry.advance(taken);
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    fn clear(&mut self) {
        self.encoded.clear();
    }
}

impl serde::Serialize for Properties {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_struct()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Properties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Struct::deserialize(deserializer).map(|object| Self::from_struct(&object))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use pbjson_types::{Value, value::Kind};

    use super::*;

    fn sample() -> Struct {
        Struct {
            fields: HashMap::from([
                (
                    "plan".to_owned(),
                    Value {
                        kind: Some(Kind::StringValue("pro".into())),
                    },
                ),
                (
                    "seats".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(3.0)),
                    },
                ),
            ]),
        }
    }

    #[derive(Clone, PartialEq, Message)]
    struct Holder {
        #[prost(message, optional, tag = "6")]
        properties: Option<Properties>,
        #[prost(string, tag = "7")]
        after: String,
    }

    #[derive(Clone, PartialEq, Message)]
    struct StructHolder {
        #[prost(message, optional, tag = "6")]
        properties: Option<Struct>,
        #[prost(string, tag = "7")]
        after: String,
    }

    #[test]
    fn decodes_what_a_struct_encodes_and_encodes_it_back_unchanged() {
        let sent = StructHolder {
            properties: Some(sample()),
            after: "next field".into(),
        };
        let wire = sent.encode_to_vec();
        let received = Holder::decode(wire.as_slice()).unwrap();
        assert_eq!(received.after, "next field");
        assert_eq!(
            received.properties.as_ref().unwrap().to_struct().unwrap(),
            sample()
        );
        assert_eq!(
            StructHolder::decode(received.encode_to_vec().as_slice()).unwrap(),
            sent
        );
    }

    #[test]
    fn json_round_trips_as_a_struct() {
        let properties = Properties::from_struct(&sample());
        let json = serde_json::to_value(&properties).unwrap();
        assert_eq!(json, serde_json::json!({"plan": "pro", "seats": 3.0}));
        let back: Properties = serde_json::from_value(json).unwrap();
        assert_eq!(back.to_struct().unwrap(), sample());
    }

    #[test]
    fn an_entry_longer_than_the_struct_is_a_decode_error() {
        // Holder.properties (field 6, 3 bytes): one entry claiming 5 bytes, holding 1.
        let wire = [0x32, 0x03, 0x0a, 0x05, b'a'];
        assert!(Holder::decode(wire.as_slice()).is_err());
    }
}
