//! SIGHUP swaps the whole runtime: the real binary, real signals, the real loopback SMTP
//! server. What must outlive a reload (quota ledger, throttle pauses, a rejected token) does;
//! what the config says (email, API token, schedule and the windows derived from it) is
//! re-read, secret files included.

use std::time::{Duration, Instant};

use crate::helpers::{TestApp, one_waba};
use crate::service::{Notes, free_port, signal, spawn_daemon, wait_exit};
use crate::smtp::SmtpSink;
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, SimState};

const W1: &str = "200000000000001";
const W2: &str = "200000000000002";
const P0: &str = "300000000000001";

/// A daemon on a fixed port, polling every 2 s, with `extra` TOML appended.
struct Daemon {
    app: TestApp,
    child: std::process::Child,
    notes: Notes,
    base: String,
    text: String,
}

impl Daemon {
    /// `secrets`: private files (name, content) next to the config, written before the start.
    async fn start(
        state: SimState,
        targets: &str,
        extra: &str,
        daemon_line: &str,
        secrets: &[(&str, &str)],
        watchdog_usec: Option<u64>,
    ) -> Daemon {
        let port = free_port();
        let app = TestApp::spawn_full(state, targets, "v24.0", "*/2 * * * * *", extra).await;
        for (name, content) in secrets {
            app.write_secret(name, content);
        }
        let text = std::fs::read_to_string(&app.config_path)
            .expect("config")
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\"\n{daemon_line}"),
            );
        std::fs::write(&app.config_path, &text).expect("config");
        Self::launch(app, text, port, watchdog_usec).await
    }

    async fn launch(app: TestApp, text: String, port: u16, watchdog_usec: Option<u64>) -> Daemon {
        let notify = app.config_path.with_file_name("notify.sock");
        let notes = Notes::listen(&notify);
        let child = spawn_daemon(&app, &notify, watchdog_usec);
        notes.wait_for("READY=1", Duration::from_secs(15)).await;
        notes
            .wait_for("STATUS=polling", Duration::from_secs(15))
            .await;
        Daemon {
            app,
            child,
            notes,
            base: format!("http://127.0.0.1:{port}"),
            text,
        }
    }

    /// Rewrites the config with `f` applied and sends SIGHUP; waits until the reload is done.
    async fn reload(&mut self, f: impl FnOnce(&str) -> String) {
        self.text = f(&self.text);
        std::fs::write(&self.app.config_path, &self.text).expect("config");
        let since = Instant::now();
        signal(&self.child, "-HUP");
        let start = Instant::now();
        while self.notes.count_since(since, "RELOADING=1") == 0
            || self.notes.count_since(since, "READY=1") == 0
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "reload not finished"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) -> String {
        signal(&self.child, "-TERM");
        let (code, stderr) = wait_exit(&mut self.child, Duration::from_secs(30)).await;
        assert_eq!(code, 0, "{stderr}");
        stderr
    }
}

