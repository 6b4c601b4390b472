//! `check-config` and `run` agree: whatever `run` would refuse, `check-config` refuses too
//! (exit 2, every problem listed as `file:line: \`key\`: message` with a fix), and what it
//! prints about a valid config is what the daemon will enforce. All through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{TestApp, one_waba};

const WABA1: &str = "200000000000001";
/// An environment variable the tests never set.
const UNSET_VAR: &str = "WABA_MONITOR_TEST_SURELY_UNSET_TOKEN";
/// One the tests set for the binary.
const SET_VAR: &str = "WABA_MONITOR_TEST_TOKEN";

/// A temp folder with a config file and helpers to write files next to it.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn config(&self, text: &str) -> PathBuf {
        self.write("monitor.toml", text, 0o600)
    }
}

/// Runs the real binary with `--config path args`, without the variables the tests use unless
/// given in `env`, and kills it if it has not exited after 60 s (a `run` that should have been
/// refused would otherwise hang the test).
fn binary(path: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waba-monitor"));
    cmd.arg("--config")
        .arg(path)
        .args(args)
        .env_remove(UNSET_VAR)
        .env_remove(SET_VAR)
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("binary runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "waba-monitor {args:?} did not exit within 60 s\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts exit 2 and that stderr names `file:line: \`key\``.
fn assert_problem(out: &Output, line: usize, key: &str) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("monitor.toml:{line}: `{key}`")),
        "`{key}` at line {line} not named in:\n{stderr}"
    );
}

