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
use crate::store::accounts::{self, ManagedAccount};
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
        .route("/accounts", get(list).post(create))
        .route("/accounts/{id}", get(one).put(update).delete(remove))
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
    let (rows, unpolled) = match (
        s.store.managed_accounts_read().await,
        s.store.managed_unpolled().await,
    ) {
        (Ok(m), Ok(u)) => (m, u),
        (Err(e), _) | (_, Err(e)) => return store_error(&e, "the accounts"),
    };
    let managed = Fleet::new(&rows).with_whatomate(&s);
    match s
        .store
        .phone_page(page.limit, page.offset, stale_after)
        .await
    {
        Ok(Page { items, total }) => {
            let mut out: Vec<Value> = items
                .iter()
                .map(|e| managed.view(e))
                .collect::<Result<_, _>>()
                .unwrap_or_default();
            // The numbers added through the API and not polled yet come after the polled ones.
            let skip = u64::from(page.offset).saturating_sub(total);
            let room = (page.limit as usize).saturating_sub(out.len());
            out.extend(
                unpolled
                    .iter()
                    .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                    .take(room)
                    .map(pending_view),
            );
            success_of(Listed {
                items: out,
                total: total + unpolled.len() as u64,
                limit: page.limit,
                offset: page.offset,
            })
        }
        Err(e) => store_error(&e, "the accounts"),
    }
}

/// Who manages each target: the fleet API (active rows, by number and by whole WABA), or
/// nobody any more (removed through the API); anything else is the config's.
struct Fleet<'a> {
    active: std::collections::HashMap<&'a str, &'a ManagedAccount>,
    removed: std::collections::HashSet<&'a str>,
    /// The numbers `[[whatomate]]` listed last.
    whatomate: std::collections::HashSet<String>,
}

impl<'a> Fleet<'a> {
    fn new(rows: &'a [ManagedAccount]) -> Fleet<'a> {
        let mut active = std::collections::HashMap::new();
        let mut removed = std::collections::HashSet::new();
        for r in rows {
            if r.removed_at.is_none() {
                active.insert(r.target_id.as_str(), r);
            } else {
                removed.insert(r.target_id.as_str());
            }
        }
        Fleet {
            active,
            removed,
            whatomate: Default::default(),
        }
    }

    /// With the numbers the runtime's `[[whatomate]]` instances listed last.
    fn with_whatomate(mut self, s: &AppState) -> Fleet<'a> {
        self.whatomate = s.runtime.current().poller.whatomate_numbers();
        self
    }

    /// The account with `managed_by` (and its masked token when it has one).
    fn view(&self, e: &StatusEntry) -> Result<Value, serde_json::Error> {
        let own = self.active.get(e.id.as_str());
        let by_waba = e
            .waba_id
            .as_deref()
            .and_then(|w| self.active.get(w))
            .filter(|a| a.kind == accounts::KIND_WABA);
        let managed_by = if own.is_some() || by_waba.is_some() {
            "api"
        } else if self.whatomate.contains(&e.id) {
            "whatomate"
        } else if self.removed.contains(e.id.as_str()) {
            "none"
        } else {
            "config"
        };
        let mut v = serde_json::to_value(account(e))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("managed_by".into(), json!(managed_by));
            if let Some(a) = own {
                obj.insert("account_name".into(), json!(a.name));
                if let Some(t) = a.masked_token() {
                    obj.insert("access_token".into(), json!(t));
                }
            }
        }
        Ok(v)
    }
}

/// An account of the fleet API no poll has read yet (or a whole WABA): `pending`.
fn pending_view(a: &ManagedAccount) -> Value {
    let waba = a.kind == accounts::KIND_WABA;
    let mut v = json!({
        "id": a.target_id,
        "name": a.name,
        "account_name": a.name,
        "kind": a.kind,
        "phone_number": null,
        "phone_number_id": if waba { Value::Null } else { json!(a.target_id) },
        "business_account_id": if waba { json!(a.target_id) } else { json!(a.waba_id) },
        "status": "pending",
        "source": a.source,
        "present": false,
        "managed_by": "api",
        "created_at": a.created_at,
        "updated_at": a.updated_at,
    });
    if let Some(t) = a.masked_token()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("access_token".into(), json!(t));
    }
    v
}

