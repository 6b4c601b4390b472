//! `[alertmanager]`: every open alert posted to Prometheus Alertmanager (`POST /api/v2/alerts`)
//! with its evidence, so Alertmanager's routes, silences, inhibitions and receivers apply to it.
//!
//! A **snapshot** — every open alert with `endsAt` [`AlertmanagerRouting::lead`] ahead, and every
//! alert that ended within that lead with `endsAt` = when it ended — goes into the outbox for
//! each configured Alertmanager: in the transaction that records a cycle's (or a webhook
//! delivery's) alerts, and every [`AlertmanagerRouting::refresh`] from the delivery worker. A
//! new snapshot replaces the older rows of its Alertmanager not yet in flight (it says
//! everything they said), so a down Alertmanager finds the current state when it is back, and
//! an alert the monitor stops posting (it died) resolves by itself at its `endsAt`.
//!
//! Labels are stable and low-cardinality (what routes and silences match on); `alertname` is
//! the name of the shipped Prometheus rule about the same thing where there is one
//! (`deploy/prometheus/alerts.yml`), so one silence covers both. Everything else — names,
//! old and new value, since when, Meta's error codes and possible solutions — is annotations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::delivery::{HookVerdict, hook_verdict};
use super::mailer::SendFailure;
use super::render::{self, AlertItem, FIELD_BYTES, clean};
use crate::alerts::rules::{self, Severity};
use crate::config::{AlertmanagerAuth, AlertmanagerConfig, Config};
use crate::model::TargetKind;
use crate::store::outbox::{NewMessage, Tx};
use crate::store::{StoreError, alertmanager as am_store, silences};
use crate::timefmt::rfc3339;

/// The outbox channel of Alertmanager snapshots.
pub const CHANNEL: &str = "alertmanager";

/// The most often a snapshot is posted again: Alertmanager wants alerts re-sent well within
/// its `resolve_timeout` (5 min by default).
pub const MAX_REFRESH: Duration = Duration::from_secs(60);

/// How many refresh periods ahead an open alert's `endsAt` is set.
pub const LEAD_PERIODS: u32 = 4;

/// The most bytes of an annotation (Meta's texts, the description).
const ANNOTATION_BYTES: usize = 4096;

/// What the cycle needs to queue snapshots (no secrets: those stay with the delivery worker).
#[derive(Debug, Clone)]
pub struct AlertmanagerRouting {
    /// Each Alertmanager's base URL as configured (the outbox row's recipient).
    pub urls: Vec<String>,
    /// How often the open alerts are posted again: every cycle or every minute, whichever is
    /// sooner.
    pub refresh: Duration,
    /// How far ahead of now an open alert's `endsAt` is.
    pub lead: Duration,
    /// Where the status page is reached (`generatorURL`).
    pub page_base: Option<url::Url>,
    pub runbook_url: Option<String>,
}

impl AlertmanagerRouting {
    /// `None` without `[alertmanager]`.
    pub fn from_config(cfg: &Config) -> Option<AlertmanagerRouting> {
        let am = cfg.alertmanager.as_ref()?;
        let interval = cfg.daemon.poll_schedule.min_interval(Utc::now());
        let refresh = interval.clamp(Duration::from_secs(1), MAX_REFRESH);
        let page_base = am.external_url.clone().or_else(|| {
            let listen = cfg.daemon.listen;
            (!listen.ip().is_unspecified() && listen.port() != 0)
                .then(|| url::Url::parse(&format!("http://{listen}/")).ok())
                .flatten()
        });
        Some(AlertmanagerRouting {
            urls: am.urls.iter().map(|u| u.to_string()).collect(),
            refresh,
            lead: refresh * LEAD_PERIODS,
            page_base,
            runbook_url: am.runbook_url.clone(),
        })
    }
}

