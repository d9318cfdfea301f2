//! Direct chats: the one chat between two users, opened by either of them.
//!
//! A direct chat is created the first time either user asks for it and found again every time
//! after, however many ask at once (the store keys it by the pair, uniquely). It has no owner:
//! its two members are fixed (they cannot be added to, removed or leave, see
//! [`super::chats::DIRECT_MEMBERS_FIXED`]), only staff rename or delete it, and either member
//! pins its messages. A user may open a direct chat with themself, a place for notes, as Slack
//! allows; its one member is that user.

use crate::{
    domain::{username, MAX_CHAT_NAME_CHARS},
    state::AppState,
    store::{self, users::User},
    wire::views::{ChatView, Viewer},
};

use super::{FieldErrors, ServiceError, ServiceResult};

/// Whom a direct chat is asked for with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A user id (`user_id`).
    Id(i64),
    /// A username (`username`), matched once normalized as stored ones are (NFKC).
    Username(String),
}

/// Attempts at reading a direct chat that is being deleted while it is asked for.
const ATTEMPTS: usize = 3;

/// The direct chat between `caller` and `peer`, created when there is none: `(chat, true)` when
/// this call created it, `(chat, false)` when it existed. Its name is the two usernames in id
/// order, `"alice, bob"` (cut to 255 characters), or the caller's alone for their own.
///
/// Errors: `Validation` under `user_id` or `username` when no active user is found (one
/// message for unknown and deactivated accounts alike).
pub async fn open(state: &AppState, caller: &User, peer: Peer) -> ServiceResult<(ChatView, bool)> {
    let (found, field, unknown) = match &peer {
        Peer::Id(id) => (
            store::users::by_id(&state.db, *id).await?,
            "user_id",
            "No active user has this id.",
        ),
        Peer::Username(name) => {
            let name = username::normalize(name);
            let mut found = store::users::by_usernames(&state.db, &[name]).await?;
            (found.pop(), "username", "No active user has this username.")
        }
    };
    let Some(peer) = found.filter(|u| u.is_active) else {
        return Err(ServiceError::Validation(FieldErrors::single(
            field, unknown,
        )));
    };
    let (low, high) = if caller.id <= peer.id {
        (caller, &peer)
    } else {
        (&peer, caller)
    };
    let name = if low.id == high.id {
        low.username.clone()
    } else {
        format!("{}, {}", low.username, high.username)
    };
    let name: String = name.chars().take(MAX_CHAT_NAME_CHARS).collect();
    for _ in 0..ATTEMPTS {
        let Some((chat, created)) = store::chats::direct(&state.db, low.id, high.id, &name).await?
        else {
            continue;
        };
        if created {
            tracing::info!(chat.id = chat.id, "direct chat created");
        }
        let view = super::chats::views(&state.db, vec![chat], Viewer::of(caller))
            .await?
            .remove(0);
        return Ok((view, created));
    }
    Err(ServiceError::Internal(anyhow::anyhow!(
        "the direct chat of users {} and {} was deleted each time it was read",
        low.id,
        high.id
    )))
}
