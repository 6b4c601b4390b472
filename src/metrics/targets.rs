//! Per-number and per-WABA series.
//!
//! The state is kept compact — one small record per target, every string once in an arena,
//! already escaped — and the exposition is rendered from it at scrape time in chunks, so no full
//! copy of the text is ever held: at 100,000 numbers the table is about 11 MB where the text
//! would be 70 MB (compact) or 300 MB (full).
//!
//! `[daemon] metrics_detail = "compact"` (default) exports one numeric gauge per dimension with
//! a documented ordering (higher is worse) plus an `_info` series whose labels carry the names:
//! 7 series per number, 4 per WABA. `"full"` adds a 0/1 series per state of each dimension.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::MetricsDetail;
use crate::model::{MessagingLimit, PhoneStatus, QualityRating};
use crate::store::MetricTarget;
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

/// `waba_monitor_phone_status_level`, higher is worse; anything else (not reported, or a
/// value this version does not know) is 0, its raw value in the info series' `status` label.
pub const STATUS_LEVELS: &[(&str, u8)] = &[
    ("CONNECTED", 1),
    ("PENDING", 2),
    ("UNVERIFIED", 3),
    ("MANUAL_REVIEW", 4),
    ("MIGRATED", 5),
    ("WARNED", 6),
    ("RATE_LIMITED", 7),
    ("RESTRICTED", 8),
    ("DISCONNECTED", 9),
    ("FLAGGED", 10),
    ("BLOCKED", 11),
    ("DELETED", 12),
    ("BANNED", 13),
];

/// `waba_monitor_phone_quality_level`: 0 unknown (also NA, not reported), 1 GREEN, 2 YELLOW,
/// 3 RED.
pub fn quality_level(raw: Option<&str>) -> u8 {
    match raw {
        Some("GREEN") => 1,
        Some("YELLOW") => 2,
        Some("RED") => 3,
        _ => 0,
    }
}

/// `_health_level`: 0 unknown, 1 AVAILABLE, 2 LIMITED, 3 BLOCKED.
pub fn health_level(raw: Option<&str>) -> u8 {
    match raw {
        Some("AVAILABLE") => 1,
        Some("LIMITED") => 2,
        Some("BLOCKED") => 3,
        _ => 0,
    }
}

/// `waba_monitor_waba_review_level`: 0 unknown or other, 1 APPROVED, 2 PENDING, 3 RESTRICTED,
/// 4 REJECTED.
pub fn review_level(raw: Option<&str>) -> u8 {
    match raw {
        Some("APPROVED") => 1,
        Some("PENDING") => 2,
        Some("RESTRICTED") => 3,
        Some("REJECTED") => 4,
        _ => 0,
    }
}

pub fn status_level(raw: Option<&str>) -> u8 {
    raw.and_then(|s| STATUS_LEVELS.iter().find(|(n, _)| *n == s))
        .map_or(0, |(_, l)| *l)
}

/// Escapes an OpenMetrics label value.
fn esc_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A piece of the arena.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug)]
struct Phone {
    id: Span,
    /// Index into `keys`: the WABA's id and name.
    waba: u32,
    display: Span,
    verified: Span,
    source: u16,
    /// Raw status ("UNKNOWN" when not reported), escaped, in `words`.
    status: u16,
    /// Index into `QUALITY_STATES`.
    quality: u8,
    health: u8,
    stale: bool,
    /// Conversations per 24h; NaN when not known.
    limit: f64,
    /// Unix seconds; NaN when not known.
    last_change: f64,
}

#[derive(Debug)]
struct Waba {
    key: u32,
    business: Span,
    source: u16,
    /// Raw `account_review_status` ("UNKNOWN" when not reported), escaped, in `words`.
    review: u16,
    /// Lower-cased business verification status ("UNKNOWN" when not reported), in `words`.
    verification: u16,
    health: u8,
    limit: f64,
}

/// Every present target's exported state, immutable once built; scrapes share it.
#[derive(Debug, Default)]
pub struct TargetTable {
    detail: MetricsDetail,
    arena: String,
    words: Vec<Box<str>>,
    /// (id, name) of each WABA a target names.
    keys: Vec<(Span, Span)>,
    phones: Vec<Phone>,
    wabas: Vec<Waba>,
}

