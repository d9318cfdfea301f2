//! The `messages` table. Within a chat, message ids grow with `seq`: both are handed out while
//! the chat's row is locked, so id cursors and seq order agree.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::{
    contains_pattern,
    events::{EventKind, EventRow},
    on_pool, on_writer, Db, Window,
};
use crate::domain::UserType;

/// A message with its sender's public fields, as every API view needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Message {
    pub id: i64,
    pub chat_id: i64,
    pub seq: i64,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub sender_id: i64,
    pub sender_username: String,
    pub sender_email: String,
    pub sender_user_type: UserType,
    /// When the content was last edited, if ever.
    pub edited_at: Option<DateTime<Utc>>,
    /// When the message was deleted: a tombstone, whose content is empty.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The message this one replies to, in the same chat.
    pub reply_to_id: Option<i64>,
    /// Its sender's id and username.
    pub reply_sender_id: Option<i64>,
    pub reply_sender_username: Option<String>,
    /// Its first 100 characters (empty once deleted).
    pub reply_excerpt: Option<String>,
    /// Whether it is deleted.
    pub reply_deleted: bool,
    /// The members it mentions, as [`crate::domain::mention::encode_ids`] keeps them.
    pub mentions: Option<String>,
    /// Its attachments, as [`super::attachments::encode`] keeps them.
    pub attachments: Option<String>,
}

/// `Message`'s columns, read from `messages m` joined with its sender as `users u`.
macro_rules! message_columns {
    () => {
        "m.id, m.chat_id, m.seq, m.content, m.created_at, u.id AS sender_id, \
         u.username AS sender_username, u.email AS sender_email, u.user_type AS sender_user_type, \
         m.edited_at, m.deleted_at, m.reply_to_id, r.sender_id AS reply_sender_id, \
         ru.username AS reply_sender_username, SUBSTR(r.content, 1, 100) AS reply_excerpt, \
         (r.deleted_at IS NOT NULL) AS reply_deleted, m.mentions, m.attachments"
    };
}

/// The joins `message_columns!` needs beside `messages m JOIN users u`: the message replied to
/// and its sender.
macro_rules! reply_join {
    () => {
        " LEFT JOIN messages r ON r.id = m.reply_to_id LEFT JOIN users ru ON ru.id = r.sender_id "
    };
}
pub(crate) use message_columns;
pub(crate) use reply_join;

/// `Message`'s columns with their `FROM`; a `WHERE` (or another `JOIN`) may follow.
macro_rules! message_select {
    () => {
        concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m JOIN users u ON u.id = m.sender_id ",
            reply_join!()
        )
    };
}

/// What the database assigned to a saved message: its id, its position in the chat, and the
/// time it was saved (microsecond precision).
#[derive(Debug, Clone)]
pub struct Saved {
    pub id: i64,
    pub seq: i64,
    pub created_at: DateTime<Utc>,
    /// The members it mentions, ascending.
    pub mentions: Vec<i64>,
    /// What it carries, in the order given.
    pub attachments: Vec<super::attachments::AttachmentMeta>,
}

/// Why a message was not saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsaved {
    /// The sender is not (or no longer) a participant, or the chat is gone.
    NotMember,
    /// An attachment is not the sender's upload to this chat, is carried by another message
    /// already, or was removed; or the message names one twice.
    AttachmentUnavailable,
}

/// The attachments `row` may carry, in its order, taken from `claimable` (unattached uploads by
/// id) and removed from it so that no other message of the batch takes them; `None` (nothing
/// taken) when any is not there or not the sender's upload to this chat.
fn claim(
    claimable: &mut HashMap<i64, super::attachments::Attachment>,
    row: &NewMessage<'_>,
) -> Option<Vec<super::attachments::AttachmentMeta>> {
    let fits = |id: &i64| {
        claimable
            .get(id)
            .is_some_and(|a| a.chat_id == row.chat_id && a.uploader_id == row.sender_id)
    };
    let mut distinct = row.attachments.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != row.attachments.len() || !row.attachments.iter().all(fits) {
        return None;
    }
    Some(
        row.attachments
            .iter()
            .filter_map(|id| claimable.remove(id))
            .map(|a| a.meta())
            .collect(),
    )
}

