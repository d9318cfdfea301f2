//! The password rules applied when a password is chosen: minimum length, not entirely numeric,
//! not a common password, not too similar to the user's own attributes. The common-password list
//! is Django's (BSD licence), so accounts are held to the same list as in the original.

use std::{collections::HashSet, io::Read};

use flate2::read::GzDecoder;

const COMMON_PASSWORDS_GZ: &[u8] = include_bytes!("../../assets/common-passwords.txt.gz");
/// Fewest characters a password may have: the default of Django's `MinimumLengthValidator`.
pub const MIN_LENGTH: usize = 8;
/// Most characters a password may have: Django's `MAXIMUM_PASSWORD_LENGTH` (4,096), which
/// kept a login from making it hash megabytes. A login with a longer password fails without
/// hashing; choosing one is a field error.
pub const MAX_LENGTH: usize = 4096;
const MAX_SIMILARITY: f64 = 0.7;

/// Whether `password` is longer than [`MAX_LENGTH`] characters, counted without reading past
/// the limit.
pub fn too_long(password: &str) -> bool {
    password.chars().nth(MAX_LENGTH).is_some()
}

/// The rules of Django's four default password validators (attribute similarity with a maximum
/// `quick_ratio` of 0.7, minimum length, common passwords, entirely numeric), holding the
/// common-password list in memory. Built once per process and shared.
pub struct PasswordPolicy {
    common: HashSet<String>,
}

impl PasswordPolicy {
    /// Decompresses the embedded list of 20,000 common passwords. Panics only if that embedded
    /// asset is corrupt.
    pub fn load() -> Self {
        let mut text = String::new();
        GzDecoder::new(COMMON_PASSWORDS_GZ)
            .read_to_string(&mut text)
            .expect("the embedded common-password list is valid gzip text");
        let common = text.lines().map(|l| l.trim().to_owned()).collect();
        Self { common }
    }

    /// Every rule the password breaks, as the wire's messages, in Django's order (similarity,
    /// length, common, numeric); empty when it passes. `attributes` pairs a label
    /// ("username", "email address") with the user's value; empty values are skipped. A
    /// password over [`MAX_LENGTH`] gets that one message (Django REST Framework's `max_length`
    /// wording), the other rules unchecked.
    pub fn problems(&self, password: &str, attributes: &[(&str, &str)]) -> Vec<String> {
        if too_long(password) {
            return vec![format!(
                "Ensure this field has no more than {MAX_LENGTH} characters."
            )];
        }
        let mut problems = Vec::new();
        if let Some(label) = too_similar(password, attributes) {
            problems.push(format!("The password is too similar to the {label}."));
        }
        if super::text::char_count(password) < MIN_LENGTH {
            problems.push(format!(
                "This password is too short. It must contain at least {MIN_LENGTH} characters."
            ));
        }
        if self
            .common
            .contains(password.trim().to_lowercase().as_str())
        {
            problems.push("This password is too common.".to_owned());
        }
        if !password.is_empty() && password.chars().all(|c| c.is_numeric()) {
            problems.push("This password is entirely numeric.".to_owned());
        }
        problems
    }
}

/// The first attribute the password resembles, compared whole and by its word-separated parts.
fn too_similar<'a>(password: &str, attributes: &[(&'a str, &str)]) -> Option<&'a str> {
    let password: Vec<char> = password.to_lowercase().chars().collect();
    for (label, value) in attributes {
        if value.is_empty() {
            continue;
        }
        let value = value.to_lowercase();
        let parts = value
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|p| !p.is_empty())
            .chain(std::iter::once(value.as_str()));
        for part in parts {
            let part: Vec<char> = part.chars().collect();
            // A value a tenth of the password's length can never reach the threshold.
            let bound = MAX_SIMILARITY / 2.0 * password.len() as f64;
            if password.len() >= 10 * part.len() && (part.len() as f64) < bound {
                continue;
            }
            if quick_ratio(&password, &part) >= MAX_SIMILARITY {
                return Some(label);
            }
        }
    }
    None
}

/// Twice the number of characters the two strings share (as multisets) over their total length:
/// difflib's `quick_ratio`, an upper bound of its similarity ratio.
fn quick_ratio(a: &[char], b: &[char]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let mut available: std::collections::HashMap<char, usize> = std::collections::HashMap::new();
    for c in b {
        *available.entry(*c).or_default() += 1;
    }
    let mut matches = 0usize;
    for c in a {
        if let Some(n) = available.get_mut(c) {
            if *n > 0 {
                *n -= 1;
                matches += 1;
            }
        }
    }
    2.0 * matches as f64 / (a.len() + b.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(password: &str) -> Vec<String> {
        PasswordPolicy::load().problems(
            password,
            &[
                ("username", "alice"),
                ("email address", "alice@example.com"),
            ],
        )
    }

    #[test]
    fn a_strong_password_passes() {
        assert!(problems("correct horse battery staple").is_empty());
        assert!(problems("Tr0ub4dor&3x").is_empty());
    }

    #[test]
    fn each_rule_has_its_message() {
        assert!(problems("short1").iter().any(|p| p.contains("too short")));
        assert!(problems("password")
            .iter()
            .any(|p| p == "This password is too common."));
        assert!(problems("83749201374")
            .iter()
            .any(|p| p == "This password is entirely numeric."));
        assert!(problems("alice1234")
            .iter()
            .any(|p| p == "The password is too similar to the username."));
        assert!(problems("Alice.Example")
            .iter()
            .any(|p| p.contains("too similar")));
    }

    #[test]
    fn the_length_limit_counts_characters() {
        let longest = "é".repeat(MAX_LENGTH);
        assert!(!too_long(&longest));
        assert!(too_long(&format!("{longest}x")));
        assert_eq!(
            problems(&format!("{longest}x")),
            ["Ensure this field has no more than 4096 characters."]
        );
    }

    #[test]
    fn quick_ratio_matches_difflib() {
        let r = |a: &str, b: &str| {
            quick_ratio(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(r("abcd", "bcde"), 0.75);
        assert_eq!(r("a", "aaaaaaaaaa"), 2.0 / 11.0);
    }
}
