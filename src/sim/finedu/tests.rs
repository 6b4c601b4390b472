//! The simulator over real loopback HTTP, driven with reqwest like the BSP source drives it.

// A failed unwrap is a failed test, which is what a test wants.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::header;
use serde_json::{Value, json};

use super::state::{BASE_STAMP, stamp};
use super::*;
use crate::sim::SimState;

const TOKEN: &str = "finedu-test-token";

struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        text: response.text().await.unwrap(),
    }
}

/// GET the listing with this query string and the right token.
async fn list(sim: &FineduSim, query: &str) -> Answer {
    let url = format!("{}{ACCOUNTS_PATH}?{query}", sim.url());
    send(reqwest::Client::new().get(url).bearer_auth(TOKEN)).await
}

async fn start(state: FineduState) -> FineduSim {
    FineduSim::start(state, TOKEN).await.unwrap()
}

fn waba_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["wabaId"].as_str().unwrap().to_owned())
        .collect()
}

/// (total, size, current, pages) of a page.
fn paging(page: &Value) -> (u64, u64, u64, u64) {
    let n = |key: &str| page[key].as_u64().unwrap();
    (n("total"), n("size"), n("current"), n("pages"))
}

#[tokio::test]
async fn walking_three_pages_to_the_end_lists_every_waba_once_with_all_its_numbers() {
    let sim = start(FineduState::fleet(7, 2)).await;
    let mut seen = Vec::new();
    let mut page_no = 1;
    loop {
        let answer = list(&sim, &format!("pageNo={page_no}&pageSize=3")).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(answer.content_type.starts_with("application/json"));
        let page = answer.json();
        assert_eq!(paging(&page), (7, 3, page_no, 3));
        for waba in page["data"].as_array().unwrap() {
            let phones = waba["businessPhoneNumbers"].as_array().unwrap();
            assert_eq!(phones.len(), 2);
            for phone in phones {
                assert_eq!(phone["wabaId"], waba["wabaId"]);
                assert_eq!(phone["qualityRating"], "GREEN");
            }
        }
        seen.extend(waba_ids(&page));
        if page_no >= paging(&page).3 {
            break;
        }
        page_no += 1;
    }
    let expected: Vec<String> = (1..=7)
        .map(|n| (500_000_000_000_000u64 + n).to_string())
        .collect();
    assert_eq!(seen, expected, "every WABA exactly once, in order");
    assert_eq!(sim.request_count(), 3);
    for request in sim.requests() {
        assert_eq!(request.path, ACCOUNTS_PATH);
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(request.query.contains("pageSize=3"), "{}", request.query);
    }
}

#[tokio::test]
async fn a_page_past_the_end_is_empty_but_keeps_the_true_totals() {
    let sim = start(FineduState::fleet(4, 1)).await;
    let page = list(&sim, "pageNo=9&pageSize=2").await.json();
    assert_eq!(page["data"], json!([]));
    assert_eq!(paging(&page), (4, 2, 9, 2));
}

#[tokio::test]
async fn without_parameters_the_first_page_of_ten_is_served() {
    let sim = start(FineduState::fleet(12, 0)).await;
    let page = list(&sim, "").await.json();
    assert_eq!(paging(&page), (12, 10, 1, 2));
    assert_eq!(waba_ids(&page).len(), 10);
    let page = list(&sim, "pageNo=&pageSize=").await.json();
    assert_eq!(
        paging(&page),
        (12, 10, 1, 2),
        "empty values take the defaults"
    );
}

#[tokio::test]
async fn an_empty_account_has_zero_pages_and_no_data() {
    let sim = start(FineduState::default()).await;
    let page = list(&sim, "pageNo=1&pageSize=10").await.json();
    assert_eq!(page["data"], json!([]));
    assert_eq!(paging(&page), (0, 10, 1, 0));
}

