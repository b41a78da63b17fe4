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

/// A key's own ingest rate limit: a token bucket of `burst` events refilled at
/// `events_per_second`, on each server replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub events_per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    /// A limit of `events_per_second` with `burst` events at once; a burst of 0 means
    /// one second's worth. Names the request fields on error.
    pub fn new(events_per_second: u32, burst: u32) -> Result<Option<Self>, Error> {
        match (events_per_second, burst) {
            (0, 0) => Ok(None),
            (0, _) => Err(Error::invalid(
                "burst",
                "needs events_per_second (a burst without a rate limits nothing)",
            )),
            (rate, 0) => Ok(Some(Self {
                events_per_second: rate,
                burst: rate,
            })),
            (rate, burst) => Ok(Some(Self {
                events_per_second: rate,
                burst,
            })),
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
    /// When the key stops working; `None` is never.
    pub expires_at: Option<DateTime<Utc>>,
    /// The key's own limit; `None` means the server's default applies.
    pub rate_limit: Option<RateLimit>,
}

impl ApiKey {
    /// Whether the key grants `scope` and is not revoked.
    pub fn allows(&self, scope: Scope) -> bool {
        self.revoked_at.is_none() && self.scopes.contains(&scope)
    }

    /// Whether the key has expired by `now`.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
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
            expire_time: self.expires_at.map(time::to_proto),
            events_per_second: self.rate_limit.map_or(0, |limit| limit.events_per_second),
            burst: self.rate_limit.map_or(0, |limit| limit.burst),
        }
    }
}

/// Who performed an audited action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The operator, by the configured admin token.
    AdminToken,
    /// An API key: an admin-scoped key acting, or an expired key presented.
    Key(String),
    /// The `eventline tenant` / `eventline key` commands, on the database directly.
    Cli,
    /// The server's first start on an empty database.
    Bootstrap,
    /// The server itself: a background task such as a user deletion finishing.
    Server,
}

impl fmt::Display for Actor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AdminToken => formatter.write_str("admin_token"),
            Self::Key(key_id) => write!(formatter, "key:{key_id}"),
            Self::Cli => formatter.write_str("cli"),
            Self::Bootstrap => formatter.write_str("bootstrap"),
            Self::Server => formatter.write_str("server"),
        }
    }
}

/// What an audited action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    TenantCreated,
    KeyCreated,
    KeyRevoked,
    ExpiredKeyUsed,
    UserDeletionRequested,
    UserDeletionFinished,
    RetentionSet,
    SchemaSet,
    SchemaDeleted,
    QuarantineReplayed,
    QuarantinePurged,
    SearchEnabled,
    SearchDisabled,
    SubscriptionCreated,
    SubscriptionDeleted,
    SubscriptionResumed,
    AlertRuleCreated,
    AlertRuleDeleted,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 18] = [
        AuditAction::TenantCreated,
        AuditAction::KeyCreated,
        AuditAction::KeyRevoked,
        AuditAction::ExpiredKeyUsed,
        AuditAction::UserDeletionRequested,
        AuditAction::UserDeletionFinished,
        AuditAction::RetentionSet,
        AuditAction::SchemaSet,
        AuditAction::SchemaDeleted,
        AuditAction::QuarantineReplayed,
        AuditAction::QuarantinePurged,
        AuditAction::SearchEnabled,
        AuditAction::SearchDisabled,
        AuditAction::SubscriptionCreated,
        AuditAction::SubscriptionDeleted,
        AuditAction::SubscriptionResumed,
        AuditAction::AlertRuleCreated,
        AuditAction::AlertRuleDeleted,
    ];

    /// The name stored in the database and written to the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantCreated => "tenant.created",
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::ExpiredKeyUsed => "key.expired_used",
            Self::UserDeletionRequested => "user.deletion_requested",
            Self::UserDeletionFinished => "user.deletion_finished",
            Self::RetentionSet => "retention.set",
            Self::SchemaSet => "schema.set",
            Self::SchemaDeleted => "schema.deleted",
            Self::QuarantineReplayed => "quarantine.replayed",
            Self::QuarantinePurged => "quarantine.purged",
            Self::SearchEnabled => "search.enabled",
            Self::SearchDisabled => "search.disabled",
            Self::SubscriptionCreated => "subscription.created",
            Self::SubscriptionDeleted => "subscription.deleted",
            Self::SubscriptionResumed => "subscription.resumed",
            Self::AlertRuleCreated => "alert_rule.created",
            Self::AlertRuleDeleted => "alert_rule.deleted",
        }
    }

    /// The API enum.
    pub fn to_proto(self) -> v1::AuditAction {
        match self {
            Self::TenantCreated => v1::AuditAction::TenantCreated,
            Self::KeyCreated => v1::AuditAction::KeyCreated,
            Self::KeyRevoked => v1::AuditAction::KeyRevoked,
            Self::ExpiredKeyUsed => v1::AuditAction::ExpiredKeyUsed,
            Self::UserDeletionRequested => v1::AuditAction::UserDeletionRequested,
            Self::UserDeletionFinished => v1::AuditAction::UserDeletionFinished,
            Self::RetentionSet => v1::AuditAction::RetentionSet,
            Self::SchemaSet => v1::AuditAction::SchemaSet,
            Self::SchemaDeleted => v1::AuditAction::SchemaDeleted,
            Self::QuarantineReplayed => v1::AuditAction::QuarantineReplayed,
            Self::QuarantinePurged => v1::AuditAction::QuarantinePurged,
            Self::SearchEnabled => v1::AuditAction::SearchEnabled,
            Self::SearchDisabled => v1::AuditAction::SearchDisabled,
            Self::SubscriptionCreated => v1::AuditAction::SubscriptionCreated,
            Self::SubscriptionDeleted => v1::AuditAction::SubscriptionDeleted,
            Self::SubscriptionResumed => v1::AuditAction::SubscriptionResumed,
            Self::AlertRuleCreated => v1::AuditAction::AlertRuleCreated,
            Self::AlertRuleDeleted => v1::AuditAction::AlertRuleDeleted,
        }
    }
}

