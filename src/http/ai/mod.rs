//! AI conversations over REST: `/api/ai/chats/…`, `/api/ai/messages/…`, `/api/ai/usage/`.
//! Only the owner sees an AI chat (404 for anyone else). One module per sub-resource: the AI
//! chats themselves, asking for and cancelling replies, the messages, and token usage.

pub mod chats;
pub mod messages;
pub mod models;
pub mod replies;
pub mod usage;

use axum::{
    routing::{get, post},
    Router,
};

use crate::state::AppState;

/// The routes of every AI sub-resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ai/chats", get(chats::list).post(chats::create))
        .route(
            "/api/ai/chats/{id}",
            get(chats::retrieve)
                .put(chats::update)
                .patch(chats::update)
                .delete(chats::destroy),
        )
        .route(
            "/api/ai/chats/{id}/send_message",
            post(replies::send_message),
        )
        .route("/api/ai/chats/{id}/cancel", post(replies::cancel))
        .route("/api/ai/chats/{id}/regenerate", post(replies::regenerate))
        .route(
            "/api/ai/chats/{id}/edit_message",
            post(replies::edit_message),
        )
        .route(
            "/api/ai/chats/{id}/select_branch",
            post(replies::select_branch),
        )
        .route("/api/ai/models", get(models::models))
        .route("/api/ai/chats/{id}/messages", get(messages::chat_messages))
        .route(
            "/api/ai/chats/{id}/related_chat_context",
            get(chats::related_chat_context),
        )
        .route("/api/ai/messages", get(messages::all_messages))
        .route("/api/ai/messages/{id}", get(messages::one_message))
        .route("/api/ai/usage", get(usage::usage))
}