#[tokio::test]
async fn the_review_status_filter_counts_and_pages_only_matching_wabas() {
    let mut state = FineduState::fleet(5, 1);
    state.waba_mut("500000000000002").account_review_status = Some("PENDING".to_owned());
    state.waba_mut("500000000000004").account_review_status = Some("REJECTED".to_owned());
    state.waba_mut("500000000000005").account_review_status = None;
    let sim = start(state).await;

    let approved = list(&sim, "accountReviewStatus=APPROVED&pageSize=1&pageNo=2").await;
    let approved = approved.json();
    assert_eq!(paging(&approved), (2, 1, 2, 2));
    assert_eq!(waba_ids(&approved), ["500000000000003"]);

    let pending = list(&sim, "accountReviewStatus=PENDING").await.json();
    assert_eq!(waba_ids(&pending), ["500000000000002"]);
    assert_eq!(pending["data"][0]["accountReviewStatus"], "PENDING");

    let all = list(&sim, "").await.json();
    assert_eq!(paging(&all).0, 5, "no filter lists every WABA");
    assert_eq!(all["data"][4]["accountReviewStatus"], Value::Null);
}

#[tokio::test]
async fn an_unknown_review_status_is_refused_with_400() {
    let sim = start(FineduState::fleet(1, 1)).await;
    for status in ["approved", "DEFERRED"] {
        let answer = list(&sim, &format!("accountReviewStatus={status}")).await;
        assert_eq!(answer.status, 400, "{status}");
        let body = answer.json();
        assert_eq!(body["code"], 400);
        assert_eq!(body["data"], Value::Null);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("accountReviewStatus")
        );
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_gets_401_in_the_bsp_envelope() {
    let sim = start(FineduState::fleet(1, 1)).await;
    let url = format!("{}{ACCOUNTS_PATH}", sim.url());
    let client = reqwest::Client::new();
    let attempts = [
        client.get(&url),
        client.get(&url).bearer_auth("wrong-token"),
        client.get(&url).header(header::AUTHORIZATION, TOKEN),
        client
            .get(&url)
            .header(header::AUTHORIZATION, format!("Basic {TOKEN}")),
    ];
    for attempt in attempts {
        let answer = send(attempt).await;
        assert_eq!(answer.status, 401);
        assert_eq!(
            answer.json(),
            json!({ "code": 401, "message": "Unauthorized", "data": null })
        );
    }
    assert_eq!(sim.request_count(), 4);
    assert_eq!(sim.requests()[0].authorization, None);
}

#[tokio::test]
async fn a_page_size_or_page_number_out_of_range_gets_400() {
    let sim = start(FineduState::fleet(1, 1)).await;
    for (query, param) in [
        ("pageSize=0", "pageSize"),
        ("pageSize=101", "pageSize"),
        ("pageSize=-1", "pageSize"),
        ("pageSize=ten", "pageSize"),
        ("pageNo=0", "pageNo"),
        ("pageNo=101", "pageNo"),
    ] {
        let answer = list(&sim, query).await;
        assert_eq!(answer.status, 400, "{query}");
        let body = answer.json();
        assert_eq!(body["code"], 400, "{query}");
        assert!(body["message"].as_str().unwrap().contains(param), "{query}");
    }
    let edge = list(&sim, "pageNo=100&pageSize=100").await;
    assert_eq!(edge.status, 200, "100 is still in range");
}

#[tokio::test]
async fn another_path_is_404_and_another_method_is_405() {
    let sim = start(FineduState::fleet(1, 1)).await;
    let client = reqwest::Client::new();
    let other = format!("{}/v1/whatsapp/businessAccount", sim.url());
    let answer = send(client.get(other).bearer_auth(TOKEN)).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["code"], 404);
    let post = format!("{}{ACCOUNTS_PATH}", sim.url());
    let answer = send(client.post(post).bearer_auth(TOKEN)).await;
    assert_eq!(answer.status, 405);
}

#[tokio::test]
async fn the_unauthorized_fault_refuses_even_the_right_token_until_cleared() {
    let sim = start(FineduState::fleet(1, 1)).await;
    sim.with_state(|s| s.faults.push(FineduFault::Unauthorized));
    for _ in 0..2 {
        assert_eq!(list(&sim, "").await.status, 401);
    }
    sim.with_state(|s| s.faults.clear());
    assert_eq!(list(&sim, "").await.status, 200);
}

