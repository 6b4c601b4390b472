//! The status API in the shape of Whatomate's Accounts API.

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::AppState;
use crate::sources::SingleRead;
use crate::sources::graph::GraphError;
use crate::store::{Page, StatusEntry, Store, StoreError};

/// Items in a list answer when `?limit=` is not given.
pub const DEFAULT_PAGE: u32 = 100;
/// The largest `?limit=` accepted: a list answer is bounded whatever the fleet.
pub const MAX_PAGE: u32 = 1000;

/// API reads served at once: half the CPUs, at least one, at most the read connections. A
/// crowd of readers queues here (holding nothing but its HTTP connection) instead of taking
/// the whole machine from the poll cycle; the request timeout bounds the wait.
fn read_concurrency() -> usize {
    let half = std::thread::available_parallelism().map_or(1, |n| n.get() / 2);
    half.clamp(1, Store::READ_CONNECTIONS as usize)
}

pub fn router(state: AppState) -> Router<AppState> {
    let gate = Arc::new(Semaphore::new(read_concurrency()));
    let reads = Router::new()
        .route("/accounts", get(list))
        .route("/accounts/{id}", get(one))
        .route("/accounts/{id}/history", get(history))
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            let gate = gate.clone();
            async move {
                // The permit is held until the answer is built (the JSON body is in memory).
                match gate.acquire_owned().await {
                    Ok(_permit) => next.run(req).await,
                    Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
                }
            }
        }));
    Router::new()
        .merge(reads)
        .route("/accounts/{id}/test", post(test))
        .route("/silences", get(silences_list).post(silences_add))
        .route("/silences/{id}", axum::routing::delete(silences_expire))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state, require_token))
}

fn success(data: Value) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"status": "success", "data": data})),
    )
        .into_response()
}

fn error(code: StatusCode, message: &str) -> Response {
    (
        code,
        axum::Json(json!({"status": "error", "message": message})),
    )
        .into_response()
}

/// A whole answer, serialized straight from its items (no intermediate JSON tree).
fn success_of<T: Serialize>(data: T) -> Response {
    #[derive(Serialize)]
    struct Envelope<T> {
        status: &'static str,
        data: T,
    }
    (
        StatusCode::OK,
        axum::Json(Envelope {
            status: "success",
            data,
        }),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method",
    )
}

/// A store error as an answer: 503 with `Retry-After` when every read connection stayed busy
/// (a crowd of readers), 500 otherwise. The detail goes to the log, not to the client.
fn store_error(e: &StoreError, what: &str) -> Response {
    if e.is_busy() {
        tracing::warn!(error = %e, "status API: every read connection is busy");
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is busy answering other requests; try again in a second",
        );
        r.headers_mut().insert(header::RETRY_AFTER, 1.into());
        return r;
    }
    tracing::error!(error = %e, "status API: could not read {what}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "could not read the database",
    )
}

/// `Query` whose rejection (a malformed query string, an unknown or repeated parameter) is
/// the JSON error envelope, not axum's plain text.
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(error(StatusCode::BAD_REQUEST, &e.body_text())),
        }
    }
}

/// `Path` whose rejection is the JSON error envelope.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(error(StatusCode::BAD_REQUEST, &e.body_text())),
        }
    }
}

/// `?limit=N&offset=M` of a list. Strings, so that a bad value gets a message naming it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Paging {
    limit: u32,
    offset: u32,
}

impl PageQuery {
    /// The paging asked for, or why it is refused (a 400).
    fn paging(&self) -> Result<Paging, String> {
        Ok(Paging {
            limit: param("limit", self.limit.as_deref(), DEFAULT_PAGE, 1..=MAX_PAGE)?,
            offset: param("offset", self.offset.as_deref(), 0, 0..=u32::MAX)?,
        })
    }
}

