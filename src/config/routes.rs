//! `[[route]]`: who gets which alerts (by business, WABA, number or source, and severity), by
//! email and/or a webhook; and `[heartbeat]`: the dead-man URL requested after every cycle.

use std::collections::BTreeSet;
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::bsp::BspSourceConfig;
use super::checks::{duration_key, is_loopback_host};
use super::meta::MetaSourceConfig;
use super::problems::Problems;
use super::raw::{RawHeartbeat, RawRoute};

/// How a route's webhook is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The digest as JSON (items, severities, targets, an idempotency key).
    Json,
    /// A Slack/Mattermost incoming-webhook payload: `{"text": "..."}`.
    Slack,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookFormat> {
        match s {
            "json" => Some(WebhookFormat::Json),
            "slack" => Some(WebhookFormat::Slack),
            _ => None,
        }
    }
}

/// The least severity a route takes: resolved and improving notices follow their alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MinSeverity {
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub businesses: Vec<String>,
    pub wabas: Vec<String>,
    pub numbers: Vec<String>,
    pub sources: Vec<String>,
    pub min_severity: MinSeverity,
    pub email_to: Vec<String>,
    pub webhook_url: Option<Url>,
    pub webhook_format: WebhookFormat,
    /// Keep matching later routes too.
    pub continue_: bool,
    /// The line of `[[route]]` in the file (for `check-config`).
    pub line: Option<usize>,
}

/// What a target is, for matching routes and silences.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetRef<'a> {
    pub business_id: Option<&'a str>,
    pub waba_id: Option<&'a str>,
    /// A phone number's id (None for a WABA, a template or a source).
    pub number_id: Option<&'a str>,
    pub source: Option<&'a str>,
}

impl RouteConfig {
    /// Whether the route takes a target: it matches every non-empty list (a list matches when
    /// the target's value is in it).
    pub fn matches(&self, t: &TargetRef<'_>) -> bool {
        let ok = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        ok(&self.businesses, t.business_id)
            && ok(&self.wabas, t.waba_id)
            && ok(&self.numbers, t.number_id)
            && ok(&self.sources, t.source)
    }

    /// Whether the route takes an alert of `severity` ("critical", "warning", "improving",
    /// "resolved", "reminder"); `opened` is the severity of the alert a resolved, improving or
    /// reminder notice follows (None: unknown, taken).
    pub fn takes(&self, severity: &str, opened: Option<&str>) -> bool {
        let level = match severity {
            "critical" => Some(MinSeverity::Critical),
            "warning" => Some(MinSeverity::Warning),
            _ => match opened {
                Some("critical") => Some(MinSeverity::Critical),
                Some("warning") => Some(MinSeverity::Warning),
                _ => None,
            },
        };
        level.is_none_or(|l| l >= self.min_severity)
    }
}

/// `[heartbeat]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    /// Requested (GET) after every cycle that read anything; `url` + `/fail` after one that
    /// read nothing.
    pub url: Url,
    pub timeout: Duration,
}

fn http_url(v: &Spanned<String>, key: &str, p: &mut Problems<'_>) -> Option<Url> {
    match Url::parse(v.get_ref().trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if u.scheme() == "http" && !is_loopback_host(&u) {
                p.add(
                    Some(v.span()),
                    key,
                    "plain http would send alerts in clear over the network".into(),
                    "use an https URL (plain http is accepted for loopback receivers only)",
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
                "write the full URL, e.g. \"https://hooks.example.com/waba-monitor\"",
            );
            None
        }
    }
}

/// What the sources can report, for refusing a route that can match nothing.
struct Known<'a> {
    meta: &'a [MetaSourceConfig],
    bsp: &'a [BspSourceConfig],
}

impl Known<'_> {
    /// WABAs are discovered (from a portfolio or a BSP's listing): any id may exist.
    fn discovers_wabas(&self) -> bool {
        !self.bsp.is_empty() || self.meta.iter().any(|m| !m.businesses.is_empty())
    }
    /// Numbers are discovered under WABAs: any id may exist.
    fn discovers_numbers(&self) -> bool {
        self.discovers_wabas() || self.meta.iter().any(|m| !m.wabas.is_empty())
    }
    fn waba(&self, id: &str) -> bool {
        self.discovers_wabas() || self.meta.iter().any(|m| m.wabas.iter().any(|w| w == id))
    }
    fn number(&self, id: &str) -> bool {
        self.discovers_numbers()
            || self
                .meta
                .iter()
                .any(|m| m.phone_numbers.iter().any(|n| n == id))
    }
    fn business(&self, id: &str) -> bool {
        !self.bsp.is_empty()
            || self
                .meta
                .iter()
                .any(|m| m.businesses.iter().any(|b| b == id))
    }
    fn source(&self, name: &str) -> bool {
        self.meta.iter().any(|m| m.name == name) || self.bsp.iter().any(|b| b.name == name)
    }
}

