//! The daemon as systemd runs it: the real binary, real signals, a real notify socket.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::on_store;
use crate::helpers::{TestApp, one_waba};
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, SimState};

const W1: &str = "200000000000001";
const W2: &str = "200000000000002";

/// Messages received on a notify socket, with when they arrived.
#[derive(Clone, Default)]
pub(crate) struct Notes(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notes {
    pub(crate) fn listen(path: &std::path::Path) -> Notes {
        let sock = UnixDatagram::bind(path).expect("notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let notes = Notes::default();
        let n = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with the test process.
            loop {
                if let Ok(len) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]).to_string();
                    n.0.lock().expect("notes").push((Instant::now(), text));
                }
            }
        });
        notes
    }

    pub(crate) fn has(&self, needle: &str) -> bool {
        self.0
            .lock()
            .expect("notes")
            .iter()
            .any(|(_, t)| t.contains(needle))
    }

    pub(crate) fn count_since(&self, since: Instant, needle: &str) -> usize {
        self.0
            .lock()
            .expect("notes")
            .iter()
            .filter(|(t, m)| *t >= since && m.contains(needle))
            .count()
    }

    pub(crate) async fn wait_for(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.has(needle) {
            assert!(
                start.elapsed() < timeout,
                "no {needle} from the daemon in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub(crate) fn spawn_daemon(
    app: &TestApp,
    notify: &std::path::Path,
    watchdog_usec: Option<u64>,
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waba-monitor"));
    cmd.arg("--config")
        .arg(&app.config_path)
        .arg("run")
        .env("NOTIFY_SOCKET", notify)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(us) = watchdog_usec {
        cmd.env("WATCHDOG_USEC", us.to_string());
    }
    cmd.spawn().expect("daemon starts")
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration) -> (i32, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("daemon did not exit within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_cycle_finishes_the_cycle_and_exits_zero_with_a_consistent_database() {
    let app = TestApp::spawn_with(
        SimState::fleet(2, 3),
        &format!("wabas = [\"{W1}\", \"{W2}\"]"),
        "v24.0",
        "0 0 * * * *",
    )
    .await;
    // Every answer takes 1.5 s: the first cycle is still running when SIGTERM comes.
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(
            FaultTarget::Any,
            FaultKind::Hang(Duration::from_millis(1500)),
        ));
    });
    let notify = app.config_path.with_file_name("notify.sock");
    let notes = Notes::listen(&notify);
    let mut child = spawn_daemon(&app, &notify, None);
    notes.wait_for("READY=1", Duration::from_secs(15)).await;
    let start = Instant::now();
    while app.sim.http_requests() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no poll started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, "-TERM");
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(notes.has("STOPPING=1"));
    assert!(stderr.contains("waba-monitor stopped"), "{stderr}");

    let store = app.store().await;
    assert!(store.integrity_ok().await.expect("check"));
    let runs = store.recent_runs(10).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].outcome, "ok",
        "the in-flight cycle finished: {runs:?}"
    );
    assert!(store.history_count().await.expect("count") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_good_config_and_keeps_the_old_one_when_the_new_one_is_bad() {
    let port = free_port();
    let app = TestApp::spawn_with(
        SimState::fleet(2, 2),
        &format!("wabas = [\"{W1}\"]"),
        "v24.0",
        "*/2 * * * * *",
    )
    .await;
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    let text = text.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&app.config_path, &text).expect("config");
    let notify = app.config_path.with_file_name("notify.sock");
    let notes = Notes::listen(&notify);
    let mut child = spawn_daemon(&app, &notify, None);
    notes.wait_for("READY=1", Duration::from_secs(15)).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let numbers = || async {
        let v: serde_json::Value = http
            .get(format!("{base}/api/accounts"))
            .send()
            .await
            .expect("api")
            .json()
            .await
            .expect("json");
        v["data"]["items"].as_array().map_or(0, Vec::len)
    };
    let start = Instant::now();
    while numbers().await < 2 {
        assert!(start.elapsed() < Duration::from_secs(15), "first cycle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A good new config: one more WABA.
    std::fs::write(
        &app.config_path,
        text.replace(
            &format!("wabas = [\"{W1}\"]"),
            &format!("wabas = [\"{W1}\", \"{W2}\"]"),
        ),
    )
    .expect("config");
    signal(&child, "-HUP");
    let start = Instant::now();
    while numbers().await < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the reloaded WABA was not polled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metric = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
            .lines()
            .find(|l| l.starts_with("waba_monitor_config_last_reload_successful "))
            .map(str::to_owned)
    };
    assert_eq!(
        metric().await.as_deref(),
        Some("waba_monitor_config_last_reload_successful 1")
    );

    // A bad one: rejected, the daemon goes on with the previous config.
    std::fs::write(
        &app.config_path,
        "[daemon]\npoll_schedule = \"every minute\"\n",
    )
    .expect("config");
    signal(&child, "-HUP");
    let start = Instant::now();
    while metric().await.as_deref() != Some("waba_monitor_config_last_reload_successful 0") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "bad reload not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = app.sim.http_requests();
    let start = Instant::now();
    while app.sim.http_requests() == before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "polling stopped after a bad reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "-TERM");
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(30)).await;
    assert_eq!(code, 0);
    assert!(
        stderr.contains("the new configuration was rejected")
            && stderr.contains("daemon.poll_schedule"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_while_cycles_progress_and_not_once_they_stall() {
    let app = TestApp::spawn_with(
        one_waba(2),
        &format!("wabas = [\"{W1}\"]"),
        "v24.0",
        "* * * * * *",
    )
    .await;
    let notify = app.config_path.with_file_name("notify.sock");
    let notes = Notes::listen(&notify);
    let mut child = spawn_daemon(&app, &notify, Some(1_000_000));
    notes.wait_for("READY=1", Duration::from_secs(15)).await;
    notes.wait_for("WATCHDOG=1", Duration::from_secs(10)).await;
    notes
        .wait_for(
            "STATUS=polling 2 numbers in 1 WABAs, last cycle",
            Duration::from_secs(10),
        )
        .await;

    // Meta hangs: every cycle runs into its timeout and none finishes.
    app.sim.with_state(|s| {
        s.add_fault(Fault::always(
            FaultTarget::Any,
            FaultKind::Hang(Duration::from_secs(60)),
        ));
    });
    let stalled = Instant::now();
    // Progress is allowed for two intervals plus a cycle timeout (3 s here); after that the
    // pings stop.
    // (A cycle already running when the fault came may still finish, and progress is judged in
    // whole seconds: allow for both.)
    // The notes are stamped when the test reads them, which a loaded machine can delay: judge
    // a window well after the stall.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let late = stalled + Duration::from_secs(9);
    assert_eq!(
        notes.count_since(late, "WATCHDOG=1"),
        0,
        "watchdog fed while stalled"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_writes_a_consistent_copy_and_retention_prunes_old_history() {
    if crate::helpers::on_postgres() {
        // What this test checks is SQLite's own (its file, its locks, its read pool): the
        // PostgreSQL run covers the rest of the suite.
        return;
    }
    let app = TestApp::spawn(one_waba(3), &format!("wabas = [\"{W1}\"]")).await;
    app.poll().await;
    let dest = app.config_path.with_file_name("copy.db");
    let out = app.cli(&["backup", dest.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = waba_monitor::store::Store::open(&dest)
        .await
        .expect("copy opens");
    let original = app.history_count().await;
    assert_eq!(copy.history_count().await.expect("count"), original);
    copy.close().await;
    // A second backup to the same path is refused rather than overwriting.
    assert_eq!(
        app.cli(&["backup", dest.to_str().expect("path")])
            .status
            .code(),
        Some(2)
    );

    // Make half the history old, then prune.
    let store = app.store().await;
    on_store!(store, |p| sqlx::query(
        "UPDATE history SET observed_at = '2020-01-01T00:00:00.000Z' WHERE seq % 2 = 0"
    )
    .execute(p)
    .await
    .map(|_| ()))
    .expect("age rows");
    let old: i64 = on_store!(store, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM history WHERE observed_at < '2021-01-01'"
    )
    .fetch_one(p)
    .await)
    .expect("count");
    assert!(old > 0);
    let cutoff = chrono::Utc::now() - chrono::Duration::days(400);
    let mut deleted = 0;
    loop {
        let n = store.prune_batch(cutoff, 2).await.expect("prune");
        if n == 0 {
            break;
        }
        deleted += n;
    }
    assert!(deleted >= old as u64);
    assert_eq!(store.history_count().await.expect("count"), original - old);
    assert!(store.integrity_ok().await.expect("check"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_while_the_daemon_starts_is_not_fatal() {
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{W1}\"]")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = dir.path().join("notify.sock");
    let _notes = Notes::listen(&notify);
    // The old handler was installed only once the database and the sources were up, some
    // 20 ms after exec; a reload signal before that ended the process.
    // From 20 ms on: before that, even the fixed binary may not have reached `main` on a
    // loaded machine (exec, loading, the runtime), which no code of ours can cover.
    for delay_ms in [20u64, 25, 30, 40] {
        let mut child = spawn_daemon(&app, &notify, None);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        signal(&child, "-HUP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = child.try_wait().expect("wait");
        if status.is_some() {
            let (code, err) = wait_exit(&mut child, Duration::from_secs(1)).await;
            panic!("SIGHUP {delay_ms} ms after start ended the daemon (exit {code}): {err}");
        }
        signal(&child, "-TERM");
        let (code, err) = wait_exit(&mut child, Duration::from_secs(20)).await;
        assert_eq!(code, 0, "{err}");
    }
}
