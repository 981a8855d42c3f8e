//! `Receiver<E>`: a pull subscription.

use std::fmt;
use std::time::{Duration, Instant};

use crate::envelope::Envelope;
use crate::error::{RecvError, RecvTimeoutError, TryRecvError};
use crate::mailbox::Pop;
use crate::stats::{Counters, SubscriberId, SubscriberStats};
use crate::subscription::{Control, Registration};
use crate::sync::{Arc, Ordering};

/// A subscription the caller drains, instead of a handler the bus runs.
///
/// A receiver has its own mailbox and overflow policy like any subscriber. Events
/// queued in it are not "in flight" for [`Bus::wait_idle`](crate::Bus::wait_idle): they
/// wait for the caller. Dropping the receiver unsubscribes; what was still queued is
/// counted as dropped ([`DropReason::Unsubscribed`](crate::DropReason::Unsubscribed)).
///
/// # Lagging
///
/// Under [`Overflow::DropOldest`](crate::Overflow::DropOldest) a full mailbox evicts
/// its oldest event. The next `recv`, `try_recv` or `recv_timeout` then returns
/// `Lagged(n)` with the exact number evicted since the previous call, and the call after
/// it returns the oldest event still queued (as `tokio::sync::broadcast` does). The
/// iterators skip lag notices; the counts stay in the stats (`dropped.oldest`).
///
/// # Closing
///
/// When the bus shuts down, events already queued can still be received; after the
/// last one, calls return `Closed`.
///
/// # Example
///
/// ```
/// use crier::{Bus, Overflow, RecvError};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::new();
/// let rx = bus.subscriber::<u32>().capacity(2).overflow(Overflow::DropOldest).receiver()?;
/// for n in 1..=5_u32 {
///     bus.publish(n)?;
/// }
/// assert!(matches!(rx.recv(), Err(RecvError::Lagged(3))));
/// assert_eq!(*rx.recv()?, 4);
/// assert_eq!(*rx.recv()?, 5);
/// # Ok(()) }
/// ```
pub struct Receiver<E: Send + Sync + 'static> {
    registration: Arc<Registration<E>>,
}

enum Missed {
    None,
    Lagged(u64),
}

impl<E: Send + Sync + 'static> Receiver<E> {
    pub(crate) fn new(registration: Arc<Registration<E>>) -> Self {
        Receiver { registration }
    }

    fn missed(&self) -> Missed {
        let lag = &self.registration.sub.counters.unreported_lag;
        // A load first: the swap (a write to a line the publisher writes) only on lag.
        if lag.load(Ordering::Acquire) == 0 {
            return Missed::None;
        }
        match lag.swap(0, Ordering::AcqRel) {
            0 => Missed::None,
            n => Missed::Lagged(n),
        }
    }

    fn take(&self, deadline: Option<Instant>) -> Pop<Envelope<E>> {
        let popped = self.registration.sub.mailbox.pop_blocking(deadline);
        if let Pop::Item(_) = popped {
            Counters::add(&self.registration.sub.counters.delivered, 1);
        }
        popped
    }

    /// Blocks until an event comes.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] if events were evicted since the last call;
    /// [`RecvError::Closed`] once the bus is shut down and nothing is left.
    pub fn recv(&self) -> Result<Envelope<E>, RecvError> {
        if let Missed::Lagged(n) = self.missed() {
            return Err(RecvError::Lagged(n));
        }
        match self.take(None) {
            Pop::Item(env) => Ok(env),
            Pop::Timeout | Pop::Closed => Err(RecvError::Closed),
        }
    }

    /// Returns an event if one is queued, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing is queued, otherwise as [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<Envelope<E>, TryRecvError> {
        if let Missed::Lagged(n) = self.missed() {
            return Err(TryRecvError::Lagged(n));
        }
        let sub = &self.registration.sub;
        // Read before popping: nothing is pushed after the close, so "closed, then
        // empty" means nothing more will ever come.
        let closed = sub.mailbox.is_closed();
        match sub.mailbox.pop() {
            Some(env) => {
                Counters::add(&sub.counters.delivered, 1);
                Ok(env)
            }
            None if closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Blocks until an event comes or `timeout` passes.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing came in time, otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope<E>, RecvTimeoutError> {
        if let Missed::Lagged(n) = self.missed() {
            return Err(RecvTimeoutError::Lagged(n));
        }
        match self.take(Instant::now().checked_add(timeout)) {
            Pop::Item(env) => Ok(env),
            Pop::Timeout => Err(RecvTimeoutError::Timeout),
            Pop::Closed => Err(RecvTimeoutError::Closed),
        }
    }

    /// A blocking iterator that ends when the bus shuts down and the mailbox is empty.
    pub fn iter(&self) -> Iter<'_, E> {
        Iter { receiver: self }
    }

    /// A non-blocking iterator over the events queued now.
    pub fn try_iter(&self) -> TryIter<'_, E> {
        TryIter { receiver: self }
    }

    /// Events queued now.
    pub fn len(&self) -> usize {
        self.registration.sub.mailbox.len()
    }

    /// `true` when no event is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The receiver's subscriber id.
    pub fn id(&self) -> SubscriberId {
        self.registration.sub.id
    }

    /// A snapshot of the receiver's counters.
    pub fn stats(&self) -> SubscriberStats {
        self.registration.stats()
    }
}

impl<E: Send + Sync + 'static> Drop for Receiver<E> {
    fn drop(&mut self) {
        self.registration.unsubscribe();
    }
}

impl<E: Send + Sync + 'static> fmt::Debug for Receiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("id", &self.registration.sub.id)
            .field("topic", &self.registration.sub.topic)
            .field("queued", &self.len())
            .finish()
    }
}

/// See [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, E: Send + Sync + 'static> {
    receiver: &'a Receiver<E>,
}

impl<E: Send + Sync + 'static> Iterator for Iter<'_, E> {
    type Item = Envelope<E>;

    fn next(&mut self) -> Option<Envelope<E>> {
        loop {
            match self.receiver.recv() {
                Ok(env) => return Some(env),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// See [`Receiver::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, E: Send + Sync + 'static> {
    receiver: &'a Receiver<E>,
}

impl<E: Send + Sync + 'static> Iterator for TryIter<'_, E> {
    type Item = Envelope<E>;

    fn next(&mut self) -> Option<Envelope<E>> {
        loop {
            match self.receiver.try_recv() {
                Ok(env) => return Some(env),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            }
        }
    }
}
