//! Checks several sections share: bounded durations and whole numbers (every duration key's
//! bounds are here), source names (valid, and unique across `[[meta]]` and `[[bsp]]`), loopback
//! hosts and the cap on an answer's size.

use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::Span;
use super::problems::{Problems, last_key, line_of};
use crate::timefmt::{DurationError, format_duration, parse_duration_checked};

/// A duration key: absent → `default`; otherwise within `min..=max`. Every duration the daemon
/// uses goes through here, so none can overflow date arithmetic later (the largest maximum is
/// 36500d); the message names the key's bounds.
pub(super) fn duration_key(
    v: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    (min, max): (Duration, Duration),
    p: &mut Problems<'_>,
) -> Duration {
    let Some(v) = v else { return default };
    let too_long = |shown: &str, p: &mut Problems<'_>| {
        p.add(
            Some(v.span()),
            key,
            format!(
                "{shown} is too long: {} takes at most {}",
                last_key(key),
                format_duration(max)
            ),
            &format!(
                "use at most \"{}\" (default \"{}\")",
                format_duration(max),
                format_duration(default)
            ),
        );
    };
    match parse_duration_checked(v.get_ref()) {
        Ok(d) if d < min => {
            p.add(
                Some(v.span()),
                key,
                format!("{} is too short", format_duration(d)),
                &format!("use at least {}", format_duration(min)),
            );
            default
        }
        Ok(d) if d > max => {
            too_long(&format_duration(d), p);
            default
        }
        Ok(d) => d,
        Err(DurationError::TooLarge(text)) => {
            too_long(&format!("\"{text}\""), p);
            default
        }
        Err(e) => {
            p.add(
                Some(v.span()),
                key,
                e.to_string(),
                &format!(
                    "write a whole number and a unit (ms, s, m, h, d), e.g. {} = \"{}\"",
                    last_key(key),
                    format_duration(default.max(Duration::from_secs(1)))
                ),
            );
            default
        }
    }
}

/// Seconds in a day.
pub(super) const DAY: u64 = 86_400;

// Bounds of the duration keys, documented in monitor.toml.
pub(super) const MAX_CYCLE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
pub(super) const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(600);
pub(super) const MAX_RETENTION: Duration = Duration::from_secs(36_500 * DAY);
pub(super) const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
pub(super) const MAX_SMTP_TIMEOUT: Duration = Duration::from_secs(600);
pub(super) const MAX_EMAIL_AGE: Duration = Duration::from_secs(30 * DAY);
pub(super) const MAX_REPEAT_INTERVAL: Duration = Duration::from_secs(365 * DAY);

/// A whole number in `range` (inclusive), or `default` when the key is absent. An out-of-range
/// value is a problem with `fix`.
pub(super) fn int_key(
    v: Option<Spanned<i64>>,
    key: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    fix: &str,
    p: &mut Problems<'_>,
) -> u32 {
    let Some(v) = v else { return default };
    match u32::try_from(*v.get_ref()) {
        Ok(n) if range.contains(&n) => n,
        _ => {
            p.add(
                Some(v.span()),
                key,
                format!("{} is out of range", v.get_ref()),
                fix,
            );
            default
        }
    }
}

pub(super) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// A source's name: it becomes the `source` label. `block` locates a block without one.
pub(super) fn source_name(
    raw: Option<&Spanned<String>>,
    block: Span,
    key: &str,
    example: &str,
    p: &mut Problems<'_>,
) -> String {
    let Some(raw) = raw else {
        if !p.has(key) {
            p.add(
                Some(block),
                key,
                "this block has no name".into(),
                &format!("add name = \"{example}\" (letters, digits, '-' and '_'; it becomes the `source` label)"),
            );
        }
        return String::new();
    };
    let name = raw.get_ref().trim().to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p.add(
            Some(raw.span()),
            key,
            format!("\"{}\" is not a usable source name", raw.get_ref()),
            &format!(
                "use letters, digits, '-' and '_' only (it becomes the `source` label), e.g. \"{example}\""
            ),
        );
    }
    name
}

