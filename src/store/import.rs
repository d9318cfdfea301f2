//! Writing an import of MRM Chat 2 (see `crate::import`): rows keep their ids, a row whose id is
//! taken is left as it is (`ON CONFLICT (id) DO NOTHING`), and each batch is one transaction, so
//! an import that stopped part-way is completed by running it again. The reads here let the
//! import compare what the target already holds under the same ids before it writes anything.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{on_pool, on_writer, Db};

/// A user as imported: the original's fields, the username in the stored (NFKC) form, and the
/// password hash as Django wrote it (or unusable).
#[derive(Debug, Clone)]
pub struct ImportedUser {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub user_type: String,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub is_active: bool,
    pub date_joined: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
    pub password_hash: String,
}

/// A chat as imported, with its participants (the first is made its owner).
#[derive(Debug, Clone)]
pub struct ImportedChat {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub participants: Vec<i64>,
}

/// A message as imported, with its position in its chat.
#[derive(Debug, Clone)]
pub struct ImportedMessage {
    pub id: i64,
    pub chat_id: i64,
    pub seq: i64,
    pub sender_id: i64,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

/// An AI chat as imported.
#[derive(Debug, Clone)]
pub struct ImportedAiChat {
    pub id: i64,
    pub user_id: i64,
    pub related_chat_id: Option<i64>,
    pub title: String,
    pub system_prompt: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An AI message as imported: each follows the one before it in its AI chat (`parent_id`).
#[derive(Debug, Clone)]
pub struct ImportedAiMessage {
    pub id: i64,
    pub ai_chat_id: i64,
    /// The AI chat's owner, whose usage a reply counts in.
    pub user_id: i64,
    pub role: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub parent_id: Option<i64>,
}

macro_rules! select_in {
    ($db:expr, $sql:expr, $ids:expr, $row:ty) => {{
        let ids: &[i64] = $ids;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!($db, pool => {
            let mut q = sqlx::QueryBuilder::new($sql);
            q.push(" IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(")");
            q.build_query_as::<$row>().fetch_all(pool).await
        })
    }};
}

/// Users among `ids`: (id, username, date_joined).
pub async fn existing_users(
    db: &Db,
    ids: &[i64],
) -> sqlx::Result<Vec<(i64, String, DateTime<Utc>)>> {
    select_in!(
        db,
        "SELECT id, username, date_joined FROM users WHERE id",
        ids,
        (i64, String, DateTime<Utc>)
    )
}

/// Who holds each of `usernames`: (username, id).
pub async fn username_holders(db: &Db, usernames: &[String]) -> sqlx::Result<Vec<(String, i64)>> {
    if usernames.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new("SELECT username, id FROM users WHERE username IN (");
        let mut list = q.separated(", ");
        for name in usernames {
            list.push_bind(name.as_str());
        }
        q.push(")");
        q.build_query_as::<(String, i64)>().fetch_all(pool).await
    })
}

/// Chats among `ids`: (id, created_at).
pub async fn existing_chats(db: &Db, ids: &[i64]) -> sqlx::Result<Vec<(i64, DateTime<Utc>)>> {
    select_in!(
        db,
        "SELECT id, created_at FROM chats WHERE id",
        ids,
        (i64, DateTime<Utc>)
    )
}

/// Messages among `ids`: (id, chat, sender, created_at).
pub async fn existing_messages(
    db: &Db,
    ids: &[i64],
) -> sqlx::Result<Vec<(i64, i64, i64, DateTime<Utc>)>> {
    select_in!(
        db,
        "SELECT id, chat_id, sender_id, created_at FROM messages WHERE id",
        ids,
        (i64, i64, i64, DateTime<Utc>)
    )
}

/// AI chats among `ids`: (id, owner, created_at).
pub async fn existing_ai_chats(
    db: &Db,
    ids: &[i64],
) -> sqlx::Result<Vec<(i64, i64, DateTime<Utc>)>> {
    select_in!(
        db,
        "SELECT id, user_id, created_at FROM ai_chats WHERE id",
        ids,
        (i64, i64, DateTime<Utc>)
    )
}

