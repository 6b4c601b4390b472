//! The fields `/metrics` exports of every present target, read in pages of a few thousand
//! rows: the exporter builds its compact table from them without the whole fleet's rows in
//! memory at once. Each page crosses from SQLite as one JSON array (one value through the
//! driver, not one per row: at 100,000 numbers that is the difference between ~1.2 s and
//! a fraction of it).

use super::db::tx;
use super::page::parse_rows;
use super::queries::{is_stale, sources_of, stale_from_in};
use super::{Store, StoreError};

/// One present target's exported fields, lent to the callback of
/// [`Store::for_each_metric_target`] for one row at a time. Read from a JSON array in field
/// order.
#[derive(Debug, Default, serde::Deserialize)]
pub struct MetricTarget {
    /// `phone_number` or `waba`.
    pub kind: String,
    pub id: String,
    pub source: String,
    pub waba_id: Option<String>,
    pub business_id: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    /// The WABA's name (for a number: its WABA's).
    pub name: Option<String>,
    pub quality_rating: Option<String>,
    pub status: Option<String>,
    /// The effective limit: the number's portfolio-wide limit, else its WABA's, else the
    /// deprecated per-number tier (as `status` shows it).
    pub messaging_limit: Option<String>,
    pub health: Option<String>,
    pub account_review_status: Option<String>,
    pub business_verification_status: Option<String>,
    pub last_polled_at: String,
    pub last_changed_at: String,
    /// Not read by its source's latest `stale_after` polls.
    #[serde(skip)]
    pub stale: bool,
}

/// Rows per page.
const PAGE: i64 = 4_000;

/// One page of present WABAs after id `?1`, as a JSON array of [`MetricTarget`] arrays, and
/// the page's last id.
const WABAS: &str = "SELECT json_group_array(json_array('waba', id, source, id, business_id, \
     NULL, NULL, name, NULL, NULL, business_messaging_limit, health, account_review_status, \
     business_verification_status, last_polled_at, last_changed_at)), max(id) \
     FROM (SELECT * FROM wabas WHERE present AND id > $1 ORDER BY id LIMIT $2) AS page";

/// The same for numbers, with the WABA's name and the effective limit (the number's portfolio
/// limit, else its WABA's, else the deprecated tier: as `status` shows it).
const PHONES: &str = "SELECT json_group_array(json_array('phone_number', id, source, waba_id, \
     NULL, display_phone_number, verified_name, waba_name, quality_rating, status, \
     effective_limit, health, NULL, NULL, last_polled_at, last_changed_at)), max(id) \
     FROM (SELECT p.*, w.name AS waba_name, COALESCE(p.business_messaging_limit, \
     w.business_messaging_limit, p.messaging_limit_tier) AS effective_limit \
     FROM phone_numbers p LEFT JOIN wabas w ON w.id = p.waba_id \
     WHERE p.present AND p.id > $1 ORDER BY p.id LIMIT $2) AS page";

