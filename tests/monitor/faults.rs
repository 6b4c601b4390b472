//! Bad answers from the Graph API: counted and reported, never a crash, never a change.

use std::time::Duration;

use crate::helpers::{TestApp, one_waba};
use waba_monitor::sim::{Fault, FaultKind, FaultTarget};
use waba_monitor::sources::PollOutcome;

const WABA1: &str = "200000000000001";

async fn assert_fault_changes_nothing(kind: FaultKind, want_reason: &str) {
    let app = TestApp::spawn(one_waba(3), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    let before = app.history_count().await;
    app.sim.with_state(|s| {
        s.phone_mut("300000000000001").quality_rating = Some("RED".into());
        s.add_fault(Fault::always(FaultTarget::object(WABA1), kind.clone()));
    });
    let report = app.poll().await;
    let s = &report.sources[0];
    assert_eq!(s.outcome, PollOutcome::Failed, "{kind:?}");
    assert_eq!(
        s.failures[0].error.reason(),
        want_reason,
        "{kind:?}: {}",
        s.failures[0].error
    );
    assert_eq!(app.history_count().await, before, "{kind:?} wrote history");
}

#[tokio::test]
async fn an_html_502_is_a_failed_poll_not_a_change() {
    assert_fault_changes_nothing(FaultKind::HtmlError(502), "bad_status").await;
}

#[tokio::test]
async fn a_truncated_body_is_a_failed_poll_not_a_change() {
    assert_fault_changes_nothing(FaultKind::Truncated, "malformed").await;
}

#[tokio::test]
async fn an_answer_that_hangs_past_the_timeout_is_a_failed_poll_not_a_change() {
    // The test config's request_timeout is 2 s; a batch item that hangs comes back null.
    assert_fault_changes_nothing(FaultKind::Hang(Duration::from_secs(3)), "timeout").await;
}

#[tokio::test]
async fn a_paging_link_to_a_foreign_host_is_not_followed_and_the_listing_is_partial() {
    let app = TestApp::spawn(one_waba(150), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    app.sim.with_state(|s| {
        s.remove_phone("300000000000140");
        s.add_fault(Fault::always(
            FaultTarget::object(WABA1),
            FaultKind::ForeignPagingLink("http://127.0.0.2:9".into()),
        ));
    });
    let report = app.poll().await;
    let s = &report.sources[0];
    assert_eq!(s.outcome, PollOutcome::Partial);
    assert_eq!(s.failures[0].error.reason(), "foreign_paging_link");
    assert!(
        s.changes.is_empty(),
        "a partial listing recorded {:?}",
        s.changes
    );
    assert!(
        app.sim.requests().iter().all(|r| !r.path.is_empty()),
        "sanity: requests were recorded"
    );
}

#[tokio::test]
async fn a_transient_burst_is_retried_within_the_cycle() {
    let app = TestApp::spawn(one_waba(2), &format!("wabas = [\"{WABA1}\"]")).await;
    app.sim.with_state(|s| {
        s.add_fault(Fault::times(2, FaultTarget::Any, FaultKind::HtmlError(500)));
    });
    let report = app.poll().await;
    assert_eq!(
        report.sources[0].outcome,
        PollOutcome::Ok,
        "{:?}",
        report.sources[0].failures
    );
    assert_eq!(report.sources[0].phones, 2);
    assert!(report.sources[0].requests >= 3, "retried");
}
