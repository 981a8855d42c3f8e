//! `DeadLetter<E>`: an event an at-least-once subscriber gave up on, and the bounded
//! store that keeps dead letters nobody subscribed to.

use std::collections::VecDeque;
use std::fmt;

use crate::envelope::Envelope;
use crate::stats::{Counters, SubscriberId};
use crate::sync::{AtomicU64, Mutex, Ordering};

/// An event whose at-least-once delivery to one subscriber ran out of attempts.
///
/// The bus publishes it on the default topic of `DeadLetter<E>`, so it is subscribed
/// to like any event (`bus.subscribe(|dl: &Envelope<DeadLetter<E>>| ...)`); its
/// envelope's `causation_id` is the failed event's id. If that publish reaches nobody
/// (no subscriber, or one whose mailbox is full), the dead letter is kept in the failing
/// subscriber's own bounded store instead, which
/// [`Subscription::dead_letters`](crate::Subscription::dead_letters) reads. Either way
/// it is counted once, in the subscriber's `dead_lettered`.
///
/// A dead-letter subscriber that fails never produces a dead letter of a dead letter:
/// its own dead letters go to its store only.
///
/// Cloning is cheap (the event is shared, not copied).
///
/// # Example
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use crier::{Bus, DeadLetter, Envelope, Retry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::builder().inline().build()?;
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let _dlq = bus.subscribe(move |dl: &Envelope<DeadLetter<u32>>| {
///     log.lock().unwrap().push((**dl.envelope(), dl.attempts(), dl.error().to_owned()));
/// })?;
/// let _flaky = bus
///     .subscriber::<u32>()
///     .at_least_once(Retry::ordered().max_attempts(1))
///     .subscribe(|_: &Envelope<u32>| -> Result<(), String> { Err("card declined".into()) })?;
/// bus.publish(7_u32)?;
/// assert_eq!(*seen.lock().unwrap(), vec![(7, 1, "card declined".to_owned())]);
/// # Ok(()) }
/// ```
pub struct DeadLetter<E> {
    pub(crate) envelope: Envelope<E>,
    pub(crate) subscriber: std::sync::Arc<str>,
    pub(crate) subscriber_id: SubscriberId,
    pub(crate) error: String,
}

impl<E> DeadLetter<E> {
    /// The failed event's envelope, as its last attempt saw it.
    pub fn envelope(&self) -> &Envelope<E> {
        &self.envelope
    }

    /// The name of the subscriber that gave up.
    pub fn subscriber(&self) -> &str {
        &self.subscriber
    }

    /// The id of the subscriber that gave up.
    pub fn subscriber_id(&self) -> SubscriberId {
        self.subscriber_id
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.envelope.attempt()
    }

    /// The text of the last attempt's error (or panic message).
    pub fn error(&self) -> &str {
        &self.error
    }

    /// The event itself, to publish again, if nothing else holds it (no other
    /// subscriber still has it queued, no clone of this dead letter or of its envelope
    /// lives); otherwise the dead letter back. With `E: Clone`,
    /// `dl.envelope().event().clone()` always works.
    ///
    /// # Errors
    ///
    /// The dead letter, unchanged, while the event is shared.
    pub fn into_event(self) -> Result<E, DeadLetter<E>> {
        let DeadLetter {
            envelope,
            subscriber,
            subscriber_id,
            error,
        } = self;
        envelope.into_event().map_err(|envelope| DeadLetter {
            envelope,
            subscriber,
            subscriber_id,
            error,
        })
    }
}

impl<E> Clone for DeadLetter<E> {
    fn clone(&self) -> Self {
        DeadLetter {
            envelope: self.envelope.clone(),
            subscriber: self.subscriber.clone(),
            subscriber_id: self.subscriber_id,
            error: self.error.clone(),
        }
    }
}

impl<E> fmt::Debug for DeadLetter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("event", &self.envelope)
            .field("subscriber", &self.subscriber)
            .field("attempts", &self.attempts())
            .field("error", &self.error)
            .finish()
    }
}

/// One subscriber's dead letters that reached nobody: at most `capacity`, oldest
/// evicted first and counted.
pub(crate) struct DeadLetterStore<E> {
    kept: Mutex<VecDeque<DeadLetter<E>>>,
    capacity: usize,
    pub(crate) evicted: AtomicU64,
}

impl<E> DeadLetterStore<E> {
    pub(crate) fn new(capacity: usize) -> Self {
        DeadLetterStore {
            kept: Mutex::new(VecDeque::new()),
            capacity,
            evicted: AtomicU64::new(0),
        }
    }

    pub(crate) fn keep(&self, letter: DeadLetter<E>) {
        let mut kept = self.kept.lock();
        let evicted = if kept.len() >= self.capacity {
            kept.pop_front()
        } else {
            None
        };
        kept.push_back(letter);
        drop(kept);
        if evicted.is_some() {
            Counters::add(&self.evicted, 1);
        }
        // The evicted letter (maybe the event's last holder) drops outside the lock.
        drop(evicted);
    }

    pub(crate) fn len(&self) -> usize {
        self.kept.lock().len()
    }

    pub(crate) fn snapshot(&self) -> Vec<DeadLetter<E>> {
        self.kept.lock().iter().cloned().collect()
    }

    pub(crate) fn take(&self) -> Vec<DeadLetter<E>> {
        std::mem::take(&mut *self.kept.lock()).into()
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{EventId, Metadata, Shared};

    fn letter(n: u32) -> DeadLetter<u32> {
        let meta = Metadata::for_test(EventId::new(1, u64::from(n)));
        DeadLetter {
            envelope: Envelope::new(std::sync::Arc::new(Shared { event: n, meta })),
            subscriber: "s".into(),
            subscriber_id: SubscriberId(1),
            error: String::new(),
        }
    }

    #[test]
    fn the_store_keeps_the_newest_and_counts_what_it_evicts() {
        let store = DeadLetterStore::new(3);
        for n in 0..10 {
            store.keep(letter(n));
        }
        let kept: Vec<u32> = store.snapshot().iter().map(|l| **l.envelope()).collect();
        assert_eq!(kept, [7, 8, 9]);
        assert_eq!(store.evicted(), 7);
        assert_eq!(store.take().len(), 3);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn into_event_gives_the_event_back_only_when_nothing_else_holds_it() {
        let dl = letter(5);
        let other = dl.clone();
        let dl = dl.into_event().expect_err("a clone still holds it");
        drop(other);
        assert_eq!(dl.into_event().ok(), Some(5));
    }
}
