//! SQLite connections, held here rather than in an sqlx `Pool`.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands it every statement over a
//! channel; its pool also pings a connection each time one is returned, a second round trip to
//! that thread for every query. A connection's thread works through its commands in order, so
//! one whose work ended normally goes back to the set as it is. One whose loan ended in an error
//! or a cancellation is pinged first, off the caller's path, and dropped if it does not answer
//! (its thread may have stopped); a cancelled query stops at its next row, and the rollback of a
//! dropped transaction is queued before that ping.

use std::{
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection, SqliteConnection};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// Up to `max` connections to one database, opened when first needed and kept open.
#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    options: SqliteConnectOptions,
    idle: Mutex<Vec<SqliteConnection>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    /// SQLite allows one writer at a time. Writers queue here, in this process, instead of
    /// meeting SQLITE_BUSY and sleeping in SQLite's busy handler, which made sends stall for up
    /// to a second under load.
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// The most connections at once.
    max: usize,
    /// Microseconds spent waiting for a connection or the write turn, in all.
    waited_micros: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("filename", &self.inner.options.get_filename())
            .field("available", &self.inner.permits.available_permits())
            .finish()
    }
}

/// Switches off SQLite's memory statistics, once, before the library is first used. With them
/// on, every allocation inside SQLite takes one process-wide mutex, which the connections'
/// threads fought over (a tenth of the server's CPU under REST load went to waking waiters).
fn configure_library() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        // SAFETY: runs before any connection of this process is opened (every one is opened
        // through `Sqlite`, after this), as sqlite3_config requires; after initialisation it
        // would only return SQLITE_MISUSE.
        let code =
            unsafe { libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS, 0) };
        if code != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(code, "SQLite memory statistics stay on");
        }
    });
}

impl Sqlite {
    /// Opens the first connection now, so that a bad path or an unreadable file stops start-up.
    pub async fn open(
        options: SqliteConnectOptions,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> sqlx::Result<Sqlite> {
        configure_library();
        let first = options.connect().await?;
        Ok(Sqlite {
            inner: Arc::new(Inner {
                options,
                idle: Mutex::new(vec![first]),
                permits: Arc::new(Semaphore::new(max_connections as usize)),
                acquire_timeout,
                write_gate: Arc::default(),
                max: max_connections as usize,
                waited_micros: Default::default(),
            }),
        })
    }

    /// A connection for one statement or transaction; it returns to the set when dropped.
    pub async fn acquire(&self) -> sqlx::Result<SqliteConn> {
        let asked = std::time::Instant::now();
        let permit = tokio::time::timeout(
            self.inner.acquire_timeout,
            self.inner.permits.clone().acquire_owned(),
        )
        .await;
        // Counted however the wait ended: the longest ones are those that time out.
        self.waited(asked);
        let permit = permit
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.lock_idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.inner.options.connect().await?,
        };
        Ok(SqliteConn {
            conn: Some(conn),
            home: self.inner.clone(),
            permit: Some(permit),
            clean: false,
        })
    }

    /// Waits for this process's other writers, first come first served, and returns the turn:
    /// held for the length of a write (`on_writer!` takes it), it keeps a second writer from
    /// meeting SQLITE_BUSY. Writers of other processes on the same file are not queued here.
    pub async fn write_turn(&self) -> OwnedMutexGuard<()> {
        let asked = std::time::Instant::now();
        let turn = self.inner.write_gate.clone().lock_owned().await;
        self.waited(asked);
        turn
    }

