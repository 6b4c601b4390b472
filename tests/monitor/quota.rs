//! Surviving Meta's API: throttling pauses only what Meta throttled, a rejected token is not
//! used again until it changes, the budget is never exceeded, and no fault ever changes a
//! number's state, alerts about a number or shows the token in a log line.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::helpers::{TOKEN, TestApp};
use waba_monitor::poller::Poller;
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, SimState};
use waba_monitor::sources::PollOutcome;

const W1: &str = "200000000000001";
const W2: &str = "200000000000002";
const W3: &str = "200000000000003";

fn three_wabas() -> (SimState, String) {
    (
        SimState::fleet(3, 5),
        format!("wabas = [\"{W1}\", \"{W2}\", \"{W3}\"]"),
    )
}

/// A poller whose clock the test moves.
async fn poller_with_clock(app: &TestApp) -> (Poller, Arc<Mutex<DateTime<Utc>>>) {
    let now = Arc::new(Mutex::new(Utc::now()));
    let mut p = app.poller().await;
    let c = now.clone();
    p.set_clock(Arc::new(move || *c.lock().expect("clock")));
    (p, now)
}

fn advance(clock: &Arc<Mutex<DateTime<Utc>>>, minutes: i64) {
    *clock.lock().expect("clock") += chrono::Duration::minutes(minutes);
}

async fn history(p: &Poller) -> i64 {
    p.store().history_count().await.expect("count")
}

#[tokio::test]
async fn a_waba_throttled_with_80008_pauses_until_regain_while_the_others_go_on() {
    let (state, targets) = three_wabas();
    let app = TestApp::spawn(state, &targets).await;
    let (p, clock) = poller_with_clock(&app).await;
    p.poll_once().await;
    let before = history(&p).await;
    app.sim.with_state(|s| {
        s.phone_mut("300000000000006").quality_rating = Some("RED".into()); // on W2
        s.add_fault(Fault::always(
            FaultTarget::object(W2),
            FaultKind::waba_rate_limited(W2, 19),
        ));
    });
    let r = p.poll_once().await;
    let s = &r.sources[0];
    assert_eq!(s.outcome, PollOutcome::Partial);
    assert_eq!(s.failures.len(), 1);
    assert_eq!(s.failures[0].error.code(), Some(80008));
    assert_eq!(s.wabas, 2, "the other WABAs were polled");
    assert_eq!(history(&p).await, before, "throttling changed nothing");

    // Within Meta's 19 minutes W2 is not asked at all.
    app.sim.reset_counters();
    advance(&clock, 10);
    let r = p.poll_once().await;
    assert_eq!(r.sources[0].deferred, 1);
    assert_eq!(r.sources[0].failures.len(), 0);
    assert!(
        app.sim
            .requests()
            .iter()
            .all(|q| !q.body.contains(W2) && !q.path.contains(W2)),
        "a paused WABA was called"
    );

    // After the pause, once Meta lets it through, W2 recovers and its change is recorded once.
    // Meta's last usage header for W2 said 100 %, so it is polled every other cycle until a
    // fresh header says otherwise: within two cycles it is read again.
    app.sim.with_state(|s| s.faults.clear());
    advance(&clock, 10);
    let mut changes = 0;
    for _ in 0..2 {
        let r = p.poll_once().await;
        assert_eq!(r.sources[0].failures.len(), 0);
        changes += r.changes();
        advance(&clock, 1);
    }
    assert_eq!(changes, 1, "W2's change recorded once after recovery");
    let text = p.metrics().encode();
    assert!(
        text.contains("waba_monitor_poll_deferred_total{source=\"main\",reason=\"throttled\"} 1"),
        "deferred counter"
    );
    assert!(
        text.contains(
            "waba_monitor_poll_failures_total{source=\"main\",reason=\"rate_limited\"} 1"
        )
    );
}

