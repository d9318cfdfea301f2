//! Authentication: password hashing, browser sessions with CSRF protection, bearer tokens, and
//! the extractors that tell a handler who is calling.

pub mod csrf;
pub mod extractor;
pub mod password;
pub mod secret;
pub mod session;

pub use extractor::{AuthUser, Credential};
pub use password::{HashError, HashSlot, PasswordHasher};
