//! What polling costs against Meta's quota: the check at load that refuses a schedule over a
//! source's budget, and the projection `check-config` prints.

use chrono::{DateTime, Utc};

use super::daemon::DaemonConfig;
use super::meta::MetaSourceConfig;
use super::problems::Problems;
use super::schedule::Schedule;

/// Schedules suggested when the configured one is too dense for the quota budget.
const FITTING_SCHEDULES: [(&str, u64); 7] = [
    ("0 * * * * *", 60),
    ("0 */2 * * * *", 30),
    ("0 */5 * * * *", 12),
    ("0 */10 * * * *", 6),
    ("0 */15 * * * *", 4),
    ("0 */30 * * * *", 2),
    ("0 0 * * * *", 1),
];

/// Refuses a schedule that would make a source exceed its share of Meta's hourly quota per
/// WABA (each cycle costs every WABA at least one call).
pub(super) fn check_budget(
    daemon: &DaemonConfig,
    meta: &[MetaSourceConfig],
    schedule_span: Option<std::ops::Range<usize>>,
    now: DateTime<Utc>,
    p: &mut Problems<'_>,
) {
    let per_hour = daemon.poll_schedule.max_cycles_per_hour(now);
    for m in meta {
        let budget = u64::from(m.waba_call_budget());
        if per_hour > budget {
            let fit = FITTING_SCHEDULES
                .iter()
                .find(|(_, n)| *n <= budget)
                .map_or("0 0 * * * *", |(s, _)| s);
            p.add(
                schedule_span.clone(),
                "daemon.poll_schedule",
                format!(
                    "\"{}\" runs up to {per_hour} cycles an hour, so source \"{}\" would make {per_hour} calls/hour per WABA, over its budget of {budget} ({}% of Meta's {}/h)",
                    daemon.poll_schedule.expr,
                    m.name,
                    (m.quota_share * 100.0).round(),
                    m.quota_per_waba_hour
                ),
                &format!(
                    "poll at most {budget} times an hour, e.g. poll_schedule = \"{fit}\"; or raise quota_share / quota_per_waba_hour in [[meta]] if you know your quota is higher"
                ),
            );
        }
    }
}

/// What one source will cost per cycle and per hour, as far as can be known before polling.
#[derive(Debug, Clone)]
pub struct CostEstimate {
    pub source: String,
    /// Graph calls per cycle, counting batch items one each (Meta counts them so).
    pub calls_per_cycle: u64,
    /// HTTP requests per cycle (batches of up to 50 items are one request).
    pub requests_per_cycle: u64,
    pub cycles_per_hour: u64,
    /// Calls per hour against one WABA, for a WABA with up to 100 numbers.
    pub calls_per_waba_hour: u64,
    /// Worst case for single phone_numbers that might all sit on one WABA.
    pub worst_calls_per_waba_hour: u64,
}

impl MetaSourceConfig {
    /// Estimates calls for a cycle: one per business (WABAs beyond 100 or numbers beyond 100 per
    /// WABA add paging calls, unknown before the first poll), one per configured WABA, one per
    /// configured phone number.
    pub fn estimate(&self, schedule: &Schedule, now: DateTime<Utc>) -> CostEstimate {
        let b = self.businesses.len() as u64;
        let batchable = (self.wabas.len() + self.phone_numbers.len()) as u64;
        let cycles_per_hour = schedule.max_cycles_per_hour(now);
        CostEstimate {
            source: self.name.clone(),
            calls_per_cycle: b + batchable,
            requests_per_cycle: b + batchable.div_ceil(50),
            cycles_per_hour,
            calls_per_waba_hour: cycles_per_hour,
            worst_calls_per_waba_hour: cycles_per_hour * (self.phone_numbers.len() as u64).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::tests::{GOOD, located};

    #[test]
    fn two_adjacent_seconds_a_minute_are_over_the_default_budget() {
        let src = GOOD.replace("0 */5 * * * *", "0,1 * * * * *");
        let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
        assert_eq!(located(&e), [("daemon.poll_schedule".to_owned(), Some(4))]);
        let text = e.to_string();
        assert!(
            text.contains("120 calls/hour per WABA, over its budget of 100"),
            "{text}"
        );
    }
}
