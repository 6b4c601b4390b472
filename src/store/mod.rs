//! The SQLite store: current state of every target, the history of every change, and a record
//! of every poll.
//!
//! Invariants kept here:
//! - one history row per real change: a field that did not change, or that the source did not
//!   report (`None`), writes nothing;
//! - a number is recorded as gone only when its WABA's listing was complete in this poll;
//! - everything one poll changes is written in one `BEGIN IMMEDIATE` transaction, so a crash
//!   leaves either all of it or none of it, and a restart diffs against what was committed.

pub mod accounts;
pub mod alertmanager;
pub mod alerts;
#[cfg(test)]
mod apply_tests;
pub(crate) mod db;
pub mod facts;
pub mod lease;
mod merge;
mod metric_rows;
pub mod outbox;
pub mod page;
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
pub mod pg_testing;
mod queries;
pub mod silences;
pub mod templates;
pub mod webhooks;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use crate::model::Change;
pub use db::{Dialect, Pool, Tx};
use db::{db, tx};
pub use merge::{PhoneRow, WabaRow};
pub use metric_rows::MetricTarget;
pub use queries::{
    HistoryEntry, HistoryFilter, HistoryQuery, NamedHistoryEntry, Page, PollRun, Rank, Ranked,
    StatusEntry, StatusFilter, StatusView,
};

use crate::model::PhoneObservation;
use crate::sources::SourcePoll;
use crate::timefmt::rfc3339;

/// Observations merged per database round trip in `apply`.
const APPLY_CHUNK: usize = 500;

/// History rows per INSERT statement (one JSON array through the driver instead of one
/// statement per row: at 750,000 rows, seconds instead of half a minute).
const HISTORY_BATCH: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    /// The file or its folder cannot be used by this user, said in words before SQLite's
    /// "unable to open database file" would.
    #[error("{0}")]
    Access(String),
    #[error("could not apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A leader-only write of a pair's instance that no longer holds the leader lease.
    #[error(
        "this instance no longer holds the leader lease (another instance leads): nothing was written"
    )]
    NotLeader,
}

impl StoreError {
    /// Every connection of the pool stayed busy for the whole wait: try again later.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Sql(sqlx::Error::PoolTimedOut))
    }

    /// A leader-only write refused because the lease passed to another instance.
    pub fn is_not_leader(&self) -> bool {
        matches!(self, StoreError::NotLeader)
    }
}

/// What applying one poll did.
#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    /// The changes the alert planner must see. A first sighting's values that can neither
    /// raise nor close an alert (a new number that is GREEN, CONNECTED, ... with no alert open
    /// on it) are written to the history but not kept here: see `quiet_changes`.
    pub changes: Vec<Change>,
    /// History rows written for first sightings and left out of `changes` (at 100,000 new
    /// numbers, 750,000 of them: held, they were most of a first cycle's memory).
    pub quiet_changes: usize,
    /// Targets seen for the first time.
    pub new_targets: usize,
    /// Targets recorded as gone.
    pub gone: usize,
    /// Targets whose state was read and found unchanged.
    pub unchanged: usize,
    /// Targets this source reported but a higher-priority source owns (Meta over a BSP):
    /// ignored, so the history never flaps between two views.
    pub shadowed: usize,
}

/// Whether a row followed by another, higher-priority source that still lists it must ignore
/// this poll's view. A target gone from its owner's listing can be taken over.
fn outranked(owner: &str, owner_priority: i64, present: bool, poll: &SourcePoll) -> bool {
    present && owner != poll.source && owner_priority > i64::from(poll.priority)
}

/// The database, through three pools so that readers never take the connections the poll
/// cycle needs (WAL lets readers run beside the writer):
/// - `pool`: writes and everything of the poll cycle, delivery, pruning and the CLI;
/// - `reads`: read-only connections for the status API, whose callers may be many;
/// - `probes`: one read-only connection for `/readyz` and `/metrics`, so a burst of API
///   readers never delays a health check or a scrape (and a burst of scrapes never touches
///   the cycle's connections).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    reads: Pool,
    probes: Pool,
    /// The lease a pair's instance must hold for its leader-only writes: see [`Store::fenced`].
    fence: Option<Arc<Fence>>,
}

