//! What the status page reads (`/`, `/numbers/{id}`, `/wabas/{id}`): the fleet in one snapshot
//! with only the columns the page shows, a WABA with its numbers, the values a field took over
//! a window (the chart), the emails sent about a target and the silences in force. Everything
//! here reads through the read-only pool of the status API, never the cycle's connections.

use super::db::{db, tx};
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::queries::{is_stale, sources_of, stale_from_in};
use super::silences::{Matchers, Silence};
use super::{Store, StoreError};
use crate::timefmt::rfc3339;

/// One number as the fleet page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNumber {
    pub id: String,
    pub source: String,
    pub waba_id: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub quality_rating: Option<String>,
    pub status: Option<String>,
    /// The effective limit: the number's portfolio limit, else its WABA's, else the
    /// deprecated per-number tier (as the status API computes it).
    pub messaging_limit: Option<String>,
    pub health: Option<String>,
    pub present: bool,
    /// Not read by its source's latest `stale_after` polls: the state shown is the last known.
    pub stale: bool,
    /// When a tracked field last changed: the start of the current state.
    pub last_changed_at: String,
}

/// One WABA as the fleet page groups numbers under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetWaba {
    pub id: String,
    pub source: String,
    pub business_id: Option<String>,
    pub name: Option<String>,
    pub account_review_status: Option<String>,
    pub business_verification_status: Option<String>,
    pub messaging_limit: Option<String>,
    pub health: Option<String>,
    pub present: bool,
    pub stale: bool,
    pub first_seen_at: String,
    pub last_polled_at: String,
    pub last_changed_at: String,
}

/// The whole fleet, read in one snapshot, and the silences in force or pending.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub wabas: Vec<FleetWaba>,
    pub numbers: Vec<FleetNumber>,
    pub silences: Vec<Silence>,
}

/// A WABA's page: the WABA, its health entities (Meta's JSON as stored), its numbers.
#[derive(Debug, Clone)]
pub struct WabaDetail {
    pub waba: FleetWaba,
    pub health_entities: Option<String>,
    pub numbers: Vec<FleetNumber>,
}

/// The values one field of a target took over a window: the value when the window began (the
/// last change before it, if any), then each change inside it, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSeries {
    pub before: Option<String>,
    /// (observed_at, old value, new value).
    pub changes: Vec<(String, Option<String>, Option<String>)>,
}

/// One email of the outbox about a target.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SentEmail {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    /// pending, sent, failed, abandoned.
    pub state: String,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Read by name (`FromRow`) for one WABA, or positionally from a JSON array (`Deserialize`,
/// in field order) for the whole fleet.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct NumberRow {
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
    present: bool,
    last_polled_at: String,
    last_changed_at: String,
}

#[derive(sqlx::FromRow, serde::Deserialize)]
struct WabaSqlRow {
    id: String,
    source: String,
    business_id: Option<String>,
    name: Option<String>,
    account_review_status: Option<String>,
    business_verification_status: Option<String>,
    business_messaging_limit: Option<String>,
    health: Option<String>,
    health_entities: Option<String>,
    present: bool,
    first_seen_at: String,
    last_polled_at: String,
    last_changed_at: String,
}

#[derive(sqlx::FromRow)]
struct SilenceRow {
    id: i64,
    matchers: String,
    starts_at: String,
    ends_at: String,
    comment: String,
    author: String,
    created_at: String,
}

/// The columns of [`NumberRow`].
macro_rules! number_columns {
    () => {
        "SELECT id, source, waba_id, display_phone_number, verified_name, quality_rating, \
         status, messaging_limit_tier, business_messaging_limit, health, present, \
         last_polled_at, last_changed_at FROM phone_numbers"
    };
}

/// The columns of [`WabaSqlRow`].
macro_rules! waba_columns {
    () => {
        "SELECT id, source, business_id, name, account_review_status, \
         business_verification_status, business_messaging_limit, health, health_entities, \
         present, first_seen_at, last_polled_at, last_changed_at FROM wabas"
    };
}

/// The whole `phone_numbers` table as one JSON array of [`NumberRow`]s (in field order): SQLite
/// builds it in one step, where reading ten thousand rows one by one through the driver costs
/// several times as much.
const FLEET_NUMBERS_JSON: &str = "SELECT json_group_array(json_array(id, source, waba_id, \
     display_phone_number, verified_name, quality_rating, status, messaging_limit_tier, \
     business_messaging_limit, health, json(CASE present WHEN 0 THEN 'false' ELSE 'true' END), \
     last_polled_at, last_changed_at)) FROM phone_numbers";

