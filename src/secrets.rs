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
    #[error("secret file {} is {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    /// A value no server would take as a credential (reasons never quote the value).
    #[error("secret file {} {reason}", path.display())]
    FileMalformed { path: PathBuf, reason: Malformed },
    #[error("environment variable {name} {reason}")]
    EnvMalformed { name: String, reason: Malformed },
}

/// What is wrong with a secret's value, in words that quote none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// More than one line once surrounding whitespace is trimmed.
    Lines(usize),
    /// A control character (a tab, an escape, a carriage return inside the value, U+0080–U+009F
    /// ...) at this byte offset of the file or variable: it cannot go into an HTTP header.
    Control(usize),
    /// Not UTF-8: the first bad byte's offset.
    NotUtf8(usize),
    /// Longer than [`MAX_SECRET_BYTES`].
    TooLarge,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Lines(n) => write!(f, "has {n} lines; a secret is one line"),
            Malformed::Control(at) => write!(
                f,
                "contains a control character at byte {at}; a secret is printable text on one line"
            ),
            Malformed::NotUtf8(at) => write!(f, "is not UTF-8 text (byte {at} is not valid UTF-8)"),
            Malformed::TooLarge => write!(
                f,
                "is larger than {} KiB; a secret is one short line",
                MAX_SECRET_BYTES / 1024
            ),
        }
    }
}

/// The most a secret file may hold: a token is a few hundred bytes.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Checks a secret's text as read (a file's whole content, a variable's value): surrounding
/// whitespace (a trailing newline) is allowed and trimmed; what remains must be one line
/// without control characters, so it can go into an HTTP header (`Authorization: Bearer ...`)
/// or an SMTP login as it is. Offsets are into `text`. Returns the trimmed value.
pub fn validate_secret_text(text: &str) -> Result<&str, Malformed> {
    let trimmed = text.trim();
    let start = text.len() - text.trim_start().len();
    let lines = trimmed.split('\n').count();
    if lines > 1 {
        return Err(Malformed::Lines(lines));
    }
    if let Some((at, _)) = trimmed.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Malformed::Control(start + at));
    }
    Ok(trimmed)
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
            SecretError::NotAFile { path, .. } => format!(
                "point the key at a regular file holding only the secret (a symlink to one is fine, as systemd's credentials are), not at {}",
                path.display()
            ),
            SecretError::FileMalformed { path, .. } => format!(
                "write only the secret into {}, on one line (a final newline is fine), and keep it private (mode 600)",
                path.display()
            ),
            SecretError::EnvMalformed { name, .. } => format!(
                "export {name} holding only the secret, on one line, without control characters"
            ),
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
                Ok(v) if !v.trim().is_empty() => match validate_secret_text(&v) {
                    Ok(value) => SecretString::from(value.to_owned()),
                    Err(reason) => {
                        return Err(SecretError::EnvMalformed {
                            name: name.clone(),
                            reason,
                        });
                    }
                },
                Err(std::env::VarError::NotUnicode(raw)) => {
                    use std::os::unix::ffi::OsStrExt;
                    let at = std::str::from_utf8(raw.as_bytes())
                        .err()
                        .map_or(0, |e| e.valid_up_to());
                    return Err(SecretError::EnvMalformed {
                        name: name.clone(),
                        reason: Malformed::NotUtf8(at),
                    });
                }
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

/// The key of `[daemon] secret_key_file`: XChaCha20-Poly1305 over what the database keeps
/// encrypted (the fleet API's per-account access tokens). The file holds 32 random bytes as 64
/// hex characters (`openssl rand -hex 32`), private like every secret file.
pub struct SecretKey {
    cipher: chacha20poly1305::XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// Bytes of the random nonce stored in front of each ciphertext.
const NONCE_LEN: usize = 24;

impl SecretKey {
    /// Reads the key file (the rules of every secret file: private, regular, one line) and
    /// decodes it.
    pub fn load(source: &SecretSource) -> Result<SecretKey, String> {
        use secrecy::ExposeSecret;
        let text = source.load().map_err(|e| e.to_string())?;
        Self::from_hex(text.expose_secret()).map_err(|why| format!("{} {why}", source.describe()))
    }

    /// A key from its 64 hex characters; the error quotes none of them.
    pub fn from_hex(hex: &str) -> Result<SecretKey, String> {
        use chacha20poly1305::aead::KeyInit;
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "is not a key: it must hold 64 hex characters (32 random bytes), it holds {} characters{}",
                hex.chars().count(),
                if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ""
                } else {
                    " that are not all hex digits"
                }
            ));
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        let cipher = chacha20poly1305::XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| "is not a 32-byte key".to_owned())?;
        Ok(SecretKey { cipher })
    }

    /// `plain` encrypted and bound to `context` (e.g. the id of the row it belongs to, so a
    /// ciphertext moved to another row does not open): a fresh random nonce, then the
    /// ciphertext and its tag.
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, Generate, Payload};
        let nonce = chacha20poly1305::XNonce::generate();
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        out
    }

    /// What [`SecretKey::seal`] sealed with this key and `context`; `None` for another key,
    /// another context or damaged bytes.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::{Aead, Payload};
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = chacha20poly1305::XNonce::try_from(nonce).ok()?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .ok()
    }
}

/// What a file that is not a regular file is, for messages ("a directory", "a FIFO (named
/// pipe)", ...).
pub(crate) fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

