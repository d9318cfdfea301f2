//! The `ai_chats`, `ai_messages` and `ai_usage` tables.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{contains_pattern, on_pool, on_writer, Db, Window};
use crate::domain::{AiRole, FinishReason};

/// An AI conversation with its owner's username and its related group chat's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiChat {
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    pub user_username: String,
    /// Whether the owner is staff (who may choose staff-only models).
    pub user_is_staff: bool,
    /// The linked group chat, as stored: kept when the owner leaves it, so it applies again if
    /// they rejoin. What the owner may see of it is [`AiChat::related_chat`].
    pub related_chat_id: Option<i64>,
    pub related_chat_name: Option<String>,
    /// Whether the owner takes part in the linked chat now.
    pub related_chat_member: bool,
    pub title: String,
    pub system_prompt: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Complete messages of the active branch (a reply still being generated is not counted).
    pub message_count: i64,
    /// The model it asks (`provider/model`); `None`: the server's default.
    pub model: Option<String>,
}

impl AiChat {
    /// The linked chat's id and name as the owner may see them: only while they take part in
    /// it. A user who leaves or is removed from a chat sees nothing of it through their AI chats.
    pub fn related_chat(&self) -> Option<(i64, Option<&str>)> {
        let id = self.related_chat_id.filter(|_| self.related_chat_member)?;
        Some((id, self.related_chat_name.as_deref()))
    }
}

/// `AiChat`'s columns, read from `ai_chats a` joined as `ai_chat_from!` joins it.
macro_rules! ai_chat_columns {
    () => {
        "a.id, a.user_id, u.username AS user_username, u.is_staff AS user_is_staff, a.related_chat_id, \
         c.name AS related_chat_name, EXISTS (SELECT 1 FROM chat_participants p \
         WHERE p.chat_id = a.related_chat_id AND p.user_id = a.user_id) AS related_chat_member, a.title, a.system_prompt, a.created_at, a.updated_at, \
         (SELECT COUNT(*) FROM ai_messages m WHERE m.ai_chat_id = a.id AND m.complete AND m.active) AS message_count, a.model"
    };
}

/// The `FROM` of `AiChat`'s columns: the owner as `users u`, the related chat as `chats c`.
macro_rules! ai_chat_from {
    () => {
        " FROM ai_chats a JOIN users u ON u.id = a.user_id LEFT JOIN chats c ON c.id = a.related_chat_id "
    };
}

/// `AiChat`'s columns with their `FROM`; a `WHERE` may follow.
macro_rules! ai_chat_select {
    () => {
        concat!("SELECT ", ai_chat_columns!(), ai_chat_from!())
    };
}

/// A message of an AI chat, complete or (when just inserted) not.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiMessage {
    pub id: i64,
    pub ai_chat_id: i64,
    pub role: AiRole,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    /// Whether the token counts were worked out by this server because the provider reported
    /// none (false for the user's messages).
    pub usage_estimated: bool,
    pub model: Option<String>,
    /// Why a reply ended; `None` for the user's messages and for a reply still being generated.
    pub finish_reason: Option<FinishReason>,
    /// For a reply: how many earlier messages were left out of its prompt to fit the model's
    /// context window (`None`: none).
    pub omitted_messages: Option<i64>,
    /// The message it follows: a reply's question, a question's previous reply; `None` for a
    /// first question. Messages with the same parent are alternatives (branches).
    pub parent_id: Option<i64>,
    /// On the branch the chat shows and the model is sent.
    pub active: bool,
}

macro_rules! ai_message_columns {
    () => {
        "m.id, m.ai_chat_id, m.role, m.content, m.created_at, m.prompt_tokens, m.completion_tokens, \
         m.total_tokens, m.usage_estimated, m.model, m.finish_reason, m.omitted_messages, m.parent_id, m.active"
    };
}

/// The same columns, unqualified, for `RETURNING`.
macro_rules! ai_message_returning {
    () => {
        "id, ai_chat_id, role, content, created_at, prompt_tokens, completion_tokens, total_tokens, \
         usage_estimated, model, finish_reason, omitted_messages, parent_id, active"
    };
}

