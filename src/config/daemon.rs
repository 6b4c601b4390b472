//! `[daemon]`: the database, the HTTP listener and its API token, the poll schedule and the
//! cycle's time limits, logging, staleness and retention.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::checks::{
    DAY, MAX_CYCLE_TIMEOUT, MAX_RETENTION, MAX_SHUTDOWN_GRACE, duration_key, int_key,
};
use super::problems::Problems;
use super::raw::RawDaemon;
use super::schedule::Schedule;
use super::secret_keys::{Need, secret_source};
use super::{DEFAULT_DATABASE, DEFAULT_LISTEN, DEFAULT_SCHEDULE};
use crate::secrets::SecretSource;
use crate::timefmt::format_duration;

/// `database`: a SQLite file (one daemon; the default) or a PostgreSQL database (a highly
/// available pair or more, electing a leader through a lease in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres {
        /// `postgres://user@host:port/db?...`, never with a password.
        url: String,
        /// `database_password_env` / `database_password_file`.
        password: Option<SecretSource>,
    },
}

impl Database {
    /// The file, when the database is SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres { .. } => None,
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres { url, .. } => f.write_str(url),
        }
    }
}

/// `leader_lease_seconds`' default: a dead leader's lease lapses after this long.
pub const DEFAULT_LEADER_LEASE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub database: Database,
    /// How long the leader's lease lasts without renewal (PostgreSQL only; renewed every third
    /// of it).
    pub leader_lease: Duration,
    pub listen: SocketAddr,
    pub poll_schedule: Schedule,
    /// A cycle still running after this long is abandoned (its sources count as failed).
    pub cycle_timeout: Duration,
    /// On SIGTERM, how long an in-flight cycle may go on before it is abandoned.
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// How much of each target's state `/metrics` exports.
    pub metrics_detail: MetricsDetail,
    /// Bearer token required on `/api/*` (mandatory when `listen` is not loopback).
    pub api_token: Option<SecretSource>,
    /// `secret_key_file`: the key (32 random bytes as 64 hex characters, a private file) that
    /// encrypts the per-account access tokens the fleet API stores.
    pub secret_key: Option<SecretSource>,
    /// A target not read by this many consecutive polls of its source is shown as stale.
    pub stale_after: u32,
    /// History, poll records, delivered email and old alerts are pruned after this long; zero
    /// keeps everything.
    pub retention: Duration,
}

