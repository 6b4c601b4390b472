//! Facts pushed by webhooks (migration 0007): the latest value of one field of one target, with
//! the time Meta gave it. Recording a fact inside the caller's transaction: an older fact than
//! the stored one is ignored (Meta does not guarantee order), an equal one changes nothing (a
//! delivery sent twice is recorded once), a different newer one replaces it, writes one history
//! row and yields a [`Change`] for the alert planner.

use super::Tx;
use super::db::{db, tx};
use crate::model::{Change, TargetKind, field};

/// One fact as a delivery states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub kind: TargetKind,
    pub target_id: String,
    pub field: String,
    pub value: String,
    /// Shown in the alert email (ban date, restriction types and expiry...).
    pub detail: Option<String>,
    /// `entry[].time`: when Meta says it happened (unix seconds).
    pub event_time: i64,
    /// When a restriction ends by itself (unix seconds).
    pub expires_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Stored {
    value: String,
    detail: Option<String>,
    event_time: i64,
    recorded_at: String,
}

/// Records `fact` (learnt from delivery `event_id`, if any) at `now` (RFC 3339). Returns the
/// change it makes, if it makes one.
pub async fn record_fact_in(
    tx: &mut Tx<'_>,
    fact: &Fact,
    event_id: Option<i64>,
    now: &str,
) -> Result<Option<Change>, sqlx::Error> {
    let kind = fact.kind.as_str();
    let stored: Option<Stored> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT value, detail, event_time, recorded_at FROM facts \
         WHERE kind = $1 AND target_id = $2 AND field = $3",))
    .bind(kind)
    .bind(&fact.target_id)
    .bind(&fact.field)
    .fetch_optional(ex).await)?;
    if let Some(s) = &stored {
        if fact.event_time < s.event_time {
            return Ok(None);
        }
        if s.value == fact.value {
            // The same value: no history, no alert; a newer time or a new detail (a ban date
            // moved) is kept so that an older fact arriving later is still recognised.
            if s.event_time != fact.event_time || s.detail != fact.detail {
                tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE facts SET event_time = $4, detail = $5, expires_at = $6 \
                     WHERE kind = $1 AND target_id = $2 AND field = $3",))
                .bind(kind)
                .bind(&fact.target_id)
                .bind(&fact.field)
                .bind(fact.event_time)
                .bind(&fact.detail)
                .bind(fact.expires_at)
                .execute(ex).await.map(|r| r.rows_affected()))?;
            }
            return Ok(None);
        }
    }
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO facts (kind, target_id, field, value, detail, event_time, expires_at, recorded_at, webhook_event_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (kind, target_id, field) DO UPDATE SET value = $4, detail = $5, event_time = $6, \
         expires_at = $7, recorded_at = $8, webhook_event_id = $9",))
    .bind(kind)
    .bind(&fact.target_id)
    .bind(&fact.field)
    .bind(&fact.value)
    .bind(&fact.detail)
    .bind(fact.event_time)
    .bind(fact.expires_at)
    .bind(now)
    .bind(event_id)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    let old = stored.as_ref().map(|s| s.value.clone());
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO history (kind, target_id, field, old, new, observed_at, poll_run_id) \
         VALUES ($1, $2, $3, $4, $5, $6, NULL)",))
    .bind(kind)
    .bind(&fact.target_id)
    .bind(&fact.field)
    .bind(&old)
    .bind(&fact.value)
    .bind(now)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(Some(Change {
        kind: fact.kind,
        target_id: fact.target_id.clone(),
        field: fact.field.clone(),
        old,
        new: Some(fact.value.clone()),
        previous_since: stored.map(|s| s.recorded_at),
    }))
}

/// Restrictions still in force whose expiry is at or before `now_unix`.
pub async fn expired_restrictions_in(
    tx: &mut Tx<'_>,
    now_unix: i64,
) -> Result<Vec<Fact>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, i64)> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT kind, target_id, value, event_time, expires_at FROM facts \
         WHERE field = $1 AND value <> $2 AND expires_at IS NOT NULL AND expires_at <= $3",))
    .bind(field::RESTRICTION)
    .bind(field::NONE)
    .bind(now_unix)
    .fetch_all(ex).await)?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, target_id, value, event_time, expires_at)| {
            Some(Fact {
                kind: TargetKind::parse(&kind)?,
                target_id,
                field: field::RESTRICTION.to_owned(),
                value,
                detail: None,
                event_time,
                expires_at: Some(expires_at),
            })
        })
        .collect())
}

