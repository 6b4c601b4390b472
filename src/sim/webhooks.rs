//! A simulated Meta webhook sender: Meta-shaped `whatsapp_business_account` deliveries
//! (`account_update`, `phone_number_quality_update`, and for message templates
//! `message_template_status_update`, `message_template_quality_update`,
//! `template_category_update`), signed with `X-Hub-Signature-256` like Meta signs them
//! (HMAC-SHA256 of the raw body, keyed by the app secret), POSTed to a receiver. Used by
//! `demo`; tests build bodies and signatures with the same functions.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::graph::{SimHandle, SimTemplate};

/// The webhook field of a template's status change.
pub const TEMPLATE_STATUS_FIELD: &str = "message_template_status_update";
/// The webhook field of a template's quality change.
pub const TEMPLATE_QUALITY_FIELD: &str = "message_template_quality_update";
/// The webhook field of a template's re-categorisation.
pub const TEMPLATE_CATEGORY_FIELD: &str = "template_category_update";

/// One target a delivery can be about.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub waba_id: String,
    pub display_phone_number: String,
}

/// `X-Hub-Signature-256`'s value for `body`: `sha256=` and the lowercase hex HMAC-SHA256.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Meta's envelope around one change of `field` for `waba_id`.
pub fn envelope(waba_id: &str, unix_time: i64, field: &str, value: Value) -> Vec<u8> {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": waba_id,
            "time": unix_time,
            "changes": [{"field": field, "value": value}],
        }],
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The delivery of step `step` (deterministic): odd steps a `phone_number_quality_update`
/// (events cycling through Meta's values), even steps an `account_update`.
pub fn delivery(target: &WebhookTarget, step: u64, unix_time: i64) -> Vec<u8> {
    if step % 2 == 1 {
        const EVENTS: [(&str, &str, &str); 3] = [
            ("THROUGHPUT_UPGRADE", "TIER_10K", "TIER_1K"),
            ("FLAGGED", "TIER_1K", "TIER_1K"),
            ("UNFLAGGED", "TIER_1K", "TIER_1K"),
        ];
        let (event, current, old) = EVENTS[(step / 2 % 3) as usize];
        envelope(
            &target.waba_id,
            unix_time,
            "phone_number_quality_update",
            json!({
                "display_phone_number": target.display_phone_number,
                "event": event,
                "current_limit": current,
                "old_limit": old,
            }),
        )
    } else {
        let value = if step.is_multiple_of(4) {
            json!({"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SCAM"}})
        } else {
            json!({"event": "ACCOUNT_RECONNECTED"})
        };
        envelope(&target.waba_id, unix_time, "account_update", value)
    }
}

/// `message_template_id` as Meta sends it: a JSON number (a string only for an id that is not
/// one, as some tests use).
fn template_id(template: &SimTemplate) -> Value {
    template
        .id
        .parse::<u64>()
        .map_or_else(|_| Value::String(template.id.clone()), Value::from)
}

/// The value of a `message_template_status_update` change:
/// `{"event", "message_template_id" (a number), "message_template_name",
/// "message_template_language", "reason" (null when `None`), "message_template_category",
/// "other_info": {"title", "description"} (only with a title), "disable_info": {"disable_date"}
/// (only with a date)}`. Meta sends `reason: "NONE"` for a pause, so pass `Some("NONE")` there.
/// `other_info.description` is Meta's sentence for the title (FIRST_PAUSE, SECOND_PAUSE,
/// RATE_LIMITING_PAUSE, UNPAUSE, DISABLED), a generic one for any other.
pub fn template_status_update(
    template: &SimTemplate,
    event: &str,
    reason: Option<&str>,
    title: Option<&str>,
    disable_date: Option<i64>,
) -> Value {
    let mut value = Map::new();
    value.insert("event".to_owned(), json!(event));
    value.insert("message_template_id".to_owned(), template_id(template));
    value.insert("message_template_name".to_owned(), json!(template.name));
    value.insert(
        "message_template_language".to_owned(),
        json!(template.language),
    );
    value.insert("reason".to_owned(), json!(reason));
    value.insert(
        "message_template_category".to_owned(),
        json!(template.category),
    );
    if let Some(title) = title {
        let description = match title {
            "FIRST_PAUSE" => {
                "Your WhatsApp message template has been paused for 3 hours because it had issues."
            }
            "SECOND_PAUSE" => {
                "Your WhatsApp message template has been paused for 6 hours because it continued to have issues."
            }
            "RATE_LIMITING_PAUSE" => {
                "Your WhatsApp message template has been paused because too many people blocked or reported it."
            }
            "UNPAUSE" => "Your WhatsApp message template has been unpaused.",
            "DISABLED" => {
                "Your WhatsApp message template has been disabled because it continued to have issues."
            }
            _ => "Your WhatsApp message template has been updated.",
        };
        value.insert(
            "other_info".to_owned(),
            json!({ "title": title, "description": description }),
        );
    }
    if let Some(date) = disable_date {
        value.insert("disable_info".to_owned(), json!({ "disable_date": date }));
    }
    Value::Object(value)
}

