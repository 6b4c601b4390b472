//! `[alertmanager]`: Prometheus Alertmanager as a receiver. Every open alert is posted to
//! `POST {url}/api/v2/alerts` of each configured url (an Alertmanager cluster is one url per
//! member), with optional basic auth or a bearer token.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeTable;
use url::Url;

use super::checks::{MAX_REQUEST_TIMEOUT, duration_key, is_loopback_host};
use super::problems::Problems;
use super::secret_keys::{Need, secret_source};
use super::values::{read_duration, read_str, read_str_list, unknown_key};
use crate::secrets::SecretSource;

/// How `[alertmanager]` authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertmanagerAuth {
    None,
    /// `Authorization: Basic`, the password from an env var or a file.
    Basic {
        user: String,
        password: SecretSource,
    },
    /// `Authorization: Bearer`, the token from an env var or a file.
    Bearer(SecretSource),
}

#[derive(Debug, Clone)]
pub struct AlertmanagerConfig {
    /// Each Alertmanager (a cluster's members): scheme, host and an optional path prefix
    /// (`--web.route-prefix`); `/api/v2/alerts` is appended.
    pub urls: Vec<Url>,
    /// One POST, connection to answer.
    pub timeout: Duration,
    pub auth: AlertmanagerAuth,
    /// Where people reach the status page (`generatorURL` = `{external_url}/numbers/{id}`);
    /// without it, the daemon's own listen address when that is a concrete address.
    pub external_url: Option<Url>,
    /// `runbook_url` annotation; `{alertname}` in it is replaced by the alert's name.
    pub runbook_url: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct RawAlertmanager {
    url: Option<Spanned<String>>,
    urls: Option<Spanned<Vec<Spanned<String>>>>,
    timeout: Option<Spanned<String>>,
    basic_auth_user: Option<Spanned<String>>,
    basic_auth_password_env: Option<Spanned<String>>,
    basic_auth_password_file: Option<Spanned<String>>,
    bearer_token_env: Option<Spanned<String>>,
    bearer_token_file: Option<Spanned<String>>,
    external_url: Option<Spanned<String>>,
    runbook_url: Option<Spanned<String>>,
}

const KEYS: &[&str] = &[
    "url",
    "urls",
    "timeout",
    "basic_auth_user",
    "basic_auth_password_env",
    "basic_auth_password_file",
    "bearer_token_env",
    "bearer_token_file",
    "external_url",
    "runbook_url",
];

pub(super) fn read_alertmanager(t: &DeTable<'_>, p: &mut Problems<'_>) -> RawAlertmanager {
    let mut raw = RawAlertmanager::default();
    for (k, v) in t.iter() {
        let name = k.get_ref().as_ref();
        let key = format!("alertmanager.{name}");
        match name {
            "url" => raw.url = read_str(v, &key, p),
            "urls" => raw.urls = read_str_list(v, &key, p),
            "timeout" => raw.timeout = read_duration(v, &key, "s", p),
            "basic_auth_user" => raw.basic_auth_user = read_str(v, &key, p),
            "basic_auth_password_env" => raw.basic_auth_password_env = read_str(v, &key, p),
            "basic_auth_password_file" => raw.basic_auth_password_file = read_str(v, &key, p),
            "bearer_token_env" => raw.bearer_token_env = read_str(v, &key, p),
            "bearer_token_file" => raw.bearer_token_file = read_str(v, &key, p),
            "external_url" => raw.external_url = read_str(v, &key, p),
            "runbook_url" => raw.runbook_url = read_str(v, &key, p),
            _ => unknown_key(k, &key, "[alertmanager]", KEYS, p),
        }
    }
    raw
}

const EXAMPLE_URL: &str = "http://127.0.0.1:9093";

/// An Alertmanager's URL: http(s) with a host, no query, fragment or credentials (those go in
/// the auth keys, never in a URL that may be logged).
fn am_url(v: &Spanned<String>, key: &str, p: &mut Problems<'_>) -> Option<Url> {
    match Url::parse(v.get_ref().trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if u.query().is_some()
                || u.fragment().is_some()
                || !u.username().is_empty()
                || u.password().is_some()
            {
                p.add(
                    Some(v.span()),
                    key,
                    format!("\"{}\" has a query, fragment or credentials", v.get_ref()),
                    &format!("write only scheme, host, port and path prefix, e.g. \"{EXAMPLE_URL}\"; credentials go in basic_auth_user + basic_auth_password_env/_file or bearer_token_env/_file"),
                );
                return None;
            }
            Some(u)
        }
        _ => {
            p.add(
                Some(v.span()),
                key,
                format!("\"{}\" is not an http(s) URL", v.get_ref()),
                &format!("write the Alertmanager's base URL, e.g. \"{EXAMPLE_URL}\" (/api/v2/alerts is appended)"),
            );
            None
        }
    }
}