/// Inside an `on_writer!` body, in transaction `$tx`: which of the given usernames (`&[String]`,
/// normalized as stored) are members of which of the given chats (`&[i64]`), in one statement;
/// evaluates to a map from (chat id, username) to user id. Run under the chats' locks, so the
/// answer holds until commit. At most 256 chats and 50 names per message of a batch of 256
/// (12,800 names): well under both backends' limits on parameters.
macro_rules! members_named {
    ($tx:ident, $chats:expr, $names:expr) => {{
        let chats: &[i64] = $chats;
        let names: &[String] = $names;
        let mut q = QueryBuilder::new(
            "SELECT p.chat_id, u.username, p.user_id FROM chat_participants p \
             JOIN users u ON u.id = p.user_id WHERE p.chat_id IN (",
        );
        push_list(&mut q, chats);
        q.push(") AND u.username IN (");
        let mut list = q.separated(", ");
        for name in names {
            list.push_bind(name.as_str());
        }
        q.push(")");
        q.build_query_as::<(i64, String, i64)>()
            .persistent(false)
            .fetch_all(&mut *$tx)
            .await?
            .into_iter()
            .map(|(chat, name, user)| ((chat, name), user))
            .collect::<HashMap<(i64, String), i64>>()
    }};
}

/// Inside an `on_writer!` body, in transaction `$tx`: inserts the `message_mentions` rows of
/// `$mentioned` (`&[Mentioned]`), a chunk of rows per statement.
macro_rules! insert_mentions {
    ($tx:ident, $mentioned:expr) => {{
        let rows: Vec<(i64, i64, i64, i64)> = $mentioned
            .iter()
            .flat_map(|m: &Mentioned| {
                m.ids
                    .iter()
                    .map(move |&user| (m.message_id, user, m.chat_id, m.seq))
            })
            .collect();
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::new(
                "INSERT INTO message_mentions (message_id, user_id, chat_id, seq) ",
            );
            q.push_values(chunk, |mut row, &(message, user, chat, seq)| {
                row.push_bind(message)
                    .push_bind(user)
                    .push_bind(chat)
                    .push_bind(seq);
            });
            q.build().persistent(false).execute(&mut *$tx).await?;
        }
    }};
}

/// The members one message mentions, to record.
struct Mentioned {
    message_id: i64,
    chat_id: i64,
    seq: i64,
    /// Ascending.
    ids: Vec<i64>,
}

