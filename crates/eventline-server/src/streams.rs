//! Outbound streams' dispatcher (README "Streams"): every `streams.interval_ms` it
//! leases each tenant's active subscriptions (one replica at a time delivers one), reads
//! their next events in commit order, delivers them to the webhook or the NATS JetStream
//! subject, and stores the position reached once they are acknowledged. Delivery is at
//! least once: a crash between the acknowledgement and that store delivers the batch
//! again, with the same event ids (and, for NATS, the same Nats-Msg-Id).

use std::{sync::Arc, time::Duration};

use eventline_core::{
    Event,
    query::{CommittedQuery, EventFilter},
    streams::{Sink, Subscription},
};
use eventline_store::{Store, StoreError};
use tokio::task::JoinHandle;

use crate::webhook::{self, RetryPolicy, WebhookClient, WebhookMessage, WebhookSecret};

/// What a lease adds to the longest a batch can take (every attempt timing out after its
/// longest backoff): a lease never runs out while its batch is still being delivered, so
/// two replicas never deliver one subscription at once. A replica renews its leases every
/// pass and gives them up when it stops; one that crashes holds them this long.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Batches one subscription may deliver in one pass before the next one's turn.
const MAX_BATCHES_PER_PASS: usize = 20;

/// The dispatcher's settings.
#[derive(Debug, Clone)]
pub(crate) struct StreamsTask {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) interval: Duration,
    pub(crate) batch_events: usize,
    /// The NATS server of NATS subscriptions (`streams.nats_url`).
    pub(crate) nats_url: Option<String>,
    pub(crate) policy: RetryPolicy,
}

/// Every counter at zero, so `increase()` sees the first one.
pub(crate) fn register_metrics() {
    metrics::counter!("eventline_stream_events_delivered_total").absolute(0);
    metrics::counter!("eventline_stream_batches_failed_total").absolute(0);
    metrics::counter!("eventline_stream_subscriptions_paused_total").absolute(0);
}

/// The connections a dispatcher keeps between passes.
struct Sinks {
    http: WebhookClient,
    nats: Option<async_nats::jetstream::Context>,
}

/// A running dispatcher.
pub(crate) struct StreamsHandle {
    task: JoinHandle<()>,
    store: Arc<dyn Store>,
    owner: String,
}

impl StreamsHandle {
    /// Stops delivering (a batch in flight is delivered again by whoever goes on) and
    /// gives this replica's leases up, so that another replica, or this one restarted,
    /// goes on at once.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let Ok(tenants) = self.store.list_tenants().await else {
            return;
        };
        for tenant in tenants {
            if let Err(error) = self
                .store
                .release_subscriptions(tenant.tenant_id, &self.owner)
                .await
            {
                tracing::warn!(error = %error, "giving up stream leases failed; they run out");
            }
        }
    }
}

impl StreamsTask {
    /// Runs until stopped; `None` when the interval is 0 (turned off).
    pub(crate) fn spawn(self) -> Option<StreamsHandle> {
        if self.interval.is_zero() {
            return None;
        }
        // This replica's name in the leases it takes.
        let owner = uuid::Uuid::now_v7().to_string();
        let store = Arc::clone(&self.store);
        let task_owner = owner.clone();
        let task = tokio::spawn(async move {
            let owner = task_owner;
            let mut sinks = Sinks {
                http: WebhookClient::new(),
                nats: None,
            };
            loop {
                if let Err(error) = self.pass(&owner, &mut sinks).await {
                    tracing::warn!(error = %error, "delivering streams failed; retrying later");
                }
                tokio::time::sleep(self.interval).await;
            }
        });
        Some(StreamsHandle { task, store, owner })
    }

    /// How long a lease lasts: see [`LEASE_MARGIN`].
    fn lease(&self) -> Duration {
        let attempt = self.policy.attempt_timeout + self.policy.max_backoff;
        attempt * self.policy.max_attempts.max(1) + LEASE_MARGIN
    }

    async fn pass(&self, owner: &str, sinks: &mut Sinks) -> Result<(), StoreError> {
        for tenant in self.store.list_tenants().await? {
            let now = chrono::Utc::now();
            let until = now + self.lease();
            let leased = self
                .store
                .lease_subscriptions(tenant.tenant_id, owner, now, until)
                .await?;
            for subscription in leased {
                self.drain(owner, subscription, sinks).await?;
            }
        }
        Ok(())
    }

