//! Stage 1: the file as written, read leniently.
//!
//! The file is parsed into toml's spanned document tree and read key by key, so that every
//! wrong type and every unknown key becomes a problem of its own (serde would stop at the first
//! one) and every value keeps its place in the file.

use toml::Spanned;
use toml::de::DeTable;

use super::problems::Problems;
use super::values::{
    read_bool, read_duration, read_float, read_int, read_str, read_str_list, read_table,
    read_table_list, unknown_key,
};

/// The file as written: every key optional, every value with its place in the file.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub(super) daemon: RawDaemon,
    pub(super) meta: Vec<Spanned<RawMeta>>,
    pub(super) bsp: Vec<Spanned<RawBsp>>,
    pub(super) whatomate: Vec<Spanned<RawWhatomate>>,
    pub(super) email: Option<Spanned<RawEmail>>,
    pub(super) alerts: Option<RawAlerts>,
    pub(super) webhooks: Option<Spanned<RawWebhooks>>,
    pub(super) routes: Vec<Spanned<RawRoute>>,
    pub(super) heartbeat: Option<Spanned<RawHeartbeat>>,
    pub(super) alertmanager: Option<Spanned<super::alertmanager::RawAlertmanager>>,
}

#[derive(Debug, Default)]
pub(super) struct RawRoute {
    pub(super) name: Option<Spanned<String>>,
    pub(super) businesses: Vec<Spanned<String>>,
    pub(super) wabas: Vec<Spanned<String>>,
    pub(super) numbers: Vec<Spanned<String>>,
    pub(super) sources: Vec<Spanned<String>>,
    pub(super) min_severity: Option<Spanned<String>>,
    pub(super) email_to: Vec<Spanned<String>>,
    pub(super) webhook_url: Option<Spanned<String>>,
    pub(super) webhook_format: Option<Spanned<String>>,
    pub(super) continue_: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct RawHeartbeat {
    pub(super) url: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default)]
pub(super) struct RawDaemon {
    pub(super) database: Option<Spanned<String>>,
    pub(super) database_password_env: Option<Spanned<String>>,
    pub(super) database_password_file: Option<Spanned<String>>,
    pub(super) leader_lease_seconds: Option<Spanned<i64>>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) poll_schedule: Option<Spanned<String>>,
    pub(super) cycle_timeout: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
    pub(super) log_format: Option<Spanned<String>>,
    pub(super) metrics_detail: Option<Spanned<String>>,
    pub(super) api_token_env: Option<Spanned<String>>,
    pub(super) api_token_file: Option<Spanned<String>>,
    pub(super) secret_key_file: Option<Spanned<String>>,
    pub(super) stale_after: Option<Spanned<i64>>,
    pub(super) retention: Option<Spanned<String>>,
}

#[derive(Debug, Default)]
pub(super) struct RawMeta {
    pub(super) name: Option<Spanned<String>>,
    pub(super) graph_url: Option<Spanned<String>>,
    pub(super) api_version: Option<Spanned<String>>,
    pub(super) access_token_env: Option<Spanned<String>>,
    pub(super) access_token_file: Option<Spanned<String>>,
    pub(super) businesses: Vec<Spanned<String>>,
    pub(super) wabas: Vec<Spanned<String>>,
    pub(super) phone_numbers: Vec<Spanned<String>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) max_response_bytes: Option<Spanned<i64>>,
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) quota_per_waba_hour: Option<Spanned<i64>>,
    pub(super) quota_share: Option<Spanned<f64>>,
    pub(super) templates: Option<Spanned<bool>>,
    pub(super) templates_every: Option<Spanned<i64>>,
}

#[derive(Debug, Default)]
pub(super) struct RawBsp {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) base_url: Option<Spanned<String>>,
    pub(super) token_env: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) page_size: Option<Spanned<i64>>,
    pub(super) account_review_status: Option<Spanned<String>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) max_response_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Default)]
pub(super) struct RawWhatomate {
    pub(super) name: Option<Spanned<String>>,
    pub(super) base_url: Option<Spanned<String>>,
    pub(super) api_key_env: Option<Spanned<String>>,
    pub(super) api_key_file: Option<Spanned<String>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) max_response_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Default)]
