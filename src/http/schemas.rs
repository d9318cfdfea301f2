//! Shapes for the OpenAPI document that have no Rust type of their own: request bodies (read
//! by `Input`, which gives the contract's field errors) and error bodies (built by `ApiError`).
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// A validation error: each field (or `non_field_errors`) with its messages.
#[derive(ToSchema, Serialize)]
#[schema(example = json!({"username": ["A user with that username already exists."]}))]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

/// An error with one human-readable message.
#[derive(ToSchema, Serialize)]
#[schema(example = json!({"detail": "Authentication credentials were not provided."}))]
pub struct Detail {
    pub detail: String,
}

/// A 400: field errors, or a `detail` when the body could not be read at all.
#[derive(ToSchema, Serialize)]
#[serde(untagged)]
pub enum BadRequest {
    Fields(FieldErrors),
    Detail(Detail),
}

/// The contract's `{"error": …}` shape.
#[derive(ToSchema, Serialize)]
#[schema(example = json!({"error": "Invalid credentials"}))]
pub struct ErrorMessage {
    pub error: String,
}

#[derive(ToSchema, Serialize)]
pub struct Message {
    pub message: String,
}

#[derive(ToSchema)]
pub struct RegisterRequest {
    #[schema(max_length = 150, example = "alice")]
    pub username: String,
    #[schema(example = "alice@example.com")]
    pub email: Option<String>,
    #[schema(min_length = 8, format = Password)]
    pub password: String,
    #[schema(format = Password)]
    pub password_confirm: String,
    #[schema(schema_with = user_type_or_null)]
    pub user_type: Option<UserType>,
}

/// `user_type`'s schema with `null` listed first, as the published document has always had it
/// (utoipa 6 by itself lists `null` last).
fn user_type_or_null() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Ref, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(Ref::from_schema_name("UserType"))
        .into()
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum UserType {
    Owner,
    Student,
    Staff,
}

#[derive(ToSchema)]
pub struct LoginRequest {
    #[schema(example = "alice")]
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
}

#[derive(ToSchema)]
pub struct TokenRequest {
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
    /// A label for the token, e.g. the device it lives on.
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

#[derive(ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <token>`. Shown once; only its hash is stored.
    pub token: String,
    pub user: super::views::UserView,
}

#[derive(ToSchema)]
pub struct ChatCreate {
    #[schema(max_length = 255, example = "Study group")]
    pub name: String,
    /// Users to add; every id must exist.
    pub participant_ids: Option<Vec<i64>>,
    /// Users to add by name; unknown names are skipped.
    pub participant_usernames: Option<Vec<String>>,
}

#[derive(ToSchema)]
pub struct ChatUpdate {
    #[schema(max_length = 255)]
    pub name: Option<String>,
}

#[derive(ToSchema)]
pub struct ParticipantsAdd {
    pub participant_ids: Option<Vec<i64>>,
    /// Every name must exist.
    pub participant_usernames: Option<Vec<String>>,
}

#[derive(ToSchema)]
pub struct SendMessage {
    #[schema(min_length = 1, max_length = 10000, example = "Hello!")]
    pub content: String,
}

#[derive(ToSchema)]
pub struct AiChatCreate {
    #[schema(max_length = 255, example = "Homework help")]
    pub title: String,
    #[schema(example = "You are a helpful assistant.")]
    pub system_prompt: Option<String>,
    /// A group chat the user takes part in, whose messages may be given to the model.
    pub related_chat: Option<i64>,
}

#[derive(ToSchema)]
pub struct AiChatUpdate {
    #[schema(max_length = 255)]
    pub title: Option<String>,
    pub system_prompt: Option<String>,
    pub related_chat: Option<i64>,
}

#[derive(ToSchema)]
pub struct AiSendMessage {
    #[schema(min_length = 1, max_length = 10000)]
    pub content: String,
    #[schema(default = false)]
    pub include_related_chat_context: Option<bool>,
    #[schema(minimum = 1, maximum = 100, default = 20)]
    pub context_message_limit: Option<i64>,
    /// Answer with server-sent events instead of one JSON body.
    #[schema(default = false)]
    pub stream: Option<bool>,
}

#[derive(ToSchema)]
pub struct Cancelled {
    /// Whether a reply was running.
    pub cancelled: bool,
}

#[derive(ToSchema)]
pub struct ContextLine {
    pub sender: String,
    pub content: String,
    pub timestamp: String,
}

#[derive(ToSchema)]
pub struct RelatedChatContext {
    pub chat_name: Option<String>,
    pub message_count: i64,
    pub messages: Vec<ContextLine>,
}

