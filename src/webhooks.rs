//! Stored webhook deliveries → facts, history and alerts (issue 13, part 2).
//!
//! The receiver (`http::webhooks`) commits each signed delivery raw; this step takes the
//! unprocessed rows oldest first and, in **one transaction per delivery**, parses Meta's envelope
//! (every `entry[]`, every `changes[]`), records each fact with its event time (`entry[].time`)
//! through `store::facts` (older never overwrites newer, equal changes nothing), turns the
//! changes into alerts through the same pure planner as a poll (`alerts::plan`), queues the
//! digest and marks the delivery processed. Then it closes restrictions whose expiry passed
//! (a new fact "none", so "resolved" follows the warning).
//!
//! Template fields (`message_template_status_update`, `message_template_quality_update`,
//! `template_category_update`) update the template's state through `store::templates` with
//! the same event-time rule, and go through the same rules and digest.
//!
//! Anything it does not understand — an unknown field or event, a wrong type, a body that is not
//! Meta's envelope — is counted in the delivery's outcome and left in the stored body: never a
//! crash, never an alert.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::alerts::AlertPolicy;
use crate::model::{Change, TargetKind, TemplateObservation, field, template_field};
use crate::store::facts::{self, Fact};
use crate::store::{Store, StoreError, Tx, templates};
use crate::timefmt::{parse_rfc3339, rfc3339};

/// Deliveries read per batch.
const BATCH: i64 = 50;
/// The longest value or detail kept from Meta's strings (bytes, cut at a char boundary).
const MAX_TEXT: usize = 1024;

/// Template fields: they update the template's state (`store::templates`).
pub const TEMPLATE_FIELDS: &[&str] = &[
    "message_template_status_update",
    "message_template_quality_update",
    "template_category_update",
];

/// What a template webhook says of one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateEvent {
    /// Only the fields the event states (the rest `None`: never overwritten).
    pub obs: TemplateObservation,
    pub event_time: i64,
    /// Meta's reason, description, disable date, previous value: shown in the email.
    pub detail: Option<String>,
    /// `other_info.title` (FIRST_PAUSE, SECOND_PAUSE, RATE_LIMITING_PAUSE, UNPAUSE, DISABLED).
    pub title: Option<String>,
}

/// Whom a change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Waba(String),
    Phone(String),
    /// A number named by its display number only (digits), on WABA `waba_id`.
    PhoneByDisplay {
        waba_id: String,
        digits: String,
    },
}

/// A fact as parsed, before its target is resolved against the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFact {
    pub target: Target,
    pub field: &'static str,
    pub value: String,
    pub detail: Option<String>,
    pub event_time: i64,
    pub expires_at: Option<i64>,
}

/// What one delivery holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Not Meta's WhatsApp Business Account envelope.
    pub malformed: bool,
    /// `changes[]` items seen.
    pub changes: usize,
    pub facts: Vec<ParsedFact>,
    /// Template changes read.
    pub templates: usize,
    pub template_events: Vec<TemplateEvent>,
    /// Changes of a field or event this version does not turn into facts, or of a wrong shape.
    pub unhandled: usize,
}

impl Parsed {
    fn outcome(&self, changed: usize) -> String {
        if self.malformed {
            return "malformed".to_owned();
        }
        format!(
            "processed: {} changes, {} facts, {changed} new, {} template, {} not handled",
            self.changes,
            self.facts.len(),
            self.templates,
            self.unhandled
        )
    }
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str().filter(|s| !s.is_empty())
}

/// A string or a number, as text (Meta documents some limits as either).
fn text_or_number(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Unix seconds from a number, a numeric string or an RFC 3339 string.
fn unix_time(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| parse_rfc3339(s.trim()).map(|t| t.timestamp())),
        _ => None,
    }
}

