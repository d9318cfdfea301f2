//! Search queries: what a user types into a search box, parsed once into words, phrases,
//! prefixes and exclusions, and rendered for each backend's full-text engine (SQLite FTS5,
//! PostgreSQL `tsquery`), so both understand the same syntax the same way.
//!
//! The syntax is the one web search engines taught everyone (PostgreSQL's
//! `websearch_to_tsquery` documents the same forms): `word` must appear, `"quoted words"` must
//! appear together in that order, `word*` matches any word starting so, `-word` or `-"words"`
//! must not appear. Words are runs of letters, digits and combining marks; anything else
//! separates them, so `foo-bar` or `bob@example.com` is searched as the phrase of its words, as
//! both indexes split them. Case and diacritics never matter (both engines fold them).

use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

/// Longest query accepted, in characters.
pub const MAX_CHARS: usize = 500;
/// Most words, phrases and exclusions in one query.
pub const MAX_PARTS: usize = 20;
/// Shortest prefix (`ab*`), in characters: shorter ones would match most of the index.
pub const MIN_PREFIX_CHARS: usize = 2;

/// One thing a query asks for: a word, or a phrase of several, the last possibly a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The words, in order, in lower case and NFC.
    pub words: Vec<String>,
    /// Whether the last word is a prefix (`word*`).
    pub prefix: bool,
}

/// A parsed search query: what must appear and what must not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub required: Vec<Part>,
    pub excluded: Vec<Part>,
}

/// Whether `c` belongs to a word: letters, ASCII digits, and the marks that combine with
/// letters. Other numerals (`½`, `²`) and every symbol separate words, as the PostgreSQL index
/// (which turns punctuation and symbols into spaces) and SQLite's tokenizer both treat them.
pub fn in_word(c: char) -> bool {
    c.is_alphabetic() || c.is_ascii_digit() || is_combining_mark(c)
}

/// A word as compared for highlighting: lower case, without diacritics (canonical
/// decomposition with its combining marks left out), close to how the indexes fold words.
pub fn fold(word: &str) -> String {
    word.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of `text` as the engines are given them: lower case, in NFC, otherwise as typed.
/// Each engine folds diacritics its own way, the same way for its index and its queries; folding
/// here would change letters that are not accented ones (`й`, Devanagari vowel signs). A run
/// of marks alone is no word.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !in_word(c))
        .filter(|w| w.chars().any(|c| c.is_alphabetic() || c.is_ascii_digit()))
        .map(|w| w.nfc().flat_map(char::to_lowercase).collect())
        .collect()
}

impl SearchQuery {
    /// Parses what a user typed. The error is the message to show them.
    pub fn parse(raw: &str) -> Result<SearchQuery, String> {
        if raw.chars().count() > MAX_CHARS {
            return Err(format!(
                "Ensure this field has no more than {MAX_CHARS} characters."
            ));
        }
        let mut query = SearchQuery {
            required: Vec::new(),
            excluded: Vec::new(),
        };
        let mut rest = raw.trim_start();
        while !rest.is_empty() {
            let negated = rest.starts_with('-');
            if negated {
                rest = &rest[1..];
            }
            let (text, prefix, after) = if let Some(quoted) = rest.strip_prefix('"') {
                // A phrase runs to the closing quote (or the end, when it is missing).
                let end = quoted.find('"').unwrap_or(quoted.len());
                let after = quoted[end..].strip_prefix('"').unwrap_or(&quoted[end..]);
                let prefix = after.starts_with('*');
                let after = if prefix { &after[1..] } else { after };
                (&quoted[..end], prefix, after)
            } else {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let item = &rest[..end];
                let prefix = item.ends_with('*');
                (item.trim_end_matches('*'), prefix, &rest[end..])
            };
            rest = after.trim_start();
            let words = words(text);
            let Some(last) = words.last() else {
                continue;
            };
            if prefix && last.chars().count() < MIN_PREFIX_CHARS {
                return Err(format!(
                    "A prefix needs at least {MIN_PREFIX_CHARS} characters before the *."
                ));
            }
            let part = Part { words, prefix };
            let list = if negated {
                &mut query.excluded
            } else {
                &mut query.required
            };
            if !list.contains(&part) {
                list.push(part);
            }
            if query.required.len() + query.excluded.len() > MAX_PARTS {
                return Err(format!(
                    "A search may hold at most {MAX_PARTS} words, phrases and exclusions."
                ));
            }
        }
        if query.required.is_empty() {
            return Err("Enter at least one word to search for.".into());
        }
        Ok(query)
    }

