//! Usernames: up to 150 letters, digits and `@ . + - _`, as the original's validator allows.

/// Longest username, in characters: the limit of Django's `User.username`.
pub const MAX_CHARS: usize = 150;

/// A username accepted by the original's validator (Django's `UnicodeUsernameValidator`): one to
/// [`MAX_CHARS`] letters, digits and `@ . + - _`, case kept. Whether it is free is the store's
/// question, not this type's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// The wire's error messages for a rejected name.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.chars().count() > MAX_CHARS {
            return Err("Ensure this field has no more than 150 characters.");
        }
        let valid = !raw.is_empty()
            && raw
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_'));
        if !valid {
            return Err("Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.");
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_letters_digits_and_the_five_symbols() {
        for ok in ["alice", "Bob_2", "a.b+c-d@e", "žofie", "x"] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_spaces_symbols_and_long_names() {
        for bad in ["", "a b", "a/b", "<script>", "a\u{0}"] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Username::parse(&"a".repeat(150)).is_ok());
        assert!(Username::parse(&"a".repeat(151)).is_err());
    }
}