/// The value of a `message_template_quality_update` change.
pub fn template_quality_update(template: &SimTemplate, previous: &str, new: &str) -> Value {
    json!({
        "previous_quality_score": previous,
        "new_quality_score": new,
        "message_template_id": template_id(template),
        "message_template_name": template.name,
        "message_template_language": template.language,
    })
}

/// The value of a `template_category_update` change (a re-categorisation, e.g. UTILITY →
/// MARKETING, which changes the price of every send).
pub fn template_category_update(template: &SimTemplate, previous: &str, new: &str) -> Value {
    json!({
        "message_template_id": template_id(template),
        "message_template_name": template.name,
        "message_template_language": template.language,
        "previous_category": previous,
        "new_category": new,
    })
}

/// Turns changes of the simulated templates into the webhooks Meta would send about them.
///
/// Give it the templates now and then (`SimState::templates`); each call returns one delivery
/// (an [`envelope`] for the template's WABA) per change since the last call, ordered by
/// template id, status first, then quality, then category:
/// - status → `message_template_status_update` with `event` = the new status; a PAUSED gets
///   `other_info` FIRST_PAUSE, then SECOND_PAUSE (counted per template since it was last
///   DISABLED or new), `reason` "NONE"; PAUSED → APPROVED gets `other_info` UNPAUSE;
///   DISABLED gets `other_info` DISABLED and `disable_info` with the call's time; REJECTED
///   carries the template's `rejected_reason`; anything else `reason` "NONE";
/// - quality → `message_template_quality_update` (a missing quality counts as UNKNOWN);
/// - category → `template_category_update`.
///
/// Templates that appear or disappear send nothing.
#[derive(Debug, Clone, Default)]
pub struct TemplateWatch {
    seen: BTreeMap<String, SimTemplate>,
    pauses: BTreeMap<String, u32>,
}

impl TemplateWatch {
    /// A watch that takes `templates` as already known (no deliveries about them yet).
    pub fn new(templates: &BTreeMap<String, SimTemplate>) -> Self {
        TemplateWatch {
            seen: templates.clone(),
            pauses: BTreeMap::new(),
        }
    }

    /// The deliveries for what changed since the last call (or `new`), stamped `unix_time`.
    pub fn changes(
        &mut self,
        templates: &BTreeMap<String, SimTemplate>,
        unix_time: i64,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (id, now) in templates {
            let Some(before) = self.seen.get(id) else {
                continue;
            };
            let waba = now.waba_id.as_str();
            if before.status != now.status {
                let pauses = self.pauses.entry(id.clone()).or_default();
                let value = match now.status.as_str() {
                    "PAUSED" => {
                        *pauses += 1;
                        let title = if *pauses == 1 {
                            "FIRST_PAUSE"
                        } else {
                            "SECOND_PAUSE"
                        };
                        template_status_update(now, "PAUSED", Some("NONE"), Some(title), None)
                    }
                    "APPROVED" if before.status == "PAUSED" => {
                        template_status_update(now, "APPROVED", Some("NONE"), Some("UNPAUSE"), None)
                    }
                    "DISABLED" => {
                        *pauses = 0;
                        template_status_update(
                            now,
                            "DISABLED",
                            Some("NONE"),
                            Some("DISABLED"),
                            Some(unix_time),
                        )
                    }
                    "REJECTED" => template_status_update(
                        now,
                        "REJECTED",
                        Some(now.rejected_reason.as_deref().unwrap_or("NONE")),
                        None,
                        None,
                    ),
                    other => template_status_update(now, other, Some("NONE"), None, None),
                };
                out.push(envelope(waba, unix_time, TEMPLATE_STATUS_FIELD, value));
            }
            if before.quality != now.quality {
                let previous = before.quality.as_deref().unwrap_or("UNKNOWN");
                let new = now.quality.as_deref().unwrap_or("UNKNOWN");
                out.push(envelope(
                    waba,
                    unix_time,
                    TEMPLATE_QUALITY_FIELD,
                    template_quality_update(now, previous, new),
                ));
            }
            if before.category != now.category {
                out.push(envelope(
                    waba,
                    unix_time,
                    TEMPLATE_CATEGORY_FIELD,
                    template_category_update(now, &before.category, &now.category),
                ));
            }
        }
        self.pauses.retain(|id, _| templates.contains_key(id));
        self.seen = templates.clone();
        out
    }
}

