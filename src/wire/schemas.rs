//! Shapes for the OpenAPI document that have no Rust type of their own: request bodies (read
//! by `Input`, which gives the contract's field errors) and error bodies (built by `ApiError`).
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// A validation error: each field (or `non_field_errors`) with its messages.
#[derive(ToSchema, Serialize)]
#[schema(example = json!({"username": ["A user with that username already exists."]}))]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

/// An error with one human-readable message.
#[derive(Debug, ToSchema, Serialize)]
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
#[derive(Debug, ToSchema, Serialize)]
#[schema(example = json!({"error": "Invalid credentials"}))]
pub struct ErrorMessage {
    pub error: String,
}

/// A confirmation in one sentence, e.g. `{"message": "Logged out successfully"}`.
#[derive(ToSchema, Serialize)]
pub struct Message {
    pub message: String,
}

/// The body of `POST /api/register/`.
#[derive(ToSchema)]
pub struct RegisterRequest {
    /// Letters, digits and `@ . + - _`; surrounding spaces are removed. Must be free.
    #[schema(max_length = 150, example = "alice")]
    pub username: String,
    /// Optional; empty means none.
    #[schema(example = "alice@example.com")]
    pub email: Option<String>,
    /// Held to Django's password rules: at least 8 characters, not entirely numeric, not a
    /// common password, not too similar to the username or email.
    #[schema(min_length = 8, format = Password)]
    pub password: String,
    /// Must equal `password`.
    #[schema(format = Password)]
    pub password_confirm: String,
    /// `student` when left out.
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

/// The kind of account.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum UserType {
    Owner,
    Student,
    Staff,
}

/// The body of `POST /api/login/`.
#[derive(ToSchema)]
pub struct LoginRequest {
    #[schema(example = "alice")]
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
}

/// The body of `POST /api/tokens/`.
#[derive(ToSchema)]
pub struct TokenRequest {
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
    /// A label for the token, e.g. the device it lives on; surrounding whitespace is removed
    /// before it is measured.
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

/// What `POST /api/tokens/` answers: the new token and the user it belongs to.
#[derive(ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <token>`. Shown once; only its hash is stored.
    pub token: String,
    pub user: crate::wire::views::UserView,
}

/// The body of `POST /api/chats/`; each list holds at most 1,000 items.
#[derive(ToSchema)]
pub struct ChatCreate {
    /// Surrounding spaces are removed; must not be blank.
    #[schema(max_length = 255, example = "Study group")]
    pub name: String,
    /// Users to add; every id must exist.
    pub participant_ids: Option<Vec<i64>>,
    /// Users to add by name (surrounding whitespace removed, look-alike spellings folded by
    /// NFKC); unknown names are skipped, blank ones refused.
    pub participant_usernames: Option<Vec<String>>,
}

/// The body of `PUT` and `PATCH /api/chats/{id}/`.
#[derive(ToSchema)]
pub struct ChatUpdate {
    /// Surrounding spaces are removed; must not be blank. Required with PUT.
    #[schema(max_length = 255)]
    pub name: Option<String>,
    /// Share members' read positions (`read_receipt` events, `GET
    /// /api/chats/{id}/receipts/`); left as it is when absent.
    pub read_receipts: Option<bool>,
}

/// The body of `POST /api/chats/{id}/participants/`: at least one of the two lists, each of at
/// most 1,000 items.
#[derive(ToSchema)]
pub struct ParticipantsAdd {
    /// Every id must exist.
    pub participant_ids: Option<Vec<i64>>,
    /// Every name must exist (surrounding whitespace removed, look-alike spellings folded by
    /// NFKC).
    pub participant_usernames: Option<Vec<String>>,
}

/// The body of `POST /api/direct/`: exactly one of the two.
#[derive(ToSchema)]
pub struct DirectRequest {
    /// The other user's id.
    #[schema(minimum = 1, example = 7)]
    pub user_id: Option<i64>,
    /// The other user's username (surrounding whitespace removed, look-alike spellings folded
    /// by NFKC).
    #[schema(example = "bob")]
    pub username: Option<String>,
}

/// The body of `POST /api/chats/{id}/send_message/`.
#[derive(ToSchema)]
pub struct SendMessage {
    /// Surrounding whitespace is removed, as the original's serializer removes it; must not be
    /// blank, unless the message carries attachments (then it may be left out). (The chat
    /// socket stores text exactly as sent.)
    #[schema(max_length = 10000, example = "Hello!")]
    pub content: Option<String>,
    /// The id of a message of the same chat this one replies to; the saved message carries a
    /// preview of it in `reply_to`.
    pub reply_to: Option<i64>,
    /// Ids of the sender's uploads to this chat (`POST /api/chats/{id}/attachments/`), not yet
    /// sent, in the order to show them: at most 10.
    #[schema(max_items = 10)]
    pub attachments: Option<Vec<i64>>,
}

