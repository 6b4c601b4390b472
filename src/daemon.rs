//! The daemon: open the store, build the sources, run the schedule until shutdown.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::http;
use crate::metrics::Metrics;
use crate::notify::delivery::Deliverer;
use crate::notify::mailer::Mailer;
use crate::poller::{CycleReport, Poller, SharedPoller};
use crate::retry::RetryPolicy;
use crate::scheduler::{self, CycleStats, ShutdownSignal};
use crate::service;
use crate::store::Store;

/// Knobs the CLI and tests set; production uses the defaults.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Graph request retries.
    pub retry: RetryPolicy,
    /// Waits between attempts to deliver one email.
    pub email_backoff: RetryPolicy,
    /// How often the delivery worker looks for due email besides being woken by a cycle.
    pub delivery_tick: Duration,
    /// How long a database write waits for another process's lock.
    pub busy_timeout: Duration,
    /// Connection cap and timeouts of the HTTP listener.
    pub http: http::HttpLimits,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            retry: RetryPolicy::default(),
            email_backoff: Deliverer::default_backoff(),
            delivery_tick: Duration::from_secs(15),
            busy_timeout: Store::BUSY_TIMEOUT,
            http: http::HttpLimits::default(),
        }
    }
}

/// Runs until `shutdown` resolves, then stops cleanly: the in-flight cycle finishes (or is
/// abandoned after `shutdown_grace`), the HTTP server and the delivery worker stop, and the
/// database is closed. Binds `[daemon] listen`.
/// Installs the SIGHUP handler at once, so that a reload signal sent while the process starts
/// is not fatal (the default action of SIGHUP ends a process). Call first thing in `main`.
pub fn catch_early_signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // The stream itself is not needed: the handler outlives it.
        if let Err(e) = signal(SignalKind::hangup()) {
            eprintln!("warning: could not install the SIGHUP handler: {e}");
        }
    }
}

/// Warns when the database file exists but is empty: a lost or truncated database would
/// otherwise silently start a new history.
pub fn warn_if_empty_database(path: &std::path::Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        tracing::warn!(
            database = %path.display(),
            "the database file is empty (0 bytes): starting a new history in it; if it should hold data, stop the daemon and restore a backup (`waba-monitor backup` makes them)"
        );
    }
}

pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.daemon.listen)
        .await
        .with_context(|| format!("could not listen on {}", cfg.daemon.listen))?;
    run_with_listener(cfg, opts, listener, shutdown, on_cycle).await
}