fn at(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0).map_or_else(|| unix.to_string(), rfc3339)
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Parses a delivery body. `received` (unix seconds) stands in for a missing `entry[].time`.
pub fn parse(body: &[u8], received: i64) -> Parsed {
    let mut out = Parsed::default();
    let Ok(root) = serde_json::from_slice::<Value>(body) else {
        out.malformed = true;
        return out;
    };
    let (Some("whatsapp_business_account"), Some(entries)) = (
        root.get("object").and_then(Value::as_str),
        root.get("entry").and_then(Value::as_array),
    ) else {
        out.malformed = true;
        return out;
    };
    for entry in entries {
        let waba = match entry.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let time = entry.get("time").and_then(unix_time).unwrap_or(received);
        let Some(changes) = entry.get("changes").and_then(Value::as_array) else {
            out.unhandled += 1;
            continue;
        };
        for change in changes {
            out.changes += 1;
            let name = change.get("field").and_then(Value::as_str).unwrap_or("");
            let value = change.get("value").unwrap_or(&Value::Null);
            if TEMPLATE_FIELDS.contains(&name) {
                match template_event(name, value, &waba, time) {
                    Some(ev) => {
                        out.templates += 1;
                        out.template_events.push(ev);
                    }
                    None => out.unhandled += 1,
                }
                continue;
            }
            match change_facts(name, value, &waba, time) {
                Some(facts) if !facts.is_empty() => out.facts.extend(facts),
                _ => out.unhandled += 1,
            }
        }
    }
    out
}

/// A template webhook's change; `None` for a shape not handled (no template id).
fn template_event(name: &str, v: &Value, waba: &str, time: i64) -> Option<TemplateEvent> {
    let id = text_or_number(v, "message_template_id")?;
    let mut obs = TemplateObservation {
        id: cut(&id),
        waba_id: cut(waba),
        name: text(v, "message_template_name").map(cut),
        language: text(v, "message_template_language").map(cut),
        ..TemplateObservation::default()
    };
    let mut parts = Vec::new();
    let mut title = None;
    match name {
        "message_template_status_update" => {
            let event = text(v, "event")?;
            // Reinstated after an appeal: approved again.
            obs.status = Some(cut(if event == "REINSTATED" {
                "APPROVED"
            } else {
                event
            }));
            if let Some(r) = text(v, "reason").filter(|r| *r != "NONE") {
                parts.push(format!("reason {r}"));
            }
            if let Some(info) = v.get("other_info") {
                title = text(info, "title").map(cut);
                if let Some(d) = text(info, "description") {
                    parts.push(d.to_owned());
                }
            }
            if let Some(d) = v
                .get("disable_info")
                .and_then(|d| d.get("disable_date"))
                .and_then(unix_time)
            {
                parts.push(format!("disabled on {}", at(d)));
            }
        }
        "message_template_quality_update" => {
            obs.quality = Some(cut(text(v, "new_quality_score")?));
            if let Some(p) = text(v, "previous_quality_score") {
                parts.push(format!("Meta says the score was {p}"));
            }
        }
        "template_category_update" => {
            let new = text(v, "new_category").or_else(|| text(v, "correct_category"))?;
            obs.category = Some(cut(new));
            if let Some(p) = text(v, "previous_category") {
                obs.previous_category = Some(cut(p));
                parts.push(format!("recategorised from {p} to {new}"));
            }
        }
        _ => return None,
    }
    Some(TemplateEvent {
        obs,
        event_time: time,
        detail: (!parts.is_empty()).then(|| cut(&parts.join("; "))),
        title,
    })
}

