//! Reading Graph JSON into observations, leniently: a field of the wrong type or an unknown enum
//! value is recorded as an anomaly and treated as "not reported", so a bad answer can never
//! look like a change of state, and nothing here panics on what Meta sends. Every string taken
//! from an answer is at most [`MAX_STRING_BYTES`] long: a longer one is cut (an anomaly
//! `truncated`), so a 5 MB name costs 1 KB from here on (state, history, emails, metrics).

use serde_json::Value;

use crate::model::{
    CanSendMessage, CodeVerificationStatus, Health, HealthEntity, HealthError, MessagingLimit,
    NameStatus, PhoneObservation, PhoneStatus, QualityRating, ReviewStatus, TemplateObservation,
    ThroughputLevel, VerificationStatus, WabaObservation,
};

/// Something odd in an answer, counted and logged by the poller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Bounded: `wrong_type`, `unknown_value`, `missing_id`, `truncated`.
    pub reason: &'static str,
    pub field: &'static str,
    /// The object it concerns and the value seen (never a token: answers carry none).
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Anomalies(pub Vec<Anomaly>);

impl Anomalies {
    fn push(&mut self, reason: &'static str, field: &'static str, detail: String) {
        self.0.push(Anomaly {
            reason,
            field,
            detail,
        });
    }
}

/// The most bytes kept of any string in an answer (ids, names, display numbers, enum values,
/// health texts); longer ones keep their first bytes up to a character boundary and end in "…".
pub const MAX_STRING_BYTES: usize = 1024;

/// How many bytes of a value an anomaly's detail quotes (details are logged).
const DETAIL_BYTES: usize = 80;

/// `s` cut to at most `max` bytes on a character boundary, ending in "…" when cut.
pub fn truncate_str(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &s[..end]))
}

/// A string from an answer, capped at [`MAX_STRING_BYTES`]; a cut is an anomaly `truncated`
/// on `field` of the object `id`.
fn capped(s: &str, field: &'static str, id: &str, an: &mut Anomalies) -> String {
    if s.len() > MAX_STRING_BYTES {
        an.push(
            "truncated",
            field,
            format!(
                "{id}: {} bytes = {}",
                s.len(),
                truncate_str(s, DETAIL_BYTES)
            ),
        );
    }
    truncate_str(s, MAX_STRING_BYTES).into_owned()
}

/// A string member of a nested object (health entities and errors): `None` unless it is a
/// string, capped like every other.
fn text(v: &Value, key: &str, field: &'static str, id: &str, an: &mut Anomalies) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| capped(s, field, id, an))
}

/// A string field: `Some` for a string, `None` for absent or null, an anomaly for anything else.
fn string(obj: &Value, field: &'static str, an: &mut Anomalies) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(capped(s, field, &id_of(obj), an)),
        Some(other) => {
            an.push(
                "wrong_type",
                field,
                format!("{} = {}", id_of(obj), truncate_json(other)),
            );
            None
        }
    }
}

/// A timestamp field (ISO 8601 with an offset), normalised to RFC 3339 UTC.
fn timestamp(obj: &Value, field: &'static str, an: &mut Anomalies) -> Option<String> {
    let raw = string(obj, field, an)?;
    match chrono::DateTime::parse_from_rfc3339(&raw) {
        Ok(t) => Some(crate::timefmt::rfc3339(t.with_timezone(&chrono::Utc))),
        Err(_) => {
            an.push(
                "wrong_type",
                field,
                format!("{} = {}", id_of(obj), truncate_str(&raw, DETAIL_BYTES)),
            );
            None
        }
    }
}

/// An enum field, parsed into its open enum; unknown values are kept and noted.
fn enumerated<T>(
    obj: &Value,
    field: &'static str,
    parse: fn(&str) -> T,
    is_known: fn(&T) -> bool,
    an: &mut Anomalies,
) -> Option<T> {
    let raw = string(obj, field, an)?;
    let v = parse(&raw);
    if !is_known(&v) {
        an.push(
            "unknown_value",
            field,
            format!("{} = {}", id_of(obj), truncate_str(&raw, DETAIL_BYTES)),
        );
    }
    Some(v)
}

