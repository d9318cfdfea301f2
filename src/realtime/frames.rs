//! The frames the server sends on a chat socket, serialised once and shared by every receiver.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::json;

use crate::http::views::MessageView;

/// A participant as live frames show them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    pub username: String,
}

fn encode(value: serde_json::Value) -> Utf8Bytes {
    Utf8Bytes::from(value.to_string())
}

/// `{"type": "message", "message": {…}}`
pub fn message(message: &MessageView) -> Utf8Bytes {
    encode(json!({ "type": "message", "message": message }))
}

/// `{"type": "error", "message": "…"}`
pub fn error(text: &str) -> Utf8Bytes {
    encode(json!({ "type": "error", "message": text }))
}

/// `{"type": "typing", "user": {"id", "username"}}`
pub fn typing(member: &Member) -> Utf8Bytes {
    encode(json!({ "type": "typing", "user": member }))
}

/// `{"type": "presence", "online": [{"id", "username"}, …]}`
pub fn presence(online: &[&Member]) -> Utf8Bytes {
    encode(json!({ "type": "presence", "online": online }))
}

/// `{"type": "message_deleted", "id", "chat"}`
pub fn message_deleted(id: i64, chat_id: i64) -> Utf8Bytes {
    encode(json!({ "type": "message_deleted", "id": id, "chat": chat_id }))
}