/// The facts of one change; `None` for a field, event or shape not handled.
fn change_facts(name: &str, v: &Value, waba: &str, time: i64) -> Option<Vec<ParsedFact>> {
    let fact =
        |target: Target, field: &'static str, value: &str, detail: Option<String>| ParsedFact {
            target,
            field,
            value: cut(value),
            detail: detail.map(|d| cut(&d)),
            event_time: time,
            expires_at: None,
        };
    let on_waba = || (!waba.is_empty()).then(|| Target::Waba(waba.to_owned()));
    match name {
        "account_update" => {
            let event = text(v, "event")?;
            match event {
                "DISABLED_UPDATE" => {
                    let ban = v.get("ban_info")?;
                    let state = text(ban, "waba_ban_state")?;
                    let detail = text(ban, "waba_ban_date").map(|d| format!("ban date {d}"));
                    Some(vec![fact(on_waba()?, field::BAN_STATE, state, detail)])
                }
                "ACCOUNT_RESTRICTION" => {
                    let list = v.get("restriction_info")?.as_array()?;
                    let mut types = Vec::new();
                    let mut lines = Vec::new();
                    let mut expiry: Option<i64> = None;
                    let mut all_expire = true;
                    for r in list {
                        let Some(t) = text(r, "restriction_type") else {
                            continue;
                        };
                        types.push(t.to_owned());
                        let exp = r.get("expiration").and_then(unix_time);
                        match exp {
                            Some(e) => expiry = Some(expiry.map_or(e, |x| x.max(e))),
                            None => all_expire = false,
                        }
                        let mut line = match exp {
                            Some(e) => format!("{t} until {}", at(e)),
                            None => t.to_owned(),
                        };
                        if let Some(rem) = text(r, "remediation") {
                            line.push_str(&format!(" (remediation: {rem})"));
                        }
                        lines.push(line);
                    }
                    if types.is_empty() && !list.is_empty() {
                        return None;
                    }
                    types.sort();
                    types.dedup();
                    let value = if types.is_empty() {
                        field::NONE.to_owned()
                    } else {
                        types.join(",")
                    };
                    let detail = (!lines.is_empty()).then(|| lines.join("; "));
                    let mut f = fact(on_waba()?, field::RESTRICTION, &value, detail);
                    f.expires_at = if all_expire { expiry } else { None };
                    Some(vec![f])
                }
                "ACCOUNT_VIOLATION" => {
                    let t = text(v.get("violation_info")?, "violation_type")?;
                    Some(vec![fact(on_waba()?, field::VIOLATION, t, None)])
                }
                "PARTNER_REMOVED" | "PARTNER_ADDED" => {
                    // 2026: why (PRIMARY_INACTIVITY, CHANGE_NUMBER...) and who (SYSTEM, USER).
                    let detail = v.get("disconnection_info").and_then(|d| {
                        let mut parts = Vec::new();
                        if let Some(r) = text(d, "reason") {
                            parts.push(format!("reason {r}"));
                        }
                        if let Some(by) = text(d, "initiated_by").or_else(|| text(d, "initiator")) {
                            parts.push(format!("initiated by {by}"));
                        }
                        (!parts.is_empty()).then(|| parts.join(", "))
                    });
                    Some(vec![fact(
                        on_waba()?,
                        field::PARTNER_REMOVED,
                        event,
                        detail,
                    )])
                }
                "ACCOUNT_OFFBOARDED" | "ACCOUNT_RECONNECTED" | "ACCOUNT_DELETED" => {
                    Some(vec![fact(on_waba()?, field::CONNECTION, event, None)])
                }
                _ => None,
            }
        }
        "phone_number_quality_update" => {
            let event = text(v, "event")?;
            let number = digits(text(v, "display_phone_number")?);
            if number.is_empty() {
                return None;
            }
            let mut parts = Vec::new();
            if let Some(cur) = text_or_number(v, "current_limit") {
                match text_or_number(v, "old_limit") {
                    Some(old) => parts.push(format!("limit {cur} (was {old})")),
                    None => parts.push(format!("limit {cur}")),
                }
            }
            if let Some(m) = text_or_number(v, "max_daily_conversations_per_business") {
                parts.push(format!("max daily conversations {m}"));
            }
            let detail = (!parts.is_empty()).then(|| parts.join(", "));
            let target = Target::PhoneByDisplay {
                waba_id: waba.to_owned(),
                digits: number,
            };
            Some(vec![fact(target, field::QUALITY_EVENT, event, detail)])
        }
        "security" => {
            let event = text(v, "event")?;
            let number = digits(text(v, "display_phone_number")?);
            if number.is_empty() {
                return None;
            }
            let detail = text(v, "requester").map(|r| format!("requested by {r}"));
            let target = Target::PhoneByDisplay {
                waba_id: waba.to_owned(),
                digits: number,
            };
            Some(vec![fact(target, field::SECURITY, event, detail)])
        }
        "account_alerts" => {
            let severity = text(v, "alert_severity")?;
            let kind = text(v, "alert_type").unwrap_or("ALERT");
            let target = match (text(v, "entity_type"), text_or_number(v, "entity_id")) {
                (Some("PHONE_NUMBER"), Some(id)) => Target::Phone(id),
                (Some("WABA"), Some(id)) => Target::Waba(id),
                _ => on_waba()?,
            };
            let mut parts = Vec::new();
            if let Some(d) = text(v, "alert_description") {
                parts.push(d.to_owned());
            }
            if let Some(s) = text(v, "alert_status") {
                parts.push(format!("status {s}"));
            }
            let detail = (!parts.is_empty()).then(|| parts.join("; "));
            let value = format!("{severity} {kind}");
            Some(vec![fact(target, field::ACCOUNT_ALERT, &value, detail)])
        }
        "business_capability_update" => {
            let limit = text_or_number(v, "max_daily_conversations_per_business")?;
            let mut parts = Vec::new();
            for key in [
                "max_phone_numbers_per_waba",
                "max_phone_numbers_per_business",
            ] {
                if let Some(n) = text_or_number(v, key) {
                    parts.push(format!("{} {n}", key.replace('_', " ")));
                }
            }
            let detail = (!parts.is_empty()).then(|| parts.join(", "));
            Some(vec![fact(
                on_waba()?,
                field::BUSINESS_CAPABILITY,
                &limit,
                detail,
            )])
        }
        "account_review_update" => {
            let decision = text(v, "decision")?;
            Some(vec![fact(
                on_waba()?,
                field::REVIEW_DECISION,
                decision,
                None,
            )])
        }
        _ => None,
    }
}