/// The object's id as quoted in anomaly details (short).
fn id_of(obj: &Value) -> String {
    truncate_str(
        obj.get("id").and_then(Value::as_str).unwrap_or("?"),
        DETAIL_BYTES,
    )
    .into_owned()
}

fn truncate_json(v: &Value) -> String {
    truncate_str(&v.to_string(), DETAIL_BYTES).into_owned()
}

/// An object id: Graph sends ids as strings; a number is accepted, anything else is not an id.
fn object_id(obj: &Value, an: &mut Anomalies) -> Option<String> {
    match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Some(capped(s, "id", &id_of(obj), an)),
        Some(Value::Number(n)) => Some(capped(&n.to_string(), "id", "?", an)),
        _ => {
            an.push("missing_id", "id", truncate_json(obj));
            None
        }
    }
}

/// Reads a `health_status` object. The overall value is Meta's `can_send_message`; if that is
/// missing, the worst entity stands in for it.
pub fn health(obj: &Value, an: &mut Anomalies) -> Option<Health> {
    let hs = match obj.get("health_status") {
        None | Some(Value::Null) => return None,
        Some(v @ Value::Object(_)) => v,
        Some(other) => {
            an.push(
                "wrong_type",
                "health_status",
                format!("{} = {}", id_of(obj), truncate_json(other)),
            );
            return None;
        }
    };
    let owner = id_of(obj);
    let mut entities = Vec::new();
    if let Some(list) = hs.get("entities").and_then(Value::as_array) {
        for e in list {
            let mut errors = Vec::new();
            for x in e
                .get("errors")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                errors.push(HealthError {
                    error_code: x.get("error_code").and_then(Value::as_i64),
                    error_description: text(
                        x,
                        "error_description",
                        "health_status.error_description",
                        &owner,
                        an,
                    ),
                    possible_solution: text(
                        x,
                        "possible_solution",
                        "health_status.possible_solution",
                        &owner,
                        an,
                    ),
                });
            }
            let mut additional_info = Vec::new();
            for info in e
                .get("additional_info")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
            {
                additional_info.push(capped(info, "health_status.additional_info", &owner, an));
            }
            entities.push(HealthEntity {
                entity_type: text(e, "entity_type", "health_status.entity_type", &owner, an)
                    .unwrap_or_else(|| "UNKNOWN".to_owned()),
                id: text(e, "id", "health_status.id", &owner, an),
                can_send_message: text(
                    e,
                    "can_send_message",
                    "health_status.can_send_message",
                    &owner,
                    an,
                )
                .unwrap_or_else(|| "UNKNOWN".to_owned()),
                errors,
                additional_info,
            });
        }
    }
    let overall = match hs.get("can_send_message").and_then(Value::as_str) {
        Some(raw) => {
            let raw = capped(raw, "health_status", &owner, an);
            let v = CanSendMessage::parse(&raw);
            if !v.is_known() {
                an.push(
                    "unknown_value",
                    "health_status",
                    format!("{owner} = {}", truncate_str(&raw, DETAIL_BYTES)),
                );
            }
            v
        }
        None => entities
            .iter()
            .map(|e| CanSendMessage::parse(&e.can_send_message))
            .max_by_key(CanSendMessage::rank)?,
    };
    Some(Health::new(overall, &entities))
}