/// Which lease, held by whom, a leader-only write requires.
#[derive(Debug)]
struct Fence {
    name: String,
    holder: String,
}

impl Store {
    /// How long a write waits for another process's lock before it fails.
    pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
    /// Connections of the write pool (the cycle, delivery, pruning).
    pub const WRITE_CONNECTIONS: u32 = 4;
    /// Read-only connections for the status API.
    pub const READ_CONNECTIONS: u32 = 2;
    /// How long an API read waits for a free read connection before it answers "busy".
    pub const READ_WAIT: Duration = Duration::from_secs(5);

    /// Connections of a PostgreSQL pool for writes (the cycle, delivery, webhooks, pruning, the
    /// lease, the API's writes).
    pub const PG_WRITE_CONNECTIONS: u32 = 6;

    /// Opens (creating if missing) the database, in WAL mode, and applies the migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, Self::BUSY_TIMEOUT).await
    }

    /// Opens the configured database: [`Store::open`] for a file, [`Store::open_postgres`]
    /// for a URL (its password read from where the configuration says).
    pub async fn connect(database: &crate::config::Database) -> Result<Store, StoreError> {
        Self::connect_with(database, Self::BUSY_TIMEOUT).await
    }

    /// [`Store::connect`] with another wait for the write lock.
    pub async fn connect_with(
        database: &crate::config::Database,
        busy_timeout: Duration,
    ) -> Result<Store, StoreError> {
        match database {
            crate::config::Database::Sqlite(path) => Self::open_with(path, busy_timeout).await,
            crate::config::Database::Postgres { url, password } => {
                let password = match password {
                    Some(src) => Some(src.load().map_err(|e| {
                        StoreError::Access(format!(
                            "the database password ({}) could not be read: {e}",
                            src.describe()
                        ))
                    })?),
                    None => None,
                };
                Self::open_postgres_with(url, password.as_ref(), busy_timeout).await
            }
        }
    }

    /// Connects to a PostgreSQL database (`url` without its password, which comes apart) and
    /// applies its migrations. Reads share the server, so the read pools are pools of their own
    /// on the same database, opened when first used.
    pub async fn open_postgres(
        url: &str,
        password: Option<&secrecy::SecretString>,
    ) -> Result<Store, StoreError> {
        Self::open_postgres_with(url, password, Self::BUSY_TIMEOUT).await
    }

    /// [`Store::open_postgres`] with another wait for the write lock (`lock_timeout`, what
    /// SQLite's busy timeout is there).
    pub async fn open_postgres_with(
        url: &str,
        password: Option<&secrecy::SecretString>,
        lock_timeout: Duration,
    ) -> Result<Store, StoreError> {
        use secrecy::ExposeSecret;
        let shown = crate::redact::url_without_password(url);
        let open_err = |source: sqlx::Error| StoreError::Open {
            path: shown.clone(),
            source,
        };
        let mut opts = PgConnectOptions::from_str(url).map_err(open_err)?;
        if let Some(p) = password {
            opts = opts.password(p.expose_secret());
        }
        let lock_ms = lock_timeout.as_millis().to_string();
        // A transaction waits at most `lock_timeout` for the write lock, and none holds it
        // idle longer: the server ends the session of a process that froze (or lost its
        // network) inside a transaction, so its lock does not stop every other writer (a
        // pair's new leader) until TCP gives up on it hours later.
        opts = opts.application_name("waba-monitor").options([
            ("lock_timeout", lock_ms.as_str()),
            ("idle_in_transaction_session_timeout", lock_ms.as_str()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(Self::PG_WRITE_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let reads = PgPoolOptions::new()
            .max_connections(Self::READ_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(Self::READ_WAIT)
            .connect_lazy_with(opts.clone());
        let probes = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Self::READ_WAIT)
            .connect_lazy_with(opts);
        Ok(Store {
            pool: Pool::Pg(pool),
            reads: Pool::Pg(reads),
            probes: Pool::Pg(probes),
            fence: None,
        })
    }

    /// Which backend this store is on.
    pub fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }

    /// [`Store::open`] with another wait for locks (tests shorten it).
    pub async fn open_with(path: &Path, busy_timeout: Duration) -> Result<Store, StoreError> {
        #[cfg(test)]
        if let Some(url) = test_database_for(path) {
            return Self::open_postgres_with(&url, None, busy_timeout).await;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Creating the folder is what a first start needs; systemd's StateDirectory= does it
            // in production, this covers `demo` and hand-made configs.
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Err(StoreError::Access(format!(
                    "could not create the database folder {}: {e}; create it, writable by the daemon's user (under systemd, StateDirectory= does)",
                    dir.display()
                )));
            }
        }
        check_access(path)?;
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(Self::WRITE_CONNECTIONS)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // Readers open the file the writer created and migrated (WAL is a property of the
        // file), read-only, and only when first used: the CLI's commands never open them.
        let read_opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?
            .filename(path)
            .read_only(true)
            .busy_timeout(busy_timeout);
        let reads = SqlitePoolOptions::new()
            .max_connections(Self::READ_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(Self::READ_WAIT)
            .connect_lazy_with(read_opts.clone());
        let probes = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Self::READ_WAIT)
            .connect_lazy_with(read_opts);
        Ok(Store {
            pool: Pool::Lite(pool),
            reads: Pool::Lite(reads),
            probes: Pool::Lite(probes),
            fence: None,
        })
    }

    /// The write pool (the cycle, delivery, pruning, the CLI).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The read-only pool of the status API.
    pub fn read_pool(&self) -> &Pool {
        &self.reads
    }

    pub async fn close(&self) {
        self.reads.close().await;
        self.probes.close().await;
        self.pool.close().await;
    }

    /// Marks poll runs left `running` by a previous process (killed mid-cycle) as abandoned.
    pub async fn abandon_unfinished_runs(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = db!(&self.pool, (ex, d) => sqlx::query(d.sql("UPDATE poll_runs SET outcome = 'abandoned', finished_at = $1 WHERE outcome = 'running'",))
        .bind(rfc3339(now))
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(r)
    }

    /// Records the start of a source's poll; returns the run id.
    pub async fn begin_run(&self, source: &str, started: DateTime<Utc>) -> Result<i64, StoreError> {
        // `execute` runs the statement to its end, so a failed commit (a full disk) is an
        // error here; `INSERT … RETURNING` read with `fetch_one` got its row before the commit
        // and missed that failure.
        const INSERT: &str =
            "INSERT INTO poll_runs (source, started_at, outcome) VALUES ($1, $2, 'running')";
        Ok(match &self.pool {
            Pool::Lite(p) => sqlx::query(INSERT)
                .bind(source)
                .bind(rfc3339(started))
                .execute(p)
                .await?
                .last_insert_rowid(),
            // PostgreSQL reports a failed commit of the statement as its error either way.
            Pool::Pg(p) => {
                sqlx::query_scalar(
                    "INSERT INTO poll_runs (source, started_at, outcome) \
                     VALUES ($1, $2, 'running') RETURNING id",
                )
                .bind(source)
                .bind(rfc3339(started))
                .fetch_one(p)
                .await?
            }
        })
    }

    /// Records how a source's poll ended.
    pub async fn finish_run(
        &self,
        run_id: i64,
        outcome: &str,
        poll: Option<&SourcePoll>,
        changes: usize,
        error: Option<&str>,
        finished: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (calls, requests, wabas, numbers, failures) = poll.map_or((0, 0, 0, 0, 0), |p| {
            (
                p.calls as i64,
                p.requests as i64,
                p.wabas.len() as i64,
                p.phones.len() as i64,
                p.failures.len() as i64,
            )
        });
        db!(&self.pool, (ex, d) => sqlx::query(d.sql("UPDATE poll_runs SET finished_at = $2, outcome = $3, calls = $4, requests = $5, \
             wabas = $6, numbers = $7, failures = $8, changes = $9, error = $10 WHERE id = $1",))
        .bind(run_id)
        .bind(rfc3339(finished))
        .bind(outcome)
        .bind(calls)
        .bind(requests)
        .bind(wabas)
        .bind(numbers)
        .bind(failures)
        .bind(changes as i64)
        .bind(error)
        .execute(ex).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// A write transaction of what only the leader of a pair writes (a cycle, webhook
    /// processing, pruning, alert snapshots): [`Store::begin_write`], and on a fenced store
    /// ([`Store::fenced`]) the lease checked once the write lock is held, else
    /// [`StoreError::NotLeader`] and nothing written.
    pub async fn begin_leader_write(&self) -> Result<Tx<'static>, StoreError> {
        let mut tx = self.begin_write().await?;
        if let (Some(f), Tx::Pg(t)) = (&self.fence, &mut tx) {
            let held: Option<i32> = sqlx::query_scalar(lease::lease_held!())
                .bind(&f.name)
                .bind(&f.holder)
                .fetch_optional(&mut **t)
                .await?;
            if held.is_none() {
                tx.rollback().await?;
                return Err(StoreError::NotLeader);
            }
        }
        Ok(tx)
    }

    /// This store's leader-only writes ([`Store::begin_leader_write`], taking an outbox row
    /// to send) require that `holder` holds the lease `name` when they take the write lock:
    /// an instance of a pair whose cycle (or send) was still in flight when the lease passed
    /// to another writes nothing of it. Writers follow each other through the write lock, so
    /// whatever it wrote before came before the new leader's first write. No effect on SQLite.
    pub fn fenced(mut self, name: &str, holder: &str) -> Store {
        if self.dialect().is_postgres() {
            self.fence = Some(Arc::new(Fence {
                name: name.to_owned(),
                holder: holder.to_owned(),
            }));
        }
        self
    }

    /// The lease and holder this store's leader-only writes require (PostgreSQL, fenced).
    pub(crate) fn fence(&self) -> Option<(&str, &str)> {
        self.fence
            .as_deref()
            .map(|f| (f.name.as_str(), f.holder.as_str()))
    }

    /// Starts a write transaction. SQLite: `BEGIN IMMEDIATE` (it takes the write lock at once,
    /// so it never fails half-way with SQLITE_BUSY when it upgrades from reading to writing).
    /// PostgreSQL: a transaction that first takes the store's write lock (a transaction-level
    /// advisory lock), so that writers follow each other as they do on SQLite and every
    /// read-then-write of the store keeps the meaning it has there.
    pub async fn begin_write(&self) -> Result<Tx<'static>, StoreError> {
        Ok(match &self.pool {
            Pool::Lite(p) => Tx::Lite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Pg(p) => {
                let mut t = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(db::WRITE_LOCK)
                    .execute(&mut *t)
                    .await?;
                Tx::Pg(t)
            }
        })
    }
}

/// Diffs one poll against the stored state and writes the new state and one history row per
/// change, inside the caller's transaction. Returns the changes, each with when its previous
/// value began (for the alerts the poller plans from them).
pub async fn apply_in(
    tx: &mut Tx<'_>,
    run_id: Option<i64>,
    poll: &SourcePoll,
    observed_at: DateTime<Utc>,
) -> Result<ApplyReport, StoreError> {
    {
        let now = rfc3339(observed_at);
        let mut report = ApplyReport::default();

        // --- WABAs ---
        let observed_wabas: Vec<&str> = poll.wabas.iter().map(|w| w.id.as_str()).collect();
        let complete_businesses: Vec<&str> = poll
            .complete_businesses
            .iter()
            .map(String::as_str)
            .collect();
        let mut waba_rows: HashMap<String, WabaRow> = tx!(tx, (ex, d) => sqlx::query_as::<_, WabaRow>(d.sql("SELECT * FROM wabas WHERE id IN (SELECT value FROM json_each($1)) \
             OR (business_id IN (SELECT value FROM json_each($2)) AND present = TRUE) \
             OR ($4 AND source = $3 AND present = TRUE)",))
        .bind(json_list(&observed_wabas))
        .bind(json_list(&complete_businesses))
        .bind(&poll.source)
        .bind(poll.complete_source)
        .fetch_all(ex).await)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();

        // A first sighting's values go straight to the history in batches; only those that can
        // raise an alert (or close one already open on the target, say from a webhook) are kept
        // for the planner.
        let alerted: std::collections::HashSet<String> =
            tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT DISTINCT target_id FROM alert_state"))
                .fetch_all(ex).await)?
                .into_iter()
                .collect();
        let mut quiet: Vec<Change> = Vec::new();
        let mut touched_wabas = Vec::new();
        for obs in &poll.wabas {
            let existing = waba_rows.remove(&obs.id);
            if existing
                .as_ref()
                .is_some_and(|r| outranked(&r.source, r.source_priority, r.present, poll))
            {
                report.shadowed += 1;
                continue;
            }
            let is_new = existing.is_none();
            let mut row = existing.unwrap_or_else(|| WabaRow::new(&obs.id, &poll.source, &now));
            let before = row.clone();
            let changes = row.merge(obs, is_new, &now);
            row.source = poll.source.clone();
            row.source_priority = i64::from(poll.priority);
            if is_new {
                report.new_targets += 1;
            }
            if row != before || is_new {
                row.last_polled_at = now.clone();
                upsert_waba(tx, &row).await?;
            } else {
                touched_wabas.push(obs.id.as_str());
                report.unchanged += 1;
            }
            for c in changes {
                if is_new && is_quiet(&c, &alerted) {
                    quiet.push(c);
                } else {
                    report.changes.push(c);
                }
            }
        }
        // WABAs no longer listed by a business whose listing was complete.
        let mut gone_wabas = Vec::new();
        for (_, mut row) in waba_rows {
            let listed_by_complete = poll.complete_source
                || row
                    .business_id
                    .as_deref()
                    .is_some_and(|b| poll.complete_businesses.contains(b));
            if row.present && listed_by_complete && row.source == poll.source {
                report.changes.push(row.mark_gone(&now));
                report.gone += 1;
                upsert_waba(tx, &row).await?;
                gone_wabas.push(row.id.clone());
            }
        }

        // --- phone numbers ---
        // Read and merged in chunks, so a fleet of ten thousand numbers never has all its rows
        // in memory at once.
        let mut touched_phones = Vec::new();
        for chunk in poll.phones.chunks(APPLY_CHUNK) {
            // A number whose observation has the fingerprint stored for it (same source and
            // priority, present, not written by anything else since) is unchanged: its row is
            // neither read nor compared.
            let ids: Vec<&str> = chunk.iter().map(|p| p.id.as_str()).collect();
            let known: Option<String> = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT group_concat(id || char(31) || obs_hash, char(30)) FROM phone_numbers \
                 WHERE id IN (SELECT value FROM json_each($1)) AND present = TRUE \
                 AND source = $2 AND source_priority = $3 AND obs_hash IS NOT NULL",))
            .bind(json_list(&ids))
            .bind(&poll.source)
            .bind(i64::from(poll.priority))
            .fetch_one(ex).await)?;
            let known: HashMap<&str, i64> = known
                .as_deref()
                .unwrap_or("")
                .split('\u{1e}')
                .filter_map(|pair| {
                    let (id, hash) = pair.split_once('\u{1f}')?;
                    Some((id, hash.parse().ok()?))
                })
                .collect();
            let mut full: Vec<(&PhoneObservation, i64)> = Vec::new();
            for obs in chunk {
                let hash = phone_fingerprint(obs);
                if known.get(obs.id.as_str()) == Some(&hash) {
                    touched_phones.push(obs.id.as_str());
                    report.unchanged += 1;
                } else {
                    full.push((obs, hash));
                }
            }
            if full.is_empty() {
                continue;
            }
            let ids: Vec<&str> = full.iter().map(|(p, _)| p.id.as_str()).collect();
            let mut rows: HashMap<String, PhoneRow> = tx!(tx, (ex, d) => sqlx::query_as::<_, PhoneRow>(d.sql("SELECT * FROM phone_numbers WHERE id IN (SELECT value FROM json_each($1))",))
            .bind(json_list(&ids))
            .fetch_all(ex).await)?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
            for (obs, hash) in full {
                let existing = rows.remove(&obs.id);
                if existing
                    .as_ref()
                    .is_some_and(|r| outranked(&r.source, r.source_priority, r.present, poll))
                {
                    report.shadowed += 1;
                    continue;
                }
                let is_new = existing.is_none();
                let mut row =
                    existing.unwrap_or_else(|| PhoneRow::new(&obs.id, &poll.source, &now));
                let before = row.clone();
                let changes = row.merge(obs, is_new, &now);
                row.source.clone_from(&poll.source);
                row.source_priority = i64::from(poll.priority);
                if is_new {
                    report.new_targets += 1;
                }
                if row != before || is_new {
                    row.last_polled_at.clone_from(&now);
                    upsert_phone(tx, &row, Some(hash)).await?;
                } else {
                    // Unchanged but not fingerprinted yet (or written elsewhere since): once.
                    tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE phone_numbers SET obs_hash = $2 WHERE id = $1"))
                        .bind(&obs.id)
                        .bind(hash)
                        .execute(ex).await.map(|r| r.rows_affected()))?;
                    touched_phones.push(obs.id.as_str());
                    report.unchanged += 1;
                }
                for c in changes {
                    if is_new && is_quiet(&c, &alerted) {
                        quiet.push(c);
                    } else {
                        report.changes.push(c);
                    }
                }
                if quiet.len() >= HISTORY_BATCH {
                    report.quiet_changes += quiet.len();
                    insert_history(tx, &quiet, &now, run_id).await?;
                    quiet.clear();
                }
            }
        }
        // Numbers missing from a complete listing of their WABA (or on a WABA gone from its
        // portfolio).
        let mut listing_complete: Vec<&str> =
            poll.complete_wabas.iter().map(String::as_str).collect();
        listing_complete.extend(gone_wabas.iter().map(String::as_str));
        if !listing_complete.is_empty() {
            let observed: Vec<&str> = poll.phones.iter().map(|p| p.id.as_str()).collect();
            let missing: Vec<PhoneRow> = tx!(tx, (ex, d) => sqlx::query_as::<_, PhoneRow>(d.sql("SELECT * FROM phone_numbers WHERE present = TRUE AND source = $3 \
                 AND waba_id IN (SELECT value FROM json_each($1)) \
                 AND id NOT IN (SELECT value FROM json_each($2))",))
            .bind(json_list(&listing_complete))
            .bind(json_list(&observed))
            .bind(&poll.source)
            .fetch_all(ex).await)?;
            for mut row in missing {
                report.changes.push(row.mark_gone(&now));
                report.gone += 1;
                upsert_phone(tx, &row, None).await?;
            }
        }

        // Targets read but unchanged: one statement per table, not one per row.
        if !touched_wabas.is_empty() {
            tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE wabas SET last_polled_at = $1 WHERE id IN (SELECT value FROM json_each($2))",))
            .bind(&now)
            .bind(json_list(&touched_wabas))
            .execute(ex).await.map(|r| r.rows_affected()))?;
        }
        if !touched_phones.is_empty() {
            tx!(tx, (ex, d) => sqlx::query(d.sql("UPDATE phone_numbers SET last_polled_at = $1 WHERE id IN (SELECT value FROM json_each($2))",))
            .bind(&now)
            .bind(json_list(&touched_phones))
            .execute(ex).await.map(|r| r.rows_affected()))?;
        }

        // Message templates (only the WABAs whose templates this poll read).
        if !poll.templates.is_empty() || !poll.complete_template_wabas.is_empty() {
            let found = templates::apply_polled_in(tx, poll, &now, observed_at.timestamp()).await?;
            report.changes.extend(found);
        }

        // How long each previous value lasted: when its history row was written (read before
        // this cycle's rows go in).
        for c in report.changes.iter_mut().filter(|c| c.old.is_some()) {
            c.previous_since = tx!(tx, (ex, d) => sqlx::query_scalar(d.sql("SELECT observed_at FROM history WHERE target_id = $1 AND field = $2 \
                 ORDER BY seq DESC LIMIT 1",))
            .bind(&c.target_id)
            .bind(&c.field)
            .fetch_optional(ex).await)?;
        }

        report.quiet_changes += quiet.len();
        insert_history(tx, &quiet, &now, run_id).await?;
        insert_history(tx, &report.changes, &now, run_id).await?;
        Ok(report)
    }
}