#[tokio::test]
async fn an_html_error_fault_hits_its_page_only_or_every_page() {
    let sim = start(FineduState::fleet(4, 1)).await;
    sim.with_state(|s| {
        s.faults.push(FineduFault::HtmlError {
            status: 502,
            page: Some(2),
        });
    });
    assert_eq!(list(&sim, "pageNo=1&pageSize=2").await.status, 200);
    let answer = list(&sim, "pageNo=2&pageSize=2").await;
    assert_eq!(answer.status, 502);
    assert!(answer.content_type.starts_with("text/html"));
    assert!(answer.text.contains("502 Bad Gateway"), "{}", answer.text);
    assert!(serde_json::from_str::<Value>(&answer.text).is_err());
    assert_eq!(
        list(&sim, "pageNo=2&pageSize=2").await.status,
        502,
        "the fault stays until removed"
    );

    sim.with_state(|s| {
        s.faults = vec![FineduFault::HtmlError {
            status: 503,
            page: None,
        }];
    });
    assert_eq!(list(&sim, "").await.status, 503);
    assert_eq!(list(&sim, "pageNo=2").await.status, 503);
    sim.with_state(|s| s.faults.clear());
    assert_eq!(list(&sim, "pageNo=2&pageSize=2").await.status, 200);
}

#[tokio::test]
async fn a_malformed_fault_sends_a_200_whose_body_is_not_json() {
    // The demo fleet has a non-ASCII name, so the cut must respect character boundaries.
    let sim = start(FineduState::demo()).await;
    sim.with_state(|s| s.faults.push(FineduFault::Malformed { page: Some(1) }));
    let answer = list(&sim, "pageNo=1").await;
    assert_eq!(answer.status, 200);
    assert!(answer.text.starts_with("{\""), "{}", answer.text);
    assert!(serde_json::from_str::<Value>(&answer.text).is_err());
    assert_eq!(
        list(&sim, "pageNo=2").await.json()["data"],
        json!([]),
        "other pages stay intact"
    );
    sim.with_state(|s| s.faults = vec![FineduFault::Malformed { page: None }]);
    assert!(serde_json::from_str::<Value>(&list(&sim, "pageNo=2").await.text).is_err());
}

#[tokio::test]
async fn shrink_after_page_lowers_the_totals_of_later_pages_once() {
    let sim = start(FineduState::fleet(5, 1)).await;
    sim.with_state(|s| s.faults.push(FineduFault::ShrinkAfterPage(1)));
    let first = list(&sim, "pageNo=1&pageSize=2").await.json();
    assert_eq!(paging(&first), (5, 2, 1, 3));
    assert!(
        sim.with_state(|s| s.faults.is_empty()),
        "the fault removed itself"
    );
    let second = list(&sim, "pageNo=2&pageSize=2").await.json();
    assert_eq!(paging(&second), (4, 2, 2, 2));
    let third = list(&sim, "pageNo=3&pageSize=2").await.json();
    assert_eq!(third["data"], json!([]), "the last WABA is gone");
    let again = list(&sim, "pageNo=1&pageSize=2").await.json();
    assert_eq!(paging(&again).0, 4, "it acted only once");
}

#[tokio::test]
async fn grow_after_page_raises_the_totals_of_later_pages_once() {
    let sim = start(FineduState::fleet(4, 1)).await;
    sim.with_state(|s| s.faults.push(FineduFault::GrowAfterPage(2)));
    let first = list(&sim, "pageNo=1&pageSize=2").await.json();
    assert_eq!(paging(&first), (4, 2, 1, 2), "page 1 does not trigger it");
    let second = list(&sim, "pageNo=2&pageSize=2").await.json();
    assert_eq!(paging(&second), (4, 2, 2, 2));
    let third = list(&sim, "pageNo=3&pageSize=2").await.json();
    assert_eq!(paging(&third), (5, 2, 3, 3));
    let added = &third["data"][0];
    assert_eq!(added["wabaId"], "599000000000001");
    assert_eq!(added["businessPhoneNumbers"].as_array().unwrap().len(), 1);
    list(&sim, "pageNo=2&pageSize=2").await;
    assert_eq!(sim.with_state(|s| s.wabas.len()), 5, "it acted only once");
}

