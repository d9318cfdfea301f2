//! The JSON shapes of users, chats, messages and AI chats, as the contract gives them, built
//! from stored rows. Timestamps are ISO 8601 in UTC ([`format_timestamp`]).

use chrono::{DateTime, Timelike, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use crate::store::{
    ai::{AiChat, AiMessage},
    chats::Chat,
    messages::Message,
    users::User,
};

/// ISO 8601 in UTC with a `Z`, microseconds only when non-zero: `2026-01-05T10:20:30.123456Z`.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    use chrono::Datelike;
    use std::fmt::Write;

    let micros = t.nanosecond() / 1000;
    // Written field by field: a format string would be parsed again for every timestamp, which
    // showed in profiles of message lists. Years outside 0..=9999 and leap seconds, which the
    // fixed widths do not cover, go through chrono.
    if (0..=9999).contains(&t.year()) && micros < 1_000_000 {
        let mut out = String::with_capacity(27);
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        if micros != 0 {
            let _ = write!(out, ".{micros:06}");
        }
        out.push('Z');
        return out;
    }
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// Serialises a timestamp as [`format_timestamp`] writes it.
pub fn timestamp<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(t))
}

/// A user as the original's `UserSerializer` shows them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub email: String,
    /// `owner`, `student` or `staff`.
    pub user_type: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            username: u.username.clone(),
            email: u.email.clone(),
            user_type: u.user_type.as_str().to_owned(),
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
    pub id: i64,
    pub chat: i64,
    /// Position in the chat's history: 1, 2, 3, … in the order messages were saved.
    pub seq: i64,
    pub sender: UserView,
    pub content: String,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub timestamp: DateTime<Utc>,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            id: m.id,
            chat: m.chat_id,
            seq: m.seq,
            sender: UserView {
                id: m.sender_id,
                username: m.sender_username,
                email: m.sender_email,
                user_type: m.sender_user_type.as_str().to_owned(),
            },
            content: m.content,
            timestamp: m.created_at,
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
    pub participants: Vec<UserView>,
    pub messages: Vec<MessageView>,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub created_at: DateTime<Utc>,
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
        }
    }
}

/// A message of an AI chat: the user's question or the model's reply.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct AiMessageView {
    pub id: i64,
    pub ai_chat: i64,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub timestamp: DateTime<Utc>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    /// Why a reply ended: `stop`, `length`, `cancelled`, `error`, `interrupted`; null for users.
    pub finish_reason: Option<String>,
    /// The model that wrote a reply; null for users.
    pub model: Option<String>,
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
            finish_reason: m.finish_reason.map(|reason| reason.as_str().to_owned()),
            model: m.model,
        }
    }
}

/// An AI chat with its newest 100 messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct AiChatView {
    pub id: i64,
    pub user: i64,
    pub user_username: String,
    pub related_chat: Option<i64>,
    pub related_chat_name: Option<String>,
    pub title: String,
    pub system_prompt: String,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String, format = DateTime, example = "2026-01-05T10:20:30.123456Z")]
    pub updated_at: DateTime<Utc>,
    pub messages: Vec<AiMessageView>,
    pub message_count: i64,
}

impl AiChatView {
    /// The view of `chat` with its messages (oldest first).
    pub fn new(chat: AiChat, messages: Vec<AiMessageView>) -> Self {
        Self {
            id: chat.id,
            user: chat.user_id,
            user_username: chat.user_username,
            related_chat: chat.related_chat_id,
            related_chat_name: chat.related_chat_name,
            title: chat.title,
            system_prompt: chat.system_prompt,
            created_at: chat.created_at,
            updated_at: chat.updated_at,
            messages,
            message_count: chat.message_count,
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
