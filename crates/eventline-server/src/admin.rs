//! AdminService: tenants, API keys and the audit trail. The operator (admin token)
//! manages everything; an admin-scoped key manages only its own tenant's keys. Every
//! change is recorded with its actor in the same transaction (README "Security").

use eventline_core::{
    AuditQuery, Error, RateLimit, Scope, TenantId, admin::validate_tenant_name, query::EventFilter,
};
use eventline_proto::v1::{self, admin_service_server::AdminService};
use eventline_store::Store;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use crate::{
    auth::{Authenticator, Principal, issue_key},
    query::cursor::{self, Cursor},
};

mod alerts;
mod lifecycle;
mod search;
mod streams;

pub use lifecycle::LifecycleParts;

/// The AdminService implementation.
#[derive(Debug, Clone)]
pub struct AdminApi {
    auth: Authenticator,
    store: Arc<dyn Store>,
    lifecycle: LifecycleParts,
}

impl AdminApi {
    /// A service over `store`; the data lifecycle RPCs also use `lifecycle`.
    pub fn new(auth: Authenticator, store: Arc<dyn Store>, lifecycle: LifecycleParts) -> Self {
        Self {
            auth,
            store,
            lifecycle,
        }
    }
}

/// Answers an RPC about one tenant (lifecycle, alerts): `AdminApi::$method(metadata, body)`.
macro_rules! tenant_rpc {
    ($self:ident, $request:ident, $method:ident) => {{
        let (metadata, _, body) = $request.into_parts();
        Ok(Response::new($self.$method(&metadata, body).await?))
    }};
}

fn operator_only(principal: &Principal, what: &str) -> Result<(), Error> {
    match principal {
        Principal::Operator => Ok(()),
        Principal::Key { .. } => Err(Error::PermissionDenied(format!(
            "{what} needs the admin token, not an API key"
        ))),
    }
}

