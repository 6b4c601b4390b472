//! The dead-man heartbeat of a running daemon: `[heartbeat] url` requested after every cycle
//! that read anything, `url/fail` after one that read nothing, against a real HTTP server on
//! loopback; a heartbeat service that is down or hangs never fails or holds up a cycle.

use std::time::Duration;

use crate::helpers::{TestApp, one_waba};
use crate::receivers::{Cycle, Daemon, Hook, dead_port, sample, wait_until};
use waba_monitor::daemon::RunOptions;
use waba_monitor::sim::{Fault, FaultKind, FaultTarget};
use waba_monitor::sources::PollOutcome;

const WABA1: &str = "200000000000001";
const PING: &str = "/ping/hc-check-key-0e2c";

/// An app polling every second with `[heartbeat]` to `url`.
async fn app(url: &str, timeout: &str) -> TestApp {
    TestApp::spawn_full(
        one_waba(2),
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "* * * * * *",
        &format!("[heartbeat]\nurl = \"{url}\"\ntimeout = \"{timeout}\"\n"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_url_is_hit_once_per_good_cycle_and_fail_after_a_blind_one() {
    let hook = Hook::start(&[], 200).await;
    let app = app(&hook.url(PING), "2s").await;
    let mut d = Daemon::start(&app, RunOptions::default()).await;
    let mut cycles: Vec<Cycle> = vec![d.next_cycle().await, d.next_cycle().await];
    assert!(
        cycles
            .iter()
            .all(|c| c.outcome == PollOutcome::Ok && c.recorded),
        "{cycles:?}"
    );
    // Meta rejects the token: the source reads nothing, the monitor is blind.
    app.sim
        .with_state(|s| s.add_fault(Fault::always(FaultTarget::Any, FaultKind::token_expired())));
    for _ in 0..5 {
        let c = d.next_cycle().await;
        cycles.push(c);
        if c.outcome == PollOutcome::Failed {
            break;
        }
    }
    cycles.extend(d.stop().await);
    assert!(
        cycles.iter().any(|c| c.outcome == PollOutcome::Failed),
        "{cycles:?}"
    );
    // Every finished cycle sent its heartbeat, in order.
    wait_until("one heartbeat per cycle", Duration::from_secs(10), || {
        hook.requests().len() >= cycles.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = hook.requests();
    let fail = format!("{PING}/fail");
    let want: Vec<&str> = cycles
        .iter()
        .map(|c| {
            if c.outcome != PollOutcome::Failed && c.recorded {
                PING
            } else {
                fail.as_str()
            }
        })
        .collect();
    assert_eq!(
        got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        want,
        "{cycles:?}"
    );
    assert!(got.iter().all(|r| r.method == "GET"), "{got:?}");
    assert_eq!(got[0].path, PING);
    assert_eq!(got.last().map(|r| r.path.as_str()), Some(fail.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_server_that_hangs_does_not_hold_up_the_cycles() {
    // Answers after a minute; each heartbeat waits up to 30 s for it.
    let hook = Hook::start_with(&[], 200, Duration::from_secs(60)).await;
    let app = app(&hook.url(PING), "30s").await;
    let mut d = Daemon::start(&app, RunOptions::default()).await;
    let started = tokio::time::Instant::now();
    for _ in 0..4 {
        let c = d.next_cycle().await;
        assert_eq!((c.outcome, c.recorded), (PollOutcome::Ok, true));
    }
    // One cycle a second, as scheduled: none waited for its heartbeat's answer.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert!(!hook.requests().is_empty(), "the heartbeat was requested");
    assert_eq!(d.get("/readyz").await.0, 200);
    let stopping = tokio::time::Instant::now();
    d.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown waited for the heartbeat: {:?}",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_heartbeat_server_is_counted_and_never_fatal() {
    let url = format!("http://127.0.0.1:{}{PING}", dead_port().await);
    let app = app(&url, "1s").await;
    let mut d = Daemon::start(&app, RunOptions::default()).await;
    for _ in 0..2 {
        let c = d.next_cycle().await;
        assert_eq!((c.outcome, c.recorded), (PollOutcome::Ok, true));
    }
    let mut failures = 0.0;
    for _ in 0..100 {
        let (_, text) = d.get("/metrics").await;
        failures = sample(&text, "waba_monitor_heartbeat_failures_total").unwrap_or(0.0);
        if failures >= 2.0 {
            assert_eq!(
                sample(&text, "waba_monitor_heartbeats_total{signal=\"ok\"}"),
                Some(0.0)
            );
            assert!(!text.contains("hc-check-key"), "the URL's key in metrics");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failures >= 2.0, "failed heartbeats counted: {failures}");
    // Still polling and ready.
    assert_eq!(d.next_cycle().await.outcome, PollOutcome::Ok);
    assert_eq!(d.get("/readyz").await.0, 200);
    d.stop().await;
}
