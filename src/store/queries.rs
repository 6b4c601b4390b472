//! Read side of the store: current status and history, for the CLI (and later the HTTP API).

use super::db::{db, tx};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{PhoneRow, Store, StoreError, WabaRow};
use crate::timefmt::rfc3339;

/// One target's current state, as `status --json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusEntry {
    /// `phone_number` or `waba`.
    pub kind: &'static str,
    pub id: String,
    pub source: String,
    pub waba_id: Option<String>,
    pub business_id: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    /// The WABA's name (for a WABA entry) or its WABA's name (for a number).
    pub name: Option<String>,
    pub quality_rating: Option<String>,
    pub status: Option<String>,
    /// The effective limit: the portfolio-wide `whatsapp_business_manager_messaging_limit` when
    /// Meta reports it, else the deprecated per-number `messaging_limit_tier`.
    pub messaging_limit: Option<String>,
    pub messaging_limit_tier: Option<String>,
    pub whatsapp_business_manager_messaging_limit: Option<String>,
    /// Overall `health_status.can_send_message`.
    pub health: Option<String>,
    pub health_entities: Option<serde_json::Value>,
    pub name_status: Option<String>,
    pub account_review_status: Option<String>,
    pub business_verification_status: Option<String>,
    pub throughput: Option<String>,
    pub present: bool,
    /// Not read by its source's latest poll: the state shown is the last known one.
    pub stale: bool,
    /// When the source says it created / last updated the target (a BSP reports these).
    pub source_created_at: Option<String>,
    pub source_updated_at: Option<String>,
    pub first_seen_at: String,
    pub last_polled_at: String,
    pub last_changed_at: String,
}

/// One history row, as `history --json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryEntry {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub field: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub observed_at: String,
}

/// One page of a list, and how long the whole list is (read in one snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
}

fn effective_limit(business: &Option<String>, tier: &Option<String>) -> Option<String> {
    business.clone().or_else(|| tier.clone())
}

pub(super) fn is_stale(stale_from: &HashMap<String, String>, source: &str, polled: &str) -> bool {
    stale_from
        .get(source)
        .is_some_and(|started| polled < started.as_str())
}

fn health_entities(json: Option<&str>, detail: bool) -> Option<serde_json::Value> {
    json.filter(|_| detail)
        .and_then(|j| serde_json::from_str(j).ok())
}

fn waba_entry(
    w: &WabaRow,
    health_detail: bool,
    stale_from: &HashMap<String, String>,
) -> StatusEntry {
    StatusEntry {
        kind: "waba",
        id: w.id.clone(),
        source: w.source.clone(),
        waba_id: Some(w.id.clone()),
        business_id: w.business_id.clone(),
        display_phone_number: None,
        verified_name: None,
        name: w.name.clone(),
        quality_rating: None,
        status: None,
        messaging_limit: w.business_messaging_limit.clone(),
        messaging_limit_tier: None,
        whatsapp_business_manager_messaging_limit: w.business_messaging_limit.clone(),
        health: w.health.clone(),
        health_entities: health_entities(w.health_entities.as_deref(), health_detail),
        name_status: None,
        account_review_status: w.account_review_status.clone(),
        business_verification_status: w.business_verification_status.clone(),
        throughput: None,
        present: w.present,
        stale: w.present && is_stale(stale_from, &w.source, &w.last_polled_at),
        source_created_at: w.source_created_at.clone(),
        source_updated_at: w.source_updated_at.clone(),
        first_seen_at: w.first_seen_at.clone(),
        last_polled_at: w.last_polled_at.clone(),
        last_changed_at: w.last_changed_at.clone(),
    }
}

/// A number's entry; `waba` is its WABA's row when known (for the name and, on API versions
/// before v24, the portfolio limit only the WABA carries).
fn phone_entry(
    p: &PhoneRow,
    waba: Option<&WabaRow>,
    health_detail: bool,
    stale_from: &HashMap<String, String>,
) -> StatusEntry {
    // A number's own portfolio limit wins, then its WABA's, then the deprecated tier.
    let business_limit = p
        .business_messaging_limit
        .clone()
        .or_else(|| waba.and_then(|w| w.business_messaging_limit.clone()));
    StatusEntry {
        kind: "phone_number",
        id: p.id.clone(),
        source: p.source.clone(),
        waba_id: p.waba_id.clone(),
        // A number belongs to the portfolio of its WABA.
        business_id: waba.and_then(|w| w.business_id.clone()),
        display_phone_number: p.display_phone_number.clone(),
        verified_name: p.verified_name.clone(),
        name: waba.and_then(|w| w.name.clone()),
        quality_rating: p.quality_rating.clone(),
        status: p.status.clone(),
        messaging_limit: effective_limit(&business_limit, &p.messaging_limit_tier),
        messaging_limit_tier: p.messaging_limit_tier.clone(),
        whatsapp_business_manager_messaging_limit: p.business_messaging_limit.clone(),
        health: p.health.clone(),
        health_entities: health_entities(p.health_entities.as_deref(), health_detail),
        name_status: p.name_status.clone(),
        account_review_status: None,
        business_verification_status: None,
        throughput: p.throughput.clone(),
        present: p.present,
        stale: p.present && is_stale(stale_from, &p.source, &p.last_polled_at),
        source_created_at: p.source_created_at.clone(),
        source_updated_at: p.source_updated_at.clone(),
        first_seen_at: p.first_seen_at.clone(),
        last_polled_at: p.last_polled_at.clone(),
        last_changed_at: p.last_changed_at.clone(),
    }
}

