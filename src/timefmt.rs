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

/// Parses a timestamp written by [`rfc3339`] (or any RFC 3339 string).
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a human duration: an integer followed by one unit of `ms`, `s`, `m`, `h` or `d`.
/// Several parts may be joined ("1h30m"). A bare number is refused, because "300" could mean
/// seconds or milliseconds and a config that guesses wrong is worse than one that asks.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"30s\", \"5m\", \"24h\" or \"7d\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "\"{input}\" is not a duration; write e.g. \"30s\", \"5m\", \"24h\" or \"7d\""
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("\"{input}\": number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86_400)),
            "" => {
                return Err(format!(
                    "\"{input}\" has no unit; write e.g. \"{value}s\" or \"{value}m\""
                ));
            }
            other => {
                return Err(format!(
                    "\"{input}\": unknown unit \"{other}\" (use ms, s, m, h or d)"
                ));
            }
        };
        total = total.saturating_add(part);
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
    fn timestamps_round_trip_and_sort_as_text() {
        let a = parse_rfc3339("2026-01-02T03:04:05.006Z").expect("valid");
        assert_eq!(rfc3339(a), "2026-01-02T03:04:05.006Z");
        let b = a + chrono::Duration::milliseconds(1);
        assert!(rfc3339(a) < rfc3339(b));
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h5m");
    }
}
