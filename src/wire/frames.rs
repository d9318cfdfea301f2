//! Socket frames: those the server sends on either socket (a chat socket's are serialised once
//! and shared by every receiver), and those clients send, parsed into enums.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use chrono::{DateTime, Utc};

use crate::domain::text;
use crate::store::events::{EventKind, EventRow};
#[allow(unused_imports)] // named by the OpenAPI schema of `AiReply::usage`
use crate::wire::schemas::TokenCounts;
use crate::wire::views::{timestamp, AiMessageView, MessageView, Viewer};

/// The protocol a socket speaks, chosen once at its handshake.
///
/// - [`Protocol::Original`]: exactly the frames of the service mrm-chat replaces, for clients
///   written for it: `message` and `error` on the chat socket; `user_message`,
///   `assistant_message` and `error` on the AI socket. Client frames are read as the original
///   reads them.
/// - [`Protocol::V2`] (`mrm.v2`): the original's frames plus every extension: presence, typing
///   relays, `message_deleted`, streamed `assistant_delta`s, `cancel`, and any later event kind.
///
/// A client asks for `mrm.v2` by offering it in `Sec-WebSocket-Protocol` (the server names it in
/// its answer, RFC 6455 §4.2.2), or with `?protocol=mrm.v2` when it cannot set that header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// The original's frames only.
    #[default]
    Original,
    /// `mrm.v2`: the original's frames and every extension.
    V2,
}

impl Protocol {
    /// The subprotocol name (and `protocol=` value) of [`Protocol::V2`].
    pub const V2_NAME: &'static str = "mrm.v2";

    /// The protocol a `protocol=` query value names, if any.
    pub fn named(name: &str) -> Option<Protocol> {
        (name == Self::V2_NAME).then_some(Protocol::V2)
    }

    /// Whether the socket gets frames beyond the original's.
    pub fn extended(self) -> bool {
        self == Protocol::V2
    }
}

/// A participant as live frames show them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct Member {
    pub id: i64,
    pub username: String,
}

/// Server → client: a saved message of the chat, in `seq` order.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageFrame {
    /// Always `message`.
    #[serde(rename = "type")]
    #[schema(example = "message")]
    pub kind: &'static str,
    pub message: MessageView,
}

/// Server → client (`mrm.v2`): everyone online in the chat. Sent once to a socket shortly after
/// it joins, and again if it missed a change (its queue was full); otherwise changes come as
/// [`PresenceDeltaFrame`]s.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceFrame {
    /// Always `presence`.
    #[serde(rename = "type")]
    #[schema(example = "presence")]
    pub kind: &'static str,
    /// Everyone with a socket open on the chat, each user once, by id.
    pub online: Vec<Member>,
}

/// Server → client (`mrm.v2`): who came online and who went offline since the last presence
/// frame, changes within a short interval (a tenth of a second) coalesced into one frame.
/// Apply it to the last list: add `joined`, remove `left` (by id). A user appears in at most one
/// of the two; either may be empty.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceDeltaFrame {
    /// Always `presence`.
    #[serde(rename = "type")]
    #[schema(example = "presence")]
    pub kind: &'static str,
    /// Users now online who were not.
    pub joined: Vec<Member>,
    /// Users no longer online.
    pub left: Vec<Member>,
}

/// Server → client: someone is typing.
#[derive(Debug, Serialize, ToSchema)]
pub struct TypingFrame {
    /// Always `typing`.
    #[serde(rename = "type")]
    #[schema(example = "typing")]
    pub kind: &'static str,
    /// Who is typing.
    pub user: Member,
}

/// Server → client (`mrm.v2`): a message was deleted (by its sender, the chat's owner or staff).
/// It stays in the history as a tombstone (`deleted: true`, no content).
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDeletedFrame {
    /// Always `message_deleted`.
    #[serde(rename = "type")]
    #[schema(example = "message_deleted")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    /// The deleted message's id.
    pub id: i64,
    /// Its chat's id.
    pub chat: i64,
}

/// Server → client (`mrm.v2`): a message's content was edited by its sender.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageEditedFrame {
    /// Always `message_edited`.
    #[serde(rename = "type")]
    #[schema(example = "message_edited")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    /// The edited message's id.
    pub id: i64,
    /// Its chat's id.
    pub chat: i64,
    /// The new content (empty when replayed after the message was deleted: the log keeps no
    /// deleted content).
    pub content: String,
    /// The ids of the members the new content mentions, ascending (replacing the message's
    /// earlier `mentions`; empty when it mentions no one).
    pub mentions: Vec<i64>,
    /// When the edit was made.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub edited_at: DateTime<Utc>,
}

