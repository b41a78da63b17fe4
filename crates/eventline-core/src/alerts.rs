//! Per-tenant alert rules (README "Alerts"): what a rule watches, its state, the
//! notifications its changes send, and the pure arithmetic of an evaluation (the
//! comparison, the ratio, the spike score). The semantics are written in
//! `proto/eventline/v1/alerts.proto`; the store keeps these types, the server counts
//! and delivers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use eventline_proto::v1;
use uuid::Uuid;

use crate::{Error, TenantId, limits, time};

/// Rules a tenant may have: each is evaluated every minute.
pub const MAX_RULES_PER_TENANT: usize = 100;
/// Deliveries kept per rule; older ones are dropped as new ones are recorded.
pub const MAX_DELIVERIES_PER_RULE: usize = 1_000;
/// The longest webhook URL.
pub const MAX_URL_CHARS: usize = 2_048;
/// Longest window: a day.
pub const MAX_WINDOW_SECONDS: u32 = 86_400;
/// Longest span a spike reads: its window and baseline together.
pub const MAX_SPIKE_SPAN_SECONDS: u64 = 8 * 86_400;
/// Spike defaults, taken when a field is 0.
pub const DEFAULT_BASELINE_WINDOWS: u32 = 12;
pub const DEFAULT_SENSITIVITY: f64 = 3.5;
pub const DEFAULT_MIN_COUNT: u64 = 10;
/// Scales a median absolute deviation to a standard deviation of normal data.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// How a value is compared to a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Comparison {
    /// Whether `value <op> threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Greater => value > threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
        }
    }

    /// The operator, as stored and as notifications show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
        }
    }

    /// Parses a stored operator.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            ">" => Ok(Self::Greater),
            ">=" => Ok(Self::GreaterOrEqual),
            "<" => Ok(Self::Less),
            "<=" => Ok(Self::LessOrEqual),
            other => Err(format!("unknown comparison {other:?}")),
        }
    }

    fn from_proto(field: &str, value: i32) -> Result<Self, Error> {
        match v1::Comparison::try_from(value) {
            Ok(v1::Comparison::GreaterThan) => Ok(Self::Greater),
            Ok(v1::Comparison::GreaterThanOrEqual) => Ok(Self::GreaterOrEqual),
            Ok(v1::Comparison::LessThan) => Ok(Self::Less),
            Ok(v1::Comparison::LessThanOrEqual) => Ok(Self::LessOrEqual),
            _ => Err(Error::invalid(
                field,
                "must be one of COMPARISON_GREATER_THAN, _GREATER_THAN_OR_EQUAL, _LESS_THAN, _LESS_THAN_OR_EQUAL",
            )),
        }
    }

    fn to_proto(self) -> v1::Comparison {
        match self {
            Self::Greater => v1::Comparison::GreaterThan,
            Self::GreaterOrEqual => v1::Comparison::GreaterThanOrEqual,
            Self::Less => v1::Comparison::LessThan,
            Self::LessOrEqual => v1::Comparison::LessThanOrEqual,
        }
    }
}

/// What makes a rule fire.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertCondition {
    /// The window's count (of `event_type`, or of every event) against a threshold.
    Threshold {
        event_type: Option<String>,
        comparison: Comparison,
        threshold: f64,
    },
    /// count(numerator) / count(denominator, or every event) against a threshold; no
    /// ratio below `min_denominator` (at least 1).
    Ratio {
        numerator_event_type: String,
        denominator_event_type: Option<String>,
        comparison: Comparison,
        threshold: f64,
        min_denominator: u64,
    },
    /// One type's count against the median and MAD of the `baseline_windows` windows
    /// before it (alerts.proto, SpikeCondition).
    Spike {
        event_type: String,
        baseline_windows: u32,
        sensitivity: f64,
        min_count: u64,
    },
}

