//! The SQL behind the alert decisions of `alerts`: the open alerts (`alert_state`), the
//! queued alerts (`alerts`) and each source's failure count (`source_state`), always inside
//! the caller's transaction.

use super::db::tx;
use chrono::{DateTime, Utc};

use super::Tx;
use crate::alerts::{
    AlertPolicy, NewAlert, OpenAlert, OpenAlerts, Plan, SourceHealth, SourceState, StateUpdate,
    blind_step, reminder,
};
use crate::timefmt::rfc3339;

/// The open alerts among `keys` (target id, topic key).
pub async fn open_alerts_for(
    tx: &mut Tx<'_>,
    keys: &[(String, String)],
) -> Result<OpenAlerts, sqlx::Error> {
    let mut open = OpenAlerts::new();
    for (target, topic) in keys {
        if open.contains_key(&(target.clone(), topic.clone())) {
            continue;
        }
        let value: Option<Option<String>> = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT value FROM alert_state WHERE target_id = $1 AND topic = $2"))
                .bind(target)
                .bind(topic)
                .fetch_optional(ex).await)?;
        if let Some(value) = value {
            open.insert((target.clone(), topic.clone()), value);
        }
    }
    Ok(open)
}

/// Writes what a [`Plan`] decided: the open-alert updates, then the alerts.
pub async fn apply_plan(tx: &mut Tx<'_>, plan: &Plan, now: &str) -> Result<(), sqlx::Error> {
    for u in &plan.updates {
        apply_update(tx, u, now).await?;
    }
    for a in &plan.alerts {
        insert_alert(tx, a).await?;
    }
    Ok(())
}

async fn apply_update(tx: &mut Tx<'_>, u: &StateUpdate, now: &str) -> Result<(), sqlx::Error> {
    match u {
        StateUpdate::Open {
            target_id,
            topic,
            kind,
            severity,
            value,
        } => {
            tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO alert_state (target_id, topic, kind, severity, value, opened_at, last_sent_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (target_id, topic) DO UPDATE SET severity = $4, value = $5, last_sent_at = $6",))
            .bind(target_id)
            .bind(topic)
            .bind(kind)
            .bind(severity.as_str())
            .bind(value)
            .bind(now)
            .execute(ex).await.map(|r| r.rows_affected()))?;
        }
        StateUpdate::Close { target_id, topic } => {
            tx!(tx, (ex, d) => sqlx::query(d.sql("DELETE FROM alert_state WHERE target_id = $1 AND topic = $2"))
                .bind(target_id)
                .bind(topic)
                .execute(ex).await.map(|r| r.rows_affected()))?;
        }
    }
    Ok(())
}

async fn insert_alert(tx: &mut Tx<'_>, a: &NewAlert) -> Result<(), sqlx::Error> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO alerts (created_at, kind, target_id, topic, severity, field, old, new, previous_since, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",))
    .bind(&a.created_at)
    .bind(&a.kind)
    .bind(&a.target_id)
    .bind(&a.topic)
    .bind(&a.severity)
    .bind(&a.field)
    .bind(&a.old)
    .bind(&a.new)
    .bind(&a.previous_since)
    .bind(&a.detail)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Updates a source's failure count and raises or resolves "monitoring blind" as
/// [`blind_step`] decides. Returns whether the source is blind now.
pub async fn record_source_health_in(
    tx: &mut Tx<'_>,
    source: &str,
    health: &SourceHealth,
    blind_after: u32,
    policy: AlertPolicy,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let now = rfc3339(now);
    let before: SourceState = tx!(tx, (ex, d) => sqlx::query_as::<_, (i64, bool)>(d.sql("SELECT consecutive_failures, blind FROM source_state WHERE source = $1",))
    .bind(source)
    .fetch_optional(ex).await)?
    .map(|(consecutive_failures, blind)| SourceState {
        consecutive_failures,
        blind,
    })
    .unwrap_or_default();
    let step = blind_step(source, before, health, blind_after, policy, &now);
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO source_state (source, consecutive_failures, blind, reason, since) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (source) DO UPDATE SET consecutive_failures = $2, blind = $3, reason = $4, \
         since = CASE WHEN source_state.blind = $3 THEN source_state.since ELSE $5 END",))
    .bind(source)
    .bind(step.state.consecutive_failures)
    .bind(step.state.blind)
    .bind(&step.reason)
    .bind(&now)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    if let Some(u) = &step.update {
        apply_update(tx, u, &now).await?;
    }
    if let Some(a) = &step.alert {
        insert_alert(tx, a).await?;
    }
    Ok(step.state.blind)
}

/// Queues a reminder for every alert still open and not mentioned for `repeat`, in its own
/// transaction. Returns how many were queued. A zero `repeat` disables reminders.
pub async fn queue_reminders(
    store: &super::Store,
    repeat: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<usize, super::StoreError> {
    let mut tx = store.begin_leader_write().await?;
    let n = queue_reminders_in(&mut tx, repeat, now).await?;
    tx.commit().await?;
    Ok(n)
}

/// [`queue_reminders`] inside the caller's transaction.
pub async fn queue_reminders_in(
    tx: &mut Tx<'_>,
    repeat: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    if repeat.is_zero() {
        return Ok(0);
    }
    // A repeat longer than the calendar goes back: nothing can be due.
    let Some(cutoff) = crate::timefmt::checked_ago(now, repeat) else {
        return Ok(0);
    };
    let now_s = rfc3339(now);
    let due: Vec<(String, String, String, String, Option<String>, String)> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT target_id, topic, kind, severity, value, opened_at FROM alert_state WHERE last_sent_at <= $1",))
    .bind(rfc3339(cutoff))
    .fetch_all(ex).await)?;
    for (target_id, topic, kind, severity, value, opened_at) in &due {
        let open = OpenAlert {
            target_id: target_id.clone(),
            topic: topic.clone(),
            kind: kind.clone(),
            severity: severity.clone(),
            value: value.clone(),
            opened_at: opened_at.clone(),
        };
        insert_alert(tx, &reminder(&open, &now_s)).await?;
        tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE alert_state SET last_sent_at = $1 WHERE target_id = $2 AND topic = $3"))
            .bind(&now_s)
            .bind(target_id)
            .bind(topic)
            .execute(ex).await.map(|r| r.rows_affected()))?;
    }
    Ok(due.len())
}

