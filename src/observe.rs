//! Observing the whole bus: every accepted event, whatever its type and topic, as an
//! [`AnyEnvelope`]; and a notice, [`Unrouted`], for each event that reached nobody.
//!
//! # Design
//!
//! An observer is a subscriber of the observation topic, the default topic of
//! `AnyEnvelope`, and a listener for unrouted events one of the default topic of
//! `Unrouted`: so each has every option and promise of a subscriber (mailbox, overflow
//! policy, dispatch, delivery policy, stats, unsubscribe, shutdown, `wait_idle`) with
//! no machinery of its own. Once a publish on any other topic is accepted (step 3 of
//! the publish protocol, see `topic`), the topic publishes an `AnyEnvelope` of the
//! event on the observation topic, and if no subscriber took the event, an `Unrouted`
//! on its topic; each only if that topic has subscribers, with the original publish's
//! way of waiting. So an observer's overflow policy applies to every publisher on the
//! bus, as any subscriber's applies to its topic's publishers.
//!
//! Order: the announcement is published before the event's inline handlers run (in
//! the same inline frame), so an observer sees an event before the events its handlers
//! publish. An observer is not a subscriber of the event's topic: an event only
//! observers saw is still unrouted, and counted so.
//!
//! No loop: the observation topic announces nothing, and the `Unrouted` topic announces
//! no unrouted notice of its own. The topics are found through weak references that
//! `Watchers::note` keeps when they are made (strong ones would make a cycle through
//! the runtime every topic holds); while neither exists, a publish pays one atomic load
//! to learn it.

use std::any::{Any, TypeId};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock, Weak};
use std::time::SystemTime;

use crate::dedup::IdempotencyKey;
use crate::envelope::{Envelope, EventId, Headers, Metadata, Shared};
use crate::message::Draft;
use crate::topic::{TopicCore, Wait};

/// Any event on the bus, with its metadata, as an observer sees it
/// ([`Bus::observe_all`](crate::Bus::observe_all)).
///
/// The metadata are the event's own (its id, topic, `seq`, …). The event itself is a
/// `&dyn Any`: [`downcast_ref`](Self::downcast_ref) it to its type, or take a typed
/// [`Envelope`] with [`envelope`](Self::envelope). Holding an `AnyEnvelope` holds the
/// event, as an `Envelope` does; nothing is copied.
pub struct AnyEnvelope {
    shared: Arc<dyn Erased>,
}

/// An event's shared part, whatever its type.
trait Erased: Send + Sync {
    fn meta(&self) -> &Metadata;
    fn event(&self) -> &(dyn Any + Send + Sync);
    fn type_name(&self) -> &'static str;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<E: Send + Sync + 'static> Erased for Shared<E> {
    fn meta(&self) -> &Metadata {
        &self.meta
    }

    fn event(&self) -> &(dyn Any + Send + Sync) {
        &self.event
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<E>()
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A clone holds the same event (one `Arc` more).
impl Clone for AnyEnvelope {
    fn clone(&self) -> Self {
        AnyEnvelope {
            shared: self.shared.clone(),
        }
    }
}

impl AnyEnvelope {
    fn of<E: Send + Sync + 'static>(env: &Envelope<E>) -> AnyEnvelope {
        let shared: Arc<dyn Erased> = env.shared().clone();
        AnyEnvelope { shared }
    }

    /// The event's type, as [`std::any::type_name`] gives it.
    pub fn type_name(&self) -> &'static str {
        self.shared.type_name()
    }

    /// The event, to downcast.
    pub fn event(&self) -> &(dyn Any + Send + Sync) {
        self.shared.event()
    }

    /// The event, if it is an `E`.
    pub fn downcast_ref<E: 'static>(&self) -> Option<&E> {
        self.shared.event().downcast_ref()
    }

    /// The event as a typed envelope (at attempt 1), if it is an `E`.
    pub fn envelope<E: Send + Sync + 'static>(&self) -> Option<Envelope<E>> {
        let shared = self.shared.clone().into_any().downcast::<Shared<E>>().ok()?;
        Some(Envelope::new(shared))
    }

    /// See [`Envelope::id`].
    pub fn id(&self) -> EventId {
        self.shared.meta().id
    }

    /// See [`Envelope::topic`].
    pub fn topic(&self) -> &str {
        &self.shared.meta().topic
    }

    /// See [`Envelope::seq`].
    pub fn seq(&self) -> u64 {
        self.shared.meta().seq
    }

    /// See [`Envelope::published_at`].
    pub fn published_at(&self) -> SystemTime {
        self.shared.meta().published_at.time()
    }

    /// See [`Envelope::key`].
    pub fn key(&self) -> Option<&str> {
        self.shared.meta().key.as_deref()
    }

    /// See [`Envelope::idempotency_key`].
    pub fn idempotency_key(&self) -> Option<&str> {
        self.shared.meta().idempotency_key.as_ref().map(IdempotencyKey::as_str)
    }

    /// See [`Envelope::headers`].
    pub fn headers(&self) -> &Headers {
        &self.shared.meta().headers
    }

    /// See [`Envelope::correlation_id`].
    pub fn correlation_id(&self) -> EventId {
        self.shared.meta().correlation_id
    }

    /// See [`Envelope::causation_id`].
    pub fn causation_id(&self) -> Option<EventId> {
        self.shared.meta().lineage.cause()
    }
}

