//! `[webhooks]`: the receiver of Meta's webhook deliveries — its own listener (it faces Meta,
//! behind a TLS proxy; `/metrics` and `/api` stay on `[daemon] listen`), the callback path, the
//! app secret that signs every delivery and the verify token of the subscription handshake.

use std::net::SocketAddr;
use std::path::Path;

use super::Span;
use super::problems::Problems;
use super::raw::RawWebhooks;
use super::secret_keys::{Need, secret_source};
use crate::secrets::SecretSource;

pub const DEFAULT_WEBHOOK_LISTEN: &str = "127.0.0.1:9718";
pub const DEFAULT_WEBHOOK_PATH: &str = "/webhooks/meta";

#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// The webhook listener (not `[daemon] listen`).
    pub listen: SocketAddr,
    /// The callback path: `GET` is the subscription handshake, `POST` a delivery.
    pub path: String,
    /// Keys the `X-Hub-Signature-256` HMAC of every delivery.
    pub app_secret: SecretSource,
    /// What Meta sends as `hub.verify_token` when the callback URL is (re)subscribed.
    pub verify_token: SecretSource,
    /// The Meta app whose deliveries these are (for a later subscription check).
    pub app_id: Option<String>,
}

pub(super) fn validate_webhooks(
    section: Span,
    raw: RawWebhooks,
    daemon_listen: Option<SocketAddr>,
    base_dir: &Path,
    p: &mut Problems<'_>,
) -> Option<WebhooksConfig> {
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 9718));
    let listen = match &raw.listen {
        None => default_listen,
        Some(l) => match l.get_ref().trim().parse::<SocketAddr>() {
            Ok(a) => {
                if daemon_listen == Some(a) && a.port() != 0 {
                    p.add(
                        Some(l.span()),
                        "webhooks.listen",
                        format!("{a} is also [daemon] listen"),
                        &format!(
                            "give the webhook receiver its own port, e.g. \"{DEFAULT_WEBHOOK_LISTEN}\" (only it faces Meta, through the TLS proxy)"
                        ),
                    );
                }
                a
            }
            Err(_) => {
                p.add(
                    Some(l.span()),
                    "webhooks.listen",
                    format!("\"{}\" is not an IP address with a port", l.get_ref()),
                    &format!(
                        "write \"{DEFAULT_WEBHOOK_LISTEN}\" (host names are not resolved here)"
                    ),
                );
                default_listen
            }
        },
    };
    let path = match &raw.path {
        None => DEFAULT_WEBHOOK_PATH.to_owned(),
        Some(v) => {
            let path = v.get_ref().trim().to_owned();
            if let Err(why) = check_path(&path) {
                p.add(
                    Some(v.span()),
                    "webhooks.path",
                    format!("\"{}\" {why}", v.get_ref()),
                    &format!(
                        "write a path such as \"{DEFAULT_WEBHOOK_PATH}\": it starts with /, has no query, and uses letters, digits, '-', '_', '.', '~' between single slashes"
                    ),
                );
            }
            path
        }
    };
    let app_secret = secret_source(
        &raw.app_secret_env,
        &raw.app_secret_file,
        ("webhooks.app_secret_env", "webhooks.app_secret_file"),
        base_dir,
        Need::Required {
            span: section.clone(),
            what: "[webhooks] has no app secret, so no delivery could be verified",
            fix: "add app_secret_env = \"WABA_MONITOR_APP_SECRET\" or app_secret_file = \"/run/credentials/waba-monitor.service/app-secret\" (the Meta app's secret, App settings → Basic)",
        },
        p,
    );
    let verify_token = secret_source(
        &raw.verify_token_env,
        &raw.verify_token_file,
        ("webhooks.verify_token_env", "webhooks.verify_token_file"),
        base_dir,
        Need::Required {
            span: section,
            what: "[webhooks] has no verify token, so Meta's subscription handshake could not be answered",
            fix: "add verify_token_env = \"WABA_MONITOR_VERIFY_TOKEN\" or verify_token_file = \"/run/credentials/waba-monitor.service/verify-token\" (any random string, also entered in the app's webhook settings)",
        },
        p,
    );
    let app_id = match &raw.app_id {
        None => None,
        Some(v) => {
            let id = v.get_ref().trim();
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
                p.add(
                    Some(v.span()),
                    "webhooks.app_id",
                    format!("\"{}\" is not a Meta app id", v.get_ref()),
                    "write the app's numeric id as a string, e.g. app_id = \"123456789\" (or remove the key)",
                );
            }
            Some(id.to_owned())
        }
    };
    if p.has_under("webhooks.") {
        return None;
    }
    Some(WebhooksConfig {
        listen,
        path,
        app_secret: app_secret?,
        verify_token: verify_token?,
        app_id,
    })
}

