//! What the administration area reads and writes beyond the other store modules: counts,
//! filtered and offset-paged lists over every user, chat, message and AI conversation, and the
//! writes only staff may make.
//!
//! Filters are bound as nullable parameters (`$n IS NULL OR …`), so each query is one text for
//! both backends whatever filters are set.

use chrono::{DateTime, Utc};

use super::{on_pool, users::user_columns, users::User, Db};

/// A case-insensitive "contains" pattern for `LOWER(column) LIKE $n ESCAPE '!'`: the search text
/// is matched literally, wildcards included.
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

#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Counts {
    pub users: i64,
    pub active_users: i64,
    pub staff: i64,
    pub chats: i64,
    pub messages: i64,
    pub ai_chats: i64,
    pub ai_messages: i64,
    pub ai_tokens_today: i64,
}

/// The dashboard's figures; `today` is the UTC day as `YYYY-MM-DD`, as `ai_usage.day` stores it.
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

// ---------------------------------------------------------------------------------------------
// Users

#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Part of the username or email, any case.
    pub search: Option<String>,
    pub user_type: Option<String>,
    pub staff: Option<bool>,
    pub active: Option<bool>,
}

macro_rules! user_filter {
    () => {
        " FROM users WHERE ($1 IS NULL OR LOWER(username) LIKE $1 ESCAPE '!' \
         OR LOWER(email) LIKE $1 ESCAPE '!') \
         AND ($2 IS NULL OR user_type = $2) \
         AND ($3 IS NULL OR (is_staff OR is_superuser) = $3) \
         AND ($4 IS NULL OR is_active = $4)"
    };
}

pub async fn count_users(db: &Db, filter: &UserFilter) -> sqlx::Result<i64> {
    let sql = concat!("SELECT COUNT(*)", user_filter!());
    let pattern = filter.search.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql)
        .bind(pattern)
        .bind(filter.user_type.as_deref())
        .bind(filter.staff)
        .bind(filter.active)
        .fetch_one(pool)
        .await)
}

/// A page of the matching users, by username.
pub async fn users(
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
        .bind(filter.user_type.as_deref())
        .bind(filter.staff)
        .bind(filter.active)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

/// The newest accounts, newest first.
pub async fn newest_users(db: &Db, limit: i64) -> sqlx::Result<Vec<User>> {
    let sql = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users ORDER BY id DESC LIMIT $1"
    );
    on_pool!(db, pool => sqlx::query_as::<_, User>(sql).bind(limit).fetch_all(pool).await)
}

pub struct UserChanges<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub user_type: &'a str,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub is_active: bool,
}