#[test]
fn check_config_refuses_every_secret_run_would_refuse_and_lists_them_all_with_paths() {
    let files = Files::new();
    let open_token = files.write("meta-token", "a-token-value-1234567890\n", 0o644);
    let missing_password = files.path("smtp-password");
    let config = files.config(&format!(
        r#"[daemon]
database = "monitor.db"

[[meta]]
name = "env"
access_token_env = "{UNSET_VAR}"
wabas = ["1"]

[[meta]]
name = "file"
access_token_file = "meta-token"
wabas = ["2"]

[email]
smtp_host = "smtp.example.com"
username = "monitor@example.com"
password_file = "smtp-password"
from = "monitor@example.com"
to = ["ops@example.com"]
"#
    ));
    let out = binary(&config, &["check-config"], &[]);
    let (stdout, stderr) = text(&out);
    assert_problem(&out, 6, "meta[0].access_token_env");
    assert_problem(&out, 11, "meta[1].access_token_file");
    assert_problem(&out, 17, "email.password_file");
    assert!(stderr.contains(UNSET_VAR), "{stderr}");
    let open = open_token.display().to_string();
    assert!(
        stderr.contains("mode 644") && stderr.contains(&format!("chmod 600 {open}")),
        "the mode found and the command that fixes it:\n{stderr}"
    );
    assert!(
        !stderr.contains("NOT readable") && !stdout.contains("NOT readable"),
        "a file open to others is readable, just too open:\n{stderr}"
    );
    assert!(
        stderr.contains(&missing_password.display().to_string())
            && !stderr.contains("entity not found"),
        "the missing file is named in plain words:\n{stderr}"
    );
    assert!(!stdout.contains("is valid"), "{stdout}");
    assert!(
        !stderr.contains("a-token-value"),
        "a secret was printed:\n{stderr}"
    );

    // Fixed, the same file passes.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    files.write("smtp-password", "pw-secret-value\n", 0o600);
    let out = binary(&config, &["check-config"], &[(UNSET_VAR, "t")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("pw-secret-value") && !stdout.contains("a-token-value"),
        "{stdout}"
    );
}

#[test]
fn a_systemd_credential_is_accepted_whatever_its_mode() {
    let files = Files::new();
    let creds = files.path("credentials");
    std::fs::create_dir(&creds).expect("mkdir");
    let token = files.write("credentials/meta-token", "a-token-value\n", 0o440);
    let config = files.config(&format!(
        "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"m\"\naccess_token_file = \"{}\"\nwabas = [\"1\"]\n",
        token.display()
    ));
    let out = binary(
        &config,
        &["check-config"],
        &[("CREDENTIALS_DIRECTORY", &creds.display().to_string())],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The same file outside systemd's folder is too open.
    let out = binary(&config, &["check-config"], &[]);
    assert_problem(&out, 6, "meta[0].access_token_file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_the_enforced_budget_bsp_sources_and_the_tls_mode_as_written() {
    let app = TestApp::spawn_with_extra(
        one_waba(1),
        &format!("wabas = [\"{WABA1}\"]\nphone_numbers = [\"300000000000001\"]"),
        &format!(
            r#"[[bsp]]
kind = "finedu"
name = "finedu-main"
token_env = "{SET_VAR}"
page_size = 50

[email]
smtp_host = "smtp.example.com"
tls = "starttls"
from = "monitor@example.com"
to = ["ops@example.com"]
"#
        ),
    )
    .await;
    let out = binary(&app.config_path, &["check-config"], &[(SET_VAR, "t")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The helper's config allows quota_per_waba_hour = 5000 at quota_share = 1.0.
    assert!(
        stdout.contains("12 calls/hour per WABA")
            && stdout.contains("enforced budget of 5000/h")
            && stdout.contains("0.2% of the enforced budget"),
        "{stdout}"
    );
    assert!(!stdout.contains("Meta's 200/h"), "{stdout}");
    assert!(
        stdout.contains("source \"finedu-main\"")
            && stdout.contains("https://wa.antgst.com")
            && stdout.contains(&format!("env {SET_VAR}"))
            && stdout.contains("page size 50")
            && stdout.contains("request(s) per cycle"),
        "{stdout}"
    );
    assert!(stdout.contains("starttls"), "{stdout}");
    assert!(!stdout.contains("StartTls"), "Rust Debug text:\n{stdout}");
    assert!(
        !stdout.contains("single phone_numbers share"),
        "one single number cannot share a WABA with itself:\n{stdout}"
    );
}

#[test]
fn every_type_error_is_reported_in_one_run_with_a_fix() {
    let files = Files::new();
    let config = files.config(
        r#"[daemon]
database = "monitor.db"
retention = 90

[[meta]]
name = "m"
access_token_env = "T"
wabas = ["1"]
request_timeout = "1 day"

[email]
smtp_host = "smtp.example.com"
tls = "STARTTLS"
from = "monitor@example.com"
to = "ops@example.com"
"#,
    );
    let out = binary(&config, &["check-config"], &[]);
    let (_, stderr) = text(&out);
    assert_problem(&out, 3, "daemon.retention");
    assert_problem(&out, 15, "email.to");
    assert_problem(&out, 9, "meta[0].request_timeout");
    assert!(stderr.contains("retention = \"90"), "a fix:\n{stderr}");
    assert!(
        stderr.contains("to = [\"ops@example.com\"]"),
        "a fix:\n{stderr}"
    );
    assert!(
        stderr.contains("unknown unit `day`: use ms, s, m, h, d"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("email.tls"),
        "STARTTLS is starttls:\n{stderr}"
    );
}

#[test]
fn huge_durations_are_refused_at_load_naming_the_key_and_its_maximum() {
    let files = Files::new();
    let config = files.config(
        r#"[daemon]
database = "monitor.db"
retention = "99999999d"
shutdown_grace = "99999999999999999999d"

[[meta]]
name = "m"
access_token_env = "T"
wabas = ["1"]

[alerts]
repeat_interval = "99999999d"
"#,
    );
    for command in ["check-config", "run"] {
        let out = binary(&config, &[command], &[("T", "t")]);
        let (_, stderr) = text(&out);
        assert_problem(&out, 3, "daemon.retention");
        assert_problem(&out, 4, "daemon.shutdown_grace");
        assert_problem(&out, 12, "alerts.repeat_interval");
        assert!(stderr.contains("36500d"), "{command}: {stderr}");
        assert!(stderr.contains("365d"), "{command}: {stderr}");
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    }
}

#[test]
fn an_api_version_past_its_end_of_life_is_refused_by_check_config_and_run() {
    let files = Files::new();
    let config = files.config(
        "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"m\"\napi_version = \"v20.0\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n",
    );
    for command in ["check-config", "run"] {
        let out = binary(&config, &[command], &[("T", "t")]);
        let (_, stderr) = text(&out);
        assert_problem(&out, 6, "meta[0].api_version");
        assert!(stderr.contains("2026-09-24"), "{command}: {stderr}");
        assert!(
            stderr.contains("api_version = \"v2"),
            "{command}: a fix naming a current version:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_api_version_reads_the_portfolio_wide_messaging_limit() {
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    // The helper writes api_version; this config leaves it to the default.
    let written = std::fs::read_to_string(&app.config_path).expect("config");
    let without: String = written
        .lines()
        .filter(|l| !l.starts_with("api_version"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        written, without,
        "the helper's config had an api_version line"
    );
    std::fs::write(&app.config_path, without).expect("config");

    let out = binary(&app.config_path, &["poll-once"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let out = binary(&app.config_path, &["status", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let phone = v
        .as_array()
        .and_then(|a| a.iter().find(|e| e["kind"] == "phone_number"))
        .cloned()
        .expect("a number");
    assert_eq!(
        phone["whatsapp_business_manager_messaging_limit"], "TIER_2K",
        "{phone}"
    );
}

#[tokio::test]
async fn the_graph_api_versions_end_of_life_is_a_metric() {
    // The helper's config uses v24.0, which Meta retires on 2028-02-18.
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let poller = app.poller().await;
    let metrics = poller.metrics().encode();
    poller.store().close().await;
    assert!(
        metrics.contains(
            "waba_monitor_graph_api_version_end_of_life_timestamp_seconds{source=\"main\"} 1834444800"
        ),
        "{metrics}"
    );
}

/// A config with one `[[meta]]` source (env token `T`) polled on `schedule`; `quota` adds keys
/// to the source.
fn schedule_config(files: &Files, schedule: &str, quota: &str) -> PathBuf {
    files.config(&format!(
        "[daemon]\npoll_schedule = \"{schedule}\"\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n{quota}\n"
    ))
}

#[test]
fn adjacent_seconds_are_each_a_cycle_in_the_budget_and_the_projection() {
    let files = Files::new();
    // Two seconds a minute: 120 cycles an hour, over the default budget of 100.
    let config = schedule_config(&files, "0,1 * * * * *", "");
    for command in ["check-config", "run"] {
        let out = binary(&config, &[command], &[("T", "t")]);
        let (_, stderr) = text(&out);
        assert_problem(&out, 2, "daemon.poll_schedule");
        assert!(
            stderr.contains("120 calls/hour per WABA, over its budget of 100"),
            "{command}: {stderr}"
        );
    }
    // Within a larger budget, the projection counts every second.
    let quota = "quota_per_waba_hour = 5000\nquota_share = 1.0";
    for (schedule, cycles) in [("* * * * * *", 3600), ("0-9 * * * * *", 600)] {
        let config = schedule_config(&files, schedule, quota);
        let out = binary(&config, &["check-config"], &[("T", "t")]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!(
                "every 1s at the shortest, at most {cycles} cycles in an hour"
            )),
            "{schedule}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("{cycles} calls/hour per WABA")),
            "{schedule}: {stdout}"
        );
    }
}

#[test]
fn a_schedule_that_never_fires_is_refused_by_check_config_and_run() {
    let files = Files::new();
    let config = schedule_config(&files, "0 0 0 30 2 *", "");
    for command in ["check-config", "run"] {
        let out = binary(&config, &[command], &[("T", "t")]);
        let (stdout, stderr) = text(&out);
        assert_problem(&out, 2, "daemon.poll_schedule");
        assert!(stderr.contains("never fires"), "{command}: {stderr}");
        assert!(
            stderr.contains("February has 28 days"),
            "{command}: {stderr}"
        );
        assert!(!stdout.contains("next at never"), "{command}: {stdout}");
    }
}

/// Asserts that `stderr` says `path` `reason` and holds none of `secrets`.
fn assert_names(stderr: &str, path: &Path, reason: &str, secrets: &[&str]) {
    let named = format!("{} {reason}", path.display());
    assert!(stderr.contains(&named), "{named} not in:\n{stderr}");
    for s in secrets {
        assert!(!stderr.contains(s), "a secret was printed:\n{stderr}");
    }
}

#[test]
fn secrets_of_two_lines_or_with_control_characters_are_refused_by_check_config_and_run() {
    let files = Files::new();
    let meta = files.write("meta-token", "meta-s3cret-1\nmeta-s3cret-2\n", 0o600);
    let bsp = files.write("bsp-token", "bsp-s3cret\u{1b}[0m\n", 0o600);
    let smtp = files.write("smtp-password", "smtp-s3cret\u{7}\n", 0o600);
    let config = files.config(&format!(
        r#"[daemon]
database = "monitor.db"
api_token_env = "{SET_VAR}"

[[meta]]
name = "m"
access_token_file = "meta-token"
wabas = ["1"]

[[bsp]]
kind = "finedu"
name = "b"
token_file = "bsp-token"

[email]
smtp_host = "smtp.example.com"
username = "monitor@example.com"
password_file = "smtp-password"
from = "monitor@example.com"
to = ["ops@example.com"]
"#
    ));
    let secrets = ["s3cret"];
    for command in ["check-config", "run"] {
        let out = binary(&config, &[command], &[(SET_VAR, "api-s3cret\nsecond")]);
        let (stdout, stderr) = text(&out);
        assert_problem(&out, 3, "daemon.api_token_env");
        assert_problem(&out, 7, "meta[0].access_token_file");
        assert_problem(&out, 13, "bsp[0].token_file");
        assert_problem(&out, 18, "email.password_file");
        assert!(
            stderr.contains(&format!("environment variable {SET_VAR} has 2 lines")),
            "{command}: {stderr}"
        );
        assert_names(&stderr, &meta, "has 2 lines", &secrets);
        assert_names(
            &stderr,
            &bsp,
            "contains a control character at byte 10",
            &secrets,
        );
        assert_names(
            &stderr,
            &smtp,
            "contains a control character at byte 11",
            &secrets,
        );
        assert!(!stdout.contains("readable"), "{command}: {stdout}");
        assert!(!stdout.contains("s3cret"), "{command}: {stdout}");
    }
}

/// Makes a named pipe at `path` with `mkfifo`, mode 600.
fn mkfifo(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo failed");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn a_fifo_as_the_token_file_is_refused_at_once_and_a_symlink_to_a_file_is_fine() {
    let files = Files::new();
    let fifo = files.path("meta-token");
    mkfifo(&fifo);
    let config = files.config(
        "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"m\"\naccess_token_file = \"meta-token\"\nwabas = [\"1\"]\n",
    );
    for command in ["check-config", "run"] {
        let started = Instant::now();
        let out = binary(&config, &[command], &[]);
        let (_, stderr) = text(&out);
        assert_problem(&out, 6, "meta[0].access_token_file");
        assert_names(
            &stderr,
            &fifo,
            "is a FIFO (named pipe), not a regular file",
            &[],
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{command} was slow"
        );
    }
    // systemd's credentials may be symlinks: one to a private regular file is read.
    std::fs::remove_file(&fifo).expect("rm");
    let real = files.write("real-token", "a-token-value\n", 0o600);
    std::os::unix::fs::symlink(&real, &fifo).expect("symlink");
    let out = binary(&config, &["check-config"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("(readable)"), "{stdout}");
}

#[tokio::test]
async fn a_token_file_replaced_by_two_lines_fails_the_poll_naming_the_file_without_a_request() {
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let poller = app.poller().await;
    assert!(poller.poll_once().await.all_ok());
    app.write_secret(
        "meta-token",
        &format!("{}\nsecond-line\n", crate::helpers::TOKEN),
    );
    app.sim.reset_counters();
    let report = poller.poll_once().await;
    poller.store().close().await;
    let source = &report.sources[0];
    assert!(!report.all_ok());
    let errors: Vec<String> = source
        .failures
        .iter()
        .map(|f| f.error.to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("meta-token has 2 lines")),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| !e.contains("builder error")),
        "{errors:?}"
    );
    assert_eq!(app.sim.http_requests(), 0, "a request was attempted");
}

#[test]
fn a_source_name_used_twice_is_reported_at_the_line_of_the_second() {
    let files = Files::new();
    let config = files.config(
        "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"main\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n\n[[meta]]\nname = \"main\"\naccess_token_env = \"T\"\nwabas = [\"2\"]\n",
    );
    let out = binary(&config, &["check-config"], &[("T", "t")]);
    let (_, stderr) = text(&out);
    assert_problem(&out, 10, "meta[1].name");
    assert!(stderr.contains("\"main\" is used twice"), "{stderr}");
}

#[test]
fn a_config_file_that_is_not_utf8_is_named_so_and_not_as_missing() {
    let files = Files::new();
    let path = files.path("monitor.toml");
    let mut bytes = b"[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"caf".to_vec();
    bytes.extend_from_slice(b"\xe9\"\naccess_token_env = \"T\"\nwabas = [\"1\"]\n");
    std::fs::write(&path, &bytes).expect("write");
    for command in ["check-config", "run"] {
        let out = binary(&path, &[command], &[("T", "t")]);
        let (_, stderr) = text(&out);
        assert_problem(&out, 5, "(file)");
        assert!(
            stderr.contains("not UTF-8") && stderr.contains("byte 54"),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("save it as UTF-8"), "{command}: {stderr}");
        assert!(!stderr.contains("create it"), "{command}: {stderr}");
    }
}

#[test]
fn a_config_path_that_is_a_folder_or_a_fifo_is_refused_at_once() {
    let files = Files::new();
    let fifo = files.path("monitor.toml");
    mkfifo(&fifo);
    let folder = files.dir.path().to_owned();
    for (path, what) in [
        (&folder, "is a directory"),
        (&fifo, "is a FIFO (named pipe)"),
    ] {
        for command in ["check-config", "run"] {
            let started = Instant::now();
            let out = binary(path, &[command], &[]);
            let (_, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
            assert!(
                stderr.contains(&format!("{}: `(file)`: this {what}", path.display())),
                "{command}: {stderr}"
            );
            assert!(!stderr.contains("create it"), "{command}: {stderr}");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{command} was slow"
            );
        }
    }
}
