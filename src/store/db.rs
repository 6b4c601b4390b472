//! The two backends behind the one store: SQLite (a file, one daemon; the default) and
//! PostgreSQL (a server, a highly available pair of daemons).
//!
//! Every query is written once, in the SQL both engines accept (`$1` placeholders, `ON CONFLICT`
//! upserts, `->>` on JSON, `CAST(… AS BIGINT)`, `TRUE`/`FALSE`), and runs through [`db!`] (on a
//! pool) or [`tx!`] (in a write transaction), which expand the query once per backend so that
//! each is compiled against its own driver: no type detail is lost as through `sqlx::Any`.
//! The few spellings that differ are translated for PostgreSQL by [`Dialect::sql`]; what cannot
//! be translated is written twice and chosen with [`Dialect::is_postgres`].

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

/// The key of the transaction-level advisory lock every PostgreSQL write transaction of the
/// store takes first ("waba" in ASCII).
pub const WRITE_LOCK: i64 = 0x7761_6261;

/// A pool of either backend.
#[derive(Debug, Clone)]
pub enum Pool {
    Lite(SqlitePool),
    Pg(PgPool),
}

impl Pool {
    pub async fn close(&self) {
        match self {
            Pool::Lite(p) => p.close().await,
            Pool::Pg(p) => p.close().await,
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Lite(_) => Dialect::Sqlite,
            Pool::Pg(_) => Dialect::Postgres,
        }
    }

    /// The SQLite pool, when the store is a file (tools and tests that read it directly).
    pub fn sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Pool::Lite(p) => Some(p),
            Pool::Pg(_) => None,
        }
    }

    /// A plain (deferred, read) transaction: one snapshot for several reads.
    pub async fn begin(&self) -> Result<Tx<'static>, sqlx::Error> {
        Ok(match self {
            Pool::Lite(p) => Tx::Lite(p.begin().await?),
            Pool::Pg(p) => Tx::Pg(p.begin().await?),
        })
    }
}

/// A write transaction on the store, as [`super::Store::begin_write`] returns it: what the
/// in-transaction functions of the store take.
pub enum Tx<'c> {
    Lite(sqlx::Transaction<'c, Sqlite>),
    Pg(sqlx::Transaction<'c, Postgres>),
}

/// The connection of a transaction, for [`tx!`].
pub enum Conn<'a> {
    Lite(&'a mut SqliteConnection),
    Pg(&'a mut PgConnection),
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Lite(t) => t.commit().await,
            Tx::Pg(t) => t.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Lite(t) => t.rollback().await,
            Tx::Pg(t) => t.rollback().await,
        }
    }

    /// The transaction's connection.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Lite(t) => Conn::Lite(&mut *t),
            Tx::Pg(t) => Conn::Pg(&mut *t),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Lite(_) => Dialect::Sqlite,
            Tx::Pg(_) => Dialect::Postgres,
        }
    }
}

/// Which SQL a query is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn is_postgres(self) -> bool {
        self == Dialect::Postgres
    }

    /// The query in this dialect: as written for SQLite, translated (once, then cached) for
    /// PostgreSQL.
    pub fn sql(self, sql: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => sql,
            Dialect::Postgres => to_postgres(sql),
        }
    }
}

/// `sql` with SQLite's spellings that PostgreSQL lacks replaced: a JSON array of scalars as a
/// set (`json_each($n)` → `json_array_elements_text($n::json)`), `instr` → `strpos`,
/// `group_concat` → `string_agg`, `char(n)` → `chr(n)`. Translated once per query text.
fn to_postgres(sql: &'static str) -> &'static str {
    static CACHE: OnceLock<Mutex<HashMap<(usize, usize), &'static str>>> = OnceLock::new();
    let key = (sql.as_ptr() as usize, sql.len());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(done) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return done;
    }
    let translated = translate(sql);
    let leaked: &'static str = if translated == sql {
        sql
    } else {
        Box::leak(translated.into_boxed_str())
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, leaked);
    leaked
}

fn translate(sql: &str) -> String {
    // A list to match against: an array the planner can use an index with, whatever the
    // table's statistics (`IN (SELECT …)` over a JSON set was planned as a scan).
    // (`NOT IN` stays a subquery: PostgreSQL hashes it, where `<> ALL(…)` compares every row
    // with every element: 1.2 s a cycle at 10,000 numbers.)
    let sql = rewrite_lists(
        sql,
        " IN (SELECT value FROM json_each(",
        " = ANY(ARRAY(SELECT json_array_elements_text(",
    );
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql.as_str();
    while let Some(at) = rest.find("json_each($") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "json_each(".len()..];
        let end = after.find(')').unwrap_or(after.len());
        out.push_str("json_array_elements_text(");
        out.push_str(&after[..end]);
        out.push_str("::json");
        rest = &after[end..];
        // `json_each($1) AS n` names its column `value` in SQLite: say so to PostgreSQL.
        if let Some(aliased) = rest.strip_prefix(") AS ") {
            let len = aliased
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(aliased.len());
            out.push_str(") AS ");
            out.push_str(&aliased[..len]);
            out.push_str("(value)");
            rest = &aliased[len..];
        }
    }
    out.push_str(rest);
    let out = wrap_calls(
        &out,
        "json_group_array(",
        "COALESCE(json_agg(",
        ")::text, '[]')",
    );
    out.replace("json_array(", "json_build_array(")
        .replace(
            "json(CASE present WHEN 0 THEN 'false' ELSE 'true' END)",
            "present",
        )
        .replace("instr(", "strpos(")
        .replace("group_concat(", "string_agg(")
        .replace("char(30)", "chr(30)")
        .replace("char(31)", "chr(31)")
}

