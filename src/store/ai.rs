//! The `ai_chats`, `ai_messages` and `ai_usage` tables.

use chrono::{DateTime, Utc};

use super::{on_pool, Db, Window};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiChat {
    pub id: i64,
    pub user_id: i64,
    pub user_username: String,
    pub related_chat_id: Option<i64>,
    pub related_chat_name: Option<String>,
    pub title: String,
    pub system_prompt: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub message_count: i64,
}

macro_rules! ai_chat_select {
    () => {
        "SELECT a.id, a.user_id, u.username AS user_username, a.related_chat_id, \
         c.name AS related_chat_name, a.title, a.system_prompt, a.created_at, a.updated_at, \
         (SELECT COUNT(*) FROM ai_messages m WHERE m.ai_chat_id = a.id AND m.complete) AS message_count \
         FROM ai_chats a JOIN users u ON u.id = a.user_id LEFT JOIN chats c ON c.id = a.related_chat_id "
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiMessage {
    pub id: i64,
    pub ai_chat_id: i64,
    pub role: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
}

macro_rules! ai_message_columns {
    () => {
        "m.id, m.ai_chat_id, m.role, m.content, m.created_at, m.prompt_tokens, m.completion_tokens, \
         m.total_tokens, m.model, m.finish_reason"
    };
}

/// The same columns, unqualified, for `RETURNING`.
macro_rules! ai_message_returning {
    () => {
        "id, ai_chat_id, role, content, created_at, prompt_tokens, completion_tokens, total_tokens, \
         model, finish_reason"
    };
}

/// Token counts as a provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    pub prompt: i64,
    pub completion: i64,
    pub total: i64,
}

pub struct AiChatFields<'a> {
    pub title: &'a str,
    pub system_prompt: &'a str,
    pub related_chat_id: Option<i64>,
}

pub async fn create(db: &Db, user_id: i64, fields: &AiChatFields<'_>) -> sqlx::Result<i64> {
    let now = super::now();
    let sql = "INSERT INTO ai_chats (user_id, related_chat_id, title, system_prompt, created_at, updated_at) \
               VALUES ($1, $2, $3, $4, $5, $5) RETURNING id";
    on_pool!(db, pool => sqlx::query_scalar(sql)
        .bind(user_id)
        .bind(fields.related_chat_id)
        .bind(fields.title)
        .bind(fields.system_prompt)
        .bind(now)
        .fetch_one(pool)
        .await)
}

/// The AI chat if `user_id` owns it.
pub async fn owned(db: &Db, id: i64, user_id: i64) -> sqlx::Result<Option<AiChat>> {
    let sql = concat!(ai_chat_select!(), "WHERE a.id = $1 AND a.user_id = $2");
    on_pool!(db, pool => sqlx::query_as::<_, AiChat>(sql).bind(id).bind(user_id).fetch_optional(pool).await)
}

