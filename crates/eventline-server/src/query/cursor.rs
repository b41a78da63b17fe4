//! Opaque page tokens and stream cursors. A cursor is JSON plus a checksum, base64url
//! encoded. The checksum catches corrupted or hand-edited tokens; it is not a secret, and
//! nothing depends on it for isolation: the tenant always comes from the API key. Each
//! cursor carries a digest of its tenant and the query's filters, so it cannot continue
//! another query, nor be used by another tenant.

use base64::Engine;
use chrono::{DateTime, Utc};
use eventline_core::{
    Error, TenantId,
    query::{EventFilter, Position},
    search::SearchText,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const CHECKSUM_BYTES: usize = 8;
const DOMAIN: &[u8] = b"eventline.cursor.v1";

/// Where a read stops and resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub(crate) enum Cursor {
    /// A listing page: the last position and the resolved window.
    #[serde(rename = "page")]
    Page {
        t: i64,
        i: String,
        s: i64,
        e: i64,
        f: String,
    },
    /// An export: the last position exported.
    #[serde(rename = "export")]
    Export { t: i64, i: String, f: String },
    /// A tail replaying history below commit horizon `h`, from `start` (`m`).
    #[serde(rename = "tail-history")]
    TailHistory {
        t: i64,
        i: String,
        h: u64,
        m: Option<i64>,
        f: String,
    },
    /// A tail following commits after `(q, i)`, from `start` (`m`).
    #[serde(rename = "tail-live")]
    TailLive {
        q: u64,
        i: String,
        m: Option<i64>,
        f: String,
    },
    /// An audit-trail page: the last record's time and id.
    #[serde(rename = "audit")]
    Audit { t: i64, i: String, f: String },
}

/// The digest of a tenant's filter that cursors carry.
pub(crate) fn filter_digest(tenant_id: TenantId, filter: &EventFilter) -> String {
    digest_of(tenant_id, &[&filter.fingerprint()])
}

/// The digest of a search's text and filter that its page tokens carry.
pub(crate) fn search_digest(
    tenant_id: TenantId,
    filter: &EventFilter,
    text: &SearchText,
) -> String {
    digest_of(
        tenant_id,
        &[&filter.fingerprint(), "\0search\0", &text.fingerprint()],
    )
}

fn digest_of(tenant_id: TenantId, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tenant_id.to_string().as_bytes());
    hasher.update(b"\0");
    for part in parts {
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(crate) fn time(field: &str, micros: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::invalid(field, "holds a time out of range"))
}

pub(crate) fn position(field: &str, micros: i64, event_id: &str) -> Result<Position, Error> {
    Ok(Position {
        timestamp: time(field, micros)?,
        event_id: event_id.to_owned(),
    })
}

impl Cursor {
    /// Encodes the cursor as an opaque token.
    pub(crate) fn encode(&self) -> String {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        let checksum = checksum(&bytes);
        bytes.extend_from_slice(&checksum);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a token from request field `field`, checking it was issued to `tenant_id`
    /// for `filter`.
    pub(crate) fn decode(
        field: &str,
        token: &str,
        tenant_id: TenantId,
        filter: &EventFilter,
    ) -> Result<Self, Error> {
        Self::decode_for(field, token, &filter_digest(tenant_id, filter))
    }

    /// Decodes a cursor issued for a query whose digest is `digest`.
    pub(crate) fn decode_for(field: &str, token: &str, digest: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::invalid(
                field,
                "is not a token this server issued (corrupted or edited)",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid())?;
        if bytes.len() <= CHECKSUM_BYTES {
            return Err(invalid());
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        if checksum(body) != sum {
            return Err(invalid());
        }
        let cursor: Cursor = serde_json::from_slice(body).map_err(|_| invalid())?;
        if cursor.filter_digest() != digest {
            return Err(Error::invalid(
                field,
                "was issued for a query with other filters or to another tenant",
            ));
        }
        Ok(cursor)
    }

    fn filter_digest(&self) -> &str {
        match self {
            Self::Page { f, .. }
            | Self::Export { f, .. }
            | Self::TailHistory { f, .. }
            | Self::TailLive { f, .. }
            | Self::Audit { f, .. } => f,
        }
    }
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(body);
    let digest = hasher.finalize();
    let mut sum = [0u8; CHECKSUM_BYTES];
    sum.copy_from_slice(&digest[..CHECKSUM_BYTES]);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId(uuid::Uuid::from_u128(7))
    }

    fn filter(event_type: &str) -> EventFilter {
        EventFilter {
            event_type: Some(event_type.into()),
            ..Default::default()
        }
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor::Export {
            t: 42,
            i: "e1".into(),
            f: filter_digest(tenant(), &filter("a")),
        };
        assert_eq!(
            Cursor::decode("cursor", &cursor.encode(), tenant(), &filter("a")).unwrap(),
            cursor
        );
    }

    #[test]
    fn edited_tokens_are_rejected_naming_the_field() {
        let token = Cursor::Export {
            t: 42,
            i: "e1".into(),
            f: filter_digest(tenant(), &filter("a")),
        }
        .encode();
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        bytes[10] ^= 1;
        let edited = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let error = Cursor::decode("page_token", &edited, tenant(), &filter("a")).unwrap_err();
        assert!(error.to_string().contains("page_token"), "{error}");
        assert!(Cursor::decode("page_token", "garbage!", tenant(), &filter("a")).is_err());
    }

    #[test]
    fn a_token_cannot_continue_a_query_with_other_filters() {
        let token = Cursor::Export {
            t: 42,
            i: "e1".into(),
            f: filter_digest(tenant(), &filter("a")),
        }
        .encode();
        let error = Cursor::decode("cursor", &token, tenant(), &filter("b")).unwrap_err();
        assert!(error.to_string().contains("other filters"), "{error}");
    }

    #[test]
    fn a_token_issued_to_one_tenant_is_refused_to_another() {
        let token = Cursor::Export {
            t: 42,
            i: "e1".into(),
            f: filter_digest(tenant(), &filter("a")),
        }
        .encode();
        let other = TenantId(uuid::Uuid::from_u128(8));
        let error = Cursor::decode("cursor", &token, other, &filter("a")).unwrap_err();
        assert!(error.to_string().contains("another tenant"), "{error}");
    }
}
