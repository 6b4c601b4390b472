//! The Graph API HTTP client: bearer auth, timeouts, a capped body, explicit fields, paging
//! links checked against the configured host, batches of at most 50, and retries of transient
//! failures with the project's one retry policy.
//!
//! Every request it sends — first attempt, retry, paging link, batch item — is admitted and
//! charged by the source's quota governor first ([`Quota::admit`]); one that is refused is not
//! sent and comes back as [`GraphError::OverQuota`]. Retries happen in one layer only: a single
//! GET retries itself; a batch retries its failed items (a whole failed POST fails all of its
//! items) in later, smaller batches.
//!
//! The token only ever travels in the `Authorization` header. Paging links from Meta carry an
//! `access_token` query parameter; it is stripped before the link is followed, and errors are
//! built without URLs, so no log line can show the token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::Retryable;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use super::error::GraphError;
use super::usage::{self, UsageSnapshot};
use crate::config::{ApiVersion, MetaSourceConfig};
use crate::retry::RetryPolicy;
use crate::sources::budget::Quota;

/// Meta's limit on items in one batch request.
pub const MAX_BATCH: usize = 50;
/// A guard against a paging loop that never ends (a server repeating its cursor).
pub const MAX_PAGES: usize = 1_000;

/// The answers to a batch's items, in request order.
type ItemResults = Vec<Result<Value, GraphError>>;

/// Counters of what a client sent, read by the poller for its records.
#[derive(Debug, Default)]
pub struct CallCounters {
    /// Graph calls as Meta counts them: each batch item is one.
    pub calls: AtomicU64,
    /// HTTP requests.
    pub requests: AtomicU64,
}

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    version: ApiVersion,
    token: Arc<std::sync::RwLock<SecretString>>,
    max_body: u64,
    timeout: Duration,
    retry: RetryPolicy,
    concurrency: usize,
    counters: Arc<CallCounters>,
    usage: Arc<std::sync::Mutex<UsageSnapshot>>,
    quota: Quota,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base", &self.base.as_str())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The HTTP client every source uses: a whole-request timeout, a shorter connect timeout, our
/// User-Agent, and no redirects (a redirect could carry the bearer token elsewhere).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, GraphError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("waba-monitor/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| GraphError::Connect(e.without_url().to_string()))
}

/// What to ask a node for: its id and `fields=` value, and whose quota the call counts
/// against (its WABA's; a business's or an unplaced number's own id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequest {
    pub id: String,
    pub fields: String,
    pub key: String,
}

impl GraphClient {
    pub fn new(
        cfg: &MetaSourceConfig,
        token: SecretString,
        retry: RetryPolicy,
    ) -> Result<GraphClient, GraphError> {
        Self::with_quota(cfg, token, retry, Quota::new(cfg.waba_call_budget()))
    }

    /// A client whose requests go through `quota`, a governor that may outlive this client
    /// (a reload builds a new client; the ledger and the pauses carry on).
    pub fn with_quota(
        cfg: &MetaSourceConfig,
        token: SecretString,
        retry: RetryPolicy,
        quota: Quota,
    ) -> Result<GraphClient, GraphError> {
        let http = http_client(cfg.request_timeout)?;
        Ok(GraphClient {
            http,
            base: cfg.graph_url.clone(),
            version: cfg.api_version,
            token: Arc::new(std::sync::RwLock::new(token)),
            max_body: cfg.max_response_bytes,
            timeout: cfg.request_timeout,
            retry,
            concurrency: cfg.concurrency,
            counters: Arc::new(CallCounters::default()),
            usage: Arc::default(),
            quota,
        })
    }

