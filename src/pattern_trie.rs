//! The patterns registered on a bus, as a trie of their tokens, so that finding the
//! patterns that match a new topic's name walks the name's tokens instead of trying
//! every pattern.
//!
//! # Design
//!
//! A node has a child per literal token (a hash map), one child for `*`, and two lists
//! of the patterns that end there: those whose last token was the node's (they match a
//! name with no token left) and those that continue with `>` (they match a name with
//! one or more tokens left). Matching a name of n tokens visits, at each depth, the
//! literal child of the name's token and the `*` child: at most 2^n nodes, in practice
//! the few paths patterns share with the name, whatever the number of patterns. A
//! removal prunes the nodes it leaves empty, so the trie holds nothing for a pattern
//! once its last subscriber is gone.

use std::collections::HashMap;

use crate::pattern::{Pattern, Token};

/// Values of type `T`, each under a pattern and an id that `remove` names it by.
pub(crate) struct PatternTrie<T> {
    root: Node<T>,
    len: usize,
}

struct Node<T> {
    literal: HashMap<Box<str>, Node<T>>,
    one: Option<Box<Node<T>>>,
    /// Patterns that end here.
    end: Vec<(u64, T)>,
    /// Patterns that end here with `>`.
    rest: Vec<(u64, T)>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            one: None,
            end: Vec::new(),
            rest: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.one.is_none() && self.end.is_empty() && self.rest.is_empty()
    }
}

impl<T> Default for PatternTrie<T> {
    fn default() -> Self {
        PatternTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> PatternTrie<T> {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert(&mut self, pattern: &Pattern, id: u64, value: T) {
        let mut node = &mut self.root;
        for token in pattern.tokens() {
            node = match token {
                Token::Literal(literal) => node.literal.entry(literal.into()).or_default(),
                Token::One => node.one.get_or_insert_with(Default::default),
                Token::Rest => {
                    node.rest.push((id, value));
                    self.len += 1;
                    return;
                }
            };
        }
        node.end.push((id, value));
        self.len += 1;
    }

    /// Removes the value `id` under `pattern`, and the nodes left empty.
    pub(crate) fn remove(&mut self, pattern: &Pattern, id: u64) -> Option<T> {
        let tokens: Vec<Token<'_>> = pattern.tokens().collect();
        let removed = remove(&mut self.root, &tokens, id);
        self.len -= usize::from(removed.is_some());
        removed
    }

    /// Every value whose pattern matches the topic named `name`.
    pub(crate) fn matching<'a>(&'a self, name: &str) -> Vec<&'a T> {
        let tokens: Vec<&str> = name.split('.').collect();
        let mut found = Vec::new();
        collect(&self.root, &tokens, &mut found);
        found
    }

    pub(crate) fn clear(&mut self) {
        *self = PatternTrie::default();
    }
}

fn collect<'a, T>(node: &'a Node<T>, name: &[&str], found: &mut Vec<&'a T>) {
    let Some((first, rest)) = name.split_first() else {
        found.extend(node.end.iter().map(|(_, value)| value));
        return;
    };
    found.extend(node.rest.iter().map(|(_, value)| value));
    if let Some(child) = node.literal.get(*first) {
        collect(child, rest, found);
    }
    if let Some(child) = &node.one {
        collect(child, rest, found);
    }
}

fn remove<T>(node: &mut Node<T>, tokens: &[Token<'_>], id: u64) -> Option<T> {
    let take = |list: &mut Vec<(u64, T)>| {
        let at = list.iter().position(|(i, _)| *i == id)?;
        Some(list.swap_remove(at).1)
    };
    let Some((first, rest)) = tokens.split_first() else {
        return take(&mut node.end);
    };
    match first {
        Token::Rest => take(&mut node.rest),
        Token::Literal(literal) => {
            let child = node.literal.get_mut(*literal)?;
            let removed = remove(child, rest, id);
            if child.is_empty() {
                node.literal.remove(*literal);
            }
            removed
        }
        Token::One => {
            let child = node.one.as_mut()?;
            let removed = remove(child, rest, id);
            if child.is_empty() {
                node.one = None;
            }
            removed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).expect("valid pattern")
    }

    #[test]
    fn finds_each_kind_of_match_and_prunes_on_remove() {
        let mut trie = PatternTrie::default();
        let patterns = [
            "orders.*.created",
            "orders.>",
            "orders.eu.created",
            ">",
            "*",
            "billing.>",
        ];
        for (id, text) in patterns.iter().enumerate() {
            trie.insert(&pattern(text), id as u64, *text);
        }
        let mut found = trie.matching("orders.eu.created");
        found.sort();
        assert_eq!(found, [&">", &"orders.*.created", &"orders.>", &"orders.eu.created"]);
        assert_eq!(trie.matching("orders"), [&">", &"*"]);
        for (id, text) in patterns.iter().enumerate() {
            assert_eq!(trie.remove(&pattern(text), id as u64), Some(*text));
        }
        assert_eq!(trie.len(), 0);
        assert!(trie.root.is_empty(), "every node is pruned");
        assert_eq!(trie.remove(&pattern("orders.>"), 1), None);
    }

    fn token() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("c")]
    }

    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
    }

    fn pattern_text() -> impl Strategy<Value = String> {
        let token = prop_oneof![3 => token(), 2 => Just("*")];
        (prop::collection::vec(token, 1..5), any::<bool>()).prop_map(|(mut tokens, tail)| {
            if tail {
                *tokens.last_mut().expect("one or more") = ">";
            }
            tokens.join(".")
        })
    }

    proptest! {
        /// The trie finds exactly the patterns the reference matcher accepts, before and
        /// after some are removed.
        #[test]
        fn the_trie_agrees_with_the_reference_matcher(
            patterns in prop::collection::vec(pattern_text(), 1..40),
            names in prop::collection::vec(name(), 1..20),
            removed in prop::collection::vec(any::<bool>(), 40),
        ) {
            let patterns: Vec<Pattern> = patterns.iter().map(|p| pattern(p)).collect();
            let mut trie = PatternTrie::default();
            for (id, p) in patterns.iter().enumerate() {
                trie.insert(p, id as u64, id);
            }
            let mut live: Vec<usize> = (0..patterns.len()).collect();
            for round in 0..2 {
                for name in &names {
                    let mut found: Vec<usize> = trie.matching(name).into_iter().copied().collect();
                    found.sort_unstable();
                    let expected: Vec<usize> = live.iter().copied().filter(|&i| patterns[i].matches(name)).collect();
                    prop_assert_eq!(found, expected, "round {}, name {}", round, name);
                }
                live.retain(|&i| {
                    let gone = removed[i];
                    if gone {
                        assert_eq!(trie.remove(&patterns[i], i as u64), Some(i));
                    }
                    !gone
                });
                prop_assert_eq!(trie.len(), live.len());
            }
        }
    }
}