/// Server → client (`mrm.v2`): a message was pinned (by the chat's owner, staff, or a member of
/// a direct chat). `GET /api/chats/{id}/pins/` lists the chat's pins.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePinnedFrame {
    /// Always `message_pinned`.
    #[serde(rename = "type")]
    #[schema(example = "message_pinned")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    /// The pinned message's id.
    pub id: i64,
    /// Its chat's id.
    pub chat: i64,
    /// The id of the user who pinned it (null once their account is deleted).
    pub by: Option<i64>,
    /// When it was pinned.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub pinned_at: DateTime<Utc>,
}

/// Server → client (`mrm.v2`): a message was unpinned. (A deleted message is unpinned too, with
/// no frame of its own: its `message_deleted` frame says so.)
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageUnpinnedFrame {
    /// Always `message_unpinned`.
    #[serde(rename = "type")]
    #[schema(example = "message_unpinned")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    /// The unpinned message's id.
    pub id: i64,
    /// Its chat's id.
    pub chat: i64,
    /// The id of the user who unpinned it (null once their account is deleted).
    pub by: Option<i64>,
}

/// Server → client: a frame could not be acted on; the socket stays open.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorFrame {
    /// Always `error`.
    #[serde(rename = "type")]
    #[schema(example = "error")]
    pub kind: &'static str,
    #[schema(example = "Content cannot be empty")]
    pub message: String,
}

/// A frame as the text of one WebSocket message.
pub fn encode(frame: &impl Serialize) -> Utf8Bytes {
    // Serialising these types cannot fail: every key is a string and every value plain data.
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

/// `{"type": "message", "message": {…}}`
pub fn message(message: MessageView) -> Utf8Bytes {
    encode(&MessageFrame {
        kind: "message",
        message,
    })
}

/// A committed message's `message` frame in the two forms a chat's sockets get, each serialised
/// once: with the sender's email, for the sender's own sockets and staff's, and without it, for
/// everyone else (the rule of [`Viewer`]).
#[derive(Debug, Clone)]
pub struct MessageFrames {
    sender: i64,
    with_email: Utf8Bytes,
    without_email: Utf8Bytes,
    /// For a message with fields only `mrm.v2` shows (a reply's `reply_to`, a replayed edit's
    /// `edited_at`, a tombstone's `deleted`): its frames without them, for original-protocol
    /// sockets, which get exactly the original's frames. `None` when the two are the same.
    original: Option<(Utf8Bytes, Utf8Bytes)>,
    /// A deleted message, read back from the database: the original never sent one, so its
    /// sockets are not sent it either.
    tombstone: bool,
}

impl MessageFrames {
    /// The frames of `message`, whose sender is shown with their email.
    pub fn new(message: MessageView) -> Self {
        let sender = message.sender.id;
        let tombstone = message.deleted;
        let original = message
            .has_extensions()
            .then(|| Self::pair(message.clone().without_extensions()));
        let (with_email, without_email) = Self::pair(message);
        Self {
            sender,
            with_email,
            without_email,
            original,
            tombstone,
        }
    }

    /// The frame with the sender's email and the frame without it.
    fn pair(mut message: MessageView) -> (Utf8Bytes, Utf8Bytes) {
        if message.sender.email.is_empty() {
            let frame = self::message(message);
            return (frame.clone(), frame);
        }
        let with_email = self::message(message.clone());
        message.sender.email.clear();
        (with_email, self::message(message))
    }

    /// Frames serialised elsewhere (by another node): `with_email` for `sender` and staff,
    /// `without_email` for everyone else, and the original protocol's pair when it differs.
    pub fn from_parts(
        sender: i64,
        with_email: Utf8Bytes,
        without_email: Utf8Bytes,
        original: Option<(Utf8Bytes, Utf8Bytes)>,
    ) -> Self {
        Self {
            sender,
            with_email,
            without_email,
            original,
            tombstone: false,
        }
    }

    /// The sender's id, the two frames, and the original protocol's pair when it differs, as
    /// [`MessageFrames::from_parts`] takes them.
    pub fn parts(&self) -> (i64, &Utf8Bytes, &Utf8Bytes, Option<&(Utf8Bytes, Utf8Bytes)>) {
        (
            self.sender,
            &self.with_email,
            &self.without_email,
            self.original.as_ref(),
        )
    }

    /// The frame `viewer` may get on a socket speaking `protocol`; `None` for a deleted
    /// message on an original-protocol socket, which gets nothing for it.
    pub fn for_viewer(&self, viewer: Viewer, protocol: Protocol) -> Option<&Utf8Bytes> {
        if self.tombstone && !protocol.extended() {
            return None;
        }
        let (with_email, without_email) = match &self.original {
            Some((with_email, without_email)) if !protocol.extended() => {
                (with_email, without_email)
            }
            _ => (&self.with_email, &self.without_email),
        };
        Some(if viewer.sees_email_of(self.sender) {
            with_email
        } else {
            without_email
        })
    }
}

/// `{"type": "error", "message": "…"}`
pub fn error(text: &str) -> Utf8Bytes {
    encode(&ErrorFrame {
        kind: "error",
        message: text.to_owned(),
    })
}

/// `{"type": "typing", "user": {"id", "username"}}`
pub fn typing(member: &Member) -> Utf8Bytes {
    encode(&TypingFrame {
        kind: "typing",
        user: member.clone(),
    })
}

/// `{"type": "presence", "online": [{"id", "username"}, …]}`
pub fn presence(online: &[Member]) -> Utf8Bytes {
    encode(&PresenceFrame {
        kind: "presence",
        online: online.to_vec(),
    })
}

/// `{"type": "presence", "joined": [{"id", "username"}, …], "left": […]}`
pub fn presence_delta(joined: &[Member], left: &[Member]) -> Utf8Bytes {
    encode(&PresenceDeltaFrame {
        kind: "presence",
        joined: joined.to_vec(),
        left: left.to_vec(),
    })
}

/// Server → client (`mrm.v2`): the chat's membership changed: `member_added`,
/// `member_removed` (by the owner or staff), `member_left`, or `owner_changed` (the owner left and
/// `user` now owns the chat).
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberFrame {
    /// `member_added`, `member_removed`, `member_left` or `owner_changed`.
    #[serde(rename = "type")]
    #[schema(example = "member_added")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    pub chat: i64,
    /// Who joined, was removed, left, or now owns the chat (username empty for an account
    /// deleted since).
    pub user: Member,
    /// Who made the change, if someone else did (null when the user acted themself, or the
    /// account is gone).
    pub by: Option<i64>,
}

/// Server → client (`mrm.v2`): the chat was renamed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatRenamedFrame {
    /// Always `chat_renamed`.
    #[serde(rename = "type")]
    #[schema(example = "chat_renamed")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    pub chat: i64,
    /// The new name.
    pub name: String,
    /// Who renamed it (null for an account deleted since).
    pub by: Option<i64>,
}

