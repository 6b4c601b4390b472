//! "Is the webhook path itself alive?": with `[webhooks] app_id`, each WABA's
//! `GET /{waba}/subscribed_apps` is asked at most once an hour (through the quota governor),
//! and the app missing from it becomes one warning email; its return resolves it. Real poller
//! with a fixed clock, the Graph simulator and a real SMTP server on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::helpers::{TestApp, one_waba};
use crate::smtp::SmtpSink;
use waba_monitor::metrics::Metrics;
use waba_monitor::notify::delivery::Deliverer;
use waba_monitor::notify::mailer::Mailer;
use waba_monitor::poller::{CycleReport, Poller};
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, SIM_APP_ID};
use waba_monitor::sources::{PollOutcome, SourceMemory};

const WABA1: &str = "200000000000001";

struct Check {
    app: TestApp,
    smtp: SmtpSink,
    memory: SourceMemory,
    metrics: Arc<Metrics>,
    clock: Arc<Mutex<DateTime<Utc>>>,
}

impl Check {
    async fn start() -> Check {
        let smtp = SmtpSink::start().await;
        let app = TestApp::spawn_with_extra(
            one_waba(1),
            &format!("wabas = [\"{WABA1}\"]"),
            &format!(
                "[webhooks]\nlisten = \"127.0.0.1:0\"\napp_secret_file = \"app-secret\"\nverify_token_file = \"verify-token\"\napp_id = \"{SIM_APP_ID}\"\n\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"5s\"\nmax_age = \"1h\"\n",
                smtp.port()
            ),
        )
        .await;
        app.write_secret("app-secret", "app-secret-for-tests-0123456789abcdef");
        app.write_secret("verify-token", "verify-token-for-tests");
        Check {
            app,
            smtp,
            memory: SourceMemory::default(),
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(Mutex::new(Utc::now())),
        }
    }

    /// A poller as a (re)loaded runtime builds it: same memory, the test's clock.
    async fn poller(&self) -> Poller {
        let mut p = Poller::build(
            &self.app.config(),
            self.app.store().await,
            RetryPolicy::fast(),
            self.metrics.clone(),
            Arc::new(Notify::new()),
            &self.memory,
        )
        .expect("poller builds");
        let clock = self.clock.clone();
        p.set_clock(Arc::new(move || *clock.lock().expect("clock")));
        p
    }

    fn advance(&self, minutes: i64) {
        *self.clock.lock().expect("clock") += chrono::Duration::minutes(minutes);
    }

    /// Requests for the WABA's subscribed_apps since the last reset.
    fn subscription_reads(&self) -> usize {
        self.app
            .sim
            .requests()
            .iter()
            .filter(|r| r.path == format!("/v24.0/{WABA1}/subscribed_apps"))
            .count()
    }

    async fn deliver(&self) -> usize {
        let email = self.app.config().email.expect("email");
        let d = Deliverer::new(
            self.app.store().await,
            Mailer::new(&email).expect("mailer"),
            &email,
            RetryPolicy::fast(),
        );
        d.deliver_due(Utc::now()).await.expect("delivery").sent
    }
}

