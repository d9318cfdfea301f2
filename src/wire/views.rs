//! The JSON shapes of users, chats, messages and AI chats, as the contract gives them, built
//! from stored rows. Timestamps are ISO 8601 in UTC ([`format_timestamp`]).

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use crate::store::{
    ai::{AiChat, AiMessage},
    chats::Chat,
    messages::Message,
    pins::Pin,
    users::User,
};
use crate::wire::frames::Member;

/// ISO 8601 in UTC with a `Z`, microseconds only when non-zero: `2026-01-05T10:20:30.123456Z`,
/// as Django REST Framework renders a UTC datetime.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    // Python's `isoformat()` writes six digits of microseconds when there are any, none
    // otherwise; nanoseconds below a microsecond are not stored (the store truncates).
    let precision = if t.nanosecond() / 1000 == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    t.to_rfc3339_opts(precision, true)
}

/// Serialises a timestamp as [`format_timestamp`] writes it.
pub fn timestamp<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(t))
}

fn is_false(value: &bool) -> bool {
    !value
}

/// Serialises an optional time as [`timestamp`] does, or null.
pub fn optional_timestamp<S: Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => timestamp(t, s),
        None => s.serialize_none(),
    }
}

/// Who is looking at a view: it decides what a view may show of other users. An email address
/// is shown to its owner and to staff (`is_staff` or `is_superuser`, as the administration area
/// admits them); everyone else gets `""`, which the contract allows for a user without one. Every
/// user object of the API and of the sockets is rendered through this rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// The viewer's user id.
    pub id: i64,
    /// Staff see every user's email.
    pub staff: bool,
}

impl Viewer {
    /// `user` as a viewer.
    pub fn of(user: &User) -> Self {
        Self {
            id: user.id,
            staff: user.is_staff || user.is_superuser,
        }
    }

    /// Whether this viewer may see the email of user `user_id`: their own, or anyone's for staff.
    pub fn sees_email_of(&self, user_id: i64) -> bool {
        self.staff || self.id == user_id
    }
}

/// A user as the original's `UserSerializer` shows them, to one viewer ([`Viewer`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    /// Shown only to the user themself and to staff; `""` for everyone else, and when the user
    /// gave none.
    pub email: String,
    /// `owner`, `student` or `staff`.
    pub user_type: String,
}

impl UserView {
    /// `user` as `viewer` may see them.
    pub fn for_viewer(user: &User, viewer: Viewer) -> Self {
        Self::of_fields(
            user.id,
            &user.username,
            &user.email,
            user.user_type.as_str(),
            viewer,
        )
    }

    /// The user as they see themself (their own email included).
    pub fn own(user: &User) -> Self {
        Self::for_viewer(user, Viewer::of(user))
    }

    fn of_fields(id: i64, username: &str, email: &str, user_type: &str, viewer: Viewer) -> Self {
        Self {
            id,
            username: username.to_owned(),
            email: if viewer.sees_email_of(id) {
                email.to_owned()
            } else {
                String::new()
            },
            user_type: user_type.to_owned(),
        }
    }

    /// The same user with the email hidden: as a viewer other than themself and staff sees them.
    pub fn without_email(&self) -> Self {
        Self {
            email: String::new(),
            ..self.clone()
        }
    }
}

/// An entry of the user directory.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserListItem {
    pub id: i64,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
}

impl From<User> for UserListItem {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            first_name: u.first_name,
            last_name: u.last_name,
        }
    }
}

