//! The outbox and the alerts' way into it: every statement the digest and the delivery worker
//! need. `notify/` decides what to send, when to retry and when to give up; this file only
//! reads and writes the rows.
//!
//! An outbox row is `pending` until the SMTP server accepted it (`sent`), refused it for good
//! (`failed`) or it was given up (`abandoned`). An attempt is counted and marked `in_flight`
//! in its own commit before the SMTP conversation starts, and its outcome clears `in_flight`
//! (migration 0005): a pending row still in flight was cut off by a crash.

use super::db::{Pool, db, tx};
use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::timefmt::rfc3339;

/// A write transaction on the store, as [`Store::begin_write`] returns it: what the
/// in-transaction functions of the store take.
pub use super::db::Tx;

/// An alert not yet put into a digest, with what is known about its target (its number's or
/// WABA's names, its WABA, its health entities).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UndigestedAlert {
    pub id: i64,
    pub created_at: String,
    pub kind: String,
    pub target_id: String,
    pub topic: String,
    pub severity: String,
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub previous_since: Option<String>,
    pub detail: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub waba_id: Option<String>,
    pub waba_name: Option<String>,
    pub health_entities: Option<String>,
    /// A template's name and language (kind `template`).
    pub template_name: Option<String>,
    pub template_language: Option<String>,
    /// The portfolio of the target's WABA, and the source that reports the target (for routes
    /// and silences).
    pub business_id: Option<String>,
    pub source: Option<String>,
}

/// One digest for one recipient (an email address, or a webhook URL), ready to be queued.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub recipient: &'a str,
    /// Final from the start: a resend carries the same one (for a webhook, it is the
    /// idempotency key).
    pub message_id: &'a str,
    pub subject: &'a str,
    /// The plain text of an email, or a webhook's payload.
    pub body: &'a str,
    pub references: &'a str,
    /// `email` or `webhook`.
    pub channel: &'a str,
    /// A webhook payload's media type.
    pub content_type: Option<&'a str>,
    /// An email's `text/html` alternative.
    pub html: Option<&'a str>,
}

/// A pending row due for a send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueMessage {
    pub id: i64,
    pub recipient: String,
    pub message_id: String,
    pub subject: String,
    pub body: String,
    pub references_hdr: Option<String>,
    pub created_at: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// `email` or `webhook`.
    pub channel: String,
    pub content_type: Option<String>,
    pub html: Option<String>,
}

/// A pending row whose last send started and recorded no outcome.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InterruptedSend {
    pub id: i64,
    pub recipient: String,
    pub message_id: String,
    pub attempts: i64,
    /// Sends of it cut off before this one was found.
    pub interrupted_attempts: i64,
    /// `email` or `webhook` (a webhook's recipient is its URL: never logged whole).
    pub channel: String,
}

/// Every alert not yet digested, oldest first.
pub async fn undigested_alerts(tx: &mut Tx<'_>) -> Result<Vec<UndigestedAlert>, StoreError> {
    Ok(
        tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT a.id, a.created_at, a.kind, a.target_id, a.topic, a.severity, a.field, a.old, a.new, \
                a.previous_since, a.detail, \
                p.display_phone_number, p.verified_name, \
                COALESCE(p.waba_id, t.waba_id, w.id) AS waba_id, \
                COALESCE(pw.name, tw.name, w.name) AS waba_name, \
                COALESCE(p.health_entities, w.health_entities) AS health_entities, \
                t.name AS template_name, t.language AS template_language, \
                COALESCE(pw.business_id, tw.business_id, w.business_id) AS business_id, \
                COALESCE(p.source, t.source, w.source, CASE WHEN a.kind = 'source' THEN a.target_id END) AS source \
         FROM alerts a \
         LEFT JOIN phone_numbers p ON a.kind = 'phone_number' AND p.id = a.target_id \
         LEFT JOIN wabas pw ON pw.id = p.waba_id \
         LEFT JOIN wabas w ON a.kind = 'waba' AND w.id = a.target_id \
         LEFT JOIN templates t ON a.kind = 'template' AND t.id = a.target_id \
         LEFT JOIN wabas tw ON tw.id = t.waba_id \
         WHERE a.digested = 0 ORDER BY a.id",))
    .fetch_all(ex).await)?,
    )
}

