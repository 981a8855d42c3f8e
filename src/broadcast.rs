//! Readers of their topic's broadcast ring: receivers and push subscribers that read
//! the ring instead of a mailbox of their own.
//!
//! A reader with no filter, a bounded capacity and an overflow policy of `Block`,
//! `Reject` or `DropOldest` gets every event its topic accepts after it joined, so its
//! "mailbox" is a window on the topic's [`Ring`]: a publish writes an event once,
//! however many such readers there are (see `ring` for the protocol). A pull receiver
//! reads its window itself ([`RingReceiver`]); a push subscriber on the pool or a
//! thread of its own ([`RingSubscriber`]) is notified after every write, as a mailbox
//! subscriber is after every push, and its runner reads the window. A lossless ack
//! receiver's gate (`ack`) takes from its window as from a mailbox: the gate's wake
//! marker is a flag on the reader that the ring's sleep checks (see `ring`). Readers
//! with other options keep a mailbox; both kinds behave the same to their user.
//!
//! # Accounting
//!
//! The publisher writes no per-reader counter: a reader's counts follow from ring
//! positions. A reader that joined at `joined`, reads at `next`, and ends at `end`
//! (the ring's head, or the head when it left):
//! - `accepted = end - joined` (every position written while it was subscribed);
//! - `queued = min(end - next, capacity)`;
//! - `dropped.oldest` = the lag it was told of, plus `end - next - queued` not yet told;
//! - `delivered` (and `failed`, for a push subscriber) counts what it took; positions
//!   in `[joined, next)` were taken or lagged past.
//!
//! So `delivered + failed + dropped + queued == accepted` holds by construction, once
//! the events taken have been handled. When the reader leaves, what it had not read is
//! counted as dropped (`Unsubscribed` for what was queued, `Oldest` for what it had
//! lagged past). A reader never reads at or past `end`: a receiver leaves and then
//! skips to `end` on one thread, and a push subscriber leaves under its run lock,
//! where its runner reads (see `subscriber`).
//!
//! For `wait_idle`, every write counts one delivery in flight per push subscriber on
//! the ring; its runner settles each position it handles, lags past or discards.

use crate::ack::Source;
use crate::bus::BusShared;
use crate::envelope::Envelope;
use crate::policy::{DropReason, Overflow};
use crate::receiver::Take;
use crate::ring::{Cursor, Read, Ring};
use crate::stats::{Consumer, Counters, SubscriberId, SubscriberStats};
use crate::subscriber::Subscriber;
use crate::subscription::Control;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering, Weak};
use crate::topic::TopicCore;
use std::fmt;

/// Whether a receiver with these options can read the ring (see the module docs).
pub(crate) fn fits(capacity: usize, overflow: Overflow, filtered: bool) -> bool {
    let policy = matches!(overflow, Overflow::Block | Overflow::Reject | Overflow::DropOldest);
    capacity <= crate::ring::MAX_CAPACITY && policy && !filtered
}

/// One reader's state that the topic's publishers also read. Not generic: it only
/// holds positions and counts.
pub(crate) struct Reader {
    pub(crate) cursor: Cursor,
    pub(crate) overflow: Overflow,
    /// The first position this reader gets.
    joined: u64,
    /// The head when it left; `u64::MAX` while subscribed. Written under the commit lock.
    left: AtomicU64,
    /// Publishes refused because this reader was full.
    pub(crate) refused: AtomicU64,
    /// The most positions found unread at a read.
    high_water: AtomicU64,
    /// An ack receiver's wake marker (see the `Source` impl).
    woken: AtomicBool,
}

impl Reader {
    /// Publishers waiting for room in this reader stop waiting once it left.
    pub(crate) fn has_left(&self) -> bool {
        self.left.load(Ordering::SeqCst) != u64::MAX
    }
}

/// A reader's place on its topic's ring: the ring, and its reader state there. The
/// inbox of a ring receiver or a ring subscriber.
pub(crate) struct Seat<E> {
    pub(crate) ring: Arc<Ring<Envelope<E>>>,
    pub(crate) reader: Arc<Reader>,
}