fn subscription_changes(r: &CycleReport) -> Vec<(Option<String>, Option<String>)> {
    r.sources[0]
        .changes
        .iter()
        .filter(|c| c.field == "webhook_subscription")
        .map(|c| (c.old.clone(), c.new.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_warns_once_by_email_and_its_return_resolves_it() {
    let c = Check::start().await;
    let p = c.poller().await;

    // First cycle: asked once, subscribed, charged to the WABA like every other call.
    let r = p.poll_once().await;
    assert_eq!(
        r.sources[0].outcome,
        PollOutcome::Ok,
        "{:?}",
        r.sources[0].failures
    );
    assert_eq!(r.alerts, 0);
    assert_eq!(c.subscription_reads(), 1);
    assert_eq!(
        subscription_changes(&r),
        vec![(None, Some("subscribed".to_owned()))]
    );
    assert_eq!(
        u64::from(p.calls_last_hour("main", WABA1)),
        c.app.sim.calls_for_waba(WABA1),
        "every call, the subscription check included, charged to the WABA"
    );
    assert!(
        p.metrics().encode().contains(&format!(
            "waba_monitor_webhook_subscribed{{source=\"main\",waba_id=\"{WABA1}\"}} 1"
        )),
        "{}",
        p.metrics().encode()
    );

    // The app is unsubscribed; within the hour nobody asks (a reload neither).
    c.app
        .sim
        .with_state(|s| s.waba_mut(WABA1).webhooks_unsubscribed = true);
    c.advance(30);
    let r = p.poll_once().await;
    assert_eq!((r.alerts, c.subscription_reads()), (0, 1));
    p.store().close().await;
    let p = c.poller().await;
    c.advance(29);
    let r = p.poll_once().await;
    assert_eq!(
        (r.alerts, c.subscription_reads()),
        (0, 1),
        "a reload repeats no check"
    );

    // An hour after the check: asked again, one warning email naming the WABA.
    c.advance(1);
    let r = p.poll_once().await;
    assert_eq!(c.subscription_reads(), 2);
    assert_eq!(r.alerts, 1);
    assert_eq!(
        subscription_changes(&r),
        vec![(
            Some("subscribed".to_owned()),
            Some("not_subscribed".to_owned())
        )]
    );
    assert_eq!(c.deliver().await, 1);
    let mails = c.smtp.messages();
    assert_eq!(mails.len(), 1);
    let subject = mails[0].header("Subject").expect("subject");
    assert!(
        subject.contains("WARNING") && subject.contains(WABA1),
        "{subject}"
    );
    let body = mails[0].body();
    assert!(
        body.contains(&format!("webhooks not subscribed for WABA {WABA1}")),
        "{body}"
    );
    assert!(p.metrics().encode().contains(&format!(
        "waba_monitor_webhook_subscribed{{source=\"main\",waba_id=\"{WABA1}\"}} 0"
    )));
    // Not asked again within the hour, and no second email.
    c.advance(10);
    let r = p.poll_once().await;
    assert_eq!((r.alerts, c.subscription_reads()), (0, 2));

    // The app is back, but the read fails: no verdict, nothing changes, nothing is sent.
    c.app.sim.with_state(|s| {
        s.waba_mut(WABA1).webhooks_unsubscribed = false;
        s.add_fault(Fault::always(
            FaultTarget::edge_page(WABA1, "subscribed_apps", 1),
            FaultKind::permission_denied(),
        ));
    });
    c.advance(50);
    let r = p.poll_once().await;
    assert_eq!(c.subscription_reads(), 3);
    assert_eq!(r.alerts, 0);
    assert!(
        subscription_changes(&r).is_empty(),
        "{:?}",
        r.sources[0].changes
    );
    assert_eq!(
        r.sources[0].outcome,
        PollOutcome::Ok,
        "the WABA itself was read; the source is not blind"
    );
    assert!(
        p.metrics()
            .encode()
            .contains("waba_monitor_poll_failures_total{source=\"main\",reason=\"permission\"} 1"),
        "the failed read is counted"
    );
    assert!(
        p.metrics().encode().contains(&format!(
            "waba_monitor_webhook_subscribed{{source=\"main\",waba_id=\"{WABA1}\"}} 0"
        )),
        "the last known answer stands"
    );

    // The read works again an hour later: resolved, by email.
    c.app.sim.with_state(|s| s.faults.clear());
    c.advance(61);
    let calls_before = c.app.sim.calls_for_waba(WABA1);
    let r = p.poll_once().await;
    assert_eq!(c.subscription_reads(), 4);
    assert_eq!(r.alerts, 1);
    assert_eq!(
        subscription_changes(&r),
        vec![(
            Some("not_subscribed".to_owned()),
            Some("subscribed".to_owned())
        )]
    );
    assert_eq!(
        u64::from(p.calls_last_hour("main", WABA1)),
        c.app.sim.calls_for_waba(WABA1) - calls_before,
        "the last hour holds exactly this cycle's calls, the subscription check included"
    );
    assert_eq!(c.deliver().await, 1);
    let mails = c.smtp.wait_for(2, Duration::from_secs(5)).await;
    let subject = mails[1].header("Subject").expect("subject");
    assert!(
        subject.contains("RESOLVED") && subject.contains(WABA1),
        "{subject}"
    );
    p.store().close().await;
}