/// `metrics_detail`: the per-target series `/metrics` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetricsDetail {
    /// One numeric gauge per dimension (ordering documented) plus an `_info` series: 7 series
    /// per number, 4 per WABA.
    #[default]
    Compact,
    /// The compact series plus a 0/1 series for every state of every dimension (about 35 per
    /// number), for who wants `state` labels.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub(super) fn validate_daemon(
    raw: RawDaemon,
    base_dir: &Path,
    now: DateTime<Utc>,
    p: &mut Problems<'_>,
) -> Option<DaemonConfig> {
    let database = match raw.database {
        Some(d) if d.get_ref().trim().is_empty() => {
            p.add(
                Some(d.span()),
                "daemon.database",
                "empty path".into(),
                &format!("write a file path such as \"{DEFAULT_DATABASE}\", or a PostgreSQL URL \"postgres://user@host/dbname\""),
            );
            Database::Sqlite(PathBuf::new())
        }
        Some(d) if is_postgres_url(d.get_ref()) => postgres_database(
            &d,
            &raw.database_password_env,
            &raw.database_password_file,
            base_dir,
            p,
        ),
        other => {
            sqlite_only(
                &raw.database_password_env,
                "daemon.database_password_env",
                p,
            );
            sqlite_only(
                &raw.database_password_file,
                "daemon.database_password_file",
                p,
            );
            Database::Sqlite(other.map_or_else(
                || PathBuf::from(DEFAULT_DATABASE),
                |d| base_dir.join(d.get_ref()),
            ))
        }
    };
    let lease_span = raw.leader_lease_seconds.as_ref().map(|v| v.span());
    let leader_lease = Duration::from_secs(u64::from(int_key(
        raw.leader_lease_seconds,
        "daemon.leader_lease_seconds",
        DEFAULT_LEADER_LEASE.as_secs() as u32,
        6..=300,
        "use a number of seconds from 6 to 300 (default 15): a dead leader is replaced within it and a third more",
        p,
    )));
    if lease_span.is_some() && matches!(database, Database::Sqlite(_)) {
        p.add(
            lease_span,
            "daemon.leader_lease_seconds",
            "a leader is elected only among daemons sharing a PostgreSQL database; with a SQLite file the one daemon always leads".into(),
            "remove leader_lease_seconds, or set database to a PostgreSQL URL",
        );
    }
    let listen_span = raw.listen.as_ref().map(|l| l.span());
    let listen = match raw.listen {
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                p.add(
                    Some(l.span()),
                    "daemon.listen",
                    format!("\"{}\" is not an IP address with a port", l.get_ref()),
                    &format!("write \"{DEFAULT_LISTEN}\" (host names are not resolved here)"),
                );
                SocketAddr::from(([127, 0, 0, 1], 9717))
            }
        },
        None => SocketAddr::from(([127, 0, 0, 1], 9717)),
    };
    let schedule_raw = raw.poll_schedule;
    let schedule = match &schedule_raw {
        Some(s) => match Schedule::parse(s.get_ref()) {
            Ok(parsed) if parsed.next_after(now).is_none() => {
                p.add(
                    Some(s.span()),
                    "daemon.poll_schedule",
                    format!(
                        "\"{}\" never fires: no date has the day of the month, month and day of the week it asks for, so the daemon would never poll",
                        s.get_ref()
                    ),
                    "use days that exist (February has 28 days, 29 in leap years; April, June, September and November have 30); when both day-of-month and day-of-week are set, a date must match both; e.g. \"0 */5 * * * *\" polls every 5 minutes",
                );
                None
            }
            Ok(parsed) => Some(parsed),
            Err(e) => {
                p.add(
                    Some(s.span()),
                    "daemon.poll_schedule",
                    e,
                    "six fields: sec min hour day-of-month month day-of-week, in UTC; \"0 */5 * * * *\" polls every 5 minutes",
                );
                None
            }
        },
        None => Schedule::parse(DEFAULT_SCHEDULE).ok(),
    };
    let interval = schedule
        .as_ref()
        .map(|s| s.min_interval(now))
        .unwrap_or(Duration::from_secs(300));
    let timeout_span = raw.cycle_timeout.as_ref().map(|v| v.span());
    let cycle_timeout = duration_key(
        raw.cycle_timeout,
        "daemon.cycle_timeout",
        interval.clamp(Duration::from_secs(1), Duration::from_secs(600)),
        (Duration::from_secs(1), MAX_CYCLE_TIMEOUT),
        p,
    );
    if cycle_timeout > interval && timeout_span.is_some() {
        p.add(
            timeout_span,
            "daemon.cycle_timeout",
            format!(
                "{} is longer than the {} between two scheduled cycles",
                format_duration(cycle_timeout),
                format_duration(interval)
            ),
            "make it at most the schedule's interval (cycles never overlap; a late one is skipped)",
        );
    }
    let shutdown_grace = duration_key(
        raw.shutdown_grace,
        "daemon.shutdown_grace",
        Duration::from_secs(20),
        (Duration::ZERO, MAX_SHUTDOWN_GRACE),
        p,
    );
    let log_format = match raw.log_format {
        None => LogFormat::Text,
        Some(f) => match f.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                p.add(
                    Some(f.span()),
                    "daemon.log_format",
                    format!("\"{other}\" is not a log format"),
                    "use \"text\" or \"json\"",
                );
                LogFormat::Text
            }
        },
    };
    let metrics_detail = match raw.metrics_detail {
        None => MetricsDetail::Compact,
        Some(f) => match f.get_ref().as_str() {
            "compact" => MetricsDetail::Compact,
            "full" => MetricsDetail::Full,
            other => {
                p.add(
                    Some(f.span()),
                    "daemon.metrics_detail",
                    format!("\"{other}\" is not a metrics detail"),
                    "use \"compact\" (default: 7 series per number) or \"full\" (adds a 0/1 series per state)",
                );
                MetricsDetail::Compact
            }
        },
    };
    let api_token = secret_source(
        &raw.api_token_env,
        &raw.api_token_file,
        ("daemon.api_token_env", "daemon.api_token_file"),
        base_dir,
        Need::Optional,
        p,
    );
    if !listen.ip().is_loopback() && api_token.is_none() {
        p.add(
            listen_span,
            "daemon.listen",
            format!(
                "{listen} is reachable from other machines, and the status API would answer anyone"
            ),
            "set api_token_env (or api_token_file) in [daemon] so /api/* requires `Authorization: Bearer <token>`, or listen on 127.0.0.1",
        );
    }
    let secret_key_span = raw.secret_key_file.as_ref().map(|f| f.span());
    let secret_key = secret_source(
        &None,
        &raw.secret_key_file,
        ("daemon.secret_key_file", "daemon.secret_key_file"),
        base_dir,
        Need::Optional,
        p,
    );
    // Readable is checked with every secret; the content must also be a key.
    if p.check_secrets
        && let Some(src) = &secret_key
        && let Ok(text) = src.load()
        && let Err(why) =
            crate::secrets::SecretKey::from_hex(secrecy::ExposeSecret::expose_secret(&text))
    {
        p.add(
            secret_key_span,
            "daemon.secret_key_file",
            format!("{} {why}", src.describe()),
            "write 32 random bytes as 64 hex characters into it: `openssl rand -hex 32 > FILE && chmod 600 FILE`",
        );
    }
    let stale_after = int_key(
        raw.stale_after,
        "daemon.stale_after",
        2,
        1..=1000,
        "use a number of polls from 1 to 1000 (default 2)",
        p,
    );
    let retention_span = raw.retention.as_ref().map(|v| v.span());
    let retention = duration_key(
        raw.retention,
        "daemon.retention",
        Duration::from_secs(400 * DAY),
        (Duration::ZERO, MAX_RETENTION),
        p,
    );
    if !retention.is_zero() && retention < Duration::from_secs(DAY) {
        p.add(
            retention_span,
            "daemon.retention",
            format!(
                "{} would prune history younger than a day",
                format_duration(retention)
            ),
            "keep at least \"1d\" (default \"400d\"), or \"0s\" to keep everything",
        );
    }
    Some(DaemonConfig {
        database,
        leader_lease,
        listen,
        poll_schedule: schedule?,
        cycle_timeout,
        shutdown_grace,
        log_format,
        metrics_detail,
        api_token,
        secret_key,
        stale_after,
        retention,
    })
}