/// What the delivery worker needs to post: the URLs, the credentials (read when the runtime is
/// built, like every secret) and the HTTP client.
pub struct Alertmanager {
    pub routing: AlertmanagerRouting,
    auth: LoadedAuth,
    timeout: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for Alertmanager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alertmanager")
            .field("urls", &self.routing.urls)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

enum LoadedAuth {
    None,
    Basic {
        user: String,
        password: SecretString,
    },
    Bearer(SecretString),
}

impl Alertmanager {
    /// `None` without `[alertmanager]`; an error when a credential cannot be read.
    pub fn new(cfg: &Config) -> anyhow::Result<Option<Alertmanager>> {
        let (Some(am), Some(routing)) = (&cfg.alertmanager, AlertmanagerRouting::from_config(cfg))
        else {
            return Ok(None);
        };
        Ok(Some(Alertmanager::build(am, routing)?))
    }

    fn build(
        am: &AlertmanagerConfig,
        routing: AlertmanagerRouting,
    ) -> anyhow::Result<Alertmanager> {
        let auth = match &am.auth {
            AlertmanagerAuth::None => LoadedAuth::None,
            AlertmanagerAuth::Basic { user, password } => LoadedAuth::Basic {
                user: user.clone(),
                password: password
                    .load()
                    .context("could not read the [alertmanager] basic auth password")?,
            },
            AlertmanagerAuth::Bearer(token) => LoadedAuth::Bearer(
                token
                    .load()
                    .context("could not read the [alertmanager] bearer token")?,
            ),
        };
        let http = reqwest::Client::builder()
            .timeout(am.timeout)
            .connect_timeout(am.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("waba-monitor/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))
            .context("could not build the [alertmanager] HTTP client")?;
        Ok(Alertmanager {
            routing,
            auth,
            timeout: am.timeout,
            http,
        })
    }

    /// Whether `url` (an outbox row's recipient) is one of this config's Alertmanagers.
    pub fn knows(&self, url: &str) -> bool {
        self.routing.urls.iter().any(|u| u == url)
    }

    /// POSTs a snapshot to `{base}/api/v2/alerts`. `Ok` on a 2xx; 4xx other than 408 and 429 is
    /// permanent, the rest transient. No error text holds a credential or the URL's path.
    pub async fn post(&self, base: &str, body: &str) -> Result<String, SendFailure> {
        let origin = super::hook::origin(base);
        let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
        let mut req = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        req = match &self.auth {
            LoadedAuth::None => req,
            LoadedAuth::Basic { user, password } => {
                req.basic_auth(user, Some(password.expose_secret()))
            }
            LoadedAuth::Bearer(token) => req.bearer_auth(token.expose_secret()),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(SendFailure::Transient(format!(
                    "{origin} did not answer within {}",
                    crate::timefmt::format_duration(self.timeout)
                )));
            }
            Err(e) => {
                let text = super::hook::error_text(e);
                let text = crate::redact::redact(&format!(
                    "{origin}: {}",
                    super::hook::scrub(&text, base)
                ));
                return Err(SendFailure::Transient(text));
            }
        };
        let status = resp.status();
        let verdict = hook_verdict(status.as_u16());
        if verdict == HookVerdict::Delivered {
            return Ok(format!("HTTP {status}"));
        }
        let answer = resp.text().await.unwrap_or_default();
        let answer = crate::redact::redact(&super::hook::scrub(&clean(&answer, 200), base));
        let text = if answer.trim().is_empty() {
            format!("HTTP {status} from {origin}")
        } else {
            format!("HTTP {status} from {origin}: {}", answer.trim())
        };
        match verdict {
            HookVerdict::Refused => Err(SendFailure::Permanent(text)),
            _ => Err(SendFailure::Transient(text)),
        }
    }
}

/// Queues a snapshot for every Alertmanager, in the caller's transaction. Returns how many
/// alerts it holds (open and ended).
pub async fn queue_in(
    tx: &mut Tx<'_>,
    am: &AlertmanagerRouting,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let open = am_store::open_alerts_in(tx).await?;
    let since = crate::timefmt::checked_ago(now, am.lead).unwrap_or(now);
    let recent = am_store::recent_changes_in(tx, &rfc3339(since)).await?;
    let active = silences::active_in(tx, now).await?;
    let silenced = |i: &AlertItem| active.iter().any(|s| s.matchers.matches(&i.target_ref()));
    let ends = rfc3339(crate::timefmt::saturating_after(now, am.lead));
    let mut alerts = Vec::new();
    let mut open_sets = BTreeSet::new();
    for o in open {
        let mut item = AlertItem::from(o.alert);
        let Some((name, severity)) = identity(
            &item.kind,
            &item.topic,
            &item.field,
            o.value.as_deref(),
            Some(&item.severity),
        ) else {
            continue;
        };
        // What it is about now (an improved alert is still open, on its new value).
        item.new = o.value.clone().or(item.new);
        let labels = labels(&item, &name, severity);
        open_sets.insert(labels.clone());
        if silenced(&item) {
            continue;
        }
        alerts.push(alert(am, &item, labels, &o.opened_at, &ends, true));
    }
    let mut ended = BTreeSet::new();
    for r in recent {
        let item = AlertItem::from(r);
        let Some((name, severity)) = identity(
            &item.kind,
            &item.topic,
            &item.field,
            item.old.as_deref(),
            None,
        ) else {
            continue;
        };
        let labels = labels(&item, &name, severity);
        if open_sets.contains(&labels) || !ended.insert(labels.clone()) || silenced(&item) {
            continue;
        }
        let starts = item
            .previous_since
            .clone()
            .filter(|s| s.as_str() <= item.created_at.as_str())
            .unwrap_or_else(|| item.created_at.clone());
        let end = item.created_at.clone();
        alerts.push(alert(am, &item, labels, &starts, &end, false));
    }
    let count = alerts.len();
    let body = Value::Array(alerts).to_string();
    for url in &am.urls {
        let key = snapshot_key(url, now);
        am_store::queue_snapshot_in(
            tx,
            &NewMessage {
                recipient: url,
                message_id: &key,
                subject: &format!("{count} alert(s) for Alertmanager"),
                body: &body,
                references: "",
                channel: CHANNEL,
                content_type: Some("application/json"),
                html: None,
            },
            now,
        )
        .await?;
    }
    Ok(count)
}

/// A snapshot's outbox key: unique per Alertmanager and snapshot.
fn snapshot_key(url: &str, now: DateTime<Utc>) -> String {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    format!(
        "alertmanager-{:016x}-{}-{}-{}",
        h.finish(),
        now.timestamp_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The alert's name and severity label, from what it is about (kind, topic key, field) and
/// the value it is open on. `None`: not an alert-worthy value (nothing to post).
/// `state_severity`: the open alert's own severity, used when the rule table says nothing of
/// the value alone.
pub fn identity(
    kind: &str,
    topic: &str,
    field: &str,
    value: Option<&str>,
    state_severity: Option<&str>,
) -> Option<(String, &'static str)> {
    let base = topic.split(':').next().unwrap_or(topic);
    if kind == "source" || base == "blind" {
        return Some(("WhatsAppMonitoringBlind".to_owned(), "critical"));
    }
    let value = value?;
    let target = TargetKind::parse(kind)?;
    let judged = if base == "limit" {
        Some(Severity::Warning)
    } else {
        // Any earlier value but RED: the value's own class (YELLOW is a warning, not
        // "improving").
        rules::verdict_for(target, field, Some("\u{1}"), value).map(|v| v.severity)
    };
    let severity = match judged {
        Some(Severity::Critical) => "critical",
        Some(Severity::Warning | Severity::Improving) => "warning",
        Some(_) => return None,
        None => match state_severity {
            Some("critical") => "critical",
            Some("warning" | "improving") => "warning",
            _ => return None,
        },
    };
    let critical = severity == "critical";
    let name = match (target, base) {
        (TargetKind::PhoneNumber, "quality") if critical => "WhatsAppNumberQualityRed".into(),
        (TargetKind::PhoneNumber, "quality") => "WhatsAppNumberQualityYellow".into(),
        (TargetKind::PhoneNumber, "status") if critical => "WhatsAppNumberBanned".into(),
        (TargetKind::PhoneNumber, "status") => "WhatsAppNumberRestricted".into(),
        (TargetKind::PhoneNumber, "health") => "WhatsAppNumberCannotSend".into(),
        (TargetKind::PhoneNumber, "limit") => "WhatsAppMessagingLimitLowered".into(),
        (TargetKind::Waba, "review") => "WhatsAppWabaReviewRejected".into(),
        (TargetKind::Waba, "ban") => "WhatsAppWabaBanned".into(),
        (TargetKind::PhoneNumber, "ban") => "WhatsAppNumberBanned".into(),
        (TargetKind::Template, "status") => match value {
            "DISABLED" => "WhatsAppTemplateDisabled".into(),
            "PAUSED" => "WhatsAppTemplatePaused".into(),
            other => format!("WhatsAppTemplate{}", camel(&other.to_ascii_lowercase())),
        },
        (TargetKind::Template, "quality") if critical => "WhatsAppTemplateQualityRed".into(),
        (TargetKind::Template, "quality") => "WhatsAppTemplateQualityYellow".into(),
        (_, "presence") => format!("WhatsApp{}Gone", kind_word(target)),
        (_, "limit") => format!("WhatsApp{}MessagingLimitLowered", kind_word(target)),
        (_, other) => format!("WhatsApp{}{}", kind_word(target), camel(other)),
    };
    Some((name, severity))
}

fn kind_word(k: TargetKind) -> &'static str {
    match k {
        TargetKind::PhoneNumber => "Number",
        TargetKind::Waba => "Waba",
        TargetKind::Template => "Template",
    }
}

/// `account_alert` → `AccountAlert` (only ASCII letters and digits kept).
fn camel(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + cs.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The labels: stable, what routes, silences and inhibitions match on. Empty ones are left
/// out.
fn labels(item: &AlertItem, name: &str, severity: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v.map(|v| clean(v, 256)).filter(|v| !v.is_empty()) {
            l.insert(k.to_owned(), v);
        }
    };
    put("alertname", Some(name));
    put("severity", Some(severity));
    put("topic", Some(&item.topic));
    put("source", item.source.as_deref());
    put("business_id", item.business_id.as_deref());
    put("waba_id", item.waba_id.as_deref());
    match item.kind.as_str() {
        "phone_number" => put("phone_number_id", Some(&item.target_id)),
        "template" => put("template_id", Some(&item.target_id)),
        "waba" => put("waba_id", Some(&item.target_id)),
        _ => {}
    }
    l
}

/// One alert of the posted array.
fn alert(
    am: &AlertmanagerRouting,
    item: &AlertItem,
    labels: BTreeMap<String, String>,
    starts: &str,
    ends: &str,
    open: bool,
) -> Value {
    let mut a: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            a.insert(k.to_owned(), v);
        }
    };
    let opt = |v: &Option<String>| v.as_deref().map(|s| clean(s, FIELD_BYTES));
    let what = if open {
        item.what()
    } else {
        format!("ended: {}", item.what())
    };
    put(
        "summary",
        Some(clean(&format!("{}: {what}", item.target()), 512)),
    );
    put("description", Some(description(item)));
    put("old", opt(&item.old));
    put("new", opt(&item.new));
    put("since", Some(starts.to_owned()));
    put("previous_since", opt(&item.previous_since));
    put("detail", opt(&item.detail));
    put("display_phone_number", opt(&item.display_phone_number));
    put("verified_name", opt(&item.verified_name));
    put("waba_name", opt(&item.waba_name));
    put("template_name", opt(&item.template_name));
    put("template_language", opt(&item.template_language));
    let (codes, solutions) = meta_errors(item);
    put(
        "meta_error_codes",
        (!codes.is_empty()).then(|| codes.join(", ")),
    );
    put(
        "possible_solutions",
        (!solutions.is_empty()).then(|| clean(&solutions.join("\n"), ANNOTATION_BYTES)),
    );
    if let Some(r) = &am.runbook_url {
        let name = labels.get("alertname").map(String::as_str).unwrap_or("");
        put("runbook_url", Some(r.replace("{alertname}", name)));
    }
    let mut out = json!({
        "labels": labels,
        "annotations": a,
        "startsAt": starts,
        "endsAt": ends,
    });
    if let Some(g) = generator_url(am, item) {
        out["generatorURL"] = Value::String(g);
    }
    out
}

/// The status page of the alert's target when the daemon serves one: its number's or WABA's
/// page, the fleet for a source.
fn generator_url(am: &AlertmanagerRouting, item: &AlertItem) -> Option<String> {
    let base = am.page_base.as_ref()?;
    let path = match item.kind.as_str() {
        "phone_number" => format!("numbers/{}", item.target_id),
        "waba" => format!("wabas/{}", item.target_id),
        "template" => format!("wabas/{}", item.waba_id.as_deref()?),
        _ => String::new(),
    };
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    base.join(&path).ok().map(|u| u.to_string())
}

/// The email's text of this one alert (its evidence, Meta's health errors), without the
/// digest's intro and signature.
fn description(item: &AlertItem) -> String {
    let body = render::body(std::slice::from_ref(item));
    let body = body
        .split_once("\n\n")
        .map_or(body.as_str(), |(_, rest)| rest);
    let body = body.split("\n-- \n").next().unwrap_or(body);
    // Meta's strings in it are already cleaned and capped; its lines are kept.
    render::truncate(body.trim(), ANNOTATION_BYTES).into_owned()
}

/// Meta's error codes and possible solutions from the target's health entities.
fn meta_errors(item: &AlertItem) -> (Vec<String>, Vec<String>) {
    let mut codes = Vec::new();
    let mut solutions = Vec::new();
    let Some(json) = item.health_entities.as_deref() else {
        return (codes, solutions);
    };
    let Ok(entities) = serde_json::from_str::<Vec<crate::model::HealthEntity>>(json) else {
        return (codes, solutions);
    };
    for e in entities
        .iter()
        .filter(|e| e.can_send_message != "AVAILABLE")
    {
        for err in &e.errors {
            if let Some(code) = err.error_code {
                let code = code.to_string();
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
            if let Some(sol) = &err.possible_solution {
                let sol = clean(sol, FIELD_BYTES);
                if !solutions.contains(&sol) {
                    solutions.push(sol);
                }
            }
        }
    }
    (codes, solutions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_prometheus_rules_where_they_overlap() {
        let id = |kind, topic, field, value| {
            identity(kind, topic, field, Some(value), None).map(|(n, s)| (n, s.to_owned()))
        };
        assert_eq!(
            id("phone_number", "quality", "quality_rating", "RED"),
            Some(("WhatsAppNumberQualityRed".into(), "critical".into()))
        );
        assert_eq!(
            id("phone_number", "quality", "quality_rating", "YELLOW"),
            Some(("WhatsAppNumberQualityYellow".into(), "warning".into()))
        );
        assert_eq!(
            id("phone_number", "quality", "quality_rating", "GREEN"),
            None
        );
        assert_eq!(
            id("phone_number", "status", "status", "BANNED"),
            Some(("WhatsAppNumberBanned".into(), "critical".into()))
        );
        assert_eq!(
            id("phone_number", "status", "status", "RESTRICTED"),
            Some(("WhatsAppNumberRestricted".into(), "warning".into()))
        );
        assert_eq!(
            id("template", "status", "status", "PAUSED"),
            Some(("WhatsAppTemplatePaused".into(), "warning".into()))
        );
        assert_eq!(
            identity("source", "blind", "blind", None, None).map(|(n, _)| n),
            Some("WhatsAppMonitoringBlind".into())
        );
        // Every name shared with a Prometheus rule is one of the shipped rules.
        let rules = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/prometheus/alerts.yml"
        ))
        .expect("the shipped rules");
        for name in [
            "WhatsAppNumberQualityRed",
            "WhatsAppNumberQualityYellow",
            "WhatsAppNumberBanned",
            "WhatsAppNumberRestricted",
            "WhatsAppNumberCannotSend",
            "WhatsAppMessagingLimitLowered",
            "WhatsAppWabaReviewRejected",
            "WhatsAppTemplatePaused",
            "WhatsAppTemplateDisabled",
            "WhatsAppTemplateQualityRed",
            "WhatsAppMonitoringBlind",
        ] {
            assert!(
                rules.contains(&format!("alert: {name}\n")),
                "{name} is not a shipped rule"
            );
        }
    }

    #[test]
    fn camel_case_of_topics() {
        assert_eq!(camel("account_alert"), "AccountAlert");
        assert_eq!(camel("limit_exceeded"), "LimitExceeded");
    }
}