/// Every `every`, POSTs one signed delivery per template change the simulated Graph API's
/// state shows since the last look (the first look is this call; see [`TemplateWatch`]),
/// until the task is aborted. With
/// `demo_step` driving the state, that is the template webhooks matching the demo's story.
/// Failures are logged at debug, like [`spawn_sender`]'s.
pub fn spawn_template_sender(
    url: String,
    app_secret: String,
    sim: SimHandle,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    // The baseline is taken now, so a change made right after this call is reported.
    let mut watch = TemplateWatch::new(&sim.with_state(|s| s.templates.clone()));
    tokio::spawn(async move {
        let Some(client) = sender_client() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let templates = sim.with_state(|s| s.templates.clone());
            for body in watch.changes(&templates, chrono::Utc::now().timestamp()) {
                post(&client, &url, &app_secret, body).await;
            }
        }
    })
}

fn sender_client() -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "the simulated webhook sender could not start");
            None
        }
    }
}

/// POSTs one signed delivery; a failure is only logged (the receiver may not listen yet).
async fn post(client: &reqwest::Client, url: &str, app_secret: &str, body: Vec<u8>) {
    let sent = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature(app_secret, &body))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::debug!(status = %r.status(), "simulated webhook refused"),
        Err(e) => tracing::debug!(error = %e, "simulated webhook not delivered"),
    }
}