impl Store {
    /// Calls `f` with every present WABA, then every present number (each by id), one row at a
    /// time, from one read transaction (a consistent snapshot under WAL, never blocking the
    /// writer).
    pub async fn for_each_metric_target(
        &self,
        stale_after: u32,
        mut f: impl FnMut(&MetricTarget),
    ) -> Result<(), StoreError> {
        let mut tx = self.read_pool().begin().await?;
        let sources: Vec<String> = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT source FROM wabas WHERE present UNION SELECT source FROM phone_numbers WHERE present",))
        .fetch_all(ex).await)?;
        let stale_from = stale_from_in(
            &mut tx,
            &sources_of(sources.iter().map(String::as_str)),
            stale_after,
        )
        .await?;
        for sql in [WABAS, PHONES] {
            let mut after = String::new();
            loop {
                let (json, last): (String, Option<String>) = tx!(tx, (ex, d) => sqlx::query_as(d.sql(sql))
                    .bind(&after)
                    .bind(PAGE)
                    .fetch_one(ex).await)?;
                let rows: Vec<MetricTarget> = parse_rows(&json)?;
                for mut row in rows {
                    row.stale = is_stale(&stale_from, &row.source, &row.last_polled_at);
                    f(&row);
                }
                match last {
                    Some(last) => after = last,
                    None => break,
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use crate::model::{
        MessagingLimit, PhoneObservation, PhoneStatus, QualityRating, WabaObservation,
    };
    use crate::sources::SourcePoll;
    use crate::store::Store;

    #[tokio::test]
    async fn streams_present_targets_with_the_waba_name_the_effective_limit_and_staleness() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).await.unwrap();
        let mut seen = Vec::new();
        store
            .for_each_metric_target(2, |t| seen.push(t.id.clone()))
            .await
            .unwrap();
        assert!(seen.is_empty(), "an empty database streams nothing");

        let phone = |id: &str, limit: Option<MessagingLimit>| PhoneObservation {
            id: id.into(),
            waba_id: Some("200".into()),
            display_phone_number: Some("+1 555 0100".into()),
            quality_rating: Some(QualityRating::Red),
            status: Some(PhoneStatus::Connected),
            messaging_limit_tier: Some(MessagingLimit::parse("TIER_1K")),
            business_messaging_limit: limit,
            ..Default::default()
        };
        let poll = SourcePoll {
            source: "meta".into(),
            wabas: vec![WabaObservation {
                id: "200".into(),
                name: Some("Acme".into()),
                business_messaging_limit: Some(MessagingLimit::parse("TIER_10K")),
                ..Default::default()
            }],
            phones: vec![
                phone("301", None),
                phone("302", Some(MessagingLimit::parse("TIER_100K"))),
            ],
            ..Default::default()
        };
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let run = store.begin_run("meta", at).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        crate::store::apply_in(&mut tx, Some(run), &poll, at)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store
            .finish_run(run, "ok", Some(&poll), 0, None, at)
            .await
            .unwrap();

        let mut rows = Vec::new();
        store
            .for_each_metric_target(1, |t| {
                rows.push((
                    t.kind.clone(),
                    t.id.clone(),
                    t.name.clone(),
                    t.messaging_limit.clone(),
                    t.quality_rating.clone(),
                    t.stale,
                ))
            })
            .await
            .unwrap();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            rows,
            [
                (
                    "waba".into(),
                    "200".into(),
                    s("Acme"),
                    s("TIER_10K"),
                    None,
                    false
                ),
                (
                    "phone_number".into(),
                    "301".into(),
                    s("Acme"),
                    s("TIER_10K"),
                    s("RED"),
                    false
                ),
                (
                    "phone_number".into(),
                    "302".into(),
                    s("Acme"),
                    s("TIER_100K"),
                    s("RED"),
                    false
                ),
            ]
        );

        // A later finished poll that did not read them: stale after one missed poll.
        let later = at + chrono::Duration::minutes(5);
        let run = store.begin_run("meta", later).await.unwrap();
        store
            .finish_run(run, "failed", None, 0, None, later)
            .await
            .unwrap();
        let mut stale = Vec::new();
        store
            .for_each_metric_target(1, |t| stale.push(t.stale))
            .await
            .unwrap();
        assert_eq!(stale, [true, true, true]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_fleet_larger_than_a_page_is_read_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).await.unwrap();
        let n = super::PAGE as usize * 2 + 7;
        let poll = SourcePoll {
            source: "meta".into(),
            phones: (0..n)
                .map(|i| PhoneObservation {
                    id: format!("{}", 300_000 + i),
                    waba_id: Some("200".into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let mut tx = store.begin_write().await.unwrap();
        crate::store::apply_in(&mut tx, None, &poll, at)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut ids = Vec::new();
        store
            .for_each_metric_target(2, |t| ids.push(t.id.clone()))
            .await
            .unwrap();
        assert_eq!(ids.len(), n);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ordered, no repeats");
        assert_eq!(ids.first().map(String::as_str), Some("300000"));
        store.close().await;
    }
}
