//! The seam between conversations and a language model: a provider streams a reply to a list of
//! chat messages. The OpenAI-compatible client implements it; tests and other backends plug in.

use std::pin::Pin;

use futures_util::{future::BoxFuture, Stream};
use serde::Serialize;

use crate::store::ai::Tokens;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// More text of the reply.
    Delta(String),
    /// Token counts for the whole exchange.
    Usage(Tokens),
    /// Why the reply ended (`stop`, `length`, …).
    Finish(String),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("the provider answered with status {0}")]
    Status(u16),
    #[error("could not reach the provider: {0}")]
    Transport(String),
    #[error("the provider sent a malformed response: {0}")]
    Malformed(String),
}

impl ProviderError {
    /// What a client may be told: no upstream details, which stay in the server log.
    pub fn public_message(&self) -> &'static str {
        match self {
            ProviderError::Timeout => "the AI provider did not answer in time",
            ProviderError::Status(429) => {
                "the AI provider is rate limiting requests; try again later"
            }
            ProviderError::Status(_)
            | ProviderError::Transport(_)
            | ProviderError::Malformed(_) => "the AI provider is unavailable; try again later",
        }
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

pub trait ChatProvider: Send + Sync {
    /// The model name replies are recorded under.
    fn model(&self) -> &str;

    /// Starts a reply. Dropping the returned stream abandons the request upstream.
    fn stream(
        &self,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>>;
}
