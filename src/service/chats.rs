//! Group chats: who sees them, who manages them, and every change to them or their members.
//!
//! Only participants see a chat (`NotFound` for anyone else, so outsiders learn nothing); only
//! its owner or staff rename, delete or manage members (`PermissionDenied` for other
//! participants); any participant may leave. Each change is committed first and then published
//! to the chat's sockets (removed members' sockets close with 4003, a deleted chat's with 4004).

use std::collections::{BTreeSet, HashMap};

use crate::{
    domain::username,
    realtime::hub::RoomEvent,
    state::AppState,
    store::{
        self,
        chats::{Chat, Departure},
        events::LogEntry,
        messages::Message,
        users::User,
        Db, Window,
    },
    wire::views::{ChatView, MessageView, UserView, Viewer},
};

use super::{batches::take_in_batches, FieldErrors, ServiceError, ServiceResult};

/// Messages a chat object nests: its newest 100, as the original's serializer does.
pub const NESTED_MESSAGES: i64 = 100;

/// Users asked for as members, by id and by username, as a client sent them.
#[derive(Debug, Default)]
pub struct MemberRequest {
    /// User ids (`participant_ids`).
    pub ids: Vec<i64>,
    /// Usernames (`participant_usernames`), matched exactly once normalized as stored ones are
    /// (NFKC).
    pub usernames: Vec<String>,
}

/// Builds the views of many chats for `viewer` with a fixed number of queries (five), whatever
/// their count: members, newest messages, their reactions, and the viewer's read state.
pub async fn views(db: &Db, chats: Vec<Chat>, viewer: Viewer) -> ServiceResult<Vec<ChatView>> {
    let ids: Vec<i64> = chats.iter().map(|c| c.id).collect();
    let mut participants: HashMap<i64, Vec<UserView>> = HashMap::new();
    for p in store::chats::participants(db, &ids).await? {
        participants
            .entry(p.chat_id)
            .or_default()
            .push(UserView::for_viewer(&p.user, viewer));
    }
    let latest = store::messages::latest_per_chat(db, &ids, NESTED_MESSAGES).await?;
    let mut views = super::messaging::MessageViews::of(db, &latest, viewer).await?;
    let mut messages: HashMap<i64, Vec<MessageView>> = HashMap::new();
    for m in latest {
        messages.entry(m.chat_id).or_default().push(views.view(m));
    }
    let reads: HashMap<i64, store::chats::ReadState> =
        store::chats::read_states(db, viewer.id, &ids)
            .await?
            .into_iter()
            .map(|r| (r.chat_id, r))
            .collect();
    Ok(chats
        .into_iter()
        .map(|chat| {
            let id = chat.id;
            let mut view = ChatView::new(
                chat,
                participants.remove(&id).unwrap_or_default(),
                messages.remove(&id).unwrap_or_default(),
            );
            if let Some(read) = reads.get(&id) {
                view.last_read_seq = read.last_read_seq;
                view.unread_count = read.unread_count;
                view.unread_mentions = read.unread_mentions;
            }
            view
        })
        .collect())
}

async fn view(db: &Db, chat: Chat, viewer: &User) -> ServiceResult<ChatView> {
    Ok(views(db, vec![chat], Viewer::of(viewer)).await?.remove(0))
}

