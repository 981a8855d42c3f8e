//! `Envelope<E>`: an event plus the metadata the bus attaches when it is published.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use crate::dedup::{IdempotencyKey, KeyHash, KeyHasher};
use crate::request::{ReplyTo, Requester};
use crate::stamp::Stamp;

/// A unique identifier of a published event.
///
/// The high 64 bits name the topic instance (32 random bits drawn once per process and
/// a 32-bit counter of topics created in it); the low 64 bits are the event's `seq` in
/// its topic. Ids are therefore unique within a process, and ids from two processes
/// collide only if their random halves do. Shown as 32 hex digits.
// Two words rather than a `u128`, whose 16-byte alignment would pad every event's
// metadata (an `Option<EventId>` takes 24 bytes instead of 32). Ordered as the number:
// the high word first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId {
    high: u64,
    low: u64,
}

impl EventId {
    pub(crate) fn new(topic_prefix: u64, seq: u64) -> Self {
        EventId {
            high: topic_prefix,
            low: seq,
        }
    }

    /// The id as a number, for storing or comparing outside the bus.
    pub fn as_u128(self) -> u128 {
        (u128::from(self.high) << 64) | u128::from(self.low)
    }

    /// Rebuilds an id from [`EventId::as_u128`].
    pub fn from_u128(value: u128) -> Self {
        EventId::new((value >> 64) as u64, value as u64)
    }
}

/// As the number: one `u128` (the trace store's hasher relies on it).
impl std::hash::Hash for EventId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.as_u128());
    }
}

/// As the number: a newtype of one `u128`, as when the id was one.
#[cfg(feature = "serde")]
impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct("EventId", &self.as_u128())
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

/// Free-form string headers carried by an event, in the order they were added.
#[derive(Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every header as `(name, value)`, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` when there is no header.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, name: String, value: String) {
        self.0.push((name, value));
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// What caused an event, and whether the bus published it as a dead letter: an id and
/// two flags in 24 bytes, where an `Option<EventId>` and a `bool` took 32 (with the
/// idempotency key's text inline, that keeps [`Metadata`] at 192 bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lineage {
    /// Meaningful only if `caused`.
    cause: EventId,
    caused: bool,
    /// Published by the bus as a [`DeadLetter`](crate::DeadLetter): a subscriber that
    /// fails on it makes no dead letter of it.
    dead_letter: bool,
}

impl Lineage {
    pub(crate) fn new(cause: Option<EventId>, dead_letter: bool) -> Lineage {
        Lineage {
            cause: cause.unwrap_or(EventId::new(0, 0)),
            caused: cause.is_some(),
            dead_letter,
        }
    }

    /// The id of the event whose handler published this one, if any.
    pub(crate) fn cause(&self) -> Option<EventId> {
        self.caused.then_some(self.cause)
    }
}

/// Everything but the event: what the publisher chose and what the bus stamped.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub(crate) id: EventId,
    pub(crate) topic: crate::registry::TopicName,
    pub(crate) seq: u64,
    pub(crate) published_at: Stamp,
    pub(crate) key: Option<Box<str>>,
    pub(crate) idempotency_key: Option<IdempotencyKey>,
    pub(crate) headers: Headers,
    pub(crate) correlation_id: EventId,
    pub(crate) lineage: Lineage,
    /// A request's way back to its requester (see `request`); `None` for other events.
    pub(crate) reply_to: Option<ReplyTo>,
}

#[cfg(test)]
impl Metadata {
    pub(crate) fn for_test(id: EventId) -> Metadata {
        Metadata {
            id,
            topic: crate::registry::TopicName::Type("test"),
            seq: 0,
            published_at: Stamp(0),
            key: None,
            idempotency_key: None,
            headers: Headers::default(),
            correlation_id: id,
            lineage: Lineage::new(None, false),
            reply_to: None,
        }
    }
}

/// Shared by every subscriber of one publish: one allocation per event, whatever the
/// fan-out.
pub(crate) struct Shared<E> {
    pub(crate) event: E,
    pub(crate) meta: Metadata,
}

/// A published event as a handler or receiver sees it.
///
/// `Envelope<E>` dereferences to the event (`env.field`, `&*env`) and carries the
/// metadata the bus attached. The event and its metadata live in one `Arc` shared by
/// every subscriber, so fan-out copies nothing and `E` needs no `Clone`; cloning an
/// envelope is one reference-count increment.
///
/// # Example
///
/// ```
/// use crier::{Bus, Envelope};
///
/// struct Greeting(&'static str);
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::builder().inline().build()?;
/// let _sub = bus.subscribe(|env: &Envelope<Greeting>| {
///     assert_eq!(env.0, "hello");
///     assert_eq!(env.seq(), 0);
///     assert_eq!(env.key(), Some("user-7"));
///     assert_eq!(env.headers().get("lang"), Some("en"));
///     assert_eq!(env.correlation_id(), env.id()); // a root event correlates with itself
///     assert_eq!(env.causation_id(), None);
/// })?;
/// bus.message(Greeting("hello")).key("user-7").header("lang", "en").publish()?;
/// # Ok(()) }
/// ```
pub struct Envelope<E> {
    shared: Arc<Shared<E>>,
    attempt: u32,
}

impl<E> Envelope<E> {
    pub(crate) fn new(shared: Arc<Shared<E>>) -> Self {
        Envelope { shared, attempt: 1 }
    }

    /// The event.
    pub fn event(&self) -> &E {
        &self.shared.event
    }

    /// The event's unique id.
    pub fn id(&self) -> EventId {
        self.shared.meta.id
    }

