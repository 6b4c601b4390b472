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

// Issue 20: the command line as an ops tool.

const FLEET_WABA1: &str = "200000000000001";
const FLEET_WABA2: &str = "200000000000002";
const BUSINESS: &str = "100000000000001";
/// Numbers 1-3 are in WABA 1, 4-6 in WABA 2.
const N: [&str; 6] = [
    "300000000000001",
    "300000000000002",
    "300000000000003",
    "300000000000004",
    "300000000000005",
    "300000000000006",
];

/// Two WABAs of three numbers, read through their business: number 2 RED, number 5 BANNED
/// (both critical), number 4 YELLOW (a warning), the rest healthy.
async fn troubled_fleet() -> TestApp {
    let mut state = waba_monitor::sim::SimState::fleet(2, 3);
    state.phone_mut(N[1]).quality_rating = Some("RED".into());
    state.phone_mut(N[4]).status = Some("BANNED".into());
    state.phone_mut(N[3]).quality_rating = Some("YELLOW".into());
    let app = TestApp::spawn(state, &format!("businesses = [\"{BUSINESS}\"]")).await;
    let out = app.cli(&["poll-once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of the first table (the numbers), header included.
fn numbers_table(text: &str) -> Vec<&str> {
    text.lines().take_while(|l| !l.is_empty()).collect()
}

/// Where `id` is among `lines`.
fn line_of(lines: &[&str], id: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", lines.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_problems_lists_only_the_unhealthy_numbers_worst_first() {
    let app = troubled_fleet().await;

    let text = stdout_of(&app.cli(&["status", "--problems"]));
    let table = numbers_table(&text);
    assert!(table[0].starts_with("NUMBER"), "{text}");
    for header in [
        "NAME", "WABA", "SOURCE", "QUALITY", "STATUS", "HEALTH", "LIMIT", "SINCE", "STALE",
    ] {
        assert!(
            table[0].contains(header),
            "no {header} column: {}",
            table[0]
        );
    }
    assert_eq!(table.len(), 4, "three problems and the header:\n{text}");
    let (red, banned, yellow) = (
        line_of(&table, N[1]),
        line_of(&table, N[4]),
        line_of(&table, N[3]),
    );
    assert!(
        red < yellow && banned < yellow,
        "critical before warning:\n{text}"
    );
    for healthy in [N[0], N[2], N[5]] {
        assert!(!text.contains(healthy), "{healthy} is healthy:\n{text}");
    }
    // The display number and the verified name are on the line, and the bad values.
    assert!(
        table[red].contains("RED") && table[red].contains("Fleet 1 Line 2"),
        "{text}"
    );
    assert!(table[banned].contains("BANNED"), "{text}");
    // Healthy WABAs are not problems: no WABA table.
    assert!(!text.lines().any(|l| l.starts_with("WABA ")), "{text}");

    // Without the filter: everything, still worst first (the healthy ones last).
    let text = stdout_of(&app.cli(&["status"]));
    let table = numbers_table(&text);
    assert_eq!(table.len(), 7, "{text}");
    let yellow = line_of(&table, N[3]);
    for healthy in [N[0], N[2], N[5]] {
        assert!(line_of(&table, healthy) > yellow, "{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("WABA ")),
        "the WABA table:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_filters_narrow_the_table_and_the_json_alike() {
    let app = troubled_fleet().await;

    // --waba: that WABA and its numbers only.
    let text = stdout_of(&app.cli(&["status", "--waba", FLEET_WABA2]));
    for n in &N[3..] {
        assert!(text.contains(n), "{n} missing:\n{text}");
    }
    for n in &N[..3] {
        assert!(!text.contains(n), "{n} is in the other WABA:\n{text}");
    }
    assert!(!text.contains(FLEET_WABA1), "{text}");

    // --source: a source nobody read from matches nothing, and says so.
    let text = stdout_of(&app.cli(&["status", "--source", "main"]));
    assert_eq!(numbers_table(&text).len(), 7, "{text}");
    let text = stdout_of(&app.cli(&["status", "--source", "elsewhere"]));
    assert!(
        text.contains("No number or WABA matches --source elsewhere"),
        "{text}"
    );

    // --json with filters: still one array in the documented shape, every entry matching.
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = app.cli(args);
        serde_json::from_slice::<serde_json::Value>(stdout_of(&out).as_bytes())
            .expect("json")
            .as_array()
            .expect("array")
            .clone()
    };
    let all = json(&["status", "--json", "--waba", FLEET_WABA2]);
    assert_eq!(all.len(), 4, "the WABA and its three numbers: {all:?}");
    assert!(all.iter().all(|e| e["waba_id"] == FLEET_WABA2), "{all:?}");
    assert_eq!(all[0]["kind"], "waba", "WABAs first");
    let bad = json(&["status", "--json", "--waba", FLEET_WABA2, "--problems"]);
    let ids: Vec<&str> = bad.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, [N[4], N[3]], "BANNED before YELLOW, nothing healthy");
    let sourced = json(&["status", "--json", "--source", "main"]);
    assert_eq!(sourced.len(), 8);
    assert!(sourced.iter().all(|e| e["source"] == "main"));
    assert!(json(&["status", "--json", "--source", "elsewhere"]).is_empty());
    let business = json(&["status", "--json", "--business", BUSINESS]);
    assert_eq!(business.len(), 8);
    assert!(
        business.iter().all(|e| e["business_id"] == BUSINESS),
        "a number carries its WABA's portfolio: {business:?}"
    );
    assert!(json(&["status", "--json", "--business", "1"]).is_empty());
}

/// Runs the binary with stdout into a file, as `status > report.txt` does.
fn output_to_file(app: &TestApp, args: &[&str]) -> String {
    let path = app.config_path.with_file_name("output.txt");
    let file = std::fs::File::create(&path).expect("file");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
        .arg("--config")
        .arg(&app.config_path)
        .args(args)
        .env_remove("NO_COLOR")
        .stdout(file)
        .status()
        .expect("runs");
    assert!(status.success());
    std::fs::read_to_string(&path).expect("output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_file_has_no_escape_codes() {
    let app = troubled_fleet().await;
    for args in [
        &["status"][..],
        &["status", "--problems"],
        &["status", "--waba", FLEET_WABA2],
        &["history"],
        &["completions", "bash"],
    ] {
        let text = output_to_file(&app, args);
        assert!(text.len() > 100, "{args:?}: {text}");
        assert!(
            !text.contains('\x1b'),
            "{args:?} wrote an escape code:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_finds_a_number_by_its_display_number_and_names_it() {
    let app = troubled_fleet().await;
    app.sim.with_state(|s| {
        s.phone_mut(N[3]).quality_rating = Some("GREEN".into());
    });
    stdout_of(&app.cli(&["poll-once"]));
    let display = app
        .sim
        .with_state(|s| s.phone_mut(N[3]).display_phone_number.clone());
    // Any spacing: the digits are compared.
    let spaced: String = display.chars().filter(char::is_ascii_digit).collect();
    let spaced = format!("+{} ({}) {}", &spaced[..1], &spaced[1..4], &spaced[4..]);

    for wanted in [display.as_str(), spaced.as_str(), N[3]] {
        let text = stdout_of(&app.cli(&["history", "--id", wanted]));
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert!(!rows.is_empty(), "{wanted}: {text}");
        assert!(
            rows.iter()
                .all(|l| l.contains(N[3]) && l.contains(&display) && l.contains("Fleet 2 Line 1")),
            "{wanted}: every row is the number's, with its display number and name:\n{text}"
        );
        assert!(text.contains("YELLOW") && text.contains("GREEN"), "{text}");
    }

    // --field narrows to one field, --waba to one WABA's targets.
    let text = stdout_of(&app.cli(&["history", "--id", &display, "--field", "quality_rating"]));
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "first sighting and YELLOW -> GREEN:\n{text}");
    assert!(rows.iter().all(|l| l.contains("quality_rating")));
    let out = app.cli(&["history", "--json", "--waba", FLEET_WABA1]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let ids: std::collections::BTreeSet<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(ids.contains(FLEET_WABA1) && ids.contains(N[0]), "{ids:?}");
    let templates = app
        .sim
        .with_state(|s| s.wabas[FLEET_WABA1].templates.clone());
    assert!(
        ids.iter()
            .all(|id| [FLEET_WABA1, N[0], N[1], N[2]].contains(id)
                || templates.iter().any(|t| t == id)),
        "only WABA 1, its numbers and its templates: {ids:?}"
    );
    assert!(!ids.contains(N[3]) && !ids.contains(FLEET_WABA2), "{ids:?}");

    // An id nobody knows: a message and exit 1.
    for args in [
        &["history", "--id", "+1 999 000 0000"][..],
        &["history", "--waba", "999"],
    ] {
        let out = app.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("in the database"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_an_empty_database_says_what_to_run() {
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    // A database created (the store opened once) with nothing read into it.
    app.store().await.close().await;
    let text = stdout_of(&app.cli(&["status"]));
    assert!(text.contains("Nothing has been read"), "{text}");
    assert!(text.contains("poll-once"), "{text}");
    let out = app.cli(&["status", "--json"]);
    assert_eq!(stdout_of(&out).trim(), "[]");
}

#[test]
fn completions_print_scripts_the_shells_accept_and_man_prints_a_page() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
            .args(args)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{args:?}");
        out.stdout
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("waba-monitor.bash");
    std::fs::write(&script, run(&["completions", "bash"])).expect("write");
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let bash = std::fs::read_to_string(&script).expect("read");
    for word in ["status", "history", "--problems", "--waba", "completions"] {
        assert!(bash.contains(word), "{word} not completed");
    }
    for shell in ["zsh", "fish"] {
        let text = String::from_utf8(run(&["completions", shell])).expect("utf-8");
        assert!(text.contains("problems"), "{shell}: {text}");
    }
    let man = String::from_utf8(run(&["man"])).expect("utf-8");
    assert!(man.contains(".TH waba-monitor 1"), "{man}");
    assert!(man.contains("status"), "{man}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_commands_draw_no_progress_when_stderr_is_not_a_terminal() {
    let app = TestApp::spawn(one_waba(2), &format!("wabas = [\"{WABA1}\"]")).await;
    let out = app.cli(&["poll-once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The progress line's words, and a terminal's line clearing, never reach a pipe.
    assert!(
        !stderr.contains("source(s) read") && !stderr.contains("\x1b[2K"),
        "{stderr}"
    );
    if crate::helpers::on_postgres() {
        // `backup` copies a SQLite file; PostgreSQL's backups are the server's.
        return;
    }
    let copy = app.config_path.with_file_name("copy.db");
    let out = app.cli(&["backup", copy.to_str().expect("utf-8 path")]);
    assert!(out.status.success());
    assert!(copy.exists());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("backup written to {}", copy.display())
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the binary on a pseudo-terminal (util-linux `script`, essential on Debian) and returns
/// what the terminal received.
fn on_a_terminal(app: &TestApp, args: &str, no_color: Option<&str>) -> String {
    let command = format!(
        "{} --config {} {args}",
        env!("CARGO_BIN_EXE_waba-monitor"),
        app.config_path.display()
    );
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &command, "/dev/null"]);
    match no_color {
        Some(v) => script.env("NO_COLOR", v),
        None => script.env_remove("NO_COLOR"),
    };
    let out = script.output().expect("script runs");
    assert!(out.status.success(), "{command}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_coloured_on_a_terminal_unless_no_color_is_set() {
    let app = troubled_fleet().await;
    let tty = on_a_terminal(&app, "status --problems", None);
    assert!(tty.contains("\x1b[1;31mRED\x1b[0m"), "RED in red: {tty:?}");
    assert!(
        tty.contains("\x1b[33mYELLOW\x1b[0m"),
        "YELLOW in yellow: {tty:?}"
    );
    let plain = on_a_terminal(&app, "status --problems", Some("1"));
    assert!(
        plain.contains("RED") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    // An empty NO_COLOR does not count (no-color.org).
    let empty = on_a_terminal(&app, "status --problems", Some(""));
    assert!(empty.contains('\x1b'), "{empty:?}");

    // On a terminal, poll-once shows how far it is, and clears that line before its report.
    let tty = on_a_terminal(&app, "poll-once", None);
    assert!(tty.contains("source(s) read"), "{tty:?}");
    let report = tty.rfind("source main: ok").expect("the report");
    assert!(tty[..report].ends_with("\x1b[2K"), "{tty:?}");
}
