//! The Segment HTTP Tracking API: `/v1/batch` (what analytics-python and analytics-node
//! call), the single-call endpoints `/v1/track` … `/v1/alias`, and the one-letter paths
//! analytics.js (`@segment/analytics-next`) posts to (`/v1/t`, `/v1/p`, …, `/v1/b` when
//! batching). The write key comes as the HTTP Basic username or as `writeKey` in the body.

use eventline_core::{Error, FieldViolation};
use serde_json::{Value, json};

use super::{
    Parsed,
    mapping::{self, SegmentCall},
};

/// Segment's documented limit for one request (a larger one is answered 400).
pub(crate) const MAX_BODY_BYTES: usize = 500 * 1024;

/// What a Segment path carries: a batch, or one call of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Batch,
    Single(SegmentCall),
}

/// The Segment paths and what each carries.
pub(crate) const PATHS: [(&str, Shape); 15] = [
    ("/v1/batch", Shape::Batch),
    ("/v1/import", Shape::Batch),
    ("/v1/b", Shape::Batch),
    ("/v1/track", Shape::Single(SegmentCall::Track)),
    ("/v1/t", Shape::Single(SegmentCall::Track)),
    ("/v1/identify", Shape::Single(SegmentCall::Identify)),
    ("/v1/i", Shape::Single(SegmentCall::Identify)),
    ("/v1/page", Shape::Single(SegmentCall::Page)),
    ("/v1/p", Shape::Single(SegmentCall::Page)),
    ("/v1/screen", Shape::Single(SegmentCall::Screen)),
    ("/v1/s", Shape::Single(SegmentCall::Screen)),
    ("/v1/group", Shape::Single(SegmentCall::Group)),
    ("/v1/g", Shape::Single(SegmentCall::Group)),
    ("/v1/alias", Shape::Single(SegmentCall::Alias)),
    ("/v1/a", Shape::Single(SegmentCall::Alias)),
];

/// Decodes a Segment body: each message mapped (or rejected) in order, the write key
/// and `sentAt`.
pub(crate) fn parse(body: &[u8], shape: Shape) -> Result<Parsed, Error> {
    let root = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(root)) => root,
        Ok(_) => return Err(Error::invalid("body", "must be a JSON object")),
        Err(error) => {
            return Err(Error::invalid(
                "body",
                format!("is not valid JSON: {error}"),
            ));
        }
    };
    let key = match root.get("writeKey") {
        Some(Value::String(key)) if !key.is_empty() => Some(key.clone()),
        _ => None,
    };
    let sent_at = match root.get("sentAt") {
        Some(value) => mapping::parse_time(value, "sentAt").map_err(invalid)?,
        None => None,
    };
    let events = match shape {
        Shape::Single(call) => vec![mapping::segment_event(&root, Some(call), None, "")],
        Shape::Batch => {
            let Some(Value::Array(batch)) = root.get("batch") else {
                return Err(Error::invalid("batch", "is required: an array of messages"));
            };
            let context = root.get("context").filter(|context| context.is_object());
            batch
                .iter()
                .enumerate()
                .map(|(index, message)| {
                    let prefix = format!("batch[{index}]");
                    match message {
                        Value::Object(message) => {
                            mapping::segment_event(message, None, context, &prefix)
                        }
                        _ => Err(FieldViolation::new(prefix, "must be a JSON object")),
                    }
                })
                .collect()
        }
    };
    Ok(Parsed {
        key,
        sent_at,
        events,
        single: matches!(shape, Shape::Single(_)),
    })
}

fn invalid(violation: FieldViolation) -> Error {
    Error::InvalidArgument { violation }
}

/// The project settings analytics.js loads from its CDN (`cdnURL`): delivery to this
/// server (`apiHost`, `protocol`), no destinations, no remote metrics.
pub(crate) fn settings(write_key: &str, api_host: &str, protocol: &str) -> Value {
    let enabled = json!({"__default": {"enabled": true, "integrations": {}}});
    json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{api_host}/v1"),
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": enabled.clone(), "identify": enabled.clone(), "group": enabled},
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    })
}

/// Segment's answer to an accepted request.
pub(crate) fn success() -> Value {
    json!({"success": true})
}