impl AlertCondition {
    /// The kind's name, as stored and as notifications show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Threshold { .. } => "threshold",
            Self::Ratio { .. } => "ratio",
            Self::Spike { .. } => "spike",
        }
    }

    fn from_proto(
        condition: Option<&v1::alert_rule::Condition>,
        window_seconds: u32,
    ) -> Result<Self, Error> {
        use v1::alert_rule::Condition;
        match condition {
            None => Err(Error::invalid(
                "rule.condition",
                "one of threshold, ratio or spike is required",
            )),
            Some(Condition::Threshold(threshold)) => Ok(Self::Threshold {
                event_type: optional_type("rule.threshold.event_type", &threshold.event_type)?,
                comparison: Comparison::from_proto(
                    "rule.threshold.comparison",
                    threshold.comparison,
                )?,
                threshold: check_threshold("rule.threshold.threshold", threshold.threshold)?,
            }),
            Some(Condition::Ratio(ratio)) => Ok(Self::Ratio {
                numerator_event_type: required_type(
                    "rule.ratio.numerator_event_type",
                    &ratio.numerator_event_type,
                )?,
                denominator_event_type: optional_type(
                    "rule.ratio.denominator_event_type",
                    &ratio.denominator_event_type,
                )?,
                comparison: Comparison::from_proto("rule.ratio.comparison", ratio.comparison)?,
                threshold: check_threshold("rule.ratio.threshold", ratio.threshold)?,
                min_denominator: ratio.min_denominator.max(1),
            }),
            Some(Condition::Spike(spike)) => spike_from_proto(spike, window_seconds),
        }
    }

    fn to_proto(&self) -> v1::alert_rule::Condition {
        use v1::alert_rule::Condition;
        match self {
            Self::Threshold {
                event_type,
                comparison,
                threshold,
            } => Condition::Threshold(v1::ThresholdCondition {
                event_type: event_type.clone().unwrap_or_default(),
                comparison: comparison.to_proto() as i32,
                threshold: *threshold,
            }),
            Self::Ratio {
                numerator_event_type,
                denominator_event_type,
                comparison,
                threshold,
                min_denominator,
            } => Condition::Ratio(v1::RatioCondition {
                numerator_event_type: numerator_event_type.clone(),
                denominator_event_type: denominator_event_type.clone().unwrap_or_default(),
                comparison: comparison.to_proto() as i32,
                threshold: *threshold,
                min_denominator: *min_denominator,
            }),
            Self::Spike {
                event_type,
                baseline_windows,
                sensitivity,
                min_count,
            } => Condition::Spike(v1::SpikeCondition {
                event_type: event_type.clone(),
                baseline_windows: *baseline_windows,
                sensitivity: *sensitivity,
                min_count: *min_count,
            }),
        }
    }
}

fn spike_from_proto(
    spike: &v1::SpikeCondition,
    window_seconds: u32,
) -> Result<AlertCondition, Error> {
    let baseline_windows = match spike.baseline_windows {
        0 => DEFAULT_BASELINE_WINDOWS,
        windows => windows,
    };
    if !(3..=100).contains(&baseline_windows) {
        return Err(Error::invalid(
            "rule.spike.baseline_windows",
            format!("must be 3 to 100 (0: {DEFAULT_BASELINE_WINDOWS}), got {baseline_windows}"),
        ));
    }
    let span = u64::from(window_seconds) * (u64::from(baseline_windows) + 1);
    if span > MAX_SPIKE_SPAN_SECONDS {
        return Err(Error::invalid(
            "rule.spike.baseline_windows",
            format!(
                "window_seconds × (baseline_windows + 1) must be at most {MAX_SPIKE_SPAN_SECONDS} (8 days), got {span}"
            ),
        ));
    }
    let sensitivity = if spike.sensitivity == 0.0 {
        DEFAULT_SENSITIVITY
    } else {
        spike.sensitivity
    };
    if !sensitivity.is_finite() || sensitivity <= 0.0 || sensitivity > 1000.0 {
        return Err(Error::invalid(
            "rule.spike.sensitivity",
            "must be finite, above 0 and at most 1000",
        ));
    }
    Ok(AlertCondition::Spike {
        event_type: required_type("rule.spike.event_type", &spike.event_type)?,
        baseline_windows,
        sensitivity,
        min_count: match spike.min_count {
            0 => DEFAULT_MIN_COUNT,
            count => count,
        },
    })
}

