//! Fleet benchmark: the real poller, exporter, HTTP surface and store against the Graph (or
//! Finedu) simulator with 50 ms added latency per request.
//!
//!     cargo build --release --example bench
//!     target/release/examples/bench                                # 1,000 WABAs x 10, 1 portfolio
//!     target/release/examples/bench business --wabas 10000 --portfolios 10
//!     target/release/examples/bench wabas --wabas 1000             # WABAs listed in the config
//!     target/release/examples/bench finedu --wabas 10000           # Finedu walk: 100 pages of 100
//!     target/release/examples/bench --postgres [URL]             # the store on PostgreSQL
//!     options: --per-waba K (10)  --page-size N (Finedu, 100)  --days D (0: 1 % churn per simulated day, then the
//!              database's size)  --scrapes S (21)  --detail compact|full
//!              --postgres [URL]: the store on that PostgreSQL database (its migrations applied on
//!              connect), or without a URL on a fresh database of a private server started for the
//!              run (`pg_testing`, or the server `WABA_MONITOR_TEST_POSTGRES` names)
//!
//! The simulator runs in a child process (this binary with `--serve`), and so do the scrapes
//! (`--scrape`: the 10-70 MB bodies are read outside this process), so the CPU time and peak
//! RSS printed are the monitor's own: poller, store, exporter and HTTP server. Prints, for the
//! first cycle (every target a first sighting) and unchanged cycles: wall and CPU time, Graph
//! requests (per 100 WABAs), history rows written, RSS; the longest write transaction; the
//! exposition's size and series per number; scrape times idle and while a cycle runs;
//! `GET /api/accounts/{id}` and `status --json` times; the database's size.
//!
//! On PostgreSQL the server's work is not this process's: each cycle also prints the CPU time of
//! the database's backends (read from `/proc`, so only for a server on this machine), and
//! `status --json` runs as the store call in a child process (the config names a file).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use waba_monitor::config::Config;
use waba_monitor::poller::Poller;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{FineduSim, FineduState, GraphSim, SimOptions, SimState};
use waba_monitor::store::{Pool, Store, pg_testing};

#[path = "common/procstat.rs"]
mod procstat;
use procstat::{cpu_seconds, peak_rss_mb, rss_mb};

const LATENCY: Duration = Duration::from_millis(50);
const TOKEN: &str = "bench-token-not-a-secret";

#[derive(Debug, Clone)]
struct Opts {
    mode: String,
    wabas: usize,
    per_waba: usize,
    portfolios: usize,
    days: usize,
    scrapes: usize,
    /// Finedu's pageSize (1-100; the API serves pages 1 to 100 only).
    page_size: usize,
    detail: String,
    /// `--postgres [URL]`: `Some(None)` for a fresh database on a private server.
    postgres: Option<Option<String>>,
}

