//! PostgreSQL servers and databases for the tests (std only: no crates).
//!
//! [`server_url`] gives the server: the one `WABA_MONITOR_TEST_POSTGRES` names, or else a private
//! throwaway server that this process starts once with `.ci/postgres.sh start` and that is stopped
//! (and its data directory removed) when the process exits, however it exits. Tests that need
//! PostgreSQL fail, never skip, when there is no server.
//!
//! [`fresh_database`] and [`database_for_key`] create empty databases on it with `psql` (from
//! PATH, else the newest `/usr/lib/postgresql/*/bin`). On a private server they go away with it;
//! on a `WABA_MONITOR_TEST_POSTGRES` server they are left behind (their names start with the
//! label and carry the process id).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The environment variable naming an existing server to use instead of a private one: a URL
/// such as `postgres://user:password@127.0.0.1:5432/postgres` whose user may create databases.
pub const SERVER_ENV: &str = "WABA_MONITOR_TEST_POSTGRES";

/// The longest database name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

/// The private server of this process.
struct Private {
    url: String,
    /// The write end of the watcher's stdin, never written to and never closed by us: the kernel
    /// closes it when this process exits (normally, by a panic, a signal or SIGKILL), and the
    /// watcher, reading EOF, stops the server. Kept here so it lives as long as the process.
    _watch: ChildStdin,
}

/// The URL of the PostgreSQL server for tests.
///
/// `WABA_MONITOR_TEST_POSTGRES` if it is set (and not empty); otherwise a private server started
/// on first use, once per process, with `.ci/postgres.sh start` in a new temp directory (found
/// from `CARGO_MANIFEST_DIR`). A watcher process, started first in its own process group (so a
/// Ctrl-C of the tests does not kill it too), waits for this process to exit and then runs
/// `.ci/postgres.sh stop`; it holds no pipe of ours, so nothing waits for it.
///
/// # Panics
///
/// When the server cannot be started: with the script's error output (every later call panics
/// with the same message, without trying again).
pub fn server_url() -> String {
    static PRIVATE: OnceLock<Result<Private, String>> = OnceLock::new();
    if let Some(url) = std::env::var_os(SERVER_ENV).filter(|v| !v.is_empty()) {
        return url.into_string().unwrap_or_else(|v| {
            panic!("{SERVER_ENV} is not valid UTF-8: {}", v.to_string_lossy())
        });
    }
    match PRIVATE.get_or_init(start_private) {
        Ok(private) => private.url.clone(),
        Err(e) => panic!("no PostgreSQL server for the tests: {e}"),
    }
}

/// The script that starts and stops throwaway servers.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres.sh")
}

/// Starts this process's private server: the watcher first (so even a start that fails half-way
/// is cleaned up), then `.ci/postgres.sh start`.
fn start_private() -> Result<Private, String> {
    let script = script();
    if !script.is_file() {
        return Err(format!("{} not found", script.display()));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("waba-monitor-pg-{}-{nanos:09}", std::process::id()));

    // The watcher: `cat` returns at EOF, i.e. when the last write end of its stdin (ours) is
    // closed, which happens only when this process exits (Rust's pipes are close-on-exec, so no
    // other child inherits it). HUP and INT are ignored so that a terminal's hangup or Ctrl-C
    // ends the tests but not the clean-up.
    let mut watcher = Command::new("bash");
    watcher
        .arg("-c")
        .arg(r#"trap '' HUP INT; cat >/dev/null; exec bash "$1" stop "$2""#)
        .arg("waba-monitor-pg-watcher")
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        watcher.process_group(0);
    }
    let mut child = watcher
        .spawn()
        .map_err(|e| format!("cannot run bash for the server's watcher: {e}"))?;
    let watch = child
        .stdin
        .take()
        .ok_or("the watcher's stdin was not piped")?;
    // The child is not waited for: it outlives us (a zombie until then, reaped by init after).
    drop(child);

    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout.trim();
    if !out.status.success() || !url.starts_with("postgres://") {
        return Err(format!(
            "{} start {} failed ({}):\n{}{}",
            script.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        ));
    }
    Ok(Private {
        url: url.to_owned(),
        _watch: watch,
    })
}

