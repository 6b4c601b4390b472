//! `poll_schedule`: a cron expression, and what it means for the daemon: the next firing, the
//! most cycles in a clock hour (the quota budget) and the shortest gap between two cycles (the
//! cycle timeout, the watchdog).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::checks::DAY;

/// A validated cron schedule (six fields, seconds first, UTC) as tokio-cron-scheduler reads it.
///
/// Cron fields are independent sets: a second fires when its second, minute and hour are in
/// their fields and its date matches the day fields. So the schedule fires at the same times on
/// every day it fires on, and every clock hour it fires in holds the same number of firings
/// (UTC has no daylight saving). The analysis works from the fields, exactly, rather than by
/// walking firings: croner's iterator skips the second after each firing ("* * * * * *" would
/// look like one cycle every 2 s), and walking a dense schedule for long is slow.
#[derive(Clone)]
pub struct Schedule {
    pub expr: String,
    cron: croner::Cron,
    /// Firings in each clock hour it fires in: the seconds field × the minutes field.
    per_hour: u64,
    /// The shortest gap between two firings of the same day (none if it fires once a day).
    min_gap_in_day: Option<u32>,
    /// A day's first and last firing, in seconds after midnight.
    first_in_day: u32,
    last_in_day: u32,
}

impl fmt::Debug for Schedule {
    /// The expression only: croner's bit fields run to thousands of lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expr", &self.expr)
            .finish_non_exhaustive()
    }
}

/// How many days ahead the day fields are examined for the shortest gap between two days'
/// firings: eight years hold two 29ths of February.
const SCHEDULE_DAY_WINDOW: u64 = 8 * 366;

impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "\"{expr}\" has {fields} fields; the schedule needs 6, seconds first (e.g. \"0 */5 * * * *\" = every 5 minutes)"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map_err(|e| format!("\"{expr}\" is not a valid cron expression: {e}"))?;
        let pattern = &cron.pattern;
        let seconds: Vec<u32> = (0..60)
            .filter(|s| pattern.second_match(*s).unwrap_or(false))
            .collect();
        let minutes: Vec<u32> = (0..60)
            .filter(|m| pattern.minute_match(*m).unwrap_or(false))
            .collect();
        let hours: Vec<u32> = (0..24)
            .filter(|h| pattern.hour_match(*h).unwrap_or(false))
            .collect();
        let (Some(first_s), Some(first_m), Some(first_h), Some(last_s), Some(last_m), Some(last_h)) = (
            seconds.first(),
            minutes.first(),
            hours.first(),
            seconds.last(),
            minutes.last(),
            hours.last(),
        ) else {
            return Err(format!(
                "\"{expr}\" never fires: its seconds, minutes or hours field matches nothing"
            ));
        };
        // The times of one day in order (at most 86,400): the shortest gap between neighbours.
        let mut previous: Option<u32> = None;
        let mut min_gap_in_day: Option<u32> = None;
        for h in &hours {
            for m in &minutes {
                for s in &seconds {
                    let t = h * 3600 + m * 60 + s;
                    if let Some(p) = previous {
                        min_gap_in_day = Some(min_gap_in_day.map_or(t - p, |g| g.min(t - p)));
                    }
                    previous = Some(t);
                }
            }
        }
        Ok(Schedule {
            expr: expr.to_owned(),
            per_hour: (seconds.len() * minutes.len()) as u64,
            min_gap_in_day,
            first_in_day: first_h * 3600 + first_m * 60 + first_s,
            last_in_day: last_h * 3600 + last_m * 60 + last_s,
            cron,
        })
    }

    /// The next firing strictly after `t`; `None` if the schedule never fires again (the 30th
    /// of February), which is also when tokio-cron-scheduler would never fire it.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// Whether the schedule fires on `day` (at its times of day).
    fn fires_on(&self, day: NaiveDate) -> bool {
        let p = &self.cron.pattern;
        let (y, m, d) = (day.year(), day.month(), day.day());
        p.year_match(y).unwrap_or(false)
            && p.month_match(m).unwrap_or(false)
            && p.day_match(y, m, d).unwrap_or(false)
    }

    /// The most cycles the schedule fires in any one clock hour: seconds × minutes for a
    /// schedule that fires after `from` (every hour it fires in holds that many), 0 for one that
    /// never fires.
    pub fn max_cycles_per_hour(&self, from: DateTime<Utc>) -> u64 {
        if self.next_after(from).is_some() {
            self.per_hour
        } else {
            0
        }
    }

    /// The shortest gap between two firings: within a day, or from a day's last firing to the
    /// next firing day's first, over the days of the next eight years from `from` (a schedule
    /// firing on fewer than two of them reports those eight years).
    pub fn min_interval(&self, from: DateTime<Utc>) -> Duration {
        let mut best = self.min_gap_in_day.map(u64::from);
        let across =
            |days: u64| days * DAY + u64::from(self.first_in_day) - u64::from(self.last_in_day);
        let start = from.date_naive();
        let mut previous: Option<u64> = None;
        for i in 0..SCHEDULE_DAY_WINDOW {
            let Some(day) = start.checked_add_days(chrono::Days::new(i)) else {
                break;
            };
            if !self.fires_on(day) {
                continue;
            }
            if let Some(p) = previous {
                let gap = across(i - p);
                best = Some(best.map_or(gap, |b| b.min(gap)));
                if i - p == 1 {
                    // Consecutive days: no two days come closer.
                    break;
                }
            }
            previous = Some(i);
        }
        Duration::from_secs(best.unwrap_or(SCHEDULE_DAY_WINDOW * DAY))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use super::Schedule;
    use crate::config::tests::day;

    #[test]
    fn every_five_minutes_is_twelve_cycles_an_hour() {
        let s = Schedule::parse("0 */5 * * * *").expect("valid");
        assert_eq!(s.max_cycles_per_hour(Utc::now()), 12);
        assert_eq!(s.min_interval(Utc::now()), Duration::from_secs(300));
        // Dense only from 09:00 to 09:59: the peak hour counts, not the daily average.
        let s = Schedule::parse("0 * 9 * * *").expect("valid");
        assert_eq!(s.max_cycles_per_hour(Utc::now()), 60);
    }

    /// Firings per clock hour (worst hour) and the shortest gap, counted second by second over
    /// `hours` hours from `start` with croner's own matcher: the reference the analysis must
    /// agree with.
    fn brute_force(s: &Schedule, start: DateTime<Utc>, hours: i64) -> (u64, Option<i64>) {
        let mut per_hour = std::collections::BTreeMap::<i64, u64>::new();
        let mut prev: Option<i64> = None;
        let mut min_gap: Option<i64> = None;
        for i in 0..hours * 3600 {
            let t = start + chrono::Duration::seconds(i);
            if s.cron.is_time_matching(&t).unwrap_or(false) {
                *per_hour.entry(i / 3600).or_default() += 1;
                if let Some(p) = prev {
                    min_gap = Some(min_gap.map_or(i - p, |g| g.min(i - p)));
                }
                prev = Some(i);
            }
        }
        (per_hour.values().copied().max().unwrap_or(0), min_gap)
    }

    #[test]
    fn adjacent_seconds_each_count_as_a_cycle() {
        let now = Utc::now();
        for (expr, per_hour, min_secs) in [
            ("* * * * * *", 3600, 1),
            ("0,1 * * * * *", 120, 1),
            ("0-9 * * * * *", 600, 1),
            ("*/2 * * * * *", 1800, 2),
            ("58,59 59 * * * *", 2, 1),
            ("59 59 * * * *", 1, 3600),
            ("0 0 0 * * *", 1, 86_400),
        ] {
            let s = Schedule::parse(expr).expect("valid");
            assert_eq!(s.max_cycles_per_hour(now), per_hour, "{expr}");
            assert_eq!(s.min_interval(now), Duration::from_secs(min_secs), "{expr}");
        }
    }

    #[test]
    fn the_schedule_analysis_agrees_with_a_second_by_second_count() {
        // Three days over the end of a February: a Saturday, a Sunday, a Monday.
        let start = day(2027, 2, 27)
            .and_hms_opt(0, 0, 0)
            .expect("a time")
            .and_utc();
        for expr in [
            "* * * * * *",
            "0,1 * * * * *",
            "*/7 * 9-10 * * *",
            "0 * 9 * * *",
            "0 59 23,0 * * *",
            "30 */20 * * * 1-5",
            "0 0 12 28 2 *",
            "15,45 0,1,59 * * * *",
        ] {
            let s = Schedule::parse(expr).expect("valid");
            let (per_hour, gap) = brute_force(&s, start, 72);
            assert_eq!(s.max_cycles_per_hour(start), per_hour, "{expr}");
            if let Some(gap) = gap {
                assert_eq!(
                    s.min_interval(start),
                    Duration::from_secs(gap.unsigned_abs()),
                    "{expr}"
                );
            }
        }
    }

    #[test]
    fn a_one_second_schedule_is_analysed_quickly() {
        let started = std::time::Instant::now();
        let s = Schedule::parse("* * * * * *").expect("valid");
        for _ in 0..5 {
            assert_eq!(s.max_cycles_per_hour(Utc::now()), 3600);
            assert_eq!(s.min_interval(Utc::now()), Duration::from_secs(1));
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