/// Server → client (`mrm.v2`): a reaction was added to a message (`reaction_added`) or taken
/// back (`reaction_removed`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReactionFrame {
    /// `reaction_added` or `reaction_removed`.
    #[serde(rename = "type")]
    #[schema(example = "reaction_added")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    pub chat: i64,
    /// The message's id.
    pub id: i64,
    /// The reaction: one emoji.
    #[schema(example = "👍")]
    pub emoji: String,
    /// Who reacted.
    pub user: Member,
}

/// Server → client (`mrm.v2`), in chats with read receipts on: a member has read the chat up
/// to `read_seq`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadReceiptFrame {
    /// Always `read_receipt`.
    #[serde(rename = "type")]
    #[schema(example = "read_receipt")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    pub chat: i64,
    /// Who read (username empty for an account deleted since).
    pub user: Member,
    /// The position they have now read up to.
    pub read_seq: i64,
}

/// Server → client (`mrm.v2`): read receipts were switched on or off in the chat (by its owner
/// or staff). While on, `GET /api/chats/{id}/receipts/` lists every member's read position and
/// each move comes as a `read_receipt` frame.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadReceiptsSwitchedFrame {
    /// Always `read_receipts_switched`.
    #[serde(rename = "type")]
    #[schema(example = "read_receipts_switched")]
    pub kind: &'static str,
    /// The event's position in the chat's log.
    pub seq: i64,
    pub chat: i64,
    /// Whether they are on now.
    pub on: bool,
    /// Who switched them (null for an account deleted since).
    pub by: Option<i64>,
}

/// The `mrm.v2` frame of a logged event other than a new message (those are `message` frames).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LoggedFrame {
    MessageEdited(MessageEditedFrame),
    MessageDeleted(MessageDeletedFrame),
    Member(MemberFrame),
    ChatRenamed(ChatRenamedFrame),
    Reaction(ReactionFrame),
    MessagePinned(MessagePinnedFrame),
    MessageUnpinned(MessageUnpinnedFrame),
    ReadReceipt(ReadReceiptFrame),
    ReadReceiptsSwitched(ReadReceiptsSwitchedFrame),
}

