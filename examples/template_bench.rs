//! Template benchmark (issue 14): what reading every WABA's message templates costs. The real
//! poller against the Graph simulator (1,000 WABAs × 10 numbers × 20 templates, 50 ms added
//! latency per request), once with `templates = false` and once with templates read every
//! cycle, each on a fresh database: Graph calls and HTTP requests per cycle, wall and CPU time
//! of the first cycle and of unchanged ones, history rows, peak RSS. Then a second fleet whose
//! WABAs have 250 templates (3 pages of 100) shows the cost of further pages.
//!
//!     cargo run --release --example template_bench
//!
//! The simulator runs in a child process (this same binary with `--serve N T`), so the CPU
//! time printed is the monitor's own. `TEMPLATE_BENCH_WABAS` (1000) and
//! `TEMPLATE_BENCH_TEMPLATES` (20) change the first fleet.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use waba_monitor::config::Config;
use waba_monitor::poller::Poller;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{GraphSim, SimOptions, SimState};
use waba_monitor::store::Store;

#[path = "common/procstat.rs"]
mod procstat;
use procstat::{cpu_seconds, peak_rss_mb};

const PER_WABA: usize = 10;
const LATENCY: Duration = Duration::from_millis(50);
const TOKEN: &str = "bench-token-not-a-secret";
const UNCHANGED_CYCLES: usize = 3;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let n = |k: usize| args.get(i + k).and_then(|v| v.parse().ok()).unwrap_or(1);
        return rt.block_on(serve(n(1), n(2)));
    }
    rt.block_on(bench())
}

/// Child process: serve the fleet, print the URL, run until stdin closes.
async fn serve(wabas: usize, templates: usize) -> anyhow::Result<()> {
    let sim = GraphSim::start(
        SimState::fleet_with_templates(wabas, PER_WABA, templates),
        SimOptions {
            token: TOKEN.to_owned(),
            latency: LATENCY,
            // Room for the benchmark's cycles without the simulated usage throttling them.
            ..SimOptions::default()
        },
    )
    .await?;
    sim.with_state(|s| s.waba_call_budget = Some(1_000_000));
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

fn spawn_sim(wabas: usize, templates: usize) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", &wabas.to_string(), &templates.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut url)?;
    Ok((child, url.trim().to_owned()))
}

/// What one run (one config, fresh database) measured.
struct Run {
    first_wall: f64,
    first_cpu: f64,
    first_calls: u64,
    first_requests: u64,
    first_rows: i64,
    unchanged_wall: Vec<f64>,
    unchanged_cpu: f64,
    unchanged_calls: u64,
    unchanged_requests: u64,
    unchanged_rows: i64,
    templates_recorded: usize,
}

async fn run(url: &str, wabas: usize, templates_on: bool) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    }
    let ids: Vec<String> = (0..wabas)
        .map(|w| (200_000_000_000_001u64 + w as u64).to_string())
        .collect();
    let cfg_path = dir.path().join("monitor.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[daemon]\ndatabase = \"monitor.db\"\n\n[[meta]]\nname = \"bench\"\ngraph_url = \"{url}\"\napi_version = \"v24.0\"\naccess_token_file = \"token\"\nquota_per_waba_hour = 5000\ntemplates = {templates_on}\nwabas = {ids:?}\n"
        ),
    )?;
    let cfg = Config::load(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::connect(&cfg.daemon.database).await?;
    let poller = Poller::from_config(&cfg, store.clone(), RetryPolicy::default())?;
    let cycle = || async {
        let rows_before = store.history_count().await?;
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let report = poller.poll_once().await;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let rows = store.history_count().await? - rows_before;
        let s = &report.sources[0];
        anyhow::ensure!(
            report.all_ok(),
            "a cycle was not ok: {:?}",
            s.failures.first()
        );
        Ok::<_, anyhow::Error>((wall, cpu, s.calls, s.requests, rows))
    };
    let (first_wall, first_cpu, first_calls, first_requests, first_rows) = cycle().await?;
    let mut r = Run {
        first_wall,
        first_cpu,
        first_calls,
        first_requests,
        first_rows,
        unchanged_wall: Vec::new(),
        unchanged_cpu: 0.0,
        unchanged_calls: 0,
        unchanged_requests: 0,
        unchanged_rows: 0,
        templates_recorded: 0,
    };
    for _ in 0..UNCHANGED_CYCLES {
        let (wall, cpu, calls, requests, rows) = cycle().await?;
        r.unchanged_wall.push(wall);
        r.unchanged_cpu += cpu / UNCHANGED_CYCLES as f64;
        r.unchanged_calls = calls;
        r.unchanged_requests = requests;
        r.unchanged_rows += rows;
    }
    r.unchanged_wall.sort_by(f64::total_cmp);
    r.templates_recorded = store.templates(None, false).await?.len();
    store.close().await;
    Ok(r)
}

fn median(v: &[f64]) -> f64 {
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn print(label: &str, r: &Run) {
    println!(
        "  {label:<15} first cycle: calls {:>5}  requests {:>4}  wall {:>6.2} s  cpu {:>5.2} s  history rows {:>6}",
        r.first_calls, r.first_requests, r.first_wall, r.first_cpu, r.first_rows
    );
    println!(
        "  {label:<15} unchanged:   calls {:>5}  requests {:>4}  wall median {:>6.2} s (of {:.2}..{:.2})  cpu {:>5.2} s  history rows {}  templates recorded {}",
        r.unchanged_calls,
        r.unchanged_requests,
        median(&r.unchanged_wall),
        r.unchanged_wall.first().copied().unwrap_or(0.0),
        r.unchanged_wall.last().copied().unwrap_or(0.0),
        r.unchanged_cpu,
        r.unchanged_rows,
        r.templates_recorded
    );
}

async fn compare(wabas: usize, templates: usize) -> anyhow::Result<()> {
    let (mut child, url) = spawn_sim(wabas, templates)?;
    println!(
        "fleet: {wabas} WABAs x {PER_WABA} numbers x {templates} templates, {} ms latency per request",
        LATENCY.as_millis()
    );
    let off = run(&url, wabas, false).await?;
    print("templates off", &off);
    let on = run(&url, wabas, true).await?;
    print("templates on", &on);
    let pages_beyond_first = wabas * templates.div_ceil(100).saturating_sub(1);
    let extra = on.unchanged_requests as i64 - off.unchanged_requests as i64;
    let extra_calls = on.unchanged_calls as i64 - off.unchanged_calls as i64;
    let wall_off = median(&off.unchanged_wall);
    let wall_on = median(&on.unchanged_wall);
    println!(
        "  => extra per unchanged cycle: {extra} request(s), {extra_calls} call(s) ({pages_beyond_first} template page(s) beyond each WABA's first; goal <= 1 request per page of 100 templates); wall {:+.1} % ({wall_off:.2} s -> {wall_on:.2} s; goal <= 30 %); first cycle wall {:+.1} %",
        (wall_on / wall_off - 1.0) * 100.0,
        (on.first_wall / off.first_wall - 1.0) * 100.0,
    );
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}

async fn bench() -> anyhow::Result<()> {
    compare(
        env_usize("TEMPLATE_BENCH_WABAS", 1_000),
        env_usize("TEMPLATE_BENCH_TEMPLATES", 20),
    )
    .await?;
    // WABAs with more than one page of templates: every further page is one request.
    compare(20, 250).await?;
    println!("peak RSS of the monitor: {:.1} MB", peak_rss_mb());
    Ok(())
}
