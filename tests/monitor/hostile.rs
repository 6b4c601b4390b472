//! A hostile or broken upstream (issue 11): a listing that never ends, error answers that echo
//! the request's credentials back.

use crate::helpers::on_store;
use crate::helpers::{TOKEN, TestApp, one_waba};
use waba_monitor::sim::{Fault, FaultKind, FaultTarget};
use waba_monitor::sources::PollOutcome;

const WABA1: &str = "200000000000001";

/// Writes `quota_per_waba_hour = budget` into the app's config (its quota_share is 1.0).
fn set_budget(app: &TestApp, budget: u32) {
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::write(
        &app.config_path,
        text.replace(
            "quota_per_waba_hour = 5000",
            &format!("quota_per_waba_hour = {budget}"),
        ),
    )
    .expect("config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_listing_stops_at_the_wabas_budget_and_records_nothing_gone() {
    let app = TestApp::spawn(one_waba(3), &format!("wabas = [\"{WABA1}\"]")).await;
    set_budget(&app, 100);
    let poller = app.poller().await;
    let first = poller.poll_once().await;
    assert_eq!(first.sources[0].outcome, PollOutcome::Ok);
    app.sim.reset_counters();

    // Every page of the WABA's numbers now links to one more page, with a new cursor each time.
    app.sim.with_state(|s| {
        s.remove_phone("300000000000003");
        s.add_fault(Fault::always(
            FaultTarget::object(WABA1),
            FaultKind::EndlessPaging,
        ));
    });
    let r = poller.poll_once().await;
    let s = &r.sources[0];
    let drawn = app.sim.calls_for_waba(WABA1);
    assert!(
        drawn <= 99,
        "{drawn} requests drawn by one WABA in one cycle"
    );
    assert_eq!(
        u64::from(poller.calls_last_hour("main", WABA1)),
        drawn + 1,
        "every page charged (plus the first cycle's call)"
    );
    assert!(
        s.deferred > 0,
        "the listing is held back, not failed: {:?} drawn {drawn} phones {} changes {:?}",
        s.failures,
        s.phones,
        s.changes
    );
    assert!(
        s.changes.iter().all(|c| c.new.as_deref() != Some("gone")),
        "an incomplete listing recorded {:?}",
        s.changes
    );
    // The budget is spent: the next cycle leaves the WABA alone.
    app.sim.reset_counters();
    let r = poller.poll_once().await;
    assert_eq!(app.sim.calls_for_waba(WABA1), 0);
    assert_eq!(r.sources[0].deferred, 1);
    poller.store().close().await;
}

/// An error whose text echoes the request's `Authorization` header, as some proxies and
/// misconfigured servers do.
fn echoing_error(code: i64) -> FaultKind {
    FaultKind::graph_error(
        401,
        code,
        &format!(
            "Invalid OAuth access token. Request headers: Authorization: Bearer {TOKEN}; Accept: */*"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_echoed_by_upstream_is_stored_printed_logged_and_mailed_nowhere() {
    let smtp = crate::smtp::SmtpSink::start().await;
    let app = TestApp::spawn_with_extra(
        one_waba(1),
        &format!("wabas = [\"{WABA1}\"]"),
        &format!(
            "[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"monitor@example.com\"\nto = [\"ops@example.com\"]\n",
            smtp.port()
        ),
    )
    .await;
    app.sim
        .with_state(|s| s.add_fault(Fault::always(FaultTarget::Any, echoing_error(190))));
    let out = app.cli(&["poll-once", "--json"]);
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("Invalid OAuth access token"), "{printed}");
    assert!(
        !printed.contains(TOKEN),
        "token printed or logged: {printed}"
    );

    let store = app.store().await;
    let errors: Vec<Option<String>> =
        on_store!(store, |p| sqlx::query_scalar("SELECT error FROM poll_runs")
            .fetch_all(p)
            .await)
        .expect("runs");
    assert!(errors.iter().flatten().any(|e| e.contains("OAuth")));
    assert!(
        errors.iter().flatten().all(|e| !e.contains(TOKEN)),
        "token stored: {errors:?}"
    );
    // The "monitoring blind" email waits in the outbox with Meta's message in it.
    let mails: Vec<(String, String)> = on_store!(store, |p| sqlx::query_as(
        "SELECT subject, body FROM outbox"
    )
    .fetch_all(p)
    .await)
    .expect("outbox");
    assert!(!mails.is_empty(), "the blind alert is queued");
    for (subject, body) in &mails {
        assert!(!subject.contains(TOKEN) && !body.contains(TOKEN), "{body}");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_file_is_not_reused_silently() {
    if crate::helpers::on_postgres() {
        // What this test checks is SQLite's own (its file, its locks, its read pool): the
        // PostgreSQL run covers the rest of the suite.
        return;
    }
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let db = app
        .config()
        .daemon
        .database
        .sqlite_path()
        .expect("a SQLite database")
        .to_path_buf();
    std::fs::write(&db, b"").expect("a 0-byte file where the database should be");
    let out = app.cli(&["poll-once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("database file is empty") && err.contains("restore"),
        "{err}"
    );
}

/// Runs the binary as the unprivileged user `nobody` (the tests run as root in CI, and root
/// ignores file modes).
fn as_nobody(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_waba-monitor"))
        .arg("--config")
        .arg(&app.config_path)
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_user_cannot_write_is_named_with_the_permission_missing() {
    if crate::helpers::on_postgres() {
        // What this test checks is SQLite's own (its file, its locks, its read pool): the
        // PostgreSQL run covers the rest of the suite.
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let dir = app.config_path.parent().expect("dir").to_path_buf();
    // nobody may read the config and its token, and nothing else.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for f in ["monitor.toml", "meta-token"] {
        std::os::unix::fs::chown(dir.join(f), Some(65534), Some(65534)).expect("chown");
    }
    // The database folder belongs to root: nobody cannot create the file or its journal.
    let text = std::fs::read_to_string(&app.config_path).expect("config");
    std::fs::create_dir(dir.join("state")).expect("state dir");
    std::fs::write(
        &app.config_path,
        text.replace(
            "database = \"monitor.db\"",
            "database = \"state/monitor.db\"",
        ),
    )
    .expect("config");
    let out = as_nobody(&app, &["poll-once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&dir.join("state").display().to_string())
            && err.contains("permission denied")
            && err.contains("write"),
        "{err}"
    );

    // A database file of mode 0444 in a writable folder: named too.
    std::os::unix::fs::chown(dir.join("state"), Some(65534), Some(65534)).expect("chown");
    let db = dir.join("state/monitor.db");
    std::fs::write(&db, b"").expect("db");
    std::os::unix::fs::chown(&db, Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let out = as_nobody(&app, &["poll-once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&db.display().to_string()) && err.contains("cannot be written"),
        "{err}"
    );
}
