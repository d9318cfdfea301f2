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

/// Of the tokens with these hashes, those that still authenticate someone (of an active user),
/// as hashes; at most 1,000 hashes a call.
pub async fn valid_among(db: &Db, token_hashes: &[String]) -> sqlx::Result<Vec<String>> {
    if token_hashes.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT t.token_hash FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE u.is_active AND t.token_hash IN (",
        );
        let mut list = q.separated(", ");
        for hash in token_hashes {
            list.push_bind(hash.as_str());
        }
        q.push(")");
        q.build_query_scalar::<String>().persistent(false).fetch_all(pool).await
    })
}
