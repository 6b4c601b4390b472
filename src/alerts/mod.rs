//! From changes to alerts. `plan` runs inside the store's apply transaction, so a transition and
//! the alert it causes are committed together or not at all; `alert_state` remembers what is
//! open, so a recovery is announced only after an alert, and a restart with unchanged state (no
//! history row, hence no change) sends nothing.

pub mod rules;

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};

use crate::store::Change;
use crate::timefmt::rfc3339;
use rules::{Severity, Topic, Verdict};

/// Alert behaviour the store needs while applying a poll.
#[derive(Debug, Clone, Copy)]
pub struct AlertPolicy {
    /// Send "resolved" notices.
    pub resolved: bool,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy { resolved: true }
    }
}

/// The key of an alert's topic in `alert_state`: limits are tracked per field, so a drop of
/// the tier and of the portfolio limit are two alerts, each resolved by its own rise.
fn topic_key(topic: Topic, field: &str) -> String {
    match topic {
        Topic::Limit => format!("limit:{field}"),
        other => other.as_str().to_owned(),
    }
}

#[derive(sqlx::FromRow)]
struct OpenAlert {
    value: Option<String>,
}

/// Records the alerts that `changes` cause. Must run before the changes' history rows are
/// inserted (it reads when the previous value started). Returns how many alerts it queued.
pub async fn plan(
    tx: &mut Transaction<'_, Sqlite>,
    changes: &[Change],
    now: &str,
    policy: AlertPolicy,
) -> Result<usize, sqlx::Error> {
    let mut queued = 0;
    for c in changes {
        let Some(new) = c.new.as_deref() else {
            continue;
        };
        let Some(Verdict { topic, severity }) = rules::verdict(&c.field, c.old.as_deref(), new)
        else {
            continue;
        };
        let key = topic_key(topic, &c.field);
        let open: Option<OpenAlert> =
            sqlx::query_as("SELECT value FROM alert_state WHERE target_id = ?1 AND topic = ?2")
                .bind(&c.target_id)
                .bind(&key)
                .fetch_optional(&mut **tx)
                .await?;
        let send = match (severity, &open) {
            // Already alerted about exactly this value (e.g. RED -> NA -> RED): stay quiet.
            (s, Some(o)) if s.is_bad() && o.value.as_deref() == Some(new) => None,
            (Severity::Critical | Severity::Warning, _) => Some(severity),
            // RED -> YELLOW with an alert open is good news, but not the end of it.
            (Severity::Improving, Some(_)) => Some(Severity::Improving),
            (Severity::Improving, None) => Some(Severity::Warning),
            (Severity::Resolved, Some(_)) => {
                sqlx::query("DELETE FROM alert_state WHERE target_id = ?1 AND topic = ?2")
                    .bind(&c.target_id)
                    .bind(&key)
                    .execute(&mut **tx)
                    .await?;
                policy.resolved.then_some(Severity::Resolved)
            }
            (Severity::Resolved, None) => None,
        };
        let Some(send) = send else { continue };
        if send != Severity::Resolved {
            let state_severity = if send == Severity::Improving {
                Severity::Warning
            } else {
                send
            };
            sqlx::query(
                "INSERT INTO alert_state (target_id, topic, kind, severity, value, opened_at, last_sent_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
                 ON CONFLICT (target_id, topic) DO UPDATE SET severity = ?4, value = ?5, last_sent_at = ?6",
            )
            .bind(&c.target_id)
            .bind(&key)
            .bind(c.kind.as_str())
            .bind(state_severity.as_str())
            .bind(new)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        let previous_since: Option<String> = if c.old.is_some() {
            sqlx::query_scalar(
                "SELECT observed_at FROM history WHERE target_id = ?1 AND field = ?2 \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(&c.target_id)
            .bind(&c.field)
            .fetch_optional(&mut **tx)
            .await?
        } else {
            None
        };
        insert_alert(
            tx,
            NewAlert {
                created_at: now,
                kind: c.kind.as_str(),
                target_id: &c.target_id,
                topic: &key,
                severity: send.as_str(),
                field: &c.field,
                old: c.old.as_deref(),
                new: Some(new),
                previous_since: previous_since.as_deref(),
                detail: None,
            },
        )
        .await?;
        queued += 1;
    }
    Ok(queued)
}

struct NewAlert<'a> {
    created_at: &'a str,
    kind: &'a str,
    target_id: &'a str,
    topic: &'a str,
    severity: &'a str,
    field: &'a str,
    old: Option<&'a str>,
    new: Option<&'a str>,
    previous_since: Option<&'a str>,
    detail: Option<&'a str>,
}

async fn insert_alert(
    tx: &mut Transaction<'_, Sqlite>,
    a: NewAlert<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alerts (created_at, kind, target_id, topic, severity, field, old, new, previous_since, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(a.created_at)
    .bind(a.kind)
    .bind(a.target_id)
    .bind(a.topic)
    .bind(a.severity)
    .bind(a.field)
    .bind(a.old)
    .bind(a.new)
    .bind(a.previous_since)
    .bind(a.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How one source's poll went, as far as "monitoring blind" is concerned.
#[derive(Debug, Clone)]
pub enum SourceHealth {
    /// Read at least partly, with no token or permission problem.
    Seeing,
    /// Nothing could be read; `reason` is bounded and carries no secret.
    Failed { reason: String },
    /// The token is expired/invalid or lacks permission: blind at once.
    Unauthorized { reason: String },
}

/// Updates a source's failure count and raises or resolves "monitoring blind", in the caller's
/// transaction. Returns whether the source is blind now.
pub async fn record_source_health_in(
    tx: &mut Transaction<'_, Sqlite>,
    source: &str,
    health: &SourceHealth,
    blind_after: u32,
    policy: AlertPolicy,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let now = rfc3339(now);
    let (failures, blind): (i64, bool) =
        sqlx::query_as("SELECT consecutive_failures, blind FROM source_state WHERE source = ?1")
            .bind(source)
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or((0, false));
    let (failures, reason, now_blind) = match health {
        SourceHealth::Seeing => (0, None, false),
        SourceHealth::Failed { reason } => {
            let n = failures + 1;
            (n, Some(reason.clone()), n >= i64::from(blind_after))
        }
        SourceHealth::Unauthorized { reason } => (failures + 1, Some(reason.clone()), true),
    };
    sqlx::query(
        "INSERT INTO source_state (source, consecutive_failures, blind, reason, since) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (source) DO UPDATE SET consecutive_failures = ?2, blind = ?3, reason = ?4, \
         since = CASE WHEN source_state.blind = ?3 THEN source_state.since ELSE ?5 END",
    )
    .bind(source)
    .bind(failures)
    .bind(now_blind)
    .bind(&reason)
    .bind(&now)
    .execute(&mut **tx)
    .await?;
    let severity = match (blind, now_blind) {
        (false, true) => Some(Severity::Critical),
        (true, false) if policy.resolved => Some(Severity::Resolved),
        _ => None,
    };
    if let Some(sev) = severity {
        if sev == Severity::Critical {
            sqlx::query(
                "INSERT OR REPLACE INTO alert_state (target_id, topic, kind, severity, value, opened_at, last_sent_at) \
                 VALUES (?1, 'blind', 'source', 'critical', 'blind', ?2, ?2)",
            )
            .bind(source)
            .bind(&now)
            .execute(&mut **tx)
            .await?;
        } else {
            sqlx::query("DELETE FROM alert_state WHERE target_id = ?1 AND topic = 'blind'")
                .bind(source)
                .execute(&mut **tx)
                .await?;
        }
        insert_alert(
            tx,
            NewAlert {
                created_at: &now,
                kind: "source",
                target_id: source,
                topic: Topic::Blind.as_str(),
                severity: sev.as_str(),
                field: "monitoring",
                old: Some(if blind { "blind" } else { "seeing" }),
                new: Some(if now_blind { "blind" } else { "seeing" }),
                previous_since: None,
                detail: reason.as_deref(),
            },
        )
        .await?;
    } else if !now_blind && blind {
        // Recovered with resolved notices off: close the state silently.
        sqlx::query("DELETE FROM alert_state WHERE target_id = ?1 AND topic = 'blind'")
            .bind(source)
            .execute(&mut **tx)
            .await?;
    }
    Ok(now_blind)
}

/// Queues a reminder for every alert still open and not mentioned for `repeat`. Returns how
/// many were queued. A zero `repeat` disables reminders.
pub async fn queue_reminders(
    pool: &sqlx::SqlitePool,
    repeat: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let n = queue_reminders_in(&mut tx, repeat, now).await?;
    tx.commit().await?;
    Ok(n)
}

/// [`queue_reminders`] inside the caller's transaction.
pub async fn queue_reminders_in(
    tx: &mut Transaction<'_, Sqlite>,
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
    #[derive(sqlx::FromRow)]
    struct Due {
        target_id: String,
        topic: String,
        kind: String,
        severity: String,
        value: Option<String>,
        opened_at: String,
    }
    let due: Vec<Due> = sqlx::query_as(
        "SELECT target_id, topic, kind, severity, value, opened_at FROM alert_state WHERE last_sent_at <= ?1",
    )
    .bind(rfc3339(cutoff))
    .fetch_all(&mut **tx)
    .await?;
    for d in &due {
        let field = if d.topic == Topic::Blind.as_str() {
            "monitoring".to_owned()
        } else if let Some(f) = d.topic.strip_prefix("limit:") {
            f.to_owned()
        } else {
            match d.topic.as_str() {
                "quality" => crate::model::field::QUALITY_RATING,
                "status" => crate::model::field::STATUS,
                "health" => crate::model::field::HEALTH,
                "review" => crate::model::field::ACCOUNT_REVIEW_STATUS,
                "verification" => crate::model::field::BUSINESS_VERIFICATION_STATUS,
                _ => crate::model::field::PRESENCE,
            }
            .to_owned()
        };
        insert_alert(
            tx,
            NewAlert {
                created_at: &now_s,
                kind: &d.kind,
                target_id: &d.target_id,
                topic: &d.topic,
                severity: "reminder",
                field: &field,
                old: None,
                new: d.value.as_deref(),
                previous_since: Some(&d.opened_at),
                detail: Some(&d.severity),
            },
        )
        .await?;
        sqlx::query("UPDATE alert_state SET last_sent_at = ?1 WHERE target_id = ?2 AND topic = ?3")
            .bind(&now_s)
            .bind(&d.target_id)
            .bind(&d.topic)
            .execute(&mut **tx)
            .await?;
    }
    Ok(due.len())
}
