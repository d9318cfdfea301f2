//! The `chats` and `chat_participants` tables.

use chrono::{DateTime, Utc};

use super::{
    contains_pattern,
    events::{log_event, EventKind, EventRow},
    on_pool, on_writer,
    users::user_columns,
    users::User,
    Db, Window,
};

/// A group chat's own columns.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Chat {
    pub id: i64,
    pub name: String,
    /// The user who manages the chat; `None` once their account is deleted.
    pub owner_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// A direct chat: the one chat between two users (or a user's own), with no owner and
    /// fixed members ([`direct`]).
    pub direct: bool,
    /// Whether moves of members' read positions are logged as `read_receipt` events, for
    /// every member to see (off by default; the owner or staff switch it).
    pub read_receipts: bool,
}

/// `Chat`'s columns, read from `chats c`.
macro_rules! chat_columns {
    () => {
        "c.id, c.name, c.owner_id, c.created_at, (c.direct_key IS NOT NULL) AS direct, \
         c.read_receipts"
    };
}

/// A member of a chat: the chat's id and the user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Participant {
    pub chat_id: i64,
    #[sqlx(flatten)]
    pub user: User,
}

/// Creates a chat owned by `owner_id` with the given participants (the owner among them).
pub async fn create(
    db: &Db,
    name: &str,
    owner_id: i64,
    participant_ids: &[i64],
) -> sqlx::Result<Chat> {
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        let chat = sqlx::query_as::<_, Chat>(
            "INSERT INTO chats (name, owner_id, created_at) VALUES ($1, $2, $3) \
             RETURNING id, name, owner_id, created_at, FALSE AS direct, read_receipts",
        )
        .bind(name)
        .bind(owner_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut q = sqlx::QueryBuilder::new("INSERT INTO chat_participants (chat_id, user_id, joined_at) ");
        q.push_values(participant_ids, |mut row, user_id| {
            row.push_bind(chat.id).push_bind(*user_id).push_bind(now);
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(chat)
    })
}

/// The direct chat of users `low` and `high` (`low <= high`; equal for a user's chat with
/// themself), created named `name`, without an owner, with the two as its members when it does
/// not exist yet. `Some((chat, true))` when this call created it, `Some((chat, false))` when it
/// existed; `None` only when it existed but was deleted before it could be read (try again).
///
/// Concurrent calls for one pair, from either side and any process, end with one chat: the
/// pair's key (`low:high`) is unique, so every insert but one does nothing and reads the chat
/// the winner committed (on PostgreSQL an insert meeting an uncommitted one waits for it).
pub async fn direct(
    db: &Db,
    low: i64,
    high: i64,
    name: &str,
) -> sqlx::Result<Option<(Chat, bool)>> {
    let key = format!("{low}:{high}");
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        let created: Option<Chat> = sqlx::query_as(
            "INSERT INTO chats (name, owner_id, created_at, direct_key) VALUES ($1, NULL, $2, $3) \
             ON CONFLICT (direct_key) DO NOTHING \
             RETURNING id, name, owner_id, created_at, TRUE AS direct, read_receipts",
        )
        .bind(name)
        .bind(now)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(chat) = created else {
            // Read in a statement of its own, so on PostgreSQL it sees the winner's commit.
            let existing: Option<Chat> = sqlx::query_as(concat!(
                "SELECT ",
                chat_columns!(),
                " FROM chats c WHERE c.direct_key = $1"
            ))
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(existing.map(|chat| (chat, false)));
        };
        let mut q = sqlx::QueryBuilder::new("INSERT INTO chat_participants (chat_id, user_id, joined_at) ");
        let members: &[i64] = if low == high { &[low] } else { &[low, high] };
        q.push_values(members, |mut row, user_id| {
            row.push_bind(chat.id).push_bind(*user_id).push_bind(now);
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some((chat, true)))
    })
}

/// The chat, if it exists and `user_id` takes part in it.
pub async fn visible_to(db: &Db, chat_id: i64, user_id: i64) -> sqlx::Result<Option<Chat>> {
    let sql = concat!(
        "SELECT ",
        chat_columns!(),
        " FROM chats c \
         JOIN chat_participants p ON p.chat_id = c.id AND p.user_id = $2 WHERE c.id = $1"
    );
    on_pool!(db, pool => sqlx::query_as::<_, Chat>(sql)
        .bind(chat_id)
        .bind(user_id)
        .fetch_optional(pool)
        .await)
}

