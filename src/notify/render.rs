//! Turning queued alerts into email text: subjects, the plain-text body, Message-ID and
//! References. Pure functions over rows, so every wording is testable without SMTP.
//!
//! Every string that came from Meta (ids, names, display numbers, enum values, health texts,
//! error reasons) goes through [`clean`] before it is put into a subject or a body: control
//! characters (CR, LF, …) become spaces, so such a string can never start a line of its own, and
//! it is cut to [`FIELD_BYTES`] (to [`SUBJECT_FIELD_BYTES`] in a subject, where a long word
//! could not be folded). The mailer encodes the body (quoted-printable or base64 once a line is
//! long) and lettre RFC 2047-encodes and folds the subject.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::alerts::rules::Severity;
use crate::store::outbox::UndigestedAlert;
use crate::timefmt::{format_duration, parse_rfc3339};

/// The most bytes of one Meta string in a body (the parser's cap, again for rows stored
/// before it existed).
pub const FIELD_BYTES: usize = 1024;
/// The most bytes of one Meta string in a subject: subjects are read in a list, and a long
/// word without spaces cannot be folded.
pub const SUBJECT_FIELD_BYTES: usize = 80;
/// The most bytes of a whole subject.
pub const SUBJECT_BYTES: usize = 400;

/// `s` cut to at most `max` bytes on a character boundary, ending in "…" when cut.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// Characters that end or break a line somewhere: control characters (C0, DEL, C1: CR, LF,
/// NEL, ...) and Unicode's line and paragraph separators.
fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A string from Meta made safe for one line of an email: every control character becomes a
/// space and the result is cut to `max` bytes.
pub fn clean(s: &str, max: usize) -> String {
    let cut = truncate(s, max);
    if cut.contains(breaks_lines) {
        cut.chars()
            .map(|c| if breaks_lines(c) { ' ' } else { c })
            .collect()
    } else {
        cut.into_owned()
    }
}

/// [`clean`] at the body's limit.
fn c(s: &str) -> String {
    clean(s, FIELD_BYTES)
}

/// One queued alert with what is known about its target.
#[derive(Debug, Clone)]
pub struct AlertItem {
    pub id: i64,
    pub created_at: String,
    pub kind: String,
    pub target_id: String,
    pub topic: String,
    pub severity: String,
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub previous_since: Option<String>,
    pub detail: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub waba_id: Option<String>,
    pub waba_name: Option<String>,
    pub health_entities: Option<String>,
    /// A template's name and language (kind `template`).
    pub template_name: Option<String>,
    pub template_language: Option<String>,
    /// For routes and silences: the portfolio of its WABA, and its source.
    pub business_id: Option<String>,
    pub source: Option<String>,
}

impl From<UndigestedAlert> for AlertItem {
    fn from(a: UndigestedAlert) -> AlertItem {
        AlertItem {
            id: a.id,
            created_at: a.created_at,
            kind: a.kind,
            target_id: a.target_id,
            topic: a.topic,
            severity: a.severity,
            field: a.field,
            old: a.old,
            new: a.new,
            previous_since: a.previous_since,
            detail: a.detail,
            display_phone_number: a.display_phone_number,
            verified_name: a.verified_name,
            waba_id: a.waba_id,
            waba_name: a.waba_name,
            health_entities: a.health_entities,
            template_name: a.template_name,
            template_language: a.template_language,
            business_id: a.business_id,
            source: a.source,
        }
    }
}