#[tokio::test]
async fn app_throttling_with_code_4_and_retry_after_pauses_the_whole_source() {
    let (state, targets) = three_wabas();
    let app = TestApp::spawn(state, &targets).await;
    let (p, clock) = poller_with_clock(&app).await;
    p.poll_once().await;
    app.sim.with_state(|s| {
        s.add_fault(Fault::once(FaultTarget::Any, FaultKind::app_rate_limited()));
    });
    let r = p.poll_once().await;
    assert_eq!(r.sources[0].outcome, PollOutcome::Failed);
    assert!(
        r.sources[0]
            .failures
            .iter()
            .all(|f| f.error.code() == Some(4))
    );
    // The simulator asks for 60 s (Retry-After): during it nothing is sent.
    app.sim.reset_counters();
    let r = p.poll_once().await;
    assert_eq!(r.sources[0].deferred, 3);
    assert_eq!(app.sim.http_requests(), 0);
    advance(&clock, 2);
    let r = p.poll_once().await;
    assert_eq!(r.sources[0].outcome, PollOutcome::Ok);
    assert_eq!(r.alerts, 0, "throttling is not an alert about any number");
}

#[tokio::test]
async fn an_expired_token_stops_polling_until_the_token_file_changes() {
    let (state, targets) = three_wabas();
    let app = TestApp::spawn(state, &targets).await;
    let p = app.poller().await;
    p.poll_once().await;
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(FaultTarget::Any, FaultKind::token_expired()));
    });
    let r = p.poll_once().await;
    assert_eq!(r.alerts, 1, "monitoring blind, once");
    assert_eq!(r.sources[0].failures[0].error.code(), Some(190));
    app.sim.reset_counters();
    let r = p.poll_once().await;
    assert_eq!(
        app.sim.http_requests(),
        0,
        "the rejected token was used again"
    );
    assert_eq!(r.alerts, 0);
    assert_eq!(r.sources[0].outcome, PollOutcome::Failed);

    // The operator drops a new token in place (the simulator accepts it once the fault is gone).
    app.sim.with_state(|s| s.faults.clear());
    app.write_secret("meta-token", &format!("{TOKEN}-renewed"));
    let r = p.poll_once().await;
    assert!(app.sim.http_requests() > 0);
    // The simulator only knows the original token: the renewed one is sent and refused, which
    // proves the new file was read; put the original back to see the recovery.
    assert_eq!(r.sources[0].outcome, PollOutcome::Failed);
    let sent: Vec<String> = app
        .sim
        .requests()
        .iter()
        .filter_map(|q| q.authorization.clone())
        .collect();
    assert!(sent.iter().all(|a| a == &format!("Bearer {TOKEN}-renewed")));
    app.write_secret("meta-token", TOKEN);
    let r = p.poll_once().await;
    assert_eq!(r.sources[0].outcome, PollOutcome::Ok);
    assert_eq!(r.alerts, 1, "recovery announced");
}

