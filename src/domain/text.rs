//! The rules every text input shares, whichever surface it arrives by: how characters are
//! counted, which whitespace is trimmed, and the refusal of NUL.
//!
//! The surfaces' readers apply them once, at the edge: the REST body reader
//! (`http::input::Input`), the admin area's form and query readers (`admin::form`), the two
//! sockets' frame parsers (`wire::frames`) and the command line's prompts.

/// The error for a text holding U+0000, worded as Django's `ProhibitNullCharactersValidator`
/// words it. PostgreSQL's `text` cannot hold NUL at all, so every backend refuses it alike
/// rather than letting one of them fail in the database.
pub const NUL_REFUSED: &str = "Null characters are not allowed.";

/// The error for a text that is empty, or only whitespace, where a value is required (Django
/// REST Framework's `CharField` wording).
pub const BLANK: &str = "This field may not be blank.";

/// The length of `text` in characters, as Django counts them for every limit it states in
/// characters (Python's `len`: Unicode code points). An emoji is one character whether it
/// arrived as raw UTF-8 (four bytes), as a JSON surrogate pair (`\ud83d\ude00`, twelve bytes)
/// or percent-encoded in a form (`%F0%9F%98%80`): each reader decodes it to the same `char`.
pub fn char_count(text: &str) -> usize {
    text.chars().count()
}

/// True when `text` has at most `max` characters (see [`char_count`]). A text no longer than
/// `max` bytes is short enough without being scanned.
pub fn within(text: &str, max: usize) -> bool {
    text.len() <= max || text.chars().nth(max).is_none()
}

/// The message of a text over its limit, as Django words it.
pub fn too_long(max: usize) -> String {
    format!("Ensure this field has no more than {max} characters.")
}

/// `text` without its leading and trailing whitespace, exactly as Python's `str.strip()`
/// removes it: that is what Django REST Framework's `CharField(trim_whitespace=True)` and
/// Django's form fields do to every text they read. Python's whitespace is Unicode's
/// `White_Space` plus the four information separators U+001C..U+001F.
pub fn strip(text: &str) -> &str {
    text.trim_matches(is_python_space)
}

fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// True when `text` holds U+0000 (see [`NUL_REFUSED`]).
pub fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_code_points_not_bytes_or_utf16_units() {
        assert_eq!(char_count("😀😀"), 2);
        assert_eq!(char_count("é"), 1);
        assert!(within(&"😀".repeat(10), 10));
        assert!(!within(&"😀".repeat(11), 10));
        assert!(within("abc", 3) && !within("abcd", 3));
    }

    #[test]
    fn strips_what_python_strips() {
        assert_eq!(strip("  padded \t\n"), "padded");
        assert_eq!(strip("\u{3000}\u{1f}x\u{a0}\u{2028}"), "x");
        assert_eq!(strip("a b"), "a b");
        // Not whitespace to Python either: zero-width space, byte-order mark.
        assert_eq!(strip("\u{200b}x\u{feff}"), "\u{200b}x\u{feff}");
        assert_eq!(strip(" \u{1c} "), "");
    }
}
