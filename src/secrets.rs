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
    #[error("could not read secret file {path}: {reason}")]
    FileUnreadable { path: PathBuf, reason: String },
    #[error(
        "secret file {0} is readable by group or others; run `chmod 600 {0}` (systemd's LoadCredential= does this for you)"
    )]
    FileTooOpen(PathBuf),
    #[error("secret file {0} is empty")]
    FileEmpty(PathBuf),
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
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_owned())),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            SecretSource::File(path) => read_secret_file(path),
        }
    }
}

fn read_secret_file(path: &Path) -> Result<SecretString, SecretError> {
    let unreadable = |e: std::io::Error| SecretError::FileUnreadable {
        path: path.to_owned(),
        reason: e.kind().to_string(),
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // systemd's credentials are private to the service whatever their mode says: newer
        // systemd grants access through an ACL and shows them as 0440.
        let from_systemd = std::env::var_os("CREDENTIALS_DIRECTORY")
            .is_some_and(|dir| path.starts_with(std::path::Path::new(&dir)));
        if meta.permissions().mode() & 0o077 != 0 && !from_systemd {
            return Err(SecretError::FileTooOpen(path.to_owned()));
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
        assert!(matches!(err, SecretError::FileTooOpen(_)));
        assert!(!err.to_string().contains("s3cret"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let secret = SecretSource::File(path).load().expect("readable");
        assert_eq!(secret.expose_secret(), "s3cret-value");
        assert!(!format!("{secret:?}").contains("s3cret"));
    }

    #[test]
    fn a_missing_env_var_is_named_in_the_error() {
        let err = SecretSource::Env("WABA_MONITOR_TEST_SURELY_UNSET".into())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("WABA_MONITOR_TEST_SURELY_UNSET"));
    }
}
