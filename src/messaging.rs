//! Posting a message: the one path REST and WebSocket sends share. The message is committed
//! first, then published, so no socket ever sees a message the database does not have.

use crate::{
    domain::MessageContent,
    error::{ApiError, ApiResult},
    http::views::{MessageView, UserView},
    realtime::{frames, hub::RoomEvent},
    state::AppState,
    store::{self, users::User},
};

/// Saves and publishes a message. `None` when the sender is not a participant of the chat (or
/// the chat is gone). Runs as its own task: a caller that goes away mid-way (a dropped HTTP
/// request) cannot leave a committed message unpublished.
pub async fn post(
    state: &AppState,
    chat_id: i64,
    sender: &User,
    content: MessageContent,
) -> ApiResult<Option<MessageView>> {
    let state = state.clone();
    let sender = UserView::from(sender);
    tokio::spawn(async move {
        let Some(saved) =
            store::messages::insert(&state.db, chat_id, sender.id, content.as_str()).await?
        else {
            return Ok(None);
        };
        let view = MessageView {
            id: saved.id,
            chat: chat_id,
            seq: saved.seq,
            sender,
            content: content.into_string(),
            timestamp: saved.created_at,
        };
        let frame = frames::message(&view);
        state.realtime.publish(
            chat_id,
            RoomEvent::Message {
                seq: saved.seq,
                frame,
            },
        );
        Ok(Some(view))
    })
    .await
    .map_err(|err| ApiError::Internal(anyhow::anyhow!("message task failed: {err}")))?
}
