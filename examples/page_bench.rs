//! Status-page benchmark: how long `/` takes at 10,000 numbers.
//!
//!     cargo run --release --example page_bench [-- RENDERS]
//!
//! The Graph simulator (in a child process: this same binary with `--serve`) serves 1,000
//! WABAs x 10 numbers, 1 % of them RED, 3 % YELLOW, 0.2 % BANNED and 0.2 % with health BLOCKED;
//! the real poller records them in a real SQLite file; the daemon's HTTP surface serves the
//! page on loopback, and `RENDERS` (default 50) sequential GETs of `/` are timed end to end
//! (request sent → whole body read), then a few of the other views, then `/` again while a
//! poll cycle runs.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use waba_monitor::config::Config;
use waba_monitor::poller::Poller;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{GraphSim, SimOptions, SimState};
use waba_monitor::store::Store;

const WABAS: usize = 1_000;
const PER_WABA: usize = 10;
const TOKEN: &str = "bench-token-not-a-secret";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.iter().any(|a| a == "--serve") {
        return rt.block_on(serve());
    }
    let renders = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(50)
        .max(1);
    rt.block_on(bench(renders))
}

fn phone(n: usize) -> String {
    (300_000_000_000_001u64 + n as u64).to_string()
}

/// The fleet: healthy, with a realistic share of problems spread over the WABAs.
fn fleet() -> SimState {
    let mut state = SimState::fleet(WABAS, PER_WABA);
    let total = WABAS * PER_WABA;
    for n in (0..total).step_by(100) {
        state.phone_mut(&phone(n + 7)).quality_rating = Some("RED".into());
    }
    for n in (0..total - 3).step_by(33) {
        let p = phone(n + 3);
        if state.phones[&p].quality_rating.as_deref() == Some("GREEN") {
            state.phone_mut(&p).quality_rating = Some("YELLOW".into());
        }
    }
    for n in (0..total).step_by(500) {
        state.phone_mut(&phone(n + 1)).status = Some("BANNED".into());
        state.set_health(&phone(n + 2), "PHONE_NUMBER", "BLOCKED", None);
    }
    state
}

/// Child process: serve the fleet, print the URL, run until stdin closes.
async fn serve() -> anyhow::Result<()> {
    let sim = GraphSim::start(
        fleet(),
        SimOptions {
            token: TOKEN.to_owned(),
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

struct Timed {
    ms: Vec<f64>,
    bytes: usize,
}

impl Timed {
    fn line(&self, label: &str) -> String {
        let mut ms = self.ms.clone();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        format!(
            "{label:<34} n {:>3}  min {:>6.1} ms  median {:>6.1} ms  p95 {:>6.1} ms  max {:>6.1} ms  body {:>4} KB",
            ms.len(),
            ms[0],
            pct(0.5),
            pct(0.95),
            ms[ms.len() - 1],
            self.bytes / 1024
        )
    }
}

async fn time_get(http: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<Timed> {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let resp = http.get(url).send().await?;
        anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        let body = resp.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
    }
    Ok(Timed { ms, bytes })
}

async fn bench(renders: usize) -> anyhow::Result<()> {
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
    let ids: Vec<String> = (0..WABAS)
        .map(|w| (200_000_000_000_001u64 + w as u64).to_string())
        .collect();
    let cfg_path = dir.path().join("monitor.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"bench\"\ngraph_url = \"{url}\"\napi_version = \"v24.0\"\naccess_token_file = \"token\"\nconcurrency = 8\nwabas = {ids:?}\n"
        ),
    )?;
    let cfg = Config::load(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::connect(&cfg.daemon.database).await?;
    let poller = std::sync::Arc::new(Poller::from_config(
        &cfg,
        store.clone(),
        RetryPolicy::default(),
    )?);
    let t0 = Instant::now();
    let report = poller.poll_once().await;
    let s = &report.sources[0];
    println!(
        "fleet: {} WABAs, {} numbers recorded by the poller in {:.1} s ({}) into {}",
        s.wabas,
        s.phones,
        t0.elapsed().as_secs_f64(),
        s.outcome.as_str(),
        cfg.daemon.database
    );

    // The part of a render that is the database: the fleet read in one snapshot.
    let mut reads = Vec::new();
    let mut rows = 0;
    for _ in 0..renders.min(20) {
        let t = Instant::now();
        let f = store.fleet(chrono::Utc::now(), 1).await?;
        reads.push(t.elapsed().as_secs_f64() * 1000.0);
        rows = f.numbers.len() + f.wabas.len();
    }
    reads.sort_by(f64::total_cmp);
    println!(
        "the database's share: store.fleet() (one snapshot, {rows} rows) min {:.1} ms, median {:.1} ms",
        reads[0],
        reads[reads.len() / 2]
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = waba_monitor::lifecycle::ShutdownSignal::from_future(async move {
        let _ = stop_rx.await;
    });
    let ground = waba_monitor::runtime::Ground {
        store: store.clone(),
        metrics: poller.metrics(),
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
            metrics: poller.metrics(),
            stats: Default::default(),
            runtime,
            leadership: waba_monitor::lifecycle::Leadership::new(true),
        },
        Default::default(),
        shutdown,
    ));
    let http = reqwest::Client::new();
    // Warm-up: the read connections open, the page's code paths run once.
    time_get(&http, &format!("{base}/"), 3).await?;

    let root = time_get(&http, &format!("{base}/"), renders).await?;
    println!("{}", root.line("GET /"));
    for (label, path) in [
        ("GET /?page=2", "/?page=2".to_owned()),
        ("GET /?state=critical", "/?state=critical".to_owned()),
        (
            "GET /?state=ok (all healthy, paged)",
            "/?state=ok".to_owned(),
        ),
        ("GET /?q=Fleet 500 (search)", "/?q=Fleet%20500".to_owned()),
        ("GET /numbers/{id}", format!("/numbers/{}", phone(7))),
        ("GET /wabas/{id}", "/wabas/200000000000001".to_owned()),
    ] {
        let t = time_get(&http, &format!("{base}{path}"), renders.min(20)).await?;
        println!("{}", t.line(label));
    }

    // `/` while a poll cycle records the whole fleet again.
    let cycle = {
        let poller = poller.clone();
        tokio::spawn(async move { poller.poll_once().await })
    };
    let mut during = Timed {
        ms: Vec::new(),
        bytes: 0,
    };
    while !cycle.is_finished() {
        let t = time_get(&http, &format!("{base}/"), 1).await?;
        during.ms.extend(t.ms);
        during.bytes = t.bytes;
    }
    cycle.await?;
    if !during.ms.is_empty() {
        println!("{}", during.line("GET / during a poll cycle"));
    }
    let ok = {
        let mut ms = root.ms.clone();
        ms.sort_by(f64::total_cmp);
        ms[(ms.len() - 1) / 2] <= 150.0
    };
    println!(
        "goal: / in <= 150 ms at {} numbers: {}",
        WABAS * PER_WABA,
        if ok {
            "met (median)"
        } else {
            "NOT met (median)"
        }
    );
    let _ = stop_tx.send(());
    let _ = server.await;
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}
