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

    /// A short phrase for digest subjects, counted across causes, in its singular and plural
    /// forms: ("number RED", "numbers RED"), ("template PAUSED", "templates PAUSED").
    fn category(&self) -> Category {
        self.category_as(&self.kind)
    }

    /// [`AlertItem::category`] as if the item were about a target of `kind`: a change shared
    /// by a WABA's numbers is counted as the WABA's.
    fn category_as(&self, kind: &str) -> Category {
        let new = clean(self.new.as_deref().unwrap_or("?"), SUBJECT_FIELD_BYTES);
        let new = new.as_str();
        let waba = kind == "waba";
        let of = |one: &str, many: &str| Category::new(one, many);
        match (self.severity.as_str(), self.field.as_str()) {
            ("resolved", _) => of("resolved", "resolved"),
            ("improving", _) => of("improving", "improving"),
            ("reminder" | "escalation", _) => of("still open", "still open"),
            (_, "status" | "quality_score") if kind == "template" => {
                of(&format!("template {new}"), &format!("templates {new}"))
            }
            (_, "category") if kind == "template" => {
                of("template recategorised", "templates recategorised")
            }
            (_, "presence") if kind == "template" => of("template deleted", "templates deleted"),
            (_, "quality_rating") => of(&format!("number {new}"), &format!("numbers {new}")),
            (_, "status") if waba => of(&format!("WABA {new}"), &format!("WABAs {new}")),
            // A number's status is its own noun: "2 numbers RED, 1 BANNED".
            (_, "status") => of(new, new),
            (_, "health") if waba => of(
                &format!("WABA with health {new}"),
                &format!("WABAs with health {new}"),
            ),
            (_, "health") => of(
                &format!("number with health {new}"),
                &format!("numbers with health {new}"),
            ),
            (_, "whatsapp_business_manager_messaging_limit") if waba => of(
                "WABA: portfolio limit lowered",
                "WABAs: portfolio limit lowered",
            ),
            (_, "business_capability") if waba => of(
                "WABA: business limit lowered",
                "WABAs: business limit lowered",
            ),
            (
                _,
                "messaging_limit_tier"
                | "whatsapp_business_manager_messaging_limit"
                | "business_capability",
            ) => of("limit lowered", "limits lowered"),
            (_, "presence") if waba => of("WABA gone", "WABAs gone"),
            (_, "presence") => of("number gone", "numbers gone"),
            (_, "monitoring") => of("source blind", "sources blind"),
            (_, "account_review_status" | "review_decision") => {
                of(&format!("review {new}"), &format!("reviews {new}"))
            }
            (_, "business_verification_status") => of(
                &format!("verification {new}"),
                &format!("verifications {new}"),
            ),
            (_, "ban_state") => match new {
                "DISABLE" => of("WABA disabled", "WABAs disabled"),
                "SCHEDULE_FOR_DISABLE" => of("WABA to be disabled", "WABAs to be disabled"),
                _ => of(&format!("WABA ban {new}"), &format!("WABA bans {new}")),
            },
            (_, "restriction") => of("restriction", "restrictions"),
            (_, "partner_removed") => of("partner removed", "partners removed"),
            (_, "account_alert") => of("account alert", "account alerts"),
            (_, "security") => of("security event", "security events"),
            (_, "quality_event") => of(
                &format!("quality event {new}"),
                &format!("quality events {new}"),
            ),
            (_, "webhook_subscription") => of("WABA without webhooks", "WABAs without webhooks"),
            (_, "connection") => of(&format!("WABA {new}"), &format!("WABAs {new}")),
            // A field this table does not know has no plural it could be sure of.
            (_, f) => {
                let f = clean(f, SUBJECT_FIELD_BYTES);
                of(&f, &f)
            }
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

/// A subject's category in its singular and plural forms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Category {
    one: String,
    many: String,
}

impl Category {
    fn new(one: &str, many: &str) -> Category {
        Category {
            one: one.to_owned(),
            many: many.to_owned(),
        }
    }

    /// "1 number RED", "3 numbers RED"; with the numbers WABA-level causes cover:
    /// "1 WABA: portfolio limit lowered (40 numbers)".
    fn counted(&self, n: usize, numbers: usize) -> String {
        let mut s = format!("{n} {}", if n == 1 { &self.one } else { &self.many });
        if numbers > 0 {
            s.push_str(&format!(" ({})", plural(numbers, "number", "numbers")));
        }
        s
    }
}

/// "1 number", "40 numbers".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The subject of one email about `items` (never empty, one line, at most [`SUBJECT_BYTES`]).
pub fn subject(items: &[AlertItem]) -> String {
    truncate(&subject_text(items), SUBJECT_BYTES).into_owned()
}

/// "CRITICAL", or "REMINDER CRITICAL" / "ESCALATED CRITICAL" when `lead` follows up on an
/// alert already open.
fn subject_label(lead: &AlertItem, top_label: &str) -> String {
    match lead.severity.as_str() {
        "escalation" => format!("ESCALATED {top_label}"),
        "reminder" => format!("REMINDER {top_label}"),
        _ => lead.label().to_owned(),
    }
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
        return format!(
            "[waba-monitor] {} {} {}",
            subject_label(one, top_label),
            one.target_within(SUBJECT_FIELD_BYTES),
            one.what_within(SUBJECT_FIELD_BYTES)
        );
    }
    let blocks = blocks(items);
    // One cause (a WABA-level change and its numbers, a number's two limits): said in full.
    if let [one] = blocks.as_slice()
        && !matches!(one, Block::Templates { .. })
    {
        return format!(
            "[waba-monitor] {} {} {}",
            subject_label(one.lead(), top_label),
            one.target_within(SUBJECT_FIELD_BYTES),
            one.what_within(SUBJECT_FIELD_BYTES)
        );
    }
    // Counted by cause: (severity, category) → (causes, numbers they cover).
    let mut counts: BTreeMap<(Severity, Category), (usize, usize)> = BTreeMap::new();
    let mut add = |rank: Severity, cat: Category, numbers: usize| {
        let c = counts.entry((rank, cat)).or_default();
        c.0 += 1;
        c.1 += numbers;
    };
    for b in &blocks {
        match b {
            // Each template is a cause of its own.
            Block::Templates { items, .. } => {
                for i in items {
                    add(i.rank(), i.category(), 0);
                }
            }
            Block::Single(u) => add(u.rank(), u.key.category(), 0),
            Block::Waba { head, members } => add(b.rank(), head.category(), members.len()),
            Block::Shared { key, members } => {
                add(b.rank(), key.category_as("waba"), members.len());
            }
        }
    }
    let mut parts: Vec<((Severity, Category), (usize, usize))> = counts.into_iter().collect();
    parts.sort_by(|a, b| b.0.0.cmp(&a.0.0).then(b.1.0.cmp(&a.1.0)));
    let summary: Vec<String> = parts
        .into_iter()
        .map(|((_, cat), (n, numbers))| cat.counted(n, numbers))
        .collect();
    format!("[waba-monitor] {top_label}: {}", summary.join(", "))
}

