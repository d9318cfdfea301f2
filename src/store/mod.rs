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
pub mod attachments;
pub mod chats;
pub mod columns;
pub mod events;
pub mod import;
pub mod messages;
pub mod pins;
pub mod search;
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

/// Runs a read against whichever database `$db` holds: the body is compiled once per backend,
/// with `$pool` bound to a connection of the SQLite set or to the PostgreSQL pool. Both are sqlx
/// executors, and both begin transactions with `$pool.begin()`. The body's value is the macro's;
/// on SQLite, an `Err` (or a `?` out of the body) has the connection checked before it is reused.
///
/// **For reads only.** SQLite allows one writer at a time, and a writer that finds another
/// holding the write lock sleeps in SQLite's busy handler, retrying, which made sends stall for
/// up to a second under load. So this process's writers queue for their turn instead (see
/// `Sqlite::write_turn`), and they take it through `on_writer!`: anything that inserts,
/// updates or deletes, or opens a transaction that does, must use that macro.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                $crate::store::on_sqlite!(sqlite, $pool => $body)
            }
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Runs a write (a statement that inserts, updates or deletes, or a transaction that does) like
/// `on_pool!`, first taking this process's write turn on SQLite: writers then wait for each
/// other here, in order, instead of meeting SQLITE_BUSY. The turn is taken before a connection
/// is borrowed, so writers in the queue hold no connection a reader could use, and it is
/// released after the connection has gone back. On PostgreSQL, which locks rows itself, this
/// is `on_pool!`.
///
/// A writer that can tell up front that it has nothing to write should return before this, so
/// that it does not wait for the turn for nothing.
macro_rules! on_writer {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(sqlite) => {
                let _turn = sqlite.write_turn().await;
                $crate::store::on_sqlite!(sqlite, $pool => $body)
            }
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_writer;

/// The SQLite arm of `on_pool!` and `on_writer!`: borrows a connection of the set, runs the
/// body with `$pool` bound to it, and lets it go back unchecked if the body succeeded.
macro_rules! on_sqlite {
    ($sqlite:ident, $pool:ident => $body:expr) => {{
        #[allow(unused_imports)]
        use sqlx::Connection as _;
        let mut conn = $sqlite.acquire().await?;
        let value = {
            let $pool = &mut *conn;
            $body
        };
        if $crate::store::sqlite::Outcome::succeeded(&value) {
            conn.succeeded();
        }
        value
    }};
}
pub(crate) use on_sqlite;

/// What a database pool is doing, for the metrics: connections in use and idle, and (SQLite,
/// whose connections and write turn this process queues for itself) the seconds waited for them
/// in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStats {
    pub in_use: usize,
    pub idle: usize,
    pub waited_seconds: Option<f64>,
}

impl Db {
    /// The pool's connections, and its waits where they are known.
    pub fn stats(&self) -> PoolStats {
        match self {
            Db::Sqlite(sqlite) => {
                let (in_use, idle, waited) = sqlite.stats();
                PoolStats {
                    in_use,
                    idle,
                    waited_seconds: Some(waited),
                }
            }
            Db::Postgres(pool) => {
                let idle = pool.num_idle();
                PoolStats {
                    in_use: (pool.size() as usize).saturating_sub(idle),
                    idle,
                    waited_seconds: None,
                }
            }
        }
    }

    /// Opens the database named by `url`: `sqlite:…` opens (creating if missing) a SQLite file in
    /// WAL mode with foreign keys on; anything else is taken as a PostgreSQL URL. Up to
    /// `max_connections` connections, waiting at most 10 s for one.
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
                .pragma("mmap_size", "268435456")
                // Statement journals and sorts in memory: on disk each was a file created,
                // written and deleted per statement.
                .pragma("temp_store", "memory")
                // A checkpoint every 16 MiB of log instead of 4: pages a burst rewrites over and
                // over (an index's last page, the search index's newest segment) are copied
                // into the database once per checkpoint, and fsync'd less often.
                .pragma("wal_autocheckpoint", "4096");
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

    /// The backend's name: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(..) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Applies every pending migration of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self {
            Db::Sqlite(..) => &SQLITE_MIGRATIONS,
            Db::Postgres(_) => &POSTGRES_MIGRATIONS,
        };
        on_writer!(self, pool => migrator.run(pool).await).context("applying database migrations")
    }

    /// Answers when the database does; used by the readiness probe.
    pub async fn ping(&self) -> sqlx::Result<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Closes the database connections; used at shutdown.
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
    /// True when the window reads back from its upper end (no `after`).
    pub fn from_newest(&self) -> bool {
        self.after.is_none()
    }

    /// The exclusive lower id bound: `after`, or 0.
    pub fn lower(&self) -> i64 {
        self.after.unwrap_or(0)
    }

    /// The exclusive upper id bound: `before`, or `i64::MAX`.
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
    use sqlx::Connection;

    use super::*;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(contains_pattern("Ab"), "%ab%");
        assert_eq!(contains_pattern("50%_x!"), "%50!%!_x!!%");
    }

    /// A SQLite database in WAL mode, as the server opens it, but whose connections give up at
    /// once on a lock (no busy timeout): any writer that meets another fails.
    async fn impatient_sqlite(dir: &tempfile::TempDir) -> Db {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("w.sqlite3"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::ZERO);
        let db = Db::Sqlite(
            Sqlite::open(options, 8, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        create_table(&db).await.unwrap();
        db
    }

    async fn create_table(db: &Db) -> sqlx::Result<()> {
        on_writer!(db, pool => sqlx::query("CREATE TABLE t (n INTEGER NOT NULL)")
            .execute(pool)
            .await
            .map(|_| ()))
    }

    /// One write transaction that stays open across awaits, as a send's does between its
    /// statements.
    async fn slow_write(db: &Db, n: i64) -> sqlx::Result<()> {
        on_writer!(db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO t (n) VALUES ($1)").bind(n).execute(&mut *tx).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            sqlx::query("UPDATE t SET n = n + 1 WHERE n = $1").bind(n).execute(&mut *tx).await?;
            tx.commit().await
        })
    }

    async fn count(db: &Db) -> sqlx::Result<i64> {
        on_pool!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(pool).await)
    }

    #[tokio::test]
    async fn sqlite_writers_take_turns_instead_of_meeting_a_busy_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = impatient_sqlite(&dir).await;
        let Db::Sqlite(sqlite) = &db else {
            unreachable!()
        };

        // Without the turn, a second writer meets SQLITE_BUSY while the first is in its
        // transaction: this database would show a writer that skipped the queue.
        let mut first = sqlite.acquire().await.unwrap();
        let mut tx = first.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (0)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let mut second = sqlite.acquire().await.unwrap();
        let busy = sqlx::query("INSERT INTO t (n) VALUES (0)")
            .execute(&mut *second)
            .await
            .expect_err("two writers at once");
        assert!(busy.to_string().contains("database is locked"), "{busy}");
        tx.rollback().await.unwrap();
        drop((first, second));

        // Through the store's write path they queue, and every one succeeds.
        let writes = (0..6).map(|n| slow_write(&db, n * 10));
        for done in futures_util::future::join_all(writes).await {
            done.expect("each writer waits for its turn");
        }
        assert_eq!(count(&db).await.unwrap(), 6);
    }
}