/// FNV-1a (64 bits): the fingerprints the store keeps of observations (numbers, templates),
/// stable across runs and versions because they are stored. Fed bytes directly or through
/// `fmt::Write`, so a `Debug` form is hashed without being built.
pub(super) struct Fnv(u64);

impl Fnv {
    pub(super) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(super) fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(super) fn finish(&self) -> i64 {
        self.0 as i64
    }
}

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.eat(s.as_bytes());
        Ok(())
    }
}

/// The fingerprint of everything a poll observed of a number (its `Debug` form: every field,
/// `None` distinct from `Some("")`). A change of that form after an upgrade only makes the next
/// poll compare every number in full once.
fn phone_fingerprint(obs: &PhoneObservation) -> i64 {
    let mut h = Fnv::new();
    // Writing to the hasher cannot fail.
    let _ = std::fmt::Write::write_fmt(&mut h, format_args!("{obs:?}"));
    h.finish()
}

/// A first sighting's change the alert planner would do nothing with: no verdict, or a
/// "resolved" one while no alert is open on the target.
fn is_quiet(c: &Change, alerted: &std::collections::HashSet<String>) -> bool {
    let Some(new) = c.new.as_deref() else {
        return true;
    };
    match crate::alerts::rules::verdict_for(c.kind, &c.field, c.old.as_deref(), new) {
        None => true,
        Some(v) => {
            v.severity == crate::alerts::rules::Severity::Resolved
                && !alerted.contains(&c.target_id)
        }
    }
}