/// Writes need the API token: without `[daemon] api_token` (the reads may be open on a
/// loopback listener) they are refused.
fn writes_need_token(s: &AppState) -> Option<Response> {
    s.runtime.current().api_token.is_none().then(|| {
        error(
            StatusCode::FORBIDDEN,
            "changing the monitored accounts needs the API token: set [daemon] api_token_file (or api_token_env) and send `Authorization: Bearer <token>`",
        )
    })
}

/// Who a write is recorded as: the API token has no name of its own, so "api".
const ACTOR: &str = "api";

/// A Graph object id: digits only, as Meta's ids are.
fn valid_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = id.chars().take(40).collect();
        return Err(format!(
            "`{what}` must be a Graph object id (1 to 32 digits), not {shown:?}"
        ));
    }
    Ok(())
}

fn valid_name(name: &str) -> Result<&str, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err("`name` must be 1 to 200 characters on one line".into());
    }
    Ok(name)
}

/// The token sealed for `target`, with the hint the API shows (its first 4 characters, for
/// tokens long enough that they give little away), and the key-check value.
type Sealed = ((Vec<u8>, Option<String>), Vec<u8>);

fn seal_token(
    s: &AppState,
    target: &str,
    token: &str,
) -> Result<Sealed, (StatusCode, &'static str)> {
    let token = token.trim();
    if token.len() < 8
        || token.len() > 4096
        || crate::secrets::validate_secret_text(token).is_err()
        || token.chars().any(char::is_whitespace)
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "`access_token` must be 8 to 4096 printable characters on one line, without spaces",
        ));
    }
    let rt = s.runtime.current();
    let Some(key) = rt.poller.secret_key() else {
        return Err((
            StatusCode::CONFLICT,
            "an `access_token` is stored encrypted, and [daemon] secret_key_file is not set: create a key with `openssl rand -hex 32 > /etc/waba-monitor/secret.key && chmod 600 /etc/waba-monitor/secret.key`, set secret_key_file to it and reload; or leave access_token out to read the number with its source's token",
        ));
    };
    crate::redact::register(&secrecy::SecretString::from(token.to_owned()));
    let hint = (token.chars().count() >= 16).then(|| token.chars().take(4).collect::<String>());
    let sealed = key.seal(token.as_bytes(), target.as_bytes());
    let check = key.seal(accounts::KEY_CHECK_PLAIN, accounts::KEY_CHECK_CONTEXT);
    Ok(((sealed, hint), check))
}