impl Store {
    /// Every WABA, then every number (grouped by WABA), present ones first.
    pub async fn status(&self) -> Result<Vec<StatusEntry>, StoreError> {
        self.status_with(true, 1).await
    }

    /// [`Store::status`]; `health_detail: false` leaves `health_entities` out (cheaper, for
    /// metrics, which export only the overall health). A target is `stale` when the last
    /// `stale_after` finished polls of its source did not read it.
    pub async fn status_with(
        &self,
        health_detail: bool,
        stale_after: u32,
    ) -> Result<Vec<StatusEntry>, StoreError> {
        let mut conn = self.pool().begin().await?;
        let wabas: Vec<WabaRow> = tx!(conn, (ex, d) => sqlx::query_as(d.sql("SELECT * FROM wabas ORDER BY present DESC, id"))
            .fetch_all(ex).await)?;
        let phones: Vec<PhoneRow> = tx!(conn, (ex, d) => sqlx::query_as(d.sql("SELECT * FROM phone_numbers ORDER BY present DESC, waba_id, display_phone_number, id",))
        .fetch_all(ex).await)?;
        let sources = sources_of(
            wabas
                .iter()
                .map(|w| w.source.as_str())
                .chain(phones.iter().map(|p| p.source.as_str())),
        );
        let stale_from = stale_from_in(&mut conn, &sources, stale_after).await?;
        drop(conn);
        let by_id: HashMap<&str, &WabaRow> = wabas.iter().map(|w| (w.id.as_str(), w)).collect();
        let mut out = Vec::with_capacity(wabas.len() + phones.len());
        for w in &wabas {
            out.push(waba_entry(w, health_detail, &stale_from));
        }
        for p in &phones {
            let waba = p.waba_id.as_deref().and_then(|id| by_id.get(id).copied());
            out.push(phone_entry(p, waba, health_detail, &stale_from));
        }
        Ok(out)
    }