impl LoggedFrame {
    /// The frame of `event`, or `None` for a kind this version does not know.
    pub fn of(event: &EventRow) -> Option<LoggedFrame> {
        Some(match event.kind()? {
            EventKind::MessageEdited => LoggedFrame::MessageEdited(MessageEditedFrame {
                kind: "message_edited",
                seq: event.seq,
                id: event.message_id.unwrap_or_default(),
                chat: event.chat_id,
                content: event.content.clone().unwrap_or_default(),
                mentions: crate::domain::mention::decode_ids(event.mentions.as_deref()),
                edited_at: event.created_at,
            }),
            EventKind::MessageDeleted => LoggedFrame::MessageDeleted(MessageDeletedFrame {
                kind: "message_deleted",
                seq: event.seq,
                id: event.message_id.unwrap_or_default(),
                chat: event.chat_id,
            }),
            kind @ (EventKind::MemberAdded
            | EventKind::MemberRemoved
            | EventKind::MemberLeft
            | EventKind::OwnerChanged) => LoggedFrame::Member(MemberFrame {
                kind: kind.as_str(),
                seq: event.seq,
                chat: event.chat_id,
                user: event_user(event),
                by: event.actor_id.filter(|actor| Some(*actor) != event.user_id),
            }),
            EventKind::ChatRenamed => LoggedFrame::ChatRenamed(ChatRenamedFrame {
                kind: "chat_renamed",
                seq: event.seq,
                chat: event.chat_id,
                name: event.content.clone().unwrap_or_default(),
                by: event.actor_id,
            }),
            kind @ (EventKind::ReactionAdded | EventKind::ReactionRemoved) => {
                LoggedFrame::Reaction(ReactionFrame {
                    kind: kind.as_str(),
                    seq: event.seq,
                    chat: event.chat_id,
                    id: event.message_id.unwrap_or_default(),
                    emoji: event.content.clone().unwrap_or_default(),
                    user: event_user(event),
                })
            }
            EventKind::MessagePinned => LoggedFrame::MessagePinned(MessagePinnedFrame {
                kind: "message_pinned",
                seq: event.seq,
                id: event.message_id.unwrap_or_default(),
                chat: event.chat_id,
                by: event.actor_id,
                pinned_at: event.created_at,
            }),
            EventKind::MessageUnpinned => LoggedFrame::MessageUnpinned(MessageUnpinnedFrame {
                kind: "message_unpinned",
                seq: event.seq,
                id: event.message_id.unwrap_or_default(),
                chat: event.chat_id,
                by: event.actor_id,
            }),
            EventKind::ReadReceipt => LoggedFrame::ReadReceipt(ReadReceiptFrame {
                kind: "read_receipt",
                seq: event.seq,
                chat: event.chat_id,
                user: event_user(event),
                read_seq: event.read_seq.unwrap_or_default(),
            }),
            EventKind::ReadReceiptsSwitched => {
                LoggedFrame::ReadReceiptsSwitched(ReadReceiptsSwitchedFrame {
                    kind: "read_receipts_switched",
                    seq: event.seq,
                    chat: event.chat_id,
                    on: event.content.as_deref() == Some("on"),
                    by: event.actor_id,
                })
            }
        })
    }
}

/// The user an event is about, as frames show them.
fn event_user(event: &EventRow) -> Member {
    Member {
        id: event.user_id.unwrap_or_default(),
        username: event.username.clone().unwrap_or_default(),
    }
}

/// [`LoggedFrame::of`] as the text of a WebSocket message.
pub fn logged(event: &EventRow) -> Option<Utf8Bytes> {
    LoggedFrame::of(event).map(|frame| encode(&frame))
}

/// One position of a chat's log as `GET /api/chats/{id}/events/` lists it: the frame an
/// `mrm.v2` socket receives for it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LogItem {
    Message(Box<MessageFrame>),
    Event(LoggedFrame),
}

/// The user's message as the AI socket announces it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AiUserMessage {
    pub id: i64,
    /// Always `user`.
    #[schema(example = "user")]
    pub role: String,
    pub content: String,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String)]
    pub timestamp: DateTime<Utc>,
    /// `mrm.v2` only: where the message sits in the conversation's tree.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub branch: Option<Branch>,
}

/// Where an AI message sits in the conversation's tree (`mrm.v2` frames only; the original
/// protocol's frames do not carry it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Branch {
    /// The message it follows; null for a first question.
    pub parent: Option<i64>,
    /// The alternatives at its place, itself included, oldest first.
    pub siblings: Vec<i64>,
}