pub(super) fn validate_routes(
    raw: Vec<Spanned<RawRoute>>,
    meta: &[MetaSourceConfig],
    bsp: &[BspSourceConfig],
    line_of: impl Fn(usize) -> usize,
    p: &mut Problems<'_>,
) -> Vec<RouteConfig> {
    let known = Known { meta, bsp };
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let span = r.span();
        let r = r.into_inner();
        let k = |name: &str| format!("route[{i}].{name}");
        let name = match &r.name {
            Some(n) if !n.get_ref().trim().is_empty() => {
                let n2 = n.get_ref().trim().to_owned();
                if !names.insert(n2.clone()) {
                    p.add(
                        Some(n.span()),
                        &k("name"),
                        format!("route name \"{n2}\" is used twice"),
                        "give each [[route]] its own name",
                    );
                }
                n2
            }
            _ => {
                p.add(
                    Some(r.name.as_ref().map_or(span.clone(), |n| n.span())),
                    &k("name"),
                    "this [[route]] has no name".into(),
                    "add name = \"acme\" (it names the route in logs and check-config)",
                );
                String::new()
            }
        };
        let ids = |list: Vec<Spanned<String>>,
                   key: &str,
                   what: &str,
                   known_id: &dyn Fn(&str) -> bool,
                   p: &mut Problems<'_>| {
            let mut v = Vec::new();
            for id in list {
                let s = id.get_ref().trim();
                if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
                    p.add(
                        Some(id.span()),
                        key,
                        format!("\"{}\" is not a Meta {what} id", id.get_ref()),
                        "ids are the numeric ids from WhatsApp Manager or the API",
                    );
                } else if !known_id(s) {
                    p.add(
                        Some(id.span()),
                        key,
                        format!("{what} {s} is not monitored by any source, so this route can never match it"),
                        &format!("check the id (a typo?), or add it to a [[meta]] source's {what}s"),
                    );
                } else {
                    v.push(s.to_owned());
                }
            }
            v
        };
        let businesses = ids(
            r.businesses,
            &k("businesses"),
            "business",
            &|s| known.business(s),
            p,
        );
        let wabas = ids(r.wabas, &k("wabas"), "WABA", &|s| known.waba(s), p);
        let numbers = ids(
            r.numbers,
            &k("numbers"),
            "phone number",
            &|s| known.number(s),
            p,
        );
        let mut sources = Vec::new();
        for s in r.sources {
            if known.source(s.get_ref().trim()) {
                sources.push(s.get_ref().trim().to_owned());
            } else {
                p.add(
                    Some(s.span()),
                    &k("sources"),
                    format!("no source is named \"{}\"", s.get_ref()),
                    "use the name of a [[meta]] or [[bsp]] block",
                );
            }
        }
        let min_severity = match r.min_severity.as_ref().map(|s| s.get_ref().trim()) {
            None | Some("warning") => MinSeverity::Warning,
            Some("critical") => MinSeverity::Critical,
            Some(other) => {
                p.add(
                    r.min_severity.as_ref().map(|s| s.span()),
                    &k("min_severity"),
                    format!("\"{other}\" is not a severity"),
                    "use \"warning\" (the default) or \"critical\"",
                );
                MinSeverity::Warning
            }
        };
        let mut email_to = Vec::new();
        for addr in &r.email_to {
            if addr.get_ref().parse::<lettre::message::Mailbox>().is_ok() {
                email_to.push(addr.get_ref().trim().to_owned());
            } else {
                p.add(
                    Some(addr.span()),
                    &k("email_to"),
                    format!("\"{}\" is not an email address", addr.get_ref()),
                    "write \"ops@example.com\"",
                );
            }
        }
        let webhook_url = r
            .webhook_url
            .as_ref()
            .and_then(|u| http_url(u, &k("webhook_url"), p));
        let webhook_format = match r.webhook_format.as_ref() {
            None => WebhookFormat::Json,
            Some(f) => WebhookFormat::parse(f.get_ref().trim()).unwrap_or_else(|| {
                p.add(
                    Some(f.span()),
                    &k("webhook_format"),
                    format!("\"{}\" is not a webhook format", f.get_ref()),
                    "use \"json\" (the default) or \"slack\" (Slack/Mattermost incoming webhooks)",
                );
                WebhookFormat::Json
            }),
        };
        if r.email_to.is_empty() && r.webhook_url.is_none() {
            p.add(
                Some(span.clone()),
                &k("email_to"),
                "this route sends its alerts nowhere".into(),
                "add email_to = [\"team@example.com\"] and/or webhook_url = \"https://...\"",
            );
        }
        out.push(RouteConfig {
            name,
            businesses,
            wabas,
            numbers,
            sources,
            min_severity,
            email_to,
            webhook_url,
            webhook_format,
            continue_: r.continue_.is_some_and(Spanned::into_inner),
            line: Some(line_of(span.start)),
        });
    }
    out
}

pub(super) fn validate_heartbeat(
    raw: RawHeartbeat,
    section: std::ops::Range<usize>,
    p: &mut Problems<'_>,
) -> Option<HeartbeatConfig> {
    let timeout = duration_key(
        raw.timeout,
        "heartbeat.timeout",
        Duration::from_secs(10),
        (Duration::from_millis(100), Duration::from_secs(60)),
        p,
    );
    let Some(u) = raw.url else {
        p.add(
            Some(section),
            "heartbeat.url",
            "[heartbeat] has no url".into(),
            "add url = \"https://hc-ping.com/<uuid>\" (requested after every cycle; url/fail after a blind one)",
        );
        return None;
    };
    let url = http_url(&u, "heartbeat.url", p)?;
    Some(HeartbeatConfig { url, timeout })
}
