//! Issue 18's failover, end to end: two real daemon processes (`waba-monitor run`) with the
//! same configuration (but for `listen`) and one real PostgreSQL database (a fresh one on the
//! private test server, or on `WABA_MONITOR_TEST_POSTGRES`), the lease at its minimum (6 s:
//! renewed every 2 s, a leader that could not renew for 4 s steps down) and a poll every 10 s.
//!
//! - The leader SIGKILLed in the middle of a cycle: the standby leads within two poll
//!   intervals, the history has no duplicate rows, and no poll run stays `running`.
//! - The leader SIGKILLed in the middle of a send: nothing the SMTP server accepted is sent
//!   again, and the cut-off message is delivered by the new leader (same Message-ID).
//! - The leader cut off from the database (a black-hole TCP proxy in between): it steps down
//!   before the standby takes over, never both at once; healed, it stays the standby.
//! - A clean stop (SIGTERM) releases the lease: the standby leads within a renewal period.
//!
//! Each takeover prints its measured time (`takeover: ...`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, one_waba};
use crate::receivers::sample;
use crate::smtp::SmtpSink;
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, SimState};
use waba_monitor::store::pg_testing::{fresh_database, split_password};
use waba_monitor::store::{HistoryFilter, Store};

const WABA1: &str = "200000000000001";
const P0: &str = "300000000000001";
const P1: &str = "300000000000002";
/// `[daemon] leader_lease_seconds`: its minimum.
const LEASE: Duration = Duration::from_secs(6);
/// How often the leader renews: a third of the lease.
const RENEWAL: Duration = Duration::from_secs(2);
/// Every 10 s (6 fields: seconds first).
const SCHEDULE: &str = "*/10 * * * * *";
const POLL_INTERVAL: Duration = Duration::from_secs(10);
/// How long a daemon may take to start, lead or stand by, or record a cycle.
const START: Duration = Duration::from_secs(30);
/// How long a scrape of /metrics may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a condition is looked at.
const TICK: Duration = Duration::from_millis(100);

/// The test's database: its URL without the password, and the password.
struct Pg {
    url: String,
    password: Option<String>,
}

impl Pg {
    fn fresh() -> Pg {
        let (url, password) = split_password(&fresh_database("failover"));
        Pg { url, password }
    }

    /// `host:port` of the server, as the URL names it.
    fn authority(&self) -> String {
        let rest = &self.url[self.url.find("://").expect("a URL") + 3..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, hp)| hp)
            .to_owned()
    }

    /// The same database through `authority` (a proxy).
    fn url_via(&self, authority: &str) -> String {
        self.url.replacen(&self.authority(), authority, 1)
    }

    /// A store of its own on the database, as the CLI opens it.
    async fn store(&self) -> Store {
        let password = self
            .password
            .as_ref()
            .map(|p| secrecy::SecretString::from(p.clone()));
        Store::open_postgres(&self.url, password.as_ref())
            .await
            .expect("the test opens the shared database")
    }

    /// A plain pool on the database, for what the store has no reader for (the outbox).
    async fn pool(&self) -> sqlx::PgPool {
        use std::str::FromStr;
        let mut opts =
            sqlx::postgres::PgConnectOptions::from_str(&self.url).expect("a PostgreSQL URL");
        if let Some(p) = &self.password {
            opts = opts.password(p);
        }
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .expect("the test connects to the shared database")
    }
}

