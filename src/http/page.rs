//! The status page for people: `/` (the fleet, worst first, filtered and searched through the
//! query string, paged), `/numbers/{id}` and `/wabas/{id}` (state, Meta's health entities, a
//! 30-day chart, the timeline, the emails sent, the templates with problems), the login form
//! and the one stylesheet.
//!
//! Server-rendered HTML (`page_html.rs`, maud: everything interpolated is escaped), no
//! JavaScript, nothing loaded from another host, a strict Content-Security-Policy on every
//! answer. Access: on a loopback `[daemon] listen` the page is open (like `/metrics`); on any
//! other address it needs the API token, as `Authorization: Bearer` or through the login form,
//! which sets a cookie holding a value derived from the token (an HMAC of a fixed label keyed
//! by the token), never the token itself.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tokio::sync::Semaphore;

use super::AppState;
use super::page_html as html;
use crate::alerts::rules::{Severity, verdict};
use crate::config::TargetRef;
use crate::model::{HealthEntity, field};
use crate::store::page::{FieldSeries, FleetNumber, FleetWaba};
use crate::store::silences::Silence;
use crate::store::{Store, StoreError};
use crate::timefmt::parse_rfc3339;

/// Every answer of the page carries this policy: its own stylesheet, inline SVG and `data:`
/// images only; forms post to the page itself; never framed.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";

/// The one stylesheet, in the binary.
const CSS: &str = include_str!("page.css");

/// The session cookie of the login form.
pub const SESSION_COOKIE: &str = "waba_monitor_session";
/// How long a login lasts.
const SESSION_SECONDS: u64 = 7 * 24 * 3600;

/// Lines of the fleet table per page (a WABA header, a number, a collapsed line: one each).
pub const PAGE_ROWS: usize = 500;
/// Up to this many numbers (after filters) every number is listed; above it, healthy and gone
/// numbers are folded into one line per WABA unless a filter or a search narrows the list.
pub const EXPAND_ALL: usize = 200;
/// Changes shown on a number's or a WABA's timeline.
const HISTORY_SHOWN: u32 = 200;
/// Emails listed on a number's or a WABA's page.
const EMAILS_SHOWN: u32 = 50;
/// The chart's window.
const CHART_DAYS: i64 = 30;
/// The longest filter value kept from a query string.
const MAX_PARAM: usize = 200;

/// The stylesheet's URL: versioned by its content, so it can be cached for a year.
pub(super) static CSS_HREF: LazyLock<String> = LazyLock::new(|| {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in CSS.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("/static/page.css?v={h:016x}")
});

pub fn router(state: AppState) -> Router<AppState> {
    let gate = Arc::new(Semaphore::new(read_concurrency()));
    let pages = Router::new()
        .route("/", get(fleet))
        .route("/numbers/{id}", get(number))
        .route("/wabas/{id}", get(waba))
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            let gate = gate.clone();
            async move {
                match gate.acquire_owned().await {
                    Ok(_permit) => next.run(req).await,
                    Err(_) => message(StatusCode::SERVICE_UNAVAILABLE, "Shutting down", ""),
                }
            }
        }))
        .route_layer(middleware::from_fn_with_state(state, require_access));
    Router::new()
        .merge(pages)
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/page.css", get(stylesheet))
        .layer(middleware::map_response(secure_headers))
}

/// Page reads served at once: half the CPUs, at least one, at most the read connections (as
/// the status API).
fn read_concurrency() -> usize {
    let half = std::thread::available_parallelism().map_or(1, |n| n.get() / 2);
    half.clamp(1, Store::READ_CONNECTIONS as usize)
}

async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}

fn page(code: StatusCode, markup: maud::Markup) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn message(code: StatusCode, title: &str, text: &str) -> Response {
    page(code, html::message_page(title, text, &Viewer::default()))
}

fn store_error(e: &StoreError, what: &str) -> Response {
    if e.is_busy() {
        tracing::warn!(error = %e, "status page: every read connection is busy");
        let mut r = message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "The database is busy answering other requests; try again in a second.",
        );
        r.headers_mut().insert(header::RETRY_AFTER, 1.into());
        return r;
    }
    tracing::error!(error = %e, "status page: could not read {what}");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Database error",
        "The database could not be read; the daemon's log says why.",
    )
}

// ---------------------------------------------------------------------------------------------
// Access

/// Who is looking: a login through the form gets a logout button (and its CSRF token).
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub logout_csrf: Option<String>,
}

