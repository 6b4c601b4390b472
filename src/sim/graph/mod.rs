//! A simulated Meta Graph API, served over loopback HTTP.
//!
//! Integration tests, the `demo` command and the benchmark point the daemon's `graph_url` at
//! [`GraphSim::url`]. The simulator speaks Meta's real shapes: versioned paths, the recursive
//! `fields` syntax with nested cursor paging, batch requests, Graph error envelopes and the
//! usage headers, and it can inject the failures a real deployment meets ([`Fault`]).
//!
//! Files, in the order a request meets them: this file is the public API and the handler
//! (the loopback server itself is `sim/server.rs`, shared with the Finedu simulator);
//! `batch.rs` unpacks batch requests; `render.rs` answers one GET, using `fields.rs` (the
//! `fields=` parser), `schema.rs` (each node type's fields and edges) and `faults.rs` (which
//! call fails how); `errors.rs` builds Graph error envelopes; `usage.rs` counts calls for the
//! usage headers. The fleet (businesses, WABAs, numbers, message templates) lives in
//! `state.rs`, with `health.rs` for `health_status` objects and `demo.rs` for the demo fleet.
//!
//! Message templates: `GET /{waba}/message_templates` pages like `phone_numbers` (same cursors,
//! `limit` 25 by default and at most 100) and the WABA's `fields=message_templates.limit(n){..}`
//! embeds the first page (left out when the WABA has none). A direct page is one call charged
//! to the WABA; the expansion is part of the WABA's read. `FaultTarget::edge_page(waba,
//! "message_templates", 1)` fails the first page (the embedding request, or a direct GET
//! without a cursor), page `k >= 2` the `k`-th direct page.

mod batch;
mod demo;
mod errors;
mod faults;
mod fields;
mod health;
mod render;
mod schema;
mod state;
#[cfg(test)]
mod tests;
mod usage;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

pub use demo::ids as demo_ids;
pub use faults::{Fault, FaultKind, FaultTarget};
pub use fields::{FieldSpec, FieldsError, fields_to_string, parse_fields};
pub use health::{HealthError, SIM_APP_ID, health_entity, health_status};
pub use state::{
    DEFAULT_APP_CALL_BUDGET, DEFAULT_WABA_CALL_BUDGET, FIRST_TEMPLATE_ID, Relation, SimBusiness,
    SimPhone, SimState, SimTemplate, SimWaba, TEMPLATE_QUALITY_DATE,
};

use super::server::{HTML_TYPE, Loopback, RequestLog, authorization, lock, parse_query, response};
use errors::GraphFailure;
use render::{CallOutput, Effects, LinkCtx, Wire};
use usage::{Counters, percent};

/// Meta's largest batch.
pub const MAX_BATCH_ITEMS: usize = 50;
/// Request bodies above this are refused; a batch of 50 GETs is a few kilobytes.
const MAX_REQUEST_BYTES: usize = 1 << 20;

pub(crate) const BUC_HEADER: &str = "X-Business-Use-Case-Usage";
const APP_USAGE_HEADER: &str = "X-App-Usage";
const JSON_TYPE: &str = "application/json; charset=UTF-8";
const BATCH_ITEM_JSON_TYPE: &str = "text/javascript; charset=UTF-8";

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

impl RecordedRequest {
    /// The Graph calls in this request that read the edge `edge` directly
    /// (`GET /{id}/{edge}`, e.g. `message_templates`): 1 for such a plain GET, the number of
    /// such items for a batch, 0 otherwise. An edge embedded in a field expansion
    /// (`fields=message_templates{...}`) is not a call of its own and is not counted.
    pub fn edge_calls(&self, edge: &str) -> usize {
        let reads = |path: &str| {
            let path = path.split('?').next().unwrap_or_default();
            let (_, segments) = split_path(path);
            segments.len() == 2 && segments[1] == edge
        };
        if self.batch_items > 0 {
            self.batch_relative_urls
                .iter()
                .filter(|url| reads(url))
                .count()
        } else {
            usize::from(self.method == "GET" && reads(&self.path))
        }
    }
}

struct Shared {
    opts: SimOptions,
    url: String,
    state: Mutex<SimState>,
    log: RequestLog<RecordedRequest>,
    counters: Mutex<Counters>,
}

/// A running simulator. Dropping it stops the server too; `shutdown` does it gracefully.
pub struct GraphSim {
    shared: Arc<Shared>,
    server: Loopback,
}

impl GraphSim {
    /// Binds `127.0.0.1:0` and serves `state` until shutdown. It returns once the port is
    /// bound, so the URL can be used at once.
    pub async fn start(state: SimState, opts: SimOptions) -> std::io::Result<GraphSim> {
        let make = |url| Shared {
            opts,
            url,
            state: Mutex::new(state),
            log: RequestLog::default(),
            counters: Mutex::new(Counters::default()),
        };
        let (shared, server) = Loopback::start("simulated Graph API", make, handle).await?;
        Ok(GraphSim { shared, server })
    }

    /// The base URL a client uses as `graph_url`, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
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
        self.shared.log.all()
    }

    pub fn http_requests(&self) -> u64 {
        lock(&self.shared.counters).http_requests
    }

    /// Direct reads of an edge (`GET /{id}/{edge}`, plain or as batch items) among the
    /// recorded requests; see [`RecordedRequest::edge_calls`].
    pub fn edge_calls(&self, edge: &str) -> usize {
        self.requests().iter().map(|r| r.edge_calls(edge)).sum()
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
        self.shared.log.clear();
    }

    /// Stops accepting connections, lets requests in flight finish (for at most two seconds)
    /// and waits for the server task.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
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
    let authorization = authorization(&parts.headers);
    let (version, segments) = split_path(&path);
    let form = if parts.method == Method::POST {
        parse_query(&body)
    } else {
        Vec::new()
    };
    let incoming = Incoming {
        method: parts.method.clone(),
        version,
        segments,
        query: parse_query(&raw_query),
        form,
        authorization: authorization.clone(),
    };
    let batch = batch::is_batch(&incoming).then(|| batch::parse_batch(&incoming));
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
    shared.log.record(RecordedRequest {
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

    // A number with a token of its own is read with that token only, one GET at a time.
    let own_token = match (&batch, incoming.segments.as_slice()) {
        (None, [id]) => lock(&shared.state).phone_tokens.get(id).cloned(),
        _ => None,
    };
    let foreign_phone_token = incoming
        .token()
        .is_some_and(|t| lock(&shared.state).phone_tokens.values().any(|v| v == t));
    let reply = match incoming.token() {
        Some(token) if own_token.is_some() => {
            if own_token.as_deref() == Some(token) {
                shared.single(&incoming)
            } else {
                Reply::failure(GraphFailure::bad_token(true), 1)
            }
        }
        Some(_) if foreign_phone_token => Reply::failure(GraphFailure::bad_token(true), 1),
        Some(token) if token == shared.opts.token => match batch {
            Some(Ok(items)) => shared.batch(&incoming, &items),
            Some(Err(failure)) => Reply::failure(failure, 1),
            None => shared.single(&incoming),
        },
        other => Reply::failure(GraphFailure::bad_token(other.is_some()), 1),
    };
    shared.respond(reply, incoming.version.as_deref()).await
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
        response(wire.status, content_type, wire.body, &wire.headers)
    }
}

fn plain_response(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}
