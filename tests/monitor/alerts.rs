//! Alerts by email, end to end: transitions found by real polls of the simulator, queued in
//! SQLite, delivered by the real delivery worker through lettre to a real SMTP server on
//! loopback.

use std::time::Duration;

use chrono::Utc;

use crate::helpers::on_store;
use crate::helpers::{TestApp, one_waba};
use crate::smtp::SmtpSink;
use waba_monitor::notify::delivery::{Deliverer, DeliveryReport};
use waba_monitor::notify::mailer::Mailer;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, SimState};

const WABA1: &str = "200000000000001";
const P0: &str = "300000000000001";
const P1: &str = "300000000000002";
const P2: &str = "300000000000003";
const PASSWORD: &str = "smtp-pass-Xq7-not-in-logs";

fn email_toml(port: u16, to: &[&str], alerts: &str) -> String {
    format!(
        "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = {to:?}\ntimeout = \"5s\"\nmax_age = \"1h\"\n\n[alerts]\n{alerts}\n"
    )
}

struct Mail {
    app: TestApp,
    smtp: SmtpSink,
}

impl Mail {
    async fn start(state: SimState, to: &[&str], alerts: &str) -> Mail {
        let smtp = SmtpSink::start().await;
        let app = TestApp::spawn_with_extra(
            state,
            &format!("wabas = [\"{WABA1}\"]"),
            &email_toml(smtp.port(), to, alerts),
        )
        .await;
        Mail { app, smtp }
    }

    async fn deliverer(&self) -> Deliverer {
        let cfg = self.app.config();
        let email = cfg.email.expect("email configured");
        Deliverer::new(
            self.app.store().await,
            Mailer::new(&email).expect("mailer"),
            &email,
            RetryPolicy {
                min_delay: Duration::from_secs(30),
                max_delay: Duration::from_secs(600),
                max_times: usize::MAX,
            },
        )
    }

    async fn deliver(&self) -> DeliveryReport {
        self.deliverer()
            .await
            .deliver_due(Utc::now())
            .await
            .expect("delivery pass")
    }