impl<E: Send + Sync + 'static> Seat<E> {
    /// Reads the next position, noting how deep the backlog was.
    pub(crate) fn read(&self, how: Take) -> Read<Envelope<E>> {
        let cursor = &self.reader.cursor;
        let read = match how {
            Take::NoWait => self.ring.try_read(cursor),
            Take::Until(deadline) => self.ring.read(cursor, deadline),
        };
        if let Read::Item { depth, .. } = &read {
            // A plain load first: the RMW is paid only when the mark moves.
            if *depth > self.reader.high_water.load(Ordering::Relaxed) {
                self.reader.high_water.fetch_max(*depth, Ordering::Relaxed);
            }
        }
        read
    }

    /// The ring's head, or where this reader left it: every position below was
    /// written for it.
    fn end(&self) -> u64 {
        // The head first: if `left` is still unset after it, the reader leaves later,
        // at a head no lower than this one. (Read the other way round, a leave and more
        // writes in between would count positions never written for this reader.)
        let head = self.ring.head();
        match self.reader.left.load(Ordering::SeqCst) {
            u64::MAX => head,
            left => left,
        }
    }

    /// `(queued, lagged past but not yet told)`.
    pub(crate) fn unread(&self) -> (u64, u64) {
        let unread = self.end().saturating_sub(self.reader.cursor.next());
        let queued = unread.min(self.reader.cursor.capacity());
        (queued, unread - queued)
    }

    /// Passes over everything unread, letting those events go; returns `(queued,
    /// lagged past)` as they were. `seen`, if given, is shown each event let go that
    /// the ring still held.
    pub(crate) fn skip_unread(&self, seen: Option<&mut dyn FnMut(Envelope<E>)>) -> (u64, u64) {
        let skipped = self.ring.skip_to(&self.reader.cursor, self.end(), seen);
        let queued = skipped.min(self.reader.cursor.capacity());
        (queued, skipped - queued)
    }

    /// The stats that follow from positions (see the module docs).
    pub(crate) fn fill(&self, stats: &mut SubscriberStats) {
        let reader = &self.reader;
        let (queued, untold) = self.unread();
        stats.capacity = Some(reader.cursor.capacity() as usize);
        stats.accepted = self.end() - reader.joined;
        stats.queued = queued;
        stats.high_water = reader.high_water.load(Ordering::Relaxed).max(queued);
        stats.dropped.oldest += untold;
        stats.refused += reader.refused.load(Ordering::Relaxed);
    }
}

/// A lossless ack receiver's source, for its gate (`ack`). The wake marker is the
/// reader's `woken` flag: it stays up until a pop lowers it, and the ring's sleep
/// checks it under the ring's lock, which `wake` takes to notify (no lost wake-up, see
/// `ring`). The close is the cursor's, a state that sleeps check the same way.
impl<E: Send + Sync + 'static> Source<Envelope<E>> for Seat<E> {
    fn pop(&self) -> Option<Envelope<E>> {
        self.reader.woken.store(false, Ordering::SeqCst);
        match self.read(Take::NoWait) {
            Read::Item { value, .. } => Some(value),
            // Only lossless cursors are sources: they never lag.
            Read::Lagged(_) | Read::Empty | Read::Closed => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.unread() == (0, 0)
    }

    fn len(&self) -> usize {
        self.unread().0 as usize
    }

    fn is_closed(&self) -> bool {
        self.reader.cursor.is_closed()
    }

    fn wait(&self, deadline: Option<std::time::Instant>) -> bool {
        let woken = || self.reader.woken.load(Ordering::SeqCst);
        self.ring.wait_readable(&self.reader.cursor, deadline, woken)
    }

    fn wake(&self) {
        if !self.reader.woken.swap(true, Ordering::SeqCst) {
            self.ring.wake_readers();
        }
    }
}

/// A push subscriber reading its topic's ring; its runner is notified after every
/// write (see `inbox`).
pub(crate) type RingSubscriber<E> = Subscriber<E, Seat<E>>;

