//! Webhook receivers of a `[[route]]`, end to end: transitions found by real polls of the
//! simulator, queued in the real SQLite outbox, POSTed by the real delivery worker (alone, or in
//! the running daemon) to a real HTTP receiver on loopback that answers as each test scripts it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::helpers::on_store;
use crate::helpers::{TestApp, one_waba};
use crate::smtp::SmtpSink;
use waba_monitor::daemon::{self, RunOptions};
use waba_monitor::notify::delivery::{Deliverer, DeliveryReport};
use waba_monitor::notify::mailer::Mailer;
use waba_monitor::poller::CycleReport;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::SimState;
use waba_monitor::sources::PollOutcome;

const WABA1: &str = "200000000000001";
const P0: &str = "300000000000001";
const P1: &str = "300000000000002";
const P2: &str = "300000000000003";
/// The path of a receiver's URL: Slack's and Mattermost's carry their key there, so it must
/// never be logged or stored as an error.
pub(crate) const SECRET_PATH: &str = "/services/T0001/B0001/s3cretWebhookKey42";
const SECRET: &str = "s3cretWebhookKey42";

/// One request a [`Hook`] received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub body: String,
    /// What it was answered.
    pub status: u16,
}

struct HookState {
    /// Statuses for the first requests, in order; then `then`.
    script: Mutex<VecDeque<u16>>,
    then: u16,
    /// How long each answer takes.
    delay: Duration,
    log: Mutex<Vec<Received>>,
}

/// A loopback HTTP receiver: records every request and answers it as scripted. Stops when
/// dropped.
pub(crate) struct Hook {
    addr: SocketAddr,
    state: Arc<HookState>,
    task: tokio::task::JoinHandle<()>,
}

async fn answer(
    State(s): State<Arc<HookState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let status = s
        .script
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front()
        .unwrap_or(s.then);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    s.log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received {
            method: method.to_string(),
            path: uri.path().to_owned(),
            content_type: header("content-type"),
            idempotency_key: header("idempotency-key"),
            body: String::from_utf8_lossy(&body).into_owned(),
            status,
        });
    tokio::time::sleep(s.delay).await;
    // Like many error pages, the answer repeats the path (here: the webhook's key).
    (
        StatusCode::from_u16(status).expect("a status code"),
        format!("answered {status} for {}", uri.path()),
    )
}

impl Hook {
    /// Answers the first requests with `script`, then every one with `then`.
    pub(crate) async fn start(script: &[u16], then: u16) -> Hook {
        Self::start_with(script, then, Duration::ZERO).await
    }

