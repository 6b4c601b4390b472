//! Configuration in two stages: [`RawConfig`] mirrors `monitor.toml` (unknown keys refused), then
//! [`Config::from_toml`] validates everything — schedule, URLs, addresses, ids, durations, secret
//! sources — before anything starts. Every problem names the file, the line, the key and a fix,
//! and all validation problems are reported at once, not one per run.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::secrets::SecretSource;
use crate::timefmt::{format_duration, parse_duration};

/// Where `--config` points when not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/waba-monitor/monitor.toml";
pub const DEFAULT_DATABASE: &str = "/var/lib/waba-monitor/monitor.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9717";
pub const DEFAULT_SCHEDULE: &str = "0 */5 * * * *";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_API_VERSION: &str = "v23.0";
/// Meta's Business Management API quota: calls per hour per app per WABA.
pub const META_QUOTA_PER_WABA_HOUR: u64 = 200;

// ---------------------------------------------------------------------------------------------
// Stage 1: the file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    daemon: Option<RawDaemon>,
    #[serde(default)]
    meta: Vec<Spanned<RawMeta>>,
    #[serde(default)]
    bsp: Vec<Spanned<RawBsp>>,
    email: Option<Spanned<RawEmail>>,
    alerts: Option<RawAlerts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBsp {
    kind: Spanned<String>,
    name: Spanned<String>,
    base_url: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    page_size: Option<Spanned<i64>>,
    account_review_status: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_response_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    smtp_host: Option<Spanned<String>>,
    file_dir: Option<Spanned<String>>,
    smtp_port: Option<Spanned<i64>>,
    tls: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    from: Spanned<String>,
    to: Spanned<Vec<Spanned<String>>>,
    timeout: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    repeat_interval: Option<Spanned<String>>,
    resolved: Option<bool>,
    blind_after: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    database: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    poll_schedule: Option<Spanned<String>>,
    cycle_timeout: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    log_format: Option<Spanned<String>>,
    api_token_env: Option<Spanned<String>>,
    api_token_file: Option<Spanned<String>>,
    stale_after: Option<Spanned<i64>>,
    retention: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    name: Spanned<String>,
    graph_url: Option<Spanned<String>>,
    api_version: Option<Spanned<String>>,
    access_token_env: Option<Spanned<String>>,
    access_token_file: Option<Spanned<String>>,
    #[serde(default)]
    businesses: Vec<Spanned<String>>,
    #[serde(default)]
    wabas: Vec<Spanned<String>>,
    #[serde(default)]
    phone_numbers: Vec<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_response_bytes: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
    quota_per_waba_hour: Option<Spanned<i64>>,
    quota_share: Option<Spanned<f64>>,
}

// ---------------------------------------------------------------------------------------------
// Stage 2: validated.

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub meta: Vec<MetaSourceConfig>,
    /// BSP sources (`[[bsp]]`).
    pub bsp: Vec<BspSourceConfig>,
    /// `None`: alerts are recorded and logged but not emailed.
    pub email: Option<EmailConfig>,
    pub alerts: AlertsConfig,
}

/// Which BSP API a `[[bsp]]` block speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BspKind {
    /// Finedu's `GET /v1/whatsapp/businessAccounts`.
    Finedu,
}

pub const DEFAULT_FINEDU_URL: &str = "https://wa.antgst.com";