fn derive(token: &SecretString, label: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(token.expose_secret().as_bytes()) else {
        return String::new();
    };
    mac.update(label.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cookie value of a login: derived from the token, so it changes when the token does
/// and never reveals it.
fn session_value(token: &SecretString) -> String {
    derive(token, "waba-monitor status page session v1")
}

/// The CSRF token of the logout form (bound to the token like the session).
fn csrf_value(token: &SecretString) -> String {
    derive(token, "waba-monitor status page csrf v1")
}

/// Compares without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

enum Access {
    /// Loopback listener: open to whoever can connect.
    Open,
    Bearer,
    Cookie(String),
    Denied,
}

fn access(s: &AppState, headers: &HeaderMap) -> Access {
    let rt = s.runtime.current();
    if rt.config.daemon.listen.ip().is_loopback() {
        return Access::Open;
    }
    // A non-loopback listener needs a token (the config refuses one without); none would
    // leave nothing to check against: closed.
    let Some(token) = &rt.api_token else {
        return Access::Denied;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(given) = bearer
        && constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes())
    {
        return Access::Bearer;
    }
    if let Some(given) = cookie(headers, SESSION_COOKIE)
        && constant_time_eq(given.as_bytes(), session_value(token).as_bytes())
    {
        return Access::Cookie(csrf_value(token));
    }
    Access::Denied
}

async fn require_access(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let viewer = match access(&s, req.headers()) {
        Access::Open | Access::Bearer => Viewer::default(),
        Access::Cookie(csrf) => Viewer {
            logout_csrf: Some(csrf),
        },
        Access::Denied => {
            let wants_html = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
            if wants_html {
                let here = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let to = format!("/login?{}", encode_pairs(&[("next", here.as_str())]));
                return redirect(&to, None);
            }
            let mut r = message(
                StatusCode::UNAUTHORIZED,
                "Log in",
                "This page needs the API token: send `Authorization: Bearer <token>` or log in at /login.",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"waba-monitor\""),
            );
            return r;
        }
    };
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

fn redirect(to: &str, set_cookie: Option<String>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// Where to go after the login: a path of this site, nothing else (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 2000
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Whether the browser reached us over https (through a reverse proxy that says so): the
/// cookie is then `Secure`.
fn over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

fn form_pairs(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn query_pairs(raw: Option<&str>) -> HashMap<String, String> {
    raw.map(|q| form_pairs(q.as_bytes())).unwrap_or_default()
}

fn encode_pairs(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A form posted from another site is refused (with `form-action 'self'` and SameSite=Strict,
/// a browser would not send one anyway).
fn cross_site(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => false,
        (Some("null"), _) => true,
        (Some(o), Some(h)) => {
            let o = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .unwrap_or(o);
            !o.eq_ignore_ascii_case(h)
        }
        (Some(_), None) => true,
    }
}

async fn login_form(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let q = query_pairs(q.as_deref());
    let next = safe_next(q.get("next").map(String::as_str));
    if let Access::Open = access(&s, &HeaderMap::new()) {
        return redirect(&next, None);
    }
    page(StatusCode::OK, html::login_page(&next, None))
}

async fn login(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if cross_site(&headers) {
        return message(
            StatusCode::FORBIDDEN,
            "Refused",
            "A login posted from another site.",
        );
    }
    let form = form_pairs(&body);
    let next = safe_next(form.get("next").map(String::as_str));
    let rt = s.runtime.current();
    if rt.config.daemon.listen.ip().is_loopback() {
        return redirect(&next, None);
    }
    let Some(token) = &rt.api_token else {
        return message(
            StatusCode::FORBIDDEN,
            "No token configured",
            "Set [daemon] api_token_file (or api_token_env) to use the page on this address.",
        );
    };
    let given = form.get("token").map_or("", |t| t.trim());
    if !constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
        tracing::warn!("status page: a login with a wrong token");
        // A guesser gets a few tries a second per connection, not thousands.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        return page(
            StatusCode::UNAUTHORIZED,
            html::login_page(&next, Some("That is not the API token.")),
        );
    }
    redirect(
        &next,
        Some(session_cookie(
            &session_value(token),
            SESSION_SECONDS,
            over_https(&headers),
        )),
    )
}

async fn logout(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let rt = s.runtime.current();
    let ok = !cross_site(&headers)
        && rt.api_token.as_ref().is_some_and(|t| {
            constant_time_eq(
                form.get("csrf").map_or("", String::as_str).as_bytes(),
                csrf_value(t).as_bytes(),
            )
        });
    if !ok {
        return message(
            StatusCode::FORBIDDEN,
            "Refused",
            "The logout form's CSRF token is missing or wrong.",
        );
    }
    redirect("/login", Some(session_cookie("", 0, over_https(&headers))))
}

// ---------------------------------------------------------------------------------------------
// Classification

/// How bad a target is now, from the alert rule table (`alerts::rules::verdict` of its current
/// values, as if first seen): what an alert would call critical is a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// No longer listed by its WABA (or portfolio): kept for its history.
    Gone,
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Critical, Level::Warning, Level::Ok, Level::Gone];

    /// The CSS class and the `?state=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Critical => "critical",
            Level::Warning => "warning",
            Level::Ok => "ok",
            Level::Gone => "gone",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Level::Critical => "Problem",
            Level::Warning => "Warning",
            Level::Ok => "Healthy",
            Level::Gone => "Gone",
        }
    }
}

