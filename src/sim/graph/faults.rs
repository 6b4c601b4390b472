//! Injected failures: what should go wrong, for which call, how many times.
//!
//! A fault is matched per Graph call. For one call the first matching fault in list order
//! applies (so `[503 once, 80008 once]` on the same object fails two calls in sequence), and its
//! `remaining` count is decremented; a fault whose count reaches zero is removed from the list.

use std::time::Duration;

/// One injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub target: FaultTarget,
    pub kind: FaultKind,
    /// `None` = every matching call, forever; `Some(n)` = the next `n` matching calls.
    pub remaining: Option<u32>,
}

impl Fault {
    /// A fault that hits every matching call until it is removed.
    pub fn always(target: FaultTarget, kind: FaultKind) -> Self {
        Fault {
            target,
            kind,
            remaining: None,
        }
    }

    /// A fault that hits the next `times` matching calls.
    pub fn times(times: u32, target: FaultTarget, kind: FaultKind) -> Self {
        Fault {
            target,
            kind,
            remaining: Some(times),
        }
    }

    /// A fault that hits only the next matching call.
    pub fn once(target: FaultTarget, kind: FaultKind) -> Self {
        Fault::times(1, target, kind)
    }
}

/// Which calls a fault hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// Every HTTP request. A batch is hit as a whole (the entire POST fails, hangs, ...), not
    /// item by item.
    Any,
    /// A GET of this id, direct or as a batch item, and GETs of its edges
    /// (`/{id}/phone_numbers`). Appearances of the object nested inside another object's field
    /// expansion are not hit: use `EdgePage` for those.
    Object(String),
    /// One page of an edge. Page 1 is the first page nested inside the parent's field expansion
    /// (the whole request carrying that expansion fails, as at Meta) and also a direct
    /// `GET /{parent}/{edge}` without a cursor; page `k >= 2` is the request for the `k`-th page,
    /// i.e. the one a client makes by following `paging.next`. Pages count from 1; page 0
    /// matches nothing. The same holds for every edge: `phone_numbers`, `message_templates`
    /// (nested in a WABA's expansion, itself possibly nested in a business's), the business
    /// edges listing WABAs, and `subscribed_apps` (page 1 only).
    EdgePage {
        parent: String,
        edge: String,
        page: usize,
    },
}

impl FaultTarget {
    pub fn object(id: &str) -> Self {
        FaultTarget::Object(id.to_owned())
    }

    pub fn edge_page(parent: &str, edge: &str, page: usize) -> Self {
        FaultTarget::EdgePage {
            parent: parent.to_owned(),
            edge: edge.to_owned(),
            page,
        }
    }

    pub(crate) fn matches(&self, scope: &Scope<'_>) -> bool {
        match (self, scope) {
            (FaultTarget::Any, Scope::Request) => true,
            (FaultTarget::Any, Scope::Node { any, .. } | Scope::Edge { any, .. }) => *any,
            (FaultTarget::Object(target), Scope::Node { id, .. }) => target == id,
            (FaultTarget::Object(target), Scope::Edge { parent, .. }) => target == parent,
            (
                FaultTarget::EdgePage {
                    parent: p,
                    edge: e,
                    page: n,
                },
                Scope::Edge {
                    parent, edge, page, ..
                },
            ) => p == parent && e == edge && n == page,
            (
                FaultTarget::EdgePage {
                    parent: p,
                    edge: e,
                    page: n,
                },
                Scope::Nested { parent, edge },
            ) => *n == 1 && p == parent && e == edge,
            _ => false,
        }
    }
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// A Graph error envelope with this HTTP status and error code.
    GraphError {
        http_status: u16,
        code: i64,
        subcode: Option<i64>,
        message: String,
        is_transient: Option<bool>,
        /// Sent as a `Retry-After` header (seconds).
        retry_after: Option<u64>,
        /// Replaces the computed `X-Business-Use-Case-Usage` header with this raw value.
        usage_header: Option<String>,
    },
    /// Sleep this long, then answer normally. Inside a batch the item comes back `null`.
    Hang(Duration),
    /// An HTML error page with this status, as a load balancer in front of Graph sends.
    HtmlError(u16),
    /// A 200 whose JSON body is cut in the middle.
    Truncated,
    /// A valid 200 body padded with whitespace to about this many bytes.
    OversizeBody(usize),
    /// `paging.next` links point at this other base URL (e.g. `http://127.0.0.2:1`); a client
    /// must refuse to send its token there.
    ForeignPagingLink(String),
    /// Every edge page of the hit call carries a `paging.next` with a new cursor, past the
    /// end of the listing too: a listing that never ends (a hostile or broken server).
    EndlessPaging,
}

impl FaultKind {
    /// A Graph error with only the essentials set.
    pub fn graph_error(http_status: u16, code: i64, message: &str) -> Self {
        FaultKind::GraphError {
            http_status,
            code,
            subcode: None,
            message: message.to_owned(),
            is_transient: None,
            retry_after: None,
            usage_header: None,
        }
    }

    /// Meta's generic "try again later" (code 2, transient, HTTP 503).
    pub fn transient() -> Self {
        FaultKind::GraphError {
            http_status: 503,
            code: 2,
            subcode: None,
            message: "An unexpected error has occurred. Please retry your request later."
                .to_owned(),
            is_transient: Some(true),
            retry_after: None,
            usage_header: None,
        }
    }

