//! [`MeteredStore`]'s alert rules: each operation timed and traced like the rest.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventline_core::{
    Actor, TenantId,
    alerts::{AlertDelivery, AlertRule, DeliveryQuery, DeliveryResult, Evaluation},
};
use eventline_store::{Alerts, StoreError};

use crate::metered_store::MeteredStore;

#[async_trait]
impl Alerts for MeteredStore {
    async fn create_alert_rule(&self, rule: &AlertRule, actor: &Actor) -> Result<(), StoreError> {
        self.timed(
            "create_alert_rule",
            self.inner.create_alert_rule(rule, actor),
        )
        .await
    }

    async fn alert_rules(&self, tenant_id: TenantId) -> Result<Vec<AlertRule>, StoreError> {
        self.timed("alert_rules", self.inner.alert_rules(tenant_id))
            .await
    }

    async fn alert_rule(
        &self,
        tenant_id: TenantId,
        rule_id: &str,
    ) -> Result<Option<AlertRule>, StoreError> {
        self.timed("alert_rule", self.inner.alert_rule(tenant_id, rule_id))
            .await
    }

    async fn delete_alert_rule(
        &self,
        tenant_id: TenantId,
        rule_id: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let inner = self.inner.delete_alert_rule(tenant_id, rule_id, actor);
        self.timed("delete_alert_rule", inner).await
    }

    async fn record_alert_evaluation(
        &self,
        rule: &AlertRule,
        evaluation: &Evaluation,
    ) -> Result<Option<AlertDelivery>, StoreError> {
        let inner = self.inner.record_alert_evaluation(rule, evaluation);
        self.timed("record_alert_evaluation", inner).await
    }

    async fn finish_alert_delivery(
        &self,
        tenant_id: TenantId,
        delivery_id: &str,
        result: &DeliveryResult,
    ) -> Result<(), StoreError> {
        let inner = self
            .inner
            .finish_alert_delivery(tenant_id, delivery_id, result);
        self.timed("finish_alert_delivery", inner).await
    }

    async fn claim_stale_deliveries(
        &self,
        tenant_id: TenantId,
        claimed_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AlertDelivery>, StoreError> {
        let inner = self
            .inner
            .claim_stale_deliveries(tenant_id, claimed_before, now);
        self.timed("claim_stale_deliveries", inner).await
    }

    async fn alert_deliveries(
        &self,
        query: &DeliveryQuery,
    ) -> Result<Vec<AlertDelivery>, StoreError> {
        self.timed("alert_deliveries", self.inner.alert_deliveries(query))
            .await
    }
}