fn level_of(values: &[(&str, Option<&str>)]) -> Level {
    values
        .iter()
        .filter_map(|(f, v)| verdict(f, None, (*v)?))
        .map(|v| match v.severity {
            Severity::Critical => Level::Critical,
            Severity::Warning => Level::Warning,
            Severity::Improving | Severity::Resolved => Level::Ok,
        })
        .max()
        .unwrap_or(Level::Ok)
}

pub fn number_level(n: &FleetNumber) -> Level {
    if !n.present {
        return Level::Gone;
    }
    level_of(&[
        (field::QUALITY_RATING, n.quality_rating.as_deref()),
        (field::STATUS, n.status.as_deref()),
        (field::HEALTH, n.health.as_deref()),
    ])
}

pub fn waba_level(w: &FleetWaba) -> Level {
    if !w.present {
        return Level::Gone;
    }
    level_of(&[
        (
            field::ACCOUNT_REVIEW_STATUS,
            w.account_review_status.as_deref(),
        ),
        (
            field::BUSINESS_VERIFICATION_STATUS,
            w.business_verification_status.as_deref(),
        ),
        (field::HEALTH, w.health.as_deref()),
    ])
}

fn silenced(silences: &[Silence], t: &TargetRef<'_>) -> bool {
    silences
        .iter()
        .any(|s| s.state == "active" && s.matchers.matches(t))
}

/// "3d 4h", "25m", "40s" since `ts` (empty when unreadable).
pub fn ago(now: DateTime<Utc>, ts: &str) -> String {
    let Some(t) = parse_rfc3339(ts) else {
        return String::new();
    };
    let secs = (now - t).num_seconds().max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet

/// The query string of `/`: `source`, `business`, `waba`, `state`, `q` and `page`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub source: String,
    pub business: String,
    pub waba: String,
    /// critical, warning, ok, gone, stale, silenced, or a value of quality, status, health.
    pub state: String,
    pub q: String,
    pub page: usize,
}

impl Filters {
    pub fn parse(raw: Option<&str>) -> Filters {
        let pairs = query_pairs(raw);
        let get = |k: &str| {
            pairs
                .get(k)
                .map(|v| v.trim().chars().take(MAX_PARAM).collect::<String>())
                .unwrap_or_default()
        };
        Filters {
            source: get("source"),
            business: get("business"),
            waba: get("waba"),
            state: get("state").to_ascii_lowercase(),
            q: get("q"),
            page: get("page").parse::<usize>().unwrap_or(1).max(1),
        }
    }

    /// Whether the list is narrowed enough to show every matching number.
    pub fn narrowed(&self) -> bool {
        !(self.waba.is_empty() && self.state.is_empty() && self.q.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty() && self.business.is_empty() && !self.narrowed()
    }

    /// The query string of these filters with `state` and `page` replaced (`None`: left out).
    pub fn href(&self, state: Option<&str>, page: Option<usize>) -> String {
        let page = page.map(|p| p.to_string());
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (k, v) in [
            ("q", self.q.as_str()),
            ("source", self.source.as_str()),
            ("business", self.business.as_str()),
            ("waba", self.waba.as_str()),
            ("state", state.unwrap_or("")),
            ("page", page.as_deref().unwrap_or("")),
        ] {
            if !v.is_empty() {
                pairs.push((k, v));
            }
        }
        if pairs.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{}", encode_pairs(&pairs))
        }
    }
}

/// One number of a WABA group.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub n: &'a FleetNumber,
    pub level: Level,
    pub silenced: bool,
}

/// A WABA and the numbers listed under it on this page.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// `None`: numbers whose WABA is not known.
    pub waba_id: Option<&'a str>,
    pub waba: Option<&'a FleetWaba>,
    pub waba_level: Level,
    pub waba_silenced: bool,
    /// The worst of the WABA and its matching numbers.
    pub level: Level,
    /// Matching numbers in the group (on every page).
    pub total: usize,
    /// Matching numbers per level, in [`Level::ALL`] order.
    pub by_level: [usize; 4],
    /// The numbers listed on this page.
    pub lines: Vec<Line<'a>>,
    /// Healthy and gone numbers folded into one line (not listed).
    pub folded: usize,
    /// The whole group is one line: every number healthy (or gone), the WABA too.
    pub collapsed: bool,
    /// Listed from a previous page on.
    pub continued: bool,
}

/// Numbers per state, over the numbers the scope filters and the search leave (the `state`
/// filter left out, so its counts stay visible).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub numbers: usize,
    pub wabas: usize,
    /// In [`Level::ALL`] order.
    pub by_level: [usize; 4],
    pub stale: usize,
    pub silenced: usize,
    pub quality: Vec<(String, usize)>,
    pub status: Vec<(String, usize)>,
}