/// Creates a new, empty database on the test server and returns its URL (the server URL with
/// the database name as its path).
///
/// The name is `label` lowercased with anything but `[a-z0-9_]` turned into `_`, then the process
/// id and a counter, at most 63 characters (the label is shortened): unique within the server as
/// long as processes do not share a pid.
///
/// # Panics
///
/// When there is no server, or `psql` cannot create the database.
pub fn fresh_database(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = database_name(label, std::process::id(), n);
    let server = server_url();
    psql(&server, &format!("CREATE DATABASE \"{name}\""));
    with_database(&server, &name)
}

/// The URL of the database that stands for `key` (an SQLite file path, say) in this process:
/// created empty by the first call with that key, the same URL for every later call, so that
/// reopening "the same file" reopens the same database.
///
/// # Panics
///
/// As [`fresh_database`].
pub fn database_for_key(key: &str) -> String {
    static DATABASES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let databases = DATABASES.get_or_init(|| Mutex::new(HashMap::new()));
    // The lock is held while creating, so that two threads with one key get one database. A
    // panic while creating poisons nothing that matters: the map is still consistent.
    let mut databases = databases
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(url) = databases.get(key) {
        return url.clone();
    }
    // A label from the key's last part (a file name), to recognise the database by.
    let label = key
        .rsplit(['/', '\\'])
        .find(|part| !part.is_empty())
        .unwrap_or("key");
    let url = fresh_database(&format!("k_{label}"));
    databases.insert(key.to_owned(), url.clone());
    url
}

/// `url` without its password, and the password (percent-decoded), if it has one:
/// `postgres://u:p%40ss@h:5432/db` gives (`postgres://u@h:5432/db`, `Some("p@ss")`). A URL
/// without a password (or without `scheme://`) comes back as it is, with `None`.
pub fn split_password(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_owned(), None);
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return (url.to_owned(), None);
    };
    let stripped = format!(
        "{}{}{}",
        &url[..scheme_end],
        &userinfo[..colon],
        &rest[at..]
    );
    (stripped, Some(percent_decode(&userinfo[colon + 1..])))
}

/// `%XX` sequences decoded (a malformed one is kept as it is).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s
                .get(i + 1..i + 3)
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with its path (the database name) replaced by `database`; a query string is kept.
fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = scheme_end + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let tail = &url[authority_end..];
    let query = tail.find(['?', '#']).map_or("", |i| &tail[i..]);
    format!("{}/{database}{query}", &url[..authority_end])
}

/// A database name from `label`, `pid` and `n`: `[a-z0-9_]`, starting with a letter or `_`, at
/// most 63 characters (the suffix is kept whole, the label shortened).
fn database_name(label: &str, pid: u32, n: u64) -> String {
    let mut base: String = label
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        base.insert(0, 't');
    }
    let suffix = format!("_{pid}_{n}");
    base.truncate(MAX_NAME.saturating_sub(suffix.len()));
    base + &suffix
}

/// The `psql` to run: from PATH, else the newest `/usr/lib/postgresql/*/bin/psql`, else plain
/// `psql` (whose failure to start then says so).
fn psql_program() -> &'static Path {
    static PSQL: OnceLock<PathBuf> = OnceLock::new();
    PSQL.get_or_init(|| {
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("psql"))
                .find(|p| p.is_file())
        });
        on_path
            .or_else(|| {
                let mut found: Vec<((u32, u32), PathBuf)> =
                    std::fs::read_dir("/usr/lib/postgresql")
                        .ok()?
                        .filter_map(|entry| {
                            let entry = entry.ok()?;
                            // "15", "9.6": (15, 0), (9, 6), in version order.
                            let name = entry.file_name().into_string().ok()?;
                            let (major, minor) = name.split_once('.').unwrap_or((&name, "0"));
                            let version = (major.parse().ok()?, minor.parse().ok()?);
                            let psql = entry.path().join("bin/psql");
                            psql.is_file().then_some((version, psql))
                        })
                        .collect();
                found.sort();
                found.pop().map(|(_, p)| p)
            })
            .unwrap_or_else(|| PathBuf::from("psql"))
    })
}