fn check_threshold(field: &str, threshold: f64) -> Result<f64, Error> {
    if !threshold.is_finite() || threshold < 0.0 {
        return Err(Error::invalid(field, "must be finite and at least 0"));
    }
    Ok(threshold)
}

pub(crate) fn required_type(field: &str, event_type: &str) -> Result<String, Error> {
    optional_type(field, event_type)?.ok_or_else(|| Error::invalid(field, "is required"))
}

fn optional_type(field: &str, event_type: &str) -> Result<Option<String>, Error> {
    if event_type.is_empty() {
        return Ok(None);
    }
    let chars = event_type.chars().count();
    if chars > limits::MAX_EVENT_TYPE_CHARS || event_type.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!(
                "must be 1 to {} characters without control characters",
                limits::MAX_EVENT_TYPE_CHARS
            ),
        ));
    }
    Ok(Some(event_type.to_owned()))
}

/// Checks a webhook URL's shape: http or https, a host, no spaces or control
/// characters. The server parses it fully before storing it.
pub fn check_webhook_url(field: &str, url: &str) -> Result<(), Error> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| Error::invalid(field, "must be an http:// or https:// URL"))?;
    if url.chars().count() > MAX_URL_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_URL_CHARS} characters"),
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            "must not hold spaces or control characters",
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(Error::invalid(field, "must name a host"));
    }
    Ok(())
}

/// Whether a rule's condition held at its last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Resolved,
    Firing,
}

impl AlertState {
    /// The name stored in the database and sent in notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::Firing => "firing",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "resolved" => Ok(Self::Resolved),
            "firing" => Ok(Self::Firing),
            other => Err(format!("unknown alert state {other:?}")),
        }
    }

    /// The API enum.
    pub fn to_proto(self) -> v1::AlertState {
        match self {
            Self::Resolved => v1::AlertState::Resolved,
            Self::Firing => v1::AlertState::Firing,
        }
    }
}

/// A rule's state, kept beside it and changed by evaluations.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertStatus {
    pub state: AlertState,
    /// The end of the window whose evaluation changed the state, or the creation.
    pub since: DateTime<Utc>,
    /// The last evaluation's value; `None` before the first or without a ratio.
    pub last_value: Option<f64>,
    /// The end of the last window evaluated (a whole minute).
    pub evaluated_until: Option<DateTime<Utc>>,
}

/// A tenant's alert rule with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub tenant_id: TenantId,
    /// A time-ordered UUID.
    pub rule_id: String,
    pub name: String,
    pub window: Duration,
    pub condition: AlertCondition,
    pub webhook_url: String,
    /// The signing secret as `whsec_<base64>`.
    pub webhook_secret: String,
    pub created_at: DateTime<Utc>,
    pub status: AlertStatus,
}

