//! Quota benchmark: 1,000 WABAs polled every minute for a simulated hour, the simulator
//! throttling 5 % of them (code 80008 with a regain time, for their first few calls).
//!
//!     cargo run --release --example quota_bench
//!
//! The clock is simulated (each cycle is "one minute later"), so the hour takes seconds. Prints
//! the most calls any WABA received in the hour (against the budget), how the throttled WABAs
//! fared, and the total calls.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use waba_monitor::config::Config;
use waba_monitor::poller::Poller;
use waba_monitor::retry::RetryPolicy;
use waba_monitor::sim::{Fault, FaultKind, FaultTarget, GraphSim, SimOptions, SimState};
use waba_monitor::store::Store;

const WABAS: usize = 1_000;
const PER_WABA: usize = 10;
const TOKEN: &str = "bench-token-not-a-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ids: Vec<String> = (0..WABAS)
        .map(|w| (200_000_000_000_001u64 + w as u64).to_string())
        .collect();
    let mut fleet = SimState::fleet(WABAS, PER_WABA);
    // Every 20th WABA is throttled for its first three calls, asking for 10 minutes' rest.
    let throttled: Vec<String> = ids.iter().step_by(20).cloned().collect();
    for w in &throttled {
        fleet.add_fault(Fault::times(
            3,
            FaultTarget::object(w),
            FaultKind::waba_rate_limited(w, 10),
        ));
    }
    let sim = GraphSim::start(
        fleet,
        SimOptions {
            token: TOKEN.to_owned(),
            ..SimOptions::default()
        },
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    }
    let cfg_path = dir.path().join("monitor.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[daemon]\ndatabase = \"monitor.db\"\npoll_schedule = \"0 * * * * *\"\n\n[[meta]]\nname = \"bench\"\ngraph_url = \"{}\"\napi_version = \"v24.0\"\naccess_token_file = \"token\"\nwabas = {ids:?}\n",
            sim.url()
        ),
    )?;
    let cfg = Config::load(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let budget = cfg.meta[0].waba_call_budget();
    let store = Store::connect(&cfg.daemon.database).await?;
    let mut poller = Poller::from_config(&cfg, store.clone(), RetryPolicy::fast())?;
    let now = Arc::new(Mutex::new(Utc::now()));
    let clock = now.clone();
    poller.set_clock(Arc::new(move || *clock.lock().expect("clock")));

    let mut deferred_throttled = 0usize;
    let mut failed = 0usize;
    let mut last_cycle_read = 0usize;
    let mut peak_ledger = 0u32;
    for minute in 0..60 {
        let r = poller.poll_once().await;
        let s = &r.sources[0];
        deferred_throttled += s.deferred;
        failed += s.failures.len();
        last_cycle_read = s.wabas;
        for w in &ids {
            peak_ledger = peak_ledger.max(poller.calls_last_hour("bench", w));
        }
        if minute == 0 {
            println!(
                "minute 0: {} WABAs read, {} throttled by Meta",
                s.wabas,
                s.failures.len()
            );
        }
        *now.lock().expect("clock") += chrono::Duration::minutes(1);
    }
    let max_meta = ids.iter().map(|w| sim.calls_for_waba(w)).max().unwrap_or(0);
    let throttled_max = throttled
        .iter()
        .map(|w| sim.calls_for_waba(w))
        .max()
        .unwrap_or(0);
    let status = store.status_with(false, 2).await?;
    let stale = status.iter().filter(|e| e.stale).count();
    println!("budget: {budget} calls per WABA per hour (50% of Meta's 200)");
    println!(
        "after a simulated hour: most calls to one WABA {max_meta} (ledger peak {peak_ledger}); throttled WABAs at most {throttled_max}"
    );
    println!(
        "throttled WABAs: {} of {WABAS}; failed reads in the hour {failed}; cycles x WABAs held back while paused {deferred_throttled}",
        throttled.len()
    );
    println!(
        "last cycle: {last_cycle_read} of {WABAS} WABAs read; stale targets now: {stale}; Graph calls in all: {}",
        sim.graph_calls()
    );
    store.close().await;
    Ok(())
}
