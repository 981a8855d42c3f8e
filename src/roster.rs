//! `Roster<S>`: a topic's subscribers as publishers see them, and the cut that lets a
//! subscriber join at an exact offset (promise 9: replay then live, with no gap and no
//! duplicate).
//!
//! # The problem
//!
//! A publish reads the roster (step 1 of `topic`'s protocol) *before* it takes the
//! commit lock, where it gets its `seq` and queues the event for the members it read.
//! A subscriber that joins with a replay takes the history below some offset `cut`
//! and must get every event from `cut` on live. A publish that read the roster before
//! the join but commits after it would get a `seq >= cut` and queue for the old
//! members only: the joiner would miss that event (a gap).
//!
//! # Algorithm
//!
//! The roster keeps a counter of joins at a cut, `joins`, beside the members, and the
//! topic's commit state keeps a copy of it (the [`Cut`]).
//! - A publish reads the members and `joins` together, in one read of the roster (its
//!   [`Ticket`]). Under the commit lock, before it takes a `seq`, it compares the
//!   ticket with the `Cut`; if they differ, a subscriber joined at a cut since the
//!   publish read the roster: it gives back what it reserved and starts again from
//!   step 1, with the new roster.
//! - A join at a cut, under the commit lock: writes the new members and `joins + 1`
//!   in one write of the roster, copies `joins` into the `Cut`, takes `cut =
//!   next_seq` and the history below it, and queues that history for the joiner, all
//!   before it releases the lock.
//!
//! # Invariants
//!
//! - R1: under the commit lock, `Cut::joins` equals the roster's `joins` (both change
//!   together, under that lock).
//! - R2: a publish commits only with a ticket equal to the `Cut`, so its roster
//!   includes every member that joined at a cut before it took the commit lock: each
//!   event with `seq >= cut` is queued for the joiner by its publish, each with
//!   `seq < cut` by the join (from the history), and none by both.
//! - R3: the joiner's history is queued before any live event: no publish commits
//!   while the join holds the commit lock.
//!
//! # Orderings
//!
//! Members and `joins` are read and written together under the roster's lock, and
//! compared with the `Cut` under the commit lock: no atomics, so the locks order
//! everything. A join takes the roster's write lock inside the commit lock; publishers
//! take the roster's read lock without holding the commit lock, so the two locks are
//! never taken in the other order. Ordinary subscribes (at the latest offset) add
//! members without a cut: a publish already under way may or may not reach them,
//! which is the ordinary "a subscriber added during a dispatch" rule.
//!
//! loom models: `loom_joining_at_a_cut_gets_every_offset_once` and, for a join whose
//! filter screens the history outside the lock (see `TopicCore::join_at`),
//! `loom_joining_at_a_cut_with_a_filter_keeps_the_history_first`, in `loom_tests`.

use std::sync::Arc;

use crate::sync::RwLock;

/// The members and the joins at a cut, read and written together. (The list is a
/// std `Arc` even under loom: what the model checks is the locking, not the list.)
struct Listed<S> {
    members: Arc<[S]>,
    joins: u64,
}

pub(crate) struct Roster<S> {
    listed: RwLock<Listed<S>>,
}

/// What a publish read: the number of joins at a cut as of its roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// The commit state's copy of the roster's joins at a cut (R1).
#[derive(Debug, Default)]
pub(crate) struct Cut {
    joins: u64,
}

impl Cut {
    /// Whether a publish holding `ticket` may commit: no subscriber joined at a cut
    /// since it read the roster (R2).
    pub(crate) fn admits(&self, ticket: Ticket) -> bool {
        self.joins == ticket.0
    }
}

impl<S: Clone> Roster<S> {
    pub(crate) fn new() -> Self {
        Roster {
            listed: RwLock::new(Listed {
                members: Arc::from(Vec::new()),
                joins: 0,
            }),
        }
    }

    /// The members, and the ticket to commit with.
    pub(crate) fn read(&self) -> (Arc<[S]>, Ticket) {
        let listed = self.listed.read();
        (listed.members.clone(), Ticket(listed.joins))
    }

    pub(crate) fn len(&self) -> usize {
        self.listed.read().members.len()
    }

    /// Adds a member that gets what is published from now on, without a cut, before
    /// the first member it `outranks` (at the end if none).
    pub(crate) fn add(&self, member: S, outranks: impl Fn(&S) -> bool) {
        let mut listed = self.listed.write();
        listed.members = with(&listed.members, member, outranks);
    }

    /// Adds a member at a cut, placed as by `add`. Call under the commit lock that
    /// guards `cut`, and queue the member's history in the same hold of it.
    pub(crate) fn add_at_cut(&self, member: S, cut: &mut Cut, outranks: impl Fn(&S) -> bool) {
        let mut listed = self.listed.write();
        listed.members = with(&listed.members, member, outranks);
        listed.joins += 1;
        cut.joins = listed.joins;
    }

    /// Removes the members `leaves` picks.
    pub(crate) fn remove(&self, leaves: impl Fn(&S) -> bool) {
        let mut listed = self.listed.write();
        let kept: Vec<S> = listed.members.iter().filter(|m| !leaves(m)).cloned().collect();
        listed.members = Arc::from(kept);
    }

    pub(crate) fn clear(&self) {
        self.listed.write().members = Arc::from(Vec::new());
    }
}

/// A copy of `members` with `member` added before the first member it `outranks`
/// (copy-on-write: publishers holding the old list keep it). Publishes hand an event
/// out in list order, which is what makes priorities observable (see `topic`).
fn with<S: Clone>(members: &Arc<[S]>, member: S, outranks: impl Fn(&S) -> bool) -> Arc<[S]> {
    let at = members.iter().position(outranks).unwrap_or(members.len());
    let mut next = members.to_vec();
    next.insert(at, member);
    Arc::from(next)
}
