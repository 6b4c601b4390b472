//! Human durations ("30s", "5m", "24h", "7d") and the one timestamp format the project writes.
//!
//! Timestamps are stored and printed as RFC 3339 UTC with millisecond precision and a `Z`
//! suffix, so that they sort lexicographically in SQLite and read the same everywhere.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// Seconds since the Unix epoch, now (metric values, progress stamps).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Formats a timestamp the way the database and every JSON output carry it.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `t - d`, or `None` when that lies before the earliest time chrono represents (a span
/// longer than the calendar: "everything"). Never panics, whatever the span.
pub fn checked_ago(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
}

/// `t + d`, or the latest time chrono represents when that is later. Never panics.
pub fn saturating_after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Parses a timestamp written by [`rfc3339`] (or any RFC 3339 string).
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The longest duration [`parse_duration`] accepts: 100 years. Far beyond any sensible setting,
/// and small enough that "now minus it" stays a valid date for chrono and SQLite.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// Why a text is not a duration. The `Display` text names the input and says how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    /// Not a number followed by a unit.
    NotADuration(String),
    /// A number without a unit ("300").
    NoUnit {
        input: String,
        value: u64,
    },
    UnknownUnit {
        input: String,
        unit: String,
    },
    /// Over [`MAX_DURATION`] (or too large to count at all).
    TooLarge(String),
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationError::Empty => {
                write!(
                    f,
                    "empty duration; write e.g. \"30s\", \"5m\", \"24h\" or \"7d\""
                )
            }
            DurationError::NotADuration(input) => write!(
                f,
                "\"{input}\" is not a duration; write e.g. \"30s\", \"5m\", \"24h\" or \"7d\""
            ),
            DurationError::NoUnit { input, value } => write!(
                f,
                "\"{input}\" has no unit; write e.g. \"{value}s\" or \"{value}m\""
            ),
            DurationError::UnknownUnit { input, unit } => {
                write!(f, "\"{input}\": unknown unit `{unit}`: use ms, s, m, h, d")
            }
            DurationError::TooLarge(input) => write!(
                f,
                "\"{input}\" is too long: durations go up to 36500d (100 years)"
            ),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a human duration: an integer followed by one unit of `ms`, `s`, `m`, `h` or `d`.
/// Several parts may be joined ("1h30m", "1h 30m"). A bare number is refused, because "300"
/// could mean seconds or milliseconds and a config that guesses wrong is worse than one that
/// asks. Anything over [`MAX_DURATION`] is refused, so no caller's date arithmetic can overflow.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    parse_duration_checked(input).map_err(|e| e.to_string())
}

/// [`parse_duration`] with the reason as a value (the config loader names its own maxima).
pub fn parse_duration_checked(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let too_large = || DurationError::TooLarge(input.to_owned());
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(DurationError::NotADuration(input.to_owned()));
        }
        // Only digits, so the one way to fail is a number too large for u64.
        let value: u64 = rest[..digits].parse().map_err(|_| too_large())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let unit_secs: u64 = match unit {
            "ms" => 0,
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "" => {
                return Err(DurationError::NoUnit {
                    input: input.to_owned(),
                    value,
                });
            }
            other => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        let part = if unit == "ms" {
            Duration::from_millis(value)
        } else {
            Duration::from_secs(value.checked_mul(unit_secs).ok_or_else(too_large)?)
        };
        total = total.checked_add(part).ok_or_else(too_large)?;
        if total > MAX_DURATION {
            return Err(too_large());
        }
    }
    Ok(total)
}

/// Formats a duration compactly for people ("2h5m", "45s", "350ms").
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, mins, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let mut out = String::new();
    for (v, u) in [(days, "d"), (hours, "h"), (mins, "m"), (s, "s")] {
        if v > 0 {
            out.push_str(&format!("{v}{u}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_arithmetic_saturates_instead_of_panicking() {
        let now = chrono::Utc::now();
        let huge = std::time::Duration::from_secs(99_999_999 * 86_400);
        assert_eq!(super::checked_ago(now, huge), None);
        assert_eq!(super::checked_ago(now, std::time::Duration::MAX), None);
        assert_eq!(
            super::saturating_after(now, std::time::Duration::MAX),
            chrono::DateTime::<chrono::Utc>::MAX_UTC
        );
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(
            super::checked_ago(now, hour),
            Some(now - chrono::Duration::hours(1))
        );
    }

    use super::*;

    #[test]
    fn durations_with_units_parse_and_bare_numbers_are_refused() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("300").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn huge_numbers_are_a_clear_error_never_an_overflow() {
        for input in [
            "99999999999999999999d",
            "99999999d",
            "18446744073709551615ms",
            "213503982334601d",
            "36501d",
            "36500d1s",
        ] {
            let e = parse_duration(input).unwrap_err();
            assert!(e.contains("36500d"), "{input}: {e}");
        }
        assert_eq!(
            parse_duration("36500d"),
            Ok(Duration::from_secs(36_500 * 86_400))
        );
        // What callers do with a parsed duration must not overflow either.
        let max = parse_duration("36500d").expect("the maximum parses");
        let delta = chrono::Duration::from_std(max).expect("fits chrono");
        assert!(Utc::now().checked_sub_signed(delta).is_some());
    }

    #[test]
    fn an_unknown_unit_is_named_with_the_units_there_are() {
        assert_eq!(
            parse_duration("1 day").unwrap_err(),
            "\"1 day\": unknown unit `day`: use ms, s, m, h, d"
        );
        assert!(
            parse_duration("5 minutes")
                .unwrap_err()
                .contains("unknown unit `minutes`")
        );
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let a = parse_rfc3339("2026-01-02T03:04:05.006Z").expect("valid");
        assert_eq!(rfc3339(a), "2026-01-02T03:04:05.006Z");
        let b = a + chrono::Duration::milliseconds(1);
        assert!(rfc3339(a) < rfc3339(b));
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h5m");
    }
}
