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
    /// A user was added to the chat (`user_id`; `content` their username).
    MemberAdded,
    /// A member was removed by the owner or staff (`user_id`, `content` their username).
    MemberRemoved,
    /// A member left (`user_id`, `content` their username).
    MemberLeft,
    /// The chat has a new owner (`user_id`, `content` their username), after the owner left.
    OwnerChanged,
    /// The chat was renamed (`content` the new name).
    ChatRenamed,
    /// A reaction was added to a message (`content` the emoji, `actor_id` who reacted).
    ReactionAdded,
    /// A reaction was taken back (`content` the emoji, `actor_id` whose it was).
    ReactionRemoved,
    /// A message was pinned (`actor_id` who pinned it).
    MessagePinned,
    /// A message was unpinned (`actor_id` who unpinned it). A deletion unpins its message too,
    /// logged as the deletion alone.
    MessageUnpinned,
    /// A member's read position moved forward (`user_id`, `read_seq` the position now read);
    /// logged only in chats with read receipts on.
    ReadReceipt,
    /// Read receipts were switched on or off (`content` `on` or `off`, `actor_id` by whom).
    ReadReceiptsSwitched,
}

/// Every kind, for parsing.
const KINDS: [EventKind; 13] = [
    EventKind::MessageEdited,
    EventKind::MessageDeleted,
    EventKind::MemberAdded,
    EventKind::MemberRemoved,
    EventKind::MemberLeft,
    EventKind::OwnerChanged,
    EventKind::ChatRenamed,
    EventKind::ReactionAdded,
    EventKind::ReactionRemoved,
    EventKind::MessagePinned,
    EventKind::MessageUnpinned,
    EventKind::ReadReceipt,
    EventKind::ReadReceiptsSwitched,
];

