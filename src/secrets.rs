//! Where secrets come from: an environment variable or a file (systemd `LoadCredential=`).
//!
//! Secrets are held as [`SecretString`] from the moment they are read, so no `Debug`, log line
//! or error message can print them. Error messages name the variable or the file, never a value.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// Where one secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (or is empty)")]
    EnvMissing(String),
    #[error("secret file {} does not exist", .0.display())]
    FileMissing(PathBuf),
    #[error("could not read secret file {}: {reason}", path.display())]
    FileUnreadable { path: PathBuf, reason: String },
    #[error(
        "secret file {} has mode {mode:03o}, readable by group or others; run `chmod 600 {}` (systemd's LoadCredential= does this for you)",
        path.display(),
        path.display()
    )]
    FileTooOpen { path: PathBuf, mode: u32 },
    #[error("secret file {} is empty", .0.display())]
    FileEmpty(PathBuf),
}

impl SecretError {
    /// What to do about it, in one line (for `check-config`).
    pub fn fix(&self) -> String {
        match self {
            SecretError::EnvMissing(name) => format!(
                "export {name} in the daemon's environment; under systemd prefer the *_file key with LoadCredential= (never Environment=)"
            ),
            SecretError::FileMissing(path) => format!(
                "create it holding only the secret, private to the daemon's user: `install -m 600 /dev/null {0}`, then write the secret into {0}; or point the key at the right file",
                path.display()
            ),
            SecretError::FileUnreadable { path, .. } => format!(
                "make {} readable by the user the daemon runs as, and by nobody else (mode 600)",
                path.display()
            ),
            SecretError::FileTooOpen { path, .. } => format!("chmod 600 {}", path.display()),
            SecretError::FileEmpty(path) => {
                format!("write the secret into {} (mode 600)", path.display())
            }
        }
    }
}

/// How a secret looks from here, when it is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretState {
    /// Read now.
    Readable,
    /// A systemd credential (`/run/credentials/<unit>/...`) that only exists inside the service:
    /// systemd hands it over at start (and refuses to start the unit when its source file is
    /// missing), so it cannot be checked from outside.
    ProvidedBySystemd,
}

/// The folder systemd puts a unit's credentials in (`LoadCredential=`).
const SYSTEMD_CREDENTIALS: &str = "/run/credentials/";

/// Whether `path` is in `$CREDENTIALS_DIRECTORY`, i.e. we run inside its unit.
fn in_own_credentials(path: &Path) -> bool {
    std::env::var_os("CREDENTIALS_DIRECTORY").is_some_and(|dir| path.starts_with(Path::new(&dir)))
}

/// Whether `path` is a systemd credential: in our own `$CREDENTIALS_DIRECTORY` or under
/// `/run/credentials/`. These are private to the service whatever their mode says: newer
/// systemd grants access through an ACL and shows them as 0440.
fn is_systemd_credential(path: &Path) -> bool {
    in_own_credentials(path) || path.starts_with(SYSTEMD_CREDENTIALS)
}

impl SecretSource {
    /// A short description for summaries: `env WABA_MONITOR_META_TOKEN` or `file /run/...`.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("env {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }

    /// Reads the secret now. Surrounding whitespace (a trailing newline in a file) is dropped.
    pub fn load(&self) -> Result<SecretString, SecretError> {
        let secret = match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => SecretString::from(v.trim().to_owned()),
                _ => return Err(SecretError::EnvMissing(name.clone())),
            },
            SecretSource::File(path) => read_secret_file(path)?,
        };
        // Known from now on, so that an upstream echoing it back cannot carry it anywhere.
        crate::redact::register(&secret);
        Ok(secret)
    }

    /// Whether the daemon could read this secret at start, without keeping it: what `run`
    /// refuses, `check-config` refuses. A systemd credential outside its service (a missing
    /// `/run/credentials/...` file while `$CREDENTIALS_DIRECTORY` is not ours) is not an
    /// error: the service receives it at start.
    pub fn check(&self) -> Result<SecretState, SecretError> {
        match self.load() {
            Ok(_) => Ok(SecretState::Readable),
            Err(SecretError::FileMissing(path) | SecretError::FileUnreadable { path, .. })
                if path.starts_with(SYSTEMD_CREDENTIALS) && !in_own_credentials(&path) =>
            {
                Ok(SecretState::ProvidedBySystemd)
            }
            Err(e) => Err(e),
        }
    }
}

fn read_secret_file(path: &Path) -> Result<SecretString, SecretError> {
    let unreadable = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => SecretError::FileMissing(path.to_owned()),
        // The io error's text ("Permission denied (os error 13)") carries no secret.
        _ => SecretError::FileUnreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 && !is_systemd_credential(path) {
            return Err(SecretError::FileTooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SecretError::FileEmpty(path.to_owned()));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_secret_file_open_to_others_is_refused_and_a_private_one_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-value\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SecretSource::File(path.clone()).load().unwrap_err();
        assert!(matches!(err, SecretError::FileTooOpen { mode: 0o644, .. }));
        assert!(!err.to_string().contains("s3cret"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let secret = SecretSource::File(path).load().expect("readable");
        assert_eq!(secret.expose_secret(), "s3cret-value");
        assert!(!format!("{secret:?}").contains("s3cret"));
    }

    #[test]
    fn a_too_open_file_is_reported_with_its_mode_and_the_command_that_fixes_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-value\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let text = SecretSource::File(path.clone())
            .load()
            .unwrap_err()
            .to_string();
        assert!(text.contains("mode 644"), "{text}");
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn a_missing_file_is_named_in_plain_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("smtp-password");
        let text = SecretSource::File(path.clone())
            .load()
            .unwrap_err()
            .to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("does not exist"), "{text}");
        assert!(!text.contains("entity not found"), "{text}");
    }

    #[test]
    fn a_systemd_credential_of_another_unit_is_provided_at_its_start_not_an_error() {
        let path = PathBuf::from("/run/credentials/waba-monitor-test.service/surely-missing");
        assert_eq!(
            SecretSource::File(path).check().expect("not an error"),
            SecretState::ProvidedBySystemd
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let err = SecretSource::File(dir.path().join("missing"))
            .check()
            .unwrap_err();
        assert!(matches!(err, SecretError::FileMissing(_)));
    }

    #[test]
    fn a_missing_env_var_is_named_in_the_error() {
        let err = SecretSource::Env("WABA_MONITOR_TEST_SURELY_UNSET".into())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("WABA_MONITOR_TEST_SURELY_UNSET"));
    }
}