/// Whether any restriction is due to expire by `now_unix` (a cheap read, outside a write
/// transaction, so an idle check takes no write lock).
pub async fn any_expired_restriction(
    pool: &super::Pool,
    now_unix: i64,
) -> Result<bool, sqlx::Error> {
    let n: i64 = db!(pool, (ex, d) => sqlx::query_scalar(d.sql("SELECT COUNT(*) FROM facts \
         WHERE field = $1 AND value <> $2 AND expires_at IS NOT NULL AND expires_at <= $3",))
    .bind(field::RESTRICTION)
    .bind(field::NONE)
    .bind(now_unix)
    .fetch_one(ex).await)?;
    Ok(n > 0)
}

/// The id of the number of WABA `waba_id` whose display number has the digits `digits` (Meta's
/// webhooks name a number by its display number only).
pub async fn phone_id_by_display_in(
    tx: &mut Tx<'_>,
    waba_id: &str,
    digits: &str,
) -> Result<Option<String>, sqlx::Error> {
    tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT id FROM phone_numbers WHERE (waba_id = $1 OR $1 = '') AND \
         replace(replace(replace(replace(replace(replace(display_phone_number, '+', ''), ' ', ''), '-', ''), '(', ''), ')', ''), '.', '') = $2 \
         ORDER BY present DESC LIMIT 1",))
    .bind(waba_id)
    .bind(digits)
    .fetch_optional(ex).await)
}

/// Marks delivery `id` processed with `outcome`, inside the transaction that recorded its facts.
pub async fn mark_processed_in(
    tx: &mut Tx<'_>,
    id: i64,
    at: &str,
    outcome: &str,
) -> Result<bool, sqlx::Error> {
    let r = tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE webhook_events SET processed_at = $2, outcome = $3 WHERE id = $1 AND processed_at IS NULL",))
    .bind(id)
    .bind(at)
    .bind(outcome)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(r == 1)
}

/// Sets the outcome of a delivery being processed in this transaction.
pub async fn set_outcome_in(tx: &mut Tx<'_>, id: i64, outcome: &str) -> Result<(), sqlx::Error> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE webhook_events SET outcome = $2 WHERE id = $1"))
        .bind(id)
        .bind(outcome)
        .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The stored fact of (kind, target, field): its value and detail (tests, the CLI).
pub async fn fact(
    pool: &super::Pool,
    kind: TargetKind,
    target_id: &str,
    field_name: &str,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    db!(pool, (ex, d) => sqlx::query_as(d.sql("SELECT value, detail FROM facts WHERE kind = $1 AND target_id = $2 AND field = $3",))
    .bind(kind.as_str())
    .bind(target_id)
    .bind(field_name)
    .fetch_optional(ex).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn ban(value: &str, t: i64) -> Fact {
        Fact {
            kind: TargetKind::Waba,
            target_id: "200000000000001".into(),
            field: field::BAN_STATE.into(),
            value: value.into(),
            detail: Some("ban date 2026-02-12".into()),
            event_time: t,
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn older_facts_never_overwrite_and_equal_facts_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("m.db")).await.expect("open");
        let mut tx = store.begin_write().await.expect("tx");
        let now = "2026-02-12T00:00:00.000Z";
        let c = record_fact_in(&mut tx, &ban("DISABLE", 100), Some(1), now)
            .await
            .expect("record")
            .expect("first sighting is a change");
        assert_eq!((c.old, c.new.as_deref()), (None, Some("DISABLE")));
        assert_eq!(
            record_fact_in(&mut tx, &ban("DISABLE", 100), Some(1), now)
                .await
                .expect("record"),
            None,
            "same fact again"
        );
        assert_eq!(
            record_fact_in(&mut tx, &ban("REINSTATE", 99), Some(2), now)
                .await
                .expect("record"),
            None,
            "older fact"
        );
        let c = record_fact_in(&mut tx, &ban("REINSTATE", 101), Some(3), now)
            .await
            .expect("record")
            .expect("newer different fact");
        assert_eq!(
            (c.old.as_deref(), c.new.as_deref()),
            (Some("DISABLE"), Some("REINSTATE"))
        );
        tx.commit().await.expect("commit");
        assert_eq!(store.history_count().await.expect("count"), 2);
        store.close().await;
    }
}
