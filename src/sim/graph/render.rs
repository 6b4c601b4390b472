//! Answers one Graph GET (a node or an edge page) from the fleet, in Meta's JSON shapes.
//!
//! Rendering is synchronous and runs under the state lock; anything slow a fault asks for
//! (a hang) is only recorded in `Effects` and carried out by the server after the lock is gone.

use std::time::Duration;

use serde_json::{Map, Value, json};
use url::form_urlencoded;

use super::errors::GraphFailure;
use super::faults::{self, Fault, FaultKind, Scope};
use super::fields::{FieldSpec, fields_to_string, parse_fields};
use super::health::SIM_APP_ID;
use super::schema::{
    Kind, MESSAGE_TEMPLATES, Node, PORTFOLIO_LIMIT_FIELD, has_portfolio_limit, validate,
};
use super::state::{SimState, SimWaba};

/// Graph's default page size for edges.
const DEFAULT_LIMIT: usize = 25;
/// Graph's largest page size for the WhatsApp edges.
const MAX_LIMIT: usize = 100;

/// How the server builds `paging.next` links for one HTTP request.
pub(crate) struct LinkCtx<'a> {
    /// The simulator's own base URL, without a trailing slash.
    pub base_url: &'a str,
    /// The token to embed as `access_token=`, when the simulator mimics Meta there.
    pub token: Option<&'a str>,
    /// A foreign base from an `Any` fault applied to the whole request.
    pub foreign_base: Option<String>,
}

/// What the faults met during one call ask the server to do besides answering.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub hang: Duration,
    pub html: Option<u16>,
    pub truncated: bool,
    pub oversize: Option<usize>,
    /// Links of this call point here instead of at the simulator.
    pub foreign_base: Option<String>,
    /// Every edge page of this call links to a next page, forever.
    pub endless: bool,
}

impl Effects {
    /// Records a fault's effect; a `GraphError` becomes the call's answer instead.
    pub fn absorb(&mut self, kind: FaultKind) -> Result<(), GraphFailure> {
        match kind {
            FaultKind::GraphError {
                http_status,
                code,
                subcode,
                message,
                is_transient,
                retry_after,
                usage_header,
            } => {
                return Err(GraphFailure::from_fault(
                    http_status,
                    code,
                    subcode,
                    &message,
                    is_transient,
                    retry_after,
                    usage_header.as_deref(),
                ));
            }
            FaultKind::Hang(duration) => self.hang += duration,
            FaultKind::HtmlError(status) => self.html = self.html.or(Some(status)),
            FaultKind::Truncated => self.truncated = true,
            FaultKind::OversizeBody(bytes) => self.oversize = Some(bytes),
            FaultKind::ForeignPagingLink(base) => self.foreign_base = Some(base),
            FaultKind::EndlessPaging => self.endless = true,
        }
        Ok(())
    }
}

/// One call's answer before it becomes HTTP: the JSON (or the error) plus the fault effects.
pub(crate) struct CallOutput {
    pub result: Result<Value, GraphFailure>,
    pub effects: Effects,
    /// The WABA this call is counted against.
    pub waba: Option<String>,
}

/// A call's answer as bytes on the wire.
pub(crate) struct Wire {
    pub status: u16,
    pub html: bool,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub hang: Duration,
}

impl CallOutput {
    pub fn into_wire(self) -> Wire {
        match self.result {
            Ok(value) => shape(
                Wire {
                    status: 200,
                    html: false,
                    body: value.to_string(),
                    headers: Vec::new(),
                    hang: Duration::ZERO,
                },
                &self.effects,
            ),
            // An error is answered as is: the fault that produced it replaced the answer.
            Err(failure) => Wire {
                status: failure.status,
                html: false,
                body: failure.body.to_string(),
                headers: failure.headers,
                hang: self.effects.hang,
            },
        }
    }
}

/// Applies the body-mangling effects (HTML page, truncation, padding) and the hang to an answer.
pub(crate) fn shape(mut wire: Wire, effects: &Effects) -> Wire {
    wire.hang += effects.hang;
    if let Some(status) = effects.html {
        wire.status = status;
        wire.html = true;
        wire.body = html_page(status);
        wire.headers.clear();
    } else if effects.truncated {
        let mut cut = wire.body.len() / 2;
        while !wire.body.is_char_boundary(cut) {
            cut -= 1;
        }
        wire.body.truncate(cut);
    } else if let Some(bytes) = effects.oversize {
        // Whitespace after a JSON document is still valid JSON: the body stays correct, only big.
        let missing = bytes.saturating_sub(wire.body.len());
        wire.body.extend(std::iter::repeat_n(' ', missing));
    }
    wire
}