/// [`run`] on a listener the caller bound (tests bind port 0 and read `local_addr`).
pub async fn run_with_listener(
    cfg: Config,
    opts: RunOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let shutdown = ShutdownSignal::from_future(shutdown);
    let api_token = match &cfg.daemon.api_token {
        Some(src) => Some(Arc::new(
            src.load().context("could not read the status API token")?,
        )),
        None => None,
    };
    let store = Store::open_with(&cfg.daemon.database, opts.busy_timeout)
        .await
        .context("could not open the database")?;
    warn_if_empty_database(&cfg.daemon.database);
    let metrics = Arc::new(Metrics::new());
    let first = Arc::new(Poller::from_config_with_metrics(
        &cfg,
        store.clone(),
        opts.retry,
        metrics.clone(),
    )?);
    first.sync_metrics().await;
    let mail_wake = first.mail_wake();
    let poller: SharedPoller = Arc::new(std::sync::RwLock::new(first.clone()));
    let stats = Arc::new(CycleStats::default());
    let addr = listener.local_addr().ok();
    let targets = count_targets(&cfg);
    tracing::info!(
        database = %cfg.daemon.database.display(),
        schedule = %cfg.daemon.poll_schedule.expr,
        listen = ?addr,
        sources = ?first.source_names(),
        "waba-monitor started"
    );
    let allowed = progress_window(&cfg);
    let http = tokio::spawn(http::serve(
        listener,
        http::AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            stats: stats.clone(),
            poller: poller.clone(),
            api_token,
            ready_within: allowed,
            stale_after: cfg.daemon.stale_after,
        },
        opts.http,
        shutdown.clone(),
    ));
    let mut delivery = Delivery::start(&cfg, &store, &opts, &metrics, &mail_wake, &shutdown)?;
    let watchdog = tokio::spawn(service::watchdog(stats.clone(), allowed, shutdown.clone()));
    let pruning = tokio::spawn(prune_loop(
        store.clone(),
        cfg.daemon.retention,
        metrics.clone(),
        shutdown.clone(),
    ));

    // SIGHUP: re-read the config and secret files; a bad config keeps the old one running.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let (swapped_tx, mut swapped_rx) = tokio::sync::mpsc::unbounded_channel::<Config>();
    let reloader = tokio::spawn(reload_loop(
        cfg.path.clone(),
        cfg.clone(),
        store.clone(),
        opts.clone(),
        metrics.clone(),
        poller.clone(),
        reload_tx,
        swapped_tx,
        shutdown.clone(),
    ));
    let delivery_task = {
        let store = store.clone();
        let opts = opts.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let wake = mail_wake.clone();
        tokio::spawn(async move {
            // Email settings that changed on reload get a fresh delivery worker.
            while let Some(new_cfg) = swapped_rx.recv().await {
                if delivery.config_changed(&new_cfg) {
                    delivery.stop().await;
                    match Delivery::start(&new_cfg, &store, &opts, &metrics, &wake, &shutdown) {
                        Ok(d) => delivery = d,
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "email delivery could not be restarted with the new config")
                        }
                    }
                }
            }
            delivery
        })
    };

    service::ready(&format!(
        "polling {targets} configured target(s); first cycle running"
    ));
    let grace = cfg.daemon.shutdown_grace;
    let result = scheduler::run(
        poller.clone(),
        cfg.daemon.clone(),
        reload_rx,
        stats,
        shutdown,
        |report| {
            service::status(&status_line(report));
            on_cycle(report);
        },
    )
    .await;
    service::stopping();
    reloader.abort();
    let delivery = delivery_task.await.ok();
    if let Some(d) = delivery {
        // The send in progress finishes; unsent rows stay queued for the next start.
        if tokio::time::timeout(grace, d.join()).await.is_err() {
            tracing::warn!(
                "email delivery did not stop within the shutdown grace; queued mail stays in the outbox"
            );
        }
    }
    match tokio::time::timeout(grace, http).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Err(_) => tracing::warn!("HTTP server did not stop within the shutdown grace"),
        _ => {}
    }
    watchdog.abort();
    pruning.abort();
    store.close().await;
    tracing::info!("waba-monitor stopped");
    result
}

/// Targets listed in the config (businesses expand to more).
fn count_targets(cfg: &Config) -> usize {
    cfg.meta
        .iter()
        .map(|m| m.businesses.len() + m.wabas.len() + m.phone_numbers.len())
        .sum()
}

/// How long without a finished cycle still counts as progress: two schedule intervals plus a
/// cycle's timeout. Used for /readyz and the systemd watchdog.
fn progress_window(cfg: &Config) -> Duration {
    let interval = cfg.daemon.poll_schedule.min_interval(chrono::Utc::now());
    interval * 2 + cfg.daemon.cycle_timeout
}

/// The one-line STATUS= for systemd.
fn status_line(r: &CycleReport) -> String {
    let numbers: usize = r.sources.iter().map(|s| s.phones).sum();
    let wabas: usize = r.sources.iter().map(|s| s.wabas).sum();
    let failed = r
        .sources
        .iter()
        .filter(|s| s.outcome != crate::sources::PollOutcome::Ok || s.store_error.is_some())
        .count();
    format!(
        "polling {numbers} numbers in {wabas} WABAs, last cycle {} {}",
        r.finished_at.format("%H:%M:%S"),
        if failed == 0 {
            "ok".to_owned()
        } else {
            format!("with {failed} source(s) failing")
        }
    )
}