impl AlertRule {
    /// Validates the API message into a new, resolved rule signed with `webhook_secret`.
    pub fn from_proto(
        tenant_id: TenantId,
        rule: Option<&v1::AlertRule>,
        webhook_secret: String,
    ) -> Result<Self, Error> {
        let rule = rule.ok_or_else(|| Error::invalid("rule", "is required"))?;
        let name_chars = rule.name.chars().count();
        if name_chars == 0
            || name_chars > limits::MAX_EVENT_TYPE_CHARS
            || rule.name.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "rule.name",
                format!(
                    "must be 1 to {} characters without control characters, got {name_chars}",
                    limits::MAX_EVENT_TYPE_CHARS
                ),
            ));
        }
        let window_seconds = rule.window_seconds;
        if !(60..=MAX_WINDOW_SECONDS).contains(&window_seconds)
            || !window_seconds.is_multiple_of(60)
        {
            return Err(Error::invalid(
                "rule.window_seconds",
                format!(
                    "must be a whole number of minutes from 60 to {MAX_WINDOW_SECONDS}, got {window_seconds}"
                ),
            ));
        }
        let condition = AlertCondition::from_proto(rule.condition.as_ref(), window_seconds)?;
        check_webhook_url("rule.webhook_url", &rule.webhook_url)?;
        let created_at = time::now();
        Ok(Self {
            tenant_id,
            rule_id: Uuid::now_v7().to_string(),
            name: rule.name.clone(),
            window: Duration::from_secs(u64::from(window_seconds)),
            condition,
            webhook_url: rule.webhook_url.clone(),
            webhook_secret,
            created_at,
            status: AlertStatus {
                state: AlertState::Resolved,
                since: created_at,
                last_value: None,
                evaluated_until: None,
            },
        })
    }

    /// Converts to the API message (never with the secret).
    pub fn to_proto(&self) -> v1::Alert {
        v1::Alert {
            rule: Some(v1::AlertRule {
                rule_id: self.rule_id.clone(),
                tenant_id: self.tenant_id.to_string(),
                name: self.name.clone(),
                window_seconds: self.window_seconds(),
                condition: Some(self.condition.to_proto()),
                webhook_url: self.webhook_url.clone(),
                create_time: Some(time::to_proto(self.created_at)),
            }),
            state: self.status.state.to_proto() as i32,
            state_since: Some(time::to_proto(self.status.since)),
            last_value: self.status.last_value,
            last_evaluation_time: self.status.evaluated_until.map(time::to_proto),
        }
    }

    /// The window in seconds (validated to fit).
    pub fn window_seconds(&self) -> u32 {
        u32::try_from(self.window.as_secs()).unwrap_or(u32::MAX)
    }
}

/// What one evaluation of a rule found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The end of the window evaluated (a whole minute).
    pub window_end: DateTime<Utc>,
    pub value: Option<f64>,
    pub state: AlertState,
}

/// The ratio of two counts; `None` below `min_denominator` (and always for 0).
pub fn ratio(numerator: u64, denominator: u64, min_denominator: u64) -> Option<f64> {
    if denominator == 0 || denominator < min_denominator {
        return None;
    }
    Some(numerator as f64 / denominator as f64)
}

/// How far a count lies above its baseline (alerts.proto, SpikeCondition).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeScore {
    pub median: f64,
    /// The median absolute deviation from the median.
    pub mad: f64,
    /// The scale: max(1.4826 × MAD, √max(median, 1)).
    pub scale: f64,
    /// (value − median) / scale.
    pub score: f64,
}

/// Scores `value` against `baseline` (at least one count).
pub fn spike_score(value: u64, baseline: &[u64]) -> SpikeScore {
    let counts: Vec<f64> = baseline.iter().map(|count| *count as f64).collect();
    let middle = median_of(counts.clone());
    let mad = median_of(counts.iter().map(|count| (count - middle).abs()).collect());
    let scale = (MAD_TO_SIGMA * mad).max(middle.max(1.0).sqrt());
    SpikeScore {
        median: middle,
        mad,
        scale,
        score: (value as f64 - middle) / scale,
    }
}

fn median_of(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// How a notification's delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryOutcome {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown delivery outcome {other:?}")),
        }
    }

    fn to_proto(self) -> v1::AlertDeliveryOutcome {
        match self {
            Self::Pending => v1::AlertDeliveryOutcome::Pending,
            Self::Delivered => v1::AlertDeliveryOutcome::Delivered,
            Self::Failed => v1::AlertDeliveryOutcome::Failed,
        }
    }
}

/// One notification of a rule's change of state, and how sending it went.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDelivery {
    /// A time-ordered UUID; also the `webhook-id`.
    pub delivery_id: String,
    pub tenant_id: TenantId,
    pub rule_id: String,
    /// The state the rule changed to.
    pub transition: AlertState,
    pub value: Option<f64>,
    pub outcome: DeliveryOutcome,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The end of the window whose evaluation changed the state.
    pub window_end: DateTime<Utc>,
}

