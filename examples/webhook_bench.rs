//! Webhook benchmark (issue 13): the real daemon in-process with `[webhooks]` and `[email]`, the
//! Graph simulator for its polls, and a minimal SMTP sink on loopback.
//!
//!     cargo build --release --example webhook_bench
//!     target/release/examples/webhook_bench
//!
//! 1. Latency: 100 signed `account_update` deliveries in Meta's shapes (a ban or a restriction,
//!    each for a different WABA), one at a time at uneven spacing; for each, the time from the
//!    POST to the alert email accepted by the SMTP sink. Median and max (goal ≤ 2 s).
//! 2. Receiver throughput: a client process with N concurrent connections POSTs 20,000
//!    distinct signed deliveries as fast as it can; deliveries answered 200 per second (goal
//!    ≥ 2,000/s). Then the time the processing step takes to drain them.
//! 3. RSS under a 50,000-delivery burst: the daemon's RSS before, during (max) and after the
//!    burst, and once the backlog is processed; VmHWM.
//!
//! The load comes from a child process (this binary with `--load`), so the RSS read from
//! /proc/self/status is the daemon's (plus the simulator and the SMTP sink, both small). The
//! database lives in a temporary directory under `WEBHOOK_BENCH_DIR` (default: the system's
//! temporary directory). `WEBHOOK_BENCH_CLIENTS` (16), `WEBHOOK_BENCH_THROUGHPUT` (20000) and
//! `WEBHOOK_BENCH_BURST` (50000) change the load. Loopback only; every loop is bounded.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::sync::{mpsc, oneshot};

use waba_monitor::config::Config;
use waba_monitor::daemon::{self, RunOptions};
use waba_monitor::sim::{GraphSim, SimOptions, SimState};
use waba_monitor::store::Store;

#[path = "common/procstat.rs"]
mod procstat;
use procstat::{cpu_seconds, peak_rss_mb, rss_mb};

const APP_SECRET: &str = "webhook-bench-app-secret-0123456789abcdef";
const VERIFY_TOKEN: &str = "webhook-bench-verify-token-0123456789";
const TOKEN: &str = "bench-token-not-a-secret";
const PATH: &str = "/webhooks/meta";
/// WABAs in the simulated fleet (one per latency event).
const WABAS: usize = 100;
const FIRST_WABA: u64 = 200_000_000_000_001;
/// The longest wait for one alert email.
const MAIL_WAIT: Duration = Duration::from_secs(10);
/// The longest wait for the processing step to drain a backlog.
const DRAIN_WAIT: Duration = Duration::from_secs(300);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some("--load") {
        let url = args.get(2).cloned().unwrap_or_default();
        let num = |i: usize| {
            args.get(i)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        return rt.block_on(load(url, num(3), num(4), num(5)));
    }
    rt.block_on(bench())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn waba(i: usize) -> String {
    (FIRST_WABA + i as u64).to_string()
}

/// Meta's envelope around one change of `waba` at `time`.
fn envelope(waba: &str, time: i64, field: &str, value: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{waba}","time":{time},"changes":[{{"value":{value},"field":"{field}"}}]}}]}}"#
    )
}

/// Event `i` of the latency run: a ban (even) or a restriction (odd) of WABA `i`.
fn alerting_event(i: usize, now: i64) -> String {
    if i.is_multiple_of(2) {
        envelope(
            &waba(i),
            now,
            "account_update",
            r#"{"event":"DISABLED_UPDATE","ban_info":{"waba_ban_state":"DISABLE","waba_ban_date":"2026-02-12"}}"#,
        )
    } else {
        envelope(
            &waba(i),
            now,
            "account_update",
            &format!(
                r#"{{"event":"ACCOUNT_RESTRICTION","restriction_info":[{{"restriction_type":"RESTRICTED_BIZ_INITIATED_MESSAGING","expiration":{}}}]}}"#,
                now + 30 * 86_400
            ),
        )
    }
}

