//! Alert emails under attack (issue 11): whatever Meta puts into a name or a health text, the
//! email still reaches ops with every line inside SMTP's limit and no line of its own; and a
//! daemon killed in the middle of sends counts every attempt and gives up on a message whose
//! sends keep dying, instead of sending it again and again unseen. End to end: the simulated
//! Graph API, real polls into a real SQLite file, the real delivery worker, lettre, and the
//! loopback SMTP server of `smtp.rs` (which refuses lines over 1000 octets like real servers).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::helpers::on_store;
use crate::helpers::{TestApp, one_waba};
use crate::smtp::{ReceivedMail, SmtpSink};
use waba_monitor::metrics::Metrics;
use waba_monitor::notify::delivery::{Deliverer, DeliveryReport, MAX_INTERRUPTED_SENDS};
use waba_monitor::notify::mailer::Mailer;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::SimState;

const WABA1: &str = "200000000000001";
const P0: &str = "300000000000001";
/// RFC 5322 2.1.1: at most 998 characters per line, excluding the CRLF.
const MAX_LINE: usize = 998;
const WAIT: Duration = Duration::from_secs(10);

struct Mail {
    app: TestApp,
    smtp: SmtpSink,
}

#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    state: String,
    attempts: i64,
    last_error: Option<String>,
}

impl Mail {
    async fn start(state: SimState) -> Mail {
        let smtp = SmtpSink::start().await;
        let email = format!(
            "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"5s\"\nmax_age = \"24h\"\n",
            smtp.port()
        );
        let app = TestApp::spawn_with_extra(state, &format!("wabas = [\"{WABA1}\"]"), &email).await;
        Mail { app, smtp }
    }

    /// A delivery worker as a freshly started daemon builds it: new store, new mailer.
    async fn deliverer(&self, metrics: Arc<Metrics>) -> Deliverer {
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
        .with_metrics(metrics)
    }

    async fn deliver(&self) -> DeliveryReport {
        self.deliverer(Arc::new(Metrics::new()))
            .await
            .deliver_due(Utc::now())
            .await
            .expect("delivery pass")
    }

    async fn outbox(&self) -> Vec<OutboxRow> {
        let store = self.app.store().await;
        let rows: Vec<OutboxRow> = on_store!(store, |p| sqlx::query_as(
            "SELECT state, attempts, last_error FROM outbox ORDER BY id"
        )
        .fetch_all(p)
        .await)
        .expect("outbox");
        store.close().await;
        rows
    }

    /// Polls once healthy, applies `change` to the simulator, polls again: the second poll's
    /// alerts are queued. Returns how many there were.
    async fn alert_after(&self, change: impl FnOnce(&mut SimState)) -> usize {
        self.app.poll().await;
        self.app.sim.with_state(change);
        self.app.poll().await.alerts
    }
}

/// Every line of the message as it travelled, CRLF excluded, is within RFC 5322's 998.
fn assert_lines_within_limit(mail: &ReceivedMail) {
    for (n, line) in mail.data.split("\r\n").enumerate() {
        assert!(
            line.len() <= MAX_LINE,
            "line {n} is {} octets: {:.120}…",
            line.len(),
            line
        );
    }
}

