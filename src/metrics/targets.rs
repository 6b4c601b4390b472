//! Per-number and per-WABA series, rendered once per change and concatenated per scrape.

use std::collections::HashMap;

use bytes::Bytes;
use std::fmt::Write;

use crate::model::{MessagingLimit, PhoneStatus, QualityRating};
use crate::store::StatusEntry;
use crate::timefmt::parse_rfc3339;

const QUALITY_STATES: &[&str] = QualityRating::KNOWN;
const HEALTH_STATES: &[&str] = &["AVAILABLE", "LIMITED", "BLOCKED", "UNKNOWN"];
const REVIEW_STATES: &[&str] = &["APPROVED", "PENDING", "REJECTED", "RESTRICTED", "OTHER"];
const VERIFICATION_STATES: &[&str] = &[
    "verified",
    "pending",
    "not_verified",
    "rejected",
    "revoked",
    "expired",
    "failed",
    "ineligible",
    "pending_need_more_info",
    "pending_submission",
    "OTHER",
];

/// (name, type, help) of each per-target family, in output order. The info families are named
/// without `_info`: OpenMetrics appends it to the sample.
const PHONE_FAMILIES: [(&str, &str, &str); 7] = [
    (
        "waba_monitor_phone_quality",
        "gauge",
        "Quality rating of a phone number: 1 for its current state, 0 for the others",
    ),
    (
        "waba_monitor_phone_status",
        "gauge",
        "Status of a phone number: 1 for its current state (OTHER: a value this version does not know)",
    ),
    (
        "waba_monitor_phone_health",
        "gauge",
        "health_status.can_send_message of a phone number: 1 for its current state",
    ),
    (
        "waba_monitor_phone_messaging_limit",
        "gauge",
        "Business-initiated conversations per 24h of the number's effective messaging limit (+Inf: unlimited)",
    ),
    (
        "waba_monitor_phone",
        "info",
        "Descriptive labels of a phone number",
    ),
    (
        "waba_monitor_phone_last_change_timestamp_seconds",
        "gauge",
        "When a phone number's state last changed",
    ),
    (
        "waba_monitor_phone_stale",
        "gauge",
        "1 if the number was not read by its source's latest poll (it keeps its last known state)",
    ),
];

const WABA_FAMILIES: [(&str, &str, &str); 5] = [
    (
        "waba_monitor_waba_review_status",
        "gauge",
        "account_review_status of a WABA: 1 for its current state",
    ),
    (
        "waba_monitor_waba_verification_status",
        "gauge",
        "Business verification status of a WABA's portfolio: 1 for its current state",
    ),
    (
        "waba_monitor_waba_health",
        "gauge",
        "health_status.can_send_message of a WABA: 1 for its current state",
    ),
    (
        "waba_monitor_waba_messaging_limit",
        "gauge",
        "Portfolio messaging limit seen on a WABA, conversations per 24h (+Inf: unlimited)",
    ),
    ("waba_monitor_waba", "info", "Descriptive labels of a WABA"),
];

/// Escapes an OpenMetrics label value.
fn esc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn state_lines(out: &mut String, name: &str, labels: &str, states: &[&str], current: &str) {
    for s in states {
        let v = u8::from(*s == current);
        let _ = writeln!(out, "{name}{{{labels},state=\"{s}\"}} {v}");
    }
}

fn limit_value(raw: Option<&str>) -> Option<String> {
    let v = MessagingLimit::parse(raw?).daily_limit()?;
    Some(if v.is_infinite() {
        "+Inf".to_owned()
    } else {
        format!("{v}")
    })
}

fn status_state(raw: Option<&str>) -> &str {
    match raw {
        Some(s) if PhoneStatus::parse(s).is_known() => s,
        Some(_) => "OTHER",
        None => "UNKNOWN",
    }
}

fn one_of<'a>(raw: Option<&'a str>, states: &[&str], missing: &'a str) -> &'a str {
    match raw {
        Some(s) if states.contains(&s) => s,
        Some(_) => "OTHER",
        None => missing,
    }
}

fn health_state(raw: Option<&str>) -> &str {
    match raw {
        Some(s @ ("AVAILABLE" | "LIMITED" | "BLOCKED")) => s,
        _ => "UNKNOWN",
    }
}

/// One target's rendered lines, one string per family.
#[derive(Debug, Clone)]
struct Rendered {
    /// The state it was rendered from, minus what changes on every poll.
    from: StatusEntry,
    families: Vec<String>,
}

