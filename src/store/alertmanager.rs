//! What `[alertmanager]` posts, read inside the caller's transaction: every open alert with the
//! alert row that announced it (its evidence), the alerts of the last few intervals that ended
//! or changed what was open, and each Alertmanager's one snapshot row in the outbox.
//!
//! `notify::alertmanager` decides what becomes an Alertmanager alert; this file only reads and
//! writes rows.

use super::StoreError;
use super::db::tx;
use super::outbox::{NewMessage, Tx, UndigestedAlert, queue_digest};
use chrono::{DateTime, Utc};

/// An open alert (`alert_state`) with the latest alert row that opened or worsened it
/// (`alert`: its id is 0 and its evidence empty when retention pruned that row).
#[derive(Debug, Clone)]
pub struct OpenForAlertmanager {
    pub alert: UndigestedAlert,
    /// The open alert's value (what it is about now) and since when it is open.
    pub value: Option<String>,
    pub opened_at: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct OpenRow {
    value: Option<String>,
    opened_at: String,
    #[sqlx(flatten)]
    alert: UndigestedAlert,
}

/// The columns of [`UndigestedAlert`] for an alert row `a` (possibly absent: then from the open
/// alert `s`), with the target's names, WABA, portfolio and source joined.
macro_rules! target_joins {
    () => {
        "
     p.display_phone_number, p.verified_name, \
     COALESCE(p.waba_id, t.waba_id, w.id) AS waba_id, \
     COALESCE(pw.name, tw.name, w.name) AS waba_name, \
     COALESCE(p.health_entities, w.health_entities) AS health_entities, \
     t.name AS template_name, t.language AS template_language, \
     COALESCE(pw.business_id, tw.business_id, w.business_id) AS business_id, \
     COALESCE(p.source, t.source, w.source, CASE WHEN k.kind = 'source' THEN k.target_id END) AS source "
    };
}

macro_rules! target_from {
    () => {
        "
     LEFT JOIN phone_numbers p ON k.kind = 'phone_number' AND p.id = k.target_id \
     LEFT JOIN wabas pw ON pw.id = p.waba_id \
     LEFT JOIN wabas w ON k.kind = 'waba' AND w.id = k.target_id \
     LEFT JOIN templates t ON k.kind = 'template' AND t.id = k.target_id \
     LEFT JOIN wabas tw ON tw.id = t.waba_id "
    };
}

/// Every open alert, with the latest critical, warning or improving alert row of its target
/// and topic.
pub async fn open_alerts_in(tx: &mut Tx<'_>) -> Result<Vec<OpenForAlertmanager>, StoreError> {
    let sql = concat!(
        "SELECT k.value, k.opened_at, \
                COALESCE(a.id, 0) AS id, COALESCE(a.created_at, k.opened_at) AS created_at, \
                k.kind, k.target_id, k.topic, k.severity, \
                COALESCE(a.field, k.topic) AS field, a.old, COALESCE(a.new, k.value) AS new, \
                a.previous_since, a.detail, ",
        target_joins!(),
        "FROM alert_state k \
         LEFT JOIN alerts a ON a.id = (SELECT MAX(x.id) FROM alerts x \
              WHERE x.target_id = k.target_id AND x.topic = k.topic \
                AND x.severity IN ('critical', 'warning', 'improving')) ",
        target_from!(),
        "ORDER BY k.target_id, k.topic"
    );
    let rows: Vec<OpenRow> = tx!(tx, (ex, d) => sqlx::query_as(d.sql(sql)).fetch_all(ex).await)?;
    Ok(rows
        .into_iter()
        .map(|r| OpenForAlertmanager {
            alert: r.alert,
            value: r.value,
            opened_at: r.opened_at,
        })
        .collect())
}

/// The alert rows created at or after `since` that ended or changed an earlier value:
/// what an Alertmanager may still hold open under that earlier value's name.
pub async fn recent_changes_in(
    tx: &mut Tx<'_>,
    since: &str,
) -> Result<Vec<UndigestedAlert>, StoreError> {
    let sql = concat!(
        "SELECT k.id, k.created_at, k.kind, k.target_id, k.topic, k.severity, k.field, k.old, \
                k.new, k.previous_since, k.detail, ",
        target_joins!(),
        "FROM alerts k ",
        target_from!(),
        "WHERE k.created_at >= $1 \
           AND k.severity IN ('resolved', 'improving', 'critical', 'warning') \
         ORDER BY k.id"
    );
    Ok(tx!(tx, (ex, d) => sqlx::query_as(d.sql(sql)).bind(since).fetch_all(ex).await)?)
}

/// Queues `message` (channel `alertmanager`, recipient an Alertmanager's URL) and deletes that
/// Alertmanager's older rows not in flight: each snapshot holds every open alert and every
/// recent end, so the newest makes the older ones moot (and the outbox stays at one row or
/// two per Alertmanager).
pub async fn queue_snapshot_in(
    tx: &mut Tx<'_>,
    message: &NewMessage<'_>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("DELETE FROM outbox WHERE channel = 'alertmanager' AND recipient = $1 AND in_flight = 0",))
    .bind(message.recipient)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    queue_digest(tx, message, now).await
}
