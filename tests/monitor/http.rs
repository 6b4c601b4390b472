//! The HTTP surface of a running daemon: metrics (checked by a strict OpenMetrics parser),
//! health endpoints and the status API.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::on_store;
use crate::helpers::{Daemon, TOKEN, TestApp, one_waba};
use waba_monitor::daemon::RunOptions;

const WABA1: &str = "200000000000001";
const P0: &str = "300000000000001";
const P1: &str = "300000000000002";
const API_TOKEN: &str = "api-token-for-tests-0123456789";

struct Running {
    daemon: Daemon,
    base: String,
    http: reqwest::Client,
}

impl Running {
    async fn start(app: &TestApp) -> Running {
        Self::start_with(app, RunOptions::default()).await
    }

    async fn start_with(app: &TestApp, opts: RunOptions) -> Running {
        let daemon = Daemon::start(app, opts).await;
        Running {
            base: daemon.base.clone(),
            daemon,
            http: reqwest::Client::new(),
        }
    }

    async fn next_cycle(&mut self) -> usize {
        self.next_cycle_within(Duration::from_secs(15)).await
    }

    async fn next_cycle_within(&mut self, limit: Duration) -> usize {
        self.daemon.next_cycle_within(limit).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    async fn post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    async fn stop(self) {
        self.daemon.stop().await;
    }
}

/// Runs the exposition through Prometheus's strict OpenMetrics parser (Python).
fn assert_valid_openmetrics(text: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/check_openmetrics.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (install prometheus-client: see README)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        text.lines().take(40).collect::<Vec<_>>().join("\n")
    );
}

fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_openmetrics_follow_changes_and_drop_a_removed_number() {
    let app = TestApp::spawn_with(
        one_waba(3),
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "* * * * * *",
    )
    .await;
    let mut d = Running::start(&app).await;
    let (code, text) = d.get("/metrics", None).await;
    assert_eq!(code, 200);
    assert_valid_openmetrics(&text);
    // Compact by default: one level per dimension, the names in the info series.
    let quality =
        format!("waba_monitor_phone_quality_level{{phone_number_id=\"{P1}\",waba_id=\"{WABA1}\"}}");
    let status =
        format!("waba_monitor_phone_status_level{{phone_number_id=\"{P1}\",waba_id=\"{WABA1}\"}}");
    assert_eq!(sample(&text, &quality), Some("1"), "GREEN is 1");
    assert_eq!(sample(&text, &status), Some("1"), "CONNECTED is 1");
    assert!(
        text.contains(&format!(
            "waba_monitor_phone_info{{phone_number_id=\"{P1}\",waba_id=\"{WABA1}\","
        )),
        "{text}"
    );
    assert!(
        !text.contains("state=\""),
        "no state sets unless metrics_detail = \"full\""
    );
    // 7 series per number and 4 per WABA: under 8 per number at 10 numbers per WABA.
    let count = |prefix: &str| {
        text.lines()
            .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
            .count()
    };
    assert_eq!(count("waba_monitor_phone"), 7 * 3, "{text}");
    assert_eq!(count("waba_monitor_waba_"), 4, "{text}");
    assert!(text.contains("waba_monitor_build_info{version=\""));
    assert!(text.contains("waba_monitor_phone_info{phone_number_id="));
    assert!(!text.contains(TOKEN), "token in metrics");

    app.sim.with_state(|s| {
        s.phone_mut(P1).quality_rating = Some("RED".into());
        s.remove_phone(P0);
    });
    // The cycle that sees the change, then one more so the scrape follows a finished sync.
    while d.next_cycle().await == 0 {}
    let (_, text) = d.get("/metrics", None).await;
    assert_valid_openmetrics(&text);
    assert_eq!(sample(&text, &quality), Some("3"), "RED is 3");
    assert!(
        !text.contains(&format!("phone_number_id=\"{P0}\"")),
        "gone number still exported"
    );
    assert!(text.contains("waba_monitor_poll_runs_total{source=\"main\",outcome=\"ok\"}"));
    let calls = sample(&text, "waba_monitor_graph_calls_total{source=\"main\"}")
        .and_then(|v| v.parse::<f64>().ok())
        .expect("calls counted");
    assert!(calls >= 2.0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_detail_adds_a_series_per_state_and_keeps_the_compact_ones() {
    let app = TestApp::spawn(one_waba(2), &format!("wabas = [\"{WABA1}\"]")).await;
    app.add_daemon_key("metrics_detail = \"full\"");
    app.sim
        .with_state(|s| s.phone_mut(P1).status = Some("BANNED".into()));
    let d = Running::start(&app).await;
    let (code, text) = d.get("/metrics", None).await;
    assert_eq!(code, 200);
    assert_valid_openmetrics(&text);
    let l = format!("phone_number_id=\"{P1}\",waba_id=\"{WABA1}\"");
    assert_eq!(
        sample(
            &text,
            &format!("waba_monitor_phone_status{{{l},state=\"BANNED\"}}")
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            &format!("waba_monitor_phone_status{{{l},state=\"CONNECTED\"}}")
        ),
        Some("0")
    );
    assert_eq!(
        sample(&text, &format!("waba_monitor_phone_status_level{{{l}}}")),
        Some("13")
    );
    assert!(
        text.contains(&format!("{l},display_phone_number=")) && text.contains("status=\"BANNED\"}"),
        "{text}"
    );
    for state in ["GREEN", "YELLOW", "RED", "NA", "UNKNOWN"] {
        assert!(text.contains(&format!(
            "waba_monitor_phone_quality{{{l},state=\"{state}\"}}"
        )));
    }
    assert!(text.contains(&format!(
        "waba_monitor_waba_review_status{{waba_id=\"{WABA1}\",state=\"APPROVED\"}} 1"
    )));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_report_alive_and_ready() {
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let d = Running::start(&app).await;
    assert_eq!(d.get("/healthz", None).await, (200, "ok\n".to_owned()));
    let (code, body) = d.get("/readyz", None).await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_api_speaks_the_accounts_shape_and_its_codes() {
    let app = TestApp::spawn(one_waba(2), &format!("wabas = [\"{WABA1}\"]")).await;
    app.sim.with_state(|s| {
        s.phone_mut(P1).status = Some("BANNED".into());
        s.add_templates(WABA1, 2);
        s.template_mut("800000000000001").status = "PAUSED".into();
    });
    let d = Running::start(&app).await;

    let (code, body) = d.get("/api/accounts", None).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "success");
    let items = v["data"]["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);

    let (code, body) = d.get(&format!("/api/accounts/{P1}"), None).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let a = &v["data"];
    assert_eq!(a["phone_number_id"], P1);
    assert_eq!(a["business_account_id"], WABA1);
    assert_eq!(a["status"], "suspended");
    assert_eq!(a["meta_status"], "BANNED");
    assert_eq!(a["quality_rating"], "GREEN");
    assert!(a["messaging_limit"].is_string());
    // The WABA's paused template is shown with the number; its healthy one is not.
    let problems = a["template_problems"]
        .as_array()
        .expect("template_problems");
    assert_eq!(problems.len(), 1, "{a}");
    assert_eq!(problems[0]["status"], "PAUSED");
    assert_eq!(problems[0]["name"], "template_0");
    assert_eq!(problems[0]["language"], "en_US");

    let (code, body) = d.get(&format!("/api/accounts/{P1}/history"), None).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(!v["data"]["items"].as_array().expect("items").is_empty());

    let (code, body) = d.post(&format!("/api/accounts/{P0}/test"), None).await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"]["connected"], true);
    assert_eq!(v["data"]["quality_rating"], "GREEN");
    assert!(v["data"]["display_phone_number"].is_string());

    let (code, body) = d.get("/api/accounts/999", None).await;
    assert_eq!(code, 404);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "error");
    assert!(v["message"].as_str().expect("message").contains("999"));

    let (code, _) = d.get("/api/nothing-here", None).await;
    assert_eq!(code, 404);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_api_token_the_api_answers_401_without_it_and_never_returns_a_token() {
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    app.write_secret("api-token", API_TOKEN);
    app.add_daemon_key("api_token_file = \"api-token\"");
    let d = Running::start(&app).await;
    let (code, body) = d.get("/api/accounts", None).await;
    assert_eq!(code, 401);
    assert!(body.contains("\"status\":\"error\""));
    assert_eq!(d.get("/api/accounts", Some("wrong")).await.0, 401);
    let (code, body) = d.get("/api/accounts", Some(API_TOKEN)).await;
    assert_eq!(code, 200);
    // Metrics and health stay open (Prometheus scrapes without a token).
    let (mcode, metrics) = d.get("/metrics", None).await;
    assert_eq!(mcode, 200);
    for text in [&body, &metrics] {
        assert!(
            !text.contains(API_TOKEN) && !text.contains(TOKEN),
            "token returned"
        );
    }
    let (code, body) = d.get(&format!("/api/accounts/{P0}"), Some(API_TOKEN)).await;
    assert_eq!(code, 200);
    assert!(!body.contains("access_token") && !body.contains(TOKEN));
    d.stop().await;
}

#[test]
fn a_non_loopback_listen_without_an_api_token_is_refused_before_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("monitor.toml");
    std::fs::write(
        &path,
        "[daemon]\nlisten = \"0.0.0.0:9717\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
        .arg("--config")
        .arg(&path)
        .arg("run")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("monitor.toml:2: `daemon.listen`") && stderr.contains("api_token_env"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_test_is_charged_to_the_quota_and_refused_over_it() {
    // Hourly cycles and a budget of 3 calls per WABA per hour: the first cycle takes 1.
    let app = TestApp::spawn_with(
        one_waba(2),
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "0 0 * * * *",
    )
    .await;
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::write(
        &app.config_path,
        text.replace("quota_per_waba_hour = 5000", "quota_per_waba_hour = 3"),
    )
    .expect("config");
    let d = Running::start(&app).await;
    for _ in 0..2 {
        let (code, body) = d.post(&format!("/api/accounts/{P0}/test"), None).await;
        assert_eq!(code, 200, "{body}");
    }
    let resp = d
        .http
        .post(format!("{}/api/accounts/{P0}/test", d.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 429);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["status"], "error");
    assert!(
        v["message"].as_str().expect("message").contains("quota"),
        "{v}"
    );
    assert_eq!(app.sim.calls_for_waba(WABA1), 3, "never past the budget");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bsp_number_says_why_it_cannot_be_tested_singly() {
    let (app, _finedu) = crate::bsp::with_bsp(
        one_waba(1),
        &format!("wabas = [\"{WABA1}\"]"),
        waba_monitor::sim::FineduState::fleet(1, 1),
        100,
    )
    .await;
    let d = Running::start(&app).await;
    let bsp_number = "600000000000001";
    let (code, body) = d
        .post(&format!("/api/accounts/{bsp_number}/test"), None)
        .await;
    assert_ne!(code, 200, "{body}");
    assert_ne!(code, 404, "the number and its source exist: {body}");
    assert!(!body.contains("not configured"), "{body}");
    assert!(
        body.contains("finedu-main") && body.contains("singly"),
        "{body}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_test_never_serves_a_token_echoed_by_meta() {
    use waba_monitor::sim::{Fault, FaultKind, FaultTarget};
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let d = Running::start(&app).await;
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(
            FaultTarget::object(P0),
            FaultKind::graph_error(
                400,
                100,
                &format!("Unsupported get request. Echo: Authorization: Bearer {TOKEN}"),
            ),
        ))
    });
    let (code, body) = d.post(&format!("/api/accounts/{P0}/test"), None).await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("Unsupported get request"), "{body}");
    assert!(!body.contains(TOKEN), "{body}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_the_database_cannot_record_is_a_failed_cycle_everywhere() {
    if crate::helpers::on_postgres() {
        // What this test checks is SQLite's own (its file, its locks, its read pool): the
        // PostgreSQL run covers the rest of the suite.
        return;
    }
    use sqlx::Connection;
    let app = TestApp::spawn_with(
        one_waba(1),
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "*/2 * * * * *",
    )
    .await;
    // Writes give up after 100 ms of waiting for a lock (5 s in production).
    let mut d = Running::start_with(
        &app,
        RunOptions {
            busy_timeout: Duration::from_millis(100),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(d.get("/readyz", None).await.0, 200);
    let (_, text) = d.get("/metrics", None).await;
    let ok_before = sample(
        &text,
        "waba_monitor_poll_runs_total{source=\"main\",outcome=\"ok\"}",
    )
    .or_else(|| {
        sample(
            &text,
            "waba_monitor_poll_runs_total{outcome=\"ok\",source=\"main\"}",
        )
    })
    .map(str::to_owned);

    // Another process holds the database's write lock (a stuck sqlite3 shell, a backup tool):
    // every write of the daemon fails after its busy timeout.
    let db = app
        .config()
        .daemon
        .database
        .sqlite_path()
        .expect("a SQLite database")
        .to_path_buf();
    let mut locker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .expect("lock");
    app.sim
        .with_state(|s| s.phone_mut(P0).quality_rating = Some("RED".into()));
    // A cycle that started before the lock may still be recorded; the next one cannot be.
    d.next_cycle().await;
    d.next_cycle().await;

    let (code, body) = d.get("/readyz", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("could not be recorded") && body.contains("locked"),
        "{body}"
    );
    let (_, text) = d.get("/metrics", None).await;
    assert_valid_openmetrics(&text);
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("waba_monitor_store_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 1.0, "{text}");
    let ok_now = sample(
        &text,
        "waba_monitor_poll_runs_total{source=\"main\",outcome=\"ok\"}",
    )
    .or_else(|| {
        sample(
            &text,
            "waba_monitor_poll_runs_total{outcome=\"ok\",source=\"main\"}",
        )
    })
    .map(str::to_owned);
    assert!(
        text.contains("outcome=\"failed\""),
        "an unrecorded cycle is a failed poll: {text}"
    );
    // A cycle may have been recorded between the first sample and the lock, no more.
    let n = |s: &Option<String>| {
        s.as_deref()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        n(&ok_now) <= n(&ok_before) + 1.0,
        "{ok_before:?} -> {ok_now:?}"
    );

    // The lock goes away: the next cycle records the RED it saw all along.
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    drop(locker);
    let mut recorded = false;
    for _ in 0..5 {
        if d.next_cycle().await > 0 {
            recorded = true;
            break;
        }
    }
    assert!(
        recorded,
        "the change is recorded once the database takes writes"
    );
    assert_eq!(d.get("/readyz", None).await.0, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_that_keep_running_past_their_timeout_make_the_source_blind() {
    use waba_monitor::sim::{Fault, FaultKind, FaultTarget};
    let app = TestApp::spawn_with(
        one_waba(1),
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "* * * * * *",
    )
    .await;
    let d = Running::start(&app).await;
    // Meta now hangs on every request: each cycle runs past its 1 s timeout and is abandoned.
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(
            FaultTarget::Any,
            FaultKind::Hang(Duration::from_secs(3)),
        ))
    });
    let store = app.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let blind: Option<bool> = on_store!(store, |p| sqlx::query_scalar(
            "SELECT blind FROM source_state WHERE source = 'main'"
        )
        .fetch_optional(p)
        .await)
        .expect("source state");
        if blind == Some(true) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned cycles never made the source blind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queued: i64 = on_store!(store, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE subject LIKE '%blind%'"
    )
    .fetch_one(p)
    .await)
    .expect("outbox");
    let alerts: i64 = on_store!(store, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM alerts WHERE topic = 'blind'"
    )
    .fetch_one(p)
    .await)
    .expect("alerts");
    assert!(alerts >= 1 || queued >= 1, "the blind alert is raised");
    let (code, body) = d.get("/readyz", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cycle_timeout"), "{body}");
    store.close().await;
    app.sim.with_state(|s| s.faults.clear());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_over_the_api_need_the_token_and_are_added_listed_and_expired() {
    // Without an API token configured, silences are refused (the rest of the API is open).
    let open = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let d = Running::start(&open).await;
    assert_eq!(d.get("/api/silences", None).await.0, 403);
    d.stop().await;

    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    app.write_secret("api-token", API_TOKEN);
    app.add_daemon_key("api_token_file = \"api-token\"");
    let d = Running::start(&app).await;
    let http = reqwest::Client::new();
    let add = |body: serde_json::Value, token: Option<&'static str>| {
        let mut req = http.post(format!("{}/api/silences", d.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let good = serde_json::json!({"wabas": [WABA1], "for": "2h", "comment": "planned migration", "author": "carol"});
    assert_eq!(
        add(good.clone(), None)
            .await
            .expect("post")
            .status()
            .as_u16(),
        401
    );
    for bad in [
        serde_json::json!({"wabas": [WABA1], "for": "forever", "comment": "x"}),
        serde_json::json!({"wabas": [], "for": "2h", "comment": "x"}),
        serde_json::json!({"wabas": ["+1 555"], "for": "2h", "comment": "x"}),
        serde_json::json!({"wabas": [WABA1], "for": "2h", "comment": " "}),
        serde_json::json!({"wabas": [WABA1], "for": "2h", "comment": "x", "extra": 1}),
    ] {
        let r = add(bad.clone(), Some(API_TOKEN)).await.expect("post");
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }
    let r = add(good, Some(API_TOKEN)).await.expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    let id = v["data"]["id"].as_i64().expect("id");

    let (code, body) = d.get("/api/silences", Some(API_TOKEN)).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let s = &v["data"][0];
    assert_eq!(s["id"], id);
    assert_eq!(s["state"], "active");
    assert_eq!(s["author"], "carol");
    assert_eq!(s["matchers"]["wabas"][0], WABA1);

    let del = |path: String| {
        http.delete(format!("{}{path}", d.base))
            .bearer_auth(API_TOKEN)
            .send()
    };
    assert_eq!(
        del(format!("/api/silences/{id}"))
            .await
            .expect("delete")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        del(format!("/api/silences/{id}"))
            .await
            .expect("delete")
            .status()
            .as_u16(),
        404,
        "already ended"
    );
    let (_, body) = d.get("/api/silences", Some(API_TOKEN)).await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["data"][0]["state"], "expired");
    assert_eq!(v["data"][0]["expired_by"], "api");
    d.stop().await;
}
