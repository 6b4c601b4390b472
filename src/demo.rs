//! `waba-monitor demo`: the real daemon against the built-in Graph API simulator, so a new user
//! sees it work with no Meta account. Everything it writes goes into one folder: a real
//! `monitor.toml` (loaded through the normal loader), a token file and the SQLite database.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::daemon::{self, RunOptions};
use crate::output::outln;
use crate::poller::CycleReport;
use crate::retry::RetryPolicy;
use crate::sim::{FineduSim, FineduState, GraphSim, SimOptions, SimState, WebhookTarget};
use crate::timefmt::parse_duration;

/// The simulated fleet changes this often; the daemon polls every 5 seconds.
const STEP_EVERY: Duration = Duration::from_secs(3);
const DEMO_TOKEN: &str = "demo-token-not-a-real-secret";
const DEMO_BSP_TOKEN: &str = "demo-bsp-token-not-a-real-secret";
const DEMO_APP_SECRET: &str = "demo-app-secret-not-a-real-secret";
const DEMO_VERIFY_TOKEN: &str = "demo-verify-token-not-a-real-secret";
/// The simulated Meta sends a signed webhook delivery this often.
const WEBHOOK_EVERY: Duration = Duration::from_secs(4);
const WEBHOOK_PATH: &str = "/webhooks/meta";

