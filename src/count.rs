//! `Count`: an atomic count that threads can sleep on until it satisfies a condition,
//! with no spinning and no lost wake-up.
//!
//! # Algorithm
//!
//! The count and a `WAITING` bit share one atomic word (the top bit), so that a waiter
//! and the thread that changes the count meet on a single location, whose
//! read-modify-writes are totally ordered.
//!
//! Waiter (`wait`):
//! 1. Lock the mutex.
//! 2. `prev = fetch_or(WAITING)`: announce the sleep and read the count in one step.
//! 3. If `ready(count(prev))`, or the caller's `stop()` is true, unlock and return.
//! 4. Wait on the condvar (which releases the lock atomically); go to 2 on wake-up.
//!
//! Decrement (`sub`):
//! 1. `prev = fetch_sub(n)`.
//! 2. If `prev` has `WAITING` and the new count may satisfy a waiter (`wake_if`):
//!    `fetch_and(!WAITING)`, lock, `notify_all`.
//!
//! # Why no wake-up is lost
//!
//! Step 2 of the waiter and step 1 of the decrement are RMWs on one word, so one comes
//! first. If the decrement comes first, the waiter's `fetch_or` reads the new count and
//! it does not sleep. If the waiter comes first, the decrement sees `WAITING` and takes
//! the lock, which the waiter holds from step 2 until the condvar releases it, so the
//! notify finds it asleep. A waiter whose bit another decrement cleared was woken by
//! that decrement's notify, and sets the bit again in step 2.
//!
//! `stop()` reads state outside the word (a bus closing); whoever sets that state calls
//! [`wake`](Count::wake), which notifies under the lock unconditionally.
//!
//! A decrement with nobody waiting costs one RMW. Checked by the loom models in
//! `src/loom_tests.rs`.

use std::time::Instant;

use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering};

const WAITING: usize = 1 << (usize::BITS - 1);

/// The largest count representable next to the `WAITING` bit.
pub(crate) const MAX: usize = WAITING - 1;

#[derive(Debug)]
pub(crate) struct Count {
    /// Invariant: the low bits are the count; `WAITING` is set whenever a thread sleeps
    /// in `wait` (and, harmlessly, sometimes after it left).
    word: AtomicUsize,
    lock: Mutex<()>,
    condvar: Condvar,
}

impl Count {
    pub(crate) fn new() -> Self {
        Count {
            word: AtomicUsize::new(0),
            lock: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    pub(crate) fn get(&self) -> usize {
        self.word.load(Ordering::Acquire) & MAX
    }

    /// Adds `n`; returns the new count.
    pub(crate) fn add(&self, n: usize) -> usize {
        // AcqRel: one total order per word is all the protocol needs.
        (self.word.fetch_add(n, Ordering::AcqRel) & MAX) + n
    }

    /// Adds 1 if the count is below `limit`; `true` if it did.
    pub(crate) fn add_one_below(&self, limit: usize) -> bool {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & MAX >= limit {
                return false;
            }
            // The +1 leaves the WAITING bit as it was.
            match self
                .word
                .compare_exchange_weak(word, word + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Subtracts `n`; wakes the waiters if there are any and `wake_if(new count)`.
    /// Returns the new count.
    pub(crate) fn sub(&self, n: usize, wake_if: impl FnOnce(usize) -> bool) -> usize {
        let prev = self.word.fetch_sub(n, Ordering::AcqRel);
        let now = (prev & MAX) - n;
        if prev & WAITING != 0 && wake_if(now) {
            self.wake();
        }
        now
    }

    /// Wakes every waiter so it re-checks its condition and its `stop`.
    pub(crate) fn wake(&self) {
        self.word.fetch_and(!WAITING, Ordering::AcqRel);
        let _guard = self.lock.lock();
        self.condvar.notify_all();
    }

    /// Sleeps until `ready(count)` (returns `true`), or `stop()` or the deadline
    /// (returns `false`).
    pub(crate) fn wait(
        &self,
        mut ready: impl FnMut(usize) -> bool,
        stop: impl Fn() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        if ready(self.get()) {
            return true;
        }
        let mut guard = self.lock.lock();
        loop {
            let prev = self.word.fetch_or(WAITING, Ordering::AcqRel);
            if ready(prev & MAX) {
                return true;
            }
            if stop() {
                return false;
            }
            match self.condvar.wait_deadline(guard, deadline) {
                Some(woken) => guard = woken,
                None => return false,
            }
        }
    }
}
