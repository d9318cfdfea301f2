//! Socket frames: those the server sends on a chat socket (serialised once and shared by every
//! receiver), and those clients send on either socket, parsed into enums.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::wire::views::MessageView;

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

/// A text frame a client sends on `/ws/chat/{id}/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatClientFrame {
    /// `{"type": "message", "content": "…"}` (`type` may be left out): send a message. Content
    /// that is absent or null reads as empty.
    Message {
        #[serde(default)]
        content: Option<String>,
    },
    /// `{"type": "typing"}`: the sender is typing.
    Typing {},
}

impl ChatClientFrame {
    /// Parses a text frame. The error is the message of the error frame to answer with, worded
    /// as the original's consumer words it: `Invalid JSON`, `Unknown message type: …` (the type
    /// cut to 50 characters), `Unknown message type` (a type that is not a string), `Content
    /// must be a string`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut frame = object(text)?;
        match frame.get("type") {
            None => {
                frame.insert("type".into(), Value::from("message"));
            }
            Some(Value::String(kind)) if kind == "message" || kind == "typing" => {}
            Some(Value::String(kind)) => return Err(unknown_type(kind)),
            Some(_) => return Err("Unknown message type".into()),
        }
        serde_json::from_value(Value::Object(frame)).map_err(|_| "Content must be a string".into())
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
    /// Parses a text frame. The error is the message of the error frame to answer with:
    /// `Invalid JSON`, or `Unknown message type: …` (the type cut to 50 characters).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut frame = object(text)?;
        match frame.get("type") {
            Some(Value::String(kind))
                if ["message", "typing", "cancel"].contains(&kind.as_str()) => {}
            Some(Value::String(kind)) => return Err(unknown_type(kind)),
            _ => {
                frame.insert("type".into(), Value::from("message"));
            }
        }
        serde_json::from_value(Value::Object(frame)).map_err(|_| "Invalid JSON".into())
    }
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
    fn chat_frames_parse_as_the_original_reads_them() {
        let message = |content: Option<&str>| ChatClientFrame::Message {
            content: content.map(str::to_owned),
        };
        assert_eq!(
            ChatClientFrame::parse(r#"{"content":"hi"}"#),
            Ok(message(Some("hi")))
        );
        assert_eq!(
            ChatClientFrame::parse(r#"{"type":"message","content":null}"#),
            Ok(message(None))
        );
        assert_eq!(
            ChatClientFrame::parse(r#"{"type":"typing","content":5}"#),
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
            assert_eq!(
                ChatClientFrame::parse(text),
                Err(error.to_owned()),
                "{text}"
            );
        }
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(80));
        assert_eq!(
            ChatClientFrame::parse(&long),
            Err(format!("Unknown message type: {}", "x".repeat(50)))
        );
    }

    #[test]
    fn ai_frames_parse_leniently_as_before() {
        assert_eq!(
            AiClientFrame::parse(
                r#"{"type":5,"content":3,"include_related_chat_context":"yes","context_message_limit":"x"}"#
            ),
            Ok(AiClientFrame::Message {
                content: String::new(),
                include_related_chat_context: false,
                context_message_limit: ContextLimit::Invalid,
            })
        );
        assert_eq!(
            AiClientFrame::parse(
                r#"{"content":"q","include_related_chat_context":true,"context_message_limit":7}"#
            ),
            Ok(AiClientFrame::Message {
                content: "q".into(),
                include_related_chat_context: true,
                context_message_limit: ContextLimit::Given(7),
            })
        );
        assert_eq!(
            AiClientFrame::parse(r#"{"type":"cancel"}"#),
            Ok(AiClientFrame::Cancel {})
        );
        assert_eq!(
            AiClientFrame::parse(r#"{"type":"dance"}"#),
            Err("Unknown message type: dance".to_owned())
        );
        assert_eq!(AiClientFrame::parse("1"), Err("Invalid JSON".to_owned()));
    }
}
