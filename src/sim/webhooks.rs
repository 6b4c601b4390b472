//! A simulated Meta webhook sender: Meta-shaped `whatsapp_business_account` deliveries
//! (`account_update`, `phone_number_quality_update`), signed with `X-Hub-Signature-256` like
//! Meta signs them (HMAC-SHA256 of the raw body, keyed by the app secret), POSTed to a
//! receiver. Used by `demo`; tests build bodies and signatures with the same functions.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

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
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the simulated webhook sender could not start");
                return;
            }
        };
        let mut tick = tokio::time::interval(every);
        let mut step = 0u64;
        loop {
            tick.tick().await;
            step += 1;
            let target = &targets[(step as usize) % targets.len()];
            let body = delivery(target, step, chrono::Utc::now().timestamp());
            let sent = client
                .post(&url)
                .header("Content-Type", "application/json")
                .header("X-Hub-Signature-256", signature(&app_secret, &body))
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::debug!(status = %r.status(), "simulated webhook refused"),
                Err(e) => tracing::debug!(error = %e, "simulated webhook not delivered"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
