//! Email addresses: optional, but well-formed when given.

use super::text;

/// Longest address, in characters: 254, the limit of Django's `EmailField` (RFC 5321's 256-octet
/// path less its angle brackets).
pub const MAX_CHARS: usize = 254;

/// A user's email address: either empty (none given) or well-formed. Kept as given, without case
/// folding; uniqueness is not required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// An empty string is a valid "no address"; anything else must look like `local@domain.tld`.
    /// Unlike Django's validator, non-ASCII letters are accepted in both parts. The error is the
    /// wire's message (too long, or not a valid address).
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Ok(Self(String::new()));
        }
        if !text::within(raw, MAX_CHARS) {
            return Err("Ensure this field has no more than 254 characters.");
        }
        let Some((local, domain)) = raw.rsplit_once('@') else {
            return Err("Enter a valid email address.");
        };
        if !valid_local(local) || !valid_domain(domain) {
            return Err("Enter a valid email address.");
        }
        Ok(Self(raw.to_owned()))
    }

    /// The address as given; empty when the user has none.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The dot-atom form of RFC 5322 (quoted local parts are not accepted), at most 64 octets of
/// UTF-8: RFC 5321 (section 4.5.3.1.1) and RFC 6531 state this limit in octets, not characters.
fn valid_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c))
        })
}

/// Dot-separated labels of letters, digits and inner hyphens, each at most 63 octets (the DNS
/// limit of RFC 1035, in octets), ending in a top-level label of two or more characters.
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| {
            text::char_count(tld) >= 2 && !tld.chars().all(|c| c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_addresses_and_empty() {
        for ok in [
            "",
            "a@example.com",
            "first.last+tag@mail.example.co.uk",
            "ü@bücher.de",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "plain",
            "@x.com",
            "a@",
            "a@b",
            "a..b@x.com",
            "a@-x.com",
            "a b@x.com",
            "a@x.1",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
