//! Runs poll cycles on the cron schedule until shutdown.
//!
//! tokio-cron-scheduler fires a cron job (never a repeated job: those can stop firing for good
//! under load, upstream issue #113). The job only *offers* a tick on a channel of capacity one;
//! a single worker takes ticks and runs cycles, so a cycle can never overlap the previous one,
//! and a tick that arrives while one is running and one is already queued is skipped and
//! counted. Every cycle is bounded by `cycle_timeout`; at shutdown the in-flight cycle gets
//! `shutdown_grace` to finish and is then abandoned (its transactions roll back).
//!
//! Besides the schedule, a cycle runs at start and whenever this instance takes the leader
//! lease of a pair (the scheduler watches the leadership itself: a lease taken during the start
//! asks for one cycle, not two); a standby drops its ticks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::lifecycle::{CycleStats, ShutdownSignal};
use crate::poller::{CycleProgress, CycleReport};
use crate::runtime::SharedRuntime;

/// Runs the schedule of the runtime in force until `shutdown`; calls `on_cycle` after every
/// cycle. A message on `reloaded` says a new runtime is in force: a changed schedule replaces
/// the cron job. Every cycle takes the runtime in force when it starts and keeps it to its end.
pub async fn run(
    runtime: SharedRuntime,
    leadership: crate::lifecycle::Leadership,
    mut reloaded: mpsc::UnboundedReceiver<()>,
    poll_now: Arc<tokio::sync::Notify>,
    stats: Arc<CycleStats>,
    mut shutdown: ShutdownSignal,
    mut on_cycle: impl FnMut(&CycleReport) + Send,
) -> anyhow::Result<()> {
    let (tick_tx, mut tick_rx) = mpsc::channel::<()>(1);
    let mut sched = JobScheduler::new()
        .await
        .context("could not start the scheduler")?;
    let mut expr = runtime.current().config.daemon.poll_schedule.expr.clone();
    let mut job_id = add_job(&sched, &expr, &tick_tx, &stats).await?;
    sched
        .start()
        .await
        .context("could not start the scheduler")?;
    // Poll once at start (nobody wants to wait up to a whole interval for the first reading),
    // and once whenever this instance takes the leader lease, whichever comes first: one look
    // at the leadership marks it seen, so a lease taken before this line asks for one cycle,
    // not one here and one on its change.
    let mut leading = leadership.subscribe();
    if *leading.borrow_and_update() {
        offer_tick(&tick_tx, &stats);
    }

    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            // A cycle now (a webhook event to confirm); coalesced like a cron tick.
            _ = poll_now.notified() => offer_tick(&tick_tx, &stats),
            // This instance took the lease: the fleet was unwatched while nobody led.
            Ok(()) = leading.changed() => {
                if *leading.borrow_and_update() {
                    offer_tick(&tick_tx, &stats);
                }
            }
            Some(()) = reloaded.recv() => {
                let new = runtime.current().config.daemon.poll_schedule.expr.clone();
                if new != expr {
                    if let Err(e) = sched.remove(&job_id).await {
                        tracing::warn!(error = %e, "could not remove the old poll job");
                    }
                    job_id = add_job(&sched, &new, &tick_tx, &stats).await?;
                    tracing::info!(schedule = %new, "poll schedule changed");
                    expr = new;
                }
            }
            tick = tick_rx.recv() => {
                if tick.is_none() { break; }
                if !leadership.is_leader() {
                    // A standby of a pair: the leader polls; taking the lease offers a tick.
                    continue;
                }
                let first = stats.cycles_started.fetch_add(1, Ordering::Relaxed) == 0;
                let rt = runtime.current();
                let cfg = &rt.config.daemon;
                let poller = rt.poller.clone();
                // The first cycle reads the whole fleet for the first time and can take
                // minutes: it says how far it is at a steady rate.
                let cycle = tokio::time::timeout(
                    cfg.cycle_timeout,
                    logging_progress(poller.poll_once(), first.then_some(|| poller.progress())),
                );
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
                if shutdown.requested() {
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

/// How often the first cycle logs how far it is: one line per interval, however many
/// targets it reads.
const FIRST_CYCLE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `cycle`; with `progress`, logs every [`FIRST_CYCLE_LOG_EVERY`] until it ends how far
/// it is (sources read, requests sent).
async fn logging_progress<T>(
    cycle: impl std::future::Future<Output = T>,
    progress: Option<impl Fn() -> CycleProgress>,
) -> T {
    let Some(progress) = progress else {
        return cycle.await;
    };
    tokio::pin!(cycle);
    let start = tokio::time::Instant::now();
    let mut every = tokio::time::interval_at(start + FIRST_CYCLE_LOG_EVERY, FIRST_CYCLE_LOG_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut cycle => return out,
            _ = every.tick() => {
                let p = progress();
                let elapsed = crate::timefmt::format_duration(std::time::Duration::from_secs(start.elapsed().as_secs()));
                if p.recording {
                    tracing::info!(elapsed = %elapsed, requests = p.requests, "first cycle: every source read, recording it in the database");
                } else {
                    tracing::info!(
                        elapsed = %elapsed,
                        sources_done = p.sources_done,
                        sources = p.sources,
                        requests = p.requests,
                        "first cycle still running: {} of {} source(s) read, {} request(s) (pages and batches) so far",
                        p.sources_done, p.sources, p.requests
                    );
                }
            }
        }
    }
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
    if report.superseded {
        // Another instance leads now; this one's readiness is a standby's.
        return;
    }
    let now = crate::timefmt::unix_now() as u64;
    stats.last_finished_unix.store(now, Ordering::Relaxed);
    match report.store_error() {
        Some(e) => stats.unrecorded(e.to_owned()),
        None => stats.unrecorded_in_a_row.store(0, Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_cycle_reports_progress_at_a_steady_rate_not_per_target() {
        // A 35-second cycle is asked for its progress at 10, 20 and 30 s: three log lines,
        // whatever it does meanwhile.
        let asked = AtomicUsize::new(0);
        let progress = || {
            asked.fetch_add(1, Ordering::Relaxed);
            CycleProgress::default()
        };
        let cycle = async {
            tokio::time::sleep(std::time::Duration::from_secs(35)).await;
            7
        };
        assert_eq!(logging_progress(cycle, Some(progress)).await, 7);
        assert_eq!(asked.load(Ordering::Relaxed), 3);

        // Later cycles say nothing.
        let quiet: Option<fn() -> CycleProgress> = None;
        let cycle = async {
            tokio::time::sleep(std::time::Duration::from_secs(35)).await;
            8
        };
        assert_eq!(logging_progress(cycle, quiet).await, 8);
    }
}
