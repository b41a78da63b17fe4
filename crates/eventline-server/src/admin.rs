//! AdminService: tenants and API keys. The operator (admin token) manages everything; an
//! admin-scoped key manages only its own tenant's keys.

use eventline_core::{Error, Scope, TenantId, admin::validate_tenant_name};
use eventline_proto::v1::{self, admin_service_server::AdminService};
use eventline_store::Store;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Principal, issue_key};

/// The AdminService implementation.
#[derive(Debug, Clone)]
pub struct AdminApi {
    auth: Authenticator,
    store: Arc<dyn Store>,
}

impl AdminApi {
    /// A service over `store`.
    pub fn new(auth: Authenticator, store: Arc<dyn Store>) -> Self {
        Self { auth, store }
    }
}

fn operator_only(principal: Principal, what: &str) -> Result<(), Error> {
    match principal {
        Principal::Operator => Ok(()),
        Principal::Key { .. } => Err(Error::PermissionDenied(format!(
            "{what} needs the admin token, not an API key"
        ))),
    }
}

fn may_manage(principal: Principal, tenant_id: TenantId) -> Result<(), Error> {
    match principal {
        Principal::Operator => Ok(()),
        Principal::Key { tenant_id: own } if own == tenant_id => Ok(()),
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
        operator_only(self.auth.admin(request.metadata()).await?, "CreateTenant")?;
        let name = request.into_inner().name;
        validate_tenant_name("name", &name)?;
        let tenant = self.store.create_tenant(&name).await.map_err(Error::from)?;
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
            .filter(|tenant| may_manage(principal, tenant.tenant_id).is_ok())
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
        may_manage(principal, tenant_id)?;
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
        let issued = issue_key(tenant_id, scopes, None);
        self.store
            .create_api_key(&issued.key)
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
        may_manage(principal, tenant_id)?;
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
        may_manage(principal, existing.tenant_id).map_err(|_| not_found())?;
        let revoked = self
            .store
            .revoke_api_key(&key_id)
            .await
            .map_err(Error::from)?;
        self.auth.forget(&key_id);
        Ok(Response::new(v1::RevokeApiKeyResponse {
            api_key: Some(revoked.to_proto()),
        }))
    }
}
