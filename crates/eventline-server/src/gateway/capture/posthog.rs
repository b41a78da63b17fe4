//! PostHog capture: `/batch/` (posthog-python, posthog-node), `/e/` and `/i/v0/e/`
//! (posthog-js), `/capture/` and `/track/` (single events and older SDKs), and the
//! feature-flag and remote-config calls posthog-js makes at start, answered with "no
//! flags, nothing enabled" so it runs without errors.
//!
//! Body encodings, from the SDKs' source: plain JSON; `Content-Encoding: gzip` (posthog
//! -python, posthog-node; decoded by the gateway's decompression layer); a gzip body with
//! no header at all (posthog-js's default `gzip-js` compression, sent as `text/plain`),
//! recognised by the gzip magic bytes; and `data=<base64 JSON>` as a form
//! (`compression=base64`, posthog-js's `sendBeacon` fallback).

use std::io::Read;

use base64::Engine;
use chrono::Utc;
use eventline_core::{Error, FieldViolation};
use serde_json::{Map, Value, json};

use super::{Parsed, mapping};

/// The PostHog capture paths (with and without the trailing slash the SDKs add).
pub(crate) const PATHS: [&str; 12] = [
    "/batch",
    "/batch/",
    "/capture",
    "/capture/",
    "/e",
    "/e/",
    "/i/v0/e",
    "/i/v0/e/",
    "/track",
    "/track/",
    "/i/v0/ai/batch",
    "/i/v0/ai/batch/",
];

/// The feature-flag paths: `/flags/?v=2` (current SDKs) and `/decide/` (older ones).
pub(crate) const FLAG_PATHS: [&str; 4] = ["/flags", "/flags/", "/decide", "/decide/"];

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The JSON text of a PostHog body, whatever its encoding; a gzip body is inflated to at
/// most `max_bytes + 1` bytes (longer is over the limit).
pub(crate) fn decode_body(
    body: &[u8],
    query: Option<&str>,
    max_bytes: usize,
) -> Result<Vec<u8>, Error> {
    let compression = query.and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "compression")
            .map(|(_, value)| value.into_owned())
    });
    if body.starts_with(&GZIP_MAGIC) {
        return gunzip(body, max_bytes);
    }
    if compression.as_deref() == Some("lz64") {
        return Err(Error::invalid(
            "compression",
            "lz64 is not supported: send gzip-js, base64 or no compression",
        ));
    }
    if body.starts_with(b"data=") {
        let data = form_urlencoded::parse(body)
            .find(|(name, _)| name == "data")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        let trimmed = data.trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            return Ok(data.into_bytes());
        }
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|error| Error::invalid("data", format!("is not valid base64: {error}")));
    }
    Ok(body.to_vec())
}

/// Decompresses a gzip body, stopping one byte past `max_bytes` (the caller refuses a
/// body that long), so a small bomb cannot inflate without bound.
fn gunzip(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, Error> {
    let mut decoded = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|error| Error::invalid("body", format!("is not valid gzip: {error}")))?;
    Ok(decoded)
}

/// Decodes a PostHog body (already turned into JSON text): a `{"batch": […]}` object, a
/// bare array of events, or one event.
pub(crate) fn parse(json_text: &[u8]) -> Result<Parsed, Error> {
    let root = serde_json::from_slice::<Value>(json_text)
        .map_err(|error| Error::invalid("body", format!("is not valid JSON: {error}")))?;
    let (root, events, single) = match root {
        Value::Object(mut root) => match root.remove("batch") {
            Some(Value::Array(events)) => (root, events, false),
            Some(_) => return Err(Error::invalid("batch", "must be an array of events")),
            None if root.contains_key("event") => (Map::new(), vec![Value::Object(root)], true),
            None => match root.remove("data") {
                Some(Value::Array(events)) => (root, events, false),
                Some(event @ Value::Object(_)) => (root, vec![event], true),
                _ => return Err(Error::invalid("batch", "is required: an array of events")),
            },
        },
        Value::Array(events) => (Map::new(), events, false),
        _ => return Err(Error::invalid("body", "must be a JSON object or array")),
    };
    let key = key_of(&root, &events);
    let sent_at = match root.get("sent_at") {
        Some(value) => mapping::parse_time(value, "sent_at")
            .map_err(|violation| Error::InvalidArgument { violation })?,
        None => None,
    };
    let sent_at_time = sent_at.as_ref().and_then(|time| {
        chrono::DateTime::<Utc>::from_timestamp(time.seconds, time.nanos.max(0) as u32)
    });
    let events = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let prefix = if single {
                String::new()
            } else {
                format!("batch[{index}]")
            };
            match event {
                Value::Object(event) => mapping::posthog_event(event, sent_at_time, &prefix),
                _ => Err(FieldViolation::new(
                    if single { "body".to_owned() } else { prefix },
                    "must be a JSON object",
                )),
            }
        })
        .collect();
    Ok(Parsed {
        key,
        sent_at,
        events,
        single,
    })
}

