//! Every secret the process has loaded (tokens, passwords, API and app secrets), and their
//! removal from text that came from outside.
//!
//! An upstream can echo a request's `Authorization` header in its error text. Such text is
//! stored (`poll_runs.error`), logged, mailed ("monitoring blind") and served (the API's
//! `/test`), so it passes through [`redact`] where it enters the program: when a
//! [`GraphError`](crate::sources::graph::GraphError) is built from an answer.

use std::sync::RwLock;

use secrecy::{ExposeSecret, SecretString};

/// Secrets shorter than this are not registered: replacing every "1234" in error texts would
/// make them unreadable, and a secret that short is no secret.
const MIN_LEN: usize = 8;
/// What a secret is replaced with.
pub const MARK: &str = "[REDACTED]";

static KNOWN: RwLock<Vec<SecretString>> = RwLock::new(Vec::new());

/// Remembers a secret the process holds, so that [`redact`] removes it from upstream text.
/// Every secret loaded through `SecretSource::load` is registered; rotated ones stay known.
pub fn register(secret: &SecretString) {
    let value = secret.expose_secret();
    if value.len() < MIN_LEN {
        return;
    }
    let mut known = KNOWN
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !known.iter().any(|k| k.expose_secret() == value) {
        known.push(SecretString::from(value.to_owned()));
    }
}

/// `text` with every registered secret replaced by [`MARK`].
pub fn redact(text: &str) -> String {
    let known = KNOWN
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = text.to_owned();
    for k in known.iter() {
        let value = k.expose_secret();
        if out.contains(value) {
            out = out.replace(value, MARK);
        }
    }
    out
}

/// A URL as it may be shown: its password (`scheme://user:PASSWORD@host…`) replaced by `***`;
/// a URL without one is returned as it is.
pub fn url_without_password(url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => url.replacen(authority, &format!("{user}:***@{host}"), 1),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_is_shown_without_its_password_and_unchanged_without_one() {
        use super::url_without_password as shown;
        assert_eq!(
            shown("postgres://waba:hunter2@db:5432/x?sslmode=require"),
            "postgres://waba:***@db:5432/x?sslmode=require"
        );
        assert_eq!(shown("postgres://waba@db/x"), "postgres://waba@db/x");
        assert_eq!(shown("postgres://db/x"), "postgres://db/x");
        assert_eq!(shown("monitor.db"), "monitor.db");
    }

    use super::*;

    #[test]
    fn a_registered_secret_is_removed_from_any_text_and_short_ones_are_ignored() {
        register(&SecretString::from("tok-redact-test-0123456789".to_owned()));
        register(&SecretString::from("1234".to_owned()));
        let echoed = "Invalid token. Authorization: Bearer tok-redact-test-0123456789 (x1234)";
        let clean = redact(echoed);
        assert_eq!(
            clean,
            "Invalid token. Authorization: Bearer [REDACTED] (x1234)"
        );
        assert_eq!(redact("nothing secret"), "nothing secret");
    }
}