/// One daemon process of the pair: its own config file (the shared one with its `listen` and,
/// for the partition test, its database address), its stderr collected in the background.
/// Dropping it SIGKILLs the process.
struct Instance {
    name: &'static str,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Instance {
    fn new(name: &'static str, config: PathBuf, port: u16) -> Instance {
        Instance {
            name,
            config,
            port,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            http: reqwest::Client::builder()
                .timeout(METRICS_TIMEOUT)
                .build()
                .expect("an HTTP client"),
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} started twice", self.name);
        let mut child = Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let sink = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGKILL: no goodbye, the lease is not released, nothing in flight is settled.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: a clean stop.
    fn terminate(&self) {
        let child = self.child.as_ref().expect("running");
        crate::service::signal(child, "-TERM");
    }

    /// Waits for the process to exit; its status.
    async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}; its log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(TICK).await;
        }
    }

    /// Its /metrics text now; None when it does not answer (in time).
    async fn metrics(&self) -> Option<String> {
        self.http
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Its /readyz: status and body.
    async fn readyz(&self) -> (u16, String) {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}/readyz", self.port))
            .send()
            .await
            .expect("/readyz answers");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// `waba_monitor_leader` as its /metrics says now; None when it does not answer (in time).
    async fn leader(&self) -> Option<f64> {
        sample(&self.metrics().await?, "waba_monitor_leader")
    }

    /// Polls /metrics until `waba_monitor_leader` is `want`; how long that took.
    async fn wait_leader(&self, want: f64, limit: Duration, what: &str) -> Duration {
        let t0 = Instant::now();
        loop {
            let seen = self.leader().await;
            if seen == Some(want) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "{what}: {} did not report waba_monitor_leader {want} within {limit:?} (last: {seen:?}); its log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(TICK).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The two daemons; on a failing test their logs are printed.
struct Pair {
    a: Instance,
    b: Instance,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.a.kill();
        self.b.kill();
        if std::thread::panicking() {
            for i in [&self.a, &self.b] {
                eprintln!("---- log of {} ----\n{}", i.name, i.log());
            }
        }
    }
}

/// Two free loopback ports (both bound at once, then released).
fn two_free_ports() -> (u16, u16) {
    let l1 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    (
        l1.local_addr().expect("addr").port(),
        l2.local_addr().expect("addr").port(),
    )
}

/// The app's config turned into the pair's: the database (A's address may differ: `a_url`), its
/// password file, the shortest lease, and each instance's own `listen`. Two files, else alike.
fn pair(app: &TestApp, db: &Pg, a_url: Option<&str>) -> Pair {
    if let Some(p) = &db.password {
        app.write_secret("db-password", p);
    }
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    let (pa, pb) = two_free_ports();
    let write = |name: &str, url: &str, port: u16| {
        let mut daemon = format!(
            "database = \"{url}\"\nleader_lease_seconds = {}\n",
            LEASE.as_secs()
        );
        if db.password.is_some() {
            daemon.push_str("database_password_file = \"db-password\"\n");
        }
        // Whatever database the harness chose (a SQLite file, or its own PostgreSQL database
        // with WABA_MONITOR_TEST_BACKEND=postgres) gives way to the pair's.
        let kept: String = text
            .lines()
            .filter(|l| {
                !l.starts_with("database = ") && !l.starts_with("database_password_file = ")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let t = kept
            .replacen("[daemon]\n", &format!("[daemon]\n{daemon}"), 1)
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
                1,
            );
        assert!(t.contains("leader_lease_seconds") && t.contains(&format!(":{port}\"")));
        let path = app.config_path.with_file_name(name);
        std::fs::write(&path, t).expect("config");
        path
    };
    Pair {
        a: Instance::new(
            "A",
            write("monitor-a.toml", a_url.unwrap_or(&db.url), pa),
            pa,
        ),
        b: Instance::new("B", write("monitor-b.toml", &db.url, pb), pb),
    }
}

async fn spawn_app(state: SimState, extra: &str) -> TestApp {
    TestApp::spawn_full(
        state,
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        SCHEDULE,
        extra,
    )
    .await
}

/// An app whose schedule does not fire during a test (once a year, 1 January at midnight): only
/// a start and taking the lease ask for cycles.
async fn spawn_quiet_app() -> TestApp {
    TestApp::spawn_full(
        one_waba(2),
        &format!("wabas = [\"{WABA1}\"]"),
        "v24.0",
        "0 0 0 1 1 *",
        "",
    )
    .await
}

/// Starts A, waits until it leads (and, with `first_cycle`, until its first cycle is
/// recorded), then starts B and waits until it stands by (A still leading).
async fn start_pair(p: &mut Pair, store: &Store, first_cycle: bool) {
    p.a.start();
    p.a.wait_leader(1.0, START, "the first daemon takes the lease")
        .await;
    // The first cycle is recorded: the fleet is in the history.
    let deadline = Instant::now() + START;
    while first_cycle && store.history_count().await.expect("history") == 0 {
        assert!(
            Instant::now() < deadline,
            "A's first cycle was not recorded within {START:?}; A's log:\n{}",
            p.a.log()
        );
        tokio::time::sleep(TICK).await;
    }
    p.b.start();
    p.b.wait_leader(0.0, START, "the second daemon stands by")
        .await;
    assert_eq!(p.a.leader().await, Some(1.0), "A lost the lease to B");
}

/// Waits until the latest poll runs satisfy `cond`; returns them (newest first).
async fn wait_runs(
    store: &Store,
    what: &str,
    cond: impl Fn(&[waba_monitor::store::PollRun]) -> bool,
) -> Vec<waba_monitor::store::PollRun> {
    let deadline = Instant::now() + START;
    loop {
        let runs = store.recent_runs(50).await.expect("poll runs");
        if cond(&runs) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {START:?}; poll runs: {runs:#?}"
        );
        tokio::time::sleep(TICK).await;
    }
}

fn set_quality(app: &TestApp, phone: &str, q: &str) {
    app.sim
        .with_state(|s| s.phone_mut(phone).quality_rating = Some(q.into()));
}

/// No two rows of one target and field in a row (by `seq`) record the same change.
fn assert_no_duplicate_history(rows: &[waba_monitor::store::HistoryEntry]) {
    let mut rows: Vec<_> = rows.iter().collect();
    rows.sort_by(|x, y| (&x.id, &x.field, x.seq).cmp(&(&y.id, &y.field, y.seq)));
    for w in rows.windows(2) {
        let (x, y) = (w[0], w[1]);
        assert!(
            !(x.id == y.id && x.field == y.field && x.old == y.old && x.new == y.new),
            "duplicate history rows:\n{x:?}\n{y:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_within_two_poll_intervals_when_the_leader_is_killed_mid_cycle() {
    let db = Pg::fresh();
    let app = spawn_app(one_waba(3), "").await;
    let mut p = pair(&app, &db, None);
    let store = db.store().await;
    start_pair(&mut p, &store, true).await;
    let history_before = store.history_count().await.expect("count");
    assert!(history_before > 0, "A's first cycle recorded the fleet");
    // The fleet's series come from the leader only: alert rules on them fire once per pair.
    let a_text = p.a.metrics().await.expect("A's /metrics");
    let b_text = p.b.metrics().await.expect("B's /metrics");
    assert!(a_text.contains("waba_monitor_phone_info{"), "{a_text}");
    assert!(!b_text.contains("waba_monitor_phone_info{"), "{b_text}");
    // Both are ready: the leader has recorded a cycle, the standby serves reads (a load
    // balancer in front of the pair sends the page and the API to either).
    let (code, body) = p.a.readyz().await;
    assert_eq!(code, 200, "the leader's /readyz: {body}");
    let (code, body) = p.b.readyz().await;
    assert_eq!(code, 200, "the standby's /readyz: {body}");
    assert!(body.contains("standby"), "{body}");

    // The next cycle sees a change, and its Graph request never answers: A is in the middle
    // of a cycle (its run recorded as running, nothing of the change written) when killed.
    let requests = app.sim.http_requests();
    app.sim.with_state(|s| {
        s.phone_mut(P1).quality_rating = Some("YELLOW".into());
        s.add_fault(Fault::always(
            FaultTarget::Any,
            FaultKind::Hang(Duration::from_secs(120)),
        ));
    });
    let deadline = Instant::now() + POLL_INTERVAL + Duration::from_secs(5);
    while app.sim.http_requests() == requests {
        assert!(
            Instant::now() < deadline,
            "A started no cycle within a poll interval; its log:\n{}",
            p.a.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.b.leader().await, Some(0.0), "the standby polled");
    p.a.kill();
    let killed = Instant::now();
    app.sim.with_state(|s| s.faults.clear());
    let runs = store.recent_runs(50).await.expect("runs");
    let cut_off = runs
        .iter()
        .find(|r| r.outcome == "running")
        .unwrap_or_else(|| panic!("A's cycle was not in progress when killed: {runs:#?}"))
        .id;
    assert_eq!(
        store.history_count().await.expect("count"),
        history_before,
        "A's cut-off cycle wrote history"
    );

    p.b.wait_leader(
        1.0,
        Duration::from_secs(40),
        "B takes over from the killed A",
    )
    .await;
    let took = killed.elapsed();
    eprintln!(
        "takeover: {} ms (leader killed mid-cycle)",
        took.as_millis()
    );
    assert!(
        took < 2 * POLL_INTERVAL,
        "B led {took:?} after A was killed: not within two poll intervals"
    );

    // B's first cycle settles A's cut-off run and records the change once.
    wait_runs(&store, "B's first cycle", |runs| {
        runs.iter()
            .any(|r| r.id > cut_off && r.outcome != "running")
    })
    .await;
    // And one more, scheduled, that must add nothing.
    let runs = wait_runs(&store, "B's second cycle", |runs| {
        runs.iter()
            .filter(|r| r.id > cut_off && r.outcome != "running")
            .count()
            >= 2
    })
    .await;
    let last_finished = runs
        .iter()
        .filter(|r| r.outcome != "running")
        .map(|r| r.id)
        .max()
        .expect("a finished run");
    let left = runs
        .iter()
        .filter(|r| r.id <= last_finished && r.outcome == "running")
        .collect::<Vec<_>>();
    assert!(left.is_empty(), "poll runs left running: {left:#?}");
    let a_run = runs.iter().find(|r| r.id == cut_off).expect("A's run");
    assert_eq!(a_run.outcome, "abandoned", "{a_run:?}");

    let rows = store
        .history(&HistoryFilter::default())
        .await
        .expect("history");
    assert_no_duplicate_history(&rows);
    let yellow: Vec<_> = rows
        .iter()
        .filter(|r| r.id == P1 && r.field == "quality_rating" && r.new.as_deref() == Some("YELLOW"))
        .collect();
    assert_eq!(
        yellow.len(),
        1,
        "the change made during the cut-off cycle is recorded once: {yellow:#?}"
    );
    assert_eq!(p.b.leader().await, Some(1.0));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_send_kill_loses_nothing_and_resends_nothing_already_accepted() {
    let db = Pg::fresh();
    let smtp = SmtpSink::start().await;
    // A long SMTP timeout: the stalled send is still waiting for the server when A is killed.
    let email = format!(
        "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"60s\"\nmax_age = \"24h\"\n",
        smtp.port()
    );
    let app = spawn_app(one_waba(3), &email).await;
    let mut p = pair(&app, &db, None);
    let store = db.store().await;
    start_pair(&mut p, &store, true).await;
    assert!(smtp.messages().is_empty(), "a healthy fleet alerted");

    // One alert, sent and accepted by A.
    set_quality(&app, P0, "RED");
    let first = smtp.wait_for(1, START).await;
    assert_eq!(first.len(), 1);
    let first_id = first[0].header("Message-ID").expect("a Message-ID");

    // The next one: the server takes the message and never answers; A is killed meanwhile.
    smtp.stall_data(None);
    set_quality(&app, P1, "RED");
    smtp.wait_for_stalled(1, START).await;
    p.a.kill();
    let killed = Instant::now();
    smtp.stall_data(Some(0));
    let pool = db.pool().await;
    let in_flight: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT message_id, attempts, in_flight FROM outbox WHERE state = 'pending' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("outbox");
    assert_eq!(
        in_flight.len(),
        1,
        "one message cut off in flight: {in_flight:?}"
    );
    assert_eq!((in_flight[0].1, in_flight[0].2), (1, 1), "{in_flight:?}");
    let cut_off_id = in_flight[0].0.clone();

    p.b.wait_leader(
        1.0,
        Duration::from_secs(40),
        "B takes over from the killed A",
    )
    .await;
    let took = killed.elapsed();
    eprintln!("takeover: {} ms (leader killed mid-send)", took.as_millis());
    assert!(
        took < 2 * POLL_INTERVAL,
        "B led {took:?} after A was killed"
    );

    // B settles the cut-off send and sends it again, with its Message-ID.
    let all = smtp.wait_for(2, START).await;
    // Give B time for a scheduled cycle and delivery passes: nothing more may go out.
    let runs = store.recent_runs(1).await.expect("runs");
    let latest = runs.first().map_or(0, |r| r.id);
    wait_runs(&store, "a cycle of B after the resend", |runs| {
        runs.iter().any(|r| r.id > latest && r.outcome != "running")
    })
    .await;
    let all_now = smtp.messages();
    assert_eq!(
        all_now.len(),
        all.len(),
        "more messages after the resend: {:?}",
        all_now
            .iter()
            .map(|m| m.header("Message-ID"))
            .collect::<Vec<_>>()
    );
    let ids: Vec<String> = all_now
        .iter()
        .map(|m| m.header("Message-ID").expect("a Message-ID"))
        .collect();
    assert_eq!(
        ids.iter().filter(|i| **i == first_id).count(),
        1,
        "the accepted message was sent again: {ids:?}"
    );
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a Message-ID accepted twice: {ids:?}"
    );
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(
        ids[1].trim_matches(['<', '>']),
        cut_off_id.trim_matches(['<', '>']),
        "the cut-off message is the one B delivered"
    );

    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT message_id, state, attempts FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("outbox");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.1 == "sent"), "{rows:?}");
    assert_eq!((rows[0].2, rows[1].2), (1, 2), "attempts: {rows:?}");
    pool.close().await;
    store.close().await;
}

/// A TCP proxy in front of PostgreSQL that can be turned into a black hole: while partitioned
/// it forwards no byte in either direction (the connections stay open) and closes every new
/// connection at once.
struct Proxy {
    port: u16,
    partitioned: tokio::sync::watch::Sender<bool>,
    /// Bytes forwarded (both directions).
    forwarded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let (partitioned, watch) = tokio::sync::watch::channel(false);
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = forwarded.clone();
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if *watch.borrow() {
                    drop(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pumps.spawn(pump(cr, sw, watch.clone(), counter.clone()));
                pumps.spawn(pump(sr, cw, watch.clone(), counter.clone()));
            }
        });
        Proxy {
            port,
            partitioned,
            forwarded,
            task,
        }
    }

    fn partition(&self, on: bool) {
        self.partitioned.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The pumps go with the accept loop's JoinSet.
        self.task.abort();
    }
}

/// Copies `from` to `to`, holding what it read while partitioned.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut partitioned: tokio::sync::watch::Receiver<bool>,
    forwarded: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if partitioned.wait_for(|p| !p).await.is_ok() {
                    let _ = to.shutdown().await;
                }
                return;
            }
            Ok(n) => n,
        };
        if partitioned.wait_for(|p| !p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// When a daemon's log first says it stepped down for want of a renewal.
fn stepped_down_at(log: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let line = log
        .lines()
        .find(|l| l.contains("could not renew the leader lease in time"))?;
    let stamp = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_steps_down_before_the_standby_takes_over() {
    let db = Pg::fresh();
    let proxy = Proxy::start(db.authority()).await;
    let app = spawn_app(one_waba(3), "").await;
    let via_proxy = db.url_via(&format!("127.0.0.1:{}", proxy.port));
    let mut p = pair(&app, &db, Some(&via_proxy));
    let store = db.store().await;
    start_pair(&mut p, &store, false).await;
    assert!(
        proxy.forwarded.load(Ordering::Relaxed) > 0,
        "A does not talk to the database through the proxy"
    );
    // A's first cycle is recorded and its fleet exported before the cut.
    let t0 = Instant::now();
    while !p
        .a
        .metrics()
        .await
        .is_some_and(|t| t.contains("waba_monitor_phone_info{"))
    {
        assert!(
            t0.elapsed() < POLL_INTERVAL + Duration::from_secs(5),
            "A exported no fleet; its log:\n{}",
            p.a.log()
        );
        tokio::time::sleep(TICK).await;
    }

    proxy.partition(true);
    let cut = Instant::now();
    let cut_wall = chrono::Utc::now();
    let mut a_down: Option<Duration> = None;
    let mut b_up: Option<Duration> = None;
    let limit = Duration::from_secs(20);
    let mut rounds = Vec::new();
    while b_up.is_none() {
        let round = Instant::now();
        let (a, b) = tokio::join!(p.a.leader(), p.b.leader());
        let at = cut.elapsed();
        rounds.push((at.as_millis(), a, b));
        assert!(
            !(a == Some(1.0) && b == Some(1.0)),
            "two leaders {at:?} after the cut; samples (ms, A, B): {rounds:?}"
        );
        if a == Some(0.0) && a_down.is_none() {
            a_down = Some(at);
        }
        if b == Some(1.0) {
            b_up = Some(at);
        }
        assert!(
            at < limit,
            "no takeover within {limit:?} of the cut; samples (ms, A, B): {rounds:?}"
        );
        tokio::time::sleep(TICK.saturating_sub(round.elapsed())).await;
    }
    let b_up = b_up.expect("B leads");
    // When A's log says it stepped down, for the figures even if its /metrics did not answer.
    let logged = stepped_down_at(&p.a.log()).map(|t| (t - cut_wall).num_milliseconds());
    eprintln!(
        "takeover: partition: A reported leader 0 after {} ms (its log: stepped down after {} ms), B led after {} ms",
        a_down.map_or("-".to_owned(), |d| d.as_millis().to_string()),
        logged.map_or("-".to_owned(), |d| d.to_string()),
        b_up.as_millis()
    );
    let a_down = a_down.unwrap_or_else(|| {
        panic!(
            "B led before the cut-off A reported stepping down on /metrics (samples (ms, A, B), None = no answer within {METRICS_TIMEOUT:?}: {rounds:?})"
        )
    });
    assert!(
        a_down < b_up,
        "A stepped down {a_down:?} after the cut, B led {b_up:?}: {rounds:?}"
    );
    // The step-down deadline is two thirds of the lease after the start of the last renewal,
    // which began at most one renewal period before the cut.
    assert!(
        a_down < LEASE - RENEWAL + RENEWAL + Duration::from_millis(500),
        "A stepped down only {a_down:?} after the cut: {rounds:?}"
    );
    assert!(
        b_up < LEASE + RENEWAL + Duration::from_secs(4),
        "B led only {b_up:?} after the cut: {rounds:?}"
    );
    assert!(
        p.a.log()
            .contains("could not renew the leader lease in time"),
        "A's log does not say why it stepped down:\n{}",
        p.a.log()
    );

    // Healed: A reaches the database again, finds B's lease, and stays the standby.
    let before = proxy.forwarded.load(Ordering::Relaxed);
    proxy.partition(false);
    let healed = Instant::now();
    while healed.elapsed() < 3 * RENEWAL + Duration::from_secs(2) {
        let (a, b) = tokio::join!(p.a.leader(), p.b.leader());
        assert_eq!(
            (a, b),
            (Some(0.0), Some(1.0)),
            "{:?} after the heal (A, B)",
            healed.elapsed()
        );
        tokio::time::sleep(TICK).await;
    }
    assert!(
        proxy.forwarded.load(Ordering::Relaxed) > before,
        "A did not reach the database again after the heal"
    );
    // Having stepped down, A no longer exports the fleet's series (B's count).
    let a_text = p.a.metrics().await.expect("A's /metrics");
    assert!(!a_text.contains("waba_monitor_phone_info{"), "{a_text}");
    let holder = store
        .lease_holder(waba_monitor::store::lease::LEADER)
        .await
        .expect("lease")
        .expect("a lease row");
    assert!(holder.expires_in_ms > 0, "{holder:?}");
    assert!(holder.term >= 2, "{holder:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_of_the_leader_hands_over_within_a_renewal_period() {
    let db = Pg::fresh();
    let app = spawn_app(one_waba(3), "").await;
    let mut p = pair(&app, &db, None);
    let store = db.store().await;
    start_pair(&mut p, &store, false).await;

    p.a.terminate();
    let stopped = Instant::now();
    p.b.wait_leader(
        1.0,
        Duration::from_secs(30),
        "B takes over from the stopped A",
    )
    .await;
    let took = stopped.elapsed();
    eprintln!("takeover: {} ms (leader stopped cleanly)", took.as_millis());
    let status = p.a.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "A exited with {status}: {}", p.a.log());
    let log = p.a.log();
    assert!(
        !log.contains("could not release the leader lease"),
        "A did not release the lease:\n{log}"
    );
    assert!(
        took < RENEWAL + Duration::from_secs(2),
        "B led {took:?} after A's clean stop: the lease was not handed over"
    );
    // The database password is in neither daemon's log nor in the leader's /metrics.
    if let Some(password) = &db.password {
        let metrics = p.b.metrics().await.expect("B's /metrics");
        for (what, text) in [
            ("A's log", p.a.log()),
            ("B's log", p.b.log()),
            ("B's /metrics", metrics),
        ] {
            assert!(
                !text.contains(password.as_str()),
                "the database password is in {what}"
            );
        }
    }
    store.close().await;
}

/// Taking the lease asks for a cycle, and so does the start: a daemon that took the lease
/// before its scheduler looked at the start's tick ran two cycles back to back (a second
/// Graph call charged to the quota for nothing). Started four times on a schedule that does
/// not fire meanwhile, it polls exactly once per start, and a standby that takes the lease
/// once it lapses polls once on taking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_polls_once_when_it_takes_the_lease_whether_at_its_start_or_later() {
    let db = Pg::fresh();
    let app = spawn_quiet_app().await;
    let mut p = pair(&app, &db, None);
    let store = db.store().await;
    let settle = Duration::from_secs(2);
    for start in 1..=4 {
        p.a.start();
        p.a.wait_leader(1.0, START, "the daemon takes the lease")
            .await;
        wait_runs(&store, "the start's cycle finished", |runs| {
            runs.len() >= start && runs.iter().all(|r| r.finished_at.is_some())
        })
        .await;
        // A second cycle would start at once after the first.
        tokio::time::sleep(settle).await;
        let runs = store.recent_runs(50).await.expect("poll runs");
        assert_eq!(
            runs.len(),
            start,
            "start {start}: one cycle per start; runs: {runs:#?}\nits log:\n{}",
            p.a.log()
        );
        assert_eq!(app.sim.calls_for_waba(WABA1), start as u64);
        p.a.terminate();
        let status = p.a.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "exited with {status}: {}", p.a.log());
    }
    // A standby takes the lease later (A killed: it lapses) and polls once on taking it.
    p.a.start();
    p.a.wait_leader(1.0, START, "A leads").await;
    wait_runs(&store, "A's cycle finished", |runs| {
        runs.len() >= 5 && runs.iter().all(|r| r.finished_at.is_some())
    })
    .await;
    p.b.start();
    p.b.wait_leader(0.0, START, "B stands by").await;
    p.a.kill();
    p.b.wait_leader(1.0, START, "B takes over").await;
    wait_runs(&store, "B's cycle finished", |runs| {
        runs.len() >= 6 && runs.iter().all(|r| r.finished_at.is_some())
    })
    .await;
    tokio::time::sleep(settle).await;
    let runs = store.recent_runs(50).await.expect("poll runs");
    assert_eq!(runs.len(), 6, "one cycle on taking over: {runs:#?}");
    assert_eq!(app.sim.calls_for_waba(WABA1), 6);
    store.close().await;
}