/// A source's name must be unique across `[[meta]]`, `[[bsp]]` and `[[whatomate]]` blocks (it
/// labels metrics and history): a second use is a problem at its own line, naming the first.
pub(super) fn unique_name(
    block: &str,
    name: Option<&Spanned<String>>,
    seen: &mut std::collections::BTreeMap<String, (String, usize)>,
    p: &mut Problems<'_>,
) {
    let Some(name) = name else { return };
    let trimmed = name.get_ref().trim();
    if trimmed.is_empty() {
        return;
    }
    let line = line_of(p.src, name.span().start);
    match seen.get(trimmed) {
        Some((first, first_line)) => {
            let message = format!(
                "the source name \"{trimmed}\" is used twice: {first} on line {first_line} has it already"
            );
            p.add(
                Some(name.span()),
                &format!("{block}.name"),
                message,
                "give every [[meta]], [[bsp]] and [[whatomate]] block its own name; it labels metrics and history",
            );
        }
        None => {
            seen.insert(trimmed.to_owned(), (block.to_owned(), line));
        }
    }
}

/// The cap on one answer's size.
pub(super) fn max_response_bytes(
    raw: Option<Spanned<i64>>,
    key: &str,
    p: &mut Problems<'_>,
) -> u64 {
    const DEFAULT: u64 = 16 * 1024 * 1024;
    match raw {
        None => DEFAULT,
        Some(v) if *v.get_ref() >= 64 * 1024 => *v.get_ref() as u64,
        Some(v) => {
            p.add(
                Some(v.span()),
                key,
                format!("{} bytes is too small for a page of answers", v.get_ref()),
                "leave it out (16 MiB) or use at least 65536",
            );
            DEFAULT
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::tests::located;

    #[test]
    fn every_duration_key_is_bounded_naming_the_key_and_its_maximum() {
        let src = r#"[daemon]
poll_schedule = "0 0 0 * * *"
cycle_timeout = "7h"
shutdown_grace = "11m"
retention = "36501d"

[[meta]]
name = "m"
access_token_env = "T"
wabas = ["1"]
request_timeout = "11m"

[[bsp]]
kind = "finedu"
name = "b"
token_env = "T"
request_timeout = "99999999d"

[email]
smtp_host = "smtp.example.com"
from = "monitor@example.com"
to = ["ops@example.com"]
timeout = "11m"
max_age = "31d"

[alerts]
repeat_interval = "99999999d"
"#;
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        for (key, line, max) in [
            ("daemon.cycle_timeout", 3, "6h"),
            ("daemon.shutdown_grace", 4, "10m"),
            ("daemon.retention", 5, "36500d"),
            ("meta[0].request_timeout", 11, "10m"),
            ("bsp[0].request_timeout", 17, "10m"),
            ("email.timeout", 23, "10m"),
            ("email.max_age", 24, "30d"),
            ("alerts.repeat_interval", 27, "365d"),
        ] {
            let p = e
                .problems
                .iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("{key} not refused:\n{e}"));
            assert_eq!(p.line, Some(line), "{key}");
            assert!(
                p.message.contains(max) || p.fix.as_deref().unwrap_or("").contains(max),
                "{key}: maximum {max} not named: {p:?}"
            );
        }
    }

    #[test]
    fn a_source_name_used_twice_is_a_problem_at_the_second_name() {
        let src = r#"[[meta]]
name = "main"
access_token_env = "T"
wabas = ["1"]

[[meta]]
access_token_env = "T"
name = "main"
wabas = ["2"]

[[bsp]]
kind = "finedu"
token_env = "T"
name = " main "
"#;
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        assert_eq!(
            located(&e),
            [
                ("meta[1].name".to_owned(), Some(8)),
                ("bsp[0].name".to_owned(), Some(14))
            ],
            "{e}"
        );
        assert!(e.to_string().contains("\"main\" is used twice"), "{e}");
    }
}
