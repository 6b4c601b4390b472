//! Webhook receivers of a `[[route]]`: the digest as a JSON document, or as a Slack/Mattermost
//! incoming-webhook payload (`{"text": ...}`), delivered through the outbox like email.
//!
//! Both are built from the same items as the email, worst first (then oldest first), every
//! string from Meta cleaned and capped as in the email ([`super::render::clean`]). A webhook
//! URL is a secret (Slack's and Mattermost's carry their key in the path): [`origin`] is all of
//! it that may be logged, and [`scrub`] removes it from any text that could carry it.

use serde_json::json;

use super::render::{AlertItem, FIELD_BYTES, clean};
use crate::alerts::rules::Severity;
use crate::config::WebhookFormat;

/// The most items written out as lines of a Slack payload; the rest are counted in one line
/// (Slack cuts long messages, and a wall of lines helps nobody).
pub const SLACK_MAX_LINES: usize = 50;

/// The payload of one digest for one receiver and its media type. `key` is the digest's
/// idempotency key (also sent as the `Idempotency-Key` header).
pub fn payload(
    items: &[AlertItem],
    format: WebhookFormat,
    key: &str,
    dashboard: Option<&url::Url>,
) -> (String, &'static str) {
    let sorted = worst_first(items);
    match format {
        WebhookFormat::Slack => (
            json!({ "text": slack_text(items, &sorted, dashboard) }).to_string(),
            "application/json",
        ),
        WebhookFormat::Json => {
            let list: Vec<serde_json::Value> = sorted
                .iter()
                .map(|i| {
                    let opt = |v: &Option<String>| v.as_deref().map(|s| clean(s, FIELD_BYTES));
                    json!({
                        "id": i.id,
                        "severity": i.severity,
                        "rank": i.rank().as_str(),
                        "kind": i.kind,
                        "target_id": clean(&i.target_id, FIELD_BYTES),
                        "target": i.target(),
                        "waba_id": opt(&i.waba_id),
                        "business_id": opt(&i.business_id),
                        "source": opt(&i.source),
                        "field": i.field,
                        "old": opt(&i.old),
                        "new": opt(&i.new),
                        "what": i.what(),
                        "detail": opt(&i.detail),
                        "previous_since": i.previous_since,
                        "detected_at": i.created_at,
                    })
                })
                .collect();
            let worst = items.iter().map(AlertItem::rank).max();
            let body = json!({
                "idempotency_key": key,
                "subject": super::render::subject(items),
                "worst_severity": worst.map(Severity::as_str),
                "count": items.len(),
                "alerts": list,
                "dashboard_url": dashboard.map(url::Url::as_str),
            });
            (body.to_string(), "application/json")
        }
    }
}

/// The items worst first (as they rank: a reminder or escalation as what it follows), then
/// oldest first.
fn worst_first(items: &[AlertItem]) -> Vec<&AlertItem> {
    let mut sorted: Vec<&AlertItem> = items.iter().collect();
    sorted.sort_by(|a, b| b.rank().cmp(&a.rank()).then(a.id.cmp(&b.id)));
    sorted
}

/// A Slack/Mattermost message: the subject, then one line per item, worst first, at most
/// [`SLACK_MAX_LINES`] of them, then the dashboard link.
fn slack_text(items: &[AlertItem], sorted: &[&AlertItem], dashboard: Option<&url::Url>) -> String {
    let mut text = slack_escape(&super::render::subject(items));
    for i in sorted.iter().take(SLACK_MAX_LINES) {
        text.push_str(&format!(
            "\n• {} {}: {}",
            i.severity.to_uppercase(),
            slack_escape(&i.target()),
            slack_escape(&i.what())
        ));
    }
    if sorted.len() > SLACK_MAX_LINES {
        text.push_str(&format!(
            "\n… and {} more (the email digest lists every one)",
            sorted.len() - SLACK_MAX_LINES
        ));
    }
    if let Some(d) = dashboard {
        text.push_str(&format!("\nDashboard: {}", slack_escape(d.as_str())));
    }
    text
}

/// Slack's three control characters escaped, so a name from Meta cannot become a link or a
/// mention (`<!channel>`, `<https://…|…>`).
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What of a webhook (or heartbeat) URL may be logged: its scheme, host and port. The path and
/// query (where Slack, Mattermost and Healthchecks keep their keys) never are.
pub fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.host_str() {
            Some(host) => match u.port() {
                Some(port) => format!("{}://{host}:{port}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            },
            None => format!("{}:", u.scheme()),
        },
        Err(_) => "(an invalid URL)".to_owned(),
    }
}

/// A failed request's error and its causes in one line ("error sending request: connection
/// refused"), without the URL reqwest puts in it (it may carry a secret): callers still
/// [`scrub`] the text for a URL a cause repeats.
pub fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// `text` with `url` — whole, or its path and query — replaced by its [`origin`] and `/…`, for
/// text that might repeat it (an HTTP library's error, a receiver's answer).
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &format!("{}/…", origin(url)));
    if let Ok(u) = url::Url::parse(url) {
        let path = u.path();
        if let Some(q) = u.query() {
            out = out.replace(&format!("{path}?{q}"), "/…");
            out = out.replace(q, "…");
        }
        if path.len() > 1 {
            out = out.replace(path, "/…");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheme_host_and_port_of_a_url_are_shown() {
        assert_eq!(
            origin("https://hooks.slack.com/services/T000/B000/XXXXsecret"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            origin("http://127.0.0.1:9000/hook?token=abc"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(origin("not a url /secret"), "(an invalid URL)");
    }

    #[test]
    fn scrub_removes_the_path_and_query_wherever_they_appear() {
        let url = "https://chat.example.com/hooks/abcdef123456?key=s3cret";
        let text = format!("error sending request for url ({url}); 404 for /hooks/abcdef123456");
        let out = scrub(&text, url);
        assert!(!out.contains("abcdef123456"), "{out}");
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("https://chat.example.com/…"), "{out}");
        // A URL without a path leaves other text alone.
        assert_eq!(scrub("a / b", "https://example.com/"), "a / b");
    }

    #[test]
    fn slack_control_characters_are_escaped() {
        assert_eq!(
            slack_escape("<!channel> & <https://evil.example|click>"),
            "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
        );
    }
}
