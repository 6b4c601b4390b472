//! Accounts managed through the fleet API (migration 0010): numbers and whole WABAs added,
//! changed and removed by `POST`/`PUT`/`DELETE /api/accounts`, polled with the config's targets
//! every cycle. A per-account access token is kept sealed (XChaCha20-Poly1305 with
//! `[daemon] secret_key_file`, bound to the target id); the store never sees it in clear.
//!
//! Every write is audited (`managed_audit`: who, when, what) and leaves a history row of the
//! target (field [`FIELD`]: `api-added`, `api-updated`, `api-removed`), so `history --id`
//! shows it. A removed account keeps its row and its history; its number (or WABA and the
//! numbers read through it) is marked gone.

use super::db::{db, tx};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError, Tx};
use crate::model::field;
use crate::timefmt::rfc3339;

/// The history field of fleet API writes.
pub const FIELD: &str = "managed";
pub const ADDED: &str = "api-added";
pub const UPDATED: &str = "api-updated";
pub const REMOVED: &str = "api-removed";

/// What the key-check value seals, and its context.
pub const KEY_CHECK_PLAIN: &[u8] = b"waba-monitor secret_key_file check v1";
pub const KEY_CHECK_CONTEXT: &[u8] = b"secret_key_check";

/// `phone_number` or `waba`, as in `history.kind`.
pub const KIND_PHONE: &str = "phone_number";
pub const KIND_WABA: &str = "waba";

/// One account of the fleet API.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ManagedAccount {
    pub id: i64,
    /// [`KIND_PHONE`] or [`KIND_WABA`].
    pub kind: String,
    /// The phone-number id, or the WABA id of a whole WABA.
    pub target_id: String,
    pub waba_id: Option<String>,
    pub name: String,
    /// The `[[meta]]` source that polls it; `None`: the first one.
    pub source: Option<String>,
    /// The sealed access token (nonce, ciphertext, tag).
    pub token: Option<Vec<u8>>,
    /// Its first characters, for the masked display.
    pub token_hint: Option<String>,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub removed_at: Option<String>,
    pub removed_by: Option<String>,
}

impl ManagedAccount {
    /// `"EAAx…(masked)"`: never more than the stored hint.
    pub fn masked_token(&self) -> Option<String> {
        self.token.as_ref()?;
        Some(format!(
            "{}…(masked)",
            self.token_hint.as_deref().unwrap_or_default()
        ))
    }
}

/// A new account, as the API validated it.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    pub kind: &'static str,
    pub target_id: &'a str,
    pub waba_id: Option<&'a str>,
    pub name: &'a str,
    pub source: Option<&'a str>,
    /// Sealed token and its hint.
    pub token: Option<(Vec<u8>, Option<String>)>,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Already managed through the API.
    ManagedByApi,
    /// Already watched through the config (a source lists it now).
    WatchedBy(String),
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub kind: String,
    pub target_id: String,
    pub detail: Option<String>,
}