/// The kind of page a load balancer in front of Graph sends when it gives up.
fn html_page(status: u16) -> String {
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\n<body><h1>{status} {reason}</h1><p>Sorry, something went wrong. We're working on it and we'll get it fixed as soon as we can.</p></body></html>\n"
    )
}

/// Answers a GET of `/{segments...}` (version already stripped).
/// The WABA edge listing the apps subscribed to its webhooks.
pub(crate) const SUBSCRIBED_APPS: &str = "subscribed_apps";

/// `GET /{waba}/subscribed_apps` in Meta's shape: the simulated app ([`SIM_APP_ID`]) unless
/// the WABA's `webhooks_unsubscribed` flag removed it, and always a BSP's app (another app's
/// subscription must not count).
fn subscribed_apps(waba: &SimWaba) -> Value {
    let app = |id: &str, name: &str| {
        json!({ "whatsapp_business_api_data": {
            "id": id,
            "name": name,
            "link": format!("https://www.facebook.com/games/?app_id={id}"),
        } })
    };
    let mut data = vec![app("990000000000001", "Some BSP")];
    if !waba.webhooks_unsubscribed {
        data.push(app(SIM_APP_ID, "waba-monitor (simulated)"));
    }
    json!({ "data": data })
}

pub(crate) fn execute_get(
    state: &SimState,
    faults: &mut Vec<Fault>,
    links: &LinkCtx<'_>,
    version: Option<&str>,
    segments: &[String],
    query: &[(String, String)],
    any_faults: bool,
) -> CallOutput {
    let mut renderer = Renderer {
        state,
        faults,
        links,
        version,
        effects: Effects::default(),
    };
    let result = renderer.get(segments, query, any_faults);
    CallOutput {
        result,
        effects: renderer.effects,
        waba: segments
            .first()
            .and_then(|id| state.waba_of(id))
            .map(str::to_owned),
    }
}

/// One page of an edge to render.
struct PageRequest<'r> {
    parent: &'r str,
    edge: &'r str,
    child: Kind,
    items: &'r [&'r str],
    fields: Option<&'r [FieldSpec]>,
    limit: usize,
    start: usize,
    /// A foreign base for this edge's link only (an `EdgePage` fault).
    link_base: Option<String>,
}

struct Renderer<'a> {
    state: &'a SimState,
    faults: &'a mut Vec<Fault>,
    links: &'a LinkCtx<'a>,
    version: Option<&'a str>,
    effects: Effects,
}

impl<'a> Renderer<'a> {
    fn get(
        &mut self,
        segments: &[String],
        query: &[(String, String)],
        any_faults: bool,
    ) -> Result<Value, GraphFailure> {
        let param = |name: &str| {
            query
                .iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        match segments {
            [] => Err(GraphFailure::invalid_parameter(
                "Unsupported get request: no object id was given.",
            )),
            [id] => {
                self.direct_fault(&Scope::Node {
                    id,
                    any: any_faults,
                })?;
                let fields = parse_optional_fields(param("fields"))?;
                let node = self
                    .lookup(id)
                    .ok_or_else(|| GraphFailure::unknown_object(id, "get"))?;
                Ok(Value::Object(self.node(node, fields.as_deref())?))
            }
            [parent, edge] if edge == SUBSCRIBED_APPS => {
                self.direct_fault(&Scope::Edge {
                    parent,
                    edge,
                    page: 1,
                    any: any_faults,
                })?;
                let waba = self
                    .state
                    .wabas
                    .get(parent.as_str())
                    .ok_or_else(|| GraphFailure::unknown_object(parent, "get"))?;
                Ok(subscribed_apps(waba))
            }
            [parent, edge] => {
                let limit = parse_limit(param("limit"))?;
                let start = match param("after") {
                    Some(cursor) => decode_cursor(cursor)
                        .ok_or_else(|| {
                            GraphFailure::invalid_parameter("The after cursor is invalid.")
                        })?
                        .saturating_add(1),
                    None => 0,
                };
                self.direct_fault(&Scope::Edge {
                    parent,
                    edge,
                    page: start / limit + 1,
                    any: any_faults,
                })?;
                let fields = parse_optional_fields(param("fields"))?;
                let node = self
                    .lookup(parent)
                    .ok_or_else(|| GraphFailure::unknown_object(parent, "get"))?;
                let child = node.kind().edge(edge).ok_or_else(|| {
                    GraphFailure::nonexisting_field(edge, node.kind().type_name())
                })?;
                let items = self.edge_items(node, edge);
                if start >= items.len() && !self.effects.endless {
                    validate(child, fields.as_deref(), self.version)?;
                    return Ok(json!({ "data": [] }));
                }
                self.edge_page(PageRequest {
                    parent,
                    edge,
                    child,
                    items: &items,
                    fields: fields.as_deref(),
                    limit,
                    start,
                    link_base: None,
                })
            }
            [_, _, rest @ ..] => Err(GraphFailure::unknown_path(rest)),
        }
    }

    /// Applies the first fault aimed at this call itself.
    fn direct_fault(&mut self, scope: &Scope<'_>) -> Result<(), GraphFailure> {
        match faults::take(self.faults, scope) {
            Some(kind) => self.effects.absorb(kind),
            None => Ok(()),
        }
    }

    /// Applies the first fault aimed at the first page of an edge nested in an expansion;
    /// a foreign-link fault there only redirects that edge's link, which it returns.
    fn nested_fault(&mut self, parent: &str, edge: &str) -> Result<Option<String>, GraphFailure> {
        match faults::take(self.faults, &Scope::Nested { parent, edge }) {
            Some(FaultKind::ForeignPagingLink(base)) => Ok(Some(base)),
            Some(kind) => self.effects.absorb(kind).map(|()| None),
            None => Ok(None),
        }
    }

    fn lookup(&self, id: &str) -> Option<Node<'a>> {
        let state = self.state;
        if let Some(b) = state.businesses.get(id) {
            Some(Node::Business(b))
        } else if let Some(w) = state.wabas.get(id) {
            Some(Node::Waba(w))
        } else if let Some(p) = state.phones.get(id) {
            Some(Node::Phone(p))
        } else {
            state.templates.get(id).map(Node::Template)
        }
    }

