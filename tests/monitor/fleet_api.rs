//! The fleet API (issue 16): accounts added, changed and removed through `/api/accounts`,
//! polled with the config's targets by the real daemon; per-account tokens sealed with
//! `[daemon] secret_key_file` and never shown, logged or stored in clear.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Daemon, TOKEN, TestApp};
use waba_monitor::daemon::RunOptions;
use waba_monitor::sim::SimState;

const WABA1: &str = "200000000000001";
const P0: &str = "300000000000001";
/// A WABA the config does not list, with two numbers: added number by number.
const WABA9: &str = "200000000000009";
const P91: &str = "300000000000091";
const P92: &str = "300000000000092";
/// A WABA the config does not list: added whole.
const WABA8: &str = "200000000000008";
const P81: &str = "300000000000081";
const API_TOKEN: &str = "api-token-for-fleet-tests-0123456789";
const OWN_TOKEN: &str = "EAAOwnTokenOfNumber91-zyxwvutsrq-9876543210";
const KEY: &str = "8f1c2d3e4a5b69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

fn fleet() -> SimState {
    let mut s = SimState::fleet(1, 2);
    s.add_waba(None, WABA9, "API WABA nine");
    s.add_phone(WABA9, P91, "+1 555-000-0091", "Ninety One");
    s.add_phone(WABA9, P92, "+1 555-000-0092", "Ninety Two");
    s.add_waba(None, WABA8, "API WABA eight");
    s.add_phone(WABA8, P81, "+1 555-000-0081", "Eighty One");
    s
}

struct Running {
    daemon: Daemon,
    base: String,
    http: reqwest::Client,
}

impl Running {
    async fn start(app: &TestApp) -> Running {
        let daemon = Daemon::start(app, RunOptions::default()).await;
        Running {
            base: daemon.base.clone(),
            daemon,
            http: reqwest::Client::new(),
        }
    }

    async fn next_cycle(&mut self) {
        self.daemon.next_cycle_within(Duration::from_secs(15)).await;
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert!(!text.contains(OWN_TOKEN), "a token in an answer: {text}");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text })),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(API_TOKEN), None)
            .await
    }

    async fn post(&self, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/api/accounts",
            Some(API_TOKEN),
            Some(body),
        )
        .await
    }

    async fn stop(self) {
        self.daemon.stop().await;
    }
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

