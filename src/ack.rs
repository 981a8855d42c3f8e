//! The ack gate: how an at-least-once pull receiver hands out deliveries that must be
//! acked, bounds how many are out at once, and takes nacked ones back for a retry.
//! `ack_receiver` builds the public `AckReceiver` and `AckHandle` on it; this module
//! is the protocol alone, generic over what is handed out, so loom can run it.
//!
//! # State
//!
//! One mutex guards [`GateState`]:
//! - `retries`: nacked deliveries waiting for their backoff, each already carrying its
//!   next attempt number (the push subscribers' [`Retries`]).
//! - `ended`: set once by unsubscribe or shutdown; a nack after it cannot redeliver.
//! - `source_waiters`: receivers blocked on the source, released by a wake marker.
//!
//! Beside it, `out` counts the deliveries handed out and not yet settled (`unacked`,
//! at most `max_unacked`), with two flags: `ROOM_WAITED` (a receiver waits for room)
//! and `RETRYING` (retries wait, or a settle under the lock may add one). The common
//! take and the ack work on it alone, without the lock (see "Acks without the lock"
//! and "Takes without the lock").
//!
//! The *source* (the receiver's mailbox, see [`Source`]) is outside the lock:
//! publishes push into it without ever touching the gate.
//!
//! # Algorithm
//!
//! `take` first tries without the lock (see "Takes without the lock"); then, in a
//! loop, under the lock:
//! 1. with room (`unacked < max_unacked`, reserved by a CAS on `out`, and given back
//!    if nothing is handed out), a retry that is due goes first;
//! 2. then, with room and unless the line is *held* (at least `hold_at` retries wait:
//!    1 for ordered retries, the capacity for unordered ones), the source's oldest
//!    event;
//! 3. otherwise, if the source was closed (read before the pop) and is empty and no
//!    retry waits: `Closed` (a nack after the end never redelivers);
//! 4. otherwise wait, until the deadline: on the source if step 2 was allowed (an
//!    event, or a wake marker, makes it ready; nothing is taken outside the lock), else
//!    on the `settled` condvar. Then the loop starts again. Before waiting on the
//!    source, `closed` is read again: the pop may have consumed the close's marker.
//!
//! Handing out adds 1 to `out`. A nack (or a drop of a handle) subtracts it under the
//! lock and puts the delivery in `retries` (the caller decides, under the lock, whether
//! it is a retry or a dead letter); then notifies the condvar and, if a receiver waits
//! on the source, queues a wake marker there. The timer's wake, when a retry comes due,
//! does the same after passing through the lock. An ack (or a duplicate skipped at
//! hand-out) changes nothing the lock guards: it only subtracts from `out`, as follows.
//!
//! # Acks without the lock
//!
//! An ack only makes room, and only a receiver that waits for room (step 4, on the
//! `settled` condvar) can need it: one that waits on the source had room already. So
//! it meets that receiver on `out`'s word, as the ring's sleepers meet on theirs
//! (`ring`): the waiter, holding the lock, sets `ROOM_WAITED` with a `fetch_or` and
//! waits only if the count it returned is still at the limit; the ack's `fetch_sub`
//! returns the word, and if `ROOM_WAITED` was set it clears it and notifies the
//! condvar under the lock. Read-modify-writes of one word are totally ordered: an ack
//! before the waiter's `fetch_or` left room that the `fetch_or` sees, and an ack after
//! it sees the flag and takes the lock, which the waiter holds until the condvar
//! releases it, so the notify finds it waiting. A flag that an ack cleared while
//! another receiver was about to wait is set again by that receiver's own `fetch_or`;
//! the deliveries it waits for are still out, and each settle notifies. A flag left
//! by a receiver that stopped waiting (its deadline) costs the next ack one notify.
//! One ack per delivery handed out: `out` never goes below 0 (checked in debug).
//!
//! # Takes without the lock
//!
//! While no retry waits and no receiver waits for room, a take is the source's next
//! event and one more out, and needs no lock: it reserves room with a CAS on `out`
//! that fails if either flag is set or the count is at the limit, then pops the
//! source; if that finds nothing it gives the room back as an ack does, and takes
//! the locked path. Every increment of the count is such a CAS, under the lock or
//! not, so I4 holds. `RETRYING` is kept under the lock: set while `retries` is not
//! empty (after each change to it: a take of a retry, the end), and set by a settle
//! *before* its subtraction makes room, cleared after if no retry waits. So a take
//! without the lock that sees room from a nack also sees the flag, and goes through
//! the lock, after the settle: it cannot hand out a newer event past the retry the
//! nack adds (the ordered line). One whose CAS came first reserved room that was
//! there before the settle, and is a take that came before it.
//!
//! # Invariants
//!
//! - I1 every delivery is in exactly one of: the source, out (`unacked`), `retries`,
//!   or settled. The subscriber's accounting identity gains `unacked` beside `queued`
//!   and `retrying`.
//! - I2 a handle is settled once (its methods take it by value; its drop settles only
//!   what they did not), so a delivery is never both acked and redelivered.
//! - I3 a nack never loses the delivery: it is in `retries` (or a dead letter, or
//!   counted dropped after the end) before the lock is released.
//! - I4 `unacked <= max_unacked` always: only a take adds to it, under the lock, after
//!   seeing room; an ack only lowers it.
//! - I5 no lost wake-up. A receiver decides to wait under the lock, and every change
//!   that lets it go on is made under the lock (a settle, the end) or is followed by
//!   passing through it (a timer wake: the clock moved first), and is followed by a
//!   notify or a marker; an ack, which changes nothing under the lock, meets a
//!   receiver waiting for room on `out` instead (see "Acks without the lock"). A
//!   condvar waiter releases the lock atomically as it waits. A source waiter
//!   registers in `source_waiters` before releasing the lock, so a change after its
//!   release sees it and queues a marker; the marker stays in the source until a pop
//!   consumes it, so waiting after it was queued returns at once. A publish readies
//!   the source by itself. A close does not pass through the lock: it sets `closed`
//!   and then queues a marker unless the flag says one is queued; if a pop had just
//!   consumed that marker, the pop clears the flag before step 4 reads `closed` again
//!   (one word, see "Orderings"), so step 4 sees the close instead of waiting.
//!   Several threads may share one receiver, and so one source: a marker one of them
//!   consumes may be the one another waits for. Before the close, the one that
//!   consumed it looked at the gate under the lock, which is all the marker asks. A
//!   marker consumed after the close, which the others need to return `Closed`, the
//!   source queues again ([`Source::pop`]): it is never lost. (It stays queued, so a
//!   source wait after the close returns at once; none loops on it, because the
//!   close comes after the end, which took every retry: step 3 ends the take.)
//!
//! # Orderings
//!
//! `out`'s read-modify-writes are `AcqRel`, though what the wake-up needs is only
//! their total order on the one word (coherence). Everything else is under the one
//! mutex, but for the source's [`SourceFlags`]: the wake marker's flag and `closed`
//! share one atomic word, so every change to either is ordered with every other by
//! that word's modification order (coherence), whatever the memory orderings. A pop
//! that consumes a marker clears the flag with a read-modify-write; a close sets
//! `closed` and then raises the flag, sending a marker only if the flag was down. So
//! if the close found the flag up because a pop had just taken the marker, the pop's
//! clear comes after the close's set in that order, and the read of `closed` that
//! step 4 makes after the pop sees it.