/// Queues one email, due at once. A message already queued (same Message-ID: a digest redone
/// after a crash before its commit) is left as it is, so there is one row per message.
pub async fn queue_digest(
    tx: &mut Tx<'_>,
    message: &NewMessage<'_>,
    created: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO outbox (recipient, message_id, subject, body, references_hdr, created_at, next_attempt_at, channel, content_type, html) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9) ON CONFLICT DO NOTHING",))
    .bind(message.recipient)
    .bind(message.message_id)
    .bind(message.subject)
    .bind(message.body)
    .bind(message.references)
    .bind(rfc3339(created))
    .bind(message.channel)
    .bind(message.content_type)
    .bind(message.html)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The severity of the latest warning or critical alert on (target, topic) before alert
/// `before`: what a resolved or improving notice follows (routes by severity use it).
pub async fn opened_severity_in(
    tx: &mut Tx<'_>,
    target_id: &str,
    topic: &str,
    before: i64,
) -> Result<Option<String>, StoreError> {
    Ok(
        tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT severity FROM alerts WHERE target_id = $1 AND topic = $2 AND id < $3 \
         AND severity IN ('critical', 'warning') ORDER BY id DESC LIMIT 1",))
    .bind(target_id)
    .bind(topic)
    .bind(before)
    .fetch_optional(ex).await)?,
    )
}

