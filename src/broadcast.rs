//! Receivers that read their topic's broadcast ring instead of a mailbox of their own.
//!
//! A pull receiver with no filter, a bounded capacity and an overflow policy of
//! `Block`, `Reject` or `DropOldest` gets every event its topic accepts after it joined,
//! so its "mailbox" is a window on the topic's [`Ring`]: a publish writes an event once,
//! however many such receivers there are (see `ring` for the protocol). Receivers with
//! other options keep a mailbox; both kinds behave the same to their user.
//!
//! # Accounting
//!
//! The publisher writes no per-receiver counter: a receiver's counts follow from ring
//! positions. A receiver that joined at `joined`, reads at `next`, and ends at `end`
//! (the ring's head, or the head when it left):
//! - `accepted = end - joined` (every position written while it was subscribed);
//! - `queued = min(end - next, capacity)`;
//! - `dropped.oldest` = the lag it was told of, plus `end - next - queued` not yet told;
//! - `delivered` counts reads; positions in `[joined, next)` were read or lagged past.
//!
//! So `delivered + dropped + queued == accepted` holds by construction. When the
//! receiver leaves, what it had not read is counted as dropped (`Unsubscribed` for what
//! was queued, `Oldest` for what it had lagged past).

use crate::bus::BusShared;
use crate::envelope::Envelope;
use crate::policy::{DropReason, Overflow};
use crate::receiver::Take;
use crate::ring::{Cursor, Read, Ring};
use crate::stats::{Consumer, Counters, SubscriberId, SubscriberStats};
use crate::subscription::Control;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering, Weak};
use crate::topic::TopicCore;
use std::fmt;

/// Whether a receiver with these options can read the ring (see the module docs).
pub(crate) fn fits(capacity: usize, overflow: Overflow, filtered: bool) -> bool {
    let policy = matches!(overflow, Overflow::Block | Overflow::Reject | Overflow::DropOldest);
    capacity <= crate::ring::MAX_CAPACITY && policy && !filtered
}

/// One receiver's state that the topic's publishers also read. Not generic: it only
/// holds positions and counters.
pub(crate) struct Reader {
    pub(crate) cursor: Cursor,
    pub(crate) overflow: Overflow,
    /// The first position this receiver gets.
    joined: u64,
    /// The head when it left; `u64::MAX` while subscribed. Written under the commit lock.
    left: AtomicU64,
    /// Cleared once, by unsubscribe or shutdown.
    active: AtomicBool,
    /// `delivered`, `dropped` and `refused` are used; `accepted` follows from positions.
    pub(crate) counters: Counters,
    /// The most positions found unread at a read.
    high_water: AtomicU64,
}

impl Reader {
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }
}

/// A receiver's place on its topic's ring: the ring, and its reader state there.
pub(crate) struct Seat<E> {
    pub(crate) ring: Arc<Ring<Envelope<E>>>,
    pub(crate) reader: Arc<Reader>,
}

/// The topic's side: its ring and the receivers reading it. Guarded by the topic's
/// commit lock, like everything a publish decides.
pub(crate) struct Readers<E> {
    pub(crate) ring: Arc<Ring<Envelope<E>>>,
    readers: Vec<Arc<Reader>>,
    /// Positions below this fit every lossless cursor, as of the last look at them:
    /// cursors only move forward, so the bound stays true until a lossless one joins.
    room_until: u64,
}

