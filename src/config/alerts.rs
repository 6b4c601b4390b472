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
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            repeat_interval: Duration::from_secs(24 * 3600),
            resolved: true,
            blind_after: 3,
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
    AlertsConfig {
        repeat_interval,
        resolved: raw.resolved.map_or(d.resolved, Spanned::into_inner),
        blind_after,
    }
}
