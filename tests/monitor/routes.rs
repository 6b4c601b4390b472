//! Routing, silences and escalation, end to end: real polls of the simulator, the real store,
//! the routed digests delivered by the real delivery worker to a real SMTP server on loopback,
//! the real binary for the CLI.

use chrono::Utc;

use crate::helpers::TestApp;
use crate::helpers::on_store;
use crate::smtp::{ReceivedMail, SmtpSink};
use waba_monitor::notify::Routing;
use waba_monitor::notify::delivery::Deliverer;
use waba_monitor::notify::mailer::Mailer;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::SimState;

const W1: &str = "200000000000001";
const W2: &str = "200000000000002";
const W3: &str = "200000000000003";
/// The one number of each WABA (`SimState::fleet(3, 1)`).
const P1: &str = "300000000000001";
const P2: &str = "300000000000002";
const P3: &str = "300000000000003";

fn email_toml(port: u16, to: &str, rest: &str) -> String {
    format!(
        "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = {to}\ntimeout = \"5s\"\nmax_age = \"1h\"\n\n{rest}"
    )
}

const ROUTES: &str = "[[route]]\nname = \"acme\"\nwabas = [\"200000000000001\"]\nemail_to = [\"acme-ops@example.test\"]\n\n\
[[route]]\nname = \"beta\"\nwabas = [\"200000000000002\"]\nemail_to = [\"beta@example.test\"]\ncontinue = true\n\n\
[[route]]\nname = \"noc\"\nwabas = [\"200000000000002\"]\nemail_to = [\"noc@example.test\"]\n";

struct Routed {
    app: TestApp,
    smtp: SmtpSink,
}

impl Routed {
    async fn start(rest: &str) -> Routed {
        let smtp = SmtpSink::start().await;
        let app = TestApp::spawn_with_extra(
            SimState::fleet(3, 1),
            &format!("wabas = [\"{W1}\", \"{W2}\", \"{W3}\"]"),
            &email_toml(smtp.port(), "[\"ops@example.test\"]", rest),
        )
        .await;
        Routed { app, smtp }
    }

    fn red(&self, numbers: &[&str]) {
        self.app.sim.with_state(|s| {
            for n in numbers {
                s.phone_mut(n).quality_rating = Some("RED".into());
            }
        });
    }

    fn green(&self, numbers: &[&str]) {
        self.app.sim.with_state(|s| {
            for n in numbers {
                s.phone_mut(n).quality_rating = Some("GREEN".into());
            }
        });
    }

    /// Delivers what is due; the mails received since `before`.
    async fn deliver(&self, before: usize) -> Vec<ReceivedMail> {
        self.deliver_at(before, Utc::now()).await
    }

    /// Delivers what is due at `at`.
    async fn deliver_at(&self, before: usize, at: chrono::DateTime<Utc>) -> Vec<ReceivedMail> {
        let cfg = self.app.config();
        let email = cfg.email.expect("email configured");
        Deliverer::new(
            self.app.store().await,
            Mailer::new(&email).expect("mailer"),
            &email,
            RetryPolicy::fast(),
        )
        .deliver_due(at)
        .await
        .expect("delivery pass");
        self.smtp.messages().into_iter().skip(before).collect()
    }
}