/// What one processing pass did.
#[derive(Debug, Clone, Default)]
pub struct Processed {
    pub deliveries: usize,
    pub changes: Vec<Change>,
    /// Restrictions closed because their expiry passed.
    pub expired: usize,
    /// The alerts the digests took.
    pub alerts: Vec<crate::notify::Digested>,
}

/// Serialises processing passes (the worker woken by deliveries and the cycle's pass).
static PASS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Processes every stored delivery not processed yet, then closes expired restrictions. An idle
/// pass costs two small reads and takes no write lock.
pub async fn process(
    store: &Store,
    routing: &crate::notify::Routing,
    policy: AlertPolicy,
    now: DateTime<Utc>,
) -> Result<Processed, StoreError> {
    let _pass = PASS.lock().await;
    let mut out = Processed::default();
    loop {
        let rows = store.unprocessed_webhook_events(BATCH).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let received =
                parse_rfc3339(&row.received_at).map_or(now.timestamp(), |t| t.timestamp());
            let parsed = parse(&row.body, received);
            let stamp = rfc3339(now);
            let mut tx = store.begin_leader_write().await?;
            // Marked first: a row another pass already took is left alone.
            if !facts::mark_processed_in(&mut tx, row.id, &stamp, "processing").await? {
                continue;
            }
            let mut recorded = Vec::new();
            for f in &parsed.facts {
                let fact = resolve(&mut tx, f).await?;
                if let Some(c) = facts::record_fact_in(&mut tx, &fact, Some(row.id), &stamp).await?
                {
                    recorded.push((c, fact.detail.clone()));
                }
            }
            for ev in &parsed.template_events {
                let changes =
                    templates::apply_event_in(&mut tx, &ev.obs, ev.event_time, &stamp).await?;
                for c in changes {
                    let detail = if c.field == template_field::STATUS
                        && c.new.as_deref() == Some("PAUSED")
                    {
                        let pauses = templates::pauses_before_in(&mut tx, &c.target_id).await?;
                        let when = DateTime::<Utc>::from_timestamp(ev.event_time, 0).unwrap_or(now);
                        let pause =
                            crate::alerts::template_pause_detail(ev.title.as_deref(), pauses, when);
                        Some(match &ev.detail {
                            Some(d) => format!("{pause}; {d}"),
                            None => pause,
                        })
                    } else {
                        ev.detail.clone()
                    };
                    recorded.push((c, detail));
                }
            }
            let outcome = parsed.outcome(recorded.len());
            facts::set_outcome_in(&mut tx, row.id, &outcome).await?;
            plan_in(&mut tx, &recorded, policy, &stamp).await?;
            let severities = crate::notify::digest_in(&mut tx, routing, now).await?;
            tx.commit().await?;
            tracing::info!(id = row.id, outcome = %outcome, alerts = severities.len(), "webhook delivery processed");
            if parsed.unhandled > 0 {
                tracing::warn!(
                    id = row.id,
                    unhandled = parsed.unhandled,
                    "webhook changes not handled (kept raw in webhook_events)"
                );
            }
            out.deliveries += 1;
            out.alerts.extend(severities);
            out.changes.extend(recorded.into_iter().map(|(c, _)| c));
        }
    }
    if facts::any_expired_restriction(store.pool(), now.timestamp()).await? {
        let stamp = rfc3339(now);
        let mut tx = store.begin_leader_write().await?;
        let mut recorded = Vec::new();
        for old in facts::expired_restrictions_in(&mut tx, now.timestamp()).await? {
            let expired_at = old.expires_at.unwrap_or(old.event_time);
            let fact = Fact {
                value: field::NONE.to_owned(),
                detail: Some(format!("{} expired at {}", old.value, at(expired_at))),
                event_time: old.event_time.max(expired_at),
                expires_at: None,
                ..old
            };
            if let Some(c) = facts::record_fact_in(&mut tx, &fact, None, &stamp).await? {
                recorded.push((c, fact.detail.clone()));
            }
        }
        out.expired = recorded.len();
        plan_in(&mut tx, &recorded, policy, &stamp).await?;
        let severities = crate::notify::digest_in(&mut tx, routing, now).await?;
        tx.commit().await?;
        out.alerts.extend(severities);
        out.changes.extend(recorded.into_iter().map(|(c, _)| c));
    }
    Ok(out)
}