/// Marks these alerts as silenced: recorded, never sent (they are digested too).
pub async fn mark_silenced(tx: &mut Tx<'_>, alert_ids: &[i64]) -> Result<(), StoreError> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE alerts SET digested = 1, silenced = 1 WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))",))
    .bind(serde_json::to_string(alert_ids).unwrap_or_else(|_| "[]".into()))
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Marks these alerts as put into a digest.
pub async fn mark_digested(tx: &mut Tx<'_>, alert_ids: &[i64]) -> Result<(), StoreError> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE alerts SET digested = 1 WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each($1))"))
        .bind(serde_json::to_string(alert_ids).unwrap_or_else(|_| "[]".into()))
        .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

impl Store {
    /// Pending rows still marked in flight: their last send was cut off.
    pub async fn interrupted_sends(&self) -> Result<Vec<InterruptedSend>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, recipient, message_id, attempts, interrupted_attempts, channel \
             FROM outbox WHERE state = 'pending' AND in_flight = 1 ORDER BY id",))
        .fetch_all(ex).await)?,
        )
    }

    /// Takes an interrupted row out of flight, due again as it was, with `interrupted` cut-off
    /// sends so far and `note` as its last error.
    pub async fn requeue_interrupted(
        &self,
        id: i64,
        interrupted: i64,
        note: &str,
    ) -> Result<(), StoreError> {
        db!(self.pool(), (ex, d) => sqlx::query(d.sql("UPDATE outbox SET in_flight = 0, interrupted_attempts = $2, last_error = $3 WHERE id = $1",))
        .bind(id)
        .bind(interrupted)
        .bind(note)
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Gives an interrupted row up (`abandoned`), with `interrupted` cut-off sends and
    /// `reason` as its last error.
    pub async fn abandon_interrupted(
        &self,
        id: i64,
        interrupted: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        db!(self.pool(), (ex, d) => sqlx::query(d.sql("UPDATE outbox SET state = 'abandoned', in_flight = 0, interrupted_attempts = $2, last_error = $3 WHERE id = $1",))
        .bind(id)
        .bind(interrupted)
        .bind(reason)
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Pending rows not in flight and due at `now`, oldest first, at most `limit`.
    pub async fn pending_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueMessage>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, recipient, message_id, subject, body, references_hdr, created_at, attempts, \
                    channel, content_type, html \
             FROM outbox WHERE state = 'pending' AND in_flight = 0 AND next_attempt_at <= $1 \
             ORDER BY id LIMIT $2",))
        .bind(rfc3339(now))
        .bind(i64::from(limit))
        .fetch_all(ex).await)?,
        )
    }

    /// [`Store::pending_due`] restricted to one `channel` (`email` or `webhook`): a worker
    /// that cannot send email (no `[email]`) reads only the webhook rows, so email rows it
    /// leaves pending never crowd them out of a pass.
    pub async fn pending_due_on(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueMessage>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, recipient, message_id, subject, body, references_hdr, created_at, attempts, \
                    channel, content_type, html \
             FROM outbox WHERE state = 'pending' AND in_flight = 0 AND next_attempt_at <= $1 \
                   AND channel = $3 \
             ORDER BY id LIMIT $2",))
        .bind(rfc3339(now))
        .bind(i64::from(limit))
        .bind(channel)
        .fetch_all(ex).await)?,
        )
    }

    /// Counts one more attempt of a row, started `at`, and marks it in flight, in its own
    /// commit. `false` if the row is no longer pending or is already in flight (settled or
    /// taken since it was read): nothing was changed and it must not be sent.
    ///
    /// On a fenced store ([`Store::fenced`]) the row is taken only while this instance holds
    /// the leader lease: [`StoreError::NotLeader`] otherwise.
    pub async fn begin_attempt(&self, id: i64, at: DateTime<Utc>) -> Result<bool, StoreError> {
        if let (Some((name, holder)), Pool::Pg(p)) = (self.fence(), self.pool()) {
            let (started, leads): (i64, bool) = sqlx::query_as(concat!(
                "WITH lease AS (",
                super::lease::lease_held!(),
                "), taken AS (UPDATE outbox SET attempts = attempts + 1, last_attempt_at = $4, \
                   in_flight = 1 WHERE id = $3 AND state = 'pending' AND in_flight = 0 \
                   AND EXISTS (SELECT 1 FROM lease) RETURNING 1) \
                 SELECT (SELECT count(*) FROM taken), EXISTS (SELECT 1 FROM lease)",
            ))
            .bind(name)
            .bind(holder)
            .bind(id)
            .bind(rfc3339(at))
            .fetch_one(p)
            .await?;
            if !leads {
                return Err(StoreError::NotLeader);
            }
            return Ok(started > 0);
        }
        let started = db!(self.pool(), (ex, d) => sqlx::query(d.sql("UPDATE outbox SET attempts = attempts + 1, last_attempt_at = $2, in_flight = 1 \
             WHERE id = $1 AND state = 'pending' AND in_flight = 0",))
        .bind(id)
        .bind(rfc3339(at))
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(started > 0)
    }

    /// The server accepted the row's message `at`, at its `attempts`-th attempt.
    pub async fn mark_sent(
        &self,
        id: i64,
        attempts: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        db!(self.pool(), (ex, d) => sqlx::query(d.sql("UPDATE outbox SET state = 'sent', in_flight = 0, attempts = $2, sent_at = $3, last_error = NULL WHERE id = $1",))
        .bind(id)
        .bind(attempts)
        .bind(rfc3339(at))
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The server refused the row's message for good (`failed`), with `error`.
    pub async fn mark_failed(&self, id: i64, attempts: i64, error: &str) -> Result<(), StoreError> {
        db!(self.pool(), (ex, d) => sqlx::query(d.sql("UPDATE outbox SET state = 'failed', in_flight = 0, attempts = $2, last_error = $3 WHERE id = $1",))
        .bind(id)
        .bind(attempts)
        .bind(error)
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The row's message is given up (`abandoned`) after `attempts`, the last with `error`.
    pub async fn mark_abandoned(
        &self,
        id: i64,
        attempts: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        db!(self.pool(), (ex, d) => sqlx::query(d.sql("UPDATE outbox SET state = 'abandoned', in_flight = 0, attempts = $2, last_error = $3 WHERE id = $1",))
        .bind(id)
        .bind(attempts)
        .bind(error)
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The row's attempt failed with `error` and it stays pending, due again at `next`.
    pub async fn schedule_retry(
        &self,
        id: i64,
        attempts: i64,
        error: &str,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        db!(self.pool(), (ex, d) => sqlx::query(d.sql("UPDATE outbox SET in_flight = 0, attempts = $2, last_error = $3, next_attempt_at = $4 WHERE id = $1",))
        .bind(id)
        .bind(attempts)
        .bind(error)
        .bind(rfc3339(next))
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