/// Reads a phone-number node. `waba_id` is the WABA it was listed under, if any.
pub fn phone(obj: &Value, waba_id: Option<&str>, an: &mut Anomalies) -> Option<PhoneObservation> {
    let id = object_id(obj, an)?;
    let throughput = match obj.get("throughput") {
        Some(t @ Value::Object(_)) => enumerated(
            t,
            "level",
            ThroughputLevel::parse,
            ThroughputLevel::is_known,
            an,
        ),
        None | Some(Value::Null) => None,
        Some(other) => {
            an.push(
                "wrong_type",
                "throughput",
                format!("{id} = {}", truncate_json(other)),
            );
            None
        }
    };
    Some(PhoneObservation {
        // Passed by the caller (a WABA's id read through `waba`, or from the config); capped
        // the same way, so it still matches a capped WABA id.
        waba_id: waba_id.map(|w| truncate_str(w, MAX_STRING_BYTES).into_owned()),
        display_phone_number: string(obj, "display_phone_number", an),
        verified_name: string(obj, "verified_name", an),
        quality_rating: enumerated(
            obj,
            "quality_rating",
            QualityRating::parse,
            QualityRating::is_known,
            an,
        ),
        status: enumerated(obj, "status", PhoneStatus::parse, PhoneStatus::is_known, an),
        messaging_limit_tier: enumerated(
            obj,
            "messaging_limit_tier",
            MessagingLimit::parse,
            MessagingLimit::is_known,
            an,
        ),
        business_messaging_limit: enumerated(
            obj,
            "whatsapp_business_manager_messaging_limit",
            MessagingLimit::parse,
            MessagingLimit::is_known,
            an,
        ),
        name_status: enumerated(
            obj,
            "name_status",
            NameStatus::parse,
            NameStatus::is_known,
            an,
        ),
        code_verification_status: enumerated(
            obj,
            "code_verification_status",
            CodeVerificationStatus::parse,
            CodeVerificationStatus::is_known,
            an,
        ),
        throughput,
        account_mode: string(obj, "account_mode", an),
        health: health(obj, an),
        source_created_at: timestamp(obj, "created_time", an),
        source_updated_at: timestamp(obj, "updated_time", an),
        id,
    })
}

/// Reads a WABA node (its `phone_numbers` edge is read separately).
pub fn waba(obj: &Value, business_id: Option<&str>, an: &mut Anomalies) -> Option<WabaObservation> {
    let id = object_id(obj, an)?;
    Some(WabaObservation {
        name: string(obj, "name", an),
        business_id: business_id.map(|b| truncate_str(b, MAX_STRING_BYTES).into_owned()),
        account_review_status: enumerated(
            obj,
            "account_review_status",
            ReviewStatus::parse,
            ReviewStatus::is_known,
            an,
        ),
        business_verification_status: enumerated(
            obj,
            "business_verification_status",
            VerificationStatus::parse_any_case,
            VerificationStatus::is_known,
            an,
        ),
        business_messaging_limit: enumerated(
            obj,
            "whatsapp_business_manager_messaging_limit",
            MessagingLimit::parse,
            MessagingLimit::is_known,
            an,
        ),
        health: health(obj, an),
        ownership_type: string(obj, "ownership_type", an),
        source_created_at: timestamp(obj, "created_time", an),
        source_updated_at: timestamp(obj, "updated_time", an),
        id,
    })
}

/// Template statuses Meta documents; another is kept as sent (an anomaly `unknown_value`).
pub const TEMPLATE_STATUSES: &[&str] = &[
    "APPROVED",
    "PENDING",
    "REJECTED",
    "PAUSED",
    "DISABLED",
    "FLAGGED",
    "IN_APPEAL",
    "LIMIT_EXCEEDED",
    "PENDING_DELETION",
    "DELETED",
    "ARCHIVED",
    "REINSTATED",
];

/// Template quality scores Meta documents.
pub const TEMPLATE_SCORES: &[&str] = &["GREEN", "YELLOW", "RED", "UNKNOWN"];

/// An upper-case enum string kept open: a known value as is, another recorded as sent and
/// noted (so a new value is history, never a crash).
fn open_value(
    obj: &Value,
    raw: Option<String>,
    field: &'static str,
    known: &[&str],
    an: &mut Anomalies,
) -> Option<String> {
    let raw = raw?;
    if !known.contains(&raw.as_str()) {
        an.push(
            "unknown_value",
            field,
            format!("{} = {}", id_of(obj), truncate_str(&raw, DETAIL_BYTES)),
        );
    }
    Some(raw)
}