/// The body of `POST /api/chats/{id}/attachments/`: one file.
#[derive(ToSchema)]
pub struct UploadForm {
    /// The file; the part's `filename` is its name (sanitised), and its type is read from its
    /// bytes.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// The body of `PATCH /api/chats/{id}/messages/{message_id}/`.
#[derive(ToSchema)]
pub struct EditMessage {
    /// The new content: surrounding whitespace is removed, as when sending over REST; must not
    /// be blank.
    #[schema(min_length = 1, max_length = 10000, example = "Hello, edited!")]
    pub content: String,
}

/// The body of `POST` (and `DELETE`) `/api/chats/{id}/messages/{message_id}/reactions/`.
#[derive(ToSchema)]
pub struct ReactionRequest {
    /// One emoji (skin tones and sequences included); `❤` and `❤️` are the same reaction.
    #[schema(example = "👍")]
    pub emoji: String,
}

/// The body of `POST /api/chats/{id}/read/`.
#[derive(ToSchema)]
pub struct ReadRequest {
    /// The position read up to: a message's `seq`, or any log position.
    #[schema(minimum = 0, example = 42)]
    pub seq: i64,
}

/// The body of `POST /api/ai/chats/`.
#[derive(ToSchema)]
pub struct AiChatCreate {
    /// Surrounding spaces are removed; must not be blank. Left out, the chat is called `New
    /// conversation` until its first exchange, after which a short title is written for it
    /// (`MRM_AI_TITLES`).
    #[schema(max_length = 255, example = "Homework help")]
    pub title: Option<String>,
    /// Sent to the model first in every request; surrounding whitespace is removed; at most
    /// 20,000 characters. Default `You are a helpful assistant.`
    #[schema(example = "You are a helpful assistant.")]
    pub system_prompt: Option<String>,
    /// A group chat the user takes part in, whose messages may be given to the model.
    pub related_chat: Option<i64>,
    /// The model to ask: an `id` of `GET /api/ai/models/` (`provider/model`), or a model name
    /// one provider offers. Default `MRM_AI_DEFAULT_MODEL`.
    #[schema(example = "openai/gpt-4o-mini")]
    pub model: Option<String>,
}

/// The body of `PUT` and `PATCH /api/ai/chats/{id}/`; fields left out keep their values.
#[derive(ToSchema)]
pub struct AiChatUpdate {
    /// Required with PUT; surrounding whitespace is removed; must not be blank.
    #[schema(max_length = 255)]
    pub title: Option<String>,
    /// At most 20,000 characters; surrounding whitespace is removed; must not be blank.
    pub system_prompt: Option<String>,
    /// A group chat the user takes part in; null unlinks it.
    pub related_chat: Option<i64>,
    /// Another model to ask from now on (as on creation); left out, the model stays.
    #[schema(example = "openai/gpt-4o-mini")]
    pub model: Option<String>,
}

/// The body of `POST /api/ai/chats/{id}/send_message/`.
#[derive(ToSchema)]
pub struct AiSendMessage {
    /// The question, stripped of surrounding whitespace; must not be blank.
    #[schema(min_length = 1, max_length = 10000)]
    pub content: String,
    /// Give the model the related group chat's newest messages.
    #[schema(default = false)]
    pub include_related_chat_context: Option<bool>,
    /// How many of the related chat's messages to give.
    #[schema(minimum = 1, maximum = 100, default = 20)]
    pub context_message_limit: Option<i64>,
    /// Answer with server-sent events instead of one JSON body.
    #[schema(default = false)]
    pub stream: Option<bool>,
}

/// The body of `POST /api/ai/chats/{id}/regenerate/`; every field may be left out.
#[derive(ToSchema)]
pub struct AiRegenerate {
    /// Give the model the related group chat's newest messages.
    #[schema(default = false)]
    pub include_related_chat_context: Option<bool>,
    /// How many of the related chat's messages to give.
    #[schema(minimum = 1, maximum = 100, default = 20)]
    pub context_message_limit: Option<i64>,
    /// Answer with server-sent events instead of one JSON body.
    #[schema(default = false)]
    pub stream: Option<bool>,
}

/// The body of `POST /api/ai/chats/{id}/edit_message/`.
#[derive(ToSchema)]
pub struct AiEditMessage {
    /// The question to replace: one of the user's messages on the branch shown.
    pub message: i64,
    /// The new question, stripped of surrounding whitespace; must not be blank.
    #[schema(min_length = 1, max_length = 10000)]
    pub content: String,
    /// Give the model the related group chat's newest messages.
    #[schema(default = false)]
    pub include_related_chat_context: Option<bool>,
    /// How many of the related chat's messages to give.
    #[schema(minimum = 1, maximum = 100, default = 20)]
    pub context_message_limit: Option<i64>,
    /// Answer with server-sent events instead of one JSON body.
    #[schema(default = false)]
    pub stream: Option<bool>,
}

/// The body of `POST /api/ai/chats/{id}/select_branch/`.
#[derive(ToSchema)]
pub struct AiSelectBranch {
    /// Any message of the AI chat: the branch through it is shown.
    pub message: i64,
}

/// A model a user may choose for an AI chat.
#[derive(Debug, Serialize, ToSchema)]
pub struct AiModel {
    /// What AI chats name it by: `provider/model`.
    #[schema(example = "openai/gpt-4o-mini")]
    pub id: String,
    /// The provider's name (`openai`, or one of `MRM_AI_PROVIDERS`).
    pub provider: String,
    /// The provider's own name for the model.
    pub model: String,
    /// Tokens a prompt and its reply may take together, as the server fits prompts to it.
    pub context_window: u32,
    /// Whether new AI chats get this model when they name none.
    pub default: bool,
}

/// What cancelling a reply answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// Whether a reply was running.
    pub cancelled: bool,
}