/// AI messages among `ids`: (id, AI chat, role, created_at).
pub async fn existing_ai_messages(
    db: &Db,
    ids: &[i64],
) -> sqlx::Result<Vec<(i64, i64, String, DateTime<Utc>)>> {
    select_in!(
        db,
        "SELECT id, ai_chat_id, role, created_at FROM ai_messages WHERE id",
        ids,
        (i64, i64, String, DateTime<Utc>)
    )
}

/// Inserts the users whose ids are free; returns how many.
pub async fn insert_users(db: &Db, users: &[ImportedUser]) -> sqlx::Result<u64> {
    if users.is_empty() {
        return Ok(0);
    }
    on_writer!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO users (id, username, email, password_hash, user_type, first_name, \
             last_name, is_staff, is_superuser, is_active, date_joined, last_login) ",
        );
        q.push_values(users, |mut row, u| {
            row.push_bind(u.id)
                .push_bind(u.username.as_str())
                .push_bind(u.email.as_str())
                .push_bind(u.password_hash.as_str())
                .push_bind(u.user_type.as_str())
                .push_bind(u.first_name.as_str())
                .push_bind(u.last_name.as_str())
                .push_bind(u.is_staff)
                .push_bind(u.is_superuser)
                .push_bind(u.is_active)
                .push_bind(u.date_joined)
                .push_bind(u.last_login);
        });
        q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        q.build_query_scalar::<i64>().fetch_all(pool).await.map(|ids| ids.len() as u64)
    })
}

/// Inserts the chats whose ids are free, each with its participants (joined when the chat was
/// created) and its first participant as owner; returns how many.
pub async fn insert_chats(db: &Db, chats: &[ImportedChat]) -> sqlx::Result<u64> {
    if chats.is_empty() {
        return Ok(0);
    }
    on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        let mut q = sqlx::QueryBuilder::new("INSERT INTO chats (id, name, owner_id, created_at, last_seq) ");
        q.push_values(chats, |mut row, c| {
            row.push_bind(c.id)
                .push_bind(c.name.as_str())
                .push_bind(c.participants.first().copied())
                .push_bind(c.created_at)
                .push_bind(0_i64);
        });
        q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        let inserted: HashSet<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?.into_iter().collect();
        let members: Vec<(i64, i64, DateTime<Utc>)> = chats
            .iter()
            .filter(|c| inserted.contains(&c.id))
            .flat_map(|c| c.participants.iter().map(move |user| (c.id, *user, c.created_at)))
            .collect();
        for chunk in members.chunks(1000) {
            let mut q = sqlx::QueryBuilder::new("INSERT INTO chat_participants (chat_id, user_id, joined_at) ");
            q.push_values(chunk, |mut row, (chat, user, at)| {
                row.push_bind(*chat).push_bind(*user).push_bind(*at);
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(inserted.len() as u64)
    })
}

/// Inserts the messages whose ids are free, and moves each chat's last position, and its
/// participants' read position, past them; returns how many.
pub async fn insert_messages(db: &Db, messages: &[ImportedMessage]) -> sqlx::Result<u64> {
    if messages.is_empty() {
        return Ok(0);
    }
    let mut last: HashMap<i64, i64> = HashMap::new();
    for m in messages {
        let seq = last.entry(m.chat_id).or_insert(0);
        *seq = (*seq).max(m.seq);
    }
    on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        let mut q = sqlx::QueryBuilder::new("INSERT INTO messages (id, chat_id, seq, sender_id, content, created_at) ");
        q.push_values(messages, |mut row, m| {
            row.push_bind(m.id)
                .push_bind(m.chat_id)
                .push_bind(m.seq)
                .push_bind(m.sender_id)
                .push_bind(m.content.as_str())
                .push_bind(m.created_at);
        });
        q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        let inserted: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
        for (chat, seq) in &last {
            sqlx::query("UPDATE chats SET last_seq = CASE WHEN last_seq < $2 THEN $2 ELSE last_seq END WHERE id = $1")
                .bind(*chat)
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
            // The original had no read state: what its users had is shown as read.
            sqlx::query(
                "UPDATE chat_participants SET last_read_seq = CASE WHEN last_read_seq < $2 THEN $2 \
                 ELSE last_read_seq END WHERE chat_id = $1",
            )
            .bind(*chat)
            .bind(*seq)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted.len() as u64)
    })
}

