//! A simulated Meta Graph API, served over loopback HTTP.
//!
//! Integration tests, the `demo` command and the benchmark point the daemon's `graph_url` at
//! [`GraphSim::url`]. The simulator speaks Meta's real shapes: versioned paths, the recursive
//! `fields` syntax with nested cursor paging, batch requests, Graph error envelopes and the
//! usage headers, and it can inject the failures a real deployment meets ([`Fault`]).
//!
//! Files: `fields.rs` parses `fields=`, `state.rs` holds the fleet and its builders, `health.rs`
//! builds `health_status` objects, `demo.rs` the demo fleet, `render.rs` turns the fleet into node JSON, `faults.rs` decides which call
//! fails how, `errors.rs` builds Graph error envelopes; this file is the HTTP server.

mod demo;
mod errors;
mod faults;
mod fields;
mod health;
mod render;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::form_urlencoded;

pub use demo::ids as demo_ids;
pub use faults::{Fault, FaultKind, FaultTarget};
pub use fields::{FieldSpec, FieldsError, fields_to_string, parse_fields};
pub use health::{HealthError, SIM_APP_ID, health_entity, health_status};
pub use state::{
    DEFAULT_APP_CALL_BUDGET, DEFAULT_WABA_CALL_BUDGET, Relation, SimBusiness, SimPhone, SimState,
    SimWaba,
};

use errors::GraphFailure;
use render::{CallOutput, Effects, LinkCtx, Wire};

/// Meta's largest batch.
pub const MAX_BATCH_ITEMS: usize = 50;
/// Request bodies above this are refused; a batch of 50 GETs is a few kilobytes.
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// How long `shutdown` waits for requests in flight (a hanging fault, say) before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub(crate) const BUC_HEADER: &str = "X-Business-Use-Case-Usage";
const APP_USAGE_HEADER: &str = "X-App-Usage";
const JSON_TYPE: &str = "application/json; charset=UTF-8";
const BATCH_ITEM_JSON_TYPE: &str = "text/javascript; charset=UTF-8";
const HTML_TYPE: &str = "text/html; charset=utf-8";

/// How the simulator behaves.
#[derive(Clone)]
pub struct SimOptions {
    /// The only accepted access token.
    pub token: String,
    /// Added to every HTTP request (the benchmark uses 50 ms).
    pub latency: Duration,
    /// Meta puts `access_token=...` into `paging.next` links; clients must strip it.
    pub token_in_paging_links: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            token: "test-token".to_owned(),
            latency: Duration::ZERO,
            token_in_paging_links: true,
        }
    }
}

impl fmt::Debug for SimOptions {
    // The token stays out of logs and test output, like every other secret of the project.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("token", &"[REDACTED]")
            .field("latency", &self.latency)
            .field("token_in_paging_links", &self.token_in_paging_links)
            .finish()
    }
}

/// One HTTP request as the simulator received it, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (empty when there is none), `access_token=` included if sent.
    pub query: String,
    /// The raw `Authorization` header.
    pub authorization: Option<String>,
    /// Items in the batch, 0 for anything that is not a batch.
    pub batch_items: usize,
    /// The `relative_url` of each batch item, in order.
    pub batch_relative_urls: Vec<String>,
    pub body: String,
}

#[derive(Default)]
struct Counters {
    http_requests: u64,
    graph_calls: u64,
    per_waba: HashMap<String, u64>,
}

struct Shared {
    opts: SimOptions,
    url: String,
    state: Mutex<SimState>,
    log: Mutex<Vec<RecordedRequest>>,
    counters: Mutex<Counters>,
}

