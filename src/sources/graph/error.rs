//! Graph API failures and their classification — the one place that decides what an error
//! means and whether it is worth retrying (DOMAIN.md's error table).
//!
//! Decisions are made on `error.code` (and `is_transient`), not on the HTTP status: Meta sends
//! throttling (code 4) as 400 as well as 429, and permission errors as 400 or 403.

use std::time::Duration;

use serde::Deserialize;

/// What kind of failure it is, which decides what the monitor does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Try again (with backoff); the poll of this target failed, nothing changed.
    Transient,
    /// Meta is throttling: back off that WABA/app, honour the regain time.
    RateLimited,
    /// The token is expired or invalid: stop using it; monitoring is blind.
    Auth,
    /// The token lacks a permission for this object: monitoring of it is blind.
    Permission,
    /// The object does not exist or is not visible to this token.
    NotFound,
    /// Anything else: retrying will not help.
    Permanent,
}

impl ErrorClass {
    /// A bounded label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Auth => "auth",
            ErrorClass::Permission => "permission",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// Meta's error envelope: `{"error":{...}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct GraphErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
    #[serde(default)]
    pub is_transient: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    error: GraphErrorBody,
}

/// Parses an error envelope from a response body, if it is one.
pub fn parse_error_body(body: &[u8]) -> Option<GraphErrorBody> {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error)
}

/// Classifies a Graph API error code. The single source of truth for the table in DOMAIN.md.
pub fn classify(
    code: Option<i64>,
    subcode: Option<i64>,
    is_transient: Option<bool>,
    http_status: u16,
) -> ErrorClass {
    match code {
        Some(4 | 17 | 32 | 613 | 80007 | 80008) => ErrorClass::RateLimited,
        Some(190) => ErrorClass::Auth,
        Some(10) | Some(200..=299) => ErrorClass::Permission,
        Some(1 | 2) => ErrorClass::Transient,
        _ if is_transient == Some(true) => ErrorClass::Transient,
        // 100/33: the object does not exist or this token cannot see it. Other code-100
        // errors are invalid parameters (a field this API version lacks): permanent.
        Some(100) if subcode == Some(33) || http_status == 404 => ErrorClass::NotFound,
        Some(803) => ErrorClass::NotFound,
        _ if http_status >= 500 => ErrorClass::Transient,
        _ if http_status == 429 => ErrorClass::RateLimited,
        _ => ErrorClass::Permanent,
    }
}

/// One failed Graph request (or batch item). `Display` never includes a URL or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("Graph API error {code} (subcode {subcode}, HTTP {http_status}): {message}", code = .code.map_or("?".into(), |c| c.to_string()), subcode = .subcode.map_or("-".into(), |c| c.to_string()))]
    Api {
        class: ErrorClass,
        http_status: u16,
        code: Option<i64>,
        subcode: Option<i64>,
        message: String,
        fbtrace_id: Option<String>,
        /// From `Retry-After` or the usage header's `estimated_time_to_regain_access`.
        retry_after: Option<Duration>,
    },
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("could not connect to the Graph API: {0}")]
    Connect(String),
    #[error("HTTP {status} with a body that is not Graph JSON ({content_type})")]
    BadStatus { status: u16, content_type: String },
    #[error("response body larger than the {limit}-byte cap")]
    TooLarge { limit: u64 },
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("paging link points outside the configured graph_url; not followed")]
    ForeignPagingLink,
    #[error("batch item did not complete (null in the batch answer)")]
    BatchItemIncomplete,
    /// Not sent: the quota governor held it back (the budget of its WABA is used up, or Meta
    /// paused it). Not Meta's answer, and no failure of the target.
    #[error("held back to stay inside the quota ({}); the next call is allowed in {} s", .reason.as_str(), .retry_after.as_secs())]
    OverQuota {
        reason: crate::sources::budget::Defer,
        retry_after: Duration,
    },
    /// A listing the source cannot serve to its end (a BSP whose API stops at page 100).
    #[error("{0}")]
    ListingTruncated(String),
}

impl GraphError {
    pub fn class(&self) -> ErrorClass {
        match self {
            GraphError::Api { class, .. } => *class,
            GraphError::Timeout(_)
            | GraphError::Connect(_)
            | GraphError::BatchItemIncomplete
            | GraphError::Malformed(_)
            | GraphError::TooLarge { .. } => ErrorClass::Transient,
            GraphError::BadStatus { status, .. } if *status >= 500 || *status == 429 => {
                ErrorClass::Transient
            }
            GraphError::BadStatus { .. }
            | GraphError::ForeignPagingLink
            | GraphError::ListingTruncated(_) => ErrorClass::Permanent,
            GraphError::OverQuota { .. } => ErrorClass::RateLimited,
        }
    }