/// A whole number in `range`, `default` when absent; otherwise a message naming the parameter.
fn param(
    name: &str,
    raw: Option<&str>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, String> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<u32>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => {
            let shown: String = raw.chars().take(40).collect();
            Err(format!(
                "`{name}` must be a whole number from {} to {} (default {default}), not {shown:?}",
                range.start(),
                range.end()
            ))
        }
    }
}

/// A page of a list: the items, how many there are in all, and where the page starts.
#[derive(Serialize)]
struct Listed<T> {
    items: Vec<T>,
    total: u64,
    limit: u32,
    offset: u32,
}

/// Compares without an early exit, so response time does not reveal how much of a guessed
/// token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let rt = s.runtime.current();
    if let Some(token) = &rt.api_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong `Authorization: Bearer` token",
            );
        }
    }
    next.run(req).await
}

/// Silences change what is sent: without `[daemon] api_token` (the rest of the API may be open
/// on a private listener) they are refused.
fn silences_need_token(s: &AppState) -> Option<Response> {
    s.runtime.current().api_token.is_none().then(|| {
        error(
            StatusCode::FORBIDDEN,
            "silences need the API token: set [daemon] api_token_file (or api_token_env) and send `Authorization: Bearer <token>`",
        )
    })
}

/// `GET /api/silences`: active and pending silences, and those that ended in the last 7 days.
async fn silences_list(State(s): State<AppState>) -> Response {
    if let Some(r) = silences_need_token(&s) {
        return r;
    }
    match s
        .store
        .silences(chrono::Utc::now(), chrono::Duration::days(7))
        .await
    {
        Ok(list) => success_of(list),
        Err(e) => store_error(&e, "the silences"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    #[serde(default)]
    wabas: Vec<String>,
    #[serde(default)]
    numbers: Vec<String>,
    #[serde(default)]
    businesses: Vec<String>,
    #[serde(default)]
    sources: Vec<String>,
    /// "2h", "30m"...
    #[serde(rename = "for")]
    duration: String,
    comment: String,
    author: Option<String>,
}

/// `POST /api/silences` with `{"wabas": [..], "for": "2h", "comment": "..", "author": ".."}`:
/// the new silence's id.
async fn silences_add(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    if let Some(r) = silences_need_token(&s) {
        return r;
    }
    let new: NewSilence = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a silence: {e}")),
    };
    let matchers = crate::store::silences::Matchers {
        wabas: new.wabas,
        numbers: new.numbers,
        businesses: new.businesses,
        sources: new.sources,
    };
    let span = match crate::store::silences::validate(&matchers, &new.duration, &new.comment) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let now = chrono::Utc::now();
    let author = new
        .author
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "api".to_owned());
    match s
        .store
        .add_silence(&matchers, now, now + span, new.comment.trim(), &author, now)
        .await
    {
        Ok(id) => {
            tracing::info!(id, author = %author, matches = %matchers.describe(), "silence added through the API");
            success(json!({ "id": id }))
        }
        Err(e) => store_error(&e, "the silence"),
    }
}

/// `DELETE /api/silences/{id}`: ends it now.
async fn silences_expire(State(s): State<AppState>, ApiPath(id): ApiPath<i64>) -> Response {
    if let Some(r) = silences_need_token(&s) {
        return r;
    }
    match s.store.expire_silence(id, "api", chrono::Utc::now()).await {
        Ok(true) => success(json!({ "id": id, "expired": true })),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            &format!("no active or pending silence with id {id}"),
        ),
        Err(e) => store_error(&e, "the silence"),
    }
}

