//! Pinned messages. The chat's owner and staff taking part in it pin and unpin its messages,
//! and in a direct chat (which has no owner) either member does; every member reads the pins.
//! Each pin and unpin is a change of the chat's log (`message_pinned`, `message_unpinned`),
//! committed at the chat's next position and then published to its `mrm.v2` sockets. Pinning
//! is idempotent: pinning a pinned message, or unpinning one that is not, changes nothing and
//! logs nothing. A deleted message cannot be pinned, and deleting one unpins it.

use crate::{
    state::AppState,
    store::{
        self,
        pins::{Pin, Refusal},
        users::User,
    },
    wire::views::{PinView, Viewer},
};

use super::{
    messaging::{actor, publish_logged},
    ServiceError, ServiceResult,
};

/// Most messages a chat may have pinned at once, so that its pins are one bounded list (the
/// limit Slack long had per channel).
pub const MAX_PINS: i64 = 100;

/// Pins message `message_id` of chat `chat_id` as `user`: `(pin, true)` when it was pinned now
/// (logged and published as `message_pinned`), `(pin, false)` when it was pinned already.
///
/// Counted against the same rate limit as sends. Errors: `RateLimited`, `NotFound` (no such
/// message in the chat, or `user` does not take part in it), `PermissionDenied` (neither the
/// owner nor staff, in a group chat), `Conflict` (the message is deleted, or the chat has
/// [`MAX_PINS`] pins).
pub async fn pin(
    state: &AppState,
    user: &User,
    chat_id: i64,
    message_id: i64,
) -> ServiceResult<(PinView, bool)> {
    state.limits.message(user.id, chat_id).await?;
    let done = store::pins::set(&state.db, chat_id, message_id, actor(user), true, MAX_PINS)
        .await?
        .map_err(refused)?;
    if let Some(event) = &done.event {
        publish_logged(state, event);
    }
    let pin = done.pin.ok_or_else(|| {
        ServiceError::Internal(anyhow::anyhow!("a pin came back without its row"))
    })?;
    Ok((
        PinView::for_viewer(pin, Viewer::of(user)),
        done.event.is_some(),
    ))
}

/// Unpins message `message_id` of chat `chat_id` as `user` (logged and published as
/// `message_unpinned` when it was pinned; nothing happens when it was not). Counted against the
/// same rate limit as sends. Errors: `RateLimited`, `NotFound`, `PermissionDenied`, as for
/// [`pin`].
pub async fn unpin(
    state: &AppState,
    user: &User,
    chat_id: i64,
    message_id: i64,
) -> ServiceResult<()> {
    state.limits.message(user.id, chat_id).await?;
    let done = store::pins::set(&state.db, chat_id, message_id, actor(user), false, MAX_PINS)
        .await?
        .map_err(refused)?;
    if let Some(event) = &done.event {
        publish_logged(state, event);
    }
    Ok(())
}

/// The chat's pins, newest pin first (at most [`MAX_PINS`]), if `user` takes part in it.
/// Errors: `NotFound` otherwise (looked up on its own only when there is no pin).
pub async fn list(state: &AppState, user: &User, chat_id: i64) -> ServiceResult<Vec<Pin>> {
    let pins = store::pins::in_chat(&state.db, chat_id, user.id, MAX_PINS).await?;
    if pins.is_empty() {
        super::chats::visible(state, chat_id, user).await?;
    }
    Ok(pins)
}

fn refused(refusal: Refusal) -> ServiceError {
    match refusal {
        Refusal::NotFound => ServiceError::NotFound,
        Refusal::NotAllowed => ServiceError::PermissionDenied,
        Refusal::Deleted => ServiceError::Conflict("This message was deleted.".into()),
        Refusal::Full => ServiceError::Conflict(format!(
            "A chat holds at most {MAX_PINS} pinned messages; unpin one first."
        )),
    }
}
