//! Silences (migration 0009): while one is active, the alerts of the targets it matches are
//! recorded (history, open alerts, metrics) but not sent. Each keeps who made it, when and why,
//! and who ended it early; expired ones are pruned with the retention.

use super::db::{db, tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, Tx};
use crate::timefmt::rfc3339;

/// What a silence matches: a target matches when it matches **any** listed value (a WABA
/// silences the WABA, its numbers and its templates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matchers {
    #[serde(default)]
    pub wabas: Vec<String>,
    #[serde(default)]
    pub numbers: Vec<String>,
    #[serde(default)]
    pub businesses: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Matchers {
    pub fn is_empty(&self) -> bool {
        self.wabas.is_empty()
            && self.numbers.is_empty()
            && self.businesses.is_empty()
            && self.sources.is_empty()
    }

    /// Whether a target (its business, WABA, number id, source) is matched.
    pub fn matches(&self, t: &crate::config::TargetRef<'_>) -> bool {
        let any = |list: &[String], v: Option<&str>| v.is_some_and(|v| list.iter().any(|x| x == v));
        any(&self.wabas, t.waba_id)
            || any(&self.numbers, t.number_id)
            || any(&self.businesses, t.business_id)
            || any(&self.sources, t.source)
    }

    /// "WABA 1, number 2, source main" for emails and tables.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, list) in [
            ("WABA", &self.wabas),
            ("number", &self.numbers),
            ("business", &self.businesses),
            ("source", &self.sources),
        ] {
            for v in list {
                parts.push(format!("{what} {v}"));
            }
        }
        parts.join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Silence {
    pub id: i64,
    pub matchers: Matchers,
    pub starts_at: String,
    pub ends_at: String,
    pub comment: String,
    pub author: String,
    pub created_at: String,
    /// Ended early (`silence expire`), by whom.
    pub expired_at: Option<String>,
    pub expired_by: Option<String>,
    /// `active`, `expired` or `pending` (starts later), at the time it was read.
    pub state: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    matchers: String,
    starts_at: String,
    ends_at: String,
    comment: String,
    author: String,
    created_at: String,
    expired_at: Option<String>,
    expired_by: Option<String>,
}

impl Row {
    fn into_silence(self, now: &str) -> Silence {
        let end = self
            .expired_at
            .as_deref()
            .unwrap_or(&self.ends_at)
            .to_owned();
        let state = if end.as_str() <= now {
            "expired"
        } else if self.starts_at.as_str() > now {
            "pending"
        } else {
            "active"
        };
        Silence {
            id: self.id,
            // A row this version wrote; an unreadable one matches nothing.
            matchers: serde_json::from_str(&self.matchers).unwrap_or_default(),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            comment: self.comment,
            author: self.author,
            created_at: self.created_at,
            expired_at: self.expired_at,
            expired_by: self.expired_by,
            state: state.to_owned(),
        }
    }
}

/// The silences in force at `now`.
pub async fn active_in(tx: &mut Tx<'_>, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
    let at = rfc3339(now);
    let rows: Vec<Row> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT id, matchers, starts_at, ends_at, comment, author, created_at, expired_at, expired_by \
         FROM silences WHERE starts_at <= $1 AND ends_at > $1 AND expired_at IS NULL ORDER BY id",))
    .bind(&at)
    .fetch_all(ex).await)?;
    Ok(rows.into_iter().map(|r| r.into_silence(&at)).collect())
}

/// Silences that ended (by time or early) and whose end was not dealt with yet; each is marked
/// handled here, so its end is dealt with once.
pub async fn take_ended_in(
    tx: &mut Tx<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<Silence>, StoreError> {
    let at = rfc3339(now);
    let rows: Vec<Row> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT id, matchers, starts_at, ends_at, comment, author, created_at, expired_at, expired_by \
         FROM silences WHERE end_handled = 0 AND (ends_at <= $1 OR expired_at IS NOT NULL) ORDER BY id",))
    .bind(&at)
    .fetch_all(ex).await)?;
    if !rows.is_empty() {
        tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE silences SET end_handled = 1 WHERE end_handled = 0 AND (ends_at <= $1 OR expired_at IS NOT NULL)",))
        .bind(&at)
        .execute(ex).await.map(|r| r.rows_affected()))?;
    }
    Ok(rows.into_iter().map(|r| r.into_silence(&at)).collect())
}