/// Builds a [`TargetTable`] from the store's rows, one at a time.
#[derive(Debug, Default)]
pub struct TableBuilder {
    table: TargetTable,
    word_ix: HashMap<String, u16>,
    key_ix: HashMap<String, u32>,
}

fn limit_of(raw: Option<&str>) -> f64 {
    raw.and_then(|r| MessagingLimit::parse(r).daily_limit())
        .unwrap_or(f64::NAN)
}

impl TableBuilder {
    pub fn new(detail: MetricsDetail) -> TableBuilder {
        TableBuilder {
            table: TargetTable {
                detail,
                ..TargetTable::default()
            },
            ..TableBuilder::default()
        }
    }

    fn span(&mut self, v: &str) -> Span {
        let start = self.table.arena.len();
        esc_into(&mut self.table.arena, v);
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            len: u32::try_from(self.table.arena.len() - start).unwrap_or(0),
        }
    }

    fn word(&mut self, v: &str) -> u16 {
        if let Some(i) = self.word_ix.get(v) {
            return *i;
        }
        // A flood of distinct values (a hostile source) stops being interned at 60,000.
        let Ok(i) = u16::try_from(self.table.words.len()) else {
            return self.word("OTHER");
        };
        if i >= 60_000 && v != "OTHER" {
            return self.word("OTHER");
        }
        let mut escaped = String::with_capacity(v.len());
        esc_into(&mut escaped, v);
        self.table.words.push(escaped.into_boxed_str());
        self.word_ix.insert(v.to_owned(), i);
        i
    }

    fn key(&mut self, waba_id: &str, name: Option<&str>) -> u32 {
        if let Some(i) = self.key_ix.get(waba_id) {
            return *i;
        }
        let id = self.span(waba_id);
        let name = self.span(name.unwrap_or(""));
        let i = u32::try_from(self.table.keys.len()).unwrap_or(u32::MAX);
        self.table.keys.push((id, name));
        self.key_ix.insert(waba_id.to_owned(), i);
        i
    }

    /// Adds one present target.
    pub fn add(&mut self, t: &MetricTarget) {
        let source = self.word(&t.source);
        let health = health_level(t.health.as_deref());
        let limit = limit_of(t.messaging_limit.as_deref());
        if t.kind == "waba" {
            let key = self.key(&t.id, t.name.as_deref());
            let business = self.span(t.business_id.as_deref().unwrap_or(""));
            let review = self.word(t.account_review_status.as_deref().unwrap_or("UNKNOWN"));
            let verification = t
                .business_verification_status
                .as_deref()
                .map_or_else(|| "UNKNOWN".to_owned(), str::to_ascii_lowercase);
            let verification = self.word(&verification);
            self.table.wabas.push(Waba {
                key,
                business,
                source,
                review,
                verification,
                health,
                limit,
            });
            return;
        }
        let id = self.span(&t.id);
        let waba = self.key(t.waba_id.as_deref().unwrap_or(""), t.name.as_deref());
        let display = self.span(t.display_phone_number.as_deref().unwrap_or(""));
        let verified = self.span(t.verified_name.as_deref().unwrap_or(""));
        let status = self.word(t.status.as_deref().unwrap_or("UNKNOWN"));
        let quality = match t.quality_rating.as_deref() {
            Some(q) => QUALITY_STATES.iter().position(|s| *s == q),
            None => None,
        }
        .or_else(|| QUALITY_STATES.iter().position(|s| *s == "UNKNOWN"))
        .unwrap_or(0);
        let last_change = parse_rfc3339(&t.last_changed_at)
            .map_or(f64::NAN, |t| t.timestamp_millis() as f64 / 1000.0);
        self.table.phones.push(Phone {
            id,
            waba,
            display,
            verified,
            source,
            status,
            quality: u8::try_from(quality).unwrap_or(0),
            health,
            stale: t.stale,
            limit,
            last_change,
        });
    }

    pub fn finish(mut self) -> TargetTable {
        let t = &mut self.table;
        t.arena.shrink_to_fit();
        t.phones.shrink_to_fit();
        t.wabas.shrink_to_fit();
        t.keys.shrink_to_fit();
        self.table
    }
}