impl Branch {
    fn of(m: &AiMessageView, protocol: Protocol) -> Option<Branch> {
        protocol.extended().then(|| Branch {
            parent: m.parent,
            siblings: m.siblings.clone(),
        })
    }
}

/// Server → client (`mrm.v2`): the AI chat now shows the branch ending with `message`; the
/// client reloads the conversation (`GET /api/ai/chats/{id}/`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BranchSelectedFrame {
    /// Always `branch_selected`.
    #[serde(rename = "type")]
    #[schema(example = "branch_selected")]
    pub kind: &'static str,
    /// The last message of the branch now shown.
    pub message: i64,
}

impl BranchSelectedFrame {
    /// The frame for the branch ending with `message`.
    pub fn new(message: i64) -> Self {
        Self {
            kind: "branch_selected",
            message,
        }
    }
}

/// Server → client: the user's message was saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserMessageFrame {
    /// Always `user_message`.
    #[serde(rename = "type")]
    #[schema(example = "user_message")]
    pub kind: &'static str,
    pub message: AiUserMessage,
}

/// More text of a reply being generated.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AiDelta {
    /// The id the reply will have.
    pub id: i64,
    /// The next piece of text, to append to what came before.
    pub delta: String,
}

/// Server → client: more text of the reply being generated. A socket that joins mid-reply first
/// gets the text so far as one delta.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantDeltaFrame {
    /// Always `assistant_delta`.
    #[serde(rename = "type")]
    #[schema(example = "assistant_delta")]
    pub kind: &'static str,
    pub message: AiDelta,
}

/// A reply's token counts; null where the provider did not report them.
#[derive(Debug, Serialize)]
pub struct ReplyTokens {
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
}

/// A finished reply as the AI socket sends it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AiReply {
    pub id: i64,
    /// Always `assistant`.
    #[schema(example = "assistant")]
    pub role: String,
    pub content: String,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String)]
    pub timestamp: DateTime<Utc>,
    /// Token counts as the provider reported them, or as the server estimated them when it
    /// reported none (see `usage_estimated`); null on a reply saved without any.
    #[schema(value_type = TokenCounts)]
    pub usage: ReplyTokens,
    /// True when `usage` was counted by the server because the provider reported no figures
    /// (a reply cancelled or cut short, or a provider that does not count streamed replies).
    pub usage_estimated: bool,
    /// `stop`, `length`, `cancelled` or `error`, or another reason the provider gave (such as
    /// `content_filter`).
    pub finish_reason: Option<String>,
    /// `mrm.v2` only: where the reply sits in the conversation's tree.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub branch: Option<Branch>,
}

/// Server → client: the finished (saved) reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessageFrame {
    /// Always `assistant_message`.
    #[serde(rename = "type")]
    #[schema(example = "assistant_message")]
    pub kind: &'static str,
    pub message: AiReply,
}

impl UserMessageFrame {
    /// The frame announcing the user's message `m` on a socket of `protocol`.
    pub fn new(m: AiMessageView, protocol: Protocol) -> Self {
        UserMessageFrame {
            kind: "user_message",
            message: AiUserMessage {
                branch: Branch::of(&m, protocol),
                id: m.id,
                role: m.role,
                content: m.content,
                timestamp: m.timestamp,
            },
        }
    }
}

impl AssistantDeltaFrame {
    /// The frame carrying `delta`, more text of reply `id`.
    pub fn new(id: i64, delta: String) -> Self {
        AssistantDeltaFrame {
            kind: "assistant_delta",
            message: AiDelta { id, delta },
        }
    }
}

impl AssistantMessageFrame {
    /// The frame carrying the finished reply `m` on a socket of `protocol`.
    pub fn new(m: AiMessageView, protocol: Protocol) -> Self {
        AssistantMessageFrame {
            kind: "assistant_message",
            message: AiReply {
                branch: Branch::of(&m, protocol),
                id: m.id,
                role: m.role,
                content: m.content,
                timestamp: m.timestamp,
                usage: ReplyTokens {
                    prompt_tokens: m.prompt_tokens,
                    completion_tokens: m.completion_tokens,
                    total_tokens: m.total_tokens,
                },
                usage_estimated: m.usage_estimated,
                finish_reason: m.finish_reason,
            },
        }
    }
}

