//! Webhook receivers of a `[[route]]`: the digest as a JSON document, or as a Slack/Mattermost
//! incoming-webhook payload (`{"text": ...}`), delivered through the outbox like email.

use serde_json::json;

use super::render::AlertItem;
use crate::config::WebhookFormat;

/// The payload of one digest for one receiver and its media type. `key` is the digest's
/// idempotency key (also sent as the `Idempotency-Key` header).
pub fn payload(
    items: &[AlertItem],
    format: WebhookFormat,
    key: &str,
    dashboard: Option<&url::Url>,
) -> (String, &'static str) {
    let mut sorted: Vec<&AlertItem> = items.iter().collect();
    sorted.sort_by(|a, b| b.rank().cmp(&a.rank()).then(a.id.cmp(&b.id)));
    match format {
        WebhookFormat::Slack => {
            let mut text = super::render::subject(items);
            for i in &sorted {
                text.push_str(&format!(
                    "\n• {} {}: {}",
                    i.severity.to_uppercase(),
                    i.target(),
                    i.what()
                ));
            }
            if let Some(d) = dashboard {
                text.push_str(&format!("\n{d}"));
            }
            (json!({ "text": text }).to_string(), "application/json")
        }
        WebhookFormat::Json => {
            let list: Vec<serde_json::Value> = sorted
                .iter()
                .map(|i| {
                    json!({
                        "severity": i.severity,
                        "kind": i.kind,
                        "target_id": i.target_id,
                        "target": i.target(),
                        "waba_id": i.waba_id,
                        "field": i.field,
                        "old": i.old,
                        "new": i.new,
                        "what": i.what(),
                        "detail": i.detail,
                        "detected_at": i.created_at,
                    })
                })
                .collect();
            let body = json!({
                "idempotency_key": key,
                "subject": super::render::subject(items),
                "alerts": list,
                "dashboard_url": dashboard.map(url::Url::as_str),
            });
            (body.to_string(), "application/json")
        }
    }
}
