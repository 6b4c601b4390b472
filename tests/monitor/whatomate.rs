//! `[[whatomate]]` (issue 16): the accounts a Whatomate instance lists are polled through the
//! first `[[meta]]` source every cycle; one it drops stops being polled (its history kept); an
//! outage keeps the last list; the API key travels only in the `X-API-Key` header.

use crate::helpers::TestApp;
use waba_monitor::sim::{RecordedRequest, SimState, WhatomateSim, WhatomateState};

const WABA1: &str = "200000000000001";
/// A WABA the config does not list, with two numbers connected in Whatomate.
const WABA9: &str = "200000000000009";
const P91: &str = "300000000000091";
const P92: &str = "300000000000092";
const KEY: &str = "wm-api-key-0123456789-abcdefghijklmnop";

fn fleet() -> SimState {
    let mut s = SimState::fleet(1, 2);
    s.add_waba(None, WABA9, "Whatomate WABA");
    s.add_phone(WABA9, P91, "+1 555-000-0091", "Ninety One");
    s.add_phone(WABA9, P92, "+1 555-000-0092", "Ninety Two");
    s
}

async fn setup() -> (WhatomateSim, TestApp) {
    let mut state = WhatomateState::default();
    state.add(P91, WABA9);
    state.add(P92, WABA9);
    // One account a page: the client must follow the paging.
    state.max_page = Some(1);
    let wm = WhatomateSim::start(state, KEY)
        .await
        .expect("whatomate sim");
    let extra = format!(
        "[[whatomate]]\nname = \"wm\"\nbase_url = \"{}\"\napi_key_file = \"wm-key\"\nrequest_timeout = \"2s\"\n",
        wm.url()
    );
    let app = TestApp::spawn_with_extra(fleet(), &format!("wabas = [\"{WABA1}\"]"), &extra).await;
    app.write_secret("wm-key", KEY);
    (wm, app)
}

fn asked(reqs: &[RecordedRequest], id: &str) -> usize {
    reqs.iter()
        .filter(|r| r.path.ends_with(id) || r.body.contains(id) || r.query.contains(id))
        .count()
}

fn key_only_in_header(wm: &WhatomateSim) {
    let reqs = wm.requests();
    assert!(!reqs.is_empty());
    for r in reqs {
        assert_eq!(r.path, "/api/accounts");
        assert_eq!(r.api_key.as_deref(), Some(KEY), "the key in X-API-Key");
        assert!(!r.query.contains(KEY), "the key in the URL: {}", r.query);
        assert_eq!(r.authorization, None);
    }
}

#[tokio::test]
async fn whatomate_accounts_are_polled_and_a_dropped_one_stops_with_its_history_kept() {
    let (wm, app) = setup().await;
    let poller = app.poller().await;
    poller.poll_once().await;
    let status = poller.store().status().await.expect("status");
    for id in [P91, P92] {
        let e = status.iter().find(|e| e.id == id);
        let e = e.unwrap_or_else(|| panic!("{id} recorded: {status:?}"));
        assert_eq!(e.source, "main");
    }
    // Paged: one account a page, so two pages were read.
    assert!(
        wm.requests().iter().any(|r| r.query.contains("page=2")),
        "{:?}",
        wm.requests()
    );
    key_only_in_header(&wm);

    wm.with_state(|s| s.remove(P92));
    let before = app.sim.requests();
    poller.poll_once().await;
    let after = app.sim.requests();
    assert!(asked(&after, P91) > asked(&before, P91), "P91 still polled");
    assert_eq!(
        asked(&after, P92),
        asked(&before, P92),
        "P92 polled after Whatomate dropped it"
    );
    let status = poller.store().status().await.expect("status");
    assert!(status.iter().any(|e| e.id == P92), "P92's state kept");
    let history = poller
        .store()
        .history(&waba_monitor::store::HistoryFilter {
            id: Some(P92.to_owned()),
            ..Default::default()
        })
        .await
        .expect("history");
    assert!(!history.is_empty(), "P92's history kept");
    poller.store().close().await;
}

#[tokio::test]
async fn a_whatomate_outage_keeps_polling_the_last_list() {
    let (wm, app) = setup().await;
    let poller = app.poller().await;
    poller.poll_once().await;
    wm.with_state(|s| s.fail_with = Some(503));
    let before = app.sim.requests();
    poller.poll_once().await;
    let after = app.sim.requests();
    for id in [P91, P92] {
        assert!(
            asked(&after, id) > asked(&before, id),
            "{id} polled during the outage"
        );
    }
    let metrics = poller.metrics().encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("waba_monitor_poll_failures_total")
                && l.contains("source=\"wm\"")),
        "{metrics}"
    );
    poller.store().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whatomate_key_never_reaches_the_logs() {
    let (wm, app) = setup().await;
    let out = app.cli(&["poll-once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wm.with_state(|s| s.fail_with = Some(401));
    let failed = app.cli(&["poll-once"]);
    for o in [&out, &failed] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!text.contains(KEY), "the key in the output: {text}");
    }
    let text = String::from_utf8_lossy(&failed.stderr);
    assert!(text.contains("could not read Whatomate"), "{text}");
    assert!(
        !text.contains("/api/accounts"),
        "only the host is logged: {text}"
    );
    key_only_in_header(&wm);
    // A fresh poll-once after the outage had no last list: the numbers are kept, not gone.
    let s = app.store().await;
    let status = s.status().await.expect("status");
    assert!(status.iter().any(|e| e.id == P91));
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_api_shows_whatomate_numbers_as_managed_by_whatomate() {
    let (_wm, app) = setup().await;
    let d = crate::helpers::Daemon::start(&app, waba_monitor::daemon::RunOptions::default()).await;
    let base = d.base.clone();
    let http = reqwest::Client::new();
    let get = |id: &str| {
        let req = http.get(format!("{base}/api/accounts/{id}"));
        async move {
            let resp = req.send().await.expect("request");
            let v: serde_json::Value = resp.json().await.expect("json");
            v
        }
    };
    let v = get(P91).await;
    assert_eq!(v["data"]["managed_by"], "whatomate", "{v}");
    let v = get("300000000000001").await;
    assert_eq!(v["data"]["managed_by"], "config", "{v}");
    let list = http
        .get(format!("{base}/api/accounts"))
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("body");
    assert!(list.contains("\"managed_by\":\"whatomate\""), "{list}");
    assert!(!list.contains(KEY));
    d.stop().await;
}
