//! The topic registry: event types and names to topics, with type checking.

use std::any::{Any, TypeId};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use dashmap::DashMap;

use crate::error::TopicError;
use crate::pattern::Pattern;
use crate::pattern_trie::PatternTrie;
use crate::reach::Joins;
use crate::stats::TopicStats;
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use crate::topic::TopicCore;

/// A topic's name, cloned into every envelope. A default topic's name is its event
/// type's, a `&'static str`: cloning it touches no reference count, which every thread
/// that drops an envelope would otherwise write. A named topic's is shared.
#[derive(Clone)]
pub(crate) enum TopicName {
    Type(&'static str),
    Named(std::sync::Arc<str>),
}

impl std::ops::Deref for TopicName {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            TopicName::Type(name) => name,
            TopicName::Named(name) => name,
        }
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// What the bus needs from a topic, whatever its event type.
pub(crate) trait AnyTopic: Send + Sync {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn event_type(&self) -> &'static str;
    fn stats(&self) -> TopicStats;
    fn close(&self);
    fn clear_subscribers(&self);
}

impl<E: Send + Sync + 'static> AnyTopic for TopicCore<E> {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn event_type(&self) -> &'static str {
        std::any::type_name::<E>()
    }

    fn stats(&self) -> TopicStats {
        TopicCore::stats(self)
    }

    fn close(&self) {
        TopicCore::close(self);
    }

    fn clear_subscribers(&self) {
        TopicCore::clear_subscribers(self);
    }
}

pub(crate) struct Registry {
    /// Each event type's default topic, named after the type.
    defaults: DashMap<TypeId, Arc<dyn AnyTopic>, BuildHasherDefault<TypeIdHasher>>,
    /// Named topics. A name is bound to the type of its first user, for good.
    named: DashMap<Box<str>, Arc<dyn AnyTopic>>,
    /// Request-reply's topics (see `request`), by event type and role.
    exchanges: DashMap<(TypeId, Exchange), Arc<dyn AnyTopic>>,
    /// Pattern subscribers, so that topics made later join them (see `reach`).
    patterns: Arc<Patterns>,
    next_pattern_id: AtomicU64,
    /// The high half of the next topic's `EventId` prefix: 32 random bits per process,
    /// then a counter.
    next_prefix: AtomicU64,
}

/// The bus's pattern subscribers, by pattern.
pub(crate) type Patterns = Mutex<PatternTrie<Arc<dyn Joins>>>;

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            defaults: DashMap::default(),
            named: DashMap::new(),
            exchanges: DashMap::new(),
            patterns: Arc::new(Mutex::new(PatternTrie::default())),
            next_pattern_id: AtomicU64::new(0),
            next_prefix: AtomicU64::new(process_random_bits() << 32),
        }
    }

    fn next_prefix(&self) -> u64 {
        self.next_prefix.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn default_topic<E: Send + Sync + 'static>(
        &self,
        make: impl FnOnce(TopicName, u64) -> TopicCore<E>,
    ) -> Arc<TopicCore<E>> {
        self.typed_topic(
            &self.defaults,
            TypeId::of::<E>(),
            || TopicName::Type(std::any::type_name::<E>()),
            make,
        )
    }

    /// The topic of `E`'s requests or replies, named `"{E} (request)"` or
    /// `"{E} (reply)"`: a name no user topic can have (it has a space), so it never
    /// meets a named topic, and no pattern ever matches it.
    pub(crate) fn exchange_topic<E: Send + Sync + 'static>(
        &self,
        exchange: Exchange,
        make: impl FnOnce(TopicName, u64) -> TopicCore<E>,
    ) -> Arc<TopicCore<E>> {
        let name = || TopicName::Named(format!("{} ({})", std::any::type_name::<E>(), exchange.role()).into());
        self.typed_topic(&self.exchanges, (TypeId::of::<E>(), exchange), name, make)
    }

    /// The topic under `key` in a map keyed by its event type (`E`'s type id, with a
    /// role for exchanges), made and named by `name` on first use. Keyed by the type,
    /// so the type always matches.
    fn typed_topic<K: Eq + Hash, S: BuildHasher + Clone, E: Send + Sync + 'static>(
        &self,
        map: &DashMap<K, Arc<dyn AnyTopic>, S>,
        key: K,
        name: impl FnOnce() -> TopicName,
        make: impl FnOnce(TopicName, u64) -> TopicCore<E>,
    ) -> Arc<TopicCore<E>> {
        let topic = match map.get(&key) {
            Some(found) => found.value().clone(),
            None => map
                .entry(key)
                .or_insert_with(|| Arc::new(make(name(), self.next_prefix())))
                .value()
                .clone(),
        };
        match topic.into_any().downcast::<TopicCore<E>>() {
            Ok(topic) => topic,
            Err(_) => unreachable!("these maps are keyed by the event type"),
        }
    }

    pub(crate) fn named_topic<E: Send + Sync + 'static>(
        &self,
        name: &str,
        make: impl FnOnce(TopicName, u64) -> TopicCore<E>,
    ) -> Result<Arc<TopicCore<E>>, TopicError> {
        validate_name(name)?;
        let topic = match self.named.get(name) {
            Some(found) => found.value().clone(),
            None => self
                .named
                .entry(name.into())
                .or_insert_with(|| {
                    let topic: Arc<dyn AnyTopic> = Arc::new(make(TopicName::Named(name.into()), self.next_prefix()));
                    // Under the shard's write lock: the pattern subscribers are on the
                    // topic before anyone can publish on it (see `reach`).
                    for reach in self.patterns.lock().matching(name) {
                        reach.join(&topic);
                    }
                    topic
                })
                .value()
                .clone(),
        };
        let existing = topic.event_type();
        topic
            .into_any()
            .downcast::<TopicCore<E>>()
            .map_err(|_| TopicError::TypeMismatch {
                topic: name.to_owned(),
                existing,
                requested: std::any::type_name::<E>(),
            })
    }

    /// The trie of pattern subscribers, and a fresh id for one.
    pub(crate) fn patterns(&self) -> (&Arc<Patterns>, u64) {
        (&self.patterns, self.next_pattern_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers a pattern subscriber (under `id` in the trie), so that it joins the
    /// named topics made from now on, then joins those that exist and match.
    pub(crate) fn watch(&self, pattern: &Pattern, id: u64, reach: Arc<dyn Joins>) {
        self.patterns.lock().insert(pattern, id, reach.clone());
        // Collected first: `join` takes locks that come after the shards' (see `reach`).
        let topics: Vec<Arc<dyn AnyTopic>> = self
            .named
            .iter()
            .filter(|e| pattern.matches(e.key()))
            .map(|e| e.value().clone())
            .collect();
        for topic in &topics {
            reach.join(topic);
        }
    }

    /// Shutdown: no pattern subscriber joins a topic any more.
    pub(crate) fn clear_patterns(&self) {
        self.patterns.lock().clear();
    }

    /// Every topic, collected first so that `f` runs with no registry lock held.
    pub(crate) fn all(&self) -> Vec<Arc<dyn AnyTopic>> {
        let defaults = self.defaults.iter().map(|e| e.value().clone());
        let exchanges = self.exchanges.iter().map(|e| e.value().clone());
        defaults
            .chain(self.named.iter().map(|e| e.value().clone()))
            .chain(exchanges)
            .collect()
    }
}

/// The two topics of request-reply.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Exchange {
    Requests,
    Replies,
}

