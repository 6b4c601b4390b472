//! Configuration in two stages: `RawConfig` (`raw.rs`) mirrors `monitor.toml` (read key by key:
//! unknown keys and wrong types are problems), then [`Config::from_toml`] validates everything —
//! schedule, URLs, addresses, ids, bounded durations, the Graph API version's end of life, secret
//! sources — before anything starts. Every problem names the file, the line, the key and a fix,
//! and all problems are reported at once, not one per run. [`Config::load_for_start`] also reads
//! every secret, as `run` does before it starts: what it refuses, `check-config` refuses.
//!
//! - `file.rs` reads the file; `raw.rs` is stage 1, with `values.rs` reading each value as its
//!   type; `problems.rs` is what goes wrong, located.
//! - Stage 2 is one file per section, its config type next to its validation: `daemon.rs`,
//!   `meta.rs` (with [`ApiVersion`]; [`graph_versions`] is the end-of-life table), `bsp.rs`,
//!   `email.rs`, `alerts.rs`. `checks.rs` holds the checks they share, `secret_keys.rs` the
//!   secret keys (each secret read for `load_for_start`), `schedule.rs` the cron analysis and
//!   `cost.rs` the quota budget and the projection for `check-config`. `webhooks.rs` is
//!   `[webhooks]`, the receiver of Meta's webhook deliveries.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use toml::de::DeTable;

/// Where `--config` points when not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/waba-monitor/monitor.toml";
pub const DEFAULT_DATABASE: &str = "/var/lib/waba-monitor/monitor.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9717";
pub const DEFAULT_SCHEDULE: &str = "0 */5 * * * *";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com";
/// Current, answered by the simulator the tests use, and with the portfolio-wide messaging limit
/// (v24+). Its end of life is not announced yet (see [`graph_versions`]).
pub const DEFAULT_API_VERSION: &str = "v25.0";
/// Meta's Business Management API quota: calls per hour per app per WABA.
pub const META_QUOTA_PER_WABA_HOUR: u64 = 200;

mod alertmanager;
mod alerts;
mod bsp;
mod checks;
mod cost;
mod daemon;
mod email;
mod file;
pub mod graph_versions;
mod meta;
mod problems;
mod raw;
mod routes;
mod schedule;
mod secret_keys;
mod values;
mod webhooks;
mod whatomate;

pub use alertmanager::{AlertmanagerAuth, AlertmanagerConfig};
pub use alerts::AlertsConfig;
pub use bsp::{BspKind, BspSourceConfig, DEFAULT_FINEDU_URL};
pub use cost::CostEstimate;
pub use daemon::{DEFAULT_LEADER_LEASE, DaemonConfig, Database, LogFormat, MetricsDetail};
pub use email::{EmailConfig, SmtpTls};
pub use meta::{ApiVersion, MetaSourceConfig};
pub use problems::{ConfigError, Problem};
pub use routes::{HeartbeatConfig, MinSeverity, RouteConfig, TargetRef, WebhookFormat};
pub use schedule::Schedule;
pub use webhooks::{DEFAULT_WEBHOOK_LISTEN, DEFAULT_WEBHOOK_PATH, WebhooksConfig};
pub use whatomate::WhatomateConfig;

use alerts::validate_alerts;
use bsp::validate_bsp;
use checks::unique_name;
use cost::check_budget;
use daemon::validate_daemon;
use email::validate_email;
use file::read_config_file;
use meta::validate_meta;
use problems::{Problems, key_at, line_of};
use raw::read_raw;
use webhooks::validate_webhooks;
use whatomate::validate_whatomate;

