//! Serving a `Router` on a TCP listener with protections against clients that hold connections
//! open (slowloris, half-open connections, idle keep-alive floods):
//!
//! - **header-read timeout**: a request head must arrive within `header_read_timeout` of the
//!   connection opening or of the previous response; the same timer is the idle keep-alive
//!   limit (hyper restarts it whenever a connection goes idle);
//! - **request timeout**: a handler must answer within `request_timeout` (503 otherwise);
//! - **connection cap**: at most `max_connections` connections are served at once, and never
//!   more than the process's descriptor limit minus [`FD_RESERVE`], so SQLite, SMTP and the
//!   Graph client always find a descriptor. When the cap is reached, a new connection is still
//!   accepted and the **oldest connection without a request in flight** (a half-open one, or
//!   an idle keep-alive one) is closed to make room: a well-behaved client that sends its
//!   request at once is served even while the cap is full of idle or half-open connections.
//!   Only when every connection is busy with a request does the listener stop accepting
//!   until one frees (new clients wait in the kernel's backlog rather than being refused). A
//!   connection whose response has not been taken by its client for twice the request
//!   timeout counts as idle too, so slow readers cannot hold the cap either.
//!
//! [`serve_router`] is the one way the daemon serves HTTP; a second listener (a webhook) uses
//! it as well.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::lifecycle::ShutdownSignal;

/// Descriptors kept for everything but HTTP connections: the two SQLite pools (three files per
/// connection: database, WAL, shared memory), SMTP, the Graph and BSP clients' connections,
/// the runtime's own (epoll, signals), stdio and the listener.
pub const FD_RESERVE: u64 = 128;

/// The cap never goes below this, whatever the descriptor limit says.
const MIN_CONNECTIONS: usize = 8;

/// Largest request head (and write buffer) per connection: 64 KiB instead of hyper's ~400 KiB,
/// so a full cap of connections stuffing headers costs at most 16 MiB.
const MAX_BUF: usize = 64 * 1024;

/// Limits of one HTTP listener. Production uses the defaults; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once (lowered further to fit the descriptor limit).
    pub max_connections: usize,
    /// A request's head must arrive within this long after the connection opened or the
    /// previous response was sent (so it is also the idle keep-alive limit).
    pub header_read_timeout: Duration,
    /// A request's handler must answer within this long.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The process's open-file limit (soft, hard) from `/proc/self/limits`; `None` for unlimited
/// or unknown. (Raising the soft limit needs `setrlimit`, which the crate cannot call without
/// unsafe code and which the systemd unit's system-call filter forbids anyway: the unit sets
/// `LimitNOFILE=` instead.)
pub fn open_file_limit() -> (Option<u64>, Option<u64>) {
    std::fs::read_to_string("/proc/self/limits")
        .map(|t| parse_open_file_limit(&t))
        .unwrap_or((None, None))
}

fn parse_open_file_limit(limits: &str) -> (Option<u64>, Option<u64>) {
    let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) else {
        return (None, None);
    };
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().ok());
    let soft = values.next().flatten();
    let hard = values.next().flatten();
    (soft, hard)
}

