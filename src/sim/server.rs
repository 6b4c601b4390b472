//! The loopback HTTP server both simulators run on: bound to `127.0.0.1:0`, one axum handler
//! for every path, stopped gracefully or by drop; plus what both handlers need around it (the
//! request log tests read, the query and `Authorization` readers, the response builder).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::form_urlencoded;

/// How long `shutdown` waits for requests in flight (a hanging fault, say) before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The content type of the HTML error pages a proxy in front of an API sends.
pub(crate) const HTML_TYPE: &str = "text/html; charset=utf-8";

/// A poisoned lock only means a test panicked mid-update; the data is still the best we have.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running server on `127.0.0.1`. Dropping it stops the server too; `shutdown` does it
/// gracefully.
pub(crate) struct Loopback {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Loopback {
    /// Binds `127.0.0.1:0`, makes the shared state from the base URL (`http://127.0.0.1:<port>`)
    /// and serves every request with `handler` until shutdown. It returns once the port is
    /// bound, so the URL can be used at once. `name` says which simulator a log line is about.
    pub(crate) async fn start<S, H, T>(
        name: &'static str,
        shared: impl FnOnce(String) -> S,
        handler: H,
    ) -> io::Result<(Arc<S>, Loopback)>
    where
        S: Send + Sync + 'static,
        H: Handler<T, Arc<S>>,
        T: 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(shared(format!("http://{addr}")));
        let app = Router::new()
            .fallback(handler)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender also means stop.
                let _ = stopped.await;
            });
            if let Err(error) = server.await {
                tracing::warn!(%error, "{name} stopped with an error");
            }
        });
        let server = Loopback {
            addr,
            stop: Some(stop),
            task: Some(task),
        };
        Ok((shared, server))
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets requests in flight finish (for at most two seconds)
    /// and waits for the server task.
    pub(crate) async fn shutdown(mut self) {
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

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Every request a simulator received, in order, for tests to inspect.
pub(crate) struct RequestLog<T>(Mutex<Vec<T>>);

impl<T> Default for RequestLog<T> {
    fn default() -> Self {
        RequestLog(Mutex::new(Vec::new()))
    }
}

impl<T: Clone> RequestLog<T> {
    pub(crate) fn record(&self, request: T) {
        lock(&self.0).push(request);
    }

    pub(crate) fn all(&self) -> Vec<T> {
        lock(&self.0).clone()
    }

    pub(crate) fn count(&self) -> usize {
        lock(&self.0).len()
    }

    pub(crate) fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// `a=1&b=x%20y` as decoded pairs, in order, repeats kept.
pub(crate) fn parse_query(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

/// The raw `Authorization` header, if there is one that is text.
pub(crate) fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A response with this status (500 if it is not one), content type, body and extra headers.
pub(crate) fn response<N: AsRef<str>, V: AsRef<str>>(
    status: u16,
    content_type: &str,
    body: String,
    headers: &[(N, V)],
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
            HeaderName::from_bytes(name.as_ref().as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        ) {
            map.append(name, value);
        }
    }
    response
}