/// `x IN (SELECT value FROM json_each($n))` as `x = ANY(ARRAY(SELECT json_array_elements_text($n::json)))`
/// (`x NOT IN (…)` left as it is).
fn rewrite_lists(sql: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while let Some(at) = rest.find(from) {
        out.push_str(&rest[..at]);
        if rest[..at].ends_with(" NOT") {
            out.push_str(from);
            rest = &rest[at + from.len()..];
            continue;
        }
        let after = &rest[at + from.len()..];
        // `$n))`: the placeholder, json_each's `)` and the subquery's `)`.
        let Some(end) = after.find("))") else {
            out.push_str(&rest[at..]);
            return out;
        };
        out.push_str(to);
        out.push_str(&after[..end]);
        out.push_str("::json)))");
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Every call `name…)` in `sql` rewritten as `open…close` (its arguments kept).
fn wrap_calls(sql: &str, name: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while let Some(at) = rest.find(name) {
        out.push_str(&rest[..at]);
        let args = &rest[at + name.len()..];
        let mut depth = 1usize;
        let mut end = args.len();
        for (i, ch) in args.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push_str(open);
        out.push_str(&args[..end]);
        out.push_str(close);
        rest = args.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Runs `$body` on a [`Pool`] with `$c` the backend's pool and `$d` its [`Dialect`]; the body
/// is compiled once per backend and must have the same type in both.
macro_rules! db {
    ($pool:expr, ($c:ident, $d:ident) => $body:expr) => {
        match $pool {
            $crate::store::db::Pool::Lite(p) => {
                #[allow(unused_variables)]
                let $d = $crate::store::db::Dialect::Sqlite;
                let $c = p;
                $body
            }
            $crate::store::db::Pool::Pg(p) => {
                #[allow(unused_variables)]
                let $d = $crate::store::db::Dialect::Postgres;
                let $c = p;
                $body
            }
        }
    };
}

/// Runs `$body` in a [`Tx`] with `$c` its connection and `$d` its [`Dialect`], like [`db!`].
macro_rules! tx {
    ($tx:expr, ($c:ident, $d:ident) => $body:expr) => {
        match ($tx).conn() {
            $crate::store::db::Conn::Lite($c) => {
                #[allow(unused_variables)]
                let $d = $crate::store::db::Dialect::Sqlite;
                $body
            }
            $crate::store::db::Conn::Pg($c) => {
                #[allow(unused_variables)]
                let $d = $crate::store::db::Dialect::Postgres;
                $body
            }
        }
    };
}

pub(crate) use {db, tx};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_spellings_are_translated_for_postgres_and_cached() {
        let sql = "SELECT group_concat(id || char(31) || h, char(30)) FROM t \
                   WHERE id IN (SELECT value FROM json_each($1)) AND instr(a, b) > 0 \
                   AND k IN (SELECT value FROM json_each($12))";
        let pg = Dialect::Postgres.sql(sql);
        assert_eq!(
            pg,
            "SELECT string_agg(id || chr(31) || h, chr(30)) FROM t \
             WHERE id = ANY(ARRAY(SELECT json_array_elements_text($1::json))) AND strpos(a, b) > 0 \
             AND k = ANY(ARRAY(SELECT json_array_elements_text($12::json)))"
        );
        assert_eq!(
            Dialect::Postgres.sql("SELECT 1 FROM t WHERE a NOT IN (SELECT value FROM json_each($2)) AND (SELECT value FROM json_each($3)) IS NULL"),
            "SELECT 1 FROM t WHERE a NOT IN (SELECT value FROM json_array_elements_text($2::json)) AND (SELECT value FROM json_array_elements_text($3::json)) IS NULL"
        );
        assert!(std::ptr::eq(pg, Dialect::Postgres.sql(sql)));
        assert!(std::ptr::eq(sql, Dialect::Sqlite.sql(sql)));
        assert_eq!(
            Dialect::Postgres.sql(
                "SELECT json_group_array(json_array(id, json(CASE present WHEN 0 THEN 'false' ELSE 'true' END), max(x))), max(id) FROM t \
                 WHERE EXISTS (SELECT 1 FROM json_each($2) AS n WHERE instr(a, n.value) > 0)"
            ),
            "SELECT COALESCE(json_agg(json_build_array(id, present, max(x)))::text, '[]'), max(id) FROM t \
             WHERE EXISTS (SELECT 1 FROM json_array_elements_text($2::json) AS n(value) WHERE strpos(a, n.value) > 0)"
        );
        let plain = "SELECT 1";
        assert!(std::ptr::eq(plain, Dialect::Postgres.sql(plain)));
    }
}