/// The whole `wabas` table as one JSON array of [`WabaSqlRow`]s (in field order).
const FLEET_WABAS_JSON: &str = "SELECT json_group_array(json_array(id, source, business_id, \
     name, account_review_status, business_verification_status, business_messaging_limit, \
     health, health_entities, json(CASE present WHEN 0 THEN 'false' ELSE 'true' END), \
     first_seen_at, last_polled_at, last_changed_at)) FROM wabas";

pub(super) fn parse_rows<T: serde::de::DeserializeOwned>(json: &str) -> Result<Vec<T>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))
}

fn waba_of(w: WabaSqlRow, stale_from: &HashMap<String, String>) -> (FleetWaba, Option<String>) {
    let stale = w.present && is_stale(stale_from, &w.source, &w.last_polled_at);
    (
        FleetWaba {
            id: w.id,
            source: w.source,
            business_id: w.business_id,
            name: w.name,
            account_review_status: w.account_review_status,
            business_verification_status: w.business_verification_status,
            messaging_limit: w.business_messaging_limit,
            health: w.health,
            present: w.present,
            stale,
            first_seen_at: w.first_seen_at,
            last_polled_at: w.last_polled_at,
            last_changed_at: w.last_changed_at,
        },
        w.health_entities,
    )
}

fn number_of(
    p: NumberRow,
    waba_limit: Option<&str>,
    stale_from: &HashMap<String, String>,
) -> FleetNumber {
    let stale = p.present && is_stale(stale_from, &p.source, &p.last_polled_at);
    let messaging_limit = p
        .business_messaging_limit
        .or_else(|| waba_limit.map(str::to_owned))
        .or(p.messaging_limit_tier);
    FleetNumber {
        id: p.id,
        source: p.source,
        waba_id: p.waba_id,
        display_phone_number: p.display_phone_number,
        verified_name: p.verified_name,
        quality_rating: p.quality_rating,
        status: p.status,
        messaging_limit,
        health: p.health,
        present: p.present,
        stale,
        last_changed_at: p.last_changed_at,
    }
}