/// The chat if `user` takes part in it. Errors: `NotFound` otherwise, so outsiders learn nothing.
pub async fn visible(state: &AppState, chat_id: i64, user: &User) -> ServiceResult<Chat> {
    store::chats::visible_to(&state.db, chat_id, user.id)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// The chat if `user` may manage it. Errors: `NotFound` when they cannot see it,
/// `PermissionDenied` when they can but are neither its owner nor staff.
pub async fn managed(state: &AppState, chat_id: i64, user: &User) -> ServiceResult<Chat> {
    let chat = visible(state, chat_id, user).await?;
    manages(chat, user)
}

/// Why a direct chat's membership cannot change (add, remove, leave).
pub const DIRECT_MEMBERS_FIXED: &str =
    "A direct chat's members cannot change: it is the one chat between its two users.";

/// The group chat whose members `user` may change. Errors: `NotFound` when they cannot see
/// it, `BadRequest` for a direct chat (whose members are fixed, whoever asks), then
/// `PermissionDenied` as for [`managed`].
async fn members_managed(state: &AppState, chat_id: i64, user: &User) -> ServiceResult<Chat> {
    let chat = visible(state, chat_id, user).await?;
    if chat.direct {
        return Err(ServiceError::BadRequest(DIRECT_MEMBERS_FIXED.into()));
    }
    manages(chat, user)
}

/// `chat` if `user` is its owner or staff; `PermissionDenied` otherwise.
fn manages(chat: Chat, user: &User) -> ServiceResult<Chat> {
    if chat.owner_id == Some(user.id) || user.is_staff || user.is_superuser {
        Ok(chat)
    } else {
        Err(ServiceError::PermissionDenied)
    }
}

/// A window of `user`'s chats by id, handed to `take` as views in the window's reading order
/// (newest first without `after`, oldest first with it), a batch at a time
/// ([`take_in_batches`]), until `take` answers false. Only the views a page takes (and the rest of their batch)
/// are built, so a page bounded in bytes never holds every chat's messages in memory at once.
pub async fn list<E: From<ServiceError>>(
    state: &AppState,
    user: &User,
    window: Window,
    take: impl FnMut(ChatView) -> Result<bool, E>,
) -> Result<(), E> {
    let mut chats = store::chats::page_for_user(&state.db, user.id, window)
        .await
        .map_err(ServiceError::from)?;
    if window.from_newest() {
        chats.reverse();
    }
    let db = &state.db;
    let viewer = Viewer::of(user);
    take_in_batches(chats, |batch| views(db, batch, viewer), take).await
}

/// The chat with its members and newest messages, if `user` takes part in it.
pub async fn get(state: &AppState, chat_id: i64, user: &User) -> ServiceResult<ChatView> {
    let chat = visible(state, chat_id, user).await?;
    view(&state.db, chat, user).await
}

/// Resolves members by id (every id must exist) and by username (with `strict_usernames`,
/// unknown names are an error; otherwise they are skipped, as the original does on create).
/// Problems are recorded in `errors` under `participant_ids` / `participant_usernames`.
async fn resolve_members(
    state: &AppState,
    request: &MemberRequest,
    errors: &mut FieldErrors,
    strict_usernames: bool,
) -> ServiceResult<BTreeSet<i64>> {
    let mut members = BTreeSet::new();
    if !request.ids.is_empty() {
        let found: BTreeSet<i64> = store::users::by_ids(&state.db, &request.ids)
            .await?
            .iter()
            .map(|u| u.id)
            .collect();
        let unknown: BTreeSet<i64> = request
            .ids
            .iter()
            .copied()
            .filter(|id| !found.contains(id))
            .collect();
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(i64::to_string).collect();
            errors.add(
                "participant_ids",
                format!("Unknown user id(s): {}", list.join(", ")),
            );
        }
        members.extend(found);
    }
    if !request.usernames.is_empty() {
        // Stored usernames are in NFKC form: a look-alike spelling names the account it imitates.
        let usernames: Vec<String> = request
            .usernames
            .iter()
            .map(|n| username::normalize(n))
            .collect();
        let found = store::users::by_usernames(&state.db, &usernames).await?;
        if strict_usernames {
            let known: BTreeSet<&str> = found.iter().map(|u| u.username.as_str()).collect();
            let unknown: BTreeSet<&str> = usernames
                .iter()
                .map(String::as_str)
                .filter(|n| !known.contains(n))
                .collect();
            if !unknown.is_empty() {
                let list: Vec<&str> = unknown.into_iter().collect();
                errors.add(
                    "participant_usernames",
                    format!("Unknown username(s): {}", list.join(", ")),
                );
            }
        }
        members.extend(found.iter().map(|u| u.id));
    }
    Ok(members)
}

/// Creates a chat owned by `owner`, with `owner` and the requested members. `name` is the
/// validated name (`None` when the caller recorded why in `errors`); unknown usernames are
/// skipped, unknown ids are an error. Errors: `Validation`.
pub async fn create(
    state: &AppState,
    owner: &User,
    name: Option<String>,
    members: MemberRequest,
    mut errors: FieldErrors,
) -> ServiceResult<ChatView> {
    let mut members = resolve_members(state, &members, &mut errors, false).await?;
    errors.check()?;
    let name = name.ok_or_else(|| ServiceError::BadRequest("name is required".into()))?;
    members.insert(owner.id);
    let members: Vec<i64> = members.into_iter().collect();
    let chat = store::chats::create(&state.db, &name, owner.id, &members).await?;
    tracing::info!(chat.id = chat.id, "chat created");
    view(&state.db, chat, owner).await
}

/// What an update of a chat changes; `None` leaves a setting as it is.
#[derive(Debug, Default)]
pub struct ChatChanges {
    /// A new name.
    pub name: Option<String>,
    /// Read receipts on or off.
    pub read_receipts: Option<bool>,
}

