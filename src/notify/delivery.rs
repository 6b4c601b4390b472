//! The delivery worker: sends due outbox rows, marks them sent only after the server accepted
//! them (250 to DATA), retries transient failures with capped exponential backoff until
//! `max_age`, and marks permanent refusals failed.
//!
//! Every attempt is counted before it starts: `attempts + 1`, `last_attempt_at` and `in_flight`
//! are committed before the SMTP conversation, and the outcome clears `in_flight`. A row still
//! in flight at the start of a pass was cut off (the daemon was killed or crashed during that
//! send; the server may or may not have accepted it): it is sent again with the same
//! Message-ID, and after [`MAX_INTERRUPTED_SENDS`] such sends it is abandoned, so a message that
//! kills the daemon cannot be sent (and kill it) forever without anyone seeing it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::mailer::{Mailer, Outgoing, SendFailure};
use crate::config::EmailConfig;
use crate::lifecycle::ShutdownSignal;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::store::{Store, StoreError};
use crate::timefmt::parse_rfc3339;

/// Sends of one message that may die with the daemon (started, no outcome recorded) before the
/// message is given up as the likely cause.
pub const MAX_INTERRUPTED_SENDS: i64 = 5;

/// Rows read per pass (the rest wait for the next pass).
const BATCH: u32 = 100;

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
    pub abandoned: usize,
}

pub struct Deliverer {
    store: Store,
    mailer: Mailer,
    max_age: Duration,
    /// Waits between attempts: `min_delay` doubling up to `max_delay`, with jitter.
    backoff: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Deliverer {
    pub fn new(store: Store, mailer: Mailer, cfg: &EmailConfig, backoff: RetryPolicy) -> Deliverer {
        Deliverer {
            store,
            mailer,
            max_age: cfg.max_age,
            backoff,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Counts deliveries in these metrics (the daemon's shared ones).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Deliverer {
        self.metrics = metrics;
        self
    }

    /// The production backoff: 30 s doubling to 30 min.
    pub fn default_backoff() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(1800),
            max_times: usize::MAX,
        }
    }

    fn delay_for(&self, attempt: usize) -> Duration {
        let mut policy = self.backoff;
        policy.max_times = attempt + 1;
        policy.delays().nth(attempt).unwrap_or(policy.max_delay)
    }

    /// Settles the rows whose last send was cut off: each counts one more interrupted send;
    /// one that reached [`MAX_INTERRUPTED_SENDS`] is abandoned (logged at error level and
    /// counted in `emails_abandoned`), the others are due again at once.
    async fn settle_interrupted(&self, report: &mut DeliveryReport) -> Result<(), StoreError> {
        let rows = self.store.interrupted_sends().await?;
        for row in rows {
            let interrupted = row.interrupted_attempts + 1;
            if interrupted >= MAX_INTERRUPTED_SENDS {
                let reason = format!(
                    "the daemon stopped during {interrupted} sends of this message; given up so that it cannot stop the daemon again"
                );
                self.store
                    .abandon_interrupted(row.id, interrupted, &reason)
                    .await?;
                self.metrics.emails_abandoned.inc();
                report.abandoned += 1;
                tracing::error!(
                    to = %row.recipient,
                    message_id = %row.message_id,
                    attempts = row.attempts,
                    interrupted,
                    "alert email abandoned: {reason}"
                );
            } else {
                let note = format!(
                    "the daemon stopped during a send of this message ({interrupted} so far)"
                );
                self.store
                    .requeue_interrupted(row.id, interrupted, &note)
                    .await?;
                tracing::warn!(
                    to = %row.recipient,
                    message_id = %row.message_id,
                    attempts = row.attempts,
                    interrupted,
                    limit = MAX_INTERRUPTED_SENDS,
                    "the daemon stopped during an earlier send of this alert email; it is sent again with the same Message-ID"
                );
            }
        }
        Ok(())
    }

    /// One pass: settles sends cut off by a crash, then goes over the rows due at `now`. Each
    /// attempt is committed before it starts and its outcome before the next send, so a crash
    /// loses at most the knowledge of how one send ended (the message is then resent with the
    /// same Message-ID, and the cut-off send is counted).
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Result<DeliveryReport, StoreError> {
        let mut report = DeliveryReport::default();
        self.settle_interrupted(&mut report).await?;
        let rows = self.store.pending_due(now, BATCH).await?;
        for row in rows {
            let created = parse_rfc3339(&row.created_at).unwrap_or(now);
            // Counted and marked in flight before the conversation starts, in its own commit:
            // if the daemon dies during the send, the next start sees it.
            if !self
                .store
                .begin_attempt(row.id, Utc::now().max(now))
                .await?
            {
                // Settled or taken since it was read.
                continue;
            }
            let result = self
                .mailer
                .send(&Outgoing {
                    recipient: &row.recipient,
                    subject: &row.subject,
                    body: &row.body,
                    message_id: &row.message_id,
                    references: row.references_hdr.as_deref(),
                    date: created.into(),
                })
                .await;
            let attempts = row.attempts + 1;
            let done_at = Utc::now().max(now);
            match result {
                Ok(reply) => {
                    self.store.mark_sent(row.id, attempts, done_at).await?;
                    self.metrics.emails_sent.inc();
                    report.sent += 1;
                    tracing::info!(to = %row.recipient, message_id = %row.message_id, reply = %reply, "alert email delivered");
                }
                Err(SendFailure::Permanent(text)) => {
                    self.store.mark_failed(row.id, attempts, &text).await?;
                    self.metrics.emails_failed.inc();
                    report.failed += 1;
                    tracing::error!(to = %row.recipient, message_id = %row.message_id, error = %text, "alert email refused for good by the SMTP server; not retried");
                }
                Err(SendFailure::Transient(text)) => {
                    let age = (now - created).to_std().unwrap_or_default();
                    if age >= self.max_age {
                        self.store.mark_abandoned(row.id, attempts, &text).await?;
                        self.metrics.emails_abandoned.inc();
                        report.abandoned += 1;
                        tracing::error!(to = %row.recipient, message_id = %row.message_id, error = %text, attempts, "alert email abandoned after max_age");
                    } else {
                        let wait = self.delay_for(row.attempts.max(0) as usize);
                        let next = crate::timefmt::saturating_after(now, wait);
                        self.store
                            .schedule_retry(row.id, attempts, &text, next)
                            .await?;
                        report.retrying += 1;
                        tracing::warn!(to = %row.recipient, message_id = %row.message_id, error = %text, attempts, retry_in = ?wait, "alert email not accepted yet; will retry");
                    }
                }
            }
        }
        Ok(report)
    }

    /// How many rows wait for the SMTP server.
    pub async fn pending(&self) -> Result<i64, StoreError> {
        Ok(self.store.outbox_pending().await?.0)
    }

    /// Runs until shutdown: a pass when woken (after a cycle queued mail) and every `tick`.
    /// At shutdown the send in progress finishes; pending rows stay for the next start.
    pub async fn run(self, wake: Arc<Notify>, mut shutdown: ShutdownSignal, tick: Duration) {
        loop {
            if let Err(e) = self.deliver_due(Utc::now()).await {
                self.metrics.store_error("outbox");
                tracing::error!(error = %e, "could not read or update the outbox");
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }
}