fn opts(args: &[String]) -> Opts {
    let num = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mode = ["business", "wabas", "finedu"]
        .into_iter()
        .find(|m| args.iter().any(|a| a == m))
        .unwrap_or("business")
        .to_owned();
    let detail = args
        .iter()
        .position(|a| a == "--detail")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "compact".into());
    let postgres = args.iter().position(|a| a == "--postgres").map(|i| {
        args.get(i + 1)
            .filter(|v| v.starts_with("postgres://") || v.starts_with("postgresql://"))
            .cloned()
    });
    Opts {
        postgres,
        mode,
        wabas: num("--wabas", 1_000),
        per_waba: num("--per-waba", 10),
        portfolios: num("--portfolios", 1),
        days: num("--days", 0),
        scrapes: num("--scrapes", 21),
        page_size: num("--page-size", 100),
        detail,
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let o = opts(&args);
    if let Some(i) = args.iter().position(|a| a == "--status-json") {
        let cfg = args.get(i + 1).cloned().unwrap_or_default();
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(status_json_child(&cfg));
    }
    if let Some(i) = args.iter().position(|a| a == "--status-json-pg") {
        let cfg = args.get(i + 1).cloned().unwrap_or_default();
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(status_json_pg_child(&cfg));
    }
    if let Some(i) = args.iter().position(|a| a == "--scrape") {
        let url = args.get(i + 1).cloned().unwrap_or_default();
        return scrape_child(&url);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.iter().any(|a| a == "--serve") {
        return rt.block_on(serve(&o));
    }
    rt.block_on(bench(&o))
}

/// Child process: serve the fleet, print the URL, then obey stdin (`churn PCT DAY`: change the
/// quality of PCT % of the numbers, answer `ok`) until it closes.
async fn serve(o: &Opts) -> anyhow::Result<()> {
    enum Sim {
        Graph(GraphSim),
        Finedu(FineduSim),
    }
    let sim = if o.mode == "finedu" {
        Sim::Finedu(FineduSim::start(FineduState::fleet(o.wabas, o.per_waba), TOKEN).await?)
    } else {
        Sim::Graph(
            GraphSim::start(
                SimState::fleet_in(o.portfolios, o.wabas, o.per_waba),
                SimOptions {
                    token: TOKEN.to_owned(),
                    latency: LATENCY,
                    ..SimOptions::default()
                },
            )
            .await?,
        )
    };
    let url = match &sim {
        Sim::Graph(g) => g.url(),
        Sim::Finedu(f) => f.url(),
    };
    println!("{url}");
    std::io::stdout().flush()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let numbers = o.wabas * o.per_waba;
    while let Some(cmd) = rx.recv().await {
        let parts: Vec<&str> = cmd.split_whitespace().collect();
        if let (["churn", pct, day], Sim::Graph(g)) = (parts.as_slice(), &sim) {
            let pct: f64 = pct.parse().unwrap_or(1.0);
            let day: usize = day.parse().unwrap_or(0);
            let n = ((numbers as f64) * pct / 100.0).round() as usize;
            g.with_state(|s| {
                for k in 0..n {
                    // A different slice of the fleet each day, cycling through the ratings.
                    let idx = (day * n + k) * 7919 % numbers.max(1);
                    let id = (300_000_000_000_001u64 + idx as u64).to_string();
                    let p = s.phone_mut(&id);
                    p.quality_rating = Some(
                        match p.quality_rating.as_deref() {
                            Some("GREEN") => "YELLOW",
                            Some("YELLOW") => "RED",
                            _ => "GREEN",
                        }
                        .to_owned(),
                    );
                }
            });
        }
        println!("ok");
        std::io::stdout().flush()?;
    }
    match sim {
        Sim::Graph(g) => g.shutdown().await,
        Sim::Finedu(f) => f.shutdown().await,
    }
    Ok(())
}

/// Child process: GET `url` once per line read from stdin, answering with the time taken
/// (ms), the body's size and its series count; ends when stdin closes.
fn scrape_child(url: &str) -> anyhow::Result<()> {
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |(_, p)| p)
    );
    let stdin = std::io::stdin();
    let mut body = Vec::new();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
        let t = Instant::now();
        let mut s = std::net::TcpStream::connect(&addr)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        body.clear();
        s.read_to_end(&mut body)?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let text = String::from_utf8_lossy(&body);
        let series = text
            .lines()
            .filter(|l| l.starts_with("waba_monitor_"))
            .count();
        let per_target = text
            .lines()
            .filter(|l| l.starts_with("waba_monitor_phone") || l.starts_with("waba_monitor_waba"))
            .count();
        println!("{ms:.2} {} {series} {per_target}", body.len());
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Child process: what `status --json` does, printed to stdout.
async fn status_json_child(cfg: &str) -> anyhow::Result<()> {
    let cfg_path = std::path::Path::new(cfg);
    let cfg = Config::load(cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::open(&db_file(cfg_path)).await?;
    let entries = store.status_with(true, cfg.daemon.stale_after).await?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &entries)?;
    out.flush()?;
    Ok(())
}

/// The environment variable through which the PostgreSQL URL (with its password) reaches the
/// `status --json` child, rather than its command line.
/// The SQLite file the benchmark's config names (`database = "monitor.db"`, next to it).
fn db_file(cfg_path: &std::path::Path) -> std::path::PathBuf {
    cfg_path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("monitor.db")
}

const PG_URL_ENV: &str = "BENCH_POSTGRES_URL";

/// Child process: what `status --json` does on the PostgreSQL store named by `PG_URL_ENV`.
async fn status_json_pg_child(cfg: &str) -> anyhow::Result<()> {
    let cfg = Config::load(std::path::Path::new(cfg)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = std::env::var(PG_URL_ENV)?;
    let store = open_pg(&url).await?;
    let entries = store.status_with(true, cfg.daemon.stale_after).await?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &entries)?;
    out.flush()?;
    Ok(())
}

/// The store on the PostgreSQL database `url` (its password, if any, passed apart).
async fn open_pg(url: &str) -> anyhow::Result<Store> {
    let (bare, password) = pg_testing::split_password(url);
    let password = password.map(secrecy::SecretString::from);
    Ok(Store::open_postgres(&bare, password.as_ref()).await?)
}

