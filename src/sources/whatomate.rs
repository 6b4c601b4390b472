//! The Whatomate import: `GET {base_url}/api/accounts` (answers wrapped as
//! `{"status":"success","data":{"items":[...]}}`), the API key in the `X-API-Key` header and
//! never in a URL. Each account names a number (`phone_number_id`) and its WABA
//! (`business_account_id`); the poller polls those through the first `[[meta]]` source.
//!
//! The documented listing has no paging; when an answer carries `total` (Whatomate's paged
//! lists do), further pages are asked for with `page`/`limit` until `total` accounts are read.
//! Any failure fails the whole read: the poller then keeps the last list it read.

use backon::Retryable;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::graph::{ErrorClass, GraphError};
use crate::config::WhatomateConfig;
use crate::retry::RetryPolicy;

/// The header Whatomate reads an API key from.
pub const API_KEY_HEADER: &str = "X-API-Key";
/// Accounts asked for per page.
const PAGE_LIMIT: u32 = 100;
/// Pages read at most (10,000 accounts): a listing that does not end is a failure.
const MAX_PAGES: u32 = 100;
/// An id Graph can take in a path: digits only, bounded.
const MAX_ID_LEN: usize = 32;

/// One account Whatomate lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatomateAccount {
    pub phone_number_id: String,
    /// Its WABA, when Whatomate names one that is a valid id.
    pub business_account_id: Option<String>,
}

pub struct WhatomateSource {
    pub cfg: WhatomateConfig,
    http: reqwest::Client,
    retry: RetryPolicy,
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_digit())
}

/// An id given as a string or a number.
fn id_field(item: &Value, field: &str) -> Option<String> {
    match item.get(field)? {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Classifies a non-success answer by its HTTP status.
fn http_error(status: u16, body: &[u8]) -> GraphError {
    let message = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("message")
            .and_then(Value::as_str)
            .map(|m| crate::redact::redact(&m.chars().take(300).collect::<String>()))
    });
    let Some(message) = message else {
        return GraphError::BadStatus {
            status,
            content_type: "not Whatomate's JSON".into(),
        };
    };
    let class = match status {
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        429 => ErrorClass::RateLimited,
        s if s >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    };
    GraphError::Api {
        class,
        http_status: status,
        code: None,
        subcode: None,
        message,
        fbtrace_id: None,
        retry_after: None,
    }
}

/// The accounts of one answer's `data` (`{"items":[...]}` or a bare array), the ones without
/// a usable `phone_number_id` skipped (counted in the second value).
fn accounts_of(data: &Value) -> Result<(Vec<WhatomateAccount>, usize), GraphError> {
    let items = match data {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("items").or_else(|| o.get("accounts")) {
            Some(Value::Array(a)) => a,
            Some(Value::Null) | None => return Ok((Vec::new(), 0)),
            Some(_) => return Err(GraphError::Malformed("data.items is not a list".into())),
        },
        _ => return Err(GraphError::Malformed("data is not an object".into())),
    };
    let mut out = Vec::with_capacity(items.len());
    let mut skipped = 0;
    for item in items {
        match id_field(item, "phone_number_id") {
            Some(phone) if is_id(&phone) => out.push(WhatomateAccount {
                phone_number_id: phone,
                business_account_id: id_field(item, "business_account_id").filter(|w| is_id(w)),
            }),
            _ => skipped += 1,
        }
    }
    Ok((out, skipped))
}

impl WhatomateSource {
    pub fn new(cfg: WhatomateConfig, retry: RetryPolicy) -> Result<WhatomateSource, GraphError> {
        let http = super::graph::client::http_client(cfg.request_timeout)?;
        Ok(WhatomateSource { cfg, http, retry })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The host, the only part of the URL logs show.
    pub fn host(&self) -> String {
        self.cfg.base_url.host_str().unwrap_or("?").to_owned()
    }

    fn accounts_url(&self, page: u32) -> url::Url {
        let mut url = self.cfg.base_url.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}/api/accounts"));
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("limit", &PAGE_LIMIT.to_string());
        url
    }