#[derive(Debug, Clone)]
pub struct BspSourceConfig {
    pub kind: BspKind,
    pub name: String,
    pub base_url: Url,
    pub token: SecretSource,
    /// WABAs per page (1–100).
    pub page_size: u32,
    /// Passed through as `accountReviewStatus` (PENDING, APPROVED, REJECTED).
    pub account_review_status: Option<String>,
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS required (port 587).
    StartTls,
    /// Implicit TLS (port 465).
    Tls,
    /// Plain text: accepted for loopback servers only.
    None,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// When set, messages are written as .eml files into this folder instead of being sent
    /// (the demo uses it; handy to try alert wording without a mail server).
    pub file_dir: Option<PathBuf>,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub from: String,
    pub to: Vec<String>,
    /// One SMTP conversation.
    pub timeout: Duration,
    /// A message not accepted by then is abandoned (logged, counted).
    pub max_age: Duration,
}

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

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub database: PathBuf,
    pub listen: SocketAddr,
    pub poll_schedule: Schedule,
    /// A cycle still running after this long is abandoned (its sources count as failed).
    pub cycle_timeout: Duration,
    /// On SIGTERM, how long an in-flight cycle may go on before it is abandoned.
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// Bearer token required on `/api/*` (mandatory when `listen` is not loopback).
    pub api_token: Option<SecretSource>,
    /// A target not read by this many consecutive polls of its source is shown as stale.
    pub stale_after: u32,
    /// History, poll records, delivered email and old alerts are pruned after this long; zero
    /// keeps everything.
    pub retention: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct MetaSourceConfig {
    pub name: String,
    pub graph_url: Url,
    pub api_version: ApiVersion,
    pub token: SecretSource,
    pub businesses: Vec<String>,
    pub wabas: Vec<String>,
    pub phone_numbers: Vec<String>,
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
    /// Graph requests in flight at once for this source.
    pub concurrency: usize,
    /// Meta's quota per app per WABA per hour (200; 5,000 once a number is registered).
    pub quota_per_waba_hour: u32,
    /// The share of that quota the daemon allows itself (0 < share <= 1).
    pub quota_share: f64,
}

impl MetaSourceConfig {
    /// Calls per WABA per sliding hour the daemon allows itself.
    pub fn waba_call_budget(&self) -> u32 {
        ((f64::from(self.quota_per_waba_hour) * self.quota_share).floor() as u32).max(1)
    }
}

/// A Graph API version such as `v23.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let rest = s.strip_prefix('v')?;
        let (major, minor) = rest.split_once('.')?;
        Some(ApiVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// `whatsapp_business_manager_messaging_limit` exists from v24.0 on; asking an older
    /// version for it fails the whole request with error #100.
    pub fn has_business_messaging_limit(self) -> bool {
        self.major >= 24
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)
    }
}

/// A validated cron schedule (six fields, seconds first, UTC) as tokio-cron-scheduler reads it.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    cron: croner::Cron,
}

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
        Ok(Schedule {
            expr: expr.to_owned(),
            cron,
        })
    }

    /// The next firing strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.iter_after(t).next()
    }

    /// The most cycles the schedule fires in any one clock hour over the next two days (a
    /// schedule can be dense in some hours only). Capped so a silly schedule cannot hang.
    pub fn max_cycles_per_hour(&self, from: DateTime<Utc>) -> u64 {
        let start = from
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(from);
        let end = start + chrono::Duration::hours(48);
        let mut per_hour = std::collections::HashMap::<i64, u64>::new();
        for t in self.cron.iter_after(start).take(200_000) {
            if t >= end {
                break;
            }
            *per_hour.entry(t.timestamp() / 3600).or_default() += 1;
        }
        per_hour.values().copied().max().unwrap_or(0)
    }

    /// The shortest gap between two firings over the next two days.
    pub fn min_interval(&self, from: DateTime<Utc>) -> Duration {
        let mut prev: Option<DateTime<Utc>> = None;
        let mut min = Duration::from_secs(48 * 3600);
        for t in self.cron.iter_after(from).take(10_000) {
            if let Some(p) = prev {
                let gap = (t - p).to_std().unwrap_or_default();
                min = min.min(gap);
            }
            prev = Some(t);
        }
        min
    }
}

// ---------------------------------------------------------------------------------------------
// Problems.

/// One thing wrong with the config file, located and with a fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
    pub fix: Option<String>,
}

