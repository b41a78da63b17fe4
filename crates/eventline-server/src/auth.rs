//! API keys and the admin token. A key's secret is shown once and stored only as its
//! SHA-256; the public key id is derived from that hash, so any secret (a generated
//! `elk_…` or a bootstrap key from the environment) can be looked up by id and then
//! compared in constant time. Lookups are cached briefly so ingest does not hit the
//! database per request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use eventline_core::{Actor, ApiKey, AuditAction, AuditEvent, Error, Scope, TenantId};
use eventline_store::Store;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

/// How long a looked-up key is trusted before it is read again; bounds how long a key
/// revoked on another replica keeps working.
const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most cached keys; the cache is cleared when full (it refills from the database).
const CACHE_CAPACITY: usize = 10_000;
/// An expired key presented again within this time is not audited again, so a client
/// retrying with a stale key cannot flood the audit trail.
const EXPIRED_AUDIT_INTERVAL: Duration = Duration::from_secs(60);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator, by the configured admin token.
    Operator,
    /// An API key of one tenant.
    Key { tenant_id: TenantId, key_id: String },
}

impl Principal {
    /// The actor audit records name.
    pub fn actor(&self) -> Actor {
        match self {
            Self::Operator => Actor::AdminToken,
            Self::Key { key_id, .. } => Actor::Key(key_id.clone()),
        }
    }
}

/// A new key's secret and its stored form.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub secret: String,
    pub key: ApiKey,
}

