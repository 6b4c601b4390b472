//! The HTTP listener under hostile load (issue 11): half-open connections must not exhaust the
//! descriptors nor keep `/healthz` from answering, and API readers must not starve the poll
//! cycle. Everything on loopback, every loop bounded; figures are printed (`--nocapture`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::helpers::{TestApp, one_waba};
use waba_monitor::daemon::{self, RunOptions};
use waba_monitor::http::HttpLimits;
use waba_monitor::retry::RetryPolicy;

const WABA1: &str = "200000000000001";

/// A daemon running in this process on a loopback port.
struct Daemon {
    addr: SocketAddr,
    base: String,
    stop: Option<oneshot::Sender<()>>,
    /// One `all_ok()` per finished cycle.
    cycles: mpsc::UnboundedReceiver<bool>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    async fn start(app: &TestApp, opts: RunOptions) -> Daemon {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (tx, cycles) = mpsc::unbounded_channel();
        let handle = tokio::spawn(daemon::run_with_listener(
            app.config(),
            RunOptions {
                retry: RetryPolicy::fast(),
                ..opts
            },
            listener,
            async move {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = tx.send(r.all_ok());
            },
        ));
        let mut d = Daemon {
            addr,
            base: format!("http://{addr}"),
            stop: Some(stop_tx),
            cycles,
            handle,
        };
        let first = tokio::time::timeout(Duration::from_secs(30), d.cycles.recv())
            .await
            .expect("a first cycle in time")
            .expect("daemon running");
        assert!(first, "the first cycle is ok");
        d
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("clean exit");
    }
}

/// Sockets of the server side of `port` (local port = the daemon's) that are ESTABLISHED:
/// connections the daemon holds a descriptor for (or has not accepted yet). A socket the
/// server closed is in FIN_WAIT and no longer counts.
fn server_established(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "01" {
                n += 1;
            }
        }
    }
    n
}

/// GET over a fresh connection (no pooling), with its latency.
async fn fresh_get(base: &str, path: &str, limit: Duration) -> Result<(u16, Duration), String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(limit)
        .build()
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let resp = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let code = resp.status().as_u16();
    resp.text().await.map_err(|e| e.to_string())?;
    Ok((code, t0.elapsed()))
}

/// Reads until the server closes the connection (EOF or reset) or `limit` passes; returns
/// when it closed, measured from `opened`.
async fn wait_closed(mut s: TcpStream, opened: Instant, limit: Duration) -> Option<Duration> {
    let deadline = opened + limit;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
            // A server may answer a timed-out head with a 408 before closing.
            Ok(Ok(_)) => {}
        }
    }
}

fn limits(max_connections: usize, header_read_timeout: Duration) -> HttpLimits {
    HttpLimits {
        max_connections,
        header_read_timeout,
        ..HttpLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_capped_and_closed_after_the_header_timeout_while_healthz_answers()
 {
    const CAP: usize = 32;
    const HALF_OPEN: usize = 3 * CAP;
    let header_timeout = Duration::from_secs(2);
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let d = Daemon::start(
        &app,
        RunOptions {
            http: limits(CAP, header_timeout),
            ..RunOptions::default()
        },
    )
    .await;
    let port = d.addr.port();

    // Clients that send part of a request head and then nothing.
    let mut held = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN {
        let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(d.addr))
            .await
            .expect("connect in time")
            .expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        held.push((s, Instant::now()));
    }

    // While they are held, /healthz answers at once on a new connection, again and again.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let (code, took) = fresh_get(&d.base, "/healthz", Duration::from_secs(2))
            .await
            .expect("/healthz answers while half-open connections are held");
        assert_eq!(code, 200);
        worst = worst.max(took);
    }
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");

    // The daemon holds at most its cap (+ the one just accepted), not one per client.
    let mut established = server_established(port);
    for _ in 0..50 {
        if established <= CAP + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        established = server_established(port);
    }
    assert!(
        established <= CAP + 2,
        "the daemon holds {established} connections with a cap of {CAP}"
    );

    // Every half-open connection is closed by the server, none later than the header timeout
    // (plus scheduling slack).
    let limit = header_timeout + Duration::from_secs(3);
    let mut waits = tokio::task::JoinSet::new();
    for (s, opened) in held {
        waits.spawn(wait_closed(s, opened, limit));
    }
    let mut closed = Vec::with_capacity(HALF_OPEN);
    let mut open = 0;
    while let Some(r) = waits.join_next().await {
        match r.expect("task") {
            Some(t) => closed.push(t),
            None => open += 1,
        }
    }
    closed.sort();
    assert_eq!(
        open, 0,
        "{open} of {HALF_OPEN} half-open connections still open after {limit:?}"
    );
    let latest = closed.last().copied().unwrap_or_default();
    // The newest ones (those the cap did not evict) ran into the header timeout.
    assert!(
        latest >= header_timeout.mul_f32(0.8),
        "closed before the header timeout: {latest:?}"
    );
    eprintln!(
        "half-open: {HALF_OPEN} held, cap {CAP}: server held {established}; /healthz worst {worst:?}; closed after {:?} (first) .. {:?} (last)",
        closed.first(),
        latest
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_serves_requests_and_is_closed_once_idle_for_the_header_timeout() {
    let header_timeout = Duration::from_secs(2);
    let app = TestApp::spawn(one_waba(1), &format!("wabas = [\"{WABA1}\"]")).await;
    let d = Daemon::start(
        &app,
        RunOptions {
            http: limits(8, header_timeout),
            ..RunOptions::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(d.addr).await.expect("connect");
    let mut last = Instant::now();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"ok\n") {
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect("read");
            assert!(n > 0, "closed before answering");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        last = Instant::now();
        // Within the idle limit: the same connection serves the next request.
        tokio::time::sleep(header_timeout / 4).await;
    }
    let closed = wait_closed(s, last, header_timeout + Duration::from_secs(3))
        .await
        .expect("an idle keep-alive connection is closed by the server");
    assert!(
        closed >= header_timeout.mul_f32(0.8),
        "closed after {closed:?}, before the idle limit"
    );
    eprintln!("idle keep-alive connection closed after {closed:?}");
    d.stop().await;
}
