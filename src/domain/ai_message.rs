//! What an AI message is: who wrote it, and why a reply ended.

use std::fmt;

/// Who wrote a message of an AI chat, as the model's API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiRole {
    /// The chat's owner.
    User,
    /// The model.
    Assistant,
    /// The instructions the model is given first.
    System,
}

impl AiRole {
    pub const ALL: [AiRole; 3] = [AiRole::User, AiRole::Assistant, AiRole::System];

    /// The role written `raw` (`user`, `assistant` or `system`, exactly); an error message
    /// otherwise.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "user" => Ok(AiRole::User),
            "assistant" => Ok(AiRole::Assistant),
            "system" => Ok(AiRole::System),
            other => Err(format!("\"{other}\" is not a valid role.")),
        }
    }

    /// The role's name: `user`, `assistant` or `system`, as stored and as sent to clients and
    /// to the model.
    pub fn as_str(self) -> &'static str {
        match self {
            AiRole::User => "user",
            AiRole::Assistant => "assistant",
            AiRole::System => "system",
        }
    }
}

impl fmt::Display for AiRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an assistant reply ended. The first five are this server's own; a provider may report
/// other reasons (`content_filter`, say), which are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// The model finished its answer.
    Stop,
    /// The model hit its output limit.
    Length,
    /// The owner cancelled the reply, or the server shut down during it.
    Cancelled,
    /// The provider failed after part of the reply was written.
    Error,
    /// The process writing the reply stopped before it ended; set at the next start.
    Interrupted,
    /// Any other reason a provider gave, verbatim; never one of the names above (build it with
    /// [`FinishReason::parse`]).
    Other(String),
}

impl FinishReason {
    /// The reason written `raw`: one of the named variants when it is one of their names
    /// (exactly), `Other` otherwise. Never fails, since providers name reasons freely.
    pub fn parse(raw: &str) -> Self {
        match raw {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "cancelled" => FinishReason::Cancelled,
            "error" => FinishReason::Error,
            "interrupted" => FinishReason::Interrupted,
            other => FinishReason::Other(other.to_owned()),
        }
    }

    /// The reason's name, as stored and as sent to clients.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
            FinishReason::Interrupted => "interrupted",
            FinishReason::Other(raw) => raw,
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_as_written() {
        for role in AiRole::ALL {
            assert_eq!(AiRole::parse(role.as_str()), Ok(role));
        }
        assert!(AiRole::parse("User").is_err());
    }

    #[test]
    fn finish_reasons_read_back_as_written_whatever_the_provider_said() {
        for raw in [
            "stop",
            "length",
            "cancelled",
            "error",
            "interrupted",
            "content_filter",
        ] {
            assert_eq!(FinishReason::parse(raw).as_str(), raw);
        }
        assert_eq!(FinishReason::parse("stop"), FinishReason::Stop);
        assert_eq!(
            FinishReason::parse("tool_calls"),
            FinishReason::Other("tool_calls".into())
        );
    }
}