/// A leader whose cycle is still in flight when the lease passes to another instance (it lapsed
/// while the leader stalled, and a standby took it) must not record that cycle: its reading is
/// older than what the new leader records, and writing it after would record a change that
/// is not there (then its undoing), with the alert and its resolution. Here the cycle waits on
/// a slow Graph answer that says YELLOW while the number is GREEN again, and the lease is taken
/// from under it meanwhile (by the test, as a standby would once it lapsed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_in_flight_when_the_lease_passes_to_another_records_nothing() {
    let db = Pg::fresh();
    let app = spawn_quiet_app().await;
    // Graph answers may take 30 s: the slow answer below is waited for, not retried.
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::write(
        &app.config_path,
        text.replace("request_timeout = \"2s\"", "request_timeout = \"30s\""),
    )
    .expect("config");
    let mut p = pair(&app, &db, None);
    let store = db.store().await;
    // The first start records the fleet, GREEN; a clean stop hands the lease back.
    p.a.start();
    p.a.wait_leader(1.0, START, "A leads").await;
    wait_runs(&store, "the first cycle finished", |runs| {
        runs.len() == 1 && runs[0].finished_at.is_some()
    })
    .await;
    p.a.terminate();
    p.a.wait_exit(Duration::from_secs(20)).await;

    // Started again, its cycle reads YELLOW and the answer takes 8 s to arrive.
    let requests = app.sim.http_requests();
    app.sim.with_state(|s| {
        s.phone_mut(P1).quality_rating = Some("YELLOW".into());
        s.add_fault(Fault::always(
            FaultTarget::Any,
            FaultKind::Hang(Duration::from_secs(8)),
        ));
    });
    p.a.start();
    p.a.wait_leader(1.0, START, "A leads again").await;
    let deadline = Instant::now() + START;
    while app.sim.http_requests() == requests {
        assert!(
            Instant::now() < deadline,
            "A asked Graph nothing: {}",
            p.a.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile the number is GREEN again, and another instance holds the lease.
    app.sim.with_state(|s| {
        s.phone_mut(P1).quality_rating = Some("GREEN".into());
        s.faults.clear();
    });
    let pool = db.pool().await;
    let stolen = sqlx::query(
        "UPDATE leader_lease SET holder = 'another-instance', term = term + 1, \
         renewed_at = now(), expires_at = now() + interval '1 hour' WHERE name = 'leader'",
    )
    .execute(&pool)
    .await
    .expect("the lease passes to another instance");
    assert_eq!(stolen.rows_affected(), 1);
    p.a.wait_leader(
        0.0,
        START,
        "A hears at its next renewal that it no longer leads",
    )
    .await;
    // The slow answer arrives and the cycle ends, not recorded.
    wait_runs(&store, "the cycle in flight ended", |runs| {
        runs.len() == 2 && runs.iter().all(|r| r.finished_at.is_some())
    })
    .await;
    let history = store
        .history(&HistoryFilter {
            id: Some(P1.to_owned()),
            since: None,
            limit: None,
        })
        .await
        .expect("history");
    assert!(
        !history.iter().any(|h| h.new.as_deref() == Some("YELLOW")),
        "a reading older than the lease's new holder's was recorded: {history:#?}\nA's log:\n{}",
        p.a.log()
    );
    let log = p.a.log();
    assert!(log.contains("no longer holds the leader lease"), "{log}");
    p.a.terminate();
    let status = p.a.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "A exited with {status}: {log}");
    store.close().await;
}

