//! Batch requests: `POST /{version}/` with `batch=[{"method":"GET","relative_url":...},...]`.
//!
//! Each item is answered like a plain GET and wrapped as Meta wraps it; one item can fail while
//! the others succeed, and an item that did not finish comes back as `null`.

use std::time::Duration;

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::errors::GraphFailure;
use super::faults::{self, Fault};
use super::render::{self, CallOutput, Effects, LinkCtx, Wire};
use super::state::SimState;
use super::{
    BATCH_ITEM_JSON_TYPE, BUC_HEADER, Incoming, MAX_BATCH_ITEMS, Reply, Shared, split_path,
};
use crate::sim::server::{HTML_TYPE, lock, parse_query};

pub(super) fn is_batch(incoming: &Incoming) -> bool {
    incoming.method == Method::POST && incoming.segments.is_empty()
}

/// Reads the `batch` parameter of a batch POST.
pub(super) fn parse_batch(incoming: &Incoming) -> Result<Vec<Value>, GraphFailure> {
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
    /// A batch POST: each item is answered like a GET and wrapped as Meta does.
    pub(super) fn batch(&self, incoming: &Incoming, items: &[Value]) -> Reply {
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
        faults: &mut Vec<Fault>,
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
        let query = parse_query(query);
        // An item may carry its own token; a wrong one fails that item only.
        if let Some((_, token)) = query.iter().find(|(key, _)| key == "access_token")
            && *token != self.opts.token
        {
            return fail(GraphFailure::bad_token(true));
        }
        // A number with its own token (`SimState::phone_tokens`) is not served to the app's.
        if segments
            .first()
            .is_some_and(|id| state.phone_tokens.contains_key(id))
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