/// A text frame a client sends on `/ws/chat/{id}/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatClientFrame {
    /// `{"type": "message", "content": "…"}` (`type` may be left out): send a message. Content
    /// that is absent or null reads as empty.
    Message {
        #[serde(default)]
        content: Option<String>,
        /// `mrm.v2`: the id of the message of this chat it replies to.
        #[serde(default)]
        reply_to: Option<i64>,
        /// `mrm.v2`: ids of the sender's uploads to this chat to carry (at most 10); the
        /// content may then be empty.
        #[serde(default)]
        attachments: Vec<i64>,
    },
    /// `{"type": "typing"}`: the sender is typing.
    Typing {},
    /// `mrm.v2`: `{"type": "read", "seq": N}` marks the chat read up to position `seq`.
    Read { seq: i64 },
    /// `mrm.v2`: `{"type": "edit", "id", "content"}` edits one of the sender's messages.
    Edit { id: i64, content: String },
    /// `mrm.v2`: `{"type": "delete", "id"}` deletes a message (leaving a tombstone).
    Delete { id: i64 },
    /// `mrm.v2`: `{"type": "react", "id", "emoji"}` adds a reaction.
    React { id: i64, emoji: String },
    /// `mrm.v2`: `{"type": "unreact", "id", "emoji"}` takes a reaction back.
    Unreact { id: i64, emoji: String },
}

/// The `type`s a `mrm.v2` chat socket accepts.
const CHAT_FRAME_TYPES: [&str; 7] = [
    "message", "typing", "read", "edit", "delete", "react", "unreact",
];

impl ChatClientFrame {
    /// Parses a text frame. The error is the message of the error frame to answer with:
    /// `Invalid JSON`, `Content must be a string`, and in `mrm.v2` `Unknown message type: …`
    /// (the type cut to 50 characters) or `Unknown message type` (a type that is not a string);
    /// content holding NUL is refused with Django's wording (see [`text::NUL_REFUSED`]).
    ///
    /// In the original protocol every frame is a message: the original's consumer reads only
    /// `content` and never looks at `type`, so `{"type": "typing"}` is an empty message there.
    pub fn parse(text: &str, protocol: Protocol) -> Result<Self, String> {
        let mut frame = object(text)?;
        match frame.get("type") {
            _ if !protocol.extended() => {
                // The original reads `content` only.
                frame.retain(|key, _| key == "content");
                frame.insert("type".into(), Value::from("message"));
            }
            None => {
                frame.insert("type".into(), Value::from("message"));
            }
            Some(Value::String(kind)) if CHAT_FRAME_TYPES.contains(&kind.as_str()) => {}
            Some(Value::String(kind)) => return Err(unknown_type(kind)),
            Some(_) => return Err("Unknown message type".into()),
        }
        let kind = frame
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
            .to_owned();
        let frame_has_bad_reply_to = frame
            .get("reply_to")
            .is_some_and(|r| !r.is_null() && !r.is_i64());
        let frame_has_bad_attachments = frame.get("attachments").is_some_and(|a| {
            !a.as_array()
                .is_some_and(|ids| ids.iter().all(serde_json::Value::is_i64))
        });
        let frame =
            serde_json::from_value(Value::Object(frame)).map_err(|_| match kind.as_str() {
                "message" if frame_has_bad_reply_to => "reply_to must be a message id".to_owned(),
                "message" if frame_has_bad_attachments => {
                    "attachments must be a list of attachment ids".to_owned()
                }
                "message" | "typing" => "Content must be a string".to_owned(),
                "read" => "A read frame needs seq, a whole number".to_owned(),
                "delete" => "A delete frame needs id, a message id".to_owned(),
                "edit" => "An edit frame needs id, a message id, and content, a string".to_owned(),
                _ => format!("A {kind} frame needs id, a message id, and emoji, a string"),
            })?;
        match &frame {
            ChatClientFrame::Message {
                content: Some(c), ..
            }
            | ChatClientFrame::Edit { content: c, .. } => refuse_nul(c)?,
            _ => {}
        }
        Ok(frame)
    }
}