    /// The id a user means by `wanted`: a number's or WABA's id as stored, else the number
    /// whose display number has the same digits ("+44 20 7946 0123", "442079460123").
    /// `None` when nothing matches.
    pub async fn resolve_target(&self, wanted: &str) -> Result<Option<String>, StoreError> {
        let wanted = wanted.trim();
        let exact: Option<String> = db!(self.pool(), (ex, d) => sqlx::query_scalar(d.sql("SELECT id FROM phone_numbers WHERE id = $1 UNION ALL SELECT id FROM wabas WHERE id = $1 \
             UNION ALL SELECT target_id FROM managed_accounts WHERE target_id = $1 LIMIT 1",))
        .bind(wanted)
        .fetch_optional(ex).await)?;
        if exact.is_some() {
            return Ok(exact);
        }
        let digits: String = wanted.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Ok(None);
        }
        let numbers: Vec<(String, Option<String>)> = db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, display_phone_number FROM phone_numbers ORDER BY present DESC, id",))
        .fetch_all(ex).await)?;
        Ok(numbers.into_iter().find_map(|(id, display)| {
            display
                .filter(|d| d.chars().filter(char::is_ascii_digit).eq(digits.chars()))
                .map(|_| id)
        }))
    }

    /// Changes, newest first.
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = db!(self.pool(), (ex, d) => sqlx::query_as::<_, HistoryEntry>(d.sql("SELECT seq, target_id AS id, kind, field, old, new, observed_at FROM history \
             WHERE ($1 IS NULL OR target_id = $1) AND ($2 IS NULL OR observed_at >= $2) \
             ORDER BY seq DESC LIMIT $3",))
        .bind(&f.id)
        .bind(f.since.map(rfc3339))
        .bind(f.limit.map_or(i64::MAX, i64::from))
        .fetch_all(ex).await)?;
        Ok(rows)
    }

    /// How many history rows exist (for tests and the benchmark).
    pub async fn history_count(&self) -> Result<i64, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_scalar(d.sql("SELECT COUNT(*) FROM history"))
            .fetch_one(ex).await)?,
        )
    }

    /// Emails waiting for the SMTP server: how many, and when the oldest was queued (for
    /// `/metrics`: on the probe connection, never one of the cycle's).
    pub async fn outbox_pending(&self) -> Result<(i64, Option<String>), StoreError> {
        Ok(
            db!(&self.probes, (ex, d) => sqlx::query_as(d.sql("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'"))
                .fetch_one(ex).await)?,
        )
    }

    /// Whether the database answers (for readiness: on the probe connection, so neither the
    /// cycle nor a crowd of API readers delays it).
    pub async fn ping(&self) -> Result<(), StoreError> {
        db!(&self.probes, (ex, d) => sqlx::query(d.sql("SELECT 1")).execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// One number's state, if known: its row, its WABA's row and its source's staleness
    /// mark, nothing else. Status API: read-only pool.
    pub async fn phone(
        &self,
        id: &str,
        stale_after: u32,
    ) -> Result<Option<StatusEntry>, StoreError> {
        let mut tx = self.reads.begin().await?;
        let Some(p): Option<PhoneRow> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT * FROM phone_numbers WHERE id = $1"))
            .bind(id)
            .fetch_optional(ex).await)?
        else {
            return Ok(None);
        };
        let waba: Option<WabaRow> = match &p.waba_id {
            Some(w) => {
                tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT * FROM wabas WHERE id = $1"))
                    .bind(w)
                    .fetch_optional(ex).await)?
            }
            None => None,
        };
        let stale_from = stale_from_in(&mut tx, &[p.source.as_str()], stale_after).await?;
        tx.commit().await?;
        Ok(Some(phone_entry(&p, waba.as_ref(), true, &stale_from)))
    }

    /// One page of the monitored numbers, in the order of [`Store::status`] (present first,
    /// by WABA, display number, id), and how many there are, from one snapshot. Status API:
    /// read-only pool; only the page's rows and their WABAs are read.
    pub async fn phone_page(
        &self,
        limit: u32,
        offset: u32,
        stale_after: u32,
    ) -> Result<Page<StatusEntry>, StoreError> {
        let mut tx = self.reads.begin().await?;
        let total: i64 = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT COUNT(*) FROM phone_numbers"))
            .fetch_one(ex).await)?;
        let phones: Vec<PhoneRow> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT * FROM phone_numbers ORDER BY present DESC, waba_id, display_phone_number, id \
             LIMIT $1 OFFSET $2",))
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(ex).await)?;
        let mut waba_ids: Vec<&str> = phones.iter().filter_map(|p| p.waba_id.as_deref()).collect();
        waba_ids.sort_unstable();
        waba_ids.dedup();
        let wabas: Vec<WabaRow> = if waba_ids.is_empty() {
            Vec::new()
        } else {
            tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT * FROM wabas WHERE id IN (SELECT value FROM json_each($1))"))
                .bind(serde_json::to_string(&waba_ids).unwrap_or_else(|_| "[]".to_owned()))
                .fetch_all(ex).await)?
        };
        let sources = sources_of(phones.iter().map(|p| p.source.as_str()));
        let stale_from = stale_from_in(&mut tx, &sources, stale_after).await?;
        tx.commit().await?;
        let by_id: HashMap<&str, &WabaRow> = wabas.iter().map(|w| (w.id.as_str(), w)).collect();
        let items = phones
            .iter()
            .map(|p| {
                let waba = p.waba_id.as_deref().and_then(|id| by_id.get(id).copied());
                phone_entry(p, waba, true, &stale_from)
            })
            .collect();
        Ok(Page {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// One page of a target's changes, newest first, and how many it has. Status API:
    /// read-only pool.
    pub async fn history_page(
        &self,
        id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Page<HistoryEntry>, StoreError> {
        let mut tx = self.reads.begin().await?;
        let total: i64 = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT COUNT(*) FROM history WHERE target_id = $1"))
            .bind(id)
            .fetch_one(ex).await)?;
        let items = tx!(tx, (ex, d) => sqlx::query_as::<_, HistoryEntry>(d.sql("SELECT seq, target_id AS id, kind, field, old, new, observed_at FROM history \
             WHERE target_id = $1 ORDER BY seq DESC LIMIT $2 OFFSET $3",))
        .bind(id)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(ex).await)?;
        tx.commit().await?;
        Ok(Page {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// Deletes at most `batch` rows older than `before` from the history and, with them, old
    /// poll records, digested alerts, finished outbox rows and processed webhook deliveries
    /// (those last kept at least [`WEBHOOK_DEDUPE_WINDOW`] after their last receipt, so a
    /// retry of one is still known as a repeat). Small batches in short transactions, so
    /// pruning never holds the write lock long. Returns rows deleted.
    pub async fn prune_batch(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        let cutoff = rfc3339(before);
        let mut deleted = 0;
        {
            let webhook_cutoff = rfc3339(before.min(Utc::now() - WEBHOOK_DEDUPE_WINDOW));
            let mut tx = self.begin_leader_write().await?;
            let r = tx!(tx, (ex, d) => sqlx::query(d.sql("DELETE FROM webhook_events WHERE id IN (SELECT id FROM webhook_events \
                 WHERE processed_at IS NOT NULL AND last_received_at < $1 ORDER BY id LIMIT $2)",))
            .bind(&webhook_cutoff)
            .bind(i64::from(batch))
            .execute(ex).await.map(|r| r.rows_affected()))?;
            tx.commit().await?;
            deleted += r;
        }
        for sql in [
            "DELETE FROM history WHERE seq IN (SELECT seq FROM history WHERE observed_at < $1 ORDER BY seq LIMIT $2)",
            "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE digested = 1 AND created_at < $1 ORDER BY id LIMIT $2)",
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state != 'pending' AND created_at < $1 ORDER BY id LIMIT $2)",
            "DELETE FROM silences WHERE id IN (SELECT id FROM silences WHERE end_handled = 1 \
             AND COALESCE(expired_at, ends_at) < $1 ORDER BY id LIMIT $2)",
            // Poll records are referenced by history rows; delete only unreferenced ones.
            "DELETE FROM poll_runs WHERE id IN (SELECT id FROM poll_runs WHERE started_at < $1 \
             AND outcome != 'running' AND NOT EXISTS (SELECT 1 FROM history h WHERE h.poll_run_id = poll_runs.id) \
             ORDER BY id LIMIT $2)",
        ] {
            let mut tx = self.begin_leader_write().await?;
            let r = tx!(tx, (ex, d) => sqlx::query(d.sql(sql))
                .bind(&cutoff)
                .bind(i64::from(batch))
                .execute(ex).await.map(|r| r.rows_affected()))?;
            tx.commit().await?;
            deleted += r;
        }
        Ok(deleted)
    }

    /// Writes a consistent copy of the database to `dest` (`VACUUM INTO`), while the daemon
    /// may keep running.
    /// PostgreSQL's backups are the server's (`pg_dump`, base backups): refused there.
    pub async fn backup(&self, dest: &std::path::Path) -> Result<(), StoreError> {
        let Some(pool) = self.pool().sqlite() else {
            return Err(StoreError::Access(
                "backup copies a SQLite database; this one is on PostgreSQL: back it up with the server's tools (pg_dump, or your provider's snapshots)".into(),
            ));
        };
        sqlx::query("VACUUM INTO $1")
            .bind(dest.to_string_lossy().into_owned())
            .execute(pool)
            .await?;
        Ok(())
    }

    /// `PRAGMA integrity_check` (tests, and after an unclean stop); on PostgreSQL, whose
    /// server keeps its own integrity, whether it answers.
    pub async fn integrity_ok(&self) -> Result<bool, StoreError> {
        let r: String = db!(self.pool(), (ex, d) => sqlx::query_scalar(if d.is_postgres() {
                "SELECT 'ok'"
            } else {
                "PRAGMA integrity_check"
            })
            .fetch_one(ex).await)?;
        Ok(r == "ok")
    }

    /// The latest poll runs, newest first.
    pub async fn recent_runs(&self, limit: u32) -> Result<Vec<PollRun>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as::<_, PollRun>(d.sql("SELECT * FROM poll_runs ORDER BY id DESC LIMIT $1"))
                .bind(i64::from(limit))
                .fetch_all(ex).await)?,
        )
    }
}

