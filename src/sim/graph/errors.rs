//! Graph API error answers, in Meta's envelope `{"error":{message,type,code,error_subcode,fbtrace_id}}`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::fields::FieldsError;

/// A failed Graph call: the HTTP status, the JSON envelope and any extra headers
/// (`Retry-After`, a forced `X-Business-Use-Case-Usage`).
#[derive(Debug, Clone)]
pub(crate) struct GraphFailure {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl GraphFailure {
    pub fn new(status: u16, code: i64, subcode: Option<i64>, kind: &str, message: String) -> Self {
        let mut error = json!({
            "message": message,
            "type": kind,
            "code": code,
            "fbtrace_id": fbtrace_id(),
        });
        if let Some(subcode) = subcode {
            error["error_subcode"] = json!(subcode);
        }
        GraphFailure {
            status,
            body: json!({ "error": error }),
            headers: Vec::new(),
        }
    }

    /// The error Meta returns for a missing or unparsable token; a present but wrong token
    /// also carries subcode 467 ("invalid access token").
    pub fn bad_token(present: bool) -> Self {
        let mut failure = GraphFailure::new(
            401,
            190,
            present.then_some(467),
            "OAuthException",
            "Invalid OAuth access token - Cannot parse access token".to_owned(),
        );
        failure.headers.push((
            "WWW-Authenticate".to_owned(),
            "OAuth \"Facebook Platform\" \"invalid_token\" \"Invalid OAuth access token - Cannot parse access token\"".to_owned(),
        ));
        failure
    }

    /// Meta's answer for an id that does not exist or is not visible to the token.
    pub fn unknown_object(id: &str, method: &str) -> Self {
        GraphFailure::new(
            400,
            100,
            Some(33),
            "GraphMethodException",
            format!(
                "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
            ),
        )
    }

    pub fn nonexisting_field(field: &str, node_type: &str) -> Self {
        GraphFailure::new(
            400,
            100,
            None,
            "OAuthException",
            format!(
                "(#100) Tried accessing nonexisting field ({field}) on node type ({node_type})"
            ),
        )
    }

    pub fn syntax(error: &FieldsError) -> Self {
        GraphFailure::new(400, 2500, None, "OAuthException", error.to_string())
    }

    pub fn unknown_path(components: &[String]) -> Self {
        GraphFailure::new(
            400,
            2500,
            None,
            "OAuthException",
            format!("Unknown path components: /{}", components.join("/")),
        )
    }

    pub fn invalid_parameter(message: &str) -> Self {
        GraphFailure::new(
            400,
            100,
            None,
            "OAuthException",
            format!("(#100) {message}"),
        )
    }

    pub fn batch_too_large() -> Self {
        GraphFailure::new(
            400,
            100,
            None,
            "GraphBatchException",
            "Too many requests in batch message. Maximum batch size is 50".to_owned(),
        )
    }

    /// Builds the error a `FaultKind::GraphError` asks for.
    pub fn from_fault(
        http_status: u16,
        code: i64,
        subcode: Option<i64>,
        message: &str,
        is_transient: Option<bool>,
        retry_after: Option<u64>,
        usage_header: Option<&str>,
    ) -> Self {
        // Meta labels only the missing-object error GraphMethodException; everything else a
        // monitor meets (tokens, permissions, throttling) arrives as OAuthException.
        let kind = if code == 100 && subcode == Some(33) {
            "GraphMethodException"
        } else {
            "OAuthException"
        };
        let mut failure = GraphFailure::new(http_status, code, subcode, kind, message.to_owned());
        if let Some(transient) = is_transient {
            failure.body["error"]["is_transient"] = json!(transient);
        }
        if let Some(seconds) = retry_after {
            failure
                .headers
                .push(("Retry-After".to_owned(), seconds.to_string()));
        }
        if let Some(usage) = usage_header {
            failure
                .headers
                .push((super::BUC_HEADER.to_owned(), usage.to_owned()));
        }
        failure
    }
}

/// A fresh trace id shaped like Meta's (`A` followed by 22 base64url characters). Only its shape
/// matters, so a mixed counter is enough.
pub(crate) fn fbtrace_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0x5eed);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state = splitmix64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut id = String::with_capacity(23);
    id.push('A');
    for i in 0..22 {
        if i == 10 {
            state = splitmix64(state);
        }
        id.push(char::from(ALPHABET[(state & 63) as usize]));
        state >>= 6;
    }
    id
}

/// SplitMix64: a tiny well-mixed hash, used for trace ids and the fleet's made-up namespaces.
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