/// The project key: `api_key` or `token` at the top, else the first event's own
/// `api_key`/`token`/`properties.token` (posthog-js puts it in every event).
fn key_of(root: &Map<String, Value>, events: &[Value]) -> Option<String> {
    let text = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .filter(|key| !key.is_empty())
            .map(str::to_owned)
    };
    text(root.get("api_key"))
        .or_else(|| text(root.get("token")))
        .or_else(|| {
            let first = events.first()?;
            text(first.get("api_key"))
                .or_else(|| text(first.get("token")))
                .or_else(|| text(first.get("properties").and_then(|p| p.get("token"))))
        })
}

/// PostHog's answer to an accepted request.
pub(crate) fn success() -> Value {
    json!({"status": 1})
}

/// A PostHog-shaped error body (posthog-python reads `detail`).
pub(crate) fn error_body(code: &str, detail: &str) -> Value {
    json!({"type": "validation_error", "code": code, "detail": detail, "attr": null})
}

/// The answer to `/flags` and `/decide`: no feature flags, nothing to load.
pub(crate) fn flags() -> Value {
    let mut answer = remote_config();
    if let Value::Object(answer) = &mut answer {
        for (name, value) in [
            ("flags", json!({})),
            ("featureFlags", json!({})),
            ("featureFlagPayloads", json!({})),
            ("errorsWhileComputingFlags", json!(false)),
            ("quotaLimited", json!([])),
            ("requestId", json!(uuid::Uuid::now_v7().to_string())),
            ("config", json!({"enable_collect_everything": false})),
            ("toolbarParams", json!({})),
            ("isAuthenticated", json!(false)),
        ] {
            answer.insert(name.into(), value);
        }
    }
    answer
}

/// The remote config posthog-js loads from `/array/<token>/config`: compression it may
/// use and every optional feature off (no recordings or site apps to fetch). `surveys`
/// is left out on purpose: `"surveys": false` still makes posthog-js fetch its surveys
/// script from `/static/`, which this server does not serve.
pub(crate) fn remote_config() -> Value {
    json!({
        "supportedCompression": ["gzip", "gzip-js"],
        "hasFeatureFlags": false,
        "autocapture_opt_out": false,
        "capturePerformance": false,
        "captureDeadClicks": false,
        "heatmaps": false,
        "productTours": false,
        "sessionRecording": false,
        "siteApps": [],
        "elementsChainAsString": true,
        "defaultIdentifiedOnly": true,
    })
}

/// The script form of the remote config (`/array/<token>/config.js`), which posthog-js
/// loads first; only for tokens of key characters, so nothing else is echoed into a
/// script.
pub(crate) fn remote_config_script(token: &str) -> Option<String> {
    let plain = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if !plain {
        return None;
    }
    let config = json!({"config": remote_config(), "siteApps": []});
    Some(format!(
        "(function(){{var w=window;w._POSTHOG_REMOTE_CONFIG=w._POSTHOG_REMOTE_CONFIG||{{}};\
         w._POSTHOG_REMOTE_CONFIG[\"{token}\"]={config};}})();\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bodies_decode_from_gzip_without_a_header_and_from_base64_forms() {
        let json = br#"{"api_key":"k","batch":[{"event":"e","distinct_id":"d"}]}"#;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(json).unwrap();
        let gzipped = encoder.finish().unwrap();
        assert_eq!(decode_body(&gzipped, None, 1024).unwrap(), json);
        assert_eq!(decode_body(&gzipped, None, 10).unwrap().len(), 11);
        let encoded = base64::engine::general_purpose::STANDARD.encode(json);
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("data", &encoded)
            .finish();
        let decoded = decode_body(form.as_bytes(), Some("compression=base64"), 1024).unwrap();
        assert_eq!(decoded, json);
        let parsed = parse(&decoded).unwrap();
        assert_eq!(parsed.key.as_deref(), Some("k"));
        assert_eq!(parsed.events.len(), 1);
    }

    #[test]
    fn the_key_comes_from_the_first_events_token_when_the_body_has_none() {
        let parsed =
            parse(br#"[{"event":"e","properties":{"token":"t","distinct_id":"d"}}]"#).unwrap();
        assert_eq!(parsed.key.as_deref(), Some("t"));
        assert!(remote_config_script("t\"x").is_none());
        assert!(remote_config_script("phc_abc").unwrap().contains("phc_abc"));
    }
}
