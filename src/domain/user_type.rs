//! The three kinds of account.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserType {
    Owner,
    #[default]
    Student,
    Staff,
}

impl UserType {
    pub const ALL: [UserType; 3] = [UserType::Owner, UserType::Student, UserType::Staff];

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "owner" => Ok(UserType::Owner),
            "student" => Ok(UserType::Student),
            "staff" => Ok(UserType::Staff),
            other => Err(format!("\"{other}\" is not a valid choice.")),
        }
    }

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