impl AlertDelivery {
    /// A pending delivery of `rule`'s change to `evaluation.state`, recorded now.
    pub fn pending(rule: &AlertRule, evaluation: &Evaluation) -> Self {
        Self {
            delivery_id: Uuid::now_v7().to_string(),
            tenant_id: rule.tenant_id,
            rule_id: rule.rule_id.clone(),
            transition: evaluation.state,
            value: evaluation.value,
            outcome: DeliveryOutcome::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            created_at: time::now(),
            finished_at: None,
            window_end: evaluation.window_end,
        }
    }

    /// The evaluation that made it, as a resend rebuilds its notification.
    pub fn evaluation(&self) -> Evaluation {
        Evaluation {
            window_end: self.window_end,
            value: self.value,
            state: self.transition,
        }
    }

    /// Converts to the API message.
    pub fn to_proto(&self) -> v1::AlertDelivery {
        v1::AlertDelivery {
            delivery_id: self.delivery_id.clone(),
            rule_id: self.rule_id.clone(),
            transition: self.transition.to_proto() as i32,
            value: self.value,
            outcome: self.outcome.to_proto() as i32,
            attempts: self.attempts,
            last_http_status: self.last_status.map_or(0, u32::from),
            last_error: self.last_error.clone().unwrap_or_default(),
            create_time: Some(time::to_proto(self.created_at)),
            finish_time: self.finished_at.map(time::to_proto),
        }
    }
}

