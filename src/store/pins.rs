//! The `message_pins` table: the messages pinned in each chat, at most one pin per message.
//! Pinning and unpinning are changes of the chat's log: each takes the chat's next position
//! and logs a `chat_events` row there, in the transaction that writes the pin, while the chat's
//! row is locked (as [`super::messages::change`] does for edits and deletions).

use chrono::{DateTime, Utc};

use super::{
    events::{EventKind, EventRow},
    messages::{message_columns, reply_join, Actor, Message},
    on_pool, on_writer, Db,
};

/// A pinned message, as it is now, with when and by whom it was pinned.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pin {
    #[sqlx(flatten)]
    pub message: Message,
    pub pinned_at: DateTime<Utc>,
    /// Who pinned it; `None` once their account is deleted.
    pub pinned_by_id: Option<i64>,
    pub pinned_by_username: Option<String>,
}

/// A pin's columns with their `FROM` (`message_pins p`, its message `m`, the sender `u` and
/// who pinned it, `b`); a `WHERE` follows.
macro_rules! pin_select {
    () => {
        concat!(
            "SELECT ",
            message_columns!(),
            ", p.pinned_at, p.pinned_by AS pinned_by_id, b.username AS pinned_by_username \
             FROM message_pins p JOIN messages m ON m.id = p.message_id \
             JOIN users u ON u.id = m.sender_id LEFT JOIN users b ON b.id = p.pinned_by ",
            reply_join!()
        )
    };
}

/// Why a pin or unpin was not made (nothing was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such message in this chat, or the actor does not take part in the chat.
    NotFound,
    /// The actor takes part but may not pin in this chat.
    NotAllowed,
    /// The message is deleted (pin only).
    Deleted,
    /// The chat has as many pins as it may hold (pin only).
    Full,
}

/// What a pin or unpin did.
#[derive(Debug, Clone)]
pub struct Pinning {
    /// The logged event; `None` when there was nothing to do (the message was pinned already,
    /// or was not pinned): then no position was taken.
    pub event: Option<EventRow>,
    /// The pin as it is after a pin; `None` after an unpin.
    pub pin: Option<Pin>,
}

/// A message's state as a pin or unpin sees it, read under the chat's lock.
#[derive(sqlx::FromRow)]
struct Target {
    deleted: bool,
    owner_id: Option<i64>,
    direct: bool,
    member: bool,
    pinned: bool,
    pins: i64,
}

/// Pins (`pin`) or unpins message `message_id` of chat `chat_id` as `actor`, in one transaction
/// that first takes the chat's next log position (locking the chat's row, so the rules below
/// are judged under the lock that orders the log), then writes the pin and its event
/// (`message_pinned` or `message_unpinned`) at that position. Who may: a participant who owns
/// the chat or is staff, and either member of a direct chat (which has no owner).
///
/// Pinning a pinned message, or unpinning one that is not pinned, changes nothing and takes no
/// position (`event` is `None`). Refused, with nothing written: `NotFound`, `NotAllowed`, and
/// when pinning, `Deleted` and `Full` (the chat holds `max_pins` pins already).
pub async fn set(
    db: &Db,
    chat_id: i64,
    message_id: i64,
    actor: Actor,
    pin: bool,
    max_pins: i64,
) -> sqlx::Result<Result<Pinning, Refusal>> {
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
            "SELECT (m.deleted_at IS NOT NULL) AS deleted, c.owner_id, \
             (c.direct_key IS NOT NULL) AS direct, \
             EXISTS (SELECT 1 FROM chat_participants p \
                     WHERE p.chat_id = $1 AND p.user_id = $3) AS member, \
             EXISTS (SELECT 1 FROM message_pins x WHERE x.message_id = $2) AS pinned, \
             (SELECT COUNT(*) FROM message_pins x WHERE x.chat_id = $1) AS pins \
             FROM messages m JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = $1 AND m.id = $2",
        )
        .bind(chat_id)
        .bind(message_id)
        .bind(actor.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(target) = target.filter(|t| t.member) else {
            return Ok(Err(Refusal::NotFound));
        };
        if !(actor.staff || target.direct || target.owner_id == Some(actor.user_id)) {
            return Ok(Err(Refusal::NotAllowed));
        }
        // Returning before the commit rolls the position back: nothing changed.
        if pin && target.deleted {
            return Ok(Err(Refusal::Deleted));
        }
        let kind = match (pin, target.pinned) {
            (true, false) if target.pins >= max_pins => return Ok(Err(Refusal::Full)),
            (true, false) => Some(EventKind::MessagePinned),
            (false, true) => Some(EventKind::MessageUnpinned),
            _ => None,
        };
        let event = match kind {
            None => None,
            Some(kind) => {
                if pin {
                    sqlx::query(
                        "INSERT INTO message_pins (message_id, chat_id, seq, pinned_by, pinned_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(message_id)
                    .bind(chat_id)
                    .bind(seq)
                    .bind(actor.user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                } else {
                    sqlx::query("DELETE FROM message_pins WHERE message_id = $1")
                        .bind(message_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let event = EventRow {
                    chat_id,
                    seq,
                    kind: kind.as_str().to_owned(),
                    message_id: Some(message_id),
                    actor_id: Some(actor.user_id),
                    user_id: None,
                    username: None,
                    content: None,
                    mentions: None,
                    read_seq: None,
                    created_at: now,
                };
                super::events::insert_event!(tx, &event);
                Some(event)
            }
        };
        let pin = if pin {
            let sql = concat!(pin_select!(), "WHERE p.message_id = $1");
            Some(sqlx::query_as::<_, Pin>(sql).bind(message_id).fetch_one(&mut *tx).await?)
        } else {
            None
        };
        if event.is_some() {
            tx.commit().await?;
        }
        Ok(Ok(Pinning { event, pin }))
    })
}

/// Up to `limit` pins of chat `chat_id`, newest pin first, if `reader` takes part in the chat
/// (nothing otherwise, so an empty list says nothing about visibility).
pub async fn in_chat(db: &Db, chat_id: i64, reader: i64, limit: i64) -> sqlx::Result<Vec<Pin>> {
    let sql = concat!(
        pin_select!(),
        "WHERE p.chat_id = $1 AND EXISTS \
         (SELECT 1 FROM chat_participants c WHERE c.chat_id = $1 AND c.user_id = $2) \
         ORDER BY p.seq DESC LIMIT $3"
    );
    on_pool!(db, pool => sqlx::query_as::<_, Pin>(sql)
        .bind(chat_id)
        .bind(reader)
        .bind(limit)
        .fetch_all(pool)
        .await)
}