#[tokio::test]
async fn a_hang_fault_delays_the_answer_until_removed() {
    let sim = start(FineduState::fleet(1, 1)).await;
    let hang = Duration::from_millis(300);
    sim.with_state(|s| s.faults.push(FineduFault::Hang(hang)));
    let began = Instant::now();
    let answer = list(&sim, "").await;
    assert!(
        began.elapsed() >= hang,
        "answered after {:?}",
        began.elapsed()
    );
    assert_eq!(answer.status, 200, "a hang still answers normally");

    let url = format!("{}{ACCOUNTS_PATH}", sim.url());
    let impatient = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(impatient.unwrap_err().is_timeout());
    sim.with_state(|s| s.faults.clear());
    let began = Instant::now();
    list(&sim, "").await;
    assert!(began.elapsed() < hang);
}

#[tokio::test]
async fn from_graph_carries_a_red_number_over_with_its_waba() {
    let mut graph = SimState::fleet(2, 2);
    {
        let phone = graph.phone_mut("300000000000003");
        phone.quality_rating = Some("RED".to_owned());
        phone.status = Some("FLAGGED".to_owned());
        phone.messaging_limit_tier = Some("TIER_250".to_owned());
    }
    graph.waba_mut("200000000000002").account_review_status = Some("PENDING".to_owned());
    let sim = start(FineduState::from_graph(&graph)).await;

    let page = list(&sim, "").await.json();
    assert_eq!(waba_ids(&page), ["200000000000001", "200000000000002"]);
    let waba = &page["data"][1];
    assert_eq!(waba["name"], "Fleet WABA 2");
    assert_eq!(waba["accountReviewStatus"], "PENDING");
    assert_eq!(waba["whatsappBusinessManagerMessagingLimit"], "TIER_2K");
    let phone = &waba["businessPhoneNumbers"][0];
    assert_eq!(phone["phoneNumberId"], "300000000000003");
    assert_eq!(phone["wabaId"], "200000000000002");
    assert_eq!(phone["displayPhoneNumber"], "+1 200-000-0002");
    assert_eq!(phone["verifiedName"], "Fleet 2 Line 1");
    assert_eq!(phone["qualityRating"], "RED");
    assert_eq!(phone["status"], "FLAGGED");
    assert_eq!(phone["messagingLimitTier"], "TIER_250");
    assert_eq!(phone["throughput"], "STANDARD");
    assert_eq!(
        waba["businessPhoneNumbers"][1]["qualityRating"], "GREEN",
        "only the number that changed is RED"
    );
}

#[tokio::test]
async fn an_override_sends_a_wrong_type_in_place_of_the_field() {
    let mut state = FineduState::fleet(1, 2);
    state
        .phone_mut("600000000000001")
        .overrides
        .insert("qualityRating".to_owned(), json!(5));
    state.waba_mut("500000000000001").overrides.insert(
        "whatsappBusinessManagerMessagingLimit".to_owned(),
        json!({ "tier": 2000 }),
    );
    let sim = start(state).await;
    let page = list(&sim, "").await.json();
    let waba = &page["data"][0];
    assert_eq!(
        waba["whatsappBusinessManagerMessagingLimit"],
        json!({ "tier": 2000 })
    );
    assert_eq!(waba["businessPhoneNumbers"][0]["qualityRating"], json!(5));
    assert_eq!(waba["businessPhoneNumbers"][1]["qualityRating"], "GREEN");
}

#[tokio::test]
async fn a_handle_changes_what_the_running_server_serves() {
    let sim = start(FineduState::demo()).await;
    let handle = sim.clone_handle();
    assert_eq!(handle.url(), sim.url());
    let stepper = tokio::spawn(async move {
        handle.with_state(|s| s.remove_phone(ids::PHONES[0].1));
    });
    stepper.await.unwrap();
    let page = list(&sim, "").await.json();
    let numbers = page["data"][0]["businessPhoneNumbers"].as_array().unwrap();
    assert_eq!(numbers.len(), 1);
    assert_eq!(numbers[0]["phoneNumberId"], ids::PHONES[1].1);
}

