//! `deploy/install.sh`, run for real into a staging tree (`--root`): where the default binary
//! comes from (`$CARGO_TARGET_DIR`), and that `--root DIR` is created when it does not exist
//! (but not by `--dry-run`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FAKE_VERSION: &str = "waba-monitor 0.0.0-install-test";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/install.sh")
}

/// A stand-in for the binary: the script only runs `--version` on it and copies it.
fn fake_binary(path: &Path) -> Vec<u8> {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let content = format!("#!/bin/sh\necho '{FAKE_VERSION}'\n").into_bytes();
    std::fs::write(path, &content).expect("write fake binary");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    content
}

/// Runs the script with `args`, `CARGO_TARGET_DIR` set to `target_dir` (or unset), no `DESTDIR`.
fn install(args: &[&str], target_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args).env_remove("DESTDIR");
    match target_dir {
        Some(dir) => cmd.env("CARGO_TARGET_DIR", dir),
        None => cmd.env_remove("CARGO_TARGET_DIR"),
    };
    cmd.output().expect("bash runs deploy/install.sh")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_default_binary_is_taken_from_cargo_target_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("elsewhere-target");
    let built = fake_binary(&target.join("release/waba-monitor"));
    let root = tmp.path().join("stage");
    std::fs::create_dir(&root).expect("mkdir root");

    let out = install(&["--root", root.to_str().expect("utf-8")], Some(&target));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(FAKE_VERSION),
        "did not install the binary under CARGO_TARGET_DIR: {}",
        text(&out)
    );
    let installed = std::fs::read(root.join("usr/local/bin/waba-monitor")).expect("installed");
    assert_eq!(installed, built, "{}", text(&out));
}

#[test]
fn a_missing_default_binary_is_reported_under_cargo_target_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("empty-target");
    let root = tmp.path().join("stage");
    std::fs::create_dir(&root).expect("mkdir root");

    let out = install(&["--root", root.to_str().expect("utf-8")], Some(&target));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = target.join("release/waba-monitor");
    assert!(
        stderr.contains(&format!("{} not found", expected.display())),
        "the error does not name {}: {}",
        expected.display(),
        text(&out)
    );
    assert!(
        stderr.contains("CARGO_TARGET_DIR"),
        "the error does not mention CARGO_TARGET_DIR: {}",
        text(&out)
    );
    assert!(
        !root.join("usr").exists(),
        "installed something: {}",
        text(&out)
    );
}

#[test]
fn root_is_created_when_it_does_not_exist() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let binary = tmp.path().join("bin/waba-monitor");
    let built = fake_binary(&binary);
    let root = tmp.path().join("not/yet/there");

    let out = install(
        &[
            "--binary",
            binary.to_str().expect("utf-8"),
            "--root",
            root.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let installed = std::fs::read(root.join("usr/local/bin/waba-monitor")).expect("installed");
    assert_eq!(installed, built);
    assert!(
        root.join("etc/systemd/system/waba-monitor.service")
            .is_file()
    );
    assert!(root.join("etc/waba-monitor/monitor.toml").is_file());
    let creds = std::fs::metadata(root.join("etc/waba-monitor/credentials")).expect("credentials");
    assert_eq!(creds.permissions().mode() & 0o777, 0o700);
}

#[test]
fn a_dry_run_does_not_create_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let binary = tmp.path().join("bin/waba-monitor");
    fake_binary(&binary);
    let root = tmp.path().join("absent");

    let out = install(
        &[
            "--dry-run",
            "--binary",
            binary.to_str().expect("utf-8"),
            "--root",
            root.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!root.exists(), "a dry run created {}", root.display());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}/usr/local/bin/waba-monitor", root.display())),
        "the dry run does not show where it would install: {}",
        text(&out)
    );
}

#[test]
fn the_webhook_proxy_example_is_installed_once_and_never_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let binary = tmp.path().join("bin/waba-monitor");
    fake_binary(&binary);
    let root = tmp.path().join("stage");
    let args = [
        "--binary",
        binary.to_str().expect("utf-8"),
        "--root",
        root.to_str().expect("utf-8"),
    ];
    let example = root.join("etc/waba-monitor/nginx-webhooks.conf.example");
    let shipped =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx-webhooks.conf"))
            .expect("deploy/nginx-webhooks.conf");

    let out = install(&args, None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&example).expect("installed"),
        shipped,
        "{}",
        text(&out)
    );
    let mode = std::fs::metadata(&example)
        .expect("example")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "{}", text(&out));

    // The admin edits it; a second run (an upgrade) keeps the edit and says how to compare.
    std::fs::write(&example, "# mine\n").expect("edit the example");
    let out = install(&args, None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&example).expect("kept"),
        b"# mine\n",
        "{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("kept:      {}", example.display())) && stdout.contains("diff -u"),
        "the second run does not say it kept the example: {}",
        text(&out)
    );
}
