//! A simulated Finedu BSP API: the "Waba account list" endpoint, served over loopback HTTP.
//!
//! `GET /v1/whatsapp/businessAccounts?pageNo=1&pageSize=10[&accountReviewStatus=APPROVED]`
//! with `Authorization: Bearer <token>` answers one page of WABAs, each with all its phone
//! numbers nested, in camelCase, plus the page-number paging fields `total`, `size`, `current`
//! and `pages` (the reference is `reference/bsp-business-accounts-api.txt`).
//!
//! The documentation says nothing about errors or about edge cases, so the simulator makes
//! choices a Java backend behind a proxy plausibly makes, and tests should not read more into
//! them than that:
//! - errors are `{"code":<http status>,"message":"...","data":null}`: 401 for a missing or
//!   wrong token, 400 for a `pageNo` or `pageSize` outside 1..=100 or not an integer and for an
//!   unknown `accountReviewStatus`, 404 for another path, 405 for another method;
//! - an empty parameter (`pageNo=`) counts as absent, and so takes its default;
//! - `pages` is `ceil(total / size)`, so an empty listing has `pages: 0` and `data: []`, as the
//!   MyBatis-Plus page object whose field names the API reuses computes it;
//! - a `pageNo` past the end answers `data: []` with the true `total` and `pages`, and
//!   `current` echoes the page asked for;
//! - a field that is `None` is sent as JSON `null` rather than left out;
//! - the token is checked before the path, as a gateway in front of the service would.
//!
//! Files: this file is the public API and the server; `handler.rs` answers one request (its
//! parameters, the page, the errors); `faults.rs` holds the injected failures; `state.rs` the
//! fleet and its JSON shape, with `demo.rs` for the demo fleet.

mod demo;
mod faults;
mod handler;
mod state;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub use demo::ids;
pub use faults::FineduFault;
pub use state::{FineduPhone, FineduState, FineduWaba};

use super::server::{Loopback, RequestLog, lock};
use handler::handle;

/// The only path the simulator serves.
pub const ACCOUNTS_PATH: &str = "/v1/whatsapp/businessAccounts";
/// The largest `pageNo` and `pageSize` the API accepts.
pub const MAX_PAGE_PARAM: u32 = 100;

/// One HTTP request as the simulator received it, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineduRequest {
    pub path: String,
    /// The raw query string, empty when there is none.
    pub query: String,
    /// The raw `Authorization` header.
    pub authorization: Option<String>,
}

struct Shared {
    token: String,
    url: String,
    state: Mutex<FineduState>,
    log: RequestLog<FineduRequest>,
}

/// A running simulator. Dropping it stops the server too; `shutdown` does it gracefully.
pub struct FineduSim {
    shared: Arc<Shared>,
    server: Loopback,
}

impl FineduSim {
    /// Binds `127.0.0.1:0` and serves `state` to requests carrying `Bearer <token>` until
    /// shutdown. It returns once the port is bound, so the URL can be used at once.
    pub async fn start(state: FineduState, token: &str) -> std::io::Result<FineduSim> {
        let make = |url| Shared {
            token: token.to_owned(),
            url,
            state: Mutex::new(state),
            log: RequestLog::default(),
        };
        let (shared, server) = Loopback::start("simulated Finedu API", make, handle).await?;
        Ok(FineduSim { shared, server })
    }

    /// The base URL a client configures, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Reads or changes the fleet and the faults; requests wait while `f` runs.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut FineduState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    /// Every HTTP request received since start, in order.
    pub fn requests(&self) -> Vec<FineduRequest> {
        self.shared.log.all()
    }

    pub fn request_count(&self) -> u64 {
        self.shared.log.count() as u64
    }

    /// A cheap handle to the same simulator that a spawned task can own (the demo's stepper
    /// uses one); it cannot stop the server.
    pub fn clone_handle(&self) -> FineduHandle {
        FineduHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops accepting connections, lets requests in flight finish (for at most two seconds)
    /// and waits for the server task.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// A shared handle to a running simulator, from [`FineduSim::clone_handle`].
#[derive(Clone)]
pub struct FineduHandle {
    shared: Arc<Shared>,
}

impl FineduHandle {
    /// See [`FineduSim::with_state`].
    pub fn with_state<R>(&self, f: impl FnOnce(&mut FineduState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    pub fn url(&self) -> String {
        self.shared.url.clone()
    }
}
