//! The `users` table.

use chrono::{DateTime, Utc};

use super::{contains_pattern, on_pool, on_writer, Db, Window};
use crate::domain::UserType;

/// Every column but the password hash, in `User`'s field order.
macro_rules! user_columns {
    () => {
        "id, username, email, user_type, first_name, last_name, is_staff, is_superuser, \
         is_active, date_joined, last_login"
    };
}
pub(crate) use user_columns;

/// An account, without its password hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub user_type: UserType,
    pub first_name: String,
    pub last_name: String,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub is_active: bool,
    pub date_joined: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

/// The fields of an account to insert with [`create`]; `password_hash` is the PHC string.
pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub user_type: UserType,
    pub is_staff: bool,
    pub is_superuser: bool,
}

/// What a login checks: the account's id, password hash (PHC string) and whether it may sign in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: i64,
    pub password_hash: String,
    pub is_active: bool,
}

/// Inserts a user; a taken username surfaces as a unique violation.
pub async fn create(db: &Db, new: &NewUser<'_>) -> sqlx::Result<User> {
    let sql = concat!(
        "INSERT INTO users (username, email, password_hash, user_type, is_staff, is_superuser, \
         is_active, date_joined) VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7) RETURNING ",
        user_columns!()
    );
    on_writer!(db, pool => sqlx::query_as::<_, User>(sql)
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

/// The user with this id, active or not.
pub async fn by_id(db: &Db, id: i64) -> sqlx::Result<Option<User>> {
    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, User>(sql).bind(id).fetch_optional(pool).await)
}

/// True when a user has exactly this username (compared as the database compares text).
pub async fn username_taken(db: &Db, username: &str) -> sqlx::Result<bool> {
    let sql = "SELECT COUNT(*) FROM users WHERE username = $1";
    let n: i64 =
        on_pool!(db, pool => sqlx::query_scalar(sql).bind(username).fetch_one(pool).await)?;
    Ok(n > 0)
}

/// The login credentials of the user with this username, if any.
pub async fn credentials(db: &Db, username: &str) -> sqlx::Result<Option<Credentials>> {
    let sql = "SELECT id, password_hash, is_active FROM users WHERE username = $1";
    on_pool!(db, pool => sqlx::query_as::<_, Credentials>(sql)
        .bind(username)
        .fetch_optional(pool)
        .await)
}

/// Sets the user's password hash to `new` if it is still `old`; returns whether it was.
pub async fn replace_password_hash(db: &Db, id: i64, old: &str, new: &str) -> sqlx::Result<bool> {
    let sql = "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2";
    on_writer!(db, pool => sqlx::query(sql)
        .bind(id)
        .bind(old)
        .bind(new)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1))
}

