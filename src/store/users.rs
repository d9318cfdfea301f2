//! The `users` table.

use chrono::{DateTime, Utc};

use super::{on_pool, Db, Window};

/// Every column but the password hash, in `User`'s field order.
macro_rules! user_columns {
    () => {
        "id, username, email, user_type, first_name, last_name, is_staff, is_superuser, \
         is_active, date_joined, last_login"
    };
}
pub(crate) use user_columns;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub user_type: String,
    pub first_name: String,
    pub last_name: String,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub is_active: bool,
    pub date_joined: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub user_type: &'a str,
    pub is_staff: bool,
    pub is_superuser: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: i64,
    pub password_hash: String,
    pub is_active: bool,
}

/// Inserts a user; a taken username surfaces as a unique violation.
pub async fn create(db: &Db, new: &NewUser<'_>) -> sqlx::Result<User> {
    let _turn = db.write_turn().await;
    let sql = concat!(
        "INSERT INTO users (username, email, password_hash, user_type, is_staff, is_superuser, \
         is_active, date_joined) VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7) RETURNING ",
        user_columns!()
    );
    on_pool!(db, pool => sqlx::query_as::<_, User>(sql)
        .bind(new.username)
        .bind(new.email)
        .bind(new.password_hash)
        .bind(new.user_type)
        .bind(new.is_staff)
        .bind(new.is_superuser)
        .bind(super::now())
        .fetch_one(pool)
        .await)
}

pub async fn by_id(db: &Db, id: i64) -> sqlx::Result<Option<User>> {
    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, User>(sql).bind(id).fetch_optional(pool).await)
}

pub async fn username_taken(db: &Db, username: &str) -> sqlx::Result<bool> {
    let sql = "SELECT COUNT(*) FROM users WHERE username = $1";
    let n: i64 =
        on_pool!(db, pool => sqlx::query_scalar(sql).bind(username).fetch_one(pool).await)?;
    Ok(n > 0)
}

pub async fn credentials(db: &Db, username: &str) -> sqlx::Result<Option<Credentials>> {
    let sql = "SELECT id, password_hash, is_active FROM users WHERE username = $1";
    on_pool!(db, pool => sqlx::query_as::<_, Credentials>(sql)
        .bind(username)
        .fetch_optional(pool)
        .await)
}

pub async fn record_login(db: &Db, id: i64) -> sqlx::Result<()> {
    let sql = "UPDATE users SET last_login = $1 WHERE id = $2";
    on_pool!(db, pool => sqlx::query(sql).bind(super::now()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Stores a new password hash and, in the same transaction, ends every session of the user but
/// the one whose key hash is `keep_session` and revokes all their bearer tokens. Returns the
/// sessions ended and the tokens revoked; `None` (and no change) when the user is gone.
pub async fn replace_password(
    db: &Db,
    id: i64,
    password_hash: &str,
    keep_session: Option<&str>,
) -> sqlx::Result<Option<(u64, u64)>> {
    let _turn = db.write_turn().await;
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        let updated = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let mut ended = None;
        if updated == 1 {
            let sessions = sqlx::query(
                "DELETE FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR key_hash <> $2)",
            )
            .bind(id)
            .bind(keep_session)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let tokens = sqlx::query("DELETE FROM api_tokens WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            ended = Some((sessions, tokens));
        }
        tx.commit().await?;
        Ok(ended)
    })
}

/// A window over all users, by id.
pub async fn page(db: &Db, window: Window) -> sqlx::Result<Vec<User>> {
    let sql = if window.from_newest() {
        concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id > $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        )
    } else {
        concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3"
        )
    };
    let rows = on_pool!(db, pool => sqlx::query_as::<_, User>(sql)
        .bind(window.lower())
        .bind(window.upper())
        .bind(window.limit)
        .fetch_all(pool)
        .await)?;
    Ok(window.ascending(rows))
}

/// Users with the given ids, in id order; missing ids are simply absent.
pub async fn by_ids(db: &Db, ids: &[i64]) -> sqlx::Result<Vec<User>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(concat!("SELECT ", user_columns!(), " FROM users WHERE id IN ("));
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        q.push(") ORDER BY id");
        q.build_query_as::<User>().fetch_all(pool).await
    })
}

/// Users with the given usernames, in id order; unknown names are simply absent.
pub async fn by_usernames(db: &Db, usernames: &[String]) -> sqlx::Result<Vec<User>> {
    if usernames.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(concat!("SELECT ", user_columns!(), " FROM users WHERE username IN ("));
        let mut list = q.separated(", ");
        for name in usernames {
            list.push_bind(name.as_str());
        }
        q.push(") ORDER BY id");
        q.build_query_as::<User>().fetch_all(pool).await
    })
}