pub async fn run(dir: &Path, run_for: Option<&str>) -> anyhow::Result<ExitCode> {
    let run_for = match run_for.map(parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("error: --for: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    crate::telemetry::init(crate::config::LogFormat::Text);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create the demo folder {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("could not resolve {}", dir.display()))?;

    let fleet = SimState::demo();
    let businesses: Vec<String> = fleet.businesses.keys().cloned().collect();
    // What the simulated Meta sends webhooks about: each WABA, with its first number.
    let webhook_targets: Vec<WebhookTarget> = fleet
        .wabas
        .values()
        .map(|w| WebhookTarget {
            waba_id: w.id.clone(),
            display_phone_number: w
                .phones
                .first()
                .and_then(|p| fleet.phones.get(p))
                .map(|p| p.display_phone_number.clone())
                .unwrap_or_default(),
        })
        .collect();
    let sim = GraphSim::start(
        fleet,
        SimOptions {
            token: DEMO_TOKEN.to_owned(),
            ..SimOptions::default()
        },
    )
    .await
    .context("could not start the simulated Graph API")?;

    // The usual port if it is free, any free one otherwise (a daemon may already run here).
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:9717").await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("could not listen on loopback")?,
    };
    let listen = listener.local_addr()?;
    // The webhook receiver's own listener, the same way (9718 is its default).
    let webhook_listener = match tokio::net::TcpListener::bind("127.0.0.1:9718").await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("could not listen on loopback")?,
    };
    let webhook_listen = webhook_listener.local_addr()?;
    let webhook_url = format!("http://{webhook_listen}{WEBHOOK_PATH}");
    // A BSP customer too, through the simulated Finedu API.
    let finedu = FineduSim::start(FineduState::demo(), DEMO_BSP_TOKEN)
        .await
        .context("could not start the simulated BSP API")?;
    write_private(&dir.join("finedu-token"), DEMO_BSP_TOKEN)?;
    let token_path = dir.join("meta-token");
    write_private(&token_path, DEMO_TOKEN)?;
    write_private(&dir.join("app-secret"), DEMO_APP_SECRET)?;
    write_private(&dir.join("verify-token"), DEMO_VERIFY_TOKEN)?;
    let config_path = dir.join("monitor.toml");
    let config_text = format!(
        r#"# Written by `waba-monitor demo`: a real config, pointed at the built-in simulator.
[daemon]
database = "monitor.db"
listen = "{listen}"
poll_schedule = "*/5 * * * * *"   # every 5 seconds (a real fleet: "0 */5 * * * *")

[[meta]]
name = "demo"
graph_url = "{url}"
api_version = "v24.0"
access_token_file = "meta-token"
# The simulated WABAs have a registered number, so Meta's quota is 5,000 calls/hour per WABA;
# polling every 5 seconds (720/h) fits in the default half of it.
quota_per_waba_hour = 5000
businesses = {businesses:?}

# A BSP source: the numbers a BSP (Finedu) manages for another customer.
[[bsp]]
kind = "finedu"
name = "finedu-demo"
base_url = "{bsp_url}"
token_file = "finedu-token"

# Alert emails are written as .eml files into this folder instead of being sent.
[email]
file_dir = "emails"
from = "waba-monitor demo <demo@example.com>"
to = ["ops@example.com"]

[alerts]
repeat_interval = "1h"

# Meta's webhooks, sent (signed with the app secret) by the simulated Meta every few seconds.
[webhooks]
listen = "{webhook_listen}"
path = "{WEBHOOK_PATH}"
app_secret_file = "app-secret"
verify_token_file = "verify-token"
app_id = "{app_id}"
"#,
        url = sim.url(),
        bsp_url = finedu.url(),
        app_id = crate::sim::SIM_APP_ID,
    );
    std::fs::write(&config_path, config_text)
        .with_context(|| format!("could not write {}", config_path.display()))?;
    let cfg = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::from(2));
        }
    };

    outln!("waba-monitor demo");
    outln!("  simulated Graph API: {} (loopback only)", sim.url());
    outln!("  simulated BSP (Finedu) API: {}", finedu.url());
    outln!("  config:   {}", config_path.display());
    outln!("  database: {}", cfg.daemon.database);
    outln!(
        "  metrics:  http://{}/metrics   status API: http://{}/api/accounts",
        cfg.daemon.listen,
        cfg.daemon.listen
    );
    outln!(
        "  webhooks: {webhook_url} (signed deliveries from the simulated Meta every {})",
        crate::timefmt::format_duration(WEBHOOK_EVERY)
    );
    outln!(
        "  emails:   {} (alerts as .eml files; open them with any mail client)",
        dir.join("emails").display()
    );
    outln!("  The simulated fleet changes every few seconds; each change is logged below.");
    outln!(
        "  In another terminal:  {} --config {} status   (or history)",
        crate::output::self_command(),
        config_path.display()
    );
    outln!(
        "  Stop with Ctrl-C{}.\n",
        run_for
            .map(|d| format!(
                " (or it stops by itself after {})",
                crate::timefmt::format_duration(d)
            ))
            .unwrap_or_default()
    );

    // The fleet's "life": a deterministic step every few seconds.
    let stepper = {
        let sim = sim.clone_handle();
        let bsp = finedu.clone_handle();
        tokio::spawn(async move {
            let mut step = 0u64;
            let mut tick = tokio::time::interval(STEP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                step += 1;
                sim.with_state(|s| s.demo_step(step));
                bsp.with_state(|s| s.demo_step(step));
            }
        })
    };

    // The simulated Meta's webhooks: the template changes the demo steps make, as they happen.
    let template_sender = crate::sim::webhooks::spawn_template_sender(
        webhook_url.clone(),
        DEMO_APP_SECRET.to_owned(),
        sim.clone_handle(),
        WEBHOOK_EVERY,
    );
    // And account_update / phone_number_quality_update, signed.
    let webhook_sender = crate::sim::webhooks::spawn_sender(
        webhook_url,
        DEMO_APP_SECRET.to_owned(),
        webhook_targets,
        WEBHOOK_EVERY,
    );

    let shutdown = async move {
        match run_for {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = daemon::termination_signal() => {}
                }
            }
            None => daemon::termination_signal().await,
        }
    };
    let mut cycles = 0u64;
    let mut changes = 0usize;
    let result = daemon::run_with_listeners(
        cfg,
        RunOptions {
            retry: RetryPolicy::fast(),
            ..RunOptions::default()
        },
        listener,
        Some(webhook_listener),
        shutdown,
        |report: &CycleReport| {
            cycles += 1;
            changes += report.changes();
        },
    )
    .await;
    stepper.abort();
    webhook_sender.abort();
    template_sender.abort();
    sim.shutdown().await;
    finedu.shutdown().await;
    result?;
    outln!(
        "\ndemo finished: {cycles} cycle(s), {changes} change(s) recorded in {}",
        dir.join("monitor.db").display()
    );
    outln!(
        "see them with:  {} --config {} history",
        crate::output::self_command(),
        config_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("could not write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