/// Inserts the AI chats whose ids are free; returns how many.
pub async fn insert_ai_chats(db: &Db, chats: &[ImportedAiChat]) -> sqlx::Result<u64> {
    if chats.is_empty() {
        return Ok(0);
    }
    on_writer!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO ai_chats (id, user_id, related_chat_id, title, system_prompt, created_at, updated_at) ",
        );
        q.push_values(chats, |mut row, c| {
            row.push_bind(c.id)
                .push_bind(c.user_id)
                .push_bind(c.related_chat_id)
                .push_bind(c.title.as_str())
                .push_bind(c.system_prompt.as_str())
                .push_bind(c.created_at)
                .push_bind(c.updated_at);
        });
        q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        q.build_query_scalar::<i64>().fetch_all(pool).await.map(|ids| ids.len() as u64)
    })
}

/// Inserts the AI messages whose ids are free, replies recorded as written by `model`, and adds
/// the token use of each reply it inserted to its owner's usage (in the same transaction, so
/// usage is counted once however often the import runs); returns how many messages.
pub async fn insert_ai_messages(
    db: &Db,
    messages: &[ImportedAiMessage],
    model: &str,
) -> sqlx::Result<u64> {
    if messages.is_empty() {
        return Ok(0);
    }
    on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO ai_messages (id, ai_chat_id, role, content, created_at, prompt_tokens, \
             completion_tokens, total_tokens, model, complete, parent_id, active) ",
        );
        q.push_values(messages, |mut row, m| {
            let reply = m.role == "assistant";
            row.push_bind(m.id)
                .push_bind(m.ai_chat_id)
                .push_bind(m.role.as_str())
                .push_bind(m.content.as_str())
                .push_bind(m.created_at)
                .push_bind(m.prompt_tokens)
                .push_bind(m.completion_tokens)
                .push_bind(m.total_tokens)
                .push_bind(reply.then_some(model))
                .push_bind(true)
                .push_bind(m.parent_id)
                .push_bind(true);
        });
        q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        let inserted: HashSet<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?.into_iter().collect();
        // One usage row per reply, as replies are recorded when they are generated.
        let replies: Vec<&ImportedAiMessage> = messages
            .iter()
            .filter(|m| m.role == "assistant" && inserted.contains(&m.id))
            .filter(|m| m.prompt_tokens.is_some() || m.completion_tokens.is_some() || m.total_tokens.is_some())
            .collect();
        for chunk in replies.chunks(500) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO ai_usage (user_id, model, day, prompt_tokens, completion_tokens, \
                 total_tokens, created_at, estimated) ",
            );
            q.push_values(chunk, |mut row, m| {
                let (prompt, completion) = (m.prompt_tokens.unwrap_or(0), m.completion_tokens.unwrap_or(0));
                row.push_bind(m.user_id)
                    .push_bind(model)
                    .push_bind(m.created_at.format("%Y-%m-%d").to_string())
                    .push_bind(prompt)
                    .push_bind(completion)
                    .push_bind(m.total_tokens.unwrap_or(prompt + completion))
                    .push_bind(m.created_at)
                    .push_bind(false);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(inserted.len() as u64)
    })
}

/// Moves PostgreSQL's id sequences past the highest ids, so rows created after an import get
/// fresh ids (SQLite's `AUTOINCREMENT` moves past an inserted id by itself).
pub async fn advance_sequences(db: &Db) -> sqlx::Result<()> {
    let Db::Postgres(pool) = db else {
        return Ok(());
    };
    macro_rules! advance {
        ($table:literal) => {
            concat!(
                "SELECT setval(pg_get_serial_sequence('",
                $table,
                "', 'id'), \
                 GREATEST((SELECT COALESCE(MAX(id), 0) FROM ",
                $table,
                "), \
                 (SELECT last_value FROM pg_sequences WHERE sequencename = \
                 split_part(pg_get_serial_sequence('",
                $table,
                "', 'id'), '.', 2) LIMIT 1), 1))"
            )
        };
    }
    for sql in [
        advance!("users"),
        advance!("chats"),
        advance!("messages"),
        advance!("ai_chats"),
        advance!("ai_messages"),
        advance!("ai_usage"),
    ] {
        sqlx::query(sql).execute(pool).await?;
    }
    Ok(())
}