/// Everything wrong with a config file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {n} problem{}:",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            let loc = match p.line {
                Some(l) => format!("{}:{l}", self.path.display()),
                None => self.path.display().to_string(),
            };
            write!(f, "  {loc}: `{}`: {}", p.key, p.message)?;
            if let Some(fix) = &p.fix {
                write!(f, "\n      fix: {fix}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

struct Problems<'a> {
    src: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn add(&mut self, span: Option<std::ops::Range<usize>>, key: &str, message: String, fix: &str) {
        self.list.push(Problem {
            line: span.map(|s| line_of(self.src, s.start)),
            key: key.to_owned(),
            message,
            fix: (!fix.is_empty()).then(|| fix.to_owned()),
        });
    }
}

/// 1-based line number of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// For a TOML syntax or type error, names the key from the text around the error: the nearest
/// `key =` on the error's line and the table header above it.
fn key_at(src: &str, offset: usize) -> String {
    let line_no = line_of(src, offset);
    let lines: Vec<&str> = src.lines().collect();
    let line = lines.get(line_no - 1).copied().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('['));
    let table = lines[..line_no.saturating_sub(1).min(lines.len())]
        .iter()
        .rev()
        .chain(std::iter::once(&line))
        .find_map(|l| {
            let t = l.trim();
            t.starts_with('[')
                .then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        });
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "(top level)".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

impl Config {
    /// Reads and validates a config file. Never writes anything.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            problems: vec![Problem {
                line: None,
                key: "(file)".into(),
                message: format!("cannot read the config file: {e}"),
                fix: Some(format!(
                    "create it (the commented reference is monitor.toml in the source tree) or pass --config PATH; default {DEFAULT_CONFIG_PATH}"
                )),
            }],
        })?;
        Config::from_toml(path, &src)
    }

    /// Validates config text; `path` is only used to name the file and resolve relative paths.
    pub fn from_toml(path: &Path, src: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let span = e.span();
            let key = span
                .clone()
                .map(|s| key_at(src, s.start))
                .unwrap_or_else(|| "(file)".into());
            ConfigError {
                path: path.to_owned(),
                problems: vec![Problem {
                    line: span.map(|s| line_of(src, s.start)),
                    key,
                    message: e.message().trim().to_owned(),
                    fix: Some(
                        "see the commented reference monitor.toml for every key and its type"
                            .into(),
                    ),
                }],
            }
        })?;
        let mut p = Problems {
            src,
            list: Vec::new(),
        };
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let schedule_span = raw
            .daemon
            .as_ref()
            .and_then(|d| d.poll_schedule.as_ref())
            .map(|s| s.span());
        let daemon = validate_daemon(raw.daemon, base_dir, &mut p);
        let mut meta = Vec::new();
        let mut names = BTreeSet::new();
        if raw.meta.is_empty() && raw.bsp.is_empty() {
            p.add(
                None,
                "meta",
                "no [[meta]] or [[bsp]] source is configured, so there is nothing to monitor".into(),
                "add a [[meta]] block with a name, a token and at least one of businesses, wabas or phone_numbers (or a [[bsp]] block)",
            );
        }
        for (i, m) in raw.meta.into_iter().enumerate() {
            let span = m.span();
            if let Some(cfg) = validate_meta(i, span, m.into_inner(), base_dir, &mut p) {
                if !names.insert(cfg.name.clone()) {
                    p.add(
                        None,
                        &format!("meta[{i}].name"),
                        format!("the source name \"{}\" is used twice", cfg.name),
                        "give every [[meta]] block its own name; it labels metrics and history",
                    );
                }
                meta.push(cfg);
            }
        }
        let mut bsp = Vec::new();
        for (i, b) in raw.bsp.into_iter().enumerate() {
            let span = b.span();
            if let Some(cfg) = validate_bsp(i, span, b.into_inner(), base_dir, &mut p) {
                if !names.insert(cfg.name.clone()) {
                    p.add(
                        None,
                        &format!("bsp[{i}].name"),
                        format!("the source name \"{}\" is used twice", cfg.name),
                        "give every [[meta]] and [[bsp]] block its own name; it labels metrics and history",
                    );
                }
                bsp.push(cfg);
            }
        }
        if let Some(d) = &daemon {
            check_budget(d, &meta, schedule_span.clone(), &mut p);
        }
        let email = raw
            .email
            .and_then(|e| validate_email(e.into_inner(), base_dir, &mut p));
        let alerts = validate_alerts(raw.alerts, &mut p);
        match (daemon, p.list.is_empty()) {
            (Some(daemon), true) => Ok(Config {
                path: path.to_owned(),
                daemon,
                meta,
                bsp,
                email,
                alerts,
            }),
            _ => Err(ConfigError {
                path: path.to_owned(),
                problems: p.list,
            }),
        }
    }
}

fn duration_key(
    v: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    min: Duration,
    p: &mut Problems<'_>,
) -> Duration {
    let Some(v) = v else { return default };
    match parse_duration(v.get_ref()) {
        Ok(d) if d >= min => d,
        Ok(d) => {
            p.add(
                Some(v.span()),
                key,
                format!("{} is too short", format_duration(d)),
                &format!("use at least {}", format_duration(min)),
            );
            default
        }
        Err(e) => {
            p.add(Some(v.span()), key, e, "");
            default
        }
    }
}