impl AlertItem {
    /// What the item is about, for routes and silences.
    pub fn target_ref(&self) -> crate::config::TargetRef<'_> {
        crate::config::TargetRef {
            business_id: self.business_id.as_deref(),
            waba_id: match self.kind.as_str() {
                "waba" => Some(self.target_id.as_str()),
                _ => self.waba_id.as_deref(),
            },
            number_id: (self.kind == "phone_number").then_some(self.target_id.as_str()),
            source: self.source.as_deref(),
        }
    }

    /// The severity that ranks this item: a reminder ranks as what it reminds of.
    pub fn rank(&self) -> Severity {
        match self.severity.as_str() {
            "reminder" | "escalation" => self
                .detail
                .as_deref()
                .and_then(Severity::parse)
                .unwrap_or(Severity::Warning),
            s => Severity::parse(s).unwrap_or(Severity::Warning),
        }
    }

    fn label(&self) -> &'static str {
        match self.severity.as_str() {
            "critical" => "CRITICAL",
            "warning" => "WARNING",
            "improving" => "IMPROVING",
            "resolved" => "RESOLVED",
            "escalation" => "ESCALATED",
            _ => "REMINDER",
        }
    }

    /// A reminder or an escalation: about an alert already open, its `detail` is the
    /// severity it was opened with.
    pub fn is_follow_up(&self) -> bool {
        matches!(self.severity.as_str(), "reminder" | "escalation")
    }

    /// "+1 555-0100 (Support)", "WABA Acme Support (1134…)", "source main"; each Meta string
    /// cleaned and cut to 1 KB.
    pub fn target(&self) -> String {
        self.target_within(FIELD_BYTES)
    }

    /// [`AlertItem::target`] with each Meta string cut to `max` bytes.
    fn target_within(&self, max: usize) -> String {
        let id = clean(&self.target_id, max);
        match self.kind.as_str() {
            "phone_number" => {
                let number = match &self.display_phone_number {
                    Some(n) => clean(n, max),
                    None => format!("number {id}"),
                };
                match &self.verified_name {
                    Some(n) => format!("{number} ({})", clean(n, max)),
                    None => number,
                }
            }
            "waba" => match &self.waba_name {
                Some(n) => format!("WABA {} ({id})", clean(n, max)),
                None => format!("WABA {id}"),
            },
            "template" => self.template_within(max),
            _ => format!("source {id}"),
        }
    }

    /// "template order_update (en_US)", or "template {id}" before its name is known.
    fn template_within(&self, max: usize) -> String {
        let name = match &self.template_name {
            Some(n) => format!("template {}", clean(n, max)),
            None => format!("template {}", clean(&self.target_id, max)),
        };
        match &self.template_language {
            Some(l) => format!("{name} ({})", clean(l, max)),
            None => name,
        }
    }

    fn field_label(&self) -> &str {
        if self.kind == "template" && self.field == "quality_score" {
            return "quality";
        }
        match self.field.as_str() {
            "quality_rating" => "quality",
            "status" => "status",
            "health" => "health",
            "messaging_limit_tier" => "messaging limit tier",
            "whatsapp_business_manager_messaging_limit" => "portfolio messaging limit",
            "name_status" => "display name",
            "account_review_status" => "account review",
            "business_verification_status" => "business verification",
            "presence" => "presence",
            "monitoring" => "monitoring",
            "ban_state" => "WABA ban",
            "restriction" => "restriction",
            "partner_removed" => "partner",
            "account_alert" => "account alert",
            "security" => "security",
            "quality_event" => "quality event",
            "review_decision" => "review decision",
            "webhook_subscription" => "webhooks",
            "connection" => "connection",
            "business_capability" => "business messaging limit",
            other => other,
        }
    }

    /// "quality GREEN → RED", "gone from its WABA", "monitoring blind"; values cleaned and cut
    /// to 1 KB.
    pub fn what(&self) -> String {
        self.what_within(FIELD_BYTES)
    }

    /// [`AlertItem::what`] with each value cut to `max` bytes.
    fn what_within(&self, max: usize) -> String {
        let new = clean(self.new.as_deref().unwrap_or("?"), max);
        if self.is_follow_up() {
            return format!("{} still {new}", self.field_label());
        }
        match (self.field.as_str(), new.as_str()) {
            ("presence", "gone") if self.kind == "template" => {
                "deleted (gone from its WABA's templates)".to_owned()
            }
            ("presence", "gone") => "gone from its WABA".to_owned(),
            ("presence", _) => "listed on its WABA again".to_owned(),
            ("monitoring", "blind") => "monitoring blind".to_owned(),
            ("monitoring", _) => "monitoring restored".to_owned(),
            _ => match &self.old {
                Some(old) => format!("{} {} → {new}", self.field_label(), clean(old, max)),
                None => format!("{} {new} (first seen)", self.field_label()),
            },
        }
    }

    /// A short phrase for digest subjects, counted across items: "numbers RED", "BANNED".
    fn category(&self) -> String {
        let new = clean(self.new.as_deref().unwrap_or("?"), SUBJECT_FIELD_BYTES);
        let new = new.as_str();
        match (self.severity.as_str(), self.field.as_str()) {
            ("resolved", _) => "resolved".into(),
            ("improving", _) => "improving".into(),
            ("reminder" | "escalation", _) => "still open".into(),
            (_, "status") if self.kind == "template" => format!("templates {new}"),
            (_, "quality_score") => format!("templates {new}"),
            (_, "category") if self.kind == "template" => "templates recategorised".into(),
            (_, "quality_rating") => format!("numbers {new}"),
            (_, "status") => new.to_owned(),
            (_, "health") => format!("health {new}"),
            (
                _,
                "messaging_limit_tier"
                | "whatsapp_business_manager_messaging_limit"
                | "business_capability",
            ) => "limits lowered".into(),
            (_, "presence") => "numbers gone".into(),
            (_, "monitoring") => "sources blind".into(),
            (_, "account_review_status") => format!("reviews {new}"),
            (_, "business_verification_status") => format!("verification {new}"),
            (_, f) => clean(f, SUBJECT_FIELD_BYTES),
        }
    }

    fn advice(&self) -> &'static str {
        if self.severity == "resolved" {
            return "Nothing to do.";
        }
        if self.kind == "template" {
            return match (self.field.as_str(), self.new.as_deref().unwrap_or("")) {
                ("status", "PAUSED") => {
                    "Business-initiated sends of this template fail (error 132015) while it is paused: switch campaigns to another approved template and look at its recent feedback (blocks, reports) in WhatsApp Manager > Message templates."
                }
                ("status", "DISABLED") => {
                    "Sends of this template fail for good (error 132016): create a new template (a new name) and move every flow that used it; appeal in WhatsApp Manager if it is a mistake."
                }
                ("status", _) => {
                    "Open WhatsApp Manager > Message templates for Meta's reason; edit and resubmit or appeal."
                }
                ("quality_score", _) => {
                    "Recipients block or report this template: review its wording and audience and slow its sends, or it will be paused."
                }
                ("category", _) => {
                    "Meta recategorised this template: what each send costs changed; check it is still the template you want to send."
                }
                _ => "Check the template in WhatsApp Manager > Message templates.",
            };
        }
        match self.field.as_str() {
            "quality_rating" => {
                "Review recent templates and opt-in practices (WhatsApp Manager > Insights) and slow campaigns from this number until quality recovers."
            }
            "status" => {
                "Open WhatsApp Manager > Phone numbers for Meta's notice and reason; appeal in Business Support Home if it is a mistake."
            }
            "health" => {
                "Apply Meta's possible solution above; sending is at risk until can_send_message is AVAILABLE again."
            }
            "messaging_limit_tier"
            | "whatsapp_business_manager_messaging_limit"
            | "business_capability" => {
                "Fewer business-initiated conversations are allowed per 24 h: slow campaigns down to stay within the new limit."
            }
            "account_review_status" => {
                "See Business Support Home for why the account review was rejected and request a new review."
            }
            "business_verification_status" => {
                "Start or renew business verification in Meta Business Settings > Security Center."
            }
            "presence" => {
                "The number is no longer listed on its WABA: check in WhatsApp Manager whether it was deleted or moved."
            }
            "monitoring" => {
                "waba-monitor cannot see this source's numbers: renew the token or restore its whatsapp_business_management permission, then run `waba-monitor poll-once`."
            }
            "ban_state" => {
                "The WABA is (or will be) disabled by Meta: see Business Support Home for the reason and appeal there if it is a mistake."
            }
            "restriction" => {
                "Meta restricted this account (see details): messaging or adding numbers is limited until the expiry; see Business Support Home."
            }
            "partner_removed" => {
                "A partner (BSP) was removed from this WABA: check in Meta Business Settings whether that was intended."
            }
            "connection" => {
                "The WABA was offboarded or deleted: nothing can be sent from its numbers until it is reconnected; check Meta Business Settings and your BSP."
            }
            "account_alert" => "Read the alert in WhatsApp Manager and Business Support Home.",
            "security" => {
                "The number's two-step verification PIN changed or a reset was requested: confirm it was you."
            }
            "quality_event" => {
                "Meta flagged the number's quality: review recent templates and slow campaigns from it."
            }
            "review_decision" => {
                "See Business Support Home for why the account review was rejected and request a new review."
            }
            "webhook_subscription" => {
                "Meta no longer sends this WABA's webhooks to the monitor's app: subscribe it again with `POST /{waba-id}/subscribed_apps` using the app's token (until then only polling sees changes)."
            }
            _ => "Check the number in WhatsApp Manager.",
        }
    }
}