/// Sets the user's `last_login` to now.
pub async fn record_login(db: &Db, id: i64) -> sqlx::Result<()> {
    let sql = "UPDATE users SET last_login = $1 WHERE id = $2";
    on_writer!(db, pool => sqlx::query(sql).bind(super::now()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
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
    on_writer!(db, pool => {
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

/// Which users an admin list shows; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Part of the username or email, any case.
    pub search: Option<String>,
    /// Exactly this account type.
    pub user_type: Option<UserType>,
    /// Staff or superuser status (either counts as staff).
    pub staff: Option<bool>,
    pub active: Option<bool>,
}

/// `FROM` and `WHERE` of a filtered user list: `$1` the search pattern, `$2` the type, `$3` the
/// staff flag, `$4` the active flag, each bound as NULL when it does not filter, so the query is
/// one text for both backends whatever filters are set.
macro_rules! user_filter {
    () => {
        " FROM users WHERE ($1 IS NULL OR LOWER(username) LIKE $1 ESCAPE '!' \
         OR LOWER(email) LIKE $1 ESCAPE '!') \
         AND ($2 IS NULL OR user_type = $2) \
         AND ($3 IS NULL OR (is_staff OR is_superuser) = $3) \
         AND ($4 IS NULL OR is_active = $4)"
    };
}

/// How many users match the filter.
pub async fn count_matching(db: &Db, filter: &UserFilter) -> sqlx::Result<i64> {
    let sql = concat!("SELECT COUNT(*)", user_filter!());
    let pattern = filter.search.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql)
        .bind(pattern)
        .bind(filter.user_type)
        .bind(filter.staff)
        .bind(filter.active)
        .fetch_one(pool)
        .await)
}

/// A page of the matching users, by username: at most `limit`, skipping the first `offset`.
pub async fn matching(
    db: &Db,
    filter: &UserFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<User>> {
    let sql = concat!(
        "SELECT ",
        user_columns!(),
        user_filter!(),
        " ORDER BY username LIMIT $5 OFFSET $6"
    );
    let pattern = filter.search.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, User>(sql)
        .bind(pattern)
        .bind(filter.user_type)
        .bind(filter.staff)
        .bind(filter.active)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

/// The newest `limit` accounts, newest first.
pub async fn newest(db: &Db, limit: i64) -> sqlx::Result<Vec<User>> {
    let sql = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users ORDER BY id DESC LIMIT $1"
    );
    on_pool!(db, pool => sqlx::query_as::<_, User>(sql).bind(limit).fetch_all(pool).await)
}

/// The fields an admin may edit, all written at once by [`update`].
pub struct UserChanges<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub user_type: UserType,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub is_active: bool,
}

/// Saves the editable fields and returns the user as saved; `None` when the user is gone.
pub async fn update(db: &Db, id: i64, changes: &UserChanges<'_>) -> sqlx::Result<Option<User>> {
    let sql = concat!(
        "UPDATE users SET first_name = $1, last_name = $2, email = $3, user_type = $4, \
         is_staff = $5, is_superuser = $6, is_active = $7 WHERE id = $8 RETURNING ",
        user_columns!()
    );
    on_writer!(db, pool => sqlx::query_as::<_, User>(sql)
        .bind(changes.first_name)
        .bind(changes.last_name)
        .bind(changes.email)
        .bind(changes.user_type)
        .bind(changes.is_staff)
        .bind(changes.is_superuser)
        .bind(changes.is_active)
        .bind(id)
        .fetch_optional(pool)
        .await)
}

/// Deletes the user with everything that cascades (memberships, messages, sessions, tokens, AI
/// chats); chats they owned keep going without an owner. Returns the ids of the chats they took
/// part in, ascending, so their open sockets can be closed; `None` when there was no such user.
pub async fn delete(db: &Db, id: i64) -> sqlx::Result<Option<Vec<i64>>> {
    // Every change to a chat locks the chat's row first and then, through its foreign keys,
    // the rows of the users it names (a sender, a mentioned member…). Deleting the user locks
    // their row and then, through `chats.owner_id`, their chats' rows: the other order, which on
    // PostgreSQL could deadlock with a send. So the chats they take part in or own are locked
    // first, in id order as batches of sends lock them.
    let lock = match db {
        Db::Sqlite(_) => {
            "UPDATE chats SET last_seq = last_seq WHERE owner_id = $1 \
             OR id IN (SELECT chat_id FROM chat_participants WHERE user_id = $1)"
        }
        Db::Postgres(_) => {
            "SELECT id FROM chats WHERE owner_id = $1 \
             OR id IN (SELECT chat_id FROM chat_participants WHERE user_id = $1) \
             ORDER BY id FOR NO KEY UPDATE"
        }
    };
    on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(lock).bind(id).execute(&mut *tx).await?;
        let chats: Vec<i64> = sqlx::query_scalar(
            "SELECT chat_id FROM chat_participants WHERE user_id = $1 ORDER BY chat_id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let removed = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((removed == 1).then_some(chats))
    })
}

/// Users whose username has a character outside ASCII, as `(id, username)`: the only ones whose
/// NFKC form can differ from what is stored (ASCII text is its own NFKC form).
pub async fn with_non_ascii_names(db: &Db) -> sqlx::Result<Vec<(i64, String)>> {
    let sql = match db {
        // GLOB's bracket expression works on characters: any one outside U+0001..U+007F.
        Db::Sqlite(_) => "SELECT id, username FROM users WHERE username GLOB '*[^\u{1}-\u{7f}]*'",
        Db::Postgres(_) => "SELECT id, username FROM users WHERE username ~ '[^\\x01-\\x7f]'",
    };
    on_pool!(db, pool => sqlx::query_as::<_, (i64, String)>(sql).fetch_all(pool).await)
}

/// Renames user `id` to `username` unless another user already has that name; `true` when
/// renamed.
pub async fn rename_if_free(db: &Db, id: i64, username: &str) -> sqlx::Result<bool> {
    let sql = "UPDATE users SET username = $1 WHERE id = $2 \
               AND NOT EXISTS (SELECT 1 FROM users WHERE username = $1)";
    let done = on_writer!(db, pool => sqlx::query(sql)
        .bind(username)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}
