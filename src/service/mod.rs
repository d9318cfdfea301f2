//! The service layer: every rule of the product, once, under every surface.
//!
//! REST handlers, both sockets, the admin area and the command line parse their input, make one
//! call here with plain, validated values, and render the result. Nothing here knows about HTTP:
//! results are domain values and failures are [`ServiceError`]s.
//!
//! - [`accounts`]: registration, credentials, password changes.
//! - [`sessions`]: browser sessions started and ended by a login and a logout.
//! - [`chats`]: group chats, their members and who may manage them.
//! - [`direct`]: direct chats, one per pair of users, opened by either of them.
//! - [`messaging`]: sending a message: committed, then published, in `seq` order.
//! - [`pins`]: pinning messages of a chat, and the chat's pins.
//! - [`search`]: full-text search over the messages of a user's chats.
//! - [`conversations`]: AI conversations: asking the model, the related chat's context.
//! - [`batches`]: lists built a batch at a time, for pages bounded in bytes.

pub mod accounts;
pub mod attachments;
pub mod batches;
pub mod chats;
pub mod conversations;
pub mod direct;
mod error;
pub mod messaging;
pub mod pins;
pub mod search;
pub mod sessions;

pub use error::{FieldErrors, ServiceError, ServiceResult};