fn render_phone(e: &StatusEntry, stale: bool) -> Vec<String> {
    let labels = format!(
        "phone_number_id=\"{}\",waba_id=\"{}\"",
        esc(&e.id),
        esc(e.waba_id.as_deref().unwrap_or(""))
    );
    let mut f = vec![String::new(); PHONE_FAMILIES.len()];
    let quality = match e.quality_rating.as_deref() {
        Some(q) if QUALITY_STATES.contains(&q) => q,
        _ => "UNKNOWN",
    };
    state_lines(
        &mut f[0],
        PHONE_FAMILIES[0].0,
        &labels,
        QUALITY_STATES,
        quality,
    );
    let mut statuses: Vec<&str> = PhoneStatus::KNOWN.to_vec();
    statuses.push("OTHER");
    state_lines(
        &mut f[1],
        PHONE_FAMILIES[1].0,
        &labels,
        &statuses,
        status_state(e.status.as_deref()),
    );
    state_lines(
        &mut f[2],
        PHONE_FAMILIES[2].0,
        &labels,
        HEALTH_STATES,
        health_state(e.health.as_deref()),
    );
    if let Some(v) = limit_value(e.messaging_limit.as_deref()) {
        let _ = writeln!(f[3], "{}{{{labels}}} {v}", PHONE_FAMILIES[3].0);
    }
    let _ = writeln!(
        f[4],
        "waba_monitor_phone_info{{{labels},display_phone_number=\"{}\",verified_name=\"{}\",waba_name=\"{}\",source=\"{}\"}} 1",
        esc(e.display_phone_number.as_deref().unwrap_or("")),
        esc(e.verified_name.as_deref().unwrap_or("")),
        esc(e.name.as_deref().unwrap_or("")),
        esc(&e.source)
    );
    if let Some(t) = parse_rfc3339(&e.last_changed_at) {
        let _ = writeln!(
            f[5],
            "{}{{{labels}}} {}",
            PHONE_FAMILIES[5].0,
            t.timestamp_millis() as f64 / 1000.0
        );
    }
    let _ = writeln!(
        f[6],
        "{}{{{labels}}} {}",
        PHONE_FAMILIES[6].0,
        u8::from(stale)
    );
    f
}

fn render_waba(e: &StatusEntry) -> Vec<String> {
    let labels = format!("waba_id=\"{}\"", esc(&e.id));
    let mut f = vec![String::new(); WABA_FAMILIES.len()];
    state_lines(
        &mut f[0],
        WABA_FAMILIES[0].0,
        &labels,
        REVIEW_STATES,
        one_of(e.account_review_status.as_deref(), REVIEW_STATES, "OTHER"),
    );
    let verification = e
        .business_verification_status
        .as_deref()
        .map(str::to_ascii_lowercase);
    state_lines(
        &mut f[1],
        WABA_FAMILIES[1].0,
        &labels,
        VERIFICATION_STATES,
        one_of(verification.as_deref(), VERIFICATION_STATES, "OTHER"),
    );
    state_lines(
        &mut f[2],
        WABA_FAMILIES[2].0,
        &labels,
        HEALTH_STATES,
        health_state(e.health.as_deref()),
    );
    if let Some(v) = limit_value(e.messaging_limit.as_deref()) {
        let _ = writeln!(f[3], "{}{{{labels}}} {v}", WABA_FAMILIES[3].0);
    }
    let _ = writeln!(
        f[4],
        "waba_monitor_waba_info{{{labels},name=\"{}\",business_id=\"{}\",source=\"{}\"}} 1",
        esc(e.name.as_deref().unwrap_or("")),
        esc(e.business_id.as_deref().unwrap_or("")),
        esc(&e.source)
    );
    f
}

/// The cache of rendered per-target series.
#[derive(Debug, Default)]
pub struct TargetSeries {
    phones: HashMap<String, Rendered>,
    wabas: HashMap<String, Rendered>,
    /// The whole per-target section of the exposition, rebuilt when a target changed, so a
    /// scrape hands out a reference-counted buffer instead of formatting anything.
    section: Bytes,
}

impl TargetSeries {
    pub fn len(&self) -> usize {
        self.phones.len() + self.wabas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.section.len()
    }

    /// The rendered section (cheap to clone).
    pub fn section(&self) -> Bytes {
        self.section.clone()
    }

    /// Brings the cache in line with `entries`: renders new and changed targets, drops targets
    /// that are gone or absent.
    pub fn sync(&mut self, entries: Vec<StatusEntry>) {
        let mut phones = HashMap::with_capacity(entries.len());
        let mut wabas = HashMap::new();
        let mut changed = false;
        for mut key in entries.into_iter().filter(|e| e.present) {
            // What the series are rendered from: not the poll time (changes every cycle) nor
            // the health detail (not exported), so an unchanged target is not re-rendered.
            key.last_polled_at.clear();
            key.health_entities = None;
            let is_waba = key.kind == "waba";
            let (old, new) = if is_waba {
                (&mut self.wabas, &mut wabas)
            } else {
                (&mut self.phones, &mut phones)
            };
            let id = key.id.clone();
            let rendered = match old.remove(&id) {
                Some(r) if r.from == key => r,
                _ => {
                    changed = true;
                    let families = if is_waba {
                        render_waba(&key)
                    } else {
                        render_phone(&key, key.stale)
                    };
                    Rendered {
                        families,
                        from: key,
                    }
                }
            };
            new.insert(id, rendered);
        }
        // Whatever is left in the old maps is gone.
        changed |= !self.phones.is_empty() || !self.wabas.is_empty();
        self.phones = phones;
        self.wabas = wabas;
        if changed || self.section.is_empty() {
            let mut out = String::with_capacity(self.section.len().max(4096));
            self.write(&mut out);
            self.section = Bytes::from(out);
        }
    }

    fn write(&self, out: &mut String) {
        for (i, (name, kind, help)) in PHONE_FAMILIES.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}.");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for r in self.phones.values() {
                out.push_str(&r.families[i]);
            }
        }
        for (i, (name, kind, help)) in WABA_FAMILIES.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}.");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for r in self.wabas.values() {
                out.push_str(&r.families[i]);
            }
        }
    }
}