/// A poisoned lock only means a test panicked mid-update; the data is still the best we have.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulator. Dropping it stops the server too; `shutdown` does it gracefully.
pub struct GraphSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl GraphSim {
    /// Binds `127.0.0.1:0` and serves `state` until shutdown. It returns once the port is
    /// bound, so the URL can be used at once.
    pub async fn start(state: SimState, opts: SimOptions) -> std::io::Result<GraphSim> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            opts,
            url: format!("http://{addr}"),
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender also means stop.
                let _ = stopped.await;
            });
            if let Err(error) = server.await {
                tracing::warn!(%error, "simulated Graph API stopped with an error");
            }
        });
        Ok(GraphSim {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The base URL a client uses as `graph_url`, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn options(&self) -> &SimOptions {
        &self.shared.opts
    }

    /// A cheap handle to the same simulator that a spawned task can own (the demo's stepper
    /// uses one); it cannot stop the server.
    pub fn clone_handle(&self) -> SimHandle {
        SimHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Reads or changes the fleet and the faults; requests wait while `f` runs.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        self.shared.with_state(f)
    }

    /// Every HTTP request received since start (or the last `reset_counters`), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    pub fn http_requests(&self) -> u64 {
        lock(&self.shared.counters).http_requests
    }

    /// Graph calls as Meta counts them: one per plain request, one per batch item.
    pub fn graph_calls(&self) -> u64 {
        lock(&self.shared.counters).graph_calls
    }

    /// Calls counted against a WABA: GETs of the WABA or its edges, and GETs of its numbers.
    pub fn calls_for_waba(&self, waba_id: &str) -> u64 {
        self.shared.calls_for_waba(waba_id)
    }

    /// Zeroes every counter (and so the usage headers) and forgets the request log, so a test
    /// can look at exactly one poll.
    pub fn reset_counters(&self) {
        *lock(&self.shared.counters) = Counters::default();
        lock(&self.shared.log).clear();
    }

    /// Stops accepting connections, lets requests in flight finish (for at most two seconds)
    /// and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for GraphSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A shared handle to a running simulator, from [`GraphSim::clone_handle`].
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl SimHandle {
    /// See [`GraphSim::with_state`].
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        self.shared.with_state(f)
    }

    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// See [`GraphSim::calls_for_waba`].
    pub fn calls_for_waba(&self, waba_id: &str) -> u64 {
        self.shared.calls_for_waba(waba_id)
    }
}

/// A request, parsed once: where it goes, with what parameters.
struct Incoming {
    method: Method,
    version: Option<String>,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    authorization: Option<String>,
}