/// A page of the user's AI chats, newest-updated first, after the `(updated_at, id)` cursor.
pub async fn page_for_user(
    db: &Db,
    user_id: i64,
    cursor: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> sqlx::Result<Vec<AiChat>> {
    let Some((at, id)) = cursor else {
        let sql = concat!(
            ai_chat_select!(),
            "WHERE a.user_id = $1 ORDER BY a.updated_at DESC, a.id DESC LIMIT $2"
        );
        return on_pool!(db, pool => sqlx::query_as::<_, AiChat>(sql).bind(user_id).bind(limit).fetch_all(pool).await);
    };
    let sql = concat!(
        ai_chat_select!(),
        "WHERE a.user_id = $1 AND (a.updated_at < $2 OR (a.updated_at = $2 AND a.id < $3)) \
         ORDER BY a.updated_at DESC, a.id DESC LIMIT $4"
    );
    on_pool!(db, pool => sqlx::query_as::<_, AiChat>(sql)
        .bind(user_id)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(pool)
        .await)
}

pub async fn update(db: &Db, id: i64, fields: &AiChatFields<'_>) -> sqlx::Result<()> {
    let sql = "UPDATE ai_chats SET title = $1, system_prompt = $2, related_chat_id = $3, updated_at = $4 WHERE id = $5";
    on_pool!(db, pool => sqlx::query(sql)
        .bind(fields.title)
        .bind(fields.system_prompt)
        .bind(fields.related_chat_id)
        .bind(super::now())
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn touch(db: &Db, id: i64) -> sqlx::Result<()> {
    let sql = "UPDATE ai_chats SET updated_at = $1 WHERE id = $2";
    on_pool!(db, pool => sqlx::query(sql).bind(super::now()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn delete(db: &Db, id: i64) -> sqlx::Result<()> {
    let sql = "DELETE FROM ai_chats WHERE id = $1";
    on_pool!(db, pool => sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Saves a message. An assistant reply starts incomplete (hidden from lists) and is filled in
/// by `finish_reply` when the generation ends.
pub async fn insert_message(
    db: &Db,
    ai_chat_id: i64,
    role: &str,
    content: &str,
    complete: bool,
    model: Option<&str>,
) -> sqlx::Result<AiMessage> {
    let _turn = db.write_turn().await;
    let sql = concat!(
        "INSERT INTO ai_messages (ai_chat_id, role, content, created_at, complete, model) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        ai_message_returning!()
    );
    on_pool!(db, pool => sqlx::query_as::<_, AiMessage>(sql)
        .bind(ai_chat_id)
        .bind(role)
        .bind(content)
        .bind(super::now())
        .bind(complete)
        .bind(model)
        .fetch_one(pool)
        .await)
}

/// Completes a reply with its text, token counts and why it ended.
pub async fn finish_reply(
    db: &Db,
    id: i64,
    content: &str,
    tokens: Option<Tokens>,
    finish_reason: &str,
) -> sqlx::Result<Option<AiMessage>> {
    let _turn = db.write_turn().await;
    let sql = concat!(
        "UPDATE ai_messages SET content = $1, prompt_tokens = $2, completion_tokens = $3, \
         total_tokens = $4, finish_reason = $5, complete = TRUE WHERE id = $6 RETURNING ",
        ai_message_returning!()
    );
    on_pool!(db, pool => sqlx::query_as::<_, AiMessage>(sql)
        .bind(content)
        .bind(tokens.map(|t| t.prompt))
        .bind(tokens.map(|t| t.completion))
        .bind(tokens.map(|t| t.total))
        .bind(finish_reason)
        .bind(id)
        .fetch_optional(pool)
        .await)
}

pub async fn delete_message(db: &Db, id: i64) -> sqlx::Result<()> {
    let sql = "DELETE FROM ai_messages WHERE id = $1";
    on_pool!(db, pool => sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Replies left unfinished by a stopped process: kept, marked `interrupted`, if they have text;
/// removed if not. Only rows older than any reply can run, so other nodes' replies in progress
/// are left alone.
pub async fn settle_interrupted(db: &Db) -> sqlx::Result<()> {
    let cutoff = super::now() - chrono::Duration::minutes(15);
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM ai_messages WHERE complete = FALSE AND content = '' AND created_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE ai_messages SET complete = TRUE, finish_reason = 'interrupted' \
             WHERE complete = FALSE AND created_at < $1",
        )
        .bind(cutoff)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// The conversation so far, as the model sees it: complete user and assistant messages in order.
pub async fn history(db: &Db, ai_chat_id: i64) -> sqlx::Result<Vec<AiMessage>> {
    let sql = concat!(
        "SELECT ",
        ai_message_columns!(),
        " FROM ai_messages m WHERE m.ai_chat_id = $1 AND m.complete AND m.role IN ('user', 'assistant') ORDER BY m.id"
    );
    on_pool!(db, pool => sqlx::query_as::<_, AiMessage>(sql).bind(ai_chat_id).fetch_all(pool).await)
}

/// A window of one AI chat's complete messages, oldest first.
pub async fn messages_in_chat(
    db: &Db,
    ai_chat_id: i64,
    window: Window,
) -> sqlx::Result<Vec<AiMessage>> {
    let sql = if window.from_newest() {
        concat!(
            "SELECT ",
            ai_message_columns!(),
            " FROM ai_messages m WHERE m.ai_chat_id = $1 AND m.complete \
                 AND m.id > $2 AND m.id < $3 ORDER BY m.id DESC LIMIT $4"
        )
    } else {
        concat!(
            "SELECT ",
            ai_message_columns!(),
            " FROM ai_messages m WHERE m.ai_chat_id = $1 AND m.complete \
                 AND m.id > $2 AND m.id < $3 ORDER BY m.id LIMIT $4"
        )
    };
    let rows = on_pool!(db, pool => sqlx::query_as::<_, AiMessage>(sql)
        .bind(ai_chat_id)
        .bind(window.lower())
        .bind(window.upper())
        .bind(window.limit)
        .fetch_all(pool)
        .await)?;
    Ok(window.ascending(rows))
}

/// A window over all of a user's complete AI messages, oldest first.
pub async fn messages_for_user(
    db: &Db,
    user_id: i64,
    window: Window,
) -> sqlx::Result<Vec<AiMessage>> {
    let sql = if window.from_newest() {
        concat!("SELECT ", ai_message_columns!(), " FROM ai_messages m JOIN ai_chats a ON a.id = m.ai_chat_id \
                 WHERE a.user_id = $1 AND m.complete AND m.id > $2 AND m.id < $3 ORDER BY m.id DESC LIMIT $4")
    } else {
        concat!("SELECT ", ai_message_columns!(), " FROM ai_messages m JOIN ai_chats a ON a.id = m.ai_chat_id \
                 WHERE a.user_id = $1 AND m.complete AND m.id > $2 AND m.id < $3 ORDER BY m.id LIMIT $4")
    };
    let rows = on_pool!(db, pool => sqlx::query_as::<_, AiMessage>(sql)
        .bind(user_id)
        .bind(window.lower())
        .bind(window.upper())
        .bind(window.limit)
        .fetch_all(pool)
        .await)?;
    Ok(window.ascending(rows))
}

/// The message if it is complete and in one of the user's AI chats.
pub async fn message_visible_to(db: &Db, id: i64, user_id: i64) -> sqlx::Result<Option<AiMessage>> {
    let sql = concat!(
        "SELECT ",
        ai_message_columns!(),
        " FROM ai_messages m JOIN ai_chats a ON a.id = m.ai_chat_id WHERE m.id = $1 AND a.user_id = $2 AND m.complete"
    );
    on_pool!(db, pool => sqlx::query_as::<_, AiMessage>(sql).bind(id).bind(user_id).fetch_optional(pool).await)
}

/// The newest `per_chat` complete messages of each AI chat, by chat then id, in one query.
pub async fn latest_per_chat(
    db: &Db,
    ai_chat_ids: &[i64],
    per_chat: i64,
) -> sqlx::Result<Vec<AiMessage>> {
    if ai_chat_ids.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(concat!(
            "SELECT ",
            ai_message_columns!(),
            " FROM (SELECT a.id AS chat_id, COALESCE((SELECT m2.id FROM ai_messages m2 WHERE m2.ai_chat_id = a.id \
             AND m2.complete ORDER BY m2.id DESC LIMIT 1 OFFSET "
        ));
        q.push_bind(per_chat - 1);
        q.push("), 0) AS first_id FROM ai_chats a WHERE a.id IN (");
        let mut list = q.separated(", ");
        for id in ai_chat_ids {
            list.push_bind(*id);
        }
        q.push(")) b JOIN ai_messages m ON m.ai_chat_id = b.chat_id AND m.id >= b.first_id AND m.complete \
                ORDER BY m.ai_chat_id, m.id");
        q.build_query_as::<AiMessage>().fetch_all(pool).await
    })
}

pub async fn record_usage(db: &Db, user_id: i64, model: &str, tokens: Tokens) -> sqlx::Result<()> {
    let now = super::now();
    let sql = "INSERT INTO ai_usage (user_id, model, day, prompt_tokens, completion_tokens, total_tokens, created_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)";
    on_pool!(db, pool => sqlx::query(sql)
        .bind(user_id)
        .bind(model)
        .bind(now.format("%Y-%m-%d").to_string())
        .bind(tokens.prompt)
        .bind(tokens.completion)
        .bind(tokens.total)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub model: String,
    pub day: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

/// A user's token use per model and day, for days `from..=to` (`YYYY-MM-DD`).
pub async fn usage(db: &Db, user_id: i64, from: &str, to: &str) -> sqlx::Result<Vec<UsageRow>> {
    let sql = "SELECT model, day, CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
               CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
               CAST(SUM(total_tokens) AS BIGINT) AS total_tokens \
               FROM ai_usage WHERE user_id = $1 AND day >= $2 AND day <= $3 \
               GROUP BY model, day ORDER BY day, model";
    on_pool!(db, pool => sqlx::query_as::<_, UsageRow>(sql)
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await)
}