/// How long a processed webhook delivery is kept whatever the retention: Meta retries a
/// delivery for up to 7 days, and a retry must still be recognised as a repeat.
pub const WEBHOOK_DEDUPE_WINDOW: chrono::Duration = chrono::Duration::days(8);

/// The distinct sources among `sources`, in order.
pub(super) fn sources_of<'a>(sources: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = sources.collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The start of the `stale_after`-th latest finished poll of each of `sources`: a target
/// last read before it was missed by that many polls in a row. One indexed look-up per
/// source (`poll_runs (source, id)`), however many poll records the retention keeps.
pub(super) async fn stale_from_in(
    conn: &mut super::Tx<'_>,
    sources: &[&str],
    stale_after: u32,
) -> Result<HashMap<String, String>, StoreError> {
    let mut out = HashMap::with_capacity(sources.len());
    for source in sources {
        let started: Option<String> = tx!(conn, (ex, d) => sqlx::query_scalar(d.sql("SELECT started_at FROM poll_runs WHERE source = $1 AND outcome != 'running' \
             ORDER BY id DESC LIMIT 1 OFFSET $2",))
        .bind(*source)
        .bind(i64::from(stale_after.max(1) - 1))
        .fetch_optional(ex).await)?;
        if let Some(started) = started {
            out.insert((*source).to_owned(), started);
        }
    }
    Ok(out)
}

/// One row of `poll_runs`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PollRun {
    pub id: i64,
    pub source: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub calls: i64,
    pub requests: i64,
    pub wabas: i64,
    pub numbers: i64,
    pub failures: i64,
    pub changes: i64,
    pub error: Option<String>,
}

/// What `status` narrows to; every filter is applied in SQL, so a fleet of 100,000 numbers
/// is narrowed before it is read. Filters combine (all must hold).
#[derive(Debug, Clone, Default)]
pub struct StatusFilter {
    /// One WABA: the WABA itself and its numbers.
    pub waba: Option<String>,
    /// One business portfolio: its WABAs and their numbers.
    pub business: Option<String>,
    /// One source (a `[[meta]]`, `[[bsp]]` name).
    pub source: Option<String>,
    /// Only what is not healthy: what the alert rules rate a warning or worse (gone targets,
    /// already reported when they went, are left out).
    pub problems: bool,
}

/// How bad a target is now: the alert rule table's verdict on its current values as if first
/// seen (what an alert would call critical is [`Rank::Critical`]). Ordered, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// No longer listed by its WABA (or portfolio): kept for its history.
    Gone,
    Ok,
    Warning,
    Critical,
}

impl Rank {
    fn from_sql(n: i64) -> Rank {
        match n {
            0 => Rank::Gone,
            2 => Rank::Warning,
            3 => Rank::Critical,
            _ => Rank::Ok,
        }
    }
}

/// A target of `status` with its [`Rank`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub rank: Rank,
    pub entry: StatusEntry,
}

/// What `status` shows: the WABAs and the numbers matching a [`StatusFilter`], each worst
/// first, and how many targets the database holds at all (0: nothing was read yet).
#[derive(Debug, Clone, Default)]
pub struct StatusView {
    pub wabas: Vec<Ranked>,
    pub numbers: Vec<Ranked>,
    pub targets_in_database: u64,
}