async fn audit_in(
    tx: &mut Tx<'_>,
    now: &str,
    actor: &str,
    action: &str,
    kind: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO managed_audit (at, actor, action, kind, target_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",))
    .bind(now)
    .bind(actor)
    .bind(action)
    .bind(kind)
    .bind(target)
    .bind(detail)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

async fn history_in(
    tx: &mut Tx<'_>,
    kind: &str,
    target: &str,
    field: &str,
    old: Option<&str>,
    new: &str,
    now: &str,
) -> Result<(), StoreError> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO history (kind, target_id, field, old, new, observed_at, poll_run_id) \
         VALUES ($1, $2, $3, $4, $5, $6, NULL)",))
    .bind(kind)
    .bind(target)
    .bind(field)
    .bind(old)
    .bind(new)
    .bind(now)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The last `managed` value of a target (its previous fleet API write).
async fn last_managed_in(tx: &mut Tx<'_>, target: &str) -> Result<Option<String>, StoreError> {
    Ok(tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT new FROM history WHERE target_id = $1 AND field = $2 ORDER BY seq DESC LIMIT 1",))
    .bind(target)
    .bind(FIELD)
    .fetch_optional(ex).await)?
    .flatten())
}

async fn active_in(tx: &mut Tx<'_>, target: &str) -> Result<Option<ManagedAccount>, StoreError> {
    Ok(
        tx!(tx, (ex, d) => sqlx::query_as(d.sql("SELECT * FROM managed_accounts WHERE target_id = $1 AND removed_at IS NULL",))
        .bind(target)
        .fetch_optional(ex).await)?,
    )
}

/// Stores the key-check value once (with the first sealed token).
async fn key_check_in(tx: &mut Tx<'_>, sealed: &[u8], now: &str) -> Result<(), StoreError> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO secret_key_check (id, sealed, created_at) VALUES (1, $1, $2) \
         ON CONFLICT DO NOTHING",))
    .bind(sealed)
    .bind(now)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

impl Store {
    /// Adds an account, in one transaction with its audit row, its history row and (with its
    /// first sealed token) the key-check value. Refused when the target is already managed
    /// through the API or watched now by a source (present in the database and not the
    /// API's).
    pub async fn add_managed(
        &self,
        new: &NewAccount<'_>,
        key_check: Option<&[u8]>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<ManagedAccount, Refused>, StoreError> {
        let now = rfc3339(now);
        let mut tx = self.begin_write().await?;
        if active_in(&mut tx, new.target_id).await?.is_some() {
            return Ok(Err(Refused::ManagedByApi));
        }
        let watched: Option<String> = if new.kind == KIND_PHONE {
            tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT source FROM phone_numbers WHERE id = $1 AND present = TRUE"))
                .bind(new.target_id)
                .fetch_optional(ex).await)?
        } else {
            tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT source FROM wabas WHERE id = $1 AND present = TRUE"))
                .bind(new.target_id)
                .fetch_optional(ex).await)?
        };
        if let Some(source) = watched {
            return Ok(Err(Refused::WatchedBy(source)));
        }
        let (sealed, hint) = match &new.token {
            Some((s, h)) => (Some(s.as_slice()), h.as_deref()),
            None => (None, None),
        };
        tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO managed_accounts (kind, target_id, waba_id, name, source, token, \
             token_hint, created_at, created_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8)",))
        .bind(new.kind)
        .bind(new.target_id)
        .bind(new.waba_id)
        .bind(new.name)
        .bind(new.source)
        .bind(sealed)
        .bind(hint)
        .bind(&now)
        .bind(actor)
        .execute(ex).await.map(|r| r.rows_affected()))?;
        if sealed.is_some()
            && let Some(check) = key_check
        {
            key_check_in(&mut tx, check, &now).await?;
        }
        let detail = format!(
            "name {:?}{}{}{}",
            new.name,
            new.waba_id
                .map(|w| format!(", WABA {w}"))
                .unwrap_or_default(),
            new.source
                .map(|s| format!(", source {s}"))
                .unwrap_or_default(),
            if sealed.is_some() {
                ", with its own access token"
            } else {
                ""
            }
        );
        audit_in(
            &mut tx,
            &now,
            actor,
            "add",
            new.kind,
            new.target_id,
            &detail,
        )
        .await?;
        let old = last_managed_in(&mut tx, new.target_id).await?;
        history_in(
            &mut tx,
            new.kind,
            new.target_id,
            FIELD,
            old.as_deref(),
            ADDED,
            &now,
        )
        .await?;
        let row = active_in(&mut tx, new.target_id)
            .await?
            .ok_or(StoreError::Sql(sqlx::Error::RowNotFound))?;
        tx.commit().await?;
        Ok(Ok(row))
    }

    /// Changes an account's name and/or token; `None` when no active account has this id.
    pub async fn update_managed(
        &self,
        target: &str,
        name: Option<&str>,
        token: Option<(Vec<u8>, Option<String>)>,
        key_check: Option<&[u8]>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ManagedAccount>, StoreError> {
        let now = rfc3339(now);
        let mut tx = self.begin_write().await?;
        let Some(row) = active_in(&mut tx, target).await? else {
            return Ok(None);
        };
        let mut what = Vec::new();
        if let Some(n) = name {
            tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE managed_accounts SET name = $2, updated_at = $3 WHERE id = $1"))
                .bind(row.id)
                .bind(n)
                .bind(&now)
                .execute(ex).await.map(|r| r.rows_affected()))?;
            what.push(format!("name {:?} -> {n:?}", row.name));
        }
        if let Some((sealed, hint)) = &token {
            tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE managed_accounts SET token = $2, token_hint = $3, updated_at = $4 WHERE id = $1",))
            .bind(row.id)
            .bind(sealed.as_slice())
            .bind(hint.as_deref())
            .bind(&now)
            .execute(ex).await.map(|r| r.rows_affected()))?;
            if let Some(check) = key_check {
                key_check_in(&mut tx, check, &now).await?;
            }
            what.push(if row.token.is_some() {
                "access token replaced".to_owned()
            } else {
                "access token set".to_owned()
            });
        }
        if what.is_empty() {
            what.push("nothing changed".to_owned());
        }
        audit_in(
            &mut tx,
            &now,
            actor,
            "update",
            &row.kind,
            target,
            &what.join("; "),
        )
        .await?;
        let old = last_managed_in(&mut tx, target).await?;
        history_in(
            &mut tx,
            &row.kind,
            target,
            FIELD,
            old.as_deref(),
            UPDATED,
            &now,
        )
        .await?;
        let row = active_in(&mut tx, target).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Removes an account: no longer polled; its number (or WABA, and the numbers read
    /// through it by the same source) is marked gone, with a history row for each; the rows
    /// and their history stay. `false` when no active account has this id.
    pub async fn remove_managed(
        &self,
        target: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let now = rfc3339(now);
        let mut tx = self.begin_write().await?;
        let Some(row) = active_in(&mut tx, target).await? else {
            return Ok(false);
        };
        tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE managed_accounts SET removed_at = $2, removed_by = $3, token = NULL, updated_at = $2 WHERE id = $1"))
            .bind(row.id)
            .bind(&now)
            .bind(actor)
            .execute(ex).await.map(|r| r.rows_affected()))?;
        let mut gone: Vec<(&str, String)> = Vec::new();
        if row.kind == KIND_WABA {
            let present: Option<String> = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT source FROM wabas WHERE id = $1 AND present = TRUE"))
                    .bind(target)
                    .fetch_optional(ex).await)?;
            if let Some(source) = present {
                gone.push((KIND_WABA, target.to_owned()));
                let numbers: Vec<String> = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT id FROM phone_numbers WHERE waba_id = $1 AND present = TRUE AND source = $2 \
                     AND id NOT IN (SELECT target_id FROM managed_accounts WHERE removed_at IS NULL)",))
                .bind(target)
                .bind(&source)
                .fetch_all(ex).await)?;
                gone.extend(numbers.into_iter().map(|n| (KIND_PHONE, n)));
            }
        } else {
            let present: Option<String> = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT id FROM phone_numbers WHERE id = $1 AND present = TRUE"))
                    .bind(target)
                    .fetch_optional(ex).await)?;
            gone.extend(present.map(|p| (KIND_PHONE, p)));
        }
        for (kind, id) in &gone {
            let sql = if *kind == KIND_WABA {
                "UPDATE wabas SET present = FALSE, last_changed_at = $2 WHERE id = $1"
            } else {
                "UPDATE phone_numbers SET present = FALSE, last_changed_at = $2 WHERE id = $1"
            };
            tx!(tx, (ex, d) => sqlx::query(d.sql(sql))
                .bind(id)
                .bind(&now)
                .execute(ex).await.map(|r| r.rows_affected()))?;
            history_in(
                &mut tx,
                kind,
                id,
                field::PRESENCE,
                Some(field::PRESENT),
                field::GONE,
                &now,
            )
            .await?;
        }
        let detail = format!(
            "no longer polled; {} target(s) marked gone, history kept",
            gone.len()
        );
        audit_in(&mut tx, &now, actor, "remove", &row.kind, target, &detail).await?;
        let old = last_managed_in(&mut tx, target).await?;
        history_in(
            &mut tx,
            &row.kind,
            target,
            FIELD,
            old.as_deref(),
            REMOVED,
            &now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The active accounts, for a poll cycle (write pool).
    pub async fn managed_accounts(&self) -> Result<Vec<ManagedAccount>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT * FROM managed_accounts WHERE removed_at IS NULL ORDER BY id"))
                .fetch_all(ex).await)?,
        )
    }

    /// Every account row, active and removed, for the status API (read pool; without the
    /// sealed tokens' bytes beyond whether there is one).
    pub async fn managed_accounts_read(&self) -> Result<Vec<ManagedAccount>, StoreError> {
        Ok(
            db!(self.read_pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, kind, target_id, waba_id, name, source, \
             CASE WHEN token IS NULL THEN NULL ELSE substr(token, 1, 1) END AS token, token_hint, created_at, \
             created_by, updated_at, removed_at, removed_by FROM managed_accounts ORDER BY id",))
        .fetch_all(ex).await)?,
        )
    }

    /// Active API numbers not read by any poll yet (not in `phone_numbers`), oldest first: the
    /// `pending` accounts the list shows after the polled ones.
    pub async fn managed_unpolled(&self) -> Result<Vec<ManagedAccount>, StoreError> {
        Ok(
            db!(self.read_pool(), (ex, d) => sqlx::query_as(d.sql("SELECT id, kind, target_id, waba_id, name, source, \
             CASE WHEN token IS NULL THEN NULL ELSE substr(token, 1, 1) END AS token, token_hint, created_at, \
             created_by, updated_at, removed_at, removed_by FROM managed_accounts m \
             WHERE removed_at IS NULL AND kind = 'phone_number' \
             AND NOT EXISTS (SELECT 1 FROM phone_numbers p WHERE p.id = m.target_id) ORDER BY id",))
        .fetch_all(ex).await)?,
        )
    }

    /// The audit of the fleet API, newest first (one target, or all).
    pub async fn managed_audit(&self, target: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(
            db!(self.pool(), (ex, d) => sqlx::query_as(d.sql("SELECT * FROM managed_audit WHERE ($1 IS NULL OR target_id = $1) ORDER BY id DESC",))
        .bind(target)
        .fetch_all(ex).await)?,
        )
    }
}