/// The ids, ascending, of the members of chat `chat_id` whose usernames are among `names`
/// (`found` as [`members_named!`] gives it), the sender left out.
fn mentioned_ids(
    found: &HashMap<(i64, String), i64>,
    chat_id: i64,
    sender_id: i64,
    names: &[String],
) -> Vec<i64> {
    let mut ids: Vec<i64> = names
        .iter()
        .filter_map(|name| found.get(&(chat_id, name.clone())).copied())
        .filter(|&id| id != sender_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Saves a message from a participant, giving it the chat's next sequence number in the same
/// transaction, and binds its attachments to it. Refused (nothing written) when the sender is
/// not (or no longer) a participant or the chat is gone, or an attachment is unavailable:
/// checked under the same lock that orders the chat's messages.
pub async fn insert(db: &Db, row: &NewMessage<'_>) -> sqlx::Result<Result<Saved, Unsaved>> {
    let NewMessage {
        chat_id,
        sender_id,
        content,
        reply_to,
        attachments,
    } = *row;
    on_writer!(db, pool => {
        // Stamped once this writer has its turn, so on SQLite times follow commit order.
        let now = super::now();
        let mut tx = pool.begin().await?;
        // Bumping the counter first takes the chat's row lock (the write lock on SQLite), which
        // serialises senders of one chat until commit.
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE chats SET last_seq = last_seq + 1 WHERE id = $1 AND EXISTS \
             (SELECT 1 FROM chat_participants p WHERE p.chat_id = $1 AND p.user_id = $2) \
             RETURNING last_seq",
        )
        .bind(chat_id)
        .bind(sender_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            return Ok(Err(Unsaved::NotMember));
        };
        let metas = if attachments.is_empty() {
            Vec::new()
        } else {
            let mut claimable: HashMap<i64, super::attachments::Attachment> =
                super::attachments::claimable!(tx, db, attachments, &[sender_id])
                    .into_iter()
                    .map(|a| (a.id, a))
                    .collect();
            match claim(&mut claimable, row) {
                Some(metas) => metas,
                // Dropping the transaction rolls the seq back.
                None => return Ok(Err(Unsaved::AttachmentUnavailable)),
            }
        };
        let names = crate::domain::mention::candidates(content);
        let mentions = if names.is_empty() {
            Vec::new()
        } else {
            let found = members_named!(tx, &[chat_id], &names);
            mentioned_ids(&found, chat_id, sender_id, &names)
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO messages \
             (chat_id, seq, sender_id, content, created_at, reply_to_id, mentions, attachments) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(chat_id)
        .bind(seq)
        .bind(sender_id)
        .bind(content)
        .bind(now)
        .bind(reply_to)
        .bind(crate::domain::mention::encode_ids(&mentions))
        .bind(super::attachments::encode(&metas))
        .fetch_one(&mut *tx)
        .await?;
        if !mentions.is_empty() {
            let mentioned = [Mentioned { message_id: id, chat_id, seq, ids: mentions.clone() }];
            insert_mentions!(tx, mentioned);
        }
        let bound: Vec<(i64, i64, i64)> =
            metas.iter().zip(0..).map(|(m, position)| (m.id, id, position)).collect();
        super::attachments::bind_to_messages!(tx, &bound);
        tx.commit().await?;
        Ok(Ok(Saved { id, seq, created_at: now, mentions, attachments: metas }))
    })
}

/// A message to save with `insert` or `insert_batch`.
#[derive(Clone, Copy)]
pub struct NewMessage<'a> {
    pub chat_id: i64,
    pub sender_id: i64,
    pub content: &'a str,
    /// The message of the same chat this one replies to (checked by the caller).
    pub reply_to: Option<i64>,
    /// Uploads to carry, in order: the sender's own, to this chat, not yet attached (checked
    /// here, under the chat's lock).
    pub attachments: &'a [i64],
}

/// Rows per multi-row `INSERT`: at most eight parameters each stays far below both backends'
/// limits.
const INSERT_CHUNK: usize = 1000;

/// Saves several messages in one transaction, each exactly as `insert` would (sequence number,
/// membership check); one commit for all of them, and a fixed number of statements however many
/// messages there are (on SQLite each statement is a round trip to the connection's thread).
/// Chats are locked in id order, so batches written by several nodes at once wait for each
/// other instead of deadlocking; messages of one chat keep their order.
pub async fn insert_batch(
    db: &Db,
    rows: &[NewMessage<'_>],
) -> sqlx::Result<Vec<Result<Saved, Unsaved>>> {
    let mut saved = vec![Err(Unsaved::NotMember); rows.len()];
    if rows.is_empty() {
        return Ok(saved);
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].chat_id);
    let mut chat_ids: Vec<i64> = order.iter().map(|&i| rows[i].chat_id).collect();
    chat_ids.dedup();
    let mut sender_ids: Vec<i64> = rows.iter().map(|r| r.sender_id).collect();
    sender_ids.sort_unstable();
    sender_ids.dedup();

    // Locking the chats first, as `insert` does, serialises these sends with departures. These
    // statements' text varies with the batch, so they are not kept as prepared statements.
    let (lock_head, lock_tail) = match db {
        // The first statement writes, so the transaction holds SQLite's write lock from here.
        Db::Sqlite(..) => (
            "UPDATE chats SET last_seq = last_seq WHERE id IN (",
            ") RETURNING id, last_seq",
        ),
        Db::Postgres(_) => (
            "SELECT id, last_seq FROM chats WHERE id IN (",
            // The lock an UPDATE of last_seq takes: rows referencing the chat stay insertable.
            ") ORDER BY id FOR NO KEY UPDATE",
        ),
    };

    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        let mut lock = QueryBuilder::new(lock_head);
        push_list(&mut lock, &chat_ids);
        lock.push(lock_tail);
        let mut last_seq: HashMap<i64, i64> = lock
            .build_query_as::<(i64, i64)>()
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let mut members =
            QueryBuilder::new("SELECT chat_id, user_id FROM chat_participants WHERE chat_id IN (");
        push_list(&mut members, &chat_ids);
        members.push(") AND user_id IN (");
        push_list(&mut members, &sender_ids);
        members.push(")");
        let members: HashSet<(i64, i64)> = members
            .build_query_as::<(i64, i64)>()
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();

        // Attachments: one read (and lock) of every upload any message names.
        let wanted: Vec<i64> = rows.iter().flat_map(|r| r.attachments.iter().copied()).collect();
        let mut claimable: HashMap<i64, super::attachments::Attachment> = if wanted.is_empty() {
            HashMap::new()
        } else {
            super::attachments::claimable!(tx, db, &wanted, &sender_ids)
                .into_iter()
                .map(|a| (a.id, a))
                .collect()
        };
        let mut metas: Vec<Vec<super::attachments::AttachmentMeta>> = vec![Vec::new(); rows.len()];

        // (row index, seq) of every message that may be saved, chat by chat in seq order.
        let mut accepted = Vec::with_capacity(rows.len());
        for i in order {
            let row = &rows[i];
            if !members.contains(&(row.chat_id, row.sender_id)) {
                continue;
            }
            if !row.attachments.is_empty() {
                match claim(&mut claimable, row) {
                    Some(claimed) => metas[i] = claimed,
                    None => {
                        saved[i] = Err(Unsaved::AttachmentUnavailable);
                        continue;
                    }
                }
            }
            if let Some(seq) = last_seq.get_mut(&row.chat_id) {
                *seq += 1;
                accepted.push((i, *seq));
            }
        }
        if !accepted.is_empty() {
            let mut bump = QueryBuilder::new("UPDATE chats SET last_seq = CASE id");
            let mut bumped: Vec<i64> = Vec::new();
            for &(i, _) in &accepted {
                let chat_id = rows[i].chat_id;
                if bumped.last() != Some(&chat_id) {
                    bumped.push(chat_id);
                    bump.push(" WHEN ").push_bind(chat_id);
                    bump.push(" THEN ").push_bind(last_seq[&chat_id]);
                }
            }
            bump.push(" END WHERE id IN (");
            push_list(&mut bump, &bumped);
            bump.push(")");
            bump.build().persistent(false).execute(&mut *tx).await?;

            // Mentions: one read for every name any of the messages may mention.
            let names: Vec<Vec<String>> = accepted
                .iter()
                .map(|&(i, _)| crate::domain::mention::candidates(rows[i].content))
                .collect();
            let mut mentions: Vec<Vec<i64>> = vec![Vec::new(); accepted.len()];
            if names.iter().any(|n| !n.is_empty()) {
                let mut chats: Vec<i64> = Vec::new();
                let mut all: Vec<String> = Vec::new();
                for (k, &(i, _)) in accepted.iter().enumerate() {
                    if !names[k].is_empty() {
                        chats.push(rows[i].chat_id);
                        all.extend(names[k].iter().cloned());
                    }
                }
                chats.sort_unstable();
                chats.dedup();
                all.sort_unstable();
                all.dedup();
                let found = members_named!(tx, &chats, &all);
                for (k, &(i, _)) in accepted.iter().enumerate() {
                    mentions[k] = mentioned_ids(&found, rows[i].chat_id, rows[i].sender_id, &names[k]);
                }
            }

            // Rows go in in seq order, so ids grow with seq within each chat.
            let mut mentioned: Vec<Mentioned> = Vec::new();
            let mut bound: Vec<(i64, i64, i64)> = Vec::new();
            for (chunk_index, chunk) in accepted.chunks(INSERT_CHUNK).enumerate() {
                let first = chunk_index * INSERT_CHUNK;
                let mut insert = QueryBuilder::new(
                    "INSERT INTO messages (chat_id, seq, sender_id, content, created_at, \
                     reply_to_id, mentions, attachments) ",
                );
                insert.push_values(chunk.iter().enumerate(), |mut values, (k, &(i, seq))| {
                    let row = &rows[i];
                    values
                        .push_bind(row.chat_id)
                        .push_bind(seq)
                        .push_bind(row.sender_id)
                        .push_bind(row.content)
                        .push_bind(now)
                        .push_bind(row.reply_to)
                        .push_bind(crate::domain::mention::encode_ids(&mentions[first + k]))
                        .push_bind(super::attachments::encode(&metas[i]));
                });
                insert.push(" RETURNING id, chat_id, seq");
                let ids: HashMap<(i64, i64), i64> = insert
                    .build_query_as::<(i64, i64, i64)>()
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|(id, chat_id, seq)| ((chat_id, seq), id))
                    .collect();
                for (k, &(i, seq)) in chunk.iter().enumerate() {
                    let chat_id = rows[i].chat_id;
                    let id = ids.get(&(chat_id, seq)).copied().ok_or_else(|| {
                        sqlx::Error::Protocol("an inserted message came back without its id".into())
                    })?;
                    let ids = std::mem::take(&mut mentions[first + k]);
                    if !ids.is_empty() {
                        mentioned.push(Mentioned { message_id: id, chat_id, seq, ids: ids.clone() });
                    }
                    let carried = std::mem::take(&mut metas[i]);
                    bound.extend(carried.iter().zip(0..).map(|(m, position)| (m.id, id, position)));
                    saved[i] = Ok(Saved { id, seq, created_at: now, mentions: ids, attachments: carried });
                }
            }
            insert_mentions!(tx, mentioned);
            super::attachments::bind_to_messages!(tx, &bound);
        }
        tx.commit().await?;
        Ok(saved)
    })
}