pub struct FleetView<'a> {
    pub now: DateTime<Utc>,
    pub filters: &'a Filters,
    pub counts: Counts,
    pub groups: Vec<Group<'a>>,
    /// Numbers the filters leave, on every page.
    pub matching: usize,
    pub page: usize,
    pub pages: usize,
    /// Healthy numbers are folded into one line per WABA.
    pub folding: bool,
    pub silences: &'a [Silence],
    pub sources: Vec<&'a str>,
    pub fleet_numbers: usize,
    pub fleet_wabas: usize,
}

fn level_index(l: Level) -> usize {
    match l {
        Level::Critical => 0,
        Level::Warning => 1,
        Level::Ok => 2,
        Level::Gone => 3,
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn contains_ci(hay: Option<&str>, needle_lower: &str) -> bool {
    hay.is_some_and(|h| h.to_lowercase().contains(needle_lower))
}

struct Search {
    lower: String,
    digits: String,
}

impl Search {
    fn new(q: &str) -> Option<Search> {
        (!q.is_empty()).then(|| Search {
            lower: q.to_lowercase(),
            digits: digits(q),
        })
    }

    fn matches_waba(&self, id: Option<&str>, w: Option<&FleetWaba>) -> bool {
        id.is_some_and(|i| i.contains(&self.lower))
            || contains_ci(w.and_then(|w| w.name.as_deref()), &self.lower)
    }

    fn matches_number(&self, n: &FleetNumber) -> bool {
        // Digits typed with spaces or dashes ("+1 555-0101") match the display number's digits.
        let by_digits = self.digits.len() >= 3
            && n.display_phone_number
                .as_deref()
                .is_some_and(|d| digits(d).contains(&self.digits));
        by_digits
            || n.id.contains(&self.lower)
            || contains_ci(n.display_phone_number.as_deref(), &self.lower)
            || contains_ci(n.verified_name.as_deref(), &self.lower)
    }
}

fn matches_state(
    state: &str,
    level: Level,
    stale: bool,
    silenced: bool,
    values: &[Option<&str>],
) -> bool {
    match state {
        "" => true,
        "critical" | "problem" | "problems" => level == Level::Critical,
        "warning" | "warnings" => level == Level::Warning,
        "ok" | "healthy" => level == Level::Ok,
        "gone" => level == Level::Gone,
        "stale" => stale,
        "silenced" => silenced,
        raw => values.iter().flatten().any(|v| v.eq_ignore_ascii_case(raw)),
    }
}

/// Groups, sorts, folds and pages the fleet for `/`.
pub fn fleet_view<'a>(
    fleet: &'a crate::store::page::Fleet,
    f: &'a Filters,
    now: DateTime<Utc>,
) -> FleetView<'a> {
    let wabas: HashMap<&str, &FleetWaba> = fleet.wabas.iter().map(|w| (w.id.as_str(), w)).collect();
    let search = Search::new(&f.q);
    let mut counts = Counts::default();
    let mut quality: HashMap<&str, usize> = HashMap::new();
    let mut status: HashMap<&str, usize> = HashMap::new();
    // Per WABA id (None: unknown WABA): the matching numbers.
    let mut groups: HashMap<Option<&str>, Vec<Line<'a>>> = HashMap::new();
    let in_scope_waba = |id: Option<&str>, w: Option<&FleetWaba>, source: &str| {
        (f.source.is_empty() || source == f.source)
            && (f.waba.is_empty() || id == Some(f.waba.as_str()))
            && (f.business.is_empty()
                || w.and_then(|w| w.business_id.as_deref()) == Some(f.business.as_str()))
    };
    let mut counted_wabas: std::collections::HashSet<Option<&str>> = Default::default();
    for n in &fleet.numbers {
        let wid = n.waba_id.as_deref();
        let w = wid.and_then(|id| wabas.get(id).copied());
        if !in_scope_waba(wid, w, &n.source) {
            continue;
        }
        if let Some(s) = &search
            && !(s.matches_number(n) || s.matches_waba(wid, w))
        {
            continue;
        }
        let level = number_level(n);
        let is_silenced = silenced(
            &fleet.silences,
            &TargetRef {
                business_id: w.and_then(|w| w.business_id.as_deref()),
                waba_id: wid,
                number_id: Some(&n.id),
                source: Some(&n.source),
            },
        );
        counts.numbers += 1;
        counts.by_level[level_index(level)] += 1;
        counts.stale += usize::from(n.stale);
        counts.silenced += usize::from(is_silenced);
        counted_wabas.insert(wid);
        if n.present {
            *quality
                .entry(n.quality_rating.as_deref().unwrap_or("—"))
                .or_default() += 1;
            *status
                .entry(n.status.as_deref().unwrap_or("—"))
                .or_default() += 1;
        }
        if !matches_state(
            &f.state,
            level,
            n.stale,
            is_silenced,
            &[
                n.quality_rating.as_deref(),
                n.status.as_deref(),
                n.health.as_deref(),
            ],
        ) {
            continue;
        }
        groups.entry(wid).or_default().push(Line {
            n,
            level,
            silenced: is_silenced,
        });
    }
    // WABAs without a matching number still show when they match themselves (a WABA with no
    // numbers, or one whose own state is what the filter asks for).
    let with_numbers: std::collections::HashSet<&str> = fleet
        .numbers
        .iter()
        .filter_map(|n| n.waba_id.as_deref())
        .collect();
    for w in &fleet.wabas {
        let id = Some(w.id.as_str());
        if groups.contains_key(&id) || !in_scope_waba(id, Some(w), &w.source) {
            continue;
        }
        if let Some(s) = &search
            && !s.matches_waba(id, Some(w))
        {
            continue;
        }
        let level = waba_level(w);
        let is_silenced = silenced(&fleet.silences, &waba_ref(w));
        if !f.state.is_empty()
            && !matches_state(
                &f.state,
                level,
                w.stale,
                is_silenced,
                &[
                    w.account_review_status.as_deref(),
                    w.business_verification_status.as_deref(),
                    w.health.as_deref(),
                ],
            )
        {
            continue;
        }
        // Only a WABA with no numbers at all, or one the state filter picked by itself.
        if f.state.is_empty() && with_numbers.contains(w.id.as_str()) {
            continue;
        }
        groups.insert(id, Vec::new());
        counted_wabas.insert(id);
    }
    counts.wabas = counted_wabas.iter().filter(|w| w.is_some()).count();
    let tally = |m: HashMap<&str, usize>| {
        let mut v: Vec<(String, usize)> = m.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    counts.quality = tally(quality);
    counts.status = tally(status);

    let matching: usize = groups.values().map(Vec::len).sum();
    let folding = !f.narrowed() && matching > EXPAND_ALL;
    let mut built: Vec<Group<'a>> = groups
        .into_iter()
        .map(|(wid, mut lines)| {
            let w = wid.and_then(|id| wabas.get(id).copied());
            let waba_level = w.map_or(Level::Ok, waba_level);
            let waba_silenced = w.is_some_and(|w| silenced(&fleet.silences, &waba_ref(w)));
            lines.sort_by(|a, b| {
                b.level
                    .cmp(&a.level)
                    .then_with(|| a.n.display_phone_number.cmp(&b.n.display_phone_number))
                    .then_with(|| a.n.id.cmp(&b.n.id))
            });
            let mut by_level = [0usize; 4];
            for l in &lines {
                by_level[level_index(l.level)] += 1;
            }
            let worst = lines.iter().map(|l| l.level).max().unwrap_or(Level::Gone);
            let level = worst.max(waba_level);
            let total = lines.len();
            let mut folded = 0;
            if folding {
                let keep = lines.iter().take_while(|l| l.level > Level::Ok).count();
                folded = total - keep;
                lines.truncate(keep);
            }
            let collapsed = folding && lines.is_empty() && waba_level <= Level::Ok;
            Group {
                waba_id: wid,
                waba: w,
                waba_level,
                waba_silenced,
                level,
                total,
                by_level,
                lines,
                folded,
                collapsed,
                continued: false,
            }
        })
        .collect();
    built.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.waba_id.is_none().cmp(&b.waba_id.is_none()))
            .then_with(|| {
                let name = |g: &Group<'_>| {
                    g.waba
                        .and_then(|w| w.name.as_deref())
                        .map(str::to_lowercase)
                };
                name(a).cmp(&name(b))
            })
            .then_with(|| a.waba_id.cmp(&b.waba_id))
    });

    let (groups, pages) = paginate(built, f.page);
    let mut sources: Vec<&str> = fleet
        .wabas
        .iter()
        .map(|w| w.source.as_str())
        .chain(fleet.numbers.iter().map(|n| n.source.as_str()))
        .collect();
    sources.sort_unstable();
    sources.dedup();
    FleetView {
        now,
        filters: f,
        counts,
        groups,
        matching,
        page: f.page.min(pages),
        pages,
        folding,
        silences: &fleet.silences,
        sources,
        fleet_numbers: fleet.numbers.len(),
        fleet_wabas: fleet.wabas.len(),
    }
}