/// A process that froze (or lost its network) inside a write transaction holds the write
/// lock; the server ends such a session once it has been idle for the lock timeout, so the
/// other instance (the next leader) can write again, instead of waiting until TCP gives up on
/// the connection hours later. The frozen transaction's commit then fails: nothing of it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_idle_by_a_frozen_instance_frees_the_write_lock() {
    let db = Pg::fresh();
    let password = db
        .password
        .as_ref()
        .map(|p| secrecy::SecretString::from(p.clone()));
    let wait = Duration::from_millis(500);
    let frozen = Store::open_postgres_with(&db.url, password.as_ref(), wait)
        .await
        .expect("open");
    let other = Store::open_postgres_with(&db.url, password.as_ref(), wait)
        .await
        .expect("open");
    let tx = frozen.begin_write().await.expect("the write lock");
    // Held, then nothing more sent: the server ends the session after `wait`.
    tokio::time::sleep(wait * 2).await;
    let t0 = Instant::now();
    other
        .begin_write()
        .await
        .expect("the write lock is free again")
        .commit()
        .await
        .expect("commit");
    assert!(
        t0.elapsed() < wait,
        "waited {:?} for the lock",
        t0.elapsed()
    );
    assert!(
        tx.commit().await.is_err(),
        "the frozen transaction committed"
    );
    frozen.close().await;
    other.close().await;
}