    fn lookup_kind(&self, kind: Kind, id: &str) -> Option<Node<'a>> {
        let state = self.state;
        match kind {
            Kind::Business => state.businesses.get(id).map(Node::Business),
            Kind::Waba => state.wabas.get(id).map(Node::Waba),
            Kind::Phone => state.phones.get(id).map(Node::Phone),
            Kind::Template => state.templates.get(id).map(Node::Template),
        }
    }

    /// The ids an edge lists, skipping any that no longer exist.
    fn edge_items(&self, node: Node<'a>, edge: &str) -> Vec<&'a str> {
        let state = self.state;
        let ids: &'a [String] = match (node, edge) {
            (
                Node::Business(b),
                "owned_whatsapp_business_accounts" | "whatsapp_business_accounts",
            ) => &b.owned,
            (Node::Business(b), "client_whatsapp_business_accounts") => &b.client,
            (Node::Waba(w), "phone_numbers") => &w.phones,
            (Node::Waba(w), MESSAGE_TEMPLATES) => &w.templates,
            _ => &[],
        };
        let exists = |id: &String| match node.kind().edge(edge) {
            Some(Kind::Waba) => state.wabas.contains_key(id),
            Some(Kind::Phone) => state.phones.contains_key(id),
            Some(Kind::Template) => state.templates.contains_key(id),
            Some(Kind::Business) | None => false,
        };
        ids.iter()
            .filter(|id| exists(id))
            .map(String::as_str)
            .collect()
    }

    fn node(
        &mut self,
        node: Node<'a>,
        fields: Option<&[FieldSpec]>,
    ) -> Result<Map<String, Value>, GraphFailure> {
        let kind = node.kind();
        let defaults: Vec<FieldSpec>;
        let specs = match fields {
            Some(specs) => specs,
            None => {
                defaults = kind
                    .default_fields()
                    .iter()
                    .map(|name| FieldSpec::plain(name))
                    .collect();
                &defaults
            }
        };
        let mut out = Map::new();
        // Graph always returns the id, asked for or not.
        out.insert("id".to_owned(), Value::String(node.id().to_owned()));
        for spec in specs {
            if let Some(child) = kind.edge(&spec.name) {
                let items = self.edge_items(node, &spec.name);
                if items.is_empty() {
                    // Like Meta, an empty edge is simply absent, but its fields must still exist.
                    validate(child, spec.children.as_deref(), self.version)?;
                    continue;
                }
                let link_base = self.nested_fault(node.id(), &spec.name)?;
                let page = self.edge_page(PageRequest {
                    parent: node.id(),
                    edge: &spec.name,
                    child,
                    items: &items,
                    fields: spec.children.as_deref(),
                    limit: clamp_limit(spec.limit),
                    start: 0,
                    link_base,
                })?;
                out.insert(spec.name.clone(), page);
            } else if let Some(value) = self.scalar(node, &spec.name)? {
                out.insert(spec.name.clone(), value);
            }
        }
        Ok(out)
    }

    fn scalar(&self, node: Node<'a>, name: &str) -> Result<Option<Value>, GraphFailure> {
        let missing = || GraphFailure::nonexisting_field(name, node.kind().type_name());
        if name == PORTFOLIO_LIMIT_FIELD && !has_portfolio_limit(self.version) {
            return Err(missing());
        }
        if let Some(value) = node.overrides().get(name) {
            return Ok(Some(value.clone()));
        }
        node.scalar(name).ok_or_else(missing)
    }

    fn edge_page(&mut self, page: PageRequest<'_>) -> Result<Value, GraphFailure> {
        let end = page.start.saturating_add(page.limit).min(page.items.len());
        let mut data = Vec::with_capacity(end.saturating_sub(page.start));
        for id in page.items.get(page.start..end).unwrap_or_default() {
            if let Some(node) = self.lookup_kind(page.child, id) {
                data.push(Value::Object(self.node(node, page.fields)?));
            }
        }
        // An endless listing moves its cursor on by a page each time, past the end too.
        let after = if self.effects.endless {
            encode_cursor(page.start.saturating_add(page.limit).saturating_sub(1))
        } else {
            encode_cursor(end.saturating_sub(1))
        };
        let mut paging = json!({
            "cursors": { "before": encode_cursor(page.start), "after": after },
        });
        if end < page.items.len() || self.effects.endless {
            paging["next"] = Value::String(self.next_link(&page, &after));
        }
        Ok(json!({ "data": data, "paging": paging }))
    }

    /// `paging.next` in Meta's form: absolute, versioned like the request, carrying the nested
    /// fields and (like Meta) the access token.
    fn next_link(&self, page: &PageRequest<'_>, after: &str) -> String {
        let base = page
            .link_base
            .as_deref()
            .or(self.effects.foreign_base.as_deref())
            .or(self.links.foreign_base.as_deref())
            .unwrap_or(self.links.base_url)
            .trim_end_matches('/');
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(token) = self.links.token {
            query.append_pair("access_token", token);
        }
        query.append_pair("pretty", "0");
        if let Some(fields) = page.fields {
            query.append_pair("fields", &fields_to_string(fields));
        }
        query.append_pair("limit", &page.limit.to_string());
        query.append_pair("after", after);
        let version = self.version.map(|v| format!("/{v}")).unwrap_or_default();
        format!(
            "{base}{version}/{}/{}?{}",
            page.parent,
            page.edge,
            query.finish()
        )
    }
}

