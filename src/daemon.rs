//! The daemon: open the store, build the sources, run the schedule until shutdown.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::http;
use crate::notify::delivery::Deliverer;
use crate::notify::mailer::Mailer;
use crate::poller::{CycleReport, Poller};
use crate::retry::RetryPolicy;
use crate::scheduler::{self, CycleStats, ShutdownSignal};
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            retry: RetryPolicy::default(),
            email_backoff: Deliverer::default_backoff(),
            delivery_tick: Duration::from_secs(15),
        }
    }
}

/// Runs until `shutdown` resolves, then stops cleanly: the in-flight cycle finishes (or is
/// abandoned after `shutdown_grace`), the HTTP server and the delivery worker stop, and the
/// database is closed. Binds `[daemon] listen`.
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
    on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let shutdown = ShutdownSignal::from_future(shutdown);
    let api_token = match &cfg.daemon.api_token {
        Some(src) => Some(Arc::new(
            src.load().context("could not read the status API token")?,
        )),
        None => None,
    };
    let store = Store::open(&cfg.daemon.database)
        .await
        .context("could not open the database")?;
    let poller = Arc::new(Poller::from_config(&cfg, store.clone(), opts.retry)?);
    poller.sync_metrics().await;
    let stats = Arc::new(CycleStats::default());
    let addr = listener.local_addr().ok();
    tracing::info!(
        database = %cfg.daemon.database.display(),
        schedule = %cfg.daemon.poll_schedule.expr,
        listen = ?addr,
        sources = ?poller.source_names(),
        "waba-monitor started"
    );
    let interval = cfg.daemon.poll_schedule.min_interval(chrono::Utc::now());
    let http = tokio::spawn(http::serve(
        listener,
        http::AppState {
            store: store.clone(),
            metrics: poller.metrics(),
            stats: stats.clone(),
            poller: poller.clone(),
            api_token,
            ready_within: interval * 2 + cfg.daemon.cycle_timeout,
            stale_after: cfg.daemon.stale_after,
        },
        shutdown.clone(),
    ));
    let delivery = match &cfg.email {
        Some(email) => {
            let mailer = Mailer::new(email).context("could not set up email delivery")?;
            let deliverer = Deliverer::new(store.clone(), mailer, email, opts.email_backoff)
                .with_metrics(poller.metrics());
            Some(tokio::spawn(deliverer.run(
                poller.mail_wake(),
                shutdown.clone(),
                opts.delivery_tick,
            )))
        }
        None => {
            tracing::warn!("no [email] section: alerts are logged and recorded, not emailed");
            None
        }
    };
    let grace = cfg.daemon.shutdown_grace;
    let result = scheduler::run(poller, cfg.daemon.clone(), stats, shutdown, on_cycle).await;
    if let Some(handle) = delivery {
        // The send in progress finishes; unsent rows stay queued for the next start.
        if tokio::time::timeout(grace, handle).await.is_err() {
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
    store.close().await;
    tracing::info!("waba-monitor stopped");
    result
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