/// Saves the editable fields; `None` when the user is gone.
pub async fn update_user(
    db: &Db,
    id: i64,
    changes: &UserChanges<'_>,
) -> sqlx::Result<Option<User>> {
    let _turn = db.write_turn().await;
    let sql = concat!(
        "UPDATE users SET first_name = $1, last_name = $2, email = $3, user_type = $4, \
         is_staff = $5, is_superuser = $6, is_active = $7 WHERE id = $8 RETURNING ",
        user_columns!()
    );
    on_pool!(db, pool => sqlx::query_as::<_, User>(sql)
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
/// chats); chats they owned keep going without an owner. Returns the chats they took part in,
/// so their open sockets can be closed; `None` when there was no such user.
pub async fn delete_user(db: &Db, id: i64) -> sqlx::Result<Option<Vec<i64>>> {
    let _turn = db.write_turn().await;
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
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

/// The chats the user takes part in.
pub async fn chat_ids_of_user(db: &Db, user_id: i64) -> sqlx::Result<Vec<i64>> {
    let sql = "SELECT chat_id FROM chat_participants WHERE user_id = $1 ORDER BY chat_id";
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(user_id).fetch_all(pool).await)
}

// ---------------------------------------------------------------------------------------------
// Chats

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChatRow {
    pub id: i64,
    pub name: String,
    pub owner_id: Option<i64>,
    pub owner_username: Option<String>,
    pub created_at: DateTime<Utc>,
    pub participant_count: i64,
    pub message_count: i64,
}

macro_rules! chat_select {
    () => {
        "SELECT c.id, c.name, c.owner_id, o.username AS owner_username, c.created_at, \
         (SELECT COUNT(*) FROM chat_participants p WHERE p.chat_id = c.id) AS participant_count, \
         (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id) AS message_count \
         FROM chats c LEFT JOIN users o ON o.id = c.owner_id "
    };
}

pub async fn count_chats(db: &Db, search: Option<&str>) -> sqlx::Result<i64> {
    let sql = "SELECT COUNT(*) FROM chats WHERE $1 IS NULL OR LOWER(name) LIKE $1 ESCAPE '!'";
    let pattern = search.map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(pattern).fetch_one(pool).await)
}

/// A page of the chats whose name contains `search`, newest first.
pub async fn chats(
    db: &Db,
    search: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<ChatRow>> {
    let sql = concat!(
        chat_select!(),
        "WHERE $1 IS NULL OR LOWER(c.name) LIKE $1 ESCAPE '!' ORDER BY c.id DESC LIMIT $2 OFFSET $3"
    );
    let pattern = search.map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, ChatRow>(sql)
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

pub async fn chat(db: &Db, id: i64) -> sqlx::Result<Option<ChatRow>> {
    let sql = concat!(chat_select!(), "WHERE c.id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, ChatRow>(sql).bind(id).fetch_optional(pool).await)
}

// ---------------------------------------------------------------------------------------------
// Messages

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub chat_id: Option<i64>,
    /// The sender's exact username.
    pub sender: Option<String>,
    /// Part of the content, any case.
    pub search: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: i64,
    pub chat_id: i64,
    pub chat_name: String,
    pub seq: i64,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub sender_id: i64,
    pub sender_username: String,
}

macro_rules! message_select {
    () => {
        "SELECT m.id, m.chat_id, c.name AS chat_name, m.seq, m.content, m.created_at, \
         m.sender_id, u.username AS sender_username \
         FROM messages m JOIN users u ON u.id = m.sender_id JOIN chats c ON c.id = m.chat_id "
    };
}

macro_rules! message_filter {
    () => {
        "WHERE ($1 IS NULL OR m.chat_id = $1) AND ($2 IS NULL OR u.username = $2) \
         AND ($3 IS NULL OR LOWER(m.content) LIKE $3 ESCAPE '!')"
    };
}

pub async fn count_messages(db: &Db, filter: &MessageFilter) -> sqlx::Result<i64> {
    let sql = concat!(
        "SELECT COUNT(*) FROM messages m JOIN users u ON u.id = m.sender_id ",
        message_filter!()
    );
    let pattern = filter.search.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql)
        .bind(filter.chat_id)
        .bind(filter.sender.as_deref())
        .bind(pattern)
        .fetch_one(pool)
        .await)
}

/// A page of the matching messages, newest first.
pub async fn messages(
    db: &Db,
    filter: &MessageFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<MessageRow>> {
    let sql = concat!(
        message_select!(),
        message_filter!(),
        " ORDER BY m.id DESC LIMIT $4 OFFSET $5"
    );
    let pattern = filter.search.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, MessageRow>(sql)
        .bind(filter.chat_id)
        .bind(filter.sender.as_deref())
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

pub async fn message(db: &Db, id: i64) -> sqlx::Result<Option<MessageRow>> {
    let sql = concat!(message_select!(), "WHERE m.id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, MessageRow>(sql).bind(id).fetch_optional(pool).await)
}

/// Deletes a message; returns its chat, or `None` when there was no such message.
pub async fn delete_message(db: &Db, id: i64) -> sqlx::Result<Option<i64>> {
    let _turn = db.write_turn().await;
    let sql = "DELETE FROM messages WHERE id = $1 RETURNING chat_id";
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(id).fetch_optional(pool).await)
}

// ---------------------------------------------------------------------------------------------
// AI conversations

#[derive(Debug, Clone, Default)]
pub struct AiChatFilter {
    /// Part of the title, any case.
    pub search: Option<String>,
    /// Part of the owner's username, any case.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiChatRow {
    pub id: i64,
    pub user_id: i64,
    pub owner_username: String,
    pub title: String,
    pub system_prompt: String,
    pub related_chat_id: Option<i64>,
    pub related_chat_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub message_count: i64,
    pub total_tokens: i64,
}

macro_rules! ai_chat_select {
    () => {
        "SELECT a.id, a.user_id, u.username AS owner_username, a.title, a.system_prompt, \
         a.related_chat_id, c.name AS related_chat_name, a.created_at, a.updated_at, \
         (SELECT COUNT(*) FROM ai_messages m WHERE m.ai_chat_id = a.id) AS message_count, \
         (SELECT CAST(COALESCE(SUM(m.total_tokens), 0) AS BIGINT) FROM ai_messages m \
          WHERE m.ai_chat_id = a.id) AS total_tokens \
         FROM ai_chats a JOIN users u ON u.id = a.user_id LEFT JOIN chats c ON c.id = a.related_chat_id "
    };
}

macro_rules! ai_chat_filter {
    () => {
        "WHERE ($1 IS NULL OR LOWER(a.title) LIKE $1 ESCAPE '!') \
         AND ($2 IS NULL OR LOWER(u.username) LIKE $2 ESCAPE '!')"
    };
}

pub async fn count_ai_chats(db: &Db, filter: &AiChatFilter) -> sqlx::Result<i64> {
    let sql = concat!(
        "SELECT COUNT(*) FROM ai_chats a JOIN users u ON u.id = a.user_id ",
        ai_chat_filter!()
    );
    let title = filter.search.as_deref().map(contains_pattern);
    let owner = filter.owner.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(title).bind(owner).fetch_one(pool).await)
}

/// A page of the matching AI chats, newest-updated first.
pub async fn ai_chats(
    db: &Db,
    filter: &AiChatFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<AiChatRow>> {
    let sql = concat!(
        ai_chat_select!(),
        ai_chat_filter!(),
        " ORDER BY a.updated_at DESC, a.id DESC LIMIT $3 OFFSET $4"
    );
    let title = filter.search.as_deref().map(contains_pattern);
    let owner = filter.owner.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, AiChatRow>(sql)
        .bind(title)
        .bind(owner)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

pub async fn ai_chat(db: &Db, id: i64) -> sqlx::Result<Option<AiChatRow>> {
    let sql = concat!(ai_chat_select!(), "WHERE a.id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, AiChatRow>(sql).bind(id).fetch_optional(pool).await)
}

#[derive(Debug, Clone, Default)]
pub struct AiMessageFilter {
    pub ai_chat_id: Option<i64>,
    pub role: Option<String>,
    /// Part of the owner's username, any case.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiMessageRow {
    pub id: i64,
    pub ai_chat_id: i64,
    pub ai_chat_title: String,
    pub owner_username: String,
    pub role: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    /// False while the reply is still being generated.
    pub complete: bool,
}

macro_rules! ai_message_from {
    () => {
        " FROM ai_messages m JOIN ai_chats a ON a.id = m.ai_chat_id JOIN users u ON u.id = a.user_id \
         WHERE ($1 IS NULL OR m.ai_chat_id = $1) AND ($2 IS NULL OR m.role = $2) \
         AND ($3 IS NULL OR LOWER(u.username) LIKE $3 ESCAPE '!')"
    };
}

macro_rules! ai_message_select {
    () => {
        "SELECT m.id, m.ai_chat_id, a.title AS ai_chat_title, u.username AS owner_username, m.role, \
         m.content, m.created_at, m.prompt_tokens, m.completion_tokens, m.total_tokens, m.model, \
         m.finish_reason, m.complete"
    };
}

pub async fn count_ai_messages(db: &Db, filter: &AiMessageFilter) -> sqlx::Result<i64> {
    let sql = concat!("SELECT COUNT(*)", ai_message_from!());
    let owner = filter.owner.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql)
        .bind(filter.ai_chat_id)
        .bind(filter.role.as_deref())
        .bind(owner)
        .fetch_one(pool)
        .await)
}

/// A page of the matching AI messages: newest first, or in conversation order (oldest first)
/// for one chat's page.
pub async fn ai_messages(
    db: &Db,
    filter: &AiMessageFilter,
    oldest_first: bool,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<AiMessageRow>> {
    let sql = if oldest_first {
        concat!(
            ai_message_select!(),
            ai_message_from!(),
            " ORDER BY m.id LIMIT $4 OFFSET $5"
        )
    } else {
        concat!(
            ai_message_select!(),
            ai_message_from!(),
            " ORDER BY m.id DESC LIMIT $4 OFFSET $5"
        )
    };
    let owner = filter.owner.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, AiMessageRow>(sql)
        .bind(filter.ai_chat_id)
        .bind(filter.role.as_deref())
        .bind(owner)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

// ---------------------------------------------------------------------------------------------
// Token usage

/// Inclusive bounds on `ai_usage.day` (`YYYY-MM-DD`); open ends compare as the extremes.
#[derive(Debug, Clone, Default)]
pub struct DayRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl DayRange {
    fn lower(&self) -> &str {
        self.from.as_deref().unwrap_or("0000-00-00")
    }

    fn upper(&self) -> &str {
        self.to.as_deref().unwrap_or("9999-99-99")
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageTotal {
    /// The username or model the row adds up.
    pub label: String,
    pub replies: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

macro_rules! usage_sums {
    () => {
        "COUNT(*) AS replies, CAST(COALESCE(SUM(g.prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
         CAST(COALESCE(SUM(g.completion_tokens), 0) AS BIGINT) AS completion_tokens, \
         CAST(COALESCE(SUM(g.total_tokens), 0) AS BIGINT) AS total_tokens "
    };
}

/// How many users used tokens in the range.
pub async fn count_usage_users(db: &Db, days: &DayRange) -> sqlx::Result<i64> {
    let sql = "SELECT COUNT(DISTINCT user_id) FROM ai_usage WHERE day >= $1 AND day <= $2";
    on_pool!(db, pool => sqlx::query_scalar(sql)
        .bind(days.lower())
        .bind(days.upper())
        .fetch_one(pool)
        .await)
}

/// Totals per user, biggest first.
pub async fn usage_by_user(
    db: &Db,
    days: &DayRange,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<UsageTotal>> {
    let sql = concat!(
        "SELECT u.username AS label, ",
        usage_sums!(),
        "FROM ai_usage g JOIN users u ON u.id = g.user_id WHERE g.day >= $1 AND g.day <= $2 \
         GROUP BY u.id, u.username ORDER BY SUM(g.total_tokens) DESC, u.username LIMIT $3 OFFSET $4"
    );
    on_pool!(db, pool => sqlx::query_as::<_, UsageTotal>(sql)
        .bind(days.lower())
        .bind(days.upper())
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

/// Totals per model, biggest first (a deployment uses a handful of models).
pub async fn usage_by_model(db: &Db, days: &DayRange) -> sqlx::Result<Vec<UsageTotal>> {
    let sql = concat!(
        "SELECT g.model AS label, ",
        usage_sums!(),
        "FROM ai_usage g WHERE g.day >= $1 AND g.day <= $2 \
         GROUP BY g.model ORDER BY SUM(g.total_tokens) DESC, g.model"
    );
    on_pool!(db, pool => sqlx::query_as::<_, UsageTotal>(sql)
        .bind(days.lower())
        .bind(days.upper())
        .fetch_all(pool)
        .await)
}

/// The grand total over the range.
pub async fn usage_total(db: &Db, days: &DayRange) -> sqlx::Result<UsageTotal> {
    let sql = concat!(
        "SELECT 'all' AS label, ",
        usage_sums!(),
        "FROM ai_usage g WHERE g.day >= $1 AND g.day <= $2"
    );
    on_pool!(db, pool => sqlx::query_as::<_, UsageTotal>(sql)
        .bind(days.lower())
        .bind(days.upper())
        .fetch_one(pool)
        .await)
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