impl<E: Send + Sync + 'static> Readers<E> {
    pub(crate) fn new(capacity: usize) -> Self {
        Readers {
            ring: Arc::new(Ring::new(capacity)),
            readers: Vec::new(),
            room_until: u64::MAX,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.readers.len()
    }

    pub(crate) fn join(&mut self, capacity: usize, overflow: Overflow) -> Arc<Reader> {
        let head = self.ring.head();
        let lossless = !matches!(overflow, Overflow::DropOldest);
        let reader = Arc::new(Reader {
            cursor: Cursor::new(head, capacity, lossless),
            overflow,
            joined: head,
            left: AtomicU64::new(u64::MAX),
            active: AtomicBool::new(true),
            counters: Counters::default(),
            high_water: AtomicU64::new(0),
        });
        if lossless {
            self.room_until = self.room_until.min(head + capacity as u64);
        }
        self.readers.push(reader.clone());
        reader
    }

    /// Removes `reader`; returns the head at which it left.
    pub(crate) fn leave(&mut self, reader: &Reader) -> u64 {
        self.readers.retain(|r| !std::ptr::eq(&**r, reader));
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

    /// Writer, step 2, after `check_room`: writes the event for every reader. Returns
    /// the envelope it overwrote, for the caller to drop outside the commit lock.
    pub(crate) fn write(&self, env: &Envelope<E>) -> Option<Envelope<E>> {
        let readers = u32::try_from(self.readers.len()).unwrap_or(u32::MAX);
        self.ring.write(env.clone(), readers)
    }

    pub(crate) fn clear(&mut self) {
        let head = self.ring.head();
        for reader in self.readers.drain(..) {
            let _ = reader
                .left
                .compare_exchange(u64::MAX, head, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

/// A pull receiver on the ring (see the module docs); `Receiver` wraps it.
pub(crate) struct RingReceiver<E> {
    pub(crate) id: SubscriberId,
    name: std::sync::Arc<str>,
    reader: Arc<Reader>,
    ring: Arc<Ring<Envelope<E>>>,
    topic: Arc<TopicCore<E>>,
    bus: Weak<BusShared>,
}

impl<E: Send + Sync + 'static> RingReceiver<E> {
    pub(crate) fn new(
        name: Option<String>,
        Seat { ring, reader }: Seat<E>,
        topic: Arc<TopicCore<E>>,
        bus: Weak<BusShared>,
    ) -> Self {
        let id = SubscriberId::next();
        let name = name.unwrap_or_else(|| format!("subscriber-{}", id.0));
        RingReceiver {
            id,
            name: name.into(),
            reader,
            ring,
            topic,
            bus,
        }
    }

    pub(crate) fn topic_name(&self) -> &str {
        &self.topic.name
    }

    /// Reads the next event, counting what the read found.
    pub(crate) fn take(&self, how: Take) -> Read<Envelope<E>> {
        let cursor = &self.reader.cursor;
        let read = match how {
            Take::NoWait => self.ring.try_read(cursor),
            Take::Until(deadline) => self.ring.read(cursor, deadline),
        };
        let counters = &self.reader.counters;
        match &read {
            Read::Item { depth, .. } => {
                Counters::add(&counters.delivered, 1);
                if *depth > self.reader.high_water.load(Ordering::Relaxed) {
                    self.reader.high_water.fetch_max(*depth, Ordering::Relaxed);
                }
            }
            Read::Lagged(n) => counters.drop_n(DropReason::Oldest, *n),
            Read::Empty | Read::Closed => {}
        }
        read
    }

    /// The ring's head, or where this receiver left it.
    fn end(&self) -> u64 {
        match self.reader.left.load(Ordering::SeqCst) {
            u64::MAX => self.ring.head(),
            left => left,
        }
    }

    /// `(queued, lagged past but not yet told)`.
    fn unread(&self) -> (u64, u64) {
        let unread = self.end().saturating_sub(self.reader.cursor.next());
        let queued = unread.min(self.reader.cursor.capacity());
        (queued, unread - queued)
    }

    /// Events queued now.
    pub(crate) fn len(&self) -> usize {
        self.unread().0 as usize
    }
}

impl<E: Send + Sync + 'static> Control for RingReceiver<E> {
    fn id(&self) -> SubscriberId {
        self.id
    }

    fn stats(&self) -> SubscriberStats {
        let reader = &self.reader;
        let c = &reader.counters;
        let end = self.end();
        let (queued, untold) = self.unread();
        let mut dropped = c.dropped();
        dropped.oldest += untold;
        SubscriberStats {
            id: self.id,
            name: self.name.to_string(),
            topic: self.topic.name.to_string(),
            consumer: Consumer::Receiver,
            overflow: reader.overflow,
            capacity: Some(reader.cursor.capacity() as usize),
            accepted: end - reader.joined,
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: 0,
            dropped,
            refused: c.refused.load(Ordering::Relaxed),
            queued,
            high_water: reader.high_water.load(Ordering::Relaxed).max(queued),
            last_error: None,
        }
    }

    fn unsubscribe(&self) -> SubscriberStats {
        let reader = &self.reader;
        // Once this receiver has left, no publish writes for it. (Shutdown clears
        // `active` first and takes every receiver off the ring itself.)
        let end = if reader.active.swap(false, Ordering::SeqCst) {
            let end = self.topic.leave_ring(reader);
            // Publishers waiting for room in this receiver stop waiting for it.
            self.ring.wake_writers();
            self.ring.close(&reader.cursor);
            if let Some(bus) = self.bus.upgrade() {
                bus.forget(self.id);
            }
            end
        } else {
            self.end()
        };
        // What it had not read is dropped, counted as a mailbox's backlog would be.
        let skipped = self.ring.skip_to(&reader.cursor, end);
        let queued = skipped.min(reader.cursor.capacity());
        reader.counters.drop_n(DropReason::Unsubscribed, queued);
        reader.counters.drop_n(DropReason::Oldest, skipped - queued);
        self.stats()
    }

    fn wake_publishers(&self) {
        self.ring.wake_writers();
    }

    fn retire(&self, _grace: std::time::Duration) -> bool {
        self.reader.active.store(false, Ordering::SeqCst);
        true
    }

    fn close_input(&self) {
        self.ring.close(&self.reader.cursor);
    }
}

impl<E> fmt::Debug for RingReceiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingReceiver")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
