//! `[alerts]`: reminders, resolved notices and when a failing source counts as blind.

use std::time::Duration;

use toml::Spanned;

use super::checks::{MAX_REPEAT_INTERVAL, duration_key, int_key};
use super::problems::Problems;
use super::raw::RawAlerts;

#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// Reminder while still bad; zero disables reminders.
    pub repeat_interval: Duration,
    /// Send a notice when something recovers.
    pub resolved: bool,
    /// Failed cycles of a source before a "monitoring blind" alert.
    pub blind_after: u32,
    /// A critical alert still open after this long is sent once to `escalate_to`.
    pub escalate_after: Option<Duration>,
    pub escalate_to: Vec<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            repeat_interval: Duration::from_secs(24 * 3600),
            resolved: true,
            blind_after: 3,
            escalate_after: None,
            escalate_to: Vec::new(),
        }
    }
}

pub(super) fn validate_alerts(raw: Option<RawAlerts>, p: &mut Problems<'_>) -> AlertsConfig {
    let d = AlertsConfig::default();
    let Some(raw) = raw else { return d };
    let repeat_interval = duration_key(
        raw.repeat_interval,
        "alerts.repeat_interval",
        d.repeat_interval,
        (Duration::ZERO, MAX_REPEAT_INTERVAL),
        p,
    );
    let blind_after = int_key(
        raw.blind_after,
        "alerts.blind_after",
        d.blind_after,
        1..=1000,
        "use a number of failed cycles from 1 to 1000 (default 3)",
        p,
    );
    let escalate_after = raw.escalate_after.as_ref().map(|v| {
        duration_key(
            Some(v.clone()),
            "alerts.escalate_after",
            Duration::from_secs(4 * 3600),
            (Duration::from_secs(60), MAX_REPEAT_INTERVAL),
            p,
        )
    });
    let mut escalate_to = Vec::new();
    for addr in raw
        .escalate_to
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or_default()
    {
        if addr.get_ref().parse::<lettre::message::Mailbox>().is_ok() {
            escalate_to.push(addr.get_ref().trim().to_owned());
        } else {
            p.add(
                Some(addr.span()),
                "alerts.escalate_to",
                format!("\"{}\" is not an email address", addr.get_ref()),
                "write \"oncall@example.com\"",
            );
        }
    }
    match (&raw.escalate_after, &raw.escalate_to) {
        (Some(v), None) => p.add(
            Some(v.span()),
            "alerts.escalate_after",
            "escalate_after is set but there is no escalate_to".into(),
            "add escalate_to = [\"oncall@example.com\"]",
        ),
        (None, Some(l)) => p.add(
            Some(l.span()),
            "alerts.escalate_to",
            "escalate_to is set but there is no escalate_after".into(),
            "add escalate_after = \"4h\" (how long a critical alert stays open before it escalates)",
        ),
        (Some(_), Some(l)) if l.get_ref().is_empty() => p.add(
            Some(l.span()),
            "alerts.escalate_to",
            "no escalation recipient".into(),
            "list at least one address",
        ),
        _ => {}
    }
    AlertsConfig {
        repeat_interval,
        resolved: raw.resolved.map_or(d.resolved, Spanned::into_inner),
        blind_after,
        escalate_after,
        escalate_to,
    }
}
