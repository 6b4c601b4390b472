//! Webhook deliveries, stored raw (migration 0006): the receiver commits each signed delivery
//! here before it answers 200; a later processing step takes the unprocessed rows in order and
//! marks each with its outcome. The same delivery sent again (same body bytes, same SHA-256) is
//! stored once: the row counts its deliveries.

use super::db::{db, tx};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, Tx};
use crate::timefmt::rfc3339;

/// A signed delivery as received.
#[derive(Debug, Clone, Copy)]
pub struct NewWebhookEvent<'a> {
    pub received_at: DateTime<Utc>,
    /// The raw body, exactly the bytes the signature was verified over.
    pub body: &'a [u8],
    /// The first change's `field` as a bounded label (`other`, `unknown`), if any.
    pub field: Option<&'a str>,
    /// What the receiver made of it: `accepted`, `malformed` or `unknown_field`.
    pub receipt: &'a str,
}

/// What storing a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new row with this id.
    New(i64),
    /// The same body was already stored in this row (now counted once more).
    Duplicate(i64),
}

/// A stored delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookEvent {
    pub id: i64,
    pub received_at: String,
    pub body: Vec<u8>,
    pub body_sha256: String,
    pub field: Option<String>,
    pub receipt: String,
    pub deliveries: i64,
    pub processed_at: Option<String>,
    pub outcome: Option<String>,
}

/// The lowercase hex SHA-256 of `body`: the key deliveries are deduplicated on.
pub fn body_sha256(body: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(body);
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

impl Store {
    /// Commits a delivery (or counts a repeat of one already stored) before the receiver
    /// answers; [`Store::insert_webhook_events`] with one.
    pub async fn insert_webhook_event(
        &self,
        ev: &NewWebhookEvent<'_>,
    ) -> Result<Stored, StoreError> {
        let mut stored = self.insert_webhook_events(std::slice::from_ref(ev)).await?;
        stored
            .pop()
            .ok_or(StoreError::Sql(sqlx::Error::RowNotFound))
    }

    /// Commits deliveries (or counts repeats of ones already stored, including a repeat
    /// within `evs`) in **one** transaction, before the receiver answers any of them: the
    /// commit is synced to disk (`synchronous = FULL` for it), so a delivery Meta was told we
    /// have survives a power cut, not only a crash. One synced commit for many concurrent
    /// deliveries is what lets the receiver keep up with a burst (group commit). Either every
    /// delivery is stored or none is (and each gets the error).
    pub async fn insert_webhook_events(
        &self,
        evs: &[NewWebhookEvent<'_>],
    ) -> Result<Vec<Stored>, StoreError> {
        let rows: Result<Vec<(i64, i64)>, sqlx::Error> = match self.pool() {
            super::Pool::Lite(pool) => {
                use sqlx::Connection;
                let mut conn = pool.acquire().await?;
                sqlx::query("PRAGMA synchronous = FULL")
                    .execute(&mut *conn)
                    .await?;
                // An explicit transaction, so a commit that fails (a full disk) is an error
                // here: an `INSERT … RETURNING` read with `fetch_one` in autocommit hands back
                // its row before the commit and would miss that failure — and the receiver
                // would answer 200.
                let rows = async {
                    let mut tx = Tx::Lite(conn.begin_with("BEGIN IMMEDIATE").await?);
                    let rows = insert_events_in(&mut tx, evs).await?;
                    tx.commit().await?;
                    Ok(rows)
                }
                .await;
                // Back to the pool's setting whatever happened (a failure here only leaves
                // this connection syncing more than it needs to).
                let _ = sqlx::query("PRAGMA synchronous = NORMAL")
                    .execute(&mut *conn)
                    .await;
                rows
            }
            // PostgreSQL's commit is synced (`synchronous_commit` on, its default).
            super::Pool::Pg(_) => {
                let mut tx = self.begin_write().await?;
                match insert_events_in(&mut tx, evs).await {
                    Ok(rows) => tx.commit().await.map(|()| rows),
                    Err(e) => Err(e),
                }
            }
        };
        Ok(rows?
            .into_iter()
            .map(|(id, deliveries)| {
                if deliveries > 1 {
                    Stored::Duplicate(id)
                } else {
                    Stored::New(id)
                }
            })
            .collect())
    }

    /// Up to `limit` deliveries not processed yet, oldest first: what the processing step
    /// takes next.
    pub async fn unprocessed_webhook_events(
        &self,
        limit: i64,
    ) -> Result<Vec<WebhookEvent>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, received_at, body, body_sha256, field, receipt, deliveries, processed_at, outcome \
             FROM webhook_events WHERE processed_at IS NULL ORDER BY id LIMIT $1",))
        .bind(limit)
        .fetch_all(ex).await)?,
        )
    }

    /// Up to `limit` stored deliveries, processed or not, oldest first (for inspection and
    /// tests: what was received, as received).
    pub async fn webhook_events(&self, limit: i64) -> Result<Vec<WebhookEvent>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, received_at, body, body_sha256, field, receipt, deliveries, processed_at, outcome \
             FROM webhook_events ORDER BY id LIMIT $1",))
        .bind(limit)
        .fetch_all(ex).await)?,
        )
    }

    /// Marks a delivery processed with its outcome; false if it was already processed (or
    /// does not exist).
    pub async fn mark_webhook_event_processed(
        &self,
        id: i64,
        at: DateTime<Utc>,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let r = db!(self.pool(), (ex, d) => sqlx::query(d.sql("UPDATE webhook_events SET processed_at = $2, outcome = $3 WHERE id = $1 AND processed_at IS NULL",))
        .bind(id)
        .bind(rfc3339(at))
        .bind(outcome)
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(r == 1)
    }

    /// Stored deliveries (each counted once however often it was sent).
    pub async fn webhook_event_count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT COUNT(*) FROM webhook_events"))
            .fetch_one(ex).await)?;
        Ok(n)
    }
}

