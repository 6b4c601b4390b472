//! The webhook receiver: Meta's subscription handshake and its signed deliveries, on the
//! `[webhooks]` listener (its own, behind the TLS proxy; `/metrics` and `/api` are not on it).
//!
//! - `GET {path}?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C` → 200 with `C` when `T`
//!   is the verify token (compared in constant time), else 403.
//! - `POST {path}`: a body over [`MAX_BODY`] is refused with 413 (by its `Content-Length`
//!   before any of it is read, or as soon as a chunked body passes the cap); then the
//!   `X-Hub-Signature-256: sha256=<hex>` HMAC-SHA256 of the raw bytes, keyed by the app secret,
//!   must verify (constant time) or the answer is 401 and nothing is stored; then the raw body
//!   is committed to the store (a repeat of a stored delivery is counted, not stored again)
//!   **before** the 200. A signed body that is not Meta's envelope is stored as `malformed`.
//!
//! Turning stored deliveries into history and alerts is the next step: it reads
//! [`Store::unprocessed_webhook_events`]. Nothing here logs or answers with a secret.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::{HttpLimits, serve_router};
use crate::lifecycle::ShutdownSignal;
use crate::metrics::Metrics;
use crate::runtime::{SharedRuntime, WebhookSecrets};
use crate::store::Store;
use crate::store::webhooks::{NewWebhookEvent, Stored};

/// The largest delivery accepted: 3 MiB (Meta sends up to 1,000 changes in one POST).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The `field`s of Meta's WhatsApp Business Account webhook; any other is counted as `other`,
/// so the metric's label set stays bounded.
pub const KNOWN_FIELDS: &[&str] = &[
    "account_alerts",
    "account_review_update",
    "account_update",
    "automatic_events",
    "business_capability_update",
    "business_status_update",
    "calls",
    "flows",
    "history",
    "message_echoes",
    "message_template_components_update",
    "message_template_quality_update",
    "message_template_status_update",
    "messages",
    "partner_solutions",
    "payment_configuration_update",
    "phone_number_name_update",
    "phone_number_quality_update",
    "security",
    "smb_app_state_sync",
    "smb_message_echoes",
    "template_category_update",
    "tracking_events",
    "user_preferences",
];

/// The most deliveries committed together in one synced transaction.
pub const MAX_BATCH: usize = 256;

/// A delivery waiting for its commit.
struct Pending {
    received_at: chrono::DateTime<chrono::Utc>,
    body: Bytes,
    field: &'static str,
    receipt: &'static str,
    reply: tokio::sync::oneshot::Sender<Result<Stored, ()>>,
}

/// Group commit: one task writes every delivery, and the deliveries that arrive while a
/// commit is being synced are committed together in the next one. Each handler still answers
/// only after *its* delivery is on disk; a burst costs one `fsync` per batch instead of one
/// per delivery (on this 2-core machine's disk, one per delivery capped the receiver near
/// 1,100/s).
#[derive(Clone)]
pub struct Intake {
    tx: tokio::sync::mpsc::Sender<Pending>,
}

impl Intake {
    /// Starts the writer; it ends when every handle is dropped (the listener has stopped).
    pub fn start(store: Store, metrics: Arc<Metrics>) -> Intake {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let events: Vec<NewWebhookEvent<'_>> = batch
                    .iter()
                    .map(|p| NewWebhookEvent {
                        received_at: p.received_at,
                        body: &p.body,
                        field: Some(p.field),
                        receipt: p.receipt,
                    })
                    .collect();
                let result = store.insert_webhook_events(&events).await;
                drop(events);
                match result {
                    Ok(stored) => {
                        for (p, st) in batch.drain(..).zip(stored) {
                            // The handler may have gone (client hung up): nothing to tell.
                            let _ = p.reply.send(Ok(st));
                        }
                    }
                    Err(e) => {
                        metrics.store_error("webhook");
                        tracing::error!(
                            error = %e,
                            deliveries = batch.len(),
                            "could not store webhook deliveries; Meta will send them again"
                        );
                        for p in batch.drain(..) {
                            let _ = p.reply.send(Err(()));
                        }
                    }
                }
                batch.clear();
            }
        });
        Intake { tx }
    }

    /// Commits one delivery (with whatever else is waiting); `Err` when it could not be.
    async fn store(
        &self,
        received_at: chrono::DateTime<chrono::Utc>,
        body: Bytes,
        field: &'static str,
        receipt: &'static str,
    ) -> Result<Stored, ()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Pending {
                received_at,
                body,
                field,
                receipt,
                reply,
            })
            .await
            .map_err(|_| ())?;
        answer.await.map_err(|_| ())?
    }
}

