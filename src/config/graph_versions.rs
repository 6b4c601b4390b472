//! Meta's Graph API versions and when each stops working: the one table of these dates (the
//! loader refuses an ended version, `check-config` warns 90 days ahead, and the daemon exports
//! `waba_monitor_graph_api_version_end_of_life_timestamp_seconds`). From Meta's changelog, as of
//! 2026-12 (DOMAIN.md "What changed through 2026"); add a row when Meta announces a date.

use chrono::NaiveDate;

/// A date as (year, month, day).
pub type Ymd = (i32, u32, u32);

/// (major version, end of life if announced). Versions older than the
/// first row all ended before it; versions newer than the last are accepted, their end of
/// life unknown.
pub const TABLE: &[(u32, Option<Ymd>)] = &[
    (20, Some((2026, 9, 24))),
    (21, Some((2027, 1, 21))),
    (22, Some((2027, 5, 20))),
    (23, Some((2027, 10, 8))),
    (24, Some((2028, 2, 18))), // released 2025-10-08
    (25, None),                // released 2026-02-18: the default
    (26, None),                // released 2026-07-29
    (27, None),                // released 2026-11-04
];

/// The oldest major version in [`TABLE`].
pub const OLDEST_LISTED: u32 = 20;

/// How far ahead `check-config` warns of an end of life.
pub const WARN_DAYS: i64 = 90;

fn date((y, m, d): Ymd) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

/// The announced end of life of a major version.
pub fn end_of_life(major: u32) -> Option<NaiveDate> {
    TABLE
        .iter()
        .find(|(v, _)| *v == major)
        .and_then(|(_, eol)| eol.and_then(date))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use crate::config::tests::day;
    use crate::config::{ApiVersion, DEFAULT_API_VERSION};

    #[test]
    fn graph_versions_end_on_metas_dates_and_warn_ninety_days_ahead() {
        let v = |s: &str| ApiVersion::parse(s).expect("a version");
        assert_eq!(v("v20.0").end_of_life(), Some(day(2026, 9, 24)));
        assert_eq!(v("v23.0").end_of_life(), Some(day(2027, 10, 8)));
        assert_eq!(v("v24.0").end_of_life(), Some(day(2028, 2, 18)));
        assert_eq!(v("v25.0").end_of_life(), None);
        assert!(v("v20.0").has_ended(day(2026, 9, 24)));
        assert!(!v("v20.0").has_ended(day(2026, 9, 23)));
        assert!(
            v("v19.0").has_ended(day(2026, 9, 24)),
            "older than the table"
        );
        assert!(!v("v27.0").has_ended(day(2030, 1, 1)), "not announced");
        assert_eq!(v("v21.0").end_of_life_warning(day(2026, 10, 1)), None);
        let w = v("v21.0")
            .end_of_life_warning(day(2026, 12, 1))
            .expect("51 days ahead");
        assert!(w.contains("2027-01-21") && w.contains("in 51 days"), "{w}");
        assert!(
            w.contains(&format!("api_version = \"{DEFAULT_API_VERSION}\"")),
            "{w}"
        );
    }

    #[test]
    fn the_default_api_version_is_current_and_not_near_its_end_of_life() {
        let today = Utc::now().date_naive();
        let v = ApiVersion::parse(DEFAULT_API_VERSION).expect("a version");
        assert!(!v.has_ended(today));
        assert_eq!(
            v.end_of_life_warning(today),
            None,
            "time to move DEFAULT_API_VERSION on"
        );
    }
}