/// Runs one SQL command with `psql` against the database of `url`, stopping at the first error.
/// The password goes in `PGPASSWORD`, not on the command line.
///
/// # Panics
///
/// When `psql` cannot be run or the command fails: with psql's error output.
fn psql(url: &str, sql: &str) -> String {
    let (url_without_password, password) = split_password(url);
    let mut cmd = Command::new(psql_program());
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(&url_without_password)
        .arg("-c")
        .arg(sql)
        .stdin(Stdio::null());
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} for the test database: {e}",
            psql_program().display()
        )
    });
    assert!(
        out.status.success(),
        "psql {url_without_password} -c {sql:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_starts_and_answers() {
        let url = server_url();
        assert!(url.starts_with("postgres://"), "{url}");
        assert_eq!(psql(&url, "select 1"), "1");
        // Once per process: the same server again.
        assert_eq!(server_url(), url);
    }

    #[test]
    fn fresh_databases_are_reachable_empty_and_distinct() {
        let a = fresh_database("Fresh Database: A!");
        let b = fresh_database("Fresh Database: A!");
        assert_ne!(a, b);
        for url in [&a, &b] {
            let name = url.rsplit('/').next().expect("a database URL has a path");
            assert_eq!(psql(url, "select current_database()"), name);
            assert_eq!(psql(url, "select 1"), "1");
            assert_eq!(
                psql(
                    url,
                    "select count(*) from information_schema.tables where table_schema = 'public'"
                ),
                "0"
            );
        }
        // A table in one is not in the other.
        psql(&a, "create table only_in_a (x bigint)");
        assert_eq!(
            psql(
                &b,
                "select count(*) from pg_tables where tablename = 'only_in_a'"
            ),
            "0"
        );
    }

    #[test]
    fn database_for_key_is_stable_per_key() {
        let key = "/tmp/some dir/waba-monitor.db";
        let first = database_for_key(key);
        psql(&first, "create table marker (x bigint)");
        let again = database_for_key(key);
        assert_eq!(first, again);
        assert_eq!(psql(&again, "select count(*) from marker"), "0");
        let other = database_for_key("/tmp/other/waba-monitor.db");
        assert_ne!(first, other);
        assert_eq!(psql(&other, "select 1"), "1");
    }

    #[test]
    fn database_names_are_sanitized_and_bounded() {
        assert_eq!(database_name("My-Test.db", 42, 7), "my_test_db_42_7");
        assert_eq!(database_name("1abc", 1, 0), "t1abc_1_0");
        assert_eq!(database_name("", 1, 0), "t_1_0");
        assert_eq!(database_name("Ünïcode", 1, 0), "_n_code_1_0");
        let long = database_name(&"x".repeat(200), 4_194_304, u64::MAX);
        assert_eq!(long.len(), MAX_NAME);
        assert!(long.ends_with(&format!("_4194304_{}", u64::MAX)), "{long}");
    }

    #[test]
    fn split_password_takes_the_password_out() {
        assert_eq!(
            split_password("postgres://waba_test:s3cret@127.0.0.1:5432/postgres"),
            (
                "postgres://waba_test@127.0.0.1:5432/postgres".to_owned(),
                Some("s3cret".to_owned())
            )
        );
        assert_eq!(
            split_password("postgresql://u:p%40ss%3Aw%+1%@db.example:1/x?sslmode=require"),
            (
                "postgresql://u@db.example:1/x?sslmode=require".to_owned(),
                Some("p@ss:w%+1%".to_owned())
            )
        );
        assert_eq!(
            split_password("postgres://u:@h/db"),
            ("postgres://u@h/db".to_owned(), Some(String::new()))
        );
        for same in [
            "postgres://u@h:5432/db",
            "postgres://h:5432/db",
            "postgres://h/db?user=a:b@c",
            "not a url",
        ] {
            assert_eq!(split_password(same), (same.to_owned(), None), "{same}");
        }
    }

    #[test]
    fn with_database_replaces_the_path() {
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres", "abc"),
            "postgres://u:p@h:1/abc"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1", "abc"),
            "postgres://u:p@h:1/abc"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres?sslmode=disable", "abc"),
            "postgres://u:p@h:1/abc?sslmode=disable"
        );
    }
}