/// Maps Meta's phone status onto the Accounts API's four statuses:
/// - `active`: CONNECTED, and FLAGGED / WARNED / RATE_LIMITED (still sending; the warning is in
///   `meta_status`);
/// - `suspended`: BANNED, BLOCKED, RESTRICTED (Meta stopped or limited sending);
/// - `disconnected`: DISCONNECTED, DELETED, MIGRATED, or gone from its WABA;
/// - `pending`: PENDING, UNVERIFIED, MANUAL_REVIEW, UNKNOWN, values this version does not
///   know, or not read yet.
pub fn account_status(meta_status: Option<&str>, present: bool) -> &'static str {
    if !present {
        return "disconnected";
    }
    match meta_status {
        Some("CONNECTED" | "FLAGGED" | "WARNED" | "RATE_LIMITED") => "active",
        Some("BANNED" | "BLOCKED" | "RESTRICTED") => "suspended",
        Some("DISCONNECTED" | "DELETED" | "MIGRATED") => "disconnected",
        _ => "pending",
    }
}

/// One account (a monitored number) as the API shows it.
#[derive(Serialize)]
struct Account<'a> {
    id: &'a str,
    name: Option<&'a str>,
    phone_number: Option<&'a str>,
    phone_number_id: &'a str,
    business_account_id: Option<&'a str>,
    business_account_name: Option<&'a str>,
    status: &'static str,
    meta_status: Option<&'a str>,
    quality_rating: Option<&'a str>,
    messaging_limit: Option<&'a str>,
    health: Option<&'a str>,
    health_entities: Option<&'a Value>,
    name_status: Option<&'a str>,
    throughput: Option<&'a str>,
    source: &'a str,
    present: bool,
    stale: bool,
    created_at: &'a str,
    source_created_at: Option<&'a str>,
    source_updated_at: Option<&'a str>,
    last_polled_at: &'a str,
    last_changed_at: &'a str,
}

fn account(e: &StatusEntry) -> Account<'_> {
    Account {
        id: &e.id,
        name: e.verified_name.as_deref(),
        phone_number: e.display_phone_number.as_deref(),
        phone_number_id: &e.id,
        business_account_id: e.waba_id.as_deref(),
        business_account_name: e.name.as_deref(),
        status: account_status(e.status.as_deref(), e.present),
        meta_status: e.status.as_deref(),
        quality_rating: e.quality_rating.as_deref(),
        messaging_limit: e.messaging_limit.as_deref(),
        health: e.health.as_deref(),
        health_entities: e.health_entities.as_ref(),
        name_status: e.name_status.as_deref(),
        throughput: e.throughput.as_deref(),
        source: &e.source,
        present: e.present,
        stale: e.stale,
        created_at: &e.first_seen_at,
        source_created_at: e.source_created_at.as_deref(),
        source_updated_at: e.source_updated_at.as_deref(),
        last_polled_at: &e.last_polled_at,
        last_changed_at: &e.last_changed_at,
    }
}

/// `GET /api/accounts[?limit=N&offset=M]`: one page of the monitored numbers (default 100,
/// at most 1000) and their total.
async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<PageQuery>) -> Response {
    let page = match q.paging() {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let stale_after = s.runtime.current().stale_after;
    match s
        .store
        .phone_page(page.limit, page.offset, stale_after)
        .await
    {
        Ok(Page { items, total }) => success_of(Listed {
            items: items.iter().map(account).collect(),
            total,
            limit: page.limit,
            offset: page.offset,
        }),
        Err(e) => store_error(&e, "the accounts"),
    }
}

async fn find(s: &AppState, id: &str) -> Result<StatusEntry, Response> {
    match s.store.phone(id, s.runtime.current().stale_after).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            &format!("no monitored phone number with id {id}"),
        )),
        Err(e) => Err(store_error(&e, "an account")),
    }
}

