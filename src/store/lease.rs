//! The leader lease of a highly available pair (PostgreSQL): one row in `leader_lease`, held
//! until `expires_at` by the database server's clock, taken when free or expired, renewed by
//! its holder. A SQLite store has no pair: its one daemon always holds it.

use std::time::Duration;

use super::db::db;
use super::{Store, StoreError};

/// The lease every daemon of one database competes for.
pub const LEADER: &str = "leader";

/// A row when the lease `$1` is held by `$2` now, by the server's clock (`clock_timestamp()`,
/// not the transaction's start, which may be long before the write lock was granted): what a
/// fenced store's leader-only writes require ([`Store::fenced`]). A macro, for `concat!`.
macro_rules! lease_held {
    () => {
        "SELECT 1 FROM leader_lease WHERE name = $1 AND holder = $2 \
         AND expires_at > clock_timestamp()"
    };
}
pub(super) use lease_held;

/// Who holds a lease, as the database sees it now.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseHolder {
    pub holder: String,
    pub term: i64,
    /// Milliseconds until it lapses (negative: lapsed).
    pub expires_in_ms: i64,
}

impl Store {
    /// Takes the lease `name` for `holder` for `ttl` if it is free or lapsed, or renews it if
    /// `holder` has it. `Some(term)` when `holder` holds it now (the term grows at every change
    /// of holder), `None` when another does. SQLite: always `Some(1)`.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        if !self.dialect().is_postgres() {
            return Ok(Some(1));
        }
        Ok(db!(self.pool(), (ex, d) => sqlx::query_scalar(
            "INSERT INTO leader_lease (name, holder, term, acquired_at, renewed_at, expires_at) \
             VALUES ($1, $2, 1, now(), now(), now() + make_interval(secs => $3)) \
             ON CONFLICT (name) DO UPDATE SET \
               term = CASE WHEN leader_lease.holder = excluded.holder THEN leader_lease.term \
                      ELSE leader_lease.term + 1 END, \
               acquired_at = CASE WHEN leader_lease.holder = excluded.holder \
                      THEN leader_lease.acquired_at ELSE now() END, \
               holder = excluded.holder, renewed_at = now(), expires_at = excluded.expires_at \
             WHERE leader_lease.holder = excluded.holder OR leader_lease.expires_at < now() \
             RETURNING term",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_optional(ex)
        .await)?)
    }

    /// Gives the lease up at once if `holder` has it (a clean stop: a standby takes over at its
    /// next attempt instead of after the lease's time).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        if !self.dialect().is_postgres() {
            return Ok(());
        }
        db!(self.pool(), (ex, d) => sqlx::query(
            "UPDATE leader_lease SET expires_at = now() - interval '1 millisecond' \
             WHERE name = $1 AND holder = $2",
        )
        .bind(name)
        .bind(holder)
        .execute(ex)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Who holds the lease `name` now, if anyone ever took it (PostgreSQL only).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<LeaseHolder>, StoreError> {
        if !self.dialect().is_postgres() {
            return Ok(None);
        }
        Ok(db!(self.pool(), (ex, d) => sqlx::query_as(
            "SELECT holder, term, \
             CAST(EXTRACT(EPOCH FROM (expires_at - now())) * 1000 AS BIGINT) AS expires_in_ms \
             FROM leader_lease WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(ex)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_renewed_by_it_taken_over_once_lapsed_and_released() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("m.db")).await.expect("open");
        let ttl = Duration::from_millis(600);
        if !store.dialect().is_postgres() {
            // One SQLite daemon: it always leads, and there is no row to show.
            assert_eq!(store.try_lease(LEADER, "a", ttl).await.expect("a"), Some(1));
            assert_eq!(store.try_lease(LEADER, "b", ttl).await.expect("b"), Some(1));
            assert_eq!(store.lease_holder(LEADER).await.expect("holder"), None);
            return;
        }
        assert_eq!(store.try_lease(LEADER, "a", ttl).await.expect("a"), Some(1));
        assert_eq!(store.try_lease(LEADER, "b", ttl).await.expect("b"), None);
        assert_eq!(
            store.try_lease(LEADER, "a", ttl).await.expect("renew"),
            Some(1)
        );
        let h = store
            .lease_holder(LEADER)
            .await
            .expect("holder")
            .expect("row");
        assert_eq!((h.holder.as_str(), h.term), ("a", 1));
        assert!(h.expires_in_ms > 0 && h.expires_in_ms <= 600, "{h:?}");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            store.try_lease(LEADER, "b", ttl).await.expect("take"),
            Some(2)
        );
        assert_eq!(
            store.try_lease(LEADER, "a", ttl).await.expect("late a"),
            None
        );
        store.release_lease(LEADER, "a").await.expect("not a's");
        assert_eq!(
            store.try_lease(LEADER, "a", ttl).await.expect("still b's"),
            None
        );
        store.release_lease(LEADER, "b").await.expect("release");
        assert_eq!(
            store.try_lease(LEADER, "a", ttl).await.expect("freed"),
            Some(3)
        );
        store.close().await;
    }

    /// The error of a write that must have been refused.
    fn refusal<T>(r: Result<T, StoreError>) -> StoreError {
        match r {
            Ok(_) => panic!("not refused"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn a_fenced_store_writes_for_the_leader_only_while_its_holder_holds_the_lease() {
        let dir = tempfile::tempdir().expect("dir");
        let plain = Store::open(&dir.path().join("m.db")).await.expect("open");
        let store = plain.clone().fenced(LEADER, "a");
        let ttl = Duration::from_millis(600);
        if !store.dialect().is_postgres() {
            // One SQLite daemon always leads: fencing changes nothing.
            assert!(store.fence().is_none());
            store
                .begin_leader_write()
                .await
                .expect("tx")
                .commit()
                .await
                .expect("commit");
            return;
        }
        // Nobody holds it yet: refused, and nothing is left locked.
        let refused = refusal(store.begin_leader_write().await);
        assert!(refused.is_not_leader(), "{refused}");
        assert!(refusal(store.begin_attempt(1, chrono::Utc::now()).await).is_not_leader());
        // An unfenced store (the CLI's, a standby's own writes) is not concerned.
        plain
            .begin_leader_write()
            .await
            .expect("unfenced")
            .rollback()
            .await
            .expect("rollback");
        assert_eq!(store.try_lease(LEADER, "a", ttl).await.expect("a"), Some(1));
        store
            .begin_leader_write()
            .await
            .expect("a leads")
            .commit()
            .await
            .expect("commit");
        // No such row: not taken, but allowed.
        assert!(
            !store
                .begin_attempt(1, chrono::Utc::now())
                .await
                .expect("a leads")
        );
        // Lapsed and taken by b: a's leader-only writes are refused again.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(store.try_lease(LEADER, "b", ttl).await.expect("b"), Some(2));
        let refused = refusal(store.begin_leader_write().await);
        assert!(refused.is_not_leader(), "{refused}");
        assert!(
            refused
                .to_string()
                .contains("no longer holds the leader lease"),
            "{refused}"
        );
        assert!(refusal(store.begin_attempt(1, chrono::Utc::now()).await).is_not_leader());
        // The refusal rolled back: the write lock is free for the leader.
        let b = plain.fenced(LEADER, "b");
        b.begin_leader_write()
            .await
            .expect("b leads")
            .commit()
            .await
            .expect("commit");
        store.close().await;
    }
}