/// A window over the chats `user_id` takes part in, by chat id.
pub async fn page_for_user(db: &Db, user_id: i64, window: Window) -> sqlx::Result<Vec<Chat>> {
    let sql = if window.from_newest() {
        concat!(
            "SELECT ",
            chat_columns!(),
            " FROM chat_participants p JOIN chats c ON c.id = p.chat_id \
             WHERE p.user_id = $1 AND p.chat_id > $2 AND p.chat_id < $3 \
             ORDER BY p.chat_id DESC LIMIT $4"
        )
    } else {
        concat!(
            "SELECT ",
            chat_columns!(),
            " FROM chat_participants p JOIN chats c ON c.id = p.chat_id \
             WHERE p.user_id = $1 AND p.chat_id > $2 AND p.chat_id < $3 \
             ORDER BY p.chat_id LIMIT $4"
        )
    };
    let rows = on_pool!(db, pool => sqlx::query_as::<_, Chat>(sql)
        .bind(user_id)
        .bind(window.lower())
        .bind(window.upper())
        .bind(window.limit)
        .fetch_all(pool)
        .await)?;
    Ok(window.ascending(rows))
}

/// The participants of every given chat, ordered by chat then user id: one query for any
/// number of chats.
pub async fn participants(db: &Db, chat_ids: &[i64]) -> sqlx::Result<Vec<Participant>> {
    if chat_ids.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(concat!(
            "SELECT p.chat_id, u.* FROM chat_participants p JOIN (SELECT ",
            user_columns!(),
            " FROM users) u ON u.id = p.user_id WHERE p.chat_id IN ("
        ));
        let mut list = q.separated(", ");
        for id in chat_ids {
            list.push_bind(*id);
        }
        q.push(") ORDER BY p.chat_id, u.id");
        q.build_query_as::<Participant>().fetch_all(pool).await
    })
}

/// Which of `user_ids` take part in the chat, ascending.
pub async fn members_among(db: &Db, chat_id: i64, user_ids: &[i64]) -> sqlx::Result<Vec<i64>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT user_id FROM chat_participants WHERE chat_id = ",
        );
        q.push_bind(chat_id);
        q.push(" AND user_id IN (");
        let mut list = q.separated(", ");
        for id in user_ids {
            list.push_bind(*id);
        }
        q.push(") ORDER BY user_id");
        q.build_query_scalar::<i64>().fetch_all(pool).await
    })
}

/// The highest seq handed out in the chat; `None` when the chat does not exist.
pub async fn last_seq(db: &Db, chat_id: i64) -> sqlx::Result<Option<i64>> {
    let sql = "SELECT last_seq FROM chats WHERE id = $1";
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(chat_id).fetch_optional(pool).await)
}

/// The chat's last seq, if `user_id` takes part in it.
pub async fn last_seq_for_member(db: &Db, chat_id: i64, user_id: i64) -> sqlx::Result<Option<i64>> {
    let sql = "SELECT c.last_seq FROM chats c \
               JOIN chat_participants p ON p.chat_id = c.id AND p.user_id = $2 WHERE c.id = $1";
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(chat_id).bind(user_id).fetch_optional(pool).await)
}

/// Sets the chat's name as `actor` and logs it (`chat_renamed`); `None` for an unknown chat.
pub async fn rename(
    db: &Db,
    chat_id: i64,
    name: &str,
    actor: Option<i64>,
) -> sqlx::Result<Option<EventRow>> {
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        let renamed = sqlx::query("UPDATE chats SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(chat_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if renamed == 0 {
            return Ok(None);
        }
        let event = log_event!(tx, chat_id, EventKind::ChatRenamed, message: None, actor: actor,
            user: None, content: Some(name.to_owned()), at: now);
        tx.commit().await?;
        Ok(Some(event))
    })
}