impl Incoming {
    /// A parameter from the query string or, for POSTs, the form body.
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .chain(&self.form)
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The token the request carries: the `Authorization` header first, else `access_token`.
    fn token(&self) -> Option<&str> {
        if let Some(value) = self.authorization.as_deref() {
            let (scheme, token) = value.trim().split_once(' ')?;
            return (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
                .then(|| token.trim());
        }
        self.param("access_token")
    }
}

/// Splits `/v23.0/123/phone_numbers` into the version and the remaining segments.
fn split_path(path: &str) -> (Option<String>, Vec<String>) {
    let mut segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let version = segments.first().filter(|first| is_version(first)).cloned();
    if version.is_some() {
        segments.remove(0);
    }
    (version, segments)
}

/// `v23.0`, `v24.0`, `v9` — anything Graph would read as a version prefix.
fn is_version(segment: &str) -> bool {
    let Some(number) = segment.strip_prefix('v') else {
        return false;
    };
    let mut parts = number.split('.');
    let major_ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let minor_ok = parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    major_ok && minor_ok
}

fn parse_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

/// The server's answer before headers: what to send, and what to count.
struct Reply {
    wire: Wire,
    graph_calls: u64,
    /// One entry per call to count against a WABA.
    wabas: Vec<String>,
    /// WABAs whose usage the reply reports (a batch counts its items itself, then reports).
    usage_wabas: Vec<String>,
}

impl Reply {
    fn failure(failure: GraphFailure, graph_calls: u64) -> Self {
        Reply {
            wire: CallOutput {
                result: Err(failure),
                effects: Effects::default(),
                waba: None,
            }
            .into_wire(),
            graph_calls,
            wabas: Vec::new(),
            usage_wabas: Vec::new(),
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => {
            return plain_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
    };
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (version, segments) = split_path(&path);
    let form = if parts.method == Method::POST {
        parse_pairs(&body)
    } else {
        Vec::new()
    };
    let incoming = Incoming {
        method: parts.method.clone(),
        version,
        segments,
        query: parse_pairs(&raw_query),
        form,
        authorization: authorization.clone(),
    };
    let batch = is_batch(&incoming).then(|| parse_batch(&incoming));
    let batch_relative_urls = match &batch {
        Some(Ok(items)) => items
            .iter()
            .map(|item| {
                item.get("relative_url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect(),
        _ => Vec::new(),
    };
    lock(&shared.log).push(RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path,
        query: raw_query,
        authorization,
        batch_items: batch_relative_urls.len(),
        batch_relative_urls,
        body,
    });
    lock(&shared.counters).http_requests += 1;

    if !shared.opts.latency.is_zero() {
        tokio::time::sleep(shared.opts.latency).await;
    }

    let reply = match incoming.token() {
        Some(token) if token == shared.opts.token => match batch {
            Some(Ok(items)) => shared.batch(&incoming, &items),
            Some(Err(failure)) => Reply::failure(failure, 1),
            None => shared.single(&incoming),
        },
        other => Reply::failure(GraphFailure::bad_token(other.is_some()), 1),
    };
    shared.respond(reply, incoming.version.as_deref()).await
}

fn is_batch(incoming: &Incoming) -> bool {
    incoming.method == Method::POST && incoming.segments.is_empty()
}

/// Reads the `batch` parameter of a batch POST.
fn parse_batch(incoming: &Incoming) -> Result<Vec<Value>, GraphFailure> {
    let raw = incoming
        .param("batch")
        .ok_or_else(|| GraphFailure::invalid_parameter("The parameter batch is required"))?;
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(items)) => Ok(items),
        _ => Err(GraphFailure::invalid_parameter(
            "The parameter batch must be a JSON-encoded array",
        )),
    }
}

impl Shared {
    fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        f(&mut lock(&self.state))
    }

    fn calls_for_waba(&self, waba_id: &str) -> u64 {
        lock(&self.counters)
            .per_waba
            .get(waba_id)
            .copied()
            .unwrap_or(0)
    }

    fn links(&self, foreign_base: Option<String>) -> LinkCtx<'_> {
        LinkCtx {
            base_url: &self.url,
            token: self
                .opts
                .token_in_paging_links
                .then_some(self.opts.token.as_str()),
            foreign_base,
        }
    }

    /// A request that is not a batch.
    fn single(&self, incoming: &Incoming) -> Reply {
        if incoming.method != Method::GET {
            let method = incoming.method.as_str().to_ascii_lowercase();
            let id = incoming.segments.first().map_or("", String::as_str);
            return Reply::failure(GraphFailure::unknown_object(id, &method), 1);
        }
        let links = self.links(None);
        let output = {
            let mut state = lock(&self.state);
            let mut faults = std::mem::take(&mut state.faults);
            let output = render::execute_get(
                &state,
                &mut faults,
                &links,
                incoming.version.as_deref(),
                &incoming.segments,
                &incoming.query,
                true,
            );
            state.faults = faults;
            output
        };
        let wabas: Vec<String> = output.waba.clone().into_iter().collect();
        Reply {
            wire: output.into_wire(),
            graph_calls: 1,
            usage_wabas: wabas.clone(),
            wabas,
        }
    }