/// No header and no line of the raw message or of its decoded body starts with `Bcc:`.
fn assert_no_bcc_line(mail: &ReceivedMail) {
    assert_eq!(mail.header("Bcc"), None, "{}", mail.data);
    let starts_bcc = |l: &str| l.trim_start().to_ascii_lowercase().starts_with("bcc:");
    for line in mail.data.split(['\r', '\n']) {
        assert!(!starts_bcc(line), "raw line {line:?} in\n{}", mail.data);
    }
    let body = mail.body();
    for line in body.split(['\r', '\n']) {
        assert!(!starts_bcc(line), "body line {line:?} in\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1000_character_name_without_spaces_is_delivered_with_every_line_within_998_octets() {
    let name = format!("{}Z", "N".repeat(999));
    let mut state = one_waba(2);
    state.phone_mut(P0).verified_name = name.clone();
    let m = Mail::start(state).await;
    let alerts = m
        .alert_after(|s| s.phone_mut(P0).quality_rating = Some("RED".into()))
        .await;
    assert_eq!(alerts, 1);
    let report = m.deliver().await;
    let rows = m.outbox().await;
    assert_eq!(report.sent, 1, "{report:?}: {rows:?}");
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:?}");
    let mails = m.smtp.messages();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_lines_within_limit(mail);
    let body = mail.body();
    assert!(body.contains(&name), "the name is not in the body:\n{body}");
    let subject = mail.header("Subject").expect("subject");
    assert!(
        subject.starts_with("[waba-monitor] CRITICAL ")
            && subject.contains("NNNNNNNNNN")
            && subject.ends_with("quality GREEN → RED"),
        "{subject}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_in_a_name_starts_no_header_and_no_line_of_its_own() {
    let name = "Evil Corp\r\nBcc: evil@example.com\r\n\r\nInjected\nBcc: second@example.com";
    let mut state = one_waba(2);
    state.phone_mut(P0).verified_name = name.to_owned();
    let m = Mail::start(state).await;
    let alerts = m
        .alert_after(|s| s.phone_mut(P0).quality_rating = Some("RED".into()))
        .await;
    assert_eq!(alerts, 1);
    assert_eq!(m.deliver().await.sent, 1, "{:?}", m.outbox().await);

    let mail = &m.smtp.messages()[0];
    assert_eq!(mail.rcpt_to, ["ops@example.com"]);
    assert_no_bcc_line(mail);
    assert_lines_within_limit(mail);
    let subject = mail.header("Subject").expect("subject");
    assert!(
        !subject.chars().any(char::is_control),
        "control characters in the subject: {subject:?}"
    );
    assert!(subject.contains("Evil Corp"), "{subject}");
    // The name is still there, on the line of its number.
    let body = mail.body();
    let line = body
        .lines()
        .find(|l| l.contains("Evil Corp"))
        .unwrap_or_else(|| panic!("no line names the number:\n{body}"));
    assert!(
        line.contains("evil@example.com") && line.contains("quality GREEN → RED"),
        "{line:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_health_texts_are_capped_counted_and_still_delivered_in_short_lines() {
    let huge = "E".repeat(5_000);
    let m = Mail::start(one_waba(2)).await;
    m.app.poll().await;
    let health = serde_json::json!({
        "can_send_message": "LIMITED",
        "entities": [{
            "entity_type": "PHONE_NUMBER",
            "id": P0,
            "can_send_message": "LIMITED",
            "errors": [{
                "error_code": 141010,
                "error_description": format!("desc{huge}"),
                "possible_solution": format!("fix\r\nBcc: evil@example.com {huge}")
            }],
            "additional_info": [format!("info{huge}")]
        }]
    });
    m.app.sim.with_state(|s| s.phone_mut(P0).health = health);
    let report = m.app.poll().await;
    assert_eq!(report.alerts, 1);
    assert!(
        report.sources[0].anomalies >= 3,
        "each truncated text is an anomaly: {:?}",
        report.sources[0]
    );
    assert_eq!(m.deliver().await.sent, 1, "{:?}", m.outbox().await);

    let mail = &m.smtp.messages()[0];
    assert_lines_within_limit(mail);
    assert_no_bcc_line(mail);
    let body = mail.body();
    assert!(body.contains("error 141010: descEEEE"), "{body}");
    assert!(
        body.contains("EEEE…"),
        "a truncated text ends with …: {body}"
    );
    // Capped at 1 KB each: three texts of 5 KB cannot make a 15 KB body.
    assert!(body.len() < 6_000, "body of {} bytes", body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_off_by_a_crash_is_counted_before_it_starts_and_given_up_after_the_limit() {
    let m = Mail::start(one_waba(2)).await;
    let alerts = m
        .alert_after(|s| s.phone_mut(P0).quality_rating = Some("RED".into()))
        .await;
    assert_eq!(alerts, 1);
    // The server takes the message and never answers; the daemon is killed meanwhile.
    m.smtp.stall_data(None);
    let limit = MAX_INTERRUPTED_SENDS;
    for round in 1..=limit {
        let d = m.deliverer(Arc::new(Metrics::new())).await;
        let send = tokio::spawn(async move { d.deliver_due(Utc::now()).await });
        m.smtp.wait_for_stalled(round as usize, WAIT).await;
        // kill -9 in the middle of DATA: nothing after this point reaches the database.
        send.abort();
        assert!(send.await.is_err_and(|e| e.is_cancelled()));
        let rows = m.outbox().await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, "pending", "round {round}");
        assert_eq!(
            rows[0].attempts, round,
            "round {round}: the attempt must be committed before the SMTP conversation starts"
        );
    }
    assert_eq!(m.smtp.attempts(), limit as usize);

    // The next start finds a message whose every send died with the daemon: it is given up,
    // counted and not sent again, even though the server would now accept it.
    m.smtp.stall_data(Some(0));
    let metrics = Arc::new(Metrics::new());
    let d = m.deliverer(Arc::clone(&metrics)).await;
    let report = d.deliver_due(Utc::now()).await.expect("pass");
    assert_eq!(
        report,
        DeliveryReport {
            abandoned: 1,
            ..DeliveryReport::default()
        }
    );
    assert_eq!(metrics.emails_abandoned.get(), 1);
    let later = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(
        d.deliver_due(later).await.expect("pass"),
        DeliveryReport::default()
    );
    assert_eq!(
        m.smtp.attempts(),
        limit as usize,
        "sent again after the limit"
    );
    assert!(m.smtp.messages().is_empty());
    let rows = m.outbox().await;
    assert_eq!(rows[0].state, "abandoned");
    assert_eq!(rows[0].attempts, limit);
    let reason = rows[0].last_error.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "the daemon stopped during {limit} sends of this message"
        )),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_interrupted_send_is_counted_and_the_message_then_goes_out() {
    let m = Mail::start(one_waba(2)).await;
    m.alert_after(|s| s.phone_mut(P0).status = Some("BANNED".into()))
        .await;
    m.smtp.stall_data(Some(1));
    let d = m.deliverer(Arc::new(Metrics::new())).await;
    let send = tokio::spawn(async move { d.deliver_due(Utc::now()).await });
    m.smtp.wait_for_stalled(1, WAIT).await;
    send.abort();
    let _ = send.await;

    let report = m.deliver().await;
    assert_eq!(report.sent, 1, "{report:?}: {:?}", m.outbox().await);
    let rows = m.outbox().await;
    assert_eq!((rows[0].state.as_str(), rows[0].attempts), ("sent", 2));
    assert_eq!(m.smtp.attempts(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_record_their_outcome_and_never_count_as_crashes() {
    let m = Mail::start(one_waba(2)).await;
    m.alert_after(|s| s.phone_mut(P0).status = Some("FLAGGED".into()))
        .await;
    let refusals = MAX_INTERRUPTED_SENDS as u32 + 2;
    m.smtp
        .reply_to_data(451, "4.3.0 try again later", Some(refusals));
    let mut now = Utc::now();
    let mut sent = 0;
    for _ in 0..=refusals {
        // A fresh worker each time, as after a restart; virtual time jumps past the backoff
        // (at most 10 min here, doubled by jitter at worst).
        let d = m.deliverer(Arc::new(Metrics::new())).await;
        sent += d.deliver_due(now).await.expect("pass").sent;
        now += chrono::Duration::minutes(21);
    }
    assert_eq!(sent, 1);
    let rows = m.outbox().await;
    assert_eq!(
        (rows[0].state.as_str(), rows[0].attempts),
        ("sent", i64::from(refusals) + 1)
    );
}