#[derive(ToSchema)]
pub struct TokenCounts {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

#[derive(ToSchema)]
pub struct ModelUsage {
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

#[derive(ToSchema)]
pub struct DayUsage {
    #[schema(example = "2026-01-05")]
    pub day: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

#[derive(ToSchema)]
pub struct DayModelUsage {
    pub day: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

#[derive(ToSchema)]
pub struct Usage {
    pub user: i64,
    pub from: String,
    pub to: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub by_model: Vec<ModelUsage>,
    pub by_day: Vec<DayUsage>,
    pub by_day_and_model: Vec<DayModelUsage>,
}

#[derive(ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(ToSchema)]
pub struct Readiness {
    pub status: String,
    pub database: String,
    /// `ok`, `down` or `disabled` (single node).
    pub redis: String,
}

/// A 404 of the AI context endpoint: `detail` for an unknown AI chat, `error` when no related
/// chat is linked.
#[derive(ToSchema, Serialize)]
#[serde(untagged)]
pub enum NotFoundBody {
    Detail(Detail),
    Error(ErrorMessage),
}

/// A participant as live frames show them.
#[derive(ToSchema)]
pub struct Member {
    pub id: i64,
    pub username: String,
}

/// Client → server on `/ws/chat/{chat_id}/`: send a message (`type` may be left out).
#[derive(ToSchema)]
pub struct ChatSendFrame {
    #[schema(example = "message")]
    pub r#type: Option<String>,
    #[schema(min_length = 1, max_length = 10000)]
    pub content: String,
}

/// Client → server: `{"type": "typing"}`, relayed to the chat's other sockets (at most once a
/// second per socket).
#[derive(ToSchema)]
pub struct TypingRequestFrame {
    #[schema(example = "typing")]
    pub r#type: String,
}

/// Server → client: a saved message of the chat, in `seq` order.
#[derive(ToSchema)]
pub struct MessageFrame {
    #[schema(example = "message")]
    pub r#type: String,
    pub message: super::views::MessageView,
}

/// Server → client: who is online in the chat (sent on connect and whenever it changes).
#[derive(ToSchema)]
pub struct PresenceFrame {
    #[schema(example = "presence")]
    pub r#type: String,
    pub online: Vec<Member>,
}

/// Server → client: someone is typing.
#[derive(ToSchema)]
pub struct TypingFrame {
    #[schema(example = "typing")]
    pub r#type: String,
    pub user: Member,
}

/// Server → client: a message was deleted by an administrator.
#[derive(ToSchema)]
pub struct MessageDeletedFrame {
    #[schema(example = "message_deleted")]
    pub r#type: String,
    pub id: i64,
    pub chat: i64,
}

/// Server → client: a frame could not be acted on; the socket stays open.
#[derive(ToSchema)]
pub struct ErrorFrame {
    #[schema(example = "error")]
    pub r#type: String,
    #[schema(example = "Content cannot be empty")]
    pub message: String,
}

/// Client → server on `/ws/ai-chat/{id}/`: ask the model.
#[derive(ToSchema)]
pub struct AiAskFrame {
    #[schema(example = "message")]
    pub r#type: Option<String>,
    #[schema(min_length = 1, max_length = 10000)]
    pub content: String,
    pub include_related_chat_context: Option<bool>,
    #[schema(minimum = 1, maximum = 100)]
    pub context_message_limit: Option<i64>,
}

/// Client → server: `{"type": "cancel"}` stops the running reply (its text so far is kept).
#[derive(ToSchema)]
pub struct AiCancelFrame {
    #[schema(example = "cancel")]
    pub r#type: String,
}

#[derive(ToSchema)]
pub struct AiUserMessage {
    pub id: i64,
    #[schema(example = "user")]
    pub role: String,
    pub content: String,
    pub timestamp: String,
}

/// Server → client: the user's message was saved.
#[derive(ToSchema)]
pub struct UserMessageFrame {
    #[schema(example = "user_message")]
    pub r#type: String,
    pub message: AiUserMessage,
}

/// The `data` of one server-sent event of a streamed reply: `user_message` and
/// `assistant_message` carry an AI message, `assistant_delta` a piece of text, `error` a message.
#[derive(ToSchema, Serialize)]
#[serde(untagged)]
pub enum AiStreamEvent {
    Message(super::views::AiMessageView),
    Delta(AiDelta),
    Error(ErrorMessage),
}

/// One server-sent event of a streamed reply, as a client's event parser yields it.
#[derive(ToSchema)]
pub struct ServerSentEvent {
    /// `user_message`, `assistant_delta`, `assistant_message` or `error`.
    pub event: String,
    /// JSON text of an `AiStreamEvent`.
    pub data: String,
}

#[derive(ToSchema, Serialize)]
pub struct AiDelta {
    /// The id the reply will have.
    pub id: i64,
    pub delta: String,
}

/// Server → client: more text of the reply being generated. A socket that joins mid-reply first
/// gets the text so far as one delta.
#[derive(ToSchema)]
pub struct AssistantDeltaFrame {
    #[schema(example = "assistant_delta")]
    pub r#type: String,
    pub message: AiDelta,
}

#[derive(ToSchema)]
pub struct AiReply {
    pub id: i64,
    #[schema(example = "assistant")]
    pub role: String,
    pub content: String,
    pub timestamp: String,
    pub usage: TokenCounts,
    /// `stop`, `length`, `cancelled` or `error`.
    pub finish_reason: Option<String>,
}

/// Server → client: the finished (saved) reply.
#[derive(ToSchema)]
pub struct AssistantMessageFrame {
    #[schema(example = "assistant_message")]
    pub r#type: String,
    pub message: AiReply,
}