    /// A batch POST: each item is answered like a GET and wrapped as Meta does.
    fn batch(&self, incoming: &Incoming, items: &[Value]) -> Reply {
        if items.len() > MAX_BATCH_ITEMS {
            return Reply::failure(GraphFailure::batch_too_large(), 1);
        }
        let include_headers = incoming.param("include_headers") != Some("false");
        let (request_effects, outputs) = {
            let mut state = lock(&self.state);
            let mut faults = std::mem::take(&mut state.faults);
            // An `Any` fault hits the batch as a whole, before any item runs.
            let mut request_effects = Effects::default();
            let verdict = match faults::take(&mut faults, &faults::Scope::Request) {
                Some(kind) => request_effects.absorb(kind),
                None => Ok(()),
            };
            let outputs = verdict.map(|()| {
                let links = self.links(request_effects.foreign_base.clone());
                items
                    .iter()
                    .map(|item| self.batch_item(&state, &mut faults, &links, incoming, item))
                    .collect::<Vec<_>>()
            });
            state.faults = faults;
            (request_effects, outputs)
        };
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(failure) => return Reply::failure(failure, 1),
        };
        let wabas: Vec<String> = outputs.iter().filter_map(|o| o.waba.clone()).collect();
        let usage = self.count(items.len() as u64, &wabas);
        let buc_for = |waba: &Option<String>| {
            waba.as_ref()
                .map(|w| self.buc_header(&usage, std::slice::from_ref(w)))
        };
        let mut answers = Vec::with_capacity(outputs.len());
        let mut hang = Duration::ZERO;
        for output in outputs {
            let buc = buc_for(&output.waba);
            let wire = output.into_wire();
            if !wire.hang.is_zero() {
                // An item that did not finish comes back as null, after the wait.
                hang = hang.max(wire.hang);
                answers.push(Value::Null);
                continue;
            }
            answers.push(batch_answer(wire, buc, include_headers));
        }
        let wire = render::shape(
            Wire {
                status: 200,
                html: false,
                body: Value::Array(answers).to_string(),
                headers: Vec::new(),
                hang,
            },
            &request_effects,
        );
        Reply {
            wire,
            // Already counted above, so the item headers could show the new totals.
            graph_calls: 0,
            wabas: Vec::new(),
            usage_wabas: wabas,
        }
    }

    fn batch_item(
        &self,
        state: &SimState,
        faults: &mut Vec<faults::Fault>,
        links: &LinkCtx<'_>,
        incoming: &Incoming,
        item: &Value,
    ) -> CallOutput {
        let fail = |failure| CallOutput {
            result: Err(failure),
            effects: Effects::default(),
            waba: None,
        };
        let method = item.get("method").and_then(Value::as_str).unwrap_or("GET");
        let Some(relative_url) = item.get("relative_url").and_then(Value::as_str) else {
            return fail(GraphFailure::invalid_parameter(
                "Missing relative_url in a batch request",
            ));
        };
        let (path, query) = relative_url
            .trim_start_matches('/')
            .split_once('?')
            .unwrap_or((relative_url.trim_start_matches('/'), ""));
        let (version, segments) = split_path(path);
        if !method.eq_ignore_ascii_case("GET") {
            let id = segments.first().map_or("", String::as_str);
            return fail(GraphFailure::unknown_object(
                id,
                &method.to_ascii_lowercase(),
            ));
        }
        let query = parse_pairs(query);
        // An item may carry its own token; a wrong one fails that item only.
        if let Some((_, token)) = query.iter().find(|(key, _)| key == "access_token")
            && *token != self.opts.token
        {
            return fail(GraphFailure::bad_token(true));
        }
        let version = version.or_else(|| incoming.version.clone());
        render::execute_get(
            state,
            faults,
            links,
            version.as_deref(),
            &segments,
            &query,
            false,
        )
    }

    /// Counts calls and returns the usage snapshot the headers report.
    fn count(&self, graph_calls: u64, wabas: &[String]) -> Usage {
        let (waba_budget, app_budget) = {
            let state = lock(&self.state);
            (
                state.waba_call_budget.unwrap_or(DEFAULT_WABA_CALL_BUDGET),
                state.app_call_budget.unwrap_or(DEFAULT_APP_CALL_BUDGET),
            )
        };
        let mut counters = lock(&self.counters);
        counters.graph_calls += graph_calls;
        for waba in wabas {
            *counters.per_waba.entry(waba.clone()).or_default() += 1;
        }
        let per_waba = wabas
            .iter()
            .map(|w| (w.clone(), counters.per_waba.get(w).copied().unwrap_or(0)))
            .collect();
        Usage {
            app_calls: counters.graph_calls,
            app_budget,
            waba_budget,
            per_waba,
        }
    }