fn email_toml(port: u16, password: bool) -> String {
    let auth = if password {
        "username = \"monitor\"\npassword_file = \"smtp-password\"\n"
    } else {
        ""
    };
    format!(
        "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"none\"\n{auth}from = \"monitor@example.com\"\nto = [\"ops@example.com\"]\n"
    )
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reload_a_cycles_alert_is_delivered_at_once() {
    let smtp = SmtpSink::start().await;
    let mut d = Daemon::start(
        one_waba(1),
        &format!("wabas = [\"{W1}\"]"),
        &email_toml(smtp.port(), false),
        "",
        &[],
        None,
    )
    .await;
    d.reload(str::to_owned).await;
    d.app
        .sim
        .with_state(|s| s.phone_mut(P0).quality_rating = Some("RED".into()));
    // The next cycle (≤ 2 s) queues it; delivery is woken by the cycle, not its 15 s tick.
    wait_until("the alert email", Duration::from_secs(5), || {
        !smtp.messages().is_empty()
    })
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_smtp_password_file_is_used_by_the_next_send_after_a_reload() {
    let smtp = SmtpSink::start().await;
    smtp.require_auth(true);
    let app_state = one_waba(2);
    let mut d = Daemon::start(
        app_state,
        &format!("wabas = [\"{W1}\"]"),
        &email_toml(smtp.port(), true),
        "",
        &[("smtp-password", "first-password-123")],
        None,
    )
    .await;
    d.app
        .sim
        .with_state(|s| s.phone_mut(P0).quality_rating = Some("RED".into()));
    wait_until("the first email", Duration::from_secs(6), || {
        !smtp.messages().is_empty()
    })
    .await;
    assert_eq!(
        smtp.messages()[0].credentials().map(|c| c.1),
        Some("first-password-123".to_owned())
    );
    // Same file name, new content: the config text does not change at all.
    d.app.write_secret("smtp-password", "second-password-456");
    d.reload(str::to_owned).await;
    d.app
        .sim
        .with_state(|s| s.phone_mut("300000000000002").quality_rating = Some("RED".into()));
    wait_until("the second email", Duration::from_secs(6), || {
        smtp.messages().len() >= 2
    })
    .await;
    assert_eq!(
        smtp.messages()[1].credentials().map(|c| c.1),
        Some("second-password-456".to_owned())
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_api_token_works_and_the_old_one_is_refused_after_a_reload() {
    let mut d = Daemon::start(
        one_waba(1),
        &format!("wabas = [\"{W1}\"]"),
        "",
        "api_token_file = \"api-token\"",
        &[("api-token", "old-api-token-0123456789")],
        None,
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/accounts", d.base);
    let get = |token: &'static str| {
        let req = http.get(&url).bearer_auth(token);
        async move { req.send().await.expect("api").status().as_u16() }
    };
    assert_eq!(get("old-api-token-0123456789").await, 200);
    d.app.write_secret("api-token", "new-api-token-9876543210");
    d.reload(str::to_owned).await;
    assert_eq!(get("new-api-token-9876543210").await, 200);
    assert_eq!(get("old-api-token-0123456789").await, 401);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_to_an_hourly_schedule_keeps_the_watchdog_fed() {
    // A 2 s watchdog: fed every second while cycles make progress within the window.
    let mut d = Daemon::start(
        one_waba(1),
        &format!("wabas = [\"{W1}\"]"),
        "",
        "",
        &[],
        Some(2_000_000),
    )
    .await;
    d.reload(|t| {
        t.replace(
            "poll_schedule = \"*/2 * * * * *\"",
            "poll_schedule = \"0 0 * * * *\"",
        )
    })
    .await;
    // The window computed for every 2 s was 2 × 2 s + cycle_timeout; an hourly schedule allows
    // hours. Past the old window the watchdog must still be fed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        d.notes.count_since(since, "WATCHDOG=1") >= 1,
        "the watchdog starved after the reload"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_waba_stays_paused_and_a_rejected_token_unused_across_a_reload() {
    let mut d = Daemon::start(
        SimState::fleet(2, 1),
        &format!("wabas = [\"{W1}\", \"{W2}\"]"),
        "",
        "",
        &[],
        None,
    )
    .await;
    // W1 is throttled for 5 minutes (80008 with Meta's regain time).
    d.app.sim.with_state(|s| {
        s.add_fault(Fault::once(
            FaultTarget::object(W1),
            FaultKind::waba_rate_limited(W1, 5),
        ))
    });
    wait_until("the throttling", Duration::from_secs(6), || {
        d.app.sim.with_state(|s| s.faults.is_empty())
    })
    .await;
    // Let the cycle that met it finish and settle.
    let since = Instant::now();
    wait_until(
        "a cycle after the throttling",
        Duration::from_secs(6),
        || d.notes.count_since(since, "STATUS=polling") > 0,
    )
    .await;
    d.reload(str::to_owned).await;
    let w1_before = d.app.sim.calls_for_waba(W1);
    let w2_before = d.app.sim.calls_for_waba(W2);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(d.app.sim.calls_for_waba(W2) > w2_before, "W2 is polled");
    assert_eq!(
        d.app.sim.calls_for_waba(W1),
        w1_before,
        "the paused WABA was polled after the reload"
    );

    // A token Meta rejects (190) is not used again after a reload either.
    d.app
        .sim
        .with_state(|s| s.add_fault(Fault::always(FaultTarget::Any, FaultKind::token_expired())));
    let since = Instant::now();
    wait_until(
        "two cycles meeting the expired token",
        Duration::from_secs(8),
        || d.notes.count_since(since, "STATUS=polling") > 1,
    )
    .await;
    d.reload(str::to_owned).await;
    let requests = d.app.sim.http_requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        d.app.sim.http_requests(),
        requests,
        "the rejected token was used again after the reload"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_sighups_and_a_sigterm_amid_a_reload_end_cleanly() {
    let d = Daemon::start(
        one_waba(1),
        &format!("wabas = [\"{W1}\"]"),
        "",
        "",
        &[],
        None,
    )
    .await;
    for _ in 0..50 {
        signal(&d.child, "-HUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still serving and polling with one consistent configuration.
    let since = Instant::now();
    wait_until("a cycle after the storm", Duration::from_secs(8), || {
        d.notes.count_since(since, "STATUS=polling") > 0
    })
    .await;
    let status = reqwest::get(format!("{}/healthz", d.base))
        .await
        .expect("healthz")
        .status();
    assert_eq!(status.as_u16(), 200);
    // A SIGTERM right behind a SIGHUP.
    signal(&d.child, "-HUP");
    let stderr = d.stop().await;
    assert!(!stderr.contains("panicked"), "{stderr}");
}