/// A message of a group chat.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    /// Unique across all chats and never reused, so it can serve as a `before`/`after` cursor.
    pub id: i64,
    /// The chat's id.
    pub chat: i64,
    /// Position in the chat's log, increasing in the order messages were saved. Edits and
    /// deletions take positions of the same log, so a chat's messages may skip numbers.
    pub seq: i64,
    pub sender: UserView,
    /// As sent (over REST, with surrounding whitespace removed), or as last edited; empty once
    /// deleted.
    pub content: String,
    /// When the message was saved.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub timestamp: DateTime<Utc>,
    /// When the content was last edited; left out if never (so that the frames of new messages
    /// are exactly the original's).
    #[serde(
        serialize_with = "optional_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, example = json!(null))]
    pub edited_at: Option<DateTime<Utc>>,
    /// True for a deleted message: a tombstone that keeps its place (`id`, `seq`) with no
    /// content; left out when false.
    #[serde(skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// The message this one replies to, as a preview; left out for a message that replies to
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyPreview>,
    /// Reactions, one entry per emoji in the order first used; left out when there are none
    /// (and in socket frames, whose changes come as `reaction_added` / `reaction_removed`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionView>,
    /// Ids of the members the content mentions as `@username` (resolved when it was sent or
    /// last edited; its sender never among them), ascending; left out when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<i64>,
    /// The files it carries, in the order sent (at most 10); left out when none, and gone once
    /// the message is deleted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentView>,
}

/// A file uploaded to a chat, as messages and the upload's answer show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct AttachmentView {
    pub id: i64,
    /// The file name, sanitised: no path, no control characters, at most 255 bytes.
    #[schema(example = "holiday.jpg")]
    pub name: String,
    /// In bytes.
    pub size: i64,
    /// Decided from the file's bytes, not from what the uploader claimed.
    #[schema(example = "image/jpeg")]
    pub content_type: String,
    /// In pixels, for images the server decodes (PNG, JPEG, GIF, WebP), after EXIF orientation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    /// Where members download it (with their session or token).
    #[schema(example = "/api/attachments/7/download/")]
    pub url: String,
    /// Its thumbnail (at most 400 × 400 pixels), for images; left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "/api/attachments/7/thumbnail/")]
    pub thumbnail_url: Option<String>,
}

impl From<crate::store::attachments::AttachmentMeta> for AttachmentView {
    fn from(m: crate::store::attachments::AttachmentMeta) -> Self {
        Self {
            url: format!("/api/attachments/{}/download/", m.id),
            thumbnail_url: m
                .thumbnail
                .then(|| format!("/api/attachments/{}/thumbnail/", m.id)),
            id: m.id,
            name: m.name,
            size: m.size,
            content_type: m.content_type,
            width: m.width,
            height: m.height,
        }
    }
}

/// A preview of the message replied to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplyPreview {
    /// Its id (in the same chat).
    pub id: i64,
    /// Its sender.
    pub sender: crate::wire::frames::Member,
    /// Its first 100 characters; empty once deleted.
    pub excerpt: String,
    /// Whether it was deleted since.
    #[serde(skip_serializing_if = "is_false")]
    pub deleted: bool,
}

impl ReplyPreview {
    /// The preview of `m`, for a message replying to it.
    pub fn of(m: &Message) -> Self {
        Self {
            id: m.id,
            sender: crate::wire::frames::Member {
                id: m.sender_id,
                username: m.sender_username.clone(),
            },
            excerpt: if m.deleted_at.is_some() {
                String::new()
            } else {
                m.content.chars().take(100).collect()
            },
            deleted: m.deleted_at.is_some(),
        }
    }
}

/// One emoji's reactions on a message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReactionView {
    #[schema(example = "👍")]
    pub emoji: String,
    /// How many users reacted so.
    pub count: i64,
    /// Whether the caller is among them.
    pub me: bool,
}

impl MessageView {
    /// Message `m` as `viewer` may see it (its sender's email hidden from others than the sender
    /// and staff).
    pub fn for_viewer(m: Message, viewer: Viewer) -> Self {
        Self {
            id: m.id,
            chat: m.chat_id,
            seq: m.seq,
            sender: UserView::of_fields(
                m.sender_id,
                &m.sender_username,
                &m.sender_email,
                m.sender_user_type.as_str(),
                viewer,
            ),
            content: if m.deleted_at.is_some() {
                String::new()
            } else {
                m.content
            },
            timestamp: m.created_at,
            edited_at: m.edited_at,
            deleted: m.deleted_at.is_some(),
            reply_to: m.reply_to_id.map(|id| ReplyPreview {
                id,
                sender: crate::wire::frames::Member {
                    id: m.reply_sender_id.unwrap_or_default(),
                    username: m.reply_sender_username.clone().unwrap_or_default(),
                },
                excerpt: if m.reply_deleted {
                    String::new()
                } else {
                    m.reply_excerpt.clone().unwrap_or_default()
                },
                deleted: m.reply_deleted,
            }),
            reactions: Vec::new(),
            mentions: crate::domain::mention::decode_ids(m.mentions.as_deref()),
            attachments: crate::store::attachments::decode(m.attachments.as_deref())
                .into_iter()
                .map(AttachmentView::from)
                .collect(),
        }
    }