/// A text frame a client sends on `/ws/ai-chat/{id}/`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AiClientFrame {
    /// Ask the model (`type` may be left out, and a `type` that is not a string means this).
    /// Content that is not a string reads as empty; `include_related_chat_context` is true only
    /// when it is `true`.
    Message {
        #[serde(default, deserialize_with = "string_or_empty")]
        content: String,
        #[serde(default, deserialize_with = "true_or_false")]
        include_related_chat_context: bool,
        #[serde(default, deserialize_with = "context_limit")]
        context_message_limit: ContextLimit,
    },
    /// `{"type": "typing"}`: accepted and ignored (an AI chat has one human).
    Typing {},
    /// `{"type": "cancel"}`: stop the running reply, keeping its text so far.
    Cancel {},
    /// `mrm.v2`: `{"type": "regenerate"}`: answer the active branch's last question again.
    Regenerate {
        #[serde(default, deserialize_with = "true_or_false")]
        include_related_chat_context: bool,
        #[serde(default, deserialize_with = "context_limit")]
        context_message_limit: ContextLimit,
    },
    /// `mrm.v2`: `{"type": "edit", "message": id, "content": …}`: ask `content` in place of
    /// question `message`, on a new branch.
    Edit {
        message: i64,
        content: String,
        #[serde(default, deserialize_with = "true_or_false")]
        include_related_chat_context: bool,
        #[serde(default, deserialize_with = "context_limit")]
        context_message_limit: ContextLimit,
    },
    /// `mrm.v2`: `{"type": "select_branch", "message": id}`: show the branch through `message`.
    SelectBranch { message: i64 },
}

/// `context_message_limit` as sent: absent (or null), an integer, or something else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ContextLimit {
    #[default]
    Absent,
    Given(i64),
    Invalid,
}

impl AiClientFrame {
    /// Parses a text frame; `Ok(None)` for a frame to ignore without a reply. The error is the
    /// message of the error frame to answer with: `Invalid JSON`, content holding NUL refused
    /// with Django's wording (see [`text::NUL_REFUSED`]), or in `mrm.v2` `Unknown message
    /// type: …` (the type cut to 50 characters).
    ///
    /// In the original protocol, as the original's consumer reads `type` (`message` when
    /// absent): a message when it is absent or `message`; anything else, `typing`, `cancel` and
    /// a `type` that is not a string included, is ignored.
    pub fn parse(text: &str, protocol: Protocol) -> Result<Option<Self>, String> {
        let mut frame = object(text)?;
        match (frame.get("type"), protocol) {
            (None, _) => {
                frame.insert("type".into(), Value::from("message"));
            }
            (Some(Value::String(kind)), Protocol::Original) if kind == "message" => {}
            (Some(_), Protocol::Original) => return Ok(None),
            (Some(Value::String(kind)), Protocol::V2)
                if [
                    "message",
                    "typing",
                    "cancel",
                    "regenerate",
                    "edit",
                    "select_branch",
                ]
                .contains(&kind.as_str()) => {}
            (Some(Value::String(kind)), Protocol::V2) => return Err(unknown_type(kind)),
            (Some(_), Protocol::V2) => {
                frame.insert("type".into(), Value::from("message"));
            }
        }
        let kind = frame
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
            .to_owned();
        let frame =
            serde_json::from_value(Value::Object(frame)).map_err(|_| match kind.as_str() {
                "edit" => {
                    "An edit frame needs message, a message id, and content, a string".to_owned()
                }
                "select_branch" => "A select_branch frame needs message, a message id".to_owned(),
                _ => "Invalid JSON".to_owned(),
            })?;
        if let AiClientFrame::Message { content, .. } | AiClientFrame::Edit { content, .. } = &frame
        {
            refuse_nul(content)?;
        }
        Ok(Some(frame))
    }
}

/// The sockets' one check for NUL in what a client sends, as every reader of input has one.
fn refuse_nul(content: &str) -> Result<(), String> {
    if text::has_nul(content) {
        return Err(text::NUL_REFUSED.into());
    }
    Ok(())
}

fn object(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(frame)) => Ok(frame),
        _ => Err("Invalid JSON".into()),
    }
}

fn unknown_type(kind: &str) -> String {
    let kind: String = kind.chars().take(50).collect();
    format!("Unknown message type: {kind}")
}

fn string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        _ => String::new(),
    })
}

fn true_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(matches!(Value::deserialize(d)?, Value::Bool(true)))
}

