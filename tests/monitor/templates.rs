//! Template health, end to end: the real poller reads the simulator's templates (expanded in
//! the WABA read, further pages followed), the real SQLite store records their history, the
//! rules queue alerts, and the real delivery worker mails them to a real SMTP server.

use chrono::Utc;

use crate::helpers::{TestApp, one_waba};
use crate::smtp::SmtpSink;
use waba_monitor::model::TargetKind;
use waba_monitor::notify::delivery::Deliverer;
use waba_monitor::notify::mailer::Mailer;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, SimState};
use waba_monitor::store::HistoryFilter;

const WABA1: &str = "200000000000001";
const T1: &str = "800000000000001";

fn email_toml(port: u16) -> String {
    format!(
        "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"5s\"\nmax_age = \"1h\"\n"
    )
}

/// One WABA with one number and `n` templates (the first is `T1`, "template_0", en_US).
fn fleet(n: usize) -> SimState {
    let mut s = one_waba(1);
    s.add_templates(WABA1, n);
    s
}

struct Mail {
    app: TestApp,
    smtp: SmtpSink,
}

impl Mail {
    async fn start(state: SimState, meta_extra: &str) -> Mail {
        let smtp = SmtpSink::start().await;
        let app = TestApp::spawn_with_extra(
            state,
            &format!("wabas = [\"{WABA1}\"]\n{meta_extra}"),
            &email_toml(smtp.port()),
        )
        .await;
        Mail { app, smtp }
    }

    /// Delivers what is due; returns the bodies (with subjects) of the mails received since
    /// `before`.
    async fn deliver(&self, before: usize) -> Vec<(String, String)> {
        let cfg = self.app.config();
        let email = cfg.email.expect("email configured");
        Deliverer::new(
            self.app.store().await,
            Mailer::new(&email).expect("mailer"),
            &email,
            RetryPolicy::fast(),
        )
        .deliver_due(Utc::now())
        .await
        .expect("delivery pass");
        self.smtp
            .messages()
            .iter()
            .skip(before)
            .map(|m| (m.header("Subject").unwrap_or_default(), m.body()))
            .collect()
    }

    fn set(&self, id: &str, f: impl FnOnce(&mut waba_monitor::sim::SimTemplate)) {
        self.app.sim.with_state(|s| f(s.template_mut(id)));
    }

    async fn template_history(&self, id: &str) -> Vec<(String, Option<String>, Option<String>)> {
        let store = self.app.store().await;
        let page = store
            .history(&HistoryFilter {
                id: Some(id.to_owned()),
                since: None,
                limit: Some(100),
            })
            .await
            .expect("history");
        store.close().await;
        let mut rows: Vec<_> = page
            .into_iter()
            .map(|h| {
                assert_eq!(h.kind, "template");
                (h.field, h.old, h.new)
            })
            .collect();
        rows.reverse();
        rows
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_warns_naming_the_template_an_unpause_resolves_and_the_third_disables() {
    let m = Mail::start(fleet(3), "").await;
    let first = m.app.poll().await;
    assert_eq!(first.alerts, 0, "healthy templates seen first: no alert");

    m.set(T1, |t| t.status = "PAUSED".into());
    assert_eq!(m.app.poll().await.alerts, 1);
    let mails = m.deliver(0).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let (subject, body) = &mails[0];
    assert!(subject.contains("WARNING"), "{subject}");
    assert!(
        body.contains("template template_0 (en_US): status APPROVED → PAUSED"),
        "{body}"
    );
    assert!(
        body.contains(&format!("templates of WABA Fleet WABA 1 ({WABA1})")),
        "{body}"
    );
    assert!(body.contains("first pause"), "{body}");
    assert!(body.contains("until about"), "{body}");
    assert!(body.contains("132015"), "{body}");

    // Unpaused: resolved.
    m.set(T1, |t| t.status = "APPROVED".into());
    assert_eq!(m.app.poll().await.alerts, 1);
    let mails = m.deliver(1).await;
    assert!(mails[0].1.contains("RESOLVED"), "{}", mails[0].1);

    // The second pause says so; the third time Meta disables it: critical.
    m.set(T1, |t| t.status = "PAUSED".into());
    m.app.poll().await;
    let mails = m.deliver(2).await;
    assert!(mails[0].1.contains("second pause"), "{}", mails[0].1);
    m.set(T1, |t| t.status = "DISABLED".into());
    m.app.poll().await;
    let mails = m.deliver(3).await;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].0.contains("CRITICAL"), "{}", mails[0].0);
    assert!(mails[0].1.contains("PAUSED → DISABLED"), "{}", mails[0].1);
    assert!(mails[0].1.contains("132016"), "{}", mails[0].1);

