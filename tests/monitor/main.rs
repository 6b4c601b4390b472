//! End-to-end tests of polling and history: the real poller, a real SQLite file in a temp dir,
//! and the Graph API simulated over loopback HTTP in Meta's shapes.

mod alertmanager;
mod alerts;
mod bsp;
mod cli;
mod config_check;
mod daemon;
mod email_format;
mod failover;
mod faults;
mod fleet_api;
mod heartbeat;
mod helpers;
mod hostile;
mod http;
mod http_load;
mod install;
mod mail_safety;
mod packaging;
mod page;
mod quota;
mod receivers;
mod reload;
mod routes;
mod service;
mod smtp;
mod templates;
mod tidy;
mod trust;
mod webhook_events;
mod webhook_subscriptions;
mod webhooks;
mod whatomate;

use helpers::{TOKEN, TestApp, one_waba};
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, SimState};
use waba_monitor::sources::PollOutcome;
use waba_monitor::sources::graph::ErrorClass;
use waba_monitor::store::HistoryFilter;

const BUSINESS: &str = "100000000000001";
const WABA1: &str = "200000000000001";

fn phone_id(n: u64) -> String {
    (300_000_000_000_001u64 + n).to_string()
}

#[tokio::test]
async fn discovery_from_a_business_finds_owned_and_client_wabas_and_all_their_numbers() {
    let mut state = SimState::fleet(3, 4);
    // A client WABA shared with the portfolio: reached through client_whatsapp_business_accounts.
    state.add_waba(
        Some((BUSINESS, waba_monitor::sim::Relation::Client)),
        "200000000000099",
        "Client WABA",
    );
    state.add_phone(
        "200000000000099",
        "399999999999999",
        "+49 30 1234567",
        "Client Line",
    );
    let app = TestApp::spawn(state, &format!("businesses = [\"{BUSINESS}\"]")).await;

    let report = app.poll().await;
    let s = &report.sources[0];
    assert_eq!(s.outcome, PollOutcome::Ok, "{:?}", s.failures);
    assert_eq!((s.wabas, s.phones), (4, 13));
    // One request for the business: everything came through field expansion.
    assert_eq!(s.calls, 1);

    let store = app.store().await;
    let status = store.status().await.expect("status");
    let client_line = status
        .iter()
        .find(|e| e.id == "399999999999999")
        .expect("client number present");
    assert_eq!(client_line.waba_id.as_deref(), Some("200000000000099"));
    assert_eq!(client_line.name.as_deref(), Some("Client WABA"));
    let waba = status.iter().find(|e| e.id == WABA1).expect("waba");
    assert_eq!(waba.business_id.as_deref(), Some(BUSINESS));
    assert_eq!(
        status.iter().filter(|e| e.kind == "phone_number").count(),
        13
    );
}

#[tokio::test]
async fn a_waba_with_250_numbers_is_read_through_nested_paging_exactly_once() {
    let app = TestApp::spawn(one_waba(250), &format!("wabas = [\"{WABA1}\"]")).await;
    let report = app.poll().await;
    let s = &report.sources[0];
    assert_eq!(s.outcome, PollOutcome::Ok, "{:?}", s.failures);
    assert_eq!(s.phones, 250);
    // One batch item for the WABA with its first 100 numbers, then two paging links.
    assert_eq!(s.calls, 3);

    let store = app.store().await;
    let status = store.status().await.expect("status");
    let mut ids: Vec<_> = status
        .iter()
        .filter(|e| e.kind == "phone_number")
        .map(|e| e.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 250);
    assert!(
        status
            .iter()
            .all(|e| e.kind == "waba" || e.waba_id.as_deref() == Some(WABA1))
    );

    // The token travelled in the header only, even though Meta's paging links carry it.
    let reqs = app.sim.requests();
    assert!(reqs.len() >= 3);
    for r in &reqs {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(
            !r.query.contains("access_token"),
            "token in URL: {}",
            r.query
        );
        assert!(!r.body.contains(TOKEN), "token in body");
    }
}

#[tokio::test]
async fn one_hundred_twenty_unrelated_numbers_are_fetched_in_batches_of_at_most_fifty() {
    let state = SimState::fleet(120, 1);
    let ids: Vec<String> = (0..120).map(phone_id).collect();
    let app = TestApp::spawn(state, &format!("phone_numbers = {ids:?}")).await;
    let report = app.poll().await;
    let s = &report.sources[0];
    assert_eq!(s.outcome, PollOutcome::Ok, "{:?}", s.failures);
    assert_eq!(s.phones, 120);
    assert_eq!(s.calls, 120, "each batch item is one call");
    assert_eq!(s.requests, 3);
    let mut sizes: Vec<usize> = app.sim.requests().iter().map(|r| r.batch_items).collect();
    sizes.sort();
    assert_eq!(sizes, vec![20, 50, 50]);
}

