//! Mentions: `@username` in a message's content.
//!
//! A mention is an `@` at the start of the content or after a character that cannot be part of
//! a username (a space, punctuation other than `@ . + - _`), followed by a username. So
//! `ask @alice.` and `(@bob)` mention, while `mail a@b.org` does not. Usernames may themselves
//! hold `@ . + -`, so `@alice.` could name `alice.` or `alice`: both are candidates, and the
//! store mentions whichever is a member of the chat. Which candidates are members is the store's
//! question, answered under the chat's lock when the message is written.

use super::username;

/// Most distinct names one message may mention; further ones are not looked up.
pub const MAX_CANDIDATES: usize = 50;

/// Whether `c` may appear in a username (Django's `UnicodeUsernameValidator`).
fn in_username(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_')
}

/// The usernames `content` may mention, NFKC-normalized as stored usernames are, without
/// repeats, in order of first appearance, at most [`MAX_CANDIDATES`].
pub fn candidates(content: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut push = |name: &str| {
        if name.is_empty() || name.chars().count() > username::MAX_CHARS {
            return;
        }
        let name = username::normalize(name);
        if names.len() < MAX_CANDIDATES && !names.contains(&name) {
            names.push(name);
        }
    };
    let mut previous: Option<char> = None;
    let mut rest = content;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        if c == '@' && !previous.is_some_and(in_username) {
            let end = after.find(|c: char| !in_username(c)).unwrap_or(after.len());
            let run = &after[..end];
            push(run);
            // A sentence may end right after a name: `@alice.` and `@alice...` name `alice`.
            push(run.trim_end_matches(['.', '+', '-', '@']));
            if !run.is_empty() {
                previous = run.chars().last();
                rest = &after[end..];
                continue;
            }
        }
        previous = Some(c);
        rest = after;
    }
    names
}

/// Mentioned user ids as the message row keeps them: ascending, comma-separated; `None` for
/// none.
pub fn encode_ids(ids: &[i64]) -> Option<String> {
    if ids.is_empty() {
        return None;
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    Some(ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
}

/// The ids of [`encode_ids`]' text (ignoring anything that is not an id).
pub fn decode_ids(text: Option<&str>) -> Vec<i64> {
    text.map(|t| t.split(',').filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_after_an_at_sign_that_starts_a_word() {
        assert_eq!(candidates("hi @alice and @bob_2!"), ["alice", "bob_2"]);
        assert_eq!(candidates("@carol"), ["carol"]);
        assert_eq!(candidates("(@dave), @erin"), ["dave", "erin"]);
    }

    #[test]
    fn an_address_is_not_a_mention() {
        assert!(candidates("write to a@b.org").is_empty());
        assert!(candidates("x@@y").is_empty());
    }

    #[test]
    fn trailing_punctuation_gives_a_second_candidate() {
        assert_eq!(candidates("thanks @alice."), ["alice.", "alice"]);
        assert_eq!(candidates("@a.b+c-d@e"), ["a.b+c-d@e"]);
    }

    #[test]
    fn names_are_normalized_and_deduplicated() {
        assert_eq!(candidates("@ａｌｉｃｅ @alice @alice"), ["alice"]);
        assert_eq!(candidates("@žofie"), ["žofie"]);
    }

    #[test]
    fn a_lone_at_sign_or_an_overlong_name_is_nothing() {
        assert!(candidates("@ @ @").is_empty());
        assert!(candidates(&format!("@{}", "a".repeat(151))).is_empty());
    }

    #[test]
    fn candidates_are_bounded() {
        let many: String = (0..200).map(|i| format!("@u{i} ")).collect();
        assert_eq!(candidates(&many).len(), MAX_CANDIDATES);
    }

    #[test]
    fn ids_round_trip_sorted() {
        assert_eq!(encode_ids(&[17, 3, 17]).as_deref(), Some("3,17"));
        assert_eq!(encode_ids(&[]), None);
        assert_eq!(decode_ids(Some("3,17")), [3, 17]);
        assert!(decode_ids(None).is_empty());
    }
}