/// What a family's samples are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fam {
    PhoneInfo,
    PhoneQualityLevel,
    PhoneStatusLevel,
    PhoneHealthLevel,
    PhoneLimit,
    PhoneLastChange,
    PhoneStale,
    PhoneQuality,
    PhoneStatus,
    PhoneHealth,
    WabaInfo,
    WabaReviewLevel,
    WabaHealthLevel,
    WabaLimit,
    WabaReview,
    WabaVerification,
    WabaHealth,
}

impl Fam {
    fn is_waba(self) -> bool {
        matches!(
            self,
            Fam::WabaInfo
                | Fam::WabaReviewLevel
                | Fam::WabaHealthLevel
                | Fam::WabaLimit
                | Fam::WabaReview
                | Fam::WabaVerification
                | Fam::WabaHealth
        )
    }
}

/// (family, name, type, help, only with `metrics_detail = "full"`), in output order. Info
/// families are named without `_info`: OpenMetrics appends it to the sample.
type Family = (Fam, &'static str, &'static str, &'static str, bool);

const FAMILIES: &[Family] = &[
    (
        Fam::PhoneInfo,
        "waba_monitor_phone",
        "info",
        "Descriptive labels of a phone number, and its status as Meta reports it",
        false,
    ),
    (
        Fam::PhoneQualityLevel,
        "waba_monitor_phone_quality_level",
        "gauge",
        "Quality rating of a phone number: 0 unknown, 1 GREEN, 2 YELLOW, 3 RED",
        false,
    ),
    (
        Fam::PhoneStatusLevel,
        "waba_monitor_phone_status_level",
        "gauge",
        "Status of a phone number, higher is worse: 0 unknown, 1 CONNECTED, 2 PENDING, 3 UNVERIFIED, 4 MANUAL_REVIEW, 5 MIGRATED, 6 WARNED, 7 RATE_LIMITED, 8 RESTRICTED, 9 DISCONNECTED, 10 FLAGGED, 11 BLOCKED, 12 DELETED, 13 BANNED (the name is the info series' status label)",
        false,
    ),
    (
        Fam::PhoneHealthLevel,
        "waba_monitor_phone_health_level",
        "gauge",
        "health_status.can_send_message of a phone number: 0 unknown, 1 AVAILABLE, 2 LIMITED, 3 BLOCKED",
        false,
    ),
    (
        Fam::PhoneLimit,
        "waba_monitor_phone_messaging_limit",
        "gauge",
        "Business-initiated conversations per 24h of the number's effective messaging limit (+Inf: unlimited)",
        false,
    ),
    (
        Fam::PhoneLastChange,
        "waba_monitor_phone_last_change_timestamp_seconds",
        "gauge",
        "When a phone number's state last changed",
        false,
    ),
    (
        Fam::PhoneStale,
        "waba_monitor_phone_stale",
        "gauge",
        "1 if the number was not read by its source's latest poll (it keeps its last known state)",
        false,
    ),
    (
        Fam::PhoneQuality,
        "waba_monitor_phone_quality",
        "gauge",
        "Quality rating of a phone number: 1 for its current state, 0 for the others",
        true,
    ),
    (
        Fam::PhoneStatus,
        "waba_monitor_phone_status",
        "gauge",
        "Status of a phone number: 1 for its current state (OTHER: a value this version does not know)",
        true,
    ),
    (
        Fam::PhoneHealth,
        "waba_monitor_phone_health",
        "gauge",
        "health_status.can_send_message of a phone number: 1 for its current state",
        true,
    ),
    (
        Fam::WabaInfo,
        "waba_monitor_waba",
        "info",
        "Descriptive labels of a WABA, with its review and business verification status",
        false,
    ),
    (
        Fam::WabaReviewLevel,
        "waba_monitor_waba_review_level",
        "gauge",
        "account_review_status of a WABA: 0 unknown, 1 APPROVED, 2 PENDING, 3 RESTRICTED, 4 REJECTED",
        false,
    ),
    (
        Fam::WabaHealthLevel,
        "waba_monitor_waba_health_level",
        "gauge",
        "health_status.can_send_message of a WABA: 0 unknown, 1 AVAILABLE, 2 LIMITED, 3 BLOCKED",
        false,
    ),
    (
        Fam::WabaLimit,
        "waba_monitor_waba_messaging_limit",
        "gauge",
        "Portfolio messaging limit seen on a WABA, conversations per 24h (+Inf: unlimited)",
        false,
    ),
    (
        Fam::WabaReview,
        "waba_monitor_waba_review_status",
        "gauge",
        "account_review_status of a WABA: 1 for its current state",
        true,
    ),
    (
        Fam::WabaVerification,
        "waba_monitor_waba_verification_status",
        "gauge",
        "Business verification status of a WABA's portfolio: 1 for its current state",
        true,
    ),
    (
        Fam::WabaHealth,
        "waba_monitor_waba_health",
        "gauge",
        "health_status.can_send_message of a WABA: 1 for its current state",
        true,
    ),
];

const HEALTH_BY_LEVEL: [&str; 4] = ["UNKNOWN", "AVAILABLE", "LIMITED", "BLOCKED"];

fn push_value(out: &mut String, v: f64) {
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Levels, limits, 0/1: integer formatting is several times cheaper than a float's.
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

impl TargetTable {
    fn s(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.arena
            .get(start..start + span.len as usize)
            .unwrap_or("")
    }

    fn w(&self, i: u16) -> &str {
        self.words.get(usize::from(i)).map_or("", |w| w)
    }

    fn key(&self, i: u32) -> (&str, &str) {
        self.keys
            .get(i as usize)
            .map_or(("", ""), |(id, name)| (self.s(*id), self.s(*name)))
    }

    pub fn len(&self) -> usize {
        self.phones.len() + self.wabas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (arena, records, words), for the benchmark.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.phones.capacity() * std::mem::size_of::<Phone>()
            + self.wabas.capacity() * std::mem::size_of::<Waba>()
            + self.keys.capacity() * std::mem::size_of::<(Span, Span)>()
            + self.words.iter().map(|w| w.len() + 16).sum::<usize>()
    }

    fn families(&self) -> impl Iterator<Item = &'static Family> {
        let full = self.detail == MetricsDetail::Full;
        FAMILIES.iter().filter(move |f| full || !f.4)
    }

    fn count(&self, fam: Fam) -> usize {
        if fam.is_waba() {
            self.wabas.len()
        } else {
            self.phones.len()
        }
    }

    fn phone_labels(&self, out: &mut String, p: &Phone) {
        out.push_str("{phone_number_id=\"");
        out.push_str(self.s(p.id));
        out.push_str("\",waba_id=\"");
        out.push_str(self.key(p.waba).0);
        out.push('"');
    }

    fn phone_sample(&self, out: &mut String, name: &str, p: &Phone, value: f64) {
        if value.is_nan() {
            return;
        }
        out.push_str(name);
        self.phone_labels(out, p);
        out.push_str("} ");
        push_value(out, value);
        out.push('\n');
    }

    fn phone_states(
        &self,
        out: &mut String,
        name: &str,
        p: &Phone,
        states: &[&str],
        current: &str,
    ) {
        for s in states {
            out.push_str(name);
            self.phone_labels(out, p);
            let _ = writeln!(out, ",state=\"{s}\"}} {}", u8::from(*s == current));
        }
    }

    fn waba_sample(&self, out: &mut String, name: &str, w: &Waba, value: f64) {
        if value.is_nan() {
            return;
        }
        let _ = write!(out, "{name}{{waba_id=\"{}\"}} ", self.key(w.key).0);
        push_value(out, value);
        out.push('\n');
    }

    fn waba_states(&self, out: &mut String, name: &str, w: &Waba, states: &[&str], current: &str) {
        let id = self.key(w.key).0;
        for s in states {
            let _ = writeln!(
                out,
                "{name}{{waba_id=\"{id}\",state=\"{s}\"}} {}",
                u8::from(*s == current)
            );
        }
    }

    /// Writes number `i`'s samples of family `fam`.
    fn render_phone(&self, out: &mut String, fam: Fam, name: &str, i: usize) {
        if let Some(p) = self.phones.get(i) {
            let quality = QUALITY_STATES.get(usize::from(p.quality)).copied();
            let status = self.w(p.status);
            match fam {
                Fam::PhoneInfo => {
                    let (_, waba_name) = self.key(p.waba);
                    out.push_str("waba_monitor_phone_info");
                    self.phone_labels(out, p);
                    let _ = writeln!(
                        out,
                        ",display_phone_number=\"{}\",verified_name=\"{}\",waba_name=\"{waba_name}\",source=\"{}\",status=\"{status}\"}} 1",
                        self.s(p.display),
                        self.s(p.verified),
                        self.w(p.source),
                    );
                }
                Fam::PhoneQualityLevel => {
                    self.phone_sample(out, name, p, f64::from(quality_level(quality)));
                }
                Fam::PhoneStatusLevel => {
                    self.phone_sample(out, name, p, f64::from(status_level(Some(status))));
                }
                Fam::PhoneHealthLevel => self.phone_sample(out, name, p, f64::from(p.health)),
                Fam::PhoneLimit => self.phone_sample(out, name, p, p.limit),
                Fam::PhoneLastChange => self.phone_sample(out, name, p, p.last_change),
                Fam::PhoneStale => self.phone_sample(out, name, p, f64::from(u8::from(p.stale))),
                Fam::PhoneQuality => {
                    self.phone_states(out, name, p, QUALITY_STATES, quality.unwrap_or("UNKNOWN"));
                }
                Fam::PhoneStatus => {
                    let current = if status == "UNKNOWN" || PhoneStatus::parse(status).is_known() {
                        status
                    } else {
                        "OTHER"
                    };
                    self.phone_states(out, name, p, PhoneStatus::KNOWN, current);
                    self.phone_states(out, name, p, &["OTHER"], current);
                }
                Fam::PhoneHealth => {
                    let current = HEALTH_BY_LEVEL[usize::from(p.health.min(3))];
                    self.phone_states(out, name, p, HEALTH_STATES, current);
                }
                _ => {}
            }
        }
    }

    /// Writes WABA `i`'s samples of family `fam`.
    fn render_waba(&self, out: &mut String, fam: Fam, name: &str, i: usize) {
        if let Some(w) = self.wabas.get(i) {
            match fam {
                Fam::WabaInfo => {
                    let (id, wname) = self.key(w.key);
                    let _ = writeln!(
                        out,
                        "waba_monitor_waba_info{{waba_id=\"{id}\",name=\"{wname}\",business_id=\"{}\",source=\"{}\",review_status=\"{}\",verification_status=\"{}\"}} 1",
                        self.s(w.business),
                        self.w(w.source),
                        self.w(w.review),
                        self.w(w.verification),
                    );
                }
                Fam::WabaReviewLevel => {
                    let level = review_level(Some(self.w(w.review)));
                    self.waba_sample(out, name, w, f64::from(level));
                }
                Fam::WabaHealthLevel => self.waba_sample(out, name, w, f64::from(w.health)),
                Fam::WabaLimit => self.waba_sample(out, name, w, w.limit),
                Fam::WabaReview => {
                    let raw = self.w(w.review);
                    let current = if REVIEW_STATES.contains(&raw) {
                        raw
                    } else {
                        "OTHER"
                    };
                    self.waba_states(out, name, w, REVIEW_STATES, current);
                }
                Fam::WabaVerification => {
                    let raw = self.w(w.verification);
                    let current = if VERIFICATION_STATES.contains(&raw) {
                        raw
                    } else {
                        "OTHER"
                    };
                    self.waba_states(out, name, w, VERIFICATION_STATES, current);
                }
                Fam::WabaHealth => {
                    let current = HEALTH_BY_LEVEL[usize::from(w.health.min(3))];
                    self.waba_states(out, name, w, HEALTH_STATES, current);
                }
                _ => {}
            }
        }
    }
}

/// The per-target section of one scrape, rendered chunk by chunk from a shared table.
#[derive(Debug)]
pub struct Chunks {
    table: Arc<TargetTable>,
    /// The families this table exports (its `metrics_detail`), in output order.
    families: Vec<&'static Family>,
    family: usize,
    item: usize,
    header_done: bool,
}

/// About this much text per chunk.
const CHUNK: usize = 64 * 1024;

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let mut out = String::with_capacity(CHUNK + 1024);
        while let Some((fam, name, kind, help, _)) = self.families.get(self.family).copied() {
            if !self.header_done {
                let _ = writeln!(out, "# HELP {name} {help}.");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                self.header_done = true;
            }
            let n = self.table.count(*fam);
            let only_phone = !fam.is_waba();
            while self.item < n && out.len() < CHUNK {
                if only_phone {
                    self.table.render_phone(&mut out, *fam, name, self.item);
                } else {
                    self.table.render_waba(&mut out, *fam, name, self.item);
                }
                self.item += 1;
            }
            if self.item < n {
                break;
            }
            self.family += 1;
            self.item = 0;
            self.header_done = false;
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

/// The current table; a scrape takes a reference to it and renders from that, so a sync that
/// replaces it never waits for a scrape nor changes one half-way.
#[derive(Debug, Default)]
pub struct TargetSeries {
    table: Arc<TargetTable>,
}

impl TargetSeries {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    pub fn replace(&mut self, table: TargetTable) {
        self.table = Arc::new(table);
    }

    /// The section's chunks, rendered as they are read.
    pub fn chunks(&self) -> Chunks {
        Chunks {
            families: self.table.families().collect(),
            table: self.table.clone(),
            family: 0,
            item: 0,
            header_done: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(id: &str, quality: Option<&str>, status: Option<&str>) -> MetricTarget {
        MetricTarget {
            kind: "phone_number".into(),
            id: id.into(),
            source: "meta".into(),
            waba_id: Some("200".into()),
            display_phone_number: Some("+1 555 0100".into()),
            verified_name: Some("Acme \"Support\"".into()),
            name: Some("Acme".into()),
            quality_rating: quality.map(Into::into),
            status: status.map(Into::into),
            messaging_limit: Some("TIER_1K".into()),
            health: Some("LIMITED".into()),
            last_changed_at: "2026-12-01T10:00:00.500Z".into(),
            last_polled_at: "2026-12-01T10:00:00Z".into(),
            ..MetricTarget::default()
        }
    }

    fn waba() -> MetricTarget {
        MetricTarget {
            kind: "waba".into(),
            id: "200".into(),
            source: "meta".into(),
            waba_id: Some("200".into()),
            business_id: Some("900".into()),
            name: Some("Acme".into()),
            account_review_status: Some("REJECTED".into()),
            business_verification_status: Some("VERIFIED".into()),
            health: Some("BLOCKED".into()),
            messaging_limit: Some("TIER_UNLIMITED".into()),
            ..MetricTarget::default()
        }
    }

    fn text(detail: MetricsDetail, rows: &[MetricTarget]) -> String {
        let mut b = TableBuilder::new(detail);
        for r in rows {
            b.add(r);
        }
        let mut s = TargetSeries::default();
        s.replace(b.finish());
        s.chunks()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .collect()
    }

    #[test]
    fn compact_exports_levels_and_names_in_info_and_seven_series_per_number() {
        let t = text(
            MetricsDetail::Compact,
            &[waba(), phone("301", Some("RED"), Some("BANNED"))],
        );
        let l = "phone_number_id=\"301\",waba_id=\"200\"";
        for want in [
            format!("waba_monitor_phone_info{{{l},display_phone_number=\"+1 555 0100\",verified_name=\"Acme \\\"Support\\\"\",waba_name=\"Acme\",source=\"meta\",status=\"BANNED\"}} 1"),
            format!("waba_monitor_phone_quality_level{{{l}}} 3"),
            format!("waba_monitor_phone_status_level{{{l}}} 13"),
            format!("waba_monitor_phone_health_level{{{l}}} 2"),
            format!("waba_monitor_phone_messaging_limit{{{l}}} 1000"),
            format!("waba_monitor_phone_last_change_timestamp_seconds{{{l}}} 1796119200.5"),
            format!("waba_monitor_phone_stale{{{l}}} 0"),
            "waba_monitor_waba_info{waba_id=\"200\",name=\"Acme\",business_id=\"900\",source=\"meta\",review_status=\"REJECTED\",verification_status=\"verified\"} 1".to_owned(),
            "waba_monitor_waba_review_level{waba_id=\"200\"} 4".to_owned(),
            "waba_monitor_waba_health_level{waba_id=\"200\"} 3".to_owned(),
            "waba_monitor_waba_messaging_limit{waba_id=\"200\"} +Inf".to_owned(),
        ] {
            assert!(t.lines().any(|x| x == want), "missing {want} in\n{t}");
        }
        let phone_series = t
            .lines()
            .filter(|x| x.starts_with("waba_monitor_phone") && x.contains("301"))
            .count();
        assert_eq!(phone_series, 7, "{t}");
        assert!(!t.contains("state="), "compact has no state sets:\n{t}");
    }

    #[test]
    fn unknown_and_missing_values_are_level_zero_with_the_raw_name_in_info() {
        let t = text(
            MetricsDetail::Compact,
            &[
                phone("301", Some("NA"), Some("SOMETHING_NEW")),
                phone("302", None, None),
            ],
        );
        for want in [
            "waba_monitor_phone_quality_level{phone_number_id=\"301\",waba_id=\"200\"} 0",
            "waba_monitor_phone_status_level{phone_number_id=\"301\",waba_id=\"200\"} 0",
            "waba_monitor_phone_status_level{phone_number_id=\"302\",waba_id=\"200\"} 0",
        ] {
            assert!(t.lines().any(|x| x == want), "missing {want} in\n{t}");
        }
        assert!(t.contains("status=\"SOMETHING_NEW\""), "{t}");
        assert!(t.contains("phone_number_id=\"302\",waba_id=\"200\",display_phone_number=\"+1 555 0100\",verified_name=\"Acme \\\"Support\\\"\",waba_name=\"Acme\",source=\"meta\",status=\"UNKNOWN\""), "{t}");
    }

    #[test]
    fn full_adds_one_series_per_state_with_the_current_one_at_1() {
        let t = text(
            MetricsDetail::Full,
            &[waba(), phone("301", Some("RED"), Some("SOMETHING_NEW"))],
        );
        let l = "phone_number_id=\"301\",waba_id=\"200\"";
        for want in [
            format!("waba_monitor_phone_quality{{{l},state=\"RED\"}} 1"),
            format!("waba_monitor_phone_quality{{{l},state=\"GREEN\"}} 0"),
            format!("waba_monitor_phone_status{{{l},state=\"OTHER\"}} 1"),
            format!("waba_monitor_phone_status{{{l},state=\"CONNECTED\"}} 0"),
            format!("waba_monitor_phone_health{{{l},state=\"LIMITED\"}} 1"),
            "waba_monitor_waba_review_status{waba_id=\"200\",state=\"REJECTED\"} 1".to_owned(),
            "waba_monitor_waba_verification_status{waba_id=\"200\",state=\"verified\"} 1"
                .to_owned(),
            "waba_monitor_waba_health{waba_id=\"200\",state=\"BLOCKED\"} 1".to_owned(),
            format!("waba_monitor_phone_quality_level{{{l}}} 3"),
        ] {
            assert!(t.lines().any(|x| x == want), "missing {want} in\n{t}");
        }
    }

    #[test]
    fn chunks_keep_each_family_whole_and_in_order_across_chunk_boundaries() {
        let rows: Vec<MetricTarget> = (0..3_000)
            .map(|i| {
                phone(
                    &format!("{}", 300_000 + i),
                    Some("GREEN"),
                    Some("CONNECTED"),
                )
            })
            .collect();
        let mut b = TableBuilder::new(MetricsDetail::Compact);
        for r in &rows {
            b.add(r);
        }
        let mut s = TargetSeries::default();
        s.replace(b.finish());
        let chunks: Vec<Bytes> = s.chunks().collect();
        assert!(chunks.len() > 5, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK + 1024));
        let t: String = chunks.iter().map(|c| String::from_utf8_lossy(c)).collect();
        // Every family: one HELP, then all of its samples before the next family starts.
        let mut seen: Vec<&str> = Vec::new();
        let mut counts = std::collections::HashMap::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                assert!(!seen.contains(&name), "{name} twice");
                seen.push(name);
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let current = seen.last().copied().unwrap_or("");
            let metric = line.split('{').next().unwrap_or("");
            assert!(metric.starts_with(current), "{metric} outside {current}");
            *counts.entry(metric.to_owned()).or_insert(0) += 1;
        }
        assert_eq!(counts.get("waba_monitor_phone_stale"), Some(&3_000));
        assert_eq!(counts.get("waba_monitor_phone_info"), Some(&3_000));
        assert_eq!(s.len(), 3_000);
    }
}
