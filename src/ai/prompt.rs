//! What the model is sent: the chat's system prompt (with context from the related group chat
//! when asked for and still allowed), then the whole conversation, the new message last.

use super::provider::ChatMessage;
use crate::{
    domain::AiRole,
    store::{ai::AiMessage, messages::Message},
};

/// The system message: the prompt, plus one `username: content` line per context message.
pub fn system_message(system_prompt: &str, context: &[Message]) -> ChatMessage {
    let mut text = system_prompt.to_owned();
    if !context.is_empty() {
        text.push_str("\n\nContext from related chat:\n");
        for message in context {
            text.push_str(&message.sender_username);
            text.push_str(": ");
            text.push_str(&message.content);
            text.push('\n');
        }
    }
    ChatMessage::new(AiRole::System.as_str(), text)
}

/// The messages of one request: the system message, then every `user` and `assistant` message
/// of `history` in order (the new question, already stored, is its last). The history is not cut
/// to fit the model's context window.
pub fn build(system_prompt: &str, context: &[Message], history: &[AiMessage]) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(history.len() + 1);
    messages.push(system_message(system_prompt, context));
    messages.extend(
        history
            .iter()
            .filter(|m| matches!(m.role, AiRole::User | AiRole::Assistant))
            .map(|m| ChatMessage::new(m.role.as_str(), m.content.clone())),
    );
    messages
}