/// A callback path the router can serve as written: `/`, then segments of unreserved
/// characters separated by single slashes.
fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("does not start with /");
    }
    if path.len() > 256 {
        return Err("is longer than 256 characters");
    }
    if path.contains("//") {
        return Err("has an empty segment (//)");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
    {
        return Err("has a character other than letters, digits, '/', '-', '_', '.', '~'");
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err("has a . or .. segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::tests::{GOOD, located};

    #[test]
    fn a_webhooks_section_validates_with_defaults() {
        let src = format!(
            "{GOOD}\n[webhooks]\napp_secret_env = \"WABA_MONITOR_APP_SECRET\"\nverify_token_file = \"verify-token\"\napp_id = \"123456789\"\n"
        );
        let c = Config::from_toml(Path::new("/etc/x/monitor.toml"), &src).expect("valid");
        let w = c.webhooks.expect("webhooks");
        assert_eq!(w.listen.to_string(), super::DEFAULT_WEBHOOK_LISTEN);
        assert_eq!(w.path, super::DEFAULT_WEBHOOK_PATH);
        assert_eq!(w.app_secret.describe(), "env WABA_MONITOR_APP_SECRET");
        assert_eq!(w.verify_token.describe(), "file /etc/x/verify-token");
        assert_eq!(w.app_id.as_deref(), Some("123456789"));
        let without = Config::from_toml(Path::new("m.toml"), GOOD).expect("valid");
        assert!(without.webhooks.is_none());
    }

    #[test]
    fn every_webhooks_problem_is_located_with_a_fix() {
        // Line numbers: GOOD has 9 lines, then a blank one.
        let src = format!(
            "{GOOD}\n[webhooks]\nlisten = \"localhost:9718\"\npath = \"webhooks/{{id}}\"\napp_secret_env = \"WABA_MONITOR_APP_SECRET\"\napp_secret_file = \"secret\"\napp_id = \"my-app\"\nverfy_token_env = \"X\"\n"
        );
        let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
        let got = located(&e);
        for (key, line) in [
            ("webhooks", 11),
            ("webhooks.listen", 12),
            ("webhooks.path", 13),
            ("webhooks.app_secret_file", 15),
            ("webhooks.app_id", 16),
            ("webhooks.verfy_token_env", 17),
        ] {
            let found = got
                .iter()
                .any(|(k, l)| (k == key || k.starts_with(&format!("{key}."))) && *l == Some(line));
            assert!(found, "{key} at {line} missing from {got:?}\n{e}");
        }
        let text = e.to_string();
        assert!(text.contains("did you mean `verify_token_env`"), "{text}");
        assert!(text.contains("no verify token"), "{text}");
        assert!(e.problems.iter().all(|p| p.fix.is_some()), "{text}");
    }

    #[test]
    fn the_webhook_listener_cannot_share_the_daemon_port() {
        let src = format!(
            "{GOOD}\n[webhooks]\nlisten = \"127.0.0.1:9717\"\napp_secret_env = \"A\"\nverify_token_env = \"B\"\n"
        );
        let e = Config::from_toml(Path::new("m.toml"), &src).unwrap_err();
        assert_eq!(
            located(&e),
            [("webhooks.listen".to_owned(), Some(12))],
            "{e}"
        );
    }

    #[test]
    fn callback_paths_the_router_cannot_serve_are_refused() {
        for bad in [
            "", "x", "/a//b", "/a b", "/{id}", "/*rest", "/:id", "/a?x=1", "/../x",
        ] {
            assert!(super::check_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["/", "/webhooks/meta", "/hook-1_2.x~y"] {
            assert!(super::check_path(good).is_ok(), "{good:?} refused");
        }
    }
}