/// Appends `a, b, c` as bound parameters.
fn push_list<DB: sqlx::Database>(query: &mut QueryBuilder<DB>, ids: &[i64])
where
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut list = query.separated(", ");
    for &id in ids {
        list.push_bind(id);
    }
}

/// Up to `limit` messages of a chat with `after_seq < seq < before_seq`, in seq order: the
/// replay for a resuming client and the gap filler for live delivery.
pub async fn seq_range(
    db: &Db,
    chat_id: i64,
    after_seq: i64,
    before_seq: i64,
    limit: i64,
) -> sqlx::Result<Vec<Message>> {
    let sql = concat!(
        message_select!(),
        "WHERE m.chat_id = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq LIMIT $4"
    );
    on_pool!(db, pool => sqlx::query_as::<_, Message>(sql)
        .bind(chat_id)
        .bind(after_seq)
        .bind(before_seq)
        .bind(limit)
        .fetch_all(pool)
        .await)
}

/// The seq of message `id` if it belongs to the chat.
pub async fn seq_of(db: &Db, chat_id: i64, id: i64) -> sqlx::Result<Option<i64>> {
    let sql = "SELECT seq FROM messages WHERE id = $1 AND chat_id = $2";
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(id).bind(chat_id).fetch_optional(pool).await)
}