/// kind, target_id, field, old, new of one history row, as a JSON array.
type HistoryCells<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// Writes one history row per change, in order, `HISTORY_BATCH` rows per statement.
async fn insert_history(
    tx: &mut Tx<'_>,
    changes: &[Change],
    now: &str,
    run_id: Option<i64>,
) -> Result<(), StoreError> {
    for batch in changes.chunks(HISTORY_BATCH) {
        let rows: Vec<HistoryCells<'_>> = batch
            .iter()
            .map(|c| {
                (
                    c.kind.as_str(),
                    c.target_id.as_str(),
                    c.field.as_str(),
                    c.old.as_deref(),
                    c.new.as_deref(),
                )
            })
            .collect();
        let json = serde_json::to_string(&rows)
            .map_err(|e| StoreError::Sql(sqlx::Error::Encode(Box::new(e))))?;
        tx!(tx, (ex, d) => sqlx::query(if d.is_postgres() {
                "INSERT INTO history (kind, target_id, field, old, new, observed_at, poll_run_id) \
                 SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, \
                 $2, $3 FROM json_array_elements($1::json) WITH ORDINALITY AS j(value, key) \
                 ORDER BY j.key"
            } else {
                "INSERT INTO history (kind, target_id, field, old, new, observed_at, poll_run_id) \
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                 json_extract(value, '$[2]'), json_extract(value, '$[3]'), \
                 json_extract(value, '$[4]'), $2, $3 FROM json_each($1) ORDER BY key"
            })
        .bind(json)
        .bind(now)
        .bind(run_id)
        .execute(ex).await.map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Says in words what SQLite would report as "unable to open database file" or "attempt to
/// write a readonly database": which path, and which permission is missing. SQLite needs to
/// write the file and to create `-wal` and `-shm` files next to it.
fn check_access(path: &Path) -> Result<(), StoreError> {
    use std::io::ErrorKind;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let denied = |what: String| {
        StoreError::Access(format!(
            "{what}: permission denied; the daemon's user needs read and write access to the database file and its folder (SQLite creates {0}-wal and {0}-shm next to it): fix the owner or mode (under systemd, StateDirectory= gives the service its folder)",
            path.display()
        ))
    };
    if path.exists() {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(denied(format!(
                    "the database file {} cannot be written",
                    path.display()
                )));
            }
            Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => {
                return Err(StoreError::Access(format!(
                    "the database file {} is on a read-only filesystem: {e}",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    // Probe the folder: SQLite's journal files are created there.
    let probe = dir.join(format!(".waba-monitor-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(denied(format!(
            "the database folder {} does not let this user create files",
            dir.display()
        ))),
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => Err(StoreError::Access(format!(
            "the database folder {} is on a read-only filesystem: {e}",
            dir.display()
        ))),
        // Anything else (it exists already, ...) is SQLite's to report.
        Err(_) => Ok(()),
    }
}

/// With `WABA_MONITOR_TEST_BACKEND=postgres`, the library's tests run on PostgreSQL: a test that
/// opens a SQLite file gets a PostgreSQL database of its own instead (the same one again for
/// the same path, so reopening "the file" reopens it).
#[cfg(test)]
pub(crate) fn test_on_postgres() -> bool {
    std::env::var("WABA_MONITOR_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

#[cfg(test)]
fn test_database_for(path: &std::path::Path) -> Option<String> {
    test_on_postgres().then(|| pg_testing::database_for_key(&path.to_string_lossy()))
}

fn json_list(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

async fn upsert_waba(tx: &mut Tx<'_>, r: &WabaRow) -> Result<(), sqlx::Error> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO wabas (id, source, business_id, name, account_review_status, \
         business_verification_status, business_messaging_limit, health, health_entities, \
         ownership_type, present, first_seen_at, last_polled_at, last_changed_at, source_priority, \
         source_created_at, source_updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (id) DO UPDATE SET source = excluded.source, business_id = excluded.business_id, name = excluded.name, account_review_status = excluded.account_review_status, business_verification_status = excluded.business_verification_status, business_messaging_limit = excluded.business_messaging_limit, health = excluded.health, health_entities = excluded.health_entities, ownership_type = excluded.ownership_type, present = excluded.present, first_seen_at = excluded.first_seen_at, last_polled_at = excluded.last_polled_at, last_changed_at = excluded.last_changed_at, source_priority = excluded.source_priority, source_created_at = excluded.source_created_at, source_updated_at = excluded.source_updated_at",))
    .bind(&r.id)
    .bind(&r.source)
    .bind(&r.business_id)
    .bind(&r.name)
    .bind(&r.account_review_status)
    .bind(&r.business_verification_status)
    .bind(&r.business_messaging_limit)
    .bind(&r.health)
    .bind(&r.health_entities)
    .bind(&r.ownership_type)
    .bind(r.present)
    .bind(&r.first_seen_at)
    .bind(&r.last_polled_at)
    .bind(&r.last_changed_at)
    .bind(r.source_priority)
    .bind(&r.source_created_at)
    .bind(&r.source_updated_at)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Writes a number's row whole; `obs_hash` is the fingerprint of the observation it was merged
/// from (`None`: not from an observation, so the next poll compares it in full).
async fn upsert_phone(
    tx: &mut Tx<'_>,
    r: &PhoneRow,
    obs_hash: Option<i64>,
) -> Result<(), sqlx::Error> {
    tx!(tx, (ex, d) => sqlx::query(d.sql("INSERT INTO phone_numbers (id, source, waba_id, display_phone_number, \
         verified_name, quality_rating, status, messaging_limit_tier, business_messaging_limit, \
         health, health_entities, name_status, code_verification_status, throughput, \
         account_mode, present, first_seen_at, last_polled_at, last_changed_at, source_priority, \
         source_created_at, source_updated_at, obs_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
         ON CONFLICT (id) DO UPDATE SET source = excluded.source, waba_id = excluded.waba_id, display_phone_number = excluded.display_phone_number, verified_name = excluded.verified_name, quality_rating = excluded.quality_rating, status = excluded.status, messaging_limit_tier = excluded.messaging_limit_tier, business_messaging_limit = excluded.business_messaging_limit, health = excluded.health, health_entities = excluded.health_entities, name_status = excluded.name_status, code_verification_status = excluded.code_verification_status, throughput = excluded.throughput, account_mode = excluded.account_mode, present = excluded.present, first_seen_at = excluded.first_seen_at, last_polled_at = excluded.last_polled_at, last_changed_at = excluded.last_changed_at, source_priority = excluded.source_priority, source_created_at = excluded.source_created_at, source_updated_at = excluded.source_updated_at, obs_hash = excluded.obs_hash",))
    .bind(&r.id)
    .bind(&r.source)
    .bind(&r.waba_id)
    .bind(&r.display_phone_number)
    .bind(&r.verified_name)
    .bind(&r.quality_rating)
    .bind(&r.status)
    .bind(&r.messaging_limit_tier)
    .bind(&r.business_messaging_limit)
    .bind(&r.health)
    .bind(&r.health_entities)
    .bind(&r.name_status)
    .bind(&r.code_verification_status)
    .bind(&r.throughput)
    .bind(&r.account_mode)
    .bind(r.present)
    .bind(&r.first_seen_at)
    .bind(&r.last_polled_at)
    .bind(&r.last_changed_at)
    .bind(r.source_priority)
    .bind(&r.source_created_at)
    .bind(&r.source_updated_at)
    .bind(obs_hash)
    .execute(ex).await.map(|r| r.rows_affected()))?;
    Ok(())
}
