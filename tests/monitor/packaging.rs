//! The Debian package's conffile: `packaging/conffile.sh` applied to the reference `monitor.toml`
//! (what `packaging/build-deb.sh` installs as /etc/waba-monitor/monitor.toml) is accepted by
//! `check-config` as installed, with no environment at all: the service gets no variables, its
//! secrets come from systemd credentials. The full package (build, lintian, install, purge) is
//! checked by `packaging/check-deb.sh` in CI; this catches a `monitor.toml` edit that the
//! packaged config would not survive at `cargo test` time.

use std::path::Path;
use std::process::Command;

/// The line that makes the service read the Meta token from the unit's `LoadCredential=`.
const TOKEN_FROM_CREDENTIAL: &str =
    r#"access_token_file = "/run/credentials/waba-monitor.service/meta-token""#;

#[test]
fn packaged_conffile_passes_check_config_with_no_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let conffile = dir.path().join("monitor.toml");

    let made = Command::new("bash")
        .arg(root.join("packaging/conffile.sh"))
        .arg(root.join("monitor.toml"))
        .arg(&conffile)
        .output()
        .expect("run packaging/conffile.sh");
    assert!(
        made.status.success(),
        "packaging/conffile.sh failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let text = std::fs::read_to_string(&conffile).expect("read the packaged conffile");
    assert!(
        text.lines().any(|l| l == TOKEN_FROM_CREDENTIAL),
        "the packaged conffile does not read the Meta token from the unit's credential"
    );

    let checked = Command::new(env!("CARGO_BIN_EXE_waba-monitor"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--config")
        .arg(&conffile)
        .arg("check-config")
        .output()
        .expect("run check-config");
    assert!(
        checked.status.success(),
        "check-config refused the packaged conffile (exit {:?}):\n{}{}",
        checked.status.code(),
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