/// The message with this id, whichever chat it is in.
pub async fn by_id(db: &Db, id: i64) -> sqlx::Result<Option<Message>> {
    let sql = concat!(message_select!(), "WHERE m.id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, Message>(sql).bind(id).fetch_optional(pool).await)
}

/// The message, if it is in a chat `user_id` takes part in.
pub async fn visible_to(db: &Db, id: i64, user_id: i64) -> sqlx::Result<Option<Message>> {
    let sql = concat!(
        message_select!(),
        "JOIN chat_participants p ON p.chat_id = m.chat_id AND p.user_id = $2 WHERE m.id = $1"
    );
    on_pool!(db, pool => sqlx::query_as::<_, Message>(sql)
        .bind(id)
        .bind(user_id)
        .fetch_optional(pool)
        .await)
}

/// A window of one chat's history, oldest first, if `reader` takes part in the chat (nothing
/// otherwise, so an empty page says nothing about visibility).
pub async fn page_in_chat(
    db: &Db,
    chat_id: i64,
    reader: i64,
    window: Window,
) -> sqlx::Result<Vec<Message>> {
    macro_rules! page {
        ($order:literal) => {
            concat!(
                message_select!(),
                "WHERE m.chat_id = $1 AND m.id > $2 AND m.id < $3 AND EXISTS \
                 (SELECT 1 FROM chat_participants p WHERE p.chat_id = $1 AND p.user_id = $5) \
                 ORDER BY m.id ",
                $order,
                " LIMIT $4"
            )
        };
    }
    let sql = if window.from_newest() {
        page!("DESC")
    } else {
        page!("ASC")
    };
    let rows = on_pool!(db, pool => sqlx::query_as::<_, Message>(sql)
        .bind(chat_id)
        .bind(window.lower())
        .bind(window.upper())
        .bind(window.limit)
        .bind(reader)
        .fetch_all(pool)
        .await)?;
    Ok(window.ascending(rows))
}

/// A window over every chat `user_id` takes part in, oldest first.
pub async fn page_for_user(db: &Db, user_id: i64, window: Window) -> sqlx::Result<Vec<Message>> {
    let newest = concat!(
        message_select!(),
        "JOIN chat_participants p ON p.chat_id = m.chat_id AND p.user_id = $1 \
         WHERE m.id > $2 AND m.id < $3 ORDER BY m.id DESC LIMIT $4"
    );
    let oldest = concat!(
        message_select!(),
        "JOIN chat_participants p ON p.chat_id = m.chat_id AND p.user_id = $1 \
         WHERE m.id > $2 AND m.id < $3 ORDER BY m.id LIMIT $4"
    );
    page_by_id(db, user_id, window, newest, oldest).await
}

/// A window over the messages that mention `user_id` in the chats they take part in now, by
/// message id (deleted messages mention no one).
pub async fn page_mentioning(db: &Db, user_id: i64, window: Window) -> sqlx::Result<Vec<Message>> {
    let newest = concat!(
        message_select!(),
        "JOIN message_mentions mm ON mm.message_id = m.id AND mm.user_id = $1 \
         JOIN chat_participants p ON p.chat_id = m.chat_id AND p.user_id = $1 \
         WHERE m.id > $2 AND m.id < $3 ORDER BY m.id DESC LIMIT $4"
    );
    let oldest = concat!(
        message_select!(),
        "JOIN message_mentions mm ON mm.message_id = m.id AND mm.user_id = $1 \
         JOIN chat_participants p ON p.chat_id = m.chat_id AND p.user_id = $1 \
         WHERE m.id > $2 AND m.id < $3 ORDER BY m.id LIMIT $4"
    );
    page_by_id(db, user_id, window, newest, oldest).await
}

/// Runs one of two statements over a window by message id for `user_id` (`$1`), with the
/// window's bounds (`$2`, `$3`) and limit (`$4`): `newest` reads downwards from the upper bound,
/// `oldest` upwards from the lower one. Returns the rows oldest first.
async fn page_by_id(
    db: &Db,
    user_id: i64,
    window: Window,
    newest: &'static str,
    oldest: &'static str,
) -> sqlx::Result<Vec<Message>> {
    let sql = if window.from_newest() { newest } else { oldest };
    let rows = on_pool!(db, pool => sqlx::query_as::<_, Message>(sql)
        .bind(user_id)
        .bind(window.lower())
        .bind(window.upper())
        .bind(window.limit)
        .fetch_all(pool)
        .await)?;
    Ok(window.ascending(rows))
}

/// The newest `per_chat` messages of each given chat, ordered by chat then id: one query for
/// any number of chats, reading only the rows it returns plus an index probe per chat.
pub async fn latest_per_chat(
    db: &Db,
    chat_ids: &[i64],
    per_chat: i64,
) -> sqlx::Result<Vec<Message>> {
    if chat_ids.is_empty() || per_chat <= 0 {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(concat!(
            "SELECT ",
            message_columns!(),
            " FROM (SELECT c.id AS chat_id, COALESCE((SELECT m2.id FROM messages m2 WHERE m2.chat_id = c.id \
             ORDER BY m2.id DESC LIMIT 1 OFFSET ",
        ));
        q.push_bind(per_chat - 1);
        q.push("), 0) AS first_id FROM chats c WHERE c.id IN (");
        let mut list = q.separated(", ");
        for id in chat_ids {
            list.push_bind(*id);
        }
        q.push(
            concat!(
                ")) b JOIN messages m ON m.chat_id = b.chat_id AND m.id >= b.first_id \
                 JOIN users u ON u.id = m.sender_id",
                reply_join!(),
                "ORDER BY m.chat_id, m.id"
            ),
        );
        q.build_query_as::<Message>().fetch_all(pool).await
    })
}