/// The key-check value of the configured database, read with a connection and a runtime of its
/// own on a thread of its own: a runtime is built by synchronous code, inside or outside an
/// async runtime. `None` when the database does not exist yet or holds no sealed token.
pub fn key_check_blocking(
    database: &crate::config::Database,
) -> Result<Option<Vec<u8>>, StoreError> {
    if let crate::config::Database::Sqlite(path) = database
        && !path.exists()
    {
        return Ok(None);
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Access(format!("could not start a runtime: {e}")))?;
            rt.block_on(async move {
                match database {
                    crate::config::Database::Sqlite(path) => key_check_sqlite(path).await,
                    crate::config::Database::Postgres { .. } => {
                        let store = Store::connect(database).await?;
                        let sealed: Option<Vec<u8>> = db!(store.pool(), (ex, d) => sqlx::query_scalar(
                            "SELECT sealed FROM secret_key_check WHERE id = 1"
                        )
                        .fetch_optional(ex)
                        .await)?;
                        store.close().await;
                        Ok(sealed)
                    }
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err(StoreError::Access("the key check panicked".into())))
    })
}

/// The key-check value of a SQLite file, read-only (a file from before the table reads `None`).
async fn key_check_sqlite(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Store::BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let has_table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'secret_key_check'",
    )
    .fetch_optional(&mut conn)
    .await?;
    let sealed: Option<Vec<u8>> = if has_table.is_some() {
        sqlx::query_scalar("SELECT sealed FROM secret_key_check WHERE id = 1")
            .fetch_optional(&mut conn)
            .await?
    } else {
        None
    };
    let _ = sqlx::Connection::close(conn).await;
    Ok(sealed)
}
