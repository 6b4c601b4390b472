//! A Whatomate-shaped server for the tests: `GET /api/accounts` answering
//! `{"status":"success","data":{"items":[...],"total":n,"page":p,"limit":l}}`, the API key
//! checked in the `X-API-Key` header (401 otherwise), with an outage switch.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::server::{Loopback, RequestLog, authorization, lock, parse_query, response};

const JSON: &str = "application/json";

/// One account as Whatomate lists it.
#[derive(Debug, Clone)]
pub struct WhatomateSimAccount {
    pub phone_number_id: String,
    pub business_account_id: String,
    pub name: String,
    pub status: String,
}

/// What the server lists and how it behaves.
#[derive(Debug, Clone, Default)]
pub struct WhatomateState {
    pub accounts: Vec<WhatomateSimAccount>,
    /// Answer every request with this status (an outage), when set.
    pub fail_with: Option<u16>,
    /// Serve at most this many accounts a page, whatever `limit` asks (exercises paging).
    pub max_page: Option<usize>,
}

impl WhatomateState {
    pub fn add(&mut self, phone_number_id: &str, business_account_id: &str) {
        self.accounts.push(WhatomateSimAccount {
            phone_number_id: phone_number_id.to_owned(),
            business_account_id: business_account_id.to_owned(),
            name: format!("Account {phone_number_id}"),
            status: "active".into(),
        });
    }

    pub fn remove(&mut self, phone_number_id: &str) {
        self.accounts
            .retain(|a| a.phone_number_id != phone_number_id);
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct WhatomateRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `X-API-Key` header.
    pub api_key: Option<String>,
    pub authorization: Option<String>,
}

struct Shared {
    key: String,
    url: String,
    state: Mutex<WhatomateState>,
    log: RequestLog<WhatomateRequest>,
}

pub struct WhatomateSim {
    shared: Arc<Shared>,
    server: Loopback,
}

impl WhatomateSim {
    /// Binds `127.0.0.1:0` and serves `state` to requests carrying `X-API-Key: <key>`.
    pub async fn start(state: WhatomateState, key: &str) -> std::io::Result<WhatomateSim> {
        let make = |url| Shared {
            key: key.to_owned(),
            url,
            state: Mutex::new(state),
            log: RequestLog::default(),
        };
        let (shared, server) = Loopback::start("simulated Whatomate", make, handle).await?;
        Ok(WhatomateSim { shared, server })
    }

    /// The base URL a client configures, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Reads or changes the accounts and the outage switch.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut WhatomateState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    /// Every request received since start, in order.
    pub fn requests(&self) -> Vec<WhatomateRequest> {
        self.shared.log.all()
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn api_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_owned();
    let path = req.uri().path().to_owned();
    let key = api_key(req.headers());
    shared.log.record(WhatomateRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        api_key: key.clone(),
        authorization: authorization(req.headers()),
    });
    let error = |status: u16, message: &str| {
        response::<&str, &str>(
            status,
            JSON,
            json!({"status": "error", "message": message}).to_string(),
            &[],
        )
    };
    let state = lock(&shared.state).clone();
    if let Some(status) = state.fail_with {
        return error(status, "service unavailable");
    }
    if key.as_deref() != Some(shared.key.as_str()) {
        return error(401, "invalid or missing API key");
    }
    if req.method() != axum::http::Method::GET || path != "/api/accounts" {
        return error(404, "not found");
    }
    let q = parse_query(&query);
    let num = |name: &str, default: usize| {
        q.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let page = num("page", 1).max(1);
    let limit = num("limit", 50)
        .clamp(1, 100)
        .min(state.max_page.unwrap_or(100));
    let items: Vec<_> = state
        .accounts
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|a| {
            json!({
                "id": format!("uuid-{}", a.phone_number_id),
                "name": a.name,
                "phone_number": "+1234567890",
                "phone_number_id": a.phone_number_id,
                "business_account_id": a.business_account_id,
                "status": a.status,
                "created_at": "2024-01-01T00:00:00Z",
            })
        })
        .collect();
    let body = json!({
        "status": "success",
        "data": {"items": items, "total": state.accounts.len(), "page": page, "limit": limit},
    });
    response::<&str, &str>(200, JSON, body.to_string(), &[])
}