/// Creates a key for `tenant_id` that never expires and has no limit of its own: a
/// random secret unless `secret` is given.
pub fn issue_key(tenant_id: TenantId, scopes: Vec<Scope>, secret: Option<&str>) -> IssuedKey {
    let secret = secret.map(str::to_owned).unwrap_or_else(|| {
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        format!(
            "elk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        )
    });
    let secret_hash = Sha256::digest(secret.as_bytes()).to_vec();
    let key = ApiKey {
        key_id: key_id_of(&secret_hash),
        tenant_id,
        scopes,
        secret_hash,
        created_at: eventline_core::time::now(),
        revoked_at: None,
        expires_at: None,
        rate_limit: None,
    };
    IssuedKey { secret, key }
}

fn key_id_of(secret_hash: &[u8]) -> String {
    let mut id = String::with_capacity(20);
    id.push_str("key_");
    for byte in &secret_hash[..8] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// Checks credentials against the store and the admin token.
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    admin_token_hash: Option<[u8; 32]>,
    cache: Arc<Mutex<HashMap<String, (ApiKey, Instant)>>>,
    /// When each expired key was last audited on this replica.
    expired_audited: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Authenticator {
    /// An authenticator over `store`, accepting `admin_token` for AdminService.
    pub fn new(store: Arc<dyn Store>, admin_token: Option<&str>) -> Self {
        Self {
            store,
            admin_token_hash: admin_token.map(|token| Sha256::digest(token.as_bytes()).into()),
            cache: Arc::default(),
            expired_audited: Arc::default(),
        }
    }

    /// Authenticates an API key that must grant `scope`, returning its tenant.
    pub async fn tenant_with_scope(
        &self,
        metadata: &MetadataMap,
        scope: Scope,
    ) -> Result<TenantId, Error> {
        Ok(self.key_with_scope(metadata, scope).await?.tenant_id)
    }

    /// Authenticates an API key that must grant `scope`, returning the key (for its
    /// rate limit).
    #[tracing::instrument(name = "auth.authenticate", level = "debug", skip_all, fields(scope = %scope))]
    pub async fn key_with_scope(
        &self,
        metadata: &MetadataMap,
        scope: Scope,
    ) -> Result<ApiKey, Error> {
        let secret = credential(metadata)?;
        let key = self.verified_key(secret).await?;
        if !key.scopes.contains(&scope) {
            return Err(Error::PermissionDenied(format!(
                "API key {} lacks the {scope} scope",
                key.key_id
            )));
        }
        Ok(key)
    }

    /// Authenticates an AdminService call: the admin token, or a key with the admin scope.
    #[tracing::instrument(
        name = "auth.authenticate",
        level = "debug",
        skip_all,
        fields(scope = "admin")
    )]
    pub async fn admin(&self, metadata: &MetadataMap) -> Result<Principal, Error> {
        let secret = credential(metadata)?;
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some(expected) = &self.admin_token_hash
            && bool::from(hash.ct_eq(expected))
        {
            return Ok(Principal::Operator);
        }
        let key = self.verified_key(secret).await?;
        if !key.scopes.contains(&Scope::Admin) {
            return Err(Error::PermissionDenied(format!(
                "API key {} lacks the admin scope that AdminService requires",
                key.key_id
            )));
        }
        Ok(Principal::Key {
            tenant_id: key.tenant_id,
            key_id: key.key_id,
        })
    }

    /// Forgets a key at once (after a revoke on this replica).
    pub fn forget(&self, key_id: &str) {
        self.lock_cache().remove(key_id);
    }

    async fn verified_key(&self, secret: &str) -> Result<ApiKey, Error> {
        let hash = Sha256::digest(secret.as_bytes());
        let key_id = key_id_of(&hash);
        let key = match self.cached(&key_id) {
            Some(key) => key,
            None => {
                let Some(key) = self.store.api_key(&key_id).await? else {
                    return Err(invalid_key());
                };
                let mut cache = self.lock_cache();
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(key_id, (key.clone(), Instant::now()));
                key
            }
        };
        if !bool::from(hash[..].ct_eq(&key.secret_hash)) || key.revoked_at.is_some() {
            return Err(invalid_key());
        }
        if key.expired_at(eventline_core::time::now()) {
            self.audit_expired_use(&key).await;
            return Err(Error::Unauthenticated(format!(
                "API key {} expired (its expire_time has passed)",
                key.key_id
            )));
        }
        Ok(key)
    }

    /// Records that an expired key was presented, at most once a minute per key; a
    /// failure to record never changes the answer to the client.
    async fn audit_expired_use(&self, key: &ApiKey) {
        {
            let mut audited = self
                .expired_audited
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if audited
                .get(&key.key_id)
                .is_some_and(|at| at.elapsed() < EXPIRED_AUDIT_INTERVAL)
            {
                return;
            }
            if audited.len() >= CACHE_CAPACITY {
                audited.clear();
            }
            audited.insert(key.key_id.clone(), Instant::now());
        }
        let mut event = AuditEvent::new(
            key.tenant_id,
            &Actor::Key(key.key_id.clone()),
            AuditAction::ExpiredKeyUsed,
            &key.key_id,
        );
        if let Some(expires_at) = key.expires_at {
            event
                .details
                .insert("expire_time".into(), expires_at.to_rfc3339());
        }
        if let Err(error) = self.store.record_audit(&event).await {
            tracing::warn!(error = %error, key_id = %key.key_id, "could not audit an expired key's use");
        }
    }

    fn cached(&self, key_id: &str) -> Option<ApiKey> {
        let cache = self.lock_cache();
        let (key, fetched_at) = cache.get(key_id)?;
        (fetched_at.elapsed() < CACHE_TTL).then(|| key.clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ApiKey, Instant)>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a request path needs before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requirement {
    /// A key with this scope (IngestService, QueryService).
    Scope(Scope),
    /// The admin token or an admin-scoped key (AdminService).
    Admin,
    /// Nothing: health, reflection.
    Nothing,
}

impl Requirement {
    /// The requirement of a gRPC path (`/eventline.v1.IngestService/Track`).
    pub(crate) fn of_grpc_path(path: &str) -> Self {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match service {
            "eventline.v1.IngestService" => Self::Scope(Scope::Ingest),
            "eventline.v1.QueryService" => Self::Scope(Scope::Query),
            "eventline.v1.AdminService" => Self::Admin,
            _ => Self::Nothing,
        }
    }
}

impl Authenticator {
    /// Checks `headers` against `requirement` (the same check the RPC itself makes).
    pub(crate) async fn check(
        &self,
        headers: &http::HeaderMap,
        requirement: Requirement,
    ) -> Result<(), Error> {
        let metadata = || MetadataMap::from_headers(headers.clone());
        match requirement {
            Requirement::Nothing => Ok(()),
            Requirement::Scope(scope) => self.tenant_with_scope(&metadata(), scope).await.map(drop),
            Requirement::Admin => self.admin(&metadata()).await.map(drop),
        }
    }
}

/// What a request must pass before its body is read, shared by the gRPC middleware and
/// the REST gateway: the key checked from its headers, the store's readiness (one source,
/// also behind `grpc.health.v1` and `/readyz`), and the request memory budget its body is
/// then read into.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub(crate) authenticator: Authenticator,
    pub(crate) readiness: crate::readiness::Readiness,
    pub(crate) budget: crate::budget::MemoryBudget,
}

impl Admission {
    /// Admits a call to `grpc_path` from its headers alone: the key must meet the path's
    /// requirement, and while the store is known to be down, calls that need it fail at
    /// once.
    pub(crate) async fn admit(
        &self,
        headers: &http::HeaderMap,
        grpc_path: &str,
    ) -> Result<(), Error> {
        let requirement = Requirement::of_grpc_path(grpc_path);
        if requirement == Requirement::Nothing {
            return Ok(());
        }
        if self.readiness.store_down() {
            return Err(Error::Unavailable {
                what: "the database is unavailable".into(),
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        self.authenticator.check(headers, requirement).await
    }
}

/// Middleware on the gRPC routes: a call is authenticated before any of its messages is
/// read, so a client without a valid key cannot make the server buffer anything.
pub(crate) async fn authenticate_before_reading(
    axum::extract::State(admission): axum::extract::State<Admission>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match admission
        .admit(request.headers(), request.uri().path())
        .await
    {
        Ok(()) => next.run(request).await,
        Err(error) => tonic::Status::from(error).into_http(),
    }
}

fn invalid_key() -> Error {
    Error::Unauthenticated("invalid or revoked API key".into())
}

/// The secret from `x-api-key`, or from `authorization: Bearer …`.
fn credential(metadata: &MetadataMap) -> Result<&str, Error> {
    if let Some(value) = metadata.get("x-api-key") {
        return value
            .to_str()
            .map(str::trim)
            .map_err(|_| Error::Unauthenticated("x-api-key must be visible ASCII".into()));
    }
    if let Some(value) = metadata.get("authorization") {
        let text = value
            .to_str()
            .map_err(|_| Error::Unauthenticated("authorization must be visible ASCII".into()))?;
        let Some((scheme, token)) = text.split_once(' ') else {
            return Err(Error::Unauthenticated(
                "authorization must be \"Bearer <key>\"".into(),
            ));
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Unauthenticated(
                "authorization must use the Bearer scheme".into(),
            ));
        }
        return Ok(token.trim());
    }
    Err(Error::Unauthenticated(
        "missing API key: send it as x-api-key or authorization: Bearer <key>".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_are_random_and_hashed() {
        let tenant_id = TenantId::generate();
        let first = issue_key(tenant_id, vec![Scope::Ingest], None);
        let second = issue_key(tenant_id, vec![Scope::Ingest], None);
        assert_ne!(first.secret, second.secret);
        assert!(first.secret.starts_with("elk_"));
        assert!(
            !first.key.secret_hash.windows(4).any(|w| first
                .secret
                .as_bytes()
                .windows(4)
                .any(|s| s == w))
        );
        assert_eq!(
            first.key.key_id,
            key_id_of(&Sha256::digest(first.secret.as_bytes()))
        );
    }

    #[test]
    fn credentials_come_from_x_api_key_or_bearer() {
        let mut metadata = MetadataMap::new();
        assert!(matches!(
            credential(&metadata),
            Err(Error::Unauthenticated(_))
        ));
        metadata.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(credential(&metadata).unwrap(), "abc");
        metadata.insert("x-api-key", "xyz".parse().unwrap());
        assert_eq!(credential(&metadata).unwrap(), "xyz");
        let mut basic = MetadataMap::new();
        basic.insert("authorization", "Basic abc".parse().unwrap());
        assert!(credential(&basic).is_err());
    }
}
