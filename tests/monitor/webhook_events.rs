//! Stored webhook deliveries turned into facts, history and alerts by a running daemon: real
//! HMAC-signed POSTs over loopback in Meta's shapes, the real SQLite file, the real delivery
//! worker and a real SMTP server on loopback.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use crate::helpers::{TestApp, one_waba};
use crate::smtp::{ReceivedMail, SmtpSink};
use waba_monitor::daemon::{self, RunOptions};
use waba_monitor::model::{TargetKind, field};
use waba_monitor::retry::RetryPolicy;
use waba_monitor::store::HistoryFilter;
use waba_monitor::store::webhooks::NewWebhookEvent;

const APP_SECRET: &str = "app-secret-for-tests-0123456789abcdef";
const VERIFY_TOKEN: &str = "verify-token-for-tests-9876543210";
const PATH: &str = "/webhooks/meta";
const WABA1: &str = "200000000000001";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Meta's envelope around one change of WABA1 at `time`.
fn envelope(time: i64, field_name: &str, value: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA1}","time":{time},"changes":[{{"value":{value},"field":"{field_name}"}}]}}]}}"#
    )
}

/// `account_update` DISABLED_UPDATE, as Meta's webhook reference shows it.
fn ban(time: i64, state: &str, date: &str) -> String {
    envelope(
        time,
        "account_update",
        &format!(
            r#"{{"event":"DISABLED_UPDATE","ban_info":{{"waba_ban_state":"{state}","waba_ban_date":"{date}"}}}}"#
        ),
    )
}

/// `account_update` ACCOUNT_RESTRICTION, as Meta's webhook reference shows it.
fn restriction(time: i64, kind: &str, expiration: i64) -> String {
    envelope(
        time,
        "account_update",
        &format!(
            r#"{{"event":"ACCOUNT_RESTRICTION","restriction_info":[{{"restriction_type":"{kind}","expiration":{expiration}}}]}}"#
        ),
    )
}