pub(super) struct RawEmail {
    pub(super) smtp_host: Option<Spanned<String>>,
    pub(super) file_dir: Option<Spanned<String>>,
    pub(super) smtp_port: Option<Spanned<i64>>,
    pub(super) tls: Option<Spanned<String>>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password_env: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) from: Option<Spanned<String>>,
    pub(super) to: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) max_age: Option<Spanned<String>>,
    pub(super) dashboard_url: Option<Spanned<String>>,
}

#[derive(Debug, Default)]
pub(super) struct RawAlerts {
    pub(super) repeat_interval: Option<Spanned<String>>,
    pub(super) resolved: Option<Spanned<bool>>,
    pub(super) blind_after: Option<Spanned<i64>>,
    pub(super) escalate_after: Option<Spanned<String>>,
    pub(super) escalate_to: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default)]
pub(super) struct RawWebhooks {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) app_secret_env: Option<Spanned<String>>,
    pub(super) app_secret_file: Option<Spanned<String>>,
    pub(super) verify_token_env: Option<Spanned<String>>,
    pub(super) verify_token_file: Option<Spanned<String>>,
    pub(super) app_id: Option<Spanned<String>>,
}

const TOP_KEYS: &[&str] = &[
    "daemon",
    "meta",
    "bsp",
    "whatomate",
    "email",
    "alerts",
    "webhooks",
    "route",
    "heartbeat",
    "alertmanager",
];

const ROUTE_KEYS: &[&str] = &[
    "name",
    "businesses",
    "wabas",
    "numbers",
    "sources",
    "min_severity",
    "email_to",
    "webhook_url",
    "webhook_format",
    "continue",
];

const HEARTBEAT_KEYS: &[&str] = &["url", "timeout"];

const DAEMON_KEYS: &[&str] = &[
    "database",
    "database_password_env",
    "database_password_file",
    "leader_lease_seconds",
    "listen",
    "poll_schedule",
    "cycle_timeout",
    "shutdown_grace",
    "log_format",
    "metrics_detail",
    "api_token_env",
    "api_token_file",
    "secret_key_file",
    "stale_after",
    "retention",
];

const META_KEYS: &[&str] = &[
    "name",
    "graph_url",
    "api_version",
    "access_token_env",
    "access_token_file",
    "businesses",
    "wabas",
    "phone_numbers",
    "request_timeout",
    "max_response_bytes",
    "concurrency",
    "quota_per_waba_hour",
    "quota_share",
    "templates",
    "templates_every",
];

const WHATOMATE_KEYS: &[&str] = &[
    "name",
    "base_url",
    "api_key_env",
    "api_key_file",
    "request_timeout",
    "max_response_bytes",
];

const BSP_KEYS: &[&str] = &[
    "kind",
    "name",
    "base_url",
    "token_env",
    "token_file",
    "page_size",
    "account_review_status",
    "request_timeout",
    "max_response_bytes",
];

const EMAIL_KEYS: &[&str] = &[
    "smtp_host",
    "file_dir",
    "smtp_port",
    "tls",
    "username",
    "password_env",
    "password_file",
    "from",
    "to",
    "timeout",
    "max_age",
    "dashboard_url",
];

const ALERTS_KEYS: &[&str] = &[
    "repeat_interval",
    "resolved",
    "blind_after",
    "escalate_after",
    "escalate_to",
];

const WEBHOOKS_KEYS: &[&str] = &[
    "listen",
    "path",
    "app_secret_env",
    "app_secret_file",
    "verify_token_env",
    "verify_token_file",
    "app_id",
];

