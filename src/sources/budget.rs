//! Staying inside Meta's quota: a sliding-hour ledger of calls per WABA (or business, or
//! single number), pauses for throttled WABAs and for the whole app, and slowing down when
//! Meta's usage headers pass 80 %.
//!
//! The governor only decides what a cycle may ask for; it never sleeps. A target it holds
//! back this cycle is *deferred*: not a failure, no state change, it keeps its last known state
//! (and shows as stale if it stays deferred).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Usage percentage above which a WABA (or the app) is polled every other cycle.
pub const SLOW_DOWN_AT: f64 = 80.0;
/// First pause of a throttled WABA without a hint from Meta; doubles per repeat, capped.
const PAUSE_BASE: Duration = Duration::from_secs(5 * 60);
const PAUSE_CAP: Duration = Duration::from_secs(60 * 60);
/// Meta's hints are honoured up to this long.
const HINT_CAP: Duration = Duration::from_secs(24 * 3600);

/// Why a target was held back this cycle (a bounded label value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defer {
    /// Polling it would exceed the configured share of the hourly quota.
    Quota,
    /// Meta throttled it (or the app) and the pause has not run out.
    Throttled,
    /// Meta's usage headers are above 80 %: polled every other cycle.
    SlowDown,
}

impl Defer {
    pub fn as_str(self) -> &'static str {
        match self {
            Defer::Quota => "quota",
            Defer::Throttled => "throttled",
            Defer::SlowDown => "slow_down",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pause {
    until: DateTime<Utc>,
    level: u32,
}

#[derive(Debug)]
pub struct Governor {
    budget: u32,
    ledger: HashMap<String, VecDeque<DateTime<Utc>>>,
    paused: HashMap<String, Pause>,
    source_pause: Option<Pause>,
    cycle: u64,
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1))
}

impl Governor {
    /// `budget`: calls allowed per key per sliding hour.
    pub fn new(budget: u32) -> Governor {
        Governor {
            budget,
            ledger: HashMap::new(),
            paused: HashMap::new(),
            source_pause: None,
            cycle: 0,
        }
    }

    pub fn budget(&self) -> u32 {
        self.budget
    }

    /// A reloaded config may change the budget; the ledger and the pauses stay.
    pub fn set_budget(&mut self, budget: u32) {
        self.budget = budget;
    }

    /// Starts a cycle: forgets calls older than an hour and pauses that ran out.
    pub fn begin_cycle(&mut self, now: DateTime<Utc>) {
        self.cycle += 1;
        let hour_ago = now - chrono::Duration::hours(1);
        self.ledger.retain(|_, calls| {
            while calls.front().is_some_and(|t| *t <= hour_ago) {
                calls.pop_front();
            }
            !calls.is_empty()
        });
        if self.source_pause.is_some_and(|p| p.until <= now) {
            self.source_pause = None;
        }
    }

    /// Calls charged to `key` in the last hour (as of the latest cycle's start).
    pub fn used(&self, key: &str) -> u32 {
        self.ledger.get(key).map_or(0, |c| c.len() as u32)
    }

    /// Calls charged to `key` in the hour before `now` (also between cycles, when the ledger
    /// has not been trimmed yet).
    fn used_at(&self, key: &str, now: DateTime<Utc>) -> u32 {
        let hour_ago = now - chrono::Duration::hours(1);
        self.ledger
            .get(key)
            .map_or(0, |c| c.iter().filter(|t| **t > hour_ago).count() as u32)
    }

