//! The `api_tokens` table: bearer tokens for non-browser clients, stored as SHA-256 hashes.

use super::{on_pool, on_writer, users::user_columns, users::User, Db};

/// Stores a bearer token for the user under its hash, with a name the user gave it.
pub async fn create(db: &Db, user_id: i64, token_hash: &str, name: &str) -> sqlx::Result<()> {
    let sql =
        "INSERT INTO api_tokens (user_id, token_hash, name, created_at) VALUES ($1, $2, $3, $4)";
    on_writer!(db, pool => sqlx::query(sql)
        .bind(user_id)
        .bind(token_hash)
        .bind(name)
        .bind(super::now())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The active user a token belongs to.
pub async fn user(db: &Db, token_hash: &str) -> sqlx::Result<Option<User>> {
    let sql = concat!(
        "SELECT u.* FROM api_tokens t JOIN (SELECT ",
        user_columns!(),
        " FROM users) u ON u.id = t.user_id WHERE t.token_hash = $1 AND u.is_active"
    );
    on_pool!(db, pool => sqlx::query_as::<_, User>(sql)
        .bind(token_hash)
        .fetch_optional(pool)
        .await)
}

/// Revokes the token with this hash; `true` when one was deleted.
pub async fn delete(db: &Db, token_hash: &str) -> sqlx::Result<bool> {
    let sql = "DELETE FROM api_tokens WHERE token_hash = $1";
    let done = on_writer!(db, pool => sqlx::query(sql).bind(token_hash).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(done == 1)
}