/// Reads an item of `GET /{waba}/message_templates` (or of the WABA's `message_templates`
/// expansion). `quality_score` is `{score, date}`; a bare string is accepted too.
pub fn template(obj: &Value, waba_id: &str, an: &mut Anomalies) -> Option<TemplateObservation> {
    let id = object_id(obj, an)?;
    let status = string(obj, "status", an);
    let status = open_value(obj, status, "status", TEMPLATE_STATUSES, an);
    let score = match obj.get("quality_score") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(capped(s, "quality_score", &id, an)),
        Some(q @ Value::Object(_)) => match q.get("score") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(capped(s, "quality_score", &id, an)),
            Some(other) => {
                an.push(
                    "wrong_type",
                    "quality_score",
                    format!("{id} = {}", truncate_json(other)),
                );
                None
            }
        },
        Some(other) => {
            an.push(
                "wrong_type",
                "quality_score",
                format!("{id} = {}", truncate_json(other)),
            );
            None
        }
    };
    let quality = open_value(obj, score, "quality_score", TEMPLATE_SCORES, an);
    Some(TemplateObservation {
        waba_id: truncate_str(waba_id, MAX_STRING_BYTES).into_owned(),
        name: string(obj, "name", an),
        language: string(obj, "language", an),
        status,
        quality,
        category: string(obj, "category", an),
        rejected_reason: string(obj, "rejected_reason", an),
        previous_category: string(obj, "previous_category", an),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_item_is_read_and_odd_values_are_noted_not_fatal() {
        let v = json!({"id": "1234", "name": "order_update", "language": "en_US",
            "status": "PAUSED", "category": "UTILITY",
            "quality_score": {"score": "RED", "date": 1767225600},
            "rejected_reason": "NONE"});
        let mut an = Anomalies::default();
        let t = template(&v, "9", &mut an).expect("template");
        assert!(an.0.is_empty(), "{:?}", an.0);
        assert_eq!(t.id, "1234");
        assert_eq!(t.waba_id, "9");
        assert_eq!(t.status.as_deref(), Some("PAUSED"));
        assert_eq!(t.quality.as_deref(), Some("RED"));
        assert_eq!(t.category.as_deref(), Some("UTILITY"));
        assert_eq!(t.name.as_deref(), Some("order_update"));

        let odd = json!({"id": 77, "status": "SOMETHING_NEW", "quality_score": 5, "name": ["x"]});
        let t = template(&odd, "9", &mut an).expect("template");
        assert_eq!(t.id, "77");
        assert_eq!(t.status.as_deref(), Some("SOMETHING_NEW"));
        assert_eq!(t.quality, None);
        assert_eq!(t.name, None);
        let reasons: Vec<&str> = an.0.iter().map(|a| a.reason).collect();
        assert_eq!(reasons, ["unknown_value", "wrong_type", "wrong_type"]);
        assert!(template(&json!({"name": "no id"}), "9", &mut an).is_none());
    }

    #[test]
    fn a_full_phone_node_is_read() {
        let v = json!({
            "id": "106540352242922", "display_phone_number": "+1 631-555-5555",
            "verified_name": "Jasper's Market", "status": "CONNECTED", "quality_rating": "GREEN",
            "messaging_limit_tier": "TIER_1K", "whatsapp_business_manager_messaging_limit": "TIER_2K",
            "name_status": "APPROVED", "code_verification_status": "VERIFIED",
            "throughput": {"level": "STANDARD"}, "account_mode": "LIVE",
            "health_status": {"can_send_message": "LIMITED", "entities": [
                {"entity_type": "PHONE_NUMBER", "id": "106540352242922", "can_send_message": "AVAILABLE"},
                {"entity_type": "BUSINESS", "id": "5", "can_send_message": "LIMITED",
                 "errors": [{"error_code": 141010, "error_description": "not verified", "possible_solution": "verify"}]}]}
        });
        let mut an = Anomalies::default();
        let p = phone(&v, Some("9"), &mut an).expect("phone");
        assert!(an.0.is_empty(), "{:?}", an.0);
        assert_eq!(p.quality_rating, Some(QualityRating::Green));
        assert_eq!(p.business_messaging_limit, Some(MessagingLimit::Tier2K));
        assert_eq!(p.throughput, Some(ThroughputLevel::Standard));
        let h = p.health.expect("health");
        assert_eq!(h.can_send_message, CanSendMessage::Limited);
        assert_eq!(h.entities()[1].errors[0].error_code, Some(141010));
        assert_eq!(p.waba_id.as_deref(), Some("9"));
    }

    #[test]
    fn wrong_types_and_unknown_values_are_anomalies_not_values() {
        let v = json!({"id": "1", "quality_rating": 5, "status": "SHADOWBANNED", "messaging_limit_tier": null});
        let mut an = Anomalies::default();
        let p = phone(&v, None, &mut an).expect("phone");
        assert_eq!(p.quality_rating, None);
        assert_eq!(p.status, Some(PhoneStatus::Other("SHADOWBANNED".into())));
        assert_eq!(p.messaging_limit_tier, None);
        let reasons: Vec<_> = an.0.iter().map(|a| (a.reason, a.field)).collect();
        assert_eq!(
            reasons,
            vec![
                ("wrong_type", "quality_rating"),
                ("unknown_value", "status")
            ]
        );
    }

    #[test]
    fn an_object_without_id_is_skipped() {
        let mut an = Anomalies::default();
        assert!(phone(&json!({"status": "CONNECTED"}), None, &mut an).is_none());
        assert_eq!(an.0[0].reason, "missing_id");
    }

    #[test]
    fn a_5_mb_string_is_cut_to_1_kb_and_counted_as_truncated() {
        let huge = "é".repeat(2_500_000);
        let v = json!({
            "id": "1", "verified_name": huge, "display_phone_number": "+1 555",
            "status": format!("X{huge}"),
            "health_status": {"can_send_message": "LIMITED", "entities": [
                {"entity_type": huge, "id": huge, "can_send_message": "LIMITED",
                 "errors": [{"error_code": 1, "error_description": huge, "possible_solution": huge}],
                 "additional_info": [huge]}]}
        });
        let mut an = Anomalies::default();
        let p = phone(&v, None, &mut an).expect("phone");
        let name = p.verified_name.expect("name");
        assert!(name.len() <= MAX_STRING_BYTES, "{} bytes", name.len());
        assert!(name.starts_with("éé") && name.ends_with('…'), "{name:.20}");
        assert_eq!(p.display_phone_number.as_deref(), Some("+1 555"));
        match p.status {
            Some(PhoneStatus::Other(raw)) => assert!(raw.len() <= MAX_STRING_BYTES),
            other => panic!("status {other:?}"),
        }
        let h = p.health.expect("health");
        let e = &h.entities()[0];
        for text in [
            Some(&e.entity_type),
            e.id.as_ref(),
            e.errors[0].error_description.as_ref(),
            e.errors[0].possible_solution.as_ref(),
            e.additional_info.first(),
        ] {
            let text = text.expect("kept");
            assert!(text.len() <= MAX_STRING_BYTES, "{} bytes", text.len());
        }
        let truncated: Vec<_> =
            an.0.iter()
                .filter(|a| a.reason == "truncated")
                .map(|a| a.field)
                .collect();
        assert_eq!(truncated.len(), 7, "{truncated:?}");
        assert!(truncated.contains(&"verified_name"), "{truncated:?}");
        // Details stay short: they are logged.
        assert!(an.0.iter().all(|a| a.detail.len() < 300), "{:?}", an.0);
    }

    #[test]
    fn a_huge_id_is_capped_like_any_other_string() {
        let v = json!({"id": "9".repeat(5_000), "name": "n"});
        let mut an = Anomalies::default();
        let w = waba(&v, None, &mut an).expect("waba");
        assert!(w.id.len() <= MAX_STRING_BYTES);
        assert_eq!(an.0.len(), 1);
        assert_eq!((an.0[0].reason, an.0[0].field), ("truncated", "id"));
    }

    #[test]
    fn overall_health_falls_back_to_the_worst_entity() {
        let v = json!({"id": "1", "health_status": {"entities": [
            {"entity_type": "WABA", "can_send_message": "AVAILABLE"},
            {"entity_type": "BUSINESS", "can_send_message": "BLOCKED"}]}});
        let h = health(&v, &mut Anomalies::default()).expect("health");
        assert_eq!(h.can_send_message, CanSendMessage::Blocked);
    }
}
