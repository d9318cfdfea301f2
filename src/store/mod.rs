//! Storage: one codebase over SQLite (the embedded default) and PostgreSQL.
//!
//! Queries are written once in the SQL both dialects share (`$1` placeholders, `RETURNING`,
//! window functions) and run against whichever pool is configured; each backend keeps its own
//! migrations so that each gets its proper column types. SQL lives here, grouped by table; this
//! module keeps what spans tables (the connection, the whole-database counts, shared helpers).
//!
//! Every query function fails with the driver's `sqlx::Error` when the database does (or when no
//! connection frees up within the acquire timeout); other failures are documented where they occur.

pub mod ai;
pub mod chats;
pub mod messages;
pub mod sessions;
pub mod sqlite;
pub mod tokens;
pub mod users;

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
    PgPool,
};

use self::sqlite::Sqlite;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// A pooled PostgreSQL connection idle for this long is pinged before it is lent again.
const PG_CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// A connection pool to one of the supported databases.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(Sqlite),
    Postgres(PgPool),
}

/// Runs the same statement against whichever database `$db` holds: the body is compiled once
/// per backend, with `$pool` bound to a connection of the SQLite set or to the PostgreSQL pool.
/// Both are sqlx executors, and both begin transactions with `$pool.begin()`.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                #[allow(unused_imports)]
                use sqlx::Connection as _;
                let mut conn = sqlite.acquire().await?;
                let value = {
                    let $pool = &mut *conn;
                    $body
                };
                if $crate::store::sqlite::Outcome::succeeded(&value) {
                    conn.succeeded();
                }
                value
            }
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Db {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("DATABASE_URL: not a valid SQLite URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // With WAL, NORMAL keeps the database consistent after a crash and only risks
                // the last transactions on power loss; FULL would fsync every commit.
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // Reads straight from a memory map: in WAL mode a connection drops its page
                // cache whenever another one commits, and refilling it allocated and copied
                // every page again. Writes still go through write(2).
                .pragma("mmap_size", "268435456");
            let sqlite = Sqlite::open(options, max_connections, Duration::from_secs(10))
                .await
                .with_context(|| format!("cannot open the SQLite database {url}"))?;
            Ok(Db::Sqlite(sqlite))
        } else {
            let options = PgConnectOptions::from_str(url)
                .context("DATABASE_URL: not a valid PostgreSQL URL")?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                // sqlx pings a connection before lending it as well as after its return. The
                // second catches connections broken in use; before lending, only one that sat
                // idle for a while (and may have been cut by a restart or a proxy) is checked.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PG_CHECK_IDLE_AFTER {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(options)
                .await
                .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
            Ok(Db::Postgres(pool))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(..) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Applies every pending migration of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(sqlite) => {
                let mut conn = sqlite.acquire().await?;
                let done = SQLITE_MIGRATIONS.run(&mut *conn).await;
                if done.is_ok() {
                    conn.succeeded();
                }
                done
            }
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        }
        .context("applying database migrations")
    }

    /// Held around a write transaction: on SQLite, waits for this process's other writers; on
    /// PostgreSQL, which locks rows itself, a no-op.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self {
            Db::Sqlite(sqlite) => Some(sqlite.write_turn().await),
            Db::Postgres(_) => None,
        }
    }

    /// Answers when the database does; used by the readiness probe.
    pub async fn ping(&self) -> sqlx::Result<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(sqlite) => sqlite.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// The current time at the precision both backends store (PostgreSQL keeps microseconds), so a
/// value reads back exactly as it was written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Which slice of an id-ordered list to read: ids strictly between `after` and `before`, at
/// most `limit` of them. Without `after` a page holds the newest of the range, with it the
/// oldest; either way rows come back in ascending id order.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub after: Option<i64>,
    pub before: Option<i64>,
    pub limit: i64,
}

impl Window {
    pub fn from_newest(&self) -> bool {
        self.after.is_none()
    }

    pub fn lower(&self) -> i64 {
        self.after.unwrap_or(0)
    }

    pub fn upper(&self) -> i64 {
        self.before.unwrap_or(i64::MAX)
    }

    /// Puts rows read in the window's scan order into ascending order.
    pub fn ascending<T>(&self, mut rows: Vec<T>) -> Vec<T> {
        if self.from_newest() {
            rows.reverse();
        }
        rows
    }
}

/// True when the error is a violation of a unique constraint (a lost race on insert).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A case-insensitive "contains" pattern for `LOWER(column) LIKE $n ESCAPE '!'`: `%`, the
/// lower-cased search text with `!`, `%` and `_` escaped by a `!` (so it matches literally,
/// wildcards included), then `%`. The admin lists' text filters bind it.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '!' | '%' | '_') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// How much the database holds, as the admin dashboard shows it: row counts of each table.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Counts {
    /// Every account.
    pub users: i64,
    /// Accounts that may sign in (`is_active`).
    pub active_users: i64,
    /// Accounts with staff or superuser status.
    pub staff: i64,
    pub chats: i64,
    /// Messages of group chats.
    pub messages: i64,
    pub ai_chats: i64,
    /// Complete AI messages (a reply still being generated is not counted).
    pub ai_messages: i64,
    /// Total tokens (as the providers counted them) used on the UTC day asked for, over every
    /// user and model.
    pub ai_tokens_today: i64,
}

/// The dashboard's figures, in one statement; `today` is the UTC day as `YYYY-MM-DD`, as
/// `ai_usage.day` stores it.
pub async fn counts(db: &Db, today: &str) -> sqlx::Result<Counts> {
    let sql = "SELECT (SELECT COUNT(*) FROM users) AS users, \
               (SELECT COUNT(*) FROM users WHERE is_active) AS active_users, \
               (SELECT COUNT(*) FROM users WHERE is_staff OR is_superuser) AS staff, \
               (SELECT COUNT(*) FROM chats) AS chats, \
               (SELECT COUNT(*) FROM messages) AS messages, \
               (SELECT COUNT(*) FROM ai_chats) AS ai_chats, \
               (SELECT COUNT(*) FROM ai_messages WHERE complete) AS ai_messages, \
               (SELECT CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) FROM ai_usage WHERE day = $1) \
               AS ai_tokens_today";
    on_pool!(db, pool => sqlx::query_as::<_, Counts>(sql).bind(today).fetch_one(pool).await)
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(contains_pattern("Ab"), "%ab%");
        assert_eq!(contains_pattern("50%_x!"), "%50!%!_x!!%");
    }
}