/// One message of a related chat as the model is given it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextLine {
    /// The sender's username.
    pub sender: String,
    pub content: String,
    /// When the message was saved, in UTC.
    #[serde(serialize_with = "super::views::timestamp")]
    #[schema(value_type = String)]
    pub timestamp: DateTime<Utc>,
}

/// What `GET /api/ai/chats/{id}/related_chat_context/` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelatedChatContext {
    /// The related group chat's name.
    pub chat_name: Option<String>,
    /// How many messages follow (at most `message_limit`).
    pub message_count: i64,
    /// The chat's newest messages, oldest first.
    pub messages: Vec<ContextLine>,
}

/// Tokens a model read (prompt) and wrote (completion), as the provider counted them (or the
/// server, when the provider reported none).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TokenCounts {
    /// Tokens the model read: system prompt, context and conversation.
    pub prompt_tokens: i64,
    /// Tokens the model wrote.
    pub completion_tokens: i64,
    /// The total the provider reported (normally the sum of the two).
    pub total_tokens: i64,
}

impl TokenCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &TokenCounts) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// One model's token use over the report's days.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelUsage {
    /// The model name replies were recorded under.
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// The part of `total_tokens` the server counted itself because the provider reported no
    /// figures (replies cancelled or cut short, providers that do not count streamed replies).
    pub estimated_tokens: i64,
    /// True when any of these figures includes such an estimate.
    pub usage_estimated: bool,
}

/// Token use on one UTC day, all models together.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayUsage {
    /// `YYYY-MM-DD`, in UTC.
    #[schema(example = "2026-01-05")]
    pub day: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// The part of `total_tokens` the server counted itself because the provider reported no
    /// figures (replies cancelled or cut short, providers that do not count streamed replies).
    pub estimated_tokens: i64,
    /// True when any of these figures includes such an estimate.
    pub usage_estimated: bool,
}

/// One model's token use on one UTC day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayModelUsage {
    /// `YYYY-MM-DD`, in UTC.
    pub day: String,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// The part of `total_tokens` the server counted itself because the provider reported no
    /// figures (replies cancelled or cut short, providers that do not count streamed replies).
    pub estimated_tokens: i64,
    /// True when any of these figures includes such an estimate.
    pub usage_estimated: bool,
}

/// What `GET /api/ai/usage/` answers: one user's token use over a range of UTC days. Days and
/// models without use are left out of the lists. Usage stays counted after an AI chat is deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// The user reported on.
    pub user: i64,
    /// The first day of the range, `YYYY-MM-DD`.
    pub from: String,
    /// The last day of the range (included), `YYYY-MM-DD`.
    pub to: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// The part of `total_tokens` the server counted itself because the provider reported no
    /// figures (replies cancelled or cut short, providers that do not count streamed replies).
    pub estimated_tokens: i64,
    /// True when any of these figures includes such an estimate.
    pub usage_estimated: bool,
    /// By model name.
    pub by_model: Vec<ModelUsage>,
    /// By day, oldest first.
    pub by_day: Vec<DayUsage>,
    /// By day, then model name.
    pub by_day_and_model: Vec<DayModelUsage>,
    /// The user's budgets as they stand now (`MRM_AI_DAILY_TOKENS`, `MRM_AI_MONTHLY_TOKENS`);
    /// each left out when none is set.
    #[serde(skip_serializing_if = "Budgets::is_empty")]
    pub budget: Budgets,
}