use std::time::{Instant, SystemTime};

use crate::retries::Retries;
use crate::sync::{AtomicU8, AtomicUsize, Condvar, Mutex, Ordering};

/// How long a receive may wait.
#[derive(Clone, Copy)]
pub(crate) enum Take {
    NoWait,
    Until(Option<Instant>),
}

/// Where a gate's new deliveries come from: a mailbox that publishes push into.
pub(crate) trait Source<T> {
    /// The oldest item, consuming wake markers on the way; `None` if there is none. A
    /// marker consumed after the close is queued again: another thread may wait for it
    /// (see I5).
    fn pop(&self) -> Option<T>;
    fn is_empty(&self) -> bool;
    /// Items queued (wake markers aside).
    fn len(&self) -> usize;
    /// Nothing more will be pushed. Read before `pop`: "closed, then empty" is final.
    fn is_closed(&self) -> bool;
    /// Blocks until an item or a wake marker is queued (without taking it), or the
    /// deadline passes; `false` once the deadline has passed.
    fn wait(&self, deadline: Option<Instant>) -> bool;
    /// Queues a wake marker, unless one is queued already.
    fn wake(&self);
}

/// The top bit of `Gate::out`: a receiver waits on `settled` for room.
const ROOM_WAITED: usize = 1 << (usize::BITS - 1);
/// The next bit of `Gate::out`: retries wait, or a settle under the lock may be adding
/// one; a take goes through the lock (see "Takes without the lock").
const RETRYING: usize = 1 << (usize::BITS - 2);
/// The count's bits of `Gate::out`.
const COUNT: usize = !(ROOM_WAITED | RETRYING);