/// `GET /api/accounts/{id}`: the number, and the templates of its WABA that are not
/// healthy (`template_problems`: paused, disabled, rejected, flagged, yellow, red...), since a
/// number in good health sends nothing through a paused template.
async fn one(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Response {
    #[derive(Serialize)]
    struct WithTemplates<'a> {
        #[serde(flatten)]
        account: Account<'a>,
        template_problems: Vec<crate::store::templates::TemplateRow>,
    }
    let e = match find(&s, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let template_problems = match e.waba_id.as_deref() {
        Some(waba) => match s.store.templates(Some(waba), true).await {
            Ok(t) => t,
            Err(err) => return store_error(&err, "the templates"),
        },
        None => Vec::new(),
    };
    success_of(WithTemplates {
        account: account(&e),
        template_problems,
    })
}

/// `GET /api/accounts/{id}/history[?limit=N&offset=M]`: its changes, newest first, paged
/// like the list.
async fn history(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Response {
    let page = match q.paging() {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    if let Err(r) = find(&s, &id).await {
        return r;
    }
    match s.store.history_page(&id, page.limit, page.offset).await {
        Ok(Page { items, total }) => success_of(Listed {
            items,
            total,
            limit: page.limit,
            offset: page.offset,
        }),
        Err(e) => store_error(&e, "the history"),
    }
}

/// Reads the number from Meta now through its source. Records nothing: the next cycle does.
async fn test(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Response {
    let entry = match find(&s, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let poller = s.runtime.current().poller.clone();
    match poller.read_number(&id, &entry.source).await {
        None => error(
            StatusCode::NOT_FOUND,
            &format!(
                "number {id} was reported by source {}, which the configuration in force no longer has",
                entry.source
            ),
        ),
        Some(SingleRead::Unsupported(why)) => error(
            StatusCode::NOT_IMPLEMENTED,
            &format!(
                "number {id} is monitored through source {}: {why}",
                entry.source
            ),
        ),
        Some(SingleRead::Read(p)) => success(json!({
            "connected": true,
            "phone_number": p.display_phone_number,
            "display_phone_number": p.display_phone_number,
            "verified_name": p.verified_name,
            "quality_rating": p.quality_rating,
            "status": p.status,
        })),
        Some(SingleRead::Failed(GraphError::OverQuota { retry_after, .. })) => {
            let secs = retry_after.as_secs().max(1);
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "not read: the quota of number {id}'s WABA is used up for now (every call counts against it); try again in {secs} s"
                ),
            );
            r.headers_mut().insert(header::RETRY_AFTER, secs.into());
            r
        }
        Some(SingleRead::Failed(e)) => error(
            StatusCode::BAD_GATEWAY,
            &format!("Meta did not answer for {id}: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_meta_status_maps_to_one_of_the_four_account_statuses() {
        for s in crate::model::PhoneStatus::KNOWN {
            let mapped = account_status(Some(s), true);
            assert!(
                ["active", "pending", "disconnected", "suspended"].contains(&mapped),
                "{s}"
            );
        }
        assert_eq!(account_status(Some("CONNECTED"), true), "active");
        assert_eq!(account_status(Some("BANNED"), true), "suspended");
        assert_eq!(account_status(Some("CONNECTED"), false), "disconnected");
        assert_eq!(account_status(Some("SOMETHING_NEW"), true), "pending");
        assert_eq!(account_status(None, true), "pending");
    }

    #[test]
    fn paging_parameters_are_whole_numbers_in_their_range() {
        assert_eq!(param("limit", None, 100, 1..=MAX_PAGE), Ok(100));
        assert_eq!(param("limit", Some("1"), 100, 1..=MAX_PAGE), Ok(1));
        assert_eq!(param("limit", Some("1000"), 100, 1..=MAX_PAGE), Ok(1000));
        assert_eq!(param("offset", Some("0"), 0, 0..=u32::MAX), Ok(0));
        for bad in ["0", "1001", "-1", "1.5", "", "abc", " 5", "99999999999"] {
            let why = param("limit", Some(bad), 100, 1..=MAX_PAGE).expect_err(bad);
            assert!(
                why.contains("`limit`") && why.contains("1 to 1000"),
                "{why}"
            );
        }
        let long = "9".repeat(500);
        let why = param("offset", Some(&long), 0, 0..=u32::MAX).expect_err("too big");
        assert!(why.len() < 200, "the value is quoted cut: {why}");
    }

    #[test]
    fn tokens_are_compared_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