    /// Whether the view has fields the original's message objects lacked (`seq` aside):
    /// `reply_to`, `edited_at`, `deleted`, `reactions`, `mentions`, `attachments`.
    pub fn has_extensions(&self) -> bool {
        self.reply_to.is_some()
            || self.edited_at.is_some()
            || self.deleted
            || !self.reactions.is_empty()
            || !self.mentions.is_empty()
            || !self.attachments.is_empty()
    }

    /// This view as the original protocol's frames show it: without the fields of
    /// [`MessageView::has_extensions`] (a tombstone's content is empty either way), and with
    /// the names of its files (`📎 a.png, b.pdf`) as the content of a message that has no text.
    pub fn without_extensions(mut self) -> Self {
        self.reply_to = None;
        self.edited_at = None;
        self.deleted = false;
        self.reactions.clear();
        self.mentions.clear();
        // The original never sent a blank message: one that is only files names them.
        if self.content.trim().is_empty() && !self.attachments.is_empty() {
            let names: Vec<&str> = self.attachments.iter().map(|a| a.name.as_str()).collect();
            self.content = format!("📎 {}", names.join(", "));
        }
        self.attachments.clear();
        self
    }

    /// This view with `reactions` (none when `None`).
    pub fn with_reactions(mut self, reactions: Option<Vec<ReactionView>>) -> Self {
        self.reactions = reactions.unwrap_or_default();
        self
    }

    /// Message `m` as its sender sees it, their email included.
    pub fn as_sent(m: Message) -> Self {
        let sender = Viewer {
            id: m.sender_id,
            staff: false,
        };
        Self::for_viewer(m, sender)
    }
}

/// An earlier version of an edited message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageVersionView {
    /// The content as it was.
    pub content: String,
    /// When this version was written (the message's creation or an earlier edit).
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub written_at: DateTime<Utc>,
    /// When the edit that replaced it was made.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:21:00.000000Z")]
    pub replaced_at: DateTime<Utc>,
}

impl From<crate::store::messages::Version> for MessageVersionView {
    fn from(v: crate::store::messages::Version) -> Self {
        Self {
            content: v.content,
            written_at: v.written_at,
            replaced_at: v.replaced_at,
        }
    }
}

/// A group chat with its members and its newest 100 messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatView {
    pub id: i64,
    pub name: String,
    /// The user who may rename, delete and manage members (null if their account is gone).
    pub owner: Option<i64>,
    /// Every member, the owner included.
    pub participants: Vec<UserView>,
    /// The newest 100 messages, oldest first.
    pub messages: Vec<MessageView>,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub created_at: DateTime<Utc>,
    /// The highest position of the chat's log the caller marked read (`POST
    /// /api/chats/{id}/read/`); 0 before any.
    pub last_read_seq: i64,
    /// Messages after `last_read_seq` from others, not deleted.
    pub unread_count: i64,
    /// Those of them that mention the caller (`@username`).
    pub unread_mentions: i64,
    /// Whether members' read positions are shared as `read_receipt` events and listed by `GET
    /// /api/chats/{id}/receipts/` (the owner or staff switch it with `PATCH`).
    pub read_receipts: bool,
    /// True for a direct chat (`POST /api/direct/`): the one chat between two users (or a
    /// user's own), with no owner and members that cannot change; false for a group chat.
    pub direct: bool,
}

/// A member's read state in a chat.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadStateView {
    /// The chat's id.
    pub chat: i64,
    /// The highest position marked read.
    pub last_read_seq: i64,
    /// Messages after it from others, not deleted.
    pub unread_count: i64,
    /// Those of them that mention the caller.
    pub unread_mentions: i64,
}