    /// How long until one more call for `key` would be admitted (pause or budget).
    pub fn wait_for(&self, key: &str, now: DateTime<Utc>) -> Duration {
        let paused = self
            .paused
            .get(key)
            .filter(|p| p.until > now)
            .map(|p| p.until)
            .into_iter()
            .chain(self.source_pause.filter(|p| p.until > now).map(|p| p.until));
        let hour_ago = now - chrono::Duration::hours(1);
        let mut live: Vec<DateTime<Utc>> = self
            .ledger
            .get(key)
            .map(|c| c.iter().copied().filter(|t| *t > hour_ago).collect())
            .unwrap_or_default();
        live.sort_unstable();
        // One slot frees when the (used - budget + 1)-th oldest call leaves the window.
        let over = live.len().saturating_sub(self.budget as usize);
        let freed = live
            .get(over)
            .filter(|_| live.len() >= self.budget as usize)
            .map(|t| *t + chrono::Duration::hours(1));
        paused
            .chain(freed)
            .max()
            .and_then(|t| (t - now).to_std().ok())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether the whole source must sit this cycle out: the app is throttled, or its usage is
    /// above 80 % and this is an off cycle.
    pub fn source_check(&self, now: DateTime<Utc>, app_usage: Option<f64>) -> Result<(), Defer> {
        if self.source_pause.is_some_and(|p| p.until > now) {
            return Err(Defer::Throttled);
        }
        if app_usage.is_some_and(|u| u > SLOW_DOWN_AT) && self.cycle.is_multiple_of(2) {
            return Err(Defer::SlowDown);
        }
        Ok(())
    }

    /// Whether `calls` more calls may be made for `key` now.
    pub fn check(
        &self,
        key: &str,
        calls: u32,
        now: DateTime<Utc>,
        usage: Option<f64>,
    ) -> Result<(), Defer> {
        if self.paused.get(key).is_some_and(|p| p.until > now) {
            return Err(Defer::Throttled);
        }
        if usage.is_some_and(|u| u > SLOW_DOWN_AT) && self.cycle.is_multiple_of(2) {
            return Err(Defer::SlowDown);
        }
        if self.source_pause.is_some_and(|p| p.until > now) {
            return Err(Defer::Throttled);
        }
        if self.used_at(key, now) + calls > self.budget {
            return Err(Defer::Quota);
        }
        Ok(())
    }

    /// Records `calls` made for `key`.
    pub fn charge(&mut self, key: &str, calls: u32, now: DateTime<Utc>) {
        let entry = self.ledger.entry(key.to_owned()).or_default();
        for _ in 0..calls {
            entry.push_back(now);
        }
    }

    fn next_pause(level: u32, hint: Option<Duration>, now: DateTime<Utc>) -> Pause {
        let wait = match hint {
            Some(h) if !h.is_zero() => h.min(HINT_CAP),
            _ => PAUSE_BASE
                .saturating_mul(1u32 << level.min(8))
                .min(PAUSE_CAP),
        };
        Pause {
            until: now + chrono_dur(wait),
            level: level + 1,
        }
    }

    /// Meta throttled `key`: pause it until Meta's hint, or for a doubling backoff.
    pub fn pause(
        &mut self,
        key: &str,
        hint: Option<Duration>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let level = self.paused.get(key).map_or(0, |p| p.level);
        let p = Self::next_pause(level, hint, now);
        self.paused.insert(key.to_owned(), p);
        p.until
    }

    /// Meta throttled the whole app (codes 4, 17): pause the source.
    pub fn pause_source(&mut self, hint: Option<Duration>, now: DateTime<Utc>) -> DateTime<Utc> {
        let level = self.source_pause.map_or(0, |p| p.level);
        let p = Self::next_pause(level, hint, now);
        self.source_pause = Some(p);
        p.until
    }

    /// `key` answered: it recovered from any throttling.
    pub fn recovered(&mut self, key: &str) {
        self.paused.remove(key);
    }

    pub fn source_recovered(&mut self) {
        self.source_pause = None;
    }

    /// How many keys are paused now (for logs).
    pub fn paused_count(&self, now: DateTime<Utc>) -> usize {
        self.paused.values().filter(|p| p.until > now).count()
    }
}

/// The governor of one source, shared by the source (which decides what a cycle asks for) and
/// its HTTP client (which admits and charges every request it sends: first attempts, retries
/// and paging links alike).
#[derive(Debug, Clone)]
pub struct Quota(Arc<Mutex<Governor>>);

/// A request the governor would not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: Defer,
    /// When one more call for the key would be admitted.
    pub retry_after: Duration,
}