    /// Answers every request with `status`, each after `delay`.
    pub(crate) async fn start_with(script: &[u16], then: u16, delay: Duration) -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(HookState {
            script: Mutex::new(script.iter().copied().collect()),
            then,
            delay,
            log: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hook { addr, state, task }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn requests(&self) -> Vec<Received> {
        self.state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port nothing listens on (bound, then closed): connections to it are refused.
pub(crate) async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr").port()
}

/// Waits (polling every 20 ms) until `cond` holds, at most `limit`.
pub(crate) async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a test needs to know of a finished cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub outcome: PollOutcome,
    pub recorded: bool,
}

impl Cycle {
    fn of(r: &CycleReport) -> Cycle {
        Cycle {
            outcome: r.sources[0].outcome,
            recorded: r.store_error().is_none(),
        }
    }
}

/// The real daemon on loopback listeners, with its cycles reported to the test.
pub(crate) struct Daemon {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    cycles: mpsc::UnboundedReceiver<Cycle>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    pub(crate) async fn start(app: &TestApp, opts: RunOptions) -> Daemon {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (tx, cycles) = mpsc::unbounded_channel();
        let handle = tokio::spawn(daemon::run_with_listener(
            waba_monitor::config::Config::load_for_start(&app.config_path)
                .expect("config is valid"),
            RunOptions {
                retry: RetryPolicy::fast(),
                ..opts
            },
            listener,
            async move {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = tx.send(Cycle::of(r));
            },
        ));
        Daemon {
            base,
            stop: Some(stop_tx),
            cycles,
            handle,
        }
    }

    pub(crate) async fn next_cycle(&mut self) -> Cycle {
        tokio::time::timeout(Duration::from_secs(15), self.cycles.recv())
            .await
            .expect("a cycle in time")
            .expect("daemon running")
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// Stops the daemon cleanly; the cycles it finished since the last `next_cycle`.
    pub(crate) async fn stop(mut self) -> Vec<Cycle> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("clean exit");
        let mut rest = Vec::new();
        while let Ok(c) = self.cycles.try_recv() {
            rest.push(c);
        }
        rest
    }
}

/// The value of the sample `name` in an OpenMetrics text.
pub(crate) fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A `[[route]]` for WABA1 to `url` (`extra`: more keys).
fn route(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nwabas = [\"{WABA1}\"]\nwebhook_url = \"{url}\"\n{extra}\n"
    )
}

/// An app watching WABA1 (3 numbers) with `extra` TOML, polled once (a healthy fleet seen for
/// the first time alerts on nothing).
async fn app_with(state: SimState, extra: &str) -> TestApp {
    let app = TestApp::spawn_with_extra(state, &format!("wabas = [\"{WABA1}\"]"), extra).await;
    let first = app.poll().await;
    assert_eq!(first.alerts, 0);
    app
}

/// A worker without a mailer, as the daemon runs it without `[email]`: 5 s per POST, `max_age`
/// 1 h, waits of 30 s doubling to 10 min.
async fn webhook_worker(app: &TestApp) -> Deliverer {
    Deliverer::without_mailer(
        app.store().await,
        Duration::from_secs(5),
        Duration::from_secs(3600),
        RetryPolicy {
            min_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(600),
            max_times: usize::MAX,
        },
    )
}

/// Every outbox row: (channel, recipient, state, attempts, last_error).
async fn outbox(app: &TestApp) -> Vec<(String, String, String, i64, Option<String>)> {
    let store = app.store().await;
    let rows = on_store!(store, |p| sqlx::query_as(
        "SELECT channel, recipient, state, attempts, last_error FROM outbox ORDER BY id",
    )
    .fetch_all(p)
    .await)
    .expect("outbox");
    store.close().await;
    rows
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).expect("the payload is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_twice_then_200_gets_the_digest_once_with_one_idempotency_key() {
    let hook = Hook::start(&[500, 500], 200).await;
    // No [email]: the daemon's delivery worker runs for the route's webhook alone.
    let app = TestApp::spawn_full(
        one_waba(3),
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "* * * * * *",
        &route("hooks", &hook.url(SECRET_PATH), ""),
    )
    .await;
    let mut d = Daemon::start(
        &app,
        RunOptions {
            email_backoff: RetryPolicy {
                min_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(300),
                max_times: usize::MAX,
            },
            delivery_tick: Duration::from_millis(100),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(d.next_cycle().await.outcome, PollOutcome::Ok);
    app.sim
        .with_state(|s| s.phone_mut(P1).quality_rating = Some("RED".into()));
    wait_until("the receiver's 200", Duration::from_secs(20), || {
        hook.requests().iter().any(|r| r.status == 200)
    })
    .await;
    // Retried twice, accepted once, and never sent again afterwards.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = hook.requests();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 200],
        "{got:?}"
    );
    let key = got[0].idempotency_key.clone().expect("Idempotency-Key");
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, SECRET_PATH);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.idempotency_key.as_deref(), Some(key.as_str()));
        assert_eq!(r.body, got[0].body, "every attempt sends the same payload");
    }
    let body = json(&got[2].body);
    assert_eq!(body["idempotency_key"], key.as_str());
    let alerts = body["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{body}");
    let item = &alerts[0];
    assert_eq!(item["severity"], "critical");
    assert_eq!(item["target_id"], P1);
    assert_eq!(item["waba_id"], WABA1);
    assert_eq!(item["field"], "quality_rating");
    assert_eq!(item["old"], "GREEN");
    assert_eq!(item["new"], "RED");
    assert_eq!(item["what"], "quality GREEN → RED");
    assert!(
        item["target"].as_str().is_some_and(|t| !t.is_empty()),
        "{item}"
    );
    assert!(
        item["detected_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(item.get("detail").is_some(), "{item}");
    assert!(!got[2].body.contains(crate::helpers::TOKEN));

    let (_, metrics) = d.get("/metrics").await;
    let count = |outcome: &str| {
        sample(
            &metrics,
            &format!("waba_monitor_alert_webhook_deliveries_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("sent"), Some(1.0), "{metrics}");
    assert_eq!(count("retry"), Some(2.0));
    assert_eq!(count("failed"), Some(0.0));
    d.stop().await;

    let rows = outbox(&app).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (channel, recipient, state, attempts, last_error) = &rows[0];
    assert_eq!(
        (channel.as_str(), state.as_str(), *attempts),
        ("webhook", "sent", 3)
    );
    assert_eq!(recipient, &hook.url(SECRET_PATH));
    assert_eq!(last_error, &None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_410_fails_the_digest_after_one_attempt_and_it_is_never_retried() {
    let hook = Hook::start(&[], 410).await;
    let app = app_with(one_waba(3), &route("hooks", &hook.url(SECRET_PATH), "")).await;
    app.sim
        .with_state(|s| s.phone_mut(P0).status = Some("BANNED".into()));
    assert_eq!(app.poll().await.alerts, 1);
    let w = webhook_worker(&app).await;
    let now = Utc::now();
    let r = w.deliver_due(now).await.expect("pass");
    assert_eq!(
        r,
        DeliveryReport {
            failed: 1,
            ..DeliveryReport::default()
        }
    );
    for later in [1, 30, 120, 24 * 60] {
        let r = w
            .deliver_due(now + chrono::Duration::minutes(later))
            .await
            .expect("pass");
        assert_eq!(r, DeliveryReport::default(), "retried after {later} min");
    }
    assert_eq!(hook.requests().len(), 1);
    let rows = outbox(&app).await;
    let (channel, _, state, attempts, last_error) = &rows[0];
    assert_eq!(
        (channel.as_str(), state.as_str(), *attempts),
        ("webhook", "failed", 1)
    );
    let last_error = last_error.as_deref().expect("why it failed");
    assert!(
        last_error.starts_with(&format!("HTTP 410 Gone from {}", hook.url(""))),
        "{last_error}"
    );
    // The receiver's answer repeated the path; the key in it is not kept.
    assert!(!last_error.contains(SECRET), "{last_error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_or_answers_429_is_retried_with_backoff_and_abandoned_after_max_age()
 {
    let busy = Hook::start(&[], 429).await;
    let down = format!("http://127.0.0.1:{}{SECRET_PATH}", dead_port().await);
    let app = app_with(
        one_waba(3),
        &format!(
            "{}{}",
            route("busy", &busy.url("/busy"), "continue = true"),
            route("down", &down, "")
        ),
    )
    .await;
    app.sim
        .with_state(|s| s.phone_mut(P2).quality_rating = Some("RED".into()));
    app.poll().await;
    let w = webhook_worker(&app).await;
    let start = Utc::now();
    let at = |min: i64| start + chrono::Duration::minutes(min);
    assert_eq!(w.deliver_due(at(0)).await.expect("pass").retrying, 2);
    // Not due again before the backoff (at least 15 s with jitter).
    assert_eq!(
        w.deliver_due(at(0)).await.expect("pass"),
        DeliveryReport::default()
    );
    assert_eq!(w.deliver_due(at(11)).await.expect("pass").retrying, 2);
    assert_eq!(w.deliver_due(at(61)).await.expect("pass").abandoned, 2);
    assert_eq!(
        w.deliver_due(at(200)).await.expect("pass"),
        DeliveryReport::default()
    );
    let got = busy.requests();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .all(|r| r.idempotency_key == got[0].idempotency_key)
    );
    let rows = outbox(&app).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (channel, _, state, attempts, last_error) in &rows {
        assert_eq!(
            (channel.as_str(), state.as_str(), *attempts),
            ("webhook", "abandoned", 3)
        );
        let e = last_error.as_deref().expect("error kept");
        assert!(!e.contains(SECRET), "{e}");
        assert!(e.contains("127.0.0.1"), "names the receiver's host: {e}");
    }
    let busy_row = rows
        .iter()
        .find(|r| r.1 == busy.url("/busy"))
        .expect("the busy receiver's row");
    assert!(
        busy_row
            .4
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 429")),
        "{busy_row:?}"
    );
    let down_row = rows.iter().find(|r| r.1 == down).expect("the down row");
    assert!(
        down_row.4.as_deref().is_some_and(|e| !e.contains("HTTP ")),
        "a connection error, not a status: {down_row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_receiver_gets_a_text_with_the_subject_first_and_the_worst_item_first() {
    let hook = Hook::start(&[], 200).await;
    let mut state = one_waba(3);
    // A name that would be a mention and a link in Slack if it were not escaped.
    state.phone_mut(P1).verified_name = "<!channel> Acme & <https://evil.example|Co>".into();
    let app = app_with(
        state,
        &route("chat", &hook.url(SECRET_PATH), "webhook_format = \"slack\""),
    )
    .await;
    // Whatever order they are found in, the criticals come before the warning.
    app.sim.with_state(|s| {
        s.phone_mut(P0).quality_rating = Some("YELLOW".into());
        s.phone_mut(P1).quality_rating = Some("RED".into());
        s.phone_mut(P2).status = Some("BANNED".into());
    });
    assert_eq!(app.poll().await.alerts, 3);
    assert_eq!(
        webhook_worker(&app)
            .await
            .deliver_due(Utc::now())
            .await
            .expect("pass")
            .sent,
        1
    );
    let got = hook.requests();
    assert_eq!(got.len(), 1);
    let body = json(&got[0].body);
    let obj = body.as_object().expect("an object");
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        vec!["text"],
        "Slack's incoming-webhook shape"
    );
    let text = obj["text"].as_str().expect("text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("[waba-monitor] CRITICAL"), "{text}");
    assert!(lines[1].starts_with("• CRITICAL"), "{text}");
    assert!(lines[2].starts_with("• CRITICAL"), "{text}");
    assert!(
        lines[3].starts_with("• WARNING") && lines[3].ends_with("quality GREEN → YELLOW"),
        "{text}"
    );
    assert!(
        lines[1..3].iter().any(|l| l.ends_with("BANNED"))
            && lines[1..3]
                .iter()
                .any(|l| l.ends_with("quality GREEN → RED")),
        "{text}"
    );
    assert!(
        text.contains("&lt;!channel&gt; Acme &amp; &lt;https://evil.example|Co&gt;"),
        "{text}"
    );
    assert!(
        !text.contains("<!channel>") && !text.contains("<https://"),
        "{text}"
    );
    assert!(got[0].idempotency_key.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_mailer_posts_the_webhook_and_leaves_the_email_for_one_with_a_mailer() {
    let hook = Hook::start(&[], 204).await;
    let smtp = SmtpSink::start().await;
    let app = app_with(
        one_waba(3),
        &format!(
            "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"5s\"\nmax_age = \"1h\"\n\n{}",
            smtp.port(),
            route(
                "acme",
                &hook.url(SECRET_PATH),
                "email_to = [\"acme@example.com\"]"
            )
        ),
    )
    .await;
    app.sim
        .with_state(|s| s.phone_mut(P1).quality_rating = Some("RED".into()));
    app.poll().await;

    // Without [email] (e.g. removed by a reload): the webhook goes, the email waits untouched.
    let r = webhook_worker(&app)
        .await
        .deliver_due(Utc::now())
        .await
        .expect("pass");
    assert_eq!(
        r,
        DeliveryReport {
            sent: 1,
            ..DeliveryReport::default()
        }
    );
    let rows = outbox(&app).await;
    let states: Vec<(&str, &str, i64)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.2.as_str(), r.3))
        .collect();
    assert_eq!(
        states,
        vec![("email", "pending", 0), ("webhook", "sent", 1)],
        "{rows:?}"
    );
    assert!(smtp.messages().is_empty());

    // With a mailer, the email is sent as ever and the webhook is not sent again.
    let email = app.config().email.expect("email");
    let r = Deliverer::new(
        app.store().await,
        Mailer::new(&email).expect("mailer"),
        &email,
        RetryPolicy::fast(),
    )
    .deliver_due(Utc::now())
    .await
    .expect("pass");
    assert_eq!(r.sent, 1);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_to, vec!["acme@example.com".to_owned()]);
    assert_eq!(hook.requests().len(), 1);
    assert!(
        outbox(&app).await.iter().all(|r| r.2 == "sent"),
        "both delivered"
    );
}