    /// The name of the topic it was published on.
    pub fn topic(&self) -> &str {
        &self.shared.meta.topic
    }

    /// Its offset in the topic: 0 for the first accepted event, then 1, 2, … with no
    /// gap. Publishes that returned `Err` take no number.
    pub fn seq(&self) -> u64 {
        self.shared.meta.seq
    }

    /// When it was published, read from the bus's [`Clock`](crate::Clock), to the
    /// nanosecond. A clock time outside the years 1677 to 2262 is kept as the nearest
    /// end of that range.
    pub fn published_at(&self) -> SystemTime {
        self.shared.meta.published_at.time()
    }

    /// The partition key, if the publisher set one.
    pub fn key(&self) -> Option<&str> {
        self.shared.meta.key.as_deref()
    }

    /// The idempotency key, if the publisher set one: events with the same key are the
    /// same operation, which a subscriber with a [`DedupWindow`](crate::DedupWindow)
    /// handles once.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.shared.meta.idempotency_key.as_ref().map(IdempotencyKey::as_str)
    }

    /// The event and metadata every holder of this event shares.
    pub(crate) fn shared(&self) -> &Arc<Shared<E>> {
        &self.shared
    }

    /// [`published_at`](Self::published_at) as the bus keeps it.
    pub(crate) fn stamp(&self) -> Stamp {
        self.shared.meta.published_at
    }

    /// The idempotency key's hash by the bus's hasher, computed once per event.
    pub(crate) fn key_hash(&self, hasher: &KeyHasher) -> Option<KeyHash> {
        self.shared.meta.idempotency_key.as_ref().map(|key| key.hash(hasher))
    }

    /// The headers the publisher set.
    pub fn headers(&self) -> &Headers {
        &self.shared.meta.headers
    }

    /// The id of the flow this event belongs to. A publisher may set it; an event
    /// published by a handler inherits the handled event's; otherwise it is the event's
    /// own id.
    pub fn correlation_id(&self) -> EventId {
        self.shared.meta.correlation_id
    }

    /// The id of the event whose handler published this one, if any.
    pub fn causation_id(&self) -> Option<EventId> {
        self.shared.meta.lineage.cause()
    }

    /// Which delivery attempt this is, starting at 1. Under at-most-once delivery it is
    /// always 1; under at-least-once, a retry sees 2, 3, ….
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// `true` for a retry (`attempt() > 1`): an earlier attempt failed, and may have
    /// had side effects.
    pub fn is_redelivery(&self) -> bool {
        self.attempt > 1
    }

    /// The same event, for delivery attempt `attempt`.
    pub(crate) fn with_attempt(&self, attempt: u32) -> Envelope<E> {
        Envelope {
            shared: Arc::clone(&self.shared),
            attempt,
        }
    }

    /// A request's way back to its requester, if this is a request for an `R`.
    pub(crate) fn reply_to<R: 'static>(&self) -> Option<&Requester<R>> {
        self.shared.meta.reply_to.as_deref()?.downcast_ref()
    }

    pub(crate) fn is_dead_letter(&self) -> bool {
        self.shared.meta.lineage.dead_letter
    }

    /// The event, if this envelope is its only holder.
    pub(crate) fn into_event(self) -> Result<E, Envelope<E>> {
        let attempt = self.attempt;
        Arc::try_unwrap(self.shared)
            .map(|shared| shared.event)
            .map_err(|shared| Envelope { shared, attempt })
    }
}

impl<E> Clone for Envelope<E> {
    fn clone(&self) -> Self {
        Envelope {
            shared: Arc::clone(&self.shared),
            attempt: self.attempt,
        }
    }
}

impl<E> Deref for Envelope<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.shared.event
    }
}

impl<E> fmt::Debug for Envelope<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = &self.shared.meta;
        f.debug_struct("Envelope")
            .field("event", &std::any::type_name::<E>())
            .field("id", &meta.id)
            .field("topic", &meta.topic)
            .field("seq", &meta.seq)
            .field("published_at", &meta.published_at.time())
            .field("key", &meta.key)
            .field("idempotency_key", &meta.idempotency_key)
            .field("headers", &meta.headers)
            .field("correlation_id", &meta.correlation_id)
            .field("causation_id", &meta.lineage.cause())
            .field("attempt", &self.attempt)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::Hash;

    proptest! {
        /// An id is its number: it round-trips, orders, hashes and shows as the `u128`.
        #[test]
        fn an_id_behaves_as_its_number(a: u128, b: u128) {
            let (x, y) = (EventId::from_u128(a), EventId::from_u128(b));
            prop_assert_eq!(x.as_u128(), a);
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x.to_string(), format!("{a:032x}"));
            let hash = |value: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                value(&mut hasher);
                std::hash::Hasher::finish(&hasher)
            };
            prop_assert_eq!(hash(&|h| x.hash(h)), hash(&|h| a.hash(h)));
        }
    }

    #[test]
    fn an_id_is_its_topic_half_then_its_seq() {
        assert_eq!(EventId::new(7, 9).as_u128(), (7 << 64) | 9);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn an_id_serializes_as_its_number() {
        let id = EventId::new(7, 9);
        assert_eq!(serde_json::to_string(&id).unwrap(), id.as_u128().to_string());
    }

    /// What one event's metadata costs beside the event (192 bytes, with the idempotency
    /// key's hash inline): a change to it is a change to every event's allocation.
    #[test]
    fn metadata_takes_192_bytes_at_most() {
        let size = std::mem::size_of::<Metadata>();
        assert!(size <= 192, "metadata grew to {size} bytes");
    }
}