    /// The query as an FTS5 `MATCH` expression over the index's `content` column, limited to
    /// the messages of `chats` when any are given (through the `chat` column, where each
    /// message has the one token `c<chat id>`; migration 0013):
    /// `{content} : (("a" AND "b c"*) NOT ("x" OR "y")) AND {chat} : (c3 OR c17)`. Every word is
    /// a quoted string of letters and digits, so nothing in it is FTS5 syntax.
    pub fn to_fts5(&self, chats: &[i64]) -> String {
        let part = |p: &Part| {
            format!(
                "\"{}\"{}",
                p.words.join(" "),
                if p.prefix { "*" } else { "" }
            )
        };
        let required: Vec<String> = self.required.iter().map(part).collect();
        let mut expression = format!("({})", required.join(" AND "));
        if !self.excluded.is_empty() {
            let excluded: Vec<String> = self.excluded.iter().map(part).collect();
            expression.push_str(&format!(" NOT ({})", excluded.join(" OR ")));
        }
        let mut expression = format!("{{content}} : ({expression})");
        if !chats.is_empty() {
            let tags: Vec<String> = chats.iter().map(|id| format!("c{id}")).collect();
            expression.push_str(&format!(" AND {{chat}} : ({})", tags.join(" OR ")));
        }
        expression
    }

    /// The query as PostgreSQL `to_tsquery` text: `'a' & ('b' <-> 'c':*) & !'x'`. Every word is
    /// quoted and made only of letters and digits, so nothing in it is `tsquery` syntax.
    pub fn to_tsquery(&self) -> String {
        let part = |p: &Part| {
            let last = p.words.len() - 1;
            let words: Vec<String> = p
                .words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let star = if p.prefix && i == last { ":*" } else { "" };
                    format!("'{w}'{star}")
                })
                .collect();
            format!("({})", words.join(" <-> "))
        };
        let mut terms: Vec<String> = self.required.iter().map(part).collect();
        terms.extend(self.excluded.iter().map(|p| format!("!{}", part(p))));
        terms.join(" & ")
    }

    /// The words the query asks for, folded ([`fold`]), for highlighting: each with whether it
    /// is a prefix (the last word of a `word*` part).
    fn wanted(&self) -> Vec<(String, bool)> {
        self.required
            .iter()
            .flat_map(|p| {
                let last = p.words.len() - 1;
                p.words
                    .iter()
                    .enumerate()
                    .map(move |(i, w)| (fold(w), p.prefix && i == last))
            })
            .collect()
    }
}

/// Longest snippet, in words, around the first match.
pub const SNIPPET_WORDS: usize = 32;

/// A snippet of `content` for a hit of `query`, as HTML: the text escaped, each word the query
/// asks for wrapped in `<mark>…</mark>`. Content of at most [`SNIPPET_WORDS`] words is shown
/// whole; longer content is cut to a window of that many words starting a few words before the
/// first match, with `…` where it was cut.
pub fn snippet(content: &str, query: &SearchQuery) -> String {
    // Byte ranges of the words.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in content.char_indices() {
        match (in_word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, content.len()));
    }
    let wanted = query.wanted();
    let hits: Vec<bool> = spans
        .iter()
        .map(|&(s, e)| {
            let word = fold(&content[s..e]);
            wanted.iter().any(|(w, prefix)| {
                if *prefix {
                    word.starts_with(w.as_str())
                } else {
                    word == *w
                }
            })
        })
        .collect();
    let (first_word, last_word) = if spans.len() <= SNIPPET_WORDS {
        (0, spans.len())
    } else {
        let first_hit = hits.iter().position(|h| *h).unwrap_or(0);
        let first = first_hit.saturating_sub(4).min(spans.len() - SNIPPET_WORDS);
        (first, first + SNIPPET_WORDS)
    };
    let (from, to) = if first_word == 0 && last_word == spans.len() {
        (0, content.len())
    } else {
        (spans[first_word].0, spans[last_word - 1].1)
    };
    let mut html = String::new();
    if from > 0 {
        html.push('…');
    }
    let mut at = from;
    for (k, &(s, e)) in spans.iter().enumerate().take(last_word).skip(first_word) {
        html.push_str(&escape(&content[at..s]));
        if hits[k] {
            html.push_str("<mark>");
            html.push_str(&escape(&content[s..e]));
            html.push_str("</mark>");
        } else {
            html.push_str(&escape(&content[s..e]));
        }
        at = e;
    }
    html.push_str(&escape(&content[at..to]));
    if to < content.len() {
        html.push('…');
    }
    html
}

