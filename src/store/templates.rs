//! Message templates (migration 0008): the latest state of every template of the monitored
//! WABAs, merged from polls (inside the cycle's transaction, by [`super::apply_in`]) and from
//! template webhooks (by the processing step, in the delivery's transaction).
//!
//! Tracked fields — `status`, `quality_score`, `category`, and `presence` when a template
//! leaves or comes back to its WABA's complete listing — yield a [`Change`] (and a history row,
//! `kind = "template"`) when they change; name, language and the rest describe the template.
//! An unchanged poll writes no history and no row: each row keeps a fingerprint of the last
//! observation merged into it, and a poll's templates are compared by fingerprint, the whole
//! fleet in one statement; only those that differ are read and merged. A template listing that failed part-way changes
//! nothing it did not read, and never marks a template gone. A webhook older than the state
//! already known (`state_time`: when a poll last changed it, or the newest applied webhook's
//! event time) never moves it backwards.

use super::db::{db, tx};
use std::collections::HashMap;

use super::{StoreError, Tx};
use crate::model::{Change, TargetKind, TemplateObservation, field, template_field};
use crate::sources::SourcePoll;

/// Templates read from the database per statement while a poll is merged.
const CHUNK: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct TemplateRow {
    pub id: String,
    pub source: String,
    pub waba_id: String,
    pub name: Option<String>,
    pub language: Option<String>,
    pub status: Option<String>,
    pub quality: Option<String>,
    pub category: Option<String>,
    pub rejected_reason: Option<String>,
    pub previous_category: Option<String>,
    pub present: bool,
    pub state_time: i64,
    pub obs_hash: Option<i64>,
    pub first_seen_at: String,
    /// The last poll that wrote the row (first saw it, or changed it).
    pub last_polled_at: String,
    pub last_changed_at: String,
}

impl TemplateRow {
    fn new(o: &TemplateObservation, source: &str, now: &str, state_time: i64) -> TemplateRow {
        TemplateRow {
            id: o.id.clone(),
            source: source.to_owned(),
            waba_id: o.waba_id.clone(),
            name: None,
            language: None,
            status: None,
            quality: None,
            category: None,
            rejected_reason: None,
            previous_category: None,
            present: true,
            state_time,
            obs_hash: None,
            first_seen_at: now.to_owned(),
            last_polled_at: now.to_owned(),
            last_changed_at: now.to_owned(),
        }
    }

    /// Merges an observation: a reported value that differs from the stored one is a change
    /// (a first sighting reports each known field with no old value); a `None` never
    /// overwrites. A template back in its listing is a presence change.
    fn merge(&mut self, o: &TemplateObservation, now: &str) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut track = |name: &str, slot: &mut Option<String>, new: &Option<String>| {
            if let Some(new) = new
                && slot.as_deref() != Some(new.as_str())
            {
                changes.push(Change {
                    kind: TargetKind::Template,
                    target_id: o.id.clone(),
                    field: name.to_owned(),
                    old: slot.clone(),
                    new: Some(new.clone()),
                    previous_since: None,
                });
                *slot = Some(new.clone());
            }
        };
        if !self.present {
            let mut presence = Some(field::GONE.to_owned());
            track(
                template_field::PRESENCE,
                &mut presence,
                &Some(field::PRESENT.to_owned()),
            );
            self.present = true;
        }
        track(template_field::STATUS, &mut self.status, &o.status);
        track(template_field::QUALITY, &mut self.quality, &o.quality);
        track(template_field::CATEGORY, &mut self.category, &o.category);
        for (slot, new) in [
            (&mut self.name, &o.name),
            (&mut self.language, &o.language),
            (&mut self.rejected_reason, &o.rejected_reason),
            (&mut self.previous_category, &o.previous_category),
        ] {
            if new.is_some() {
                slot.clone_from(new);
            }
        }
        if !o.waba_id.is_empty() {
            self.waba_id.clone_from(&o.waba_id);
        }
        if !changes.is_empty() {
            self.last_changed_at = now.to_owned();
        }
        changes
    }
}

