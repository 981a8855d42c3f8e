//! `InFlight`: counts deliveries that are queued or running, so `wait_idle` and
//! `shutdown` can sleep until the count reaches zero instead of guessing with timers.
//!
//! # Protocol
//!
//! 1. A publisher adds the number of push deliveries it is about to enqueue *before* it
//!    pushes them, so a fast consumer can never take the count below the truth.
//! 2. A consumer subtracts after the handlers of a batch have returned (or after it
//!    discarded items). A handler that publishes adds its own deliveries before it
//!    returns, so the count never touches zero while a flow is still running.
//! 3. Waiters sleep on the [`Count`] until it reads zero; only a subtraction that
//!    reaches zero wakes them.

use std::time::Instant;

use crate::count::Count;

#[derive(Debug)]
pub(crate) struct InFlight(Count);

impl InFlight {
    pub(crate) fn new() -> Self {
        InFlight(Count::new())
    }

    pub(crate) fn add(&self, n: usize) {
        if n > 0 {
            self.0.add(n);
        }
    }

    pub(crate) fn finish(&self, n: usize) {
        if n > 0 {
            self.0.sub(n, |now| now == 0);
        }
    }

    pub(crate) fn get(&self) -> usize {
        self.0.get()
    }

    /// `true` once the count is zero; `false` if the deadline passed first.
    pub(crate) fn wait_zero(&self, deadline: Option<Instant>) -> bool {
        self.0.wait(|count| count == 0, || false, deadline)
    }
}