    /// `X-Business-Use-Case-Usage` for these WABAs, in Meta's format (percentages).
    fn buc_header(&self, usage: &Usage, wabas: &[String]) -> String {
        let mut object = Map::new();
        for waba in wabas.iter().collect::<BTreeSet<_>>() {
            let calls = usage.per_waba.get(waba).copied().unwrap_or(0);
            let percent = percent(calls, usage.waba_budget);
            object.insert(
                waba.clone(),
                json!([{
                    "type": "whatsapp_business_management",
                    "call_count": percent,
                    "total_cputime": percent / 2,
                    "total_time": percent / 2,
                    // Minutes; the sim never throttles on its own, but a spent budget says how
                    // long a real one would wait.
                    "estimated_time_to_regain_access": if percent >= 100 { 60 } else { 0 },
                }]),
            );
        }
        Value::Object(object).to_string()
    }

    /// Counts the reply, adds the usage headers, waits out any hang and sends it.
    async fn respond(&self, reply: Reply, version: Option<&str>) -> Response {
        let usage = self.count(reply.graph_calls, &reply.wabas);
        let mut wire = reply.wire;
        if !wire.html {
            let app = percent(usage.app_calls, usage.app_budget);
            wire.headers.push((
                APP_USAGE_HEADER.to_owned(),
                json!({ "call_count": app, "total_cputime": app / 2, "total_time": app / 2 })
                    .to_string(),
            ));
            let forced = wire
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(BUC_HEADER));
            if !forced && !reply.usage_wabas.is_empty() {
                let buc = self.buc_header(&usage, &reply.usage_wabas);
                wire.headers.push((BUC_HEADER.to_owned(), buc));
            }
            wire.headers.push((
                "facebook-api-version".to_owned(),
                version.unwrap_or("v24.0").to_owned(),
            ));
            wire.headers
                .push(("x-fb-trace-id".to_owned(), errors::fbtrace_id()));
        }
        if !wire.hang.is_zero() {
            tokio::time::sleep(wire.hang).await;
        }
        let content_type = if wire.html { HTML_TYPE } else { JSON_TYPE };
        build_response(wire.status, content_type, wire.body, &wire.headers)
    }
}

/// What the usage headers report after a reply was counted.
struct Usage {
    app_calls: u64,
    app_budget: u64,
    waba_budget: u64,
    per_waba: HashMap<String, u64>,
}

/// Usage as Meta reports it: a whole percentage of the budget, capped at 100.
fn percent(calls: u64, budget: u64) -> u64 {
    (calls.saturating_mul(100) / budget.max(1)).min(100)
}

/// One item of a batch answer: `{"code":..,"headers":[..],"body":"<JSON as a string>"}`.
fn batch_answer(wire: Wire, buc: Option<String>, include_headers: bool) -> Value {
    let mut item = Map::new();
    item.insert("code".to_owned(), json!(wire.status));
    if include_headers {
        let content_type = if wire.html {
            HTML_TYPE
        } else {
            BATCH_ITEM_JSON_TYPE
        };
        let mut headers = vec![json!({ "name": "Content-Type", "value": content_type })];
        let forced = wire
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(BUC_HEADER));
        if !wire.html
            && !forced
            && let Some(buc) = buc
        {
            headers.push(json!({ "name": BUC_HEADER, "value": buc }));
        }
        headers.extend(
            wire.headers
                .iter()
                .map(|(name, value)| json!({ "name": name, "value": value })),
        );
        item.insert("headers".to_owned(), Value::Array(headers));
    }
    item.insert("body".to_owned(), Value::String(wire.body));
    Value::Object(item)
}

fn build_response(
    status: u16,
    content_type: &str,
    body: String,
    headers: &[(String, String)],
) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        map.insert(header::CONTENT_TYPE, value);
    }
    for (name, value) in headers {
        // A header a test forced with characters HTTP cannot carry is dropped, not fatal.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    response
}

fn plain_response(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}