impl From<crate::store::chats::ReadState> for ReadStateView {
    fn from(r: crate::store::chats::ReadState) -> Self {
        Self {
            chat: r.chat_id,
            last_read_seq: r.last_read_seq,
            unread_count: r.unread_count,
            unread_mentions: r.unread_mentions,
        }
    }
}

impl ChatView {
    /// The view of `chat` with its members and messages (oldest first).
    pub fn new(chat: Chat, participants: Vec<UserView>, messages: Vec<MessageView>) -> Self {
        Self {
            id: chat.id,
            name: chat.name,
            owner: chat.owner_id,
            participants,
            messages,
            created_at: chat.created_at,
            last_read_seq: 0,
            unread_count: 0,
            unread_mentions: 0,
            read_receipts: chat.read_receipts,
            direct: chat.direct,
        }
    }
}

/// A message found by `GET /api/search/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHitView {
    /// The message as it is now.
    pub message: MessageView,
    /// Its words around the first match, as HTML: the text escaped (`&amp;`, `&lt;`, …), each
    /// word the query asked for in `<mark>…</mark>`, `…` where the text was cut (at most 32
    /// words).
    #[schema(example = "… see you at the <mark>station</mark> tomorrow")]
    pub snippet: String,
}

/// A member's read position, as `GET /api/chats/{id}/receipts/` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    pub user: Member,
    /// The highest position of the chat's log they marked read; 0 before any.
    pub last_read_seq: i64,
}

/// A pinned message of a group chat, as `GET /api/chats/{id}/pins/` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PinView {
    /// The message as it is now (edited content included).
    pub message: MessageView,
    /// When it was pinned.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub pinned_at: DateTime<Utc>,
    /// Who pinned it; null once their account is deleted.
    pub pinned_by: Option<Member>,
}

impl PinView {
    /// Pin `p` as `viewer` may see it (the rule of [`MessageView::for_viewer`]).
    pub fn for_viewer(p: Pin, viewer: Viewer) -> Self {
        let pinned_by = p
            .pinned_by_id
            .zip(p.pinned_by_username)
            .map(|(id, username)| Member { id, username });
        Self {
            message: MessageView::for_viewer(p.message, viewer),
            pinned_at: p.pinned_at,
            pinned_by,
        }
    }
}

/// A message of an AI chat: the user's question or the model's reply. Deserialised only where
/// nodes pass it to each other.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, ToSchema)]
pub struct AiMessageView {
    pub id: i64,
    /// The AI chat's id.
    pub ai_chat: i64,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// When the message was saved; for a reply, when it was started.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub timestamp: DateTime<Utc>,
    /// Tokens the model read for this reply, as the provider reported them or, when it reported
    /// none, as the server counted them (`usage_estimated`); null for users' messages.
    pub prompt_tokens: Option<i64>,
    /// Tokens the model wrote (for a reply cut short, what was received); null as for
    /// `prompt_tokens`.
    pub completion_tokens: Option<i64>,
    /// The total the provider reported, or the sum of the two estimates; null as for
    /// `prompt_tokens`.
    pub total_tokens: Option<i64>,
    /// True when the token counts were counted by the server with the model's tokenizer (or an
    /// approximation for a model it does not know) because the provider reported none.
    pub usage_estimated: bool,
    /// Why a reply ended: `stop`, `length`, `cancelled`, `error`, `interrupted`, or another
    /// reason the provider gave (such as `content_filter`); null for users.
    pub finish_reason: Option<String>,
    /// The model that wrote a reply; null for users.
    pub model: Option<String>,
    /// For a reply: how many earlier messages of the conversation were left out of its prompt
    /// to fit the model's context window (`MRM_AI_CONTEXT_WINDOW`); left out when none were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omitted_messages: Option<i64>,
    /// The message this one follows (a reply's question, a question's previous reply); null for
    /// a first question.
    #[serde(default)]
    pub parent: Option<i64>,
    /// Every alternative at this place in the conversation, this message included, oldest
    /// first: other answers to the same question (regenerated) and other versions of the same
    /// question (edited). One id when there is no alternative. `select_branch` switches.
    #[serde(default)]
    pub siblings: Vec<i64>,
}