fn read_secret_file(path: &Path) -> Result<SecretString, SecretError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => SecretError::FileMissing(path.to_owned()),
        // The io error's text ("Permission denied (os error 13)") carries no secret.
        _ => SecretError::FileUnreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    };
    // The type first, from the metadata (a symlink is followed): opening a FIFO would wait for
    // a writer forever, reading a device would never end.
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(meta.file_type()),
        });
    }
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
    let file = std::fs::File::open(path).map_err(unreadable)?;
    // Still a regular file once open (it could have been swapped in between).
    let opened = file.metadata().map_err(unreadable)?;
    if !opened.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(opened.file_type()),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    let malformed = |reason| SecretError::FileMalformed {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(malformed(Malformed::TooLarge));
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|e| malformed(Malformed::NotUtf8(e.valid_up_to())))?;
    let value = validate_secret_text(text).map_err(malformed)?;
    if value.is_empty() {
        return Err(SecretError::FileEmpty(path.to_owned()));
    }
    Ok(SecretString::from(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let key = SecretKey::from_hex(&"ab".repeat(32)).expect("key");
        let other = SecretKey::from_hex(&"cd".repeat(32)).expect("key");
        let sealed = key.seal(b"EAAtoken-value", b"123");
        assert!(!sealed.windows(5).any(|w| w == b"EAAto"), "ciphertext");
        assert_eq!(
            key.open(&sealed, b"123").as_deref(),
            Some(&b"EAAtoken-value"[..])
        );
        assert_eq!(key.open(&sealed, b"124"), None, "another row");
        assert_eq!(other.open(&sealed, b"123"), None, "another key");
        assert_ne!(key.seal(b"x", b"1"), key.seal(b"x", b"1"), "fresh nonce");
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(31)] {
            let why = SecretKey::from_hex(bad).expect_err(bad);
            assert!(why.contains("64 hex characters"), "{why}");
        }
    }

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

    /// A private file holding `content`.
    fn private_file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    #[test]
    fn a_secret_file_of_two_lines_is_refused_naming_the_file_and_the_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (content, lines) in [
            (&b"s3cret-one\ns3cret-two\n"[..], 2),
            (b"s3cret-one\r\ns3cret-two\r\n", 2),
            (b"\ns3cret-one\n\ns3cret-two\nthree\n\n", 4),
        ] {
            let path = private_file(&dir, "token", content);
            let err = SecretSource::File(path.clone()).load().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(&format!("has {lines} lines")), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(
                err.fix().contains(&path.display().to_string()),
                "{}",
                err.fix()
            );
        }
    }

    #[test]
    fn a_control_character_in_a_secret_file_is_refused_with_its_byte_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (content, at) in [
            (&b"s3cret\x07value\n"[..], 6),
            (b"  s3cret\tvalue", 8),
            (b"s3cret\rvalue\n", 6),
            (b"\x00s3cret", 0),
            (b"s3cret\x7f", 6),
            ("s3cret\u{85}value".as_bytes(), 6),
        ] {
            let path = private_file(&dir, "token", content);
            let text = SecretSource::File(path.clone())
                .load()
                .unwrap_err()
                .to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(
                text.contains(&format!("control character at byte {at}")),
                "{content:?}: {text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    #[test]
    fn surrounding_whitespace_and_one_trailing_newline_are_still_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for content in [
            &b"s3cret-value\n"[..],
            b"s3cret-value\r\n",
            b"  s3cret-value \n\n",
        ] {
            let path = private_file(&dir, "token", content);
            let secret = SecretSource::File(path).load().expect("one line");
            assert_eq!(secret.expose_secret(), "s3cret-value");
        }
    }

    #[test]
    fn a_secret_file_that_is_not_utf8_is_refused_without_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = private_file(&dir, "token", b"s3cret\xff\xfevalue");
        let text = SecretSource::File(path.clone())
            .load()
            .unwrap_err()
            .to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains("not UTF-8") && text.contains("byte 6"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }

    /// Runs `load` on a thread, failing (not hanging) if it has not returned after 10 s.
    fn load_within_10s(path: PathBuf) -> Result<SecretString, SecretError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(SecretSource::File(path).load());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("loading the secret hung"))
    }

    #[test]
    fn a_fifo_or_a_folder_as_the_secret_file_is_refused_without_opening_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("token-fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let folder = dir.path().join("token-dir");
        std::fs::create_dir(&folder).expect("mkdir");
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        for (path, what) in [(fifo, "a FIFO"), (folder, "a directory")] {
            let err = load_within_10s(path.clone()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(
                text.contains(what) && text.contains("not a regular file"),
                "{text}"
            );
            assert!(err.fix().contains("regular file"), "{}", err.fix());
        }
    }

    #[test]
    fn a_symlink_to_a_private_regular_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = private_file(&dir, "real-token", b"s3cret-value\n");
        let link = dir.path().join("token");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let secret = load_within_10s(link).expect("readable");
        assert_eq!(secret.expose_secret(), "s3cret-value");
    }

    #[test]
    fn a_missing_env_var_is_named_in_the_error() {
        let err = SecretSource::Env("WABA_MONITOR_TEST_SURELY_UNSET".into())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("WABA_MONITOR_TEST_SURELY_UNSET"));
    }
}
