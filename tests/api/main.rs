//! HTTP tests against the real server. One binary for every feature, so it links once.

mod accounts;
mod admin;
mod ai;
mod chats;
mod cli;
mod cluster;
mod connections;
mod csrf;
mod direct;
mod errors;
mod events;
mod fake_openai;
mod helpers;
mod input;
mod mentions;
mod messages;
mod openapi;
mod page_bytes;
mod pagination;
mod passwords;
mod pins;
mod privacy;
mod realtime;
mod resume;
mod schema;
mod tokens;