/// Why the config owns `id`, if it does: a config target cannot be changed through the API.
fn config_owner(cfg: &crate::config::Config, id: &str) -> Option<String> {
    for m in &cfg.meta {
        if m.phone_numbers.iter().any(|p| p == id) {
            return Some(format!(
                "number {id} is in phone_numbers of [[meta]] \"{}\"",
                m.name
            ));
        }
        if m.wabas.iter().any(|w| w == id) {
            return Some(format!("WABA {id} is in wabas of [[meta]] \"{}\"", m.name));
        }
        if m.businesses.iter().any(|b| b == id) {
            return Some(format!(
                "business {id} is in businesses of [[meta]] \"{}\"",
                m.name
            ));
        }
    }
    None
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccountBody {
    name: String,
    phone_number_id: Option<String>,
    business_account_id: Option<String>,
    access_token: Option<String>,
    /// The `[[meta]]` source to poll it with; the first one when absent.
    source: Option<String>,
    /// Whatomate's; accepted and not used (webhooks are configured in `[webhooks]`).
    #[allow(dead_code)]
    webhook_verify_token: Option<String>,
}

/// `POST /api/accounts`: adds a number (or, with only `business_account_id`, a whole WABA)
/// polled from the next cycle.
async fn create(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    if let Some(r) = writes_need_token(&s) {
        return r;
    }
    let new: NewAccountBody = match serde_json::from_slice(&body) {
        Ok(n) => n,
        // serde's message may quote a value; never one from a token field, which is a string
        // (a type error names the type, not the value).
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "not an account: {} (expected {{\"name\", \"phone_number_id\", \"business_account_id\", \"access_token\"?}})",
                    crate::redact::redact(&e.to_string())
                ),
            );
        }
    };
    let name = match valid_name(&new.name) {
        Ok(n) => n.to_owned(),
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let phone = new
        .phone_number_id
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let waba = new
        .business_account_id
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty());
    for (what, id) in [("phone_number_id", phone), ("business_account_id", waba)] {
        if let Some(id) = id
            && let Err(why) = valid_id(what, id)
        {
            return error(StatusCode::BAD_REQUEST, &why);
        }
    }
    let (kind, target) = match (phone, waba) {
        (Some(p), _) => (accounts::KIND_PHONE, p),
        (None, Some(w)) => (accounts::KIND_WABA, w),
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give `phone_number_id` (one number) or `business_account_id` alone (the whole WABA)",
            );
        }
    };
    if kind == accounts::KIND_WABA && new.access_token.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "an `access_token` is used for one number: add the WABA's numbers one by one with it (phone_number_id), or leave it out to read the whole WABA with its source's token",
        );
    }
    let rt = s.runtime.current();
    let metas = rt.poller.meta_source_names();
    let source = match &new.source {
        Some(name) if metas.contains(name) => Some(name.clone()),
        Some(name) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "no [[meta]] source is named {:?}; the configured ones are {:?}",
                    name.chars().take(60).collect::<String>(),
                    metas
                ),
            );
        }
        None if metas.is_empty() => {
            return error(
                StatusCode::BAD_REQUEST,
                "the configuration has no [[meta]] source to poll the account with: add one",
            );
        }
        None => None,
    };
    for id in [Some(target), waba.filter(|w| *w != target)]
        .into_iter()
        .flatten()
    {
        if let Some(why) = config_owner(&rt.config, id) {
            return error(
                StatusCode::CONFLICT,
                &format!("already monitored: {why} (managed by the config file)"),
            );
        }
    }
    let (token, check) = match new.access_token.as_deref() {
        Some(t) => match seal_token(&s, target, t) {
            Ok((sealed, check)) => (Some(sealed), Some(check)),
            Err((code, why)) => return error(code, why),
        },
        None => (None, None),
    };
    let account = accounts::NewAccount {
        kind,
        target_id: target,
        waba_id: if kind == accounts::KIND_PHONE {
            waba
        } else {
            None
        },
        name: &name,
        source: source.as_deref(),
        token,
    };
    match s
        .store
        .add_managed(&account, check.as_deref(), ACTOR, chrono::Utc::now())
        .await
    {
        Ok(Ok(row)) => {
            tracing::info!(kind, id = %target, actor = ACTOR, own_token = row.token.is_some(), "account added through the fleet API; polled from the next cycle");
            (
                StatusCode::CREATED,
                axum::Json(json!({"status": "success", "data": pending_view(&row)})),
            )
                .into_response()
        }
        Ok(Err(accounts::Refused::ManagedByApi)) => error(
            StatusCode::CONFLICT,
            &format!(
                "{target} is already managed through the API (PUT /api/accounts/{target} changes it)"
            ),
        ),
        Ok(Err(accounts::Refused::WatchedBy(source))) => error(
            StatusCode::CONFLICT,
            &format!(
                "{target} is already monitored through source {source:?} of the config file (managed by the config file)"
            ),
        ),
        Err(e) => store_error(&e, "the account"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    access_token: Option<String>,
}

/// 409 for a target the config watches, 404 for an unknown one.
async fn not_managed(s: &AppState, id: &str, verb: &str) -> Response {
    let rt = s.runtime.current();
    if let Some(why) = config_owner(&rt.config, id) {
        return error(
            StatusCode::CONFLICT,
            &format!("managed by the config file: {verb} it there ({why})"),
        );
    }
    match s.store.phone(id, rt.stale_after).await {
        Ok(Some(e)) if e.present => error(
            StatusCode::CONFLICT,
            &format!(
                "managed by the config file: {verb} it there (number {id} is read through source {:?})",
                e.source
            ),
        ),
        Ok(_) => error(
            StatusCode::NOT_FOUND,
            &format!("no account with id {id} is managed through the API"),
        ),
        Err(e) => store_error(&e, "an account"),
    }
}

/// `PUT /api/accounts/{id}`: a new `name` and/or `access_token` of an API account.
async fn update(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = writes_need_token(&s) {
        return r;
    }
    let upd: UpdateBody = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "not an account update: {} (expected {{\"name\"?, \"access_token\"?}})",
                    crate::redact::redact(&e.to_string())
                ),
            );
        }
    };
    let name = match upd.name.as_deref().map(valid_name) {
        Some(Ok(n)) => Some(n.to_owned()),
        Some(Err(why)) => return error(StatusCode::BAD_REQUEST, &why),
        None => None,
    };
    let current = match s.store.managed_accounts_read().await {
        Ok(rows) => rows
            .into_iter()
            .find(|r| r.target_id == id && r.removed_at.is_none()),
        Err(e) => return store_error(&e, "the account"),
    };
    let Some(current) = current else {
        return not_managed(&s, &id, "change").await;
    };
    if upd.access_token.is_some() && current.kind == accounts::KIND_WABA {
        return error(
            StatusCode::BAD_REQUEST,
            "an `access_token` is used for one number, not a whole WABA",
        );
    }
    let (token, check) = match upd.access_token.as_deref() {
        Some(t) => match seal_token(&s, &id, t) {
            Ok((sealed, check)) => (Some(sealed), Some(check)),
            Err((code, why)) => return error(code, why),
        },
        None => (None, None),
    };
    match s
        .store
        .update_managed(
            &id,
            name.as_deref(),
            token,
            check.as_deref(),
            ACTOR,
            chrono::Utc::now(),
        )
        .await
    {
        Ok(Some(row)) => {
            tracing::info!(id = %id, actor = ACTOR, "account changed through the fleet API");
            success(pending_or_polled(&s, &row).await)
        }
        Ok(None) => not_managed(&s, &id, "change").await,
        Err(e) => store_error(&e, "the account"),
    }
}