/// `text` with `& < > " '` as HTML character references.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(words: &[&str], prefix: bool) -> Part {
        Part {
            words: words.iter().map(|w| w.to_string()).collect(),
            prefix,
        }
    }

    #[test]
    fn parses_words_phrases_prefixes_and_exclusions() {
        let q = SearchQuery::parse(r#"Hello "big  World" net* -spam -"bad idea""#).unwrap();
        assert_eq!(
            q.required,
            [
                part(&["hello"], false),
                part(&["big", "world"], false),
                part(&["net"], true)
            ]
        );
        assert_eq!(
            q.excluded,
            [part(&["spam"], false), part(&["bad", "idea"], false)]
        );
    }

    #[test]
    fn punctuation_and_symbols_split_words_and_letters_are_kept_as_typed() {
        let q = SearchQuery::parse("bob@example.com Ñandú foo-ba* какой ½ x²").unwrap();
        assert_eq!(
            q.required,
            [
                part(&["bob", "example", "com"], false),
                part(&["ñandú"], false),
                part(&["foo", "ba"], true),
                part(&["какой"], false),
                part(&["x"], false),
            ]
        );
        // A decomposed letter is given to the engines composed.
        let q = SearchQuery::parse("e\u{301}cole").unwrap();
        assert_eq!(q.required, [part(&["école"], false)]);
    }

    #[test]
    fn refuses_what_cannot_be_searched() {
        for bad in ["", "   ", "-spam", "!!!", "a*", "\"\"", "\u{301}", "½ -foo"] {
            assert!(SearchQuery::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            SearchQuery::parse(&"w ".repeat(21)).is_ok(),
            "repeats count once"
        );
        let many: String = (0..21).map(|i| format!("w{i} ")).collect();
        assert!(SearchQuery::parse(&many).is_err());
        assert!(SearchQuery::parse(&"a".repeat(501)).is_err());
    }

    #[test]
    fn an_unclosed_quote_runs_to_the_end() {
        let q = SearchQuery::parse(r#"say "hello there"#).unwrap();
        assert_eq!(q.required[1], part(&["hello", "there"], false));
    }

    #[test]
    fn renders_for_fts5_and_tsquery() {
        let q = SearchQuery::parse(r#"a "b cd"* -x -"y z""#).unwrap();
        assert_eq!(
            q.to_fts5(&[]),
            r#"{content} : (("a" AND "b cd"*) NOT ("x" OR "y z"))"#
        );
        assert_eq!(
            q.to_tsquery(),
            "('a') & ('b' <-> 'cd':*) & !('x') & !('y' <-> 'z')"
        );
        assert_eq!(
            SearchQuery::parse("a").unwrap().to_fts5(&[3, 17]),
            r#"{content} : (("a")) AND {chat} : (c3 OR c17)"#
        );
    }

    #[test]
    fn snippets_mark_matches_and_escape_the_rest() {
        let q = SearchQuery::parse("héllo wor*").unwrap();
        assert_eq!(
            snippet("<b>Hello</b> & World!", &q),
            "&lt;b&gt;<mark>Hello</mark>&lt;/b&gt; &amp; <mark>World</mark>!"
        );
    }

    #[test]
    fn long_content_is_cut_around_the_first_match() {
        let q = SearchQuery::parse("needle").unwrap();
        let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
        let mut text = words.join(" ");
        text.push_str(" needle");
        text.push_str(&" tail".repeat(50));
        let s = snippet(&text, &q);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("w96 w97 w98 w99 <mark>needle</mark>"), "{s}");
        assert_eq!(s.matches(' ').count(), SNIPPET_WORDS - 1);
    }
}