/// The values of `field` among `candidates` that the alert rule table rates critical and
/// warning on a first sighting, as JSON arrays for `json_each`: the SQL rank below is the
/// rule table's, not a second copy of it.
fn rated(field_name: &str, candidates: &[&str]) -> [String; 2] {
    use crate::alerts::rules::{Severity, verdict};
    let pick = |severity: Severity| {
        let values: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|v| verdict(field_name, None, v).is_some_and(|v| v.severity == severity))
            .collect();
        serde_json::to_string(&values).unwrap_or_else(|_| "[]".to_owned())
    };
    [pick(Severity::Critical), pick(Severity::Warning)]
}

/// `account_review_status` values Meta documents (the rule table rates them).
const REVIEW_VALUES: &[&str] = &["APPROVED", "PENDING", "REJECTED"];
/// `business_verification_status` values, lower-cased (the rule table compares them so).
const VERIFICATION_VALUES: &[&str] = &[
    "verified",
    "unverified",
    "not_verified",
    "pending",
    "pending_submission",
    "pending_need_more_info",
    "failed",
    "rejected",
    "revoked",
    "expired",
];

/// A number's rank (0 gone, 1 ok, 2 warning, 3 critical); $1-$3 critical and $4-$6 warning
/// values of quality, status and health.
macro_rules! number_rank {
    () => {
        "CAST(CASE WHEN p.present = FALSE THEN 0 \
         WHEN p.quality_rating IN (SELECT value FROM json_each($1)) \
           OR p.status IN (SELECT value FROM json_each($2)) \
           OR p.health IN (SELECT value FROM json_each($3)) THEN 3 \
         WHEN p.quality_rating IN (SELECT value FROM json_each($4)) \
           OR p.status IN (SELECT value FROM json_each($5)) \
           OR p.health IN (SELECT value FROM json_each($6)) THEN 2 ELSE 1 END AS BIGINT)"
    };
}

/// A WABA's rank; $1-$3 critical and $4-$6 warning values of review status, verification
/// (lower case) and health.
macro_rules! waba_rank {
    () => {
        "CAST(CASE WHEN w.present = FALSE THEN 0 \
         WHEN w.account_review_status IN (SELECT value FROM json_each($1)) \
           OR lower(w.business_verification_status) IN (SELECT value FROM json_each($2)) \
           OR w.health IN (SELECT value FROM json_each($3)) THEN 3 \
         WHEN w.account_review_status IN (SELECT value FROM json_each($4)) \
           OR lower(w.business_verification_status) IN (SELECT value FROM json_each($5)) \
           OR w.health IN (SELECT value FROM json_each($6)) THEN 2 ELSE 1 END AS BIGINT)"
    };
}

/// Numbers matching $7 WABA, $8 source, $9 business, $10 problems only; worst first, then
/// by WABA and display number: one JSON array of [`RankedPhone`]s (in field order), built by
/// SQLite in one step. Read row by row through the driver, 100,000 numbers took seconds and
/// half a gigabyte; `health_entities` only with $11.
const STATUS_NUMBERS: &str = concat!(
    "SELECT json_group_array(json_array(rank, id, source, waba_id, display_phone_number, \
     verified_name, quality_rating, status, messaging_limit_tier, business_messaging_limit, \
     health, CASE WHEN $11 THEN health_entities END, name_status, code_verification_status, \
     throughput, account_mode, json(CASE present WHEN 0 THEN 'false' ELSE 'true' END), \
     first_seen_at, last_polled_at, last_changed_at, source_priority, source_created_at, \
     source_updated_at) ORDER BY rank DESC, waba_id, display_phone_number, id) \
     FROM (SELECT p.*, ",
    number_rank!(),
    " AS rank FROM phone_numbers p \
     WHERE ($7 IS NULL OR p.waba_id = $7) AND ($8 IS NULL OR p.source = $8) \
     AND ($9 IS NULL OR p.waba_id IN (SELECT id FROM wabas WHERE business_id = $9))) AS ranked \
     WHERE (NOT $10 OR rank >= 2)"
);

/// A number's rank and row, read positionally from [`STATUS_NUMBERS`]' array.
#[derive(serde::Deserialize)]
struct RankedPhone {
    rank: i64,
    id: String,
    source: String,
    waba_id: Option<String>,
    display_phone_number: Option<String>,
    verified_name: Option<String>,
    quality_rating: Option<String>,
    status: Option<String>,
    messaging_limit_tier: Option<String>,
    business_messaging_limit: Option<String>,
    health: Option<String>,
    health_entities: Option<String>,
    name_status: Option<String>,
    code_verification_status: Option<String>,
    throughput: Option<String>,
    account_mode: Option<String>,
    present: bool,
    first_seen_at: String,
    last_polled_at: String,
    last_changed_at: String,
    source_priority: i64,
    source_created_at: Option<String>,
    source_updated_at: Option<String>,
}