    /// One page's `data`, retried while the failure is transient.
    async fn page(&self, key: &SecretString, page: u32) -> Result<Value, GraphError> {
        let url = self.accounts_url(page);
        let limit = self.cfg.max_response_bytes;
        let attempt = || {
            let url = url.clone();
            async move {
                let resp = self
                    .http
                    .get(url)
                    .header(API_KEY_HEADER, key.expose_secret())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            GraphError::Timeout(self.cfg.request_timeout)
                        } else {
                            GraphError::Connect(e.without_url().to_string())
                        }
                    })?;
                let status = resp.status().as_u16();
                if resp.content_length().is_some_and(|n| n > limit) {
                    return Err(GraphError::TooLarge { limit });
                }
                let mut resp = resp;
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| GraphError::Malformed(e.without_url().to_string()))?
                {
                    if (body.len() + chunk.len()) as u64 > limit {
                        return Err(GraphError::TooLarge { limit });
                    }
                    body.extend_from_slice(&chunk);
                }
                if !(200..300).contains(&status) {
                    return Err(http_error(status, &body));
                }
                let v = serde_json::from_slice::<Value>(&body).map_err(|e| {
                    GraphError::Malformed(format!("body is not JSON ({} bytes): {e}", body.len()))
                })?;
                if v.get("status").and_then(Value::as_str) != Some("success") {
                    return Err(GraphError::Malformed(
                        "the answer's status is not \"success\"".into(),
                    ));
                }
                v.get("data")
                    .cloned()
                    .ok_or_else(|| GraphError::Malformed("the answer has no data".into()))
            }
        };
        attempt
            .retry(self.retry.builder())
            .sleep(tokio::time::sleep)
            .when(GraphError::is_retryable)
            .await
    }

    /// Every account Whatomate lists, in its order, each number once. Fails as a whole.
    pub async fn accounts(&self) -> Result<Vec<WhatomateAccount>, GraphError> {
        let key = super::load_secret(&self.cfg.api_key)
            .await
            .map_err(|e| GraphError::Api {
                class: ErrorClass::Auth,
                http_status: 0,
                code: None,
                subcode: None,
                message: format!("could not read the API key: {e}"),
                fbtrace_id: None,
                retry_after: None,
            })?;
        let mut out: Vec<WhatomateAccount> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut read = 0u64;
        let mut skipped = 0;
        for page in 1..=MAX_PAGES {
            let data = self.page(&key, page).await?;
            let (accounts, bad) = accounts_of(&data)?;
            let n = accounts.len() + bad;
            read += n as u64;
            skipped += bad;
            for a in accounts {
                if seen.insert(a.phone_number_id.clone()) {
                    out.push(a);
                }
            }
            let total = data.get("total").and_then(Value::as_u64);
            match total {
                Some(total) if read < total && n > 0 => continue,
                _ => {
                    if skipped > 0 {
                        tracing::warn!(source = %self.cfg.name, skipped, "Whatomate listed accounts without a usable phone_number_id: not polled");
                    }
                    return Ok(out);
                }
            }
        }
        Err(GraphError::ListingTruncated(format!(
            "Whatomate's account listing did not end within {MAX_PAGES} pages"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accounts_are_read_leniently() {
        let data = json!({"items": [
            {"phone_number_id": "123", "business_account_id": "987"},
            {"phone_number_id": 456, "business_account_id": "not an id"},
            {"phone_number_id": "../me"},
            {"name": "no id"}
        ]});
        let (a, skipped) = accounts_of(&data).expect("read");
        assert_eq!(skipped, 2);
        assert_eq!(a[0].business_account_id.as_deref(), Some("987"));
        assert_eq!(a[1].phone_number_id, "456");
        assert_eq!(a[1].business_account_id, None);
        assert!(accounts_of(&json!("x")).is_err());
    }
}
