//! One request: its parameters, the page it asks for, the faults that hit it, and the reply
//! in the BSP's shapes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::state::{FineduState, FineduWaba};
use super::{ACCOUNTS_PATH, FineduRequest, MAX_PAGE_PARAM, Shared};
use crate::sim::server::{HTML_TYPE, authorization, lock, parse_query, response};

const DEFAULT_PAGE_SIZE: u32 = 10;
const REVIEW_STATUSES: [&str; 3] = ["PENDING", "APPROVED", "REJECTED"];
const JSON_TYPE: &str = "application/json;charset=UTF-8";

/// The parameters of a valid listing request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Params {
    page_no: u32,
    page_size: u32,
    review_status: Option<String>,
}

/// The first value of a query parameter; an empty value counts as absent, as Spring binds it.
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .filter(|value| !value.is_empty())
}

fn bounded(query: &[(String, String)], name: &str, default: u32) -> Result<u32, String> {
    match param(query, name) {
        None => Ok(default),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_PARAM).contains(n))
            .ok_or_else(|| format!("{name} must be an integer from 1 to {MAX_PAGE_PARAM}")),
    }
}

impl Params {
    fn parse(query: &[(String, String)]) -> Result<Params, String> {
        let page_no = bounded(query, "pageNo", 1)?;
        let page_size = bounded(query, "pageSize", DEFAULT_PAGE_SIZE)?;
        let review_status = match param(query, "accountReviewStatus") {
            None => None,
            Some(status) if REVIEW_STATUSES.contains(&status) => Some(status.to_owned()),
            Some(_) => {
                return Err(format!(
                    "accountReviewStatus must be one of {}",
                    REVIEW_STATUSES.join(", ")
                ));
            }
        };
        Ok(Params {
            page_no,
            page_size,
            review_status,
        })
    }
}

impl FineduState {
    /// The answer to a valid listing request.
    fn page(&self, params: &Params) -> Value {
        let matching: Vec<&FineduWaba> = self
            .wabas
            .iter()
            .filter(|w| {
                params
                    .review_status
                    .as_deref()
                    .is_none_or(|wanted| w.account_review_status.as_deref() == Some(wanted))
            })
            .collect();
        let total = matching.len();
        let size = params.page_size as usize;
        let skip = (params.page_no as usize - 1) * size;
        let data: Vec<Value> = matching
            .iter()
            .skip(skip)
            .take(size)
            .map(|w| w.to_json())
            .collect();
        json!({
            "data": data,
            "total": total,
            "size": params.page_size,
            "current": params.page_no,
            "pages": total.div_ceil(size),
        })
    }
}

/// A request, parsed once.
struct Incoming {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
}

impl Incoming {
    /// The page a fault aimed at a page number hits: `pageNo`, 1 when absent, and no page at
    /// all when it is not a number (only faults for every page hit such a request).
    fn page_hint(&self) -> Option<u32> {
        match param(&self.query, "pageNo") {
            None => Some(1),
            Some(text) => text.parse().ok(),
        }
    }
}

/// The server's answer, before it becomes an HTTP response.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    headers: Vec<(header::HeaderName, &'static str)>,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: JSON_TYPE,
            body,
            headers: Vec::new(),
        }
    }

    /// The BSP's error envelope, the HTTP status repeated as `code`.
    fn error(status: u16, message: &str) -> Reply {
        let body = json!({ "code": status, "message": message, "data": null });
        let mut reply = Reply::json(status, body.to_string());
        if status == 401 {
            reply.headers.push((header::WWW_AUTHENTICATE, "Bearer"));
        }
        reply
    }

    /// The kind of page a proxy in front of the BSP sends when the service behind it fails.
    fn html(status: u16) -> Reply {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        Reply {
            status,
            content_type: HTML_TYPE,
            body: format!(
                "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            ),
            headers: Vec::new(),
        }
    }

    fn into_response(self) -> Response {
        response(self.status, self.content_type, self.body, &self.headers)
    }
}

/// Cuts a body in the middle, on a character boundary so it stays a valid string.
fn truncate_half(body: &mut String) {
    let mut cut = body.len() / 2;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body.truncate(cut);
}

pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let incoming = Incoming {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parse_query(&raw_query),
        authorization: authorization(&parts.headers),
    };
    shared.log.record(FineduRequest {
        path: incoming.path.clone(),
        query: raw_query,
        authorization: incoming.authorization.clone(),
    });
    // The hang comes first and the answer is computed after it, so a test that changes the
    // state while a request hangs sees the change in the answer.
    let hang = lock(&shared.state).hang();
    if !hang.is_zero() {
        tokio::time::sleep(hang).await;
    }
    shared.answer(&incoming).into_response()
}

impl Shared {
    fn authorized(&self, incoming: &Incoming) -> bool {
        incoming
            .authorization
            .as_deref()
            .and_then(|value| value.trim().split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && token.trim() == self.token
            })
    }

    fn answer(&self, incoming: &Incoming) -> Reply {
        let mut state = lock(&self.state);
        let page_hint = incoming.page_hint();
        if let Some(status) = state.html_error(page_hint) {
            return Reply::html(status);
        }
        if state.unauthorized() || !self.authorized(incoming) {
            return Reply::error(401, "Unauthorized");
        }
        if incoming.path != ACCOUNTS_PATH {
            return Reply::error(404, "Not Found");
        }
        if incoming.method != Method::GET {
            return Reply::error(405, "Method Not Allowed");
        }
        let params = match Params::parse(&incoming.query) {
            Ok(params) => params,
            Err(message) => return Reply::error(400, &message),
        };
        let mut page = state.page(&params);
        if state.empties(params.page_no) {
            page["data"] = json!([]);
        }
        let mut body = page.to_string();
        if state.malformed(page_hint) {
            truncate_half(&mut body);
        }
        state.after_serving(params.page_no);
        Reply::json(200, body)
    }
}