    /// Whether retrying the same request right away may help. Throttling is not retried in
    /// place (the retry would only burn quota); malformed and oversized answers are not
    /// either: they are counted, and the next cycle tries again.
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphError::Malformed(_) | GraphError::TooLarge { .. } => false,
            other => other.class() == ErrorClass::Transient,
        }
    }

    /// A bounded reason for logs, poll records and (later) metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            GraphError::Api { class, .. } => class.as_str(),
            GraphError::Timeout(_) => "timeout",
            GraphError::Connect(_) => "connect",
            GraphError::BadStatus { .. } => "bad_status",
            GraphError::TooLarge { .. } => "too_large",
            GraphError::Malformed(_) => "malformed",
            GraphError::ForeignPagingLink => "foreign_paging_link",
            GraphError::BatchItemIncomplete => "batch_incomplete",
            GraphError::OverQuota { .. } => "quota",
            GraphError::ListingTruncated(_) => "listing_truncated",
        }
    }

    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// Builds the error for an HTTP answer that is not a success.
    pub fn from_response(status: u16, body: &[u8], content_type: &str) -> GraphError {
        match parse_error_body(body) {
            Some(e) => GraphError::Api {
                class: classify(e.code, e.error_subcode, e.is_transient, status),
                http_status: status,
                code: e.code,
                subcode: e.error_subcode,
                // Redacted before it is cut, so no part of a secret survives the cut.
                message: truncate(&crate::redact::redact(&e.message), 300),
                fbtrace_id: e.fbtrace_id.map(|t| crate::redact::redact(&t)),
                retry_after: None,
            },
            None => GraphError::BadStatus {
                status,
                content_type: truncate(&crate::redact::redact(content_type), 60),
            },
        }
    }
}

impl From<crate::sources::budget::Refused> for GraphError {
    fn from(r: crate::sources::budget::Refused) -> GraphError {
        GraphError::OverQuota {
            reason: r.reason,
            retry_after: r.retry_after,
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_lands_in_its_class() {
        let table: &[(Option<i64>, Option<bool>, u16, ErrorClass)] = &[
            (Some(100), None, 404, ErrorClass::NotFound),
            (Some(1), None, 500, ErrorClass::Transient),
            (Some(2), None, 503, ErrorClass::Transient),
            (Some(131000), Some(true), 400, ErrorClass::Transient),
            (None, None, 502, ErrorClass::Transient),
            (Some(4), None, 400, ErrorClass::RateLimited),
            (Some(4), None, 429, ErrorClass::RateLimited),
            (Some(17), None, 400, ErrorClass::RateLimited),
            (Some(32), None, 400, ErrorClass::RateLimited),
            (Some(613), None, 400, ErrorClass::RateLimited),
            (Some(80007), None, 400, ErrorClass::RateLimited),
            (Some(80008), None, 400, ErrorClass::RateLimited),
            (Some(190), None, 401, ErrorClass::Auth),
            (Some(190), None, 400, ErrorClass::Auth),
            (Some(10), None, 403, ErrorClass::Permission),
            (Some(200), None, 403, ErrorClass::Permission),
            (Some(299), None, 400, ErrorClass::Permission),
            (Some(100), None, 400, ErrorClass::Permanent),
            (Some(368), None, 400, ErrorClass::Permanent),
            (Some(2500), None, 400, ErrorClass::Permanent),
        ];
        for (code, transient, status, want) in table {
            assert_eq!(
                classify(*code, None, *transient, *status),
                *want,
                "code {code:?} http {status}"
            );
        }
    }

    #[test]
    fn code_100_is_not_found_only_with_subcode_33() {
        assert_eq!(
            classify(Some(100), Some(33), None, 400),
            ErrorClass::NotFound
        );
        assert_eq!(classify(Some(100), None, None, 400), ErrorClass::Permanent);
    }

    #[test]
    fn an_error_envelope_is_read_and_an_html_page_is_not() {
        let body = br#"{"error":{"message":"Invalid OAuth access token","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"Abc"}}"#;
        let e = GraphError::from_response(401, body, "application/json");
        assert_eq!(e.class(), ErrorClass::Auth);
        assert!(!e.is_retryable());
        let e = GraphError::from_response(502, b"<html>Bad Gateway</html>", "text/html");
        assert_eq!(e.class(), ErrorClass::Transient);
        assert!(e.is_retryable());
        assert_eq!(e.reason(), "bad_status");
    }
}