/// A link for people (`external_url`, `runbook_url`): an http(s) URL with a host.
fn link_url(v: &Spanned<String>, key: &str, p: &mut Problems<'_>) -> Option<Url> {
    match Url::parse(
        v.get_ref()
            .trim()
            .replace("{alertname}", "alertname")
            .as_str(),
    ) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ => {
            p.add(
                Some(v.span()),
                key,
                format!("\"{}\" is not an http(s) URL", v.get_ref()),
                "write a full URL, e.g. \"https://monitor.example.com\"",
            );
            None
        }
    }
}

pub(super) fn validate_alertmanager(
    section: std::ops::Range<usize>,
    raw: RawAlertmanager,
    base_dir: &Path,
    p: &mut Problems<'_>,
) -> Option<AlertmanagerConfig> {
    let mut urls = Vec::new();
    match (&raw.url, &raw.urls) {
        (Some(_), Some(list)) => p.add(
            Some(list.span()),
            "alertmanager.urls",
            "both url and urls are set".into(),
            "keep one: url = \"...\" for one Alertmanager, urls = [...] for every member of a cluster",
        ),
        (None, None) => p.add(
            Some(section.clone()),
            "alertmanager.url",
            "[alertmanager] has no url".into(),
            &format!("add url = \"{EXAMPLE_URL}\" (or urls = [...] for a cluster)"),
        ),
        (None, Some(list)) if list.get_ref().is_empty() => p.add(
            Some(list.span()),
            "alertmanager.urls",
            "urls is empty".into(),
            &format!("list every member of the cluster, e.g. urls = [\"{EXAMPLE_URL}\"]"),
        ),
        (Some(u), None) => urls.extend(am_url(u, "alertmanager.url", p)),
        (None, Some(list)) => {
            for (i, u) in list.get_ref().iter().enumerate() {
                let key = format!("alertmanager.urls[{i}]");
                if let Some(url) = am_url(u, &key, p) {
                    if urls.contains(&url) {
                        p.add(
                            Some(u.span()),
                            &key,
                            format!("\"{}\" is listed twice", u.get_ref()),
                            "list each Alertmanager once",
                        );
                    } else {
                        urls.push(url);
                    }
                }
            }
        }
    }
    let timeout = duration_key(
        raw.timeout,
        "alertmanager.timeout",
        Duration::from_secs(10),
        (Duration::from_millis(100), MAX_REQUEST_TIMEOUT),
        p,
    );
    let password = secret_source(
        &raw.basic_auth_password_env,
        &raw.basic_auth_password_file,
        (
            "alertmanager.basic_auth_password_env",
            "alertmanager.basic_auth_password_file",
        ),
        base_dir,
        Need::Optional,
        p,
    );
    let bearer = secret_source(
        &raw.bearer_token_env,
        &raw.bearer_token_file,
        (
            "alertmanager.bearer_token_env",
            "alertmanager.bearer_token_file",
        ),
        base_dir,
        Need::Optional,
        p,
    );
    let has_password =
        raw.basic_auth_password_env.is_some() || raw.basic_auth_password_file.is_some();
    let has_bearer = raw.bearer_token_env.is_some() || raw.bearer_token_file.is_some();
    let auth = match (&raw.basic_auth_user, has_password, has_bearer) {
        (Some(u), _, true) => {
            p.add(
                Some(u.span()),
                "alertmanager.basic_auth_user",
                "both basic auth and a bearer token are configured".into(),
                "keep one: basic_auth_user + basic_auth_password_env/_file, or bearer_token_env/_file",
            );
            None
        }
        (Some(u), false, false) => {
            p.add(
                Some(u.span()),
                "alertmanager.basic_auth_user",
                "basic_auth_user without a password source".into(),
                "add basic_auth_password_env = \"WABA_MONITOR_ALERTMANAGER_PASSWORD\" (the NAME of a variable) or basic_auth_password_file = \"/run/credentials/waba-monitor.service/alertmanager-password\"",
            );
            None
        }
        (Some(u), true, false) => {
            let user = u.get_ref().trim();
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                p.add(
                    Some(u.span()),
                    "alertmanager.basic_auth_user",
                    "the user name is empty or holds a ':' or a control character".into(),
                    "write the user name alone, e.g. basic_auth_user = \"waba-monitor\"",
                );
                None
            } else {
                password.map(|password| AlertmanagerAuth::Basic {
                    user: user.to_owned(),
                    password,
                })
            }
        }
        (None, true, _) => {
            let span = raw
                .basic_auth_password_env
                .as_ref()
                .or(raw.basic_auth_password_file.as_ref())
                .map(Spanned::span);
            p.add(
                span,
                "alertmanager.basic_auth_user",
                "a basic auth password without basic_auth_user".into(),
                "add basic_auth_user = \"waba-monitor\" (or use bearer_token_env/_file instead)",
            );
            None
        }
        (None, false, true) => bearer.map(AlertmanagerAuth::Bearer),
        (None, false, false) => Some(AlertmanagerAuth::None),
    };
    if let Some(a) = &auth
        && *a != AlertmanagerAuth::None
    {
        // Credentials never travel in clear over a network.
        let (key, list): (&str, Vec<(usize, &Spanned<String>)>) = match (&raw.url, &raw.urls) {
            (Some(u), _) => ("alertmanager.url", vec![(0, u)]),
            (None, Some(l)) => (
                "alertmanager.urls",
                l.get_ref().iter().enumerate().collect(),
            ),
            _ => ("alertmanager.url", Vec::new()),
        };
        for (i, v) in list {
            if let Ok(u) = Url::parse(v.get_ref().trim())
                && u.scheme() == "http"
                && !is_loopback_host(&u)
            {
                let key = if key == "alertmanager.urls" {
                    format!("{key}[{i}]")
                } else {
                    key.to_owned()
                };
                p.add(
                    Some(v.span()),
                    &key,
                    "plain http would send the Alertmanager credentials in clear over the network"
                        .into(),
                    "use an https URL (plain http with credentials is accepted for loopback only)",
                );
            }
        }
    }
    let external_url = raw
        .external_url
        .as_ref()
        .and_then(|u| link_url(u, "alertmanager.external_url", p));
    let runbook_url = raw.runbook_url.as_ref().and_then(|u| {
        link_url(u, "alertmanager.runbook_url", p).map(|_| u.get_ref().trim().to_owned())
    });
    if p.has_under("alertmanager.") {
        return None;
    }
    Some(AlertmanagerConfig {
        urls,
        timeout,
        auth: auth?,
        external_url,
        runbook_url,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::AlertmanagerAuth;
    use crate::config::Config;
    use crate::config::tests::{GOOD, located};

    fn with(block: &str) -> String {
        format!("{GOOD}\n[alertmanager]\n{block}")
    }

    fn line_of(src: &str, needle: &str) -> usize {
        src.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .expect("needle in the source")
    }

    #[test]
    fn one_url_or_a_cluster_validates() {
        let c = Config::from_toml(
            Path::new("/etc/x/monitor.toml"),
            &with("url = \"http://127.0.0.1:9093\"\ntimeout = \"5s\"\n"),
        )
        .expect("valid");
        let am = c.alertmanager.expect("[alertmanager]");
        assert_eq!(am.urls.len(), 1);
        assert_eq!(am.timeout.as_secs(), 5);
        assert_eq!(am.auth, AlertmanagerAuth::None);
        let c = Config::from_toml(
            Path::new("/etc/x/monitor.toml"),
            &with(
                "urls = [\"https://am1.example.com\", \"https://am2.example.com/alertmanager\"]\nbearer_token_env = \"AM_TOKEN\"\nrunbook_url = \"https://wiki.example.com/runbooks/{alertname}\"\nexternal_url = \"https://monitor.example.com\"\n",
            ),
        )
        .expect("valid");
        let am = c.alertmanager.expect("[alertmanager]");
        assert_eq!(am.urls.len(), 2);
        assert!(matches!(am.auth, AlertmanagerAuth::Bearer(_)));
        assert_eq!(
            am.runbook_url.as_deref(),
            Some("https://wiki.example.com/runbooks/{alertname}")
        );
    }

    #[test]
    fn every_alertmanager_problem_names_its_key_and_line() {
        let src = with(
            "urls = [\"ftp://am.example.com\", \"http://u:p@am.example.com\", \"https://a.example.com\", \"https://a.example.com\"]\ntimeout = \"1h\"\nbasic_auth_user = \"me\"\nbearer_token_env = \"not a name\"\nfoo = 1\n",
        );
        let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
        let keys = located(&e);
        let urls_line = line_of(&src, "urls =");
        for (key, line) in [
            ("alertmanager.urls[0]", urls_line),
            ("alertmanager.urls[1]", urls_line),
            ("alertmanager.urls[3]", urls_line),
            ("alertmanager.timeout", line_of(&src, "timeout =")),
            (
                "alertmanager.basic_auth_user",
                line_of(&src, "basic_auth_user"),
            ),
            (
                "alertmanager.bearer_token_env",
                line_of(&src, "bearer_token_env"),
            ),
            ("alertmanager.foo", line_of(&src, "foo =")),
        ] {
            assert!(
                keys.contains(&(key.to_owned(), Some(line))),
                "{key} at {line} missing from {keys:?}\n{e}"
            );
        }
    }

    #[test]
    fn a_section_without_url_and_auth_halves_are_refused() {
        let e = Config::from_toml(Path::new("m.toml"), &with("timeout = \"5s\"\n")).unwrap_err();
        assert!(
            located(&e)
                .iter()
                .any(|(k, l)| k == "alertmanager.url" && l.is_some()),
            "{e}"
        );
        let e = Config::from_toml(
            Path::new("m.toml"),
            &with("url = \"http://127.0.0.1:9093\"\nbasic_auth_password_env = \"AM_PW\"\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("basic_auth_user"), "{e}");
        let e = Config::from_toml(
            Path::new("m.toml"),
            &with("url = \"http://am.example.com:9093\"\nbearer_token_env = \"AM_TOKEN\"\n"),
        )
        .unwrap_err();
        assert!(
            located(&e)
                .iter()
                .any(|(k, l)| k == "alertmanager.url" && l.is_some()),
            "credentials over plain http to another host: {e}"
        );
        // Without credentials, plain http inside a network is accepted.
        assert!(
            Config::from_toml(
                Path::new("m.toml"),
                &with("url = \"http://am.example.com:9093\"\n")
            )
            .is_ok()
        );
    }

    #[test]
    fn every_key_is_documented_in_the_reference_config() {
        let reference =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/monitor.toml"))
                .expect("monitor.toml");
        assert!(reference.contains("# [alertmanager]\n"));
        for key in super::KEYS {
            assert!(
                reference.contains(&format!("\n# {key} = ")),
                "{key} is not in monitor.toml's commented [alertmanager] section"
            );
        }
    }

    #[test]
    fn a_missing_password_variable_fails_the_start_check_with_its_key() {
        let dir = std::env::temp_dir().join(format!("am-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("monitor.toml");
        let src = with(
            "url = \"http://127.0.0.1:9093\"\nbasic_auth_user = \"me\"\nbasic_auth_password_env = \"WABA_MONITOR_AM_PW_SURELY_UNSET\"\n",
        );
        std::fs::write(&path, &src).expect("write");
        // SAFETY-free: only reading; the variable is never set by any test.
        let e = Config::load_for_start(&path).unwrap_err();
        assert!(
            located(&e).contains(&(
                "alertmanager.basic_auth_password_env".to_owned(),
                Some(line_of(&src, "basic_auth_password_env"))
            )),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
