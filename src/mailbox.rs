//! `Mailbox<T>`: one subscriber's queue. A lock-free crossbeam channel holds the items;
//! [`Slots`] bounds them; a `Wake` marker wakes a blocked receiver: at the close, so it
//! learns that no more items will come, and for an ack receiver whenever its gate
//! changes (see `ack`).
//!
//! # The wake marker
//!
//! At most one marker is queued: `wake` sends one only if it raises the flag, and a
//! pop that takes the marker lowers it. The flag and `closed` share one word
//! ([`SourceFlags`]; `ack` explains why a consumer then never misses a close).
//!
//! Several threads may wait on one mailbox (threads sharing a receiver, or the
//! receivers of a group), and a pop by one can take the marker that another waits
//! for. Before the close that costs nothing: the marker only says "look again", and
//! the thread that took it did. After the close it would leave the other asleep for
//! good, so whoever takes a marker once the mailbox is closed queues it again (`pop`,
//! `pop_blocking`): from then on a marker stays queued, and every wait on the
//! mailbox returns.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TryRecvError};

use crate::ack::{Source, SourceFlags, Take};
use crate::slots::Slots;
use crate::sync::{AtomicUsize, Ordering};

enum Item<T> {
    Event(T),
    /// Wakes a blocked receiver (see the module docs).
    Wake,
}

/// Items taken out of a mailbox to be put back (see [`Mailbox::take_queued`]).
pub(crate) struct Queued<T>(Vec<Item<T>>);

pub(crate) enum Pop<T> {
    Item(T),
    Timeout,
    Closed,
}

pub(crate) struct Mailbox<T> {
    /// Both ends stay here: the channel never disconnects, `close` marks the end.
    tx: Sender<Item<T>>,
    rx: Receiver<Item<T>>,
    /// Items queued plus reserved, bounded by the capacity.
    slots: Slots,
    /// The largest `slots.used()` any push saw.
    high_water: AtomicUsize,
    /// `closed` (set once, when no more items will be pushed) and whether the `Wake`
    /// marker is in the channel (it is not an item for `len`).
    flags: SourceFlags,
}