impl EventKind {
    /// The stored (and wire) name, the kind in snake case: `message_edited`, `member_added`, …
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageEdited => "message_edited",
            EventKind::MessageDeleted => "message_deleted",
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::MemberLeft => "member_left",
            EventKind::OwnerChanged => "owner_changed",
            EventKind::ChatRenamed => "chat_renamed",
            EventKind::ReactionAdded => "reaction_added",
            EventKind::ReactionRemoved => "reaction_removed",
            EventKind::MessagePinned => "message_pinned",
            EventKind::MessageUnpinned => "message_unpinned",
            EventKind::ReadReceipt => "read_receipt",
            EventKind::ReadReceiptsSwitched => "read_receipts_switched",
        }
    }

    fn parse(name: &str) -> Option<EventKind> {
        KINDS.into_iter().find(|kind| kind.as_str() == name)
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
    /// The user a membership or reaction event is about (who was added, who reacted).
    pub user_id: Option<i64>,
    /// That user's username, read with the event (`None` for an account deleted since).
    #[sqlx(default)]
    pub username: Option<String>,
    /// The text the event carries (see [`EventKind`]); `None` once its message is deleted
    /// (events keep no deleted content).
    pub content: Option<String>,
    /// For an edit, the members its new content mentions (as
    /// [`crate::domain::mention::encode_ids`] keeps them).
    pub mentions: Option<String>,
    /// For a read receipt, the position the member has now read.
    pub read_seq: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl EventRow {
    /// The user this event takes out of the chat (removed, or left), whose sockets must close
    /// at its position, before anything later reaches them.
    pub fn departed(&self) -> Option<i64> {
        match self.kind()? {
            EventKind::MemberRemoved | EventKind::MemberLeft => self.user_id,
            _ => None,
        }
    }

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

/// Appends an event: `$1` chat, `$2` seq, `$3` kind, `$4` message, `$5` actor, `$6` user, `$7`
/// content, `$8` time, `$9` read position, `$10` mentions. Run in the transaction of the change, which holds the chat's row lock and
/// took `seq` from its counter.
pub const INSERT: &str = "INSERT INTO chat_events \
     (chat_id, seq, kind, message_id, actor_id, user_id, content, created_at, read_seq, mentions) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Takes chat `chat_id`'s next log position, locking its row until commit (so changes of one
/// chat take turns, sends included). `$1` chat.
pub const NEXT_POSITION: &str =
    "UPDATE chats SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq";

/// Inside an `on_writer!` body, in transaction `$tx`: inserts `$row` (an [`EventRow`] whose
/// position was taken in that transaction) into `chat_events`.
macro_rules! insert_event {
    ($tx:ident, $row:expr) => {{
        let row: &$crate::store::events::EventRow = $row;
        sqlx::query($crate::store::events::INSERT)
            .bind(row.chat_id)
            .bind(row.seq)
            .bind(row.kind.as_str())
            .bind(row.message_id)
            .bind(row.actor_id)
            .bind(row.user_id)
            .bind(row.content.as_deref())
            .bind(row.created_at)
            .bind(row.read_seq)
            .bind(row.mentions.as_deref())
            .execute(&mut *$tx)
            .await?;
    }};
}
pub(crate) use insert_event;

/// Inside an `on_writer!` body, in transaction `$tx`: takes the chat's next position
/// ([`NEXT_POSITION`]) and logs an event of `$kind` there; evaluates to its [`EventRow`]. The
/// fields are those of `EventRow` but `chat_id`, `seq`, `kind` and `mentions` (`read_seq` may be
/// left out, for `None`).
macro_rules! log_event {
    ($tx:ident, $chat:expr, $kind:expr, message: $message:expr, actor: $actor:expr,
     user: $user:expr, content: $content:expr, at: $at:expr) => {
        $crate::store::events::log_event!($tx, $chat, $kind, message: $message, actor: $actor,
            user: $user, content: $content, read_seq: None, at: $at)
    };
    ($tx:ident, $chat:expr, $kind:expr, message: $message:expr, actor: $actor:expr,
     user: $user:expr, content: $content:expr, read_seq: $read_seq:expr, at: $at:expr) => {{
        let chat_id: i64 = $chat;
        let seq: i64 = sqlx::query_scalar($crate::store::events::NEXT_POSITION)
            .bind(chat_id)
            .fetch_one(&mut *$tx)
            .await?;
        let user_id: Option<i64> = $user;
        let username: Option<String> = match user_id {
            Some(id) => {
                sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *$tx)
                    .await?
            }
            None => None,
        };
        let row = $crate::store::events::EventRow {
            chat_id,
            seq,
            kind: $kind.as_str().to_owned(),
            message_id: $message,
            actor_id: $actor,
            user_id,
            username,
            content: $content,
            mentions: None,
            read_seq: $read_seq,
            created_at: $at,
        };
        $crate::store::events::insert_event!($tx, &row);
        row
    }};
}
pub(crate) use log_event;

/// Up to `limit` entries of a chat's log with `after < seq < before`, in order: messages, and
/// with `with_events` every other kind of event too (without, the log as the original protocol
/// sees it: messages only). Two indexed range reads, merged.
///
/// The two reads are separate statements, so a change committed between them could show in the
/// second and not the first (an event at 12 without the message at 11), and a reader that moved
/// past 12 would never learn of 11. So the range is first cut at the chat's last position: every
/// position up to it is committed already (one commits only after the position below it does,
/// under the chat's lock), so both reads see all of them.
pub async fn range(
    db: &Db,
    chat_id: i64,
    after: i64,
    before: i64,
    limit: i64,
    with_events: bool,
) -> sqlx::Result<Vec<LogEntry>> {
    if !with_events {
        let messages = super::messages::seq_range(db, chat_id, after, before, limit).await?;
        return Ok(messages.into_iter().map(LogEntry::Message).collect());
    }
    let Some(last) = super::chats::last_seq(db, chat_id).await? else {
        return Ok(Vec::new());
    };
    let before = before.min(last.saturating_add(1));
    // Positions come from clients too: `after` may be the largest integer there is.
    if before <= after.saturating_add(1) {
        return Ok(Vec::new());
    }
    let messages = super::messages::seq_range(db, chat_id, after, before, limit).await?;
    let sql = "SELECT e.chat_id, e.seq, e.kind, e.message_id, e.actor_id, e.user_id, \
               u.username, e.content, e.mentions, e.read_seq, e.created_at \
               FROM chat_events e LEFT JOIN users u ON u.id = e.user_id \
               WHERE e.chat_id = $1 AND e.seq > $2 AND e.seq < $3 ORDER BY e.seq LIMIT $4";
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