impl Exchange {
    fn role(self) -> &'static str {
        match self {
            Exchange::Requests => "request",
            Exchange::Replies => "reply",
        }
    }
}

/// Hashes a `TypeId` by keeping the bits it writes: a type id is already a hash of
/// the type, so SipHash on top of it only costs time on every publish by type.
#[derive(Default)]
pub(crate) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    /// Whatever else a `TypeId` may write in another std version: FNV-1a.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// 32 bits that differ between processes (std seeds `RandomState` from the OS).
fn process_random_bits() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() >> 32
}

/// The longest topic name accepted, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Topic names are dot-separated tokens: `orders`, `orders.eu.created`.
pub(crate) fn validate_name(name: &str) -> Result<(), TopicError> {
    check_syntax(name, Syntax::Name).map_err(|reason| TopicError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// What `check_syntax` checks: a topic name, or a pattern over names (see `pattern`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    Name,
    Pattern,
}

/// A name: at most 255 bytes of non-empty dot-separated tokens, with no whitespace,
/// control or wildcard character. A pattern: the same, except that a token may be `*`,
/// and the last one `>`. The error says what is wrong, first problem first.
pub(crate) fn check_syntax(text: &str, syntax: Syntax) -> Result<(), &'static str> {
    let (empty, long, blank) = match syntax {
        Syntax::Name => (
            "the name is empty",
            "the name is longer than 255 bytes",
            "the name contains whitespace or a control character",
        ),
        Syntax::Pattern => (
            "the pattern is empty",
            "the pattern is longer than 255 bytes",
            "the pattern contains whitespace or a control character",
        ),
    };
    if text.is_empty() {
        return Err(empty);
    }
    if text.len() > MAX_NAME_LEN {
        return Err(long);
    }
    if text.split('.').any(str::is_empty) {
        return Err("a dot-separated token is empty");
    }
    if syntax == Syntax::Pattern && text.split('.').rev().skip(1).any(|t| t == ">") {
        return Err("`>` may only be the last token");
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(blank);
    }
    let wildcard = |t: &str| t.contains(['*', '>']);
    match syntax {
        Syntax::Name if wildcard(text) => Err("the name contains a wildcard character (`*` or `>`)"),
        Syntax::Pattern if text.split('.').any(|t| wildcard(t) && t != "*" && t != ">") => {
            Err("a wildcard (`*` or `>`) must be a whole token")
        }
        _ => Ok(()),
    }
}
