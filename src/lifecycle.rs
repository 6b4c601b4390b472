//! The daemon's lifecycle signals, shared by every long-running part (scheduler, delivery,
//! HTTP, watchdog): shutdown and cycle progress. A ground-floor module: it imports nothing of
//! the crate.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

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

impl ShutdownSignal {
    /// Whether shutdown was requested (without waiting).
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// Whether this instance leads: the one of a PostgreSQL pair that holds the lease polls,
/// alerts and sends; the others serve reads. A SQLite daemon always leads.
#[derive(Clone)]
pub struct Leadership(Arc<watch::Sender<bool>>);

impl Leadership {
    pub fn new(leading: bool) -> Leadership {
        Leadership(Arc::new(watch::channel(leading).0))
    }

    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Sets it; `true` when it changed.
    pub fn set(&self, leading: bool) -> bool {
        self.0.send_if_modified(|v| {
            let changed = *v != leading;
            *v = leading;
            changed
        })
    }

    /// Hears of every change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}
