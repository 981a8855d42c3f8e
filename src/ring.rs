//! `Ring<T>`: a topic's broadcast ring. Each event is written once and read by every
//! receiver through a cursor of its own, instead of being pushed into one queue per
//! receiver.
//!
//! # Algorithm
//!
//! A ring of `capacity` slots (a power of two), allocated in chunks on first use, and
//! `head`, the number of positions written. Position `p` lives in slot `p & mask`; a
//! slot remembers the position it holds, so a reader can tell it was overwritten.
//!
//! Writer (one at a time: the caller serialises writers, a topic by its commit lock):
//! 1. Check room: for every lossless cursor, `head - next < cursor.capacity`. Lossy
//!    cursors never stop the writer.
//! 2. `write`: under the slot's lock store `(head, unread, value)`, returning the value
//!    it overwrote; then `fetch_add(1)` on `head`. If that found `WAITING` set, clear it
//!    and wake the readers asleep.
//!
//! Reader (`try_read`; several threads may share one cursor):
//! 1. Load `next` (`c`) and `head` (`h`).
//! 2. `c == h`: load `closed`, then `next` and `head` again; still nothing: `Empty`,
//!    or `Closed` if `closed` was set (nothing is written after the close).
//! 3. `h - c > cursor.capacity` (only a lossy cursor): CAS `next` from `c` to
//!    `h - capacity` and report the positions skipped as lag.
//! 4. Lock slot `c & mask`. If it holds `c`, CAS `next` from `c` to `c + 1` under that
//!    lock; on success take the value (the last of the `unread` readers moves it out,
//!    the others clone it). A failed CAS (another thread of the same cursor took `c`,
//!    or a writer announced it waits) or a slot already overwritten (a lossy cursor
//!    overtaken) goes back to step 1.
//! 5. If the CAS replaced a `next` with `WAITING` set, wake the writers asleep.
//!
//! # Sleeping without lost wake-ups
//!
//! As in `count`: the sleeper and the thread that changes the state meet on one
//! atomic word, whose read-modify-writes are totally ordered. A reader waiting for data
//! sets `WAITING` on `head`; a writer waiting for room sets it on the cursor's `next`.
//! The sleeper, holding the ring's mutex: `prev = fetch_or(WAITING)`; if `prev` shows
//! the condition met, or the caller's `stop()` (a cursor closing, a bus shutting down)
//! is true, it returns; otherwise it waits on the condvar, and sets the bit again when
//! it wakes. The changer's RMW (the writer's `fetch_add` on `head`, the reader's CAS on
//! `next`) either comes first, and the sleeper's `fetch_or` reads the new value, or comes
//! after and sees `WAITING`, and then it notifies under the mutex, which the sleeper
//! holds from its `fetch_or` until the condvar releases it. Whoever changes what
//! `stop()` reads notifies under the mutex unconditionally. Before sleeping, a reader
//! yields its core a few dozen times: on a busy topic the next event is usually only
//! microseconds away.
//!
//! # Invariants
//!
//! - `next <= head` for every cursor, and `next` only grows.
//! - Lossless cursors: `head - next <= capacity <= ring capacity`, so the writer never
//!   overwrites a position a lossless cursor has not read.
//! - Every position in `[head - ring capacity, head)` is in its slot; each is taken by
//!   a cursor at most once (the CAS of step 4 is made under the slot's lock, against
//!   the position the slot holds).
//! - A slot's value is dropped by the last of the readers it was written for to read
//!   it or pass it (lagging past it, or leaving), or at the latest when the slot is
//!   overwritten.
//!
//! Checked by the loom models `loom_ring_*` in `src/loom_tests.rs`.
//!
//! Peers: `tokio::sync::broadcast` (one ring of slots with a per-slot reader count,
//! lagging receivers) and the `bus` crate (a ring whose writer waits for the slowest
//! reader). This ring does both, per cursor.

use std::time::Instant;

use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, Ordering};