fn read_daemon(t: &DeTable<'_>, p: &mut Problems<'_>) -> RawDaemon {
    let mut raw = RawDaemon::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("daemon.{name}");
        match name {
            "database" => raw.database = read_str(v, &key, p),
            "database_password_env" => raw.database_password_env = read_str(v, &key, p),
            "database_password_file" => raw.database_password_file = read_str(v, &key, p),
            "leader_lease_seconds" => raw.leader_lease_seconds = read_int(v, &key, p),
            "listen" => raw.listen = read_str(v, &key, p),
            "poll_schedule" => raw.poll_schedule = read_str(v, &key, p),
            "cycle_timeout" => raw.cycle_timeout = read_duration(v, &key, "m", p),
            "shutdown_grace" => raw.shutdown_grace = read_duration(v, &key, "s", p),
            "log_format" => raw.log_format = read_str(v, &key, p),
            "metrics_detail" => raw.metrics_detail = read_str(v, &key, p),
            "api_token_env" => raw.api_token_env = read_str(v, &key, p),
            "api_token_file" => raw.api_token_file = read_str(v, &key, p),
            "secret_key_file" => raw.secret_key_file = read_str(v, &key, p),
            "stale_after" => raw.stale_after = read_int(v, &key, p),
            "retention" => raw.retention = read_duration(v, &key, "d", p),
            _ => unknown_key(k, &key, "[daemon]", DAEMON_KEYS, p),
        }
    }
    raw
}

fn read_meta(i: usize, t: &DeTable<'_>, p: &mut Problems<'_>) -> RawMeta {
    let mut raw = RawMeta::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("meta[{i}].{name}");
        let list = |p: &mut Problems<'_>| {
            read_str_list(v, &key, p)
                .map(Spanned::into_inner)
                .unwrap_or_default()
        };
        match name {
            "name" => raw.name = read_str(v, &key, p),
            "graph_url" => raw.graph_url = read_str(v, &key, p),
            "api_version" => raw.api_version = read_str(v, &key, p),
            "access_token_env" => raw.access_token_env = read_str(v, &key, p),
            "access_token_file" => raw.access_token_file = read_str(v, &key, p),
            "businesses" => raw.businesses = list(p),
            "wabas" => raw.wabas = list(p),
            "phone_numbers" => raw.phone_numbers = list(p),
            "request_timeout" => raw.request_timeout = read_duration(v, &key, "s", p),
            "max_response_bytes" => raw.max_response_bytes = read_int(v, &key, p),
            "concurrency" => raw.concurrency = read_int(v, &key, p),
            "quota_per_waba_hour" => raw.quota_per_waba_hour = read_int(v, &key, p),
            "quota_share" => raw.quota_share = read_float(v, &key, p),
            "templates" => raw.templates = read_bool(v, &key, p),
            "templates_every" => raw.templates_every = read_int(v, &key, p),
            _ => unknown_key(k, &key, "[[meta]]", META_KEYS, p),
        }
    }
    raw
}

fn read_bsp(i: usize, t: &DeTable<'_>, p: &mut Problems<'_>) -> RawBsp {
    let mut raw = RawBsp::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("bsp[{i}].{name}");
        match name {
            "kind" => raw.kind = read_str(v, &key, p),
            "name" => raw.name = read_str(v, &key, p),
            "base_url" => raw.base_url = read_str(v, &key, p),
            "token_env" => raw.token_env = read_str(v, &key, p),
            "token_file" => raw.token_file = read_str(v, &key, p),
            "page_size" => raw.page_size = read_int(v, &key, p),
            "account_review_status" => raw.account_review_status = read_str(v, &key, p),
            "request_timeout" => raw.request_timeout = read_duration(v, &key, "s", p),
            "max_response_bytes" => raw.max_response_bytes = read_int(v, &key, p),
            _ => unknown_key(k, &key, "[[bsp]]", BSP_KEYS, p),
        }
    }
    raw
}

fn read_whatomate(i: usize, t: &DeTable<'_>, p: &mut Problems<'_>) -> RawWhatomate {
    let mut raw = RawWhatomate::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("whatomate[{i}].{name}");
        match name {
            "name" => raw.name = read_str(v, &key, p),
            "base_url" => raw.base_url = read_str(v, &key, p),
            "api_key_env" => raw.api_key_env = read_str(v, &key, p),
            "api_key_file" => raw.api_key_file = read_str(v, &key, p),
            "request_timeout" => raw.request_timeout = read_duration(v, &key, "s", p),
            "max_response_bytes" => raw.max_response_bytes = read_int(v, &key, p),
            _ => unknown_key(k, &key, "[[whatomate]]", WHATOMATE_KEYS, p),
        }
    }
    raw
}

