//! The three kinds of account.

use std::fmt;

/// The kind of account a user has, stored and sent as its lowercase name (`owner`, `student`,
/// `staff`). A label only: staff powers come from the user's `is_staff` flag, not from `Staff`.
/// `Student` is the default when registration names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserType {
    Owner,
    #[default]
    Student,
    Staff,
}

impl UserType {
    /// Every kind, in the order choices are listed.
    pub const ALL: [UserType; 3] = [UserType::Owner, UserType::Student, UserType::Staff];

    /// Reads a lowercase name; anything else is rejected with Django REST Framework's
    /// `"x" is not a valid choice.` message.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "owner" => Ok(UserType::Owner),
            "student" => Ok(UserType::Student),
            "staff" => Ok(UserType::Staff),
            other => Err(format!("\"{other}\" is not a valid choice.")),
        }
    }

    /// The lowercase name used in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            UserType::Owner => "owner",
            UserType::Student => "student",
            UserType::Staff => "staff",
        }
    }
}

impl fmt::Display for UserType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
