//! The `sessions` table: browser sessions, keyed by the SHA-256 of the cookie value.

use chrono::{DateTime, Utc};

use super::{on_pool, on_writer, users::user_columns, users::User, Db};

/// Stores a session under the hash of its key, with its CSRF token and expiry time.
pub async fn create(
    db: &Db,
    key_hash: &str,
    user_id: i64,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let sql = "INSERT INTO sessions (key_hash, user_id, csrf_token, created_at, expires_at) \
               VALUES ($1, $2, $3, $4, $5)";
    on_writer!(db, pool => sqlx::query(sql)
        .bind(key_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(super::now())
        .bind(expires_at)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// A session's user and the CSRF token issued with the session.
#[derive(Debug, sqlx::FromRow)]
pub struct SessionUser {
    #[sqlx(flatten)]
    pub user: User,
    pub csrf_token: String,
}

/// The active user owning an unexpired session.
pub async fn user(db: &Db, key_hash: &str) -> sqlx::Result<Option<SessionUser>> {
    let sql = concat!(
        "SELECT s.csrf_token, u.* FROM sessions s JOIN (SELECT ",
        user_columns!(),
        " FROM users) u ON u.id = s.user_id \
         WHERE s.key_hash = $1 AND s.expires_at > $2 AND u.is_active"
    );
    on_pool!(db, pool => sqlx::query_as::<_, SessionUser>(sql)
        .bind(key_hash)
        .bind(super::now())
        .fetch_optional(pool)
        .await)
}

/// Deletes the session with this key hash (logout); an unknown hash is not an error.
pub async fn delete(db: &Db, key_hash: &str) -> sqlx::Result<()> {
    let sql = "DELETE FROM sessions WHERE key_hash = $1";
    on_writer!(db, pool => sqlx::query(sql).bind(key_hash).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Removes expired sessions; returns how many went.
pub async fn delete_expired(db: &Db) -> sqlx::Result<u64> {
    let sql = "DELETE FROM sessions WHERE expires_at <= $1";
    let done = on_writer!(db, pool => sqlx::query(sql).bind(super::now()).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(done)
}

/// Of the sessions with these key hashes, those that still authenticate someone (unexpired, of
/// an active user), as key hashes; at most 1,000 hashes a call.
pub async fn valid_among(db: &Db, key_hashes: &[String]) -> sqlx::Result<Vec<String>> {
    if key_hashes.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT s.key_hash FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE u.is_active AND s.expires_at > ",
        );
        q.push_bind(super::now());
        q.push(" AND s.key_hash IN (");
        let mut list = q.separated(", ");
        for hash in key_hashes {
            list.push_bind(hash.as_str());
        }
        q.push(")");
        q.build_query_scalar::<String>().persistent(false).fetch_all(pool).await
    })
}

/// Counts one more change that ended credentials, once it is committed (the
/// `credential_changes` row): servers that see the count move check their sockets' credentials
/// again.
pub async fn count_ended(db: &Db) -> sqlx::Result<()> {
    let sql = "UPDATE credential_changes SET generation = generation + 1 WHERE id = 1";
    on_writer!(db, pool => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// How many changes have ended credentials so far (see [`count_ended`]).
pub async fn ended_count(db: &Db) -> sqlx::Result<i64> {
    let sql = "SELECT generation FROM credential_changes WHERE id = 1";
    on_pool!(db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await)
}