impl FromStr for AuditAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AuditAction::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| format!("unknown audit action {text:?}"))
    }
}

/// One audited admin action, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// A time-ordered UUID.
    pub audit_id: String,
    pub tenant_id: TenantId,
    /// [`Actor`] as text (`admin_token`, `key:key_…`, `cli`, `bootstrap`).
    pub actor: String,
    pub action: AuditAction,
    /// The tenant id or key id acted on.
    pub target: String,
    pub occurred_at: DateTime<Utc>,
    pub details: std::collections::BTreeMap<String, String>,
}

impl AuditEvent {
    /// A record of `actor` doing `action` to `target` of `tenant_id`, now.
    pub fn new(tenant_id: TenantId, actor: &Actor, action: AuditAction, target: &str) -> Self {
        Self {
            audit_id: Uuid::now_v7().to_string(),
            tenant_id,
            actor: actor.to_string(),
            action,
            target: target.to_owned(),
            occurred_at: time::now(),
            details: Default::default(),
        }
    }

    /// The record of a tenant's creation.
    pub fn tenant_created(tenant: &Tenant, actor: &Actor) -> Self {
        let mut event = Self::new(
            tenant.tenant_id,
            actor,
            AuditAction::TenantCreated,
            &tenant.tenant_id.to_string(),
        );
        event.details.insert("name".into(), tenant.name.clone());
        event
    }

    /// The record of a key's creation, with what the key may do.
    pub fn key_created(key: &ApiKey, actor: &Actor) -> Self {
        let mut event = Self::new(key.tenant_id, actor, AuditAction::KeyCreated, &key.key_id);
        let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
        event.details.insert("scopes".into(), scopes.join(","));
        if let Some(expires_at) = key.expires_at {
            event
                .details
                .insert("expire_time".into(), expires_at.to_rfc3339());
        }
        if let Some(limit) = key.rate_limit {
            event.details.insert(
                "events_per_second".into(),
                limit.events_per_second.to_string(),
            );
            event
                .details
                .insert("burst".into(), limit.burst.to_string());
        }
        event
    }

    /// Writes the record to the structured log (target `eventline::audit`).
    pub fn log(&self) {
        tracing::info!(
            target: "eventline::audit",
            audit_id = %self.audit_id,
            tenant_id = %self.tenant_id,
            actor = %self.actor,
            action = self.action.as_str(),
            target_id = %self.target,
            details = ?self.details,
            "audit"
        );
    }

    /// Converts to the API message.
    pub fn to_proto(&self) -> v1::AuditEvent {
        v1::AuditEvent {
            audit_id: self.audit_id.clone(),
            tenant_id: self.tenant_id.to_string(),
            actor: self.actor.clone(),
            action: self.action.to_proto() as i32,
            target: self.target.clone(),
            event_time: Some(time::to_proto(self.occurred_at)),
            details: self.details.clone().into_iter().collect(),
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// One tenant's records, or every tenant's.
    pub tenant_id: Option<TenantId>,
    /// Records strictly older than this `(time, audit_id)`, for the next page.
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: usize,
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
