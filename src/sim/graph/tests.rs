//! The simulator over real loopback HTTP, driven with reqwest like the daemon drives Meta.

// A failed unwrap is a failed test, which is what a test wants.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "test-token";

struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

async fn start(state: SimState) -> GraphSim {
    GraphSim::start(state, SimOptions::default()).await.unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// GET `url` (absolute) with the token in the Authorization header.
async fn get_url(url: &str) -> Answer {
    send(reqwest::Client::new().get(url).bearer_auth(TOKEN)).await
}

/// GET `path` (with its query) on the simulator.
async fn get(sim: &GraphSim, path: &str) -> Answer {
    get_url(&format!("{}{path}", sim.url())).await
}

async fn batch(sim: &GraphSim, items: &[Value]) -> Answer {
    let batch = Value::Array(items.to_vec()).to_string();
    send(
        reqwest::Client::new()
            .post(format!("{}/v24.0/", sim.url()))
            .bearer_auth(TOKEN)
            .form(&[("batch", batch.as_str())]),
    )
    .await
}

fn batch_get(relative_url: &str) -> Value {
    json!({ "method": "GET", "relative_url": relative_url })
}

/// A paging link with its `access_token` removed, as a careful client rewrites it.
fn without_token(link: &str) -> String {
    let mut url = url::Url::parse(link).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "access_token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(kept);
    url.to_string()
}

fn one_waba(phones: usize) -> SimState {
    let mut state = SimState::default();
    state.add_business("b1", "Acme Corp");
    state.add_waba(Some(("b1", Relation::Owned)), "w1", "Acme Support");
    for i in 0..phones {
        state.add_phone("w1", &format!("p{i:03}"), &format!("+1 555-{i:04}"), "Acme");
    }
    state
}

#[tokio::test]
async fn a_request_without_a_token_gets_oauth_error_190() {
    let sim = start(one_waba(1)).await;
    let answer = send(reqwest::Client::new().get(format!("{}/v24.0/w1", sim.url()))).await;
    assert_eq!(answer.status, 401);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], 190);
    assert_eq!(error["type"], "OAuthException");
    assert!(error.get("error_subcode").is_none());
    assert!(error["fbtrace_id"].as_str().unwrap().starts_with('A'));
}

#[tokio::test]
async fn a_wrong_token_gets_error_190_with_subcode_467() {
    let sim = start(one_waba(1)).await;
    let answer = send(
        reqwest::Client::new()
            .get(format!("{}/v24.0/w1", sim.url()))
            .bearer_auth("stolen"),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"]["code"], 190);
    assert_eq!(answer.json()["error"]["error_subcode"], 467);
}

#[tokio::test]
async fn a_token_in_the_query_string_is_accepted_and_recorded_so_tests_can_catch_it() {
    let sim = start(one_waba(1)).await;
    let answer = send(reqwest::Client::new().get(format!(
        "{}/v24.0/w1?fields=id&access_token={TOKEN}",
        sim.url()
    )))
    .await;
    assert_eq!(answer.status, 200);
    let recorded = sim.requests();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].query.contains("access_token=test-token"));
    assert_eq!(recorded[0].authorization, None);
}

#[tokio::test]
async fn a_node_get_returns_only_the_requested_fields_plus_id() {
    let sim = start(one_waba(1)).await;
    let answer = get(&sim, "/v24.0/p000?fields=status,quality_rating,throughput").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({
            "id": "p000",
            "status": "CONNECTED",
            "quality_rating": "GREEN",
            "throughput": { "level": "STANDARD" },
        })
    );
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/json; charset=UTF-8")
    );
}

#[tokio::test]
async fn paths_without_a_version_are_served_too() {
    let sim = start(one_waba(1)).await;
    let answer = get(&sim, "/p000?fields=verified_name").await;
    assert_eq!(answer.json()["verified_name"], "Acme");
}

#[tokio::test]
async fn without_fields_a_phone_number_returns_the_default_subset_without_health() {
    let sim = start(one_waba(1)).await;
    let body = get(&sim, "/v23.0/p000").await.json();
    assert_eq!(body["display_phone_number"], "+1 555-0000");
    assert!(body.get("status").is_some());
    assert!(body.get("health_status").is_none());
    assert!(body.get("messaging_limit_tier").is_none());
}

#[tokio::test]
async fn a_deprecated_tier_of_none_is_sent_as_json_null() {
    let mut state = one_waba(1);
    state.phone_mut("p000").messaging_limit_tier = None;
    let sim = start(state).await;
    let body = get(&sim, "/v23.0/p000?fields=messaging_limit_tier")
        .await
        .json();
    assert_eq!(body.get("messaging_limit_tier"), Some(&Value::Null));
}

#[tokio::test]
async fn an_override_can_send_a_field_with_the_wrong_type() {
    let mut state = one_waba(1);
    state
        .phone_mut("p000")
        .overrides
        .insert("quality_rating".to_owned(), json!(5));
    let sim = start(state).await;
    let body = get(&sim, "/v23.0/p000?fields=quality_rating").await.json();
    assert_eq!(body["quality_rating"], 5);
}

#[tokio::test]
async fn an_unknown_id_is_error_100_subcode_33() {
    let sim = start(one_waba(1)).await;
    let answer = get(&sim, "/v24.0/404404?fields=id").await;
    assert_eq!(answer.status, 400);
    let error = &answer.json()["error"];
    assert_eq!(error["code"], 100);
    assert_eq!(error["error_subcode"], 33);
    assert_eq!(error["type"], "GraphMethodException");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Object with ID '404404' does not exist")
    );
}

