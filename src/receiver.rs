//! `Receiver<E>`: a pull subscription.

use std::fmt;
use std::time::{Duration, Instant};

pub(crate) use crate::ack::Take;
use crate::broadcast::RingReceiver;
use crate::envelope::Envelope;
use crate::error::{RecvError, RecvTimeoutError, TryRecvError};
use crate::group::GroupSeat;
use crate::mailbox::Pop;
use crate::ring::Read;
use crate::stats::{Counters, SubscriberId, SubscriberStats};
use crate::subscription::{Control, Registration};
use crate::sync::{Arc, Ordering};
use crate::trace::TraceOutcome;

/// A subscription the caller drains, instead of a handler the bus runs.
///
/// A receiver has its own capacity and overflow policy like any subscriber (where its
/// events wait is under "Memory" below). Events queued for it are not "in flight" for [`Bus::wait_idle`](crate::Bus::wait_idle): they
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
/// # Memory
///
/// A receiver with no filter, a bounded capacity, and [`Overflow::Block`],
/// [`Overflow::Reject`] or [`Overflow::DropOldest`] (the defaults are all of these)
/// reads its topic's *broadcast ring*: a publish writes an event into the ring once,
/// however many such receivers the topic has, and each reads it through a cursor of its
/// own. The ring holds the larger of the bus's default capacity and the first such
/// receiver's capacity, rounded up to a power of two (at most 65,536 events), and is
/// allocated in chunks of 32 slots as events arrive. Each receiver is still bounded by
/// its own capacity: `Block` and `Reject` stop the publisher when *it* is full, and
/// `DropOldest` lags when *it* is full. A lagging `DropOldest` receiver keeps the
/// events it has not caught up with alive until its next call (which reports the lag
/// and lets them go) or until the ring wraps: at most the ring's capacity. An event
/// every receiver has taken is not kept.
///
/// Other receivers (a filter, [`Overflow::DropNewest`], [`Overflow::BlockTimeout`],
/// an unbounded mailbox, or a capacity larger than the topic's ring) keep a mailbox of
/// their own. Both kinds behave the same to their user. Push subscribers on the pool or
/// a thread of their own choose the same way, and share the same ring.
///
/// [`Overflow::Block`]: crate::Overflow::Block
/// [`Overflow::Reject`]: crate::Overflow::Reject
/// [`Overflow::DropOldest`]: crate::Overflow::DropOldest
/// [`Overflow::DropNewest`]: crate::Overflow::DropNewest
/// [`Overflow::BlockTimeout`]: crate::Overflow::BlockTimeout
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
    source: Source<E>,
}

/// Where a receiver's events come from: a share of its topic's broadcast ring (see
/// `broadcast`), or a mailbox of its own for options the ring cannot give (a filter,
/// `DropNewest`, `BlockTimeout`, an unbounded capacity).
enum Source<E> {
    Ring(Arc<RingReceiver<E>>),
    Mailbox(Arc<Registration<E>>),
    /// A member of a group of receivers: it takes from the group's queue.
    Group(Arc<Registration<E, GroupSeat<E>>>),
}

