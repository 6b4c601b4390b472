//! The webhook receiver of a running daemon, on its own loopback listener: Meta's handshake,
//! signatures computed here with the real HMAC over fixtures in Meta's shapes, the 3 MiB cap,
//! deduplication, and deliveries committed to the real SQLite file before the 200.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::helpers::{TestApp, one_waba};
use waba_monitor::daemon::{self, RunOptions};
use waba_monitor::retry::RetryPolicy;

const APP_SECRET: &str = "app-secret-for-tests-0123456789abcdef";
const VERIFY_TOKEN: &str = "verify-token-for-tests-9876543210";
const PATH: &str = "/webhooks/meta";
const MAX: usize = 3 * 1024 * 1024;

/// `account_update` with a ban, as Meta's webhook reference shows it.
const ACCOUNT_UPDATE_BAN: &str = r#"{
  "object": "whatsapp_business_account",
  "entry": [
    {
      "id": "200000000000001",
      "time": 1739321024,
      "changes": [
        {
          "value": {
            "event": "DISABLED_UPDATE",
            "ban_info": {
              "waba_ban_state": "DISABLE",
              "waba_ban_date": "2026-02-12"
            }
          },
          "field": "account_update"
        }
      ]
    }
  ]
}"#;

/// `phone_number_quality_update`, as Meta's webhook reference shows it.
const QUALITY_UPDATE: &str = r#"{
  "object": "whatsapp_business_account",
  "entry": [
    {
      "id": "200000000000001",
      "time": 1739321024,
      "changes": [
        {
          "value": {
            "display_phone_number": "15550783881",
            "event": "THROUGHPUT_UPGRADE",
            "current_limit": "TIER_10K",
            "old_limit": "TIER_1K",
            "max_daily_conversations_per_business": "TIER_10K"
          },
          "field": "phone_number_quality_update"
        }
      ]
    }
  ]
}"#;

