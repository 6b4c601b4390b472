//! The Finedu BSP as a second source: paging, mapping, overlap with Meta, faults — against the
//! project's simulator of its API over loopback.

use crate::helpers::{TestApp, one_waba};
use waba_monitor::sim::{FineduFault, FineduSim, FineduState, SimState};
use waba_monitor::sources::PollOutcome;

pub(crate) const BSP_TOKEN: &str = "finedu-token-for-tests-123456";
const W1: &str = "200000000000001";

pub(crate) async fn with_bsp(
    meta: SimState,
    meta_targets: &str,
    bsp: FineduState,
    page_size: u32,
) -> (TestApp, FineduSim) {
    let finedu = FineduSim::start(bsp, BSP_TOKEN).await.expect("finedu sim");
    let app = TestApp::spawn_with_extra(
        meta,
        meta_targets,
        &format!(
            "[[bsp]]\nkind = \"finedu\"\nname = \"finedu-main\"\nbase_url = \"{}\"\ntoken_file = \"bsp-token\"\npage_size = {page_size}\nrequest_timeout = \"2s\"\n",
            finedu.url()
        ),
    )
    .await;
    app.write_secret("bsp-token", BSP_TOKEN);
    (app, finedu)
}

fn bsp_report(r: &waba_monitor::poller::CycleReport) -> &waba_monitor::poller::SourceReport {
    r.sources
        .iter()
        .find(|s| s.source == "finedu-main")
        .expect("the BSP source reported")
}

#[tokio::test]
async fn every_page_is_walked_and_the_bsp_numbers_become_targets_labelled_by_source() {
    let (app, finedu) = with_bsp(
        one_waba(1),
        &format!("wabas = [\"{W1}\"]"),
        FineduState::fleet(7, 2),
        3,
    )
    .await;
    let r = app.poll().await;
    let b = bsp_report(&r);
    assert_eq!(b.outcome, PollOutcome::Ok, "{:?}", b.failures);
    assert_eq!((b.wabas, b.phones), (7, 14));
    assert_eq!(finedu.request_count(), 3, "pages of 3: 3 + 3 + 1");
    for q in finedu.requests() {
        assert_eq!(
            q.authorization.as_deref(),
            Some(format!("Bearer {BSP_TOKEN}").as_str())
        );
        assert!(q.query.contains("pageSize=3"), "{}", q.query);
    }
    let store = app.store().await;
    let status = store.status().await.expect("status");
    let bsp_numbers: Vec<_> = status
        .iter()
        .filter(|e| e.kind == "phone_number" && e.source == "finedu-main")
        .collect();
    assert_eq!(bsp_numbers.len(), 14);
    let n = bsp_numbers[0];
    assert!(n.quality_rating.is_some() && n.status.is_some() && n.messaging_limit.is_some());
    assert!(n.display_phone_number.is_some() && n.verified_name.is_some() && n.waba_id.is_some());
    // createTime / updateTime, normalised to UTC.
    let updated = n.source_updated_at.as_deref().expect("update time kept");
    assert!(updated.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(updated).is_ok());
}

#[tokio::test]
async fn a_number_reported_by_meta_and_the_bsp_follows_meta_without_flapping() {
    let meta = one_waba(3);
    let mut bsp = FineduState::from_graph(&meta);
    // The BSP lags behind: it still says RED where Meta says GREEN.
    bsp.phone_mut("300000000000002").quality_rating = Some("RED".into());
    let (app, _finedu) = with_bsp(meta, &format!("wabas = [\"{W1}\"]"), bsp, 100).await;
    app.poll().await;
    let after_first = app.history_count().await;
    for _ in 0..3 {
        let r = app.poll().await;
        assert_eq!(r.changes(), 0, "the two views flapped: {:?}", r.sources);
    }
    assert_eq!(app.history_count().await, after_first);
    let store = app.store().await;
    let status = store.status().await.expect("status");
    let n = status
        .iter()
        .find(|e| e.id == "300000000000002")
        .expect("one target");
    assert_eq!(n.source, "main", "Meta's view wins");
    assert_eq!(n.quality_rating.as_deref(), Some("GREEN"));
    assert_eq!(
        status.iter().filter(|e| e.id == "300000000000002").count(),
        1
    );
}

#[tokio::test]
async fn paging_that_changes_mid_walk_records_nothing_gone() {
    let (app, finedu) = with_bsp(
        one_waba(1),
        &format!("wabas = [\"{W1}\"]"),
        FineduState::fleet(6, 2),
        2,
    )
    .await;
    app.poll().await;
    let before = app.history_count().await;
    finedu.with_state(|s| s.faults.push(FineduFault::ShrinkAfterPage(1)));
    let r = app.poll().await;
    let b = bsp_report(&r);
    assert!(b.anomalies >= 1, "the changed paging was counted");
    assert_eq!(
        app.history_count().await,
        before,
        "a shifting listing recorded a change"
    );
    // The next, stable walk sees the WABA really gone: it and its two numbers, once.
    let r = app.poll().await;
    let gone: Vec<_> = bsp_report(&r)
        .changes
        .iter()
        .filter(|c| c.field == "presence" && c.new.as_deref() == Some("gone"))
        .map(|c| c.kind.as_str())
        .collect();
    assert_eq!(
        gone.iter().filter(|k| **k == "phone_number").count(),
        2,
        "{gone:?}"
    );
    assert_eq!(gone.iter().filter(|k| **k == "waba").count(), 1, "{gone:?}");
    let r = app.poll().await;
    assert_eq!(bsp_report(&r).changes.len(), 0, "gone recorded twice");
}

#[tokio::test]
async fn an_error_page_a_malformed_body_and_a_401_change_nothing_and_a_401_makes_it_blind() {
    let (app, finedu) = with_bsp(
        one_waba(1),
        &format!("wabas = [\"{W1}\"]"),
        FineduState::fleet(2, 2),
        100,
    )
    .await;
    app.poll().await;
    let before = app.history_count().await;
    let first_bsp_phone = "600000000000001";
    finedu.with_state(|s| {
        s.phone_mut(first_bsp_phone).quality_rating = Some("RED".into());
        s.faults.push(FineduFault::HtmlError {
            status: 502,
            page: None,
        });
    });
    let r = app.poll().await;
    assert_eq!(bsp_report(&r).outcome, PollOutcome::Failed);
    assert_eq!(bsp_report(&r).failures[0].error.reason(), "bad_status");
    finedu.with_state(|s| {
        s.faults.clear();
        s.faults.push(FineduFault::Malformed { page: None });
    });
    let r = app.poll().await;
    assert_eq!(bsp_report(&r).failures[0].error.reason(), "malformed");
    assert_eq!(app.history_count().await, before);
    finedu.with_state(|s| {
        s.faults.clear();
        s.faults.push(FineduFault::Unauthorized);
    });
    let r = app.poll().await;
    assert_eq!(
        bsp_report(&r).failures[0].error.class(),
        waba_monitor::sources::graph::ErrorClass::Auth
    );
    assert_eq!(r.alerts, 1, "monitoring blind for the BSP source");
    assert_eq!(app.history_count().await, before);
    // Back to normal: the RED is recorded once, the source sees again.
    finedu.with_state(|s| s.faults.clear());
    let r = app.poll().await;
    assert_eq!(bsp_report(&r).changes.len(), 1);
}
