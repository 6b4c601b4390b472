//! The HTTP surface: `/metrics`, `/healthz`, `/readyz` and the status API under `/api/`.
//!
//! The status API has the shape of Whatomate's Accounts API (an account = a monitored phone
//! number): responses wrapped as `{"status":"success","data":...}`, errors as
//! `{"status":"error","message":...}`. It never returns a token.

mod api;
mod page;
mod page_html;
mod serve;
pub mod webhooks;

pub use serve::{FD_RESERVE, HttpLimits, effective_cap, open_file_limit, serve_router};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::lifecycle::{CycleStats, ShutdownSignal};
use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::runtime::SharedRuntime;
use crate::store::Store;
use crate::timefmt::{parse_rfc3339, unix_now};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub stats: Arc<CycleStats>,
    /// The runtime in force: its poller, API token, readiness window and `stale_after` are
    /// read per request, so a reload applies to the next request.
    pub runtime: SharedRuntime,
    /// Whether this instance leads (always on SQLite): a standby of a pair is ready while its
    /// database answers, since it serves reads and does not poll.
    pub leadership: crate::lifecycle::Leadership,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api", api::router(state.clone()))
        .merge(page::router(state.clone()))
        .with_state(state)
}

/// Serves until `shutdown`, with the connection cap and timeouts of `limits` (see
/// [`serve_router`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: HttpLimits,
    shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    serve_router(listener, router(state), limits, shutdown).await
}

/// How long a scrape waits for the database's outbox figures.
const SCRAPE_DB_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

async fn metrics(State(s): State<AppState>) -> Response {
    // Values that live elsewhere are copied in at scrape time: cheap, and always current.
    s.metrics
        .cycles_skipped
        .set(s.stats.skipped_ticks.load(Ordering::Relaxed) as i64);
    let last = s.stats.last_finished_unix.load(Ordering::Relaxed);
    if last > 0 {
        s.metrics.last_cycle_finished.set(last as f64);
    }
    // Bounded: a database that does not answer (a pair's instance cut off from it) must not
    // hold up the scrape, which says among other things that this instance stepped down. The
    // outbox figures keep their last value then.
    match tokio::time::timeout(SCRAPE_DB_WAIT, s.store.outbox_pending())
        .await
        .unwrap_or_else(|_| {
            Err(crate::store::StoreError::Access(format!(
                "no answer within {SCRAPE_DB_WAIT:?}"
            )))
        }) {
        Ok((n, oldest)) => {
            s.metrics.outbox_pending.set(n);
            let age = oldest.as_deref().and_then(parse_rfc3339).map_or(0.0, |t| {
                (unix_now() - t.timestamp_millis() as f64 / 1000.0).max(0.0)
            });
            s.metrics.outbox_oldest_age.set(age);
        }
        Err(e) => tracing::warn!(error = %e, "could not read the outbox for metrics"),
    }
    // The per-target section is rendered chunk by chunk as the body is sent, from a shared
    // snapshot of the table: a scrape never holds the whole text.
    let chunks = s.metrics.encode_chunks();
    let stream = futures_util::stream::iter(chunks.map(Ok::<_, std::io::Error>));
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    if let Err(e) = s.store.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: database unreachable: {e}\n"),
        )
            .into_response();
    }
    if !s.leadership.is_leader() {
        return (
            StatusCode::OK,
            "ready: a standby of a pair (the leader polls; this instance serves reads)\n",
        )
            .into_response();
    }
    if let Some((n, why)) = s.stats.store_failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the last {n} poll cycle(s) could not be recorded in the database, so no change was saved and no alert sent: {why}\n"
            ),
        )
            .into_response();
    }
    let last = s.stats.last_finished_unix.load(Ordering::Relaxed);
    if last == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no poll cycle has finished yet\n",
        )
            .into_response();
    }
    let ago = (unix_now() - last as f64).max(0.0);
    let ready_within = s.runtime.current().progress_window;
    if ago > ready_within.as_secs_f64() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the last poll cycle finished {ago:.0}s ago, more than two intervals ({}s)\n",
                ready_within.as_secs()
            ),
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}