/// ("previous state since", "2026-11-20T12:00:00.000Z (3d)"), or ("open since", …) for a
/// reminder.
fn since_fact(item: &AlertItem) -> Option<(&'static str, String)> {
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
    Some((what, format!("{} ({})", c(since), format_duration(lasted))))
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

// ---------------------------------------------------------------------------------------------
// Links

/// WhatsApp Manager, where a WABA's numbers and templates are managed.
pub const WHATSAPP_MANAGER: &str = "https://business.facebook.com/wa/manage/";

/// A page of WhatsApp Manager about one WABA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerPage {
    /// The WABA's overview.
    Home,
    /// Its phone numbers.
    PhoneNumbers,
    /// Its message templates.
    Templates,
}

/// The WhatsApp Manager page `page` of WABA `waba_id`
/// (`https://business.facebook.com/wa/manage/phone-numbers/?waba_id=…`); `None` without an id.
/// The id is query-encoded, whatever it holds.
pub fn manager_url(page: ManagerPage, waba_id: &str) -> Option<url::Url> {
    let id = clean(waba_id.trim(), FIELD_BYTES);
    if id.is_empty() {
        return None;
    }
    let path = match page {
        ManagerPage::Home => "home/",
        ManagerPage::PhoneNumbers => "phone-numbers/",
        ManagerPage::Templates => "message-templates/",
    };
    let mut url = url::Url::parse(WHATSAPP_MANAGER).ok()?.join(path).ok()?;
    url.query_pairs_mut().append_pair("waba_id", &id);
    Some(url)
}

// ---------------------------------------------------------------------------------------------
// Grouping by cause

/// The WABA an item is about or belongs to.
fn waba_of(i: &AlertItem) -> Option<&str> {
    match i.kind.as_str() {
        "waba" => Some(i.target_id.as_str()),
        _ => i.waba_id.as_deref(),
    }
    .filter(|w| !w.is_empty())
}

/// The same field changed the same way (and so with the same severity).
fn same_change(a: &AlertItem, b: &AlertItem) -> bool {
    a.field == b.field && a.old == b.old && a.new == b.new && a.severity == b.severity
}

/// A WABA banned or disabled (a webhook's `ban_state`, or its status): its numbers' own status
/// lines are listed under it.
fn is_ban(i: &AlertItem) -> bool {
    if i.kind != "waba" {
        return false;
    }
    let new = i.new.as_deref().unwrap_or("").to_ascii_uppercase();
    match i.field.as_str() {
        "ban_state" => matches!(new.as_str(), "DISABLE" | "SCHEDULE_FOR_DISABLE"),
        "status" => matches!(new.as_str(), "BANNED" | "DISABLED" | "BLOCKED"),
        _ => false,
    }
}

fn is_limit(i: &AlertItem) -> bool {
    matches!(
        i.field.as_str(),
        "messaging_limit_tier" | "whatsapp_business_manager_messaging_limit"
    )
}

/// Whether a number's change has its cause at its WABA or portfolio, so that the same change
/// on several numbers of a WABA is one cause: the portfolio's messaging limit, the business's
/// limit, or health limited by the WABA, the business or the app (not by the number itself).
fn cause_above_the_number(i: &AlertItem) -> bool {
    match i.field.as_str() {
        "whatsapp_business_manager_messaging_limit" | "business_capability" => true,
        "health" => {
            let Some(json) = i.health_entities.as_deref() else {
                return false;
            };
            let Ok(entities) = serde_json::from_str::<Vec<crate::model::HealthEntity>>(json) else {
                return false;
            };
            let mut bad = entities
                .iter()
                .filter(|e| e.can_send_message != "AVAILABLE")
                .peekable();
            bad.peek().is_some() && bad.all(|e| e.entity_type != "PHONE_NUMBER")
        }
        _ => false,
    }
}

/// One target's line: one item, or a number's two messaging limits changed the same way in
/// the same digest (`key` the portfolio limit, `also` the number's tier).
#[derive(Debug, Clone, Copy)]
struct Unit<'a> {
    key: &'a AlertItem,
    also: Option<&'a AlertItem>,
}

impl<'a> Unit<'a> {
    fn one(key: &'a AlertItem) -> Unit<'a> {
        Unit { key, also: None }
    }

    fn items(self) -> impl Iterator<Item = &'a AlertItem> {
        std::iter::once(self.key).chain(self.also)
    }

    fn rank(self) -> Severity {
        self.items()
            .map(AlertItem::rank)
            .max()
            .unwrap_or(Severity::Warning)
    }

    fn what_within(self, max: usize) -> String {
        match self.also {
            Some(tier) => limits_what(self.key, tier, max),
            None => self.key.what_within(max),
        }
    }
}

/// "messaging limits lowered: tier TIER_10K → TIER_2K, portfolio TIER_10K → TIER_2K".
fn limits_what(portfolio: &AlertItem, tier: &AlertItem, max: usize) -> String {
    let change = |i: &AlertItem| {
        format!(
            "{} → {}",
            clean(i.old.as_deref().unwrap_or("?"), max),
            clean(i.new.as_deref().unwrap_or("?"), max)
        )
    };
    let how = match portfolio.severity.as_str() {
        "resolved" | "improving" => "raised",
        _ => "lowered",
    };
    format!(
        "messaging limits {how}: tier {}, portfolio {}",
        change(tier),
        change(portfolio)
    )
}

