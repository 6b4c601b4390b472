//! Defects found by trying to break the monitor (issue 10), each pinned by a test that failed
//! before its fix: BSP walks past the API's page cap, retries and quota, CLI edge cases.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::helpers::{TestApp, one_waba};
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, FineduFault, FineduSim, FineduState};
use waba_monitor::sources::PollOutcome;

const WABA1: &str = "200000000000001";

/// The Meta fleet of one WABA beside a BSP fleet.
async fn with_bsp(bsp: FineduState, page_size: u32) -> (TestApp, FineduSim) {
    crate::bsp::with_bsp(
        one_waba(1),
        &format!("wabas = [\"{WABA1}\"]"),
        bsp,
        page_size,
    )
    .await
}

fn bsp(r: &waba_monitor::poller::CycleReport) -> &waba_monitor::poller::SourceReport {
    r.sources
        .iter()
        .find(|s| s.source == "finedu-main")
        .expect("the BSP source reported")
}

fn gone(r: &waba_monitor::poller::SourceReport) -> Vec<String> {
    r.changes
        .iter()
        .filter(|c| c.field == "presence" && c.new.as_deref() == Some("gone"))
        .map(|c| c.target_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bsp_listing_beyond_the_apis_100_pages_is_incomplete_and_marks_nothing_gone() {
    // 1,005 WABAs in pages of 10: the API serves pages 1 to 100 only, so 5 cannot be reached.
    let (app, finedu) = with_bsp(FineduState::fleet(1_005, 0), 10).await;
    let r = app.poll().await;
    let b = bsp(&r);
    assert_eq!(b.wabas, 1_000);
    assert_eq!(finedu.request_count(), 100, "never asks for page 101");
    assert_eq!(
        b.outcome,
        PollOutcome::Partial,
        "an incomplete walk is not ok"
    );
    let f = b
        .failures
        .iter()
        .find(|f| f.error.reason() == "listing_truncated")
        .unwrap_or_else(|| panic!("the cap is reported: {:?}", b.failures));
    let text = f.error.to_string();
    assert!(
        text.contains("1005") && text.contains("page_size"),
        "{text}"
    );

    // Five new WABAs at the head of the list push the last five seen past page 100: they are
    // not gone, only out of reach.
    finedu.with_state(|s| {
        for i in 0..5u64 {
            let id = (590_000_000_000_001u64 + i).to_string();
            s.add_waba(&id, "Newcomer");
            let w = s.wabas.pop().expect("just added");
            s.wabas.insert(0, w);
        }
    });
    let r = app.poll().await;
    assert!(gone(bsp(&r)).is_empty(), "{:?}", gone(bsp(&r)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_page_before_the_announced_last_page_is_not_a_complete_walk() {
    let (app, finedu) = with_bsp(FineduState::fleet(7, 1), 3).await;
    let r = app.poll().await;
    assert_eq!(bsp(&r).wabas, 7);
    // Page 2 of 3 comes back empty while total and pages still say 7 and 3.
    finedu.with_state(|s| s.faults.push(FineduFault::EmptyPage(2)));
    let r = app.poll().await;
    assert!(gone(bsp(&r)).is_empty(), "{:?}", gone(bsp(&r)));
    assert!(bsp(&r).anomalies > 0, "the short walk is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_is_retried_by_one_layer_and_every_request_is_charged() {
    let app = TestApp::spawn(one_waba(2), &format!("wabas = [\"{WABA1}\"]")).await;
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(FaultTarget::Any, FaultKind::HtmlError(500)));
    });
    let poller = app.poller().await;
    let report = poller.poll_once().await;
    assert_eq!(report.sources[0].outcome, PollOutcome::Failed);
    let requests = app.sim.http_requests();
    // RetryPolicy::fast(): one attempt and three retries.
    assert!(requests <= 4, "{requests} POSTs for one batch");
    assert_eq!(
        u64::from(poller.calls_last_hour("main", WABA1)),
        requests,
        "every request is charged to the WABA's quota"
    );
    poller.store().close().await;
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
}

/// Runs `args`, reads `keep` bytes of its output and closes the pipe, as `| head -c` does.
fn run_with_closed_stdout(app: &TestApp, args: &[&str], keep: usize) -> std::process::Output {
    let mut child = bin()
        .arg("--config")
        .arg(&app.config_path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; keep];
    stdout.read_exact(&mut buf).expect("some output");
    drop(stdout);
    child.wait_with_output().expect("exits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_command_quietly() {
    let app = TestApp::spawn(one_waba(400), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    for args in [
        &["status", "--json"][..],
        &["history", "--json"],
        &["status"],
    ] {
        let out = run_with_closed_stdout(&app, args, 100);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_since_a_huge_duration_never_panics() {
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    // The longest duration accepted reaches back before any record: everything.
    let out = app.cli(&["history", "--json", "--since", "36500d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(!v.as_array().expect("array").is_empty());
    // Beyond it: a clear argument error, not a panic.
    let out = app.cli(&["history", "--since", "99999999d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--since") && !err.contains("panicked"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_accepts_a_display_number_and_says_when_an_id_is_unknown() {
    let app = TestApp::spawn(one_waba(2), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    let status = app.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let phone = v
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["kind"] == "phone_number")
        .expect("a number")
        .clone();
    let id = phone["id"].as_str().expect("id");
    let display = phone["display_phone_number"].as_str().expect("display");
    assert!(display.contains(' ') || display.contains('-'), "{display}");

    let by_id = app.cli(&["history", "--json", "--id", id]);
    let by_display = app.cli(&["history", "--json", "--id", display]);
    assert!(by_display.status.success());
    let a: serde_json::Value = serde_json::from_slice(&by_id.stdout).expect("json");
    let b: serde_json::Value = serde_json::from_slice(&by_display.stdout).expect("json");
    assert!(!a.as_array().expect("array").is_empty());
    assert_eq!(a, b, "the display number finds the same history");
    // Digits only, as people paste them.
    let digits: String = display.chars().filter(char::is_ascii_digit).collect();
    let by_digits = app.cli(&["history", "--json", "--id", &digits]);
    let c: serde_json::Value = serde_json::from_slice(&by_digits.stdout).expect("json");
    assert_eq!(a, c);

    let unknown = app.cli(&["history", "--id", "+44 20 7946 0123"]);
    assert_eq!(unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("+44 20 7946 0123") && err.contains("no"),
        "{err}"
    );
}

#[test]
fn demo_help_lists_only_what_the_demo_uses() {
    let out = bin().args(["demo", "--help"]).output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("--dir") && help.contains("--for"), "{help}");
    assert!(!help.contains("--config"), "{help}");
}
