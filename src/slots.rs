//! `Slots`: the capacity of one bounded mailbox, shared by every publisher, with
//! reservations and blocking waits for space.
//!
//! # Algorithm
//!
//! A [`Count`] of the items in the mailbox's queue plus the slots reserved by publishers
//! that have not pushed yet.
//! - `try_reserve`: add 1 if the count is below the capacity. A publish that must be
//!   all-or-nothing (`Reject`, `Block`) reserves a slot in every such mailbox first, and
//!   either pushes into all of them or cancels every reservation.
//! - `occupy`: an unconditional add, for `DropOldest` (which evicts after it). Returns
//!   the new count.
//! - `release`: a consumer that popped an item, or a publisher that cancels a
//!   reservation, subtracts; blocked publishers wake when the count drops below the
//!   capacity.
//! - `wait_for_space`: a blocked publisher sleeps until the count is below the capacity
//!   or the caller's `stop` predicate says to give up (the bus closing, the subscriber
//!   leaving); whoever changes what `stop` reads calls `wake_all`.
//!
//! # Invariants
//!
//! - `count <= capacity` whenever only `try_reserve` adds (every policy but
//!   `DropOldest`, which may overshoot by the number of concurrent publishers, each of
//!   which then evicts one item).
//! - Every successful `try_reserve` and every `occupy` is matched by exactly one
//!   `release`: through the pop of the item it pushed, or through a cancel.
//!
//! The no-lost-wake-up argument is [`Count`]'s.

use std::time::Instant;

use crate::count::{Count, MAX};

#[derive(Debug)]
pub(crate) struct Slots {
    used: Count,
    /// At most `count::MAX`; `count::MAX` stands for "unbounded".
    capacity: usize,
}

impl Slots {
    /// `capacity` above `count::MAX` is unbounded.
    pub(crate) fn new(capacity: usize) -> Self {
        Slots {
            used: Count::new(),
            capacity: capacity.min(MAX),
        }
    }

    pub(crate) fn is_bounded(&self) -> bool {
        self.capacity < MAX
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items queued plus slots reserved.
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }

    pub(crate) fn try_reserve(&self) -> bool {
        self.used.add_one_below(self.capacity)
    }

    /// Takes a slot whatever the capacity; returns the new count.
    pub(crate) fn occupy(&self) -> usize {
        self.used.add(1)
    }

    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            let capacity = self.capacity;
            self.used.sub(n, |now| now < capacity);
        }
    }

    /// Wakes blocked publishers so they re-check their `stop` predicate.
    pub(crate) fn wake_all(&self) {
        self.used.wake();
    }

    /// Sleeps until a slot is free (`true`), or `stop()` is true or the deadline passed
    /// (`false`). It does not reserve: the caller retries `try_reserve`.
    pub(crate) fn wait_for_space(&self, deadline: Option<Instant>, stop: impl Fn() -> bool) -> bool {
        let capacity = self.capacity;
        self.used.wait(|used| used < capacity, stop, deadline)
    }
}