/// The ids as the JSON array `json_each` reads (through the store's one `json_list`).
fn list_of<'a>(items: impl Iterator<Item = &'a str>) -> String {
    super::json_list(&items.collect::<Vec<_>>())
}

/// FNV-1a (64 bits) of what a poll observed of a template, and the source that observed it:
/// stable across runs and versions (it is stored).
fn fingerprint(source: &str, t: &TemplateObservation) -> i64 {
    let mut h = super::Fnv::new();
    let mut eat = |s: Option<&str>| {
        // A field boundary, and `None` distinct from `Some("")`.
        h.eat(s.map_or(&[0xff_u8][..], str::as_bytes));
        h.eat(&[0x1f]);
    };
    for f in [
        Some(source),
        Some(t.waba_id.as_str()),
        t.name.as_deref(),
        t.language.as_deref(),
        t.status.as_deref(),
        t.quality.as_deref(),
        t.category.as_deref(),
        t.rejected_reason.as_deref(),
        t.previous_category.as_deref(),
    ] {
        eat(f);
    }
    h.finish()
}

async fn upsert(tx: &mut Tx<'_>, r: &TemplateRow) -> Result<(), sqlx::Error> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO templates (id, source, waba_id, name, language, status, quality, \
         category, rejected_reason, previous_category, present, state_time, first_seen_at, \
         last_polled_at, last_changed_at, obs_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (id) DO UPDATE SET source = excluded.source, waba_id = excluded.waba_id, name = excluded.name, language = excluded.language, status = excluded.status, quality = excluded.quality, category = excluded.category, rejected_reason = excluded.rejected_reason, previous_category = excluded.previous_category, present = excluded.present, state_time = excluded.state_time, first_seen_at = excluded.first_seen_at, last_polled_at = excluded.last_polled_at, last_changed_at = excluded.last_changed_at, obs_hash = excluded.obs_hash",))
    .bind(&r.id)
    .bind(&r.source)
    .bind(&r.waba_id)
    .bind(&r.name)
    .bind(&r.language)
    .bind(&r.status)
    .bind(&r.quality)
    .bind(&r.category)
    .bind(&r.rejected_reason)
    .bind(&r.previous_category)
    .bind(r.present)
    .bind(r.state_time)
    .bind(&r.first_seen_at)
    .bind(&r.last_polled_at)
    .bind(&r.last_changed_at)
    .bind(r.obs_hash)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Merges a poll's templates in the cycle's transaction at `now` (`now_unix` the same instant
/// in seconds) and returns their changes (the caller writes their history). Templates missing
/// from a complete listing of their WABA are recorded gone.
pub(super) async fn apply_polled_in(
    tx: &mut Tx<'_>,
    poll: &SourcePoll,
    now: &str,
    now_unix: i64,
) -> Result<Vec<Change>, StoreError> {
    // An unchanged template is not written at all (a fleet's 20,000 templates would otherwise
    // rewrite 20,000 rows every cycle): `last_polled_at` is the last poll that wrote it.
    let mut changes = Vec::new();
    // The fingerprints of the last observations merged, for the WABAs read, in one string
    // (one row crosses from SQLite, not one per template): a template whose observation has
    // the same fingerprint is unchanged and costs nothing more.
    let wabas: std::collections::BTreeSet<&str> =
        poll.templates.iter().map(|t| t.waba_id.as_str()).collect();
    let known: Option<String> = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT group_concat(id || ' ' || obs_hash, ' ') FROM templates \
         WHERE present = TRUE AND obs_hash IS NOT NULL \
         AND waba_id IN (SELECT value FROM json_each($1))",))
    .bind(list_of(wabas.iter().copied()))
    .fetch_one(ex).await)?;
    let known: HashMap<&str, i64> = known
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .collect::<Vec<_>>()
        .chunks_exact(2)
        .filter_map(|p| Some((p[0], p[1].parse().ok()?)))
        .collect();
    let differing: Vec<(&TemplateObservation, i64)> = poll
        .templates
        .iter()
        .map(|t| (t, fingerprint(&poll.source, t)))
        .filter(|(t, h)| known.get(t.id.as_str()) != Some(h))
        .collect();
    for chunk in differing.chunks(CHUNK) {
        let mut rows: HashMap<String, TemplateRow> = tx!(tx, (ex, d) => sqlx::query_as::<_, TemplateRow>(d.sql("SELECT * FROM templates WHERE id IN (SELECT value FROM json_each($1))",))
        .bind(list_of(chunk.iter().map(|(t, _)| t.id.as_str())))
        .fetch_all(ex).await)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
        for (obs, hash) in chunk {
            let existing = rows.remove(&obs.id);
            let is_new = existing.is_none();
            let mut row =
                existing.unwrap_or_else(|| TemplateRow::new(obs, &poll.source, now, now_unix));
            let found = row.merge(obs, now);
            row.source.clone_from(&poll.source);
            // The time of the state is when a poll last *changed* it: an unchanged read does
            // not push it forward, so a webhook about a change Meta's API did not show yet
            // (its event older than this read) still applies.
            if is_new || !found.is_empty() {
                row.state_time = now_unix;
            }
            row.obs_hash = Some(*hash);
            row.last_polled_at = now.to_owned();
            upsert(tx, &row).await?;
            changes.extend(found);
        }
    }
    // Gone from a listing read to its end.
    if !poll.complete_template_wabas.is_empty() {
        let missing: Vec<TemplateRow> = tx!(tx, (ex, d) => sqlx::query_as::<_, TemplateRow>(d.sql("SELECT * FROM templates WHERE present = TRUE \
             AND waba_id IN (SELECT value FROM json_each($1)) \
             AND id NOT IN (SELECT value FROM json_each($2))",))
        .bind(list_of(
            poll.complete_template_wabas.iter().map(String::as_str),
        ))
        .bind(list_of(poll.templates.iter().map(|t| t.id.as_str())))
        .fetch_all(ex).await)?;
        for mut row in missing {
            row.present = false;
            row.state_time = now_unix;
            row.last_polled_at = now.to_owned();
            row.last_changed_at = now.to_owned();
            upsert(tx, &row).await?;
            changes.push(Change {
                kind: TargetKind::Template,
                target_id: row.id,
                field: template_field::PRESENCE.to_owned(),
                old: Some(field::PRESENT.to_owned()),
                new: Some(field::GONE.to_owned()),
                previous_since: None,
            });
        }
    }
    Ok(changes)
}

/// Applies what a template webhook says (`obs` carries only the fields it states) as of
/// `event_time` (unix seconds), at `now` (RFC 3339), in the delivery's transaction: nothing
/// when the stored state is newer; otherwise the changes, each written to the history here.
/// A template not known yet is recorded from the event (`source` "webhook").
pub async fn apply_event_in(
    tx: &mut Tx<'_>,
    obs: &TemplateObservation,
    event_time: i64,
    now: &str,
) -> Result<Vec<Change>, StoreError> {
    let existing: Option<TemplateRow> = tx!(tx, (ex, d) => sqlx::query_as::<_, TemplateRow>(d.sql("SELECT * FROM templates WHERE id = $1"))
            .bind(&obs.id)
            .fetch_optional(ex).await)?;
    if existing.as_ref().is_some_and(|r| r.state_time > event_time) {
        return Ok(Vec::new());
    }
    let mut row = existing.unwrap_or_else(|| TemplateRow::new(obs, "webhook", now, event_time));
    let mut changes = row.merge(obs, now);
    row.state_time = event_time;
    // The next poll compares its observation with the row again, field by field.
    row.obs_hash = None;
    upsert(tx, &row).await?;
    for c in &mut changes {
        if c.old.is_some() {
            c.previous_since = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT observed_at FROM history WHERE target_id = $1 AND field = $2 \
                 ORDER BY seq DESC LIMIT 1",))
            .bind(&c.target_id)
            .bind(&c.field)
            .fetch_optional(ex).await)?;
        }
        tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO history (kind, target_id, field, old, new, observed_at, poll_run_id) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",))
        .bind(c.kind.as_str())
        .bind(&c.target_id)
        .bind(&c.field)
        .bind(&c.old)
        .bind(&c.new)
        .bind(now)
        .execute(ex).await.map(|r| r.rows_affected()))?;
    }
    Ok(changes)
}

