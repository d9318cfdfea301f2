//! The two WebSocket endpoints' handshakes: `/ws/chat/{id}/` (a group chat) and
//! `/ws/ai-chat/{id}/` (an AI chat). Each checks its request with [`handshake`] and hands the
//! upgraded socket to its connection (`crate::realtime::socket`, `crate::ai::socket`).

pub mod ai;
pub mod chat;
pub mod handshake;

use axum::{routing::get, Router};

use crate::state::AppState;

/// The socket routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ws/chat/{id}", get(chat::chat_socket))
        .route("/ws/ai-chat/{id}", get(ai::ai_socket))
}