/// Delivery `seq` of the load runs: a template status update (Meta's most frequent
/// `account`-level delivery), stored and processed but never alerted on; distinct per `seq`,
/// so none is deduplicated.
fn load_event(seq: usize) -> String {
    envelope(
        &waba(seq % WABAS),
        1_739_321_024 + seq as i64,
        "message_template_status_update",
        &format!(
            r#"{{"event":"APPROVED","message_template_id":{},"message_template_name":"bench_template_{seq}","message_template_language":"en_US","reason":"NONE"}}"#,
            900_000_000_000 + seq
        ),
    )
}

/// Child process: POST deliveries `start..start + count` with `clients` concurrent clients,
/// then print one line: accepted, refused or failed, seconds.
async fn load(url: String, count: usize, clients: usize, start: usize) -> anyhow::Result<()> {
    let bodies: Arc<Vec<(bytes::Bytes, String)>> = Arc::new(
        (start..start + count)
            .map(|seq| {
                let body = load_event(seq);
                let sig = sign(body.as_bytes());
                (bytes::Bytes::from(body), sig)
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients.max(1))
        .timeout(Duration::from_secs(30))
        .build()?;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (bodies, next, http, url) = (bodies.clone(), next.clone(), http.clone(), url.clone());
        let (accepted, refused, failed) = (accepted.clone(), refused.clone(), failed.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, sig)) = bodies.get(i) else {
                    return;
                };
                let resp = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", sig)
                    .body(body.clone())
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let _ = r.bytes().await;
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let _ = r.bytes().await;
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "{} {} {} {:.3}",
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    std::io::stdout().flush()?;
    Ok(())
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A message the sink accepted, and when.
struct Mail {
    at: Instant,
    data: String,
}

/// An accept-everything SMTP server on loopback (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
/// QUIT) that records when each message arrived.
#[derive(Clone, Default)]
struct SmtpSink {
    mails: Arc<Mutex<Vec<Mail>>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl SmtpSink {
    async fn start() -> anyhow::Result<(SmtpSink, u16)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let sink = SmtpSink::default();
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.session(stream).await;
                });
            }
        });
        Ok((sink, port))
    }

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (r, mut w) = stream.into_split();
        let mut r = TokioBufReader::new(r);
        w.write_all(b"220 localhost ESMTP bench sink\r\n").await?;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" => w.write_all(b"250-localhost\r\n250 8BITMIME\r\n").await?,
                "HELO" => w.write_all(b"250 localhost\r\n").await?,
                "DATA" => {
                    w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" || line == ".\n" {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    }
                    self.mails
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Mail {
                            at: Instant::now(),
                            data,
                        });
                    w.write_all(b"250 2.0.0 OK queued\r\n").await?;
                    self.arrived.notify_waiters();
                }
                "QUIT" => {
                    w.write_all(b"221 2.0.0 Bye\r\n").await?;
                    return Ok(());
                }
                _ => w.write_all(b"250 2.0.0 OK\r\n").await?,
            }
        }
    }

    fn count(&self) -> usize {
        self.mails
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// When the first message from index `from` on that mentions `needle` arrived (quoted-
    /// printable soft line breaks removed before looking).
    fn arrival(&self, from: usize, needle: &str) -> Option<Instant> {
        let mails = self.mails.lock().unwrap_or_else(PoisonError::into_inner);
        mails
            .iter()
            .skip(from)
            .find(|m| m.data.replace("=\r\n", "").contains(needle))
            .map(|m| m.at)
    }

    /// Waits (at most `wait`) for a message from index `from` on that mentions `needle`.
    async fn wait_for(&self, from: usize, needle: &str, wait: Duration) -> Option<Instant> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            if let Some(at) = self.arrival(from, needle) {
                return Some(at);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

/// The deliveries not processed yet: the stored count minus the id of the oldest unprocessed
/// one (ids are dense here: every delivery is distinct and none is deleted).
async fn backlog(store: &Store) -> anyhow::Result<i64> {
    let total = store.webhook_event_count().await?;
    Ok(match store.unprocessed_webhook_events(1).await?.first() {
        Some(oldest) => total - oldest.id + 1,
        None => 0,
    })
}

/// Waits (at most [`DRAIN_WAIT`]) until every stored delivery is processed: the time it took
/// and how many were left (0 unless the wait ran out).
async fn drain(store: &Store) -> anyhow::Result<(Duration, i64)> {
    let t0 = Instant::now();
    loop {
        let left = backlog(store).await?;
        if left == 0 || t0.elapsed() > DRAIN_WAIT {
            return Ok((t0.elapsed(), left));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the load child for `count` deliveries from `start`, sampling this process's RSS every
/// 50 ms; (accepted, refused, failed, seconds, max RSS MB).
async fn run_load(
    url: &str,
    count: usize,
    clients: usize,
    start: usize,
) -> anyhow::Result<(usize, usize, usize, f64, f64)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--load",
            url,
            &count.to_string(),
            &clients.to_string(),
            &start.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let reader = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let mut max_rss = rss_mb();
    // Bounded: the child's requests time out after 30 s each.
    let deadline = Instant::now() + Duration::from_secs(900);
    while !reader.is_finished() && Instant::now() < deadline {
        max_rss = max_rss.max(rss_mb());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !reader.is_finished() {
        let _ = child.kill();
    }
    let line = reader.await?;
    let _ = child.wait();
    let f: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let secs = f.get(3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((n(0), n(1), n(2), secs, max_rss))
}

fn write_private(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

async fn bench() -> anyhow::Result<()> {
    let clients = env_usize("WEBHOOK_BENCH_CLIENTS", 16);
    let throughput_n = env_usize("WEBHOOK_BENCH_THROUGHPUT", 20_000);
    let burst_n = env_usize("WEBHOOK_BENCH_BURST", 50_000);
    println!(
        "load average at start: {} ({} CPUs)",
        load_avg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let sim = GraphSim::start(
        SimState::fleet(WABAS, 1),
        SimOptions {
            token: TOKEN.to_owned(),
            ..SimOptions::default()
        },
    )
    .await?;
    let (smtp, smtp_port) = SmtpSink::start().await?;
    let dir = match std::env::var_os("WEBHOOK_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    write_private(&dir.path().join("meta-token"), TOKEN)?;
    write_private(&dir.path().join("app-secret"), APP_SECRET)?;
    write_private(&dir.path().join("verify-token"), VERIFY_TOKEN)?;
    let ids: Vec<String> = (0..WABAS).map(waba).collect();
    let cfg_path = dir.path().join("monitor.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[daemon]\ndatabase = \"monitor.db\"\nlisten = \"127.0.0.1:0\"\npoll_schedule = \"0 0 3 * * *\"\n\n\
             [[meta]]\nname = \"main\"\ngraph_url = \"{}\"\napi_version = \"v24.0\"\naccess_token_file = \"meta-token\"\nwabas = {ids:?}\n\n\
             [webhooks]\nlisten = \"127.0.0.1:0\"\npath = \"{PATH}\"\napp_secret_file = \"app-secret\"\nverify_token_file = \"verify-token\"\n\n\
             [email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\ntls = \"none\"\nfrom = \"waba-monitor <monitor@example.com>\"\nto = [\"ops@example.com\"]\ntimeout = \"5s\"\nmax_age = \"1h\"\n",
            sim.url()
        ),
    )?;
    let cfg = Config::load_for_start(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db_path = cfg
        .daemon
        .database
        .sqlite_path()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("the bench runs on a SQLite file"))?;
    let main_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hooks = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}{PATH}", hooks.local_addr()?);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (tx, mut cycles) = mpsc::unbounded_channel::<()>();
    let rss_idle = rss_mb();
    // The daemon as `run` starts it: production ticks (webhook pass every 500 ms, the delivery
    // worker woken by new alerts).
    let daemon = tokio::spawn(daemon::run_with_listeners(
        cfg,
        RunOptions::default(),
        main_listener,
        Some(hooks),
        async move {
            let _ = stop_rx.await;
        },
        move |_| {
            let _ = tx.send(());
        },
    ));
    tokio::time::timeout(Duration::from_secs(60), cycles.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no first cycle within 60 s"))?
        .ok_or_else(|| anyhow::anyhow!("the daemon stopped"))?;
    let store = Store::open(&db_path).await?;
    println!(
        "daemon started: {WABAS} WABAs polled from the simulator, rss {:.1} MB (before start {:.1} MB); database in {}",
        rss_mb(),
        rss_idle,
        dir.path().display()
    );

    // 1. POST → email accepted, one event at a time.
    let http = reqwest::Client::new();
    let mut latencies = Vec::new();
    let mut missed = 0;
    let now = chrono::Utc::now().timestamp();
    for i in 0..WABAS {
        let body = alerting_event(i, now);
        let from = smtp.count();
        let t0 = Instant::now();
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(body.as_bytes()))
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 200,
            "delivery {i}: {}",
            resp.status()
        );
        match smtp.wait_for(from, &waba(i), MAIL_WAIT).await {
            Some(at) => latencies.push(at.saturating_duration_since(t0).as_secs_f64()),
            None => missed += 1,
        }
        // Uneven spacing, so the POSTs fall at every phase of the 500 ms processing tick.
        tokio::time::sleep(Duration::from_millis(50 + (i as u64 * 137) % 450)).await;
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "1. POST -> email accepted ({} events, each a ban or restriction of another WABA): median {:.0} ms, p90 {:.0} ms, max {:.0} ms, min {:.0} ms, missed {missed}; load {}",
        latencies.len(),
        pct(0.5) * 1000.0,
        pct(0.9) * 1000.0,
        latencies.last().copied().unwrap_or(f64::NAN) * 1000.0,
        latencies.first().copied().unwrap_or(f64::NAN) * 1000.0,
        load_avg()
    );

    // 2. Receiver throughput with signature checks.
    let cpu0 = cpu_seconds();
    let (ok, refused, failed, secs, _) = run_load(&url, throughput_n, clients, 0).await?;
    println!(
        "2. receiver: {ok} of {throughput_n} signed deliveries accepted in {secs:.2} s by {clients} clients = {:.0}/s (refused {refused}, failed {failed}); daemon CPU {:.1} s (receiving and processing); load {}",
        ok as f64 / secs.max(1e-9),
        cpu_seconds() - cpu0,
        load_avg()
    );
    let (took, left) = drain(&store).await?;
    println!(
        "   processing drained the backlog {:.1} s after the last 200 ({left} left)",
        took.as_secs_f64()
    );

    // 3. RSS under a burst.
    let before = rss_mb();
    let cpu0 = cpu_seconds();
    let (ok, refused, failed, secs, during) =
        run_load(&url, burst_n, clients, throughput_n).await?;
    let after_burst = rss_mb();
    let burst_cpu = cpu_seconds() - cpu0;
    let (took, left) = drain(&store).await?;
    let after_drain = rss_mb();
    println!(
        "3. burst of {burst_n}: {ok} accepted in {secs:.1} s ({:.0}/s, refused {refused}, failed {failed}, daemon CPU {burst_cpu:.1} s); rss before {before:.1} MB, during max {during:.1} MB, after the burst {after_burst:.1} MB, after processing ({:.1} s later, {left} left) {after_drain:.1} MB; VmHWM {:.1} MB; load {}",
        ok as f64 / secs.max(1e-9),
        took.as_secs_f64(),
        peak_rss_mb(),
        load_avg()
    );
    println!(
        "stored deliveries: {}, emails received: {}",
        store.webhook_event_count().await?,
        smtp.count()
    );

    store.close().await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(30), daemon).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => println!("daemon stopped with an error: {e:#}"),
        Ok(Err(e)) => println!("daemon task failed: {e}"),
        Err(_) => println!("daemon did not stop within 30 s"),
    }
    sim.shutdown().await;
    Ok(())
}