/// The account as `GET /api/accounts/{id}` shows it, for a write's answer.
async fn pending_or_polled(s: &AppState, row: &ManagedAccount) -> Value {
    let rows = s.store.managed_accounts_read().await.unwrap_or_default();
    match s
        .store
        .phone(&row.target_id, s.runtime.current().stale_after)
        .await
    {
        Ok(Some(e)) => Fleet::new(&rows)
            .with_whatomate(s)
            .view(&e)
            .unwrap_or_else(|_| pending_view(row)),
        _ => pending_view(row),
    }
}

/// `DELETE /api/accounts/{id}`: stops polling an API account; its history is kept.
async fn remove(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Response {
    if let Some(r) = writes_need_token(&s) {
        return r;
    }
    match s.store.remove_managed(&id, ACTOR, chrono::Utc::now()).await {
        Ok(true) => {
            tracing::info!(id = %id, actor = ACTOR, "account removed through the fleet API; no longer polled, history kept");
            success(json!({"id": id, "deleted": true, "managed_by": "none"}))
        }
        Ok(false) => not_managed(&s, &id, "remove").await,
        Err(e) => store_error(&e, "the account"),
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
    let rows = match s.store.managed_accounts_read().await {
        Ok(r) => r,
        Err(e) => return store_error(&e, "the accounts"),
    };
    let e = match find(&s, &id).await {
        Ok(e) => e,
        Err(r) => {
            // Added through the API and not read yet (or a whole WABA).
            return match rows
                .iter()
                .find(|a| a.target_id == id && a.removed_at.is_none())
            {
                Some(a) => success(pending_view(a)),
                None => r,
            };
        }
    };
    let fleet = Fleet::new(&rows).with_whatomate(&s);
    let template_problems = match e.waba_id.as_deref() {
        Some(waba) => match s.store.templates(Some(waba), true).await {
            Ok(t) => t,
            Err(err) => return store_error(&err, "the templates"),
        },
        None => Vec::new(),
    };
    let mut v = match fleet.view(&e) {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not build the answer",
            );
        }
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "template_problems".into(),
            serde_json::to_value(template_problems).unwrap_or_default(),
        );
    }
    success(v)
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