fn sign_with(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn sign(body: &[u8]) -> String {
    sign_with(APP_SECRET, body)
}

/// A daemon with `[webhooks]`, both listeners bound on loopback port 0.
struct Receiver {
    app: TestApp,
    webhooks: std::net::SocketAddr,
    base: String,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl Receiver {
    async fn start() -> Receiver {
        let app = TestApp::spawn_with_extra(
            one_waba(1),
            "wabas = [\"200000000000001\"]",
            "[webhooks]\nlisten = \"127.0.0.1:0\"\napp_secret_file = \"app-secret\"\nverify_token_file = \"verify-token\"\napp_id = \"123456789\"\n",
        )
        .await;
        app.write_secret("app-secret", APP_SECRET);
        app.write_secret("verify-token", VERIFY_TOKEN);
        Self::start_app(app).await
    }

    async fn start_app(app: TestApp) -> Receiver {
        let main = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hooks = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", main.local_addr().expect("addr"));
        let webhooks = hooks.local_addr().expect("addr");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (tx, mut cycles) = mpsc::unbounded_channel::<()>();
        let cfg = waba_monitor::config::Config::load_for_start(&app.config_path)
            .expect("config and secrets are valid");
        assert!(cfg.webhooks.is_some());
        let handle = tokio::spawn(daemon::run_with_listeners(
            cfg,
            RunOptions {
                retry: RetryPolicy::fast(),
                ..RunOptions::default()
            },
            main,
            Some(hooks),
            async move {
                let _ = stop_rx.await;
            },
            move |_| {
                let _ = tx.send(());
            },
        ));
        // Started: the first cycle ran (the listeners were bound before, so requests made
        // earlier would have waited in the backlog anyway).
        tokio::time::timeout(Duration::from_secs(15), cycles.recv())
            .await
            .expect("first cycle in time")
            .expect("daemon running");
        Receiver {
            app,
            webhooks,
            base,
            stop: Some(stop_tx),
            handle,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}{PATH}", self.webhooks)
    }

    async fn post(&self, body: &[u8], signature: Option<&str>) -> (u16, String) {
        let mut req = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(s) = signature {
            req = req.header("x-hub-signature-256", s);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    async fn handshake(&self, query: &[(&str, &str)]) -> (u16, String) {
        let resp = self
            .http
            .get(self.url())
            .query(query)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }

    /// Rows in the database, read through a store of its own (as another process would).
    async fn rows(&self) -> i64 {
        let store = self.app.store().await;
        let n = store.webhook_event_count().await.expect("count");
        store.close().await;
        n
    }

    async fn stop(mut self) -> TestApp {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("clean exit");
        self.app
    }
}

/// The value of the sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn events(text: &str, field: &str, outcome: &str) -> f64 {
    sample(
        text,
        &format!("waba_monitor_webhook_events_total{{field=\"{field}\",outcome=\"{outcome}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn the_handshake_answers_the_challenge_only_for_the_verify_token_and_subscribe() {
    let r = Receiver::start().await;
    let ok = [
        ("hub.mode", "subscribe"),
        ("hub.verify_token", VERIFY_TOKEN),
        ("hub.challenge", "1158201444"),
    ];
    assert_eq!(r.handshake(&ok).await, (200, "1158201444".to_owned()));
    for bad in [
        vec![
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "wrong"),
            ("hub.challenge", "1"),
        ],
        vec![
            ("hub.mode", "subscribe"),
            ("hub.verify_token", &VERIFY_TOKEN[..VERIFY_TOKEN.len() - 1]),
            ("hub.challenge", "1"),
        ],
        vec![
            ("hub.mode", "unsubscribe"),
            ("hub.verify_token", VERIFY_TOKEN),
            ("hub.challenge", "1"),
        ],
        vec![("hub.mode", "subscribe"), ("hub.challenge", "1")],
        vec![],
    ] {
        let (code, body) = r.handshake(&bad).await;
        assert_eq!(code, 403, "{bad:?}");
        assert!(
            !body.contains(VERIFY_TOKEN) && !body.contains('1'),
            "{body}"
        );
    }
    // Only the configured path is served, and /metrics is not on this listener.
    let other = r
        .http
        .get(format!("http://{}/metrics", r.webhooks))
        .send()
        .await
        .expect("request");
    assert_eq!(other.status().as_u16(), 404);
    r.stop().await;
}

#[tokio::test]
async fn a_delivery_without_a_valid_signature_gets_401_and_nothing_is_stored() {
    let r = Receiver::start().await;
    let body = ACCOUNT_UPDATE_BAN.as_bytes();
    let other_body = sign(QUALITY_UPDATE.as_bytes());
    let wrong_secret = sign_with("not-the-app-secret", body);
    let good = sign(body);
    let truncated = &good[..good.len() - 2];
    let sha1 = good.replace("sha256=", "sha1=");
    for signature in [
        None,
        Some(wrong_secret.as_str()),
        Some(other_body.as_str()),
        Some(truncated),
        Some(sha1.as_str()),
        Some(""),
    ] {
        let (code, text) = r.post(body, signature).await;
        assert_eq!(code, 401, "{signature:?}: {text}");
        assert!(!text.contains(APP_SECRET), "{text}");
    }
    assert_eq!(r.rows().await, 0, "nothing stored");
    let text = r.metrics().await;
    assert_eq!(events(&text, "unknown", "bad_signature"), 6.0, "{text}");
    assert_eq!(events(&text, "account_update", "accepted"), 0.0, "{text}");
    // The same body, correctly signed, is taken: the 401s were the signature's doing.
    assert_eq!(r.post(body, Some(&good)).await.0, 200);
    assert_eq!(r.rows().await, 1);
    r.stop().await;
}

#[tokio::test]
async fn signed_deliveries_are_committed_before_the_200_once_each_and_survive_a_restart() {
    let r = Receiver::start().await;
    let ban = ACCOUNT_UPDATE_BAN.as_bytes();
    let quality = QUALITY_UPDATE.as_bytes();
    assert_eq!(r.post(ban, Some(&sign(ban))).await.0, 200);
    // Committed before the answer: another connection to the file sees it at once.
    assert_eq!(r.rows().await, 1);
    assert_eq!(r.post(quality, Some(&sign(quality))).await.0, 200);
    // Meta sends the same delivery again: 200, still one row for it.
    assert_eq!(r.post(ban, Some(&sign(ban))).await.0, 200);
    assert_eq!(r.rows().await, 2);
    let text = r.metrics().await;
    assert_eq!(events(&text, "account_update", "accepted"), 1.0, "{text}");
    assert_eq!(events(&text, "account_update", "duplicate"), 1.0, "{text}");
    assert_eq!(
        events(&text, "phone_number_quality_update", "accepted"),
        1.0,
        "{text}"
    );
    let last = sample(&text, "waba_monitor_webhook_last_event_timestamp_seconds")
        .expect("last event gauge");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 60.0..=now + 1.0).contains(&last), "{last} vs {now}");

    // The daemon stops; the rows are in the file, as received (processed since: the receiver
    // wakes processing at once).
    let app = r.stop().await;
    let store = app.store().await;
    let rows = store.webhook_events(10).await.expect("list");
    store.close().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].body, ban, "the raw bytes, as received");
    assert_eq!(rows[0].field.as_deref(), Some("account_update"));
    assert_eq!(rows[0].receipt, "accepted");
    assert_eq!(rows[0].deliveries, 2);
    assert_eq!(rows[1].body, quality);
    assert_eq!(
        rows[1].field.as_deref(),
        Some("phone_number_quality_update")
    );

    // And a restarted daemon still has them and keeps deduplicating against them.
    let r = Receiver::start_app(app).await;
    assert_eq!(r.post(quality, Some(&sign(quality))).await.0, 200);
    assert_eq!(r.rows().await, 2);
    let text = r.metrics().await;
    assert_eq!(
        events(&text, "phone_number_quality_update", "duplicate"),
        1.0,
        "{text}"
    );
    r.stop().await;
}