fn context_limit<'de, D: Deserializer<'de>>(d: D) -> Result<ContextLimit, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => ContextLimit::Absent,
        value => value
            .as_i64()
            .map_or(ContextLimit::Invalid, ContextLimit::Given),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_chat_frames_parse_with_their_type() {
        let parse = |text: &str| ChatClientFrame::parse(text, Protocol::V2);
        let message = |content: Option<&str>| ChatClientFrame::Message {
            attachments: Vec::new(),
            content: content.map(str::to_owned),
            reply_to: None,
        };
        assert_eq!(parse(r#"{"content":"hi"}"#), Ok(message(Some("hi"))));
        assert_eq!(
            parse(r#"{"type":"message","content":null}"#),
            Ok(message(None))
        );
        assert_eq!(
            parse(r#"{"type":"typing","content":5}"#),
            Ok(ChatClientFrame::Typing {})
        );
        for (text, error) in [
            ("nope", "Invalid JSON"),
            ("[1]", "Invalid JSON"),
            (r#"{"type":"shout"}"#, "Unknown message type: shout"),
            (r#"{"type":7}"#, "Unknown message type"),
            (r#"{"type":null}"#, "Unknown message type"),
            (r#"{"content":["x"]}"#, "Content must be a string"),
        ] {
            assert_eq!(parse(text), Err(error.to_owned()), "{text}");
        }
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(80));
        assert_eq!(
            parse(&long),
            Err(format!("Unknown message type: {}", "x".repeat(50)))
        );
    }

    #[test]
    fn original_chat_frames_are_all_messages() {
        let parse = |text: &str| ChatClientFrame::parse(text, Protocol::Original);
        let message = |content: Option<&str>| ChatClientFrame::Message {
            attachments: Vec::new(),
            content: content.map(str::to_owned),
            reply_to: None,
        };
        assert_eq!(parse(r#"{"content":"hi"}"#), Ok(message(Some("hi"))));
        assert_eq!(parse(r#"{"type":"typing"}"#), Ok(message(None)));
        assert_eq!(
            parse(r#"{"type":"shout","content":"hi"}"#),
            Ok(message(Some("hi")))
        );
        assert_eq!(parse(r#"{"type":7,"content":"x"}"#), Ok(message(Some("x"))));
        assert_eq!(parse("nope"), Err("Invalid JSON".to_owned()));
        assert_eq!(
            parse(r#"{"content":["x"]}"#),
            Err("Content must be a string".to_owned())
        );
    }

    #[test]
    fn ai_frames_parse_leniently_as_before() {
        let parse = |text: &str| AiClientFrame::parse(text, Protocol::V2);
        assert_eq!(
            parse(
                r#"{"type":5,"content":3,"include_related_chat_context":"yes","context_message_limit":"x"}"#
            ),
            Ok(Some(AiClientFrame::Message {
                content: String::new(),
                include_related_chat_context: false,
                context_message_limit: ContextLimit::Invalid,
            }))
        );
        assert_eq!(
            parse(
                r#"{"content":"q","include_related_chat_context":true,"context_message_limit":7}"#
            ),
            Ok(Some(AiClientFrame::Message {
                content: "q".into(),
                include_related_chat_context: true,
                context_message_limit: ContextLimit::Given(7),
            }))
        );
        assert_eq!(
            parse(r#"{"type":"cancel"}"#),
            Ok(Some(AiClientFrame::Cancel {}))
        );
        assert_eq!(
            parse(r#"{"type":"dance"}"#),
            Err("Unknown message type: dance".to_owned())
        );
        assert_eq!(parse("1"), Err("Invalid JSON".to_owned()));
    }

    #[test]
    fn original_ai_frames_ignore_what_the_original_ignores() {
        let parse = |text: &str| AiClientFrame::parse(text, Protocol::Original);
        let asked = Ok(Some(AiClientFrame::Message {
            content: "q".into(),
            include_related_chat_context: false,
            context_message_limit: ContextLimit::Absent,
        }));
        assert_eq!(parse(r#"{"content":"q"}"#), asked);
        assert_eq!(parse(r#"{"type":"message","content":"q"}"#), asked);
        for ignored in [
            r#"{"type":"dance","content":"q"}"#,
            r#"{"type":"typing"}"#,
            r#"{"type":"cancel"}"#,
            r#"{"type":5,"content":"q"}"#,
            r#"{"type":null,"content":"q"}"#,
        ] {
            assert_eq!(parse(ignored), Ok(None), "{ignored}");
        }
        assert_eq!(parse("[]"), Err("Invalid JSON".to_owned()));
    }

    #[test]
    fn protocol_names() {
        assert_eq!(Protocol::named("mrm.v2"), Some(Protocol::V2));
        assert_eq!(Protocol::named("mrm.v3"), None);
        assert_eq!(Protocol::named(""), None);
    }

    #[test]
    fn content_holding_nul_is_refused_with_its_own_reason() {
        let nul = "Null characters are not allowed.".to_owned();
        for protocol in [Protocol::Original, Protocol::V2] {
            assert_eq!(
                ChatClientFrame::parse(r#"{"content":"a\u0000b"}"#, protocol),
                Err(nul.clone())
            );
            assert_eq!(
                AiClientFrame::parse(r#"{"content":"a\u0000b"}"#, protocol),
                Err(nul.clone())
            );
        }
    }
}