    let statuses: Vec<Option<String>> = m
        .template_history(T1)
        .await
        .into_iter()
        .filter(|(f, _, _)| f == "status")
        .map(|(_, _, new)| new)
        .collect();
    assert_eq!(
        statuses,
        ["APPROVED", "PAUSED", "APPROVED", "PAUSED", "DISABLED"].map(|s| Some(s.to_owned()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_red_is_one_critical_and_an_unchanged_cycle_writes_no_template_history() {
    let m = Mail::start(fleet(5), "").await;
    m.app.poll().await;
    let after_first = m.app.history_count().await;
    m.app.poll().await;
    assert_eq!(
        m.app.history_count().await,
        after_first,
        "an unchanged cycle writes no history"
    );

    m.set(T1, |t| t.quality = Some("RED".into()));
    assert_eq!(m.app.poll().await.alerts, 1);
    m.app.poll().await;
    let mails = m.deliver(0).await;
    assert_eq!(mails.len(), 1, "one critical, not repeated: {mails:?}");
    assert!(mails[0].0.contains("CRITICAL"), "{}", mails[0].0);
    assert!(mails[0].1.contains("quality GREEN → RED"), "{}", mails[0].1);
    assert_eq!(m.app.history_count().await, after_first + 1);

    // Only the unhealthy template has a series of its own; the counts cover all five.
    let poller = m.app.poller().await;
    poller.sync_metrics().await;
    let text = poller.metrics().encode();
    poller.store().close().await;
    let own: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("waba_monitor_template_unhealthy{"))
        .collect();
    assert_eq!(own.len(), 1, "{text}");
    assert!(
        own[0].contains(&format!("template_id=\"{T1}\"")),
        "{}",
        own[0]
    );
    assert!(own[0].contains("score=\"RED\""), "{}", own[0]);
    assert!(
        text.contains(&format!(
            "waba_monitor_templates{{waba_id=\"{WABA1}\",status=\"APPROVED\"}} 5"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "waba_monitor_templates_quality{{waba_id=\"{WABA1}\",score=\"GREEN\"}} 4"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waba_with_250_templates_over_3_pages_records_all_of_them() {
    let m = Mail::start(fleet(250), "").await;
    m.app.sim.reset_counters();
    let report = m.app.poll().await;
    assert!(report.all_ok(), "{report:?}");
    // The first page came inside the WABA read; pages 2 and 3 are a call each.
    assert_eq!(m.app.sim.edge_calls("message_templates"), 2);
    let store = m.app.store().await;
    let all = store
        .templates(Some(WABA1), false)
        .await
        .expect("templates");
    store.close().await;
    assert_eq!(all.len(), 250);
    assert!(all.iter().all(|t| t.present));
    assert_eq!(report.alerts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_template_read_changes_nothing_and_never_marks_a_template_gone() {
    let m = Mail::start(fleet(250), "").await;
    m.app.poll().await;
    let before = m.app.history_count().await;

    // Page 3 fails, and a template of page 3 was deleted meanwhile: not seen, not "gone".
    m.app.sim.with_state(|s| {
        s.remove_template("800000000000250");
        s.add_fault(Fault::always(
            FaultTarget::edge_page(WABA1, "message_templates", 3),
            FaultKind::transient(),
        ));
    });
    let report = m.app.poll().await;
    assert_eq!(
        report.changes(),
        0,
        "a listing read part-way changes nothing: {report:?}"
    );
    assert_eq!(m.app.history_count().await, before);
    assert!(
        report.sources[0].failures.is_empty(),
        "the WABA's own state was read: {report:?}"
    );
    let store = m.app.store().await;
    assert_eq!(
        store
            .templates(Some(WABA1), false)
            .await
            .expect("templates")
            .iter()
            .filter(|t| t.present)
            .count(),
        250
    );
    store.close().await;

    // Once the listing reads to its end, the deleted template is recorded gone (no alert).
    m.app.sim.with_state(|s| s.faults.clear());
    let report = m.app.poll().await;
    assert_eq!(report.changes(), 1, "{report:?}");
    assert_eq!(report.alerts, 0);
    assert_eq!(
        m.template_history("800000000000250").await.last().cloned(),
        Some((
            "presence".to_owned(),
            Some("present".to_owned()),
            Some("gone".to_owned())
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_first_seen_paused_alerts_once_and_old_rejections_do_not() {
    let mut state = fleet(3);
    state.template_mut(T1).status = "PAUSED".into();
    state.template_mut("800000000000002").status = "REJECTED".into();
    let m = Mail::start(state, "").await;
    assert_eq!(m.app.poll().await.alerts, 1);
    assert_eq!(m.app.poll().await.alerts, 0);
    let mails = m.deliver(0).await;
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].1.contains("status PAUSED (first seen)"),
        "{}",
        mails[0].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_read_every_nth_cycle_or_not_at_all() {
    let m = Mail::start(fleet(3), "templates_every = 3").await;
    let poller = m.app.poller().await;
    m.app.sim.reset_counters();
    for _ in 0..3 {
        poller.poll_once().await;
    }
    poller.store().close().await;
    let expanded = m
        .app
        .sim
        .requests()
        .iter()
        .filter(|r| asks_templates(r))
        .count();
    assert_eq!(expanded, 1, "one cycle in three asks for templates");

    let off = Mail::start(fleet(3), "templates = false").await;
    off.app.poll().await;
    assert!(
        !off.app.sim.requests().iter().any(asks_templates),
        "templates = false never asks"
    );
    let store = off.app.store().await;
    assert!(
        store
            .templates(None, false)
            .await
            .expect("templates")
            .is_empty()
    );
    let kinds = store
        .history(&HistoryFilter {
            id: None,
            since: None,
            limit: Some(1000),
        })
        .await;
    store.close().await;
    assert!(
        kinds
            .expect("history")
            .iter()
            .all(|h| h.kind != TargetKind::Template.as_str())
    );
}

/// Whether a request to the simulator asked for templates (expanded or as the edge).
fn asks_templates(r: &waba_monitor::sim::RecordedRequest) -> bool {
    r.path.contains("message_templates")
        || r.query.contains("message_templates")
        || r.body.contains("message_templates")
        || r.batch_relative_urls
            .iter()
            .any(|u| u.contains("message_templates"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_template_problems_and_status_templates_lists_them_all() {
    let mut state = fleet(3);
    state.template_mut(T1).status = "PAUSED".into();
    state.template_mut("800000000000002").quality = Some("YELLOW".into());
    let app = TestApp::spawn(state, &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;

    let out = app.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let section = text
        .split("Templates that stop sends or are at risk (2;")
        .nth(1)
        .unwrap_or_else(|| panic!("no template section:\n{text}"));
    assert!(section.contains(T1) && section.contains("PAUSED"), "{text}");
    assert!(section.contains("YELLOW"), "{text}");
    assert!(!section.contains("800000000000003"), "healthy: {text}");

    let out = app.cli(&["status", "--templates", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let all = v.as_array().expect("array");
    assert_eq!(all.len(), 3);
    for key in [
        "id", "waba_id", "name", "language", "status", "quality", "category", "present",
    ] {
        assert!(all[0].get(key).is_some(), "{key} missing: {}", all[0]);
    }

    let out = app.cli(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("templates: read every cycle, inside each WABA's read"),
        "{text}"
    );
}
