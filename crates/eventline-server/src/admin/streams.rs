//! AdminService's outbound streams RPCs (README "Streams").

use eventline_core::{
    Error,
    streams::{Sink, Subscription},
};
use eventline_proto::v1;

use super::AdminApi;
use crate::webhook::{self, WebhookSecret};

impl AdminApi {
    pub(super) async fn create_subscription_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::CreateSubscriptionRequest,
    ) -> Result<v1::CreateSubscriptionResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        // From the tenant's next commit, or from its first with replay_history.
        let position = if body.replay_history {
            (0, String::new())
        } else {
            (self.store.commit_horizon(tenant_id).await?, String::new())
        };
        let secret = WebhookSecret::generate().expose();
        let subscription = Subscription::from_request(tenant_id, &body, position, secret)?;
        if let Sink::Webhook { url } = &subscription.sink {
            webhook::check_url("webhook.url", url, "Streams")?;
        }
        self.store
            .create_subscription(&subscription, &principal.actor())
            .await?;
        Ok(v1::CreateSubscriptionResponse {
            subscription: Some(subscription.to_proto()),
            webhook_secret: subscription.secret.clone(),
        })
    }

    pub(super) async fn list_subscriptions_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::ListSubscriptionsRequest,
    ) -> Result<v1::ListSubscriptionsResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let subscriptions = self.store.list_subscriptions(tenant_id).await?;
        Ok(v1::ListSubscriptionsResponse {
            subscriptions: subscriptions.iter().map(Subscription::to_proto).collect(),
        })
    }

    pub(super) async fn delete_subscription_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::DeleteSubscriptionRequest,
    ) -> Result<v1::DeleteSubscriptionResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        if !self
            .store
            .delete_subscription(tenant_id, &body.subscription_id, &principal.actor())
            .await?
        {
            return Err(missing(&body.subscription_id));
        }
        Ok(v1::DeleteSubscriptionResponse {})
    }

    pub(super) async fn resume_subscription_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::ResumeSubscriptionRequest,
    ) -> Result<v1::ResumeSubscriptionResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let subscription = self
            .store
            .resume_subscription(tenant_id, &body.subscription_id, &principal.actor())
            .await?
            .ok_or_else(|| missing(&body.subscription_id))?;
        Ok(v1::ResumeSubscriptionResponse {
            subscription: Some(subscription.to_proto()),
        })
    }
}

fn missing(subscription_id: &str) -> Error {
    Error::NotFound(format!("subscription {subscription_id:?} does not exist"))
}