/// A number's `messaging_limit_tier` and `whatsapp_business_manager_messaging_limit` changed
/// the same way (both lowered, or both raised) become one unit; everything else stays alone.
fn pair_limits(units: Vec<Unit<'_>>) -> Vec<Unit<'_>> {
    let mut out: Vec<Unit<'_>> = Vec::with_capacity(units.len());
    // Where a number's limit item waits for its partner.
    let mut waiting: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for u in units {
        let i = u.key;
        if i.kind == "phone_number" && is_limit(i) && !i.is_follow_up() {
            if let Some(k) = waiting.get(i.target_id.as_str()).copied()
                && let Some(p) = out.get_mut(k)
                && p.key.field != i.field
                && p.key.severity == i.severity
            {
                let (portfolio, tier) = if is_portfolio(i) {
                    (i, p.key)
                } else {
                    (p.key, i)
                };
                *p = Unit {
                    key: portfolio,
                    also: Some(tier),
                };
                waiting.remove(i.target_id.as_str());
                continue;
            }
            waiting.insert(i.target_id.as_str(), out.len());
        }
        out.push(u);
    }
    out
}

fn is_portfolio(i: &AlertItem) -> bool {
    i.field == "whatsapp_business_manager_messaging_limit"
}

/// One cause: a block of the text part and a row of the HTML table.
#[derive(Debug)]
enum Block<'a> {
    /// One target's item (or a number's two limits).
    Single(Unit<'a>),
    /// A WABA's own item with the numbers listed under it: those that changed the same field
    /// the same way, and, for a ban, its numbers' status changes.
    Waba {
        head: &'a AlertItem,
        members: Vec<Unit<'a>>,
    },
    /// The same WABA-level change (`key`'s) on several numbers of one WABA.
    Shared {
        key: &'a AlertItem,
        members: Vec<Unit<'a>>,
    },
    /// A WABA's templates, worst first (`first` is `items[0]`).
    Templates {
        waba_id: String,
        first: &'a AlertItem,
        items: Vec<&'a AlertItem>,
    },
}

/// The worst of `first` and `rest`, the first of equals.
fn worst<'a>(first: &'a AlertItem, rest: impl IntoIterator<Item = &'a AlertItem>) -> &'a AlertItem {
    rest.into_iter()
        .fold(first, |w, i| if i.rank() > w.rank() { i } else { w })
}

impl<'a> Block<'a> {
    fn items(&self) -> Vec<&'a AlertItem> {
        match self {
            Block::Single(u) => u.items().collect(),
            Block::Waba { head, members } => std::iter::once(*head)
                .chain(members.iter().flat_map(|u| u.items()))
                .collect(),
            Block::Shared { members, .. } => members.iter().flat_map(|u| u.items()).collect(),
            Block::Templates { items, .. } => items.clone(),
        }
    }

    fn rank(&self) -> Severity {
        self.items()
            .into_iter()
            .map(AlertItem::rank)
            .max()
            .unwrap_or(Severity::Warning)
    }

    fn first_id(&self) -> i64 {
        self.items().into_iter().map(|i| i.id).min().unwrap_or(0)
    }

    /// The item whose label the block carries: its worst (the head, of equals).
    fn lead(&self) -> &'a AlertItem {
        let items = self.items();
        match self {
            Block::Single(u) => worst(u.key, items),
            Block::Waba { head, .. } => worst(head, items),
            Block::Shared { key, .. } => worst(key, items),
            Block::Templates { first, .. } => worst(first, items),
        }
    }

    fn label(&self) -> &'static str {
        self.lead().label()
    }

    fn target_within(&self, max: usize) -> String {
        match self {
            Block::Single(u) => u.key.target_within(max),
            Block::Waba { head, .. } => head.target_within(max),
            Block::Shared { key, .. } => waba_target(key, max),
            Block::Templates { waba_id, first, .. } => {
                let name = first.waba_name.as_deref();
                let waba = match (name, waba_id.is_empty()) {
                    (Some(name), false) => {
                        format!("WABA {} ({})", clean(name, max), clean(waba_id, max))
                    }
                    (None, false) => format!("WABA {}", clean(waba_id, max)),
                    _ => "an unknown WABA".to_owned(),
                };
                format!("templates of {waba}")
            }
        }
    }

    fn what_within(&self, max: usize) -> String {
        match self {
            Block::Single(u) => u.what_within(max),
            Block::Waba { head, members } => format!(
                "{} ({})",
                head.what_within(max),
                plural(members.len(), "number", "numbers")
            ),
            Block::Shared { key, members } => format!(
                "{} on {}",
                key.what_within(max),
                plural(members.len(), "number", "numbers")
            ),
            Block::Templates { items, .. } => plural(items.len(), "change", "changes"),
        }
    }
}

/// "WABA Acme Support (1134…)" for the WABA of a number's item.
fn waba_target(i: &AlertItem, max: usize) -> String {
    let id = clean(waba_of(i).unwrap_or("?"), max);
    match &i.waba_name {
        Some(n) => format!("WABA {} ({id})", clean(n, max)),
        None => format!("WABA {id}"),
    }
}