async fn app_with_api_token() -> TestApp {
    let app = TestApp::spawn_with(
        fleet(),
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "* * * * * *",
    )
    .await;
    app.write_secret("api-token", API_TOKEN);
    app.add_daemon_key("api_token_file = \"api-token\"");
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_added_polled_changed_and_removed_through_the_api_with_the_accounts_shapes() {
    let app = app_with_api_token().await;
    let mut d = Running::start(&app).await;

    // Every write needs the token.
    let add91 =
        json!({"name": "Support line", "phone_number_id": P91, "business_account_id": WABA9});
    let (code, body) = d
        .call(
            reqwest::Method::POST,
            "/api/accounts",
            None,
            Some(add91.clone()),
        )
        .await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = d
        .call(
            reqwest::Method::POST,
            "/api/accounts",
            Some("wrong"),
            Some(add91.clone()),
        )
        .await;
    assert_eq!(code, 401, "{body}");

    // 201 in the Accounts shape: pending until polled.
    let (code, body) = d.post(add91.clone()).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"], "success");
    let data = &body["data"];
    assert_eq!(data["id"], P91);
    assert_eq!(data["name"], "Support line");
    assert_eq!(data["status"], "pending");
    assert_eq!(data["managed_by"], "api");
    assert_eq!(data["phone_number_id"], P91);
    assert_eq!(data["business_account_id"], WABA9);
    assert!(
        data["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(data.get("access_token").is_none(), "no token, no field");

    // Until a cycle has read it: shown as pending, in the list too. Cycles run every second, so
    // one may read it meanwhile (on a loaded machine, often): strict only while Graph has not
    // been asked about it; after, active is right too.
    let (code, body) = d.get(&format!("/api/accounts/{P91}")).await;
    let (_, list) = d.get("/api/accounts").await;
    let unread = !app
        .sim
        .requests()
        .iter()
        .any(|r| r.path.ends_with(P91) || r.body.contains(P91));
    let shown = |status: &Value| status == "pending" || (!unread && status == "active");
    assert_eq!(code, 200, "{body}");
    assert!(shown(&body["data"]["status"]), "unread: {unread}: {body}");
    let items = list["data"]["items"].as_array().expect("items").clone();
    assert!(
        items
            .iter()
            .any(|i| i["id"] == P91 && shown(&i["status"]) && i["managed_by"] == "api"),
        "unread: {unread}: {list}"
    );
    assert_eq!(list["data"]["total"].as_u64(), Some(items.len() as u64));

    // Duplicates: the API's own, and the config's (listed, or watched through a config WABA).
    let (code, body) = d.post(add91.clone()).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        message(&body).contains("already managed through the API"),
        "{body}"
    );
    let (code, body) = d
        .post(json!({"name": "x", "phone_number_id": P0, "business_account_id": WABA1}))
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(message(&body).contains("config file"), "{body}");
    let (code, body) = d
        .post(json!({"name": "x", "business_account_id": WABA1}))
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(message(&body).contains("config file"), "{body}");
    // Malformed requests.
    for bad in [
        json!({"name": "x"}),
        json!({"name": "", "phone_number_id": P92}),
        json!({"name": "x", "phone_number_id": "12ab"}),
        json!({"name": "x", "phone_number_id": P92, "unknown": 1}),
        json!({"name": "x", "phone_number_id": P92, "source": "nope"}),
        json!({"name": "x", "business_account_id": WABA8, "access_token": OWN_TOKEN}),
    ] {
        let (code, body) = d.post(bad.clone()).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert_eq!(body["status"], "error", "{body}");
    }
    // A per-account token without [daemon] secret_key_file: refused, saying how to fix it.
    let (code, body) = d
        .post(json!({"name": "x", "phone_number_id": P92, "access_token": OWN_TOKEN}))
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(message(&body).contains("secret_key_file"), "{body}");
    assert!(message(&body).contains("openssl rand -hex 32"), "{body}");

    // A whole WABA.
    let (code, body) = d
        .post(json!({"name": "Eight", "business_account_id": WABA8}))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["id"], WABA8);
    assert_eq!(body["data"]["kind"], "waba");

    // Polled from the next cycle: active, with Meta's data.
    d.next_cycle().await;
    d.next_cycle().await;
    let (code, body) = d.get(&format!("/api/accounts/{P91}")).await;
    assert_eq!(code, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["status"], "active", "{body}");
    assert_eq!(data["managed_by"], "api");
    assert_eq!(data["name"], "Ninety One", "Meta's verified name");
    assert_eq!(data["account_name"], "Support line");
    assert_eq!(data["business_account_id"], WABA9);
    let (_, body) = d.get(&format!("/api/accounts/{P81}")).await;
    assert_eq!(body["data"]["status"], "active", "{body}");
    assert_eq!(body["data"]["managed_by"], "api", "through its API WABA");
    let (_, body) = d.get(&format!("/api/accounts/{P0}")).await;
    assert_eq!(body["data"]["managed_by"], "config", "{body}");
    assert!(body["data"].get("access_token").is_none());
    let (_, list) = d.get("/api/accounts").await;
    let items = list["data"]["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .all(|i| i["managed_by"] == "config" || i["managed_by"] == "api")
    );
    assert_eq!(list["data"]["total"], 4, "{list}");

    // PUT: 200 for an API account, 409 for a config one, 404 for an unknown one.
    let put = |id: &str| format!("/api/accounts/{id}");
    let (code, body) = d
        .call(
            reqwest::Method::PUT,
            &put(P91),
            Some(API_TOKEN),
            Some(json!({"name": "Renamed line"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["account_name"], "Renamed line", "{body}");
    let (code, body) = d
        .call(
            reqwest::Method::PUT,
            &put(P0),
            Some(API_TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        message(&body).contains("managed by the config file"),
        "{body}"
    );
    let (code, _) = d
        .call(
            reqwest::Method::PUT,
            &put("999"),
            Some(API_TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(code, 404);

    // DELETE: a config number cannot be removed here; an unknown one is 404.
    let (code, body) = d
        .call(reqwest::Method::DELETE, &put(P0), Some(API_TOKEN), None)
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        message(&body).contains("managed by the config file: remove it there"),
        "{body}"
    );
    let (code, _) = d
        .call(reqwest::Method::DELETE, &put("999"), Some(API_TOKEN), None)
        .await;
    assert_eq!(code, 404);
    let (code, _) = d.call(reqwest::Method::DELETE, &put(P91), None, None).await;
    assert_eq!(code, 401);

    // DELETE an API number: no longer polled, its history kept.
    let (code, body) = d
        .call(reqwest::Method::DELETE, &put(P91), Some(API_TOKEN), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["deleted"], true);
    let asked_before = app
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(P91) || r.body.contains(P91))
        .count();
    assert!(asked_before > 0, "it was polled");
    d.next_cycle().await;
    d.next_cycle().await;
    let asked_after = app
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(P91) || r.body.contains(P91))
        .count();
    assert_eq!(asked_before, asked_after, "polled after its DELETE");
    let (code, body) = d.get(&format!("/api/accounts/{P91}")).await;
    assert_eq!(code, 200, "kept: {body}");
    assert_eq!(body["data"]["status"], "disconnected", "{body}");
    assert_eq!(body["data"]["managed_by"], "none", "{body}");
    let (_, hist) = d.get(&format!("/api/accounts/{P91}/history")).await;
    let rows = hist["data"]["items"].as_array().expect("history").clone();
    let managed: Vec<&str> = rows
        .iter()
        .filter(|r| r["field"] == "managed")
        .filter_map(|r| r["new"].as_str())
        .collect();
    assert_eq!(
        managed,
        ["api-removed", "api-updated", "api-added"],
        "{hist}"
    );
    assert!(
        rows.iter()
            .any(|r| r["field"] == "presence" && r["new"] == "gone"),
        "{hist}"
    );
    assert!(
        rows.iter().any(|r| r["field"] == "status"),
        "the polled history is kept: {hist}"
    );
    // A second DELETE: not managed any more.
    let (code, _) = d
        .call(reqwest::Method::DELETE, &put(P91), Some(API_TOKEN), None)
        .await;
    assert_eq!(code, 404);

    // `history --id` shows the audit rows too.
    let out = app.cli(&["history", "--id", P91]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("api-added") && text.contains("api-removed"),
        "{text}"
    );
    d.stop().await;

    // The audit: who, when, what — never a token.
    let store = app.store().await;
    let audit = store.managed_audit(Some(P91)).await.expect("audit");
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["remove", "update", "add"]);
    assert!(
        audit
            .iter()
            .all(|a| a.actor == "api" && a.at.ends_with('Z'))
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_token_configured_writes_are_refused_with_403() {
    let app = TestApp::spawn(fleet(), &format!("wabas = [\"{WABA1}\"]")).await;
    let d = Running::start(&app).await;
    let (code, body) = d
        .call(
            reqwest::Method::POST,
            "/api/accounts",
            None,
            Some(json!({"name": "x", "phone_number_id": P91})),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(message(&body).contains("api_token_file"), "{body}");
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
        let (code, body) = d
            .call(
                method,
                &format!("/api/accounts/{P0}"),
                None,
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(code, 403, "{body}");
    }
    // Reads stay open on loopback.
    assert_eq!(d.get("/api/accounts").await.0, 200);
    d.stop().await;
}

/// A free loopback port for the real binary.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_with_its_own_token_is_read_with_it_and_the_token_is_never_shown_logged_or_stored_in_clear()
 {
    if crate::helpers::on_postgres() {
        // Its last check reads the SQLite file (and its WAL) for the token's bytes; the
        // sealing itself is the store's, tested on both backends by the library's tests.
        return;
    }
    let mut state = fleet();
    state
        .phone_tokens
        .insert(P91.to_owned(), OWN_TOKEN.to_owned());
    let app = TestApp::spawn_with(
        state,
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "* * * * * *",
    )
    .await;
    app.write_secret("api-token", API_TOKEN);
    app.write_secret("secret.key", &format!("{KEY}\n"));
    app.add_daemon_key("api_token_file = \"api-token\"");
    app.add_daemon_key("secret_key_file = \"secret.key\"");
    let port = free_port();
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::write(
        &app.config_path,
        text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .expect("config");

    // The real binary, logging at debug level to a file.
    let log_path = app.config_path.with_file_name("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
        .arg("--config")
        .arg(&app.config_path)
        .arg("run")
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("daemon starts");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    let resp = http
        .post(format!("{base}/api/accounts"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(
            json!({"name": "Own token", "phone_number_id": P91, "business_account_id": WABA9, "access_token": OWN_TOKEN})
                .to_string(),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 201);
    let created = resp.text().await.expect("body");
    assert!(!created.contains(OWN_TOKEN), "{created}");
    assert!(
        created.contains("\"access_token\":\"EAAO…(masked)\""),
        "{created}"
    );

    // Read at the next cycles with its own token (the simulator refuses the source's for it).
    let mut body = String::new();
    for _ in 0..100 {
        body = http
            .get(format!("{base}/api/accounts/{P91}"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        if body.contains("\"status\":\"active\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(body.contains("\"status\":\"active\""), "{body}");
    assert!(body.contains("\"managed_by\":\"api\""), "{body}");
    assert!(
        body.contains("EAAO…(masked)") && !body.contains(OWN_TOKEN),
        "{body}"
    );
    let own = format!("Bearer {OWN_TOKEN}");
    let reqs = app.sim.requests();
    assert!(
        reqs.iter()
            .any(|r| r.path.ends_with(P91) && r.authorization.as_deref() == Some(own.as_str())),
        "read with its own token"
    );
    assert!(
        reqs.iter()
            .all(|r| r.authorization.as_deref() != Some(own.as_str()) || r.path.ends_with(P91)),
        "its token reads nothing else"
    );
    // The connection test uses it too.
    let resp = http
        .post(format!("{base}/api/accounts/{P91}/test"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("test");
    let code = resp.status().as_u16();
    let tested = resp.text().await.expect("body");
    assert_eq!(code, 200, "{tested}");
    assert!(tested.contains("\"connected\":true"), "{tested}");
    // A new token through PUT.
    let resp = http
        .put(format!("{base}/api/accounts/{P91}"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(json!({"access_token": OWN_TOKEN}).to_string())
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(!resp.text().await.expect("body").contains(OWN_TOKEN));

    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;

    // Not in the log (debug level), not in the database file nor its WAL.
    let log = std::fs::read(&log_path).expect("log");
    assert!(
        contains(&log, "account added through the fleet API"),
        "logged"
    );
    assert!(!contains(&log, OWN_TOKEN), "the token is in the log");
    let db = app
        .config()
        .daemon
        .database
        .sqlite_path()
        .expect("a SQLite database")
        .to_path_buf();
    let mut files = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            files += 1;
            assert!(
                !contains(&bytes, OWN_TOKEN),
                "the token is in {}",
                path.display()
            );
            assert!(
                !contains(&bytes, &OWN_TOKEN[4..]),
                "a part of the token is in {}",
                path.display()
            );
        }
    }
    assert!(files >= 1);
    let store = app.store().await;
    let audit = store.managed_audit(None).await.expect("audit");
    assert!(
        audit
            .iter()
            .all(|a| !a.detail.as_deref().unwrap_or("").contains(OWN_TOKEN))
    );
    store.close().await;

    // A different key, or none: the daemon refuses to start, naming secret_key_file.
    app.write_secret(
        "secret.key",
        "0000000000000000000000000000000000000000000000000000000000000001\n",
    );
    let out = app.cli(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("secret_key_file") && err.contains("not the key"),
        "{err}"
    );
    // check-config fails whenever run would.
    let out = app.cli(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not the key"), "{err}");
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::write(
        &app.config_path,
        text.replace("secret_key_file = \"secret.key\"\n", ""),
    )
    .expect("config");
    let out = app.cli(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("secret_key_file is not set") && err.contains("encrypted"),
        "{err}"
    );
    let _ = TOKEN;
}

#[test]
fn a_secret_key_file_that_is_not_a_key_is_refused_by_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    write("meta-token", "meta-token-0123456789");
    write("secret.key", "not-hex-at-all\n");
    let path = dir.path().join("monitor.toml");
    std::fs::write(
        &path,
        "[daemon]\ndatabase = \"m.db\"\nsecret_key_file = \"secret.key\"\n\n[[meta]]\nname = \"m\"\naccess_token_file = \"meta-token\"\nwabas = [\"1\"]\n",
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("daemon.secret_key_file") && err.contains("64 hex characters"),
        "{err}"
    );
    assert!(err.contains("openssl rand -hex 32"), "{err}");
    // A readable key passes.
    write("secret.key", &format!("{KEY}\n"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_per_account_token_fails_that_number_only_and_never_blinds_its_source() {
    let mut state = fleet();
    state
        .phone_tokens
        .insert(P91.to_owned(), OWN_TOKEN.to_owned());
    let app = app_with_api_token().await;
    app.sim.with_state(|s| *s = state);
    app.write_secret("secret.key", KEY);
    app.add_daemon_key("secret_key_file = \"secret.key\"");
    let mut d = Running::start(&app).await;
    let (code, body) = d
        .post(json!({"name": "Wrong token", "phone_number_id": P91, "business_account_id": WABA9, "access_token": "EAAWrongTokenForNinetyOne-0123456789"}))
        .await;
    assert_eq!(code, 201, "{body}");
    d.next_cycle().await;
    d.next_cycle().await;
    // The number was not read (Meta refused its token) ...
    let (_, body) = d.get(&format!("/api/accounts/{P91}")).await;
    assert_eq!(body["data"]["status"], "pending", "{body}");
    // ... and the source, whose own token works, is not blind.
    let (code, metrics) = d.call(reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(code, 200);
    let text = metrics["raw"].as_str().unwrap_or_default().to_owned();
    let blind = text
        .lines()
        .find(|l| l.starts_with("waba_monitor_source_blind{source=\"main\"}"))
        .unwrap_or_default()
        .to_owned();
    assert!(blind.ends_with(" 0"), "{blind}");
    // The config's numbers are still read with the source's token.
    let (_, body) = d.get(&format!("/api/accounts/{P0}")).await;
    assert_eq!(body["data"]["status"], "active", "{body}");
    d.stop().await;
}
