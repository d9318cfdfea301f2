//! Message text: not blank, at most 10,000 characters, and kept exactly as sent.

/// Longest message, in characters (Unicode scalar values, not bytes).
pub const MAX_CHARS: usize = 10_000;

/// The text of a chat message or of a question to the model: not blank, free of NUL, at most
/// [`MAX_CHARS`] characters, and stored exactly as sent (never trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent(String);

impl MessageContent {
    /// Blank is judged on the trimmed text; the stored text is the original. The error is the
    /// wire's message for the rule broken (blank, NUL, too long).
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Err("This field may not be blank.".into());
        }
        // PostgreSQL text cannot hold NUL; refuse it on every backend alike.
        if raw.contains('\0') {
            return Err("Null characters are not allowed.".into());
        }
        if raw.chars().count() > MAX_CHARS {
            return Err(format!(
                "Ensure this field has no more than {MAX_CHARS} characters."
            ));
        }
        Ok(Self(raw))
    }

    /// The text as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text as sent, without copying it.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_as_sent_and_rejects_blank_or_long() {
        assert_eq!(
            MessageContent::parse("  hi  ".into()).unwrap().as_str(),
            "  hi  "
        );
        assert!(MessageContent::parse(" \n\t".into()).is_err());
        assert!(MessageContent::parse("é".repeat(MAX_CHARS)).is_ok());
        assert!(MessageContent::parse("é".repeat(MAX_CHARS + 1)).is_err());
    }
}