/// Makes `changes` to the chat, after checking that `user` manages it: the permission is judged
/// before the input, so an outsider learns nothing from a 400. A new name is logged
/// ([`rename_as`]), and so is a switch of read receipts (`read_receipts_switched`). Errors: `NotFound`, `PermissionDenied`, then `Validation` from `errors`.
pub async fn update(
    state: &AppState,
    user: &User,
    chat_id: i64,
    changes: ChatChanges,
    errors: FieldErrors,
) -> ServiceResult<ChatView> {
    let mut chat = managed(state, chat_id, user).await?;
    errors.check()?;
    if let Some(name) = changes.name {
        rename_as(state, chat.id, &name, user.id).await?;
        chat.name = name;
    }
    if let Some(on) = changes.read_receipts {
        let switched = store::chats::set_read_receipts(&state.db, chat.id, on, user.id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if let Some(event) = switched {
            super::messaging::publish_logged(state, &event);
        }
        chat.read_receipts = on;
    }
    view(&state.db, chat, user).await
}

/// Renames chat `chat_id` on behalf of `actor` (whose right to do so the caller checked: the
/// owner, or staff here or in the admin area), logs it and tells the chat's `mrm.v2` sockets.
/// Errors: `NotFound` for an unknown chat.
pub async fn rename_as(
    state: &AppState,
    chat_id: i64,
    name: &str,
    actor: i64,
) -> ServiceResult<()> {
    let event = store::chats::rename(&state.db, chat_id, name, Some(actor))
        .await?
        .ok_or(ServiceError::NotFound)?;
    super::messaging::publish_logged(state, &event);
    Ok(())
}

/// Adds users `user_ids` to chat `chat_id` on behalf of `actor` (checked by the caller), logs
/// each addition and tells the chat's `mrm.v2` sockets; returns how many were not members yet.
pub async fn add_as(
    state: &AppState,
    chat_id: i64,
    user_ids: &[i64],
    actor: i64,
) -> ServiceResult<usize> {
    let events = store::chats::add_participants(&state.db, chat_id, user_ids, Some(actor)).await?;
    for event in &events {
        super::messaging::publish_logged(state, event);
    }
    tracing::info!(
        chat.id = chat_id,
        added = events.len(),
        by = actor,
        "participants added"
    );
    Ok(events.len())
}

/// Removes member `member_id` from chat `chat_id` on behalf of `actor` (checked by the caller),
/// logs it, tells the chat's `mrm.v2` sockets and closes the member's sockets (4003). Errors:
/// `NotFound` when they were not a member.
pub async fn remove_as(
    state: &AppState,
    chat_id: i64,
    member_id: i64,
    actor: i64,
) -> ServiceResult<()> {
    let event = store::chats::remove_participant(&state.db, chat_id, member_id, Some(actor))
        .await?
        .ok_or(ServiceError::NotFound)?;
    super::messaging::publish_logged(state, &event);
    state
        .realtime
        .publish(chat_id, RoomEvent::MemberRemoved { user_id: member_id });
    tracing::info!(
        chat.id = chat_id,
        removed = member_id,
        by = actor,
        "participant removed"
    );
    Ok(())
}

/// Deletes the chat with its messages; its sockets close with 4004.
/// Errors: `NotFound`, `PermissionDenied`.
pub async fn delete(state: &AppState, user: &User, chat_id: i64) -> ServiceResult<()> {
    let chat = managed(state, chat_id, user).await?;
    erase(state, chat.id).await?;
    tracing::info!(chat.id = chat.id, "chat deleted");
    Ok(())
}

/// Deletes chat `chat_id` with everything in it, whoever asks (the caller has checked): its
/// sockets close with 4004, and the objects only its attachments referred to go with the sweep
/// this starts.
pub async fn erase(state: &AppState, chat_id: i64) -> ServiceResult<()> {
    store::chats::delete(&state.db, chat_id).await?;
    state.realtime.publish(chat_id, RoomEvent::ChatDeleted);
    state.files.nudge();
    Ok(())
}

/// Adds members; every id and username must exist. Errors: `NotFound`, `BadRequest` for a
/// direct chat, `PermissionDenied`, then `Validation` (with any errors the caller recorded).
pub async fn add_members(
    state: &AppState,
    user: &User,
    chat_id: i64,
    members: MemberRequest,
    mut errors: FieldErrors,
) -> ServiceResult<ChatView> {
    let chat = members_managed(state, chat_id, user).await?;
    let members = resolve_members(state, &members, &mut errors, true).await?;
    errors.check()?;
    let members: Vec<i64> = members.into_iter().collect();
    add_as(state, chat.id, &members, user.id).await?;
    view(&state.db, chat, user).await
}

/// Removes a member other than the owner; their sockets close with 4003.
/// Errors: `NotFound` (also when `member_id` is not a member), `PermissionDenied`, and
/// `BadRequest` for the owner, who may leave instead, and in a direct chat.
pub async fn remove_member(
    state: &AppState,
    user: &User,
    chat_id: i64,
    member_id: i64,
) -> ServiceResult<()> {
    let chat = members_managed(state, chat_id, user).await?;
    if chat.owner_id == Some(member_id) {
        return Err(ServiceError::BadRequest(
            "The owner cannot be removed from the chat; the owner may leave it instead.".into(),
        ));
    }
    remove_as(state, chat.id, member_id, user.id).await
}

/// `user` leaves the chat: an owner's chat passes to the longest-standing member, and the last
/// one out deletes it. Errors: `NotFound`, `BadRequest` for a direct chat (its members are
/// fixed).
pub async fn leave(state: &AppState, user: &User, chat_id: i64) -> ServiceResult<Departure> {
    let chat = visible(state, chat_id, user).await?;
    if chat.direct {
        return Err(ServiceError::BadRequest(DIRECT_MEMBERS_FIXED.into()));
    }
    let (outcome, logged) = store::chats::leave(&state.db, chat.id, user.id).await?;
    for event in &logged {
        super::messaging::publish_logged(state, event);
    }
    let event = match outcome {
        Departure::ChatDeleted => RoomEvent::ChatDeleted,
        _ => RoomEvent::MemberRemoved { user_id: user.id },
    };
    state.realtime.publish(chat.id, event);
    tracing::info!(chat.id = chat.id, ?outcome, "participant left");
    Ok(outcome)
}

/// A window of the chat's history by message id, read with the membership condition in the
/// same statement. Errors: `NotFound` when `user` does not take part (looked up on its own only
/// when the page is empty, to tell an empty page from a chat the caller cannot see).
pub async fn history(
    state: &AppState,
    user: &User,
    chat_id: i64,
    window: Window,
) -> ServiceResult<Vec<Message>> {
    let rows = store::messages::page_in_chat(&state.db, chat_id, user.id, window).await?;
    if rows.is_empty() {
        visible(state, chat_id, user).await?;
    }
    Ok(rows)
}

/// Up to `limit` entries of the chat's log after position `after` (and before `before`), in
/// order: every message (as it is now: edited, or a tombstone) and every other event. Errors:
/// `NotFound` when `user` does not take part.
pub async fn log(
    state: &AppState,
    user: &User,
    chat_id: i64,
    window: Window,
) -> ServiceResult<Vec<LogEntry>> {
    visible(state, chat_id, user).await?;
    Ok(store::events::range(
        &state.db,
        chat_id,
        window.lower(),
        window.upper(),
        window.limit,
        true,
    )
    .await?)
}

/// Moves `user`'s read position in the chat forward to the newest message at or before position
/// `seq` (never back: see [`store::chats::mark_read`]), and returns the read state now held; counted against the same rate limit as
/// sends. In a chat with read receipts on, a move is logged and published to the chat's
/// `mrm.v2` sockets as a `read_receipt` event. Errors: `RateLimited`, `NotFound` when `user`
/// does not take part.
pub async fn mark_read(
    state: &AppState,
    user: &User,
    chat_id: i64,
    seq: i64,
) -> ServiceResult<store::chats::ReadState> {
    state.limits.message(user.id, chat_id).await?;
    let receipt = store::chats::mark_read(&state.db, chat_id, user.id, seq)
        .await?
        .ok_or(ServiceError::NotFound)?;
    if let Some(event) = &receipt {
        super::messaging::publish_logged(state, event);
    }
    store::chats::read_states(&state.db, user.id, &[chat_id])
        .await?
        .pop()
        .ok_or(ServiceError::NotFound)
}

/// Why the chat's read positions cannot be listed.
pub const RECEIPTS_OFF: &str = "Read receipts are off in this chat.";

/// Every member's read position in the chat (who has read up to where), for a member, in a
/// chat with read receipts on. Errors: `NotFound` (not `user`'s to see), `Conflict`
/// ([`RECEIPTS_OFF`]).
pub async fn read_positions(
    state: &AppState,
    user: &User,
    chat_id: i64,
) -> ServiceResult<Vec<(i64, String, i64)>> {
    let chat = visible(state, chat_id, user).await?;
    if !chat.read_receipts {
        return Err(ServiceError::Conflict(RECEIPTS_OFF.into()));
    }
    Ok(store::chats::read_positions(&state.db, chat.id).await?)
}

/// The chat's last `seq` if `user` takes part in it: where a new live-only socket starts.
/// Errors: `NotFound` otherwise.
pub async fn position(state: &AppState, chat_id: i64, user: &User) -> ServiceResult<i64> {
    store::chats::last_seq_for_member(&state.db, chat_id, user.id)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// The `seq` of message `message_id` if it belongs to the chat: how a socket resuming with
/// `after=<message id>` finds its position. Membership is not checked here.
pub async fn seq_of_message(
    state: &AppState,
    chat_id: i64,
    message_id: i64,
) -> ServiceResult<Option<i64>> {
    Ok(store::messages::seq_of(&state.db, chat_id, message_id).await?)
}