/// The subject of one email about `items` (never empty, one line, at most [`SUBJECT_BYTES`]).
pub fn subject(items: &[AlertItem]) -> String {
    truncate(&subject_text(items), SUBJECT_BYTES).into_owned()
}

fn subject_text(items: &[AlertItem]) -> String {
    let top = items
        .iter()
        .map(AlertItem::rank)
        .max()
        .unwrap_or(Severity::Warning);
    let top_label = match top {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "WARNING",
        Severity::Improving => "IMPROVING",
        Severity::Resolved => "RESOLVED",
    };
    if let [one] = items {
        let label = if one.severity == "escalation" {
            format!("ESCALATED {top_label}")
        } else if one.severity == "reminder" {
            format!("REMINDER {top_label}")
        } else {
            one.label().to_owned()
        };
        return format!(
            "[waba-monitor] {label} {} {}",
            one.target_within(SUBJECT_FIELD_BYTES),
            one.what_within(SUBJECT_FIELD_BYTES)
        );
    }
    let mut counts: BTreeMap<(Severity, String), usize> = BTreeMap::new();
    for i in items {
        *counts.entry((i.rank(), i.category())).or_default() += 1;
    }
    let mut parts: Vec<((Severity, String), usize)> = counts.into_iter().collect();
    parts.sort_by(|a, b| b.0.0.cmp(&a.0.0).then(b.1.cmp(&a.1)));
    let summary: Vec<String> = parts
        .into_iter()
        .map(|((_, cat), n)| format!("{n} {cat}"))
        .collect();
    format!("[waba-monitor] {top_label}: {}", summary.join(", "))
}