/// A source's `closed` and wake-marker flags, in one word (see "Orderings").
pub(crate) struct SourceFlags(AtomicU8);

const CLOSED: u8 = 1;
const WAKE_QUEUED: u8 = 2;

impl SourceFlags {
    pub(crate) fn new() -> Self {
        SourceFlags(AtomicU8::new(0))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire) & CLOSED != 0
    }

    /// A marker is queued (or being consumed).
    pub(crate) fn wake_queued(&self) -> bool {
        self.0.load(Ordering::Acquire) & WAKE_QUEUED != 0
    }

    /// Sets `closed`; `true` for the one caller that did, which must then wake.
    pub(crate) fn close(&self) -> bool {
        self.0.fetch_or(CLOSED, Ordering::AcqRel) & CLOSED == 0
    }

    /// Raises the marker flag; `true` if it was down: the caller must queue a marker.
    pub(crate) fn raise_wake(&self) -> bool {
        self.0.fetch_or(WAKE_QUEUED, Ordering::AcqRel) & WAKE_QUEUED == 0
    }

    /// A pop consumed the marker.
    pub(crate) fn lower_wake(&self) {
        self.0.fetch_and(!WAKE_QUEUED, Ordering::AcqRel);
    }
}

/// Why a gate ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Unsubscribed,
    Shutdown,
}

/// What a gate handed out.
pub(crate) enum Lease<T> {
    /// The source's next item.
    Item(T),
    /// A retry that came due. (Not every item after its first attempt is one: in a
    /// group, a member may take from the queue what another gave back.)
    Retry(T),
    /// Nothing could be handed out in time.
    Empty,
    /// Nothing ever will be: the source is closed and drained, no retry waits.
    Closed,
}

pub(crate) struct GateState<T> {
    pub(crate) retries: Retries<T>,
    pub(crate) ended: Option<End>,
    source_waiters: usize,
}

pub(crate) struct Gate<T> {
    state: Mutex<GateState<T>>,
    /// Deliveries out (`unacked`, the `COUNT` bits), with the flags `ROOM_WAITED` and
    /// `RETRYING` (see "Acks without the lock" and "Takes without the lock"). The
    /// count grows only by `reserve`'s CAS, with room.
    out: AtomicUsize,
    /// Notified by every settle, the timer and the end.
    settled: Condvar,
    max_unacked: usize,
    hold_at: usize,
}

impl<T> Gate<T> {
    /// `hold_at`: how many waiting retries hold the line (1 for ordered retries).
    pub(crate) fn new(max_unacked: usize, hold_at: usize) -> Self {
        Gate {
            state: Mutex::new(GateState {
                retries: Retries::new(),
                ended: None,
                source_waiters: 0,
            }),
            out: AtomicUsize::new(0),
            settled: Condvar::new(),
            max_unacked,
            hold_at: hold_at.max(1),
        }
    }

    /// The next delivery (see the module docs); `now` reads the bus clock.
    pub(crate) fn take<S: Source<T>>(&self, source: &S, how: Take, now: impl Fn() -> SystemTime) -> Lease<T> {
        if let Some(item) = self.take_without_lock(source) {
            return Lease::Item(item);
        }
        let mut waited_on_source = false;
        loop {
            let mut state = self.state.lock();
            if waited_on_source {
                state.source_waiters -= 1;
                waited_on_source = false;
            }
            let closed = source.is_closed();
            let held = state.retries.len() >= self.hold_at;
            // Room, reserved: a take without the lock may take room at any time.
            let room = self.reserve(ROOM_WAITED | RETRYING);
            if room {
                // 1. A retry that is due.
                if !state.retries.is_empty() {
                    if let Some(item) = state.retries.take_due(now()) {
                        self.note_retries(&state);
                        return Lease::Retry(item);
                    }
                }
                // 2. The source, unless the line is held.
                if !held {
                    if let Some(item) = source.pop() {
                        return Lease::Item(item);
                    }
                }
                // Nothing to hand out: the room goes back, to a receiver waiting for
                // it too (it waits on `settled`, whose lock this holds).
                if self.give_back() {
                    self.settled.notify_all();
                }
            }
            // 3. Nothing more will ever come.
            if closed && state.retries.is_empty() && source.is_empty() {
                return Lease::Closed;
            }
            // 4. Wait.
            let Take::Until(deadline) = how else {
                return Lease::Empty;
            };
            if room && !held {
                // A close whose marker the pop above consumed is seen now: the pop
                // cleared the marker's flag before this read (see `mailbox`).
                if !closed && source.is_closed() {
                    continue;
                }
                state.source_waiters += 1;
                drop(state);
                waited_on_source = true;
                if !source.wait(deadline) {
                    self.state.lock().source_waiters -= 1;
                    return Lease::Empty;
                }
            } else {
                // Waiting for room: an ack after this RMW sees the flag and notifies
                // (see "Acks without the lock"); one before it left room.
                if !room && self.out.fetch_or(ROOM_WAITED, Ordering::AcqRel) & COUNT < self.max_unacked {
                    continue;
                }
                if self.settled.wait_deadline(state, deadline).is_none() {
                    return Lease::Empty;
                }
            }
        }
    }

