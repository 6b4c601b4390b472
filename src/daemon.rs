//! The daemon: open the store, build the sources, run the schedule until shutdown.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::poller::{CycleReport, Poller};
use crate::retry::RetryPolicy;
use crate::scheduler::{self, CycleStats, ShutdownSignal};
use crate::store::Store;

/// Knobs the CLI and tests set; production uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub retry: RetryPolicy,
}

/// Runs until `shutdown` resolves, then stops cleanly: the in-flight cycle finishes (or is
/// abandoned after `shutdown_grace`) and the database is closed.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let shutdown = ShutdownSignal::from_future(shutdown);
    let store = Store::open(&cfg.daemon.database)
        .await
        .context("could not open the database")?;
    let poller = Arc::new(Poller::from_config(&cfg, store.clone(), opts.retry)?);
    let stats = Arc::new(CycleStats::default());
    tracing::info!(
        database = %cfg.daemon.database.display(),
        schedule = %cfg.daemon.poll_schedule.expr,
        sources = ?poller.source_names(),
        "waba-monitor started"
    );
    let result = scheduler::run(poller, cfg.daemon.clone(), stats, shutdown, on_cycle).await;
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