impl RankedPhone {
    fn split(self) -> (Rank, PhoneRow) {
        (
            Rank::from_sql(self.rank),
            PhoneRow {
                id: self.id,
                source: self.source,
                waba_id: self.waba_id,
                display_phone_number: self.display_phone_number,
                verified_name: self.verified_name,
                quality_rating: self.quality_rating,
                status: self.status,
                messaging_limit_tier: self.messaging_limit_tier,
                business_messaging_limit: self.business_messaging_limit,
                health: self.health,
                health_entities: self.health_entities,
                name_status: self.name_status,
                code_verification_status: self.code_verification_status,
                throughput: self.throughput,
                account_mode: self.account_mode,
                present: self.present,
                first_seen_at: self.first_seen_at,
                last_polled_at: self.last_polled_at,
                last_changed_at: self.last_changed_at,
                source_priority: self.source_priority,
                source_created_at: self.source_created_at,
                source_updated_at: self.source_updated_at,
            },
        )
    }
}

/// WABAs matching $7 WABA, $8 source, $9 business, $10 problems only; worst first.
const STATUS_WABAS: &str = concat!(
    "SELECT * FROM (SELECT w.*, ",
    waba_rank!(),
    " AS rank FROM wabas w \
     WHERE ($7 IS NULL OR w.id = $7) AND ($8 IS NULL OR w.source = $8) \
     AND ($9 IS NULL OR w.business_id = $9)) AS ranked \
     WHERE (NOT $10 OR rank >= 2) ORDER BY rank DESC, id"
);

/// One history row with who it is about: a number's display number and verified name, a
/// WABA's or a template's name (as `history` prints it).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NamedHistoryEntry {
    #[sqlx(flatten)]
    pub entry: HistoryEntry,
    pub display_phone_number: Option<String>,
    pub name: Option<String>,
}

/// What `history` narrows to (all given must hold).
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// One target's id (as stored: resolve a display number first).
    pub id: Option<String>,
    /// Everything in one WABA: the WABA, its numbers and its templates.
    pub waba: Option<String>,
    /// One field (`quality_rating`, `status`, ...).
    pub field: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
}