    /// Settles one delivery handed out: `settle` runs under the lock (a nack puts the
    /// delivery in `state.retries`), then waiting receivers are woken.
    pub(crate) fn settle<S: Source<T>, R>(&self, source: &S, settle: impl FnOnce(&mut GateState<T>) -> R) -> R {
        let mut state = self.state.lock();
        // Before the room it makes: takes go through the lock until `settle` is done,
        // so none hands out a newer event past a retry it adds.
        self.out.fetch_or(RETRYING, Ordering::AcqRel);
        // `wake_waiters` below notifies whoever waits for room.
        self.give_back();
        let out = settle(&mut state);
        self.note_retries(&state);
        self.wake_waiters(source, state);
        out
    }

    /// The source's next item, without the lock, if there is room and no retry waits
    /// and no receiver waits for room (see "Takes without the lock").
    fn take_without_lock<S: Source<T>>(&self, source: &S) -> Option<T> {
        if !self.reserve(0) {
            return None;
        }
        match source.pop() {
            Some(item) => Some(item),
            None => {
                self.release();
                None
            }
        }
    }

    /// One delivery's room, if the count is below the limit and `out` has no flag but
    /// those in `ignored`: adds 1 to the count.
    fn reserve(&self, ignored: usize) -> bool {
        let mut word = self.out.load(Ordering::Acquire);
        loop {
            if word & !COUNT & !ignored != 0 || word & COUNT >= self.max_unacked {
                return false;
            }
            match self
                .out
                .compare_exchange_weak(word, word + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }

    /// Sets `RETRYING` while retries wait, clears it once none does (under the lock).
    fn note_retries(&self, state: &GateState<T>) {
        match state.retries.is_empty() {
            true => self.out.fetch_and(!RETRYING, Ordering::AcqRel),
            false => self.out.fetch_or(RETRYING, Ordering::AcqRel),
        };
    }

    /// Settles one delivery handed out whose settle changes nothing under the lock (an
    /// ack, a duplicate skipped): without the lock, waking only a receiver that waits
    /// for room (see "Acks without the lock").
    pub(crate) fn release(&self) {
        if self.give_back() {
            let _state = self.state.lock();
            self.settled.notify_all();
        }
    }

    /// Takes one delivery off the count. `true` if a receiver waits for room: the flag
    /// is cleared, and the caller must notify `settled` under the lock.
    fn give_back(&self) -> bool {
        let was = self.out.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(was & COUNT > 0, "settled more deliveries than were handed out");
        if was & ROOM_WAITED == 0 {
            return false;
        }
        self.out.fetch_and(!ROOM_WAITED, Ordering::AcqRel);
        true
    }

    /// Wakes waiting receivers to look again: a retry came due (the timer).
    pub(crate) fn wake<S: Source<T>>(&self, source: &S) {
        let state = self.state.lock();
        self.wake_waiters(source, state);
    }

    /// Unsubscribe or shutdown: later nacks cannot redeliver. Returns the retries that
    /// were waiting, for the caller to count as dropped. Only the first end counts.
    pub(crate) fn end<S: Source<T>>(&self, source: &S, end: End) -> Vec<T> {
        let mut state = self.state.lock();
        state.ended.get_or_insert(end);
        let retries = state.retries.take_all();
        self.note_retries(&state);
        self.wake_waiters(source, state);
        retries
    }

    /// Deliveries handed out and not yet settled.
    pub(crate) fn unacked(&self) -> usize {
        self.out.load(Ordering::Acquire) & COUNT
    }

    fn wake_waiters<S: Source<T>>(&self, source: &S, state: crate::sync::MutexGuard<'_, GateState<T>>) {
        let source_waiters = state.source_waiters;
        drop(state);
        self.settled.notify_all();
        if source_waiters > 0 {
            source.wake();
        }
    }
}