fn since_line(item: &AlertItem) -> Option<String> {
    let since = item.previous_since.as_deref()?;
    let (Some(from), Some(to)) = (parse_rfc3339(since), parse_rfc3339(&item.created_at)) else {
        return None;
    };
    let lasted = (to - from).to_std().unwrap_or_default();
    let what = if item.is_follow_up() {
        "open since"
    } else {
        "previous state since"
    };
    Some(format!("{what}: {since} ({})", format_duration(lasted)))
}

fn health_lines(item: &AlertItem) -> Vec<String> {
    let Some(json) = item.health_entities.as_deref() else {
        return Vec::new();
    };
    let Ok(entities) = serde_json::from_str::<Vec<crate::model::HealthEntity>>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entities
        .iter()
        .filter(|e| e.can_send_message != "AVAILABLE")
    {
        let id = c(e.id.as_deref().unwrap_or("-"));
        out.push(format!(
            "  health: {} {id} can_send_message {}",
            c(&e.entity_type),
            c(&e.can_send_message)
        ));
        for err in &e.errors {
            out.push(format!(
                "    error {}: {}",
                err.error_code.map_or("-".into(), |code| code.to_string()),
                c(err.error_description.as_deref().unwrap_or(""))
            ));
            if let Some(sol) = &err.possible_solution {
                out.push(format!("    possible solution: {}", c(sol)));
            }
        }
        for info in &e.additional_info {
            out.push(format!("    note: {}", c(info)));
        }
    }
    out
}

