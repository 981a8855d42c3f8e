//! `Message<E>`: a publish with metadata.

use std::fmt;
use std::time::Duration;

use crate::dedup::IdempotencyKey;
use crate::envelope::{EventId, Headers};
use crate::error::PublishError;
use crate::request::{ReplyTo, Requester};
use crate::sync::Arc;
use crate::topic::{Receipt, TopicCore, Wait};

/// An event and the metadata its publisher chose.
pub(crate) struct Draft<E> {
    pub(crate) event: E,
    pub(crate) key: Option<Box<str>>,
    pub(crate) idempotency_key: Option<IdempotencyKey>,
    pub(crate) headers: Headers,
    pub(crate) correlation_id: Option<EventId>,
    /// Published by the bus as a dead letter.
    pub(crate) dead_letter: bool,
    /// A request: where its reply goes (see `request`).
    pub(crate) reply_to: Option<ReplyTo>,
    /// A reply: the requester waiting for it (see `request`).
    pub(crate) requester: Option<Requester<E>>,
}

impl<E> Draft<E> {
    pub(crate) fn new(event: E) -> Self {
        Draft {
            event,
            key: None,
            idempotency_key: None,
            headers: Headers::default(),
            correlation_id: None,
            dead_letter: false,
            reply_to: None,
            requester: None,
        }
    }
}

/// A publish being prepared: set metadata, then call one of the publish methods.
///
/// Made by [`Bus::message`](crate::Bus::message) and [`Topic::message`](crate::Topic::message).
///
/// # Example
///
/// ```
/// use crier::{Bus, Envelope};
///
/// struct Shipped { order: u32 }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::new();
/// let rx = bus.receiver::<Shipped>()?;
/// bus.message(Shipped { order: 7 })
///     .key("customer-42")
///     .header("source", "warehouse-3")
///     .publish()?;
/// let env = rx.recv()?;
/// assert_eq!(env.key(), Some("customer-42"));
/// assert_eq!(env.headers().get("source"), Some("warehouse-3"));
/// # Ok(()) }
/// ```
#[must_use = "a message is published only by `publish`, `try_publish` or `publish_timeout`"]
pub struct Message<E> {
    /// The topic's core alone: a `Topic` handle would clone the bus's `Arc` too, for
    /// every message.
    topic: Arc<TopicCore<E>>,
    draft: Draft<E>,
}

impl<E: Send + Sync + 'static> Message<E> {
    pub(crate) fn new(topic: Arc<TopicCore<E>>, event: E) -> Self {
        Message {
            topic,
            draft: Draft::new(event),
        }
    }

    /// Sets the partition key ([`Envelope::key`](crate::Envelope::key)).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.draft.key = Some(key.into().into_boxed_str());
        self
    }

    /// Sets the idempotency key ([`Envelope::idempotency_key`](crate::Envelope::idempotency_key)):
    /// publishing the same operation twice with one key lets a subscriber with a
    /// [`DedupWindow`](crate::DedupWindow) handle it once. Any length; windows keep a
    /// fixed-size hash of it, not the key. Text or an integer ([`IdempotencyKey`]:
    /// `order.id` and `order.id.to_string()` are the same key, and the integer is
    /// cheaper); a key of up to 22 bytes publishes with no allocation for it.
    pub fn idempotency_key(mut self, key: impl Into<IdempotencyKey>) -> Self {
        self.draft.idempotency_key = Some(key.into());
        self
    }

    /// Adds a header; several may share a name.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.draft.headers.push(name.into(), value.into());
        self
    }

    /// Sets the correlation id instead of inheriting it from the handler that is
    /// publishing (or using the event's own id).
    pub fn correlation_id(mut self, id: EventId) -> Self {
        self.draft.correlation_id = Some(id);
        self
    }

    /// As [`Topic::publish`](crate::Topic::publish).
    ///
    /// # Errors
    ///
    /// As [`Topic::publish`](crate::Topic::publish); the event is handed back.
    pub fn publish(self) -> Result<Receipt, PublishError<E>> {
        self.topic.publish(self.draft, Wait::Until(None))
    }

    /// As [`Topic::try_publish`](crate::Topic::try_publish).
    ///
    /// # Errors
    ///
    /// As [`Topic::try_publish`](crate::Topic::try_publish); the event is handed back.
    pub fn try_publish(self) -> Result<Receipt, PublishError<E>> {
        self.topic.publish(self.draft, Wait::Never)
    }

    /// As [`Topic::publish_timeout`](crate::Topic::publish_timeout).
    ///
    /// # Errors
    ///
    /// As [`Topic::publish_timeout`](crate::Topic::publish_timeout); the event is handed back.
    pub fn publish_timeout(self, timeout: Duration) -> Result<Receipt, PublishError<E>> {
        self.topic.publish(self.draft, Wait::timeout(timeout))
    }
}

impl<E> fmt::Debug for Message<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic.name)
            .field("event", &std::any::type_name::<E>())
            .field("key", &self.draft.key)
            .field("idempotency_key", &self.draft.idempotency_key)
            .field("headers", &self.draft.headers)
            .field("correlation_id", &self.draft.correlation_id)
            .finish()
    }
}