/// Slots per chunk: a ring allocates its slots in chunks on first use, so an idle topic
/// with a large capacity costs a few bytes per chunk, not per slot.
const CHUNK: usize = if cfg!(loom) { 2 } else { 32 };

/// The largest ring; a receiver with a larger capacity keeps a mailbox of its own.
pub(crate) const MAX_CAPACITY: usize = 1 << 16;

/// How many times a reader yields its core before it sleeps. Yielding, not spinning:
/// on a machine with fewer cores than threads the publisher needs the core to make
/// the next event (measured on 2 cores: spinning cost B1 a third more time).
#[cfg(not(loom))]
const POLLS: u32 = 64;

struct Slot<T> {
    /// The position held (`u64::MAX`: none yet).
    pos: u64,
    /// Readers that may still take `value`; the last one moves it out.
    unread: u32,
    value: Option<T>,
}

#[cfg(not(loom))]
type Chunk<T> = std::sync::OnceLock<Box<[Mutex<Slot<T>>]>>;
/// loom does not model `OnceLock`; its rings are small and allocated at once.
#[cfg(loom)]
type Chunk<T> = Box<[Mutex<Slot<T>>]>;

pub(crate) struct Ring<T> {
    chunks: Box<[Chunk<T>]>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: u64,
    /// Positions written, plus `WAITING` while a reader sleeps for the next one. Only
    /// the one writer adds; the slot is written before the add.
    head: AtomicU64,
    /// The sleepers' mutex (see the module docs).
    lock: Mutex<()>,
    readable: Condvar,
    writable: Condvar,
}

/// The top bit of `Ring::head` and `Cursor::next`: someone sleeps until the word
/// changes. The low bits never reach it (2^63 positions).
const WAITING: u64 = 1 << 63;

/// One reader's position in a ring.
pub(crate) struct Cursor {
    /// The next position to read, plus `WAITING` while a writer sleeps for room. Only
    /// grows; advanced by CAS (see step 4).
    next: AtomicU64,
    /// The most positions this reader holds unread.
    capacity: u64,
    /// `true`: the writer waits (or refuses) rather than overwrite what this cursor has
    /// not read. `false`: this cursor lags (skips the oldest) instead.
    lossless: bool,
    /// Set once: no more positions will be written for this cursor.
    closed: AtomicBool,
}

/// What a read found.
pub(crate) enum Read<T> {
    Item {
        value: T,
        /// Positions unread by this cursor before this read, this one included.
        depth: u64,
    },
    /// This many of the oldest positions were skipped (lossy cursors only).
    Lagged(u64),
    /// Nothing to read (or, from `read`, the deadline passed).
    Empty,
    /// Nothing to read, and the cursor is closed.
    Closed,
}

