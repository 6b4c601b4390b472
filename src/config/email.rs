//! `[email]`: where alerts are sent (an SMTP server, or a folder of .eml files), how the
//! connection is secured, the addresses, and how long delivery may take.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Span;
use super::checks::{MAX_EMAIL_AGE, MAX_SMTP_TIMEOUT, duration_key};
use super::problems::Problems;
use super::raw::RawEmail;
use super::secret_keys::{Need, secret_source};
use crate::secrets::SecretSource;

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

impl fmt::Display for SmtpTls {
    /// As written in the config: `starttls`, `tls` or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        })
    }
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
    /// Linked from every email (`[email] dashboard_url`), e.g. the Grafana dashboard.
    pub dashboard_url: Option<url::Url>,
}

pub(super) fn validate_email(
    section: Span,
    raw: RawEmail,
    base_dir: &Path,
    has_routes: bool,
    p: &mut Problems<'_>,
) -> Option<EmailConfig> {
    let file_dir = raw.file_dir.as_ref().map(|d| base_dir.join(d.get_ref()));
    let host = match (&raw.smtp_host, &file_dir) {
        (Some(h), _) => {
            let host = h.get_ref().trim().to_owned();
            if !is_host_name(&host) {
                p.add(
                    Some(h.span()),
                    "email.smtp_host",
                    format!("\"{}\" is not a host name", h.get_ref()),
                    "write the server's name only, e.g. \"smtp.example.com\" (no scheme; the port goes in smtp_port)",
                );
            }
            host
        }
        (None, Some(_)) => "localhost".to_owned(),
        (None, None) => {
            p.add(
                Some(section.clone()),
                "email.smtp_host",
                "[email] has no smtp_host".into(),
                "add smtp_host = \"smtp.example.com\" (or file_dir = \"emails\" to write .eml files instead)",
            );
            String::new()
        }
    };
    let tls = match &raw.tls {
        None => SmtpTls::StartTls,
        Some(t) => match t.get_ref().trim().to_ascii_lowercase().as_str() {
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            _ => {
                let other = t.get_ref();
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
    match &raw.from {
        Some(from) if !mailbox_ok(from.get_ref()) => p.add(
            Some(from.span()),
            "email.from",
            format!("\"{}\" is not an email address", from.get_ref()),
            "write \"monitor@example.com\" or \"waba-monitor <monitor@example.com>\"",
        ),
        Some(_) => {}
        None if p.has("email.from") => {}
        None => p.add(
            Some(section.clone()),
            "email.from",
            "[email] has no sender".into(),
            "add from = \"waba-monitor <monitor@example.com>\"",
        ),
    }
    let mut to = Vec::new();
    match &raw.to {
        Some(list) if list.get_ref().is_empty() && !has_routes => p.add(
            Some(list.span()),
            "email.to",
            "no recipient".into(),
            "list at least one address, e.g. to = [\"ops@example.com\"]",
        ),
        Some(_) => {}
        None if p.has("email.to") || has_routes => {}
        None => p.add(
            Some(section.clone()),
            "email.to",
            "[email] has no recipient".into(),
            "add to = [\"ops@example.com\"] (each address gets its own copy)",
        ),
    }
    for addr in raw
        .to
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or_default()
    {
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
        (Duration::from_secs(1), MAX_SMTP_TIMEOUT),
        p,
    );
    let max_age = duration_key(
        raw.max_age,
        "email.max_age",
        Duration::from_secs(24 * 3600),
        (Duration::from_secs(60), MAX_EMAIL_AGE),
        p,
    );
    let dashboard_url = match &raw.dashboard_url {
        None => None,
        Some(u) => match url::Url::parse(u.get_ref().trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                p.add(
                    Some(u.span()),
                    "email.dashboard_url",
                    format!("\"{}\" is not an http(s) URL", u.get_ref()),
                    "write the full address of your dashboard, e.g. \"https://grafana.example.com/d/waba-monitor\"",
                );
                None
            }
        },
    };
    if p.has_under("email.") {
        return None;
    }
    Some(EmailConfig {
        file_dir,
        smtp_host: host,
        smtp_port,
        tls,
        username: raw.username.map(|u| u.into_inner()),
        password,
        from: raw.from?.into_inner(),
        to,
        timeout,
        max_age,
        dashboard_url,
    })
}

/// A host name (letters, digits, '-', '_', dots) or an IP address: what the SMTP client can
/// connect to (no scheme, no port, no spaces).
fn is_host_name(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::SmtpTls;
    use crate::config::Config;
    use crate::config::tests::GOOD;

    #[test]
    fn the_tls_mode_is_accepted_in_any_case() {
        let src = format!(
            "{GOOD}\n[email]\nsmtp_host = \"smtp.example.com\"\ntls = \"STARTTLS\"\nfrom = \"m@example.com\"\nto = [\"o@example.com\"]\n"
        );
        let c = Config::from_toml(Path::new("m.toml"), &src).expect("valid");
        assert_eq!(c.email.expect("email").tls, SmtpTls::StartTls);
    }
}