/// Token counts of one reply: as the provider reported them, or (`estimated`) as this server
/// counted them when the provider reported none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    pub prompt: i64,
    pub completion: i64,
    pub total: i64,
    /// Counted by this server (`crate::ai::tokens`), not reported by the provider.
    pub estimated: bool,
}

/// The fields of an AI chat a user can set, for [`create`] and [`update`].
pub struct AiChatFields<'a> {
    pub title: &'a str,
    pub system_prompt: &'a str,
    pub related_chat_id: Option<i64>,
    /// `provider/model`; `None`: the server's default.
    pub model: Option<&'a str>,
}

/// Inserts an AI chat owned by `user_id`; returns its id.
pub async fn create(db: &Db, user_id: i64, fields: &AiChatFields<'_>) -> sqlx::Result<i64> {
    let sql = "INSERT INTO ai_chats (user_id, related_chat_id, title, system_prompt, created_at, updated_at, model) \
               VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id";
    on_writer!(db, pool => sqlx::query_scalar(sql)
        .bind(user_id)
        .bind(fields.related_chat_id)
        .bind(fields.title)
        .bind(fields.system_prompt)
        .bind(super::now())
        .bind(fields.model)
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

/// Overwrites the AI chat's title, system prompt and related chat, and its model when given,
/// and bumps `updated_at`.
/// Succeeds without change when the id is unknown.
pub async fn update(db: &Db, id: i64, fields: &AiChatFields<'_>) -> sqlx::Result<()> {
    let sql = "UPDATE ai_chats SET title = $1, system_prompt = $2, related_chat_id = $3, updated_at = $4, \
               model = COALESCE($6, model) WHERE id = $5";
    on_writer!(db, pool => sqlx::query(sql)
        .bind(fields.title)
        .bind(fields.system_prompt)
        .bind(fields.related_chat_id)
        .bind(super::now())
        .bind(id)
        .bind(fields.model)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Sets the AI chat's `updated_at` to now, moving it to the top of its owner's list.
pub async fn touch(db: &Db, id: i64) -> sqlx::Result<()> {
    let sql = "UPDATE ai_chats SET updated_at = $1 WHERE id = $2";
    on_writer!(db, pool => sqlx::query(sql).bind(super::now()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes the AI chat; its messages go with it.
pub async fn delete(db: &Db, id: i64) -> sqlx::Result<()> {
    let sql = "DELETE FROM ai_chats WHERE id = $1";
    on_writer!(db, pool => sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// A new message of an AI chat, on its active branch.
pub struct NewAiMessage<'a> {
    pub ai_chat_id: i64,
    pub role: AiRole,
    pub content: &'a str,
    /// False for a reply about to be generated: hidden from lists until `finish_reply`.
    pub complete: bool,
    pub model: Option<&'a str>,
    /// For a reply whose prompt left out earlier messages, how many.
    pub omitted: Option<i64>,
    pub parent_id: Option<i64>,
}

/// Saves a message on the active branch.
pub async fn insert_message(db: &Db, new: NewAiMessage<'_>) -> sqlx::Result<AiMessage> {
    let sql = concat!(
        "INSERT INTO ai_messages \
         (ai_chat_id, role, content, created_at, complete, model, omitted_messages, parent_id, active) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE) RETURNING ",
        ai_message_returning!()
    );
    on_writer!(db, pool => sqlx::query_as::<_, AiMessage>(sql)
        .bind(new.ai_chat_id)
        .bind(new.role)
        .bind(new.content)
        .bind(super::now())
        .bind(new.complete)
        .bind(new.model)
        .bind(new.omitted)
        .bind(new.parent_id)
        .fetch_one(pool)
        .await)
}

/// A turn of a conversation, as [`begin_turn`] takes it.
#[derive(Debug, Clone, Copy)]
pub enum Turn<'a> {
    /// A new question at the end of the active branch.
    Ask(&'a str),
    /// Another answer to the active branch's last question; an answer it had becomes an
    /// alternative, off the active branch.
    Regenerate,
    /// `content` in place of question `message` of the active branch: a new question beside it
    /// (same parent), which the active branch follows from now on.
    Edit { message: i64, content: &'a str },
}

/// Why a turn cannot begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnRefusal {
    /// Regenerate in a chat with no question.
    NothingToRegenerate,
    /// Edit of a message that is not a question on the active branch of this chat.
    NotAQuestion,
}

/// A turn that began: what [`begin_turn`] stored and moved.
#[derive(Debug, Clone)]
pub struct Began {
    pub ai_chat_id: i64,
    /// The question it stored (`Ask`, `Edit`).
    pub question: Option<AiMessage>,
    /// The message the reply will follow.
    pub parent: i64,
    /// The answer a `Regenerate` took off the branch shown, to show again if the reply cannot
    /// start.
    pub replaced: Option<i64>,
}

/// Begins a turn in one transaction (the AI chat's row locked first, so turns and branch
/// switches of one chat take turns): stores the question of `Ask` and `Edit`, and moves the
/// active branch.
pub async fn begin_turn(
    db: &Db,
    ai_chat_id: i64,
    turn: Turn<'_>,
) -> sqlx::Result<Result<Began, TurnRefusal>> {
    let insert = concat!(
        "INSERT INTO ai_messages (ai_chat_id, role, content, created_at, complete, parent_id, active) \
         VALUES ($1, 'user', $2, $3, TRUE, $4, TRUE) RETURNING ",
        ai_message_returning!()
    );
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE ai_chats SET updated_at = $2 WHERE id = $1")
            .bind(ai_chat_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // The active branch's last complete message: its id, role and parent.
        let last: Option<(i64, AiRole, Option<i64>)> = sqlx::query_as(
            "SELECT id, role, parent_id FROM ai_messages \
             WHERE ai_chat_id = $1 AND active AND complete ORDER BY id DESC LIMIT 1",
        )
        .bind(ai_chat_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (content, parent) = match turn {
            Turn::Ask(content) => (content, last.map(|(id, _, _)| id)),
            Turn::Regenerate => {
                let outcome = match last {
                    None => Err(TurnRefusal::NothingToRegenerate),
                    Some((id, AiRole::User, _)) => Ok(Began {
                        ai_chat_id,
                        question: None,
                        parent: id,
                        replaced: None,
                    }),
                    Some((id, _, Some(question))) => {
                        sqlx::query("UPDATE ai_messages SET active = FALSE WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        Ok(Began {
                            ai_chat_id,
                            question: None,
                            parent: question,
                            replaced: Some(id),
                        })
                    }
                    Some((_, _, None)) => Err(TurnRefusal::NothingToRegenerate),
                };
                if outcome.is_ok() {
                    tx.commit().await?;
                }
                return Ok(outcome);
            }
            Turn::Edit { message, content } => {
                let target: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT parent_id FROM ai_messages WHERE id = $1 AND ai_chat_id = $2 \
                     AND role = 'user' AND active AND complete",
                )
                .bind(message)
                .bind(ai_chat_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(parent) = target else {
                    return Ok(Err(TurnRefusal::NotAQuestion));
                };
                // The active branch is one path in id order: the edited question and all that
                // follows it leave it.
                sqlx::query("UPDATE ai_messages SET active = FALSE WHERE ai_chat_id = $1 AND active AND id >= $2")
                    .bind(ai_chat_id)
                    .bind(message)
                    .execute(&mut *tx)
                    .await?;
                (content, parent)
            }
        };
        let question: AiMessage = sqlx::query_as(insert)
            .bind(ai_chat_id)
            .bind(content)
            .bind(now)
            .bind(parent)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let id = question.id;
        Ok(Ok(Began {
            ai_chat_id,
            question: Some(question),
            parent: id,
            replaced: None,
        }))
    })
}

/// Makes the branch through message `id` of AI chat `ai_chat_id` the active one: the path from
/// its first question to it, then on through the newest alternative at each step to the end.
/// Answers the branch's last message, or `None` when `id` is no complete message of the chat.
pub async fn activate(db: &Db, ai_chat_id: i64, id: i64) -> sqlx::Result<Option<i64>> {
    on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE ai_chats SET updated_at = $2 WHERE id = $1")
            .bind(ai_chat_id)
            .bind(super::now())
            .execute(&mut *tx)
            .await?;
        let tree: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, parent_id FROM ai_messages WHERE ai_chat_id = $1 AND complete ORDER BY id",
        )
        .bind(ai_chat_id)
        .fetch_all(&mut *tx)
        .await?;
        let Some(path) = branch_through(&tree, id) else {
            return Ok(None);
        };
        sqlx::query("UPDATE ai_messages SET active = FALSE WHERE ai_chat_id = $1 AND active")
            .bind(ai_chat_id)
            .execute(&mut *tx)
            .await?;
        for ids in path.chunks(500) {
            let mut q = sqlx::QueryBuilder::new("UPDATE ai_messages SET active = TRUE WHERE id IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(path.last().copied())
    })
}

/// The branch through `id` in a tree of `(id, parent)` pairs in id order: its ancestors, it,
/// then the newest child of each message in turn. `None` when `id` is not in the tree.
pub fn branch_through(tree: &[(i64, Option<i64>)], id: i64) -> Option<Vec<i64>> {
    let parents: HashMap<i64, Option<i64>> = tree.iter().copied().collect();
    let mut newest_child: HashMap<i64, i64> = HashMap::new();
    for (child, parent) in tree {
        if let Some(parent) = parent {
            newest_child.insert(*parent, *child); // In id order: the last one wins.
        }
    }
    parents.get(&id)?;
    let mut path = vec![id];
    let mut at = id;
    while let Some(Some(parent)) = parents.get(&at) {
        path.push(*parent);
        at = *parent;
        if path.len() > tree.len() {
            break; // A cycle cannot be stored, but never loop on one.
        }
    }
    path.reverse();
    let mut at = id;
    while let Some(child) = newest_child.get(&at) {
        path.push(*child);
        at = *child;
        if path.len() > tree.len() {
            break;
        }
    }
    Some(path)
}

/// The alternatives of the messages of a page: `(id, ai_chat_id, parent_id)` of every complete
/// message sharing a parent with one of `messages` (first questions share the chat's "no
/// parent"), in id order.
pub async fn siblings(
    db: &Db,
    messages: &[AiMessage],
) -> sqlx::Result<Vec<(i64, i64, Option<i64>)>> {
    let parents: Vec<i64> = messages.iter().filter_map(|m| m.parent_id).collect();
    let roots: Vec<i64> = messages
        .iter()
        .filter(|m| m.parent_id.is_none())
        .map(|m| m.ai_chat_id)
        .collect();
    if parents.is_empty() && roots.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT id, ai_chat_id, parent_id FROM ai_messages WHERE complete AND (parent_id IN (",
        );
        let mut list = q.separated(", ");
        list.push_bind(0_i64); // Never an id: keeps the list non-empty.
        for id in &parents {
            list.push_bind(*id);
        }
        q.push(") OR (parent_id IS NULL AND ai_chat_id IN (");
        let mut list = q.separated(", ");
        list.push_bind(0_i64);
        for id in &roots {
            list.push_bind(*id);
        }
        q.push("))) ORDER BY id");
        q.build_query_as::<(i64, i64, Option<i64>)>().fetch_all(pool).await
    })
}

/// Removes a failed reply that has no text; if it was another answer to its question (a
/// regenerate), the newest remaining answer becomes active again.
pub async fn discard_reply(
    db: &Db,
    ai_chat_id: i64,
    id: i64,
    parent_id: Option<i64>,
) -> sqlx::Result<()> {
    delete_message(db, id).await?;
    let Some(question) = parent_id else {
        return Ok(());
    };
    let sql = "SELECT MAX(id) FROM ai_messages WHERE parent_id = $1 AND complete";
    let other: Option<i64> =
        on_pool!(db, pool => sqlx::query_scalar(sql).bind(question).fetch_one(pool).await)?;
    if let Some(other) = other {
        activate(db, ai_chat_id, other).await?;
    }
    Ok(())
}

/// A reply still being written, and its AI chat's owner.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unfinished {
    #[sqlx(flatten)]
    pub reply: AiMessage,
    /// The AI chat's owner.
    pub user_id: i64,
}

/// Replies still being written that were started before `before`, after id `after`; at most
/// 100, oldest first (read through the partial index `ai_messages_unfinished`).
pub async fn unfinished(
    db: &Db,
    before: DateTime<Utc>,
    after: i64,
) -> sqlx::Result<Vec<Unfinished>> {
    let sql = concat!(
        "SELECT ",
        ai_message_columns!(),
        ", a.user_id FROM ai_messages m JOIN ai_chats a ON a.id = m.ai_chat_id \
         WHERE m.complete = FALSE AND m.id > $2 AND m.created_at < $1 ORDER BY m.id LIMIT 100"
    );
    on_pool!(db, pool => sqlx::query_as::<_, Unfinished>(sql).bind(before).bind(after).fetch_all(pool).await)
}

/// Completes a reply with its text, token counts (and whether they are estimates) and why it
/// ended. `None` when it is gone or was completed already. A reply another node marked
/// `interrupted` (its claim had lapsed, say while Redis was away) is completed again by its own
/// node, which holds the whole text.
pub async fn finish_reply(
    db: &Db,
    id: i64,
    content: &str,
    tokens: Option<Tokens>,
    finish_reason: &FinishReason,
) -> sqlx::Result<Option<AiMessage>> {
    let sql = concat!(
        "UPDATE ai_messages SET content = $1, prompt_tokens = $2, completion_tokens = $3, \
         total_tokens = $4, finish_reason = $5, usage_estimated = $7, complete = TRUE \
         WHERE id = $6 AND (complete = FALSE OR finish_reason = 'interrupted') RETURNING ",
        ai_message_returning!()
    );
    on_writer!(db, pool => sqlx::query_as::<_, AiMessage>(sql)
        .bind(content)
        .bind(tokens.map(|t| t.prompt))
        .bind(tokens.map(|t| t.completion))
        .bind(tokens.map(|t| t.total))
        .bind(finish_reason)
        .bind(id)
        .bind(tokens.is_some_and(|t| t.estimated))
        .fetch_optional(pool)
        .await)
}

/// Deletes one AI message by id; an unknown id is not an error.
pub async fn delete_message(db: &Db, id: i64) -> sqlx::Result<()> {
    let sql = "DELETE FROM ai_messages WHERE id = $1";
    on_writer!(db, pool => sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Replies left unfinished by a stopped process: kept, marked `interrupted`, if they have text;
/// removed if not. Only rows older than any reply can run, so other nodes' replies in progress
/// are left alone.
pub async fn settle_interrupted(db: &Db) -> sqlx::Result<()> {
    let cutoff = super::now() - chrono::Duration::minutes(15);
    on_writer!(db, pool => {
        sqlx::query("DELETE FROM ai_messages WHERE complete = FALSE AND content = '' AND created_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    on_writer!(db, pool => {
        sqlx::query(
            "UPDATE ai_messages SET complete = TRUE, finish_reason = $1 \
             WHERE complete = FALSE AND created_at < $2",
        )
        .bind(FinishReason::Interrupted)
        .bind(cutoff)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// The conversation so far, as the model sees it: the active branch's complete user and
/// assistant messages in order.
pub async fn history(db: &Db, ai_chat_id: i64) -> sqlx::Result<Vec<AiMessage>> {
    let sql = concat!(
        "SELECT ",
        ai_message_columns!(),
        " FROM ai_messages m WHERE m.ai_chat_id = $1 AND m.complete AND m.active AND m.role IN ('user', 'assistant') ORDER BY m.id"
    );
    on_pool!(db, pool => sqlx::query_as::<_, AiMessage>(sql).bind(ai_chat_id).fetch_all(pool).await)
}

/// A window of one AI chat's active branch (complete messages), oldest first.
pub async fn messages_in_chat(
    db: &Db,
    ai_chat_id: i64,
    window: Window,
) -> sqlx::Result<Vec<AiMessage>> {
    let sql = if window.from_newest() {
        concat!(
            "SELECT ",
            ai_message_columns!(),
            " FROM ai_messages m WHERE m.ai_chat_id = $1 AND m.complete AND m.active \
                 AND m.id > $2 AND m.id < $3 ORDER BY m.id DESC LIMIT $4"
        )
    } else {
        concat!(
            "SELECT ",
            ai_message_columns!(),
            " FROM ai_messages m WHERE m.ai_chat_id = $1 AND m.complete AND m.active \
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

/// A window over the active branches of all of a user's AI chats (complete messages), oldest
/// first.
pub async fn messages_for_user(
    db: &Db,
    user_id: i64,
    window: Window,
) -> sqlx::Result<Vec<AiMessage>> {
    let sql = if window.from_newest() {
        concat!("SELECT ", ai_message_columns!(), " FROM ai_messages m JOIN ai_chats a ON a.id = m.ai_chat_id \
                 WHERE a.user_id = $1 AND m.complete AND m.active AND m.id > $2 AND m.id < $3 ORDER BY m.id DESC LIMIT $4")
    } else {
        concat!("SELECT ", ai_message_columns!(), " FROM ai_messages m JOIN ai_chats a ON a.id = m.ai_chat_id \
                 WHERE a.user_id = $1 AND m.complete AND m.active AND m.id > $2 AND m.id < $3 ORDER BY m.id LIMIT $4")
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

/// The newest `per_chat` complete messages of each AI chat's active branch, by chat then id, in
/// one query.
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
             AND m2.complete AND m2.active ORDER BY m2.id DESC LIMIT 1 OFFSET "
        ));
        q.push_bind(per_chat - 1);
        q.push("), 0) AS first_id FROM ai_chats a WHERE a.id IN (");
        let mut list = q.separated(", ");
        for id in ai_chat_ids {
            list.push_bind(*id);
        }
        q.push(")) b JOIN ai_messages m ON m.ai_chat_id = b.chat_id AND m.id >= b.first_id AND m.complete AND m.active \
                ORDER BY m.ai_chat_id, m.id");
        q.build_query_as::<AiMessage>().fetch_all(pool).await
    })
}

/// Adds a row of token use for `user_id` and `model`, dated today (UTC, `YYYY-MM-DD`), marked
/// as estimated when the counts are.
pub async fn record_usage(db: &Db, user_id: i64, model: &str, tokens: Tokens) -> sqlx::Result<()> {
    let sql = "INSERT INTO ai_usage (user_id, model, day, prompt_tokens, completion_tokens, total_tokens, created_at, estimated) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    on_writer!(db, pool => {
        let now = super::now();
        sqlx::query(sql)
            .bind(user_id)
            .bind(model)
            .bind(now.format("%Y-%m-%d").to_string())
            .bind(tokens.prompt)
            .bind(tokens.completion)
            .bind(tokens.total)
            .bind(now)
            .bind(tokens.estimated)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// A user's token use summed over one model and one day (`YYYY-MM-DD`, UTC).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub model: String,
    pub day: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// The part of `total_tokens` this server estimated (the provider reported no counts).
    pub estimated_tokens: i64,
}

/// A user's token use per model and day, for days `from..=to` (`YYYY-MM-DD`).
/// AI chat `id`'s title, if it exists.
pub async fn title_of(db: &Db, id: i64) -> sqlx::Result<Option<String>> {
    let sql = "SELECT title FROM ai_chats WHERE id = $1";
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(id).fetch_optional(pool).await)
}

/// Renames AI chat `id` to `title` if it is still called `from` (a title written for it never
/// overwrites one its owner chose meanwhile).
pub async fn retitle(db: &Db, id: i64, from: &str, title: &str) -> sqlx::Result<bool> {
    let sql = "UPDATE ai_chats SET title = $3 WHERE id = $1 AND title = $2";
    on_writer!(db, pool => sqlx::query(sql)
        .bind(id)
        .bind(from)
        .bind(title)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1))
}

/// User `user_id`'s own budgets (daily, monthly), where the admin area set them.
pub async fn own_budgets(db: &Db, user_id: i64) -> sqlx::Result<(Option<i64>, Option<i64>)> {
    let sql = "SELECT ai_daily_tokens, ai_monthly_tokens FROM users WHERE id = $1";
    let found = on_pool!(db, pool => sqlx::query_as::<_, (Option<i64>, Option<i64>)>(sql)
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
    Ok(found.unwrap_or((None, None)))
}

/// Sets user `user_id`'s own budgets (`None`: the configured default).
pub async fn set_own_budgets(
    db: &Db,
    user_id: i64,
    daily: Option<i64>,
    monthly: Option<i64>,
) -> sqlx::Result<()> {
    let sql = "UPDATE users SET ai_daily_tokens = $2, ai_monthly_tokens = $3 WHERE id = $1";
    on_writer!(db, pool => sqlx::query(sql)
        .bind(user_id)
        .bind(daily)
        .bind(monthly)
        .execute(pool)
        .await
        .map(|_| ()))
}

/// Tokens user `user_id` spent from day `from` to day `to` (`YYYY-MM-DD`, both included).
pub async fn spent(db: &Db, user_id: i64, from: &str, to: &str) -> sqlx::Result<i64> {
    let sql = "SELECT CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) FROM ai_usage \
               WHERE user_id = $1 AND day >= $2 AND day <= $3";
    on_pool!(db, pool => sqlx::query_scalar(sql)
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await)
}

pub async fn usage(db: &Db, user_id: i64, from: &str, to: &str) -> sqlx::Result<Vec<UsageRow>> {
    let sql = "SELECT model, day, CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
               CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
               CAST(SUM(total_tokens) AS BIGINT) AS total_tokens, \
               CAST(SUM(CASE WHEN estimated THEN total_tokens ELSE 0 END) AS BIGINT) AS estimated_tokens \
               FROM ai_usage WHERE user_id = $1 AND day >= $2 AND day <= $3 \
               GROUP BY model, day ORDER BY day, model";
    on_pool!(db, pool => sqlx::query_as::<_, UsageRow>(sql)
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await)
}

// ---------------------------------------------------------------------------------------------
// Admin lists: every user's AI chats and messages, filtered and offset-paged. Filters are bound
// as nullable parameters (`$n IS NULL OR …`), so each query is one text for both backends.

/// Which AI chats an admin list shows; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AiChatFilter {
    /// Part of the title, any case.
    pub search: Option<String>,
    /// Part of the owner's username, any case.
    pub owner: Option<String>,
}

/// An AI chat with the figures the admin lists show beside it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiChatSummary {
    #[sqlx(flatten)]
    pub chat: AiChat,
    /// Every message of the chat, a reply still being generated included.
    pub stored_message_count: i64,
    /// The sum of the messages' `total_tokens` (0 when none has counts).
    pub total_tokens: i64,
}

/// `AiChatSummary`'s columns with their `FROM`; a `WHERE` may follow.
macro_rules! ai_chat_summary_select {
    () => {
        concat!(
            "SELECT ",
            ai_chat_columns!(),
            ", (SELECT COUNT(*) FROM ai_messages m WHERE m.ai_chat_id = a.id) AS stored_message_count, \
             (SELECT CAST(COALESCE(SUM(m.total_tokens), 0) AS BIGINT) FROM ai_messages m \
              WHERE m.ai_chat_id = a.id) AS total_tokens",
            ai_chat_from!()
        )
    };
}

/// The `WHERE` of a filtered AI chat list: `$1` the title pattern, `$2` the owner pattern.
macro_rules! ai_chat_filter {
    () => {
        "WHERE ($1 IS NULL OR LOWER(a.title) LIKE $1 ESCAPE '!') \
         AND ($2 IS NULL OR LOWER(u.username) LIKE $2 ESCAPE '!')"
    };
}

/// How many AI chats match the filter.
pub async fn count_matching_chats(db: &Db, filter: &AiChatFilter) -> sqlx::Result<i64> {
    let sql = concat!(
        "SELECT COUNT(*) FROM ai_chats a JOIN users u ON u.id = a.user_id ",
        ai_chat_filter!()
    );
    let title = filter.search.as_deref().map(contains_pattern);
    let owner = filter.owner.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(title).bind(owner).fetch_one(pool).await)
}

/// A page of the matching AI chats, newest-updated first: at most `limit`, skipping the first
/// `offset`.
pub async fn matching_chats(
    db: &Db,
    filter: &AiChatFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<AiChatSummary>> {
    let sql = concat!(
        ai_chat_summary_select!(),
        ai_chat_filter!(),
        " ORDER BY a.updated_at DESC, a.id DESC LIMIT $3 OFFSET $4"
    );
    let title = filter.search.as_deref().map(contains_pattern);
    let owner = filter.owner.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, AiChatSummary>(sql)
        .bind(title)
        .bind(owner)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

/// The AI chat with its summary, whoever owns it; `None` when there is no such chat.
pub async fn chat_summary(db: &Db, id: i64) -> sqlx::Result<Option<AiChatSummary>> {
    let sql = concat!(ai_chat_summary_select!(), "WHERE a.id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, AiChatSummary>(sql).bind(id).fetch_optional(pool).await)
}

/// Which AI messages an admin list shows; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AiMessageFilter {
    pub ai_chat_id: Option<i64>,
    /// Exactly this role.
    pub role: Option<AiRole>,
    /// Part of the owner's username, any case.
    pub owner: Option<String>,
}

/// An AI message with its chat's title and owner, as the admin lists show it; incomplete
/// replies are listed too.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AiMessageWithChat {
    #[sqlx(flatten)]
    pub message: AiMessage,
    pub ai_chat_title: String,
    pub owner_username: String,
    /// False while the reply is still being generated.
    pub complete: bool,
}

/// `FROM` and `WHERE` of a filtered AI message list: `$1` the AI chat, `$2` the role, `$3` the
/// owner pattern, each NULL when it does not filter.
macro_rules! ai_message_from {
    () => {
        " FROM ai_messages m JOIN ai_chats a ON a.id = m.ai_chat_id JOIN users u ON u.id = a.user_id \
         WHERE ($1 IS NULL OR m.ai_chat_id = $1) AND ($2 IS NULL OR m.role = $2) \
         AND ($3 IS NULL OR LOWER(u.username) LIKE $3 ESCAPE '!')"
    };
}

/// `SELECT` and `AiMessageWithChat`'s columns; `ai_message_from!` follows.
macro_rules! ai_message_with_chat_select {
    () => {
        concat!(
            "SELECT ",
            ai_message_columns!(),
            ", a.title AS ai_chat_title, u.username AS owner_username, m.complete"
        )
    };
}

/// How many AI messages match the filter, incomplete replies included.
pub async fn count_matching_messages(db: &Db, filter: &AiMessageFilter) -> sqlx::Result<i64> {
    let sql = concat!("SELECT COUNT(*)", ai_message_from!());
    let owner = filter.owner.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql)
        .bind(filter.ai_chat_id)
        .bind(filter.role)
        .bind(owner)
        .fetch_one(pool)
        .await)
}

/// A page of the matching AI messages, incomplete replies included: newest first, or in
/// conversation order (oldest first) for one chat's page; at most `limit`, skipping the first
/// `offset`.
pub async fn matching_messages(
    db: &Db,
    filter: &AiMessageFilter,
    oldest_first: bool,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<AiMessageWithChat>> {
    let sql = if oldest_first {
        concat!(
            ai_message_with_chat_select!(),
            ai_message_from!(),
            " ORDER BY m.id LIMIT $4 OFFSET $5"
        )
    } else {
        concat!(
            ai_message_with_chat_select!(),
            ai_message_from!(),
            " ORDER BY m.id DESC LIMIT $4 OFFSET $5"
        )
    };
    let owner = filter.owner.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, AiMessageWithChat>(sql)
        .bind(filter.ai_chat_id)
        .bind(filter.role)
        .bind(owner)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

// ---------------------------------------------------------------------------------------------
// Token usage over every user, for the admin area.

/// Inclusive bounds on `ai_usage.day` (`YYYY-MM-DD`, UTC); an open end compares as the
/// earliest or latest possible day.
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

/// Token use added up over a group of `ai_usage` rows (one per counted reply).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageTotal {
    /// The username or model the row adds up (`all` for the grand total).
    pub label: String,
    /// How many replies were counted.
    pub replies: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

/// `UsageTotal`'s sums over `ai_usage g`.
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

/// Totals per user (labelled with the username) over the range, most total tokens first, then
/// by username: at most `limit`, skipping the first `offset`.
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

/// Totals per model over the range, most total tokens first, then by model; all of them (a
/// deployment uses a handful of models).
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

/// The grand total over the range, labelled `all` (zeros when nothing was used).
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