impl Cursor {
    /// A cursor that starts at `head` (it reads only what is written from now on).
    pub(crate) fn new(head: u64, capacity: usize, lossless: bool) -> Self {
        Cursor {
            next: AtomicU64::new(head),
            capacity: capacity as u64,
            lossless,
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn next(&self) -> u64 {
        self.next.load(Ordering::Acquire) & !WAITING
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn is_lossless(&self) -> bool {
        self.lossless
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl<T: Clone> Ring<T> {
    /// A ring of at least `capacity` slots (rounded up to a power of two, at most
    /// [`MAX_CAPACITY`]).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(CHUNK, MAX_CAPACITY).next_power_of_two();
        let chunks = (0..capacity / CHUNK).map(|_| new_chunk()).collect();
        Ring {
            chunks,
            mask: capacity as u64 - 1,
            head: AtomicU64::new(0),
            lock: Mutex::new(()),
            readable: Condvar::new(),
            writable: Condvar::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.mask as usize + 1
    }

    pub(crate) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire) & !WAITING
    }

    fn slot(&self, pos: u64) -> &Mutex<Slot<T>> {
        let index = (pos & self.mask) as usize;
        let chunk = &self.chunks[index / CHUNK];
        #[cfg(not(loom))]
        let chunk = chunk.get_or_init(new_slots);
        &chunk[index % CHUNK]
    }

    /// Writer, step 1 for one cursor: whether one more position fits. (Topics check a
    /// cached bound instead, see `broadcast::Readers::check_room`.)
    #[cfg(loom)]
    pub(crate) fn has_room(&self, cursor: &Cursor) -> bool {
        self.fits(cursor, cursor.next())
    }

    /// One more position fits a cursor that reads at `next`.
    fn fits(&self, cursor: &Cursor, next: u64) -> bool {
        !cursor.lossless || self.head() - next < cursor.capacity
    }

    /// Writer, step 2: writes `value` at `head` for `readers` cursors. Returns what the
    /// slot held before, for the caller to drop where user code may run.
    pub(crate) fn write(&self, value: T, readers: u32) -> Option<T> {
        let pos = self.head();
        let old = {
            let mut slot = self.slot(pos).lock();
            slot.pos = pos;
            slot.unread = readers;
            slot.value.replace(value)
        };
        // AcqRel: releases the slot to readers; the RMW orders this against a sleeping
        // reader's `fetch_or` (see the module docs).
        let prev = self.head.fetch_add(1, Ordering::AcqRel);
        if prev & WAITING != 0 {
            self.head.fetch_and(!WAITING, Ordering::AcqRel);
            let _lock = self.lock.lock();
            self.readable.notify_all();
        }
        old
    }

    /// Reader, steps 1 to 5, without blocking.
    pub(crate) fn try_read(&self, cursor: &Cursor) -> Read<T> {
        loop {
            let raw = cursor.next.load(Ordering::Acquire);
            let next = raw & !WAITING;
            let head = self.head();
            if next == head {
                // Closed, then empty again: nothing is written after the close, so
                // that means nothing more will come.
                let closed = cursor.is_closed();
                if cursor.next() < self.head() {
                    continue;
                }
                return if closed { Read::Closed } else { Read::Empty };
            }
            let depth = head - next;
            if depth > cursor.capacity {
                let keep_from = head - cursor.capacity;
                if self.advance(cursor, raw, keep_from) {
                    self.give_up(next, keep_from, None);
                    return Read::Lagged(keep_from - next);
                }
                continue;
            }
            let taken = {
                let mut slot = self.slot(next).lock();
                if slot.pos == next && self.advance(cursor, raw, next + 1) {
                    slot.unread = slot.unread.saturating_sub(1);
                    if slot.unread == 0 {
                        slot.value.take()
                    } else {
                        slot.value.clone()
                    }
                } else {
                    None
                }
            };
            if let Some(value) = taken {
                return Read::Item { value, depth };
            }
        }
    }

    /// Moves `cursor` from `raw` (as loaded) to `to`, unless another reader or a
    /// waiting writer changed it first. Step 5: wakes the writers if one waited.
    fn advance(&self, cursor: &Cursor, raw: u64, to: u64) -> bool {
        // AcqRel: the RMW orders this against a sleeping writer's `fetch_or`.
        if cursor
            .next
            .compare_exchange(raw, to, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if raw & WAITING != 0 {
            let _lock = self.lock.lock();
            self.writable.notify_all();
        }
        true
    }

    /// Moves `cursor` to `to` at once (its receiver left) and gives up the positions it
    /// skipped; returns how many. Wakes writers waiting for it. `seen`, if given, is
    /// shown each skipped value the ring still holds (for delivery traces).
    pub(crate) fn skip_to(&self, cursor: &Cursor, to: u64, seen: Option<&mut dyn FnMut(T)>) -> u64 {
        loop {
            let raw = cursor.next.load(Ordering::Acquire);
            let next = raw & !WAITING;
            if next >= to {
                return 0;
            }
            if self.advance(cursor, raw, to) {
                self.give_up(next, to, seen);
                return to - next;
            }
        }
    }

    /// A cursor passed `[from, to)` without reading: each slot still holding one of
    /// those positions has one reader fewer, and the last one drops the value, so what
    /// no receiver will read does not stay alive until it is overwritten. `seen` gets
    /// each, outside the slot's lock: the value itself from its last reader, a clone
    /// while others still read it.
    fn give_up(&self, from: u64, to: u64, mut seen: Option<&mut dyn FnMut(T)>) {
        let oldest = to.saturating_sub(self.capacity() as u64);
        for pos in from.max(oldest)..to {
            let value = {
                let mut slot = self.slot(pos).lock();
                if slot.pos != pos {
                    continue;
                }
                slot.unread = slot.unread.saturating_sub(1);
                match slot.unread {
                    0 => slot.value.take(),
                    _ if seen.is_some() => slot.value.clone(),
                    _ => None,
                }
            };
            // Outside the slot's lock: the value's `Drop` may be user code.
            if let (Some(seen), Some(value)) = (seen.as_mut(), value) {
                seen(value);
            }
        }
    }

    /// Reads, sleeping until something comes, the cursor closes, or `deadline` passes
    /// (then `Empty`).
    pub(crate) fn read(&self, cursor: &Cursor, deadline: Option<Instant>) -> Read<T> {
        loop {
            match self.try_read(cursor) {
                Read::Empty => {}
                other => return other,
            }
            if !self.wait_readable(cursor, deadline, || false) {
                return Read::Empty;
            }
        }
    }

    /// Sleeps until `cursor` has a position to read, it closes, or `stop()` is true
    /// (whoever changes what `stop` reads calls [`wake_readers`](Self::wake_readers));
    /// `false` once the deadline passed. It does not read.
    pub(crate) fn wait_readable(&self, cursor: &Cursor, deadline: Option<Instant>, stop: impl Fn() -> bool) -> bool {
        let ready = |head: u64| cursor.next() < head || cursor.is_closed() || stop();
        #[cfg(not(loom))]
        for _ in 0..POLLS {
            if ready(self.head()) {
                return true;
            }
            std::thread::yield_now();
        }
        let mut lock = self.lock.lock();
        loop {
            let head = self.head.fetch_or(WAITING, Ordering::AcqRel) & !WAITING;
            if ready(head) {
                return true;
            }
            match self.readable.wait_deadline(lock, deadline) {
                Some(woken) => lock = woken,
                None => return false,
            }
        }
    }

    /// Writer: sleeps until `cursor` has room for one more position, `stop()` is true,
    /// or `deadline` passes. It does not write: the caller checks room again under its
    /// own lock. Whoever changes what `stop` reads calls [`wake_writers`](Self::wake_writers).
    pub(crate) fn wait_for_room(&self, cursor: &Cursor, deadline: Option<Instant>, stop: impl Fn() -> bool) {
        let mut lock = self.lock.lock();
        loop {
            let next = cursor.next.fetch_or(WAITING, Ordering::AcqRel) & !WAITING;
            if self.fits(cursor, next) || stop() {
                return;
            }
            match self.writable.wait_deadline(lock, deadline) {
                Some(woken) => lock = woken,
                None => return,
            }
        }
    }

    /// Wakes sleeping writers so they re-check their `stop` predicate.
    pub(crate) fn wake_writers(&self) {
        let _lock = self.lock.lock();
        self.writable.notify_all();
    }

    /// No more positions come for `cursor`: wakes its sleeping readers.
    pub(crate) fn close(&self, cursor: &Cursor) {
        cursor.closed.store(true, Ordering::Release);
        self.wake_readers();
    }

    /// Wakes sleeping readers so they re-check their `stop` predicate.
    pub(crate) fn wake_readers(&self) {
        let _lock = self.lock.lock();
        self.readable.notify_all();
    }
}

fn new_slots<T>() -> Box<[Mutex<Slot<T>>]> {
    (0..CHUNK)
        .map(|_| {
            Mutex::new(Slot {
                pos: u64::MAX,
                unread: 0,
                value: None,
            })
        })
        .collect()
}

#[cfg(not(loom))]
fn new_chunk<T>() -> Chunk<T> {
    std::sync::OnceLock::new()
}

#[cfg(loom)]
fn new_chunk<T>() -> Chunk<T> {
    new_slots()
}