    /// Delivers the subscription's next batches until it is caught up, it fails (then it
    /// is paused), or it has had its share of this pass.
    async fn drain(
        &self,
        owner: &str,
        mut subscription: Subscription,
        sinks: &mut Sinks,
    ) -> Result<(), StoreError> {
        let tenant_id = subscription.tenant_id;
        // One type is filtered by the store; several, here.
        let filter = EventFilter {
            event_type: match subscription.event_types.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
            ..EventFilter::default()
        };
        for _ in 0..MAX_BATCHES_PER_PASS {
            let horizon = self.store.commit_horizon(tenant_id).await?;
            let read = self
                .store
                .list_committed(&CommittedQuery {
                    tenant_id,
                    filter: filter.clone(),
                    min_timestamp: None,
                    after: subscription.position.clone(),
                    horizon,
                    limit: self.batch_events,
                })
                .await?;
            let Some((sequence, last)) = read.last() else {
                return Ok(());
            };
            let to = (*sequence, last.event_id.clone());
            let events: Vec<&Event> = read
                .iter()
                .map(|(_, event)| event)
                .filter(|event| subscription.wants(&event.event_type))
                .collect();
            if !events.is_empty()
                && let Err(error) = self.deliver(&subscription, &events, &to, sinks).await
            {
                metrics::counter!("eventline_stream_batches_failed_total").increment(1);
                metrics::counter!("eventline_stream_subscriptions_paused_total").increment(1);
                tracing::warn!(
                    subscription_id = %subscription.subscription_id,
                    tenant_id = %tenant_id,
                    error = %error,
                    "a stream's batch kept failing; the subscription is paused"
                );
                return self.store.pause_subscription(&subscription, &error).await;
            }
            let delivered = events.len() as u64;
            if !self
                .store
                .advance_subscription(&subscription, owner, &to, delivered)
                .await?
            {
                // Deleted, or leased elsewhere after ours ran out: that replica goes on.
                return Ok(());
            }
            metrics::counter!("eventline_stream_events_delivered_total").increment(delivered);
            subscription.position = to;
            if read.len() < self.batch_events {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Delivers one batch, retrying as the policy says; the error of the last attempt
    /// when it never got through.
    async fn deliver(
        &self,
        subscription: &Subscription,
        events: &[&Event],
        to: &(u64, String),
        sinks: &mut Sinks,
    ) -> Result<(), String> {
        let json: Vec<serde_json::Value> = events
            .iter()
            .map(|event| serde_json::to_value(event.to_proto()).unwrap_or_default())
            .collect();
        match &subscription.sink {
            Sink::Webhook { url } => {
                let secret = WebhookSecret::parse(&subscription.secret)?;
                let body = serde_json::to_vec(&serde_json::json!({
                    "subscription_id": subscription.subscription_id,
                    "events": json,
                }))
                .map_err(|error| error.to_string())?;
                // The same batch keeps its id on every attempt and after a restart.
                let id = format!("{}.{}.{}", subscription.subscription_id, to.0, to.1);
                let message = WebhookMessage {
                    url,
                    id: &id,
                    body: &body,
                };
                let delivery = webhook::deliver(&sinks.http, &secret, &message, &self.policy).await;
                match delivery.outcome.error() {
                    None => Ok(()),
                    Some(error) => Err(format!(
                        "webhook failed after {} attempts: {error}",
                        delivery.attempts
                    )),
                }
            }
            Sink::Nats { subject } => {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.publish(sinks, subject, events, &json).await {
                        Ok(()) => return Ok(()),
                        Err(error) if attempt >= self.policy.max_attempts.max(1) => {
                            return Err(format!("NATS failed after {attempt} attempts: {error}"));
                        }
                        Err(error) => {
                            tracing::debug!(attempt, error = %error, "NATS publish failed; retrying");
                            // A broken connection is made again on the next attempt.
                            sinks.nats = None;
                            tokio::time::sleep(self.policy.wait(attempt, None)).await;
                        }
                    }
                }
            }
        }
    }

    /// Publishes one message per event with its id as Nats-Msg-Id, then waits for
    /// JetStream to acknowledge every one.
    async fn publish(
        &self,
        sinks: &mut Sinks,
        subject: &str,
        events: &[&Event],
        json: &[serde_json::Value],
    ) -> Result<(), String> {
        let Some(url) = &self.nats_url else {
            return Err("the server has no streams.nats_url to publish to".into());
        };
        if sinks.nats.is_none() {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(self.policy.attempt_timeout)
                .connect(url.as_str())
                .await
                .map_err(|error| format!("connecting to {url}: {error}"))?;
            sinks.nats = Some(async_nats::jetstream::new(client));
        }
        let context = sinks.nats.as_ref().expect("connected above");
        let mut acks = Vec::with_capacity(events.len());
        for (event, json) in events.iter().zip(json) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event.event_id.as_str());
            let payload = serde_json::to_vec(json).map_err(|error| error.to_string())?;
            let ack = context
                .publish_with_headers(subject.to_owned(), headers, payload.into())
                .await
                .map_err(|error| format!("publishing to {subject}: {error}"))?;
            acks.push(ack);
        }
        for ack in acks {
            tokio::time::timeout(self.policy.attempt_timeout, ack)
                .await
                .map_err(|_| format!("no JetStream acknowledgement on {subject} in time"))?
                .map_err(|error| format!("JetStream refused a message on {subject}: {error}"))?;
        }
        Ok(())
    }
}
