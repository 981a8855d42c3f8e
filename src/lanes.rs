//! Keyed parallelism for one subscriber: `concurrency(n)` runs its handler up to `n`
//! times at once, one event of a partition key at a time, each key's events in `seq`
//! order; keyless events in any order.
//!
//! # Design
//!
//! The subscriber is `n` *lanes*: ordinary push subscribers sharing the one handler
//! (`Fn + Sync`), which form a consumer group of their own with key affinity (see
//! `group` and `affinity`), except that every lane may take every key: the lanes share
//! one seat in the affinity, and each key made ready wakes any idle lane. So a key's
//! events run one at a time, in order, on whichever lane is free, while other keys run
//! on the other lanes; an event waiting for its retry holds back its key only. The
//! group's queue is the subscriber's mailbox (capacity, overflow, accounting).
//!
//! To its user and to the bus, the lanes are one subscriber ([`Lanes`]): one id,
//! one entry in the stats, one guard, one dead-letter store. A filter screens at
//! publish, as the queue's. Its counters add up the lanes' and take the queue's:
//! `accepted`, `queued`, `refused` and the overflow drops are the queue's; `failed`
//! adds the queue's (events whose filter panicked) to the lanes'; the rest are the
//! lanes' sums. A lane hands its waiting retries back
//! to the queue only when the subscriber leaves, and the queue takes them back
//! (`handed_back`), so those cancel out and the identity of promise 1 holds for the
//! whole: `accepted = handed_out + dropped + queued - handed_back` for the queue, and
//! each lane's `accepted` (what it took, summing to `handed_out`) is settled, dropped,
//! waiting for its retry, or handed over.

use std::any::Any;
use std::time::Duration;

use crate::bus::BusShared;
use crate::envelope::Envelope;
use crate::error::SubscribeError;
use crate::group::{Group, GroupSeat};
use crate::stats::{SubscriberId, SubscriberStats};
use crate::subscribe::{HandlerResult, SubscriberBuilder};
use crate::subscription::Subscription;
use crate::subscription::{Control, Registration};
use crate::sync::{Arc, Weak};

/// A [`SubscriberBuilder`] for a subscriber whose handler runs up to `n` times at
/// once: made by [`SubscriberBuilder::concurrency`], which says what it promises.
#[must_use = "a builder does nothing until subscribe is called"]
pub struct Concurrent<E: Send + Sync + 'static> {
    pub(crate) builder: SubscriberBuilder<E>,
    pub(crate) n: usize,
}

impl<E: Send + Sync + 'static> Concurrent<E> {
    /// Registers `handler`, which may run on up to `n` threads at once (hence `Fn +
    /// Sync`), and returns the guard that keeps it registered.
    ///
    /// # Errors
    ///
    /// Those of [`SubscriberBuilder::subscribe`], and
    /// [`SubscribeError::InvalidPolicy`] for `concurrency(0)` and for what a
    /// concurrent subscriber cannot have (see
    /// [`SubscriberBuilder::concurrency`]).
    pub fn subscribe<F, R>(self, handler: F) -> Result<Subscription, SubscribeError>
    where
        F: Fn(&Envelope<E>) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.builder.subscribe_lanes(self.n, handler)
    }
}

impl<E: Send + Sync + 'static> std::fmt::Debug for Concurrent<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Concurrent")
            .field("builder", &self.builder)
            .field("n", &self.n)
            .finish()
    }
}

/// The lanes of one subscriber, as one subscriber to its bus and its user.
pub(crate) struct Lanes<E> {
    /// The subscriber's (each lane has its own, which its dead letters do not name).
    pub(crate) id: SubscriberId,
    pub(crate) group: Arc<Group<E>>,
    pub(crate) lanes: Vec<Arc<Registration<E, GroupSeat<E>>>>,
    pub(crate) bus: Weak<BusShared>,
}

impl<E: Send + Sync + 'static> Lanes<E> {
    /// The subscriber's counters, from its queue's and its lanes' (see the module
    /// docs).
    fn combine(&self, lanes: Vec<SubscriberStats>) -> SubscriberStats {
        let queue = self.group.stats();
        let mut total = lanes[0].clone();
        total.id = self.id;
        // Events whose filter panicked were accepted by the queue and failed there.
        total.failed = Control::stats(&*self.group).failed;
        total.group = None;
        total.concurrency = lanes.len();
        total.capacity = queue.capacity;
        total.accepted = queue.accepted;
        total.queued = queue.queued;
        total.refused = queue.refused;
        total.high_water = queue.high_water;
        total.handed_over = 0;
        total.dropped = queue.dropped;
        // Sums over the lanes (the dead-letter store is one for all lanes: lane 0's
        // counts are the whole).
        (
            total.delivered,
            total.retried,
            total.dead_lettered,
            total.retrying,
            total.deduplicated,
        ) = (0, 0, 0, 0, 0);
        for lane in &lanes {
            total.delivered += lane.delivered;
            total.failed += lane.failed;
            total.retried += lane.retried;
            total.dead_lettered += lane.dead_lettered;
            total.retrying += lane.retrying;
            total.deduplicated += lane.deduplicated;
            total.dropped.add(&lane.dropped);
            if total.last_error.is_none() {
                total.last_error.clone_from(&lane.last_error);
            }
        }
        // The lanes' samples, merged bucket by bucket.
        let mut counts = Vec::new();
        for lane in &self.lanes {
            lane.sub.counters.latency.add_to(&mut counts);
        }
        total.latency = crate::latency::latency(&counts);
        total
    }
}

impl<E: Send + Sync + 'static> Control for Lanes<E> {
    fn id(&self) -> SubscriberId {
        self.id
    }

    fn stats(&self) -> SubscriberStats {
        let lanes = self.lanes.iter().map(|lane| lane.stats()).collect();
        self.combine(lanes)
    }

    fn unsubscribe(&self) -> SubscriberStats {
        // Every lane stops taking events first (step 1 of each one's unsubscribe), so
        // none takes more while the others leave. Then one at a time: each gives its
        // waiting retries back to the queue, and the last one ends the group, dropping
        // what is left (counted in its own stats).
        let stopped: Vec<bool> = self.lanes.iter().map(|lane| lane.sub.deactivate()).collect();
        for (lane, stopped) in self.lanes.iter().zip(stopped) {
            if stopped {
                lane.leave();
            }
        }
        let lanes = self.lanes.iter().map(|lane| lane.stats()).collect();
        if let Some(bus) = self.bus.upgrade() {
            bus.forget(self.id);
        }
        self.combine(lanes)
    }

    fn wake_publishers(&self) {
        self.group.wake_publishers();
    }

    fn retire(&self, grace: Duration) -> bool {
        // The queue first (what is queued or routed is dropped as the queue's), then
        // the lanes.
        let queue = self.group.retire(grace);
        self.lanes.iter().fold(queue, |all, lane| lane.retire(grace) && all)
    }

    fn close_input(&self) {
        for lane in &self.lanes {
            lane.close_input();
        }
    }

    fn abandoned_retries(&self) -> u64 {
        self.lanes.iter().map(|lane| lane.abandoned_retries()).sum()
    }

    fn dead_letter_store(&self) -> Option<&dyn Any> {
        // One store for all lanes.
        self.lanes[0].dead_letter_store()
    }
}