/// What the webhook handlers share.
#[derive(Clone)]
pub struct WebhookState {
    /// Where deliveries are committed (group commit over the store).
    pub intake: Intake,
    pub metrics: Arc<Metrics>,
    /// The runtime in force: the app secret and verify token are read from it per request, so
    /// a reload (secret files re-read) applies to the next delivery.
    pub runtime: SharedRuntime,
    /// Woken when a new delivery is stored, so it is processed at once.
    pub stored: Arc<tokio::sync::Notify>,
}

/// The receiver's routes: `GET` and `POST` on `path` (validated by the config), nothing else.
pub fn router(path: &str, state: WebhookState) -> Router {
    Router::new()
        .route(path, get(verify).post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the receiver on its own listener until `shutdown`, hardened like the main one.
pub async fn serve(
    listener: tokio::net::TcpListener,
    path: String,
    state: WebhookState,
    limits: HttpLimits,
    shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    serve_router(listener, router(&path, state), limits, shutdown).await
}

fn secrets(state: &WebhookState) -> Option<Arc<WebhookSecrets>> {
    state.runtime.current().webhooks.clone()
}

fn not_configured() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "webhooks are not configured ([webhooks] was removed by a reload)\n",
    )
        .into_response()
}

/// Equal in constant time: both sides are hashed first, so neither the length nor the first
/// differing byte of the secret shows in the timing.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(secret);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The subscription handshake.
async fn verify(State(s): State<WebhookState>, RawQuery(query): RawQuery) -> Response {
    let Some(secrets) = secrets(&s) else {
        return not_configured();
    };
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v.into_owned()),
            "hub.verify_token" => token = Some(v.into_owned()),
            "hub.challenge" => challenge = Some(v.into_owned()),
            _ => {}
        }
    }
    let token_ok = token.as_deref().is_some_and(|t| {
        same_secret(
            t.as_bytes(),
            secrets.verify_token.expose_secret().as_bytes(),
        )
    });
    match challenge {
        Some(c) if token_ok && mode.as_deref() == Some("subscribe") && c.len() <= 1024 => {
            tracing::info!("webhook subscription verified");
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                c,
            )
                .into_response()
        }
        _ => {
            tracing::warn!(
                mode = mode.as_deref().unwrap_or(""),
                token_matches = token_ok,
                "webhook subscription handshake refused"
            );
            (StatusCode::FORBIDDEN, "forbidden\n").into_response()
        }
    }
}