impl AiMessageView {
    /// The view with its alternatives, `siblings` (in id order, this message among them).
    pub fn with_siblings(mut self, siblings: Vec<i64>) -> Self {
        if siblings.contains(&self.id) {
            self.siblings = siblings;
        }
        self
    }
}

impl From<AiMessage> for AiMessageView {
    fn from(m: AiMessage) -> Self {
        Self {
            id: m.id,
            ai_chat: m.ai_chat_id,
            role: m.role.as_str().to_owned(),
            content: m.content,
            timestamp: m.created_at,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            total_tokens: m.total_tokens,
            usage_estimated: m.usage_estimated,
            finish_reason: m.finish_reason.map(|reason| reason.as_str().to_owned()),
            model: m.model,
            omitted_messages: m.omitted_messages,
            parent: m.parent_id,
            siblings: vec![m.id],
        }
    }
}

/// An AI chat with its newest 100 messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct AiChatView {
    pub id: i64,
    /// The owner's id.
    pub user: i64,
    /// The owner's username.
    pub user_username: String,
    /// The linked group chat whose messages may be given to the model; null when none, and
    /// while the owner does not take part in it (the link applies again if they rejoin).
    pub related_chat: Option<i64>,
    /// The linked group chat's name; null as for `related_chat`.
    pub related_chat_name: Option<String>,
    pub title: String,
    /// Sent to the model first in every request.
    pub system_prompt: String,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub created_at: DateTime<Utc>,
    /// The last change to the settings or the conversation; lists are ordered by it.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub updated_at: DateTime<Utc>,
    /// The newest 100 messages of the active branch, oldest first; a reply being generated is
    /// not among them.
    pub messages: Vec<AiMessageView>,
    /// Every message of the active branch, a reply being generated excepted.
    pub message_count: i64,
    /// The model it asks, as an id of `GET /api/ai/models/` (`provider/model`); null when it
    /// has none of its own and no model is offered.
    pub model: Option<String>,
}

impl AiChatView {
    /// The view of `chat` with its messages (oldest first) and `model`, the one it asks (its
    /// own, or the server's default).
    pub fn new(chat: AiChat, messages: Vec<AiMessageView>, model: Option<String>) -> Self {
        let related = chat
            .related_chat()
            .map(|(id, name)| (id, name.map(str::to_owned)));
        Self {
            id: chat.id,
            user: chat.user_id,
            user_username: chat.user_username,
            related_chat: related.as_ref().map(|(id, _)| *id),
            related_chat_name: related.and_then(|(_, name)| name),
            title: chat.title,
            system_prompt: chat.system_prompt,
            created_at: chat.created_at,
            updated_at: chat.updated_at,
            messages,
            message_count: chat.message_count,
            model,
        }
    }
}

/// What creating or updating an AI chat answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct AiChatSummary {
    pub id: i64,
    pub title: String,
    pub system_prompt: String,
    pub related_chat: Option<i64>,
    /// The model it asks (`provider/model`); null when none was named and no model is offered.
    pub model: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_use_z_and_drop_zero_microseconds() {
        let t = Utc.with_ymd_and_hms(2026, 1, 5, 10, 20, 30).unwrap();
        assert_eq!(format_timestamp(&t), "2026-01-05T10:20:30Z");
        let t = t + chrono::Duration::microseconds(123_456);
        assert_eq!(format_timestamp(&t), "2026-01-05T10:20:30.123456Z");
        let t =
            Utc.with_ymd_and_hms(987, 12, 31, 3, 4, 5).unwrap() + chrono::Duration::microseconds(7);
        assert_eq!(format_timestamp(&t), "0987-12-31T03:04:05.000007Z");
    }

    #[test]
    fn timestamps_agree_with_chrono_at_every_range() {
        let cases = [
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-5, 6, 7, 8, 9, 10).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 1).unwrap()
                + chrono::Duration::microseconds(999_999),
        ];
        for t in cases {
            let expected = if t.nanosecond() == 0 {
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            } else {
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            };
            assert_eq!(format_timestamp(&t), expected, "{t:?}");
        }
    }
}
