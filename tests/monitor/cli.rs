//! The binary's commands, run as a user runs them.

use crate::helpers::{TOKEN, TestApp, one_waba};

const WABA1: &str = "200000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_once_then_status_and_history_print_the_documented_json() {
    let app = TestApp::spawn(one_waba(2), &format!("wabas = [\"{WABA1}\"]")).await;
    let out = app.cli(&["poll-once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("source main: ok"), "{stdout}");

    let out = app.cli(&["status", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 3);
    let phone = arr
        .iter()
        .find(|e| e["kind"] == "phone_number")
        .expect("a number");
    for key in [
        "kind",
        "id",
        "waba_id",
        "display_phone_number",
        "verified_name",
        "name",
        "quality_rating",
        "status",
        "messaging_limit",
        "health",
        "last_polled_at",
        "last_changed_at",
    ] {
        assert!(phone.get(key).is_some(), "missing {key}");
    }
    assert_eq!(phone["waba_id"], WABA1);
    assert_eq!(phone["quality_rating"], "GREEN");
    assert_eq!(phone["health"], "AVAILABLE");
    assert!(arr.iter().any(|e| e["kind"] == "waba" && e["id"] == WABA1));

    let out = app.cli(&["history", "--json", "--since", "1h"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let first = &v.as_array().expect("array")[0];
    for key in ["id", "kind", "field", "old", "new", "observed_at"] {
        assert!(first.get(key).is_some(), "missing {key}");
    }
    let t = first["observed_at"].as_str().expect("string");
    assert!(
        t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(),
        "{t}"
    );

    // Debug logging of a whole poll never shows the token.
    let out = app.cli(&["poll-once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_once_exits_non_zero_when_a_source_fails() {
    let app = TestApp::spawn(one_waba(1), "wabas = [\"999\"]").await;
    let out = app.cli(&["poll-once"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED waba 999"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_summarises_targets_and_projected_quota_use() {
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let out = app.cli(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(
        stdout.contains("12 calls/hour per WABA, 0.2% of the enforced budget of 5000/h"),
        "{stdout}"
    );
    assert!(stdout.contains("1 WABA(s)"), "{stdout}");
}

/// Bad config files, each with the key and the line the error must name.
const BAD: &[(&str, &str, &str, usize)] = &[
    (
        "unknown key",
        "[daemon]\ndatabase = \"x.db\"\npoll_schedul = \"0 * * * * *\"\n",
        "poll_schedul",
        3,
    ),
    (
        "schedule with five fields",
        "[daemon]\npoll_schedule = \"*/5 * * * *\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n",
        "daemon.poll_schedule",
        2,
    ),
    (
        "listen without port",
        "[daemon]\nlisten = \"127.0.0.1\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n",
        "daemon.listen",
        2,
    ),
    (
        "token pasted into the env key",
        "[[meta]]\nname = \"m\"\naccess_token_env = \"EAAGm0PX4ZCpsBAKZBwhatever\"\nwabas = [\"1\"]\n",
        "meta[0].access_token_env",
        3,
    ),
    (
        "phone number instead of id",
        "[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nphone_numbers = [\"+1 555 0100\"]\n",
        "meta[0].phone_numbers",
        4,
    ),
    (
        "plain http to a remote host",
        "[[meta]]\nname = \"m\"\ngraph_url = \"http://graph.facebook.com\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n",
        "meta[0].graph_url",
        3,
    ),
    (
        "wrong type",
        "[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = 987654321\n",
        "meta[0].wabas",
        4,
    ),
    (
        "bad api version",
        "[[meta]]\nname = \"m\"\napi_version = \"23\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n",
        "meta[0].api_version",
        3,
    ),
    (
        "both token sources",
        "[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\naccess_token_file = \"/tmp/t\"\nwabas = [\"1\"]\n",
        "meta[0].access_token_file",
        4,
    ),
    (
        "duration without unit",
        "[daemon]\ncycle_timeout = \"300\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n",
        "daemon.cycle_timeout",
        2,
    ),
    (
        "TOML syntax error",
        "[daemon]\ndatabase = \"x.db\n",
        "daemon.database",
        2,
    ),
];

#[test]
fn check_config_names_the_key_and_line_of_every_bad_file_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (what, text, key, line) in BAD {
        let path = dir.path().join("monitor.toml");
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{what}: exit code");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("`{key}`")),
            "{what}: key {key} not named in:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("monitor.toml:{line}:")),
            "{what}: line {line} not named in:\n{stderr}"
        );
    }
}

#[test]
fn the_reference_monitor_toml_loads_through_the_real_loader() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitor.toml");
    let cfg = waba_monitor::config::Config::load(&path).expect("monitor.toml is valid");
    assert_eq!(cfg.meta[0].name, "main");
    assert_eq!(cfg.daemon.poll_schedule.expr, "0 */5 * * * *");
    let email = cfg.email.expect("the reference documents [email]");
    assert_eq!(email.smtp_port, 587);
    assert_eq!(cfg.alerts.blind_after, 3);
}