fn waba_ref(w: &FleetWaba) -> TargetRef<'_> {
    TargetRef {
        business_id: w.business_id.as_deref(),
        waba_id: Some(&w.id),
        number_id: None,
        source: Some(&w.source),
    }
}

/// The groups of page `page` (1-based; past the end: the last page) and how many pages there
/// are: at most [`PAGE_ROWS`] lines a page; a group too long for the rest of a page goes on
/// over the next (its header repeated, marked continued).
fn paginate(groups: Vec<Group<'_>>, page: usize) -> (Vec<Group<'_>>, usize) {
    // First pass: where each page starts, as (group index, line index).
    let mut starts = vec![(0usize, 0usize)];
    let mut used = 0usize;
    for (gi, g) in groups.iter().enumerate() {
        let extra = usize::from(g.folded > 0 && !g.collapsed);
        let mut li = 0;
        loop {
            if used >= PAGE_ROWS {
                starts.push((gi, li));
                used = 0;
            }
            // The header, then as many lines as fit.
            used += 1;
            let room = PAGE_ROWS.saturating_sub(used);
            let take = (g.lines.len() - li).min(room);
            used += take;
            li += take;
            if li >= g.lines.len() {
                used += extra;
                break;
            }
            // The rest goes over to the next page.
            used = PAGE_ROWS;
        }
    }
    let pages = starts.len();
    let page = page.clamp(1, pages);
    let (from_g, from_l) = starts[page - 1];
    let (to_g, to_l) = starts.get(page).copied().unwrap_or((groups.len(), 0));
    let mut out = Vec::new();
    for (gi, mut g) in groups.into_iter().enumerate() {
        if gi < from_g || gi > to_g || (gi == to_g && to_l == 0) {
            continue;
        }
        let lo = if gi == from_g { from_l } else { 0 };
        let hi = if gi == to_g { to_l } else { g.lines.len() };
        g.continued = lo > 0;
        if hi < g.lines.len() {
            // The folded line comes with the group's last part.
            g.folded = 0;
        }
        g.lines = g.lines.drain(lo..hi).collect();
        out.push(g);
    }
    (out, pages)
}