/// A whole number in `range` (inclusive), or `default` when the key is absent. An out-of-range
/// value is a problem with `fix`.
fn int_key(
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

fn validate_daemon(
    raw: Option<RawDaemon>,
    base_dir: &Path,
    p: &mut Problems<'_>,
) -> Option<DaemonConfig> {
    let raw = raw.unwrap_or(RawDaemon {
        database: None,
        listen: None,
        poll_schedule: None,
        cycle_timeout: None,
        shutdown_grace: None,
        log_format: None,
        api_token_env: None,
        api_token_file: None,
        stale_after: None,
        retention: None,
    });
    let database = match raw.database {
        Some(d) if d.get_ref().trim().is_empty() => {
            p.add(
                Some(d.span()),
                "daemon.database",
                "empty path".into(),
                &format!("write a file path such as \"{DEFAULT_DATABASE}\""),
            );
            PathBuf::new()
        }
        Some(d) => base_dir.join(d.get_ref()),
        None => PathBuf::from(DEFAULT_DATABASE),
    };
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
            Ok(s) => Some(s),
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
        .map(|s| s.min_interval(Utc::now()))
        .unwrap_or(Duration::from_secs(300));
    let timeout_span = raw.cycle_timeout.as_ref().map(|v| v.span());
    let cycle_timeout = duration_key(
        raw.cycle_timeout,
        "daemon.cycle_timeout",
        interval.clamp(Duration::from_secs(1), Duration::from_secs(600)),
        Duration::from_secs(1),
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
        Duration::ZERO,
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
    let stale_after = int_key(
        raw.stale_after,
        "daemon.stale_after",
        2,
        1..=1000,
        "use a number of polls from 1 to 1000 (default 2)",
        p,
    );
    let retention = duration_key(
        raw.retention,
        "daemon.retention",
        Duration::from_secs(400 * 86_400),
        Duration::ZERO,
        p,
    );
    if !retention.is_zero() && retention < Duration::from_secs(86_400) {
        p.add(
            None,
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
        listen,
        poll_schedule: schedule?,
        cycle_timeout,
        shutdown_grace,
        log_format,
        api_token,
        stale_after,
        retention,
    })
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn validate_ids(
    list: Vec<Spanned<String>>,
    key: &str,
    seen: &mut BTreeSet<String>,
    p: &mut Problems<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    for id in list {
        let v = id.get_ref().trim();
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
            p.add(
                Some(id.span()),
                key,
                format!("\"{}\" is not a Meta object id", id.get_ref()),
                "ids are the numeric ids from WhatsApp Manager or the API (e.g. \"106540352242922\"), not phone numbers with + or spaces",
            );
        } else if !seen.insert(v.to_owned()) {
            p.add(
                Some(id.span()),
                key,
                format!("id {v} is listed twice"),
                "list each id once",
            );
        } else {
            out.push(v.to_owned());
        }
    }
    out
}

fn validate_meta(
    i: usize,
    span: std::ops::Range<usize>,
    raw: RawMeta,
    base_dir: &Path,
    p: &mut Problems<'_>,
) -> Option<MetaSourceConfig> {
    let k = |name: &str| format!("meta[{i}].{name}");
    let before = p.list.len();
    let name = source_name(&raw.name, &k("name"), "main", p);
    let graph_url = match &raw.graph_url {
        None => Url::parse(DEFAULT_GRAPH_URL).ok(),
        Some(u) => match Url::parse(u.get_ref()) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host().is_none() => {
                p.add(
                    Some(u.span()),
                    &k("graph_url"),
                    format!("\"{}\" is not an http(s) URL", u.get_ref()),
                    &format!("write \"{DEFAULT_GRAPH_URL}\" or leave the key out"),
                );
                None
            }
            Ok(url) if url.scheme() == "http" && !is_loopback_host(&url) => {
                p.add(
                    Some(u.span()),
                    &k("graph_url"),
                    "plain http would send the access token in clear over the network".into(),
                    "use https (plain http is accepted for loopback simulators only)",
                );
                None
            }
            Ok(url) if url.query().is_some() || url.path() != "/" => {
                p.add(
                    Some(u.span()),
                    &k("graph_url"),
                    format!(
                        "\"{}\" has a path or query; it must be the API's base URL",
                        u.get_ref()
                    ),
                    &format!(
                        "write only scheme and host, e.g. \"{DEFAULT_GRAPH_URL}\"; the version goes in api_version"
                    ),
                );
                None
            }
            Ok(url) => Some(url),
            Err(e) => {
                p.add(
                    Some(u.span()),
                    &k("graph_url"),
                    format!("\"{}\" is not a URL: {e}", u.get_ref()),
                    &format!("write \"{DEFAULT_GRAPH_URL}\" or leave the key out"),
                );
                None
            }
        },
    };
    let api_version = match &raw.api_version {
        None => ApiVersion::parse(DEFAULT_API_VERSION),
        Some(v) => {
            let parsed = ApiVersion::parse(v.get_ref()).filter(|v| v.major >= 17);
            if parsed.is_none() {
                p.add(
                    Some(v.span()),
                    &k("api_version"),
                    format!("\"{}\" is not a Graph API version", v.get_ref()),
                    "write it as Meta does, e.g. \"v23.0\" or \"v24.0\"",
                );
            }
            parsed
        }
    };
    let token = secret_source(
        &raw.access_token_env,
        &raw.access_token_file,
        (&k("access_token_env"), &k("access_token_file")),
        base_dir,
        Need::Required {
            span: span.clone(),
            what: "no access token source",
            fix: "add access_token_env = \"WABA_MONITOR_META_TOKEN\" (an environment variable holding a system-user token) or access_token_file = \"/run/credentials/waba-monitor.service/meta-token\"",
        },
        p,
    );
    let mut seen = BTreeSet::new();
    let targets_span = span.clone();
    let businesses = validate_ids(raw.businesses, &k("businesses"), &mut seen, p);
    let wabas = validate_ids(raw.wabas, &k("wabas"), &mut seen, p);
    let phone_numbers = validate_ids(raw.phone_numbers, &k("phone_numbers"), &mut seen, p);
    if businesses.is_empty()
        && wabas.is_empty()
        && phone_numbers.is_empty()
        && p.list.len() == before
    {
        p.add(
            Some(targets_span),
            &k("wabas"),
            "this source watches nothing".into(),
            "list at least one id in businesses, wabas or phone_numbers",
        );
    }
    let request_timeout = duration_key(
        raw.request_timeout,
        &k("request_timeout"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        p,
    );
    let max_response_bytes =
        max_response_bytes(raw.max_response_bytes, &k("max_response_bytes"), p);
    let concurrency = int_key(
        raw.concurrency,
        &k("concurrency"),
        4,
        1..=32,
        "use 1 to 32 (default 4)",
        p,
    ) as usize;
    let quota_per_waba_hour = int_key(
        raw.quota_per_waba_hour,
        &k("quota_per_waba_hour"),
        META_QUOTA_PER_WABA_HOUR as u32,
        1..=u32::MAX,
        "use Meta's figure: 200 (calls per hour per app per WABA), or 5000 once the WABA has a registered number",
        p,
    );
    let quota_share = match raw.quota_share {
        None => 0.5,
        Some(v) if *v.get_ref() > 0.0 && *v.get_ref() <= 1.0 => *v.get_ref(),
        Some(v) => {
            p.add(
                Some(v.span()),
                &k("quota_share"),
                format!("{} is not a share between 0 and 1", v.get_ref()),
                "use e.g. 0.5 (half of Meta's quota, the default; other tools of yours share it)",
            );
            0.5
        }
    };
    if p.list.len() != before {
        return None;
    }
    Some(MetaSourceConfig {
        name,
        graph_url: graph_url?,
        api_version: api_version?,
        token: token?,
        businesses,
        wabas,
        phone_numbers,
        request_timeout,
        max_response_bytes,
        concurrency,
        quota_per_waba_hour,
        quota_share,
    })
}

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
fn check_budget(
    daemon: &DaemonConfig,
    meta: &[MetaSourceConfig],
    schedule_span: Option<std::ops::Range<usize>>,
    p: &mut Problems<'_>,
) {
    let per_hour = daemon.poll_schedule.max_cycles_per_hour(Utc::now());
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

/// Whether a secret key must be present.
enum Need<'a> {
    Optional,
    /// Missing both keys is a problem at `span`, with this message and fix.
    Required {
        span: std::ops::Range<usize>,
        what: &'a str,
        fix: &'a str,
    },
}

/// A secret configured as `*_env` (the NAME of an environment variable) or `*_file` (a path),
/// never both. One place for the rules every secret key follows.
fn secret_source(
    env: &Option<Spanned<String>>,
    file: &Option<Spanned<String>>,
    (env_key, file_key): (&str, &str),
    base_dir: &Path,
    need: Need<'_>,
    p: &mut Problems<'_>,
) -> Option<SecretSource> {
    match (env, file) {
        (Some(_), Some(f)) => {
            p.add(
                Some(f.span()),
                file_key,
                format!(
                    "both {} and {} are set",
                    last_key(env_key),
                    last_key(file_key)
                ),
                "keep one of them",
            );
            None
        }
        (Some(e), None) => {
            let name = e.get_ref().trim();
            let is_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !is_name || name.starts_with("EAA") {
                p.add(
                    Some(e.span()),
                    env_key,
                    "this must be the NAME of an environment variable, not the secret itself".into(),
                    &format!(
                        "write e.g. {} = \"WABA_MONITOR_TOKEN\" and export the secret in that variable",
                        last_key(env_key)
                    ),
                );
                None
            } else {
                Some(SecretSource::Env(name.to_owned()))
            }
        }
        (None, Some(f)) if f.get_ref().trim().is_empty() => {
            p.add(
                Some(f.span()),
                file_key,
                "empty path".into(),
                "point it at a file readable only by the daemon",
            );
            None
        }
        (None, Some(f)) => Some(SecretSource::File(base_dir.join(f.get_ref()))),
        (None, None) => {
            if let Need::Required { span, what, fix } = need {
                p.add(Some(span), env_key, what.to_owned(), fix);
            }
            None
        }
    }
}

fn last_key(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// A source's name: it becomes the `source` label.
fn source_name(raw: &Spanned<String>, key: &str, example: &str, p: &mut Problems<'_>) -> String {
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

/// The cap on one answer's size.
fn max_response_bytes(raw: Option<Spanned<i64>>, key: &str, p: &mut Problems<'_>) -> u64 {
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

fn validate_bsp(
    i: usize,
    span: std::ops::Range<usize>,
    raw: RawBsp,
    base_dir: &Path,
    p: &mut Problems<'_>,
) -> Option<BspSourceConfig> {
    let k = |name: &str| format!("bsp[{i}].{name}");
    let before = p.list.len();
    let kind = match raw.kind.get_ref().as_str() {
        "finedu" => Some(BspKind::Finedu),
        other => {
            p.add(
                Some(raw.kind.span()),
                &k("kind"),
                format!("\"{other}\" is not a BSP this version knows"),
                "use kind = \"finedu\"",
            );
            None
        }
    };
    let name = source_name(&raw.name, &k("name"), "finedu-main", p);
    let base_url = match &raw.base_url {
        None => Url::parse(DEFAULT_FINEDU_URL).ok(),
        Some(u) => match Url::parse(u.get_ref()) {
            Ok(url)
                if url.scheme() == "https"
                    || (url.scheme() == "http" && is_loopback_host(&url)) =>
            {
                if url.path() != "/" || url.query().is_some() {
                    p.add(
                        Some(u.span()),
                        &k("base_url"),
                        format!("\"{}\" has a path or query", u.get_ref()),
                        &format!("write only scheme and host, e.g. \"{DEFAULT_FINEDU_URL}\""),
                    );
                    None
                } else {
                    Some(url)
                }
            }
            _ => {
                p.add(
                    Some(u.span()),
                    &k("base_url"),
                    format!("\"{}\" is not an https URL", u.get_ref()),
                    &format!("write \"{DEFAULT_FINEDU_URL}\" or leave the key out (plain http only for loopback)"),
                );
                None
            }
        },
    };
    let token = secret_source(
        &raw.token_env,
        &raw.token_file,
        (&k("token_env"), &k("token_file")),
        base_dir,
        Need::Required {
            span: span.clone(),
            what: "no API token source",
            fix: "add token_env = \"WABA_MONITOR_FINEDU_TOKEN\" (the NAME of a variable holding the BSP's API token) or token_file = \"/run/credentials/waba-monitor.service/finedu-token\"",
        },
        p,
    );
    let page_size = int_key(
        raw.page_size,
        &k("page_size"),
        100,
        1..=100,
        "use 1 to 100 (the API's limit; default 100)",
        p,
    );
    let account_review_status = match &raw.account_review_status {
        None => None,
        Some(v) if ["PENDING", "APPROVED", "REJECTED"].contains(&v.get_ref().as_str()) => {
            Some(v.get_ref().clone())
        }
        Some(v) => {
            p.add(
                Some(v.span()),
                &k("account_review_status"),
                format!(
                    "\"{}\" is not a review status the API filters on",
                    v.get_ref()
                ),
                "use PENDING, APPROVED or REJECTED, or leave the key out for all WABAs",
            );
            None
        }
    };
    let request_timeout = duration_key(
        raw.request_timeout,
        &k("request_timeout"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        p,
    );
    let max_response_bytes =
        max_response_bytes(raw.max_response_bytes, &k("max_response_bytes"), p);
    if p.list.len() != before {
        return None;
    }
    Some(BspSourceConfig {
        kind: kind?,
        name,
        base_url: base_url?,
        token: token?,
        page_size,
        account_review_status,
        request_timeout,
        max_response_bytes,
    })
}

fn validate_email(raw: RawEmail, base_dir: &Path, p: &mut Problems<'_>) -> Option<EmailConfig> {
    let before = p.list.len();
    let file_dir = raw.file_dir.as_ref().map(|d| base_dir.join(d.get_ref()));
    let host = match (&raw.smtp_host, &file_dir) {
        (Some(h), _) => {
            let host = h.get_ref().trim().to_owned();
            if host.is_empty() || host.contains(char::is_whitespace) || host.contains("://") {
                p.add(
                    Some(h.span()),
                    "email.smtp_host",
                    format!("\"{}\" is not a host name", h.get_ref()),
                    "write the server's name only, e.g. \"smtp.example.com\" (no scheme, no port)",
                );
            }
            host
        }
        (None, Some(_)) => "localhost".to_owned(),
        (None, None) => {
            p.add(
                None,
                "email.smtp_host",
                "[email] has no smtp_host".into(),
                "add smtp_host = \"smtp.example.com\" (or file_dir = \"emails\" to write .eml files instead)",
            );
            String::new()
        }
    };
    let tls = match &raw.tls {
        None => SmtpTls::StartTls,
        Some(t) => match t.get_ref().as_str() {
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            other => {
                p.add(
                    Some(t.span()),
                    "email.tls",
                    format!("\"{other}\" is not a TLS mode"),
                    "use \"starttls\" (port 587), \"tls\" (implicit, port 465) or \"none\" (loopback only)",
                );
                SmtpTls::StartTls
            }
        },
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if tls == SmtpTls::None && !loopback {
        p.add(
            raw.tls.as_ref().map(|t| t.span()),
            "email.tls",
            "\"none\" would send mail (and the password) in clear over the network".into(),
            "use \"starttls\" or \"tls\"; \"none\" is for a relay on this machine (127.0.0.1 / localhost)",
        );
    }
    let smtp_port = match &raw.smtp_port {
        None => match tls {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        },
        Some(v) => match u16::try_from(*v.get_ref()) {
            Ok(port) if port > 0 => port,
            _ => {
                p.add(
                    Some(v.span()),
                    "email.smtp_port",
                    format!("{} is not a port", v.get_ref()),
                    "use 587 (starttls), 465 (tls) or 25",
                );
                0
            }
        },
    };
    let password = secret_source(
        &raw.password_env,
        &raw.password_file,
        ("email.password_env", "email.password_file"),
        base_dir,
        Need::Optional,
        p,
    );
    if password.is_some() && raw.username.is_none() {
        p.add(
            raw.password_env
                .as_ref()
                .or(raw.password_file.as_ref())
                .map(|v| v.span()),
            "email.username",
            "a password is configured but no username".into(),
            "add username = \"monitor@example.com\" (or remove the password key)",
        );
    }
    let mailbox_ok = |s: &str| s.parse::<lettre::message::Mailbox>().is_ok();
    if !mailbox_ok(raw.from.get_ref()) {
        p.add(
            Some(raw.from.span()),
            "email.from",
            format!("\"{}\" is not an email address", raw.from.get_ref()),
            "write \"monitor@example.com\" or \"waba-monitor <monitor@example.com>\"",
        );
    }
    let mut to = Vec::new();
    if raw.to.get_ref().is_empty() {
        p.add(
            Some(raw.to.span()),
            "email.to",
            "no recipient".into(),
            "list at least one address, e.g. to = [\"ops@example.com\"]",
        );
    }
    for addr in raw.to.get_ref() {
        if mailbox_ok(addr.get_ref()) {
            to.push(addr.get_ref().trim().to_owned());
        } else {
            p.add(
                Some(addr.span()),
                "email.to",
                format!("\"{}\" is not an email address", addr.get_ref()),
                "write plain addresses such as \"ops@example.com\"",
            );
        }
    }
    let timeout = duration_key(
        raw.timeout,
        "email.timeout",
        Duration::from_secs(30),
        Duration::from_secs(1),
        p,
    );
    let max_age = duration_key(
        raw.max_age,
        "email.max_age",
        Duration::from_secs(24 * 3600),
        Duration::from_secs(60),
        p,
    );
    if p.list.len() != before {
        return None;
    }
    Some(EmailConfig {
        file_dir,
        smtp_host: host,
        smtp_port,
        tls,
        username: raw.username.map(|u| u.into_inner()),
        password,
        from: raw.from.into_inner(),
        to,
        timeout,
        max_age,
    })
}

fn validate_alerts(raw: Option<RawAlerts>, p: &mut Problems<'_>) -> AlertsConfig {
    let d = AlertsConfig::default();
    let Some(raw) = raw else { return d };
    let repeat_interval = duration_key(
        raw.repeat_interval,
        "alerts.repeat_interval",
        d.repeat_interval,
        Duration::ZERO,
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
        resolved: raw.resolved.unwrap_or(d.resolved),
        blind_after,
    }
}

// ---------------------------------------------------------------------------------------------
// Cost projection for `check-config`.

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
    use super::*;

    const GOOD: &str = r#"
[daemon]
database = "monitor.db"
poll_schedule = "0 */5 * * * *"

[[meta]]
name = "main"
access_token_env = "WABA_MONITOR_META_TOKEN"
wabas = ["987654321"]
"#;

    #[test]
    fn a_minimal_config_validates_with_defaults() {
        let c = Config::from_toml(Path::new("/etc/x/monitor.toml"), GOOD).expect("valid");
        assert_eq!(c.daemon.database, PathBuf::from("/etc/x/monitor.db"));
        assert_eq!(c.meta[0].graph_url.as_str(), "https://graph.facebook.com/");
        assert_eq!(c.meta[0].api_version.to_string(), "v23.0");
        assert_eq!(c.daemon.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn every_five_minutes_is_twelve_cycles_an_hour() {
        let s = Schedule::parse("0 */5 * * * *").expect("valid");
        assert_eq!(s.max_cycles_per_hour(Utc::now()), 12);
        assert_eq!(s.min_interval(Utc::now()), Duration::from_secs(300));
        // Dense only from 09:00 to 09:59: the peak hour counts, not the daily average.
        let s = Schedule::parse("0 * 9 * * *").expect("valid");
        assert_eq!(s.max_cycles_per_hour(Utc::now()), 60);
    }

    #[test]
    fn several_validation_problems_are_reported_together_with_lines() {
        let src = r#"[daemon]
listen = "localhost"
poll_schedule = "*/5 * * * *"

[[meta]]
name = "main"
access_token_env = "WABA_MONITOR_META_TOKEN"
graph_url = "http://graph.example.com"
wabas = ["+1 555 0100"]
"#;
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        let keys: Vec<_> = e
            .problems
            .iter()
            .map(|p| (p.key.as_str(), p.line))
            .collect();
        assert!(keys.contains(&("daemon.listen", Some(2))), "{keys:?}");
        assert!(
            keys.contains(&("daemon.poll_schedule", Some(3))),
            "{keys:?}"
        );
        assert!(keys.contains(&("meta[0].graph_url", Some(8))), "{keys:?}");
        assert!(keys.contains(&("meta[0].wabas", Some(9))), "{keys:?}");
    }

    #[test]
    fn syntax_and_type_errors_name_the_key_and_line() {
        let src = "[daemon]\ndatabase = \"x.db\"\n\n[[meta]]\nname = \"m\"\nwabas = \"123\"\n";
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        assert_eq!(e.problems[0].line, Some(6));
        assert_eq!(e.problems[0].key, "meta.wabas");
    }
}
