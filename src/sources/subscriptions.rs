//! Is the webhook path itself alive? With `[webhooks] app_id` set, a `[[meta]]` source asks
//! `GET /{waba}/subscribed_apps` at most once an hour per WABA it saw in its poll, and the
//! answer — does Meta still list the monitor's app? — becomes a polled fact of the WABA
//! (`webhook_subscription` = `subscribed` / `not_subscribed`), recorded by the poller through
//! the facts store like any other fact, so a lost subscription alerts and its return resolves.
//!
//! The calls go through the source's client (admitted and charged to the WABA's quota). A read
//! that fails is no verdict: the last known answer stands. What was asked when, and what Meta
//! answered, lives in [`SubscriptionMemory`] (part of the source's `MetaMemory`), so a reload
//! does not repeat the hourly check.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// The history field of the fact.
pub const FIELD: &str = "webhook_subscription";
/// The app is listed in the WABA's `subscribed_apps`.
pub const SUBSCRIBED: &str = "subscribed";
/// The app is missing from the WABA's `subscribed_apps`: Meta sends its webhooks nowhere here.
pub const NOT_SUBSCRIBED: &str = "not_subscribed";
/// The edge asked.
pub const EDGE: &str = "subscribed_apps";
/// What is asked of each listed app (Meta's default; explicit like every other request).
pub const FIELDS: &str = "whatsapp_business_api_data";

/// How often one WABA is asked.
pub fn interval() -> Duration {
    Duration::hours(1)
}

/// The latest answer for one WABA, carried in every poll that saw the WABA (an equal fact
/// changes nothing, so repeating it is free and a cycle that could not be recorded is made up
/// for by the next one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionCheck {
    pub waba_id: String,
    pub subscribed: bool,
    /// When Meta gave this answer.
    pub checked_at: DateTime<Utc>,
    /// The app looked for.
    pub app_id: String,
}

impl SubscriptionCheck {
    /// The fact's value.
    pub fn value(&self) -> &'static str {
        if self.subscribed {
            SUBSCRIBED
        } else {
            NOT_SUBSCRIBED
        }
    }

    /// The line shown in the alert email.
    pub fn detail(&self) -> String {
        if self.subscribed {
            format!(
                "webhooks subscribed for WABA {}: app {} is listed in its subscribed_apps",
                self.waba_id, self.app_id
            )
        } else {
            format!(
                "webhooks not subscribed for WABA {}: app {} is missing from GET /{}/subscribed_apps, so Meta sends this WABA's webhooks elsewhere; subscribe it again with POST /{}/subscribed_apps (a token of that app)",
                self.waba_id, self.app_id, self.waba_id, self.waba_id
            )
        }
    }
}

#[derive(Debug, Clone)]
struct Memo {
    /// The last request sent (answered or not): the next is due an hour later.
    asked_at: DateTime<Utc>,
    /// The last answer, if Meta ever gave one.
    answer: Option<(bool, DateTime<Utc>)>,
}

/// What each WABA's check learnt; outlives a reload (inside `MetaMemory`).
#[derive(Debug, Default)]
pub struct SubscriptionMemory {
    by_waba: HashMap<String, Memo>,
}

impl SubscriptionMemory {
    /// Whether `waba` is to be asked at `now`: never asked, or asked an hour ago or more.
    pub fn due(&self, waba: &str, now: DateTime<Utc>) -> bool {
        self.by_waba
            .get(waba)
            .is_none_or(|m| now - m.asked_at >= interval() || now < m.asked_at)
    }

    /// A request was sent at `now` (whatever came of it).
    pub fn asked(&mut self, waba: &str, now: DateTime<Utc>) {
        self.by_waba
            .entry(waba.to_owned())
            .and_modify(|m| m.asked_at = now)
            .or_insert(Memo {
                asked_at: now,
                answer: None,
            });
    }

    /// Meta answered at `now`.
    pub fn answered(&mut self, waba: &str, subscribed: bool, now: DateTime<Utc>) {
        self.asked(waba, now);
        if let Some(m) = self.by_waba.get_mut(waba) {
            m.answer = Some((subscribed, now));
        }
    }

    /// The last known answer for `waba`, if any.
    pub fn known(&self, waba: &str, app_id: &str) -> Option<SubscriptionCheck> {
        let (subscribed, checked_at) = self.by_waba.get(waba)?.answer?;
        Some(SubscriptionCheck {
            waba_id: waba.to_owned(),
            subscribed,
            checked_at,
            app_id: app_id.to_owned(),
        })
    }
}

/// Whether the items of a `subscribed_apps` listing include `app_id`: each item is
/// `{"whatsapp_business_api_data":{"id":..}}`, or (older shape) carries `id` itself.
pub fn lists_app(items: &[Value], app_id: &str) -> bool {
    items.iter().any(|item| {
        let id = item
            .get("whatsapp_business_api_data")
            .and_then(|d| d.get("id"))
            .or_else(|| item.get("id"));
        match id {
            Some(Value::String(s)) => s == app_id,
            Some(Value::Number(n)) => n.to_string() == app_id,
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_shapes_of_the_listing_are_read_and_another_app_does_not_count() {
        let items = [
            json!({"whatsapp_business_api_data": {"id": "1", "name": "BSP", "link": "x"}}),
            json!({"id": "2"}),
            json!({"whatsapp_business_api_data": {"id": 3}}),
            json!("junk"),
        ];
        assert!(lists_app(&items, "1"));
        assert!(lists_app(&items, "2"));
        assert!(lists_app(&items, "3"));
        assert!(!lists_app(&items, "4"));
        assert!(!lists_app(&[], "1"));
    }

    #[test]
    fn a_waba_is_due_hourly_and_a_failed_read_keeps_the_last_answer() {
        let t0 = DateTime::parse_from_rfc3339("2026-02-12T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let mut m = SubscriptionMemory::default();
        assert!(m.due("w", t0));
        m.answered("w", true, t0);
        assert!(!m.due("w", t0 + Duration::minutes(59)));
        assert!(m.due("w", t0 + Duration::minutes(60)));
        let t1 = t0 + Duration::minutes(60);
        m.asked("w", t1);
        assert!(!m.due("w", t1 + Duration::minutes(30)));
        let known = m.known("w", "app").expect("known");
        assert!(known.subscribed);
        assert_eq!(known.checked_at, t0);
        assert_eq!(known.value(), SUBSCRIBED);
        assert!(m.known("other", "app").is_none());
        m.asked("fresh", t1);
        assert!(m.known("fresh", "app").is_none(), "asked, never answered");
    }
}