impl Quota {
    pub fn new(budget: u32) -> Quota {
        Quota(Arc::new(Mutex::new(Governor::new(budget))))
    }

    /// The governor itself. A poisoned lock (a panic elsewhere while holding it) still holds
    /// a consistent ledger: every method leaves it whole.
    pub fn lock(&self) -> MutexGuard<'_, Governor> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one request for `key` at `now` and charges it, or refuses it: over the budget,
    /// or the key (or the whole app) is paused.
    pub fn admit(&self, key: &str, now: DateTime<Utc>) -> Result<(), Refused> {
        let mut g = self.lock();
        match g.check(key, 1, now, None) {
            Ok(()) => {
                g.charge(key, 1, now);
                Ok(())
            }
            Err(reason) => Err(Refused {
                reason,
                retry_after: g.wait_for(key, now),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_refuses_calls_over_budget_and_forgets_after_an_hour() {
        let t0 = Utc::now();
        let mut g = Governor::new(3);
        g.begin_cycle(t0);
        g.charge("w", 3, t0);
        assert_eq!(g.check("w", 1, t0, None), Err(Defer::Quota));
        assert_eq!(g.check("other", 1, t0, None), Ok(()));
        let later = t0 + chrono::Duration::minutes(61);
        g.begin_cycle(later);
        assert_eq!(g.used("w"), 0);
        assert_eq!(g.check("w", 1, later, None), Ok(()));
    }

    #[test]
    fn a_throttled_key_is_paused_by_hint_or_doubling_backoff() {
        let t0 = Utc::now();
        let mut g = Governor::new(100);
        let until = g.pause("w", Some(Duration::from_secs(19 * 60)), t0);
        assert_eq!(until, t0 + chrono::Duration::minutes(19));
        assert_eq!(
            g.check("w", 1, t0 + chrono::Duration::minutes(18), None),
            Err(Defer::Throttled)
        );
        assert_eq!(
            g.check("w", 1, t0 + chrono::Duration::minutes(20), None),
            Ok(())
        );
        // Without a hint: 5 min, then 10 min (the level carries on until it recovers).
        let u2 = g.pause("w", None, t0);
        assert_eq!(u2, t0 + chrono::Duration::minutes(10));
        g.recovered("w");
        assert_eq!(g.pause("w", None, t0), t0 + chrono::Duration::minutes(5));
    }

    #[test]
    fn high_usage_halves_the_polling_rate() {
        let t0 = Utc::now();
        let mut g = Governor::new(100);
        let mut polled = 0;
        for _ in 0..10 {
            g.begin_cycle(t0);
            if g.check("w", 1, t0, Some(85.0)).is_ok() {
                polled += 1;
            }
        }
        assert_eq!(polled, 5);
        assert_eq!(g.source_check(t0, Some(50.0)), Ok(()));
    }

    #[test]
    fn admission_charges_and_says_when_a_refused_key_frees_up() {
        let t0 = Utc::now();
        let q = Quota::new(2);
        assert_eq!(q.admit("w", t0), Ok(()));
        assert_eq!(q.admit("w", t0 + chrono::Duration::minutes(10)), Ok(()));
        let at = t0 + chrono::Duration::minutes(20);
        let refused = q.admit("w", at).unwrap_err();
        assert_eq!(refused.reason, Defer::Quota);
        // The first call leaves the window 40 minutes later.
        assert_eq!(refused.retry_after, Duration::from_secs(40 * 60));
        assert_eq!(q.lock().used("w"), 2, "a refused call is not charged");
        assert_eq!(q.admit("w", t0 + chrono::Duration::minutes(61)), Ok(()));
    }
}
