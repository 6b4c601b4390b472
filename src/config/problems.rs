//! What is wrong with a config file: [`Problem`] (line, key, message, fix), [`ConfigError`]
//! (all of them, printed together), and [`Problems`], the list the readers and validators add
//! to, with the helpers that turn byte offsets into lines and keys.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with the config file, located and with a fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
    pub fix: Option<String>,
}

/// Everything wrong with a config file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {n} problem{}:",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            let loc = match p.line {
                Some(l) => format!("{}:{l}", self.path.display()),
                None => self.path.display().to_string(),
            };
            write!(f, "  {loc}: `{}`: {}", p.key, p.message)?;
            if let Some(fix) = &p.fix {
                write!(f, "\n      fix: {fix}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

pub(super) struct Problems<'a> {
    pub(super) src: &'a str,
    pub(super) list: Vec<Problem>,
    /// Also read every secret (what `run` does before it starts).
    pub(super) check_secrets: bool,
    /// Unreadable secrets, kept apart so that they do not stop a source from being validated
    /// (its quota budget, say); merged into `list` at the end.
    pub(super) secrets: Vec<Problem>,
}

impl Problems<'_> {
    /// Whether a problem was already reported for `key` (a wrong type leaves the key unset;
    /// it must not be reported again as missing).
    pub(super) fn has(&self, key: &str) -> bool {
        self.list.iter().any(|p| p.key == key)
    }

    /// Whether any problem concerns a key under `prefix` (e.g. `meta[0].`).
    pub(super) fn has_under(&self, prefix: &str) -> bool {
        self.list.iter().any(|p| p.key.starts_with(prefix))
    }

    pub(super) fn add(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: String,
        fix: &str,
    ) {
        self.list.push(Problem {
            line: span.map(|s| line_of(self.src, s.start)),
            key: key.to_owned(),
            message,
            fix: (!fix.is_empty()).then(|| fix.to_owned()),
        });
    }
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// For a TOML syntax or type error, names the key from the text around the error: the nearest
/// `key =` on the error's line and the table header above it.
pub(super) fn key_at(src: &str, offset: usize) -> String {
    let line_no = line_of(src, offset);
    let lines: Vec<&str> = src.lines().collect();
    let line = lines.get(line_no - 1).copied().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('['));
    let table = lines[..line_no.saturating_sub(1).min(lines.len())]
        .iter()
        .rev()
        .chain(std::iter::once(&line))
        .find_map(|l| {
            let t = l.trim();
            t.starts_with('[')
                .then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        });
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "(top level)".to_owned(),
    }
}

/// The last part of a dotted key: `meta[0].wabas` → `wabas`.
pub(super) fn last_key(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::tests::located;

    #[test]
    fn syntax_and_type_errors_name_the_key_and_line() {
        let src = "[daemon]\ndatabase = \"x.db\"\n\n[[meta]]\nname = \"m\"\naccess_token_env = \"T\"\nwabas = \"123\"\n";
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        assert_eq!(located(&e), [("meta[0].wabas".to_owned(), Some(7))], "{e}");
        let src = "[daemon]\ndatabase = \"x.db\n";
        let e = Config::from_toml(Path::new("m.toml"), src).unwrap_err();
        assert_eq!(e.problems[0].key, "daemon.database");
        assert_eq!(e.problems[0].line, Some(2));
    }
}
