//! Partial success for `POST /v1/events:batch` when some events do not even decode (a
//! `timestamp` of "yesterday", an `event_type` of 5): as over gRPC, where such an event
//! is impossible and validation rejects bad ones one by one, the good events are stored
//! and each bad one is REJECTED under its own path (`events[1].timestamp`).

use eventline_proto::v1;
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, ReflectMessage};
use serde_json::{Map, Value};

use super::{request::locate, routes::Route};
use eventline_core::FieldViolation;

/// The full name of IngestBatch.
const INGEST_BATCH: &str = "eventline.v1.IngestService.IngestBatch";

/// Events taken out of a batch request because they do not decode, by position.
#[derive(Debug, Default)]
pub(crate) struct UndecodableEvents {
    /// Positions in the request, each with its id (when the client gave one) and why.
    rejected: Vec<(usize, String, FieldViolation)>,
    /// Events in the request as sent.
    sent: usize,
}

impl UndecodableEvents {
    /// Takes the undecodable events out of an IngestBatch request; nothing for other RPCs.
    pub(crate) fn take_out(route: &Route, request: &mut Map<String, Value>) -> Self {
        if route.rpc.full_name() != INGEST_BATCH {
            return Self::default();
        }
        let Some(events_field) = route.rpc.input().get_field_by_name("events") else {
            return Self::default();
        };
        let Kind::Message(event_descriptor) = events_field.kind() else {
            return Self::default();
        };
        let Some(Value::Array(events)) = request.get_mut("events") else {
            return Self::default();
        };
        let sent = events.len();
        let mut rejected = Vec::new();
        let mut kept = Vec::with_capacity(events.len());
        for (index, event) in std::mem::take(events).into_iter().enumerate() {
            let problem = match &event {
                Value::Object(object) => DynamicMessage::deserialize(
                    event_descriptor.clone(),
                    Value::Object(object.clone()),
                )
                .err()
                .map(|error| {
                    locate(&event_descriptor, object, "").unwrap_or_else(|| {
                        FieldViolation::new("", format!("is not a valid event: {error}"))
                    })
                }),
                _ => Some(FieldViolation::new("", "must be a JSON object")),
            };
            match problem {
                None => kept.push(event),
                Some(violation) => {
                    let event_id = event
                        .get("event_id")
                        .or_else(|| event.get("eventId"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let field = if violation.field.is_empty() {
                        format!("events[{index}]")
                    } else {
                        format!("events[{index}].{}", violation.field)
                    };
                    let violation = FieldViolation::new(field, violation.description);
                    rejected.push((index, event_id, violation));
                }
            }
        }
        *events = kept;
        Self { rejected, sent }
    }

    /// Puts the taken-out events back into the response, each REJECTED at its position,
    /// and renumbers the others to their positions in the request.
    pub(crate) fn merge_into(&self, reply: DynamicMessage) -> DynamicMessage {
        if self.rejected.is_empty() {
            return reply;
        }
        let descriptor = reply.descriptor();
        let Ok(mut response) = reply.transcode_to::<v1::IngestBatchResponse>() else {
            return reply;
        };
        let mut decoded = std::mem::take(&mut response.results).into_iter();
        let mut rejected = self.rejected.iter().peekable();
        for index in 0..self.sent {
            match rejected.next_if(|(position, ..)| *position == index) {
                Some((_, event_id, violation)) => response.results.push(v1::EventResult {
                    event_id: event_id.clone(),
                    status: v1::IngestStatus::Rejected as i32,
                    error: violation.to_string(),
                    index: index as u64,
                }),
                None => {
                    if let Some(result) = decoded.next() {
                        response.results.push(v1::EventResult {
                            index: index as u64,
                            ..result
                        });
                    }
                }
            }
        }
        response.rejected += self.rejected.len() as u64;
        DynamicMessage::decode(descriptor, response.encode_to_vec().as_slice()).unwrap_or(reply)
    }
}