fn read_email(t: &DeTable<'_>, p: &mut Problems<'_>) -> RawEmail {
    let mut raw = RawEmail::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("email.{name}");
        match name {
            "smtp_host" => raw.smtp_host = read_str(v, &key, p),
            "file_dir" => raw.file_dir = read_str(v, &key, p),
            "smtp_port" => raw.smtp_port = read_int(v, &key, p),
            "tls" => raw.tls = read_str(v, &key, p),
            "username" => raw.username = read_str(v, &key, p),
            "password_env" => raw.password_env = read_str(v, &key, p),
            "password_file" => raw.password_file = read_str(v, &key, p),
            "from" => raw.from = read_str(v, &key, p),
            "to" => raw.to = read_str_list(v, &key, p),
            "timeout" => raw.timeout = read_duration(v, &key, "s", p),
            "max_age" => raw.max_age = read_duration(v, &key, "h", p),
            "dashboard_url" => raw.dashboard_url = read_str(v, &key, p),
            _ => unknown_key(k, &key, "[email]", EMAIL_KEYS, p),
        }
    }
    raw
}

fn read_alerts(t: &DeTable<'_>, p: &mut Problems<'_>) -> RawAlerts {
    let mut raw = RawAlerts::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("alerts.{name}");
        match name {
            "repeat_interval" => raw.repeat_interval = read_duration(v, &key, "h", p),
            "resolved" => raw.resolved = read_bool(v, &key, p),
            "blind_after" => raw.blind_after = read_int(v, &key, p),
            "escalate_after" => raw.escalate_after = read_duration(v, &key, "h", p),
            "escalate_to" => raw.escalate_to = read_str_list(v, &key, p),
            _ => unknown_key(k, &key, "[alerts]", ALERTS_KEYS, p),
        }
    }
    raw
}

fn read_route(i: usize, t: &DeTable<'_>, p: &mut Problems<'_>) -> RawRoute {
    let mut raw = RawRoute::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("route[{i}].{name}");
        let list = |p: &mut Problems<'_>| {
            read_str_list(v, &key, p)
                .map(Spanned::into_inner)
                .unwrap_or_default()
        };
        match name {
            "name" => raw.name = read_str(v, &key, p),
            "businesses" => raw.businesses = list(p),
            "wabas" => raw.wabas = list(p),
            "numbers" => raw.numbers = list(p),
            "sources" => raw.sources = list(p),
            "min_severity" => raw.min_severity = read_str(v, &key, p),
            "email_to" => raw.email_to = list(p),
            "webhook_url" => raw.webhook_url = read_str(v, &key, p),
            "webhook_format" => raw.webhook_format = read_str(v, &key, p),
            "continue" => raw.continue_ = read_bool(v, &key, p),
            _ => unknown_key(k, &key, "[[route]]", ROUTE_KEYS, p),
        }
    }
    raw
}

fn read_heartbeat(t: &DeTable<'_>, p: &mut Problems<'_>) -> RawHeartbeat {
    let mut raw = RawHeartbeat::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("heartbeat.{name}");
        match name {
            "url" => raw.url = read_str(v, &key, p),
            "timeout" => raw.timeout = read_duration(v, &key, "s", p),
            _ => unknown_key(k, &key, "[heartbeat]", HEARTBEAT_KEYS, p),
        }
    }
    raw
}

fn read_webhooks(t: &DeTable<'_>, p: &mut Problems<'_>) -> RawWebhooks {
    let mut raw = RawWebhooks::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("webhooks.{name}");
        match name {
            "listen" => raw.listen = read_str(v, &key, p),
            "path" => raw.path = read_str(v, &key, p),
            "app_secret_env" => raw.app_secret_env = read_str(v, &key, p),
            "app_secret_file" => raw.app_secret_file = read_str(v, &key, p),
            "verify_token_env" => raw.verify_token_env = read_str(v, &key, p),
            "verify_token_file" => raw.verify_token_file = read_str(v, &key, p),
            "app_id" => raw.app_id = read_str(v, &key, p),
            _ => unknown_key(k, &key, "[webhooks]", WEBHOOKS_KEYS, p),
        }
    }
    raw
}

