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

fn phone_labels(e: &StatusEntry) -> String {
    format!(
        "phone_number_id=\"{}\",waba_id=\"{}\"",
        esc(&e.id),
        esc(e.waba_id.as_deref().unwrap_or(""))
    )
}

/// Writes one family's lines for one phone number.
fn render_phone(out: &mut String, family: usize, e: &StatusEntry) {
    let labels = phone_labels(e);
    let name = PHONE_FAMILIES[family].0;
    match family {
        0 => {
            let quality = match e.quality_rating.as_deref() {
                Some(q) if QUALITY_STATES.contains(&q) => q,
                _ => "UNKNOWN",
            };
            state_lines(out, name, &labels, QUALITY_STATES, quality);
        }
        1 => {
            let current = status_state(e.status.as_deref());
            state_lines(out, name, &labels, PhoneStatus::KNOWN, current);
            state_lines(out, name, &labels, &["OTHER"], current);
        }
        2 => state_lines(
            out,
            name,
            &labels,
            HEALTH_STATES,
            health_state(e.health.as_deref()),
        ),
        3 => {
            if let Some(v) = limit_value(e.messaging_limit.as_deref()) {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        4 => {
            let _ = writeln!(
                out,
                "waba_monitor_phone_info{{{labels},display_phone_number=\"{}\",verified_name=\"{}\",waba_name=\"{}\",source=\"{}\"}} 1",
                esc(e.display_phone_number.as_deref().unwrap_or("")),
                esc(e.verified_name.as_deref().unwrap_or("")),
                esc(e.name.as_deref().unwrap_or("")),
                esc(&e.source)
            );
        }
        5 => {
            if let Some(t) = parse_rfc3339(&e.last_changed_at) {
                let _ = writeln!(
                    out,
                    "{name}{{{labels}}} {}",
                    t.timestamp_millis() as f64 / 1000.0
                );
            }
        }
        _ => {
            let _ = writeln!(out, "{name}{{{labels}}} {}", u8::from(e.stale));
        }
    }
}

/// Writes one family's lines for one WABA.
fn render_waba(out: &mut String, family: usize, e: &StatusEntry) {
    let labels = format!("waba_id=\"{}\"", esc(&e.id));
    let name = WABA_FAMILIES[family].0;
    match family {
        0 => state_lines(
            out,
            name,
            &labels,
            REVIEW_STATES,
            one_of(e.account_review_status.as_deref(), REVIEW_STATES, "OTHER"),
        ),
        1 => {
            let verification = e
                .business_verification_status
                .as_deref()
                .map(str::to_ascii_lowercase);
            state_lines(
                out,
                name,
                &labels,
                VERIFICATION_STATES,
                one_of(verification.as_deref(), VERIFICATION_STATES, "OTHER"),
            );
        }
        2 => state_lines(
            out,
            name,
            &labels,
            HEALTH_STATES,
            health_state(e.health.as_deref()),
        ),
        3 => {
            if let Some(v) = limit_value(e.messaging_limit.as_deref()) {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "waba_monitor_waba_info{{{labels},name=\"{}\",business_id=\"{}\",source=\"{}\"}} 1",
                esc(e.name.as_deref().unwrap_or("")),
                esc(e.business_id.as_deref().unwrap_or("")),
                esc(&e.source)
            );
        }
    }
}

/// A fingerprint of what a target's series are rendered from: not the poll time (it changes
/// every cycle) nor the health detail (not exported).
fn fingerprint(e: &StatusEntry) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &e.kind,
        &e.id,
        &e.source,
        &e.waba_id,
        &e.business_id,
        &e.display_phone_number,
        &e.verified_name,
        &e.name,
        &e.quality_rating,
        &e.status,
        &e.messaging_limit,
        &e.health,
    )
        .hash(&mut h);
    (
        &e.account_review_status,
        &e.business_verification_status,
        &e.last_changed_at,
        e.stale,
    )
        .hash(&mut h);
    h.finish()
}

/// The per-target section of the exposition. Only fingerprints are kept per target: when any
/// target changed (or appeared, or went), the whole section is rendered again, family by
/// family, straight into one buffer; a scrape hands that buffer out without copying it.
#[derive(Debug, Default)]
pub struct TargetSeries {
    fingerprints: HashMap<String, u64>,
    section: Bytes,
}

impl TargetSeries {
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.section.len()
    }

    /// The rendered section (cheap to clone).
    pub fn section(&self) -> Bytes {
        self.section.clone()
    }

    /// Brings the section in line with `entries`: targets that are gone or absent lose their
    /// series; nothing is rendered when no target changed.
    pub fn sync(&mut self, entries: Vec<StatusEntry>) {
        let present: Vec<StatusEntry> = entries.into_iter().filter(|e| e.present).collect();
        let fingerprints: HashMap<String, u64> = present
            .iter()
            .map(|e| (format!("{}:{}", e.kind, e.id), fingerprint(e)))
            .collect();
        if fingerprints == self.fingerprints && !self.section.is_empty() {
            return;
        }
        let mut out = String::with_capacity(self.section.len().max(4096));
        for (i, (name, kind, help)) in PHONE_FAMILIES.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}.");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for e in present.iter().filter(|e| e.kind == "phone_number") {
                render_phone(&mut out, i, e);
            }
        }
        for (i, (name, kind, help)) in WABA_FAMILIES.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}.");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for e in present.iter().filter(|e| e.kind == "waba") {
                render_waba(&mut out, i, e);
            }
        }
        self.fingerprints = fingerprints;
        self.section = Bytes::from(out);
    }
}