#[tokio::test]
async fn the_portfolio_limit_is_a_nonexisting_field_on_v23_and_a_value_on_v24() {
    let sim = start(one_waba(1)).await;
    let old = get(
        &sim,
        "/v23.0/w1?fields=id,whatsapp_business_manager_messaging_limit",
    )
    .await;
    assert_eq!(old.status, 400);
    assert_eq!(old.json()["error"]["code"], 100);
    assert_eq!(
        old.json()["error"]["message"],
        "(#100) Tried accessing nonexisting field (whatsapp_business_manager_messaging_limit) on node type (WhatsAppBusinessAccount)"
    );
    let new = get(
        &sim,
        "/v24.0/w1?fields=id,whatsapp_business_manager_messaging_limit",
    )
    .await;
    assert_eq!(new.status, 200);
    assert_eq!(
        new.json()["whatsapp_business_manager_messaging_limit"],
        "TIER_2K"
    );
}

#[tokio::test]
async fn an_unknown_field_nested_in_an_expansion_names_the_nested_node_type() {
    let sim = start(one_waba(2)).await;
    let answer = get(&sim, "/v24.0/w1?fields=phone_numbers{id,qualty_rating}").await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json()["error"]["message"],
        "(#100) Tried accessing nonexisting field (qualty_rating) on node type (WhatsAppBusinessPhoneNumber)"
    );
}

#[tokio::test]
async fn a_malformed_fields_value_is_error_2500() {
    let sim = start(one_waba(1)).await;
    let answer = get(&sim, "/v24.0/w1?fields=id,phone_numbers{id").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["code"], 2500);
}