#[tokio::test]
async fn an_unchanged_poll_writes_no_history_and_each_change_writes_exactly_one_row() {
    let app = TestApp::spawn(one_waba(5), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    let baseline = app.history_count().await;
    assert!(baseline > 0, "first sighting is recorded");

    app.poll().await;
    assert_eq!(
        app.history_count().await,
        baseline,
        "unchanged poll wrote history"
    );

    let target = phone_id(2);
    app.sim.with_state(|s| {
        s.phone_mut(&target).quality_rating = Some("RED".into());
    });
    let report = app.poll().await;
    assert_eq!(report.changes(), 1);
    assert_eq!(app.history_count().await, baseline + 1);
    app.poll().await;
    assert_eq!(app.history_count().await, baseline + 1);

    let store = app.store().await;
    let rows = store
        .history(&HistoryFilter {
            id: Some(target.clone()),
            ..Default::default()
        })
        .await
        .expect("history");
    assert_eq!(rows[0].field, "quality_rating");
    assert_eq!(rows[0].old.as_deref(), Some("GREEN"));
    assert_eq!(rows[0].new.as_deref(), Some("RED"));
}

#[tokio::test]
async fn unknown_enum_values_are_kept_verbatim_and_a_wrong_type_changes_nothing() {
    let app = TestApp::spawn(one_waba(2), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    let (a, b) = (phone_id(0), phone_id(1));
    app.sim.with_state(|s| {
        s.phone_mut(&a).status = Some("SHADOW_LIMITED".into());
        s.phone_mut(&b)
            .overrides
            .insert("quality_rating".into(), serde_json::json!(5));
    });
    let report = app.poll().await;
    assert_eq!(report.sources[0].anomalies, 2);
    let changes: Vec<_> = report.sources[0]
        .changes
        .iter()
        .map(|c| (c.target_id.clone(), c.field.clone(), c.new.clone()))
        .collect();
    assert_eq!(
        changes,
        vec![(
            a.clone(),
            "status".to_owned(),
            Some("SHADOW_LIMITED".to_owned())
        )]
    );
    let store = app.store().await;
    let status = store.status().await.expect("status");
    let b_row = status.iter().find(|e| e.id == b).expect("b");
    assert_eq!(
        b_row.quality_rating.as_deref(),
        Some("GREEN"),
        "kept last good value"
    );
}

#[tokio::test]
async fn a_restart_continues_history_without_duplicates_and_records_a_change_made_while_down_once()
{
    let app = TestApp::spawn(one_waba(3), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    let after_first = app.history_count().await;
    // "Restart": a new store connection and a new poller over the same file.
    app.poll().await;
    assert_eq!(app.history_count().await, after_first);

    // Changed while the daemon was down.
    let target = phone_id(1);
    app.sim
        .with_state(|s| s.phone_mut(&target).status = Some("FLAGGED".into()));
    app.poll().await;
    app.poll().await;
    assert_eq!(app.history_count().await, after_first + 1);
}

#[tokio::test]
async fn a_partial_listing_records_no_gone_number_and_a_complete_one_records_it_once() {
    let app = TestApp::spawn(one_waba(150), &format!("wabas = [\"{WABA1}\"]")).await;
    app.poll().await;
    let removed = phone_id(10);
    app.sim.with_state(|s| {
        s.remove_phone(&removed);
        s.add_fault(Fault::always(
            FaultTarget::edge_page(WABA1, "phone_numbers", 2),
            FaultKind::transient(),
        ));
    });
    let report = app.poll().await;
    assert_eq!(report.sources[0].outcome, PollOutcome::Partial);
    assert!(
        report.sources[0].changes.is_empty(),
        "partial listing changed: {:?}",
        report.sources[0].changes
    );

    app.sim.with_state(|s| s.faults.clear());
    let report = app.poll().await;
    let gone: Vec<_> = report.sources[0]
        .changes
        .iter()
        .filter(|c| c.field == "presence")
        .map(|c| (c.target_id.clone(), c.new.clone()))
        .collect();
    assert_eq!(gone, vec![(removed.clone(), Some("gone".to_owned()))]);
    let report = app.poll().await;
    assert!(report.sources[0].changes.is_empty(), "gone recorded twice");

    let store = app.store().await;
    let status = store.status().await.expect("status");
    assert!(
        !status
            .iter()
            .find(|e| e.id == removed)
            .expect("kept")
            .present
    );
}

#[tokio::test]
async fn every_error_class_fails_only_its_target_and_writes_no_history_for_it() {
    let cases: Vec<(FaultKind, ErrorClass)> = vec![
        (FaultKind::transient(), ErrorClass::Transient),
        (
            FaultKind::waba_rate_limited("x", 5),
            ErrorClass::RateLimited,
        ),
        (FaultKind::app_rate_limited(), ErrorClass::RateLimited),
        (FaultKind::token_expired(), ErrorClass::Auth),
        (FaultKind::permission_denied(), ErrorClass::Permission),
        (FaultKind::object_missing("x"), ErrorClass::NotFound),
        (
            FaultKind::graph_error(400, 368, "Temporarily blocked for policies violations"),
            ErrorClass::Permanent,
        ),
    ];
    for (kind, want) in cases {
        let ids: Vec<String> = (0..3).map(phone_id).collect();
        let app = TestApp::spawn(SimState::fleet(3, 1), &format!("phone_numbers = {ids:?}")).await;
        app.poll().await;
        let before = app.history_count().await;
        app.sim.with_state(|s| {
            // The faulty number "changes" too: a failed read must not record it.
            s.phone_mut(&ids[1]).quality_rating = Some("RED".into());
            s.phone_mut(&ids[2]).quality_rating = Some("YELLOW".into());
            s.add_fault(Fault::always(FaultTarget::object(&ids[1]), kind.clone()));
        });
        let report = app.poll().await;
        let s = &report.sources[0];
        assert_eq!(s.outcome, PollOutcome::Partial, "{kind:?}");
        assert_eq!(s.failures.len(), 1, "{kind:?}");
        assert_eq!(s.failures[0].id, ids[1]);
        assert_eq!(s.failures[0].error.class(), want, "{kind:?}");
        // Only the healthy number's change is recorded.
        assert_eq!(app.history_count().await, before + 1, "{kind:?}");
        assert_eq!(s.changes[0].target_id, ids[2]);
    }
}
