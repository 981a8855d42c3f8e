//! Wildcard patterns over topic names, NATS style: `orders.*.created`, `orders.>`.
//!
//! A topic name is dot-separated tokens (`orders.eu.created`). In a pattern, the token
//! `*` matches exactly one token, and the token `>`, allowed only last, matches one or
//! more trailing tokens: `orders.>` matches `orders.eu` and `orders.eu.created`, not
//! `orders`. Every other token matches itself. `matches` here is the reference
//! matcher, one pattern against one name; `pattern_trie` finds every pattern that
//! matches a name without trying each one.

use crate::registry::{check_syntax, Syntax};

/// A checked pattern.
pub(crate) struct Pattern {
    text: Box<str>,
}

/// One token of a pattern.
#[derive(Clone, Copy)]
pub(crate) enum Token<'a> {
    Literal(&'a str),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens, the pattern's last.
    Rest,
}

impl Pattern {
    /// Checks `text` (see `registry::check_syntax`); the error says what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Pattern, &'static str> {
        check_syntax(text, Syntax::Pattern)?;
        Ok(Pattern { text: text.into() })
    }

    pub(crate) fn tokens(&self) -> impl Iterator<Item = Token<'_>> {
        self.text.split('.').map(|token| match token {
            "*" => Token::One,
            ">" => Token::Rest,
            literal => Token::Literal(literal),
        })
    }

    /// Whether the topic named `name` matches: the reference matcher.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let mut names = name.split('.');
        for token in self.tokens() {
            match (token, names.next()) {
                (Token::Rest, Some(_)) => return true,
                (Token::One, Some(_)) => {}
                (Token::Literal(literal), Some(n)) if literal == n => {}
                _ => return false,
            }
        }
        names.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        Pattern::parse(pattern).expect("valid pattern").matches(name)
    }

    #[test]
    fn a_star_is_exactly_one_token() {
        assert!(matches("orders.*.created", "orders.eu.created"));
        assert!(!matches("orders.*.created", "orders.created"));
        assert!(!matches("orders.*.created", "orders.eu.x.created"));
        assert!(matches("*", "orders"));
        assert!(!matches("*", "orders.eu"));
    }

    #[test]
    fn a_tail_is_one_or_more_tokens() {
        assert!(matches("orders.>", "orders.eu"));
        assert!(matches("orders.>", "orders.eu.created"));
        assert!(!matches("orders.>", "orders"));
        assert!(matches(">", "anything.at.all"));
        assert!(matches("*.>", "a.b"));
        assert!(!matches("*.>", "a"));
    }

    #[test]
    fn a_literal_pattern_matches_only_its_name() {
        assert!(matches("orders.eu", "orders.eu"));
        assert!(!matches("orders.eu", "orders.eux"));
        assert!(!matches("orders.eu", "orders"));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let cases = [
            ("", "the pattern is empty"),
            ("orders..eu", "a dot-separated token is empty"),
            (".orders", "a dot-separated token is empty"),
            ("orders.", "a dot-separated token is empty"),
            ("orders.>.eu", "`>` may only be the last token"),
            ("orders.eu*", "a wildcard (`*` or `>`) must be a whole token"),
            ("or>ders", "a wildcard (`*` or `>`) must be a whole token"),
            ("orders. eu", "the pattern contains whitespace or a control character"),
            ("orders.\n", "the pattern contains whitespace or a control character"),
        ];
        for (pattern, reason) in cases {
            assert_eq!(Pattern::parse(pattern).err(), Some(reason), "{pattern:?}");
        }
        let long = "a".repeat(256);
        assert_eq!(
            Pattern::parse(&long).err(),
            Some("the pattern is longer than 255 bytes")
        );
        assert!(Pattern::parse(&"a".repeat(255)).is_ok());
    }
}
