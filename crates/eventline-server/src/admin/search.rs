//! AdminService's search RPCs (README "Search"): turning a tenant's index on and off.

use eventline_core::Error;
use eventline_proto::v1;

use super::AdminApi;

impl AdminApi {
    pub(super) async fn get_search_index_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::GetSearchIndexRequest,
    ) -> Result<v1::GetSearchIndexResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let index = self.store.search_index(tenant_id).await?;
        Ok(v1::GetSearchIndexResponse {
            search_index: Some(index.to_proto()),
        })
    }

    pub(super) async fn set_search_index_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::SetSearchIndexRequest,
    ) -> Result<v1::SetSearchIndexResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let index = self
            .store
            .set_search_index(tenant_id, body.enabled, &principal.actor())
            .await?;
        Ok(v1::SetSearchIndexResponse {
            search_index: Some(index.to_proto()),
        })
    }
}