#[tokio::test]
async fn after_shutdown_the_port_refuses_connections() {
    let sim = start(FineduState::default()).await;
    let url = format!("{}{ACCOUNTS_PATH}", sim.url());
    sim.shutdown().await;
    let result = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(result.unwrap_err().is_connect());
}

#[test]
fn the_demo_has_two_customers_four_numbers_and_one_yellow() {
    let demo = FineduState::demo();
    let names: Vec<&str> = demo.wabas.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["Globex Logistics", "Initech Clinics"]);
    let phones: Vec<&FineduPhone> = demo.wabas.iter().flat_map(|w| &w.phones).collect();
    assert_eq!(phones.len(), 4);
    let yellow: Vec<&str> = phones
        .iter()
        .filter(|p| p.quality_rating.as_deref() == Some("YELLOW"))
        .map(|p| p.verified_name.as_str())
        .collect();
    assert_eq!(yellow, ["Initech Appointments"]);
}

#[test]
fn demo_steps_depend_only_on_the_step_and_bring_both_changes() {
    let view = |s: &FineduState| -> Vec<(Option<String>, Option<String>)> {
        s.wabas
            .iter()
            .flat_map(|w| &w.phones)
            .map(|p| (p.status.clone(), p.quality_rating.clone()))
            .collect()
    };
    let mut walked = FineduState::demo();
    let mut qualities = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    let mut changed_steps = 0;
    for step in 1..=30 {
        let before = view(&walked);
        walked.demo_step(step);
        let mut jumped = FineduState::demo();
        jumped.demo_step(step);
        assert_eq!(view(&walked), view(&jumped), "step {step}");
        if view(&walked) != before {
            changed_steps += 1;
        }
        for (status, quality) in view(&walked) {
            statuses.insert(status.unwrap());
            qualities.insert(quality.unwrap());
        }
    }
    assert!(
        changed_steps >= 10,
        "only {changed_steps} steps changed anything"
    );
    assert!(qualities.contains("GREEN") && qualities.contains("YELLOW"));
    assert!(statuses.contains("RATE_LIMITED"));
    let dispatch = walked.phone_mut(ids::PHONES[0].1).clone();
    assert_ne!(
        dispatch.update_time, dispatch.create_time,
        "a change is stamped"
    );
}

#[test]
fn the_fleet_uses_ids_apart_from_the_graph_fleet() {
    let finedu = FineduState::fleet(3, 2);
    let graph = SimState::fleet(3, 2);
    let finedu_ids: BTreeSet<String> = finedu
        .wabas
        .iter()
        .flat_map(|w| {
            std::iter::once(w.waba_id.clone())
                .chain(w.phones.iter().map(|p| p.phone_number_id.clone()))
        })
        .collect();
    assert_eq!(finedu_ids.len(), 9);
    assert!(finedu_ids.contains("500000000000003"));
    assert!(finedu_ids.contains("600000000000006"));
    let graph_ids: BTreeSet<String> = graph
        .wabas
        .keys()
        .chain(graph.phones.keys())
        .cloned()
        .collect();
    assert!(finedu_ids.is_disjoint(&graph_ids));
    let displays: BTreeSet<&str> = finedu
        .wabas
        .iter()
        .flat_map(|w| &w.phones)
        .map(|p| p.display_phone_number.as_str())
        .collect();
    assert_eq!(displays.len(), 6, "display numbers are distinct too");
}

#[test]
fn remove_phone_takes_the_number_out_of_its_waba_only() {
    let mut state = FineduState::fleet(2, 2);
    state.remove_phone("600000000000003");
    state.remove_phone("999");
    let counts: Vec<usize> = state.wabas.iter().map(|w| w.phones.len()).collect();
    assert_eq!(counts, [2, 1]);
    assert_eq!(state.wabas[1].phones[0].phone_number_id, "600000000000004");
}

#[test]
fn timestamps_use_the_bsp_format_in_its_time_zone() {
    assert_eq!(stamp(0), BASE_STAMP);
    assert_eq!(stamp(60 * 24 * 31), "2026-01-01T11:04:56.000+08:00");
}