/// The target of a parsed fact, a display number looked up among the stored numbers (a number
/// not known yet is recorded on its WABA, the number in the detail).
async fn resolve(tx: &mut Tx<'_>, f: &ParsedFact) -> Result<Fact, StoreError> {
    let (kind, target_id, detail) = match &f.target {
        Target::Waba(id) => (TargetKind::Waba, id.clone(), f.detail.clone()),
        Target::Phone(id) => (TargetKind::PhoneNumber, id.clone(), f.detail.clone()),
        Target::PhoneByDisplay { waba_id, digits } => {
            match facts::phone_id_by_display_in(tx, waba_id, digits).await? {
                Some(id) => (TargetKind::PhoneNumber, id, f.detail.clone()),
                None => {
                    let detail = match &f.detail {
                        Some(d) => format!("number +{digits}: {d}"),
                        None => format!("number +{digits}"),
                    };
                    (TargetKind::Waba, waba_id.clone(), Some(detail))
                }
            }
        }
    };
    Ok(Fact {
        kind,
        target_id,
        field: f.field.to_owned(),
        value: f.value.clone(),
        detail,
        event_time: f.event_time,
        expires_at: f.expires_at,
    })
}

/// The alerts of `recorded` changes, decided by the same pure planner as a poll's, written in
/// the delivery's transaction; each alert carries its fact's detail.
async fn plan_in(
    tx: &mut Tx<'_>,
    recorded: &[(Change, Option<String>)],
    policy: AlertPolicy,
    now: &str,
) -> Result<(), StoreError> {
    if recorded.is_empty() {
        return Ok(());
    }
    let changes: Vec<Change> = recorded.iter().map(|(c, _)| c.clone()).collect();
    let open = crate::store::alerts::open_alerts_for(tx, &crate::alerts::keys(&changes)).await?;
    let mut plan = crate::alerts::plan(&changes, &open, policy, now);
    let details: HashMap<(&str, &str), &Option<String>> = recorded
        .iter()
        .map(|(c, d)| ((c.target_id.as_str(), c.field.as_str()), d))
        .collect();
    for a in &mut plan.alerts {
        if let Some(d) = details.get(&(a.target_id.as_str(), a.field.as_str())) {
            a.detail = (*d).clone();
        }
    }
    crate::store::alerts::apply_plan(tx, &plan, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(entries: &str) -> Vec<u8> {
        format!(r#"{{"object":"whatsapp_business_account","entry":[{entries}]}}"#).into_bytes()
    }

    #[test]
    fn a_ban_becomes_a_ban_state_fact_with_its_date_and_event_time() {
        let body = envelope(
            r#"{"id":"200000000000001","time":1739321024,"changes":[{"value":{"event":"DISABLED_UPDATE","ban_info":{"waba_ban_state":"DISABLE","waba_ban_date":"2026-02-12"}},"field":"account_update"}]}"#,
        );
        let p = parse(&body, 0);
        assert_eq!(p.changes, 1);
        assert_eq!(
            p.facts,
            vec![ParsedFact {
                target: Target::Waba("200000000000001".into()),
                field: field::BAN_STATE,
                value: "DISABLE".into(),
                detail: Some("ban date 2026-02-12".into()),
                event_time: 1739321024,
                expires_at: None,
            }]
        );
    }

    #[test]
    fn restrictions_keep_types_and_the_latest_expiry_and_an_empty_list_is_none() {
        let body = envelope(
            r#"{"id":"1","time":10,"changes":[{"field":"account_update","value":{"event":"ACCOUNT_RESTRICTION","restriction_info":[{"restriction_type":"RESTRICTED_BIZ_INITIATED_MESSAGING","expiration":1800000000},{"restriction_type":"RESTRICTED_ADD_PHONE_NUMBER_ACTION","expiration":"1700000000"}]}},
               {"field":"account_update","value":{"event":"ACCOUNT_RESTRICTION","restriction_info":[]}}]}"#,
        );
        let p = parse(&body, 0);
        assert_eq!(p.facts.len(), 2, "{p:?}");
        assert_eq!(
            p.facts[0].value,
            "RESTRICTED_ADD_PHONE_NUMBER_ACTION,RESTRICTED_BIZ_INITIATED_MESSAGING"
        );
        assert_eq!(p.facts[0].expires_at, Some(1_800_000_000));
        assert!(
            p.facts[0]
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("until 2027-01-15T08:00:00.000Z")),
            "{:?}",
            p.facts[0].detail
        );
        assert_eq!(p.facts[1].value, field::NONE);
    }

    #[test]
    fn every_entry_and_change_is_read_and_unknowns_are_counted_not_fatal() {
        let body = envelope(
            r#"{"id":"1","time":5,"changes":[
                 {"field":"phone_number_quality_update","value":{"display_phone_number":"1 555-0100","event":"FLAGGED","current_limit":"TIER_1K"}},
                 {"field":"security","value":{"display_phone_number":"15550100","event":"PIN_CHANGED","requester":"12345"}},
                 {"field":"message_template_status_update","value":{"event":"APPROVED","message_template_id":41,"message_template_name":"t","message_template_language":"en_US"}},
                 {"field":"brand_new_field","value":{"x":1}},
                 {"field":"account_update","value":{"event":"ACCOUNT_DELETED"}},
                 {"field":"account_update","value":{"event":"DISABLED_UPDATE","ban_info":{"waba_ban_state":42}}},
                 {"field":"account_update","value":"not an object"}]},
               {"id":"2","changes":[{"field":"account_alerts","value":{"entity_type":"WABA","entity_id":"2","alert_severity":"CRITICAL","alert_status":"ACTIVE","alert_type":"OBA_REJECTED","alert_description":"Rejected"}},
                 {"field":"account_review_update","value":{"decision":"REJECTED"}}]},
               "garbage""#,
        );
        let p = parse(&body, 99);
        assert!(!p.malformed);
        assert_eq!(p.changes, 9);
        assert_eq!(p.templates, 1);
        assert_eq!(p.unhandled, 4, "3 bad changes + 1 entry without changes");
        let fields: Vec<&str> = p.facts.iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            [
                field::QUALITY_EVENT,
                field::SECURITY,
                field::CONNECTION,
                field::ACCOUNT_ALERT,
                field::REVIEW_DECISION
            ]
        );
        assert_eq!(
            p.facts[0].target,
            Target::PhoneByDisplay {
                waba_id: "1".into(),
                digits: "15550100".into()
            }
        );
        assert_eq!(p.facts[2].value, "ACCOUNT_DELETED");
        assert_eq!(p.facts[3].value, "CRITICAL OBA_REJECTED");
        assert_eq!(p.facts[3].event_time, 99, "no time: the receipt time");
    }

    #[test]
    fn disconnections_offboarding_and_capability_limits_are_facts() {
        let body = envelope(
            r#"{"id":"7","time":20,"changes":[
                 {"field":"account_update","value":{"event":"PARTNER_REMOVED","disconnection_info":{"reason":"PRIMARY_INACTIVITY","initiated_by":"SYSTEM"}}},
                 {"field":"account_update","value":{"event":"ACCOUNT_OFFBOARDED"}},
                 {"field":"account_update","value":{"event":"ACCOUNT_RECONNECTED"}},
                 {"field":"business_capability_update","value":{"max_daily_conversations_per_business":2000,"max_phone_numbers_per_waba":25}},
                 {"field":"business_capability_update","value":{"max_daily_conversations_per_business":"TIER_10K"}},
                 {"field":"business_capability_update","value":{"max_phone_numbers_per_waba":25}}]}"#,
        );
        let p = parse(&body, 0);
        assert_eq!(p.unhandled, 1, "a capability update without the limit");
        let got: Vec<(&str, &str, Option<&str>)> = p
            .facts
            .iter()
            .map(|f| (f.field, f.value.as_str(), f.detail.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    field::PARTNER_REMOVED,
                    "PARTNER_REMOVED",
                    Some("reason PRIMARY_INACTIVITY, initiated by SYSTEM")
                ),
                (field::CONNECTION, "ACCOUNT_OFFBOARDED", None),
                (field::CONNECTION, "ACCOUNT_RECONNECTED", None),
                (
                    field::BUSINESS_CAPABILITY,
                    "2000",
                    Some("max phone numbers per waba 25")
                ),
                (field::BUSINESS_CAPABILITY, "TIER_10K", None),
            ]
        );
        assert!(p.facts.iter().all(|f| f.target == Target::Waba("7".into())));
    }

    #[test]
    fn template_webhooks_become_template_events_with_their_details() {
        let body = envelope(
            r#"{"id":"5","time":30,"changes":[
                 {"field":"message_template_status_update","value":{"event":"PAUSED","message_template_id":1234567,"message_template_name":"order_update","message_template_language":"en_US","reason":null,"other_info":{"title":"SECOND_PAUSE","description":"Paused for 6 hours due to low quality"}}},
                 {"field":"message_template_status_update","value":{"event":"DISABLED","message_template_id":"1234567","message_template_name":"order_update","message_template_language":"en_US","reason":"NONE","disable_info":{"disable_date":1800000000}}},
                 {"field":"message_template_quality_update","value":{"previous_quality_score":"GREEN","new_quality_score":"RED","message_template_id":1234567,"message_template_name":"order_update","message_template_language":"en_US"}},
                 {"field":"template_category_update","value":{"message_template_id":1234567,"message_template_name":"order_update","message_template_language":"en_US","previous_category":"UTILITY","new_category":"MARKETING"}},
                 {"field":"message_template_status_update","value":{"event":"REINSTATED","message_template_id":1234567}},
                 {"field":"message_template_status_update","value":{"event":"PAUSED"}}]}"#,
        );
        let p = parse(&body, 0);
        assert_eq!(p.templates, 5);
        assert_eq!(p.unhandled, 1, "no template id");
        let ev = &p.template_events;
        assert!(
            ev.iter()
                .all(|e| e.obs.id == "1234567" && e.obs.waba_id == "5")
        );
        assert!(ev.iter().all(|e| e.event_time == 30));
        assert_eq!(ev[0].obs.status.as_deref(), Some("PAUSED"));
        assert_eq!(ev[0].title.as_deref(), Some("SECOND_PAUSE"));
        assert_eq!(ev[0].obs.name.as_deref(), Some("order_update"));
        assert_eq!(
            ev[0].obs.quality, None,
            "never overwritten by a status event"
        );
        assert_eq!(
            ev[0].detail.as_deref(),
            Some("Paused for 6 hours due to low quality")
        );
        assert_eq!(ev[1].obs.status.as_deref(), Some("DISABLED"));
        assert_eq!(
            ev[1].detail.as_deref(),
            Some("disabled on 2027-01-15T08:00:00.000Z")
        );
        assert_eq!(ev[2].obs.quality.as_deref(), Some("RED"));
        assert_eq!(ev[2].obs.status, None);
        assert_eq!(ev[3].obs.category.as_deref(), Some("MARKETING"));
        assert_eq!(ev[4].obs.status.as_deref(), Some("APPROVED"));
    }

    #[test]
    fn bodies_that_are_not_the_envelope_are_malformed() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"{\"object\":\"page\",\"entry\":[]}",
            b"[1,2]",
        ] {
            let p = parse(body, 0);
            assert!(p.malformed, "{:?}", String::from_utf8_lossy(body));
            assert_eq!(p.outcome(0), "malformed");
        }
    }
}