    fn waited(&self, since: std::time::Instant) {
        let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.inner
            .waited_micros
            .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections in use, connections idle, and the seconds waited for a connection or the
    /// write turn since the database was opened.
    pub fn stats(&self) -> (usize, usize, f64) {
        let in_use = self.inner.max - self.inner.permits.available_permits();
        let idle = self.lock_idle().len();
        let waited = self
            .inner
            .waited_micros
            .load(std::sync::atomic::Ordering::Relaxed);
        (in_use, idle, waited as f64 / 1e6)
    }

    /// Refuses new acquisitions and closes the idle connections; connections in use close when
    /// they are dropped.
    pub async fn close(&self) {
        // Closed before the list is emptied: a connection returned from now on sees it under
        // the list's lock and is dropped instead of being put back.
        self.inner.permits.close();
        let idle = std::mem::take(&mut *self.lock_idle());
        for conn in idle {
            let _ = conn.close().await;
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<SqliteConnection>> {
        self.inner.lock_idle()
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<SqliteConnection>> {
        // The list stays consistent even if a holder panicked: it is only pushed and popped.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a connection back, unless the set has been closed meanwhile.
    fn put_back(&self, conn: SqliteConnection) {
        let mut idle = self.lock_idle();
        if !self.permits.is_closed() {
            idle.push(conn);
        }
    }
}

/// A connection on loan from [`Sqlite`].
pub struct SqliteConn {
    conn: Option<SqliteConnection>,
    home: Arc<Inner>,
    /// Released after the connection is back in the list (or dropped).
    permit: Option<OwnedSemaphorePermit>,
    /// Set when the work done on the loan ended without an error.
    clean: bool,
}

impl SqliteConn {
    /// Records that the work done on this loan succeeded, so the connection can be reused at
    /// once. Without it the connection is checked before anyone else gets it.
    pub fn succeeded(&mut self) {
        self.clean = true;
    }
}

/// What `on_pool!` bodies evaluate to: success lets the connection go back unchecked.
pub trait Outcome {
    fn succeeded(&self) -> bool;
}

impl<T, E> Outcome for Result<T, E> {
    fn succeeded(&self) -> bool {
        self.is_ok()
    }
}

impl Deref for SqliteConn {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl DerefMut for SqliteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for SqliteConn {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let permit = self.permit.take();
        if self.clean {
            self.home.put_back(conn);
            drop(permit);
            return;
        }
        // An error or a cancellation: the connection's thread may have stopped (sqlx ends it
        // when, say, the rollback after a cancelled BEGIN fails), and a dead connection put back
        // would fail every query given to it. The permit stays held until the check is done.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime to check on: dropping the connection ends its thread
        };
        let home = self.home.clone();
        runtime.spawn(async move {
            match conn.ping().await {
                Ok(()) => home.put_back(conn),
                Err(error) => {
                    tracing::warn!(%error, "dropping a SQLite connection that no longer answers")
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    async fn open(dir: &tempfile::TempDir, max: u32, timeout: Duration) -> Sqlite {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("t.sqlite3"))
            .create_if_missing(true);
        let sqlite = Sqlite::open(options, max, timeout).await.unwrap();
        let mut conn = sqlite.acquire().await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER NOT NULL)")
            .execute(&mut *conn)
            .await
            .unwrap();
        conn.succeeded();
        drop(conn);
        sqlite
    }

    async fn count(sqlite: &Sqlite) -> i64 {
        let mut conn = sqlite.acquire().await.unwrap();
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        conn.succeeded();
        n
    }

    fn idle(sqlite: &Sqlite) -> usize {
        sqlite.lock_idle().len()
    }

    #[tokio::test]
    async fn a_loan_that_failed_is_checked_before_its_connection_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = open(&dir, 1, Duration::from_secs(5)).await;
        let before = idle(&sqlite);
        {
            let mut conn = sqlite.acquire().await.unwrap();
            assert!(sqlx::query("SELECT * FROM no_such_table")
                .execute(&mut *conn)
                .await
                .is_err());
        }
        // Not put back at once: the check runs first, holding the only permit meanwhile.
        assert_eq!(idle(&sqlite), before - 1);
        let mut conn = sqlite
            .acquire()
            .await
            .expect("the permit comes back after the check");
        sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
        conn.succeeded();
        drop(conn);
        assert_eq!(idle(&sqlite), before, "a connection that answers is kept");
    }

    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back_before_the_connection_is_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = open(&dir, 1, Duration::from_secs(5)).await;
        {
            let mut conn = sqlite.acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("INSERT INTO t (n) VALUES (1)")
                .execute(&mut *tx)
                .await
                .unwrap();
            // Dropped uncommitted, as when a request is cancelled mid-transaction.
        }
        // The one connection comes back: it must not still be inside that transaction.
        let mut conn = sqlite.acquire().await.unwrap();
        let mut tx = conn.begin().await.expect("no transaction left open");
        sqlx::query("INSERT INTO t (n) VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        drop(conn);
        assert_eq!(count(&sqlite).await, 1);
    }

    #[tokio::test]
    async fn a_query_abandoned_mid_stream_leaves_the_connection_usable() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = open(&dir, 1, Duration::from_secs(5)).await;
        {
            let mut conn = sqlite.acquire().await.unwrap();
            sqlx::query("INSERT INTO t (n) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) SELECT x FROM c")
                .execute(&mut *conn)
                .await
                .unwrap();
            let mut rows =
                sqlx::query_scalar::<_, i64>("SELECT n FROM t ORDER BY n").fetch(&mut *conn);
            assert_eq!(rows.next().await.unwrap().unwrap(), 1);
        }
        assert_eq!(count(&sqlite).await, 5000);
    }

    #[tokio::test]
    async fn acquiring_waits_for_a_free_connection_then_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = open(&dir, 1, Duration::from_millis(100)).await;
        let held = sqlite.acquire().await.unwrap();
        assert!(matches!(
            sqlite.acquire().await.err(),
            Some(sqlx::Error::PoolTimedOut)
        ));
        drop(held);
        assert_eq!(count(&sqlite).await, 0);
        sqlite.close().await;
        assert!(matches!(
            sqlite.acquire().await.err(),
            Some(sqlx::Error::PoolClosed)
        ));
    }
}