async fn fleet(
    State(s): State<AppState>,
    viewer: Option<axum::Extension<Viewer>>,
    RawQuery(q): RawQuery,
) -> Response {
    let viewer = viewer.map(|v| v.0).unwrap_or_default();
    let filters = Filters::parse(q.as_deref());
    let stale_after = s.runtime.current().stale_after;
    let now = Utc::now();
    let fleet = match s.store.fleet(now, stale_after).await {
        Ok(f) => f,
        Err(e) => return store_error(&e, "the fleet"),
    };
    let view = fleet_view(&fleet, &filters, now);
    page(StatusCode::OK, html::fleet_page(&view, &viewer))
}

// ---------------------------------------------------------------------------------------------
// One target

/// A chart of one field over the last [`CHART_DAYS`] days.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: &'static str,
    pub start: DateTime<Utc>,
    /// Oldest first; `x0`/`x1` are fractions of the window.
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub x0: f64,
    pub x1: f64,
    pub value: String,
    pub from: String,
    pub to: String,
}

/// The segments of `series` between `start` and `now`: the value when the window (or the
/// target's first sighting, if later) began, each change, the value now until now.
pub fn chart(
    title: &'static str,
    series: &FieldSeries,
    current: Option<&str>,
    first_seen: &str,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Chart {
    let span = (now - start).num_milliseconds().max(1) as f64;
    let frac = |t: DateTime<Utc>| ((t - start).num_milliseconds() as f64 / span).clamp(0.0, 1.0);
    let begin = parse_rfc3339(first_seen).map_or(start, |t| t.max(start));
    let initial = series
        .before
        .clone()
        .or_else(|| series.changes.first().and_then(|c| c.1.clone()))
        .or_else(|| {
            series
                .changes
                .is_empty()
                .then(|| current.map(str::to_owned))
                .flatten()
        });
    let mut points: Vec<(DateTime<Utc>, Option<String>)> = vec![(begin, initial)];
    for (at, _, new) in &series.changes {
        if let Some(t) = parse_rfc3339(at) {
            points.push((t.max(begin), new.clone()));
        }
    }
    let mut segments = Vec::new();
    for (i, (t, v)) in points.iter().enumerate() {
        let end = points.get(i + 1).map_or(now, |p| p.0);
        let Some(v) = v else { continue };
        if end <= *t && i + 1 < points.len() {
            continue;
        }
        segments.push(Segment {
            x0: frac(*t),
            x1: frac(end),
            value: v.clone(),
            from: crate::timefmt::rfc3339(*t),
            to: crate::timefmt::rfc3339(end),
        });
    }
    Chart {
        title,
        start,
        segments,
    }
}

fn health_entities(json: Option<&serde_json::Value>) -> Vec<HealthEntity> {
    json.and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// What a number's or a WABA's page shows besides its state.
pub struct Story {
    pub entities: Vec<HealthEntity>,
    pub chart: Chart,
    pub history: Vec<crate::store::HistoryEntry>,
    pub history_total: u64,
    pub emails: Vec<crate::store::page::SentEmail>,
    pub templates: Vec<crate::store::templates::TemplateRow>,
    pub silences: Vec<Silence>,
}

#[allow(clippy::too_many_arguments)]
async fn story(
    s: &AppState,
    id: &str,
    email_ids: &[&str],
    waba: Option<&str>,
    chart_field: (&'static str, &'static str),
    current: Option<&str>,
    first_seen: &str,
    now: DateTime<Utc>,
) -> Result<Story, StoreError> {
    let start = now - chrono::Duration::days(CHART_DAYS);
    let series = s.store.field_series(id, chart_field.1, start).await?;
    let history = s.store.history_page(id, HISTORY_SHOWN, 0).await?;
    let emails = s.store.emails_about(email_ids, EMAILS_SHOWN).await?;
    let templates = match waba {
        Some(w) => s.store.templates(Some(w), true).await?,
        None => Vec::new(),
    };
    let silences = s.store.open_silences(now).await?;
    Ok(Story {
        entities: Vec::new(),
        chart: chart(chart_field.0, &series, current, first_seen, start, now),
        history: history.items,
        history_total: history.total,
        emails,
        templates,
        silences,
    })
}

fn not_found(what: &str, id: &str, viewer: &Viewer) -> Response {
    page(
        StatusCode::NOT_FOUND,
        html::not_found_page(what, id, viewer),
    )
}

async fn number(
    State(s): State<AppState>,
    viewer: Option<axum::Extension<Viewer>>,
    Path(id): Path<String>,
) -> Response {
    let viewer = viewer.map(|v| v.0).unwrap_or_default();
    let stale_after = s.runtime.current().stale_after;
    let now = Utc::now();
    let entry = match s.store.phone(&id, stale_after).await {
        Ok(Some(e)) => e,
        Ok(None) => return not_found("phone number", &id, &viewer),
        Err(e) => return store_error(&e, "a number"),
    };
    let waba = match entry.waba_id.as_deref() {
        Some(w) => match s.store.waba_summary(w, stale_after).await {
            Ok(w) => w,
            Err(e) => return store_error(&e, "a WABA"),
        },
        None => None,
    };
    let mut story = match story(
        &s,
        &id,
        &[id.as_str()],
        entry.waba_id.as_deref(),
        ("Quality rating, last 30 days", field::QUALITY_RATING),
        entry.quality_rating.as_deref(),
        &entry.first_seen_at,
        now,
    )
    .await
    {
        Ok(st) => st,
        Err(e) => return store_error(&e, "a number's story"),
    };
    story.entities = health_entities(entry.health_entities.as_ref());
    let n = FleetNumber {
        id: entry.id.clone(),
        source: entry.source.clone(),
        waba_id: entry.waba_id.clone(),
        display_phone_number: entry.display_phone_number.clone(),
        verified_name: entry.verified_name.clone(),
        quality_rating: entry.quality_rating.clone(),
        status: entry.status.clone(),
        messaging_limit: entry.messaging_limit.clone(),
        health: entry.health.clone(),
        present: entry.present,
        stale: entry.stale,
        last_changed_at: entry.last_changed_at.clone(),
    };
    let target = TargetRef {
        business_id: waba.as_ref().and_then(|w| w.business_id.as_deref()),
        waba_id: entry.waba_id.as_deref(),
        number_id: Some(&entry.id),
        source: Some(&entry.source),
    };
    story.silences.retain(|si| si.matchers.matches(&target));
    let view = html::NumberView {
        now,
        level: number_level(&n),
        number: &n,
        entry: &entry,
        waba: waba.as_ref(),
        story: &story,
    };
    page(StatusCode::OK, html::number_page(&view, &viewer))
}

async fn waba(
    State(s): State<AppState>,
    viewer: Option<axum::Extension<Viewer>>,
    Path(id): Path<String>,
) -> Response {
    let viewer = viewer.map(|v| v.0).unwrap_or_default();
    let stale_after = s.runtime.current().stale_after;
    let now = Utc::now();
    let detail = match s.store.waba_detail(&id, stale_after).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found("WABA", &id, &viewer),
        Err(e) => return store_error(&e, "a WABA"),
    };
    let w = &detail.waba;
    let mut email_ids: Vec<&str> = vec![id.as_str()];
    email_ids.extend(detail.numbers.iter().map(|n| n.id.as_str()));
    let mut story = match story(
        &s,
        &id,
        &email_ids,
        Some(&id),
        ("Health (can send messages), last 30 days", field::HEALTH),
        w.health.as_deref(),
        &w.first_seen_at,
        now,
    )
    .await
    {
        Ok(st) => st,
        Err(e) => return store_error(&e, "a WABA's story"),
    };
    story.entities = detail
        .health_entities
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let mut numbers: Vec<Line<'_>> = detail
        .numbers
        .iter()
        .map(|n| Line {
            n,
            level: number_level(n),
            silenced: silenced(
                &story.silences,
                &TargetRef {
                    business_id: w.business_id.as_deref(),
                    waba_id: Some(&w.id),
                    number_id: Some(&n.id),
                    source: Some(&n.source),
                },
            ),
        })
        .collect();
    // The silences listed are those of the WABA itself (a number's are on its page).
    story
        .silences
        .retain(|si| si.matchers.matches(&waba_ref(w)));
    numbers.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.n.display_phone_number.cmp(&b.n.display_phone_number))
            .then_with(|| a.n.id.cmp(&b.n.id))
    });
    let worst = numbers.iter().map(|l| l.level).max();
    let view = html::WabaView {
        now,
        level: worst.map_or(waba_level(w), |l| l.max(waba_level(w))),
        waba: w,
        numbers: &numbers,
        story: &story,
    };
    page(StatusCode::OK, html::waba_page(&view, &viewer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(id: &str, quality: &str, status: &str) -> FleetNumber {
        FleetNumber {
            id: id.to_owned(),
            source: "main".to_owned(),
            waba_id: Some("1".to_owned()),
            display_phone_number: Some(format!("+1 555-{id}")),
            verified_name: Some(format!("Line {id}")),
            quality_rating: Some(quality.to_owned()),
            status: Some(status.to_owned()),
            messaging_limit: None,
            health: Some("AVAILABLE".to_owned()),
            present: true,
            stale: false,
            last_changed_at: "2026-01-01T00:00:00.000Z".to_owned(),
        }
    }

    #[test]
    fn levels_follow_the_alert_rules() {
        assert_eq!(number_level(&number("1", "GREEN", "CONNECTED")), Level::Ok);
        assert_eq!(
            number_level(&number("1", "RED", "CONNECTED")),
            Level::Critical
        );
        assert_eq!(
            number_level(&number("1", "GREEN", "BANNED")),
            Level::Critical
        );
        assert_eq!(
            number_level(&number("1", "YELLOW", "CONNECTED")),
            Level::Warning
        );
        let mut blocked = number("1", "GREEN", "CONNECTED");
        blocked.health = Some("BLOCKED".into());
        assert_eq!(number_level(&blocked), Level::Critical);
        let mut gone = number("1", "RED", "CONNECTED");
        gone.present = false;
        assert_eq!(number_level(&gone), Level::Gone);
        assert_eq!(number_level(&number("1", "NA", "SOMETHING_NEW")), Level::Ok);
    }

    #[test]
    fn next_is_a_local_path_only() {
        assert_eq!(safe_next(Some("/numbers/1?x=2")), "/numbers/1?x=2");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "",
            "x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_session_value_is_not_the_token_and_follows_it() {
        let a = SecretString::from("token-a");
        let b = SecretString::from("token-b");
        assert_eq!(session_value(&a).len(), 64);
        assert!(!session_value(&a).contains("token-a"));
        assert_ne!(session_value(&a), session_value(&b));
        assert_ne!(session_value(&a), csrf_value(&a));
    }

    #[test]
    fn paging_splits_long_groups_and_keeps_every_line_once() {
        let numbers: Vec<FleetNumber> = (0..1_203)
            .map(|i| number(&format!("{i:05}"), "RED", "CONNECTED"))
            .collect();
        let fleet = crate::store::page::Fleet {
            wabas: Vec::new(),
            numbers,
            silences: Vec::new(),
        };
        let mut seen = 0;
        let mut pages = 0;
        for p in 1..=4 {
            let f = Filters {
                page: p,
                ..Filters::default()
            };
            let v = fleet_view(&fleet, &f, Utc::now());
            pages = v.pages;
            if p <= v.pages {
                let lines: usize = v.groups.iter().map(|g| 1 + g.lines.len()).sum();
                assert!(lines <= PAGE_ROWS, "page {p}: {lines} lines");
                assert_eq!(v.groups[0].continued, p > 1);
                seen += v.groups.iter().map(|g| g.lines.len()).sum::<usize>();
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, 1_203);
    }

    #[test]
    fn search_matches_digits_names_and_ids() {
        let n = number("300000000000007", "GREEN", "CONNECTED");
        let s = Search::new("555-3000").expect("query");
        assert!(s.matches_number(&n));
        assert!(Search::new("line 3000").expect("q").matches_number(&n));
        assert!(
            Search::new("300000000000007")
                .expect("q")
                .matches_number(&n)
        );
        assert!(!Search::new("nothing").expect("q").matches_number(&n));
    }

    #[test]
    fn a_chart_starts_with_the_value_before_the_window() {
        let now = Utc::now();
        let start = now - chrono::Duration::days(30);
        let mid = crate::timefmt::rfc3339(now - chrono::Duration::days(15));
        let series = FieldSeries {
            before: Some("GREEN".into()),
            changes: vec![(mid, Some("GREEN".into()), Some("RED".into()))],
        };
        let c = chart(
            "q",
            &series,
            Some("RED"),
            "2020-01-01T00:00:00.000Z",
            start,
            now,
        );
        assert_eq!(c.segments.len(), 2);
        assert_eq!(c.segments[0].value, "GREEN");
        assert!((c.segments[0].x0 - 0.0).abs() < 1e-9);
        assert!((c.segments[0].x1 - 0.5).abs() < 0.01);
        assert_eq!(c.segments[1].value, "RED");
        assert!((c.segments[1].x1 - 1.0).abs() < 1e-9);
        // No history at all: the current value over the whole window.
        let c = chart(
            "q",
            &FieldSeries::default(),
            Some("GREEN"),
            "2020-01-01T00:00:00.000Z",
            start,
            now,
        );
        assert_eq!(c.segments.len(), 1);
    }
}