/// `sha256=<64 hex digits>` → the 32 bytes.
fn parse_signature(value: &[u8]) -> Option<[u8; 32]> {
    let hex = value.strip_prefix(b"sha256=")?;
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Whether `signature` is the HMAC-SHA256 of `body` keyed by `secret` (constant time).
pub fn signature_valid(secret: &[u8], body: &[u8], signature: Option<&[u8]>) -> bool {
    let Some(expected) = signature.and_then(parse_signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[derive(serde::Deserialize)]
struct Envelope {
    object: Option<String>,
    entry: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<ChangeField>,
}

#[derive(serde::Deserialize)]
struct ChangeField {
    field: String,
}

/// The first change's field as a bounded label, and the receipt: `accepted` (a documented
/// field), `unknown_field` (another field, or another object than a WABA: `other`) or
/// `malformed` (not Meta's envelope: `unknown`).
pub fn classify(body: &[u8]) -> (&'static str, &'static str) {
    let Ok(env) = serde_json::from_slice::<Envelope>(body) else {
        return ("unknown", "malformed");
    };
    let Some(field) = env
        .entry
        .first()
        .and_then(|e| e.changes.first())
        .map(|c| c.field.as_str())
    else {
        return ("unknown", "malformed");
    };
    if env.object.as_deref() != Some("whatsapp_business_account") {
        return ("other", "unknown_field");
    }
    match KNOWN_FIELDS.iter().find(|f| **f == field) {
        Some(known) => (known, "accepted"),
        None => ("other", "unknown_field"),
    }
}

/// A delivery.
async fn receive(State(s): State<WebhookState>, req: Request) -> Response {
    let too_large = |s: &WebhookState| {
        s.metrics.webhook_event("unknown", "too_large");
        tracing::warn!(max = MAX_BODY, "webhook delivery refused: body too large");
        (StatusCode::PAYLOAD_TOO_LARGE, "payload too large\n").into_response()
    };
    // A declared length over the cap is refused before a byte of the body is read; a chunked
    // body is read up to the cap (`DefaultBodyLimit`) and refused as soon as it passes it.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large(&s);
    }
    let signature = req
        .headers()
        .get("x-hub-signature-256")
        .map(|v| v.as_bytes().to_vec());
    let body = match Bytes::from_request(req, &()).await {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large(&s),
        Err(e) => {
            tracing::debug!(error = %e, "webhook delivery body could not be read");
            return (e.status(), "could not read the body\n").into_response();
        }
    };
    let Some(secrets) = secrets(&s) else {
        return not_configured();
    };
    if !signature_valid(
        secrets.app_secret.expose_secret().as_bytes(),
        &body,
        signature.as_deref(),
    ) {
        s.metrics.webhook_event("unknown", "bad_signature");
        tracing::warn!(
            signature_present = signature.is_some(),
            bytes = body.len(),
            "webhook delivery refused: its X-Hub-Signature-256 does not verify with the app secret"
        );
        return (StatusCode::UNAUTHORIZED, "invalid signature\n").into_response();
    }
    let (field, receipt) = classify(&body);
    let received_at = chrono::Utc::now();
    let stored = s
        .intake
        .store(received_at, body.clone(), field, receipt)
        .await;
    let outcome = match stored {
        Ok(Stored::New(id)) => {
            s.stored.notify_one();
            tracing::info!(
                id,
                field,
                receipt,
                bytes = body.len(),
                "webhook delivery stored"
            );
            receipt
        }
        Ok(Stored::Duplicate(id)) => {
            tracing::debug!(id, field, "webhook delivery already stored (a repeat)");
            "duplicate"
        }
        Err(()) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store the event\n",
            )
                .into_response();
        }
    };
    s.metrics.webhook_event(field, outcome);
    s.metrics
        .webhook_last_event
        .set(received_at.timestamp_millis() as f64 / 1000.0);
    (StatusCode::OK, "ok\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_over_the_raw_bytes() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").expect("key");
        mac.update(b"{}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let good = format!("sha256={hex}");
        assert!(signature_valid(b"secret", b"{}", Some(good.as_bytes())));
        assert!(signature_valid(
            b"secret",
            b"{}",
            Some(
                good.to_ascii_uppercase()
                    .replace("SHA256=", "sha256=")
                    .as_bytes()
            )
        ));
        assert!(!signature_valid(b"secret", b"{ }", Some(good.as_bytes())));
        assert!(!signature_valid(b"other", b"{}", Some(good.as_bytes())));
        assert!(!signature_valid(b"secret", b"{}", None));
        for bad in [
            "",
            "sha256=",
            "sha1=00",
            &good[..good.len() - 1],
            "sha256=zz",
        ] {
            assert!(
                !signature_valid(b"secret", b"{}", Some(bad.as_bytes())),
                "{bad}"
            );
        }
    }

    #[test]
    fn deliveries_are_classified_by_their_first_field() {
        let env = |object: &str, field: &str| {
            format!(
                "{{\"object\":\"{object}\",\"entry\":[{{\"id\":\"1\",\"time\":1,\"changes\":[{{\"field\":\"{field}\",\"value\":{{}}}}]}}]}}"
            )
        };
        let waba = "whatsapp_business_account";
        assert_eq!(
            classify(env(waba, "account_update").as_bytes()),
            ("account_update", "accepted")
        );
        assert_eq!(
            classify(env(waba, "something_new").as_bytes()),
            ("other", "unknown_field")
        );
        assert_eq!(
            classify(env("page", "account_update").as_bytes()),
            ("other", "unknown_field")
        );
        for bad in [
            "",
            "not json",
            "{}",
            "{\"entry\":[]}",
            "{\"entry\":[{}]}",
            "[1]",
        ] {
            assert_eq!(classify(bad.as_bytes()), ("unknown", "malformed"), "{bad}");
        }
    }

    #[test]
    fn the_verify_token_compare_needs_the_same_bytes() {
        assert!(same_secret(b"tok", b"tok"));
        assert!(!same_secret(b"tok", b"tok "));
        assert!(!same_secret(b"", b"tok"));
    }
}