    /// Too many calls to one WABA (code 80008). Meta sends it as HTTP 400, which is why clients
    /// must decide on the code and not on the status.
    pub fn waba_rate_limited(waba_id: &str, regain_minutes: u64) -> Self {
        FaultKind::GraphError {
            http_status: 400,
            code: 80008,
            subcode: Some(2_494_055),
            message: "(#80008) There have been too many calls to this WhatsApp Business account. Wait a bit and try again. For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.".to_owned(),
            is_transient: Some(true),
            retry_after: None,
            usage_header: Some(format!(
                "{{\"{waba_id}\":[{{\"type\":\"whatsapp_business_management\",\"call_count\":100,\"total_cputime\":12,\"total_time\":15,\"estimated_time_to_regain_access\":{regain_minutes}}}]}}"
            )),
        }
    }

    /// The application-wide request limit (code 4).
    pub fn app_rate_limited() -> Self {
        FaultKind::GraphError {
            http_status: 429,
            code: 4,
            subcode: None,
            message: "(#4) Application request limit reached".to_owned(),
            is_transient: Some(true),
            retry_after: None,
            usage_header: None,
        }
    }

    /// An expired token (code 190, subcode 463).
    pub fn token_expired() -> Self {
        FaultKind::GraphError {
            http_status: 401,
            code: 190,
            subcode: Some(463),
            message: "Error validating access token: Session has expired on Tuesday, 01-Jul-25 10:00:00 PDT. The current time is Tuesday, 01-Jul-25 11:00:00 PDT.".to_owned(),
            is_transient: Some(false),
            retry_after: None,
            usage_header: None,
        }
    }

    /// A missing permission (code 200).
    pub fn permission_denied() -> Self {
        FaultKind::GraphError {
            http_status: 403,
            code: 200,
            subcode: None,
            message: "(#200) Permissions error".to_owned(),
            is_transient: Some(false),
            retry_after: None,
            usage_header: None,
        }
    }

    /// The object is gone or no longer shared (code 100, subcode 33).
    pub fn object_missing(id: &str) -> Self {
        FaultKind::GraphError {
            http_status: 400,
            code: 100,
            subcode: Some(33),
            message: format!(
                "Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
            ),
            is_transient: None,
            retry_after: None,
            usage_header: None,
        }
    }
}

/// Where in a request a fault is being looked for.
pub(crate) enum Scope<'a> {
    /// The HTTP request as a whole; only `Any` matches here (used for batches).
    Request,
    /// A node GET; `any` says whether `Any` faults count (they do for a plain GET, not for a
    /// batch item, where they were already applied to the whole batch).
    Node { id: &'a str, any: bool },
    /// An edge GET for the given 1-based page.
    Edge {
        parent: &'a str,
        edge: &'a str,
        page: usize,
        any: bool,
    },
    /// The first page of an edge nested in a field expansion.
    Nested { parent: &'a str, edge: &'a str },
}

/// Takes the first live fault matching `scope`, counting the hit.
pub(crate) fn take(faults: &mut Vec<Fault>, scope: &Scope<'_>) -> Option<FaultKind> {
    let index = faults
        .iter()
        .position(|f| f.remaining != Some(0) && f.target.matches(scope))?;
    let fault = &mut faults[index];
    let kind = fault.kind.clone();
    if let Some(remaining) = fault.remaining.as_mut() {
        *remaining -= 1;
        if *remaining == 0 {
            faults.remove(index);
        }
    }
    Some(kind)
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what a test wants.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_fault_is_used_up_and_then_removed() {
        let mut faults = vec![Fault::times(
            2,
            FaultTarget::object("1"),
            FaultKind::Truncated,
        )];
        let scope = Scope::Node { id: "1", any: true };
        assert_eq!(take(&mut faults, &scope), Some(FaultKind::Truncated));
        assert_eq!(take(&mut faults, &scope), Some(FaultKind::Truncated));
        assert_eq!(take(&mut faults, &scope), None);
        assert!(faults.is_empty());
    }

    #[test]
    fn faults_on_the_same_target_apply_in_list_order() {
        let mut faults = vec![
            Fault::once(FaultTarget::object("1"), FaultKind::HtmlError(502)),
            Fault::once(FaultTarget::object("1"), FaultKind::Truncated),
        ];
        let scope = Scope::Node {
            id: "1",
            any: false,
        };
        assert_eq!(take(&mut faults, &scope), Some(FaultKind::HtmlError(502)));
        assert_eq!(take(&mut faults, &scope), Some(FaultKind::Truncated));
    }

    #[test]
    fn an_edge_page_fault_for_page_one_also_hits_the_nested_expansion_but_page_two_does_not() {
        let page_one = FaultTarget::edge_page("w", "phone_numbers", 1);
        let page_two = FaultTarget::edge_page("w", "phone_numbers", 2);
        let nested = Scope::Nested {
            parent: "w",
            edge: "phone_numbers",
        };
        assert!(page_one.matches(&nested));
        assert!(!page_two.matches(&nested));
        assert!(page_two.matches(&Scope::Edge {
            parent: "w",
            edge: "phone_numbers",
            page: 2,
            any: false,
        }));
    }

    #[test]
    fn any_does_not_hit_batch_items_individually() {
        assert!(!FaultTarget::Any.matches(&Scope::Node {
            id: "1",
            any: false
        }));
        assert!(FaultTarget::Any.matches(&Scope::Request));
    }
}