/// Which messages an admin list shows; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub chat_id: Option<i64>,
    /// The sender's exact username.
    pub sender: Option<String>,
    /// Part of the content, any case.
    pub search: Option<String>,
}

/// A message with the name of its chat, as the admin lists show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageWithChat {
    #[sqlx(flatten)]
    pub message: Message,
    pub chat_name: String,
}

/// `MessageWithChat`'s columns with their `FROM`; a `WHERE` may follow.
macro_rules! message_with_chat_select {
    () => {
        concat!(
            "SELECT ",
            message_columns!(),
            ", c.name AS chat_name \
             FROM messages m JOIN users u ON u.id = m.sender_id JOIN chats c ON c.id = m.chat_id ",
            reply_join!()
        )
    };
}

/// The `WHERE` of a filtered message list over `messages m` and `users u`: `$1` the chat, `$2`
/// the sender's username, `$3` the content pattern, each NULL when it does not filter.
macro_rules! message_filter {
    () => {
        "WHERE ($1 IS NULL OR m.chat_id = $1) AND ($2 IS NULL OR u.username = $2) \
         AND ($3 IS NULL OR LOWER(m.content) LIKE $3 ESCAPE '!')"
    };
}

/// How many messages match the filter.
pub async fn count_matching(db: &Db, filter: &MessageFilter) -> sqlx::Result<i64> {
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

/// A page of the matching messages, newest first: at most `limit`, skipping the first `offset`.
pub async fn matching(
    db: &Db,
    filter: &MessageFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<MessageWithChat>> {
    let sql = concat!(
        message_with_chat_select!(),
        message_filter!(),
        " ORDER BY m.id DESC LIMIT $4 OFFSET $5"
    );
    let pattern = filter.search.as_deref().map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, MessageWithChat>(sql)
        .bind(filter.chat_id)
        .bind(filter.sender.as_deref())
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

/// The message with this id and its chat's name; `None` when there is no such message.
pub async fn with_chat_by_id(db: &Db, id: i64) -> sqlx::Result<Option<MessageWithChat>> {
    let sql = concat!(message_with_chat_select!(), "WHERE m.id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, MessageWithChat>(sql).bind(id).fetch_optional(pool).await)
}

/// Why a change to a message was not made (nothing was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such message in this chat, or the chat is not the actor's to see.
    NotFound,
    /// The actor may see the message but not make this change to it.
    NotAllowed,
    /// The message is deleted already.
    Deleted,
    /// The message has [`MAX_EMOJIS`] different reactions already, and this is another.
    TooManyEmojis,
}

/// Most different emojis one message can carry as reactions, so that a message's view stays
/// small whoever reacts with what.
pub const MAX_EMOJIS: i64 = 50;

/// Most earlier versions of a message listed: the newest ones.
pub const MAX_VERSIONS: i64 = 100;

/// Who changes a message: their id, and whether they are staff (who may delete any message).
#[derive(Debug, Clone, Copy)]
pub struct Actor {
    pub user_id: i64,
    pub staff: bool,
}

/// A change made to a message: the position of its event in the chat's log, and the message as
/// it is now.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The event, as the log holds it; `None` when the change was already so (a reaction
    /// added twice, or taken back when there was none), and nothing was written.
    pub event: Option<EventRow>,
    /// The message after the change.
    pub message: Message,
}

/// A message's state as a change sees it, read under the chat's lock.
#[derive(sqlx::FromRow)]
struct Target {
    sender_id: i64,
    seq: i64,
    deleted: bool,
    content: String,
    written_at: DateTime<Utc>,
    owner_id: Option<i64>,
    member: bool,
}

/// A change to make to a message with [`change`].
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Replace the content (the sender only, while a participant).
    Edit { content: &'a str },
    /// Delete it, leaving a tombstone (its sender or the chat's owner, both participants, or
    /// staff whether or not they take part).
    Delete,
    /// Add the actor's reaction `emoji` (any participant).
    React { emoji: &'a str },
    /// Take back the actor's reaction `emoji`.
    Unreact { emoji: &'a str },
}

/// Makes `change` to message `message_id` of chat `chat_id` as `actor`, in one transaction that
/// first takes the chat's next log position (locking the chat's row as a send does, so
/// membership and the message's state are read under the lock that orders the log), then writes
/// the change and its event at that position:
/// - an edit keeps the previous version in `message_versions` and sets `edited_at`;
/// - an edit also replaces the message's mentions with those of the new content;
/// - a deletion empties the content, erases the earlier versions, the content of the message's
///   edit events, its mentions and its reactions, unpins it, and sets `deleted_at`.
///
/// Refused, with nothing written: `NotFound` (no such message in the chat, or the actor may not
/// see it), `NotAllowed`, `Deleted`.
pub async fn change(
    db: &Db,
    chat_id: i64,
    message_id: i64,
    actor: Actor,
    change: Change<'_>,
) -> sqlx::Result<Result<Changed, Refusal>> {
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        let seq: Option<i64> = sqlx::query_scalar(super::events::NEXT_POSITION)
        .bind(chat_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            return Ok(Err(Refusal::NotFound));
        };
        let target: Option<Target> = sqlx::query_as(
            "SELECT m.sender_id, m.seq, (m.deleted_at IS NOT NULL) AS deleted, m.content, \
             COALESCE(m.edited_at, m.created_at) AS written_at, c.owner_id, \
             EXISTS (SELECT 1 FROM chat_participants p \
                     WHERE p.chat_id = $1 AND p.user_id = $3) AS member \
             FROM messages m JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = $1 AND m.id = $2",
        )
        .bind(chat_id)
        .bind(message_id)
        .bind(actor.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(target) = target.filter(|t| t.member || actor.staff) else {
            return Ok(Err(Refusal::NotFound));
        };
        let own = target.member && target.sender_id == actor.user_id;
        let allowed = match change {
            Change::Edit { .. } => own,
            Change::Delete => {
                own || actor.staff
                    || (target.member && target.owner_id == Some(actor.user_id))
            }
            Change::React { .. } | Change::Unreact { .. } => target.member,
        };
        if !allowed {
            return Ok(Err(Refusal::NotAllowed));
        }
        if target.deleted {
            return Ok(Err(Refusal::Deleted));
        }
        // An edit's event carries the mentions of its content.
        let mut edit_mentions: Option<String> = None;
        let (kind, content) = match change {
            Change::Edit { content } => {
                sqlx::query(
                    "INSERT INTO message_versions (message_id, content, written_at, replaced_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(message_id)
                .bind(&target.content)
                .bind(target.written_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                // Mentions follow the content: a name added by the edit mentions its member.
                let names = crate::domain::mention::candidates(content);
                let ids = if names.is_empty() {
                    Vec::new()
                } else {
                    let found = members_named!(tx, &[chat_id], &names);
                    mentioned_ids(&found, chat_id, target.sender_id, &names)
                };
                edit_mentions = crate::domain::mention::encode_ids(&ids);
                sqlx::query(
                    "UPDATE messages SET content = $1, edited_at = $2, mentions = $3 WHERE id = $4",
                )
                .bind(content)
                .bind(now)
                .bind(&edit_mentions)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM message_mentions WHERE message_id = $1")
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                let mentioned = [Mentioned { message_id, chat_id, seq: target.seq, ids }];
                insert_mentions!(tx, mentioned);
                (EventKind::MessageEdited, Some(content))
            }
            Change::Delete => {
                sqlx::query(
                    "UPDATE messages SET content = '', deleted_at = $1, mentions = NULL, \
                     attachments = NULL WHERE id = $2",
                )
                .bind(now)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
                // A tombstone carries nothing of what it was: no mentions, no reactions, no
                // attachments (their objects go with the next sweep when nothing else holds them).
                for sql in [
                    "DELETE FROM message_mentions WHERE message_id = $1",
                    "DELETE FROM message_reactions WHERE message_id = $1",
                    "DELETE FROM attachments WHERE message_id = $1",
                ] {
                    sqlx::query(sql).bind(message_id).execute(&mut *tx).await?;
                }
                sqlx::query("DELETE FROM message_versions WHERE message_id = $1")
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE chat_events SET content = NULL, mentions = NULL WHERE message_id = $1")
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                // A deleted message is no longer pinned; its deletion event says so.
                sqlx::query("DELETE FROM message_pins WHERE message_id = $1")
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                (EventKind::MessageDeleted, None)
            }
            Change::React { emoji } | Change::Unreact { emoji } => {
                let adding = matches!(change, Change::React { .. });
                if adding {
                    let (emojis, has_this): (i64, bool) = sqlx::query_as(
                        "SELECT COUNT(DISTINCT emoji), \
                         COALESCE(MAX(CASE WHEN emoji = $2 THEN 1 ELSE 0 END), 0) = 1 \
                         FROM message_reactions WHERE message_id = $1",
                    )
                    .bind(message_id)
                    .bind(emoji)
                    .fetch_one(&mut *tx)
                    .await?;
                    if emojis >= MAX_EMOJIS && !has_this {
                        return Ok(Err(Refusal::TooManyEmojis));
                    }
                }
                let done = if adding {
                    sqlx::query(
                        "INSERT INTO message_reactions (message_id, user_id, emoji, created_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(message_id)
                    .bind(actor.user_id)
                    .bind(emoji)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                } else {
                    sqlx::query(
                        "DELETE FROM message_reactions \
                         WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
                    )
                    .bind(message_id)
                    .bind(actor.user_id)
                    .bind(emoji)
                    .execute(&mut *tx)
                    .await?
                }
                .rows_affected();
                if done == 0 {
                    // Already so: the transaction (and the position it took) is dropped.
                    let message: Message =
                        sqlx::query_as(concat!(message_select!(), "WHERE m.id = $1"))
                            .bind(message_id)
                            .fetch_one(&mut *tx)
                            .await?;
                    return Ok(Ok(Changed { event: None, message }));
                }
                let kind = if adding {
                    EventKind::ReactionAdded
                } else {
                    EventKind::ReactionRemoved
                };
                (kind, Some(emoji))
            }
        };
        let mut event = EventRow {
            chat_id,
            seq,
            kind: kind.as_str().to_owned(),
            message_id: Some(message_id),
            actor_id: Some(actor.user_id),
            user_id: None,
            username: None,
            content: content.map(str::to_owned),
            mentions: edit_mentions,
            read_seq: None,
            created_at: now,
        };
        if matches!(change, Change::React { .. } | Change::Unreact { .. }) {
            // A reaction's event names who reacted.
            event.user_id = Some(actor.user_id);
            event.username = sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
                .bind(actor.user_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        super::events::insert_event!(tx, &event);
        let message: Message = sqlx::query_as(concat!(message_select!(), "WHERE m.id = $1"))
            .bind(message_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(Changed {
            event: Some(event),
            message,
        }))
    })
}

/// An earlier version of an edited message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Version {
    pub content: String,
    /// When this version was written.
    pub written_at: DateTime<Utc>,
    /// When the edit that replaced it was made.
    pub replaced_at: DateTime<Utc>,
}

/// The newest [`MAX_VERSIONS`] earlier versions of a message, oldest first (none once it is
/// deleted).
pub async fn versions(db: &Db, message_id: i64) -> sqlx::Result<Vec<Version>> {
    let sql = "SELECT content, written_at, replaced_at FROM message_versions \
               WHERE message_id = $1 ORDER BY id DESC LIMIT $2";
    let mut versions = on_pool!(db, pool => sqlx::query_as::<_, Version>(sql)
        .bind(message_id)
        .bind(MAX_VERSIONS)
        .fetch_all(pool)
        .await)?;
    versions.reverse();
    Ok(versions)
}

/// One emoji's reactions on a message, as the viewer sees them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReactionCount {
    pub message_id: i64,
    pub emoji: String,
    pub count: i64,
    /// Whether the viewer is among them.
    pub me: bool,
}

/// The reactions on the given messages, by message then by first use of the emoji, with
/// whether `viewer_id` reacted: one query for any number of messages.
pub async fn reactions(
    db: &Db,
    message_ids: &[i64],
    viewer_id: i64,
) -> sqlx::Result<Vec<ReactionCount>> {
    if message_ids.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = QueryBuilder::new(
            "SELECT message_id, emoji, COUNT(*) AS count, \
             MAX(CASE WHEN user_id = ",
        );
        q.push_bind(viewer_id);
        q.push(
            " THEN 1 ELSE 0 END) = 1 AS me FROM message_reactions WHERE message_id IN (",
        );
        push_list(&mut q, message_ids);
        q.push(") GROUP BY message_id, emoji ORDER BY message_id, MIN(created_at), emoji");
        q.build_query_as::<ReactionCount>().persistent(false).fetch_all(pool).await
    })
}