/// The topic's side: its ring and the readers on it. Guarded by the topic's commit
/// lock, like everything a publish decides.
pub(crate) struct Readers<E> {
    pub(crate) ring: Arc<Ring<Envelope<E>>>,
    readers: Vec<Arc<Reader>>,
    /// The push subscribers among the readers.
    runners: Vec<Arc<RingSubscriber<E>>>,
    /// Positions below this fit every lossless cursor, as of the last look at them:
    /// cursors only move forward, so the bound stays true until a lossless one joins.
    room_until: u64,
}

impl<E: Send + Sync + 'static> Readers<E> {
    pub(crate) fn new(capacity: usize) -> Self {
        Readers {
            ring: Arc::new(Ring::new(capacity)),
            readers: Vec::new(),
            runners: Vec::new(),
            room_until: u64::MAX,
        }
    }

    /// Readers of every kind.
    pub(crate) fn len(&self) -> usize {
        self.readers.len()
    }

    /// Push subscribers: each write is a delivery in flight for each of them.
    pub(crate) fn runners(&self) -> usize {
        self.runners.len()
    }

    /// A new reader; it gets every position written from now on.
    pub(crate) fn join(&mut self, capacity: usize, overflow: Overflow) -> Seat<E> {
        let head = self.ring.head();
        let lossless = !matches!(overflow, Overflow::DropOldest);
        let reader = Arc::new(Reader {
            cursor: Cursor::new(head, capacity, lossless),
            overflow,
            joined: head,
            left: AtomicU64::new(u64::MAX),
            refused: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
            woken: AtomicBool::new(false),
        });
        if lossless {
            self.room_until = self.room_until.min(head + capacity as u64);
        }
        self.readers.push(reader.clone());
        Seat {
            ring: self.ring.clone(),
            reader,
        }
    }

    /// Registers the push subscriber reading `sub.inbox`, in the same hold of the lock
    /// as its `join`: every position it gets is notified and counted in flight.
    pub(crate) fn add_runner(&mut self, sub: Arc<RingSubscriber<E>>) {
        self.runners.push(sub);
    }

    /// Removes `reader`; returns the head at which it left.
    pub(crate) fn leave(&mut self, reader: &Reader) -> u64 {
        self.readers.retain(|r| !std::ptr::eq(&**r, reader));
        self.runners.retain(|s| !std::ptr::eq(&*s.inbox.reader, reader));
        let head = self.ring.head();
        match reader
            .left
            .compare_exchange(u64::MAX, head, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => head,
            // `clear` took it off first.
            Err(left) => left,
        }
    }

    /// Writer, step 1: `Err` with the seat of a full lossless reader if one more event
    /// does not fit.
    pub(crate) fn check_room(&mut self) -> Result<(), Seat<E>> {
        let head = self.ring.head();
        if head < self.room_until {
            return Ok(());
        }
        let mut room_until = u64::MAX;
        for reader in self.readers.iter().filter(|r| r.cursor.is_lossless()) {
            let until = reader.cursor.next() + reader.cursor.capacity();
            if until <= head {
                return Err(Seat {
                    ring: self.ring.clone(),
                    reader: reader.clone(),
                });
            }
            room_until = room_until.min(until);
        }
        self.room_until = room_until;
        Ok(())
    }

    /// Writer, step 2, after `check_room`: writes the event for every reader and
    /// notifies the push subscribers, adding to `wake` those the caller must submit
    /// once the lock is released. Returns the envelope it overwrote, for the caller to
    /// drop outside the commit lock.
    pub(crate) fn write(&self, env: &Envelope<E>, wake: &mut Vec<Arc<RingSubscriber<E>>>) -> Option<Envelope<E>> {
        let readers = u32::try_from(self.readers.len()).unwrap_or(u32::MAX);
        let overwritten = self.ring.write(env.clone(), readers);
        // After the write: a runner that sees `NOTIFIED` finds the event.
        for sub in &self.runners {
            if sub.notify() {
                wake.push(sub.clone());
            }
        }
        overwritten
    }

    pub(crate) fn clear(&mut self) {
        let head = self.ring.head();
        for reader in self.readers.drain(..) {
            let _ = reader
                .left
                .compare_exchange(u64::MAX, head, Ordering::SeqCst, Ordering::SeqCst);
        }
        self.runners.clear();
    }
}