impl<T> Mailbox<T> {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Mailbox {
            tx,
            rx,
            slots: Slots::new(capacity.unwrap_or(usize::MAX)),
            high_water: AtomicUsize::new(0),
            flags: SourceFlags::new(),
        }
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.slots.is_bounded().then(|| self.slots.capacity())
    }

    pub(crate) fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Items queued. Unlike `slots().used()`, slots reserved by publishes in progress
    /// are not counted, so the stats of a quiet subscriber balance exactly.
    pub(crate) fn len(&self) -> usize {
        let wake = usize::from(self.flags.wake_queued());
        self.rx.len().saturating_sub(wake)
    }

    /// No item queued (the `Wake` marker aside, which only receivers get). The
    /// channel's own emptiness check comes first: it reads two indices, where its `len`
    /// loops until it reads them consistently (about 50 instructions, on every
    /// hand-off).
    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty() || self.len() == 0
    }

    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    fn record_depth(&self, depth: usize) {
        // A plain load first: the RMW is paid only when the mark moves.
        if depth > self.high_water.load(Ordering::Relaxed) {
            self.high_water.fetch_max(depth, Ordering::Relaxed);
        }
    }

    /// Pushes into a slot taken with `slots().try_reserve()`.
    pub(crate) fn push_reserved(&self, item: T) {
        self.record_depth(self.slots.used());
        self.send(item);
    }

    /// Pushes whatever the capacity; if that overfilled the mailbox, evicts and returns
    /// the oldest item.
    pub(crate) fn push_evicting(&self, item: T) -> Option<T> {
        let used = self.slots.occupy();
        self.send(item);
        if used <= self.slots.capacity() {
            self.record_depth(used);
            return None;
        }
        self.record_depth(self.slots.capacity());
        // A consumer may have emptied the queue meanwhile; then nothing is evicted.
        self.pop()
    }

    /// Takes out everything queued, in order, markers included, without releasing their
    /// slots: for [`put_back`](Self::put_back) once something was queued ahead of them.
    /// Only while nobody pushes or pops (see `TopicCore::join_at`).
    pub(crate) fn take_queued(&self) -> Queued<T> {
        Queued(self.rx.try_iter().collect())
    }

    /// Queues again, behind what was queued since, what `take_queued` took.
    pub(crate) fn put_back(&self, queued: Queued<T>) {
        for item in queued.0 {
            let _ = self.tx.send(item);
        }
    }

    /// Pushes whatever the capacity, without evicting: the mailbox may hold more than
    /// its capacity until its consumer catches up (a replay, see `subscriber`).
    pub(crate) fn push_over(&self, item: T) {
        self.record_depth(self.slots.occupy());
        self.send(item);
    }

    fn send(&self, item: T) {
        // Cannot fail: `self.rx` keeps the channel connected.
        let _ = self.tx.send(Item::Event(item));
    }

    pub(crate) fn pop(&self) -> Option<T> {
        let item = self.pop_held()?;
        self.slots.release(1);
        Some(item)
    }

    /// Pops without releasing the item's slot: it keeps its place in the capacity until
    /// the caller calls `slots().release` (a group with key affinity, see `affinity`).
    ///
    /// A marker it consumes after the close is queued again, behind what it returns:
    /// another thread may wait for that close (see the module docs).
    pub(crate) fn pop_held(&self) -> Option<T> {
        let mut woke = false;
        let popped = loop {
            match self.rx.try_recv() {
                Ok(Item::Event(item)) => break Some(item),
                Ok(Item::Wake) => {
                    self.flags.lower_wake();
                    woke = true;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break None,
            }
        };
        if woke && self.flags.is_closed() {
            self.wake();
        }
        popped
    }

    /// A receiver's take: at once (`Pop::Timeout` if nothing is queued), or blocking
    /// until the deadline (see `pop_blocking`).
    pub(crate) fn take(&self, how: Take) -> Pop<T> {
        match how {
            Take::NoWait => {
                // Read before popping: nothing is pushed after the close, so "closed,
                // then empty" means nothing more will ever come.
                let closed = self.is_closed();
                match self.pop() {
                    Some(item) => Pop::Item(item),
                    None if closed => Pop::Closed,
                    None => Pop::Timeout,
                }
            }
            Take::Until(deadline) => self.pop_blocking(deadline),
        }
    }

    /// Blocks until an item comes, the deadline passes, or the mailbox is closed and empty.
    ///
    /// Several receivers may block on one mailbox (a group of receivers): once it is
    /// closed, each that looks passes the wake marker on, so the close wakes them all.
    pub(crate) fn pop_blocking(&self, deadline: Option<Instant>) -> Pop<T> {
        loop {
            if self.flags.is_closed() {
                let popped = self.pop().map_or(Pop::Closed, Pop::Item);
                self.wake();
                return popped;
            }
            let received = match deadline {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => self.rx.recv_deadline(deadline),
            };
            match received {
                Ok(Item::Event(item)) => {
                    self.slots.release(1);
                    return Pop::Item(item);
                }
                // The loop re-checks `closed`.
                Ok(Item::Wake) => self.flags.lower_wake(),
                Err(RecvTimeoutError::Timeout) => return Pop::Timeout,
                Err(RecvTimeoutError::Disconnected) => return Pop::Closed,
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.flags.is_closed()
    }

    /// No more items will be pushed: wakes a blocked receiver.
    pub(crate) fn close(&self) {
        if self.flags.close() {
            self.wake();
        }
    }

    /// Queues the wake marker, unless it is queued already.
    pub(crate) fn wake(&self) {
        if self.flags.raise_wake() {
            let _ = self.tx.send(Item::Wake);
        }
    }

    /// Blocks until an item or the wake marker is queued, without taking it, or until
    /// the deadline; `false` once the deadline has passed.
    pub(crate) fn wait_ready(&self, deadline: Option<Instant>) -> bool {
        let mut select = Select::new();
        select.recv(&self.rx);
        ready_by(select, deadline)
    }

    /// Like [`wait_ready`](Self::wait_ready), on this mailbox or `other`: a member of
    /// a group of ack receivers waits on the group's queue and on its own bell (see
    /// `group`).
    pub(crate) fn wait_ready_with<U>(&self, other: &Mailbox<U>, deadline: Option<Instant>) -> bool {
        let mut select = Select::new();
        select.recv(&self.rx);
        select.recv(&other.rx);
        ready_by(select, deadline)
    }
}

/// Blocks until one of `select`'s channels is ready or the deadline passes (`false`).
fn ready_by(mut select: Select<'_>, deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            select.ready();
            true
        }
        Some(deadline) => select.ready_deadline(deadline).is_ok(),
    }
}

impl<T> Source<T> for Mailbox<T> {
    fn pop(&self) -> Option<T> {
        Mailbox::pop(self)
    }

    fn is_empty(&self) -> bool {
        Mailbox::is_empty(self)
    }

    fn len(&self) -> usize {
        Mailbox::len(self)
    }

    fn is_closed(&self) -> bool {
        Mailbox::is_closed(self)
    }

    fn wait(&self, deadline: Option<Instant>) -> bool {
        self.wait_ready(deadline)
    }

    fn wake(&self) {
        Mailbox::wake(self);
    }
}