fn may_manage(principal: &Principal, tenant_id: TenantId) -> Result<(), Error> {
    match principal {
        Principal::Operator => Ok(()),
        Principal::Key { tenant_id: own, .. } if *own == tenant_id => Ok(()),
        Principal::Key { .. } => Err(Error::PermissionDenied(
            "an admin key manages only its own tenant".into(),
        )),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_tenant(
        &self,
        request: Request<v1::CreateTenantRequest>,
    ) -> Result<Response<v1::CreateTenantResponse>, Status> {
        let principal = self.auth.admin(request.metadata()).await?;
        operator_only(&principal, "CreateTenant")?;
        let name = request.into_inner().name;
        validate_tenant_name("name", &name)?;
        let tenant = self
            .store
            .create_tenant(&name, &principal.actor())
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::CreateTenantResponse {
            tenant: Some(tenant.to_proto()),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        let principal = self.auth.admin(request.metadata()).await?;
        let tenants = self.store.list_tenants().await.map_err(Error::from)?;
        let visible = tenants
            .iter()
            .filter(|tenant| may_manage(&principal, tenant.tenant_id).is_ok())
            .map(|tenant| tenant.to_proto())
            .collect();
        Ok(Response::new(v1::ListTenantsResponse { tenants: visible }))
    }

    async fn create_api_key(
        &self,
        request: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        let principal = self.auth.admin(request.metadata()).await?;
        let body = request.into_inner();
        let tenant_id = TenantId::parse("tenant_id", &body.tenant_id)?;
        may_manage(&principal, tenant_id)?;
        if body.scopes.is_empty() {
            return Err(Error::invalid("scopes", "must name at least one scope").into());
        }
        let mut scopes = body
            .scopes
            .iter()
            .enumerate()
            .map(|(index, value)| Scope::from_proto(&format!("scopes[{index}]"), *value))
            .collect::<Result<Vec<_>, _>>()?;
        scopes.sort();
        scopes.dedup();
        let expires_at = match &body.expire_time {
            None => None,
            Some(timestamp) => {
                let expires_at = eventline_core::time::from_proto(timestamp)
                    .ok_or_else(|| Error::invalid("expire_time", "is not a valid timestamp"))?;
                if expires_at <= eventline_core::time::now() {
                    return Err(Error::invalid("expire_time", "must be in the future").into());
                }
                Some(expires_at)
            }
        };
        let mut issued = issue_key(tenant_id, scopes, None);
        issued.key.expires_at = expires_at;
        issued.key.rate_limit = RateLimit::new(body.events_per_second, body.burst)?;
        self.store
            .create_api_key(&issued.key, &principal.actor())
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::CreateApiKeyResponse {
            api_key: Some(issued.key.to_proto()),
            secret: issued.secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        let principal = self.auth.admin(request.metadata()).await?;
        let tenant_id = TenantId::parse("tenant_id", &request.into_inner().tenant_id)?;
        may_manage(&principal, tenant_id)?;
        let keys = self
            .store
            .list_api_keys(tenant_id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::ListApiKeysResponse {
            api_keys: keys.iter().map(|key| key.to_proto()).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::RevokeApiKeyResponse>, Status> {
        let principal = self.auth.admin(request.metadata()).await?;
        let key_id = request.into_inner().key_id;
        if key_id.is_empty() {
            return Err(Error::invalid("key_id", "is required").into());
        }
        let not_found = || Error::NotFound(format!("api key {key_id:?} does not exist"));
        let existing = self
            .store
            .api_key(&key_id)
            .await
            .map_err(Error::from)?
            .ok_or_else(not_found)?;
        // A key of another tenant is reported as missing, not as forbidden.
        may_manage(&principal, existing.tenant_id).map_err(|_| not_found())?;
        let revoked = self
            .store
            .revoke_api_key(&key_id, &principal.actor())
            .await
            .map_err(Error::from)?;
        self.auth.forget(&key_id);
        Ok(Response::new(v1::RevokeApiKeyResponse {
            api_key: Some(revoked.to_proto()),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        let principal = self.auth.admin(request.metadata()).await?;
        let body = request.into_inner();
        let tenant_id = match (&principal, body.tenant_id.as_str()) {
            (Principal::Operator, "") => None,
            (Principal::Key { tenant_id, .. }, "") => Some(*tenant_id),
            (_, text) => {
                let tenant_id = TenantId::parse("tenant_id", text)?;
                may_manage(&principal, tenant_id)?;
                Some(tenant_id)
            }
        };
        let limit = eventline_core::request::page_size(body.page_size)?;
        // The token is bound to the listing it continues: the tenant, or all of them.
        let scope = tenant_id.unwrap_or(TenantId(uuid::Uuid::nil()));
        let digest = cursor::filter_digest(scope, &EventFilter::default());
        let before = match body.page_token.as_str() {
            "" => None,
            token => match Cursor::decode("page_token", token, scope, &EventFilter::default())? {
                Cursor::Audit { t, i, .. } => Some((cursor::time("page_token", t)?, i)),
                _ => {
                    return Err(Error::invalid("page_token", "is not an audit-trail token").into());
                }
            },
        };
        let mut events = self
            .store
            .list_audit_events(&AuditQuery {
                tenant_id,
                before,
                limit: limit + 1,
            })
            .await
            .map_err(Error::from)?;
        let next_page_token = if events.len() > limit {
            events.truncate(limit);
            events.last().map_or_else(String::new, |last| {
                Cursor::Audit {
                    t: cursor::micros(last.occurred_at),
                    i: last.audit_id.clone(),
                    f: digest.clone(),
                }
                .encode()
            })
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListAuditEventsResponse {
            audit_events: events.iter().map(|event| event.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn delete_user(
        &self,
        request: Request<v1::DeleteUserRequest>,
    ) -> Result<Response<v1::DeleteUserResponse>, Status> {
        tenant_rpc!(self, request, delete_user_rpc)
    }

    async fn get_deletion(
        &self,
        request: Request<v1::GetDeletionRequest>,
    ) -> Result<Response<v1::GetDeletionResponse>, Status> {
        tenant_rpc!(self, request, get_deletion_rpc)
    }

    async fn get_retention(
        &self,
        request: Request<v1::GetRetentionRequest>,
    ) -> Result<Response<v1::GetRetentionResponse>, Status> {
        tenant_rpc!(self, request, get_retention_rpc)
    }

    async fn set_retention(
        &self,
        request: Request<v1::SetRetentionRequest>,
    ) -> Result<Response<v1::SetRetentionResponse>, Status> {
        tenant_rpc!(self, request, set_retention_rpc)
    }

    async fn list_quarantined(
        &self,
        request: Request<v1::ListQuarantinedRequest>,
    ) -> Result<Response<v1::ListQuarantinedResponse>, Status> {
        tenant_rpc!(self, request, list_quarantined_rpc)
    }

    async fn replay_quarantined(
        &self,
        request: Request<v1::ReplayQuarantinedRequest>,
    ) -> Result<Response<v1::ReplayQuarantinedResponse>, Status> {
        tenant_rpc!(self, request, replay_quarantined_rpc)
    }

    async fn purge_quarantined(
        &self,
        request: Request<v1::PurgeQuarantinedRequest>,
    ) -> Result<Response<v1::PurgeQuarantinedResponse>, Status> {
        tenant_rpc!(self, request, purge_quarantined_rpc)
    }

    async fn set_event_schema(
        &self,
        request: Request<v1::SetEventSchemaRequest>,
    ) -> Result<Response<v1::SetEventSchemaResponse>, Status> {
        tenant_rpc!(self, request, set_event_schema_rpc)
    }

    async fn list_event_schemas(
        &self,
        request: Request<v1::ListEventSchemasRequest>,
    ) -> Result<Response<v1::ListEventSchemasResponse>, Status> {
        tenant_rpc!(self, request, list_event_schemas_rpc)
    }

    async fn delete_event_schema(
        &self,
        request: Request<v1::DeleteEventSchemaRequest>,
    ) -> Result<Response<v1::DeleteEventSchemaResponse>, Status> {
        tenant_rpc!(self, request, delete_event_schema_rpc)
    }

    async fn create_alert_rule(
        &self,
        request: Request<v1::CreateAlertRuleRequest>,
    ) -> Result<Response<v1::CreateAlertRuleResponse>, Status> {
        tenant_rpc!(self, request, create_alert_rule_rpc)
    }

    async fn list_alerts(
        &self,
        request: Request<v1::ListAlertsRequest>,
    ) -> Result<Response<v1::ListAlertsResponse>, Status> {
        tenant_rpc!(self, request, list_alerts_rpc)
    }

    async fn get_alert(
        &self,
        request: Request<v1::GetAlertRequest>,
    ) -> Result<Response<v1::GetAlertResponse>, Status> {
        tenant_rpc!(self, request, get_alert_rpc)
    }

    async fn delete_alert_rule(
        &self,
        request: Request<v1::DeleteAlertRuleRequest>,
    ) -> Result<Response<v1::DeleteAlertRuleResponse>, Status> {
        tenant_rpc!(self, request, delete_alert_rule_rpc)
    }

    async fn list_alert_deliveries(
        &self,
        request: Request<v1::ListAlertDeliveriesRequest>,
    ) -> Result<Response<v1::ListAlertDeliveriesResponse>, Status> {
        tenant_rpc!(self, request, list_alert_deliveries_rpc)
    }

    async fn get_search_index(
        &self,
        request: Request<v1::GetSearchIndexRequest>,
    ) -> Result<Response<v1::GetSearchIndexResponse>, Status> {
        tenant_rpc!(self, request, get_search_index_rpc)
    }

    async fn set_search_index(
        &self,
        request: Request<v1::SetSearchIndexRequest>,
    ) -> Result<Response<v1::SetSearchIndexResponse>, Status> {
        tenant_rpc!(self, request, set_search_index_rpc)
    }

    async fn create_subscription(
        &self,
        request: Request<v1::CreateSubscriptionRequest>,
    ) -> Result<Response<v1::CreateSubscriptionResponse>, Status> {
        tenant_rpc!(self, request, create_subscription_rpc)
    }

    async fn list_subscriptions(
        &self,
        request: Request<v1::ListSubscriptionsRequest>,
    ) -> Result<Response<v1::ListSubscriptionsResponse>, Status> {
        tenant_rpc!(self, request, list_subscriptions_rpc)
    }

    async fn delete_subscription(
        &self,
        request: Request<v1::DeleteSubscriptionRequest>,
    ) -> Result<Response<v1::DeleteSubscriptionResponse>, Status> {
        tenant_rpc!(self, request, delete_subscription_rpc)
    }

    async fn resume_subscription(
        &self,
        request: Request<v1::ResumeSubscriptionRequest>,
    ) -> Result<Response<v1::ResumeSubscriptionResponse>, Status> {
        tenant_rpc!(self, request, resume_subscription_rpc)
    }
}
