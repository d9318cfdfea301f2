//! Each chat's ordered log. A message's creation is its row in `messages` (its `seq` is its
//! position); every other change (an edit, a deletion, …) is a row of `chat_events` at the next
//! position of the same counter (`chats.last_seq`), written in the same transaction as the
//! change while that counter's row is locked. So positions are gapless across the two tables,
//! and a position that is visible implies every smaller one is.

use super::{messages::Message, on_pool, Db};
use chrono::{DateTime, Utc};

/// What kind of change an event records. Stored as its snake-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A message's content was replaced (`content` is the new text).
    MessageEdited,
    /// A message was deleted; it stays as a tombstone.
    MessageDeleted,
    /// A message was pinned (`actor_id` who pinned it).
    MessagePinned,
    /// A message was unpinned (`actor_id` who unpinned it). A deletion unpins its message too,
    /// logged as the deletion alone.
    MessageUnpinned,
}

impl EventKind {
    /// The stored (and wire) name: `message_edited`, `message_deleted`, `message_pinned`,
    /// `message_unpinned`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageEdited => "message_edited",
            EventKind::MessageDeleted => "message_deleted",
            EventKind::MessagePinned => "message_pinned",
            EventKind::MessageUnpinned => "message_unpinned",
        }
    }

    fn parse(name: &str) -> Option<EventKind> {
        Some(match name {
            "message_edited" => EventKind::MessageEdited,
            "message_deleted" => EventKind::MessageDeleted,
            "message_pinned" => EventKind::MessagePinned,
            "message_unpinned" => EventKind::MessageUnpinned,
            _ => return None,
        })
    }
}

/// One row of `chat_events`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub chat_id: i64,
    pub seq: i64,
    pub kind: String,
    pub message_id: Option<i64>,
    pub actor_id: Option<i64>,
    /// An edit's new text; `None` once its message is deleted (events keep no deleted content).
    pub content: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl EventRow {
    /// The kind, or `None` for a kind this version does not know (written by a newer one).
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.kind)
    }
}

/// One position of a chat's log.
#[derive(Debug, Clone)]
pub enum LogEntry {
    /// A message was posted (shown as it is now: edited, or a tombstone).
    Message(Message),
    /// Any other change.
    Event(EventRow),
}

impl LogEntry {
    /// The entry's position in its chat's log.
    pub fn seq(&self) -> i64 {
        match self {
            LogEntry::Message(m) => m.seq,
            LogEntry::Event(e) => e.seq,
        }
    }
}

/// Appends an event: `$1` chat, `$2` seq, `$3` kind, `$4` message, `$5` actor, `$6` content,
/// `$7` time. Run in the transaction of the change, which holds the chat's row lock and took
/// `seq` from its counter.
pub const INSERT: &str = "INSERT INTO chat_events \
     (chat_id, seq, kind, message_id, actor_id, content, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Takes chat `chat_id`'s next log position, locking its row until commit (so changes of one
/// chat take turns, sends included). `$1` chat.
pub const NEXT_POSITION: &str =
    "UPDATE chats SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq";

/// Up to `limit` entries of a chat's log with `after < seq < before`, in order: messages, and
/// with `with_events` every other kind of event too (without, the log as the original protocol
/// sees it: messages only). Two indexed range reads, merged.
pub async fn range(
    db: &Db,
    chat_id: i64,
    after: i64,
    before: i64,
    limit: i64,
    with_events: bool,
) -> sqlx::Result<Vec<LogEntry>> {
    let messages = super::messages::seq_range(db, chat_id, after, before, limit).await?;
    if !with_events {
        return Ok(messages.into_iter().map(LogEntry::Message).collect());
    }
    let sql = "SELECT chat_id, seq, kind, message_id, actor_id, content, created_at \
               FROM chat_events WHERE chat_id = $1 AND seq > $2 AND seq < $3 \
               ORDER BY seq LIMIT $4";
    let events: Vec<EventRow> = on_pool!(db, pool => sqlx::query_as::<_, EventRow>(sql)
        .bind(chat_id)
        .bind(after)
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    let mut merged: Vec<LogEntry> = messages
        .into_iter()
        .map(LogEntry::Message)
        .chain(events.into_iter().map(LogEntry::Event))
        .collect();
    merged.sort_by_key(LogEntry::seq);
    merged.truncate(limit.max(0) as usize);
    Ok(merged)
}