impl Store {
    /// The WABAs and numbers `filter` selects, ranked and ordered worst first in SQL, from one
    /// snapshot of the read-only pool. A target is `stale` when the last `stale_after`
    /// finished polls of its source did not read it; `health_detail: false` leaves
    /// `health_entities` out (the table does not show them; parsing them for 100,000 numbers
    /// would double the work).
    pub async fn status_view(
        &self,
        filter: &StatusFilter,
        stale_after: u32,
        health_detail: bool,
    ) -> Result<StatusView, StoreError> {
        use crate::model::{CanSendMessage, PhoneStatus, QualityRating, field};
        use sqlx::{FromRow, Row};
        let [q_crit, q_warn] = rated(field::QUALITY_RATING, QualityRating::KNOWN);
        let [s_crit, s_warn] = rated(field::STATUS, PhoneStatus::KNOWN);
        let [h_crit, h_warn] = rated(field::HEALTH, CanSendMessage::KNOWN);
        let [r_crit, r_warn] = rated(field::ACCOUNT_REVIEW_STATUS, REVIEW_VALUES);
        let [v_crit, v_warn] = rated(field::BUSINESS_VERIFICATION_STATUS, VERIFICATION_VALUES);
        let mut tx = self.read_pool().begin().await?;
        let total: i64 = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT (SELECT COUNT(*) FROM wabas) + (SELECT COUNT(*) FROM phone_numbers)",))
        .fetch_one(ex).await)?;
        let numbers_json: String = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql(STATUS_NUMBERS))
            .bind(&q_crit)
            .bind(&s_crit)
            .bind(&h_crit)
            .bind(&q_warn)
            .bind(&s_warn)
            .bind(&h_warn)
            .bind(&filter.waba)
            .bind(&filter.source)
            .bind(&filter.business)
            .bind(filter.problems)
            .bind(health_detail)
            .fetch_one(ex).await)?;
        let waba_rows = tx!(tx, (ex, d) => sqlx::query(d.sql(STATUS_WABAS))
            .bind(&r_crit)
            .bind(&v_crit)
            .bind(&h_crit)
            .bind(&r_warn)
            .bind(&v_warn)
            .bind(&h_warn)
            .bind(&filter.waba)
            .bind(&filter.source)
            .bind(&filter.business)
            .bind(filter.problems)
            .fetch_all(ex).await
            .and_then(|rows| rows
                .iter()
                .map(|row| Ok((Rank::from_sql(row.try_get("rank")?), WabaRow::from_row(row)?)))
                .collect::<Result<Vec<(Rank, WabaRow)>, sqlx::Error>>()))?;
        let numbers: Vec<(Rank, PhoneRow)> =
            serde_json::from_str::<Vec<RankedPhone>>(&numbers_json)
                .map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))?
                .into_iter()
                .map(RankedPhone::split)
                .collect();
        drop(numbers_json);
        let listed = waba_rows;
        // The numbers' own WABAs (for their names, portfolio and limits), listed or not.
        let mut waba_ids: Vec<&str> = numbers
            .iter()
            .filter_map(|(_, p)| p.waba_id.as_deref())
            .collect();
        waba_ids.sort_unstable();
        waba_ids.dedup();
        let owners: Vec<WabaRow> = if waba_ids.is_empty() {
            Vec::new()
        } else {
            tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT * FROM wabas WHERE id IN (SELECT value FROM json_each($1))"))
                .bind(serde_json::to_string(&waba_ids).unwrap_or_else(|_| "[]".to_owned()))
                .fetch_all(ex).await)?
        };
        let sources = sources_of(
            listed
                .iter()
                .map(|(_, w)| w.source.as_str())
                .chain(numbers.iter().map(|(_, p)| p.source.as_str())),
        );
        let stale_from = stale_from_in(&mut tx, &sources, stale_after).await?;
        tx.commit().await?;
        let by_id: HashMap<&str, &WabaRow> = owners.iter().map(|w| (w.id.as_str(), w)).collect();
        Ok(StatusView {
            wabas: listed
                .into_iter()
                .map(|(rank, w)| Ranked {
                    rank,
                    entry: waba_entry(&w, health_detail, &stale_from),
                })
                .collect(),
            numbers: numbers
                .into_iter()
                .map(|(rank, p)| {
                    let waba = p.waba_id.as_deref().and_then(|id| by_id.get(id).copied());
                    Ranked {
                        rank,
                        entry: phone_entry(&p, waba, health_detail, &stale_from),
                    }
                })
                .collect(),
            targets_in_database: u64::try_from(total).unwrap_or(0),
        })
    }

    /// Whether `id` is a WABA the database knows (read, listed by a number, or added through
    /// the fleet API).
    pub async fn waba_known(&self, id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = db!(self.pool(), (ex, d) => sqlx::query_scalar(d.sql("SELECT CAST(1 AS BIGINT) FROM wabas WHERE id = $1 UNION ALL \
             SELECT 1 FROM phone_numbers WHERE waba_id = $1 UNION ALL \
             SELECT 1 FROM managed_accounts WHERE target_id = $1 LIMIT 1",))
        .bind(id.trim())
        .fetch_optional(ex).await)?;
        Ok(found.is_some())
    }

    /// The ids of the WABAs of business portfolio `business`.
    pub async fn wabas_of_business(&self, business: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            db!(self.read_pool(), (ex, d) => sqlx::query_scalar(d.sql("SELECT id FROM wabas WHERE business_id = $1 ORDER BY id"))
                .bind(business)
                .fetch_all(ex).await)?,
        )
    }

    /// Changes, newest first, each with the display number and name of what it is about.
    pub async fn history_named(
        &self,
        q: &HistoryQuery,
    ) -> Result<Vec<NamedHistoryEntry>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as::<_, NamedHistoryEntry>(d.sql("SELECT h.seq, h.target_id AS id, h.kind, h.field, h.old, h.new, h.observed_at, \
             p.display_phone_number AS display_phone_number, \
             COALESCE(p.verified_name, w.name, t.name) AS name \
             FROM history h \
             LEFT JOIN phone_numbers p ON h.kind = 'phone_number' AND p.id = h.target_id \
             LEFT JOIN wabas w ON h.kind = 'waba' AND w.id = h.target_id \
             LEFT JOIN templates t ON h.kind = 'template' AND t.id = h.target_id \
             WHERE ($1 IS NULL OR h.target_id = $1) \
             AND ($2 IS NULL OR h.target_id = $2 \
                  OR h.target_id IN (SELECT id FROM phone_numbers WHERE waba_id = $2) \
                  OR h.target_id IN (SELECT id FROM templates WHERE waba_id = $2)) \
             AND ($3 IS NULL OR h.field = $3) AND ($4 IS NULL OR h.observed_at >= $4) \
             ORDER BY h.seq DESC LIMIT $5",))
        .bind(&q.id)
        .bind(&q.waba)
        .bind(&q.field)
        .bind(q.since.map(rfc3339))
        .bind(q.limit.map_or(i64::MAX, i64::from))
        .fetch_all(ex).await)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::{Severity, verdict};
    use crate::model::{CanSendMessage, PhoneStatus, QualityRating, field};

    /// What the rule table says of current values, as the page and `status` rank them.
    fn expected(values: &[(&str, &str)]) -> Rank {
        values
            .iter()
            .filter_map(|(f, v)| verdict(f, None, v))
            .map(|v| match v.severity {
                Severity::Critical => Rank::Critical,
                Severity::Warning => Rank::Warning,
                Severity::Improving | Severity::Resolved => Rank::Ok,
            })
            .max()
            .unwrap_or(Rank::Ok)
    }

    #[tokio::test]
    async fn the_sql_rank_is_the_rule_tables_for_every_known_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("m.db")).await.expect("open");
        let t = "2026-01-01T00:00:00.000Z";
        // One number per known value of each field (the others healthy), one gone, one with
        // a value Meta may add tomorrow.
        let mut numbers: Vec<(String, [&str; 3], bool)> = Vec::new();
        for q in QualityRating::KNOWN {
            numbers.push((format!("q{q}"), [q, "CONNECTED", "AVAILABLE"], true));
        }
        for s in PhoneStatus::KNOWN {
            numbers.push((format!("s{s}"), ["GREEN", s, "AVAILABLE"], true));
        }
        for h in CanSendMessage::KNOWN {
            numbers.push((format!("h{h}"), ["GREEN", "CONNECTED", h], true));
        }
        numbers.push(("gone".into(), ["RED", "BANNED", "BLOCKED"], false));
        numbers.push(("new".into(), ["PURPLE", "SOMETHING_NEW", "MAYBE"], true));
        for (id, [q, s, h], present) in &numbers {
            db!(store.pool(), (ex, d) => sqlx::query(d.sql("INSERT INTO phone_numbers (id, source, waba_id, quality_rating, status, health, \
                 present, first_seen_at, last_polled_at, last_changed_at) \
                 VALUES ($1, $2, 'w1', $3, $4, $5, $6, $7, $7, $7)",))
            .bind(id)
            .bind(if id.starts_with('h') { "bsp" } else { "main" })
            .bind(q)
            .bind(s)
            .bind(h)
            .bind(present)
            .bind(t)
            .execute(ex).await.map(|r| r.rows_affected()))
            .expect("insert");
        }
        let mut wabas: Vec<(String, [String; 3])> = Vec::new();
        for r in REVIEW_VALUES {
            wabas.push((
                format!("r{r}"),
                [r.to_string(), "verified".into(), "AVAILABLE".into()],
            ));
        }
        for v in VERIFICATION_VALUES {
            // Meta's spelling varies in case: the rule table compares lower case.
            wabas.push((
                format!("v{v}"),
                ["APPROVED".into(), v.to_uppercase(), "AVAILABLE".into()],
            ));
        }
        for (id, [r, v, h]) in &wabas {
            db!(store.pool(), (ex, d) => sqlx::query(d.sql("INSERT INTO wabas (id, source, business_id, account_review_status, \
                 business_verification_status, health, first_seen_at, last_polled_at, \
                 last_changed_at) VALUES ($1, 'main', 'b1', $2, $3, $4, $5, $5, $5)",))
            .bind(id)
            .bind(r)
            .bind(v)
            .bind(h)
            .bind(t)
            .execute(ex).await.map(|r| r.rows_affected()))
            .expect("insert");
        }

        let all = store
            .status_view(&StatusFilter::default(), 1, false)
            .await
            .expect("status");
        assert_eq!(
            all.targets_in_database as usize,
            numbers.len() + wabas.len()
        );
        for r in &all.numbers {
            let e = &r.entry;
            let want = if e.present {
                expected(&[
                    (
                        field::QUALITY_RATING,
                        e.quality_rating.as_deref().unwrap_or(""),
                    ),
                    (field::STATUS, e.status.as_deref().unwrap_or("")),
                    (field::HEALTH, e.health.as_deref().unwrap_or("")),
                ])
            } else {
                Rank::Gone
            };
            assert_eq!(r.rank, want, "{}", e.id);
        }
        for r in &all.wabas {
            let e = &r.entry;
            let want = expected(&[
                (
                    field::ACCOUNT_REVIEW_STATUS,
                    e.account_review_status.as_deref().unwrap_or(""),
                ),
                (
                    field::BUSINESS_VERIFICATION_STATUS,
                    e.business_verification_status.as_deref().unwrap_or(""),
                ),
                (field::HEALTH, e.health.as_deref().unwrap_or("")),
            ]);
            assert_eq!(r.rank, want, "{}", e.id);
        }
        // Worst first, and the rule table's spot checks.
        let ranks: Vec<Rank> = all.numbers.iter().map(|r| r.rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
        let rank_of = |id: &str| {
            all.numbers
                .iter()
                .find(|r| r.entry.id == id)
                .map(|r| r.rank)
        };
        assert_eq!(rank_of("qRED"), Some(Rank::Critical));
        assert_eq!(rank_of("sBANNED"), Some(Rank::Critical));
        assert_eq!(rank_of("hBLOCKED"), Some(Rank::Critical));
        assert_eq!(rank_of("qYELLOW"), Some(Rank::Warning));
        assert_eq!(rank_of("new"), Some(Rank::Ok));
        assert_eq!(rank_of("gone"), Some(Rank::Gone));
        let waba_rank = |id: &str| all.wabas.iter().find(|r| r.entry.id == id).map(|r| r.rank);
        assert_eq!(waba_rank("rREJECTED"), Some(Rank::Critical));
        assert_eq!(waba_rank("vrevoked"), Some(Rank::Warning));

        // --problems: critical and warnings only, nothing gone; filters combine.
        let problems = store
            .status_view(
                &StatusFilter {
                    problems: true,
                    ..StatusFilter::default()
                },
                1,
                false,
            )
            .await
            .expect("status");
        assert!(!problems.numbers.is_empty() && !problems.wabas.is_empty());
        assert!(
            problems
                .numbers
                .iter()
                .chain(&problems.wabas)
                .all(|r| r.rank >= Rank::Warning)
        );
        let bsp = store
            .status_view(
                &StatusFilter {
                    source: Some("bsp".into()),
                    problems: true,
                    ..StatusFilter::default()
                },
                1,
                false,
            )
            .await
            .expect("status");
        let ids: Vec<&str> = bsp.numbers.iter().map(|r| r.entry.id.as_str()).collect();
        assert_eq!(ids, ["hBLOCKED", "hLIMITED"]);
        assert!(bsp.wabas.is_empty());
        let business = store
            .status_view(
                &StatusFilter {
                    business: Some("b1".into()),
                    waba: Some("w1".into()),
                    ..StatusFilter::default()
                },
                1,
                false,
            )
            .await
            .expect("status");
        // w1 is no WABA row of b1 (the numbers point at an unknown WABA): nothing of b1 is w1.
        assert!(business.numbers.is_empty() && business.wabas.is_empty());
        store.close().await;
    }
}
