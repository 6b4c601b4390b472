//! Life under systemd (`Type=notify`): READY=1 once config, database and listener are up, a
//! STATUS= line after every cycle, STOPPING=1 at shutdown, and WATCHDOG=1 *only while poll
//! cycles make progress*, so a stalled scheduler gets the service restarted rather than a
//! free-running timer keeping a dead daemon "alive". Outside systemd (no NOTIFY_SOCKET) every
//! call here does nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::lifecycle::{CycleStats, ShutdownSignal};

fn notify(state: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "could not notify systemd");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (`RELOADING=1` with the monotonic time, as `Type=notify-reload` wants);
/// [`reloaded`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// A reload ended, applied or refused: the service is ready again.
pub fn reloaded(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(line: &str) {
    notify(&[NotifyState::Status(line)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Whole seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    crate::timefmt::unix_now() as u64
}

/// Whether the daemon is making progress: the last cycle finished (or, before the first one,
/// the daemon started) within `allowed`.
/// Cycles in a row that could not be recorded in the database before the watchdog is no
/// longer fed: a restart reopens the database (and systemd's restart limit makes a lasting
/// failure visible in `systemctl status`).
pub const UNRECORDED_BEFORE_RESTART: u64 = 3;

/// Whether to feed the watchdog: cycles make progress and get recorded.
pub fn should_feed(
    last_finished: u64,
    started: u64,
    now: u64,
    allowed: Duration,
    unrecorded_in_a_row: u64,
) -> bool {
    unrecorded_in_a_row < UNRECORDED_BEFORE_RESTART
        && making_progress(last_finished, started, now, allowed)
}

pub fn making_progress(last_finished: u64, started: u64, now: u64, allowed: Duration) -> bool {
    let last = if last_finished == 0 {
        started
    } else {
        last_finished
    };
    now.saturating_sub(last) <= allowed.as_secs()
}

/// Feeds systemd's watchdog at half its period while cycles make progress. Returns at once if
/// the watchdog is not enabled.
/// `window` says how long without a finished cycle still counts as progress; it is asked
/// every time, so a reloaded schedule changes it.
pub async fn watchdog(
    stats: Arc<CycleStats>,
    window: impl Fn() -> Duration + Send,
    standing_by: impl Fn() -> bool + Send,
    mut shutdown: ShutdownSignal,
) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let started = unix_now();
    let every = (period / 2).max(Duration::from_millis(100));
    tracing::info!(
        ?period,
        allowed = ?window(),
        "systemd watchdog enabled: fed while poll cycles make progress"
    );
    let mut warned = false;
    loop {
        let last = stats.last_finished_unix.load(Ordering::Relaxed);
        let unrecorded = stats.unrecorded_in_a_row.load(Ordering::Relaxed);
        let allowed = window();
        if standing_by() || should_feed(last, started, unix_now(), allowed, unrecorded) {
            notify(&[NotifyState::Watchdog]);
            warned = false;
        } else if !warned {
            warned = true;
            if unrecorded >= UNRECORDED_BEFORE_RESTART {
                tracing::error!(
                    cycles = unrecorded,
                    "poll cycles cannot be recorded in the database: not feeding the systemd watchdog (systemd will restart the service)"
                );
            } else {
                tracing::error!(
                    ?allowed,
                    "no poll cycle has finished for too long: not feeding the systemd watchdog (systemd will restart the service)"
                );
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_judged_from_the_last_finished_cycle_or_the_start() {
        let allowed = Duration::from_secs(900);
        assert!(making_progress(0, 1_000, 1_500, allowed), "just started");
        assert!(
            !making_progress(0, 1_000, 2_000, allowed),
            "never finished a cycle"
        );
        assert!(making_progress(1_800, 1_000, 2_000, allowed));
        assert!(!making_progress(1_000, 500, 1_901, allowed), "stalled");
    }

    #[test]
    fn cycles_that_cannot_be_recorded_stop_the_watchdog_feed() {
        let allowed = Duration::from_secs(900);
        assert!(should_feed(1_400, 1_000, 1_500, allowed, 0));
        assert!(should_feed(
            1_400,
            1_000,
            1_500,
            allowed,
            UNRECORDED_BEFORE_RESTART - 1
        ));
        assert!(!should_feed(
            1_400,
            1_000,
            1_500,
            allowed,
            UNRECORDED_BEFORE_RESTART
        ));
        assert!(!should_feed(0, 1_000, 3_000, allowed, 0), "no progress");
    }
}