/// Deletes the chat; its participants and messages go with it.
pub async fn delete(db: &Db, chat_id: i64) -> sqlx::Result<()> {
    let sql = "DELETE FROM chats WHERE id = $1";
    on_writer!(db, pool => sqlx::query(sql).bind(chat_id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Adds users who are not yet participants, as `actor`, logging each addition
/// (`member_added`) under the chat's lock; returns the events, one per user actually added.
pub async fn add_participants(
    db: &Db,
    chat_id: i64,
    user_ids: &[i64],
    actor: Option<i64>,
) -> sqlx::Result<Vec<EventRow>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        let mut q = sqlx::QueryBuilder::new("INSERT INTO chat_participants (chat_id, user_id, joined_at) ");
        q.push_values(user_ids, |mut row, user_id| {
            row.push_bind(chat_id).push_bind(*user_id).push_bind(now);
        });
        q.push(" ON CONFLICT (chat_id, user_id) DO NOTHING RETURNING user_id");
        let mut added: Vec<i64> = q.build_query_scalar::<i64>().persistent(false).fetch_all(&mut *tx).await?;
        added.sort_unstable();
        let mut events = Vec::with_capacity(added.len());
        for user in added {
            events.push(log_event!(tx, chat_id, EventKind::MemberAdded, message: None,
                actor: actor, user: Some(user), content: None, at: now));
        }
        tx.commit().await?;
        Ok(events)
    })
}

/// Removes one participant as `actor`, logging it (`member_removed`); `None` when they were not
/// one. Takes the chat's row lock like a send does, so a send that was waiting for it sees the
/// removal.
pub async fn remove_participant(
    db: &Db,
    chat_id: i64,
    user_id: i64,
    actor: Option<i64>,
) -> sqlx::Result<Option<EventRow>> {
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE chats SET last_seq = last_seq WHERE id = $1")
            .bind(chat_id)
            .execute(&mut *tx)
            .await?;
        let removed = sqlx::query("DELETE FROM chat_participants WHERE chat_id = $1 AND user_id = $2")
            .bind(chat_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed != 1 {
            return Ok(None);
        }
        let event = log_event!(tx, chat_id, EventKind::MemberRemoved, message: None,
            actor: actor, user: Some(user_id), content: None, at: now);
        tx.commit().await?;
        Ok(Some(event))
    })
}

/// What became of a chat when someone left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The user was not a participant.
    NotParticipant,
    Left,
    /// The owner left; ownership passed to the longest-standing remaining participant.
    OwnershipPassed {
        new_owner: i64,
    },
    /// The last participant left; the chat is deleted.
    ChatDeleted,
}

/// `user_id` leaves the chat. An owner hands the chat to the participant who joined first;
/// the last one out deletes it, so no chat is left without anyone able to manage it.
///
/// Returns the events logged: `member_left`, then `owner_changed` when ownership passed; none
/// when the chat was deleted (its log goes with it).
pub async fn leave(
    db: &Db,
    chat_id: i64,
    user_id: i64,
) -> sqlx::Result<(Departure, Vec<EventRow>)> {
    on_writer!(db, pool => {
        let now = super::now();
        let mut tx = pool.begin().await?;
        // Lock the chat's row first (the write lock on SQLite): departures and sends of one chat
        // take turns, so two last members leaving at once cannot both see the other stay.
        sqlx::query("UPDATE chats SET last_seq = last_seq WHERE id = $1")
            .bind(chat_id)
            .execute(&mut *tx)
            .await?;
        let removed = sqlx::query("DELETE FROM chat_participants WHERE chat_id = $1 AND user_id = $2")
            .bind(chat_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Ok((Departure::NotParticipant, Vec::new()));
        }
        let owner: Option<i64> = sqlx::query_scalar("SELECT owner_id FROM chats WHERE id = $1")
            .bind(chat_id)
            .fetch_one(&mut *tx)
            .await?;
        let successor: Option<i64> = sqlx::query_scalar(
            "SELECT user_id FROM chat_participants WHERE chat_id = $1 ORDER BY joined_at, user_id LIMIT 1",
        )
        .bind(chat_id)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match successor {
            None => {
                sqlx::query("DELETE FROM chats WHERE id = $1").bind(chat_id).execute(&mut *tx).await?;
                Departure::ChatDeleted
            }
            Some(next) if owner == Some(user_id) || owner.is_none() => {
                sqlx::query("UPDATE chats SET owner_id = $1 WHERE id = $2")
                    .bind(next)
                    .bind(chat_id)
                    .execute(&mut *tx)
                    .await?;
                Departure::OwnershipPassed { new_owner: next }
            }
            Some(_) => Departure::Left,
        };
        let mut events = Vec::new();
        if outcome != Departure::ChatDeleted {
            events.push(log_event!(tx, chat_id, EventKind::MemberLeft, message: None,
                actor: Some(user_id), user: Some(user_id), content: None, at: now));
        }
        if let Departure::OwnershipPassed { new_owner } = outcome {
            events.push(log_event!(tx, chat_id, EventKind::OwnerChanged, message: None,
                actor: None, user: Some(new_owner), content: None, at: now));
        }
        tx.commit().await?;
        Ok((outcome, events))
    })
}