/// The connection cap for a descriptor limit: what was asked, but always [`FD_RESERVE`]
/// descriptors below the soft limit.
pub fn effective_cap(wanted: usize, soft_limit: Option<u64>) -> usize {
    let wanted = wanted.max(1);
    match soft_limit {
        Some(soft) => {
            let room = usize::try_from(soft.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
            wanted.min(room.max(MIN_CONNECTIONS))
        }
        None => wanted,
    }
}

/// One accepted connection, as the accept loop sees it.
struct Conn {
    accepted: Instant,
    /// Requests whose head was read and whose response body has not been dropped yet.
    in_flight: AtomicUsize,
    /// When the current request started, in ms since the registry's epoch.
    busy_since_ms: AtomicU64,
    /// Set once the connection was told to close; it is then never picked again.
    closing: AtomicBool,
    close: Notify,
}

impl Conn {
    fn is_evictable(&self, now_ms: u64, stall_ms: u64) -> bool {
        if self.closing.load(Ordering::Acquire) {
            return false;
        }
        self.in_flight.load(Ordering::Acquire) == 0
            || now_ms.saturating_sub(self.busy_since_ms.load(Ordering::Acquire)) > stall_ms
    }

    fn close_now(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }
}

/// The connections being served.
struct Registry {
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Woken when a connection ends or a request finishes.
    changed: Notify,
    epoch: Instant,
    /// A request running longer than this (twice the request timeout: the handler is cut off
    /// at the request timeout, so this is a response the client does not read) no longer
    /// protects its connection from being closed for a newcomer.
    stall_ms: u64,
}

impl Registry {
    fn new(limits: &HttpLimits) -> Registry {
        Registry {
            conns: Mutex::new(Vec::new()),
            changed: Notify::new(),
            epoch: Instant::now(),
            stall_ms: u64::try_from(limits.request_timeout.as_millis().saturating_mul(2))
                .unwrap_or(u64::MAX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        // A panic while holding this lock leaves a plain Vec behind: still usable.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Connections not yet told to close.
    fn open(&self) -> usize {
        self.lock()
            .iter()
            .filter(|c| !c.closing.load(Ordering::Acquire))
            .count()
    }

    fn any_evictable(&self) -> bool {
        let now = self.now_ms();
        self.lock()
            .iter()
            .any(|c| c.is_evictable(now, self.stall_ms))
    }

    /// Closes the oldest connection without a request in flight; false if there is none.
    fn evict_oldest_idle(&self) -> bool {
        let now = self.now_ms();
        let conns = self.lock();
        let oldest = conns
            .iter()
            .filter(|c| c.is_evictable(now, self.stall_ms))
            .min_by_key(|c| c.accepted);
        match oldest {
            Some(c) => {
                c.close_now();
                true
            }
            None => false,
        }
    }

    /// At shutdown: closes every connection without a request in flight (half-open, idle).
    fn close_idle(&self) {
        let now = self.now_ms();
        for c in self.lock().iter() {
            if c.is_evictable(now, self.stall_ms) {
                c.close_now();
            }
        }
    }

    fn insert(&self, conn: Arc<Conn>) {
        self.lock().push(conn);
    }

    fn remove(&self, conn: &Arc<Conn>) {
        self.lock().retain(|c| !Arc::ptr_eq(c, conn));
        self.changed.notify_one();
    }
}

/// Serves `router` on `listener` with `limits` until `shutdown`; then stops accepting, closes
/// idle and half-open connections at once and lets requests in flight finish.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    mut shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    let (soft, hard) = open_file_limit();
    let cap = effective_cap(limits.max_connections, soft);
    if cap < limits.max_connections {
        tracing::warn!(
            wanted = limits.max_connections,
            cap,
            soft_limit = soft,
            reserve = FD_RESERVE,
            "the open-file limit is low: fewer HTTP connections are served at once (raise LimitNOFILE= or `ulimit -n`)"
        );
    }
    tracing::info!(
        listen = ?listener.local_addr().ok(),
        max_connections = cap,
        header_read_timeout = ?limits.header_read_timeout,
        request_timeout = ?limits.request_timeout,
        open_files_soft = soft,
        open_files_hard = hard,
        "HTTP listener limits"
    );
    let registry = Arc::new(Registry::new(&limits));
    let mut tasks = JoinSet::new();
    let mut last_accept_warning: Option<Instant> = None;
    'accept: loop {
        while tasks.try_join_next().is_some() {}
        // Room for one more: below the cap, or a connection that can give way. Otherwise
        // every connection is busy with a request: wait for one to finish (or, since a busy
        // one becomes evictable once stalled, look again every second).
        while registry.open() >= cap && !registry.any_evictable() {
            tokio::select! {
                _ = registry.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait() => break 'accept,
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if !is_connection_error(&e) {
                    // EMFILE / ENFILE: give a descriptor back and wait a little.
                    registry.evict_oldest_idle();
                    if last_accept_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, connections = registry.open(), "the HTTP listener could not accept a connection");
                        last_accept_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        if registry.open() >= cap {
            registry.evict_oldest_idle();
        }
        let conn = Arc::new(Conn {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            busy_since_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        registry.insert(conn.clone());
        tasks.spawn(serve_connection(
            stream,
            conn,
            registry.clone(),
            router.clone(),
            limits,
            shutdown.clone(),
        ));
    }
    drop(listener);
    registry.close_idle();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    router: Router,
    limits: HttpLimits,
    mut shutdown: ShutdownSignal,
) {
    let _ = stream.set_nodelay(true);
    let service = ConnService {
        inner: TowerToHyperService::new(router),
        conn: conn.clone(),
        registry: registry.clone(),
        request_timeout: limits.request_timeout,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_BUF);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // Dropping the connection closes its socket at once.
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = conn.close.notified() => {}
        _ = shutdown.wait() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = conn.close.notified() => {}
            }
        }
    }
    registry.remove(&conn);
}

/// The router, with the request timeout and the in-flight bookkeeping around each request.
struct ConnService {
    inner: TowerToHyperService<Router>,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    request_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::start(self.conn.clone(), self.registry.clone());
        let api = req.uri().path().starts_with("/api/");
        let limit = self.request_timeout;
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = match tokio::time::timeout(limit, answer).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::warn!(timeout = ?limit, "an HTTP request ran past the request timeout and was cut off");
                    timed_out(api, limit)
                }
            };
            // The connection counts as busy until the response body is sent (or dropped).
            Ok(resp.map(|inner| Body::new(Tracked { inner, _busy: busy })))
        })
    }
}

