//! Email: queued alerts become one digest per cycle per recipient in the outbox, and a
//! delivery worker sends the outbox through SMTP until the server accepts each message.
//!
//! Only this module speaks SMTP. Every outbox row carries its final Message-ID from the start, so
//! a message resent after a crash between "accepted" and "marked sent" is recognisably the same.

pub mod delivery;
pub mod mailer;
pub mod render;

use chrono::{DateTime, Utc};

use crate::config::EmailConfig;
use crate::store::outbox::{self, NewMessage};
use crate::store::{Store, StoreError, Tx};
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
    tx: &mut Tx<'_>,
    email: Option<&EmailConfig>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let items: Vec<AlertItem> = outbox::undigested_alerts(tx)
        .await?
        .into_iter()
        .map(AlertItem::from)
        .collect();
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
        for rcpt in &email.to {
            // A digest redone after a crash before commit produces the same Message-ID, and
            // the store keeps one row per Message-ID.
            let message_id = render::message_id(&items, rcpt, &domain);
            let message = NewMessage {
                recipient: rcpt,
                message_id: &message_id,
                subject: &subject,
                body: &body,
                references: &references,
            };
            outbox::queue_digest(tx, &message, now).await?;
        }
    }
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    outbox::mark_digested(tx, &ids).await?;
    Ok(items.into_iter().map(|i| i.severity).collect())
}