impl fmt::Debug for AnyEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = self.shared.meta();
        f.debug_struct("AnyEnvelope")
            .field("event", &self.type_name())
            .field("id", &meta.id)
            .field("topic", &meta.topic)
            .field("seq", &meta.seq)
            .field("correlation_id", &meta.correlation_id)
            .field("causation_id", &meta.lineage.cause())
            .finish()
    }
}

/// A notice that an event reached no subscriber: published on the bus for each
/// accepted event whose topic had no subscriber that took it (none, or every one's
/// filter said no), while anyone subscribes to `Unrouted`. Like Guava's `DeadEvent`,
/// it makes a forgotten subscription visible; the topic's `unrouted` counter counts
/// the same events whether or not anyone listens. Observers
/// ([`Bus::observe_all`](crate::Bus::observe_all)) do not route an event: one only they
/// saw is announced too. An `Unrouted` that reaches nobody is not announced again.
///
/// # Example
///
/// ```
/// use crier::{Bus, Envelope, Unrouted};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::builder().inline().build()?;
/// let lost = bus.receiver::<Unrouted>()?;
/// bus.topic_named::<u32>("orders.eu")?.publish(7)?; // nobody listens
/// let notice = lost.try_recv()?;
/// // `notice.event()` is the `Unrouted`; the outer envelope is the notice's own.
/// let lost_event = notice.event();
/// assert_eq!((lost_event.topic(), lost_event.downcast_ref::<u32>()), ("orders.eu", Some(&7)));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Unrouted(AnyEnvelope);

impl Deref for Unrouted {
    type Target = AnyEnvelope;

    fn deref(&self) -> &AnyEnvelope {
        &self.0
    }
}

/// The observation and unrouted-notice topics, once made (see the module docs).
#[derive(Default)]
pub(crate) struct Watchers {
    observers: OnceLock<Weak<TopicCore<AnyEnvelope>>>,
    unrouted: OnceLock<Weak<TopicCore<Unrouted>>>,
}

impl Watchers {
    /// Keeps `topic` if it is one of the two (a type check the compiler settles).
    pub(crate) fn note<E: Send + Sync + 'static>(&self, topic: &Arc<TopicCore<E>>) {
        let kind = TypeId::of::<E>();
        if kind != TypeId::of::<AnyEnvelope>() && kind != TypeId::of::<Unrouted>() {
            return;
        }
        let topic: &dyn Any = topic;
        if let Some(observers) = topic.downcast_ref::<Arc<TopicCore<AnyEnvelope>>>() {
            self.observers.get_or_init(|| Arc::downgrade(observers));
        } else if let Some(unrouted) = topic.downcast_ref::<Arc<TopicCore<Unrouted>>>() {
            self.unrouted.get_or_init(|| Arc::downgrade(unrouted));
        }
    }
}

/// The topic, if it exists and anyone listens to it.
fn listened<T: Send + Sync + 'static>(topic: &OnceLock<Weak<TopicCore<T>>>) -> Option<Arc<TopicCore<T>>> {
    topic.get()?.upgrade().filter(|topic| topic.has_subscribers())
}

/// Step 4 of a publish on `topic` that was accepted: tells the observers, and if
/// `unrouted`, those who listen for unrouted events. Their publishes' errors are
/// counted where they happen (the listener's `refused`, the topic's `refused`); the
/// event itself stays accepted.
pub(crate) fn announce<E: Send + Sync + 'static>(topic: &TopicCore<E>, env: &Envelope<E>, unrouted: bool, wait: Wait) {
    let kind = TypeId::of::<E>();
    if kind == TypeId::of::<AnyEnvelope>() {
        return;
    }
    let watchers = &topic.runtime().watchers;
    if let Some(observers) = listened(&watchers.observers) {
        let _refused = observers.publish(Draft::new(AnyEnvelope::of(env)), wait);
    }
    if unrouted && kind != TypeId::of::<Unrouted>() {
        if let Some(notices) = listened(&watchers.unrouted) {
            let _refused = notices.publish(Draft::new(Unrouted(AnyEnvelope::of(env))), wait);
        }
    }
}