impl<E: Send + Sync + 'static> Receiver<E> {
    pub(crate) fn from_ring(receiver: Arc<RingReceiver<E>>) -> Self {
        Receiver {
            source: Source::Ring(receiver),
        }
    }

    pub(crate) fn from_mailbox(registration: Arc<Registration<E>>) -> Self {
        Receiver {
            source: Source::Mailbox(registration),
        }
    }

    pub(crate) fn from_group(registration: Arc<Registration<E, GroupSeat<E>>>) -> Self {
        Receiver {
            source: Source::Group(registration),
        }
    }

    fn control(&self) -> &dyn Control {
        match &self.source {
            Source::Ring(receiver) => &**receiver,
            Source::Mailbox(registration) => &**registration,
            Source::Group(registration) => &**registration,
        }
    }

    fn take(&self, how: Take) -> Read<Envelope<E>> {
        let (counters, popped) = match &self.source {
            Source::Ring(receiver) => return receiver.take(how),
            Source::Mailbox(registration) => {
                let sub = &registration.sub;
                if let Some(lagged) = take_lag(&sub.counters) {
                    return Read::Lagged(lagged);
                }
                (&sub.counters, sub.inbox.take(how))
            }
            Source::Group(registration) => (&registration.sub.counters, registration.sub.inbox.take(how)),
        };
        match popped {
            Pop::Item(value) => {
                Counters::add(&counters.delivered, 1);
                let received = || TraceOutcome::Received {
                    attempt: value.attempt(),
                };
                match &self.source {
                    Source::Mailbox(registration) => registration.sub.trace(&value, received),
                    Source::Group(registration) => registration.sub.trace(&value, received),
                    Source::Ring(_) => {}
                }
                Read::Item { value, depth: 0 }
            }
            Pop::Timeout => Read::Empty,
            Pop::Closed => Read::Closed,
        }
    }

    /// Blocks until an event comes.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] if events were evicted since the last call;
    /// [`RecvError::Closed`] once the bus is shut down and nothing is left.
    pub fn recv(&self) -> Result<Envelope<E>, RecvError> {
        match self.take(Take::Until(None)) {
            Read::Item { value, .. } => Ok(value),
            Read::Lagged(n) => Err(RecvError::Lagged(n)),
            Read::Empty | Read::Closed => Err(RecvError::Closed),
        }
    }

    /// Returns an event if one is queued, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing is queued, otherwise as [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<Envelope<E>, TryRecvError> {
        match self.take(Take::NoWait) {
            Read::Item { value, .. } => Ok(value),
            Read::Lagged(n) => Err(TryRecvError::Lagged(n)),
            Read::Empty => Err(TryRecvError::Empty),
            Read::Closed => Err(TryRecvError::Closed),
        }
    }

    /// Blocks until an event comes or `timeout` passes.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing came in time, otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope<E>, RecvTimeoutError> {
        match self.take(Take::Until(Instant::now().checked_add(timeout))) {
            Read::Item { value, .. } => Ok(value),
            Read::Lagged(n) => Err(RecvTimeoutError::Lagged(n)),
            Read::Empty => Err(RecvTimeoutError::Timeout),
            Read::Closed => Err(RecvTimeoutError::Closed),
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
        match &self.source {
            Source::Ring(receiver) => receiver.len(),
            Source::Mailbox(registration) => registration.sub.inbox.len(),
            // What the group's queue holds, for whichever member takes it first.
            Source::Group(registration) => registration.sub.inbox.group().queued(),
        }
    }

    /// `true` when no event is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The receiver's subscriber id.
    pub fn id(&self) -> SubscriberId {
        self.control().id()
    }

    /// A snapshot of the receiver's counters.
    pub fn stats(&self) -> SubscriberStats {
        self.control().stats()
    }

    /// Unsubscribes, as dropping the receiver does, and returns its final counters:
    /// what was still queued is counted as dropped
    /// ([`DropReason::Unsubscribed`](crate::DropReason::Unsubscribed)).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = crier::Bus::new();
    /// let rx = bus.receiver::<u32>()?;
    /// bus.publish(1_u32)?;
    /// bus.publish(2_u32)?;
    /// assert_eq!(*rx.recv()?, 1);
    /// let last = rx.unsubscribe();
    /// assert_eq!((last.accepted, last.delivered, last.dropped.unsubscribed), (2, 1, 1));
    /// # Ok(()) }
    /// ```
    pub fn unsubscribe(self) -> SubscriberStats {
        // The drop that follows finds it unsubscribed and does nothing more.
        self.control().unsubscribe()
    }
}

/// The `DropOldest` evictions not yet reported to a mailbox receiver, if any; they
/// are reported now.
pub(crate) fn take_lag(counters: &Counters) -> Option<u64> {
    let lag = &counters.unreported_lag;
    // A load first: the swap (a write to a line the publisher writes) only on lag.
    if lag.load(Ordering::Acquire) == 0 {
        return None;
    }
    match lag.swap(0, Ordering::AcqRel) {
        0 => None,
        n => Some(n),
    }
}

impl<E: Send + Sync + 'static> Drop for Receiver<E> {
    fn drop(&mut self) {
        self.control().unsubscribe();
    }
}

impl<E: Send + Sync + 'static> fmt::Debug for Receiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topic = match &self.source {
            Source::Ring(receiver) => receiver.topic_name(),
            Source::Mailbox(registration) => &registration.sub.topic,
            Source::Group(registration) => &registration.sub.topic,
        };
        f.debug_struct("Receiver")
            .field("id", &self.id())
            .field("topic", &topic)
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
