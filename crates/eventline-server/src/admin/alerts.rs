//! AdminService's alert RPCs (README "Alerts"): rules, their state and the delivery
//! log. Each takes the admin token or an admin-scoped key of the tenant it names.

use eventline_core::{
    Error,
    alerts::{AlertRule, DeliveryQuery, MAX_RULES_PER_TENANT},
};
use eventline_proto::v1;

use super::AdminApi;
use crate::webhook::{self, WebhookSecret};

/// The rule id of ListAlertDeliveries that stands for every rule (AIP-159).
const EVERY_RULE: &str = "-";

/// Rule and delivery ids are UUIDs; anything else is refused before it reaches the
/// database (PostgreSQL text cannot even hold a NUL).
fn check_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::invalid(field, "must be an id this server issued"));
    }
    Ok(())
}

impl AdminApi {
    pub(super) async fn create_alert_rule_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::CreateAlertRuleRequest,
    ) -> Result<v1::CreateAlertRuleResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let secret = WebhookSecret::generate().expose();
        let rule = AlertRule::from_proto(tenant_id, body.rule.as_ref(), secret.clone())?;
        // The core checks the URL's shape; this is the parse the deliveries will do.
        webhook::check_url("rule.webhook_url", &rule.webhook_url, "Alerts")?;
        // Makes an unknown tenant NOT_FOUND rather than a rule no one can reach.
        self.store.retention_policy(tenant_id).await?;
        if self.store.alert_rules(tenant_id).await?.len() >= MAX_RULES_PER_TENANT {
            return Err(Error::FailedPrecondition(format!(
                "the tenant has {MAX_RULES_PER_TENANT} alert rules, the most it may have; delete one first"
            )));
        }
        self.store
            .create_alert_rule(&rule, &principal.actor())
            .await?;
        Ok(v1::CreateAlertRuleResponse {
            alert: Some(rule.to_proto()),
            webhook_secret: secret,
        })
    }

    pub(super) async fn list_alerts_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::ListAlertsRequest,
    ) -> Result<v1::ListAlertsResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let rules = self.store.alert_rules(tenant_id).await?;
        Ok(v1::ListAlertsResponse {
            alerts: rules.iter().map(AlertRule::to_proto).collect(),
        })
    }

    pub(super) async fn get_alert_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::GetAlertRequest,
    ) -> Result<v1::GetAlertResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        check_id("rule_id", &body.rule_id)?;
        let rule = self
            .store
            .alert_rule(tenant_id, &body.rule_id)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("alert rule {:?} does not exist", body.rule_id))
            })?;
        Ok(v1::GetAlertResponse {
            alert: Some(rule.to_proto()),
        })
    }

    pub(super) async fn delete_alert_rule_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::DeleteAlertRuleRequest,
    ) -> Result<v1::DeleteAlertRuleResponse, Error> {
        let (principal, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        check_id("rule_id", &body.rule_id)?;
        self.store
            .delete_alert_rule(tenant_id, &body.rule_id, &principal.actor())
            .await?;
        Ok(v1::DeleteAlertRuleResponse {})
    }

    pub(super) async fn list_alert_deliveries_rpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        body: v1::ListAlertDeliveriesRequest,
    ) -> Result<v1::ListAlertDeliveriesResponse, Error> {
        let (_, tenant_id) = self.managed_tenant(metadata, &body.tenant_id).await?;
        let limit = eventline_core::request::page_size(body.page_size)?;
        let rule_id = match body.rule_id.as_str() {
            "" => return Err(Error::invalid("rule_id", "is required (\"-\": every rule)")),
            EVERY_RULE => None,
            rule_id => {
                check_id("rule_id", rule_id)?;
                Some(rule_id.to_owned())
            }
        };
        if !body.page_token.is_empty() {
            check_id("page_token", &body.page_token)?;
        }
        let mut deliveries = self
            .store
            .alert_deliveries(&DeliveryQuery {
                tenant_id,
                rule_id,
                before: (!body.page_token.is_empty()).then_some(body.page_token),
                limit: limit + 1,
            })
            .await?;
        let next_page_token = if deliveries.len() > limit {
            deliveries.truncate(limit);
            deliveries
                .last()
                .map_or_else(String::new, |last| last.delivery_id.clone())
        } else {
            String::new()
        };
        Ok(v1::ListAlertDeliveriesResponse {
            deliveries: deliveries
                .iter()
                .map(|delivery| delivery.to_proto())
                .collect(),
            next_page_token,
        })
    }
}
