//! AI conversations: a user's private chat with a language model.
//!
//! - `provider`: the trait a model backend implements; `openai`: the OpenAI-compatible client;
//! - `prompt`: what the model is sent;
//! - `generation`: replies as server-side jobs that outlive the connection that asked;
//! - `tokens`: counting a reply's tokens locally when the provider reports none;
//! - `socket`: the `/ws/ai-chat/{id}/` endpoint.

pub mod bus;
pub mod generation;
pub mod models;
pub mod openai;
pub mod prompt;
pub mod provider;
pub mod socket;
pub mod titles;
pub mod tokens;
