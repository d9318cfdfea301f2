//! The seam between conversations and a language model: a provider streams a reply to a list of
//! chat messages. The OpenAI-compatible client implements it; tests and other backends plug in.

use std::pin::Pin;

use futures_util::{future::BoxFuture, Stream};
use serde::Serialize;

use crate::store::ai::Tokens;

/// One message of a chat-completions request, serialised as the OpenAI API's
/// `{"role", "content"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A message from `role` with `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// One piece of a streamed reply, in the order the provider sends them.
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
/// Why a reply could not be had from the provider. The details are for the server log; clients
/// are told [`ProviderError::public_message`].
pub enum ProviderError {
    /// No answer, or no next chunk, within `OPENAI_TIMEOUT_SECONDS`; or the whole reply took
    /// longer than its 600-second bound.
    #[error("the provider did not answer in time")]
    Timeout,
    /// An HTTP error status, after any retries (`OPENAI_RETRIES`, for 429 and 5xx) were spent.
    #[error("the provider answered with status {0}")]
    Status(u16),
    /// The request could not be sent, or the answer could not be read to its end.
    #[error("could not reach the provider: {0}")]
    Transport(String),
    /// The answer was not a chat completion (or a stream of chunks) that could be parsed.
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

/// A reply as it streams in; it ends after the provider's last chunk. Dropping it abandons the
/// request upstream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// A language-model backend that streams a reply to a list of chat messages: any
/// OpenAI-compatible API ([`super::openai::OpenAiProvider`]), or a stand-in in tests. One
/// provider serves several models; [`super::models::Catalog`] says which.
pub trait ChatProvider: Send + Sync {
    /// Starts a reply from `model` (the provider's own name for it). Dropping the returned
    /// stream abandons the request upstream.
    fn stream(
        &self,
        model: &str,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>>;

    /// The models the provider serves (`GET {base_url}/models`, OpenAI's List models). A
    /// provider that cannot list answers an error, and its configured allow-list is used.
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(async {
            Err(ProviderError::Malformed(
                "listing models is not supported".into(),
            ))
        })
    }
}