impl Store {
    /// Every WABA and every number with what the fleet page shows of them, and the silences
    /// active or pending at `now`, from one snapshot of the read-only pool.
    pub async fn fleet(&self, now: DateTime<Utc>, stale_after: u32) -> Result<Fleet, StoreError> {
        let mut tx = self.read_pool().begin().await?;
        let wabas: String = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql(FLEET_WABAS_JSON))
            .fetch_one(ex).await)?;
        let numbers: String = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql(FLEET_NUMBERS_JSON))
            .fetch_one(ex).await)?;
        let wabas: Vec<WabaSqlRow> = parse_rows(&wabas)?;
        let numbers: Vec<NumberRow> = parse_rows(&numbers)?;
        let sources = wabas
            .iter()
            .map(|w| w.source.as_str())
            .chain(numbers.iter().map(|n| n.source.as_str()));
        let stale = stale_from_in(&mut tx, &sources_of(sources), stale_after).await?;
        let silences = silences_in(&mut tx, now).await?;
        tx.commit().await?;
        let wabas: Vec<FleetWaba> = wabas.into_iter().map(|w| waba_of(w, &stale).0).collect();
        let limits: HashMap<&str, &str> = wabas
            .iter()
            .filter_map(|w| Some((w.id.as_str(), w.messaging_limit.as_deref()?)))
            .collect();
        let numbers = numbers
            .into_iter()
            .map(|p| {
                let limit = p.waba_id.as_deref().and_then(|w| limits.get(w).copied());
                number_of(p, limit, &stale)
            })
            .collect();
        Ok(Fleet {
            wabas,
            numbers,
            silences,
        })
    }

    /// One WABA, its health entities and its numbers; `None` when unknown.
    pub async fn waba_detail(
        &self,
        id: &str,
        stale_after: u32,
    ) -> Result<Option<WabaDetail>, StoreError> {
        let mut tx = self.read_pool().begin().await?;
        let Some(row): Option<WabaSqlRow> = tx!(tx, (ex, d) => sqlx::query_as(d.sql(concat!(waba_columns!(), " WHERE id = $1")))
                .bind(id)
                .fetch_optional(ex).await)?
        else {
            return Ok(None);
        };
        let numbers: Vec<NumberRow> = tx!(tx, (ex, d) => sqlx::query_as(d.sql(concat!(number_columns!(), " WHERE waba_id = $1")))
                .bind(id)
                .fetch_all(ex).await)?;
        let sources =
            std::iter::once(row.source.as_str()).chain(numbers.iter().map(|n| n.source.as_str()));
        let stale = stale_from_in(&mut tx, &sources_of(sources), stale_after).await?;
        tx.commit().await?;
        let (waba, health_entities) = waba_of(row, &stale);
        let numbers = numbers
            .into_iter()
            .map(|p| number_of(p, waba.messaging_limit.as_deref(), &stale))
            .collect();
        Ok(Some(WabaDetail {
            waba,
            health_entities,
            numbers,
        }))
    }

    /// One WABA as the fleet page shows it (a number's page names its WABA); `None` when
    /// unknown.
    pub async fn waba_summary(
        &self,
        id: &str,
        stale_after: u32,
    ) -> Result<Option<FleetWaba>, StoreError> {
        let mut tx = self.read_pool().begin().await?;
        let row: Option<WabaSqlRow> = tx!(tx, (ex, d) => sqlx::query_as(d.sql(concat!(waba_columns!(), " WHERE id = $1")))
            .bind(id)
            .fetch_optional(ex).await)?;
        let stale = match &row {
            Some(r) => stale_from_in(&mut tx, &[r.source.as_str()], stale_after).await?,
            None => HashMap::new(),
        };
        tx.commit().await?;
        Ok(row.map(|r| waba_of(r, &stale).0))
    }

    /// The silences active or pending at `now` (read-only pool).
    pub async fn open_silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        let mut conn = self.read_pool().begin().await?;
        silences_in(&mut conn, now).await
    }

    /// The values `field` of target `id` took from `since` on (the chart of a page).
    pub async fn field_series(
        &self,
        id: &str,
        field: &str,
        since: DateTime<Utc>,
    ) -> Result<FieldSeries, StoreError> {
        let since = rfc3339(since);
        let mut tx = self.read_pool().begin().await?;
        let before: Option<Option<String>> = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT new FROM history WHERE target_id = $1 AND field = $2 AND observed_at < $3 \
             ORDER BY seq DESC LIMIT 1",))
        .bind(id)
        .bind(field)
        .bind(&since)
        .fetch_optional(ex).await)?;
        let changes: Vec<(String, Option<String>, Option<String>)> = tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT observed_at, old, new FROM history WHERE target_id = $1 AND field = $2 \
             AND observed_at >= $3 ORDER BY seq",))
        .bind(id)
        .bind(field)
        .bind(&since)
        .fetch_all(ex).await)?;
        tx.commit().await?;
        Ok(FieldSeries {
            before: before.flatten(),
            changes,
        })
    }

    /// The newest `limit` emails queued about any of `ids` (a number; a WABA and its
    /// numbers), newest first. An outbox row names its targets only in its References header
    /// (`<target-{id}@domain>`, one per target of the digest), so that is what is matched.
    /// Webhook deliveries are left out: their recipient is a URL that may carry a key.
    pub async fn emails_about(
        &self,
        ids: &[&str],
        limit: u32,
    ) -> Result<Vec<SentEmail>, StoreError> {
        let needles: Vec<String> = ids.iter().map(|id| format!("<target-{id}@")).collect();
        Ok(
            db!(self.read_pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, recipient, subject, state, created_at, sent_at, attempts, last_error \
             FROM outbox WHERE channel = 'email' AND references_hdr IS NOT NULL AND EXISTS \
             (SELECT 1 FROM json_each($1) AS n WHERE instr(outbox.references_hdr, n.value) > 0) \
             ORDER BY id DESC LIMIT $2",))
        .bind(serde_json::to_string(&needles).unwrap_or_else(|_| "[]".to_owned()))
        .bind(i64::from(limit))
        .fetch_all(ex).await)?,
        )
    }
}

/// The silences active or pending at `now`.
async fn silences_in(
    conn: &mut super::Tx<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<Silence>, StoreError> {
    let at = rfc3339(now);
    let rows: Vec<SilenceRow> = tx!(conn, (ex, d) => sqlx::query_as(d.sql("SELECT id, matchers, starts_at, ends_at, comment, author, created_at FROM silences \
         WHERE expired_at IS NULL AND ends_at > $1 ORDER BY starts_at, id",))
    .bind(&at)
    .fetch_all(ex).await)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let state = if r.starts_at.as_str() > at.as_str() {
                "pending"
            } else {
                "active"
            };
            Silence {
                id: r.id,
                // A row this version wrote; an unreadable one matches nothing.
                matchers: serde_json::from_str::<Matchers>(&r.matchers).unwrap_or_default(),
                starts_at: r.starts_at,
                ends_at: r.ends_at,
                comment: r.comment,
                author: r.author,
                created_at: r.created_at,
                expired_at: None,
                expired_by: None,
                state: state.to_owned(),
            }
        })
        .collect())
}
