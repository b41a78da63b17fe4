//! Tenants, API keys and the scopes a key grants.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use eventline_proto::v1;
use uuid::Uuid;

use crate::{Error, time};

/// A tenant's id. Every event, rollup and key belongs to exactly one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub Uuid);

impl TenantId {
    /// A new, time-ordered tenant id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the `tenant_id` field of a request.
    pub fn parse(field: &str, text: &str) -> Result<Self, Error> {
        Uuid::parse_str(text).map(Self).map_err(|_| {
            Error::invalid(field, format!("must be a tenant id (a UUID), got {text:?}"))
        })
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Ingest,
    Query,
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Query, Scope::Admin];

    /// The name stored in the database and accepted by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Query => "query",
            Self::Admin => "admin",
        }
    }

    /// Converts from the API enum; `SCOPE_UNSPECIFIED` and unknown values are errors.
    pub fn from_proto(field: &str, value: i32) -> Result<Self, Error> {
        match v1::Scope::try_from(value) {
            Ok(v1::Scope::Ingest) => Ok(Self::Ingest),
            Ok(v1::Scope::Query) => Ok(Self::Query),
            Ok(v1::Scope::Admin) => Ok(Self::Admin),
            _ => Err(Error::invalid(
                field,
                format!("must be SCOPE_INGEST, SCOPE_QUERY or SCOPE_ADMIN, got {value}"),
            )),
        }
    }

    /// The API enum.
    pub fn to_proto(self) -> v1::Scope {
        match self {
            Self::Ingest => v1::Scope::Ingest,
            Self::Query => v1::Scope::Query,
            Self::Admin => v1::Scope::Admin,
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("unknown scope {text:?}; expected ingest, query or admin"))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl Tenant {
    /// Converts to the API message.
    pub fn to_proto(&self) -> v1::Tenant {
        v1::Tenant {
            tenant_id: self.tenant_id.to_string(),
            name: self.name.clone(),
            create_time: Some(time::to_proto(self.created_at)),
        }
    }
}

/// An API key as stored: its public id, owner, scopes and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub key_id: String,
    pub tenant_id: TenantId,
    pub scopes: Vec<Scope>,
    /// SHA-256 of the whole secret; the secret itself is never stored.
    pub secret_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key grants `scope` and is not revoked.
    pub fn allows(&self, scope: Scope) -> bool {
        self.revoked_at.is_none() && self.scopes.contains(&scope)
    }

    /// Converts to the API message (never with the secret).
    pub fn to_proto(&self) -> v1::ApiKey {
        v1::ApiKey {
            key_id: self.key_id.clone(),
            tenant_id: self.tenant_id.to_string(),
            scopes: self
                .scopes
                .iter()
                .map(|scope| scope.to_proto() as i32)
                .collect(),
            create_time: Some(time::to_proto(self.created_at)),
            revoke_time: self.revoked_at.map(time::to_proto),
        }
    }
}

/// Validates a tenant name: 1 to 128 characters, no control characters.
pub fn validate_tenant_name(field: &str, name: &str) -> Result<(), Error> {
    let chars = name.chars().count();
    if chars == 0 || chars > crate::limits::MAX_TENANT_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be 1 to 128 characters, got {chars}"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}
