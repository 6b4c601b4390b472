//! Read side of the store: current status and history, for the CLI (and later the HTTP API).

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

#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
}

fn effective_limit(business: &Option<String>, tier: &Option<String>) -> Option<String> {
    business.clone().or_else(|| tier.clone())
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
        let wabas: Vec<WabaRow> = sqlx::query_as("SELECT * FROM wabas ORDER BY present DESC, id")
            .fetch_all(self.pool())
            .await?;
        let phones: Vec<PhoneRow> = sqlx::query_as(
            "SELECT * FROM phone_numbers ORDER BY present DESC, waba_id, display_phone_number, id",
        )
        .fetch_all(self.pool())
        .await?;
        // The start of the `stale_after`-th latest finished poll of each source: a target last
        // read before it was missed by that many polls in a row.
        let latest: std::collections::HashMap<String, String> =
            sqlx::query_as::<_, (String, String)>(
                "SELECT source, started_at FROM (SELECT source, started_at, \
             ROW_NUMBER() OVER (PARTITION BY source ORDER BY id DESC) AS rn \
             FROM poll_runs WHERE outcome != 'running') WHERE rn = ?1",
            )
            .bind(i64::from(stale_after.max(1)))
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .collect();
        let stale = |source: &str, polled: &str| {
            latest
                .get(source)
                .is_some_and(|started| polled < started.as_str())
        };
        let by_id: std::collections::HashMap<&str, &WabaRow> =
            wabas.iter().map(|w| (w.id.as_str(), w)).collect();
        let waba_name = |id: &Option<String>| {
            id.as_deref()
                .and_then(|id| by_id.get(id))
                .and_then(|w| w.name.clone())
        };
        let waba_limit = |id: &Option<String>| {
            id.as_deref()
                .and_then(|id| by_id.get(id))
                .and_then(|w| w.business_messaging_limit.clone())
        };
        let mut out = Vec::with_capacity(wabas.len() + phones.len());
        for w in &wabas {
            out.push(StatusEntry {
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
                health_entities: w
                    .health_entities
                    .as_deref()
                    .filter(|_| health_detail)
                    .and_then(|j| serde_json::from_str(j).ok()),
                name_status: None,
                account_review_status: w.account_review_status.clone(),
                business_verification_status: w.business_verification_status.clone(),
                throughput: None,
                present: w.present,
                stale: w.present && stale(&w.source, &w.last_polled_at),
                source_created_at: w.source_created_at.clone(),
                source_updated_at: w.source_updated_at.clone(),
                first_seen_at: w.first_seen_at.clone(),
                last_polled_at: w.last_polled_at.clone(),
                last_changed_at: w.last_changed_at.clone(),
            });
        }
        for p in &phones {
            // A number's own portfolio limit wins; on API versions before v24 only the WABA
            // may carry it, so fall back to the WABA's, then to the deprecated tier.
            let business_limit = p
                .business_messaging_limit
                .clone()
                .or_else(|| waba_limit(&p.waba_id));
            out.push(StatusEntry {
                kind: "phone_number",
                id: p.id.clone(),
                source: p.source.clone(),
                waba_id: p.waba_id.clone(),
                business_id: None,
                display_phone_number: p.display_phone_number.clone(),
                verified_name: p.verified_name.clone(),
                name: waba_name(&p.waba_id),
                quality_rating: p.quality_rating.clone(),
                status: p.status.clone(),
                messaging_limit: effective_limit(&business_limit, &p.messaging_limit_tier),
                messaging_limit_tier: p.messaging_limit_tier.clone(),
                whatsapp_business_manager_messaging_limit: p.business_messaging_limit.clone(),
                health: p.health.clone(),
                health_entities: p
                    .health_entities
                    .as_deref()
                    .filter(|_| health_detail)
                    .and_then(|j| serde_json::from_str(j).ok()),
                name_status: p.name_status.clone(),
                account_review_status: None,
                business_verification_status: None,
                throughput: p.throughput.clone(),
                present: p.present,
                stale: p.present && stale(&p.source, &p.last_polled_at),
                source_created_at: p.source_created_at.clone(),
                source_updated_at: p.source_updated_at.clone(),
                first_seen_at: p.first_seen_at.clone(),
                last_polled_at: p.last_polled_at.clone(),
                last_changed_at: p.last_changed_at.clone(),
            });
        }
        Ok(out)
    }

    /// Changes, newest first.
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query_as::<_, HistoryEntry>(
            "SELECT seq, target_id AS id, kind, field, old, new, observed_at FROM history \
             WHERE (?1 IS NULL OR target_id = ?1) AND (?2 IS NULL OR observed_at >= ?2) \
             ORDER BY seq DESC LIMIT ?3",
        )
        .bind(&f.id)
        .bind(f.since.map(rfc3339))
        .bind(f.limit.map_or(-1, i64::from))
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// How many history rows exist (for tests and the benchmark).
    pub async fn history_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM history")
            .fetch_one(self.pool())
            .await?)
    }

    /// Emails waiting for the SMTP server: how many, and when the oldest was queued.
    pub async fn outbox_pending(&self) -> Result<(i64, Option<String>), StoreError> {
        Ok(
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Whether the database answers (for readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }

    /// One number's state, if known.
    pub async fn phone(
        &self,
        id: &str,
        stale_after: u32,
    ) -> Result<Option<StatusEntry>, StoreError> {
        Ok(self
            .status_with(true, stale_after)
            .await?
            .into_iter()
            .find(|e| e.kind == "phone_number" && e.id == id))
    }

    /// Deletes at most `batch` rows older than `before` from the history and, with them, old
    /// poll records, digested alerts and finished outbox rows. Small batches in short
    /// transactions, so pruning never holds the write lock long. Returns rows deleted.
    pub async fn prune_batch(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        let cutoff = rfc3339(before);
        let mut deleted = 0;
        for sql in [
            "DELETE FROM history WHERE seq IN (SELECT seq FROM history WHERE observed_at < ?1 ORDER BY seq LIMIT ?2)",
            "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE digested = 1 AND created_at < ?1 ORDER BY id LIMIT ?2)",
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state != 'pending' AND created_at < ?1 ORDER BY id LIMIT ?2)",
            // Poll records are referenced by history rows; delete only unreferenced ones.
            "DELETE FROM poll_runs WHERE id IN (SELECT id FROM poll_runs WHERE started_at < ?1 \
             AND outcome != 'running' AND NOT EXISTS (SELECT 1 FROM history h WHERE h.poll_run_id = poll_runs.id) \
             ORDER BY id LIMIT ?2)",
        ] {
            let mut tx = self.begin_write().await?;
            let r = sqlx::query(sql)
                .bind(&cutoff)
                .bind(i64::from(batch))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            deleted += r.rows_affected();
        }
        Ok(deleted)
    }

    /// Writes a consistent copy of the database to `dest` (`VACUUM INTO`), while the daemon
    /// may keep running.
    pub async fn backup(&self, dest: &std::path::Path) -> Result<(), StoreError> {
        sqlx::query("VACUUM INTO ?1")
            .bind(dest.to_string_lossy().into_owned())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// `PRAGMA integrity_check` (tests, and after an unclean stop).
    pub async fn integrity_ok(&self) -> Result<bool, StoreError> {
        let r: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(self.pool())
            .await?;
        Ok(r == "ok")
    }

    /// The latest poll runs, newest first.
    pub async fn recent_runs(&self, limit: u32) -> Result<Vec<PollRun>, StoreError> {
        Ok(
            sqlx::query_as::<_, PollRun>("SELECT * FROM poll_runs ORDER BY id DESC LIMIT ?1")
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await?,
        )
    }
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