/// Sends a request head (and `body` chunks, if any) on a raw connection and returns the
/// status code of the answer.
async fn raw_status(addr: std::net::SocketAddr, head: &str, chunks: &[&[u8]]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    for c in chunks {
        s.write_all(c).await.expect("chunk");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed without an answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer in time");
    let line = String::from_utf8_lossy(&got);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line}"))
}

#[tokio::test]
async fn a_body_over_3_mib_gets_413_and_one_of_exactly_3_mib_is_taken() {
    let r = Receiver::start().await;
    // Declared too large: refused on the head alone, before any of the body is sent.
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-hub-signature-256: {}\r\ncontent-length: {}\r\n\r\n",
        sign(b"x"),
        MAX + 1
    );
    assert_eq!(raw_status(r.webhooks, &head, &[]).await, 413);
    // Chunked, no length given: refused once it passes the cap.
    let big = vec![b' '; MAX];
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-hub-signature-256: {}\r\ntransfer-encoding: chunked\r\n\r\n",
        sign(b"x")
    );
    let first = format!("{:x}\r\n", big.len());
    let code = raw_status(
        r.webhooks,
        &head,
        &[first.as_bytes(), &big, b"\r\n1\r\n \r\n0\r\n\r\n"],
    )
    .await;
    assert_eq!(code, 413);
    assert_eq!(r.rows().await, 0);
    // Exactly at the cap, signed: taken (stored as malformed: it is not Meta's envelope).
    assert_eq!(r.post(&big, Some(&sign(&big))).await.0, 200);
    assert_eq!(r.rows().await, 1);
    let text = r.metrics().await;
    assert_eq!(events(&text, "unknown", "too_large"), 2.0, "{text}");
    assert_eq!(events(&text, "unknown", "malformed"), 1.0, "{text}");
    r.stop().await;
}

#[tokio::test]
async fn signed_bodies_that_are_not_meta_s_envelope_are_stored_and_counted_never_a_crash() {
    let r = Receiver::start().await;
    let unknown_field = ACCOUNT_UPDATE_BAN.replace("\"account_update\"", "\"brand_new_field\"");
    let bodies: [&[u8]; 4] = [
        b"not json at all \xff\xfe",
        b"{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"field\":7}]}]}",
        b"",
        unknown_field.as_bytes(),
    ];
    for body in bodies {
        let (code, text) = r.post(body, Some(&sign(body))).await;
        assert_eq!(code, 200, "{text}");
    }
    assert_eq!(r.rows().await, 4);
    let text = r.metrics().await;
    assert_eq!(events(&text, "unknown", "malformed"), 3.0, "{text}");
    assert_eq!(events(&text, "other", "unknown_field"), 1.0, "{text}");
    // The receiver still works.
    let ban = ACCOUNT_UPDATE_BAN.as_bytes();
    assert_eq!(r.post(ban, Some(&sign(ban))).await.0, 200);
    let app = r.stop().await;
    let store = app.store().await;
    let rows = store.webhook_events(10).await.expect("list");
    store.close().await;
    let receipts: Vec<_> = rows.iter().map(|r| r.receipt.as_str()).collect();
    assert_eq!(
        receipts,
        [
            "malformed",
            "malformed",
            "malformed",
            "unknown_field",
            "accepted"
        ]
    );
}