/// Critical alerts open since before `now - after` and not escalated yet: each gets one
/// escalation alert (to `[alerts] escalate_to`) and is marked escalated.
pub async fn queue_escalations_in(
    tx: &mut Tx<'_>,
    after: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let Some(cutoff) = crate::timefmt::checked_ago(now, after) else {
        return Ok(0);
    };
    let now_s = rfc3339(now);
    let due: Vec<(String, String, String, String, Option<String>, String)> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT target_id, topic, kind, severity, value, opened_at FROM alert_state \
         WHERE severity = 'critical' AND escalated_at IS NULL AND opened_at <= $1",))
    .bind(rfc3339(cutoff))
    .fetch_all(ex).await)?;
    for (target_id, topic, kind, severity, value, opened_at) in &due {
        let open = OpenAlert {
            target_id: target_id.clone(),
            topic: topic.clone(),
            kind: kind.clone(),
            severity: severity.clone(),
            value: value.clone(),
            opened_at: opened_at.clone(),
        };
        insert_alert(tx, &crate::alerts::escalation(&open, &now_s)).await?;
        tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE alert_state SET escalated_at = $1 WHERE target_id = $2 AND topic = $3"))
            .bind(&now_s)
            .bind(target_id)
            .bind(topic)
            .execute(ex).await.map(|r| r.rows_affected()))?;
    }
    Ok(due.len())
}

#[derive(sqlx::FromRow)]
struct OpenWithTarget {
    target_id: String,
    topic: String,
    kind: String,
    severity: String,
    value: Option<String>,
    opened_at: String,
    waba_id: Option<String>,
    business_id: Option<String>,
    source: Option<String>,
}

/// When silences ended (by time or early): every alert still open on a target one of them
/// matched — and no silence still in force matches — gets one notice now ("still ..."): it
/// went unsent while silenced. A target that recovered during the silence has no open alert:
/// nothing is sent.
pub async fn queue_silence_ends_in(
    tx: &mut Tx<'_>,
    now: DateTime<Utc>,
) -> Result<usize, super::StoreError> {
    let ended = super::silences::take_ended_in(tx, now).await?;
    if ended.is_empty() {
        return Ok(0);
    }
    let active = super::silences::active_in(tx, now).await?;
    let rows: Vec<OpenWithTarget> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT s.target_id, s.topic, s.kind, s.severity, s.value, s.opened_at, \
                COALESCE(p.waba_id, t.waba_id, w.id) AS waba_id, \
                COALESCE(pw.business_id, tw.business_id, w.business_id) AS business_id, \
                COALESCE(p.source, t.source, w.source, CASE WHEN s.kind = 'source' THEN s.target_id END) AS source \
         FROM alert_state s \
         LEFT JOIN phone_numbers p ON s.kind = 'phone_number' AND p.id = s.target_id \
         LEFT JOIN wabas pw ON pw.id = p.waba_id \
         LEFT JOIN wabas w ON s.kind = 'waba' AND w.id = s.target_id \
         LEFT JOIN templates t ON s.kind = 'template' AND t.id = s.target_id \
         LEFT JOIN wabas tw ON tw.id = t.waba_id",))
    .fetch_all(ex).await)?;
    let now_s = rfc3339(now);
    let mut n = 0;
    for r in rows {
        let target = crate::config::TargetRef {
            business_id: r.business_id.as_deref(),
            waba_id: r.waba_id.as_deref(),
            number_id: (r.kind == "phone_number").then_some(r.target_id.as_str()),
            source: r.source.as_deref(),
        };
        if !ended.iter().any(|s| s.matchers.matches(&target))
            || active.iter().any(|s| s.matchers.matches(&target))
        {
            continue;
        }
        let open = OpenAlert {
            target_id: r.target_id.clone(),
            topic: r.topic.clone(),
            kind: r.kind,
            severity: r.severity,
            value: r.value,
            opened_at: r.opened_at,
        };
        tracing::info!(target = %r.target_id, topic = %r.topic, "a silence ended with the target still bad: sending one notice");
        insert_alert(tx, &reminder(&open, &now_s)).await?;
        tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE alert_state SET last_sent_at = $1 WHERE target_id = $2 AND topic = $3"))
            .bind(&now_s)
            .bind(&r.target_id)
            .bind(&r.topic)
            .execute(ex).await.map(|r| r.rows_affected()))?;
        n += 1;
    }
    Ok(n)
}