/// The ids of the chats `user_id` takes part in, ascending.
pub async fn ids_for_user(db: &Db, user_id: i64) -> sqlx::Result<Vec<i64>> {
    let sql = "SELECT chat_id FROM chat_participants WHERE user_id = $1 ORDER BY chat_id";
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(user_id).fetch_all(pool).await)
}

/// A chat with what the admin lists show beside it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChatSummary {
    #[sqlx(flatten)]
    pub chat: Chat,
    /// The owner's username; `None` when the chat has no owner.
    pub owner_username: Option<String>,
    pub participant_count: i64,
    pub message_count: i64,
}

/// `ChatSummary`'s columns, read from `chats c`, with `FROM`; a `WHERE` may follow.
macro_rules! chat_summary_select {
    () => {
        concat!(
            "SELECT ",
            chat_columns!(),
            ", o.username AS owner_username, \
             (SELECT COUNT(*) FROM chat_participants p WHERE p.chat_id = c.id) AS participant_count, \
             (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id) AS message_count \
             FROM chats c LEFT JOIN users o ON o.id = c.owner_id "
        )
    };
}

/// How many chats have a name containing `search` (any case); all of them without it.
pub async fn count_matching(db: &Db, search: Option<&str>) -> sqlx::Result<i64> {
    let sql = "SELECT COUNT(*) FROM chats WHERE $1 IS NULL OR LOWER(name) LIKE $1 ESCAPE '!'";
    let pattern = search.map(contains_pattern);
    on_pool!(db, pool => sqlx::query_scalar(sql).bind(pattern).fetch_one(pool).await)
}

/// A page of the chats whose name contains `search` (any case), newest first: at most `limit`,
/// skipping the first `offset`.
pub async fn matching(
    db: &Db,
    search: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<ChatSummary>> {
    let sql = concat!(
        chat_summary_select!(),
        "WHERE $1 IS NULL OR LOWER(c.name) LIKE $1 ESCAPE '!' ORDER BY c.id DESC LIMIT $2 OFFSET $3"
    );
    let pattern = search.map(contains_pattern);
    on_pool!(db, pool => sqlx::query_as::<_, ChatSummary>(sql)
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)
}

/// The chat with its summary; `None` when there is no such chat.
pub async fn summary(db: &Db, id: i64) -> sqlx::Result<Option<ChatSummary>> {
    let sql = concat!(chat_summary_select!(), "WHERE c.id = $1");
    on_pool!(db, pool => sqlx::query_as::<_, ChatSummary>(sql).bind(id).fetch_optional(pool).await)
}

/// A member's read position in one chat.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct ReadState {
    pub chat_id: i64,
    /// The highest position the member marked read.
    pub last_read_seq: i64,
    /// Messages after it, from others, not deleted.
    pub unread_count: i64,
    /// Those of them that mention the member.
    pub unread_mentions: i64,
}

/// `user_id`'s read state in each of the given chats they take part in: one statement for any
/// number of chats (each count is a range read of an index: the chat's `(chat_id, seq)` for
/// messages, the user's `(user_id, chat_id, seq)` for mentions).
pub async fn read_states(db: &Db, user_id: i64, chat_ids: &[i64]) -> sqlx::Result<Vec<ReadState>> {
    if chat_ids.is_empty() {
        return Ok(Vec::new());
    }
    on_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT p.chat_id, p.last_read_seq, \
             (SELECT COUNT(*) FROM messages m WHERE m.chat_id = p.chat_id \
              AND m.seq > p.last_read_seq AND m.sender_id <> p.user_id \
              AND m.deleted_at IS NULL) AS unread_count, \
             (SELECT COUNT(*) FROM message_mentions mm WHERE mm.user_id = p.user_id \
              AND mm.chat_id = p.chat_id AND mm.seq > p.last_read_seq) AS unread_mentions \
             FROM chat_participants p WHERE p.user_id = ",
        );
        q.push_bind(user_id);
        q.push(" AND p.chat_id IN (");
        let mut list = q.separated(", ");
        for id in chat_ids {
            list.push_bind(*id);
        }
        q.push(")");
        q.build_query_as::<ReadState>().persistent(false).fetch_all(pool).await
    })
}

