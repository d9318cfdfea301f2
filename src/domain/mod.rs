//! Validated values: once one exists it is valid, so handlers never re-check.

pub mod ai_message;
pub mod attachment;
pub mod email;
pub mod mention;
pub mod message;
pub mod password;
pub mod search;
pub mod text;
pub mod user_type;
pub mod username;

pub use ai_message::{AiRole, FinishReason};
pub use email::Email;
pub use message::{ContentError, MessageContent};
pub use password::PasswordPolicy;
pub use user_type::UserType;
pub use username::Username;

/// Longest chat name, in characters.
pub const MAX_CHAT_NAME_CHARS: usize = 255;
