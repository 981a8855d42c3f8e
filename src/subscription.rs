//! `Subscription`: the RAII guard of a push subscriber, and the type-erased control
//! every subscriber gives its bus.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use crate::bus::BusShared;
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::envelope::Envelope;
use crate::inbox::Inbox;
use crate::mailbox::Mailbox;
use crate::policy::{Dispatch, DropReason};
use crate::reach::On;
use crate::stats::{Consumer, GroupStats, SubscriberId, SubscriberStats};
use crate::subscriber::Subscriber;
use crate::sync::{Arc, Ordering, Weak};

/// What the bus and the guards need from a subscriber, whatever its event type.
pub(crate) trait Control: Send + Sync {
    fn id(&self) -> SubscriberId;
    fn stats(&self) -> SubscriberStats;
    /// `Some` for a consumer group's queue: its stats go in [`BusStats::groups`](crate::BusStats::groups)
    /// instead of `subscribers`.
    fn group(&self) -> Option<GroupStats> {
        None
    }
    /// Unsubscribes (idempotent) and returns the final counters.
    fn unsubscribe(&self) -> SubscriberStats;
    /// Wakes publishers blocked on this mailbox so they see the bus closing.
    fn wake_publishers(&self);
    /// Shutdown: no handler runs again; a push subscriber's backlog is dropped as
    /// [`DropReason::Shutdown`] (a receiver keeps its backlog for its owner). `false` if
    /// a running handler outlasted `grace`.
    fn retire(&self, grace: Duration) -> bool;
    /// Shutdown: a receiver learns no more events come; an own thread is told to stop.
    fn close_input(&self);
    /// Events dropped at shutdown while they waited for a retry.
    fn abandoned_retries(&self) -> u64;
    /// The subscriber's `DeadLetterStore<E>`, if it is at-least-once.
    fn dead_letter_store(&self) -> Option<&dyn Any>;
}

/// A subscriber together with the topic (or topics) and bus it is registered in.
pub(crate) struct Registration<E, Q = Mailbox<Envelope<E>>> {
    pub(crate) sub: Arc<Subscriber<E, Q>>,
    pub(crate) on: On<E>,
    pub(crate) bus: Weak<BusShared>,
}

impl<E: Send + Sync + 'static, Q: Inbox<E>> Registration<E, Q> {
    /// Steps 2 to 5 of unsubscribe, for the caller that cleared `active` (step 1);
    /// then publishers blocked on this inbox stop waiting for it.
    pub(crate) fn leave(&self) {
        let leave = || self.on.leave(&self.sub);
        self.sub.retire(DropReason::Unsubscribed, None, leave);
        self.sub.inbox.wake_publishers();
        self.close_input();
        if let Some(bus) = self.bus.upgrade() {
            bus.forget(self.sub.id);
        }
    }
}

impl<E: Send + Sync + 'static, Q: Inbox<E>> Control for Registration<E, Q> {
    fn id(&self) -> SubscriberId {
        self.sub.id
    }

    fn stats(&self) -> SubscriberStats {
        self.sub.stats()
    }

    fn unsubscribe(&self) -> SubscriberStats {
        // The numbered steps are those of `subscriber`'s module docs.
        if self.sub.deactivate() {
            self.leave();
        }
        self.sub.stats()
    }

    fn wake_publishers(&self) {
        self.sub.inbox.wake_publishers();
    }

    fn retire(&self, grace: Duration) -> bool {
        self.sub.deactivate();
        !self.sub.is_push() || self.sub.retire(DropReason::Shutdown, Some(grace), || {})
    }

    fn close_input(&self) {
        match self.sub.consumer {
            Consumer::Receiver => self.sub.inbox.close(),
            Consumer::Handler(Dispatch::Thread) => {
                if let Some(executor) = &self.sub.executor {
                    executor.stop();
                }
            }
            Consumer::Handler(_) => {}
        }
    }

    fn abandoned_retries(&self) -> u64 {
        self.sub.counters.abandoned_retries.load(Ordering::Relaxed)
    }

    fn dead_letter_store(&self) -> Option<&dyn Any> {
        self.sub.dead_letter_store().map(|store| store as &dyn Any)
    }
}

/// Keeps a push subscriber registered; dropping it unsubscribes.
///
/// Once [`unsubscribe`](Self::unsubscribe) or the drop returns, the handler is never
/// invoked again: the call waits for an invocation that is running on another thread.
/// Called from inside the handler itself, it does not wait (that would deadlock): the
/// current invocation finishes and no other one starts. Events still queued for the
/// subscriber are dropped and counted as [`DropReason::Unsubscribed`].
///
/// [`detach`](Self::detach) keeps the handler for as long as the bus runs.
///
/// # Example
///
/// ```
/// use crier::{Bus, Envelope};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::builder().inline().build()?;
/// let sub = bus.subscribe(|env: &Envelope<u32>| println!("got {}", **env))?;
/// bus.publish(1_u32)?;
/// let stats = sub.unsubscribe();
/// assert_eq!(stats.delivered, 1);
/// bus.publish(2_u32)?; // nobody listens any more
/// assert_eq!(bus.stats().topic(std::any::type_name::<u32>()).unwrap().unrouted, 1);
/// # Ok(()) }
/// ```
#[must_use = "dropping a Subscription unsubscribes at once; use `detach` to keep the handler"]
pub struct Subscription {
    control: Arc<dyn Control>,
    /// Cleared by `unsubscribe` and `detach`, so the drop does nothing more.
    attached: bool,
}

impl Subscription {
    pub(crate) fn new(control: Arc<dyn Control>) -> Self {
        Subscription {
            control,
            attached: true,
        }
    }

    /// The subscriber's id.
    pub fn id(&self) -> SubscriberId {
        self.control.id()
    }

    /// A snapshot of the subscriber's counters.
    pub fn stats(&self) -> SubscriberStats {
        self.control.stats()
    }

    /// Unsubscribes and returns the final counters (see the type's docs).
    pub fn unsubscribe(mut self) -> SubscriberStats {
        self.attached = false;
        self.control.unsubscribe()
    }

    /// A copy of the dead letters this at-least-once subscriber keeps because they
    /// reached nobody (no subscriber of [`DeadLetter<E>`], or only full ones), oldest
    /// first. `None` if `E` is not the subscriber's event type or it is at-most-once.
    /// The store stays as it is; see [`take_dead_letters`](Self::take_dead_letters).
    ///
    /// To publish one again: `bus.publish(letter.into_event()?)`, or with `E: Clone`,
    /// `bus.publish(letter.envelope().event().clone())`.
    pub fn dead_letters<E: Send + Sync + 'static>(&self) -> Option<Vec<DeadLetter<E>>> {
        self.store::<E>().map(DeadLetterStore::snapshot)
    }

    /// Like [`dead_letters`](Self::dead_letters), but empties the store: the caller now
    /// owns them (for instance, to publish them again).
    pub fn take_dead_letters<E: Send + Sync + 'static>(&self) -> Option<Vec<DeadLetter<E>>> {
        self.store::<E>().map(DeadLetterStore::take)
    }

    fn store<E: Send + Sync + 'static>(&self) -> Option<&DeadLetterStore<E>> {
        self.control.dead_letter_store()?.downcast_ref()
    }

    /// Lets the guard go without unsubscribing: the handler stays until shutdown.
    pub fn detach(mut self) {
        self.attached = false;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.attached {
            self.control.unsubscribe();
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.control.id())
            .field("attached", &self.attached)
            .finish()
    }
}
