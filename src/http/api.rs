//! The status API in the shape of Whatomate's Accounts API.

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::sources::SingleRead;
use crate::sources::graph::GraphError;
use crate::store::{HistoryFilter, StatusEntry};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/accounts", get(list))
        .route("/accounts/{id}", get(one))
        .route("/accounts/{id}/history", get(history))
        .route("/accounts/{id}/test", post(test))
        .fallback(not_found)
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

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
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

fn account(e: &StatusEntry) -> Value {
    json!({
        "id": e.id,
        "name": e.verified_name,
        "phone_number": e.display_phone_number,
        "phone_number_id": e.id,
        "business_account_id": e.waba_id,
        "business_account_name": e.name,
        "status": account_status(e.status.as_deref(), e.present),
        "meta_status": e.status,
        "quality_rating": e.quality_rating,
        "messaging_limit": e.messaging_limit,
        "health": e.health,
        "health_entities": e.health_entities,
        "name_status": e.name_status,
        "throughput": e.throughput,
        "source": e.source,
        "present": e.present,
        "stale": e.stale,
        "created_at": e.first_seen_at,
        "source_created_at": e.source_created_at,
        "source_updated_at": e.source_updated_at,
        "last_polled_at": e.last_polled_at,
        "last_changed_at": e.last_changed_at,
    })
}

async fn list(State(s): State<AppState>) -> Response {
    match s
        .store
        .status_with(true, s.runtime.current().stale_after)
        .await
    {
        Ok(entries) => {
            let items: Vec<Value> = entries
                .iter()
                .filter(|e| e.kind == "phone_number")
                .map(account)
                .collect();
            success(json!({ "items": items }))
        }
        Err(e) => {
            tracing::error!(error = %e, "status API: could not read the database");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not read the database",
            )
        }
    }
}

async fn find(s: &AppState, id: &str) -> Result<StatusEntry, Response> {
    match s.store.phone(id, s.runtime.current().stale_after).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            &format!("no monitored phone number with id {id}"),
        )),
        Err(e) => {
            tracing::error!(error = %e, "status API: could not read the database");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not read the database",
            ))
        }
    }
}

async fn one(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match find(&s, &id).await {
        Ok(e) => success(account(&e)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<u32>,
}

async fn history(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    if let Err(r) = find(&s, &id).await {
        return r;
    }
    match s
        .store
        .history(&HistoryFilter {
            id: Some(id),
            since: None,
            limit: Some(q.limit.unwrap_or(100).min(1000)),
        })
        .await
    {
        Ok(rows) => success(json!({ "items": rows })),
        Err(e) => {
            tracing::error!(error = %e, "status API: could not read the history");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not read the database",
            )
        }
    }
}

/// Reads the number from Meta now through its source. Records nothing: the next cycle does.
async fn test(State(s): State<AppState>, Path(id): Path<String>) -> Response {
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
    fn tokens_are_compared_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
