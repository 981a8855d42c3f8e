//! `ShutdownReport`: what `shutdown` and `abort` did with every accepted event.

use std::fmt;

use crate::stats::{BusStats, Consumer, DropCounts, SubscriberStats};

/// What [`Bus::shutdown`](crate::Bus::shutdown) or [`Bus::abort`](crate::Bus::abort)
/// did. Every event a subscriber accepted appears in exactly one of delivered, failed,
/// dropped, or still queued in a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The final counters of every subscriber still registered at shutdown.
    pub stats: BusStats,
    /// `true` if every accepted push delivery was handled before the deadline.
    pub drained: bool,
    /// Push deliveries not handled because time ran out (or at `abort`): dropped and
    /// counted under [`DropReason::Shutdown`](crate::DropReason::Shutdown), or, behind a
    /// handler that is still running, dropped the moment it returns. With them, the
    /// events [`AckReceiver`](crate::AckReceiver)s had waiting for a retry, dropped the
    /// same way.
    pub pending: u64,
    /// Of `pending`: events that were waiting for an at-least-once retry (dropped under
    /// [`DropReason::Shutdown`](crate::DropReason::Shutdown) too, never silently). Under
    /// a clock that moves by itself the drain waited for them until the deadline; under
    /// a [`ManualClock`](crate::testing::ManualClock) it cannot, since only the test
    /// makes them due.
    pub awaiting_retry: u64,
    /// Events left in receivers, which their owners can still `recv`, and handles an
    /// [`AckReceiver`](crate::AckReceiver) had out, which can still be acked.
    pub in_receivers: u64,
    /// Handlers still running when the call returned (stuck, or caught mid-event by
    /// `abort`). Each finishes its current event; none starts another.
    pub handlers_running: usize,
    /// Bus threads still running when the call returned (they run such handlers);
    /// they were left detached instead of joined.
    pub threads_running: usize,
}

impl ShutdownReport {
    /// Events handled successfully, over all subscribers.
    pub fn delivered(&self) -> u64 {
        self.stats.subscribers.iter().map(|s| s.delivered).sum()
    }

    /// Handler invocations that failed, over all subscribers.
    pub fn failed(&self) -> u64 {
        self.stats.subscribers.iter().map(|s| s.failed).sum()
    }

    /// Events dead-lettered, over all subscribers.
    pub fn dead_lettered(&self) -> u64 {
        self.stats.subscribers.iter().map(|s| s.dead_lettered).sum()
    }

    /// Events dropped, by reason, over all subscribers and consumer groups' queues.
    pub fn dropped(&self) -> DropCounts {
        let mut total = DropCounts::default();
        for s in &self.stats.subscribers {
            total.add(&s.dropped);
        }
        for g in &self.stats.groups {
            total.add(&g.dropped);
        }
        total
    }

    pub(crate) fn abandoned(stats: &BusStats) -> u64 {
        let abandoned = |s: &SubscriberStats| match s.consumer {
            // Only an ack receiver drops at shutdown: its waiting retries.
            Consumer::Receiver => s.dropped.shutdown,
            Consumer::Handler(_) => s.dropped.shutdown + s.queued,
        };
        // A group of receivers keeps its queue for them.
        let groups = stats.groups.iter();
        let groups: u64 = groups
            .map(|g| g.dropped.shutdown + if g.receivers { 0 } else { g.queued })
            .sum();
        stats.subscribers.iter().map(abandoned).sum::<u64>() + groups
    }

    pub(crate) fn receivers_backlog(stats: &BusStats) -> u64 {
        let receivers = stats.subscribers.iter().filter(|s| s.consumer == Consumer::Receiver);
        let groups = stats.groups.iter().filter(|g| g.receivers).map(|g| g.queued);
        receivers.map(|s| s.queued + s.unacked).sum::<u64>() + groups.sum::<u64>()
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dropped = self.dropped();
        write!(
            f,
            "{}: delivered {}, failed {}, dead-lettered {}, dropped {} (shutdown {}), pending {} (awaiting retry {}), left in receivers {}",
            if self.drained { "drained" } else { "not drained" },
            self.delivered(),
            self.failed(),
            self.dead_lettered(),
            dropped.total(),
            dropped.shutdown,
            self.pending,
            self.awaiting_retry,
            self.in_receivers
        )?;
        if self.handlers_running > 0 || self.threads_running > 0 {
            write!(
                f,
                ", {} handlers and {} threads still running",
                self.handlers_running, self.threads_running
            )?;
        }
        Ok(())
    }
}
