//! Poll-cycle benchmark: the real poller against the Graph simulator with 1,000 WABAs × 10
//! numbers and 50 ms added latency per request.
//!
//!     cargo run --release --example bench                 # WABAs listed in the config
//!     cargo run --release --example bench -- business     # discovered from one portfolio
//!
//! The simulator runs in a child process (this same binary with `--serve`), so the CPU time
//! and peak RSS printed are the monitor's own. Prints Graph calls per cycle, wall time and CPU
//! time per cycle (first cycle, which records 11,000 targets, and unchanged cycles), peak RSS,
//! and history rows written by an unchanged cycle.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use waba_monitor::config::Config;
use waba_monitor::poller::Poller;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{GraphSim, SimOptions, SimState};
use waba_monitor::store::Store;

#[path = "common/procstat.rs"]
mod procstat;
use procstat::{cpu_seconds, peak_rss_mb, rss_mb};

const WABAS: usize = 1_000;
const PER_WABA: usize = 10;
const LATENCY: Duration = Duration::from_millis(50);
const TOKEN: &str = "bench-token-not-a-secret";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.iter().any(|a| a == "--serve") {
        return rt.block_on(serve());
    }
    let mode = if args.iter().any(|a| a == "business") {
        "business"
    } else {
        "wabas"
    };
    rt.block_on(bench(mode))
}

/// Child process: serve the fleet, print the URL, run until stdin closes.
async fn serve() -> anyhow::Result<()> {
    let sim = GraphSim::start(
        SimState::fleet(WABAS, PER_WABA),
        SimOptions {
            token: TOKEN.to_owned(),
            latency: LATENCY,
            ..SimOptions::default()
        },
    )
    .await?;
    println!("{}", sim.url());
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await?;
    sim.shutdown().await;
    Ok(())
}

async fn bench(mode: &str) -> anyhow::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut url)?;
    let url = url.trim().to_owned();

    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    }
    let targets = match mode {
        "business" => "businesses = [\"100000000000001\"]".to_owned(),
        _ => {
            let ids: Vec<String> = (0..WABAS)
                .map(|w| (200_000_000_000_001u64 + w as u64).to_string())
                .collect();
            format!("wabas = {ids:?}")
        }
    };
    let conc = std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "4".into());
    let cfg_path = dir.path().join("monitor.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"bench\"\ngraph_url = \"{url}\"\napi_version = \"v24.0\"\naccess_token_file = \"token\"\nconcurrency = {conc}\n{targets}\n"
        ),
    )?;
    let cfg = Config::load(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::open(&cfg.daemon.database).await?;
    let poller = std::sync::Arc::new(Poller::from_config(
        &cfg,
        store.clone(),
        RetryPolicy::default(),
    )?);

    println!("rss before polling: {:.1} MB", rss_mb());
    println!(
        "fleet: {WABAS} WABAs x {PER_WABA} numbers, {} ms latency per request, targets from {mode}",
        LATENCY.as_millis()
    );
    for (label, n) in [("first (records 11,000 targets)", 1), ("unchanged", 3)] {
        for _ in 0..n {
            let rows_before = store.history_count().await?;
            let cpu0 = cpu_seconds();
            let t0 = Instant::now();
            let report = poller.poll_once().await;
            let wall = t0.elapsed();
            let cpu = cpu_seconds() - cpu0;
            let rows = store.history_count().await? - rows_before;
            let s = &report.sources[0];
            println!(
                "cycle {label:<31} calls {:>4}  requests {:>3}  wall {:>7.3} s  cpu {:>6.2} s  history rows {:>6}  outcome {}  targets {}  rss {:.1} MB (peak {:.1})",
                s.calls,
                s.requests,
                wall.as_secs_f64(),
                cpu,
                rows,
                s.outcome.as_str(),
                s.wabas + s.phones,
                rss_mb(),
                peak_rss_mb()
            );
        }
    }
    // Metrics at this scale: the per-target series are rendered when targets change (here:
    // all of them, once), then every scrape only concatenates.
    let t0 = Instant::now();
    poller.sync_metrics().await;
    let first_sync = t0.elapsed();
    let t0 = Instant::now();
    poller.sync_metrics().await;
    let unchanged_sync = t0.elapsed();
    let metrics = poller.metrics();
    let size = metrics.encode().len();
    // Scrapes over real HTTP, as Prometheus does them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = waba_monitor::lifecycle::ShutdownSignal::from_future(async move {
        let _ = stop_rx.await;
    });
    // A runtime of the same config for the HTTP surface; scrapes read the shared metrics.
    let ground = waba_monitor::runtime::Ground {
        store: store.clone(),
        metrics: metrics.clone(),
        mail_wake: Default::default(),
        memory: Default::default(),
        retry: RetryPolicy::default(),
    };
    let runtime = waba_monitor::runtime::SharedRuntime::new(waba_monitor::runtime::Runtime::build(
        cfg.clone(),
        &ground,
    )?);
    let server = tokio::spawn(waba_monitor::http::serve(
        listener,
        waba_monitor::http::AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            stats: Default::default(),
            runtime,
        },
        Default::default(),
        shutdown,
    ));
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..51 {
        let t = Instant::now();
        let body = http.get(&url).send().await?.bytes().await?;
        std::hint::black_box(body.len());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    // And a scrape while a poll cycle runs: it must not wait for the cycle.
    let cycle = {
        let poller = poller.clone();
        tokio::spawn(async move { poller.poll_once().await })
    };
    let mut during = Vec::new();
    while !cycle.is_finished() {
        let t = Instant::now();
        let body = http.get(&url).send().await?.bytes().await?;
        std::hint::black_box(body.len());
        during.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    cycle.await?;
    during.sort_by(f64::total_cmp);
    let _ = stop_tx.send(());
    let _ = server.await;
    println!(
        "metrics: {} targets, exposition {:.1} MB; sync after an unchanged cycle {:.0} ms (first render {:.0} ms)",
        metrics.target_count(),
        size as f64 / 1e6,
        unchanged_sync.as_secs_f64() * 1000.0,
        first_sync.as_secs_f64() * 1000.0,
    );
    println!(
        "scrape over HTTP: median {:.1} ms, max {:.1} ms; during a poll cycle: median {:.1} ms, max {:.1} ms ({} scrapes)",
        times[times.len() / 2],
        times[times.len() - 1],
        during.get(during.len() / 2).copied().unwrap_or(0.0),
        during.last().copied().unwrap_or(0.0),
        during.len()
    );
    println!("peak RSS of the monitor: {:.1} MB", peak_rss_mb());
    store.close().await;
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}
