//! `Members`: the members of a consumer group, and which one to wake for an event
//! pushed on the group's queue (see `group` for the group as a whole).
//!
//! # The problem
//!
//! A group's members share one queue: a publish pushes an event there once, and
//! whichever member pops it handles it. Each member is a serial subscriber with its own
//! `ScheduleState` (see `schedule`): a runner pops until it sees the queue empty, then
//! releases. A publish must leave the event with some member that will look at the
//! queue after the push, or it waits there with every member idle (a lost wake-up);
//! and it should wake an idle member where there is one, so members run in parallel.
//!
//! # Algorithm
//!
//! Publisher, after the push (outside the commit lock): read the list, then from a
//! rotating start, for each listed member that is active, `notify` it; the first one
//! whose `notify` returns `true` (it was idle) is submitted, and the walk stops.
//!
//! A member that leaves: (1) clears `active`, (2) waits for its running batch, (3)
//! takes itself off the list under the list's lock, (4) if the queue is not empty,
//! wakes one of the others as a publisher does (`Members::wake`).
//!
//! # Invariants
//!
//! - W1: after a push and its wake, some member will pop from the queue after the push
//!   (or the event was popped already). Each member the walk passed either was
//!   notified while running (its `NOTIFIED` bit makes its runner look again, as for
//!   any subscriber), or was inactive. If the walk submitted a member, it runs and
//!   looks. If a member it notified or submitted turns inactive before it looks, that
//!   member's leave comes after the list read in the lock's order, so step 4 sees the
//!   push and wakes another (or the group is dissolving and counts the event).
//! - W2: a member never runs twice at once: waking only calls `notify` and submits on
//!   its `0 -> SCHEDULED` edge, as every publish does.
//!
//! # Orderings
//!
//! The list is a copy-on-write slice behind a read-write lock: publishers read it, a
//! leave replaces it; the lock orders a leave's step 3 against each publisher's read.
//! The queue's own push and pop, and `ScheduleState`'s AcqRel RMWs, do the rest. Loom
//! model: `loom_group_every_event_is_handled_by_one_member` in `loom_tests`.

use crate::affinity::SeatId;
use crate::sync::{AtomicUsize, Ordering, RwLock};

/// What waking needs from a member.
pub(crate) trait Member: Send + Sync {
    fn is_active(&self) -> bool;
    /// `schedule`'s producer step: `true` when the caller must submit the member.
    fn notify(&self) -> bool;
    /// Hands the member to its runner.
    fn submit(self: std::sync::Arc<Self>);
}

/// A listed member and its seat number in the group.
type Listed = (SeatId, std::sync::Arc<dyn Member>);

/// The members of one group. (The list is a std `Arc` even under loom: what the model
/// checks is the waking, not the list.)
pub(crate) struct Members {
    list: RwLock<std::sync::Arc<[Listed]>>,
    /// Where the next walk starts, so wakes spread over the members.
    cursor: AtomicUsize,
}

impl Members {
    pub(crate) fn new() -> Self {
        Members {
            list: RwLock::new(std::sync::Arc::from(Vec::new())),
            cursor: AtomicUsize::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.read().len()
    }

    pub(crate) fn add(&self, seat: SeatId, member: std::sync::Arc<dyn Member>) {
        let mut list = self.list.write();
        let mut next = list.to_vec();
        next.push((seat, member));
        *list = std::sync::Arc::from(next);
    }

    /// Step 3 of a leave: takes off the member in `seat`.
    pub(crate) fn remove(&self, seat: SeatId) {
        let mut list = self.list.write();
        let kept: Vec<_> = list.iter().filter(|(s, _)| *s != seat).cloned().collect();
        *list = std::sync::Arc::from(kept);
    }

    /// Whether a member other than the one in `seat` is listed now.
    pub(crate) fn has_other_than(&self, seat: SeatId) -> bool {
        self.list.read().iter().any(|(s, _)| *s != seat)
    }

    /// The seats listed now.
    pub(crate) fn seats(&self) -> Vec<SeatId> {
        self.list.read().iter().map(|(seat, _)| *seat).collect()
    }

    pub(crate) fn clear(&self) {
        *self.list.write() = std::sync::Arc::from(Vec::new());
    }

    /// After a push (or a leave that saw the queue non-empty): wakes one member.
    pub(crate) fn wake(&self) {
        let list = self.list.read().clone();
        if list.is_empty() {
            return;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = pick(&list, start) {
            list[i].1.clone().submit();
        }
    }

    /// Wakes the member in `seat` in particular (key affinity, see `affinity`): as a
    /// publish wakes a subscriber, it is submitted if it was idle, or looks again if
    /// it runs. A member that left, or is leaving, is not woken: its leave hands its
    /// keys to others and wakes them. Returns whether it was listed and active.
    pub(crate) fn wake_seat(&self, seat: SeatId) -> bool {
        let list = self.list.read().clone();
        let Some((_, member)) = list.iter().find(|(s, _)| *s == seat) else {
            return false;
        };
        if !member.is_active() {
            return false;
        }
        if member.notify() {
            member.clone().submit();
        }
        true
    }
}

/// The walk of the algorithm: the index of the member to submit, if one was idle.
fn pick(list: &[Listed], start: usize) -> Option<usize> {
    let n = list.len();
    (0..n)
        .map(|i| (start.wrapping_add(i)) % n)
        .find(|&i| list[i].1.is_active() && list[i].1.notify())
}