pub(super) fn read_raw(root: &DeTable<'_>, p: &mut Problems<'_>) -> RawConfig {
    let mut raw = RawConfig::default();
    for (k, v) in root.iter() {
        let name = k.get_ref().as_ref();
        match name {
            "daemon" => {
                if let Some(t) = read_table(v, name, p) {
                    raw.daemon = read_daemon(t, p);
                }
            }
            "meta" => {
                for (i, (span, t)) in read_table_list(v, name, p).into_iter().enumerate() {
                    raw.meta.push(Spanned::new(span, read_meta(i, t, p)));
                }
            }
            "bsp" => {
                for (i, (span, t)) in read_table_list(v, name, p).into_iter().enumerate() {
                    raw.bsp.push(Spanned::new(span, read_bsp(i, t, p)));
                }
            }
            "whatomate" => {
                for (i, (span, t)) in read_table_list(v, name, p).into_iter().enumerate() {
                    raw.whatomate
                        .push(Spanned::new(span, read_whatomate(i, t, p)));
                }
            }
            "email" => {
                raw.email =
                    read_table(v, name, p).map(|t| Spanned::new(v.span(), read_email(t, p)));
            }
            "alerts" => raw.alerts = read_table(v, name, p).map(|t| read_alerts(t, p)),
            "webhooks" => {
                raw.webhooks =
                    read_table(v, name, p).map(|t| Spanned::new(v.span(), read_webhooks(t, p)));
            }
            "route" => {
                for (i, (span, t)) in read_table_list(v, name, p).into_iter().enumerate() {
                    raw.routes.push(Spanned::new(span, read_route(i, t, p)));
                }
            }
            "heartbeat" => {
                raw.heartbeat =
                    read_table(v, name, p).map(|t| Spanned::new(v.span(), read_heartbeat(t, p)));
            }
            "alertmanager" => {
                raw.alertmanager = read_table(v, name, p)
                    .map(|t| Spanned::new(v.span(), super::alertmanager::read_alertmanager(t, p)));
            }
            _ => unknown_key(k, name, "the top level", TOP_KEYS, p),
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::tests::located;

    #[test]
    fn every_type_error_and_unknown_key_is_reported_in_one_run() {
        let src = r#"[daemon]
retention = 90
poll_schedul = "0 * * * * *"

[[meta]]
name = "m"
access_token_env = "T"
wabas = 5
concurrency = "4"
quota_share = "half"

[email]
smtp_host = "smtp.example.com"
from = "monitor@example.com"
to = "ops@example.com"
timeout = 30

[alerts]
resolved = "yes"
"#;
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        let got = located(&e);
        for (key, line) in [
            ("daemon.retention", 2),
            ("daemon.poll_schedul", 3),
            ("meta[0].wabas", 8),
            ("meta[0].concurrency", 9),
            ("meta[0].quota_share", 10),
            ("email.to", 15),
            ("email.timeout", 16),
            ("alerts.resolved", 19),
        ] {
            assert!(
                got.contains(&(key.to_owned(), Some(line))),
                "{key} at {line} missing from {got:?}\n{e}"
            );
        }
        let text = e.to_string();
        for fix in [
            "retention = \"90d\"",
            "wabas = [\"5\"]",
            "concurrency = 4",
            "to = [\"ops@example.com\"]",
            "resolved = true",
            "poll_schedule",
        ] {
            assert!(text.contains(fix), "no fix {fix} in\n{text}");
        }
    }

    #[test]
    fn duplicate_keys_and_a_single_meta_table_are_problems_with_lines() {
        let src = "[daemon]\ndatabase = \"a.db\"\ndatabase = \"b.db\"\n";
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        assert_eq!(e.problems[0].line, Some(3), "{e}");
        let src = "[meta]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n";
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        assert!(
            e.problems.iter().any(|p| p.key == "meta"
                && p.line == Some(1)
                && p.fix.as_deref().unwrap_or("").contains("[[meta]]")),
            "{e}"
        );
    }
}
