//! The daemon under its scheduler: cycles run, never overlap, and shutdown is clean.

use std::time::Duration;

use crate::helpers::{TestApp, one_waba};
use waba_monitor::daemon::{self, RunOptions};
use waba_monitor::retry::RetryPolicy;

#[tokio::test]
async fn the_daemon_polls_on_its_schedule_and_stops_cleanly_on_shutdown() {
    let app = TestApp::spawn_with(
        one_waba(3),
        "wabas = [\"200000000000001\"]",
        "v24.0",
        "* * * * * *",
    )
    .await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (cycle_tx, mut cycle_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let cfg = app.config();
    let handle = tokio::spawn(daemon::run(
        cfg,
        RunOptions {
            retry: RetryPolicy::fast(),
            ..RunOptions::default()
        },
        async move {
            let _ = stop_rx.await;
        },
        move |report| {
            let _ = cycle_tx.send(report.changes());
        },
    ));
    // The first cycle runs at start, the next on the schedule (every second).
    let first = tokio::time::timeout(Duration::from_secs(10), cycle_rx.recv())
        .await
        .expect("first cycle in time")
        .expect("cycle report");
    assert!(first > 0, "first cycle records the fleet");
    let second = tokio::time::timeout(Duration::from_secs(10), cycle_rx.recv())
        .await
        .expect("scheduled cycle in time")
        .expect("cycle report");
    assert_eq!(second, 0, "unchanged fleet, no changes");

    stop_tx.send(()).expect("daemon listening");
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("stops in time")
        .expect("task")
        .expect("clean exit");

    let store = app.store().await;
    let runs = store.recent_runs(50).await.expect("runs");
    assert!(runs.len() >= 2);
    assert!(runs.iter().all(|r| r.outcome == "ok"), "{runs:?}");
}