impl Store {
    /// Records a silence; returns its id.
    pub async fn add_silence(
        &self,
        matchers: &Matchers,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        comment: &str,
        author: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let id: i64 = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("INSERT INTO silences (matchers, starts_at, ends_at, comment, author, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",))
        .bind(serde_json::to_string(matchers).unwrap_or_else(|_| "{}".to_owned()))
        .bind(rfc3339(starts_at))
        .bind(rfc3339(ends_at))
        .bind(comment)
        .bind(author)
        .bind(rfc3339(now))
        .fetch_one(ex).await)?;
        tx.commit().await?;
        Ok(id)
    }

    /// Active and pending silences, and those that ended within `recent` before `now`,
    /// newest first.
    pub async fn silences(
        &self,
        now: DateTime<Utc>,
        recent: chrono::Duration,
    ) -> Result<Vec<Silence>, StoreError> {
        let at = rfc3339(now);
        let rows: Vec<Row> = db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, matchers, starts_at, ends_at, comment, author, created_at, expired_at, expired_by \
             FROM silences WHERE COALESCE(expired_at, ends_at) > $1 ORDER BY id DESC",))
        .bind(rfc3339(now - recent))
        .fetch_all(ex).await)?;
        Ok(rows.into_iter().map(|r| r.into_silence(&at)).collect())
    }

    /// Ends a silence now; `false` if there is no such silence or it already ended.
    pub async fn expire_silence(
        &self,
        id: i64,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let at = rfc3339(now);
        let mut tx = self.begin_write().await?;
        let r = tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE silences SET expired_at = $2, expired_by = $3 \
             WHERE id = $1 AND expired_at IS NULL AND ends_at > $2",))
        .bind(id)
        .bind(&at)
        .bind(by)
        .execute(ex).await.map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(r == 1)
    }
}

/// The longest silence: a year (a longer quiet is a config change, not a silence).
pub const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Checks a silence as asked for (CLI or API): something to match, ids that are Meta's
/// numeric ids, a duration from 1 minute to a year, a comment. Returns the duration.
pub fn validate(m: &Matchers, duration: &str, comment: &str) -> Result<chrono::Duration, String> {
    if m.is_empty() {
        return Err(
            "a silence needs something to match: --waba ID, --number ID, --business ID or --source NAME"
                .into(),
        );
    }
    for (what, list) in [
        ("WABA", &m.wabas),
        ("phone number", &m.numbers),
        ("business", &m.businesses),
    ] {
        if let Some(bad) = list
            .iter()
            .find(|id| id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(format!(
                "\"{bad}\" is not a {what} id (Meta's numeric id, as in `waba-monitor status`)"
            ));
        }
    }
    let d = crate::timefmt::parse_duration(duration.trim())
        .map_err(|e| format!("--for \"{duration}\": {e} (write e.g. 30m, 2h, 1d)"))?;
    if d < std::time::Duration::from_secs(60) || d > MAX_SILENCE {
        return Err(format!(
            "--for \"{duration}\": a silence lasts from 1 minute to 366 days"
        ));
    }
    if comment.trim().is_empty() {
        return Err("a silence needs a --comment saying why (it is kept for the audit)".into());
    }
    chrono::Duration::from_std(d).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silences_end_once_and_ended_ones_are_pruned_with_the_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("m.db")).await.expect("open");
        let now = Utc::now();
        let m = Matchers {
            wabas: vec!["1".into()],
            ..Matchers::default()
        };
        let days = chrono::Duration::days;
        let old = store
            .add_silence(
                &m,
                now - days(40),
                now - days(39),
                "old",
                "a",
                now - days(40),
            )
            .await
            .expect("add");
        let active = store
            .add_silence(&m, now, now + days(1), "now", "b", now)
            .await
            .expect("add");
        // The end of the old one is dealt with once.
        let mut tx = store.begin_write().await.expect("tx");
        let ended = take_ended_in(&mut tx, now).await.expect("ended");
        assert_eq!(ended.iter().map(|s| s.id).collect::<Vec<_>>(), [old]);
        assert!(take_ended_in(&mut tx, now).await.expect("ended").is_empty());
        let in_force = active_in(&mut tx, now).await.expect("active");
        assert_eq!(in_force.iter().map(|s| s.id).collect::<Vec<_>>(), [active]);
        tx.commit().await.expect("commit");
        // A retention of 30 days removes the one that ended 39 days ago, not the active one.
        store.prune_batch(now - days(30), 100).await.expect("prune");
        let left: Vec<i64> = store
            .silences(now, days(3650))
            .await
            .expect("list")
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(left, [active]);
        store.close().await;
    }
}