    /// The quota governor every request of this client goes through.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    pub fn version(&self) -> ApiVersion {
        self.version
    }

    pub fn counters(&self) -> &CallCounters {
        &self.counters
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Uses a new token from now on (re-read at every cycle, so a replaced token file takes
    /// effect without a restart).
    pub fn set_token(&self, token: SecretString) {
        if let Ok(mut t) = self.token.write() {
            *t = token;
        }
    }

    /// The bearer value for one request. Read per request so a token swap applies at once.
    fn bearer(&self) -> String {
        self.token
            .read()
            .map(|t| t.expose_secret().to_owned())
            .unwrap_or_default()
    }

    /// The latest usage percentages Meta reported.
    pub fn usage(&self) -> UsageSnapshot {
        self.usage.lock().map(|u| u.clone()).unwrap_or_default()
    }

    fn record_usage(&self, headers: &HeaderMap) {
        let app = headers.get("x-app-usage").and_then(|v| v.to_str().ok());
        let business = headers
            .get("x-business-use-case-usage")
            .and_then(|v| v.to_str().ok());
        self.record_usage_values(app, business);
    }

    fn record_usage_values(&self, app: Option<&str>, business: Option<&str>) {
        if app.is_none() && business.is_none() {
            return;
        }
        if let Ok(mut snap) = self.usage.lock() {
            if let Some(a) = app {
                usage::read_app_usage(a, &mut snap);
            }
            if let Some(b) = business {
                usage::read_business_usage(b, &mut snap);
            }
        }
    }

    fn node_url(&self, id: &str) -> Result<Url, GraphError> {
        self.base
            .join(&format!("{}/{}", self.version, id))
            .map_err(|_| GraphError::Malformed("object id does not form a URL".into()))
    }

    /// `GET /{version}/{id}?fields=...`, retried while the failure is transient; every
    /// attempt charged to `req.key` at `now`.
    pub async fn get_node(
        &self,
        req: &NodeRequest,
        now: DateTime<Utc>,
    ) -> Result<Value, GraphError> {
        let mut url = self.node_url(&req.id)?;
        url.query_pairs_mut().append_pair("fields", &req.fields);
        self.get_with_retry(url, &req.key, now, None).await
    }

    /// [`GraphClient::get_node`] with another bearer token than the source's (a number added
    /// through the fleet API with its own token): admitted, charged, retried and capped the
    /// same way; the token travels in the `Authorization` header only.
    pub async fn get_node_as(
        &self,
        req: &NodeRequest,
        token: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<Value, GraphError> {
        let mut url = self.node_url(&req.id)?;
        url.query_pairs_mut().append_pair("fields", &req.fields);
        self.get_with_retry(url, &req.key, now, Some(token)).await
    }

    /// Follows a `paging.next` link, charged to `key`. The link must point at the configured
    /// Graph host; its `access_token` parameter is dropped (the header carries the token).
    pub async fn get_next(
        &self,
        next: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Value, GraphError> {
        let url = self.check_paging_link(next)?;
        self.get_with_retry(url, key, now, None).await
    }

    /// Validates a paging link and returns it without any `access_token` parameter.
    pub fn check_paging_link(&self, next: &str) -> Result<Url, GraphError> {
        let url = Url::parse(next).map_err(|_| GraphError::ForeignPagingLink)?;
        let same_origin = url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default();
        if !same_origin {
            return Err(GraphError::ForeignPagingLink);
        }
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "access_token")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut clean = url;
        clean.set_query(None);
        if !kept.is_empty() {
            clean.query_pairs_mut().extend_pairs(kept);
        }
        Ok(clean)
    }

    async fn get_with_retry(
        &self,
        url: Url,
        key: &str,
        now: DateTime<Utc>,
        token: Option<&SecretString>,
    ) -> Result<Value, GraphError> {
        let attempt = || {
            let url = url.clone();
            async move {
                self.quota.admit(key, now)?;
                self.counters.calls.fetch_add(1, Ordering::Relaxed);
                let bearer = match token {
                    Some(t) => t.expose_secret().to_owned(),
                    None => self.bearer(),
                };
                let req = self.http.get(url).bearer_auth(bearer);
                self.send(req).await
            }
        };
        attempt
            .retry(self.retry.builder())
            .sleep(tokio::time::sleep)
            .when(GraphError::is_retryable)
            .notify(|e: &GraphError, wait| {
                tracing::debug!(reason = e.reason(), error = %e, ?wait, "retrying Graph request");
            })
            .await
    }

    /// Sends one request and reads a capped JSON body. Never retries.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, GraphError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.record_usage(&headers);
        let body = self.read_capped(resp).await?;
        if !(200..300).contains(&status) {
            let ctype = content_type(&headers);
            let mut err = GraphError::from_response(status, &body, &ctype);
            if let GraphError::Api { retry_after, .. } = &mut err {
                *retry_after = retry_after_of(&headers);
            }
            return Err(err);
        }
        serde_json::from_slice(&body).map_err(|e| {
            GraphError::Malformed(format!("body is not JSON ({} bytes): {e}", body.len()))
        })
    }

    async fn read_capped(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, GraphError> {
        if resp.content_length().is_some_and(|n| n > self.max_body) {
            return Err(GraphError::TooLarge {
                limit: self.max_body,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport_error(e))? {
            if body.len() as u64 + chunk.len() as u64 > self.max_body {
                return Err(GraphError::TooLarge {
                    limit: self.max_body,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, e: reqwest::Error) -> GraphError {
        if e.is_timeout() {
            GraphError::Timeout(self.timeout)
        } else if e.is_decode() || e.is_body() {
            GraphError::Malformed(e.without_url().to_string())
        } else {
            GraphError::Connect(e.without_url().to_string())
        }
    }

    /// Fetches unrelated nodes in batch requests of at most 50 items, several batches in
    /// flight at once. The answer is in request order. Items that fail transiently (or come
    /// back `null`, or whose whole POST failed) are retried in later, smaller batches with the
    /// retry policy's delays: the only retry layer of a batch. Each item is admitted and
    /// charged to its key before every send.
    pub async fn batch(
        &self,
        reqs: &[NodeRequest],
        now: DateTime<Utc>,
    ) -> Vec<Result<Value, GraphError>> {
        let mut results: Vec<Option<Result<Value, GraphError>>> = vec![None; reqs.len()];
        let mut pending: Vec<usize> = (0..reqs.len()).collect();
        let mut delays = self.retry.delays();
        loop {
            let mut send = Vec::with_capacity(pending.len());
            for idx in pending {
                match self.quota.admit(&reqs[idx].key, now) {
                    Ok(()) => send.push(idx),
                    Err(refused) => results[idx] = Some(Err(refused.into())),
                }
            }
            let round = self.batch_round(reqs, &send).await;
            let mut retry = Vec::new();
            for (idx, res) in send.iter().copied().zip(round) {
                if matches!(&res, Err(e) if e.is_retryable()) {
                    retry.push(idx);
                }
                results[idx] = Some(res);
            }
            if retry.is_empty() {
                break;
            }
            let Some(wait) = delays.next() else { break };
            tracing::debug!(items = retry.len(), ?wait, "retrying failed batch items");
            tokio::time::sleep(wait).await;
            pending = retry;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(GraphError::BatchItemIncomplete)))
            .collect()
    }

    /// One pass over `pending`: chunks of 50, `concurrency` chunks at once.
    async fn batch_round(
        &self,
        reqs: &[NodeRequest],
        pending: &[usize],
    ) -> Vec<Result<Value, GraphError>> {
        let chunks: Vec<Vec<usize>> = pending.chunks(MAX_BATCH).map(<[usize]>::to_vec).collect();
        let mut sends: Vec<BoxFuture<'_, (usize, ItemResults)>> = Vec::new();
        for (n, chunk) in chunks.into_iter().enumerate() {
            let items: Vec<&NodeRequest> = chunk.iter().map(|i| &reqs[*i]).collect();
            sends.push(Box::pin(async move { (n, self.batch_once(&items).await) }));
        }
        let answers: Vec<(usize, ItemResults)> = futures_util::stream::iter(sends)
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        let mut ordered = answers;
        ordered.sort_by_key(|(n, _)| *n);
        ordered.into_iter().flat_map(|(_, v)| v).collect()
    }

    /// One batch request (≤ 50 items), sent once. A failure of the whole request becomes every
    /// item's failure (and `batch` retries the items).
    async fn batch_once(&self, items: &[&NodeRequest]) -> Vec<Result<Value, GraphError>> {
        let batch: Vec<Value> = items
            .iter()
            .map(|r| {
                let mut rel = format!("{}/{}?", self.version, r.id);
                rel.push_str(
                    &url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("fields", &r.fields)
                        .finish(),
                );
                serde_json::json!({"method": "GET", "relative_url": rel})
            })
            .collect();
        let batch_json = Value::Array(batch).to_string();
        let url = match self.base.join(&format!("{}/", self.version)) {
            Ok(u) => u,
            Err(_) => {
                return items
                    .iter()
                    .map(|_| Err(GraphError::Malformed("bad base URL".into())))
                    .collect();
            }
        };
        self.counters
            .calls
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let req = self
            .http
            .post(url)
            .bearer_auth(self.bearer())
            .form(&[("batch", batch_json.as_str()), ("include_headers", "true")]);
        match self.send(req).await {
            Err(e) => items.iter().map(|_| Err(e.clone())).collect(),
            Ok(Value::Array(arr)) if arr.len() == items.len() => {
                arr.into_iter().map(|i| self.read_batch_item(i)).collect()
            }
            Ok(_) => items
                .iter()
                .map(|_| {
                    Err(GraphError::Malformed(
                        "batch answer is not an array of the request's length".into(),
                    ))
                })
                .collect(),
        }
    }
}

impl GraphClient {
    /// Reads one batch item, taking the usage and `Retry-After` headers Meta attaches to it
    /// (each item carries its own WABA's usage).
    fn read_batch_item(&self, item: Value) -> Result<Value, GraphError> {
        let header = |name: &str| -> Option<String> {
            item.get("headers")?
                .as_array()?
                .iter()
                .find(|h| {
                    h.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })?
                .get("value")?
                .as_str()
                .map(str::to_owned)
        };
        let app = header("x-app-usage");
        let business = header("x-business-use-case-usage");
        self.record_usage_values(app.as_deref(), business.as_deref());
        let retry = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut res = parse_batch_item(item);
        if let Err(GraphError::Api { retry_after, .. }) = &mut res {
            *retry_after = retry;
        }
        res
    }
}

/// One element of a batch answer: `null`, or `{"code":..,"headers":..,"body":"<json>"}`.
fn parse_batch_item(item: Value) -> Result<Value, GraphError> {
    if item.is_null() {
        return Err(GraphError::BatchItemIncomplete);
    }
    let code = item
        .get("code")
        .and_then(Value::as_u64)
        .ok_or_else(|| GraphError::Malformed("batch item without a code".into()))?;
    // An HTTP status has three digits; anything else is not one (and must not wrap into one).
    let code = u16::try_from(code)
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| {
            GraphError::Malformed(format!("batch item code {code} is not an HTTP status"))
        })?;
    let body = item.get("body").and_then(Value::as_str).unwrap_or("");
    if !(200..300).contains(&code) {
        return Err(GraphError::from_response(
            code,
            body.as_bytes(),
            "application/json",
        ));
    }
    serde_json::from_str(body)
        .map_err(|e| GraphError::Malformed(format!("batch item body is not JSON: {e}")))
}

fn content_type(h: &HeaderMap) -> String {
    h.get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_owned()
}

fn retry_after_of(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn client(graph_url: &str) -> GraphClient {
        let src = format!(
            "[[meta]]\nname = \"m\"\ngraph_url = \"{graph_url}\"\naccess_token_env = \"X\"\nwabas = [\"1\"]\n"
        );
        let cfg = Config::from_toml(std::path::Path::new("m.toml"), &src).expect("config");
        GraphClient::new(
            &cfg.meta[0],
            SecretString::from("tok".to_owned()),
            RetryPolicy::fast(),
        )
        .expect("client")
    }

    #[test]
    fn paging_links_lose_their_access_token_and_foreign_hosts_are_refused() {
        let c = client("https://graph.facebook.com");
        let u = c
            .check_paging_link("https://graph.facebook.com/v23.0/1/phone_numbers?fields=id&access_token=EAAsecret&limit=100&after=QVFI")
            .expect("same host");
        assert!(!u.as_str().contains("access_token"), "{u}");
        assert!(u.as_str().contains("after=QVFI") && u.as_str().contains("limit=100"));
        for foreign in [
            "https://evil.example.com/v23.0/1/phone_numbers?after=x",
            "http://graph.facebook.com/v23.0/1/phone_numbers",
            "https://graph.facebook.com:8443/v23.0/1",
            "not a url",
        ] {
            assert!(
                matches!(
                    c.check_paging_link(foreign),
                    Err(GraphError::ForeignPagingLink)
                ),
                "{foreign}"
            );
        }
    }

    #[test]
    fn batch_items_are_read_in_their_three_shapes() {
        assert!(matches!(
            parse_batch_item(Value::Null),
            Err(GraphError::BatchItemIncomplete)
        ));
        let ok = serde_json::json!({"code": 200, "body": "{\"id\":\"5\"}"});
        assert_eq!(parse_batch_item(ok).expect("ok")["id"], "5");
        let err = serde_json::json!({"code": 400, "body": "{\"error\":{\"message\":\"x\",\"code\":80008}}"});
        let e = parse_batch_item(err).unwrap_err();
        assert_eq!(e.code(), Some(80008));
    }

    #[test]
    fn a_batch_item_code_that_is_no_http_status_is_malformed_not_truncated() {
        // 65,936 would wrap to 400 and 65,736 to 200 as a u16.
        for code in [65_936u64, 65_736, 99, 1_000] {
            let item = serde_json::json!({"code": code, "body": "{\"error\":{\"message\":\"x\",\"code\":1}}"});
            let e = parse_batch_item(item).unwrap_err();
            assert_eq!(e.reason(), "malformed", "{code}: {e}");
        }
    }
}
