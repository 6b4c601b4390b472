//! Test harness: a simulated Graph API on loopback, a temp folder with a real config file, a
//! private token file and a real SQLite database, and the library's own poller and daemon.

use std::path::PathBuf;

use tempfile::TempDir;
use waba_monitor::config::Config;
use waba_monitor::poller::{CycleReport, Poller};
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{GraphSim, SimOptions, SimState};
use waba_monitor::store::Store;

pub const TOKEN: &str = "test-token-abcdefghijklmnop-0123456789";

pub struct TestApp {
    pub sim: GraphSim,
    pub _dir: TempDir,
    pub config_path: PathBuf,
}

impl TestApp {
    /// Starts a simulator with `state` and writes a config whose `[[meta]]` block gets
    /// `targets` (e.g. `wabas = ["1"]`) and any extra keys.
    pub async fn spawn(state: SimState, targets: &str) -> TestApp {
        Self::spawn_with(state, targets, "v24.0", "0 */5 * * * *").await
    }

    pub async fn spawn_with(
        state: SimState,
        targets: &str,
        api_version: &str,
        schedule: &str,
    ) -> TestApp {
        Self::spawn_full(state, targets, api_version, schedule, "").await
    }

    /// Like `spawn`, with more TOML appended after the `[[meta]]` block (e.g. `[email]`).
    pub async fn spawn_with_extra(state: SimState, targets: &str, extra: &str) -> TestApp {
        Self::spawn_full(state, targets, "v24.0", "0 */5 * * * *", extra).await
    }

    pub async fn spawn_full(
        state: SimState,
        targets: &str,
        api_version: &str,
        schedule: &str,
        extra: &str,
    ) -> TestApp {
        let sim = GraphSim::start(
            state,
            SimOptions {
                token: TOKEN.to_owned(),
                ..SimOptions::default()
            },
        )
        .await
        .expect("simulator starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let token_path = dir.path().join("meta-token");
        std::fs::write(&token_path, TOKEN).expect("token file");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
        let config_path = dir.path().join("monitor.toml");
        let database = test_database(dir.path());
        let text = format!(
            "[daemon]\n{database}\nlisten = \"127.0.0.1:0\"\npoll_schedule = \"{schedule}\"\n\n[[meta]]\nname = \"main\"\ngraph_url = \"{}\"\napi_version = \"{api_version}\"\naccess_token_file = \"meta-token\"\nrequest_timeout = \"2s\"\nquota_per_waba_hour = 5000\nquota_share = 1.0\n{targets}\n\n{extra}\n",
            sim.url()
        );
        std::fs::write(&config_path, text).expect("config");
        TestApp {
            sim,
            _dir: dir,
            config_path,
        }
    }

    /// Adds a line to the `[daemon]` table of the config file.
    pub fn add_daemon_key(&self, line: &str) {
        let text = std::fs::read_to_string(&self.config_path).expect("config");
        let text = text.replacen("[daemon]\n", &format!("[daemon]\n{line}\n"), 1);
        std::fs::write(&self.config_path, text).expect("config");
    }

    /// Writes a private file next to the config.
    pub fn write_secret(&self, name: &str, content: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.config_path.with_file_name(name);
        std::fs::write(&path, content).expect("secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("test config is valid")
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.config().daemon.database)
            .await
            .expect("store opens")
    }

    /// A fresh poller over a freshly opened store, as a restarted daemon would build it.
    pub async fn poller(&self) -> Poller {
        Poller::from_config(&self.config(), self.store().await, RetryPolicy::fast())
            .expect("poller builds")
    }

    /// One cycle with a fresh poller; the store is closed afterwards, like `poll-once`.
    pub async fn poll(&self) -> CycleReport {
        let poller = self.poller().await;
        let report = poller.poll_once().await;
        poller.store().close().await;
        report
    }

    pub async fn history_count(&self) -> i64 {
        let s = self.store().await;
        let n = s.history_count().await.expect("count");
        s.close().await;
        n
    }

    /// Runs the real binary with this app's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "debug")
            .output()
            .expect("binary runs")
    }
}

/// A fleet with one business owning one WABA of `n` numbers, plus nothing else.
/// Whether the suite runs on PostgreSQL (`WABA_MONITOR_TEST_BACKEND=postgres`): every app's
/// database is then a fresh PostgreSQL database instead of a SQLite file.
pub fn on_postgres() -> bool {
    std::env::var("WABA_MONITOR_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The `database` line(s) of a test config: a SQLite file in `dir`, or on PostgreSQL a fresh
/// database (its password in a private file beside the config, never in the URL).
pub fn test_database(dir: &std::path::Path) -> String {
    if !on_postgres() {
        return "database = \"monitor.db\"".to_owned();
    }
    let url = waba_monitor::store::pg_testing::fresh_database("it");
    let (url, password) = waba_monitor::store::pg_testing::split_password(&url);
    let mut lines = format!("database = \"{url}\"");
    if let Some(p) = password {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("db-password");
        std::fs::write(&path, p).expect("db password");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        lines.push_str("\ndatabase_password_file = \"db-password\"");
    }
    lines
}

pub fn one_waba(n: usize) -> SimState {
    SimState::fleet(1, n)
}

/// The real daemon (`daemon::run_with_listener`) on a loopback listener, for the tests that
/// speak HTTP to it; started with `RetryPolicy::fast()` and waited for until its first cycle.
pub struct Daemon {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The number of changes of each finished cycle.
    cycles: tokio::sync::mpsc::UnboundedReceiver<usize>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    pub async fn start(app: &TestApp, opts: waba_monitor::daemon::RunOptions) -> Daemon {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (tx, cycles) = tokio::sync::mpsc::unbounded_channel();
        let handle = tokio::spawn(waba_monitor::daemon::run_with_listener(
            app.config(),
            waba_monitor::daemon::RunOptions {
                retry: RetryPolicy::fast(),
                ..opts
            },
            listener,
            async move {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = tx.send(r.changes());
            },
        ));
        let mut d = Daemon {
            base,
            stop: Some(stop_tx),
            cycles,
            handle,
        };
        d.next_cycle_within(std::time::Duration::from_secs(20))
            .await;
        d
    }

    /// Waits for the next cycle to finish; its number of changes.
    pub async fn next_cycle_within(&mut self, limit: std::time::Duration) -> usize {
        tokio::time::timeout(limit, self.cycles.recv())
            .await
            .expect("a cycle in time")
            .expect("daemon running")
    }

    /// Stops the daemon and waits for its clean exit.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(20), self.handle)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("clean exit");
    }
}

/// Runs a query written for both backends (`$1` placeholders) on a store's pool, whichever it
/// is: the tests that look into the database directly run on SQLite and on PostgreSQL.
macro_rules! on_store {
    ($store:expr, |$p:ident| $body:expr) => {
        match $store.pool() {
            waba_monitor::store::Pool::Lite($p) => $body,
            waba_monitor::store::Pool::Pg($p) => $body,
        }
    };
}
pub(crate) use on_store;
