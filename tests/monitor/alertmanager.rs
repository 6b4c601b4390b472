//! `[alertmanager]` against a real Alertmanager (Debian's `prometheus-alertmanager`), started
//! by each test on a free loopback port with its config and storage in a temp dir: a RED
//! number appears with its labels and annotations within a cycle, stays while RED, resolves
//! when GREEN; a silence on its waba_id shows it silenced while the monitor keeps posting; an
//! Alertmanager down for three cycles gets the open alerts once it is back; a killed monitor's
//! alert resolves by itself at its endsAt. Credentials never reach the logs or /metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Daemon, TestApp, one_waba};
use crate::receivers::sample;
use waba_monitor::daemon::RunOptions;

const BUSINESS: &str = "100000000000001";
const WABA1: &str = "200000000000001";
const P0: &str = "300000000000001";
const P1: &str = "300000000000002";
const BINARY: &str = "prometheus-alertmanager";

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Where the Alertmanager binary is; fails the test with how to install it when it is not
/// there (never skips).
fn alertmanager_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(BINARY);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{BINARY}` is not installed: these tests need a real Alertmanager. Install it with \
         `apt-get install -y --no-install-recommends prometheus-alertmanager` (.ci/run does)"
    );
}

/// A real Alertmanager on loopback, killed when dropped.
struct Alertmanager {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        Alertmanager::start_on(free_port()).await
    }

    async fn start_on(port: u16) -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut am = Alertmanager {
            child: None,
            port,
            dir,
        };
        am.up().await;
        am
    }

    /// Starts (or restarts) the process on its port and storage, waits for `/-/ready`.
    async fn up(&mut self) {
        let bin = alertmanager_binary();
        let config = self.dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_by: ['...']\nreceivers:\n  - name: blackhole\n",
        )
        .expect("config");
        let storage = self.dir.path().join("data");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("alertmanager starts");
        self.child = Some(child);
        let url = format!("{}/-/ready", self.url());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Alertmanager did not become ready on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every alert Alertmanager holds that has not ended (active, silenced or inhibited).
    async fn alerts(&self) -> Vec<Value> {
        let r = reqwest::get(format!("{}/api/v2/alerts", self.url()))
            .await
            .expect("GET /api/v2/alerts");
        assert!(r.status().is_success(), "{}", r.status());
        r.json::<Vec<Value>>().await.expect("json")
    }

    /// The alert about `phone` named `name`, if Alertmanager has it (not ended).
    async fn alert(&self, name: &str, phone: &str) -> Option<Value> {
        self.alerts()
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == name && a["labels"]["phone_number_id"] == phone)
    }

    async fn wait_for<F: Fn(Option<&Value>) -> bool>(
        &self,
        what: &str,
        name: &str,
        phone: &str,
        limit: Duration,
        cond: F,
    ) -> Option<Value> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let a = self.alert(name, phone).await;
            if cond(a.as_ref()) {
                return a;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; Alertmanager has: {:#}",
                Value::Array(self.alerts().await)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Alertmanager {
    /// Waits until the alert is gone, and asserts it went before the endsAt it was last seen
    /// with: ended by the monitor, not expired.
    async fn wait_ended_early(&self, what: &str, name: &str, phone: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let mut last_end = String::new();
        while let Some(a) = self.alert(name, phone).await {
            last_end = a["endsAt"].as_str().unwrap_or_default().to_owned();
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {a:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let gone_at = waba_monitor::timefmt::rfc3339(chrono::Utc::now());
        assert!(
            last_end.is_empty() || gone_at < last_end,
            "{what}: gone at {gone_at}, only when its endsAt {last_end} passed"
        );
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.down();
    }
}

/// An app polling every second (`schedule`), one WABA of two numbers, `[alertmanager]` to
/// `am_url` with `extra` keys.
async fn app(am_url: &str, extra: &str) -> TestApp {
    TestApp::spawn_full(
        one_waba(2),
        &format!("businesses = [\"{BUSINESS}\"]"),
        "v24.0",
        "* * * * * *",
        &format!(
            "[alertmanager]\nurl = \"{am_url}\"\ntimeout = \"2s\"\nrunbook_url = \"https://runbooks.example.com/{{alertname}}\"\n{extra}"
        ),
    )
    .await
}

fn opts() -> RunOptions {
    RunOptions {
        delivery_tick: Duration::from_millis(200),
        email_backoff: waba_monitor::retry::RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            max_times: usize::MAX,
        },
        ..RunOptions::default()
    }
}

fn set_quality(app: &TestApp, phone: &str, q: &str) {
    app.sim
        .with_state(|s| s.phone_mut(phone).quality_rating = Some(q.into()));
}

async fn metrics(d: &Daemon) -> String {
    reqwest::get(format!("{}/metrics", d.base))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_number_appears_within_a_cycle_stays_while_red_and_resolves_when_green() {
    let am = Alertmanager::start().await;
    let app = app(
        &am.url(),
        "external_url = \"https://monitor.example.com/waba\"\n",
    )
    .await;
    let mut d = Daemon::start(&app, opts()).await;
    set_quality(&app, P0, "RED");
    // The cycle that records the change queues the alert in its transaction; it is in
    // Alertmanager well before the next cycle (1 s) is due.
    while d.next_cycle_within(Duration::from_secs(5)).await == 0 {}
    let a = am
        .wait_for(
            "the RED number in Alertmanager within a cycle",
            "WhatsAppNumberQualityRed",
            P0,
            Duration::from_millis(1500),
            |a| a.is_some(),
        )
        .await
        .expect("alert");
    let labels = &a["labels"];
    assert_eq!(labels["severity"], "critical", "{a:#}");
    assert_eq!(labels["topic"], "quality", "{a:#}");
    assert_eq!(labels["source"], "main", "{a:#}");
    assert_eq!(labels["business_id"], BUSINESS, "{a:#}");
    assert_eq!(labels["waba_id"], WABA1, "{a:#}");
    assert_eq!(labels["phone_number_id"], P0, "{a:#}");
    let ann = &a["annotations"];
    assert_eq!(ann["old"], "GREEN", "{a:#}");
    assert_eq!(ann["new"], "RED", "{a:#}");
    assert!(
        ann["since"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{a:#}"
    );
    assert!(
        ann["summary"].as_str().is_some_and(|s| s.contains("RED")),
        "{a:#}"
    );
    assert!(
        ann["description"]
            .as_str()
            .is_some_and(|s| s.contains("RED") && s.contains("GREEN")),
        "{a:#}"
    );
    assert_eq!(
        ann["runbook_url"], "https://runbooks.example.com/WhatsAppNumberQualityRed",
        "{a:#}"
    );
    assert_eq!(
        a["generatorURL"],
        format!("https://monitor.example.com/waba/numbers/{P0}"),
        "{a:#}"
    );
    assert_eq!(a["status"]["state"], "active", "{a:#}");
    // The other number, still GREEN, is not there.
    assert!(
        am.alerts()
            .await
            .iter()
            .all(|x| x["labels"]["phone_number_id"] != P1),
        "only the RED number"
    );

    // Still RED over the next cycles: still active, and re-posted (its endsAt moves on).
    let ends = |a: &Value| a["endsAt"].as_str().unwrap_or_default().to_owned();
    let first_end = ends(&a);
    for _ in 0..3 {
        d.next_cycle_within(Duration::from_secs(5)).await;
    }
    let later = am
        .wait_for(
            "the alert re-posted with a later endsAt",
            "WhatsAppNumberQualityRed",
            P0,
            Duration::from_secs(5),
            |x| x.is_some_and(|x| ends(x) > first_end),
        )
        .await
        .expect("still there");
    assert_eq!(later["status"]["state"], "active", "{later:#}");
    let m = metrics(&d).await;
    assert!(
        sample(
            &m,
            "waba_monitor_alertmanager_posts_total{outcome=\"sent\"}"
        )
        .is_some_and(|v| v >= 2.0),
        "{m}"
    );

    // GREEN again: resolved (gone from the alerts not ended) within a cycle or two, well
    // before its endsAt.
    set_quality(&app, P0, "GREEN");
    am.wait_ended_early(
        "the alert resolved",
        "WhatsAppNumberQualityRed",
        P0,
        Duration::from_secs(4),
    )
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_on_its_waba_shows_the_alert_silenced_while_the_monitor_keeps_posting() {
    let am = Alertmanager::start().await;
    let app = app(&am.url(), "").await;
    let mut d = Daemon::start(&app, opts()).await;
    set_quality(&app, P0, "RED");
    am.wait_for(
        "the RED number",
        "WhatsAppNumberQualityRed",
        P0,
        Duration::from_secs(3),
        |a| a.is_some(),
    )
    .await;
    let now = chrono::Utc::now();
    let silence = json!({
        "matchers": [{"name": "waba_id", "value": WABA1, "isRegex": false, "isEqual": true}],
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "waba-monitor tests",
        "comment": "maintenance of the WABA",
    });
    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/silences", am.url()))
        .json(&silence)
        .send()
        .await
        .expect("POST silence");
    assert!(r.status().is_success(), "{}", r.status());
    let id = r.json::<Value>().await.expect("json")["silenceID"]
        .as_str()
        .expect("silence id")
        .to_owned();
    let a = am
        .wait_for(
            "the alert shown silenced",
            "WhatsAppNumberQualityRed",
            P0,
            Duration::from_secs(5),
            |a| a.is_some_and(|a| a["status"]["state"] == "suppressed"),
        )
        .await
        .expect("alert");
    assert_eq!(a["status"]["silencedBy"], json!([id]), "{a:#}");
    // The monitor keeps posting it: more successful posts, its endsAt moves on.
    let sent = |m: &str| sample(m, "waba_monitor_alertmanager_posts_total{outcome=\"sent\"}");
    let before = sent(&metrics(&d).await).expect("counted");
    let end = a["endsAt"].as_str().expect("endsAt").to_owned();
    for _ in 0..2 {
        d.next_cycle_within(Duration::from_secs(5)).await;
    }
    let later = am
        .wait_for(
            "the silenced alert re-posted",
            "WhatsAppNumberQualityRed",
            P0,
            Duration::from_secs(5),
            |x| x.is_some_and(|x| x["endsAt"].as_str().unwrap_or("") > end.as_str()),
        )
        .await
        .expect("alert");
    assert_eq!(later["status"]["state"], "suppressed", "{later:#}");
    // Alertmanager holds the post before the monitor has its answer and counts it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = sent(&metrics(&d).await).expect("counted");
        if now > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no more successful posts counted: {now} (before the silence: {before})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_down_for_three_cycles_gets_the_open_alerts_when_it_is_back() {
    let mut am = Alertmanager::start().await;
    let app = app(&am.url(), "").await;
    let mut d = Daemon::start(&app, opts()).await;
    am.down();
    // Both numbers go bad while it is down: one RED, the other banned.
    set_quality(&app, P0, "RED");
    app.sim
        .with_state(|s| s.phone_mut(P1).status = Some("BANNED".into()));
    for _ in 0..3 {
        d.next_cycle_within(Duration::from_secs(5)).await;
    }
    let m = metrics(&d).await;
    assert!(
        sample(
            &m,
            "waba_monitor_alertmanager_posts_total{outcome=\"retry\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "posts to the down Alertmanager are retried:\n{m}"
    );
    // Back, with an empty memory (its storage is kept, but it never heard of them).
    am.up().await;
    am.wait_for(
        "the RED number after the outage",
        "WhatsAppNumberQualityRed",
        P0,
        Duration::from_secs(5),
        |a| a.is_some(),
    )
    .await;
    let banned = am
        .wait_for(
            "the banned number after the outage",
            "WhatsAppNumberBanned",
            P1,
            Duration::from_secs(5),
            |a| a.is_some(),
        )
        .await
        .expect("alert");
    assert_eq!(banned["labels"]["severity"], "critical", "{banned:#}");
    assert_eq!(banned["annotations"]["new"], "BANNED", "{banned:#}");
    d.stop().await;
}

/// The real binary, `run`, its stderr collected in the background.
struct Monitor {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Monitor {
    fn start(app: &TestApp, env: &[(&str, &str)]) -> Monitor {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_waba-monitor"));
        cmd.arg("--config")
            .arg(&app.config_path)
            .arg("run")
            .env("RUST_LOG", "debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        Monitor { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGKILL: no goodbye, nothing posted on the way out.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The app's config listening on `port` instead of an OS-chosen one.
fn listen_on(app: &TestApp, port: u16) {
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    let text = text.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&app.config_path, text).expect("config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_monitors_alert_resolves_by_itself_after_its_ends_at() {
    let am = Alertmanager::start().await;
    let app = app(&am.url(), "").await;
    set_quality(&app, P0, "RED");
    let mut monitor = Monitor::start(&app, &[]);
    let a = am
        .wait_for(
            "the RED number from the running binary",
            "WhatsAppNumberQualityRed",
            P0,
            Duration::from_secs(20),
            |a| a.is_some(),
        )
        .await
        .expect("alert");
    // Posted every second (the cycle) with endsAt a few seconds ahead.
    let ends_at = |a: &Value| {
        chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str().expect("endsAt"))
            .expect("time")
            .with_timezone(&chrono::Utc)
    };
    let lead = ends_at(&a) - chrono::Utc::now();
    assert!(
        lead > chrono::Duration::zero() && lead <= chrono::Duration::seconds(10),
        "endsAt {} is not a few intervals ahead",
        a["endsAt"]
    );
    monitor.kill();
    let killed_at = chrono::Utc::now();
    let last = am.alert("WhatsAppNumberQualityRed", P0).await;
    let deadline = last.as_ref().map_or(killed_at, ends_at);
    // Gone by itself once its last endsAt has passed (and not long after).
    am.wait_for(
        "the alert of the killed monitor resolved by itself",
        "WhatsAppNumberQualityRed",
        P0,
        Duration::from_secs(15),
        |a| a.is_none(),
    )
    .await;
    let resolved_at = chrono::Utc::now();
    assert!(
        resolved_at + chrono::Duration::milliseconds(500) >= deadline,
        "resolved at {resolved_at}, before its endsAt {deadline}"
    );
}

/// A loopback HTTP server that answers every request with 401 and echoes its Authorization
/// header in the body (as a careless proxy might), recording what it was sent.
fn echoing_401() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let head_end = loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
                .unwrap_or(0);
            while buf.len() < head_end + len {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let auth = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization")
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or_default();
            log.lock().unwrap_or_else(|e| e.into_inner()).push(head);
            let body = format!("unauthorized: {auth}");
            let _ = write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_or_password_never_appears_in_the_logs_or_metrics() {
    const BEARER: &str = "am-bearer-Zq81xLr0PqW3";
    const PASSWORD: &str = "am-password-Hk29sVv7TnY4";
    for (auth, secret) in [
        (
            "bearer_token_env = \"WABA_MONITOR_TEST_AM_SECRET\"\n",
            BEARER,
        ),
        (
            "basic_auth_user = \"waba-monitor\"\nbasic_auth_password_env = \"WABA_MONITOR_TEST_AM_SECRET\"\n",
            PASSWORD,
        ),
    ] {
        let (url, seen) = echoing_401();
        let app = app(&url, auth).await;
        set_quality(&app, P0, "RED");
        let port = free_port();
        listen_on(&app, port);
        let mut monitor = Monitor::start(&app, &[("WABA_MONITOR_TEST_AM_SECRET", secret)]);
        // Refused (401) and counted as failed, not retried.
        let metrics_url = format!("http://127.0.0.1:{port}/metrics");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let m = loop {
            if let Ok(r) = reqwest::get(&metrics_url).await
                && let Ok(m) = r.text().await
                && sample(
                    &m,
                    "waba_monitor_alertmanager_posts_total{outcome=\"failed\"}",
                )
                .is_some_and(|v| v >= 1.0)
            {
                break m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no failed post counted; log:\n{}",
                monitor.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        monitor.kill();
        let heads = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(!heads.is_empty());
        // The credential was sent, in the Authorization header only.
        let head = &heads[0];
        assert!(head.starts_with("POST /api/v2/alerts "), "{head}");
        if secret == BEARER {
            assert!(head.contains(&format!("Bearer {BEARER}")), "{head}");
        } else {
            assert!(
                head.to_ascii_lowercase().contains("authorization: basic "),
                "{head}"
            );
        }
        let log = monitor.log();
        assert!(
            log.contains("refused for good by the Alertmanager"),
            "the refusal is logged:\n{log}"
        );
        assert!(!log.contains(secret), "the secret in the log:\n{log}");
        assert!(!m.contains(secret), "the secret in /metrics");
    }
}

#[test]
fn check_config_and_run_both_refuse_a_missing_alertmanager_secret_with_its_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n\n[alertmanager]\nurl = \"http://127.0.0.1:9093\"\nbearer_token_env = \"WABA_MONITOR_TEST_AM_UNSET\"\n",
    )
    .expect("config");
    for command in ["check-config", "run"] {
        let out = Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
            .arg("--config")
            .arg(&config)
            .arg(command)
            .env("T", "t")
            .env_remove("WABA_MONITOR_TEST_AM_UNSET")
            .output()
            .expect("binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("monitor.toml:11: `alertmanager.bearer_token_env`"),
            "{command}: {stderr}"
        );
    }
    // With the variable set, check-config passes and says where alerts go, never the token.
    let out = Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env("T", "t")
        .env("WABA_MONITOR_TEST_AM_UNSET", "am-token-Pq7Zx")
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "alertmanager: every open alert posted to http://127.0.0.1:9093 (bearer token)"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("am-token-Pq7Zx"), "{stdout}");
    // A bad URL too, with its line.
    std::fs::write(
        &config,
        "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n\n[alertmanager]\nurl = \"alertmanager:9093\"\n",
    )
    .expect("config");
    for command in ["check-config", "run"] {
        let out = Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
            .arg("--config")
            .arg(&config)
            .arg(command)
            .env("T", "t")
            .output()
            .expect("binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("monitor.toml:10: `alertmanager.url`"),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_that_hangs_does_not_hold_up_alertmanager() {
    // Accepts connections and never says a word: every email send waits for its timeout.
    let smtp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let smtp_port = smtp.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in smtp.incoming() {
            held.push(s);
        }
    });
    let am = Alertmanager::start().await;
    let app = app(
        &am.url(),
        &format!(
            "\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"10s\"\n"
        ),
    )
    .await;
    let mut d = Daemon::start(&app, opts()).await;
    set_quality(&app, P0, "RED");
    // The email of this alert is stuck in its send; the Alertmanager post is not behind it.
    am.wait_for(
        "the RED number while the SMTP server hangs",
        "WhatsAppNumberQualityRed",
        P0,
        Duration::from_secs(3),
        |a| a.is_some(),
    )
    .await;
    set_quality(&app, P1, "RED");
    d.next_cycle_within(Duration::from_secs(5)).await;
    am.wait_for(
        "the second RED number while the SMTP server hangs",
        "WhatsAppNumberQualityRed",
        P1,
        Duration::from_secs(3),
        |a| a.is_some(),
    )
    .await;
    let m = metrics(&d).await;
    assert_eq!(
        sample(&m, "waba_monitor_emails_sent_total"),
        Some(0.0),
        "the hanging server accepted nothing:\n{m}"
    );
    // Not stopped cleanly: a clean stop waits for the email sends stuck in the hanging
    // server; the test's runtime ends the daemon's tasks.
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_improving_number_moves_from_the_red_alert_to_the_yellow_one() {
    let am = Alertmanager::start().await;
    let app = app(&am.url(), "").await;
    let d = Daemon::start(&app, opts()).await;
    set_quality(&app, P0, "RED");
    am.wait_for(
        "the RED number",
        "WhatsAppNumberQualityRed",
        P0,
        Duration::from_secs(3),
        |a| a.is_some(),
    )
    .await;
    set_quality(&app, P0, "YELLOW");
    let yellow = am
        .wait_for(
            "the YELLOW alert",
            "WhatsAppNumberQualityYellow",
            P0,
            Duration::from_secs(3),
            |a| a.is_some(),
        )
        .await
        .expect("alert");
    assert_eq!(yellow["labels"]["severity"], "warning", "{yellow:#}");
    assert_eq!(yellow["annotations"]["old"], "RED", "{yellow:#}");
    // The RED one ended with the change, not at its endsAt.
    am.wait_ended_early(
        "the RED alert ended",
        "WhatsAppNumberQualityRed",
        P0,
        Duration::from_secs(3),
    )
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_source_is_posted_under_the_prometheus_rules_name_and_resolves_when_readable() {
    use waba_monitor::sim::{Fault, FaultKind, FaultTarget};
    let am = Alertmanager::start().await;
    let app = app(&am.url(), "\n[alerts]\nblind_after = 2\n").await;
    let mut d = Daemon::start(&app, opts()).await;
    app.sim
        .with_state(|s| s.add_fault(Fault::always(FaultTarget::Any, FaultKind::transient())));
    let blind = |alerts: &[Value]| {
        alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == "WhatsAppMonitoringBlind")
            .cloned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let a = loop {
        if let Some(a) = blind(&am.alerts().await) {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no WhatsAppMonitoringBlind in {:#}",
            Value::Array(am.alerts().await)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(a["labels"]["source"], "main", "{a:#}");
    assert_eq!(a["labels"]["severity"], "critical", "{a:#}");
    app.sim.with_state(|s| s.faults.clear());
    d.next_cycle_within(Duration::from_secs(5)).await;
    // Ended by the monitor, before the endsAt it was last posted with.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let mut last_end = String::new();
    while let Some(a) = blind(&am.alerts().await) {
        last_end = a["endsAt"].as_str().unwrap_or_default().to_owned();
        assert!(
            std::time::Instant::now() < deadline,
            "the blind alert did not end once the source was readable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended_at = waba_monitor::timefmt::rfc3339(chrono::Utc::now());
    assert!(
        last_end.is_empty() || ended_at < last_end,
        "gone at {ended_at}, only when its endsAt {last_end} passed"
    );
    d.stop().await;
}
