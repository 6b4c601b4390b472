//! Reading the config file itself: a regular file of at most 4 MiB of UTF-8 text, or one
//! `(file)` problem that says what the path is instead.

use std::path::Path;

use super::DEFAULT_CONFIG_PATH;
use super::problems::{ConfigError, Problem};

/// The most a config file may hold: the commented reference is a few KB.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads the config file as UTF-8 text. Its type is checked from the metadata before it is
/// opened (a FIFO would wait for a writer forever); every failure is one `(file)` problem that
/// says what the path is and how to fix it.
pub(super) fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let refuse = |line: Option<usize>, message: String, fix: String| ConfigError {
        path: path.to_owned(),
        problems: vec![Problem {
            line,
            key: "(file)".into(),
            message,
            fix: Some(fix),
        }],
    };
    let cannot_read = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => refuse(
            None,
            "the config file does not exist".into(),
            format!(
                "create it (the commented reference is monitor.toml in the source tree) or pass --config PATH; default {DEFAULT_CONFIG_PATH}"
            ),
        ),
        _ => refuse(
            None,
            format!("cannot read the config file: {e}"),
            "make it readable by the user waba-monitor runs as, or pass --config PATH".into(),
        ),
    };
    let not_a_file = |kind: &str| {
        refuse(
            None,
            format!("this is {kind}, not a regular file; it is not read"),
            format!(
                "pass --config with the path of the config file itself (default {DEFAULT_CONFIG_PATH}); a symlink to a file is fine"
            ),
        )
    };
    let meta = std::fs::metadata(path).map_err(cannot_read)?;
    if !meta.is_file() {
        return Err(not_a_file(crate::secrets::file_kind(meta.file_type())));
    }
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let opened = file.metadata().map_err(cannot_read)?;
    if !opened.is_file() {
        return Err(not_a_file(crate::secrets::file_kind(opened.file_type())));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(refuse(
            None,
            format!(
                "the file is larger than {} MiB; a config file is a few KB",
                MAX_CONFIG_BYTES / 1024 / 1024
            ),
            "pass --config with the path of the config file (see monitor.toml in the source tree)"
                .into(),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        refuse(
            Some(line),
            format!("the file is not UTF-8 text: byte {at} (on line {line}) is not valid UTF-8"),
            "save it as UTF-8 (an editor's \"encoding\" setting, or `iconv -f latin1 -t utf-8`); TOML files are UTF-8".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::tests::located;
    use crate::config::{Config, ConfigError};

    #[test]
    fn a_config_file_that_is_not_utf8_is_named_so_with_the_line_of_the_bad_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("monitor.toml");
        // A Latin-1 "é" in a comment on line 3, at byte 32 of the file (counted from 0).
        let mut bytes = b"[daemon]\ndatabase = \"x.db\"\n# caf".to_vec();
        bytes.extend_from_slice(b"\xe9 monitor\n");
        std::fs::write(&path, &bytes).expect("write");
        let e = Config::load(&path).unwrap_err();
        assert_eq!(located(&e), [("(file)".to_owned(), Some(3))], "{e}");
        let p = &e.problems[0];
        assert!(
            p.message.contains("not UTF-8") && p.message.contains("byte 32"),
            "{p:?}"
        );
        let fix = p.fix.clone().unwrap_or_default();
        assert!(fix.contains("UTF-8") && !fix.contains("create it"), "{fix}");
    }

    /// [`Config::load`] on a thread, failing (not hanging) after 10 s.
    fn load_within_10s(path: PathBuf) -> Result<Config, ConfigError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Config::load(&path));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("loading the config hung"))
    }

    #[test]
    fn a_config_path_that_is_a_folder_or_a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("monitor.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        for (path, what) in [
            (dir.path().to_owned(), "is a directory"),
            (fifo, "is a FIFO (named pipe)"),
        ] {
            let e = load_within_10s(path.clone()).unwrap_err();
            let p = &e.problems[0];
            assert!(p.message.contains(what), "{p:?}");
            let fix = p.fix.clone().unwrap_or_default();
            assert!(!fix.contains("create it"), "{fix}");
            assert!(fix.contains("--config"), "{fix}");
        }
    }
}
