//! Usernames: up to 150 letters, digits and `@ . + - _`, as the original's validator allows,
//! in Unicode's NFKC form, as the original's user model stores them.

use unicode_normalization::UnicodeNormalization;

use super::text;

/// Longest username, in characters: the limit of Django's `User.username`.
pub const MAX_CHARS: usize = 150;

/// A username accepted by the original's validator (Django's `UnicodeUsernameValidator`): one to
/// [`MAX_CHARS`] letters, digits and `@ . + - _`, case kept, in NFKC form (see [`normalize`]).
/// Whether it is free is the store's question, not this type's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Normalizes `raw` (see [`normalize`]), then checks it. The error is the wire's message for
    /// the rule broken.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = normalize(raw);
        if !text::within(&name, MAX_CHARS) {
            return Err(text::too_long(MAX_CHARS));
        }
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_'));
        if !valid {
            return Err("Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.".into());
        }
        Ok(Self(name))
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A username as the store keeps it: Unicode's compatibility composition (NFKC), which folds
/// look-alikes such as the fullwidth `ａｌｉｃｅ` into `alice`. Django's
/// `AbstractBaseUser.normalize_username` does this to every username it stores; here it is
/// also applied to every name looked up (login, tokens, members by username, the command line,
/// the admin area's username filters), so a look-alike finds the account it imitates and can
/// never register beside it.
pub fn normalize(raw: &str) -> String {
    raw.nfkc().collect()
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

    #[test]
    fn look_alikes_fold_to_the_name_they_imitate() {
        assert_eq!(Username::parse("ａｌｉｃｅ").unwrap().as_str(), "alice");
        assert_eq!(normalize("ｂｏｂ＿２"), "bob_2");
        // The limit is judged on the stored form: `㎒` becomes the three letters `MHz`.
        assert!(Username::parse(&"㎒".repeat(50)).is_ok());
        assert_eq!(
            Username::parse(&"㎒".repeat(51)),
            Err(text::too_long(MAX_CHARS))
        );
    }
}
