//! Outbound streams (README "Streams"): a tenant's subscriptions of a webhook or a NATS
//! JetStream subject to its accepted events, delivered in commit order at least once.

use chrono::{DateTime, Utc};
use eventline_proto::v1;

use crate::{Error, TenantId, alerts::check_webhook_url, time};

/// Most event types one subscription may filter on.
pub const MAX_EVENT_TYPES: usize = 32;
/// Longest NATS subject, in bytes.
const MAX_SUBJECT_BYTES: usize = 256;

/// Where a subscription's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Batches POSTed to a URL, signed with the subscription's secret.
    Webhook { url: String },
    /// One JetStream message per event on a subject of the configured NATS server.
    Nats { subject: String },
}

impl Sink {
    /// The stored kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Nats { .. } => "nats",
        }
    }

    /// The stored target: the URL or the subject.
    pub fn target(&self) -> &str {
        match self {
            Self::Webhook { url } => url,
            Self::Nats { subject } => subject,
        }
    }

    /// A sink as stored.
    pub fn from_stored(kind: &str, target: String) -> Result<Self, String> {
        match kind {
            "webhook" => Ok(Self::Webhook { url: target }),
            "nats" => Ok(Self::Nats { subject: target }),
            other => Err(format!("unknown stored sink kind {other:?}")),
        }
    }
}

/// Whether a subscription is being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    Active,
    Paused,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "active" => Ok(Self::Active),
            "paused" => Ok(Self::Paused),
            other => Err(format!("unknown subscription state {other:?}")),
        }
    }
}

/// One tenant's outbound stream, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// A time-ordered UUID.
    pub subscription_id: String,
    pub tenant_id: TenantId,
    pub sink: Sink,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub state: SubscriptionState,
    pub last_error: String,
    pub events_delivered: u64,
    pub created_at: DateTime<Utc>,
    /// Every event before this commit position (sequence, event_id) is delivered.
    pub position: (u64, String),
    /// The webhook signing secret (`whsec_…`); empty for NATS. Never sent back after
    /// creation.
    pub secret: String,
}

impl Subscription {
    /// A new, active subscription from a request, starting at `position`; the caller
    /// supplies the secret of a webhook.
    pub fn from_request(
        tenant_id: TenantId,
        request: &v1::CreateSubscriptionRequest,
        position: (u64, String),
        secret: String,
    ) -> Result<Self, Error> {
        let sink = match &request.sink {
            Some(v1::create_subscription_request::Sink::Webhook(webhook)) => {
                check_webhook_url("webhook.url", &webhook.url)?;
                Sink::Webhook {
                    url: webhook.url.clone(),
                }
            }
            Some(v1::create_subscription_request::Sink::Nats(nats)) => {
                check_subject("nats.subject", &nats.subject)?;
                Sink::Nats {
                    subject: nats.subject.clone(),
                }
            }
            None => return Err(Error::invalid("sink", "must be webhook or nats")),
        };
        if request.event_types.len() > MAX_EVENT_TYPES {
            return Err(Error::invalid(
                "event_types",
                format!("must hold at most {MAX_EVENT_TYPES} types"),
            ));
        }
        let mut event_types = Vec::with_capacity(request.event_types.len());
        for (index, event_type) in request.event_types.iter().enumerate() {
            event_types.push(crate::alerts::required_type(
                &format!("event_types[{index}]"),
                event_type,
            )?);
        }
        event_types.sort();
        event_types.dedup();
        let secret = match sink {
            Sink::Webhook { .. } => secret,
            Sink::Nats { .. } => String::new(),
        };
        Ok(Self {
            subscription_id: uuid::Uuid::now_v7().to_string(),
            tenant_id,
            sink,
            event_types,
            state: SubscriptionState::Active,
            last_error: String::new(),
            events_delivered: 0,
            created_at: time::now(),
            position,
            secret,
        })
    }

    /// Whether an event of `event_type` goes to this subscription.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self
                .event_types
                .binary_search_by(|wanted| wanted.as_str().cmp(event_type))
                .is_ok()
    }

    /// The API message (without the secret).
    pub fn to_proto(&self) -> v1::Subscription {
        v1::Subscription {
            subscription_id: self.subscription_id.clone(),
            tenant_id: self.tenant_id.to_string(),
            sink: Some(match &self.sink {
                Sink::Webhook { url } => {
                    v1::subscription::Sink::Webhook(v1::WebhookSink { url: url.clone() })
                }
                Sink::Nats { subject } => v1::subscription::Sink::Nats(v1::NatsSink {
                    subject: subject.clone(),
                }),
            }),
            event_types: self.event_types.clone(),
            state: match self.state {
                SubscriptionState::Active => v1::SubscriptionState::Active,
                SubscriptionState::Paused => v1::SubscriptionState::Paused,
            } as i32,
            last_error: self.last_error.clone(),
            events_delivered: self.events_delivered,
            create_time: Some(time::to_proto(self.created_at)),
        }
    }
}

/// A NATS subject to publish to: dot-separated tokens of printable ASCII, no wildcards.
fn check_subject(field: &str, subject: &str) -> Result<(), Error> {
    if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {MAX_SUBJECT_BYTES} bytes"),
        ));
    }
    let token_ok = |token: &str| {
        !token.is_empty()
            && token != "*"
            && token != ">"
            && token.bytes().all(|byte| byte.is_ascii_graphic())
    };
    if !subject.split('.').all(token_ok) {
        return Err(Error::invalid(
            field,
            "must be dot-separated tokens of printable ASCII without wildcards, such as eventline.acme.events",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(sink: v1::create_subscription_request::Sink) -> v1::CreateSubscriptionRequest {
        v1::CreateSubscriptionRequest {
            sink: Some(sink),
            event_types: vec!["signup".into(), "buy".into(), "signup".into()],
            ..Default::default()
        }
    }

    #[test]
    fn requests_become_subscriptions_and_bad_fields_are_named() {
        let tenant = TenantId(uuid::Uuid::now_v7());
        let webhook = v1::create_subscription_request::Sink::Webhook(v1::WebhookSink {
            url: "https://hooks.example.com/x".into(),
        });
        let made =
            Subscription::from_request(tenant, &request(webhook), (0, String::new()), "s".into())
                .unwrap();
        assert_eq!(made.event_types, ["buy", "signup"]);
        assert!(made.wants("buy") && !made.wants("view"));
        assert_eq!(made.secret, "s");
        let nats = v1::create_subscription_request::Sink::Nats(v1::NatsSink {
            subject: "eventline.acme".into(),
        });
        let made =
            Subscription::from_request(tenant, &request(nats), (0, String::new()), "s".into())
                .unwrap();
        assert!(made.secret.is_empty(), "NATS has no signing secret");

        let cases = [
            (
                v1::create_subscription_request::Sink::Nats(v1::NatsSink {
                    subject: "a.*.b".into(),
                }),
                "nats.subject",
            ),
            (
                v1::create_subscription_request::Sink::Webhook(v1::WebhookSink {
                    url: "ftp://x".into(),
                }),
                "webhook.url",
            ),
        ];
        for (sink, field) in cases {
            let error =
                Subscription::from_request(tenant, &request(sink), (0, String::new()), "s".into())
                    .unwrap_err();
            assert!(error.to_string().contains(field), "{error}");
        }
        let none = v1::CreateSubscriptionRequest::default();
        let error =
            Subscription::from_request(tenant, &none, (0, String::new()), "s".into()).unwrap_err();
        assert!(error.to_string().contains("sink"), "{error}");
    }
}