/// The delivery worker and how to stop it alone (on a reload that changes `[email]`).
struct Delivery {
    email: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Delivery {
    fn start(
        cfg: &Config,
        store: &Store,
        opts: &RunOptions,
        metrics: &Arc<Metrics>,
        wake: &Arc<tokio::sync::Notify>,
        shutdown: &ShutdownSignal,
    ) -> anyhow::Result<Delivery> {
        let Some(email) = &cfg.email else {
            tracing::warn!("no [email] section: alerts are logged and recorded, not emailed");
            return Ok(Delivery {
                email: None,
                stop: None,
                handle: None,
            });
        };
        let mailer = Mailer::new(email).context("could not set up email delivery")?;
        let deliverer = Deliverer::new(store.clone(), mailer, email, opts.email_backoff)
            .with_metrics(metrics.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut global = shutdown.clone();
        let own = ShutdownSignal::from_future(async move {
            tokio::select! {
                _ = global.wait() => {}
                _ = stop_rx => {}
            }
        });
        let handle = tokio::spawn(deliverer.run(wake.clone(), own, opts.delivery_tick));
        Ok(Delivery {
            email: Some(format!("{email:?}")),
            stop: Some(stop_tx),
            handle: Some(handle),
        })
    }

    fn config_changed(&self, cfg: &Config) -> bool {
        self.email != cfg.email.as_ref().map(|e| format!("{e:?}"))
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }

    async fn join(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// Waits for SIGHUP and swaps in a poller built from the re-read config.
#[allow(clippy::too_many_arguments)]
async fn reload_loop(
    path: std::path::PathBuf,
    mut current_cfg: Config,
    store: Store,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    poller: SharedPoller,
    to_scheduler: tokio::sync::mpsc::UnboundedSender<crate::config::DaemonConfig>,
    to_delivery: tokio::sync::mpsc::UnboundedSender<Config>,
    mut shutdown: ShutdownSignal,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("could not listen for SIGHUP: reload needs a restart");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
            match reload(&path, &current_cfg, &store, &opts, &metrics).await {
                Ok((cfg, new_poller)) => {
                    if let Ok(mut p) = poller.write() {
                        *p = new_poller;
                    }
                    let _ = to_scheduler.send(cfg.daemon.clone());
                    let _ = to_delivery.send(cfg.clone());
                    metrics.config_reload_ok.set(1);
                    tracing::info!("configuration reloaded");
                    current_cfg = cfg;
                }
                Err(e) => {
                    metrics.config_reload_ok.set(0);
                    tracing::error!(
                        error = %format!("{e:#}"),
                        "the new configuration was rejected; the previous one stays in force"
                    );
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (
            path,
            current_cfg,
            store,
            opts,
            metrics,
            poller,
            to_scheduler,
            to_delivery,
        );
        shutdown.wait().await;
    }
}

async fn reload(
    path: &std::path::Path,
    old: &Config,
    store: &Store,
    opts: &RunOptions,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Config, Arc<Poller>)> {
    let cfg = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (what, changed) in [
        ("database", cfg.daemon.database != old.daemon.database),
        ("listen", cfg.daemon.listen != old.daemon.listen),
    ] {
        if changed {
            tracing::warn!(key = what, "this setting changes only at the next restart");
        }
    }
    if let Some(email) = &cfg.email {
        Mailer::new(email).context("the new [email] settings do not work")?;
    }
    let new = Poller::from_config_with_metrics(&cfg, store.clone(), opts.retry, metrics.clone())?;
    Ok((cfg, Arc::new(new)))
}

/// Prunes history older than `retention` in small batches, hourly, off the poll path.
async fn prune_loop(
    store: Store,
    retention: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: ShutdownSignal,
) {
    if retention.is_zero() {
        return;
    }
    loop {
        // A retention longer than the calendar goes back: nothing is old enough to prune.
        let before = crate::timefmt::checked_ago(chrono::Utc::now(), retention);
        let mut total = 0;
        while let Some(before) = before {
            match store.prune_batch(before, 1_000).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    metrics.store_error("prune");
                    tracing::error!(error = %e, "pruning old history failed; will try again");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::info!(rows = total, "pruned records older than the retention");
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
