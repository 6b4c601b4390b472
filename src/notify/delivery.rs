//! The delivery worker: sends due outbox rows, marks them sent only after the server accepted
//! them (250 to DATA), retries transient failures with capped exponential backoff until
//! `max_age`, and marks permanent refusals failed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::mailer::{Mailer, Outgoing, SendFailure};
use crate::config::EmailConfig;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::scheduler::ShutdownSignal;
use crate::store::{Store, StoreError};
use crate::timefmt::{parse_rfc3339, rfc3339};

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
    pub abandoned: usize,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    recipient: String,
    message_id: String,
    subject: String,
    body: String,
    references_hdr: Option<String>,
    created_at: String,
    attempts: i64,
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

    /// One pass over the rows due at `now`. Each row's outcome is written before the next
    /// send, so a crash loses at most the knowledge that one accepted message was accepted (it
    /// is then resent with the same Message-ID).
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Result<DeliveryReport, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, recipient, message_id, subject, body, references_hdr, created_at, attempts \
             FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY id LIMIT 100",
        )
        .bind(rfc3339(now))
        .fetch_all(self.store.pool())
        .await?;
        let mut report = DeliveryReport::default();
        for row in rows {
            let created = parse_rfc3339(&row.created_at).unwrap_or(now);
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
            let done_at = rfc3339(Utc::now().max(now));
            match result {
                Ok(reply) => {
                    sqlx::query(
                        "UPDATE outbox SET state = 'sent', attempts = ?2, sent_at = ?3, last_error = NULL WHERE id = ?1",
                    )
                    .bind(row.id)
                    .bind(attempts)
                    .bind(&done_at)
                    .execute(self.store.pool())
                    .await?;
                    self.metrics.emails_sent.inc();
                    report.sent += 1;
                    tracing::info!(to = %row.recipient, message_id = %row.message_id, reply = %reply, "alert email delivered");
                }
                Err(SendFailure::Permanent(text)) => {
                    sqlx::query(
                        "UPDATE outbox SET state = 'failed', attempts = ?2, last_error = ?3 WHERE id = ?1",
                    )
                    .bind(row.id)
                    .bind(attempts)
                    .bind(&text)
                    .execute(self.store.pool())
                    .await?;
                    self.metrics.emails_failed.inc();
                    report.failed += 1;
                    tracing::error!(to = %row.recipient, message_id = %row.message_id, error = %text, "alert email refused for good by the SMTP server; not retried");
                }
                Err(SendFailure::Transient(text)) => {
                    let age = (now - created).to_std().unwrap_or_default();
                    if age >= self.max_age {
                        sqlx::query(
                            "UPDATE outbox SET state = 'abandoned', attempts = ?2, last_error = ?3 WHERE id = ?1",
                        )
                        .bind(row.id)
                        .bind(attempts)
                        .bind(&text)
                        .execute(self.store.pool())
                        .await?;
                        self.metrics.emails_abandoned.inc();
                        report.abandoned += 1;
                        tracing::error!(to = %row.recipient, message_id = %row.message_id, error = %text, attempts, "alert email abandoned after max_age");
                    } else {
                        let wait = self.delay_for(row.attempts.max(0) as usize);
                        let next = crate::timefmt::saturating_after(now, wait);
                        sqlx::query(
                            "UPDATE outbox SET attempts = ?2, last_error = ?3, next_attempt_at = ?4 WHERE id = ?1",
                        )
                        .bind(row.id)
                        .bind(attempts)
                        .bind(&text)
                        .bind(rfc3339(next))
                        .execute(self.store.pool())
                        .await?;
                        report.retrying += 1;
                        tracing::warn!(to = %row.recipient, message_id = %row.message_id, error = %text, attempts, retry_in = ?wait, "alert email not accepted yet; will retry");
                    }
                }
            }
        }
        Ok(report)
    }

    /// Oldest pending row's creation time, for "outbox stuck" checks.
    pub async fn pending(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
                .fetch_one(self.store.pool())
                .await?,
        )
    }

    /// Runs until shutdown: a pass when woken (after a cycle queued mail) and every `tick`.
    /// At shutdown the send in progress finishes; pending rows stay for the next start.
    pub async fn run(self, wake: Arc<Notify>, mut shutdown: ShutdownSignal, tick: Duration) {
        loop {
            if let Err(e) = self.deliver_due(Utc::now()).await {
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
