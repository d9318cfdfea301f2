//! Message text: not blank, at most 10,000 characters.

use super::text;

/// Longest message, in characters (Unicode code points, as Django counts them; not bytes).
pub const MAX_CHARS: usize = 10_000;

/// The text of a chat message or of a question to the model: not blank, at most [`MAX_CHARS`]
/// characters, and stored as given. Whether it was trimmed first is the surface's choice, as in
/// the original: its REST serializers strip the text, its chat socket keeps it as sent. NUL was
/// refused by the reader that received it (see [`text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent(String);

/// Why a text is not a [`MessageContent`]; it displays as the REST API's field message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    /// Empty, or only whitespace.
    Blank,
    /// Over [`MAX_CHARS`] characters.
    TooLong,
}

impl std::fmt::Display for ContentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContentError::Blank => f.write_str(text::BLANK),
            ContentError::TooLong => f.write_str(&text::too_long(MAX_CHARS)),
        }
    }
}

impl MessageContent {
    /// Blank is judged on the text stripped as Python strips it; the stored text is the one
    /// given.
    pub fn parse(raw: String) -> Result<Self, ContentError> {
        if text::strip(&raw).is_empty() {
            return Err(ContentError::Blank);
        }
        if !text::within(&raw, MAX_CHARS) {
            return Err(ContentError::TooLong);
        }
        Ok(Self(raw))
    }

    /// The text of a message that carries attachments: it may be blank (the files are the
    /// message), and stays within [`MAX_CHARS`].
    pub fn caption(raw: String) -> Result<Self, ContentError> {
        if !text::within(&raw, MAX_CHARS) {
            return Err(ContentError::TooLong);
        }
        Ok(Self(raw))
    }

    /// Checks `raw` as a message that carries `attachments` files (see [`MessageContent::parse`]
    /// and [`MessageContent::caption`]).
    pub fn with_attachments(raw: String, attachments: usize) -> Result<Self, ContentError> {
        if attachments == 0 {
            Self::parse(raw)
        } else {
            Self::caption(raw)
        }
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
    fn keeps_text_as_given_and_rejects_blank_or_long() {
        assert_eq!(
            MessageContent::parse("  hi  ".into()).unwrap().as_str(),
            "  hi  "
        );
        assert!(MessageContent::parse(" \n\t".into()).is_err());
        assert!(MessageContent::parse("é".repeat(MAX_CHARS)).is_ok());
        assert!(MessageContent::parse("é".repeat(MAX_CHARS + 1)).is_err());
        assert!(MessageContent::parse("😀".repeat(MAX_CHARS)).is_ok());
        assert!(MessageContent::parse("😀".repeat(MAX_CHARS + 1)).is_err());
    }
}