/// CPU time (user + system, seconds) of the server's backends now connected to the store's
/// database: the PostgreSQL side of the work, which this process's CPU time does not include.
/// Read from `/proc`, so 0 for a server on another machine; a backend that exited is missed.
async fn pg_backend_cpu(store: &Store) -> f64 {
    let Pool::Pg(pool) = store.pool() else {
        return 0.0;
    };
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    pids.into_iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (ticks(11) + ticks(12)) / 100.0
        })
        .sum()
}

/// The database's size, in words: the file and its WAL (SQLite), or `pg_database_size` and the
/// part of it that is the store's tables and indexes (PostgreSQL).
async fn db_size(store: &Store, path: &std::path::Path) -> anyhow::Result<String> {
    Ok(match store.pool() {
        Pool::Lite(_) => format!("{:.1} MB (file + WAL)", db_mb(path)),
        Pool::Pg(pool) => {
            let database: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(pool)
                .await?;
            let tables: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'",
            )
            .fetch_one(pool)
            .await?;
            format!(
                "{:.1} MB (pg_database_size; the store's tables with their indexes and TOAST: {:.1} MB)",
                database as f64 / 1e6,
                tables as f64 / 1e6
            )
        }
    })
}

struct Scraper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Scraper {
    fn start(url: &str) -> anyhow::Result<Scraper> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--scrape", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Scraper {
            child,
            stdin,
            stdout,
        })
    }

    /// (ms, bytes, series, per-target series) of one scrape.
    fn scrape(&mut self) -> anyhow::Result<(f64, usize, usize, usize)> {
        writeln!(self.stdin, "go")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Ok((n(0), n(1) as usize, n(2) as usize, n(3) as usize))
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn db_mb(path: &std::path::Path) -> f64 {
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = path.with_extension("db-wal");
    (size(path.to_path_buf()) + size(wal)) as f64 / 1e6
}

async fn bench(o: &Opts) -> anyhow::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(std::env::args().skip(1))
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut sim_in = child.stdin.take().expect("piped");
    let mut sim_out = BufReader::new(child.stdout.take().expect("piped"));
    let mut url = String::new();
    sim_out.read_line(&mut url)?;
    let url = url.trim().to_owned();

    // BENCH_KEEP=DIR keeps the database (and the config) there, to time the CLI on it.
    let tmp = tempfile::tempdir()?;
    let keep = std::env::var_os("BENCH_KEEP").map(std::path::PathBuf::from);
    if let Some(k) = &keep {
        std::fs::create_dir_all(k)?;
    }
    let dir = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    let token = dir.join("token");
    std::fs::write(&token, TOKEN)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    }
    let numbers = o.wabas * o.per_waba;
    let conc = std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "4".into());
    let source = match o.mode.as_str() {
        "finedu" => format!(
            "[[bsp]]\nkind = \"finedu\"\nname = \"bench\"\nbase_url = \"{url}\"\ntoken_file = \"token\"\npage_size = {}\n",
            o.page_size
        ),
        mode => {
            let targets = if mode == "wabas" {
                let ids: Vec<String> = (0..o.wabas)
                    .map(|w| (200_000_000_000_001u64 + w as u64).to_string())
                    .collect();
                format!("wabas = {ids:?}")
            } else {
                let ids: Vec<String> = (0..o.portfolios.max(1))
                    .map(|b| (100_000_000_000_001u64 + b as u64).to_string())
                    .collect();
                format!("businesses = {ids:?}")
            };
            format!(
                "[[meta]]\nname = \"bench\"\ngraph_url = \"{url}\"\napi_version = \"v24.0\"\naccess_token_file = \"token\"\nconcurrency = {conc}\ntemplates = false\nquota_per_waba_hour = 5000\nquota_share = 1.0\n{targets}\n"
            )
        }
    };
    let cfg_path = dir.join("monitor.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[daemon]\ndatabase = \"monitor.db\"\nmetrics_detail = \"{}\"\n\n{source}",
            o.detail
        ),
    )?;
    let cfg = Config::load(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pg_url = match &o.postgres {
        None => None,
        Some(Some(url)) => Some(url.clone()),
        // Starts this process's private server (stopped when it exits) on first use.
        Some(None) => Some(tokio::task::block_in_place(|| {
            pg_testing::fresh_database("bench")
        })),
    };
    let store = match &pg_url {
        None => Store::open(&db_file(&cfg_path)).await?,
        Some(url) => open_pg(url).await?,
    };
    let backend = match (store.pool(), &pg_url) {
        (Pool::Pg(pool), Some(url)) => {
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(pool)
                .await?;
            format!(
                "PostgreSQL {version} at {}",
                pg_testing::split_password(url).0
            )
        }
        _ => format!("SQLite, {}", db_file(&cfg_path).display()),
    };
    let pg = pg_url.is_some();
    let poller = std::sync::Arc::new(Poller::from_config(
        &cfg,
        store.clone(),
        RetryPolicy::default(),
    )?);
    let metrics = poller.metrics();

    println!("store: {backend}");
    println!("rss before polling: {:.1} MB", rss_mb());
    println!(
        "fleet: {} WABAs x {} numbers = {numbers} numbers, {} ms latency per request, targets from {} ({} portfolio(s)), metrics_detail = {}",
        o.wabas,
        o.per_waba,
        LATENCY.as_millis(),
        o.mode,
        o.portfolios,
        o.detail
    );
    let mut longest_write = 0.0f64;
    let mut first_wall = 0.0;
    let mut unchanged_wall = Vec::new();
    let mut unchanged_cpu = Vec::new();
    let mut unchanged_server = Vec::new();
    for (label, n) in [("first", 1), ("unchanged", 3)] {
        for _ in 0..n {
            let rows_before = store.history_count().await?;
            let server0 = pg_backend_cpu(&store).await;
            let cpu0 = cpu_seconds();
            let t0 = Instant::now();
            let report = poller.poll_once().await;
            let wall = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            let server = pg_backend_cpu(&store).await - server0;
            let rows = store.history_count().await? - rows_before;
            let write = metrics.cycle_write_seconds.get();
            longest_write = longest_write.max(write);
            let s = &report.sources[0];
            if label == "first" {
                first_wall = wall;
            } else {
                unchanged_wall.push(wall);
                unchanged_cpu.push(cpu);
                unchanged_server.push(server);
            }
            let server = if pg {
                format!(" (server {server:.2} s)")
            } else {
                String::new()
            };
            println!(
                "cycle {label:<9} requests {:>5} ({:.2} per 100 WABAs)  wall {:>7.3} s  cpu {:>6.2} s{server}  write txn {:>6.3} s  history rows {:>7}  outcome {}  targets {}  rss {:.1} MB (peak {:.1})",
                s.requests,
                s.requests as f64 * 100.0 / o.wabas.max(1) as f64,
                wall,
                cpu,
                write,
                rows,
                s.outcome.as_str(),
                s.wabas + s.phones,
                rss_mb(),
                peak_rss_mb()
            );
        }
    }
    println!(
        "first cycle {first_wall:.2} s for {numbers} numbers ({:.1} µs per number); unchanged cycle median wall {:.3} s, cpu {:.2} s",
        first_wall * 1e6 / numbers.max(1) as f64,
        median(&mut unchanged_wall),
        median(&mut unchanged_cpu)
    );
    if pg {
        println!(
            "PostgreSQL backends' cpu: unchanged cycle median {:.2} s",
            median(&mut unchanged_server)
        );
    }
    println!(
        "database after the cycles: {}",
        db_size(&store, &db_file(&cfg_path)).await?
    );

    let t0 = Instant::now();
    poller.sync_metrics().await;
    let sync = t0.elapsed();
    println!(
        "metrics table: {} targets, {:.1} MB held; rebuilt from the database in {:.0} ms",
        metrics.target_count(),
        metrics.target_heap_bytes() as f64 / 1e6,
        sync.as_secs_f64() * 1000.0
    );

    // The HTTP surface of the same config; scrapes and API reads share the store and metrics.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = waba_monitor::lifecycle::ShutdownSignal::from_future(async move {
        let _ = stop_rx.await;
    });
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
            leadership: waba_monitor::lifecycle::Leadership::new(true),
        },
        Default::default(),
        shutdown,
    ));
    let mut scraper = Scraper::start(&format!("{base}/metrics"))?;
    let mut idle = Vec::new();
    let mut size = (0, 0, 0);
    for _ in 0..o.scrapes.max(1) {
        let (ms, bytes, series, per_target) = tokio::task::block_in_place(|| scraper.scrape())?;
        idle.push(ms);
        size = (bytes, series, per_target);
    }
    println!(
        "exposition: {:.1} MB, {} series ({} per-target: {:.2} per number including the WABAs' share)",
        size.0 as f64 / 1e6,
        size.1,
        size.2,
        size.2 as f64 / numbers.max(1) as f64
    );
    let http = reqwest::Client::new();
    let probe = if o.mode == "finedu" {
        "600000000000001".to_owned()
    } else {
        (300_000_000_000_001u64 + numbers as u64 / 2).to_string()
    };
    let mut api = Vec::new();
    for _ in 0..101 {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/api/accounts/{probe}"))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "GET /api/accounts: {}", r.status());
        std::hint::black_box(r.bytes().await?.len());
        api.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // Scrapes and API reads while a cycle runs (and writes): neither may wait for it.
    let cycle = {
        let poller = poller.clone();
        tokio::spawn(async move { poller.poll_once().await })
    };
    let mut during = Vec::new();
    let mut api_during = Vec::new();
    while !cycle.is_finished() {
        let (ms, ..) = tokio::task::block_in_place(|| scraper.scrape())?;
        during.push(ms);
        let t = Instant::now();
        let r = http
            .get(format!("{base}/api/accounts/{probe}"))
            .send()
            .await?;
        std::hint::black_box(r.bytes().await?.len());
        api_during.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    cycle.await?;
    longest_write = longest_write.max(metrics.cycle_write_seconds.get());
    println!(
        "scrape: median {:.1} ms, max {:.1} ms idle ({} scrapes); while a cycle runs: median {:.1} ms, max {:.1} ms ({} scrapes)",
        median(&mut idle),
        max(&idle),
        idle.len(),
        median(&mut during),
        max(&during),
        during.len()
    );
    println!(
        "GET /api/accounts/{{id}}: median {:.2} ms, max {:.2} ms idle; while a cycle runs: median {:.2} ms, max {:.2} ms",
        median(&mut api),
        max(&api),
        median(&mut api_during),
        max(&api_during)
    );

    // `status --json` in its own process: the real binary when it was built next to this
    // example (`cargo build --release`), else the same store call in a child of this one.
    println!(
        "peak RSS of the monitor so far (polling + metrics + HTTP): {:.1} MB",
        peak_rss_mb()
    );
    // Only a binary built with (or after) this benchmark: an older one may not know the
    // database's newest migration.
    let exe = std::env::current_exe()?;
    let built = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // On PostgreSQL the config names no database the binary could read: the store call.
    let cli = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("waba-monitor"))
        .filter(|p| built(p).is_some_and(|t| Some(t) >= built(&exe)))
        .filter(|_| !pg);
    let t = Instant::now();
    let mut status = match (&cli, &pg_url) {
        (_, Some(url)) => Command::new(std::env::current_exe()?)
            .arg("--status-json-pg")
            .arg(&cfg_path)
            .env(PG_URL_ENV, url)
            .stdout(Stdio::piped())
            .spawn()?,
        (Some(bin), None) => Command::new(bin)
            .arg("--config")
            .arg(&cfg_path)
            .args(["status", "--json"])
            .stdout(Stdio::piped())
            .spawn()?,
        (None, None) => Command::new(std::env::current_exe()?)
            .arg("--status-json")
            .arg(&cfg_path)
            .stdout(Stdio::piped())
            .spawn()?,
    };
    // Counted, not kept: the JSON is not this process's memory.
    let bytes = match status.stdout.take() {
        Some(mut out) => std::io::copy(&mut out, &mut std::io::sink())?,
        None => 0,
    };
    let code = status.wait()?;
    println!(
        "status --json ({}): {:.1} MB of JSON in {:.2} s, {code}",
        if cli.is_some() {
            "the waba-monitor binary"
        } else if pg {
            "the store call on PostgreSQL in a child process"
        } else {
            "the store call in a child process; `cargo build --release` to time the binary"
        },
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64(),
    );

    if o.days > 0 {
        let rows0 = store.history_count().await?;
        let t = Instant::now();
        for day in 0..o.days {
            writeln!(sim_in, "churn 1 {day}")?;
            sim_in.flush()?;
            let mut ok = String::new();
            sim_out.read_line(&mut ok)?;
            poller.poll_once().await;
            longest_write = longest_write.max(metrics.cycle_write_seconds.get());
        }
        if let Some(lite) = store.pool().sqlite() {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(lite)
                .await?;
        }
        println!(
            "{} simulated days at 1 % daily churn: {} history rows, database {} ({:.1} s)",
            o.days,
            store.history_count().await? - rows0,
            db_size(&store, &db_file(&cfg_path)).await?,
            t.elapsed().as_secs_f64()
        );
    }
    println!("longest write transaction of a cycle: {longest_write:.3} s");
    drop(scraper);
    let _ = stop_tx.send(());
    let _ = server.await;
    println!(
        "peak RSS of the monitor (polling + metrics + HTTP): {:.1} MB",
        peak_rss_mb()
    );
    store.close().await;
    drop(sim_in);
    let _ = child.wait();
    Ok(())
}
