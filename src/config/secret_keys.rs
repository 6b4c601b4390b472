//! The secret keys (`*_env`, `*_file`): one set of rules for every secret, and, for
//! [`Config::load_for_start`](super::Config::load_for_start), each secret read as `run` reads it
//! before it starts, a failure being a problem of the key that names it.

use std::path::Path;

use toml::Spanned;

use super::Span;
use super::problems::{Problem, Problems, last_key, line_of};
use crate::secrets::SecretSource;

/// Whether a secret key must be present.
pub(super) enum Need<'a> {
    Optional,
    /// Missing both keys is a problem at `span`, with this message and fix.
    Required {
        span: std::ops::Range<usize>,
        what: &'a str,
        fix: &'a str,
    },
}

/// A secret configured as `*_env` (the NAME of an environment variable) or `*_file` (a path),
/// never both. One place for the rules every secret key follows.
pub(super) fn secret_source(
    env: &Option<Spanned<String>>,
    file: &Option<Spanned<String>>,
    (env_key, file_key): (&str, &str),
    base_dir: &Path,
    need: Need<'_>,
    p: &mut Problems<'_>,
) -> Option<SecretSource> {
    match (env, file) {
        (Some(_), Some(f)) => {
            p.add(
                Some(f.span()),
                file_key,
                format!(
                    "both {} and {} are set",
                    last_key(env_key),
                    last_key(file_key)
                ),
                "keep one of them",
            );
            None
        }
        (Some(e), None) => {
            let name = e.get_ref().trim();
            let source = SecretSource::Env(name.to_owned());
            let is_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !is_name || name.starts_with("EAA") {
                p.add(
                    Some(e.span()),
                    env_key,
                    "this must be the NAME of an environment variable, not the secret itself".into(),
                    &format!(
                        "write e.g. {} = \"WABA_MONITOR_TOKEN\" and export the secret in that variable",
                        last_key(env_key)
                    ),
                );
                None
            } else {
                check_secret(source, e.span(), env_key, p)
            }
        }
        (None, Some(f)) if f.get_ref().trim().is_empty() => {
            p.add(
                Some(f.span()),
                file_key,
                "empty path".into(),
                "point it at a file readable only by the daemon",
            );
            None
        }
        (None, Some(f)) => check_secret(
            SecretSource::File(base_dir.join(f.get_ref())),
            f.span(),
            file_key,
            p,
        ),
        (None, None) => {
            if let Need::Required { span, what, fix } = need {
                p.add(Some(span), env_key, what.to_owned(), fix);
            }
            None
        }
    }
}

/// When asked to, reads the secret as `run` would at start; a failure is a problem of `key`.
fn check_secret(
    source: SecretSource,
    span: Span,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<SecretSource> {
    if p.check_secrets
        && let Err(e) = source.check()
    {
        p.secrets.push(Problem {
            line: Some(line_of(p.src, span.start)),
            key: key.to_owned(),
            message: e.to_string(),
            fix: Some(e.fix()),
        });
    }
    Some(source)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::located;

    #[test]
    fn with_secrets_checked_each_unreadable_one_is_a_problem_of_its_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken").expect("write");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let path = dir.path().join("monitor.toml");
        std::fs::write(
            &path,
            "[daemon]\napi_token_env = \"WABA_MONITOR_TEST_SURELY_UNSET_API\"\n\n[[meta]]\nname = \"m\"\naccess_token_file = \"token\"\nwabas = [\"1\"]\n",
        )
        .expect("write");
        assert!(Config::load(&path).is_ok(), "secrets are not read by load");
        let e = Config::load_for_start(&path).unwrap_err();
        assert_eq!(
            located(&e),
            [
                ("daemon.api_token_env".to_owned(), Some(2)),
                ("meta[0].access_token_file".to_owned(), Some(6))
            ]
        );
        let text = e.to_string();
        assert!(text.contains("mode 640"), "{text}");
        assert!(!text.contains("t0ken"), "{text}");
    }

    #[test]
    fn with_secrets_checked_a_secret_of_two_lines_or_with_a_control_character_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let private = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            path
        };
        let meta = private("meta-token", "t0ken-one\nt0ken-two\n");
        let bsp = private("bsp-token", "t0ken\u{1b}[0m\n");
        let api = private("api-token", "t0ken\tx");
        let smtp = private("smtp-password", "pa55word\r\nsecond\r\n");
        let path = dir.path().join("monitor.toml");
        std::fs::write(
            &path,
            "[daemon]\napi_token_file = \"api-token\"\n\n[[meta]]\nname = \"m\"\naccess_token_file = \"meta-token\"\nwabas = [\"1\"]\n\n[[bsp]]\nkind = \"finedu\"\nname = \"b\"\ntoken_file = \"bsp-token\"\n\n[email]\nsmtp_host = \"smtp.example.com\"\nusername = \"u\"\npassword_file = \"smtp-password\"\nfrom = \"m@example.com\"\nto = [\"o@example.com\"]\n",
        )
        .expect("write");
        assert!(Config::load(&path).is_ok(), "secrets are not read by load");
        let e = Config::load_for_start(&path).unwrap_err();
        assert_eq!(
            located(&e),
            [
                ("daemon.api_token_file".to_owned(), Some(2)),
                ("meta[0].access_token_file".to_owned(), Some(6)),
                ("bsp[0].token_file".to_owned(), Some(12)),
                ("email.password_file".to_owned(), Some(17)),
            ]
        );
        let text = e.to_string();
        for (file, reason) in [
            (&api, "contains a control character at byte 5"),
            (&meta, "has 2 lines"),
            (&bsp, "contains a control character at byte 5"),
            (&smtp, "has 2 lines"),
        ] {
            let named = format!("{} {reason}", file.display());
            assert!(text.contains(&named), "{named} not in\n{text}");
        }
        assert!(!text.contains("t0ken") && !text.contains("pa55"), "{text}");
    }
}