/// The causes of one digest, worst first (then oldest first):
/// - a WABA banned or disabled takes its numbers' status items;
/// - a WABA's own item takes its numbers' items that changed the same field the same way;
/// - the same change of a WABA-level field on several numbers of a WABA is one cause;
/// - a number's two messaging limits changed the same way are one line;
/// - a WABA's templates are one section.
fn blocks(items: &[AlertItem]) -> Vec<Block<'_>> {
    let mut templates: BTreeMap<String, Vec<&AlertItem>> = BTreeMap::new();
    let mut heads: Vec<(&AlertItem, Vec<Unit<'_>>)> = Vec::new();
    let mut units: Vec<Unit<'_>> = Vec::new();
    for i in items {
        match i.kind.as_str() {
            "template" => templates
                .entry(i.waba_id.clone().unwrap_or_default())
                .or_default()
                .push(i),
            "waba" => heads.push((i, Vec::new())),
            _ => units.push(Unit::one(i)),
        }
    }
    let mut shared: Vec<(&AlertItem, Vec<Unit<'_>>)> = Vec::new();
    let mut singles: Vec<Unit<'_>> = Vec::new();
    for u in pair_limits(units) {
        let key = u.key;
        let waba = waba_of(key).filter(|_| key.kind == "phone_number");
        if let Some(w) = waba {
            let status_line = u.also.is_none() && key.field == "status";
            let slot = heads
                .iter()
                .position(|(h, _)| h.target_id == w && status_line && is_ban(h))
                .or_else(|| {
                    heads
                        .iter()
                        .position(|(h, _)| h.target_id == w && same_change(h, key))
                });
            if let Some((_, members)) = slot.and_then(|k| heads.get_mut(k)) {
                members.push(u);
                continue;
            }
            if cause_above_the_number(key) {
                match shared
                    .iter_mut()
                    .find(|(k, _)| waba_of(k) == Some(w) && same_change(k, key))
                {
                    Some((_, members)) => members.push(u),
                    None => shared.push((key, vec![u])),
                }
                continue;
            }
        }
        singles.push(u);
    }
    let mut out: Vec<Block<'_>> = Vec::new();
    for (head, members) in heads {
        out.push(if members.is_empty() {
            Block::Single(Unit::one(head))
        } else {
            Block::Waba { head, members }
        });
    }
    for (key, members) in shared {
        if members.len() >= 2 {
            out.push(Block::Shared { key, members });
        } else {
            out.extend(members.into_iter().map(Block::Single));
        }
    }
    out.extend(singles.into_iter().map(Block::Single));
    for (waba_id, mut group) in templates {
        group.sort_by(|a, b| b.rank().cmp(&a.rank()).then(a.id.cmp(&b.id)));
        if let Some(&first) = group.first() {
            out.push(Block::Templates {
                waba_id,
                first,
                items: group,
            });
        }
    }
    out.sort_by_cached_key(|b| (std::cmp::Reverse(b.rank()), b.first_id()));
    out
}

// ---------------------------------------------------------------------------------------------
// What both parts show of a cause

/// One line under a cause's headline.
enum Line {
    /// "key: value": ids, details, when, what to do.
    Fact(&'static str, String),
    /// A line of Meta's health report, indented as in the text part.
    Health(String),
    /// One template of a WABA's section.
    Template {
        label: &'static str,
        rank: Severity,
        target: String,
        what: String,
        facts: Vec<(&'static str, String)>,
    },
    /// The numbers listed under a WABA-level cause, one line each.
    Numbers(Vec<String>),
    /// The cause's page in WhatsApp Manager.
    Link(url::Url),
}

/// A cause as both parts show it: a headline ("LABEL  target: what") and its lines.
struct Entry {
    rank: Severity,
    label: &'static str,
    target: String,
    what: String,
    lines: Vec<Line>,
}

const DETECTED_AT: &str = "detected at";
const WHAT_TO_DO: &str = "what to do";

fn entry(b: &Block<'_>) -> Entry {
    let mut lines = Vec::new();
    let items = b.items();
    let health_rule = |i: &&AlertItem| i.field == "health" || i.rank() >= Severity::Warning;
    match b {
        Block::Single(u) => {
            let i = u.key;
            match i.kind.as_str() {
                "phone_number" => {
                    lines.push(Line::Fact("phone number id", c(&i.target_id)));
                    let waba = match (&i.waba_name, &i.waba_id) {
                        (Some(n), Some(id)) => format!("{} ({})", c(n), c(id)),
                        (None, Some(id)) => c(id),
                        _ => "unknown".into(),
                    };
                    lines.push(Line::Fact("WABA", waba));
                }
                "waba" => lines.push(Line::Fact("WABA id", c(&i.target_id))),
                _ => {}
            }
            for it in u.items() {
                details(it, &mut lines);
            }
            finish(i, items.iter().any(health_rule), &items, &mut lines);
            let link = match i.kind.as_str() {
                "phone_number" => i
                    .waba_id
                    .as_deref()
                    .and_then(|w| manager_url(ManagerPage::PhoneNumbers, w)),
                "waba" => manager_url(ManagerPage::Home, &i.target_id),
                _ => None,
            };
            lines.extend(link.map(Line::Link));
        }
        Block::Waba { head, members } => {
            lines.push(Line::Fact("WABA id", c(&head.target_id)));
            details(head, &mut lines);
            lines.push(numbers(members, head, b.label()));
            finish(head, health_rule(head), &items, &mut lines);
            lines.extend(manager_url(ManagerPage::Home, &head.target_id).map(Line::Link));
        }
        Block::Shared { key, members } => {
            let waba = waba_of(key).unwrap_or("");
            lines.push(Line::Fact("WABA id", c(waba)));
            lines.push(numbers(members, key, b.label()));
            finish(key, health_rule(key), &items, &mut lines);
            lines.extend(manager_url(ManagerPage::PhoneNumbers, waba).map(Line::Link));
        }
        Block::Templates { waba_id, items, .. } => {
            let mut advice: Vec<&'static str> = Vec::new();
            for i in items {
                let mut facts = vec![("template id", c(&i.target_id))];
                if let Some(detail) = i.detail.as_deref().filter(|_| !i.is_follow_up()) {
                    facts.push(("details", c(detail)));
                }
                facts.extend(since_fact(i));
                lines.push(Line::Template {
                    label: i.label(),
                    rank: i.rank(),
                    target: i.target(),
                    what: i.what(),
                    facts,
                });
                if !advice.contains(&i.advice()) {
                    advice.push(i.advice());
                }
            }
            let lead = b.lead();
            lines.push(Line::Fact(
                DETECTED_AT,
                format!("{} (UTC)", c(&lead.created_at)),
            ));
            lines.extend(
                advice
                    .into_iter()
                    .map(|a| Line::Fact(WHAT_TO_DO, a.to_owned())),
            );
            lines.extend(manager_url(ManagerPage::Templates, waba_id).map(Line::Link));
        }
    }
    Entry {
        rank: b.rank(),
        label: b.label(),
        target: b.target_within(FIELD_BYTES),
        what: b.what_within(FIELD_BYTES),
        lines,
    }
}

/// What Meta said with an item: a webhook's ban date, restriction types and expiry ("details"),
/// or why a source is blind ("reason").
fn details(i: &AlertItem, lines: &mut Vec<Line>) {
    if let Some(detail) = i.detail.as_deref().filter(|_| !i.is_follow_up()) {
        let key = match i.kind.as_str() {
            "phone_number" | "waba" => "details",
            _ => "reason",
        };
        lines.push(Line::Fact(key, c(detail)));
    }
}

/// When, since when, Meta's health report, and what to do (once per distinct advice).
fn finish(lead: &AlertItem, health: bool, items: &[&AlertItem], lines: &mut Vec<Line>) {
    lines.push(Line::Fact(
        DETECTED_AT,
        format!("{} (UTC)", c(&lead.created_at)),
    ));
    if let Some((k, v)) = since_fact(lead) {
        lines.push(Line::Fact(k, v));
    }
    if health {
        lines.extend(health_lines(lead).into_iter().map(Line::Health));
    }
    let mut advice: Vec<&'static str> = Vec::new();
    for i in items {
        if !advice.contains(&i.advice()) {
            advice.push(i.advice());
        }
    }
    lines.extend(
        advice
            .into_iter()
            .map(|a| Line::Fact(WHAT_TO_DO, a.to_owned())),
    );
}

/// The numbers under a WABA-level cause: "+1 555-0100 (Support), phone number id 1065…", and
/// what else changed on it (what the headline does not say already).
fn numbers(members: &[Unit<'_>], headline: &AlertItem, label: &str) -> Line {
    let lines = members
        .iter()
        .map(|u| {
            let mut line = format!(
                "{}, phone number id {}",
                u.key.target(),
                c(&u.key.target_id)
            );
            let mut parts: Vec<String> = Vec::new();
            for i in u.items() {
                if !same_change(i, headline) {
                    parts.push(if i.label() == label {
                        i.what()
                    } else {
                        format!("{} {}", i.label(), i.what())
                    });
                }
                if let Some(d) = i.detail.as_deref().filter(|_| !i.is_follow_up()) {
                    parts.push(format!("details: {}", c(d)));
                }
            }
            if !parts.is_empty() {
                line.push_str(": ");
                line.push_str(&parts.join("; "));
            }
            line
        })
        .collect();
    Line::Numbers(lines)
}

// ---------------------------------------------------------------------------------------------
// The plain-text part

/// "waba-monitor found 3 changes that matter:"
fn intro(n: usize) -> String {
    format!(
        "waba-monitor found {n} change{} that matter{}:",
        if n == 1 { "" } else { "s" },
        if n == 1 { "s" } else { "" }
    )
}

const SIGNATURE: &str =
    "waba-monitor. `waba-monitor status` and `waba-monitor history --id ID` show the full picture.";

/// The plain-text body: one block per cause, the worst first. A WABA-level change lists its
/// numbers under one headline (see [`body_with_dashboard`]); the templates of one WABA are one
/// section (however many changed), ranked by its worst item.
pub fn body(items: &[AlertItem]) -> String {
    body_with_dashboard(items, None)
}

/// [`body`] with a link to `dashboard` (`[email] dashboard_url`) after the last item.
pub fn body_with_dashboard(items: &[AlertItem], dashboard: Option<&url::Url>) -> String {
    let mut out = format!("{}\n\n", intro(items.len()));
    for b in blocks(items) {
        entry_text(&entry(&b), &mut out);
    }
    if let Some(d) = dashboard {
        out.push_str(&format!("Dashboard: {d}\n\n"));
    }
    out.push_str(&format!("-- \n{SIGNATURE}\n"));
    out
}

fn entry_text(e: &Entry, out: &mut String) {
    out.push_str(&format!("{}  {}: {}\n", e.label, e.target, e.what));
    for line in &e.lines {
        match line {
            Line::Fact(k, v) => out.push_str(&format!("  {k}: {v}\n")),
            Line::Health(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Line::Template {
                label,
                target,
                what,
                facts,
                ..
            } => {
                out.push_str(&format!("  {label}  {target}: {what}\n"));
                for (k, v) in facts {
                    out.push_str(&format!("    {k}: {v}\n"));
                }
            }
            Line::Numbers(list) => {
                out.push_str(&format!("  numbers affected ({}):\n", list.len()));
                for n in list {
                    out.push_str(&format!("    - {n}\n"));
                }
            }
            Line::Link(u) => out.push_str(&format!("  WhatsApp Manager: {u}\n")),
        }
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------------------------
// The HTML part

/// Text for HTML (and XML: the part is well-formed XHTML): `& < > " '` escaped, characters XML
/// forbids replaced (control characters by a space, U+FFFE/U+FFFF by U+FFFD).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push('\n'),
            '\u{FFFE}' | '\u{FFFF}' => out.push('\u{FFFD}'),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Background and text colour of a severity.
fn colours(rank: Severity) -> (&'static str, &'static str) {
    match rank {
        Severity::Critical => ("#b42318", "#ffffff"),
        Severity::Warning => ("#f5b400", "#1f2328"),
        Severity::Improving => ("#1f6feb", "#ffffff"),
        Severity::Resolved => ("#1a7f37", "#ffffff"),
    }
}

const CELL: &str = "padding:6px 8px;border:1px solid #d0d7de;vertical-align:top;text-align:left;";
const KEY: &str = "color:#57606a;";
const LINK: &str = "color:#0969da;";

/// The `text/html` alternative of an email: the items of the plain text as a table, one row
/// per cause, the worst first, the severity coloured; inline styles only, no images, scripts
/// or remote resources; every string escaped; well-formed XHTML.
pub fn html(items: &[AlertItem], dashboard: Option<&url::Url>) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n\
<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n\
<head>\n\
<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\" />\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n\
<title>waba-monitor</title>\n\
</head>\n\
<body style=\"margin:0;padding:16px;background:#ffffff;color:#1f2328;font-family:Arial,Helvetica,sans-serif;font-size:14px;line-height:1.4;\">\n",
    );
    out.push_str(&format!(
        "<p style=\"margin:0 0 12px 0;\">{}</p>\n",
        escape_html(&intro(items.len()))
    ));
    out.push_str(
        "<table cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse;width:100%;\">\n<tr>",
    );
    for h in [
        "Severity",
        "Target",
        "What changed",
        "Details",
        "Detected at",
        "What to do",
    ] {
        out.push_str(&format!("<th style=\"{CELL}background:#f6f8fa;\">{h}</th>"));
    }
    out.push_str("</tr>\n");
    for b in blocks(items) {
        entry_html(&entry(&b), &mut out);
    }
    out.push_str("</table>\n");
    if let Some(d) = dashboard {
        let d = escape_html(d.as_str());
        out.push_str(&format!(
            "<p style=\"margin:12px 0 0 0;\">Dashboard: <a href=\"{d}\" style=\"{LINK}\">{d}</a></p>\n"
        ));
    }
    out.push_str(
        "<p style=\"margin:16px 0 0 0;color:#57606a;font-size:12px;\">waba-monitor. <code>waba-monitor status</code> and <code>waba-monitor history --id ID</code> show the full picture.</p>\n\
</body>\n\
</html>\n",
    );
    out
}

fn badge(rank: Severity, label: &str) -> String {
    let (bg, fg) = colours(rank);
    format!(
        "<span style=\"display:inline-block;padding:1px 6px;border-radius:3px;background:{bg};color:{fg};font-weight:bold;font-size:12px;white-space:nowrap;\">{}</span>",
        escape_html(label)
    )
}

fn fact_html(k: &str, v: &str) -> String {
    format!(
        "<div><span style=\"{KEY}\">{}:</span> {}</div>",
        escape_html(k),
        escape_html(v)
    )
}

fn entry_html(e: &Entry, out: &mut String) {
    let (bg, fg) = colours(e.rank);
    let mut details = String::new();
    let mut detected = String::new();
    let mut todo = String::new();
    let mut templates = String::new();
    for line in &e.lines {
        match line {
            Line::Fact(DETECTED_AT, v) => {
                detected.push_str(&format!("<div>{}</div>", escape_html(v)));
            }
            Line::Fact(WHAT_TO_DO, v) => {
                todo.push_str(&format!(
                    "<div style=\"margin:0 0 4px 0;\">{}</div>",
                    escape_html(v)
                ));
            }
            Line::Fact(k, v) => details.push_str(&fact_html(k, v)),
            Line::Health(s) => {
                let indent = if s.starts_with("    ") { 16 } else { 0 };
                details.push_str(&format!(
                    "<div style=\"padding-left:{indent}px;font-family:Menlo,Consolas,monospace;font-size:12px;\">{}</div>",
                    escape_html(s.trim())
                ));
            }
            Line::Template {
                label,
                rank,
                target,
                what,
                facts,
            } => {
                templates.push_str(&format!(
                    "<tr><td style=\"{CELL}\">{}</td><td style=\"{CELL}\">{}</td><td style=\"{CELL}\"><div>{}</div>",
                    badge(*rank, label),
                    escape_html(target),
                    escape_html(what)
                ));
                for (k, v) in facts {
                    templates.push_str(&fact_html(k, v));
                }
                templates.push_str("</td></tr>\n");
            }
            Line::Numbers(list) => {
                details.push_str(&format!(
                    "<div><span style=\"{KEY}\">numbers affected ({}):</span></div>\n<ul style=\"margin:4px 0;padding-left:20px;\">\n",
                    list.len()
                ));
                for n in list {
                    details.push_str(&format!("<li>{}</li>\n", escape_html(n)));
                }
                details.push_str("</ul>");
            }
            Line::Link(u) => todo.push_str(&format!(
                "<div><a href=\"{}\" style=\"{LINK}\">Open in WhatsApp Manager</a></div>",
                escape_html(u.as_str())
            )),
        }
    }
    if !templates.is_empty() {
        details.push_str(&format!(
            "<table cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse;margin:4px 0;\">\n{templates}</table>"
        ));
    }
    out.push_str(&format!(
        "<tr>\n<td style=\"{CELL}background:{bg};color:{fg};font-weight:bold;white-space:nowrap;\">{}</td>\n\
<td style=\"{CELL}\">{}</td>\n<td style=\"{CELL}\">{}</td>\n<td style=\"{CELL}\">{details}</td>\n\
<td style=\"{CELL}white-space:nowrap;\">{detected}</td>\n<td style=\"{CELL}\">{todo}</td>\n</tr>\n",
        escape_html(e.label),
        escape_html(&e.target),
        escape_html(&e.what),
    ));
}

/// FNV-1a: a stable hash for Message-IDs (not for security).
pub(crate) fn fnv1a(s: &str) -> u64 {
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
        // One template RED: singular (was "1 templates RED").
        assert_eq!(
            subject,
            "[waba-monitor] CRITICAL: 1 template RED, 1 number YELLOW, 1 template PAUSED, 1 template recategorised"
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

    /// `n` numbers of WABA 113 whose `field` changed `old` → `new` (ids 1..=n).
    fn numbers(n: i64, severity: &str, field: &str, old: &str, new: &str) -> Vec<AlertItem> {
        (1..=n)
            .map(|id| AlertItem {
                target_id: format!("3000000000{id:05}"),
                display_phone_number: Some(format!("+1 555-{id:04}")),
                ..item(id, severity, field, Some(old), new)
            })
            .collect()
    }

    fn waba_item(id: i64, severity: &str, field: &str, old: Option<&str>, new: &str) -> AlertItem {
        AlertItem {
            kind: "waba".into(),
            target_id: "113".into(),
            display_phone_number: None,
            verified_name: None,
            waba_id: None,
            ..item(id, severity, field, old, new)
        }
    }

    /// The lines of a text part that start a cause (a severity at the start of the line).
    fn headlines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| {
                [
                    "CRITICAL  ",
                    "WARNING  ",
                    "IMPROVING  ",
                    "RESOLVED  ",
                    "REMINDER  ",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .collect()
    }

    #[test]
    fn subjects_say_1_in_the_singular_and_more_in_the_plural() {
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            (
                "phone_number",
                "quality_rating",
                "RED",
                "number RED",
                "numbers RED",
            ),
            (
                "template",
                "status",
                "PAUSED",
                "template PAUSED",
                "templates PAUSED",
            ),
            (
                "template",
                "quality_score",
                "RED",
                "template RED",
                "templates RED",
            ),
            (
                "template",
                "category",
                "MARKETING",
                "template recategorised",
                "templates recategorised",
            ),
            (
                "phone_number",
                "messaging_limit_tier",
                "TIER_2K",
                "limit lowered",
                "limits lowered",
            ),
            (
                "phone_number",
                "whatsapp_business_manager_messaging_limit",
                "TIER_2K",
                "limit lowered",
                "limits lowered",
            ),
            (
                "waba",
                "whatsapp_business_manager_messaging_limit",
                "TIER_2K",
                "WABA: portfolio limit lowered",
                "WABAs: portfolio limit lowered",
            ),
            (
                "phone_number",
                "health",
                "LIMITED",
                "number with health LIMITED",
                "numbers with health LIMITED",
            ),
            (
                "waba",
                "health",
                "LIMITED",
                "WABA with health LIMITED",
                "WABAs with health LIMITED",
            ),
            (
                "phone_number",
                "presence",
                "gone",
                "number gone",
                "numbers gone",
            ),
            (
                "source",
                "monitoring",
                "blind",
                "source blind",
                "sources blind",
            ),
            (
                "waba",
                "account_review_status",
                "REJECTED",
                "review REJECTED",
                "reviews REJECTED",
            ),
            (
                "waba",
                "business_verification_status",
                "revoked",
                "verification revoked",
                "verifications revoked",
            ),
            (
                "waba",
                "ban_state",
                "DISABLE",
                "WABA disabled",
                "WABAs disabled",
            ),
            (
                "waba",
                "restriction",
                "RESTRICTED_BIZ_INITIATED_MESSAGING",
                "restriction",
                "restrictions",
            ),
            ("waba", "status", "BANNED", "WABA BANNED", "WABAs BANNED"),
        ];
        for (kind, field, new, one, many) in cases {
            let mut i = item(1, "warning", field, Some("OLD"), new);
            i.kind = (*kind).into();
            let cat = i.category();
            assert_eq!(cat.counted(1, 0), format!("1 {one}"), "{kind} {field}");
            assert_eq!(cat.counted(3, 0), format!("3 {many}"), "{kind} {field}");
        }
        let two_red_one_yellow = vec![
            item(1, "critical", "quality_rating", Some("GREEN"), "RED"),
            item(2, "critical", "quality_rating", Some("GREEN"), "RED"),
            item(3, "warning", "quality_rating", Some("GREEN"), "YELLOW"),
        ];
        assert_eq!(
            subject(&two_red_one_yellow),
            "[waba-monitor] CRITICAL: 2 numbers RED, 1 number YELLOW"
        );
        let templates = vec![
            template(1, "warning", "status", "APPROVED", "PAUSED"),
            template(2, "critical", "status", "PAUSED", "DISABLED"),
            template(3, "warning", "status", "APPROVED", "PAUSED"),
        ];
        assert_eq!(
            subject(&templates),
            "[waba-monitor] CRITICAL: 1 template DISABLED, 2 templates PAUSED"
        );
        let one_of_each = vec![
            template(1, "warning", "status", "APPROVED", "PAUSED"),
            item(2, "critical", "quality_rating", Some("GREEN"), "RED"),
        ];
        assert_eq!(
            subject(&one_of_each),
            "[waba-monitor] CRITICAL: 1 number RED, 1 template PAUSED"
        );
    }

    #[test]
    fn a_portfolio_limit_drop_on_40_numbers_is_one_item_listing_the_40_numbers() {
        let items = numbers(
            40,
            "warning",
            "whatsapp_business_manager_messaging_limit",
            "TIER_10K",
            "TIER_2K",
        );
        let text = body(&items);
        assert_eq!(
            headlines(&text),
            vec![
                "WARNING  WABA Acme (113): portfolio messaging limit TIER_10K → TIER_2K on 40 numbers"
            ],
            "{text}"
        );
        assert!(text.contains("  numbers affected (40):\n"), "{text}");
        for i in &items {
            let line = format!(
                "    - +1 555-{:04} (Support), phone number id {}\n",
                i.id, i.target_id
            );
            assert_eq!(text.matches(&line).count(), 1, "{line} in:\n{text}");
        }
        assert_eq!(text.matches("what to do:").count(), 1, "{text}");
        assert_eq!(
            subject(&items),
            "[waba-monitor] WARNING WABA Acme (113) portfolio messaging limit TIER_10K → TIER_2K on 40 numbers"
        );
        let html = html(&items, None);
        assert_eq!(html.matches("<tr>\n").count(), 1, "one row:\n{html}");
        assert_eq!(html.matches("<li>").count(), 40);

        // With another cause, the subject counts causes: not "40 limits lowered".
        let mut mixed = items.clone();
        mixed.push(AlertItem {
            target_id: "999".into(),
            ..item(41, "critical", "quality_rating", Some("GREEN"), "RED")
        });
        assert_eq!(
            subject(&mixed),
            "[waba-monitor] CRITICAL: 1 number RED, 1 WABA: portfolio limit lowered (40 numbers)"
        );
        // A single number's portfolio drop stays the number's own item.
        let one = numbers(
            1,
            "warning",
            "whatsapp_business_manager_messaging_limit",
            "TIER_10K",
            "TIER_2K",
        );
        assert_eq!(
            headlines(&body(&one)),
            vec!["WARNING  +1 555-0001 (Support): portfolio messaging limit TIER_10K → TIER_2K"]
        );
    }

    #[test]
    fn a_waba_item_lists_its_numbers_that_changed_the_same_way() {
        let mut items = vec![waba_item(
            100,
            "warning",
            "health",
            Some("AVAILABLE"),
            "LIMITED",
        )];
        items.extend(numbers(3, "warning", "health", "AVAILABLE", "LIMITED"));
        // Another field on one of its numbers stays separate.
        items.push(AlertItem {
            target_id: "30000000000001".into(),
            ..item(4, "critical", "quality_rating", Some("GREEN"), "RED")
        });
        let text = body(&items);
        assert_eq!(
            headlines(&text),
            vec![
                "CRITICAL  +1 555-0100 (Support): quality GREEN → RED",
                "WARNING  WABA Acme (113): health AVAILABLE → LIMITED (3 numbers)",
            ],
            "{text}"
        );
        assert!(text.contains("  numbers affected (3):\n"), "{text}");
        assert!(
            text.contains("    - +1 555-0002 (Support), phone number id 300000000000002\n"),
            "{text}"
        );
        assert_eq!(
            subject(&items),
            "[waba-monitor] CRITICAL: 1 number RED, 1 WABA with health LIMITED (3 numbers)"
        );
        // Review REJECTED: the WABA-level item names the WABA.
        let review = vec![
            waba_item(
                1,
                "critical",
                "account_review_status",
                Some("APPROVED"),
                "REJECTED",
            ),
            item(2, "warning", "quality_rating", Some("GREEN"), "YELLOW"),
        ];
        assert!(
            body(&review).contains("CRITICAL  WABA Acme (113): account review APPROVED → REJECTED"),
            "{}",
            body(&review)
        );
    }

    #[test]
    fn a_banned_waba_takes_its_numbers_status_lines() {
        let mut ban = waba_item(100, "critical", "ban_state", None, "DISABLE");
        ban.detail = Some("ban date 2026-02-12".into());
        let mut items = vec![ban];
        items.extend(numbers(3, "critical", "status", "CONNECTED", "BANNED"));
        // A number of another WABA keeps its own line; so does another field of a banned one.
        items.push(AlertItem {
            target_id: "400000000000001".into(),
            waba_id: Some("114".into()),
            waba_name: Some("Other".into()),
            ..item(5, "critical", "status", Some("CONNECTED"), "BANNED")
        });
        items.push(AlertItem {
            target_id: "30000000000001".into(),
            ..item(6, "critical", "quality_rating", Some("GREEN"), "RED")
        });
        let text = body(&items);
        assert_eq!(
            headlines(&text),
            vec![
                "CRITICAL  WABA Acme (113): WABA ban DISABLE (first seen) (3 numbers)",
                "CRITICAL  +1 555-0100 (Support): status CONNECTED → BANNED",
                "CRITICAL  +1 555-0100 (Support): quality GREEN → RED",
            ],
            "{text}"
        );
        assert!(text.contains("  details: ban date 2026-02-12\n"), "{text}");
        for id in 1..=3 {
            let line = format!(
                "    - +1 555-{id:04} (Support), phone number id 3000000000{id:05}: status CONNECTED → BANNED\n"
            );
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        assert!(text.contains("phone number id: 400000000000001"), "{text}");
        assert_eq!(
            subject(&items),
            "[waba-monitor] CRITICAL: 1 BANNED, 1 WABA disabled (3 numbers), 1 number RED"
        );
        let html = html(&items, None);
        assert_eq!(html.matches("<li>").count(), 3, "{html}");
    }

    #[test]
    fn a_number_s_two_limits_dropping_together_are_one_line() {
        let tier = AlertItem {
            target_id: "106".into(),
            ..item(
                1,
                "warning",
                "messaging_limit_tier",
                Some("TIER_10K"),
                "TIER_2K",
            )
        };
        let portfolio = AlertItem {
            target_id: "106".into(),
            ..item(
                2,
                "warning",
                "whatsapp_business_manager_messaging_limit",
                Some("TIER_10K"),
                "TIER_2K",
            )
        };
        let items = vec![tier.clone(), portfolio.clone()];
        let text = body(&items);
        assert_eq!(
            headlines(&text),
            vec![
                "WARNING  +1 555-0100 (Support): messaging limits lowered: tier TIER_10K → TIER_2K, portfolio TIER_10K → TIER_2K"
            ],
            "{text}"
        );
        assert_eq!(text.matches("what to do:").count(), 1, "{text}");
        assert_eq!(
            subject(&items),
            "[waba-monitor] WARNING +1 555-0100 (Support) messaging limits lowered: tier TIER_10K → TIER_2K, portfolio TIER_10K → TIER_2K"
        );
        // Under a portfolio drop shared by several numbers, the tier is what the line adds.
        let mut shared = numbers(
            3,
            "warning",
            "whatsapp_business_manager_messaging_limit",
            "TIER_10K",
            "TIER_2K",
        );
        shared.push(AlertItem {
            target_id: shared[0].target_id.clone(),
            display_phone_number: shared[0].display_phone_number.clone(),
            ..item(
                9,
                "warning",
                "messaging_limit_tier",
                Some("TIER_10K"),
                "TIER_1K",
            )
        });
        let text = body(&shared);
        assert_eq!(headlines(&text).len(), 1, "{text}");
        assert!(
            text.contains(
                "    - +1 555-0001 (Support), phone number id 300000000000001: messaging limit tier TIER_10K → TIER_1K\n"
            ),
            "{text}"
        );
        // One lowered, one raised: two lines.
        let raised = AlertItem {
            severity: "resolved".into(),
            old: Some("TIER_2K".into()),
            new: Some("TIER_10K".into()),
            ..portfolio
        };
        assert_eq!(headlines(&body(&[tier, raised])).len(), 2);
    }

    #[test]
    fn every_email_links_each_waba_to_whatsapp_manager_and_ends_with_the_dashboard() {
        let items = vec![
            item(1, "critical", "quality_rating", Some("GREEN"), "RED"),
            template(2, "warning", "status", "APPROVED", "PAUSED"),
            waba_item(
                3,
                "critical",
                "account_review_status",
                Some("APPROVED"),
                "REJECTED",
            ),
        ];
        let dashboard =
            url::Url::parse("https://grafana.example.com/d/waba?orgId=1&x=2").expect("url");
        let text = body_with_dashboard(&items, Some(&dashboard));
        let html = html(&items, Some(&dashboard));
        for page in ["phone-numbers", "message-templates", "home"] {
            let link = format!("https://business.facebook.com/wa/manage/{page}/?waba_id=113");
            assert!(
                text.contains(&format!("  WhatsApp Manager: {link}\n")),
                "{text}"
            );
            assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
        }
        assert!(
            text.ends_with(
                "Dashboard: https://grafana.example.com/d/waba?orgId=1&x=2\n\n-- \nwaba-monitor. `waba-monitor status` and `waba-monitor history --id ID` show the full picture.\n"
            ),
            "{text}"
        );
        assert!(
            html.contains("href=\"https://grafana.example.com/d/waba?orgId=1&amp;x=2\""),
            "{html}"
        );
        assert!(!body(&items).contains("Dashboard:"));
        // A WABA id that is not one cannot leave the query.
        assert_eq!(
            manager_url(ManagerPage::Home, "1&x=<y> #z")
                .map(String::from)
                .as_deref(),
            Some("https://business.facebook.com/wa/manage/home/?waba_id=1%26x%3D%3Cy%3E+%23z")
        );
        assert_eq!(manager_url(ManagerPage::Home, " "), None);
        // A source has no WABA: no link.
        let mut blind = item(4, "critical", "monitoring", Some("ok"), "blind");
        blind.kind = "source".into();
        blind.waba_id = None;
        assert!(!body(&[blind]).contains("WhatsApp Manager"));
    }

    #[test]
    fn the_html_part_escapes_meta_s_strings_and_has_every_item_of_the_text() {
        let mut evil = item(1, "critical", "quality_rating", Some("GREEN"), "RED");
        evil.verified_name = Some("<script>alert('x')</script> & \"Co\"".into());
        evil.waba_name = Some("<img src=x onerror=alert(1)>".into());
        evil.detail = Some("</td></tr></table><style>*{}</style>\u{FFFF}\u{1}".into());
        evil.health_entities = Some(r#"[{"entity_type":"WABA","id":"113","can_send_message":"LIMITED","errors":[{"error_code":141010,"error_description":"<b>bold</b>","possible_solution":"<a href=\"https://evil.example\">x</a>"}]}]"#.into());
        let items = vec![
            evil,
            template(2, "warning", "status", "APPROVED", "PAUSED"),
            item(3, "resolved", "status", Some("FLAGGED"), "CONNECTED"),
        ];
        let html = html(&items, None);
        for bad in [
            "<script",
            "<img",
            "<style",
            "<b>",
            "href=\"https://evil",
            "\u{FFFF}",
            "\u{1}",
        ] {
            assert!(!html.contains(bad), "{bad} in:\n{html}");
        }
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Co&quot;"),
            "{html}"
        );
        // No remote resources, no scripts, no style sheets: inline styles only.
        for tag in ["<link", "<iframe", "<object", " src=\"", "url("] {
            assert!(!html.contains(tag), "{tag} in:\n{html}");
        }
        // Severity colours, worst first.
        let critical = html.find("background:#b42318").unwrap_or(usize::MAX);
        let warning = html.find("background:#f5b400").unwrap_or(usize::MAX);
        let resolved = html.find("background:#1a7f37").unwrap_or(usize::MAX);
        assert!(critical < warning && warning < resolved, "{html}");
        // Every piece of every line of the text part is in the HTML.
        let text = body(&items);
        let plain = html_text(&html);
        // (A character XML forbids is U+FFFD in the HTML.)
        let text = text.replace('\u{FFFF}', "\u{FFFD}");
        for line in text.lines().take_while(|l| *l != "-- ") {
            for piece in pieces(line) {
                if piece.starts_with("https://") {
                    assert!(html.contains(&escape_html(&piece)), "{piece}");
                } else {
                    assert!(
                        plain.contains(&piece),
                        "{piece:?} (of {line:?}) not in:\n{plain}"
                    );
                }
            }
        }
    }

    /// A line of the text part cut where the HTML puts its parts in cells of their own: after
    /// the severity, and at each ": "; spaces collapsed, lower case.
    fn pieces(line: &str) -> Vec<String> {
        let line = line.trim().trim_start_matches("- ");
        let mut out = Vec::new();
        let rest = match line.split_once("  ") {
            Some((label, rest)) if label.chars().all(|c| c.is_ascii_uppercase()) => {
                out.push(label.to_owned());
                rest
            }
            _ => line,
        };
        for p in rest.split(": ") {
            let p = p.trim().trim_end_matches(':').trim();
            if !p.is_empty() {
                out.push(
                    p.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase(),
                );
            }
        }
        out.iter_mut().for_each(|p| *p = p.to_lowercase());
        out
    }

    /// The text of an HTML document as a reader sees it (tags dropped, entities decoded,
    /// spaces collapsed, lower case): enough for strings this module wrote.
    fn html_text(html: &str) -> String {
        let mut text = String::new();
        let mut in_tag = false;
        for ch in html.chars() {
            match ch {
                '<' => {
                    in_tag = true;
                    text.push(' ');
                }
                '>' if in_tag => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        let text = text
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        text.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    }
}