/// A user's token budgets as they stand now.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct Budgets {
    /// This UTC day's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily: Option<Budget>,
    /// This calendar month's (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly: Option<Budget>,
}

impl Budgets {
    pub fn is_empty(&self) -> bool {
        self.daily.is_none() && self.monthly.is_none()
    }
}

/// One budget: its size, what was spent of it, what remains, and when it starts again.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Budget {
    pub limit: i64,
    pub used: i64,
    /// `limit - used`, never below 0.
    pub remaining: i64,
    /// When the budget starts afresh (the next UTC midnight, or the first of next month).
    #[serde(serialize_with = "crate::wire::views::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub resets_at: DateTime<Utc>,
}

/// What `/healthz` answers.
#[derive(ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// What `/readyz` answers.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// `ok` or `error`.
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

/// Client → server on `/ws/chat/{chat_id}/`: send a message (`type` may be left out).
#[derive(ToSchema)]
pub struct ChatSendFrame {
    #[schema(example = "message")]
    pub r#type: Option<String>,
    /// Stored exactly as sent (not stripped, as in the original); must not be blank.
    #[schema(min_length = 1, max_length = 10000)]
    pub content: String,
}

/// Client → server (`mrm.v2`): `{"type": "typing"}`, relayed to the chat's other `mrm.v2`
/// sockets (at most once a second per socket); ignored on the AI socket.
#[derive(ToSchema)]
pub struct TypingRequestFrame {
    #[schema(example = "typing")]
    pub r#type: String,
}

/// Client → server (`mrm.v2`): a change to the chat, made as its REST call would make it, under
/// the same rules and rate limit. `read` marks the chat read up to `seq`; `edit` (`id`,
/// `content`, stored as sent, as socket messages are), `delete` (`id`), `react` and `unreact`
/// (`id`, `emoji`). Nothing answers a change that was made: its event comes in the chat's log
/// like everyone's. One that was not is answered with an `error` frame saying why.
#[derive(ToSchema)]
pub struct ChatChangeFrame {
    /// `read`, `edit`, `delete`, `react` or `unreact`.
    #[schema(example = "react")]
    pub r#type: String,
    /// The message's id (`edit`, `delete`, `react`, `unreact`).
    pub id: Option<i64>,
    /// The new content (`edit`).
    pub content: Option<String>,
    /// One emoji (`react`, `unreact`).
    #[schema(example = "👍")]
    pub emoji: Option<String>,
    /// The position read up to (`read`).
    pub seq: Option<i64>,
}

/// Client → server on `/ws/ai-chat/{id}/`: ask the model.
#[derive(ToSchema)]
pub struct AiAskFrame {
    #[schema(example = "message")]
    pub r#type: Option<String>,
    /// The question, stripped of surrounding whitespace; must not be blank.
    #[schema(min_length = 1, max_length = 10000)]
    pub content: String,
    /// Give the model the related group chat's newest messages (only `true` counts).
    pub include_related_chat_context: Option<bool>,
    /// How many of the related chat's messages to give (default 20).
    #[schema(minimum = 1, maximum = 100)]
    pub context_message_limit: Option<i64>,
}

/// Client → server (`mrm.v2`): `{"type": "cancel"}` stops the running reply (its text so far is
/// kept).
#[derive(ToSchema)]
pub struct AiCancelFrame {
    #[schema(example = "cancel")]
    pub r#type: String,
}

/// Client → server on the AI socket (`mrm.v2`): answer the last question again.
#[derive(ToSchema)]
pub struct AiRegenerateFrame {
    #[schema(example = "regenerate")]
    pub r#type: String,
    pub include_related_chat_context: Option<bool>,
    #[schema(minimum = 1, maximum = 100)]
    pub context_message_limit: Option<i64>,
}

/// Client → server on the AI socket (`mrm.v2`): ask `content` in place of question `message`,
/// on a new branch.
#[derive(ToSchema)]
pub struct AiEditFrame {
    #[schema(example = "edit")]
    pub r#type: String,
    pub message: i64,
    pub content: String,
    pub include_related_chat_context: Option<bool>,
    #[schema(minimum = 1, maximum = 100)]
    pub context_message_limit: Option<i64>,
}

/// Client → server on the AI socket (`mrm.v2`): show the branch through `message`.
#[derive(ToSchema)]
pub struct AiSelectBranchFrame {
    #[schema(example = "select_branch")]
    pub r#type: String,
    pub message: i64,
}

/// The `data` of one server-sent event of a streamed reply: `user_message` and
/// `assistant_message` carry an AI message, `assistant_delta` a piece of text, `error` a message.
#[derive(ToSchema, Serialize)]
#[serde(untagged)]
pub enum AiStreamEvent {
    Message(crate::wire::views::AiMessageView),
    Delta(super::frames::AiDelta),
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
