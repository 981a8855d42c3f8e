//! `Retries<T>`: the failed events one at-least-once subscriber waits to retry, and how
//! they are counted while they wait. An ack receiver keeps its nacked events in one
//! too (see `ack`); only the push subscribers' part below is about `in_flight`.
//!
//! # Protocol
//!
//! Everything here happens under the subscriber's run lock.
//!
//! 1. **Fail.** An attempt that failed and may run again goes into the set with its
//!    due time (now, plus the backoff, on the bus clock) and its next attempt number.
//!    The bus timer is armed for the due time (see `timer`).
//! 2. **Pick.** Before anything queued, the runner takes the earliest retry that is due.
//!    If none is due, [`RetryOrder::Ordered`] takes nothing else while one waits (at
//!    most one ever waits, so successes stay in publish order);
//!    [`RetryOrder::Unordered`] takes queued events meanwhile, up to `limit` waiting
//!    (the subscriber's capacity), and then stops taking new events until one settles.
//!    So the set is bounded, and a full one pushes back through the mailbox's overflow
//!    policy like a slow handler does.
//! 3. **Wake.** When a due time passes, the timer wakes the subscriber as a publish
//!    would (`notify`, then submit if idle).
//! 4. **Settle.** A retry ends as delivered, dead-lettered, or dropped by unsubscribe
//!    or shutdown (counted under that reason).
//!
//! # In flight (`wait_idle`, shutdown)
//!
//! - **A clock that moves by itself.** A waiting retry stays in `in_flight`: it is
//!   not finished when it fails, and not added again when it is picked. `wait_idle` and
//!   the shutdown drain wait for it, so they wait at most the backoff.
//! - **A clock moved by hand.** Only the test can make a retry due, so waiting for one
//!   would hang: a failed attempt is finished when it goes into the set, and added back
//!   when it is picked. Between a clock move and the pick, the *wake token* holds the
//!   count up: a wake adds 1 to `in_flight` before it sets the subscriber's token (so
//!   the count never dips), and the runner that clears the token finishes that 1 after
//!   the batch in which it picked what was due. A wake that finds the token already set
//!   gives its 1 back. Unsubscribe and shutdown clear the token too. A batch that runs
//!   out of budget with retries left puts a token back (adding 1 first, as a wake
//!   does), so the count holds up across the runner's trip through its run queue.
//!
//!   Events *held* behind a waiting retry (step 2) are stuck on the clock too, so they
//!   are *lent* out of `in_flight`: a runner that finds itself held finishes the
//!   deliveries queued in its inbox that are not lent yet and records them in `lent`;
//!   the first runner that is no longer held adds `lent` back before it takes anything.
//!   Both happen under the run lock. A `DropOldest` eviction (which happens under the
//!   topic's commit lock instead) does not finish its delivery itself: it adds it to
//!   `evicted`, and the runner *settles* it under the run lock before it lends or adds
//!   back. Evictions take the oldest events, so a settled eviction takes a lent event
//!   while there is one (it was finished when it was lent) and finishes its delivery
//!   otherwise. Either way `in_flight` counts `queued - lent` for the inbox, plus
//!   evictions not yet settled, so it never drops below the truth, and after a lend it
//!   is exact.
//!
//! [`RetryOrder::Ordered`]: crate::RetryOrder::Ordered
//! [`RetryOrder::Unordered`]: crate::RetryOrder::Unordered

use std::collections::BTreeMap;
use std::time::SystemTime;

/// `T` is the event as its next attempt sees it (for subscribers, an `Envelope` with
/// its next attempt number).
pub(crate) struct Retries<T> {
    /// By due time, then by the order they failed in.
    waiting: BTreeMap<(SystemTime, u64), T>,
    failed: u64,
}

impl<T> Retries<T> {
    pub(crate) fn new() -> Self {
        Retries {
            waiting: BTreeMap::new(),
            failed: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Step 1: `item` carries its next attempt number.
    pub(crate) fn push(&mut self, due: SystemTime, item: T) {
        self.waiting.insert((due, self.failed), item);
        self.failed += 1;
    }

    /// Step 2: the earliest retry due at `now`.
    pub(crate) fn take_due(&mut self, now: SystemTime) -> Option<T> {
        let first = self.waiting.first_entry()?;
        (first.key().0 <= now).then(|| first.remove())
    }

    /// Takes every waiting retry out (unsubscribe, shutdown).
    pub(crate) fn take_all(&mut self) -> Vec<T> {
        std::mem::take(&mut self.waiting).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_come_due_in_due_order_then_failure_order() {
        let t = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let mut r = Retries::new();
        r.push(t(30), 1_u64);
        r.push(t(10), 2);
        r.push(t(10), 3);
        assert!(r.take_due(t(9)).is_none());
        let due: Vec<u64> = std::iter::from_fn(|| r.take_due(t(30))).collect();
        assert_eq!(due, [2, 3, 1]);
        assert!(r.is_empty());
    }
}