fn parse_optional_fields(value: Option<&str>) -> Result<Option<Vec<FieldSpec>>, GraphFailure> {
    value
        .map(|v| parse_fields(v).map_err(|e| GraphFailure::syntax(&e)))
        .transpose()
}

fn parse_limit(value: Option<&str>) -> Result<usize, GraphFailure> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .trim()
            .parse::<usize>()
            .map(|n| clamp_limit(Some(n)))
            .map_err(|_| {
                GraphFailure::invalid_parameter("Param limit must be a non-negative integer")
            }),
    }
}

/// Graph caps the WhatsApp edges at 100 per page; asking for more quietly gets 100.
fn clamp_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

const CURSOR_PREFIX: &str = "simcursor:";
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A cursor naming the item at `index`, opaque like Meta's (base64url text).
pub(crate) fn encode_cursor(index: usize) -> String {
    let raw = format!("{CURSOR_PREFIX}{index}");
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The item index a cursor names; `None` for anything this simulator did not hand out.
pub(crate) fn decode_cursor(cursor: &str) -> Option<usize> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::with_capacity(cursor.len());
    for c in cursor.bytes() {
        let value = B64.iter().position(|&b| b == c)?;
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix(CURSOR_PREFIX)?
        .parse()
        .ok()
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what a test wants.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_rejected() {
        for index in [0, 1, 99, 100, 12_345] {
            assert_eq!(decode_cursor(&encode_cursor(index)), Some(index));
        }
        assert_eq!(decode_cursor("QVFIUjNpUWpVWmRBd0Rn"), None);
        assert_eq!(decode_cursor("not a cursor!"), None);
    }

    #[test]
    fn the_portfolio_limit_field_starts_at_version_24() {
        assert!(!has_portfolio_limit(Some("v23.0")));
        assert!(has_portfolio_limit(Some("v24.0")));
        assert!(has_portfolio_limit(Some("v25.0")));
        assert!(has_portfolio_limit(None));
    }

    #[test]
    fn truncation_leaves_invalid_json_and_padding_leaves_valid_json() {
        let body = json!({ "id": "1", "name": "Acme Support" }).to_string();
        let wire = |body: &str| Wire {
            status: 200,
            html: false,
            body: body.to_owned(),
            headers: Vec::new(),
            hang: Duration::ZERO,
        };
        let truncated = shape(
            wire(&body),
            &Effects {
                truncated: true,
                ..Effects::default()
            },
        );
        assert!(serde_json::from_str::<Value>(&truncated.body).is_err());
        let padded = shape(
            wire(&body),
            &Effects {
                oversize: Some(4096),
                ..Effects::default()
            },
        );
        assert_eq!(padded.body.len(), 4096);
        assert_eq!(
            serde_json::from_str::<Value>(&padded.body).unwrap()["name"],
            "Acme Support"
        );
    }
}