/// Whether `database` names a PostgreSQL database rather than a file.
fn is_postgres_url(database: &str) -> bool {
    let d = database.trim_start();
    d.starts_with("postgres://") || d.starts_with("postgresql://")
}

fn sqlite_only(key: &Option<toml::Spanned<String>>, name: &str, p: &mut Problems<'_>) {
    if let Some(k) = key {
        p.add(
            Some(k.span()),
            name,
            "a database password is for a PostgreSQL database; this database is a SQLite file".into(),
            "remove it, or set database to a PostgreSQL URL such as \"postgres://waba@db.example.com/waba_monitor\"",
        );
    }
}

/// A PostgreSQL URL: parsed enough to refuse what cannot work or would leak (a password in it),
/// the password taken from `database_password_env` / `_file`.
fn postgres_database(
    d: &toml::Spanned<String>,
    env: &Option<toml::Spanned<String>>,
    file: &Option<toml::Spanned<String>>,
    base_dir: &Path,
    p: &mut Problems<'_>,
) -> Database {
    let url = d.get_ref().trim().to_owned();
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    let shown = crate::redact::url_without_password(&url);
    if userinfo.contains(':') {
        p.add(
            Some(d.span()),
            "daemon.database",
            format!("{shown} carries a password in the URL, where logs, `check-config` and the status page could show it"),
            "remove the password from the URL and put it in database_password_file (e.g. systemd's LoadCredential=) or database_password_env",
        );
    }
    if host.is_empty() || host.starts_with(':') {
        p.add(
            Some(d.span()),
            "daemon.database",
            format!("{shown} names no host"),
            "write postgres://USER@HOST[:PORT]/DBNAME",
        );
    }
    let path = &rest[authority.len()..];
    let dbname = path
        .strip_prefix('/')
        .map(|x| x.split('?').next().unwrap_or(""))
        .unwrap_or("");
    if dbname.is_empty() {
        p.add(
            Some(d.span()),
            "daemon.database",
            format!("{shown} names no database"),
            "write postgres://USER@HOST[:PORT]/DBNAME (the database must exist, owned by USER: the daemon creates its tables)",
        );
    }
    if let Err(e) = url::Url::parse(&url) {
        p.add(
            Some(d.span()),
            "daemon.database",
            format!("{shown} is not a URL: {e}"),
            "write postgres://USER@HOST[:PORT]/DBNAME[?sslmode=require]",
        );
    }
    let password = secret_source(
        env,
        file,
        (
            "daemon.database_password_env",
            "daemon.database_password_file",
        ),
        base_dir,
        Need::Optional,
        p,
    );
    Database::Postgres {
        url: if userinfo.contains(':') { shown } else { url },
        password,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::tests::{GOOD, located};

    #[test]
    fn a_schedule_that_never_fires_is_refused_with_its_line_and_a_fix() {
        for expr in ["0 0 0 30 2 *", "0 0 0 31 4 *", "0 0 0 31 2,4,6 *"] {
            let src = GOOD.replace("0 */5 * * * *", expr);
            let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
            assert_eq!(
                located(&e),
                [("daemon.poll_schedule".to_owned(), Some(4))],
                "{expr}: {e}"
            );
            let p = &e.problems[0];
            assert!(p.message.contains("never"), "{p:?}");
            assert!(p.fix.as_deref().unwrap_or("").contains("February"), "{p:?}");
        }
        // Rare but real: the 29th of February comes every four years.
        let src = GOOD.replace("0 */5 * * * *", "0 0 0 29 2 *");
        assert!(Config::from_toml(Path::new("m.toml"), &src).is_ok());
    }

    #[test]
    fn a_postgres_url_selects_postgres_with_its_password_kept_out_of_the_url() {
        use crate::config::Database;
        let src = GOOD.replace(
            "database = \"monitor.db\"",
            "database = \"postgres://waba@db.example.com:5433/waba_monitor?sslmode=require\"\ndatabase_password_env = \"PATH\"\nleader_lease_seconds = 9",
        );
        let c = Config::from_toml(Path::new("m.toml"), &src).expect("valid");
        match &c.daemon.database {
            Database::Postgres { url, password } => {
                assert_eq!(
                    url,
                    "postgres://waba@db.example.com:5433/waba_monitor?sslmode=require"
                );
                assert!(password.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.daemon.leader_lease, std::time::Duration::from_secs(9));
        // A file path stays SQLite, with the default lease unused.
        let c = Config::from_toml(Path::new("/etc/x/m.toml"), GOOD).expect("valid");
        assert_eq!(
            c.daemon.database.sqlite_path(),
            Some(Path::new("/etc/x/monitor.db"))
        );
        assert_eq!(c.daemon.leader_lease, crate::config::DEFAULT_LEADER_LEASE);
    }

    #[test]
    fn database_mistakes_are_refused_with_their_key_and_line_and_no_password_shown() {
        let cases: [(&str, &str, &str); 6] = [
            (
                "database = \"postgres://waba:hunter2@db/x\"",
                "daemon.database",
                "password in the URL",
            ),
            (
                "database = \"postgres://waba@/x\"",
                "daemon.database",
                "no host",
            ),
            (
                "database = \"postgresql://waba@db\"",
                "daemon.database",
                "no database",
            ),
            (
                "database = \"monitor.db\"\ndatabase_password_env = \"PATH\"",
                "daemon.database_password_env",
                "SQLite file",
            ),
            (
                "database = \"monitor.db\"\nleader_lease_seconds = 10",
                "daemon.leader_lease_seconds",
                "PostgreSQL",
            ),
            (
                "database = \"postgres://waba@db/x\"\nleader_lease_seconds = 3",
                "daemon.leader_lease_seconds",
                "",
            ),
        ];
        for (lines, key, says) in cases {
            let src = GOOD.replace("database = \"monitor.db\"", lines);
            let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
            let p = e
                .problems
                .iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("{lines}: no {key} in {e}"));
            assert!(p.line.is_some(), "{p:?}");
            assert!(
                format!("{} {}", p.message, p.fix.as_deref().unwrap_or("")).contains(says),
                "{lines}: {p:?}"
            );
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn metrics_detail_is_compact_by_default_full_on_request_and_anything_else_is_refused() {
        use crate::config::MetricsDetail;
        let cfg = Config::from_toml(Path::new("m.toml"), GOOD).unwrap();
        assert_eq!(cfg.daemon.metrics_detail, MetricsDetail::Compact);
        let full = GOOD.replace("[daemon]\n", "[daemon]\nmetrics_detail = \"full\"\n");
        let cfg = Config::from_toml(Path::new("m.toml"), &full).unwrap();
        assert_eq!(cfg.daemon.metrics_detail, MetricsDetail::Full);
        let bad = GOOD.replace("[daemon]\n", "[daemon]\nmetrics_detail = \"verbose\"\n");
        let e = Config::from_toml(Path::new("m.toml"), &bad).unwrap_err();
        assert_eq!(
            located(&e),
            [("daemon.metrics_detail".to_owned(), Some(3))],
            "{e}"
        );
        assert!(e.problems[0].message.contains("verbose"), "{e}");
    }
}