    async fn outbox(&self) -> Vec<(String, String, i64)> {
        let store = self.app.store().await;
        let rows: Vec<(String, String, i64)> = on_store!(store, |p| sqlx::query_as(
            "SELECT recipient, state, attempts FROM outbox ORDER BY id"
        )
        .fetch_all(p)
        .await)
        .expect("outbox");
        store.close().await;
        rows
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_turning_red_is_emailed_once_with_its_details() {
    let m = Mail::start(one_waba(3), &["ops@example.com"], "").await;
    let first = m.app.poll().await;
    assert_eq!(
        first.alerts, 0,
        "a healthy fleet seen for the first time alerts on nothing"
    );

    m.app
        .sim
        .with_state(|s| s.phone_mut(P1).quality_rating = Some("RED".into()));
    let report = m.app.poll().await;
    assert_eq!(report.alerts, 1);
    assert_eq!(m.deliver().await.sent, 1);
    let mails = m.smtp.messages();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.rcpt_to, vec!["ops@example.com".to_owned()]);
    let subject = mail.header("Subject").expect("subject");
    assert!(
        subject.starts_with("[waba-monitor] CRITICAL +1 ")
            && subject.ends_with("quality GREEN → RED"),
        "{subject}"
    );
    let mid = mail.header("Message-ID").expect("message id");
    assert!(
        mid.starts_with("<alerts-") && mid.ends_with("@example.com>"),
        "{mid}"
    );
    assert_eq!(
        mail.header("References").as_deref(),
        Some(format!("<target-{P1}@example.com>").as_str())
    );
    let body = mail.body();
    assert!(body.contains(&format!("phone number id: {P1}")), "{body}");
    assert!(
        body.contains(&format!("WABA: Fleet WABA 1 ({WABA1})")),
        "{body}"
    );
    assert!(body.contains("detected at: "), "{body}");
    assert!(body.contains("what to do:"), "{body}");

    // Nothing new: no second email.
    m.app.poll().await;
    assert_eq!(m.deliver().await, DeliveryReport::default());
    assert_eq!(m.smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_transitions_in_one_cycle_make_one_digest_per_recipient() {
    let m = Mail::start(one_waba(3), &["ops@example.com", "noc@example.com"], "").await;
    m.app.poll().await;
    m.app.sim.with_state(|s| {
        s.phone_mut(P0).quality_rating = Some("RED".into());
        s.phone_mut(P1).quality_rating = Some("RED".into());
        s.phone_mut(P2).status = Some("BANNED".into());
    });
    let report = m.app.poll().await;
    assert_eq!(report.alerts, 3);
    assert_eq!(m.deliver().await.sent, 2);
    let mails = m.smtp.messages();
    assert_eq!(mails.len(), 2);
    for mail in &mails {
        assert_eq!(
            mail.header("Subject").as_deref(),
            Some("[waba-monitor] CRITICAL: 2 numbers RED, 1 BANNED")
        );
        assert_eq!(
            mail.body().matches("CRITICAL  ").count(),
            3,
            "{}",
            mail.body()
        );
    }
    assert_ne!(mails[0].header("Message-ID"), mails[1].header("Message-ID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_with_451_for_a_while_gets_each_alert_delivered_once() {
    let m = Mail::start(one_waba(2), &["ops@example.com"], "").await;
    m.app.poll().await;
    m.app
        .sim
        .with_state(|s| s.phone_mut(P0).status = Some("FLAGGED".into()));
    m.app.poll().await;
    m.smtp.reply_to_data(451, "4.3.0 try again later", Some(3));
    let d = m.deliverer().await;
    let mut now = Utc::now();
    let mut sent = 0;
    for _ in 0..10 {
        sent += d.deliver_due(now).await.expect("pass").sent;
        // Virtual time: jump past any backoff instead of sleeping.
        now += chrono::Duration::minutes(11);
    }
    assert_eq!(sent, 1);
    assert_eq!(m.smtp.messages().len(), 1);
    assert_eq!(m.smtp.attempts(), 4, "three refusals, then accepted");
    assert_eq!(
        m.outbox().await,
        vec![("ops@example.com".to_owned(), "sent".to_owned(), 4)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_554_refusal_is_marked_failed_and_not_retried() {
    let m = Mail::start(one_waba(2), &["ops@example.com"], "").await;
    m.app.poll().await;
    m.app
        .sim
        .with_state(|s| s.phone_mut(P0).status = Some("BANNED".into()));
    m.app.poll().await;
    m.smtp.reply_to_data(554, "5.7.1 rejected by policy", None);
    let d = m.deliverer().await;
    assert_eq!(d.deliver_due(Utc::now()).await.expect("pass").failed, 1);
    let later = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(
        d.deliver_due(later).await.expect("pass"),
        DeliveryReport::default()
    );
    assert_eq!(m.smtp.attempts(), 1);
    assert_eq!(m.outbox().await[0].1, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_keeps_the_mail_queued_until_max_age_then_abandons_it() {
    let smtp = SmtpSink::start().await;
    let port = smtp.port();
    smtp.stop().await;
    let app = TestApp::spawn_with_extra(
        one_waba(1),
        &format!("wabas = [\"{WABA1}\"]"),
        &email_toml(port, &["ops@example.com"], ""),
    )
    .await;
    app.poll().await;
    app.sim
        .with_state(|s| s.phone_mut(P0).quality_rating = Some("RED".into()));
    app.poll().await;
    let cfg = app.config();
    let email = cfg.email.expect("email");
    let d = Deliverer::new(
        app.store().await,
        Mailer::new(&email).expect("mailer"),
        &email,
        RetryPolicy::fast(),
    );
    let r = d.deliver_due(Utc::now()).await.expect("pass");
    assert_eq!(r.retrying, 1, "connection refused is transient");
    let r = d
        .deliver_due(Utc::now() + chrono::Duration::minutes(61))
        .await
        .expect("pass");
    assert_eq!(r.abandoned, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_acceptance_and_marking_sent_resends_with_the_same_message_id() {
    let m = Mail::start(one_waba(2), &["ops@example.com"], "").await;
    m.app.poll().await;
    m.app
        .sim
        .with_state(|s| s.phone_mut(P0).quality_rating = Some("YELLOW".into()));
    m.app.poll().await;
    assert_eq!(m.deliver().await.sent, 1);
    // The process died after the server's 250 and before the row was marked: on restart the
    // row is still pending.
    let store = m.app.store().await;
    on_store!(store, |p| sqlx::query(
        "UPDATE outbox SET state = 'pending', sent_at = NULL"
    )
    .execute(p)
    .await
    .map(|_| ()))
    .expect("simulate the crash");
    store.close().await;
    assert_eq!(m.deliver().await.sent, 1);
    let mails = m.smtp.messages();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].header("Message-ID"), mails[1].header("Message-ID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_unchanged_state_sends_nothing_and_a_change_made_while_down_alerts_once() {
    let m = Mail::start(one_waba(2), &["ops@example.com"], "").await;
    m.app.poll().await;
    m.app
        .sim
        .with_state(|s| s.phone_mut(P0).status = Some("RESTRICTED".into()));
    // Each poll builds a fresh poller on a reopened database, as after a restart.
    assert_eq!(m.app.poll().await.alerts, 1);
    assert_eq!(m.app.poll().await.alerts, 0);
    assert_eq!(m.app.poll().await.alerts, 0);
    assert_eq!(m.deliver().await.sent, 1);
    assert_eq!(m.smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_first_seen_in_a_bad_state_alerts_once() {
    let mut state = one_waba(2);
    state.phone_mut(P1).status = Some("BANNED".into());
    let m = Mail::start(state, &["ops@example.com"], "").await;
    assert_eq!(m.app.poll().await.alerts, 1);
    assert_eq!(m.app.poll().await.alerts, 0);
    m.deliver().await;
    let mail = &m.smtp.messages()[0];
    let subject = mail.header("Subject").expect("subject");
    assert!(subject.ends_with("status BANNED (first seen)"), "{subject}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_sends_a_resolved_notice_and_red_to_yellow_is_improving() {
    let m = Mail::start(one_waba(1), &["ops@example.com"], "").await;
    m.app.poll().await;
    for q in ["RED", "YELLOW", "GREEN"] {
        m.app
            .sim
            .with_state(|s| s.phone_mut(P0).quality_rating = Some(q.into()));
        m.app.poll().await;
        m.deliver().await;
    }
    let subjects: Vec<String> = m
        .smtp
        .messages()
        .iter()
        .filter_map(|mail| mail.header("Subject"))
        .collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert!(subjects[0].contains("CRITICAL") && subjects[0].ends_with("GREEN → RED"));
    assert!(subjects[1].contains("IMPROVING") && subjects[1].ends_with("RED → YELLOW"));
    assert!(subjects[2].contains("RESOLVED") && subjects[2].ends_with("YELLOW → GREEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_after_no_alert_sends_nothing_and_resolved_can_be_turned_off() {
    let m = Mail::start(one_waba(1), &["ops@example.com"], "resolved = false").await;
    m.app.poll().await;
    m.app
        .sim
        .with_state(|s| s.phone_mut(P0).quality_rating = Some("RED".into()));
    assert_eq!(m.app.poll().await.alerts, 1);
    m.app
        .sim
        .with_state(|s| s.phone_mut(P0).quality_rating = Some("GREEN".into()));
    assert_eq!(m.app.poll().await.alerts, 0, "resolved notices are off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_follows_after_repeat_interval_while_still_bad() {
    let m = Mail::start(
        one_waba(1),
        &["ops@example.com"],
        "repeat_interval = \"24h\"",
    )
    .await;
    m.app.poll().await;
    m.app
        .sim
        .with_state(|s| s.phone_mut(P0).quality_rating = Some("RED".into()));
    m.app.poll().await;
    m.deliver().await;
    let store = m.app.store().await;
    // Virtual time: 23 h later nothing is due, 25 h later a reminder is.
    let soon = Utc::now() + chrono::Duration::hours(23);
    assert_eq!(
        waba_monitor::store::alerts::queue_reminders(&store, Duration::from_secs(86_400), soon)
            .await
            .expect("reminders"),
        0
    );
    let later = Utc::now() + chrono::Duration::hours(25);
    assert_eq!(
        waba_monitor::store::alerts::queue_reminders(&store, Duration::from_secs(86_400), later)
            .await
            .expect("reminders"),
        1
    );
    let cfg = m.app.config();
    waba_monitor::notify::digest(
        &store,
        &waba_monitor::notify::Routing::from_config(&cfg),
        later,
    )
    .await
    .expect("digest");
    store.close().await;
    m.deliverer().await.deliver_due(later).await.expect("pass");
    let mails = m.smtp.messages();
    assert_eq!(mails.len(), 2);
    let subject = mails[1].header("Subject").expect("subject");
    assert!(
        subject.contains("REMINDER CRITICAL") && subject.ends_with("quality still RED"),
        "{subject}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_poll_never_alerts_about_a_number() {
    let m = Mail::start(one_waba(2), &["ops@example.com"], "blind_after = 5").await;
    m.app.poll().await;
    m.app.sim.with_state(|s| {
        s.phone_mut(P0).quality_rating = Some("RED".into());
        s.add_fault(Fault::always(
            FaultTarget::object(WABA1),
            FaultKind::HtmlError(502),
        ));
    });
    assert_eq!(m.app.poll().await.alerts, 0);
    assert!(m.outbox().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_makes_monitoring_blind_at_once_and_recovery_is_announced() {
    let m = Mail::start(one_waba(1), &["ops@example.com"], "").await;
    m.app.poll().await;
    m.app.sim.with_state(|s| {
        s.add_fault(Fault::always(FaultTarget::Any, FaultKind::token_expired()));
    });
    assert_eq!(m.app.poll().await.alerts, 1);
    assert_eq!(m.app.poll().await.alerts, 0, "blind is announced once");
    m.app.sim.with_state(|s| s.faults.clear());
    assert_eq!(m.app.poll().await.alerts, 1);
    m.deliver().await;
    let subjects: Vec<String> = m
        .smtp
        .messages()
        .iter()
        .filter_map(|mail| mail.header("Subject"))
        .collect();
    assert_eq!(
        subjects,
        vec![
            "[waba-monitor] CRITICAL source main monitoring blind".to_owned(),
            "[waba-monitor] RESOLVED source main monitoring restored".to_owned()
        ]
    );
    let body = m.smtp.messages()[0].body();
    assert!(
        body.contains("access token was rejected (Graph error 190)"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_blind_after_cycles_alerts_once() {
    let m = Mail::start(one_waba(1), &["ops@example.com"], "blind_after = 2").await;
    m.app.poll().await;
    m.app.sim.with_state(|s| {
        s.add_fault(Fault::always(FaultTarget::Any, FaultKind::HtmlError(502)));
    });
    assert_eq!(
        m.app.poll().await.alerts,
        0,
        "one failed cycle is not yet blind"
    );
    assert_eq!(m.app.poll().await.alerts, 1);
    assert_eq!(m.app.poll().await.alerts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_email_reports_success_and_smtp_errors_without_the_password() {
    let smtp = SmtpSink::start().await;
    smtp.require_auth(true);
    let app = TestApp::spawn_with_extra(
        one_waba(1),
        &format!("wabas = [\"{WABA1}\"]"),
        &format!(
            "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nusername = \"monitor@example.com\"\npassword_env = \"WABA_MONITOR_TEST_SMTP_PASSWORD\"\nfrom = \"monitor@example.com\"\nto = [\"ops@example.com\"]\n",
            smtp.port()
        ),
    )
    .await;
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
            .arg("--config")
            .arg(&app.config_path)
            .arg("test-email")
            .env("WABA_MONITOR_TEST_SMTP_PASSWORD", PASSWORD)
            .env("RUST_LOG", "trace")
            .output()
            .expect("runs")
    };
    let ok = run();
    let out =
        String::from_utf8_lossy(&ok.stdout).to_string() + &String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("the server accepted it"), "{out}");
    assert!(!out.contains(PASSWORD));
    let mail = &smtp.messages()[0];
    let subject = mail.header("Subject").expect("subject");
    // A test must not trip filters that page on CRITICAL.
    assert!(subject.starts_with("[waba-monitor] TEST"), "{subject}");
    assert!(!subject.contains("CRITICAL"), "{subject}");

    smtp.reply_to_data(554, "5.7.1 relaying denied", None);
    let refused = run();
    let out = String::from_utf8_lossy(&refused.stdout).to_string()
        + &String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(
        out.contains("refused it for good") && out.contains("relaying denied"),
        "{out}"
    );
    assert!(!out.contains(PASSWORD), "password leaked: {out}");
}
