//! Runs poll cycles on the cron schedule until shutdown.
//!
//! tokio-cron-scheduler fires a cron job (never a repeated job: those can stop firing for good
//! under load, upstream issue #113). The job only *offers* a tick on a channel of capacity one;
//! a single worker takes ticks and runs cycles, so a cycle can never overlap the previous one,
//! and a tick that arrives while one is running and one is already queued is skipped and
//! counted. Every cycle is bounded by `cycle_timeout`; at shutdown the in-flight cycle gets
//! `shutdown_grace` to finish and is then abandoned (its transactions roll back).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::DaemonConfig;
use crate::poller::{CycleReport, SharedPoller, current};

/// Progress counters, read by the daemon's status line (and later metrics and the watchdog).
#[derive(Debug, Default)]
pub struct CycleStats {
    pub ticks: AtomicU64,
    pub skipped_ticks: AtomicU64,
    pub cycles_started: AtomicU64,
    pub cycles_finished: AtomicU64,
    pub cycles_timed_out: AtomicU64,
    /// Unix seconds of the last finished cycle (0 = none yet).
    pub last_finished_unix: AtomicU64,
    /// Cycles in a row that ended without being recorded in the database — it refused the
    /// write, or the cycle ran past `cycle_timeout` — so nothing of them was written and no
    /// alert was sent: 0 once one is recorded again.
    pub unrecorded_in_a_row: AtomicU64,
    /// Why the latest unrecorded cycle was not recorded.
    pub last_store_error: std::sync::Mutex<Option<String>>,
}

impl CycleStats {
    /// Counts a cycle that was not recorded, and why.
    pub fn unrecorded(&self, why: String) {
        self.unrecorded_in_a_row.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_store_error.lock() {
            *last = Some(why);
        }
    }

    /// How many cycles in a row were not recorded, and why the latest was not.
    pub fn store_failure(&self) -> Option<(u64, String)> {
        let n = self.unrecorded_in_a_row.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let why = self
            .last_store_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        Some((n, why))
    }
}

/// A shutdown signal that can be awaited from several places.
#[derive(Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// Turns a one-shot future (SIGTERM, a test's oneshot) into a signal many can wait on.
    pub fn from_future(f: impl Future<Output = ()> + Send + 'static) -> ShutdownSignal {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            f.await;
            let _ = tx.send(true);
        });
        ShutdownSignal(rx)
    }

    pub async fn wait(&mut self) {
        // An error means the sender is gone, which only happens after it sent `true`.
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// Runs the schedule until `shutdown`; calls `on_cycle` after every cycle.
pub async fn run(
    poller: SharedPoller,
    mut cfg: DaemonConfig,
    mut reload: mpsc::UnboundedReceiver<DaemonConfig>,
    stats: Arc<CycleStats>,
    mut shutdown: ShutdownSignal,
    mut on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let (tick_tx, mut tick_rx) = mpsc::channel::<()>(1);
    let mut sched = JobScheduler::new()
        .await
        .context("could not start the scheduler")?;
    let mut job_id = add_job(&sched, &cfg.poll_schedule.expr, &tick_tx, &stats).await?;
    sched
        .start()
        .await
        .context("could not start the scheduler")?;
    // Poll once at start: nobody wants to wait up to a whole interval for the first reading.
    offer_tick(&tick_tx, &stats);

    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            Some(new) = reload.recv() => {
                // A reloaded config: a new schedule replaces the cron job (the poller itself
                // was already swapped by the daemon).
                if new.poll_schedule.expr != cfg.poll_schedule.expr {
                    if let Err(e) = sched.remove(&job_id).await {
                        tracing::warn!(error = %e, "could not remove the old poll job");
                    }
                    job_id = add_job(&sched, &new.poll_schedule.expr, &tick_tx, &stats).await?;
                    tracing::info!(schedule = %new.poll_schedule.expr, "poll schedule changed");
                }
                cfg = new;
            }
            tick = tick_rx.recv() => {
                if tick.is_none() { break; }
                stats.cycles_started.fetch_add(1, Ordering::Relaxed);
                let poller = current(&poller);
                let cycle = tokio::time::timeout(cfg.cycle_timeout, poller.poll_once());
                tokio::pin!(cycle);
                let finished = tokio::select! {
                    r = &mut cycle => Some(r),
                    _ = shutdown.wait() => {
                        tracing::info!(grace = ?cfg.shutdown_grace, "shutdown requested: letting the running cycle finish");
                        match tokio::time::timeout(cfg.shutdown_grace, &mut cycle).await {
                            Ok(r) => Some(r),
                            Err(_) => {
                                tracing::warn!("running cycle abandoned at shutdown; nothing partial was recorded");
                                None
                            }
                        }
                    }
                };
                match finished {
                    Some(Ok(report)) => {
                        record_finished(&stats, &report);
                        on_cycle(&report);
                    }
                    Some(Err(_)) => {
                        stats.cycles_timed_out.fetch_add(1, Ordering::Relaxed);
                        let why = format!(
                            "the cycle ran longer than cycle_timeout ({}) and was abandoned",
                            crate::timefmt::format_duration(cfg.cycle_timeout)
                        );
                        // Bounded too: a database that hangs must not stall the scheduler.
                        if tokio::time::timeout(cfg.cycle_timeout, poller.record_abandoned_cycle(&why))
                            .await
                            .is_err()
                        {
                            tracing::error!("could not record the abandoned cycle in time");
                        }
                        stats.unrecorded(why);
                        tracing::warn!(timeout = ?cfg.cycle_timeout, "poll cycle timed out and was abandoned; targets keep their last known state");
                    }
                    None => {}
                }
                if *shutdown.0.borrow() {
                    break;
                }
            }
        }
    }
    if let Err(e) = sched.shutdown().await {
        tracing::warn!(error = %e, "scheduler did not shut down cleanly");
    }
    Ok(())
}

/// Adds the cron job that offers ticks. Cron jobs only: tokio-cron-scheduler's repeated jobs
/// can stop firing for good under load (upstream issue #113).
async fn add_job(
    sched: &JobScheduler,
    expr: &str,
    tick_tx: &mpsc::Sender<()>,
    stats: &Arc<CycleStats>,
) -> anyhow::Result<uuid::Uuid> {
    let job_tx = tick_tx.clone();
    let job_stats = stats.clone();
    let job = Job::new_async(expr, move |_id, _lock| {
        let tx = job_tx.clone();
        let stats = job_stats.clone();
        Box::pin(async move {
            stats.ticks.fetch_add(1, Ordering::Relaxed);
            offer_tick(&tx, &stats);
        })
    })
    .context("could not create the poll job")?;
    sched.add(job).await.context("could not add the poll job")
}

fn offer_tick(tx: &mpsc::Sender<()>, stats: &CycleStats) {
    if tx.try_send(()).is_err() {
        stats.skipped_ticks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "schedule fired while a cycle is still running and another is queued: tick skipped (cycles never overlap)"
        );
    }
}

fn record_finished(stats: &CycleStats, report: &CycleReport) {
    stats.cycles_finished.fetch_add(1, Ordering::Relaxed);
    let now = crate::timefmt::unix_now() as u64;
    stats.last_finished_unix.store(now, Ordering::Relaxed);
    match report.store_error() {
        Some(e) => stats.unrecorded(e.to_owned()),
        None => stats.unrecorded_in_a_row.store(0, Ordering::Relaxed),
    }
}