#[tokio::test]
async fn a_failure_on_page_3_of_5_leaves_the_listing_partial_and_records_nothing_gone() {
    let app = TestApp::spawn(SimState::fleet(1, 450), &format!("wabas = [\"{W1}\"]")).await;
    let p = app.poller().await;
    p.poll_once().await;
    let before = history(&p).await;
    app.sim.with_state(|s| {
        s.remove_phone("300000000000005");
        s.phone_mut("300000000000420").status = Some("BANNED".into());
        s.add_fault(Fault::always(
            FaultTarget::edge_page(W1, "phone_numbers", 3),
            FaultKind::transient(),
        ));
    });
    let r = p.poll_once().await;
    let s = &r.sources[0];
    assert_eq!(s.outcome, PollOutcome::Partial);
    assert_eq!(s.phones, 200, "pages 1 and 2 were read, page 3 failed");
    assert_eq!(history(&p).await, before);
    assert_eq!(r.alerts, 0);
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_counted() {
    let app = TestApp::spawn(
        SimState::fleet(2, 2),
        &format!("wabas = [\"{W1}\", \"{W2}\"]"),
    )
    .await;
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::write(
        &app.config_path,
        text.replace(
            "request_timeout = \"2s\"",
            "request_timeout = \"2s\"\nmax_response_bytes = 65536",
        ),
    )
    .expect("config");
    let p = app.poller().await;
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(
            FaultTarget::Any,
            FaultKind::OversizeBody(200_000),
        ));
    });
    let r = p.poll_once().await;
    assert_eq!(r.sources[0].outcome, PollOutcome::Failed);
    assert_eq!(r.sources[0].failures[0].error.reason(), "too_large");
    assert_eq!(history(&p).await, 0);
    let text = p.metrics().encode();
    assert!(
        text.contains("waba_monitor_poll_failures_total{source=\"main\",reason=\"too_large\"} 2"),
        "{}",
        text.lines()
            .filter(|l| l.contains("failures_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn the_budget_is_never_exceeded_even_when_the_schedule_is_dense() {
    let (state, targets) = three_wabas();
    let app = TestApp::spawn(state, &targets).await;
    // The helpers allow 5,000/h; this test runs against a budget of 10 calls per WABA.
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::write(
        &app.config_path,
        text.replace(
            "quota_per_waba_hour = 5000\nquota_share = 1.0",
            "quota_per_waba_hour = 20\nquota_share = 0.5",
        )
        .replace("0 */5 * * * *", "0 0 * * * *"),
    )
    .expect("config");
    let (p, clock) = poller_with_clock(&app).await;
    for _ in 0..30 {
        p.poll_once().await;
        advance(&clock, 1);
    }
    for w in [W1, W2, W3] {
        assert!(
            p.calls_last_hour("main", w) <= 10,
            "{w}: {}",
            p.calls_last_hour("main", w)
        );
        assert!(
            app.sim.calls_for_waba(w) <= 10,
            "{w}: Meta saw {}",
            app.sim.calls_for_waba(w)
        );
    }
    // An hour later the budget is free again.
    advance(&clock, 60);
    let r = p.poll_once().await;
    assert_eq!(r.sources[0].deferred, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fault_shows_the_token_in_any_log_line() {
    let app = TestApp::spawn(
        SimState::fleet(4, 150),
        &format!("wabas = [\"{W1}\", \"{W2}\", \"{W3}\", \"200000000000004\"]"),
    )
    .await;
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(
            FaultTarget::object(W1),
            FaultKind::waba_rate_limited(W1, 5),
        ));
        s.add_fault(Fault::always(
            FaultTarget::object(W2),
            FaultKind::HtmlError(502),
        ));
        s.add_fault(Fault::always(
            FaultTarget::object(W3),
            FaultKind::ForeignPagingLink("http://127.0.0.2:9".into()),
        ));
        s.add_fault(Fault::always(
            FaultTarget::object("200000000000004"),
            FaultKind::token_expired(),
        ));
    });
    let out = app.cli(&["poll-once"]);
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all.contains("foreign_paging_link") || all.contains("outside the configured graph_url"),
        "{all}"
    );
    assert!(!all.contains(TOKEN), "token in the output");
    assert!(
        !all.contains("access_token="),
        "a paging link with its token was logged"
    );
}

#[test]
fn a_schedule_over_the_quota_budget_is_refused_with_one_that_fits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("monitor.toml");
    std::fs::write(
        &path,
        "[daemon]\npoll_schedule = \"*/20 * * * * *\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("monitor.toml:2: `daemon.poll_schedule`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("180 calls/hour per WABA, over its budget of 100"),
        "{stderr}"
    );
    assert!(
        stderr.contains("poll_schedule = \"0 * * * * *\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_target_unread_for_stale_after_polls_is_marked_stale_with_its_last_state() {
    let (state, targets) = three_wabas();
    let app = TestApp::spawn(state, &targets).await;
    let p = app.poller().await;
    p.poll_once().await;
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(
            FaultTarget::object(W3),
            FaultKind::HtmlError(502),
        ));
    });
    let stale_of = |entries: &[waba_monitor::store::StatusEntry]| {
        entries
            .iter()
            .filter(|e| e.stale)
            .map(|e| e.waba_id.clone().unwrap_or_default())
            .collect::<std::collections::BTreeSet<_>>()
    };
    p.poll_once().await;
    let after_one = p.store().status_with(false, 2).await.expect("status");
    assert!(
        stale_of(&after_one).is_empty(),
        "one failed poll is not yet stale"
    );
    p.poll_once().await;
    let after_two = p.store().status_with(false, 2).await.expect("status");
    assert_eq!(
        stale_of(&after_two),
        std::collections::BTreeSet::from([W3.to_owned()])
    );
    let w3_numbers: Vec<_> = after_two
        .iter()
        .filter(|e| e.kind == "phone_number" && e.waba_id.as_deref() == Some(W3))
        .collect();
    assert!(
        w3_numbers
            .iter()
            .all(|e| e.stale && e.quality_rating.as_deref() == Some("GREEN"))
    );
    let metrics = p.metrics().encode();
    assert!(metrics.contains("waba_monitor_phone_stale{phone_number_id=\"300000000000011\",waba_id=\"200000000000003\"} 1"));
}