/// A daemon with `[webhooks]` and `[email]` to a loopback SMTP server.
struct Hooks {
    app: TestApp,
    smtp: SmtpSink,
    webhooks: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl Hooks {
    async fn app(smtp: &SmtpSink) -> TestApp {
        let app = TestApp::spawn_with_extra(
            one_waba(1),
            &format!("wabas = [\"{WABA1}\"]"),
            &format!(
                "[webhooks]\nlisten = \"127.0.0.1:0\"\napp_secret_file = \"app-secret\"\nverify_token_file = \"verify-token\"\n\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"5s\"\nmax_age = \"1h\"\n",
                smtp.port()
            ),
        )
        .await;
        app.write_secret("app-secret", APP_SECRET);
        app.write_secret("verify-token", VERIFY_TOKEN);
        app
    }

    async fn start() -> Hooks {
        let smtp = SmtpSink::start().await;
        let app = Self::app(&smtp).await;
        Self::start_app(app, smtp).await
    }

    async fn start_app(app: TestApp, smtp: SmtpSink) -> Hooks {
        Self::start_app_with(app, smtp, Duration::from_millis(200)).await
    }

    /// `webhook_tick`: how often stored deliveries are looked for besides the receiver's wake-up.
    async fn start_app_with(app: TestApp, smtp: SmtpSink, webhook_tick: Duration) -> Hooks {
        let main = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let hooks = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let webhooks = hooks.local_addr().expect("addr");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (tx, mut cycles) = mpsc::unbounded_channel::<()>();
        let cfg = waba_monitor::config::Config::load_for_start(&app.config_path)
            .expect("config and secrets are valid");
        let handle = tokio::spawn(daemon::run_with_listeners(
            cfg,
            RunOptions {
                retry: RetryPolicy::fast(),
                delivery_tick: Duration::from_millis(200),
                webhook_tick,
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
        tokio::time::timeout(Duration::from_secs(15), cycles.recv())
            .await
            .expect("first cycle in time")
            .expect("daemon running");
        Hooks {
            app,
            smtp,
            webhooks,
            stop: Some(stop_tx),
            handle,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, body: &str) {
        let resp = self
            .http
            .post(format!("http://{}{PATH}", self.webhooks))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 200);
    }

    /// Emails whose body mentions `needle`.
    fn mails_about(&self, needle: &str) -> Vec<ReceivedMail> {
        self.smtp
            .messages()
            .into_iter()
            .filter(|m| m.body().contains(needle))
            .collect()
    }

    async fn history(&self, id: &str, field_name: &str) -> Vec<(Option<String>, Option<String>)> {
        let store = self.app.store().await;
        let rows = store
            .history(&HistoryFilter {
                id: Some(id.to_owned()),
                since: None,
                limit: Some(1000),
            })
            .await
            .expect("history");
        store.close().await;
        let mut out: Vec<_> = rows
            .into_iter()
            .filter(|h| h.field == field_name)
            .map(|h| (h.old, h.new))
            .collect();
        out.reverse();
        out
    }

    async fn fact(&self, kind: TargetKind, id: &str, field_name: &str) -> Option<String> {
        let store = self.app.store().await;
        let f = waba_monitor::store::facts::fact(store.pool(), kind, id, field_name)
            .await
            .expect("fact");
        store.close().await;
        f.map(|(v, _)| v)
    }

    /// Waits until no delivery is left unprocessed.
    async fn settled(&self) {
        let store = self.app.store().await;
        for _ in 0..100 {
            if store
                .unprocessed_webhook_events(1)
                .await
                .expect("list")
                .is_empty()
            {
                store.close().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("deliveries left unprocessed");
    }

    async fn stop(mut self) -> (TestApp, SmtpSink) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("clean exit");
        (self.app, self.smtp)
    }
}

#[tokio::test]
async fn a_ban_is_emailed_within_2_seconds_with_its_date_and_only_once() {
    let h = Hooks::start().await;
    let before = h.smtp.messages().len();
    let body = ban(1_739_321_024, "DISABLE", "2026-02-12");
    let t0 = std::time::Instant::now();
    h.post(&body).await;
    let mails = h.smtp.wait_for(before + 1, Duration::from_secs(2)).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    let mail = mails.last().expect("mail");
    let text = mail.body();
    assert!(text.contains("CRITICAL"), "{text}");
    assert!(text.contains("WABA ban"), "{text}");
    assert!(text.contains("ban date 2026-02-12"), "{text}");
    assert!(text.contains(WABA1), "{text}");

    // The same delivery again (Meta retries), and the same fact in a later delivery.
    h.post(&body).await;
    h.post(&ban(1_739_321_100, "DISABLE", "2026-02-12")).await;
    h.settled().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.mails_about("ban date").len(), 1);
    assert_eq!(
        h.history(WABA1, field::BAN_STATE).await,
        vec![(None, Some("DISABLE".to_owned()))]
    );
    h.stop().await;
}

#[tokio::test]
async fn an_older_event_after_a_newer_one_changes_nothing() {
    let h = Hooks::start().await;
    h.post(&ban(2_000_000_000, "DISABLE", "2033-05-18")).await;
    h.smtp.wait_for(1, Duration::from_secs(3)).await;
    // Delivered late: a reinstatement from before the ban.
    h.post(&ban(1_999_999_000, "REINSTATE", "2033-05-18")).await;
    h.settled().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        h.fact(TargetKind::Waba, WABA1, field::BAN_STATE).await,
        Some("DISABLE".to_owned())
    );
    assert_eq!(h.history(WABA1, field::BAN_STATE).await.len(), 1);
    assert!(h.mails_about("RESOLVED").is_empty());
    // A newer reinstatement resolves it.
    h.post(&ban(2_000_000_100, "REINSTATE", "2033-05-18")).await;
    let mails = h.smtp.wait_for(2, Duration::from_secs(3)).await;
    assert!(mails[1].body().contains("RESOLVED"), "{}", mails[1].body());
    h.stop().await;
}

#[tokio::test]
async fn a_restriction_warns_now_and_resolves_once_its_expiry_passes() {
    let h = Hooks::start().await;
    let now = chrono::Utc::now().timestamp();
    h.post(&restriction(
        now,
        "RESTRICTED_BIZ_INITIATED_MESSAGING",
        now + 3,
    ))
    .await;
    let mails = h.smtp.wait_for(1, Duration::from_secs(2)).await;
    let text = mails[0].body();
    assert!(text.contains("WARNING"), "{text}");
    assert!(
        text.contains("RESTRICTED_BIZ_INITIATED_MESSAGING until"),
        "{text}"
    );
    let mails = h.smtp.wait_for(2, Duration::from_secs(8)).await;
    let text = mails[1].body();
    assert!(text.contains("RESOLVED"), "{text}");
    assert!(text.contains("expired at"), "{text}");
    assert_eq!(
        h.history(WABA1, field::RESTRICTION).await,
        vec![
            (None, Some("RESTRICTED_BIZ_INITIATED_MESSAGING".to_owned())),
            (
                Some("RESTRICTED_BIZ_INITIATED_MESSAGING".to_owned()),
                Some("none".to_owned())
            ),
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn deliveries_stored_before_a_crash_are_processed_after_the_restart() {
    let smtp = SmtpSink::start().await;
    let app = Hooks::app(&smtp).await;
    // As the receiver commits them before its 200; then the process died.
    {
        let store = app.store().await;
        let body = ban(1_739_321_024, "SCHEDULE_FOR_DISABLE", "2026-03-01");
        store
            .insert_webhook_event(&NewWebhookEvent {
                received_at: chrono::Utc::now(),
                body: body.as_bytes(),
                field: Some("account_update"),
                receipt: "accepted",
            })
            .await
            .expect("insert");
        store.close().await;
    }
    let h = Hooks::start_app(app, smtp).await;
    let mails = h.smtp.wait_for(1, Duration::from_secs(3)).await;
    assert!(mails[0].body().contains("ban date 2026-03-01"));
    h.settled().await;
    assert_eq!(h.history(WABA1, field::BAN_STATE).await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn quality_security_and_account_alerts_in_one_delivery_make_one_digest() {
    let h = Hooks::start().await;
    let (phone, display) = {
        let store = h.app.store().await;
        let status = store.status().await.expect("status");
        store.close().await;
        let p = status
            .into_iter()
            .find(|e| e.kind == "phone_number")
            .expect("a number");
        (p.id, p.display_phone_number.expect("display number"))
    };
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[
            {{"id":"{WABA1}","time":1739321024,"changes":[
              {{"value":{{"display_phone_number":"{display}","event":"FLAGGED","current_limit":"TIER_1K"}},"field":"phone_number_quality_update"}},
              {{"value":{{"display_phone_number":"{display}","event":"PIN_CHANGED","requester":"1234567890"}},"field":"security"}},
              {{"value":{{"event":"APPROVED","message_template_id":1,"message_template_name":"t","message_template_language":"en_US","reason":"NONE"}},"field":"message_template_status_update"}},
              {{"value":{{"anything":true}},"field":"a_field_meta_adds_later"}}]}},
            {{"id":"{WABA1}","time":1739321025,"changes":[
              {{"value":{{"entity_type":"WABA","entity_id":"{WABA1}","alert_severity":"WARNING","alert_status":"ACTIVE","alert_type":"INCREASED_CAPACITY_DENIED","alert_description":"Capacity increase denied"}},"field":"account_alerts"}}]}}]}}"#
    );
    h.post(&body).await;
    let mails = h.smtp.wait_for(1, Duration::from_secs(2)).await;
    let text = mails[0].body();
    for want in [
        "quality event",
        "FLAGGED",
        "PIN_CHANGED",
        "INCREASED_CAPACITY_DENIED",
        "Capacity increase denied",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert_eq!(
        h.fact(TargetKind::PhoneNumber, &phone, field::SECURITY)
            .await,
        Some("PIN_CHANGED".to_owned())
    );
    let store = h.app.store().await;
    let rows = store.unprocessed_webhook_events(10).await.expect("list");
    assert!(rows.is_empty());
    store.close().await;
    h.stop().await;
}

#[tokio::test]
async fn a_delivery_is_processed_at_once_and_its_waba_re_polled() {
    // No periodic look for deliveries within the test: only the receiver's wake-up can
    // process it; the schedule (every 5 minutes) brings no cycle either.
    let smtp = SmtpSink::start().await;
    let app = Hooks::app(&smtp).await;
    let h = Hooks::start_app_with(app, smtp, Duration::from_secs(600)).await;
    let requests = h.app.sim.http_requests();
    let t0 = std::time::Instant::now();
    h.post(&ban(1_739_321_024, "DISABLE", "2026-02-12")).await;
    h.smtp.wait_for(1, Duration::from_secs(2)).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The WABA is read again at once to confirm (a cycle through the quota governor).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.app.sim.http_requests() == requests {
        assert!(
            std::time::Instant::now() < deadline,
            "the WABA was not re-polled after the event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn offboarding_partner_removal_and_a_lowered_business_limit_are_alerted_with_their_details() {
    let h = Hooks::start().await;
    h.post(&envelope(
        1_800_000_000,
        "account_update",
        r#"{"event":"PARTNER_REMOVED","disconnection_info":{"reason":"PRIMARY_INACTIVITY","initiated_by":"SYSTEM"}}"#,
    ))
    .await;
    let mails = h.smtp.wait_for(1, Duration::from_secs(3)).await;
    let text = mails[0].body();
    assert!(text.contains("CRITICAL"), "{text}");
    assert!(
        text.contains("reason PRIMARY_INACTIVITY, initiated by SYSTEM"),
        "{text}"
    );

    h.post(&envelope(
        1_800_000_010,
        "account_update",
        r#"{"event":"ACCOUNT_OFFBOARDED"}"#,
    ))
    .await;
    let mails = h.smtp.wait_for(2, Duration::from_secs(3)).await;
    let text = mails[1].body();
    assert!(text.contains("CRITICAL"), "{text}");
    assert!(text.contains("ACCOUNT_OFFBOARDED"), "{text}");
    assert!(text.contains("offboarded or deleted"), "{text}");

    // The business limit: first sighting recorded quietly, then lowered (number after TIER_*).
    h.post(&envelope(
        1_800_000_020,
        "business_capability_update",
        r#"{"max_daily_conversations_per_business":"TIER_10K","max_phone_numbers_per_waba":25}"#,
    ))
    .await;
    h.settled().await;
    h.post(&envelope(
        1_800_000_030,
        "business_capability_update",
        r#"{"max_daily_conversations_per_business":2000,"max_phone_numbers_per_waba":25}"#,
    ))
    .await;
    let mails = h.smtp.wait_for(3, Duration::from_secs(3)).await;
    let text = mails[2].body();
    assert!(text.contains("WARNING"), "{text}");
    assert!(
        text.contains("business messaging limit TIER_10K → 2000"),
        "{text}"
    );
    assert_eq!(
        h.history(WABA1, field::BUSINESS_CAPABILITY).await,
        vec![
            (None, Some("TIER_10K".to_owned())),
            (Some("TIER_10K".to_owned()), Some("2000".to_owned())),
        ]
    );

    h.post(&envelope(
        1_800_000_040,
        "account_update",
        r#"{"event":"ACCOUNT_RECONNECTED"}"#,
    ))
    .await;
    let mails = h.smtp.wait_for(4, Duration::from_secs(3)).await;
    let text = mails[3].body();
    assert!(text.contains("RESOLVED"), "{text}");
    assert!(text.contains("ACCOUNT_RECONNECTED"), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn a_template_paused_by_webhook_is_emailed_at_once_and_an_older_event_changes_nothing() {
    const T1: &str = "800000000000001";
    let smtp = SmtpSink::start().await;
    let app = Hooks::app(&smtp).await;
    app.sim.with_state(|s| s.add_templates(WABA1, 2));
    let h = Hooks::start_app(app, smtp).await;
    assert_eq!(
        h.history(T1, "status").await,
        vec![(None, Some("APPROVED".to_owned()))],
        "the first cycle read the templates"
    );
    // Meta pauses it (its API says so too, for the confirming poll).
    h.app
        .sim
        .with_state(|s| s.template_mut(T1).status = "PAUSED".into());
    let now = chrono::Utc::now().timestamp();
    let template = r#""message_template_id":800000000000001,"message_template_name":"template_0","message_template_language":"en_US""#;
    let before = h.smtp.messages().len();
    let t0 = std::time::Instant::now();
    h.post(&envelope(
        now,
        "message_template_status_update",
        &format!(
            r#"{{"event":"PAUSED",{template},"reason":null,"other_info":{{"title":"FIRST_PAUSE","description":"Paused for 3 hours due to low quality"}}}}"#
        ),
    ))
    .await;
    let mails = h.smtp.wait_for(before + 1, Duration::from_secs(2)).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    let text = mails[before].body();
    assert!(
        text.contains("template template_0 (en_US): status APPROVED → PAUSED"),
        "{text}"
    );
    assert!(text.contains("first pause"), "{text}");
    assert!(
        text.contains("Paused for 3 hours due to low quality"),
        "{text}"
    );

    // Delivered late: an approval from before the pause.
    h.post(&envelope(
        now - 600,
        "message_template_status_update",
        &format!(r#"{{"event":"APPROVED",{template},"reason":null}}"#),
    ))
    .await;
    // And the quality drop, newer.
    h.app
        .sim
        .with_state(|s| s.template_mut(T1).quality = Some("RED".into()));
    h.post(&envelope(
        now + 1,
        "message_template_quality_update",
        &format!(r#"{{"previous_quality_score":"GREEN","new_quality_score":"RED",{template}}}"#),
    ))
    .await;
    let mails = h.smtp.wait_for(before + 2, Duration::from_secs(3)).await;
    let text = mails[before + 1].body();
    assert!(text.contains("CRITICAL"), "{text}");
    assert!(text.contains("quality GREEN → RED"), "{text}");
    h.settled().await;
    assert_eq!(
        h.history(T1, "status").await,
        vec![
            (None, Some("APPROVED".to_owned())),
            (Some("APPROVED".to_owned()), Some("PAUSED".to_owned())),
        ],
        "the late approval moved nothing back"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_confirming_poll_overrules_a_template_webhook_meta_s_api_does_not_bear_out() {
    const T1: &str = "800000000000001";
    let smtp = SmtpSink::start().await;
    let app = Hooks::app(&smtp).await;
    app.sim.with_state(|s| s.add_templates(WABA1, 1));
    let h = Hooks::start_app(app, smtp).await;
    // A pause is pushed, but Meta's API (the simulator) still says APPROVED: the poll the
    // webhook triggers reads it, and the template is APPROVED again (its alert resolved).
    h.post(&envelope(
        chrono::Utc::now().timestamp(),
        "message_template_status_update",
        r#"{"event":"PAUSED","message_template_id":800000000000001,"message_template_name":"template_0","message_template_language":"en_US","reason":null}"#,
    ))
    .await;
    let mails = h.smtp.wait_for(2, Duration::from_secs(5)).await;
    assert!(
        mails[0].body().contains("APPROVED → PAUSED"),
        "{}",
        mails[0].body()
    );
    assert!(mails[1].body().contains("RESOLVED"), "{}", mails[1].body());
    assert_eq!(
        h.history(T1, "status").await,
        vec![
            (None, Some("APPROVED".to_owned())),
            (Some("APPROVED".to_owned()), Some("PAUSED".to_owned())),
            (Some("PAUSED".to_owned()), Some("APPROVED".to_owned())),
        ]
    );
    h.stop().await;
}
