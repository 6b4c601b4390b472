//! `[[bsp]]`: a BSP's API as a source (Finedu): which one, its URL, token, page size and
//! filter.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use url::Url;

use super::checks::{
    MAX_REQUEST_TIMEOUT, duration_key, int_key, is_loopback_host, max_response_bytes, source_name,
};
use super::problems::Problems;
use super::raw::RawBsp;
use super::secret_keys::{Need, secret_source};
use crate::secrets::SecretSource;

/// Which BSP API a `[[bsp]]` block speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BspKind {
    /// Finedu's `GET /v1/whatsapp/businessAccounts`.
    Finedu,
}

impl fmt::Display for BspKind {
    /// As written in the config (`kind = "finedu"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BspKind::Finedu => "finedu",
        })
    }
}

pub const DEFAULT_FINEDU_URL: &str = "https://wa.antgst.com";

#[derive(Debug, Clone)]
pub struct BspSourceConfig {
    pub kind: BspKind,
    pub name: String,
    pub base_url: Url,
    pub token: SecretSource,
    /// WABAs per page (1–100).
    pub page_size: u32,
    /// Passed through as `accountReviewStatus` (PENDING, APPROVED, REJECTED).
    pub account_review_status: Option<String>,
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
}

pub(super) fn validate_bsp(
    i: usize,
    span: std::ops::Range<usize>,
    raw: RawBsp,
    base_dir: &Path,
    p: &mut Problems<'_>,
) -> Option<BspSourceConfig> {
    let k = |name: &str| format!("bsp[{i}].{name}");
    let kind = match &raw.kind {
        Some(kind) if kind.get_ref() == "finedu" => Some(BspKind::Finedu),
        Some(kind) => {
            p.add(
                Some(kind.span()),
                &k("kind"),
                format!("\"{}\" is not a BSP this version knows", kind.get_ref()),
                "use kind = \"finedu\"",
            );
            None
        }
        None => {
            if !p.has(&k("kind")) {
                p.add(
                    Some(span.clone()),
                    &k("kind"),
                    "this [[bsp]] block has no kind".into(),
                    "add kind = \"finedu\"",
                );
            }
            None
        }
    };
    let name = source_name(
        raw.name.as_ref(),
        span.clone(),
        &k("name"),
        "finedu-main",
        p,
    );
    let base_url = match &raw.base_url {
        None => Url::parse(DEFAULT_FINEDU_URL).ok(),
        Some(u) => match Url::parse(u.get_ref()) {
            Ok(url)
                if url.scheme() == "https"
                    || (url.scheme() == "http" && is_loopback_host(&url)) =>
            {
                if url.path() != "/" || url.query().is_some() {
                    p.add(
                        Some(u.span()),
                        &k("base_url"),
                        format!("\"{}\" has a path or query", u.get_ref()),
                        &format!("write only scheme and host, e.g. \"{DEFAULT_FINEDU_URL}\""),
                    );
                    None
                } else {
                    Some(url)
                }
            }
            _ => {
                p.add(
                    Some(u.span()),
                    &k("base_url"),
                    format!("\"{}\" is not an https URL", u.get_ref()),
                    &format!("write \"{DEFAULT_FINEDU_URL}\" or leave the key out (plain http only for loopback)"),
                );
                None
            }
        },
    };
    let token = secret_source(
        &raw.token_env,
        &raw.token_file,
        (&k("token_env"), &k("token_file")),
        base_dir,
        Need::Required {
            span: span.clone(),
            what: "no API token source",
            fix: "add token_env = \"WABA_MONITOR_FINEDU_TOKEN\" (the NAME of a variable holding the BSP's API token) or token_file = \"/run/credentials/waba-monitor.service/finedu-token\"",
        },
        p,
    );
    let page_size = int_key(
        raw.page_size,
        &k("page_size"),
        100,
        1..=100,
        "use 1 to 100 (the API's limit; default 100)",
        p,
    );
    let account_review_status = match &raw.account_review_status {
        None => None,
        Some(v) if ["PENDING", "APPROVED", "REJECTED"].contains(&v.get_ref().as_str()) => {
            Some(v.get_ref().clone())
        }
        Some(v) => {
            p.add(
                Some(v.span()),
                &k("account_review_status"),
                format!(
                    "\"{}\" is not a review status the API filters on",
                    v.get_ref()
                ),
                "use PENDING, APPROVED or REJECTED, or leave the key out for all WABAs",
            );
            None
        }
    };
    let request_timeout = duration_key(
        raw.request_timeout,
        &k("request_timeout"),
        Duration::from_secs(30),
        (Duration::from_millis(100), MAX_REQUEST_TIMEOUT),
        p,
    );
    let max_response_bytes =
        max_response_bytes(raw.max_response_bytes, &k("max_response_bytes"), p);
    if p.has_under(&k("")) {
        return None;
    }
    Some(BspSourceConfig {
        kind: kind?,
        name,
        base_url: base_url?,
        token: token?,
        page_size,
        account_review_status,
        request_timeout,
        max_response_bytes,
    })
}