/// The plain-text body: the worst first; the templates of one WABA are one section (however
/// many changed), ranked by its worst item.
pub fn body(items: &[AlertItem]) -> String {
    let mut out = String::new();
    let n = items.len();
    out.push_str(&format!(
        "waba-monitor found {n} change{} that matter{}:\n\n",
        if n == 1 { "" } else { "s" },
        if n == 1 { "s" } else { "" }
    ));
    // (rank, first alert id, text) per block: an item, or a WABA's templates.
    let mut blocks: Vec<(Severity, i64, String)> = Vec::new();
    let mut templates: BTreeMap<String, Vec<&AlertItem>> = BTreeMap::new();
    for i in items {
        if i.kind == "template" {
            templates
                .entry(i.waba_id.clone().unwrap_or_default())
                .or_default()
                .push(i);
        } else {
            blocks.push((i.rank(), i.id, item_text(i)));
        }
    }
    for (waba_id, mut group) in templates {
        group.sort_by(|a, b| b.rank().cmp(&a.rank()).then(a.id.cmp(&b.id)));
        let worst = group[0];
        let waba = match (&worst.waba_name, waba_id.is_empty()) {
            (Some(name), false) => format!("WABA {} ({})", c(name), c(&waba_id)),
            (None, false) => format!("WABA {}", c(&waba_id)),
            _ => "an unknown WABA".to_owned(),
        };
        let k = group.len();
        let mut text = format!(
            "{}  templates of {waba}: {k} change{}\n",
            worst.label(),
            if k == 1 { "" } else { "s" }
        );
        let mut advice: Vec<&str> = Vec::new();
        for i in &group {
            text.push_str(&format!("  {}  {}: {}\n", i.label(), i.target(), i.what()));
            text.push_str(&format!("    template id: {}\n", c(&i.target_id)));
            if let Some(detail) = i.detail.as_deref().filter(|_| !i.is_follow_up()) {
                text.push_str(&format!("    details: {}\n", c(detail)));
            }
            if let Some(line) = since_line(i) {
                text.push_str(&format!("    {line}\n"));
            }
            if !advice.contains(&i.advice()) {
                advice.push(i.advice());
            }
        }
        text.push_str(&format!("  detected at: {} (UTC)\n", worst.created_at));
        for a in advice {
            text.push_str(&format!("  what to do: {a}\n"));
        }
        text.push('\n');
        blocks.push((
            worst.rank(),
            group.iter().map(|i| i.id).min().unwrap_or(0),
            text,
        ));
    }
    blocks.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, text) in blocks {
        out.push_str(&text);
    }
    out.push_str("-- \nwaba-monitor. `waba-monitor status` and `waba-monitor history --id ID` show the full picture.\n");
    out
}

/// One number's, WABA's or source's item of the body.
fn item_text(i: &AlertItem) -> String {
    let mut out = format!("{}  {}: {}\n", i.label(), i.target(), i.what());
    match i.kind.as_str() {
        "phone_number" => {
            out.push_str(&format!("  phone number id: {}\n", c(&i.target_id)));
            let waba = match (&i.waba_name, &i.waba_id) {
                (Some(n), Some(id)) => format!("{} ({})", c(n), c(id)),
                (None, Some(id)) => c(id),
                _ => "unknown".into(),
            };
            out.push_str(&format!("  WABA: {waba}\n"));
        }
        "waba" => out.push_str(&format!("  WABA id: {}\n", c(&i.target_id))),
        _ => {}
    }
    match i.kind.as_str() {
        // What Meta said with it (a webhook's ban date, restriction types and expiry).
        "phone_number" | "waba" => {
            if let Some(detail) = i.detail.as_deref().filter(|_| !i.is_follow_up()) {
                out.push_str(&format!("  details: {}\n", c(detail)));
            }
        }
        _ => {
            if let Some(reason) = i.detail.as_deref().filter(|_| !i.is_follow_up()) {
                out.push_str(&format!("  reason: {}\n", c(reason)));
            }
        }
    }
    out.push_str(&format!("  detected at: {} (UTC)\n", i.created_at));
    if let Some(line) = since_line(i) {
        out.push_str(&format!("  {line}\n"));
    }
    if i.field == "health" || i.rank() >= Severity::Warning {
        for line in health_lines(i) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(&format!("  what to do: {}\n\n", i.advice()));
    out
}

/// The `text/html` alternative of an email: the same items as the plain text.
pub fn html(items: &[AlertItem], dashboard: Option<&url::Url>) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = String::from("<!DOCTYPE html><html><body><pre>");
    out.push_str(&esc(&body(items)));
    out.push_str("</pre>");
    if let Some(d) = dashboard {
        out.push_str(&format!(
            "<p><a href=\"{}\">dashboard</a></p>",
            esc(d.as_str())
        ));
    }
    out.push_str("</body></html>");
    out
}