/// The mail to `rcpt` among `mails`, if one.
fn to<'a>(mails: &'a [ReceivedMail], rcpt: &str) -> Vec<&'a ReceivedMail> {
    mails
        .iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r == rcpt))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_split_one_cycle_by_waba_continue_sends_to_both_and_the_rest_goes_to_the_default() {
    let r = Routed::start(ROUTES).await;
    r.app.poll().await;
    r.red(&[P1, P2, P3]);
    assert_eq!(r.app.poll().await.alerts, 3);
    let mails = r.deliver(0).await;
    let body_of = |rcpt: &str| {
        let m = to(&mails, rcpt);
        assert_eq!(m.len(), 1, "one digest for {rcpt}: {mails:?}");
        m[0].body()
    };
    let acme = body_of("acme-ops@example.test");
    assert!(
        acme.contains(P1) && !acme.contains(P2) && !acme.contains(P3),
        "{acme}"
    );
    let beta = body_of("beta@example.test");
    assert!(beta.contains(P2) && !beta.contains(P1), "{beta}");
    let noc = body_of("noc@example.test");
    assert!(
        noc.contains(P2) && !noc.contains(P1),
        "continue = true: {noc}"
    );
    let ops = body_of("ops@example.test");
    assert!(
        ops.contains(P3) && !ops.contains(P1) && !ops.contains(P2),
        "the default list gets what no route takes: {ops}"
    );
    assert_eq!(mails.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_stops_mail_for_its_waba_only_survives_a_restart_and_its_end_sends_one_still_bad_email()
 {
    let r = Routed::start("").await;
    r.app.poll().await;
    let out = r.app.cli(&[
        "silence",
        "add",
        "--waba",
        W1,
        "--for",
        "2h",
        "--comment",
        "planned migration",
        "--author",
        "alice",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(id.parse::<i64>().is_ok(), "prints the id: {id}");

    // W1 and W2 turn RED: only W2's is sent; W1's is recorded (history, open alert).
    r.red(&[P1, P2]);
    let poller = r.app.poller().await;
    let report = poller.poll_once().await;
    poller.store().close().await;
    assert_eq!(report.alerts, 1, "the silenced one is not counted as sent");
    let metrics = poller.metrics().encode();
    for line in [
        "waba_monitor_alerts_total{severity=\"critical\",silenced=\"true\"} 1",
        "waba_monitor_alerts_total{severity=\"critical\",silenced=\"false\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let mails = r.deliver(0).await;
    assert_eq!(mails.len(), 1);
    let body = mails[0].body();
    assert!(body.contains(P2) && !body.contains(P1), "{body}");
    let store = r.app.store().await;
    let (silenced,): (i64,) = on_store!(store, |p| sqlx::query_as(
        "SELECT COUNT(*) FROM alerts WHERE silenced = 1 AND target_id = $1"
    )
    .bind(P1)
    .fetch_one(p)
    .await)
    .expect("count");
    store.close().await;
    assert_eq!(silenced, 1, "recorded as silenced");

    // A restart (every poll builds a fresh poller on the same database): still silenced, and
    // listed with who, when and why.
    r.app.poll().await;
    let out = r.app.cli(&["silence", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let s = &list[0];
    assert_eq!(s["author"], "alice");
    assert_eq!(s["comment"], "planned migration");
    assert_eq!(s["state"], "active");
    assert_eq!(s["matchers"]["wabas"][0], W1);

    // It ends with P1 still RED: one email says so; P2 (never silenced) gets nothing more.
    let out = r.app.cli(&["silence", "expire", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    r.app.poll().await;
    let mails = r.deliver(1).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let body = mails[0].body();
    assert!(body.contains(P1) && !body.contains(P2), "{body}");
    assert!(body.contains("still RED"), "{body}");
    r.app.poll().await;
    assert!(r.deliver(2).await.is_empty(), "once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_recovers_during_its_silence_sends_nothing_when_it_ends() {
    let r = Routed::start("").await;
    r.app.poll().await;
    let store = r.app.store().await;
    let now = Utc::now();
    let id = store
        .add_silence(
            &waba_monitor::store::silences::Matchers {
                numbers: vec![P3.to_owned()],
                ..Default::default()
            },
            now,
            now + chrono::Duration::hours(1),
            "test",
            "bob",
            now,
        )
        .await
        .expect("silence");
    r.red(&[P3]);
    r.app.poll().await;
    r.green(&[P3]);
    r.app.poll().await;
    assert!(
        store
            .expire_silence(id, "bob", Utc::now())
            .await
            .expect("expire")
    );
    store.close().await;
    r.app.poll().await;
    assert!(
        r.deliver(0).await.is_empty(),
        "nothing: it recovered while silenced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_alert_left_open_escalates_once_to_the_escalation_list() {
    let r = Routed::start(
        "[alerts]\nescalate_after = \"4h\"\nescalate_to = [\"oncall@example.test\"]\n",
    )
    .await;
    r.app.poll().await;
    r.red(&[P1]);
    r.app.poll().await;
    assert_eq!(r.deliver(0).await.len(), 1, "the critical alert itself");

    // Four hours and a minute later (the clock given to the store, not slept).
    let cfg = r.app.config();
    let routing = Routing::from_config(&cfg);
    let later = Utc::now() + chrono::Duration::minutes(4 * 60 + 1);
    let store = r.app.store().await;
    for _ in 0..2 {
        let mut tx = store.begin_write().await.expect("tx");
        waba_monitor::store::alerts::queue_escalations_in(
            &mut tx,
            std::time::Duration::from_secs(4 * 3600),
            later,
        )
        .await
        .expect("escalate");
        waba_monitor::notify::digest_in(&mut tx, &routing, later)
            .await
            .expect("digest");
        tx.commit().await.expect("commit");
    }
    // Not yet due an hour earlier.
    let mut tx = store.begin_write().await.expect("tx");
    let early = waba_monitor::store::alerts::queue_escalations_in(
        &mut tx,
        std::time::Duration::from_secs(5 * 3600),
        later,
    )
    .await
    .expect("escalate");
    tx.commit().await.expect("commit");
    assert_eq!(early, 0);
    store.close().await;
    let mails = r.deliver_at(1, later).await;
    assert_eq!(mails.len(), 1, "escalated once: {mails:?}");
    assert_eq!(mails[0].rcpt_to, vec!["oncall@example.test".to_owned()]);
    let subject = mails[0].header("Subject").unwrap_or_default();
    assert!(subject.contains("ESCALATED"), "{subject}");
    let body = mails[0].body();
    assert!(
        body.contains("open since"),
        "how long it has been bad: {body}"
    );
    assert!(body.contains("still RED"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_shows_what_each_route_takes_and_refuses_a_typo_d_waba_with_its_line() {
    let r = Routed::start(ROUTES).await;
    let out = r.app.cli(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"acme\"")
            && text.contains("matches 1 of the 3 configured target(s) (WABA 200000000000001)"),
        "{text}"
    );
    assert!(
        text.contains("no route names: WABA 200000000000003"),
        "{text}"
    );

    let typo = ROUTES.replace(
        "wabas = [\"200000000000001\"]",
        "wabas = [\"200000000000009\"]",
    );
    let bad = Routed::start(&typo).await;
    let out = bad.app.cli(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("route[0].wabas"), "{err}");
    assert!(
        err.contains("200000000000009 is not monitored by any source"),
        "{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("route[0].wabas"))
        .unwrap_or_default()
        .to_owned();
    let config = std::fs::read_to_string(&bad.app.config_path).expect("config");
    let at = config
        .lines()
        .position(|l| l.contains("200000000000009"))
        .map(|i| i + 1)
        .expect("in the file");
    assert!(line.contains(&format!(":{at}:")), "line {at}: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_posting_one_url_in_two_formats_queue_two_deliveries() {
    let r = Routed::start(
        "[[route]]\nname = \"json\"\nwabas = [\"200000000000001\"]\nwebhook_url = \"http://127.0.0.1:9/hook\"\ncontinue = true\n\n\
[[route]]\nname = \"slack\"\nwabas = [\"200000000000001\"]\nwebhook_url = \"http://127.0.0.1:9/hook\"\nwebhook_format = \"slack\"\n",
    )
    .await;
    r.app.poll().await;
    r.red(&[P1]);
    r.app.poll().await;
    let store = r.app.store().await;
    let rows: Vec<(String, String)> = on_store!(store, |p| sqlx::query_as(
        "SELECT message_id, body FROM outbox WHERE channel = 'webhook' ORDER BY id"
    )
    .fetch_all(p)
    .await)
    .expect("outbox");
    store.close().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_ne!(rows[0].0, rows[1].0, "two idempotency keys");
    assert!(
        rows.iter().any(|(_, b)| b.starts_with("{\"text\":")),
        "{rows:?}"
    );
}