/// Stores each delivery (or counts it again), in the caller's transaction.
async fn insert_events_in(
    tx: &mut Tx<'_>,
    evs: &[NewWebhookEvent<'_>],
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let mut rows = Vec::with_capacity(evs.len());
    for ev in evs {
        let row = tx!(tx, (ex, d) => sqlx::query_as(d.sql("INSERT INTO webhook_events (received_at, body, body_sha256, field, receipt, last_received_at) \
             VALUES ($1, $2, $3, $4, $5, $1) \
             ON CONFLICT (body_sha256) DO UPDATE SET deliveries = webhook_events.deliveries + 1, last_received_at = excluded.last_received_at \
             RETURNING id, deliveries",))
        .bind(rfc3339(ev.received_at))
        .bind(ev.body)
        .bind(body_sha256(ev.body))
        .bind(ev.field)
        .bind(ev.receipt)
        .fetch_one(ex).await)?;
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedupe_key_is_the_hex_sha256_of_the_body() {
        assert_eq!(
            body_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn a_delivery_is_stored_once_and_listed_until_processed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("m.db")).await.expect("open");
        let now = Utc::now();
        let ev = NewWebhookEvent {
            received_at: now,
            body: b"{\"object\":\"whatsapp_business_account\"}",
            field: Some("unknown"),
            receipt: "malformed",
        };
        let first = store.insert_webhook_event(&ev).await.expect("insert");
        let Stored::New(id) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            store.insert_webhook_event(&ev).await.expect("again"),
            Stored::Duplicate(id)
        );
        assert_eq!(store.webhook_event_count().await.expect("count"), 1);
        let rows = store.unprocessed_webhook_events(10).await.expect("list");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].deliveries, 2);
        assert_eq!(rows[0].body, ev.body);
        assert!(
            store
                .mark_webhook_event_processed(id, now, "ignored")
                .await
                .expect("mark")
        );
        assert!(
            !store
                .mark_webhook_event_processed(id, now, "ignored")
                .await
                .expect("mark")
        );
        assert!(
            store
                .unprocessed_webhook_events(10)
                .await
                .expect("list")
                .is_empty()
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_batch_is_one_transaction_and_dedupes_within_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("m.db")).await.expect("open");
        let now = Utc::now();
        let ev = |body: &'static [u8]| NewWebhookEvent {
            received_at: now,
            body,
            field: Some("account_update"),
            receipt: "accepted",
        };
        let stored = store
            .insert_webhook_events(&[ev(b"{\"a\":1}"), ev(b"{\"b\":2}"), ev(b"{\"a\":1}")])
            .await
            .expect("insert");
        let (Stored::New(a), Stored::New(b)) = (stored[0], stored[1]) else {
            panic!("{stored:?}")
        };
        assert_ne!(a, b);
        assert_eq!(stored[2], Stored::Duplicate(a));
        assert_eq!(store.webhook_event_count().await.expect("count"), 2);

        // A batch that cannot be committed stores none of its deliveries (SQLite: another
        // handle holds the write lock past the busy timeout; PostgreSQL: the write lock's
        // wait is cut short by its lock timeout, the same 50 ms).
        let mut lock = store.begin_write().await.expect("lock");
        let other = Store::open_with(
            &dir.path().join("m.db"),
            std::time::Duration::from_millis(50),
        )
        .await
        .expect("second handle");
        assert!(
            other
                .insert_webhook_events(&[ev(b"{\"c\":3}"), ev(b"{\"d\":4}")])
                .await
                .is_err()
        );
        tx!(&mut lock, (ex, d) => sqlx::query(d.sql("SELECT 1")).execute(ex).await.map(|r| r.rows_affected()))
            .expect("still held");
        lock.rollback().await.expect("unlock");
        assert_eq!(store.webhook_event_count().await.expect("count"), 2);
        other.close().await;
        store.close().await;
    }

    #[tokio::test]
    async fn processed_deliveries_past_retention_and_meta_s_retry_window_are_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("m.db")).await.expect("open");
        let now = Utc::now();
        let ev = |body: &'static [u8], days: i64| NewWebhookEvent {
            received_at: now - chrono::Duration::days(days),
            body,
            field: Some("account_update"),
            receipt: "accepted",
        };
        let stored = store
            .insert_webhook_events(&[
                ev(b"old processed", 30),
                ev(b"old unprocessed", 30),
                ev(b"within meta's retries", 5),
                ev(b"new", 0),
            ])
            .await
            .expect("insert");
        for st in &stored {
            let Stored::New(id) = st else {
                panic!("{st:?}")
            };
            if *id != 2 {
                store
                    .mark_webhook_event_processed(*id, now, "processed")
                    .await
                    .expect("mark");
            }
        }
        // Retention of one day: the 5-day-old delivery is kept all the same, so a retry of it
        // within Meta's 7 days is still recognised as a repeat.
        store
            .prune_batch(now - chrono::Duration::days(1), 100)
            .await
            .expect("prune");
        let left: Vec<Vec<u8>> = store
            .webhook_events(10)
            .await
            .expect("list")
            .into_iter()
            .map(|e| e.body)
            .collect();
        assert_eq!(
            left,
            [
                b"old unprocessed".to_vec(),
                b"within meta's retries".to_vec(),
                b"new".to_vec()
            ]
        );
        store.close().await;
    }
}