/// FNV-1a: a stable hash for Message-IDs (not for security).
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The Message-ID of the email about `items` to `recipient`: derived from the alerts (ids and
/// creation time) and the recipient only, so the same email always carries the same id, and a
/// fresh database reusing alert ids still makes new ids.
pub fn message_id(items: &[AlertItem], recipient: &str, domain: &str) -> String {
    let first = items.iter().map(|i| i.id).min().unwrap_or(0);
    let last = items.iter().map(|i| i.id).max().unwrap_or(0);
    let created = items
        .iter()
        .find(|i| i.id == first)
        .map_or("", |i| i.created_at.as_str());
    format!(
        "<alerts-{first}-{last}.{:016x}@{domain}>",
        fnv1a(&format!("{}|{created}", recipient.to_ascii_lowercase()))
    )
}

/// References: one per target, so mail clients thread each number's story. An id that is not
/// a short token of letters, digits, `.`, `_` and `-` (Meta's ids are digits) is replaced by
/// its hash, so a reference stays one short, valid word.
pub fn references(items: &[AlertItem], domain: &str) -> String {
    let mut targets: Vec<Cow<'_, str>> = items
        .iter()
        .map(|i| reference_token(&i.target_id))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
        .iter()
        .map(|t| format!("<target-{t}@{domain}>"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn reference_token(id: &str) -> Cow<'_, str> {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("h{:016x}", fnv1a(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn item(
        id: i64,
        severity: &str,
        field: &str,
        old: Option<&str>,
        new: &str,
    ) -> AlertItem {
        AlertItem {
            id,
            created_at: "2026-11-23T12:00:00.000Z".into(),
            kind: "phone_number".into(),
            target_id: format!("10654035224290{id}"),
            topic: "quality".into(),
            severity: severity.into(),
            field: field.into(),
            old: old.map(str::to_owned),
            new: Some(new.to_owned()),
            previous_since: Some("2026-11-20T12:00:00.000Z".into()),
            detail: None,
            display_phone_number: Some("+1 555-0100".into()),
            verified_name: Some("Support".into()),
            waba_id: Some("113".into()),
            waba_name: Some("Acme".into()),
            health_entities: None,
            template_name: None,
            template_language: None,
            business_id: None,
            source: None,
        }
    }

    fn template(id: i64, severity: &str, field: &str, old: &str, new: &str) -> AlertItem {
        AlertItem {
            kind: "template".into(),
            target_id: format!("77{id}"),
            template_name: Some(format!("order_update_{id}")),
            template_language: Some("en_US".into()),
            display_phone_number: None,
            verified_name: None,
            ..item(id, severity, field, Some(old), new)
        }
    }

    #[test]
    fn a_waba_s_templates_are_one_section_ranked_by_its_worst() {
        let items = vec![
            item(1, "warning", "quality_rating", Some("GREEN"), "YELLOW"),
            template(2, "warning", "status", "APPROVED", "PAUSED"),
            template(3, "critical", "quality_score", "GREEN", "RED"),
            template(4, "warning", "category", "UTILITY", "MARKETING"),
        ];
        let text = body(&items);
        assert_eq!(
            text.matches("templates of WABA Acme (113)").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("CRITICAL  templates of WABA Acme (113): 3 changes"),
            "{text}"
        );
        for line in [
            "WARNING  template order_update_2 (en_US): status APPROVED → PAUSED",
            "CRITICAL  template order_update_3 (en_US): quality GREEN → RED",
            "WARNING  template order_update_4 (en_US): category UTILITY → MARKETING",
            "template id: 772",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // The section (critical) comes before the number's warning.
        let section = text.find("templates of WABA").unwrap_or(usize::MAX);
        let number = text.find("+1 555-0100").unwrap_or(0);
        assert!(section < number, "{text}");
        assert!(text.contains("132015"), "the pause advice: {text}");
        let subject = subject(&items);
        assert!(
            subject.contains("1 templates RED") || subject.contains("templates RED"),
            "{subject}"
        );
    }

    #[test]
    fn a_single_transition_gets_a_specific_subject() {
        let s = subject(&[item(1, "critical", "quality_rating", Some("GREEN"), "RED")]);
        assert_eq!(
            s,
            "[waba-monitor] CRITICAL +1 555-0100 (Support) quality GREEN → RED"
        );
    }

    #[test]
    fn a_digest_subject_summarises_by_severity() {
        let items = vec![
            item(1, "critical", "quality_rating", Some("GREEN"), "RED"),
            item(2, "critical", "quality_rating", Some("YELLOW"), "RED"),
            item(3, "critical", "status", Some("CONNECTED"), "BANNED"),
            item(4, "resolved", "quality_rating", Some("RED"), "GREEN"),
        ];
        assert_eq!(
            subject(&items),
            "[waba-monitor] CRITICAL: 2 numbers RED, 1 BANNED, 1 resolved"
        );
    }

    #[test]
    fn the_body_says_how_long_the_previous_state_lasted_and_what_to_do() {
        let b = body(&[item(1, "critical", "quality_rating", Some("GREEN"), "RED")]);
        assert!(b.contains("phone number id: 106540352242901"), "{b}");
        assert!(b.contains("WABA: Acme (113)"), "{b}");
        assert!(
            b.contains("detected at: 2026-11-23T12:00:00.000Z (UTC)"),
            "{b}"
        );
        assert!(
            b.contains("previous state since: 2026-11-20T12:00:00.000Z (3d)"),
            "{b}"
        );
        assert!(b.contains("what to do:"), "{b}");
    }

    #[test]
    fn health_errors_and_meta_solutions_are_in_the_body() {
        let mut i = item(1, "warning", "health", Some("AVAILABLE"), "LIMITED");
        i.health_entities = Some(r#"[{"entity_type":"BUSINESS","id":"5","can_send_message":"LIMITED","errors":[{"error_code":141010,"error_description":"The Business has not passed business verification.","possible_solution":"Visit business settings."}]}]"#.into());
        let b = body(&[i]);
        assert!(
            b.contains("error 141010: The Business has not passed"),
            "{b}"
        );
        assert!(
            b.contains("possible solution: Visit business settings."),
            "{b}"
        );
    }

    #[test]
    fn meta_strings_lose_their_line_breaks_and_are_cut_on_a_char_boundary() {
        assert_eq!(
            clean("Evil\r\nBcc: x@y\u{85}\u{2028}\t!", 100),
            "Evil  Bcc: x@y   !"
        );
        let long = "é".repeat(1000);
        let cut = clean(&long, FIELD_BYTES);
        assert!(
            cut.len() <= FIELD_BYTES && cut.ends_with('…'),
            "{}",
            cut.len()
        );
        assert_eq!(clean("short", FIELD_BYTES), "short");
    }

    #[test]
    fn a_long_name_is_shortened_in_the_subject_and_kept_whole_in_the_body() {
        let mut i = item(1, "critical", "quality_rating", Some("GREEN"), "RED");
        let name = format!("{}\r\nBcc: evil@example.com", "N".repeat(1000));
        i.verified_name = Some(name);
        let s = subject(std::slice::from_ref(&i));
        assert!(s.len() <= SUBJECT_BYTES, "{}", s.len());
        assert!(
            s.split(' ').all(|w| w.len() <= SUBJECT_FIELD_BYTES + 2),
            "{s}"
        );
        assert!(s.ends_with("quality GREEN → RED"), "{s}");
        assert!(!s.contains(['\r', '\n']), "{s:?}");
        let b = body(&[i]);
        assert!(b.contains(&"N".repeat(1000)), "the name is cut in the body");
        assert!(b.contains("NNNN  Bcc: evil@example.com): quality"), "{b}");
        assert!(b.lines().all(|l| !l.starts_with("Bcc")), "{b}");
    }

    #[test]
    fn an_odd_target_id_becomes_a_hash_in_references() {
        let mut i = item(1, "critical", "status", None, "BANNED");
        i.target_id = format!("1>\r\nBcc: x {}", "9".repeat(2000));
        let r = references(std::slice::from_ref(&i), "example.com");
        assert!(r.starts_with("<target-h") && r.len() < 60, "{r}");
        assert_eq!(r, references(&[i], "example.com"));
    }

    #[test]
    fn message_ids_are_deterministic_per_alert_set_and_recipient() {
        let items = vec![
            item(3, "critical", "status", None, "BANNED"),
            item(7, "warning", "status", None, "WARNED"),
        ];
        let a = message_id(&items, "ops@example.com", "example.com");
        assert_eq!(a, message_id(&items, "OPS@example.com", "example.com"));
        assert_ne!(a, message_id(&items, "other@example.com", "example.com"));
        assert!(
            a.starts_with("<alerts-3-7.") && a.ends_with("@example.com>"),
            "{a}"
        );
        assert_eq!(
            references(&items, "example.com"),
            "<target-106540352242903@example.com> <target-106540352242907@example.com>"
        );
    }
}