/// How many times a template went to PAUSED before, by the history (which pause this is,
/// when Meta's webhook did not say).
pub async fn pauses_before_in(tx: &mut Tx<'_>, template_id: &str) -> Result<i64, StoreError> {
    Ok(
        tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT COUNT(*) FROM history WHERE kind = 'template' AND target_id = $1 \
         AND field = 'status' AND new = 'PAUSED'",))
    .bind(template_id)
    .fetch_one(ex).await)?,
    )
}

/// What `/metrics` shows of templates: counts per WABA, and the templates that are not
/// healthy (not APPROVED, or scored YELLOW/RED), one series each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateMetrics {
    /// (waba_id, status, templates), present templates only.
    pub by_status: Vec<(String, String, i64)>,
    /// (waba_id, score, templates); no score is counted as `UNKNOWN`.
    pub by_quality: Vec<(String, String, i64)>,
    pub unhealthy: Vec<TemplateRow>,
}

/// The unhealthy-template filter, in SQL (see `TemplateObservation::is_healthy`).
macro_rules! unhealthy {
    () => {
        "present = TRUE AND (COALESCE(status, 'APPROVED') <> 'APPROVED' \
         OR COALESCE(quality, 'GREEN') NOT IN ('GREEN', 'UNKNOWN'))"
    };
}

