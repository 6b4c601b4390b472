//! Email: queued alerts become one digest per cycle per recipient in the outbox, and a
//! delivery worker sends the outbox through SMTP until the server accepts each message.
//!
//! Only this module speaks SMTP. Every outbox row carries its final Message-ID from the start, so
//! a message resent after a crash between "accepted" and "marked sent" is recognisably the same.

pub mod delivery;
pub mod mailer;
pub mod render;

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};

use crate::config::EmailConfig;
use crate::store::{Store, StoreError};
use crate::timefmt::rfc3339;
use render::AlertItem;

/// The domain used in Message-IDs and References: the sender's, so ids look local to the
/// recipients' mail system.
pub fn id_domain(email: &EmailConfig) -> String {
    email
        .from
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.domain().to_owned())
        .unwrap_or_else(|_| "waba-monitor.invalid".to_owned())
}

/// Puts every alert not yet digested into one email per recipient (or, with no `[email]`,
/// only logs them), in one transaction. Returns how many alerts it took.
pub async fn digest(
    store: &Store,
    email: Option<&EmailConfig>,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut tx = store.begin_write().await?;
    let severities = digest_in(&mut tx, email, now).await?;
    tx.commit().await?;
    Ok(severities.len())
}

/// [`digest`] inside the caller's transaction (the poller's cycle transaction, so the
/// transitions and their emails are committed together). Returns the severity of each alert
/// it took.
pub async fn digest_in(
    tx: &mut Transaction<'_, Sqlite>,
    email: Option<&EmailConfig>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let items: Vec<AlertItem> = sqlx::query_as(
        "SELECT a.id, a.created_at, a.kind, a.target_id, a.topic, a.severity, a.field, a.old, a.new, \
                a.previous_since, a.detail, \
                p.display_phone_number, p.verified_name, \
                COALESCE(p.waba_id, w.id) AS waba_id, \
                COALESCE(pw.name, w.name) AS waba_name, \
                COALESCE(p.health_entities, w.health_entities) AS health_entities \
         FROM alerts a \
         LEFT JOIN phone_numbers p ON a.kind = 'phone_number' AND p.id = a.target_id \
         LEFT JOIN wabas pw ON pw.id = p.waba_id \
         LEFT JOIN wabas w ON a.kind = 'waba' AND w.id = a.target_id \
         WHERE a.digested = 0 ORDER BY a.id",
    )
    .fetch_all(&mut **tx)
    .await?;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    for i in &items {
        tracing::warn!(
            severity = %i.severity,
            target = %i.target(),
            what = %i.what(),
            "alert"
        );
    }
    if let Some(email) = email {
        let domain = id_domain(email);
        let subject = render::subject(&items);
        let body = render::body(&items);
        let references = render::references(&items, &domain);
        let now_s = rfc3339(now);
        for rcpt in &email.to {
            // OR IGNORE: a digest redone after a crash before commit produces the same
            // Message-ID, and the unique index keeps one row.
            sqlx::query(
                "INSERT OR IGNORE INTO outbox (recipient, message_id, subject, body, references_hdr, created_at, next_attempt_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )
            .bind(rcpt)
            .bind(render::message_id(&items, rcpt, &domain))
            .bind(&subject)
            .bind(&body)
            .bind(&references)
            .bind(&now_s)
            .execute(&mut **tx)
            .await?;
        }
    }
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    sqlx::query("UPDATE alerts SET digested = 1 WHERE id IN (SELECT value FROM json_each(?1))")
        .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
        .execute(&mut **tx)
        .await?;
    Ok(items.into_iter().map(|i| i.severity).collect())
}
