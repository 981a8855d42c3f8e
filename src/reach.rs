//! What a subscriber is on: one topic, or every named topic of its event type that
//! matches a pattern, including topics made after it subscribed.
//!
//! # A pattern subscriber
//!
//! It is one subscriber (one mailbox, one handler, one set of counters) listed on
//! every topic it matches: a publish on any of them reaches it as a publish on its own
//! topic would, through the same protocol (see `topic`), so publishing costs nothing
//! more for patterns, and order per publisher holds across those topics (one mailbox).
//!
//! Two paths put it on a topic, and each must see what the other did:
//! - **Subscribe** (`Registry::watch`): insert the pattern in the bus's trie, under
//!   the trie's lock; then, with no lock held, list the named topics and join those
//!   that match.
//! - **A new named topic** (`Registry::named_topic`): under the registry shard's
//!   write lock, before the topic is in the map (so before anyone can publish on it),
//!   take the trie's lock and join every pattern subscriber that matches.
//!
//! If the subscribe's insert comes first, the new topic's look-up finds the pattern.
//! If the new topic's look-up comes first, the topic was in the map before the
//! subscribe listed it (the shard's lock is held from that look-up until the topic is
//! in the map, and the listing takes that lock). Either way the subscriber joins;
//! it may join twice, so `join` skips a topic it is already on.
//!
//! Lock order: registry shard, then trie, then `Reach::joined`, then the topic's
//! roster. Unsubscribe takes the trie's lock (to remove the pattern), then `joined`
//! (to close it), one after the other: a new topic that found the pattern joined
//! before the removal, so it is in the list `leave` takes.

use std::any::Any;
use std::collections::hash_map::{Entry, HashMap};

use crate::inbox::Inbox;
use crate::pattern::Pattern;
use crate::registry::{AnyTopic, Patterns};
use crate::subscriber::Subscriber;
use crate::sync::{Arc, Mutex, Weak};
use crate::topic::TopicCore;

/// The topic, or topics, a subscriber is on.
pub(crate) enum On<E> {
    Topic(Arc<TopicCore<E>>),
    Pattern(Arc<Reach<E>>),
}

impl<E: Send + Sync + 'static> On<E> {
    /// Unsubscribe: takes `sub` off every topic it is on (step 3 of `subscriber`'s
    /// unsubscribe, for each).
    pub(crate) fn leave<Q: Inbox<E>>(&self, sub: &Subscriber<E, Q>) {
        match self {
            On::Topic(topic) => Q::leave(sub, topic),
            On::Pattern(reach) => {
                for topic in reach.close() {
                    Q::leave(sub, &topic);
                }
            }
        }
    }
}

/// A pattern subscriber's topics.
pub(crate) struct Reach<E> {
    /// Its key in the trie.
    pub(crate) id: u64,
    pub(crate) pattern: Pattern,
    sub: Arc<Subscriber<E>>,
    /// The topics it is on, by address (so a second join of one is found at once);
    /// `None` once the subscriber left.
    joined: Mutex<Option<HashMap<usize, Arc<TopicCore<E>>>>>,
    patterns: Weak<Patterns>,
}

/// A pattern subscriber, whatever its event type, as the trie keeps it.
pub(crate) trait Joins: Send + Sync {
    /// Puts the subscriber on `topic`, if the topic carries its event type and it is
    /// not on it already.
    fn join(&self, topic: &Arc<dyn AnyTopic>);
}

impl<E: Send + Sync + 'static> Reach<E> {
    pub(crate) fn new(id: u64, pattern: Pattern, sub: Arc<Subscriber<E>>, patterns: &Arc<Patterns>) -> Self {
        Reach {
            id,
            pattern,
            sub,
            joined: Mutex::new(Some(HashMap::new())),
            patterns: Arc::downgrade(patterns),
        }
    }

    /// Takes the pattern out of the trie and returns the topics to leave; no topic is
    /// joined after this.
    fn close(&self) -> Vec<Arc<TopicCore<E>>> {
        if let Some(patterns) = self.patterns.upgrade() {
            patterns.lock().remove(&self.pattern, self.id);
        }
        let joined = self.joined.lock().take();
        joined.map_or_else(Vec::new, |topics| topics.into_values().collect())
    }
}

impl<E: Send + Sync + 'static> Joins for Reach<E> {
    fn join(&self, topic: &Arc<dyn AnyTopic>) {
        let topic: Arc<dyn Any + Send + Sync> = topic.clone().into_any();
        let Ok(topic) = topic.downcast::<TopicCore<E>>() else {
            return; // Another event type: a pattern subscriber hears only its own.
        };
        let mut joined = self.joined.lock();
        let Some(joined) = joined.as_mut() else {
            return;
        };
        if let Entry::Vacant(place) = joined.entry(Arc::as_ptr(&topic) as usize) {
            topic.add(self.sub.clone());
            place.insert(topic);
        }
    }
}