#[tokio::test]
async fn a_business_expansion_pages_250_numbers_by_100_and_the_next_links_yield_each_once() {
    let mut state = one_waba(250);
    state.add_waba(Some(("b1", Relation::Owned)), "w2", "Acme Marketing");
    state.add_phone("w2", "q1", "+1 555-9999", "Acme Deals");
    let sim = start(state).await;
    let body = get(
        &sim,
        "/v24.0/b1?fields=id,name,owned_whatsapp_business_accounts.limit(100){id,name,phone_numbers.limit(100){id,status}}",
    )
    .await
    .json();
    let wabas = body["owned_whatsapp_business_accounts"]["data"]
        .as_array()
        .unwrap();
    assert_eq!(wabas.len(), 2);
    assert!(
        body["owned_whatsapp_business_accounts"]["paging"]
            .get("next")
            .is_none()
    );

    let mut page = wabas[0]["phone_numbers"].clone();
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let data = page["data"].as_array().unwrap();
        sizes.push(data.len());
        for phone in data {
            assert_eq!(phone["status"], "CONNECTED");
            seen.push(phone["id"].as_str().unwrap().to_owned());
        }
        let Some(next) = page["paging"]["next"].as_str() else {
            break;
        };
        assert!(next.starts_with(&format!("{}/v24.0/w1/phone_numbers?", sim.url())));
        assert!(next.contains("access_token=test-token"));
        assert!(next.contains("limit=100"));
        let answer = get_url(&without_token(next)).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        page = answer.json();
    }
    assert_eq!(sizes, vec![100, 100, 50]);
    let expected: Vec<String> = (0..250).map(|i| format!("p{i:03}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 250);
    // The short WABA fits in one page and has no link to follow.
    assert_eq!(
        wabas[1]["phone_numbers"]["data"].as_array().unwrap().len(),
        1
    );
    assert!(wabas[1]["phone_numbers"]["paging"].get("next").is_none());
}

#[tokio::test]
async fn paging_links_leave_the_token_out_when_told_to() {
    let sim = GraphSim::start(
        one_waba(3),
        SimOptions {
            token_in_paging_links: false,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let body = get(&sim, "/v24.0/w1/phone_numbers?limit=2").await.json();
    let next = body["paging"]["next"].as_str().unwrap();
    assert!(!next.contains("access_token"));
    let rest = get_url(next).await.json();
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_edge_without_items_is_absent_from_the_expansion_and_empty_on_its_own() {
    let mut state = SimState::default();
    state.add_waba(None, "w9", "Fresh WABA");
    let sim = start(state).await;
    let expanded = get(&sim, "/v24.0/w9?fields=id,phone_numbers{id}")
        .await
        .json();
    assert_eq!(expanded, json!({ "id": "w9" }));
    let edge = get(&sim, "/v24.0/w9/phone_numbers?fields=id").await.json();
    assert_eq!(edge, json!({ "data": [] }));
}

#[tokio::test]
async fn a_batch_of_50_is_answered_in_order_and_counted_as_50_calls() {
    let sim = start(one_waba(60)).await;
    let items: Vec<Value> = (0..50)
        .map(|i| batch_get(&format!("v24.0/p{i:03}?fields=id,status")))
        .collect();
    let answer = batch(&sim, &items).await;
    assert_eq!(answer.status, 200);
    let answers = answer.json();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 50);
    for (i, item) in answers.iter().enumerate() {
        assert_eq!(item["code"], 200);
        assert_eq!(
            item["headers"][0],
            json!({ "name": "Content-Type", "value": "text/javascript; charset=UTF-8" })
        );
        let body: Value = serde_json::from_str(item["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["id"], format!("p{i:03}"));
    }
    assert_eq!(sim.http_requests(), 1);
    assert_eq!(sim.graph_calls(), 50);
    assert_eq!(sim.calls_for_waba("w1"), 50);
    assert_eq!(sim.requests()[0].batch_items, 50);
}

#[tokio::test]
async fn a_batch_of_51_is_refused_with_error_100() {
    let sim = start(one_waba(60)).await;
    let items: Vec<Value> = (0..51)
        .map(|i| batch_get(&format!("p{i:03}?fields=id")))
        .collect();
    let answer = batch(&sim, &items).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["code"], 100);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Maximum batch size is 50")
    );
    assert_eq!(sim.calls_for_waba("w1"), 0);
}

#[tokio::test]
async fn a_fault_on_one_batch_item_fails_that_item_only_and_only_as_often_as_asked() {
    let mut state = one_waba(3);
    state.add_fault(Fault::once(
        FaultTarget::object("p001"),
        FaultKind::waba_rate_limited("w1", 7),
    ));
    let sim = start(state).await;
    let items: Vec<Value> = (0..3)
        .map(|i| batch_get(&format!("/p{i:03}?fields=id")))
        .collect();
    let first = batch(&sim, &items).await.json();
    assert_eq!(first[0]["code"], 200);
    assert_eq!(first[2]["code"], 200);
    assert_eq!(first[1]["code"], 400);
    let error: Value = serde_json::from_str(first[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], 80008);
    let usage = first[1]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "X-Business-Use-Case-Usage")
        .unwrap();
    assert!(
        usage["value"]
            .as_str()
            .unwrap()
            .contains("\"estimated_time_to_regain_access\":7")
    );

    let second = batch(&sim, &items).await.json();
    assert!(second.as_array().unwrap().iter().all(|i| i["code"] == 200));
    assert!(sim.with_state(|s| s.faults.is_empty()));
}

#[tokio::test]
async fn a_hanging_batch_item_comes_back_null_after_the_wait() {
    let mut state = one_waba(2);
    state.add_fault(Fault::once(
        FaultTarget::object("p000"),
        FaultKind::Hang(Duration::from_millis(150)),
    ));
    let sim = start(state).await;
    let started = Instant::now();
    let answer = batch(&sim, &[batch_get("p000"), batch_get("p001")])
        .await
        .json();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(answer[0], Value::Null);
    assert_eq!(answer[1]["code"], 200);
}

#[tokio::test]
async fn batch_items_may_leave_out_headers() {
    let sim = start(one_waba(1)).await;
    let answer = send(
        reqwest::Client::new()
            .post(format!("{}/", sim.url()))
            .bearer_auth(TOKEN)
            .form(&[
                (
                    "batch",
                    json!([batch_get("v23.0/p000")]).to_string().as_str(),
                ),
                ("include_headers", "false"),
            ]),
    )
    .await
    .json();
    assert_eq!(answer[0]["code"], 200);
    assert!(answer[0].get("headers").is_none());
}

#[tokio::test]
async fn a_fault_on_the_first_nested_page_fails_the_whole_parent_request() {
    let mut state = one_waba(3);
    state.add_fault(Fault::once(
        FaultTarget::edge_page("w1", "phone_numbers", 1),
        FaultKind::transient(),
    ));
    let sim = start(state).await;
    let failed = get(
        &sim,
        "/v24.0/b1?fields=owned_whatsapp_business_accounts{phone_numbers{id}}",
    )
    .await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.json()["error"]["code"], 2);
    assert_eq!(failed.json()["error"]["is_transient"], true);
    let retried = get(
        &sim,
        "/v24.0/b1?fields=owned_whatsapp_business_accounts{phone_numbers{id}}",
    )
    .await;
    assert_eq!(retried.status, 200);
}

#[tokio::test]
async fn a_fault_on_page_two_fails_only_the_request_that_follows_next() {
    let mut state = one_waba(5);
    state.add_fault(Fault::always(
        FaultTarget::edge_page("w1", "phone_numbers", 2),
        FaultKind::HtmlError(502),
    ));
    let sim = start(state).await;
    let first = get(&sim, "/v24.0/w1?fields=phone_numbers.limit(2){id}").await;
    assert_eq!(first.status, 200);
    let next = first.json()["phone_numbers"]["paging"]["next"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = get_url(&without_token(&next)).await;
    assert_eq!(second.status, 502);
    assert!(second.text.contains("<html"));
    assert!(
        second
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(second.header("x-app-usage").is_none());
}

#[tokio::test]
async fn a_foreign_paging_link_fault_points_next_at_the_other_host() {
    let mut state = one_waba(3);
    state.add_fault(Fault::always(
        FaultTarget::object("w1"),
        FaultKind::ForeignPagingLink("http://127.0.0.2:1".to_owned()),
    ));
    let sim = start(state).await;
    let body = get(&sim, "/v24.0/w1?fields=phone_numbers.limit(1){id}")
        .await
        .json();
    let next = body["phone_numbers"]["paging"]["next"].as_str().unwrap();
    assert!(
        next.starts_with("http://127.0.0.2:1/v24.0/w1/phone_numbers?"),
        "{next}"
    );
}

#[tokio::test]
async fn truncated_and_oversize_faults_mangle_a_200_body() {
    let mut state = one_waba(1);
    state.add_fault(Fault::once(
        FaultTarget::object("p000"),
        FaultKind::Truncated,
    ));
    state.add_fault(Fault::once(
        FaultTarget::object("p000"),
        FaultKind::OversizeBody(3 << 20),
    ));
    let sim = start(state).await;
    let truncated = get(&sim, "/v24.0/p000?fields=id,verified_name").await;
    assert_eq!(truncated.status, 200);
    assert!(serde_json::from_str::<Value>(&truncated.text).is_err());
    let oversize = get(&sim, "/v24.0/p000?fields=id").await;
    assert_eq!(oversize.status, 200);
    assert!(oversize.text.len() >= 3 << 20);
    assert_eq!(oversize.json()["id"], "p000");
}

#[tokio::test]
async fn a_graph_error_fault_sends_retry_after_and_the_given_usage_header() {
    let mut state = one_waba(1);
    state.add_fault(Fault::once(
        FaultTarget::Any,
        FaultKind::GraphError {
            http_status: 429,
            code: 4,
            subcode: None,
            message: "(#4) Application request limit reached".to_owned(),
            is_transient: Some(true),
            retry_after: Some(30),
            usage_header: Some("{\"w1\":[]}".to_owned()),
        },
    ));
    let sim = start(state).await;
    let answer = get(&sim, "/v24.0/w1?fields=id").await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.json()["error"]["code"], 4);
    assert_eq!(answer.header("retry-after").as_deref(), Some("30"));
    assert_eq!(
        answer.header("x-business-use-case-usage").as_deref(),
        Some("{\"w1\":[]}")
    );
}

#[tokio::test]
async fn usage_headers_count_phone_and_waba_calls_against_the_waba() {
    let sim = start(one_waba(2)).await;
    get(&sim, "/v24.0/p000?fields=id").await;
    get(&sim, "/v24.0/w1/phone_numbers").await;
    let third = get(&sim, "/v24.0/w1?fields=id").await;
    get(&sim, "/v24.0/b1?fields=id").await;
    assert_eq!(sim.calls_for_waba("w1"), 3);
    assert_eq!(sim.graph_calls(), 4);
    let usage: Value =
        serde_json::from_str(&third.header("x-business-use-case-usage").unwrap()).unwrap();
    // Three calls of a budget of 200 are 1.5 %, reported as a whole percentage.
    assert_eq!(usage["w1"][0]["call_count"], 1);
    assert_eq!(usage["w1"][0]["type"], "whatsapp_business_management");
    assert_eq!(usage["w1"][0]["estimated_time_to_regain_access"], 0);
    let app: Value = serde_json::from_str(&third.header("x-app-usage").unwrap()).unwrap();
    assert!(app.get("call_count").is_some());

    sim.reset_counters();
    assert_eq!(sim.calls_for_waba("w1"), 0);
    assert!(sim.requests().is_empty());
    let after_reset = get(&sim, "/v24.0/w1?fields=id").await;
    let usage: Value =
        serde_json::from_str(&after_reset.header("x-business-use-case-usage").unwrap()).unwrap();
    assert_eq!(usage["w1"][0]["call_count"], 0);
}

#[tokio::test]
async fn a_lower_waba_budget_makes_usage_reach_100_percent() {
    let mut state = one_waba(1);
    state.waba_call_budget = Some(2);
    let sim = start(state).await;
    get(&sim, "/v24.0/w1?fields=id").await;
    let second = get(&sim, "/v24.0/w1?fields=id").await;
    let usage: Value =
        serde_json::from_str(&second.header("x-business-use-case-usage").unwrap()).unwrap();
    assert_eq!(usage["w1"][0]["call_count"], 100);
    assert!(
        usage["w1"][0]["estimated_time_to_regain_access"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn changes_made_between_polls_show_in_the_next_answer() {
    let sim = start(one_waba(1)).await;
    sim.with_state(|s| {
        s.phone_mut("p000").quality_rating = Some("RED".to_owned());
        s.set_health(
            "w1",
            "BUSINESS",
            "BLOCKED",
            Some(HealthError::business_not_verified()),
        );
    });
    let body = get(&sim, "/v24.0/p000?fields=quality_rating,health_status")
        .await
        .json();
    assert_eq!(body["quality_rating"], "RED");
    assert_eq!(body["health_status"]["can_send_message"], "BLOCKED");
    let business = body["health_status"]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity_type"] == "BUSINESS")
        .unwrap();
    assert_eq!(business["id"], "b1");
    assert_eq!(business["errors"][0]["error_code"], 141_010);
}

#[tokio::test]
async fn every_request_waits_the_configured_latency() {
    let sim = GraphSim::start(
        one_waba(1),
        SimOptions {
            latency: Duration::from_millis(60),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    assert_eq!(get(&sim, "/v24.0/w1?fields=id").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(60));
}

#[tokio::test]
async fn after_shutdown_the_port_refuses_connections() {
    let sim = start(one_waba(1)).await;
    let url = format!("{}/v24.0/w1", sim.url());
    assert_eq!(get_url(&url).await.status, 200);
    sim.shutdown().await;
    let refused = reqwest::Client::new()
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(refused.is_err());
}

#[test]
fn the_benchmark_fleet_has_the_requested_shape() {
    let state = SimState::fleet(1_000, 10);
    assert_eq!(state.wabas.len(), 1_000);
    assert_eq!(state.phones.len(), 10_000);
    let business = &state.businesses["100000000000001"];
    assert_eq!(business.owned.len(), 1_000);
    assert!(state.wabas.values().all(|w| w.phones.len() == 10));
    assert!(
        state
            .phones
            .keys()
            .chain(state.wabas.keys())
            .all(|id| id.bytes().all(|b| b.is_ascii_digit()))
    );
    let displays: BTreeSet<_> = state
        .phones
        .values()
        .map(|p| &p.display_phone_number)
        .collect();
    assert_eq!(displays.len(), 10_000);
}

#[test]
fn the_demo_fleet_changes_at_every_step_and_the_same_step_gives_the_same_fleet() {
    let mut fleet = SimState::demo();
    assert_eq!(fleet.businesses.len(), 1);
    assert_eq!(fleet.wabas.len(), 3);
    assert_eq!(fleet.phones.len(), 8);
    assert!(
        fleet
            .phones
            .values()
            .all(|p| p.quality_rating.as_deref() == Some("GREEN"))
    );
    let mut seen_status = BTreeSet::new();
    let mut seen_health = BTreeSet::new();
    let mut previous = fleet.clone();
    for step in 1..=30 {
        fleet.demo_step(step);
        let changed = fleet.phones != previous.phones
            || fleet.wabas != previous.wabas
            || fleet.businesses != previous.businesses;
        assert!(changed, "nothing changed at step {step}");
        for phone in fleet.phones.values() {
            seen_status.insert(phone.status.clone().unwrap());
        }
        for waba in fleet.wabas.values() {
            seen_health.insert(waba.health["can_send_message"].as_str().unwrap().to_owned());
        }
        previous = fleet.clone();
    }
    assert!(seen_status.contains("FLAGGED"));
    assert!(seen_status.contains("RESTRICTED"));
    assert!(seen_health.contains("LIMITED"));

    let mut replay = SimState::demo();
    replay.demo_step(30);
    assert_eq!(replay.phones, fleet.phones);
    let mut back = fleet.clone();
    back.demo_step(0);
    assert_eq!(back.phones, SimState::demo().phones);
}

#[tokio::test]
async fn subscribed_apps_lists_the_simulated_app_until_the_waba_flag_removes_it() {
    let sim = start(one_waba(1)).await;
    let app_ids = |answer: &Answer| -> Vec<String> {
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a["whatsapp_business_api_data"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let listed = app_ids(&get(&sim, "/v24.0/w1/subscribed_apps").await);
    assert!(listed.contains(&SIM_APP_ID.to_owned()), "{listed:?}");
    assert_eq!(sim.calls_for_waba("w1"), 1, "charged to the WABA");

    sim.with_state(|s| s.waba_mut("w1").webhooks_unsubscribed = true);
    let listed = app_ids(&get(&sim, "/v24.0/w1/subscribed_apps").await);
    assert!(!listed.contains(&SIM_APP_ID.to_owned()), "{listed:?}");
    assert!(
        !listed.is_empty(),
        "another app's subscription stays listed"
    );

    // In a batch too, and an unknown WABA is Meta's unknown-object error.
    let answer = batch(&sim, &[batch_get("w1/subscribed_apps")]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()[0]["code"], 200);
    assert_eq!(get(&sim, "/v24.0/nope/subscribed_apps").await.status, 400);

    // A fault on the edge fails the read.
    sim.with_state(|s| {
        s.add_fault(Fault::once(
            FaultTarget::edge_page("w1", "subscribed_apps", 1),
            FaultKind::HtmlError(502),
        ))
    });
    assert_eq!(get(&sim, "/v24.0/w1/subscribed_apps").await.status, 502);
}

// ---- message templates ----

const ALL_TEMPLATE_FIELDS: &str =
    "id,name,language,status,category,quality_score,rejected_reason,previous_category";

/// `one_waba(0)` with `count` templates in `w1`.
fn templates_waba(count: usize) -> SimState {
    let mut state = one_waba(0);
    state.add_templates("w1", count);
    state
}

/// Follows `paging.next` from `page` to the end; the ids seen and the size of each page.
async fn walk(sim: &GraphSim, mut page: Value, edge_path: &str) -> (Vec<String>, Vec<usize>) {
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let data = page["data"].as_array().unwrap();
        sizes.push(data.len());
        seen.extend(data.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        assert!(page["paging"]["cursors"]["before"].is_string(), "{page}");
        assert!(page["paging"]["cursors"]["after"].is_string(), "{page}");
        let Some(next) = page["paging"]["next"].as_str() else {
            break;
        };
        assert!(
            next.starts_with(&format!("{}/v24.0/{edge_path}?", sim.url())),
            "{next}"
        );
        assert!(next.contains("limit=100"), "{next}");
        let answer = get_url(&without_token(next)).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        page = answer.json();
    }
    (seen, sizes)
}

#[tokio::test]
async fn the_template_edge_pages_250_templates_by_100_and_each_page_is_one_call() {
    let state = templates_waba(250);
    let expected = state.wabas["w1"].templates.clone();
    let sim = start(state).await;
    let first = get(
        &sim,
        "/v24.0/w1/message_templates?fields=id,name,status&limit=100",
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let first = first.json();
    assert_eq!(first["data"][0]["name"], "template_0");
    assert_eq!(first["data"][0]["status"], "APPROVED");
    let (seen, sizes) = walk(&sim, first, "w1/message_templates").await;
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 250);
    assert_eq!(sim.calls_for_waba("w1"), 3, "one call per page");
    assert_eq!(sim.graph_calls(), 3);
    assert_eq!(sim.edge_calls("message_templates"), 3);
    assert_eq!(sim.edge_calls("phone_numbers"), 0);
    // The page after the last is empty, like the other edges.
    let past = get(
        &sim,
        &format!(
            "/v24.0/w1/message_templates?limit=100&after={}",
            render::encode_cursor(249)
        ),
    )
    .await
    .json();
    assert_eq!(past, json!({ "data": [] }));
}

#[tokio::test]
async fn a_waba_expansion_embeds_the_first_100_templates_and_next_continues_the_listing() {
    let state = templates_waba(250);
    let expected = state.wabas["w1"].templates.clone();
    let sim = start(state).await;
    let body = get(
        &sim,
        &format!("/v24.0/w1?fields=id,name,message_templates.limit(100){{{ALL_TEMPLATE_FIELDS}}}"),
    )
    .await
    .json();
    assert_eq!(body["name"], "Acme Support");
    let embedded = body["message_templates"].clone();
    assert_eq!(embedded["data"].as_array().unwrap().len(), 100);
    let next = embedded["paging"]["next"].as_str().unwrap();
    // The link carries the nested fields, as Meta's do.
    let query: Vec<(String, String)> = url::Url::parse(next)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert!(query.contains(&("fields".to_owned(), ALL_TEMPLATE_FIELDS.to_owned())));
    assert_eq!(
        sim.calls_for_waba("w1"),
        1,
        "the expansion is part of the read"
    );
    assert_eq!(sim.edge_calls("message_templates"), 0);

    let (seen, sizes) = walk(&sim, embedded, "w1/message_templates").await;
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(seen, expected);
    assert_eq!(sim.calls_for_waba("w1"), 3, "the read and two more pages");
    assert_eq!(sim.edge_calls("message_templates"), 2);
}

#[tokio::test]
async fn templates_nest_inside_a_business_expansion_next_to_the_numbers() {
    let mut state = one_waba(2);
    state.add_templates("w1", 3);
    state.add_waba(Some(("b1", Relation::Owned)), "w2", "Acme Marketing");
    let sim = start(state).await;
    let body = get(
        &sim,
        "/v24.0/b1?fields=id,owned_whatsapp_business_accounts.limit(100){id,phone_numbers.limit(100){id},message_templates.limit(100){name,status}}",
    )
    .await
    .json();
    let wabas = body["owned_whatsapp_business_accounts"]["data"]
        .as_array()
        .unwrap();
    assert_eq!(wabas.len(), 2);
    let templates = wabas[0]["message_templates"]["data"].as_array().unwrap();
    let names: Vec<&str> = templates
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["template_0", "template_1", "template_2"]);
    assert!(templates.iter().all(|t| t["status"] == "APPROVED"));
    assert!(
        wabas[0]["message_templates"]["paging"]
            .get("next")
            .is_none()
    );
    assert_eq!(
        wabas[0]["phone_numbers"]["data"].as_array().unwrap().len(),
        2
    );
    // A WABA without templates (or numbers) leaves the edges out, as Meta does.
    assert_eq!(wabas[1], json!({ "id": "w2" }));
    assert_eq!(sim.graph_calls(), 1);
}

#[tokio::test]
async fn a_waba_without_templates_leaves_the_edge_out_and_lists_nothing_on_its_own() {
    let sim = start(one_waba(1)).await;
    let expanded = get(&sim, "/v24.0/w1?fields=id,message_templates{id,status}")
        .await
        .json();
    assert_eq!(expanded, json!({ "id": "w1" }));
    let edge = get(&sim, "/v24.0/w1/message_templates?fields=id,status")
        .await
        .json();
    assert_eq!(edge, json!({ "data": [] }));
    // A typo still fails on an empty edge.
    let typo = get(&sim, "/v24.0/w1?fields=message_templates{id,stauts}").await;
    assert_eq!(typo.status, 400);
}

#[tokio::test]
async fn template_fields_render_in_metas_shapes_and_only_the_ones_asked_for() {
    let mut state = templates_waba(3);
    let ids = state.wabas["w1"].templates.clone();
    {
        let t = state.template_mut(&ids[1]);
        t.status = "REJECTED".to_owned();
        t.rejected_reason = Some("INVALID_FORMAT".to_owned());
        t.quality = None;
        t.previous_category = Some("UTILITY".to_owned());
    }
    state
        .template_mut(&ids[2])
        .overrides
        .insert("status".to_owned(), json!(7));
    let sim = start(state).await;
    let body = get(
        &sim,
        &format!("/v24.0/w1/message_templates?fields={ALL_TEMPLATE_FIELDS}"),
    )
    .await
    .json();
    assert_eq!(
        body["data"][0],
        json!({
            "id": ids[0],
            "name": "template_0",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "quality_score": { "score": "GREEN", "date": 1_767_225_600 },
            "rejected_reason": "NONE",
        })
    );
    assert_eq!(
        body["data"][1],
        json!({
            "id": ids[1],
            "name": "template_1",
            "language": "es_ES",
            "status": "REJECTED",
            "category": "MARKETING",
            "rejected_reason": "INVALID_FORMAT",
            "previous_category": "UTILITY",
        })
    );
    assert_eq!(
        body["data"][2]["status"], 7,
        "an override replaces the value"
    );

    let narrow = get(&sim, "/v24.0/w1/message_templates?fields=status")
        .await
        .json();
    assert_eq!(
        narrow["data"][0],
        json!({ "id": ids[0], "status": "APPROVED" }),
        "only the asked-for fields, plus id"
    );
    // Without fields=, Meta's default subset (no quality_score).
    let default = get(&sim, "/v24.0/w1/message_templates").await.json();
    assert_eq!(default["data"][0]["category"], "UTILITY");
    assert!(default["data"][0].get("quality_score").is_none());
    // A template is a node of its own too, charged to its WABA.
    sim.reset_counters();
    let node = get(&sim, &format!("/v24.0/{}?fields=name,status", ids[1]))
        .await
        .json();
    assert_eq!(node["status"], "REJECTED");
    assert_eq!(sim.calls_for_waba("w1"), 1);
}

#[tokio::test]
async fn an_unknown_template_field_is_metas_nonexisting_field_error() {
    let sim = start(templates_waba(2)).await;
    let message = "(#100) Tried accessing nonexisting field (components_x) on node type (WhatsAppMessageTemplate)";
    let direct = get(&sim, "/v24.0/w1/message_templates?fields=id,components_x").await;
    assert_eq!(direct.status, 400);
    assert_eq!(direct.json()["error"]["code"], 100);
    assert_eq!(direct.json()["error"]["message"], message);
    let nested = get(&sim, "/v24.0/w1?fields=message_templates{id,components_x}").await;
    assert_eq!(nested.status, 400);
    assert_eq!(nested.json()["error"]["message"], message);
    // The edge exists only on WABAs.
    let on_business = get(&sim, "/v24.0/b1?fields=message_templates{id}").await;
    assert_eq!(on_business.status, 400);
    assert!(
        on_business.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(message_templates) on node type (Business)")
    );
}

#[tokio::test]
async fn the_template_page_size_defaults_to_25_and_is_capped_at_100() {
    let sim = start(templates_waba(250)).await;
    let default = get(&sim, "/v24.0/w1/message_templates?fields=id")
        .await
        .json();
    assert_eq!(default["data"].as_array().unwrap().len(), 25);
    assert!(
        default["paging"]["next"]
            .as_str()
            .unwrap()
            .contains("limit=25")
    );
    let big = get(&sim, "/v24.0/w1/message_templates?fields=id&limit=500")
        .await
        .json();
    assert_eq!(big["data"].as_array().unwrap().len(), 100);
    assert!(
        big["paging"]["next"]
            .as_str()
            .unwrap()
            .contains("limit=100")
    );
    let nested = get(&sim, "/v24.0/w1?fields=message_templates.limit(1000){id}")
        .await
        .json();
    assert_eq!(
        nested["message_templates"]["data"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    let nested_default = get(&sim, "/v24.0/w1?fields=message_templates{id}")
        .await
        .json();
    assert_eq!(
        nested_default["message_templates"]["data"]
            .as_array()
            .unwrap()
            .len(),
        25
    );
}

#[tokio::test]
async fn a_template_expansion_inside_a_batch_item_is_embedded_and_costs_one_call() {
    let mut state = templates_waba(120);
    state.add_waba(Some(("b1", Relation::Owned)), "w2", "Acme Marketing");
    state.add_templates("w2", 2);
    let sim = start(state).await;
    let answer = batch(
        &sim,
        &[
            batch_get("v24.0/w1?fields=id,message_templates.limit(100){id,status}"),
            batch_get("v24.0/w2/message_templates?fields=id,category&limit=100"),
            batch_get(
                "v24.0/b1?fields=owned_whatsapp_business_accounts{message_templates.limit(100){id}}",
            ),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    let items = answer.json();
    let bodies: Vec<Value> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            assert_eq!(item["code"], 200, "{item}");
            serde_json::from_str(item["body"].as_str().unwrap()).unwrap()
        })
        .collect();
    let embedded = &bodies[0]["message_templates"];
    assert_eq!(embedded["data"].as_array().unwrap().len(), 100);
    assert!(
        embedded["paging"]["next"]
            .as_str()
            .unwrap()
            .contains("/v24.0/w1/message_templates?")
    );
    assert_eq!(bodies[1]["data"].as_array().unwrap().len(), 2);
    assert_eq!(bodies[1]["data"][1]["category"], "MARKETING");
    assert!(bodies[1]["paging"].get("next").is_none());
    let nested = bodies[2]["owned_whatsapp_business_accounts"]["data"]
        .as_array()
        .unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(
        nested[0]["message_templates"]["data"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    assert_eq!(sim.graph_calls(), 3, "one per item");
    assert_eq!(sim.calls_for_waba("w1"), 1);
    assert_eq!(sim.calls_for_waba("w2"), 1);
    assert_eq!(
        sim.edge_calls("message_templates"),
        1,
        "only the direct item"
    );
}

#[tokio::test]
async fn template_page_faults_hit_the_expansion_or_the_page_that_follows_next() {
    let mut state = templates_waba(250);
    state.add_fault(Fault::once(
        FaultTarget::edge_page("w1", "message_templates", 1),
        FaultKind::transient(),
    ));
    state.add_fault(Fault::once(
        FaultTarget::edge_page("w1", "message_templates", 3),
        FaultKind::HtmlError(502),
    ));
    // A fault on the numbers' edge does not touch the templates.
    state.add_fault(Fault::always(
        FaultTarget::edge_page("w1", "phone_numbers", 2),
        FaultKind::transient(),
    ));
    let sim = start(state).await;
    let path =
        "/v24.0/b1?fields=owned_whatsapp_business_accounts{message_templates.limit(100){id}}";
    let failed = get(&sim, path).await;
    assert_eq!(failed.status, 503, "page 1 is the embedded page");
    assert_eq!(failed.json()["error"]["code"], 2);
    let body = get(&sim, path).await;
    assert_eq!(body.status, 200);
    let first =
        body.json()["owned_whatsapp_business_accounts"]["data"][0]["message_templates"].clone();
    let second = get_url(&without_token(first["paging"]["next"].as_str().unwrap())).await;
    assert_eq!(second.status, 200, "page 2 has no fault");
    let third_link = second.json()["paging"]["next"].as_str().unwrap().to_owned();
    let third = get_url(&without_token(&third_link)).await;
    assert_eq!(third.status, 502);
    assert!(third.text.contains("<html"));
    let again = get_url(&without_token(&third_link)).await;
    assert_eq!(again.status, 200, "the fault was once");
    assert_eq!(again.json()["data"].as_array().unwrap().len(), 50);
    // Page 1 of a direct GET without a cursor is the same target as the embedded page.
    sim.with_state(|s| {
        s.add_fault(Fault::once(
            FaultTarget::edge_page("w1", "message_templates", 1),
            FaultKind::permission_denied(),
        ))
    });
    assert_eq!(get(&sim, "/v24.0/w1/message_templates").await.status, 403);
    assert_eq!(
        sim.with_state(|s| s.faults.len()),
        1,
        "only the phone_numbers fault is left"
    );
}

#[test]
fn template_builders_keep_the_waba_lists_and_the_fleet_in_step() {
    let state = SimState::fleet_with_templates(3, 2, 4);
    assert_eq!(state.templates.len(), 12);
    assert_eq!(state.phones.len(), 6);
    let first_waba = &state.wabas["200000000000001"];
    assert_eq!(
        first_waba.templates,
        (0..4)
            .map(|i| (FIRST_TEMPLATE_ID + i).to_string())
            .collect::<Vec<_>>()
    );
    let t1 = &state.templates[&first_waba.templates[1]];
    assert_eq!(
        (
            t1.name.as_str(),
            t1.language.as_str(),
            t1.category.as_str(),
            t1.status.as_str(),
            t1.quality.as_deref()
        ),
        (
            "template_1",
            "es_ES",
            "MARKETING",
            "APPROVED",
            Some("GREEN")
        )
    );
    assert!(
        state
            .templates
            .keys()
            .all(|id| id.bytes().all(|b| b.is_ascii_digit()))
    );
    assert!(SimState::fleet(2, 1).templates.is_empty());

    let mut state = state;
    // More templates later continue the names and never reuse an id.
    state.add_templates("200000000000002", 2);
    let second = &state.wabas["200000000000002"].templates;
    assert_eq!(second.len(), 6);
    assert_eq!(state.templates[&second[5]].name, "template_5");
    assert_eq!(state.templates.len(), 14);
    let gone = second[0].clone();
    state.remove_template(&gone);
    assert!(!state.templates.contains_key(&gone));
    assert!(!state.wabas["200000000000002"].templates.contains(&gone));
    state.remove_waba("200000000000001");
    assert_eq!(state.templates.len(), 9);
    assert!(
        state
            .templates
            .values()
            .all(|t| t.waba_id != "200000000000001")
    );
    // Replacing a WABA keeps its templates.
    state.add_waba(None, "200000000000003", "Renamed");
    assert_eq!(state.wabas["200000000000003"].templates.len(), 4);
    // A template re-added under another WABA moves there.
    let moved = state.wabas["200000000000003"].templates[0].clone();
    state.add_template("200000000000002", &moved, "moved", "en_US", "UTILITY");
    assert!(!state.wabas["200000000000003"].templates.contains(&moved));
    assert_eq!(
        state.wabas["200000000000002"].templates.last(),
        Some(&moved)
    );
    assert_eq!(state.template_mut(&moved).waba_id, "200000000000002");
}

#[test]
#[should_panic(expected = "WABA nope is not in the simulated fleet")]
fn a_template_for_an_unknown_waba_is_a_mistake_in_the_test() {
    SimState::default().add_template("nope", "1", "t", "en_US", "UTILITY");
}

#[test]
fn the_demo_templates_pause_escalate_flip_quality_and_get_recategorised_once() {
    use demo_ids::{PAUSING_TEMPLATE, QUALITY_TEMPLATE, RECATEGORISED_TEMPLATE};
    let mut fleet = SimState::demo();
    for waba in fleet.wabas.values() {
        assert!((3..=5).contains(&waba.templates.len()), "{}", waba.id);
    }
    assert!(
        fleet
            .templates
            .values()
            .all(|t| t.status == "APPROVED" || t.id == demo_ids::PENDING_TEMPLATE)
    );
    let mut statuses = Vec::new();
    let mut qualities = Vec::new();
    let mut categories = Vec::new();
    for step in 0..=40 {
        fleet.demo_step(step);
        statuses.push(fleet.templates[PAUSING_TEMPLATE].status.clone());
        qualities.push(fleet.templates[QUALITY_TEMPLATE].quality.clone().unwrap());
        categories.push(fleet.templates[RECATEGORISED_TEMPLATE].category.clone());
    }
    // Collapse runs: the story each template tells.
    let story = |values: &[String]| {
        let mut out: Vec<String> = Vec::new();
        for v in values {
            if out.last() != Some(v) {
                out.push(v.clone());
            }
        }
        out
    };
    assert_eq!(
        story(&statuses[..=16]),
        [
            "APPROVED", "PAUSED", "APPROVED", "PAUSED", "APPROVED", "DISABLED", "APPROVED"
        ]
    );
    assert_eq!(statuses[3], "PAUSED");
    assert_eq!(statuses[11], "DISABLED");
    assert_eq!(story(&qualities[..=6]), ["GREEN", "YELLOW", "RED", "GREEN"]);
    assert_eq!(story(&categories), ["UTILITY", "MARKETING"]);
    assert_eq!(categories[4], "UTILITY");
    assert_eq!(categories[5], "MARKETING");
    assert_eq!(
        fleet.templates[RECATEGORISED_TEMPLATE]
            .previous_category
            .as_deref(),
        Some("UTILITY")
    );

    // The same step gives the same templates, and step 0 is the starting fleet.
    let mut replay = SimState::demo();
    replay.demo_step(40);
    assert_eq!(replay.templates, fleet.templates);
    fleet.demo_step(0);
    assert_eq!(fleet.templates, SimState::demo().templates);
}