/// A pull receiver on the ring (see the module docs); `Receiver` wraps it.
pub(crate) struct RingReceiver<E> {
    pub(crate) id: SubscriberId,
    name: std::sync::Arc<str>,
    seat: Seat<E>,
    /// `delivered` and `dropped` are used; `accepted` follows from positions.
    counters: Counters,
    /// Cleared once, by unsubscribe or shutdown.
    active: AtomicBool,
    topic: Arc<TopicCore<E>>,
    bus: Weak<BusShared>,
}

impl<E: Send + Sync + 'static> RingReceiver<E> {
    pub(crate) fn new(name: Option<String>, seat: Seat<E>, topic: Arc<TopicCore<E>>, bus: Weak<BusShared>) -> Self {
        let id = SubscriberId::next();
        let name = name.unwrap_or_else(|| format!("subscriber-{}", id.0));
        RingReceiver {
            id,
            name: name.into(),
            seat,
            counters: Counters::default(),
            active: AtomicBool::new(true),
            topic,
            bus,
        }
    }

    pub(crate) fn topic_name(&self) -> &str {
        &self.topic.name
    }

    /// Reads the next event, counting what the read found.
    pub(crate) fn take(&self, how: Take) -> Read<Envelope<E>> {
        let read = self.seat.read(how);
        match &read {
            Read::Item { value, .. } => {
                Counters::add(&self.counters.delivered, 1);
                let received = || crate::trace::TraceOutcome::Received {
                    attempt: value.attempt(),
                };
                crate::trace::record(self.topic.traces(), value, self.id, &self.name, received);
            }
            Read::Lagged(n) => self.counters.drop_n(DropReason::Oldest, *n),
            Read::Empty | Read::Closed => {}
        }
        read
    }

    /// Events queued now.
    pub(crate) fn len(&self) -> usize {
        self.seat.unread().0 as usize
    }
}

impl<E: Send + Sync + 'static> Control for RingReceiver<E> {
    fn id(&self) -> SubscriberId {
        self.id
    }

    fn stats(&self) -> SubscriberStats {
        let c = &self.counters;
        let mut stats = SubscriberStats::zero(
            self.id,
            self.name.to_string(),
            self.topic.name.to_string(),
            Consumer::Receiver,
            self.seat.reader.overflow,
        );
        stats.delivered = c.delivered.load(Ordering::Relaxed);
        stats.dropped = c.dropped();
        self.seat.fill(&mut stats);
        stats
    }

    fn unsubscribe(&self) -> SubscriberStats {
        // Once this receiver has left, no publish writes for it. (Shutdown clears
        // `active` first and takes every receiver off the ring itself.)
        if self.active.swap(false, Ordering::SeqCst) {
            self.topic.leave_ring(&self.seat.reader);
            // Publishers waiting for room in this receiver stop waiting for it.
            self.seat.ring.wake_writers();
            self.seat.ring.close(&self.seat.reader.cursor);
            if let Some(bus) = self.bus.upgrade() {
                bus.forget(self.id);
            }
        }
        // What it had not read is dropped, counted as a mailbox's backlog would be.
        let mut unread = |env: Envelope<E>| {
            let dropped = || crate::trace::TraceOutcome::Dropped(DropReason::Unsubscribed);
            crate::trace::record(self.topic.traces(), &env, self.id, &self.name, dropped);
        };
        let traced = crate::trace::wanted(self.topic.traces());
        let (queued, lagged) = self
            .seat
            .skip_unread(traced.then_some(&mut unread as &mut dyn FnMut(_)));
        self.counters.drop_n(DropReason::Unsubscribed, queued);
        self.counters.drop_n(DropReason::Oldest, lagged);
        self.stats()
    }

    fn wake_publishers(&self) {
        self.seat.ring.wake_writers();
    }

    fn retire(&self, _grace: std::time::Duration) -> bool {
        self.active.store(false, Ordering::SeqCst);
        true
    }

    fn close_input(&self) {
        self.seat.ring.close(&self.seat.reader.cursor);
    }

    fn abandoned_retries(&self) -> u64 {
        0
    }

    fn dead_letter_store(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

impl<E> fmt::Debug for RingReceiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingReceiver")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