/// Moves `user_id`'s read position in the chat forward to the newest message at or before
/// position `seq` (never back); `None` when they do not take part or there is no such chat,
/// otherwise the read receipt logged (`Some(None)` when none was: the position did not move,
/// or read receipts are off).
///
/// A read position is always a message's: positions of other events (edits, reactions,
/// receipts…) round down to the message before them. So a receipt can never be read itself, and
/// two clients that each mark read the last frame they saw cannot log receipts of each other's
/// receipts without end. In a chat with read receipts on, a move is logged as a `read_receipt`
/// event. The chat's row is locked first (a write, so on SQLite the write lock is held from the
/// start), as every change to the chat does, so the switch is read as it stands at commit.
pub async fn mark_read(
    db: &Db,
    chat_id: i64,
    user_id: i64,
    seq: i64,
) -> sqlx::Result<Option<Option<EventRow>>> {
    on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        let receipts: Option<bool> = sqlx::query_scalar(
            "UPDATE chats SET last_seq = last_seq WHERE id = $1 RETURNING read_receipts",
        )
        .bind(chat_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(receipts) = receipts else {
            return Ok(None);
        };
        let before: Option<i64> = sqlx::query_scalar(
            "SELECT last_read_seq FROM chat_participants WHERE chat_id = $1 AND user_id = $2",
        )
        .bind(chat_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            return Ok(None);
        };
        let target: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM messages WHERE chat_id = $1 AND seq <= $2")
                .bind(chat_id)
                .bind(seq)
                .fetch_one(&mut *tx)
                .await?;
        let target = target.unwrap_or(0);
        if target <= before {
            tx.commit().await?;
            return Ok(Some(None));
        }
        sqlx::query(
            "UPDATE chat_participants SET last_read_seq = $3 WHERE chat_id = $1 AND user_id = $2",
        )
        .bind(chat_id)
        .bind(user_id)
        .bind(target)
        .execute(&mut *tx)
        .await?;
        let event = if receipts {
            Some(log_event!(tx, chat_id, EventKind::ReadReceipt, message: None,
                actor: Some(user_id), user: Some(user_id), content: None, read_seq: Some(target),
                at: super::now()))
        } else {
            None
        };
        tx.commit().await?;
        Ok(Some(event))
    })
}

/// Switches read receipts on or off in the chat as `actor`, logging the switch
/// (`read_receipts_switched`) when it changes anything. `None` when there is no such chat;
/// `Some(None)` when it was so already.
pub async fn set_read_receipts(
    db: &Db,
    chat_id: i64,
    on: bool,
    actor: i64,
) -> sqlx::Result<Option<Option<EventRow>>> {
    on_writer!(db, pool => {
        let mut tx = pool.begin().await?;
        let switched = sqlx::query(
            "UPDATE chats SET read_receipts = $1 WHERE id = $2 AND read_receipts <> $1",
        )
        .bind(on)
        .bind(chat_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if switched == 0 {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM chats WHERE id = $1")
                .bind(chat_id)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(exists.map(|_| None));
        }
        let content = if on { "on" } else { "off" };
        let event = log_event!(tx, chat_id, EventKind::ReadReceiptsSwitched, message: None,
            actor: Some(actor), user: None, content: Some(content.to_owned()), read_seq: None,
            at: super::now());
        tx.commit().await?;
        Ok(Some(Some(event)))
    })
}

/// Every member's read position in the chat, by username: who has read up to where.
pub async fn read_positions(db: &Db, chat_id: i64) -> sqlx::Result<Vec<(i64, String, i64)>> {
    on_pool!(db, pool => sqlx::query_as::<_, (i64, String, i64)>(
        "SELECT u.id, u.username, p.last_read_seq FROM chat_participants p \
         JOIN users u ON u.id = p.user_id WHERE p.chat_id = $1 ORDER BY u.username, u.id",
    )
    .bind(chat_id)
    .fetch_all(pool)
    .await)
}