impl super::Store {
    /// The template figures for `/metrics`.
    pub async fn template_metrics(&self) -> Result<TemplateMetrics, StoreError> {
        let mut conn = self.pool().begin().await?;
        let by_status = tx!(conn, (ex, d) => sqlx::query_as(d.sql("SELECT waba_id, COALESCE(status, 'UNKNOWN'), COUNT(*) FROM templates \
             WHERE present = TRUE GROUP BY 1, 2 ORDER BY 1, 2",))
        .fetch_all(ex).await)?;
        let by_quality = tx!(conn, (ex, d) => sqlx::query_as(d.sql("SELECT waba_id, COALESCE(quality, 'UNKNOWN'), COUNT(*) FROM templates \
             WHERE present = TRUE GROUP BY 1, 2 ORDER BY 1, 2",))
        .fetch_all(ex).await)?;
        let unhealthy = tx!(conn, (ex, d) => sqlx::query_as(d.sql(concat!(
            "SELECT * FROM templates WHERE ",
            unhealthy!(),
            " ORDER BY waba_id, name, language, id"
        )))
        .fetch_all(ex).await)?;
        Ok(TemplateMetrics {
            by_status,
            by_quality,
            unhealthy,
        })
    }

    /// Templates, of one WABA or all, present ones first; `problems_only` keeps the unhealthy
    /// ones (`status` and the status API).
    pub async fn templates(
        &self,
        waba_id: Option<&str>,
        problems_only: bool,
    ) -> Result<Vec<TemplateRow>, StoreError> {
        Ok(
            db!(self.read_pool(), (ex, d) => sqlx::query_as(d.sql(concat!(
            "SELECT * FROM templates WHERE ($1 IS NULL OR waba_id = $1) AND (NOT $2 OR (",
            unhealthy!(),
            ")) ORDER BY present DESC, waba_id, name, language, id"
        )))
        .bind(waba_id)
        .bind(problems_only)
        .fetch_all(ex).await)?,
        )
    }
}