fn timed_out(api: bool, limit: Duration) -> Response {
    let message = format!(
        "the request took longer than {} s and was cut off",
        limit.as_secs_f64()
    );
    let mut resp = if api {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "error", "message": message})),
        )
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n")).into_response()
    };
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Marks its connection busy from the request head to the end of the response body.
struct Busy {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Busy {
    fn start(conn: Arc<Conn>, registry: Arc<Registry>) -> Busy {
        conn.busy_since_ms
            .store(registry.now_ms(), Ordering::Release);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy { conn, registry }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.changed.notify_one();
        }
    }
}

/// A response body that holds its connection's [`Busy`] mark until it is done.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(text), (Some(1024), Some(524288)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_file_limit(unlimited), (None, None));
        assert_eq!(parse_open_file_limit("nothing here"), (None, None));
        // This process has one.
        assert!(open_file_limit().0.is_some());
    }

    #[test]
    fn the_cap_keeps_a_reserve_below_the_descriptor_limit() {
        assert_eq!(effective_cap(256, Some(8192)), 256);
        assert_eq!(effective_cap(256, Some(1024)), 256);
        assert_eq!(effective_cap(256, Some(300)), 300 - FD_RESERVE as usize);
        assert_eq!(effective_cap(256, Some(64)), MIN_CONNECTIONS);
        assert_eq!(effective_cap(256, None), 256);
        assert_eq!(effective_cap(0, None), 1);
    }

    fn conn(accepted: Instant) -> Arc<Conn> {
        Arc::new(Conn {
            accepted,
            in_flight: AtomicUsize::new(0),
            busy_since_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        })
    }

    #[tokio::test]
    async fn the_oldest_connection_without_a_request_gives_way_and_busy_ones_never() {
        let limits = HttpLimits::default();
        let reg = Arc::new(Registry::new(&limits));
        let t0 = Instant::now();
        let (old_busy, old_idle, young_idle) = (
            conn(t0),
            conn(t0 + Duration::from_millis(1)),
            conn(t0 + Duration::from_millis(2)),
        );
        for c in [&old_busy, &old_idle, &young_idle] {
            reg.insert(c.clone());
        }
        let busy = Busy::start(old_busy.clone(), reg.clone());
        assert_eq!(reg.open(), 3);
        assert!(reg.evict_oldest_idle());
        assert!(
            old_idle.closing.load(Ordering::Acquire),
            "oldest idle first"
        );
        assert!(
            !old_busy.closing.load(Ordering::Acquire),
            "never a busy one"
        );
        assert_eq!(reg.open(), 2);
        assert!(reg.evict_oldest_idle());
        assert!(young_idle.closing.load(Ordering::Acquire));
        assert!(!reg.evict_oldest_idle(), "only a busy one is left");
        assert!(!reg.any_evictable());
        // Its request ends: it may give way now, and the accept loop is woken.
        drop(busy);
        tokio::time::timeout(Duration::from_secs(1), reg.changed.notified())
            .await
            .expect("woken when a request ends");
        assert!(reg.any_evictable());
        // A connection told to close is woken.
        old_busy.close_now();
        tokio::time::timeout(Duration::from_secs(1), old_busy.close.notified())
            .await
            .expect("told to close");
    }

    #[test]
    fn a_response_its_client_does_not_read_stops_protecting_the_connection() {
        let limits = HttpLimits {
            request_timeout: Duration::from_millis(10),
            ..HttpLimits::default()
        };
        let reg = Arc::new(Registry::new(&limits));
        let c = conn(Instant::now());
        reg.insert(c.clone());
        let _busy = Busy::start(c.clone(), reg.clone());
        assert!(!reg.any_evictable());
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            reg.any_evictable(),
            "stalled past twice the request timeout"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_half_open_connections_at_once() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_router(
            listener,
            Router::new().route("/", axum::routing::get(|| async { "ok" })),
            HttpLimits::default(),
            ShutdownSignal::from_future(async move {
                let _ = stop_rx.await;
            }),
        ));
        let mut held = Vec::new();
        for _ in 0..5 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
            held.push(s);
        }
        // The server has them all (a full request on a new connection is answered after them).
        let resp = reqwest::get(format!("http://{addr}/"))
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 200);
        let t0 = Instant::now();
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("stops without waiting for the header timeout (10 s)")
            .expect("task")
            .expect("ok");
        for mut s in held {
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
                .await
                .expect("closed");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        assert!(t0.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_handler_is_cut_off_at_the_request_timeout() {
        let router = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/api/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_router(
            listener,
            router,
            HttpLimits {
                request_timeout: Duration::from_millis(300),
                ..HttpLimits::default()
            },
            ShutdownSignal::from_future(async move {
                let _ = stop_rx.await;
            }),
        ));
        let client = reqwest::Client::new();
        let t0 = Instant::now();
        let resp = client
            .get(format!("http://{addr}/api/slow"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 503);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["status"], "error");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let resp = client
            .get(format!("http://{addr}/slow"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 503);
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops")
            .expect("task")
            .expect("ok");
    }
}