/// A byte range of the config text.
type Span = std::ops::Range<usize>;

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub meta: Vec<MetaSourceConfig>,
    /// BSP sources (`[[bsp]]`).
    pub bsp: Vec<BspSourceConfig>,
    /// Whatomate instances whose accounts are polled through the first `[[meta]]` source
    /// (`[[whatomate]]`).
    pub whatomate: Vec<WhatomateConfig>,
    /// `None`: alerts are recorded and logged but not emailed.
    pub email: Option<EmailConfig>,
    pub alerts: AlertsConfig,
    /// `None`: no webhook receiver (`[webhooks]` absent).
    pub webhooks: Option<WebhooksConfig>,
    /// `[[route]]`s, in the file's order.
    pub routes: Vec<RouteConfig>,
    /// `[heartbeat]`.
    pub heartbeat: Option<HeartbeatConfig>,
    /// `[alertmanager]`: every open alert posted to these Alertmanagers.
    pub alertmanager: Option<AlertmanagerConfig>,
}

impl Config {
    /// Reads and validates a config file. Never writes anything, and reads no secret (a reload
    /// and the tests load configs whose secrets the caller reads itself).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(path, &read_config_file(path)?)
    }

    /// [`Config::load`], and every configured secret (tokens, SMTP password, API token) read as
    /// `run` reads them before it starts: a missing variable or file, or a file open to others,
    /// is a problem of the key that names it, listed with the others. A systemd credential
    /// (`/run/credentials/...`) checked from outside its service passes: systemd hands it over
    /// at start.
    pub fn load_for_start(path: &Path) -> Result<Config, ConfigError> {
        Config::validate(path, &read_config_file(path)?, Utc::now(), true)
    }

    /// Validates config text; `path` is only used to name the file and resolve relative paths.
    pub fn from_toml(path: &Path, src: &str) -> Result<Config, ConfigError> {
        Config::from_toml_at(path, src, Utc::now())
    }

    /// [`Config::from_toml`] as on `now` (what "ended" means for a Graph API version).
    pub fn from_toml_at(path: &Path, src: &str, now: DateTime<Utc>) -> Result<Config, ConfigError> {
        Config::validate(path, src, now, false)
    }

    fn validate(
        path: &Path,
        src: &str,
        now: DateTime<Utc>,
        check_secrets: bool,
    ) -> Result<Config, ConfigError> {
        let (root, syntax) = DeTable::parse_recoverable(src);
        if !syntax.is_empty() {
            // A document that does not parse is not validated: its recovered half would only
            // add confusing problems.
            let problems = syntax
                .iter()
                .map(|e| {
                    let span = e.span();
                    Problem {
                        line: span.clone().map(|s| line_of(src, s.start)),
                        key: span
                            .map(|s| key_at(src, s.start))
                            .unwrap_or_else(|| "(file)".into()),
                        message: e.message().trim().to_owned(),
                        fix: Some(
                            "see the commented reference monitor.toml for every key and its type"
                                .into(),
                        ),
                    }
                })
                .collect();
            return Err(ConfigError {
                path: path.to_owned(),
                problems,
            });
        }
        let mut p = Problems {
            src,
            list: Vec::new(),
            check_secrets,
            secrets: Vec::new(),
        };
        let raw = read_raw(root.get_ref(), &mut p);
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let schedule_span = raw.daemon.poll_schedule.as_ref().map(|s| s.span());
        let daemon = validate_daemon(raw.daemon, base_dir, now, &mut p);
        let mut meta = Vec::new();
        // Source names seen so far: name → the block that has it and the line.
        let mut names = std::collections::BTreeMap::<String, (String, usize)>::new();
        if raw.meta.is_empty() && raw.bsp.is_empty() {
            p.add(
                None,
                "meta",
                "no [[meta]] or [[bsp]] source is configured, so there is nothing to monitor".into(),
                "add a [[meta]] block with a name, a token and at least one of businesses, wabas or phone_numbers (or a [[bsp]] block)",
            );
        }
        let has_meta = !raw.meta.is_empty();
        for (i, m) in raw.meta.into_iter().enumerate() {
            let span = m.span();
            unique_name(
                &format!("meta[{i}]"),
                m.get_ref().name.as_ref(),
                &mut names,
                &mut p,
            );
            if let Some(cfg) = validate_meta(i, span, m.into_inner(), base_dir, now, &mut p) {
                meta.push(cfg);
            }
        }
        let mut bsp = Vec::new();
        for (i, b) in raw.bsp.into_iter().enumerate() {
            let span = b.span();
            unique_name(
                &format!("bsp[{i}]"),
                b.get_ref().name.as_ref(),
                &mut names,
                &mut p,
            );
            if let Some(cfg) = validate_bsp(i, span, b.into_inner(), base_dir, &mut p) {
                bsp.push(cfg);
            }
        }
        let mut whatomate = Vec::new();
        for (i, w) in raw.whatomate.into_iter().enumerate() {
            let span = w.span();
            unique_name(
                &format!("whatomate[{i}]"),
                w.get_ref().name.as_ref(),
                &mut names,
                &mut p,
            );
            if !has_meta {
                p.add(
                    Some(span.clone()),
                    &format!("whatomate[{i}]"),
                    "Whatomate's accounts are polled through a [[meta]] source, and there is none"
                        .into(),
                    "add a [[meta]] block (its token reads the numbers Whatomate lists), or remove this [[whatomate]] block",
                );
            }
            if let Some(cfg) = validate_whatomate(i, span, w.into_inner(), base_dir, &mut p) {
                whatomate.push(cfg);
            }
        }
        if let Some(d) = &daemon {
            check_budget(d, &meta, schedule_span.clone(), now, &mut p);
        }
        let has_routes = !raw.routes.is_empty();
        let email = raw
            .email
            .and_then(|e| validate_email(e.span(), e.into_inner(), base_dir, has_routes, &mut p));
        let routes =
            routes::validate_routes(raw.routes, &meta, &bsp, |at| line_of(src, at), &mut p);
        if routes.iter().any(|r| !r.email_to.is_empty()) && email.is_none() && !p.has("email") {
            p.add(
                None,
                "email",
                "a [[route]] has email_to but there is no [email] section to send through".into(),
                "add [email] with smtp_host and from (its to may be empty when every target is routed)",
            );
        }
        let heartbeat = raw
            .heartbeat
            .and_then(|h| routes::validate_heartbeat(h.get_ref().clone(), h.span(), &mut p));
        let alertmanager = raw.alertmanager.and_then(|a| {
            alertmanager::validate_alertmanager(a.span(), a.into_inner(), base_dir, &mut p)
        });
        let alerts = validate_alerts(raw.alerts, &mut p);
        let webhooks = raw.webhooks.and_then(|w| {
            let listen = daemon.as_ref().map(|d| d.listen);
            validate_webhooks(w.span(), w.into_inner(), listen, base_dir, &mut p)
        });
        // In the order of the file (problems without a line last).
        p.list.append(&mut p.secrets);
        p.list.sort_by_key(|q| (q.line.is_none(), q.line));
        match (daemon, p.list.is_empty()) {
            (Some(daemon), true) => Ok(Config {
                path: path.to_owned(),
                daemon,
                meta,
                bsp,
                whatomate,
                email,
                alerts,
                webhooks,
                routes,
                heartbeat,
                alertmanager,
            }),
            _ => Err(ConfigError {
                path: path.to_owned(),
                problems: p.list,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    pub(super) const GOOD: &str = r#"
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
        assert_eq!(
            c.daemon.database,
            crate::config::Database::Sqlite(PathBuf::from("/etc/x/monitor.db"))
        );
        assert_eq!(c.meta[0].graph_url.as_str(), "https://graph.facebook.com/");
        assert_eq!(c.meta[0].api_version.to_string(), DEFAULT_API_VERSION);
        assert_eq!(c.daemon.listen.to_string(), DEFAULT_LISTEN);
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

    /// (key, line) of every problem.
    pub(super) fn located(e: &ConfigError) -> Vec<(String, Option<usize>)> {
        e.problems.iter().map(|p| (p.key.clone(), p.line)).collect()
    }

    pub(super) fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a date")
    }
}