/// How a delivery ended, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    pub outcome: DeliveryOutcome,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// A page of a tenant's delivery log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub tenant_id: TenantId,
    /// One rule's deliveries, or every rule's.
    pub rule_id: Option<String>,
    /// Deliveries with a smaller `delivery_id` only, for the next page.
    pub before: Option<String>,
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold_rule(window_seconds: u32, url: &str) -> v1::AlertRule {
        v1::AlertRule {
            name: "errors".into(),
            window_seconds,
            condition: Some(v1::alert_rule::Condition::Threshold(
                v1::ThresholdCondition {
                    event_type: "error".into(),
                    comparison: v1::Comparison::GreaterThan as i32,
                    threshold: 10.0,
                },
            )),
            webhook_url: url.into(),
            ..Default::default()
        }
    }

    fn refusal(rule: v1::AlertRule) -> String {
        AlertRule::from_proto(TenantId::generate(), Some(&rule), "whsec_x".into())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_valid_threshold_rule_starts_resolved() {
        let rule = threshold_rule(300, "https://hooks.example.com/a?b=c");
        let parsed = AlertRule::from_proto(TenantId::generate(), Some(&rule), "s".into()).unwrap();
        assert_eq!(parsed.status.state, AlertState::Resolved);
        assert_eq!(parsed.window, Duration::from_secs(300));
        assert_eq!(parsed.to_proto().rule.unwrap().condition, rule.condition);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        let mut named = threshold_rule(60, "http://h/");
        named.name = "nul\u{0}".into();
        assert!(refusal(named).contains("rule.name"));
        assert!(refusal(threshold_rule(90, "http://h/")).contains("rule.window_seconds"));
        assert!(refusal(threshold_rule(0, "http://h/")).contains("rule.window_seconds"));
        assert!(refusal(threshold_rule(86_460, "http://h/")).contains("rule.window_seconds"));
        for url in ["ftp://h/", "http://", "http:///x", "http://h/ x", "h/x", ""] {
            assert!(
                refusal(threshold_rule(60, url)).contains("rule.webhook_url"),
                "{url}"
            );
        }
        let mut rule = threshold_rule(60, "http://h/");
        rule.condition = Some(v1::alert_rule::Condition::Threshold(
            v1::ThresholdCondition {
                threshold: f64::NAN,
                comparison: v1::Comparison::LessThan as i32,
                ..Default::default()
            },
        ));
        assert!(refusal(rule.clone()).contains("rule.threshold.threshold"));
        rule.condition = Some(v1::alert_rule::Condition::Threshold(
            v1::ThresholdCondition {
                threshold: 1.0,
                ..Default::default()
            },
        ));
        assert!(refusal(rule.clone()).contains("rule.threshold.comparison"));
        rule.condition = None;
        assert!(refusal(rule.clone()).contains("rule.condition"));
        rule.condition = Some(v1::alert_rule::Condition::Ratio(v1::RatioCondition {
            comparison: v1::Comparison::GreaterThan as i32,
            threshold: 0.05,
            ..Default::default()
        }));
        assert!(refusal(rule.clone()).contains("rule.ratio.numerator_event_type"));
        rule.condition = Some(v1::alert_rule::Condition::Spike(v1::SpikeCondition {
            event_type: "signup".into(),
            sensitivity: f64::INFINITY,
            ..Default::default()
        }));
        assert!(refusal(rule.clone()).contains("rule.spike.sensitivity"));
        rule.window_seconds = 86_400;
        rule.condition = Some(v1::alert_rule::Condition::Spike(v1::SpikeCondition {
            event_type: "signup".into(),
            baseline_windows: 12,
            ..Default::default()
        }));
        assert!(refusal(rule).contains("rule.spike.baseline_windows"));
        assert!(
            AlertRule::from_proto(TenantId::generate(), None, String::new())
                .unwrap_err()
                .to_string()
                .contains("rule")
        );
    }

    #[test]
    fn spike_defaults_apply_to_zero_fields() {
        let mut rule = threshold_rule(60, "http://h/");
        rule.condition = Some(v1::alert_rule::Condition::Spike(v1::SpikeCondition {
            event_type: "signup".into(),
            ..Default::default()
        }));
        let parsed = AlertRule::from_proto(TenantId::generate(), Some(&rule), "s".into()).unwrap();
        assert_eq!(
            parsed.condition,
            AlertCondition::Spike {
                event_type: "signup".into(),
                baseline_windows: DEFAULT_BASELINE_WINDOWS,
                sensitivity: DEFAULT_SENSITIVITY,
                min_count: DEFAULT_MIN_COUNT,
            }
        );
    }

    #[test]
    fn comparisons_hold_as_written() {
        assert!(Comparison::Greater.holds(6.0, 5.0));
        assert!(!Comparison::Greater.holds(5.0, 5.0));
        assert!(Comparison::GreaterOrEqual.holds(5.0, 5.0));
        assert!(Comparison::Less.holds(4.0, 5.0));
        assert!(!Comparison::LessOrEqual.holds(5.1, 5.0));
        for comparison in [
            Comparison::Greater,
            Comparison::GreaterOrEqual,
            Comparison::Less,
            Comparison::LessOrEqual,
        ] {
            assert_eq!(Comparison::parse(comparison.as_str()), Ok(comparison));
        }
    }

    #[test]
    fn a_zero_or_small_denominator_has_no_ratio() {
        assert_eq!(ratio(0, 0, 1), None);
        assert_eq!(ratio(3, 0, 1), None);
        assert_eq!(ratio(1, 4, 5), None);
        assert_eq!(ratio(1, 20, 1), Some(0.05));
    }

    #[test]
    fn spike_score_uses_median_and_mad_and_ignores_one_outlier_in_the_baseline() {
        // Median 10, deviations [0,0,1,1,2,2,90] → MAD 1, scale max(1.48, √10 = 3.16).
        let score = spike_score(30, &[10, 9, 11, 8, 12, 100, 10]);
        assert_eq!(score.median, 10.0);
        assert_eq!(score.mad, 1.0);
        assert!((score.scale - 10f64.sqrt()).abs() < 1e-9, "{score:?}");
        assert!(score.score > 6.0, "{score:?}");
        // A wide baseline: the MAD sets the scale.
        let wide = spike_score(150, &[100, 60, 140, 80, 120]);
        assert_eq!(wide.median, 100.0);
        assert_eq!(wide.mad, 20.0);
        assert!((wide.scale - 1.4826 * 20.0).abs() < 1e-9);
        // A flat, empty baseline: the floor of 1 keeps the score finite.
        let flat = spike_score(5, &[0, 0, 0]);
        assert_eq!(flat.scale, 1.0);
        assert_eq!(flat.score, 5.0);
    }
}