/// POSTs one signed delivery of each step to `url` every `every`, round-robin over
/// `targets`, until the task is aborted. Failures are logged at debug and the next step goes
/// on (the receiver may not listen yet).
pub fn spawn_sender(
    url: String,
    app_secret: String,
    targets: Vec<WebhookTarget>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if targets.is_empty() {
            return;
        }
        let Some(client) = sender_client() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        let mut step = 0u64;
        loop {
            tick.tick().await;
            step += 1;
            let target = &targets[(step as usize) % targets.len()];
            let body = delivery(target, step, chrono::Utc::now().timestamp());
            post(&client, &url, &app_secret, body).await;
        }
    })
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what a test wants.
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::sim::graph::demo_ids;
    use crate::sim::{GraphSim, SimOptions, SimState};

    fn template(id: &str) -> SimTemplate {
        let mut state = SimState::default();
        state.add_waba(None, "102290129340398", "Acme");
        state
            .add_template(
                "102290129340398",
                id,
                "order_confirmation",
                "en_US",
                "UTILITY",
            )
            .clone()
    }

    #[test]
    fn a_template_status_update_is_meta_shaped_with_a_numeric_id() {
        let t = template("1689556908129832");
        assert_eq!(
            template_status_update(&t, "PAUSED", Some("NONE"), Some("FIRST_PAUSE"), None),
            json!({
                "event": "PAUSED",
                "message_template_id": 1_689_556_908_129_832_u64,
                "message_template_name": "order_confirmation",
                "message_template_language": "en_US",
                "reason": "NONE",
                "message_template_category": "UTILITY",
                "other_info": {
                    "title": "FIRST_PAUSE",
                    "description": "Your WhatsApp message template has been paused for 3 hours because it had issues.",
                },
            })
        );
        let disabled = template_status_update(&t, "DISABLED", None, None, Some(1_751_234_563));
        assert_eq!(disabled["reason"], Value::Null);
        assert!(disabled.get("other_info").is_none());
        assert_eq!(
            disabled["disable_info"],
            json!({ "disable_date": 1_751_234_563 })
        );
        let plain = template_status_update(&t, "APPROVED", Some("NONE"), None, None);
        assert!(plain.get("other_info").is_none());
        assert!(plain.get("disable_info").is_none());
        // An id that is not a number (some tests use such) stays a string.
        let odd = template_status_update(&template("t1"), "APPROVED", None, None, None);
        assert_eq!(odd["message_template_id"], "t1");
    }

    #[test]
    fn template_quality_and_category_updates_are_meta_shaped() {
        let t = template("1689556908129832");
        assert_eq!(
            template_quality_update(&t, "GREEN", "RED"),
            json!({
                "previous_quality_score": "GREEN",
                "new_quality_score": "RED",
                "message_template_id": 1_689_556_908_129_832_u64,
                "message_template_name": "order_confirmation",
                "message_template_language": "en_US",
            })
        );
        assert_eq!(
            template_category_update(&t, "UTILITY", "MARKETING"),
            json!({
                "message_template_id": 1_689_556_908_129_832_u64,
                "message_template_name": "order_confirmation",
                "message_template_language": "en_US",
                "previous_category": "UTILITY",
                "new_category": "MARKETING",
            })
        );
        let body: Value = serde_json::from_slice(&envelope(
            "102290129340398",
            1_700_000_000,
            TEMPLATE_CATEGORY_FIELD,
            template_category_update(&t, "UTILITY", "MARKETING"),
        ))
        .unwrap();
        assert_eq!(
            body["entry"][0]["changes"][0]["field"],
            "template_category_update"
        );
    }

    /// (field, event or new value, other_info.title) of each delivery.
    fn summary(bodies: &[Vec<u8>]) -> Vec<(String, String, Option<String>)> {
        bodies
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_slice(b).unwrap();
                let change = &v["entry"][0]["changes"][0];
                let value = &change["value"];
                let what = value["event"]
                    .as_str()
                    .or(value["new_quality_score"].as_str())
                    .or(value["new_category"].as_str())
                    .unwrap()
                    .to_owned();
                (
                    change["field"].as_str().unwrap().to_owned(),
                    what,
                    value["other_info"]["title"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }

    #[test]
    fn the_template_watch_reports_what_the_demo_steps_change() {
        let mut fleet = SimState::demo();
        let mut watch = TemplateWatch::new(&fleet.templates);
        assert!(
            watch.changes(&fleet.templates, 1).is_empty(),
            "nothing changed yet"
        );
        let mut by_step = Vec::new();
        for step in 1..=16 {
            fleet.demo_step(step);
            let bodies = watch.changes(&fleet.templates, 1_000 + step as i64);
            for body in &bodies {
                let v: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(v["entry"][0]["id"], demo_ids::SUPPORT);
                assert_eq!(v["entry"][0]["time"], 1_000 + step);
            }
            by_step.push(summary(&bodies));
        }
        let status = |field: &str, event: &str, title: Option<&str>| {
            (field.to_owned(), event.to_owned(), title.map(str::to_owned))
        };
        let s = TEMPLATE_STATUS_FIELD;
        let q = TEMPLATE_QUALITY_FIELD;
        // Step 1 changes no template; step 2 moves the quality a notch.
        assert_eq!(by_step[0], vec![]);
        assert_eq!(by_step[1], vec![status(q, "YELLOW", None)]);
        assert_eq!(by_step[2], vec![status(s, "PAUSED", Some("FIRST_PAUSE"))]);
        assert_eq!(
            by_step[4],
            vec![
                status(s, "APPROVED", Some("UNPAUSE")),
                status(TEMPLATE_CATEGORY_FIELD, "MARKETING", None),
            ]
        );
        assert_eq!(by_step[6], vec![status(s, "PAUSED", Some("SECOND_PAUSE"))]);
        assert_eq!(
            by_step[9],
            vec![
                status(s, "APPROVED", Some("UNPAUSE")),
                status(q, "RED", None)
            ]
        );
        assert_eq!(by_step[10], vec![status(s, "DISABLED", Some("DISABLED"))]);
        // The story starts again: a plain APPROVED, and the next pause is a first one again.
        assert_eq!(
            by_step[15],
            vec![status(s, "APPROVED", None), status(q, "RED", None)]
        );
        let all: Vec<_> = by_step.concat();
        assert_eq!(
            all.iter()
                .filter(|(f, _, _)| f == TEMPLATE_CATEGORY_FIELD)
                .count(),
            1,
            "re-categorised once"
        );
        let qualities: Vec<&str> = all
            .iter()
            .filter(|(f, _, _)| f == q)
            .map(|(_, v, _)| v.as_str())
            .collect();
        assert_eq!(
            qualities,
            [
                "YELLOW", "RED", "GREEN", "YELLOW", "RED", "GREEN", "YELLOW", "RED"
            ]
        );
        fleet.demo_step(19);
        let again = summary(&watch.changes(&fleet.templates, 2_000));
        assert!(
            again.contains(&status(s, "PAUSED", Some("FIRST_PAUSE"))),
            "{again:?}"
        );

        // The DISABLED delivery says when.
        let mut fleet = SimState::demo();
        fleet.demo_step(10);
        let mut watch = TemplateWatch::new(&fleet.templates);
        fleet.demo_step(11);
        let bodies = watch.changes(&fleet.templates, 1_751_234_563);
        let v: Value = serde_json::from_slice(&bodies[0]).unwrap();
        assert_eq!(
            v["entry"][0]["changes"][0]["value"]["disable_info"]["disable_date"],
            1_751_234_563
        );
    }

    #[tokio::test]
    async fn the_template_sender_posts_signed_deliveries_for_state_changes() {
        /// (X-Hub-Signature-256, body) of each delivery received.
        type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
        let received: Received = Arc::default();
        let app = {
            let received = Arc::clone(&received);
            axum::Router::new().route(
                "/hook",
                axum::routing::post(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                        let sig = headers
                            .get("X-Hub-Signature-256")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        received.lock().unwrap().push((sig, body.to_vec()));
                        "ok"
                    },
                ),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let sim = GraphSim::start(SimState::demo(), SimOptions::default())
            .await
            .unwrap();
        let sender = spawn_template_sender(
            url,
            "secret".to_owned(),
            sim.clone_handle(),
            Duration::from_millis(20),
        );
        // The baseline is taken at the call: without a change nothing is sent.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            received.lock().unwrap().is_empty(),
            "no change, no delivery"
        );
        sim.with_state(|s| s.demo_step(3));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while received.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sender.abort();
        server.abort();
        let received = received.lock().unwrap().clone();
        let statuses: Vec<Value> = received
            .iter()
            .map(|(sig, body)| {
                assert_eq!(*sig, signature("secret", body));
                serde_json::from_slice(body).unwrap()
            })
            .filter(|v: &Value| v["entry"][0]["changes"][0]["field"] == TEMPLATE_STATUS_FIELD)
            .collect();
        assert_eq!(statuses.len(), 1, "{received:?}");
        let value = &statuses[0]["entry"][0]["changes"][0]["value"];
        assert_eq!(value["event"], "PAUSED");
        assert_eq!(
            value["message_template_id"],
            demo_ids::PAUSING_TEMPLATE.parse::<u64>().unwrap()
        );
    }

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn deliveries_are_meta_shaped() {
        let t = WebhookTarget {
            waba_id: "102290129340398".into(),
            display_phone_number: "+1 555-010-0101".into(),
        };
        for step in 1..=8 {
            let v: Value = serde_json::from_slice(&delivery(&t, step, 1_700_000_000)).unwrap();
            assert_eq!(v["object"], "whatsapp_business_account");
            assert_eq!(v["entry"][0]["id"], "102290129340398");
            let field = v["entry"][0]["changes"][0]["field"].as_str().unwrap();
            let expected = if step % 2 == 1 {
                "phone_number_quality_update"
            } else {
                "account_update"
            };
            assert_eq!(field, expected);
            assert!(v["entry"][0]["changes"][0]["value"]["event"].is_string());
        }
    }
}
